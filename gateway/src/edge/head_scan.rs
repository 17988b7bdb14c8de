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
        if self.phase == Phase::Leading {
            match bytes.iter().position(|b| *b != b'\r' && *b != b'\n') {
                Some(at) => i = at,
                None => return Scan::Partial,
            }
            self.phase = Phase::RequestLine { spaces: 0, cr: false };
        }
        if let Phase::RequestLine { spaces, cr } = self.phase {
            let rest = &bytes[i..];
            let lf = find_lf(rest);
            let line = &rest[..lf.unwrap_or(rest.len())];
            if self.check_request_line {
                match check_line_piece(line, spaces, cr) {
                    Ok((spaces, cr)) => self.phase = Phase::RequestLine { spaces, cr },
                    Err(at) => return Scan::BadRequestLine(i + at),
                }
            }
            match lf {
                Some(at) => {
                    i += at + 1;
                    self.phase = Phase::Headers { eol: 1 };
                }
                None => return Scan::Partial,
            }
        }
        while i < bytes.len() {
            let Phase::Headers { eol } = self.phase else { unreachable!("past the request line") };
            if eol == 0 {
                match find_lf(&bytes[i..]) {
                    Some(at) => {
                        i += at + 1;
                        self.phase = Phase::Headers { eol: 1 };
                        continue;
                    }
                    None => return Scan::Partial,
                }
            }
            self.phase = match bytes[i] {
                b'\n' => return Scan::Complete(i + 1),
                b'\r' if eol == 1 => Phase::Headers { eol: 2 },
                _ => Phase::Headers { eol: 0 },
            };
            i += 1;
        }
        Scan::Partial
    }
}

/// Checks a piece of the request line (without its LF): no control character but a CR right
/// before the LF, no DEL, at most two spaces. `spaces` and `cr` (the previous piece ended with a
/// CR) carry over from earlier pieces. Returns them updated, or the offset of the bad byte.
fn check_line_piece(piece: &[u8], spaces: u8, cr: bool) -> Result<(u8, bool), usize> {
    if cr && !piece.is_empty() {
        return Err(0); // a CR not followed by LF
    }
    // a CR may end the piece: before the LF, or (carried) before the next piece's LF
    let (body, ends_with_cr) = match piece.split_last() {
        Some((b'\r', body)) => (body, true),
        _ => (piece, false),
    };
    let (bad, n_spaces) = classify(body);
    let total = usize::from(spaces) + n_spaces;
    if bad || total > 2 {
        return Err(first_bad(body, spaces));
    }
    Ok((total as u8, ends_with_cr))
}

/// Whether `body` has a bad byte (see [`LINE_BYTE`]), and how many spaces: eight bytes at a
/// time (the table a byte at a time was ~7 instructions a byte of every request line), the
/// last few through the table.
fn classify(body: &[u8]) -> (bool, usize) {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    /// 0x80 in each byte of `y` that is zero, 0 elsewhere (exact: no borrow between bytes).
    fn zero_bytes(y: u64) -> u64 {
        !(((y & LOW7) + LOW7) | y | LOW7)
    }
    let mut bad = 0u64;
    let mut n_spaces = 0usize;
    let mut words = body.chunks_exact(8);
    for w in &mut words {
        let mut word = [0u8; 8];
        word.copy_from_slice(w);
        let x = u64::from_le_bytes(word);
        // below 0x20: the high bit clear, and clear still after adding 0x60 to the low 7 bits
        bad |= !(((x & LOW7) + 0x6060_6060_6060_6060) | x) & HIGHS;
        bad |= zero_bytes(x ^ 0x7f7f_7f7f_7f7f_7f7f);
        n_spaces += zero_bytes(x ^ 0x2020_2020_2020_2020).count_ones() as usize;
    }
    let mut class = 0u8;
    for b in words.remainder() {
        let c = LINE_BYTE[usize::from(*b)];
        class |= c;
        n_spaces += usize::from(c & SPACE);
    }
    (bad != 0 || class & BAD != 0, n_spaces)
}

const SPACE: u8 = 1;
const BAD: u8 = 2;

/// The class of each byte in a request line: control characters (CR included: one ending the
/// line is taken off first) and DEL are bad; spaces are counted.
static LINE_BYTE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = BAD;
        b += 1;
    }
    t[0x7f] = BAD;
    t[b' ' as usize] = SPACE;
    t
};

/// Where [`check_line_piece`] failed (the exact search, only on a failure).
fn first_bad(body: &[u8], spaces: u8) -> usize {
    let mut spaces = usize::from(spaces);
    for (at, b) in body.iter().enumerate() {
        spaces += usize::from(*b == b' ');
        if LINE_BYTE[usize::from(*b)] & BAD != 0 || spaces > 2 {
            return at;
        }
    }
    body.len()
}

/// The offset of the first LF, eight bytes at a time.
pub(super) fn find_lf(s: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    while i + 8 <= s.len() {
        let mut word = [0u8; 8];
        word.copy_from_slice(&s[i..i + 8]);
        let x = u64::from_le_bytes(word) ^ (ONES * u64::from(b'\n'));
        // a zero byte of x is a LF; the lowest flagged byte is always a real one
        let zeros = x.wrapping_sub(ONES) & !x & HIGHS;
        if zeros != 0 {
            return Some(i + (zeros.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    s[i..].iter().position(|b| *b == b'\n').map(|at| i + at)
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
    fn find_lf_agrees_with_a_plain_search() {
        // bytes next to LF in value or in bit pattern, where word-at-a-time tricks go wrong
        let alphabet = [b'\n', 0x0b, 0x09, 0x8a, 0x0a ^ 0x80, 0xff, 0x00, b'a', b'\r'];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in 0..40 {
            for _ in 0..200 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        alphabet[(seed % alphabet.len() as u64) as usize]
                    })
                    .collect();
                assert_eq!(find_lf(&bytes), bytes.iter().position(|b| *b == b'\n'), "{bytes:?}");
            }
        }
    }

    #[test]
    fn the_request_line_check_agrees_with_a_byte_by_byte_reading() {
        // the reference: every byte of the line but a final CR is a visible character, obs-text
        // or one of at most two spaces
        let good = |line: &[u8]| {
            let body = line.strip_suffix(b"\r").unwrap_or(line);
            body.iter().all(|b| *b >= 0x20 && *b != 0x7f) && body.iter().filter(|b| **b == b' ').count() <= 2
        };
        let alphabet = [b'G', b' ', b'/', b'\r', 0x00, 0x01, b'\t', 0x7f, 0x80, b'%'];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for len in 1..24 {
            for _ in 0..300 {
                let line: Vec<u8> = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        alphabet[(seed % alphabet.len() as u64) as usize]
                    })
                    .collect();
                if line[0] == b'\r' {
                    continue; // skipped as an empty line before the request (httparse refuses a bare CR)
                }
                let mut head = line.clone();
                head.extend_from_slice(b"\nHost: a\r\n\r\n");
                for step in [1, 3, head.len()] {
                    let scan = scan_in_steps(&head, step, true).0;
                    let refused = matches!(scan, Scan::BadRequestLine(_));
                    assert_eq!(
                        refused,
                        !good(&line),
                        "{:?} in steps of {step}: {scan:?}",
                        line.escape_ascii().to_string()
                    );
                }
            }
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

    /// The word-at-a-time classification against the table, byte by byte, on bytes next to the
    /// classes' edges in value and bit pattern.
    #[test]
    fn classify_agrees_with_the_table() {
        let alphabet = [0x00, 0x01, 0x09, 0x0d, 0x1f, 0x20, 0x21, 0x60, 0x7e, 0x7f, 0x80, 0x9f, 0xa0, 0xdf, 0xff, b'a'];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..40 {
            for _ in 0..2000 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        // mostly ordinary bytes, so lines with few or no bad ones are common
                        if seed.is_multiple_of(4) {
                            alphabet[(seed >> 8) as usize % alphabet.len()]
                        } else {
                            b'a' + (seed >> 8) as u8 % 26
                        }
                    })
                    .collect();
                let want_bad = bytes.iter().any(|b| LINE_BYTE[usize::from(*b)] & BAD != 0);
                let want_spaces = bytes.iter().filter(|b| **b == b' ').count();
                assert_eq!(classify(&bytes), (want_bad, want_spaces), "{bytes:02x?}");
            }
        }
        for b in 0..=255u8 {
            let line = [b; 9];
            let bad = b < 0x20 || b == 0x7f;
            assert_eq!(classify(&line), (bad, if b == b' ' { 9 } else { 0 }), "{b:#04x}");
        }
    }
}
