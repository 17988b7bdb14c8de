//! Diagnostics: one problem with its place ([`ConfigIssue`]), all problems of a file
//! ([`ConfigError`]), the collector validation pushes them into ([`Issues`]), and the first pass
//! that deserializes the raw model while reporting every unknown key at once.

use std::fmt;

use toml::Spanned;

use super::raw::RawConfig;

/// One problem in a config file, with its place.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConfigIssue {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: error: {}", self.file, self.line, self.column, self.message)?;
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

/// Every problem found in one config file.
#[derive(Debug, Clone, thiserror::Error, serde::Serialize)]
pub struct ConfigError {
    pub issues: Vec<ConfigIssue>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.issues.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

/// Collects issues while validating; converts byte offsets into line/column.
pub(super) struct Issues<'a> {
    file: &'a str,
    src: &'a str,
    list: Vec<(usize, ConfigIssue)>,
}

impl<'a> Issues<'a> {
    pub(super) fn new(file: &'a str, src: &'a str) -> Self {
        Self { file, src, list: Vec::new() }
    }

    pub(super) fn push(&mut self, offset: usize, message: impl Into<String>, hint: Option<String>) {
        let (line, column) = line_col(self.src, offset);
        self.list
            .push((offset, ConfigIssue { file: self.file.to_string(), line, column, message: message.into(), hint }));
    }

    pub(super) fn at<T>(&mut self, s: &Spanned<T>, message: impl Into<String>, hint: impl Into<Option<String>>) {
        self.push(s.span().start, message, hint.into());
    }

    /// `file:line:col` of a byte offset (to point at a second place in a message).
    pub(super) fn place(&self, offset: usize) -> String {
        let (line, column) = line_col(self.src, offset);
        format!("{}:{line}:{column}", self.file)
    }

    pub(super) fn into_error(mut self) -> Option<ConfigError> {
        if self.list.is_empty() {
            return None;
        }
        self.list.sort_by_key(|(o, _)| *o);
        Some(ConfigError { issues: self.list.into_iter().map(|(_, i)| i).collect() })
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = &src[..floor_char_boundary(src, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

pub(super) fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Deserializes the raw model. On unknown keys it keeps going by blanking the offending key
/// (same byte length, so positions stay valid) and parsing again, so several typos are
/// reported at once and the semantic checks still run on the rest.
pub(super) fn parse_raw(file: &str, src: &str) -> (Option<RawConfig>, Option<ConfigError>) {
    let mut issues = Issues::new(file, src);
    // the text is copied only when a key has to be blanked (a valid file is parsed in place)
    let mut text = std::borrow::Cow::Borrowed(src);
    for _ in 0..32 {
        match toml::from_str::<RawConfig>(&text) {
            Ok(raw) => return (Some(raw), issues.into_error()),
            Err(e) => {
                let offset = e.span().map(|s| s.start).unwrap_or(0);
                let msg = e.message().trim().to_string();
                let unknown = msg.starts_with("unknown field");
                let hint = if unknown {
                    Some("remove the key or fix its spelling".to_string())
                } else if msg.contains("missing field") {
                    Some("add the required key".to_string())
                } else if msg.contains("invalid type") {
                    Some("check the value's type (string, number, table, array)".to_string())
                } else {
                    None
                };
                issues.push(offset, msg, hint);
                let text = text.to_mut();
                if !unknown || !(blank_line(text, offset) || blank_inline_pair(text, offset)) {
                    break;
                }
            }
        }
    }
    (None, issues.into_error())
}

/// Turns the line containing `offset` into a comment of the same length. Returns false if the
/// line cannot be blanked safely (e.g. inline tables or multi-line values).
fn blank_line(text: &mut String, offset: usize) -> bool {
    let offset = floor_char_boundary(text, offset.min(text.len()));
    let start = text[..offset].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let end = text[offset..].find('\n').map(|i| offset + i).unwrap_or(text.len());
    let line = &text[start..end];
    let trimmed = line.trim_start();
    // a key line in a table: `key = value` with balanced brackets
    // only when the offending key is the line's own key (not one inside an inline table)
    if trimmed.starts_with('[') || !trimmed.contains('=') || offset - start != line.len() - trimmed.len() {
        return false;
    }
    let opens = line.matches(['[', '{']).count();
    let closes = line.matches([']', '}']).count();
    if opens != closes || trimmed.contains("\"\"\"") || trimmed.contains("'''") {
        return false;
    }
    let blank: String = std::iter::once('#').chain(line.chars().skip(1).map(|_| ' ')).collect();
    // keep byte length identical so spans of later errors stay valid
    let pad = line.len() - blank.len();
    let blank = blank + &" ".repeat(pad);
    text.replace_range(start..end, &blank);
    true
}

/// Blanks `key = value` inside an inline table (and the comma that separated it), keeping byte
/// offsets. Returns false when the value's end cannot be found on the same line.
fn blank_inline_pair(text: &mut String, offset: usize) -> bool {
    let offset = floor_char_boundary(text, offset.min(text.len()));
    let bytes = text.as_bytes();
    let (mut depth, mut quote, mut i) = (0i32, None::<u8>, offset);
    let end = loop {
        let Some(&b) = bytes.get(i) else { return false };
        match (quote, b) {
            (_, b'\n') => return false,
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'') => quote = Some(b),
            (None, b'[' | b'{') => depth += 1,
            (None, b']' | b'}') if depth > 0 => depth -= 1,
            (None, b',' | b'}') if depth == 0 => break i,
            _ => {}
        }
        i += 1;
    };
    let mut start = offset;
    let mut stop = end;
    if bytes[end] == b',' {
        stop = end + 1;
    } else {
        // last pair: drop the comma before it instead
        let before = text[..offset].trim_end();
        if before.ends_with(',') {
            start = before.len() - 1;
        }
    }
    let blank = " ".repeat(stop - start);
    text.replace_range(start..stop, &blank);
    true
}
