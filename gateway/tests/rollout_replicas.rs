//! Rollouts shared by two gateway replicas on one PostgreSQL store (a real, ephemeral cluster):
//! one replica leads and evaluates, both serve the same stage and weight within one second of
//! every step, the leader's gates count the traffic the other replica served, an action on the
//! follower is refused naming the leader, and killing the leader (SIGKILL) mid-step hands over
//! cleanly: the survivor continues the step from its stored start, and the history holds every
//! step exactly once. A second test shows a deposed leader's write is refused (fencing); a third
//! that losing the database stops nothing but the rollout.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Gateway, TOKEN};
use serde_json::Value;
use strangler_gateway::rollout::pg_store::{PgStore, LOCK_KEY};
use strangler_gateway::rollout::plan::Placement;
use strangler_gateway::rollout::state::{HistoryEvent, RolloutState, States};
use strangler_gateway::rollout::store::{Leadership, RolloutStore, StoreError};
use strangler_support::PgCluster;

/// Both sides answer the same body, so shadow comparisons match.
async fn upstream() -> SocketAddr {
    let app = axum::Router::new()
        .fallback(|| async { ([("content-type", "application/json")], "{\"id\":1,\"name\":\"widget\"}") });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

const STEPS: &str = "{ stage = \"shadow\", duration = \"1500ms\" }, \
    { stage = \"canary\", weight = 25, duration = \"1500ms\" }, \
    { stage = \"canary\", weight = 50, duration = \"3s\" }, { stage = \"extracted\" }";

fn config(legacy: SocketAddr, svc: SocketAddr) -> String {
    format!(
        "rollout_store = \"postgres\"\nrollout_store_url_env = \"ROLLOUT_PG\"\n\n[defaults]\nupstream = \"legacy\"\n\n\
         [upstreams.legacy]\nendpoints = [\"{legacy}\"]\n\n[upstreams.svc]\nendpoints = [\"{svc}\"]\n\n\
         [[routes]]\nname = \"items\"\nmatch = {{ path = \"/items/**\" }}\nto = \"svc\"\nstage = \"extracted\"\n\n\
         [routes.shadow]\non_canary = true\n\n\
         [routes.rollout]\ninterval = \"200ms\"\nfailure_limit = 3\nsteps = [{STEPS}]\n\n\
         [routes.rollout.gates]\nmatch_rate = {{ min = 0.95, min_comparisons = 5 }}\n\
         error_rate = {{ max_delta = 0.05, min_requests = 5 }}\n"
    )
}

async fn status(gw: &Gateway) -> Value {
    gw.admin_get("/admin/rollouts/items").await
}

async fn wait_for(gw: &Gateway, what: &str, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let s = status(gw).await;
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "never {what}: {s:#}\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Client load on one replica, bounded in time and count: (requests, failures).
fn load(gw: &Gateway, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
    let (client, url) = (gw.client.clone(), gw.url("/items/1"));
    tokio::spawn(async move {
        let (mut n, mut failed) = (0, Vec::new());
        let deadline = Instant::now() + Duration::from_secs(90);
        while !stop.load(Ordering::SeqCst) && Instant::now() < deadline && n < 100_000 {
            n += 1;
            match client.get(&url).send().await {
                Ok(r) if r.status() == 200 => {}
                Ok(r) => failed.push(r.status().to_string()),
                Err(e) => failed.push(e.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        (n, failed)
    })
}

/// The first time each replica was seen serving each placement.
type Seen = Arc<Mutex<Vec<(usize, String, Instant)>>>;

/// Polls both replicas' served placement every 25 ms (replica 0 until `dead`).
fn sample(gws: [(u16, reqwest::Client); 2], dead: Arc<AtomicBool>, stop: Arc<AtomicBool>, seen: Seen) {
    tokio::spawn(async move {
        while !stop.load(Ordering::SeqCst) {
            for (i, (admin, client)) in gws.iter().enumerate() {
                if i == 0 && dead.load(Ordering::SeqCst) {
                    continue;
                }
                let url = format!("http://127.0.0.1:{admin}/admin/rollouts/items");
                let Ok(r) = client.get(&url).bearer_auth(TOKEN).send().await else { continue };
                let Ok(v) = r.json::<Value>().await else { continue };
                let serving = v["serving"].as_str().unwrap_or("?").to_string();
                let mut s = seen.lock().unwrap();
                if !s.iter().any(|(r, p, _)| *r == i && *p == serving) {
                    s.push((i, serving, Instant::now()));
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_serve_the_same_step_and_the_leader_hands_over_when_killed() {
    let pg = PgCluster::start().unwrap();
    let (_, conn) = pg.create_unique_database("rollouts").unwrap();
    let (legacy, svc) = (upstream().await, upstream().await);
    let body = config(legacy, svc);
    let env = [("ROLLOUT_PG", conn.as_str())];

    // replica 0 starts alone and leads; replica 1 follows
    let mut a = Gateway::start_with_env(&body, &[], &env);
    let s = wait_for(&a, "led", Duration::from_secs(10), |s| s["leading"] == true).await;
    let leader_id = s["replica"].as_str().unwrap().to_string();
    let b = Gateway::start_with_env(&body, &[], &env);
    let s = wait_for(&b, "followed", Duration::from_secs(10), |s| s["replica"].is_string()).await;
    assert_eq!(s["leading"], false, "{s:#}");
    assert_ne!(s["replica"], leader_id.as_str());

    // an action on the follower is refused, naming the leader
    let r = b.client.post(b.admin_url("/admin/rollouts/items/pause")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 409);
    let text = r.text().await.unwrap();
    assert!(text.contains(&leader_id) && text.contains("follows"), "{text}");

    // all client traffic goes to the follower: the leader sees none of it itself, so it can
    // only promote past shadow on the counters the follower publishes
    let (stop, dead, sampling) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let seen: Seen = Arc::default();
    sample([(a.admin, a.client.clone()), (b.admin, b.client.clone())], dead.clone(), sampling.clone(), seen.clone());
    let client = load(&b, stop.clone());

    // both at canary 50%, well into the step: kill the leader
    wait_for(&a, "reached canary 50%", Duration::from_secs(30), |s| {
        s["step"] == "canary 50%" && s["step_remaining_ms"].as_u64().is_some_and(|ms| ms < 1000)
    })
    .await;
    wait_for(&b, "followed to canary 50%", Duration::from_secs(2), |s| s["serving"] == "canary 50%").await;
    let before = status(&b).await;
    assert!(b.metrics().await.contains("\nstrangler_rollout_leader 0"));
    assert!(a.metrics().await.contains("\nstrangler_rollout_leader 1"));
    dead.store(true, Ordering::SeqCst);
    a.child.kill_now();
    let killed = Instant::now();

    // the follower takes over within about one store interval, at the same step
    let s = wait_for(&b, "took over", Duration::from_secs(5), |s| s["leading"] == true).await;
    let took = killed.elapsed();
    assert!(b.metrics().await.contains("\nstrangler_rollout_leader 1"));
    assert_eq!(
        (s["position"].as_u64(), s["since_unix_ms"].as_u64()),
        (Some(3), before["since_unix_ms"].as_u64()),
        "{s:#}"
    );
    let s = wait_for(&b, "reached extracted", Duration::from_secs(30), |s| s["serving"] == "extracted").await;
    assert_eq!(s["paused"], false, "{s:#}");
    stop.store(true, Ordering::SeqCst);
    sampling.store(true, Ordering::SeqCst);
    let (n, failed) = client.await.unwrap();
    assert!(
        failed.is_empty(),
        "{} of {n} requests on the surviving replica failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(n > 100, "only {n} requests");

    // both replicas served every step reached before the kill within 1 s of each other
    let seen = seen.lock().unwrap().clone();
    let at = |r: usize, p: &str| seen.iter().find(|(i, q, _)| *i == r && q == p).map(|(_, _, t)| *t);
    let mut gaps = Vec::new();
    for step in ["shadow", "canary 25%", "canary 50%"] {
        let (Some(t0), Some(t1)) = (at(0, step), at(1, step)) else { panic!("{step} not seen on both: {seen:?}") };
        let gap = if t0 > t1 { t0 - t1 } else { t1 - t0 };
        assert!(gap < Duration::from_secs(1), "{step}: replicas apart by {gap:?}");
        gaps.push(gap);
    }

    // the history: every step exactly once, in order, none skipped or repeated across the
    // handover; the step the leader died in ran its whole duration once, from its stored start
    let h: Vec<Value> = b.admin_get("/admin/history?route=items").await["events"].as_array().unwrap().clone();
    let moves: Vec<(&str, &str, &str)> = h
        .iter()
        .filter(|e| e["kind"] != "reload")
        .map(|e| (e["kind"].as_str().unwrap(), e["from"].as_str().unwrap(), e["to"].as_str().unwrap()))
        .collect();
    assert_eq!(
        moves,
        [
            ("start", "legacy", "legacy"),
            ("promote", "legacy", "shadow"),
            ("promote", "shadow", "canary 25%"),
            ("promote", "canary 25%", "canary 50%"),
            ("promote", "canary 50%", "extracted"),
        ],
        "{h:#?}"
    );
    let when =
        |to: &str| h.iter().find(|e| e["to"] == to && e["kind"] == "promote").unwrap()["at_unix_ms"].as_u64().unwrap();
    let third = when("extracted") - when("canary 50%");
    // a step restarted at the takeover would have taken ≥ 2 s + 3 s
    assert!((3000..4900).contains(&third), "canary 50% lasted {third} ms (takeover after {took:?})");
    // the gates that let shadow through counted the follower's comparisons
    let to_canary = h.iter().find(|e| e["to"] == "canary 25%").unwrap();
    let mr = to_canary["gates"].as_array().unwrap().iter().find(|g| g["gate"] == "match_rate").unwrap();
    assert_eq!(mr["verdict"], "pass", "{mr:#}");
    println!("takeover after {took:?}; replicas apart by {gaps:?} per step; {n} requests on the survivor, none failed");
}

fn state(position: usize) -> States {
    let mut s = States::new();
    s.insert(
        "items".into(),
        RolloutState {
            position,
            since_unix_ms: 1,
            paused: false,
            paused_reason: None,
            failures: 0,
            last_check: None,
            steps: "x".into(),
            placement: Placement::LEGACY.into(),
        },
    );
    s
}

fn event(kind: &str) -> HistoryEvent {
    HistoryEvent {
        at_unix_ms: 1,
        route: "items".into(),
        kind: kind.into(),
        from: "legacy".into(),
        to: "shadow".into(),
        who: "controller".into(),
        why: "test".into(),
        gates: vec![],
    }
}

fn wait_leadership(store: &PgStore, want: bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while (store.leadership() == Leadership::Leader) != want {
        assert!(Instant::now() < deadline, "leadership never became {want}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_deposed_leader_cannot_write_and_a_follower_waits_for_the_lock() {
    let pg = PgCluster::start().unwrap();
    let (db, conn) = pg.create_unique_database("fence").unwrap();
    let one = PgStore::open(&conn, "one".into(), "127.0.0.1:1".into()).unwrap();
    wait_leadership(&one, true);
    let two = PgStore::open(&conn, "two".into(), "127.0.0.1:2".into()).unwrap();
    // two connects and tries, but the lock is held
    let deadline = Instant::now() + Duration::from_secs(10);
    while two.leadership() != (Leadership::Follower { leader: Some("one (admin 127.0.0.1:1)".into()) }) {
        assert!(Instant::now() < deadline, "{:?}", two.leadership());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(matches!(two.commit(&state(9), &[event("x")]), Err(StoreError::Deposed)));

    // the leader writes state and history together; the follower reads both
    one.commit(&state(1), &[event("promote")]).unwrap();
    assert_eq!(two.load().unwrap(), state(1));
    assert_eq!(two.history(Some("items"), 10).unwrap().iter().map(|e| e.kind.clone()).collect::<Vec<_>>(), ["promote"]);

    // a rival takes the lead (as a takeover does: the epoch moves on): the old leader's next
    // write changes nothing, and neither state nor history moved
    pg.psql(&db, "UPDATE strangler_rollout_state SET epoch = epoch + 1").unwrap();
    assert!(matches!(one.commit(&state(2), &[event("promote")]), Err(StoreError::Deposed)));
    assert_eq!(two.load().unwrap(), state(1));
    assert_eq!(pg.psql(&db, "SELECT count(*) FROM strangler_rollout_history").unwrap(), "1");

    // the leader's session ends: the lock is free again and exactly one store takes it (the
    // old leader reconnects and competes like any replica); the other's writes are refused
    let sql = format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND objsubid = 1 AND ((classid::bigint << 32) | objid::bigint) = {LOCK_KEY}"
    );
    assert_eq!(pg.psql(&db, &sql).unwrap(), "1");
    let deadline = Instant::now() + Duration::from_secs(10);
    let (leader, follower) = loop {
        std::thread::sleep(Duration::from_millis(50));
        match (one.leadership(), two.leadership()) {
            (Leadership::Leader, Leadership::Follower { .. }) => break (&one, &two),
            (Leadership::Follower { .. }, Leadership::Leader) => break (&two, &one),
            (Leadership::Leader, Leadership::Leader) => panic!("two leaders"),
            _ => assert!(Instant::now() < deadline, "nobody took the lead"),
        }
    };
    leader.commit(&state(3), &[event("promote")]).unwrap();
    assert!(matches!(follower.commit(&state(4), &[]), Err(StoreError::Deposed)));
    assert_eq!(follower.load().unwrap(), state(3));
    assert_eq!(pg.psql(&db, "SELECT count(*) FROM strangler_rollout_history").unwrap(), "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_database_stops_the_rollout_not_the_traffic() {
    let mut pg = PgCluster::start().unwrap();
    let (_, conn) = pg.create_unique_database("outage").unwrap();
    let (legacy, svc) = (upstream().await, upstream().await);
    let gw = Gateway::start_with_env(&config(legacy, svc), &[], &[("ROLLOUT_PG", conn.as_str())]);
    let stop = Arc::new(AtomicBool::new(false));
    let client = load(&gw, stop.clone());
    wait_for(&gw, "reached canary 25%", Duration::from_secs(30), |s| s["serving"] == "canary 25%").await;

    pg.stop();
    // the replica stops leading, keeps serving its step, and says why an action cannot be taken
    let s = wait_for(&gw, "stopped leading", Duration::from_secs(5), |s| s["leading"] == false).await;
    // (the step may have moved on while the server was stopping)
    let at = s["serving"].as_str().unwrap().to_string();
    assert!(at == "canary 25%" || at == "canary 50%", "{s:#}");
    let r = gw.client.post(gw.admin_url("/admin/rollouts/items/pause")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 409);
    let text = r.text().await.unwrap();
    assert!(text.contains("is the rollout store reachable"), "{text}");
    tokio::time::sleep(Duration::from_secs(2)).await; // traffic during the outage, checked below
    let s = status(&gw).await;
    assert_eq!((s["serving"].as_str(), s["leading"].as_bool()), (Some(at.as_str()), Some(false)), "{s:#}");
    let m = gw.metrics().await;
    assert!(m.contains("\nstrangler_rollout_leader 0"), "{m}");
    let errors = m
        .lines()
        .find_map(|l| l.strip_prefix("strangler_rollout_store_errors_total "))
        .and_then(|v| v.parse::<f64>().ok());
    assert!(errors.is_some_and(|n| n >= 1.0), "{errors:?}");
    stop.store(true, Ordering::SeqCst);
    let (n, failed) = client.await.unwrap();
    assert!(failed.is_empty(), "{} of {n} requests failed: {:?}", failed.len(), &failed[..failed.len().min(5)]);
}
