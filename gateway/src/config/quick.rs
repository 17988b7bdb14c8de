//! The quick reader: `routes.toml` into the raw model in one pass, for the files it fully
//! understands, so `check` and a reload of a large valid file skip most of toml's work.
//!
//! Why not only `toml::from_str`: toml 1.2 lexes the whole text into a token vector, turns that
//! into an event vector, builds a `BTreeMap` document from the events and then deserializes the
//! model from it: ~180M instructions for a 10,000-route (1 MB) file, 70% of a reload. This
//! reader parses a strict subset of TOML (what routes.toml files are made of: `[table]` and
//! `[[array]]` headers of bare keys, `key = value` lines, basic strings without escapes, literal
//! strings, decimal integers, plain floats, booleans, arrays, one-line inline tables, comments)
//! straight into a small tree and deserializes the same serde model from it.
//!
//! It never decides that a file is wrong: anything outside the subset (an escape, a dotted key,
//! a date, a duplicate key, a syntax error...) and any deserialization error (an unknown key, a
//! wrong type) make it return `None`, and the caller parses the text again with toml, whose
//! messages and places are the ones reported. Spans are those toml gives (the unit tests compare
//! both readers' output, spans included), though only error messages ever read them.

use std::ops::Range;

use serde::de::value::{MapDeserializer, SeqDeserializer};
use serde::de::{Deserialize, IntoDeserializer, Visitor};

use super::raw::RawConfig;

/// The raw model of `src`, or `None` when the quick reader cannot vouch for it (then parse with
/// toml, which also reports the errors).
pub(super) fn parse(src: &str) -> Option<RawConfig> {
    let root = Reader { src, b: src.as_bytes(), i: 0 }.document()?;
    RawConfig::deserialize(Node { span: 0..0, val: Val::Table(root) }).ok()
}

/// Debug builds (the tests) check every file the quick reader takes against toml: the same
/// model, spans included, and never a file toml refuses.
#[cfg(debug_assertions)]
pub(super) fn assert_same_as_toml(src: &str, quick: &RawConfig) {
    match toml::from_str::<RawConfig>(src) {
        Ok(t) => assert_eq!(format!("{quick:?}"), format!("{t:?}"), "the quick reader and toml disagree on:\n{src}"),
        Err(e) => panic!("the quick reader took a file toml refuses ({e}):\n{src}"),
    }
}

/// Nesting deeper than this (arrays and inline tables in one another) is left to toml.
const MAX_DEPTH: usize = 32;
/// Tables with more keys than this are left to toml (duplicate keys are found by a linear scan).
const MAX_KEYS: usize = 512;

/// A value and the bytes it was written as (what toml's `Spanned` reports).
#[derive(Debug)]
struct Node<'a> {
    span: Range<usize>,
    val: Val<'a>,
}

#[derive(Debug)]
enum Val<'a> {
    Str(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// `true`: an array of tables (`[[name]]`), which later headers may extend.
    Array(Vec<Node<'a>>, bool),
    Table(Table<'a>),
}

#[derive(Debug, Default)]
struct Table<'a> {
    /// In file order (the model does not depend on it: toml hands keys over sorted).
    entries: Vec<(&'a str, Node<'a>)>,
    /// Created by a header's path (`[a.b]` creates `a`): `[a]` may still define it.
    implicit: bool,
    /// `{ ... }`: complete as written, no header may extend it.
    inline: bool,
}

impl<'a> Table<'a> {
    fn position(&self, key: &str) -> Option<usize> {
        self.entries.iter().position(|(k, _)| *k == key)
    }

    /// Adds a key that must be new.
    fn insert(&mut self, key: &'a str, node: Node<'a>) -> Option<()> {
        if self.entries.len() >= MAX_KEYS || self.position(key).is_some() {
            return None;
        }
        self.entries.push((key, node));
        Some(())
    }
}

/// A `[a.b]` or `[[a.b]]` header.
struct Header<'a> {
    path: Vec<(&'a str, Range<usize>)>,
    key: &'a str,
    span: Range<usize>,
    array: bool,
}

struct Reader<'a> {
    src: &'a str,
    b: &'a [u8],
    i: usize,
}

fn is_bare(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

/// A byte TOML does not allow in strings and comments (tab aside).
fn is_control(c: u8) -> bool {
    (c < 0x20 && c != b'\t') || c == 0x7f
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    /// A comment up to (not including) its line's end.
    fn comment(&mut self) -> Option<()> {
        debug_assert_eq!(self.peek(), Some(b'#'));
        self.i += 1;
        while let Some(c) = self.peek() {
            if c == b'\n' || c == b'\r' {
                break;
            }
            if is_control(c) {
                return None;
            }
            self.i += 1;
        }
        Some(())
    }

    /// A line break (`\n` or `\r\n`), or the end of the text.
    fn newline(&mut self) -> Option<()> {
        match self.peek() {
            None => Some(()),
            Some(b'\n') => {
                self.i += 1;
                Some(())
            }
            Some(b'\r') if self.b.get(self.i + 1) == Some(&b'\n') => {
                self.i += 2;
                Some(())
            }
            _ => None,
        }
    }

    /// What may follow a header or a key/value: blanks, a comment, the line's end.
    fn line_end(&mut self) -> Option<()> {
        self.skip_ws();
        if self.peek() == Some(b'#') {
            self.comment()?;
        }
        self.newline()
    }

    /// Blanks, comments and line breaks (between array elements).
    fn skip_ws_lines(&mut self) -> Option<()> {
        loop {
            self.skip_ws();
            match self.peek() {
                Some(b'#') => self.comment()?,
                Some(b'\n' | b'\r') => self.newline()?,
                _ => return Some(()),
            }
        }
    }

    fn document(&mut self) -> Option<Table<'a>> {
        if self.src.starts_with('\u{feff}') {
            return None;
        }
        let mut root = Table::default();
        let mut current = Table::default();
        let mut header: Option<Header<'a>> = None;
        loop {
            self.skip_ws();
            match self.peek() {
                None => break,
                Some(b'#') => self.line_end()?,
                Some(b'\n' | b'\r') => self.newline()?,
                Some(b'[') => {
                    finish(&mut root, &mut current, header.take())?;
                    let h = self.header()?;
                    self.line_end()?;
                    start(&mut root, &mut current, &h)?;
                    header = Some(h);
                }
                Some(_) => {
                    let key = self.key()?;
                    self.skip_ws();
                    if self.peek() != Some(b'=') {
                        return None; // a dotted key, or not TOML
                    }
                    self.i += 1;
                    self.skip_ws();
                    let value = self.value(0)?;
                    self.line_end()?;
                    current.insert(key, value)?;
                }
            }
        }
        finish(&mut root, &mut current, header)?;
        Some(root)
    }

    /// `[a.b]` or `[[a.b]]`, bare keys only.
    fn header(&mut self) -> Option<Header<'a>> {
        let start = self.i;
        self.i += 1;
        let array = self.peek() == Some(b'[');
        if array {
            self.i += 1;
        }
        let mut path = Vec::new();
        loop {
            self.skip_ws();
            let k0 = self.i;
            let key = self.bare_key()?;
            path.push((key, k0..self.i));
            self.skip_ws();
            match self.peek()? {
                b'.' => self.i += 1,
                b']' => break,
                _ => return None,
            }
        }
        self.i += 1;
        if array {
            if self.peek() != Some(b']') {
                return None;
            }
            self.i += 1;
        }
        let (key, _) = path.pop()?;
        Some(Header { path, key, span: start..self.i, array })
    }

    fn bare_key(&mut self) -> Option<&'a str> {
        let start = self.i;
        while self.peek().is_some_and(is_bare) {
            self.i += 1;
        }
        (self.i > start).then(|| &self.src[start..self.i])
    }

    /// A bare key, or a quoted one without escapes.
    fn key(&mut self) -> Option<&'a str> {
        match self.peek()? {
            q @ (b'"' | b'\'') => self.string(q).map(|(s, _)| s),
            _ => self.bare_key(),
        }
    }

    /// `"..."` without escapes or `'...'`, on one line. Returns the text and the span (quotes
    /// included).
    fn string(&mut self, quote: u8) -> Option<(&'a str, Range<usize>)> {
        let start = self.i;
        if self.b[start..].starts_with(&[quote; 3]) {
            return None; // multi-line
        }
        let mut j = start + 1;
        loop {
            let c = *self.b.get(j)?;
            if c == quote {
                break;
            }
            if is_control(c) || (quote == b'"' && c == b'\\') {
                return None;
            }
            j += 1;
        }
        self.i = j + 1;
        Some((&self.src[start + 1..j], start..self.i))
    }

    fn value(&mut self, depth: usize) -> Option<Node<'a>> {
        if depth > MAX_DEPTH {
            return None;
        }
        let start = self.i;
        let val = match self.peek()? {
            q @ (b'"' | b'\'') => {
                let (s, span) = self.string(q)?;
                return Some(Node { span, val: Val::Str(s) });
            }
            b'[' => Val::Array(self.array(depth)?, false),
            b'{' => Val::Table(self.inline_table(depth)?),
            b't' | b'f' => {
                let word = if self.b[start..].starts_with(b"true") { "true" } else { "false" };
                if !self.b[start..].starts_with(word.as_bytes()) {
                    return None;
                }
                self.i += word.len();
                self.delimited()?;
                Val::Bool(word == "true")
            }
            b'-' | b'0'..=b'9' => self.number()?,
            _ => return None,
        };
        Some(Node { span: start..self.i, val })
    }

    /// After a scalar: something that may end it.
    fn delimited(&self) -> Option<()> {
        match self.peek() {
            None | Some(b' ' | b'\t' | b',' | b']' | b'}' | b'\n' | b'\r' | b'#') => Some(()),
            _ => None,
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        self.i - start
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?`; anything else (underscores, exponents, hex, dates) is
    /// left to toml.
    fn number(&mut self) -> Option<Val<'a>> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        let int_start = self.i;
        let n = self.digits();
        if n == 0 || (n > 1 && self.b[int_start] == b'0') {
            return None;
        }
        let float = self.peek() == Some(b'.');
        if float {
            self.i += 1;
            if self.digits() == 0 {
                return None;
            }
        }
        self.delimited()?;
        let text = &self.src[start..self.i];
        if float {
            text.parse().ok().map(Val::Float)
        } else {
            text.parse().ok().map(Val::Int)
        }
    }

    fn array(&mut self, depth: usize) -> Option<Vec<Node<'a>>> {
        self.i += 1;
        let mut items = Vec::new();
        loop {
            self.skip_ws_lines()?;
            if self.peek()? == b']' {
                self.i += 1;
                return Some(items);
            }
            items.push(self.value(depth + 1)?);
            self.skip_ws_lines()?;
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Some(items);
                }
                _ => return None,
            }
        }
    }

    /// `{ k = v, ... }` on one line, no trailing comma (TOML 1.0's inline table).
    fn inline_table(&mut self, depth: usize) -> Option<Table<'a>> {
        self.i += 1;
        let mut t = Table { inline: true, ..Table::default() };
        self.skip_ws();
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(t);
        }
        loop {
            self.skip_ws();
            let key = self.key()?;
            self.skip_ws();
            if self.peek()? != b'=' {
                return None;
            }
            self.i += 1;
            self.skip_ws();
            let value = self.value(depth + 1)?;
            t.insert(key, value)?;
            self.skip_ws();
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(t);
                }
                _ => return None,
            }
        }
    }
}

/// The table a header's path leads to, creating implicit tables on the way; an array of tables
/// leads to its last element. `None` where toml reports an error.
fn descend<'t, 'a>(mut table: &'t mut Table<'a>, path: &[(&'a str, Range<usize>)]) -> Option<&'t mut Table<'a>> {
    for (key, span) in path {
        let at = match table.position(key) {
            Some(at) => at,
            None => {
                let node = Node { span: span.clone(), val: Val::Table(Table { implicit: true, ..Table::default() }) };
                table.insert(key, node)?;
                table.entries.len() - 1
            }
        };
        table = match &mut table.entries[at].1.val {
            Val::Table(t) if !t.inline => t,
            Val::Array(items, true) => match &mut items.last_mut()?.val {
                Val::Table(t) => t,
                _ => return None,
            },
            _ => return None,
        };
    }
    Some(table)
}

/// A header starts: `[a]` may take over an implicit `a` (and the tables already under it).
fn start<'a>(root: &mut Table<'a>, current: &mut Table<'a>, h: &Header<'a>) -> Option<()> {
    if !h.array {
        let parent = descend(root, &h.path)?;
        if let Some(at) = parent.position(h.key) {
            match parent.entries.remove(at).1.val {
                Val::Table(t) if t.implicit => *current = t,
                _ => return None,
            }
        }
    }
    current.implicit = false;
    Some(())
}

/// The table under `h` is complete: put it in its place (keys before any header are the root).
fn finish<'a>(root: &mut Table<'a>, current: &mut Table<'a>, h: Option<Header<'a>>) -> Option<()> {
    let table = std::mem::take(current);
    let Some(h) = h else {
        *root = table;
        return Some(());
    };
    let parent = descend(root, &h.path)?;
    let node = Node { span: h.span.clone(), val: Val::Table(table) };
    if !h.array {
        return parent.insert(h.key, node);
    }
    match parent.position(h.key) {
        None => parent.insert(h.key, Node { span: h.span, val: Val::Array(vec![node], true) }),
        Some(at) => match &mut parent.entries[at].1.val {
            Val::Array(items, true) => {
                items.push(node);
                Some(())
            }
            _ => None,
        },
    }
}

/// Any deserialization error: the caller parses again with toml, which says what is wrong.
#[derive(Debug)]
struct Unsure;

impl std::fmt::Display for Unsure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("left to toml")
    }
}

impl std::error::Error for Unsure {}

impl serde::de::Error for Unsure {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Unsure
    }
}

impl<'de> IntoDeserializer<'de, Unsure> for Node<'de> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de> serde::Deserializer<'de> for Node<'de> {
    type Error = Unsure;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Unsure> {
        match self.val {
            Val::Str(s) => v.visit_borrowed_str(s),
            Val::Int(i) => v.visit_i64(i),
            Val::Float(f) => v.visit_f64(f),
            Val::Bool(b) => v.visit_bool(b),
            Val::Array(items, _) => v.visit_seq(SeqDeserializer::new(items.into_iter())),
            Val::Table(t) => v.visit_map(MapDeserializer::new(t.entries.into_iter())),
        }
    }

    /// A present key is `Some` (an absent one never reaches the deserializer).
    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Unsure> {
        v.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, v: V) -> Result<V::Value, Unsure> {
        v.visit_newtype_struct(self)
    }

    /// `Spanned<T>` asks for a struct of a reserved name: its span and its value.
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Unsure> {
        if serde_spanned::de::is_spanned(name) {
            let span = self.span.clone();
            return v.visit_map(serde_spanned::de::SpannedDeserializer::<Node<'de>, Unsure>::new(self, span));
        }
        let _ = fields;
        self.deserialize_any(v)
    }

    /// The model has no externally tagged enums (its enums are untagged and go through `any`).
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Unsure> {
        Err(Unsure)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf unit
        unit_struct seq tuple tuple_struct map identifier ignored_any
    }
}

#[cfg(test)]
#[path = "quick_tests.rs"]
mod tests;
