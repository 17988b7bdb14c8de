//! Finding where an HTTP/1 request head ends, a read at a time, without buffering: the state
//! carries over between reads, so a terminator split across two reads is still found.
//!
//! The head ends at the first empty line after the request line (`\n\r\n` or `\n\n`: httparse
//! accepts bare LF line ends, so the scan must too). Empty lines before the request line are
//! skipped, as httparse does, so a client cannot end a "head" with them and trickle the rest.
//!
//! When the scan is known to start at the first byte of a head, it also checks the request line
//! for what Pingora's parser would percent-escape instead of refusing: control characters
//! (NUL, tab, bare CR...), DEL and spaces inside the target (a third space).

/// What one read told the scanner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// The head goes on past these bytes.
    Partial,
    /// The head ended; this many of the bytes were part of it (the rest is body or the next
    /// request).
    Complete(usize),
    /// The request line has a byte no valid request line has, at this offset of the bytes.
    BadRequestLine(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the request line: empty lines are skipped.
    Leading,
    /// In the request line: spaces seen, and whether the previous byte was a CR.
    RequestLine { spaces: u8, cr: bool },
    /// In the header lines: 0 inside a line, 1 just after a LF, 2 after LF CR.
    Headers { eol: u8 },
}

/// The scan of one request head.
#[derive(Debug, Clone, Copy)]
pub struct HeadScanner {
    phase: Phase,
    check_request_line: bool,
}

impl HeadScanner {
    /// A scan from the first byte of a head; `check_request_line` refuses control characters,
    /// DEL and spaces in the target (only sound when the scan starts at the head's first byte).
    pub fn new(check_request_line: bool) -> Self {
        Self { phase: Phase::Leading, check_request_line }
    }

    /// Whether a byte of a head has been seen (empty lines before it do not count).
    pub fn started(&self) -> bool {
        self.phase != Phase::Leading
    }

    /// Scans the next bytes of the head.
    pub fn feed(&mut self, bytes: &[u8]) -> Scan {
        let mut i = 0;
        while i < bytes.len() {
            match self.phase {
                Phase::Leading => {
                    if bytes[i] != b'\r' && bytes[i] != b'\n' {
                        self.phase = Phase::RequestLine { spaces: 0, cr: false };
                        continue;
                    }
                }
                Phase::RequestLine { spaces, cr } => {
                    let b = bytes[i];
                    if b == b'\n' {
                        self.phase = Phase::Headers { eol: 1 };
                    } else if self.check_request_line
                        && (cr || b == 0x7f || (b < 0x20 && b != b'\r') || spaces == 2 && b == b' ')
                    {
                        return Scan::BadRequestLine(i);
                    } else {
                        self.phase =
                            Phase::RequestLine { spaces: spaces + u8::from(b == b' ' && spaces < 2), cr: b == b'\r' };
                    }
                }
                Phase::Headers { eol: 0 } => match bytes[i..].iter().position(|b| *b == b'\n') {
                    Some(at) => {
                        i += at;
                        self.phase = Phase::Headers { eol: 1 };
                    }
                    None => return Scan::Partial,
                },
                Phase::Headers { eol } => {
                    self.phase = match bytes[i] {
                        b'\n' => return Scan::Complete(i + 1),
                        b'\r' if eol == 1 => Phase::Headers { eol: 2 },
                        _ => Phase::Headers { eol: 0 },
                    };
                }
            }
            i += 1;
        }
        Scan::Partial
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `head` in pieces of `step` bytes; the scan's outcome and where (in `head`) it came.
    fn scan_in_steps(head: &[u8], step: usize, check: bool) -> (Scan, usize) {
        let mut s = HeadScanner::new(check);
        let mut at = 0;
        for piece in head.chunks(step) {
            match s.feed(piece) {
                Scan::Partial => at += piece.len(),
                Scan::Complete(n) => return (Scan::Complete(at + n), at + n),
                Scan::BadRequestLine(n) => return (Scan::BadRequestLine(at + n), at + n),
            }
        }
        (Scan::Partial, at)
    }

    #[test]
    fn finds_the_end_of_a_head_however_it_is_split() {
        let cases: &[(&[u8], Scan)] = &[
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody", Scan::Complete(27)),
            (b"GET / HTTP/1.0\r\n\r\n", Scan::Complete(18)),
            (b"GET / HTTP/1.1\nHost: a\n\nbody", Scan::Complete(24)),
            (b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", Scan::Complete(31)),
            (b"GET / HTTP/1.1\r\nHost: a\r\nx-slow: 1", Scan::Partial),
            (b"\r\n\r\n\r\n", Scan::Partial),
            (b"GET / HTTP/1.1\r\nHost: a\r\rx\r\n\r\n", Scan::Complete(30)),
        ];
        for (head, want) in cases {
            for step in 1..=head.len() {
                assert_eq!(
                    scan_in_steps(head, step, true).0,
                    *want,
                    "{:?} in steps of {step}",
                    head.escape_ascii().to_string()
                );
            }
        }
    }

    #[test]
    fn refuses_what_pingora_would_escape_in_the_request_line() {
        for bad in [
            &b"GET /a\x01b HTTP/1.1\r\n\r\n"[..],
            b"GET /a\0b HTTP/1.1\r\n\r\n",
            b"GET /a\x7fb HTTP/1.1\r\n\r\n",
            b"GET /a\tb HTTP/1.1\r\n\r\n",
            b"GET /a b HTTP/1.1\r\n\r\n",
            b"GET /a\rb HTTP/1.1\r\n\r\n",
        ] {
            for step in 1..=bad.len() {
                let (scan, _) = scan_in_steps(bad, step, true);
                assert!(matches!(scan, Scan::BadRequestLine(_)), "{:?}: {scan:?}", bad.escape_ascii().to_string());
                assert!(
                    matches!(scan_in_steps(bad, step, false).0, Scan::Complete(_)),
                    "unchecked scans only look for the end"
                );
            }
        }
        // query strings, percent-escapes, obs-text and absolute targets are the parser's to judge
        for good in [
            &b"GET /a?b=%20c&d HTTP/1.1\r\n\r\n"[..],
            b"GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n",
            b"GET http://a/b HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                matches!(scan_in_steps(good, 1, true).0, Scan::Complete(_)),
                "{:?}",
                good.escape_ascii().to_string()
            );
        }
    }

    #[test]
    fn a_head_has_started_only_after_its_first_byte() {
        let mut s = HeadScanner::new(true);
        assert_eq!(s.feed(b"\r\n"), Scan::Partial);
        assert!(!s.started());
        assert_eq!(s.feed(b"G"), Scan::Partial);
        assert!(s.started());
    }
}
