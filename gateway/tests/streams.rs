//! Long-lived connections through the real binary: a WebSocket (real client and server) and a
//! server-sent-event stream outlive the route's `timeout`, which covers only the time to the
//! response head; a stream that stays silent longer than `stream_idle_timeout` is ended; an
//! ordinary slow request still gets 504.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::response::sse::{Event, Sse};
use axum::response::IntoResponse;
use axum::routing::get;
use common::Gateway;
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

async fn ws(upgrade: WebSocketUpgrade) -> impl IntoResponse {
    upgrade.on_upgrade(|mut socket: WebSocket| async move {
        while let Some(Ok(msg)) = socket.recv().await {
            if let WsMessage::Text(t) = msg {
                if socket.send(WsMessage::Text(format!("echo {t}").into())).await.is_err() {
                    return;
                }
            }
        }
    })
}

/// Five events, 700 ms apart (3.5 s in all).
async fn events() -> impl IntoResponse {
    let stream = futures::stream::unfold(0u32, |i| async move {
        if i == 5 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
        Some((Ok::<_, std::convert::Infallible>(Event::default().data(format!("tick {i}"))), i + 1))
    });
    Sse::new(stream)
}

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_secs(3)).await;
    "late"
}

async fn server() -> SocketAddr {
    let app = axum::Router::new().route("/ws", get(ws)).route("/events", get(events)).route("/slow", get(slow));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_and_event_streams_outlive_the_request_deadline() {
    let up = server().await;
    let gw = Gateway::start(&format!(
        "[defaults]\nupstream = \"legacy\"\n\n[upstreams.legacy]\nendpoints = [\"{up}\"]\n\n\
         [[routes]]\nname = \"live\"\nmatch = {{ path = \"/**\" }}\nstage = \"legacy\"\ntimeout = \"1s\"\nstream_idle_timeout = \"2s\"\n"
    ));

    // WebSocket: messages for longer than the 1 s deadline, each gap under the 2 s idle timeout
    let (mut socket, resp) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/ws", gw.port)).await.expect("upgrade");
    assert_eq!(resp.status(), 101);
    let started = Instant::now();
    for i in 0..5 {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(800)).await;
        }
        socket.send(Message::Text(format!("m{i}").into())).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(5), socket.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(reply.into_text().unwrap().as_str(), format!("echo m{i}"));
    }
    assert!(started.elapsed() > Duration::from_secs(3), "the exchange outlived the deadline");
    // silence past the idle timeout ends the stream
    let silent = Instant::now();
    let end =
        tokio::time::timeout(Duration::from_secs(10), socket.next()).await.expect("the gateway ends a silent stream");
    assert!(!matches!(end, Some(Ok(Message::Text(_)))), "{end:?}");
    let waited = silent.elapsed();
    assert!(waited >= Duration::from_millis(1500) && waited < Duration::from_secs(8), "ended after {waited:?}");

    // server-sent events: 3.5 s of events through a 1 s deadline
    let started = Instant::now();
    let resp = gw.client.get(gw.url("/events")).header("accept", "text/event-stream").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = String::from_utf8(resp.bytes().await.expect("the whole stream").to_vec()).unwrap();
    for i in 0..5 {
        assert!(body.contains(&format!("data: tick {i}")), "{body}");
    }
    assert!(started.elapsed() > Duration::from_secs(3));

    // an ordinary request is still held to the deadline
    let (status, _) = gw.get("/slow", &[]).await;
    assert_eq!(status, 504);
}
