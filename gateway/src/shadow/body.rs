//! A body as it streams past the proxy, kept by reference (`Bytes` clones, no copies) up to a
//! limit and hashed beyond it; used for the primary response (capture) and the mirror's answer
//! (worker).

use bytes::{Bytes, BytesMut};

use super::compare::BodyDigest;
use super::policy::Oversize;

/// A body as it streamed past: chunk references up to the limit, then (when hashing) a running
/// CRC-32 of the whole body. The first chunk is kept beside the list: a body of one chunk (most
/// answers) allocates nothing, on the proxy thread for the primary's and on the shadow thread for
/// the mirror's, and the shadow thread has no list from the proxy thread's heap to free.
#[derive(Clone, Default)]
pub struct BodyCapture {
    first: Option<Bytes>,
    chunks: Vec<Bytes>,
    len: usize,
    crc: Option<crc32fast::Hasher>,
    over: bool,
}

/// A finished body capture.
#[derive(Debug, Clone)]
pub struct CapturedBody {
    /// The body, or empty when it was larger than the limit.
    pub body: Bytes,
    pub len: usize,
    pub truncated: bool,
    pub digest: Option<BodyDigest>,
}

impl BodyCapture {
    /// Adds a chunk; past `max` the kept chunks are hashed and dropped (or just dropped).
    #[inline]
    pub fn push(&mut self, b: &Bytes, max: usize, oversize: Oversize) {
        if b.is_empty() {
            return;
        }
        self.len += b.len();
        if let Some(h) = &mut self.crc {
            h.update(b);
        } else if self.over {
        } else if self.len > max {
            self.over = true;
            if oversize == Oversize::Hash {
                let mut h = crc32fast::Hasher::new();
                for c in self.first.iter().chain(&self.chunks) {
                    h.update(c);
                }
                h.update(b);
                self.crc = Some(h);
            }
            self.first = None;
            self.chunks = Vec::new();
        } else if self.first.is_none() {
            self.first = Some(b.clone());
        } else {
            self.chunks.push(b.clone());
        }
    }

    pub fn finish(self) -> CapturedBody {
        let digest = self.crc.map(|h| BodyDigest { len: self.len as u64, crc32: h.finalize() });
        let body = match (self.first, self.chunks.is_empty()) {
            (None, _) => Bytes::new(),
            (Some(b), true) => b,
            (Some(b), false) => {
                let mut all = BytesMut::with_capacity(self.len);
                all.extend_from_slice(&b);
                for c in &self.chunks {
                    all.extend_from_slice(c);
                }
                all.freeze()
            }
        };
        CapturedBody { body, len: self.len, truncated: self.over, digest }
    }
}

pub(crate) fn concat(mut chunks: Vec<Bytes>) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap_or_default(),
        _ => {
            let mut b = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
            for c in chunks {
                b.extend_from_slice(&c);
            }
            b.freeze()
        }
    }
}

/// The complete request body from the captured chunks: after retries the chunks hold replays of
/// Pingora's retry buffer followed by the rest, so the body is the last `len` bytes.
pub fn request_body(chunks: Vec<Bytes>, len: usize) -> Option<Bytes> {
    let all = concat(chunks);
    (all.len() >= len).then(|| all.slice(all.len() - len..))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_capture_keeps_small_bodies_and_hashes_large_ones() {
        let mut c = BodyCapture::default();
        c.push(&Bytes::from_static(b"hello "), 16, Oversize::Hash);
        c.push(&Bytes::from_static(b"world"), 16, Oversize::Hash);
        c.push(&Bytes::from_static(b"!"), 16, Oversize::Hash);
        let b = c.finish();
        assert_eq!(&b.body[..], b"hello world!");
        assert!(!b.truncated && b.digest.is_none());

        let mut c = BodyCapture::default();
        c.push(&Bytes::from_static(b"one chunk"), 16, Oversize::Hash);
        assert_eq!(&c.finish().body[..], b"one chunk");
        assert!(BodyCapture::default().finish().body.is_empty());

        let mut c = BodyCapture::default();
        for _ in 0..10 {
            c.push(&Bytes::from_static(b"0123456789"), 16, Oversize::Hash);
        }
        let b = c.finish();
        assert!(b.truncated && b.body.is_empty());
        assert_eq!(b.digest, Some(BodyDigest::of("0123456789".repeat(10).as_bytes())));

        let mut c = BodyCapture::default();
        for _ in 0..10 {
            c.push(&Bytes::from_static(b"0123456789"), 16, Oversize::Skip);
        }
        let b = c.finish();
        assert!(b.truncated && b.digest.is_none() && b.len == 100);
    }

    #[test]
    fn request_body_is_the_suffix_after_retry_replays() {
        // attempt 1 saw "ab", "cd"; the retry replayed "abcd", then "ef" arrived
        let chunks = ["ab", "cd", "abcd", "ef"].map(|s| Bytes::from_static(s.as_bytes())).to_vec();
        assert_eq!(&request_body(chunks, 6).unwrap()[..], b"abcdef");
        assert_eq!(request_body(vec![Bytes::from_static(b"abc")], 3).unwrap(), Bytes::from_static(b"abc"));
        assert!(request_body(vec![], 0).unwrap().is_empty());
        assert!(request_body(vec![Bytes::from_static(b"ab")], 3).is_none());
    }
}
