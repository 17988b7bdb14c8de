//! [`Framing`]: HTTP/1 message framing followed on a connection's raw request bytes, a read at a
//! time and without buffering, so that [`HeadGuard`](super::HeadGuard) knows where every
//! request head starts (and checks it, pipelined ones included) and refuses a malformed chunked
//! body before Pingora parses it.
//!
//! After each head the body is framed the way Pingora frames it once the proxy's checks passed:
//! a single `Transfer-Encoding: chunked`, else `Content-Length`, else no body. Heads the proxy
//! refuses anyway (both headers, several or invalid values, another coding) are not followed:
//! the stream turns opaque (passed through unjudged) until the proxy's answer closes the
//! connection. So does the stream after an `Upgrade` request's body (it may become another
//! protocol with a `101`), and after a head whose scan began in its middle.
//!
//! Chunked bodies are held to RFC 9112 §7.1: `chunk-size` is 1 to [`MAX_SIZE_DIGITS`] hex digits,
//! `chunk-ext` is `*( BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ] )`, every line
//! ends with CRLF (a bare LF is refused: httparse and nginx disagree on it), chunk data is
//! followed by CRLF, and the trailer section is field lines (`token ":" value`, no obs-fold, no
//! control characters) ending with an empty line. A chunk line is at most [`MAX_CHUNK_LINE`]
//! bytes and the trailer section at most [`MAX_TRAILER_BYTES`].

use std::fmt;

use super::head_scan::{find_lf, HeadScanner, Scan};

/// Longest `chunk-size` (leading zeros included): 16 hex digits hold any `u64`.
pub const MAX_SIZE_DIGITS: u8 = 16;
/// Longest `Content-Length` followed (leading zeros included): 19 digits hold no more than a
/// `u64`. The proxy refuses longer ones (`crate::validate`), so every length it accepts is
/// followed: a head whose body is not followed would leave the connection's later requests
/// unchecked.
pub const MAX_LENGTH_DIGITS: usize = 19;
/// Longest chunk line (size and extensions, without the CRLF).
pub const MAX_CHUNK_LINE: usize = 4096;
/// Largest trailer section (all its lines).
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// What is wrong with a request's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingError {
    /// The request line has a control character, DEL or a space in the target.
    BadRequestLine,
    /// A chunk size that is not 1*HEXDIG (a sign, `0x`, a space, nothing).
    ChunkSize,
    /// A chunk size with more than [`MAX_SIZE_DIGITS`] digits.
    ChunkSizeTooLong,
    /// A chunk extension that is not `;name[=token|"quoted"]`.
    ChunkExtension,
    /// A chunk line longer than [`MAX_CHUNK_LINE`].
    ChunkLineTooLong,
    /// A chunk line ending without CRLF.
    ChunkLineEnd,
    /// Chunk data not followed by CRLF (the data is longer than its size).
    ChunkDataEnd,
    /// A trailer line that is not a field line, or not ending in CRLF.
    Trailer,
    /// A trailer section over [`MAX_TRAILER_BYTES`].
    TrailerTooLong,
}

impl FramingError {
    /// Whether the error is in a request head (the proxy never saw the request).
    pub fn in_head(self) -> bool {
        self == FramingError::BadRequestLine
    }

    pub fn what(self) -> &'static str {
        match self {
            FramingError::BadRequestLine => "control character, DEL or space in the request target",
            FramingError::ChunkSize => "chunk size is not hexadecimal digits",
            FramingError::ChunkSizeTooLong => "chunk size has too many digits",
            FramingError::ChunkExtension => "malformed chunk extension",
            FramingError::ChunkLineTooLong => "chunk line too long",
            FramingError::ChunkLineEnd => "chunk line not ended by CRLF",
            FramingError::ChunkDataEnd => "chunk data not followed by CRLF",
            FramingError::Trailer => "malformed trailer field",
            FramingError::TrailerTooLong => "trailer section too large",
        }
    }
}

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed request: {}", self.what())
    }
}

impl std::error::Error for FramingError {}

/// What [`Framing::step`] found in the bytes it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Every byte was taken; nothing to report.
    More,
    /// The first byte of a head is at this offset (nothing before it was taken but empty lines).
    HeadStart(usize),
    /// A head ended; this many bytes were taken.
    HeadEnd(usize),
    /// The byte at this offset is invalid; the framing is stuck there.
    Bad(usize, FramingError),
}

/// The follower of one connection (see the module comment).
#[derive(Debug)]
pub struct Framing {
    state: State,
    /// Index of the message being read (0: the connection's first request).
    index: u64,
    /// Heads that have ended.
    heads_done: u64,
    /// The current request asked for an upgrade: after its body the stream is opaque.
    upgrade: bool,
}

#[derive(Debug)]
enum State {
    Head {
        scan: HeadScanner,
        fields: Fields,
        checked: bool,
        announced: bool,
    },
    Length(u64),
    Chunked(Chunked),
    Opaque,
    /// Stuck at an invalid byte: takes nothing more.
    Failed(FramingError),
}

impl Framing {
    /// A connection's first head is expected.
    pub fn new() -> Self {
        Self { state: State::head(true), index: 0, heads_done: 0, upgrade: false }
    }

    /// Index of the message the bytes are in (0: the connection's first request).
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Heads that have ended so far.
    pub fn heads_done(&self) -> u64 {
        self.heads_done
    }

    /// Whether the bytes are inside a head whose first byte has been seen.
    pub fn in_started_head(&self) -> bool {
        matches!(&self.state, State::Head { scan, .. } if scan.started())
    }

    /// Whether a head is expected and none of its bytes have come yet.
    pub fn at_head_start(&self) -> bool {
        matches!(&self.state, State::Head { scan, .. } if !scan.started())
    }

    pub fn is_opaque(&self) -> bool {
        matches!(self.state, State::Opaque)
    }

    /// Pingora reads request `index` next while the stream is opaque: follow again from there,
    /// checking the head only when `at_head_start` (the bytes before it were all passed on).
    pub fn resume_at(&mut self, index: u64, at_head_start: bool) {
        self.state = State::head(at_head_start);
        self.index = index;
        self.heads_done = index;
        self.upgrade = false;
    }

    /// Takes `bytes` until something is to be reported.
    pub fn step(&mut self, bytes: &[u8]) -> Step {
        match &mut self.state {
            State::Head { scan, fields, checked, announced } => {
                if !*announced {
                    match bytes.iter().position(|b| *b != b'\r' && *b != b'\n') {
                        Some(at) => {
                            *announced = true;
                            return Step::HeadStart(at);
                        }
                        None => return Step::More,
                    }
                }
                // `HeadStart` was reported: the bytes begin inside the head
                match scan.feed(bytes) {
                    Scan::Partial => {
                        fields.feed(bytes);
                        Step::More
                    }
                    Scan::Complete(n) => {
                        fields.feed(&bytes[..n]);
                        let (checked, fields) = (*checked, std::mem::take(fields));
                        self.end_head(checked, &fields);
                        Step::HeadEnd(n)
                    }
                    Scan::BadRequestLine(at) => self.fail(at, FramingError::BadRequestLine),
                }
            }
            State::Length(left) => {
                if (bytes.len() as u64) < *left {
                    *left -= bytes.len() as u64;
                    return Step::More;
                }
                let n = *left as usize;
                self.next_message();
                self.step_on(bytes, n)
            }
            State::Chunked(c) => match c.feed(bytes) {
                ChunkStep::More => Step::More,
                ChunkStep::Done(n) => {
                    self.next_message();
                    self.step_on(bytes, n)
                }
                ChunkStep::Bad(at, e) => self.fail(at, e),
            },
            State::Opaque => Step::More,
            State::Failed(e) => Step::Bad(0, *e),
        }
    }

    /// Goes on with `bytes[n..]` after a body ended at `n`, offsets reported in `bytes`.
    fn step_on(&mut self, bytes: &[u8], n: usize) -> Step {
        match self.step(&bytes[n..]) {
            Step::More => Step::More,
            Step::HeadStart(at) => Step::HeadStart(n + at),
            Step::HeadEnd(at) => Step::HeadEnd(n + at),
            Step::Bad(at, e) => Step::Bad(n + at, e),
        }
    }

    fn fail(&mut self, at: usize, e: FramingError) -> Step {
        self.state = State::Failed(e);
        Step::Bad(at, e)
    }

    fn end_head(&mut self, checked: bool, fields: &Fields) {
        self.heads_done += 1;
        self.upgrade = fields.upgrade;
        self.state = match fields.body() {
            Some(Body::Length(0)) if checked => {
                self.next_message();
                return;
            }
            Some(Body::Length(n)) if checked => State::Length(n),
            Some(Body::Chunked) if checked => State::Chunked(Chunked::default()),
            _ => State::Opaque,
        };
    }

    fn next_message(&mut self) {
        self.index += 1;
        self.state = if std::mem::take(&mut self.upgrade) { State::Opaque } else { State::head(true) };
    }
}

impl Default for Framing {
    fn default() -> Self {
        Self::new()
    }
}

impl State {
    fn head(checked: bool) -> State {
        State::Head { scan: HeadScanner::new(checked), fields: Fields::default(), checked, announced: false }
    }
}

// ---------------------------------------------------------------------------------------------
// The framing headers of a head

/// How a request's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    Length(u64),
    Chunked,
}

/// The header names that frame a body (or end the HTTP stream), lower-case.
const NAMES: [&[u8]; 3] = [b"content-length", b"transfer-encoding", b"upgrade"];
const CONTENT_LENGTH: u8 = 0;
const TRANSFER_ENCODING: u8 = 1;
const UPGRADE: u8 = 2;
/// Longest framing value kept (without the whitespace around it); longer ones make the framing
/// unknown (the proxy refuses them).
const MAX_VALUE: usize = 32;

#[derive(Debug, Clone, Copy, Default)]
enum Line {
    /// In the request line.
    #[default]
    First,
    /// At the first byte of a header line.
    Start,
    /// In a name that may be `NAMES[which]`, `at` bytes of it matched.
    Name { which: u8, at: u8 },
    /// In the value of `NAMES[which]`.
    Value { which: u8 },
    /// In a line that does not matter.
    Skip,
}

/// The framing headers of one head, found as its bytes pass (see [`Framing`]).
#[derive(Debug, Clone, Default)]
struct Fields {
    line: Line,
    value: [u8; MAX_VALUE],
    value_len: usize,
    value_overflow: bool,
    /// The Content-Length, if every value was the same valid number.
    content_length: Option<u64>,
    /// A Content-Length value was invalid or differed from another.
    bad_length: bool,
    has_length: bool,
    transfer_encodings: u8,
    /// The (only) Transfer-Encoding is exactly `chunked`.
    chunked: bool,
    upgrade: bool,
}

impl Fields {
    fn feed(&mut self, bytes: &[u8]) {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            match self.line {
                Line::First | Line::Skip => match find_lf(&bytes[i..]) {
                    Some(at) => {
                        i += at + 1;
                        self.line = Line::Start;
                        continue;
                    }
                    None => return,
                },
                Line::Start => {
                    let lower = b.to_ascii_lowercase();
                    self.line = match NAMES.iter().position(|n| n[0] == lower) {
                        Some(which) => Line::Name { which: which as u8, at: 1 },
                        // the end of the head: the scanner reports it
                        None if b == b'\n' => Line::Start,
                        None => Line::Skip,
                    };
                }
                Line::Name { which, at } => {
                    let name = NAMES[usize::from(which)];
                    self.line = if usize::from(at) == name.len() {
                        if b == b':' {
                            self.value_len = 0;
                            self.value_overflow = false;
                            Line::Value { which }
                        } else if b == b'\n' {
                            Line::Start
                        } else {
                            Line::Skip
                        }
                    } else if b.to_ascii_lowercase() == name[usize::from(at)] {
                        Line::Name { which, at: at + 1 }
                    } else if b == b'\n' {
                        Line::Start
                    } else {
                        Line::Skip
                    };
                }
                Line::Value { which } => {
                    if b == b'\n' {
                        self.end_value(which);
                        self.line = Line::Start;
                    } else if self.value_len == 0 && (b == b' ' || b == b'\t') {
                        // Pingora's parser drops the whitespace around a value, however much
                        // there is: padding must not make a value the proxy accepts unknown here
                    } else if self.value_len < MAX_VALUE {
                        self.value[self.value_len] = b;
                        self.value_len += 1;
                    } else if !matches!(b, b' ' | b'\t' | b'\r') {
                        // (whitespace past the end is trailing, unless more of the value follows)
                        self.value_overflow = true;
                    }
                }
            }
            i += 1;
        }
    }

    fn end_value(&mut self, which: u8) {
        let value = self.value[..self.value_len].trim_ascii();
        let value = if self.value_overflow { &b"\0"[..] } else { value };
        match which {
            CONTENT_LENGTH => {
                self.has_length = true;
                let n = (!value.is_empty() && value.len() <= MAX_LENGTH_DIGITS && value.iter().all(u8::is_ascii_digit))
                    .then(|| value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')));
                match (n, self.content_length) {
                    (Some(n), None) if !self.bad_length => self.content_length = Some(n),
                    (Some(n), Some(m)) if n == m => {}
                    _ => {
                        self.bad_length = true;
                        self.content_length = None;
                    }
                }
            }
            TRANSFER_ENCODING => {
                self.transfer_encodings = self.transfer_encodings.saturating_add(1);
                self.chunked = value.eq_ignore_ascii_case(b"chunked");
            }
            UPGRADE => self.upgrade = true,
            _ => {}
        }
    }

    /// The body's framing, `None` when the proxy refuses the head for it (then not followed).
    fn body(&self) -> Option<Body> {
        if self.transfer_encodings > 0 {
            return (self.transfer_encodings == 1 && self.chunked && !self.has_length).then_some(Body::Chunked);
        }
        if self.bad_length {
            return None;
        }
        Some(Body::Length(self.content_length.unwrap_or(0)))
    }
}

// ---------------------------------------------------------------------------------------------
// Chunked bodies

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum C {
    /// At the first byte of a chunk-size.
    #[default]
    SizeStart,
    Size,
    /// BWS before a `;` (after the size or an extension): a `;` must follow.
    ExtBws,
    /// Right after a quoted value: `;`, BWS or the line's end.
    AfterQuoted,
    /// BWS after a `;`, before the extension's name.
    NameBws,
    Name,
    /// BWS after a name: `=`, `;` or the line's end follow.
    AfterName,
    /// BWS after `=`, before the value.
    ValueBws,
    Token,
    Quoted,
    QuotedPair,
    /// The CR of a chunk line was seen.
    LineLf,
    Data,
    DataCr,
    DataLf,
    /// At the first byte of a trailer line (or of the final empty line).
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    EndLf,
}

#[derive(Debug, Clone, Copy, Default)]
struct Chunked {
    c: C,
    size: u64,
    digits: u8,
    /// Bytes of the current chunk line.
    line: usize,
    /// Bytes of the trailer section.
    trailer: usize,
}

enum ChunkStep {
    More,
    /// The body ended; this many bytes were taken.
    Done(usize),
    Bad(usize, FramingError),
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

impl Chunked {
    fn feed(&mut self, bytes: &[u8]) -> ChunkStep {
        use FramingError as E;
        let mut i = 0;
        while i < bytes.len() {
            if self.c == C::Data {
                let take = (bytes.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                self.size -= take as u64;
                i += take;
                if self.size == 0 {
                    self.c = C::DataCr;
                }
                continue;
            }
            let b = bytes[i];
            let bad = |e| ChunkStep::Bad(i, e);
            let in_line = matches!(
                self.c,
                C::Size
                    | C::ExtBws
                    | C::AfterQuoted
                    | C::NameBws
                    | C::Name
                    | C::AfterName
                    | C::ValueBws
                    | C::Token
                    | C::Quoted
                    | C::QuotedPair
            );
            if in_line {
                self.line += 1;
                if self.line > MAX_CHUNK_LINE {
                    return bad(E::ChunkLineTooLong);
                }
            }
            let in_trailer =
                matches!(self.c, C::TrailerStart | C::TrailerName | C::TrailerValue | C::TrailerLf | C::EndLf);
            if in_trailer {
                self.trailer += 1;
                if self.trailer > MAX_TRAILER_BYTES {
                    return bad(E::TrailerTooLong);
                }
            }
            self.c = match self.c {
                C::SizeStart => match hex(b) {
                    Some(d) => {
                        self.size = u64::from(d);
                        self.digits = 1;
                        self.line = 1;
                        C::Size
                    }
                    None => return bad(E::ChunkSize),
                },
                C::Size => match hex(b) {
                    Some(d) => {
                        self.digits += 1;
                        if self.digits > MAX_SIZE_DIGITS {
                            return bad(E::ChunkSizeTooLong);
                        }
                        self.size = self.size << 4 | u64::from(d);
                        C::Size
                    }
                    None if b == b';' => C::NameBws,
                    None if is_ws(b) => C::ExtBws,
                    None if b == b'\r' => C::LineLf,
                    None if b == b'\n' => return bad(E::ChunkLineEnd),
                    None => return bad(E::ChunkSize),
                },
                C::ExtBws => match b {
                    b';' => C::NameBws,
                    _ if is_ws(b) => C::ExtBws,
                    _ => return bad(E::ChunkExtension),
                },
                C::AfterQuoted => match b {
                    b';' => C::NameBws,
                    b'\r' => C::LineLf,
                    _ if is_ws(b) => C::ExtBws,
                    _ => return bad(E::ChunkExtension),
                },
                C::NameBws => match b {
                    _ if is_ws(b) => C::NameBws,
                    _ if is_tchar(b) => C::Name,
                    _ => return bad(E::ChunkExtension),
                },
                C::Name => match b {
                    _ if is_tchar(b) => C::Name,
                    b';' => C::NameBws,
                    b'=' => C::ValueBws,
                    b'\r' => C::LineLf,
                    _ if is_ws(b) => C::AfterName,
                    _ => return bad(E::ChunkExtension),
                },
                C::AfterName => match b {
                    b';' => C::NameBws,
                    b'=' => C::ValueBws,
                    _ if is_ws(b) => C::AfterName,
                    _ => return bad(E::ChunkExtension),
                },
                C::ValueBws => match b {
                    b'"' => C::Quoted,
                    _ if is_ws(b) => C::ValueBws,
                    _ if is_tchar(b) => C::Token,
                    _ => return bad(E::ChunkExtension),
                },
                C::Token => match b {
                    _ if is_tchar(b) => C::Token,
                    b';' => C::NameBws,
                    b'\r' => C::LineLf,
                    _ if is_ws(b) => C::ExtBws,
                    _ => return bad(E::ChunkExtension),
                },
                // qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
                C::Quoted => match b {
                    b'"' => C::AfterQuoted,
                    b'\\' => C::QuotedPair,
                    b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff => C::Quoted,
                    _ => return bad(E::ChunkExtension),
                },
                // quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
                C::QuotedPair => match b {
                    b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff => C::Quoted,
                    _ => return bad(E::ChunkExtension),
                },
                C::LineLf => match b {
                    b'\n' if self.size == 0 => {
                        self.trailer = 0;
                        C::TrailerStart
                    }
                    b'\n' => C::Data,
                    _ => return bad(E::ChunkLineEnd),
                },
                C::Data => unreachable!("taken in bulk above"),
                C::DataCr => match b {
                    b'\r' => C::DataLf,
                    _ => return bad(E::ChunkDataEnd),
                },
                C::DataLf => match b {
                    b'\n' => C::SizeStart,
                    _ => return bad(E::ChunkDataEnd),
                },
                C::TrailerStart => match b {
                    b'\r' => C::EndLf,
                    _ if is_tchar(b) => C::TrailerName,
                    _ => return bad(E::Trailer),
                },
                C::TrailerName => match b {
                    b':' => C::TrailerValue,
                    _ if is_tchar(b) => C::TrailerName,
                    _ => return bad(E::Trailer),
                },
                C::TrailerValue => match b {
                    b'\r' => C::TrailerLf,
                    b'\t' | b' '..=0x7e | 0x80..=0xff => C::TrailerValue,
                    _ => return bad(E::Trailer),
                },
                C::TrailerLf => match b {
                    b'\n' => C::TrailerStart,
                    _ => return bad(E::Trailer),
                },
                C::EndLf => match b {
                    b'\n' => return ChunkStep::Done(i + 1),
                    _ => return bad(E::Trailer),
                },
            };
            i += 1;
        }
        ChunkStep::More
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
#[path = "framing_tests.rs"]
mod tests;
