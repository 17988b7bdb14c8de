//! Comparing a primary (legacy) response with a shadow (extracted) response.
//!
//! Pure code, no I/O: the shadow pipeline runs it on its own task pool, and the contract tests
//! (`tests/`) reuse it so there is exactly one notion of "the two answers agree".
//!
//! JSON bodies are compared structurally: object key order never matters; arrays are compared
//! by position or, with [`ArrayOrder::Multiset`], as multisets; numbers may differ by an absolute
//! tolerance; paths matching an ignore pattern are skipped. Each difference carries its exact
//! JSON pointer (`/data/items/3/price`), the pattern it aggregates under (indices replaced by
//! `*`: `/data/items/*/price`) and both values. Non-JSON bodies are compared byte for byte.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;
use serde_json::Value;

/// How arrays in JSON bodies are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ArrayOrder {
    /// Element `i` is compared with element `i`.
    #[default]
    Ordered,
    /// Order does not matter; each element must have an equal partner on the other side.
    Multiset,
}

/// One segment of an ignore pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    /// An exact object key or array index.
    Key(String),
    /// `*`: any single key or index.
    Any,
    /// `**`: any number (zero or more) of segments.
    AnyDepth,
}

/// An ignore pattern: a JSON pointer whose segments may be `*` (one level) or `**` (any depth).
/// `/generated_at`, `/data/items/*/updated_at`, `/**/request_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    text: String,
    segs: Vec<Seg>,
}

impl PathPattern {
    /// Parses a pattern; it must start with `/` (or be empty, meaning the whole body).
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Ok(Self { text: String::new(), segs: Vec::new() });
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!("ignore path {text:?} must start with '/' (a JSON pointer such as /data/updated_at)"));
        };
        let segs = rest
            .split('/')
            .map(|s| match s {
                "*" => Seg::Any,
                "**" => Seg::AnyDepth,
                s => Seg::Key(s.replace("~1", "/").replace("~0", "~")),
            })
            .collect();
        Ok(Self { text: text.to_string(), segs })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True if `path` (unescaped segments) matches this pattern.
    pub fn matches(&self, path: &[String]) -> bool {
        fn go(p: &[Seg], path: &[String]) -> bool {
            match p.split_first() {
                None => path.is_empty(),
                Some((Seg::AnyDepth, rest)) => (0..=path.len()).any(|i| go(rest, &path[i..])),
                Some((seg, rest)) => match path.split_first() {
                    None => false,
                    Some((head, tail)) => {
                        let ok = match seg {
                            Seg::Any => true,
                            Seg::Key(k) => k == head,
                            Seg::AnyDepth => unreachable!(),
                        };
                        ok && go(rest, tail)
                    }
                },
            }
        }
        go(&self.segs, path)
    }
}

/// What to compare and how. Built from a route's `[routes.shadow]` table.
#[derive(Debug, Clone)]
pub struct CompareRules {
    /// Compare status codes.
    pub status: bool,
    /// Response headers to compare (lowercase names). Others are never compared.
    pub headers: Vec<String>,
    /// Compare bodies.
    pub body: bool,
    /// Body paths to skip.
    pub ignore: Vec<PathPattern>,
    /// Numbers equal within this absolute tolerance (0 = exact).
    pub numeric_tolerance: f64,
    /// How arrays are compared.
    pub array_order: ArrayOrder,
}

impl Default for CompareRules {
    fn default() -> Self {
        Self {
            status: true,
            headers: Vec::new(),
            body: true,
            ignore: Vec::new(),
            numeric_tolerance: 0.0,
            array_order: ArrayOrder::Ordered,
        }
    }
}

/// One side's response as captured for comparison.
#[derive(Debug, Clone, Copy)]
pub struct Captured<'a> {
    /// HTTP status.
    pub status: u16,
    /// Response headers (names lowercase).
    pub headers: &'a [(String, String)],
    /// The body (possibly only a prefix, see `truncated`).
    pub body: &'a [u8],
    /// The body was longer than the capture limit: `body` holds at most a prefix.
    pub truncated: bool,
    /// Length and CRC-32 of the *whole* body, when it was hashed because it was too large to keep.
    pub digest: Option<BodyDigest>,
}

/// Length and CRC-32 of a whole body (used for bodies larger than the capture limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct BodyDigest {
    pub len: u64,
    pub crc32: u32,
}

impl BodyDigest {
    /// The digest of a complete body held in memory.
    pub fn of(body: &[u8]) -> Self {
        Self { len: body.len() as u64, crc32: crc32fast::hash(body) }
    }
}

impl Captured<'_> {
    /// The whole-body digest: the one recorded while streaming, or computed from a complete body.
    fn full_digest(&self) -> Option<BodyDigest> {
        self.digest.or_else(|| (!self.truncated).then(|| BodyDigest::of(self.body)))
    }
}

/// Where two responses differ.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Difference {
    /// Different status codes.
    Status { legacy: u16, shadow: u16 },
    /// A compared header differs (or is missing on one side).
    Header { name: String, legacy: Option<String>, shadow: Option<String> },
    /// A JSON value differs. A side's value is `None` when the path is absent there.
    Json { pointer: String, pattern: String, legacy: Option<Value>, shadow: Option<Value> },
    /// Non-JSON bodies (or one side not JSON) differ.
    Bytes { legacy_len: usize, shadow_len: usize },
}

impl Difference {
    /// The key differences are counted under in reports: `status`, `header:<name>`, the JSON
    /// pattern (`/data/items/*/price`) or `body`.
    pub fn field(&self) -> String {
        match self {
            Difference::Status { .. } => "status".into(),
            Difference::Header { name, .. } => format!("header:{name}"),
            Difference::Json { pattern, .. } => pattern.clone(),
            Difference::Bytes { .. } => "body".into(),
        }
    }
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<Value>| v.as_ref().map_or("(absent)".to_string(), |v| v.to_string());
        match self {
            Difference::Status { legacy, shadow } => write!(f, "status: legacy {legacy}, shadow {shadow}"),
            Difference::Header { name, legacy, shadow } => {
                write!(f, "header {name}: legacy {legacy:?}, shadow {shadow:?}")
            }
            Difference::Json { pointer, legacy, shadow, .. } => {
                write!(f, "{pointer}: legacy {}, shadow {}", show(legacy), show(shadow))
            }
            Difference::Bytes { legacy_len, shadow_len } => {
                write!(f, "body bytes differ (legacy {legacy_len} B, shadow {shadow_len} B)")
            }
        }
    }
}

/// The result of one comparison.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Comparison {
    /// Every difference found, in a stable order.
    pub differences: Vec<Difference>,
    /// A body was too large to keep and no digest was available: bodies were not compared.
    pub body_skipped: bool,
    /// A body was too large to compare structurally: bodies were compared by length + CRC-32.
    pub body_hashed: bool,
}

impl Comparison {
    /// No differences.
    pub fn matched(&self) -> bool {
        self.differences.is_empty()
    }
}

/// Compares two captured responses under `rules`.
pub fn compare(rules: &CompareRules, legacy: &Captured<'_>, shadow: &Captured<'_>) -> Comparison {
    let mut out = Comparison::default();
    if rules.status && legacy.status != shadow.status {
        out.differences.push(Difference::Status { legacy: legacy.status, shadow: shadow.status });
    }
    for name in &rules.headers {
        let get = |h: &[(String, String)]| {
            let v: Vec<&str> =
                h.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect();
            (!v.is_empty()).then(|| v.join(", "))
        };
        let (l, s) = (get(legacy.headers), get(shadow.headers));
        if l != s {
            out.differences.push(Difference::Header { name: name.clone(), legacy: l, shadow: s });
        }
    }
    if !rules.body {
        return out;
    }
    if legacy.truncated || shadow.truncated {
        match (legacy.full_digest(), shadow.full_digest()) {
            (Some(l), Some(s)) => {
                out.body_hashed = true;
                if l != s {
                    out.differences.push(Difference::Bytes { legacy_len: l.len as usize, shadow_len: s.len as usize });
                }
            }
            _ => out.body_skipped = true,
        }
        return out;
    }
    // byte-identical bodies are equal whatever their format: nothing to parse
    if legacy.body == shadow.body {
        return out;
    }
    match (parse_json(legacy.body), parse_json(shadow.body)) {
        (Some(l), Some(s)) => {
            let mut path = Vec::new();
            diff_values(rules, &l, &s, &mut path, &mut out.differences);
        }
        _ => {
            if legacy.body != shadow.body {
                out.differences
                    .push(Difference::Bytes { legacy_len: legacy.body.len(), shadow_len: shadow.body.len() });
            }
        }
    }
    out
}

fn parse_json(body: &[u8]) -> Option<Value> {
    let trimmed = body.iter().position(|b| !b.is_ascii_whitespace())?;
    matches!(body[trimmed], b'{' | b'[').then(|| serde_json::from_slice(body).ok()).flatten()
}

fn ignored(rules: &CompareRules, path: &[String]) -> bool {
    rules.ignore.iter().any(|p| p.matches(path))
}

fn pointer(path: &[String]) -> String {
    path.iter().map(|s| format!("/{}", s.replace('~', "~0").replace('/', "~1"))).collect()
}

/// The aggregation pattern: array indices become `*`.
fn pattern(path: &[String], indices: &[bool]) -> String {
    path.iter()
        .zip(indices)
        .map(
            |(s, is_idx)| {
                if *is_idx {
                    "/*".to_string()
                } else {
                    format!("/{}", s.replace('~', "~0").replace('/', "~1"))
                }
            },
        )
        .collect()
}

/// Path segments plus, per segment, whether it is an array index.
struct Path {
    segs: Vec<String>,
    idx: Vec<bool>,
}

fn diff_values(rules: &CompareRules, l: &Value, s: &Value, segs: &mut Vec<String>, out: &mut Vec<Difference>) {
    let mut p = Path { segs: std::mem::take(segs), idx: Vec::new() };
    p.idx.resize(p.segs.len(), false);
    diff_at(rules, Some(l), Some(s), &mut p, out);
}

fn push_diff(p: &Path, l: Option<&Value>, s: Option<&Value>, out: &mut Vec<Difference>) {
    out.push(Difference::Json {
        pointer: pointer(&p.segs),
        pattern: pattern(&p.segs, &p.idx),
        legacy: l.cloned(),
        shadow: s.cloned(),
    });
}

fn diff_at(rules: &CompareRules, l: Option<&Value>, s: Option<&Value>, p: &mut Path, out: &mut Vec<Difference>) {
    if ignored(rules, &p.segs) {
        return;
    }
    let (l, s) = match (l, s) {
        (Some(l), Some(s)) => (l, s),
        (l, s) => return push_diff(p, l, s, out),
    };
    match (l, s) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                p.segs.push(k.clone());
                p.idx.push(false);
                diff_at(rules, a.get(k), b.get(k), p, out);
                p.segs.pop();
                p.idx.pop();
            }
        }
        (Value::Array(a), Value::Array(b)) => match rules.array_order {
            ArrayOrder::Ordered => {
                for i in 0..a.len().max(b.len()) {
                    p.segs.push(i.to_string());
                    p.idx.push(true);
                    diff_at(rules, a.get(i), b.get(i), p, out);
                    p.segs.pop();
                    p.idx.pop();
                }
            }
            ArrayOrder::Multiset => {
                // Pair each legacy element with the first unused equal shadow element. Quadratic,
                // but bodies are bounded by `max_body` before they get here.
                let mut used = vec![false; b.len()];
                let mut unmatched_l = Vec::new();
                for (i, x) in a.iter().enumerate() {
                    p.segs.push(i.to_string());
                    p.idx.push(true);
                    let hit = (0..b.len()).find(|&j| !used[j] && equal(rules, x, &b[j], p));
                    p.segs.pop();
                    p.idx.pop();
                    match hit {
                        Some(j) => used[j] = true,
                        None => unmatched_l.push(i),
                    }
                }
                let unmatched_s: Vec<usize> = (0..b.len()).filter(|&j| !used[j]).collect();
                // Report leftovers pairwise (so a changed element shows both values), then extras.
                for k in 0..unmatched_l.len().max(unmatched_s.len()) {
                    let li = unmatched_l.get(k).copied();
                    let si = unmatched_s.get(k).copied();
                    p.segs.push(li.or(si).unwrap_or(0).to_string());
                    p.idx.push(true);
                    diff_at(rules, li.map(|i| &a[i]), si.map(|j| &b[j]), p, out);
                    p.segs.pop();
                    p.idx.pop();
                }
            }
        },
        (Value::Number(x), Value::Number(y)) => {
            let same = x == y
                || match (x.as_f64(), y.as_f64()) {
                    (Some(x), Some(y)) => (x - y).abs() <= rules.numeric_tolerance,
                    _ => false,
                };
            if !same {
                push_diff(p, Some(l), Some(s), out);
            }
        }
        (l, s) if l == s => {}
        (l, s) => push_diff(p, Some(l), Some(s), out),
    }
}

fn equal(rules: &CompareRules, l: &Value, s: &Value, p: &mut Path) -> bool {
    let mut scratch = Vec::new();
    diff_at(rules, Some(l), Some(s), p, &mut scratch);
    scratch.is_empty()
}

/// Fields learnt as noise for a route: patterns where two answers of legacy itself differed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NoiseModel {
    patterns: BTreeSet<String>,
}

impl NoiseModel {
    /// Learns from two legacy answers to the same request: every differing field is noise.
    /// Returns how many new patterns were learnt.
    pub fn learn(&mut self, rules: &CompareRules, first: &Captured<'_>, second: &Captured<'_>) -> usize {
        let c = compare(rules, first, second);
        let before = self.patterns.len();
        for d in &c.differences {
            if let Difference::Json { pattern, .. } | Difference::Header { name: pattern, .. } = d {
                self.patterns.insert(pattern.clone());
            }
        }
        self.patterns.len() - before
    }

    /// Splits differences into (real mismatches, noise).
    pub fn split(&self, diffs: Vec<Difference>) -> (Vec<Difference>, Vec<Difference>) {
        diffs.into_iter().partition(|d| !self.is_noise(d))
    }

    /// True if `d` is at a learnt noise field.
    pub fn is_noise(&self, d: &Difference) -> bool {
        match d {
            Difference::Json { pattern, .. } => self.patterns.contains(pattern),
            Difference::Header { name, .. } => self.patterns.contains(name),
            _ => false,
        }
    }

    /// Adds a pattern (e.g. restored from a saved report). Returns true if it was new.
    pub fn insert(&mut self, pattern: impl Into<String>) -> bool {
        self.patterns.insert(pattern.into())
    }

    /// The learnt patterns.
    pub fn patterns(&self) -> impl Iterator<Item = &str> {
        self.patterns.iter().map(String::as_str)
    }

    /// Number of learnt patterns.
    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    /// True if nothing has been learnt.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cap(status: u16, body: &Value) -> (u16, Vec<u8>) {
        (status, serde_json::to_vec(body).unwrap())
    }

    fn run(rules: &CompareRules, l: &Value, s: &Value) -> Comparison {
        let (ls, lb) = cap(200, l);
        let (ss, sb) = cap(200, s);
        compare(
            rules,
            &Captured { status: ls, headers: &[], body: &lb, truncated: false, digest: None },
            &Captured { status: ss, headers: &[], body: &sb, truncated: false, digest: None },
        )
    }

    fn rules_ignoring(p: &[&str]) -> CompareRules {
        CompareRules { ignore: p.iter().map(|p| PathPattern::parse(p).unwrap()).collect(), ..Default::default() }
    }

    #[test]
    fn identical_and_reordered_objects_match() {
        let r = CompareRules::default();
        assert!(run(&r, &json!({"a": 1, "b": [1, 2]}), &json!({"a": 1, "b": [1, 2]})).matched());
        assert!(run(&r, &json!({"a": 1, "b": {"x": 1, "y": 2}}), &json!({"b": {"y": 2, "x": 1}, "a": 1})).matched());
    }

    #[test]
    fn a_changed_value_reports_pointer_pattern_and_both_values() {
        let r = CompareRules::default();
        let c = run(
            &r,
            &json!({"data": {"items": [{"price": "1.00"}, {"price": "2.00"}]}}),
            &json!({"data": {"items": [{"price": "1.00"}, {"price": "2.50"}]}}),
        );
        assert_eq!(
            c.differences,
            vec![Difference::Json {
                pointer: "/data/items/1/price".into(),
                pattern: "/data/items/*/price".into(),
                legacy: Some(json!("2.00")),
                shadow: Some(json!("2.50")),
            }]
        );
        assert_eq!(c.differences[0].field(), "/data/items/*/price");
    }

    #[test]
    fn missing_and_extra_fields_are_differences() {
        let c = run(&CompareRules::default(), &json!({"a": 1}), &json!({"b": 1}));
        let ptrs: Vec<_> = c.differences.iter().map(|d| d.to_string()).collect();
        assert_eq!(ptrs, ["/a: legacy 1, shadow (absent)", "/b: legacy (absent), shadow 1"]);
    }

    #[test]
    fn ignore_patterns_with_wildcards() {
        let l = json!({"generated_at": "t1", "data": {"items": [{"id": 1, "updated_at": "x"}, {"id": 2, "updated_at": "y"}]}, "meta": {"deep": {"request_id": "a"}}});
        let s = json!({"generated_at": "t2", "data": {"items": [{"id": 1, "updated_at": "z"}, {"id": 2, "updated_at": "w"}]}, "meta": {"deep": {"request_id": "b"}}});
        assert_eq!(run(&CompareRules::default(), &l, &s).differences.len(), 4);
        let r = rules_ignoring(&["/generated_at", "/data/items/*/updated_at", "/**/request_id"]);
        assert!(run(&r, &l, &s).matched());
        // An ignore pattern that does not cover the changed field does not hide it.
        let r = rules_ignoring(&["/data/items/0/updated_at", "/generated_at", "/**/request_id"]);
        assert_eq!(run(&r, &l, &s).differences.len(), 1);
    }

    #[test]
    fn numeric_tolerance() {
        let mut r = CompareRules::default();
        assert!(!run(&r, &json!({"x": 1.0}), &json!({"x": 1.004})).matched());
        r.numeric_tolerance = 0.01;
        assert!(run(&r, &json!({"x": 1.0}), &json!({"x": 1.004})).matched());
        assert!(!run(&r, &json!({"x": 1.0}), &json!({"x": 1.02})).matched());
        assert!(run(&r, &json!({"x": 10}), &json!({"x": 10.0})).matched());
    }

    #[test]
    fn arrays_ordered_or_as_multisets() {
        let l = json!({"tags": ["a", "b", "b", "c"]});
        let s = json!({"tags": ["b", "c", "a", "b"]});
        assert!(!run(&CompareRules::default(), &l, &s).matched());
        let r = CompareRules { array_order: ArrayOrder::Multiset, ..Default::default() };
        assert!(run(&r, &l, &s).matched());
        // Multiplicity counts.
        let c = run(&r, &json!({"tags": ["a", "b", "b"]}), &json!({"tags": ["a", "b", "c"]}));
        assert_eq!(c.differences.len(), 1, "{:?}", c.differences);
        // Objects inside multisets are matched structurally, honouring ignores.
        let r = CompareRules { array_order: ArrayOrder::Multiset, ..rules_ignoring(&["/x/*/t"]) };
        assert!(run(
            &r,
            &json!({"x": [{"id": 1, "t": 1}, {"id": 2, "t": 2}]}),
            &json!({"x": [{"id": 2, "t": 9}, {"id": 1, "t": 8}]})
        )
        .matched());
    }

    #[test]
    fn status_headers_and_bytes() {
        let h1 = [("content-type".to_string(), "text/plain".to_string())];
        let h2 = [("content-type".to_string(), "text/html".to_string())];
        let r = CompareRules { headers: vec!["content-type".into()], ..Default::default() };
        let c = compare(
            &r,
            &Captured { status: 200, headers: &h1, body: b"hello", truncated: false, digest: None },
            &Captured { status: 500, headers: &h2, body: b"hello!", truncated: false, digest: None },
        );
        let fields: Vec<_> = c.differences.iter().map(Difference::field).collect();
        assert_eq!(fields, ["status", "header:content-type", "body"]);
        // Headers not listed are not compared.
        let c = compare(
            &CompareRules::default(),
            &Captured { status: 200, headers: &h1, body: b"same", truncated: false, digest: None },
            &Captured { status: 200, headers: &h2, body: b"same", truncated: false, digest: None },
        );
        assert!(c.matched());
    }

    #[test]
    fn truncated_bodies_are_skipped_not_compared() {
        let c = compare(
            &CompareRules::default(),
            &Captured { status: 200, headers: &[], body: b"{\"a\":1", truncated: true, digest: None },
            &Captured { status: 200, headers: &[], body: b"{\"a\":2", truncated: false, digest: None },
        );
        assert!(c.matched() && c.body_skipped);
    }

    #[test]
    fn oversize_bodies_are_compared_by_digest() {
        let big = vec![b'x'; 100];
        let d = BodyDigest::of(&big);
        let trunc = |digest| Captured { status: 200, headers: &[], body: &big[..10], truncated: true, digest };
        let c = compare(&CompareRules::default(), &trunc(Some(d)), &trunc(Some(d)));
        assert!(c.matched() && c.body_hashed && !c.body_skipped);
        let other = BodyDigest::of(&[b'y'; 100]);
        let c = compare(&CompareRules::default(), &trunc(Some(d)), &trunc(Some(other)));
        assert_eq!(c.differences.len(), 1);
        // a complete body on the other side is hashed on the spot
        let whole = Captured { status: 200, headers: &[], body: &big, truncated: false, digest: None };
        assert!(compare(&CompareRules::default(), &trunc(Some(d)), &whole).matched());
        // no digest: skipped
        let c = compare(&CompareRules::default(), &trunc(None), &whole);
        assert!(c.matched() && c.body_skipped);
    }

    #[test]
    fn noise_is_learnt_from_two_legacy_answers() {
        let r = CompareRules::default();
        let a = serde_json::to_vec(
            &json!({"generated_at": "1", "data": {"items": [{"id": 1, "seen": "a"}], "price": "1.00"}}),
        )
        .unwrap();
        let b = serde_json::to_vec(
            &json!({"generated_at": "2", "data": {"items": [{"id": 1, "seen": "b"}], "price": "1.00"}}),
        )
        .unwrap();
        let mut noise = NoiseModel::default();
        let learnt = noise.learn(
            &r,
            &Captured { status: 200, headers: &[], body: &a, truncated: false, digest: None },
            &Captured { status: 200, headers: &[], body: &b, truncated: false, digest: None },
        );
        assert_eq!(learnt, 2);
        assert_eq!(noise.patterns().collect::<Vec<_>>(), ["/data/items/*/seen", "/generated_at"]);
        let shadow = serde_json::to_vec(
            &json!({"generated_at": "3", "data": {"items": [{"id": 1, "seen": "c"}], "price": "2.00"}}),
        )
        .unwrap();
        let c = compare(
            &r,
            &Captured { status: 200, headers: &[], body: &a, truncated: false, digest: None },
            &Captured { status: 200, headers: &[], body: &shadow, truncated: false, digest: None },
        );
        let (real, noisy) = noise.split(c.differences);
        assert_eq!(real.iter().map(Difference::field).collect::<Vec<_>>(), ["/data/price"]);
        assert_eq!(noisy.len(), 2);
    }

    #[test]
    fn patterns_parse_and_escape() {
        assert!(PathPattern::parse("no-slash").is_err());
        let p = PathPattern::parse("/a~1b/*/c~0d").unwrap();
        assert!(p.matches(&["a/b".into(), "7".into(), "c~d".into()]));
        assert!(!p.matches(&["a/b".into(), "c~d".into()]));
        let any = PathPattern::parse("/**").unwrap();
        assert!(any.matches(&[]) && any.matches(&["x".into(), "y".into()]));
    }
}
