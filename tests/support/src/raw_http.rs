//! One HTTP/1.1 request read off a raw socket, for test peers that script what happens on the
//! wire (answer, then close without answering, …) where a real HTTP server would not let them.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Reads one request from `sock`: its head, then as many body bytes as its `Content-Length`
/// says (no chunked bodies). `None` when the peer closed, or the read failed, before a whole
/// request arrived.
pub async fn read_request<S: AsyncRead + Unpin>(sock: &mut S) -> Option<Vec<u8>> {
    let mut req = Vec::new();
    let mut b = [0u8; 4096];
    let mut want: Option<usize> = None;
    while want.is_none_or(|w| req.len() < w) {
        match sock.read(&mut b).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => req.extend_from_slice(&b[..n]),
        }
        if want.is_none() {
            want = req.windows(4).position(|w| w == b"\r\n\r\n").map(|end| {
                // the Content-Length header line itself (not a name ending in it), any spacing
                let head = String::from_utf8_lossy(&req[..end]).into_owned();
                let len = head.split("\r\n").skip(1).find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.trim().eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
                });
                end + 4 + len.unwrap_or(0)
            });
        }
    }
    Some(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_a_head_and_its_body_and_not_a_cut_request() {
        let sent: &[u8] = b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
        let mut one = sent;
        assert_eq!(read_request(&mut one).await.as_deref(), Some(sent));
        let mut cut: &[u8] = b"POST /a HTTP/1.1\r\ncontent-length: 10\r\n\r\nabc";
        assert_eq!(read_request(&mut cut).await, None);
        // another header's name ending in content-length, and no space after the colon
        let sent: &[u8] = b"PUT /a HTTP/1.1\r\nx-original-content-length: 999\r\nContent-Length:2\r\n\r\nok";
        let mut one = sent;
        assert_eq!(read_request(&mut one).await.as_deref(), Some(sent));
    }
}
