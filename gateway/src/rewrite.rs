//! Rewrites per route and per side: the path the upstream sees (strip or add a prefix, or a
//! template over the match's `{params}`, e.g. legacy `/api/v1/products/{id}` → catalog
//! `/products/{id}`), and request and response headers set, added or removed. Pure.

use http::{HeaderName, HeaderValue, Uri};
use pingora::http::{RequestHeader, ResponseHeader};

use crate::stage::Side;

/// A route's `[routes.rewrite.legacy]` and `[routes.rewrite.extracted]`.
#[derive(Debug, Clone, Default)]
pub struct Rewrites {
    pub legacy: Option<SideRewrite>,
    pub extracted: Option<SideRewrite>,
}

impl Rewrites {
    pub fn side(&self, side: Side) -> Option<&SideRewrite> {
        match side {
            Side::Legacy => self.legacy.as_ref(),
            Side::Extracted => self.extracted.as_ref(),
        }
    }
}

/// What one side's requests and responses get.
#[derive(Debug, Clone, Default)]
pub struct SideRewrite {
    pub path: Option<PathRewrite>,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
}

/// How the path changes (the query string is kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathRewrite {
    /// Remove `strip` when the path starts with it (at a segment boundary), then put `add` in front.
    Prefix { strip: Option<String>, add: Option<String> },
    /// A new path made of literal text and segments of the request's path.
    Template(Vec<Part>),
}

/// A piece of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Text(String),
    /// The path segment at this position (a `{param}` of the pattern).
    Segment(usize),
    /// Every segment from this position on (the `**` of a prefix pattern), joined by '/'.
    Rest(usize),
}

/// Headers set (replacing), added (appended) and removed, in that order: remove, set, add.
#[derive(Debug, Clone, Default)]
pub struct HeaderOps {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// Compiles a path template against the route's pattern: `{name}` is the pattern's parameter of
/// that name, `{**}` what its trailing `**` matched.
pub fn compile_template(template: &str, pattern: &str) -> Result<Vec<Part>, String> {
    if !template.starts_with('/') {
        return Err(format!("path template {template:?} must start with '/'"));
    }
    let segments: Vec<&str> = pattern.split('/').skip(1).collect();
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(Part::Text(rest[..open].to_string()));
        }
        let close = rest[open..].find('}').map(|c| open + c).ok_or_else(|| format!("unclosed '{{' in {template:?}"))?;
        let name = &rest[open + 1..close];
        let part = if name == "**" {
            let i = segments.iter().position(|s| *s == "**");
            i.map(Part::Rest)
                .ok_or_else(|| format!("{{**}} needs a pattern ending in /** (the route matches {pattern:?})"))?
        } else {
            let i = segments.iter().position(|s| *s == format!("{{{name}}}"));
            i.map(Part::Segment)
                .ok_or_else(|| format!("the route's pattern {pattern:?} has no parameter {{{name}}}"))?
        };
        parts.push(part);
        rest = &rest[close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("unmatched '}}' in {template:?}"));
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_string()));
    }
    Ok(parts)
}

impl PathRewrite {
    /// The rewritten path (without the query).
    pub fn apply(&self, path: &str) -> String {
        match self {
            PathRewrite::Prefix { strip, add } => {
                let mut p = path;
                if let Some(s) = strip {
                    if let Some(after) = p.strip_prefix(s.as_str()) {
                        if after.is_empty() || after.starts_with('/') {
                            p = after;
                        }
                    }
                }
                let p = if p.is_empty() { "/" } else { p };
                match add {
                    Some(a) if p == "/" => a.clone(),
                    Some(a) => format!("{}{p}", a.trim_end_matches('/')),
                    None => p.to_string(),
                }
            }
            PathRewrite::Template(parts) => {
                let segs: Vec<&str> = path.split('/').skip(1).collect();
                let mut out = String::with_capacity(path.len() + 16);
                for part in parts {
                    match part {
                        Part::Text(t) => out.push_str(t),
                        Part::Segment(i) => out.push_str(segs.get(*i).copied().unwrap_or("")),
                        Part::Rest(i) => out.push_str(&segs.get(*i..).map(|s| s.join("/")).unwrap_or_default()),
                    }
                }
                if out.len() > 1 && out.ends_with('/') && !path.ends_with('/') {
                    out.pop();
                }
                out
            }
        }
    }
}

impl SideRewrite {
    /// Rewrites the path and the request headers of `req` (the upstream request, or a mirror).
    pub fn apply_request(&self, req: &mut RequestHeader) {
        if let Some(p) = &self.path {
            let (path, query) = match req.uri.path_and_query() {
                Some(pq) => (pq.path().to_string(), pq.query().map(str::to_string)),
                None => ("/".to_string(), None),
            };
            let mut target = p.apply(&path);
            if let Some(q) = query {
                target.push('?');
                target.push_str(&q);
            }
            if let Ok(uri) = target.parse::<Uri>() {
                req.set_uri(uri);
            }
        }
        let ops = &self.request_headers;
        for n in &ops.remove {
            req.remove_header(n);
        }
        for (n, v) in &ops.set {
            let _ = req.insert_header(n.clone(), v.clone());
        }
        for (n, v) in &ops.add {
            let _ = req.append_header(n.clone(), v.clone());
        }
    }

    /// Rewrites the headers of the answer this side gave.
    pub fn apply_response(&self, resp: &mut ResponseHeader) {
        let ops = &self.response_headers;
        for n in &ops.remove {
            resp.remove_header(n);
        }
        for (n, v) in &ops.set {
            let _ = resp.insert_header(n.clone(), v.clone());
        }
        for (n, v) in &ops.add {
            let _ = resp.append_header(n.clone(), v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_table() {
        let t = |tpl: &str, pat: &str| PathRewrite::Template(compile_template(tpl, pat).unwrap());
        let p = |strip: Option<&str>, add: Option<&str>| PathRewrite::Prefix {
            strip: strip.map(String::from),
            add: add.map(String::from),
        };
        let cases: Vec<(PathRewrite, &str, &str)> = vec![
            (t("/products/{id}", "/api/v1/products/{id}"), "/api/v1/products/42", "/products/42"),
            (t("/p/{id}/r/{rid}", "/a/{id}/reviews/{rid}"), "/a/7/reviews/9", "/p/7/r/9"),
            (t("/v2/{**}", "/api/**"), "/api/a/b", "/v2/a/b"),
            (t("/v2/{**}", "/api/**"), "/api", "/v2"),
            (p(Some("/api"), None), "/api/orders/1", "/orders/1"),
            (p(Some("/api"), None), "/api", "/"),
            (p(Some("/api"), None), "/apiary", "/apiary"),
            (p(None, Some("/internal")), "/orders", "/internal/orders"),
            (p(Some("/api/v1"), Some("/v2/")), "/api/v1/x", "/v2/x"),
        ];
        for (rw, path, want) in cases {
            assert_eq!(rw.apply(path), want, "{rw:?} {path}");
        }
        assert!(compile_template("/x/{nope}", "/a/{id}").unwrap_err().contains("no parameter {nope}"));
        assert!(compile_template("/x/{**}", "/a/{id}").is_err());
        assert!(compile_template("x", "/a").is_err());
        assert!(compile_template("/x/{id", "/a/{id}").is_err());
    }

    #[test]
    fn request_rewrite_keeps_the_query() {
        let rw = SideRewrite {
            path: Some(PathRewrite::Prefix { strip: Some("/api".into()), add: None }),
            request_headers: HeaderOps {
                set: vec![(HeaderName::from_static("x-a"), HeaderValue::from_static("1"))],
                add: vec![],
                remove: vec![HeaderName::from_static("cookie")],
            },
            ..Default::default()
        };
        let mut req = RequestHeader::build("GET", b"/api/x?q=1", None).unwrap();
        req.insert_header("cookie", "s=1").unwrap();
        rw.apply_request(&mut req);
        assert_eq!(req.uri.to_string(), "/x?q=1");
        assert_eq!(req.headers["x-a"], "1");
        assert!(!req.headers.contains_key("cookie"));
    }
}
