//! The compiled route matcher: a radix trie over path patterns (`matchit`), then method and
//! header filters among the few routes that share one pattern. Cost depends on the path, not on
//! the number of routes. Pure code, no I/O.

use std::fmt::Write as _;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Method};

/// A header equality filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMatch {
    pub name: HeaderName,
    pub value: HeaderValue,
}

/// `match.host`: an exact name, or `*.example.com` (any name ending in `.example.com`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// Lowercase, without a port.
    Exact(String),
    /// The suffix with its leading dot (`.example.com`), lowercase.
    Suffix(String),
}

impl HostMatch {
    /// Parses `api.example.com` or `*.example.com`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let lower = s.trim().to_ascii_lowercase();
        let (wild, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let label_ok = |l: &str| {
            !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if name.is_empty() || !name.split('.').all(label_ok) {
            return Err(format!("{s:?} is not a host name or *.suffix"));
        }
        Ok(if wild { HostMatch::Suffix(format!(".{name}")) } else { HostMatch::Exact(name.to_string()) })
    }

    pub fn source(&self) -> String {
        match self {
            HostMatch::Exact(h) => h.clone(),
            HostMatch::Suffix(s) => format!("*{s}"),
        }
    }
}

/// What the router needs to know of a route: its host, pattern, methods and header filters.
pub trait RouteKey {
    /// `None`: any host.
    fn host(&self) -> Option<&HostMatch>;
    fn pattern(&self) -> &PathPattern;
    /// `None`: any method.
    fn methods(&self) -> Option<&[Method]>;
    /// All must match (sorted by name).
    fn headers(&self) -> &[HeaderMatch];
}

/// A parsed path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    /// As written in the file.
    pub source: String,
    /// Normalised form used to group identical patterns (`{}` for parameters).
    canonical: String,
    /// Paths handed to the trie (a prefix pattern needs two).
    trie_paths: Vec<String>,
}

impl PathPattern {
    /// Parses "/api/orders/{id}", "/api/categories" or "/api/products/**" (prefix: the path
    /// itself and anything below it).
    pub fn parse(s: &str) -> Result<Self, String> {
        if !s.starts_with('/') {
            return Err(format!("path pattern {s:?} must start with '/'"));
        }
        let mut canonical = String::with_capacity(s.len() + 4);
        let mut trie = String::with_capacity(s.len() + 8);
        let mut prefix = false;
        let mut param_no = 0;
        let mut segments = s[1..].split('/').peekable();
        while let Some(seg) = segments.next() {
            let last = segments.peek().is_none();
            if seg == "**" {
                if !last {
                    return Err(format!("in {s:?}: `**` may only be the last segment"));
                }
                prefix = true;
                break;
            }
            if seg.is_empty() && !last {
                return Err(format!("in {s:?}: empty path segment"));
            }
            canonical.push('/');
            trie.push('/');
            if let Some(name) = seg.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!("in {s:?}: bad parameter name {name:?}"));
                }
                canonical.push_str("{}");
                let _ = write!(trie, "{{p{param_no}}}");
                param_no += 1;
            } else if seg.contains(['{', '}', '*']) || seg.chars().any(|c| c.is_ascii_control() || c == ' ') {
                return Err(format!("in {s:?}: segment {seg:?} mixes text with `{{`, `}}` or `*`"));
            } else {
                canonical.push_str(seg);
                trie.push_str(seg);
            }
        }
        let trie_paths = if prefix {
            canonical.push_str("/**");
            let base = if trie.is_empty() { "/".to_string() } else { trie.clone() };
            let mut v = vec![base, format!("{trie}/{{*rest}}")];
            if !trie.is_empty() {
                v.push(format!("{trie}/"));
            }
            v
        } else {
            if canonical.is_empty() {
                canonical.push('/');
                trie.push('/');
            }
            vec![trie]
        };
        Ok(Self { source: s.to_string(), canonical, trie_paths })
    }
}

/// Why a set of routes could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouterBuildError {
    /// Two routes would take the same requests and nothing says which one wins.
    Ambiguous { route: usize, other: usize },
    /// The trie refused a pattern.
    Conflict { route: usize, message: String },
}

/// Compiled matcher over a route list: a path matcher per exact host, per wildcard suffix, and
/// one for routes without a host. A request tries its exact host, then its suffixes from the
/// longest, then the routes for any host: a lookup per label of the request's host, whatever
/// the number of hosts configured.
///
/// Each host key's matcher is shared (`Arc`) with the router it was taken over from when its
/// routes did not change (see [`Router::build_reusing`]).
#[derive(Debug)]
pub struct Router {
    any: Arc<PathRouter>,
    exact: HostRouters,
    suffix: HostRouters,
}

/// A path matcher per host key.
type HostRouters = std::collections::HashMap<String, Arc<PathRouter>>;

/// The path matcher over the routes of one host key.
#[derive(Debug)]
struct PathRouter {
    /// The routes of this host key, in file order.
    members: Vec<usize>,
    trie: matchit::Router<usize>,
    /// Route indices per distinct pattern, in the order they are tried.
    groups: Vec<Vec<usize>>,
}

/// The host of a request, lowercase and without its port.
fn host_name(h: &str) -> std::borrow::Cow<'_, str> {
    let name = match h.rfind(':') {
        Some(i) if !h[i..].contains(']') => &h[..i],
        _ => h,
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(name.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(name)
    }
}

/// Whether two routes are alike for the router (host, pattern, methods, header filters).
fn same_key<A: RouteKey, B: RouteKey>(a: &A, b: &B) -> bool {
    a.pattern().source == b.pattern().source
        && a.host() == b.host()
        && a.methods() == b.methods()
        && a.headers() == b.headers()
}

fn methods_overlap(a: Option<&[Method]>, b: Option<&[Method]>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.iter().any(|m| b.contains(m)),
        _ => true,
    }
}

impl Router {
    /// Whether some route names a host (else the request's host is never looked at).
    #[inline]
    pub fn has_hosts(&self) -> bool {
        !(self.exact.is_empty() && self.suffix.is_empty())
    }

    /// Builds a path matcher per host key. Routes sharing a host key and a pattern are tried
    /// with more header filters first, then in file order; two of them with overlapping methods
    /// and equal header filters are ambiguous.
    pub fn build<R: RouteKey>(routes: &[R]) -> Result<Self, Vec<RouterBuildError>> {
        Self::build_reusing(routes, None)
    }

    /// [`Self::build`], taking over from `previous` (a router and the routes it was built over)
    /// the matcher of every host key whose routes are the same, at the same indices: a reload
    /// that edits one host's routes rebuilds that host's trie only. A matcher taken over was
    /// built without errors over the same routes, so it has none now.
    pub fn build_reusing<R: RouteKey>(
        routes: &[R],
        previous: Option<(&Router, &[R])>,
    ) -> Result<Self, Vec<RouterBuildError>> {
        let mut errors = Vec::new();
        let mut any = Vec::new();
        let mut exact: std::collections::HashMap<String, Vec<usize>> = Default::default();
        let mut suffix: std::collections::HashMap<String, Vec<usize>> = Default::default();
        for (i, r) in routes.iter().enumerate() {
            match r.host() {
                None => any.push(i),
                Some(HostMatch::Exact(h)) => exact.entry(h.clone()).or_default().push(i),
                Some(HostMatch::Suffix(s)) => suffix.entry(s.clone()).or_default().push(i),
            }
        }
        let mut build = |old: Option<&Arc<PathRouter>>, members: Vec<usize>| match (old, previous) {
            (Some(old), Some((_, prev)))
                if old.members == members
                    && members.iter().all(|&i| prev.get(i).is_some_and(|p| same_key(&routes[i], p))) =>
            {
                Arc::clone(old)
            }
            _ => Arc::new(PathRouter::build(routes, members, &mut errors)),
        };
        let old = previous.map(|(r, _)| r);
        let any = build(old.map(|r| &r.any), any);
        let mut keyed = |keys: std::collections::HashMap<String, Vec<usize>>, pick: fn(&Router) -> &HostRouters| {
            keys.into_iter()
                .map(|(h, m)| {
                    let p = build(old.and_then(|r| pick(r).get(&h)), m);
                    (h, p)
                })
                .collect()
        };
        let exact = keyed(exact, |r| &r.exact);
        let suffix = keyed(suffix, |r| &r.suffix);
        let router = Router { any, exact, suffix };
        if errors.is_empty() {
            Ok(router)
        } else {
            Err(errors)
        }
    }

    /// The index of the route taking this request (`host`: the Host header or the authority).
    #[inline]
    pub fn find<R: RouteKey>(
        &self,
        routes: &[R],
        host: Option<&str>,
        path: &str,
        method: &Method,
        headers: &HeaderMap,
    ) -> Option<usize> {
        if self.has_hosts() {
            if let Some(h) = host.map(host_name) {
                if let Some(i) = self.exact.get(h.as_ref()).and_then(|r| r.find(routes, path, method, headers)) {
                    return Some(i);
                }
                if !self.suffix.is_empty() {
                    let found = h.match_indices('.').find_map(|(dot, _)| {
                        self.suffix.get(&h[dot..]).and_then(|r| r.find(routes, path, method, headers))
                    });
                    if found.is_some() {
                        return found;
                    }
                }
            }
        }
        self.any.find(routes, path, method, headers)
    }
}

impl PathRouter {
    fn build<R: RouteKey>(routes: &[R], members: Vec<usize>, errors: &mut Vec<RouterBuildError>) -> Self {
        let mut by_pattern: std::collections::HashMap<&str, usize> = Default::default();
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for &i in &members {
            let r = &routes[i];
            let g = *by_pattern.entry(r.pattern().canonical.as_str()).or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
            for &other in &groups[g] {
                let o = &routes[other];
                if methods_overlap(o.methods(), r.methods()) && o.headers() == r.headers() {
                    errors.push(RouterBuildError::Ambiguous { route: i, other });
                }
            }
            groups[g].push(i);
        }
        let mut trie = matchit::Router::new();
        for (g, members) in groups.iter_mut().enumerate() {
            members.sort_by_key(|&i| (std::cmp::Reverse(routes[i].headers().len()), i));
            for p in &routes[members[0]].pattern().trie_paths {
                if let Err(e) = trie.insert(p.clone(), g) {
                    errors.push(RouterBuildError::Conflict { route: members[0], message: e.to_string() });
                }
            }
        }
        Self { members, trie, groups }
    }

    #[inline]
    fn find<R: RouteKey>(&self, routes: &[R], path: &str, method: &Method, headers: &HeaderMap) -> Option<usize> {
        let m = self.trie.at(path).ok()?;
        let group = &self.groups[*m.value];
        let takes = |i: usize, method: &Method| {
            let r = &routes[i];
            r.methods().is_none_or(|ms| ms.contains(method))
                && r.headers().iter().all(|h| headers.get(&h.name) == Some(&h.value))
        };
        group.iter().copied().find(|&i| takes(i, method)).or_else(|| {
            // HEAD is GET without the body (RFC 9110 §9.3.2): with no route for HEAD, a GET
            // route answers it, or the HEAD would miss the route (its auth and limits) and go to
            // the default upstream, which serves it through its GET handler
            (*method == Method::HEAD).then(|| group.iter().copied().find(|&i| takes(i, &Method::GET))).flatten()
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::config::load_str;

    const TABLE: &str = r#"
[defaults]
upstream = "legacy"
[upstreams.legacy]
endpoints = ["127.0.0.1:1"]
[upstreams.svc]
endpoints = ["127.0.0.1:2"]

[[routes]]
name = "products"
match = { path = "/api/products/**" }
to = "svc"
stage = "extracted"

[[routes]]
name = "product-special"
match = { path = "/api/products/special" }
stage = "legacy"

[[routes]]
name = "categories"
match = { path = "/api/categories" }
stage = "legacy"

[[routes]]
name = "order-get"
match = { path = "/api/orders/{id}", methods = ["GET", "HEAD"] }
to = "svc"
stage = "extracted"

[[routes]]
name = "order-write"
match = { path = "/api/orders/{order_id}", methods = ["PUT", "DELETE"] }
stage = "legacy"

[[routes]]
name = "order-get-beta"
match = { path = "/api/orders/{id}", methods = ["GET"], headers = { "x-beta" = "1" } }
to = "svc"
stage = "extracted"

[[routes]]
name = "inventory"
match = { path = "/api/inventory/{sku}" }
stage = "legacy"

[[routes]]
name = "report"
match = { path = "/api/reports/{id}", methods = ["GET"] }
stage = "legacy"

[[routes]]
name = "everything-v2"
match = { path = "/v2/**" }
stage = "legacy"
"#;

    #[test]
    fn table_of_requests() {
        let t = load_str("t.toml", TABLE, None).unwrap();
        type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], Option<&'a str>);
        let cases: &[Case] = &[
            ("GET", "/api/products", &[], Some("products")),
            ("GET", "/api/products/", &[], Some("products")),
            ("GET", "/api/products/42", &[], Some("products")),
            ("GET", "/api/products/42/reviews/7", &[], Some("products")),
            ("GET", "/api/products/special", &[], Some("product-special")),
            ("GET", "/api/productsX", &[], None),
            ("GET", "/api/categories", &[], Some("categories")),
            ("GET", "/api/categories/1", &[], None),
            ("GET", "/api/orders/7", &[], Some("order-get")),
            ("HEAD", "/api/orders/7", &[], Some("order-get")),
            ("GET", "/api/orders/7", &[("x-beta", "1")], Some("order-get-beta")),
            // a route that lists HEAD takes it first; with none, a GET route answers HEAD
            ("HEAD", "/api/orders/7", &[("x-beta", "1")], Some("order-get")),
            ("HEAD", "/api/reports/1", &[], Some("report")),
            ("POST", "/api/reports/1", &[], None),
            ("GET", "/api/orders/7", &[("x-beta", "2")], Some("order-get")),
            ("DELETE", "/api/orders/7", &[], Some("order-write")),
            ("POST", "/api/orders/7", &[], None),
            ("GET", "/api/orders", &[], None),
            ("GET", "/api/inventory/SKU-1", &[], Some("inventory")),
            ("GET", "/v2", &[], Some("everything-v2")),
            ("GET", "/v2/a/b/c", &[], Some("everything-v2")),
            ("GET", "/", &[], None),
        ];
        for (method, path, headers, want) in cases {
            let mut h = http::HeaderMap::new();
            for (k, v) in *headers {
                h.insert(*k, v.parse().unwrap());
            }
            let m = http::Method::from_bytes(method.as_bytes()).unwrap();
            let got = t.router.find(&t.routes, None, path, &m, &h).map(|i| t.routes[i].name.as_str());
            assert_eq!(got, *want, "{method} {path} {headers:?}");
        }
    }

    #[test]
    fn hosts_are_matched_exactly_then_by_suffix_then_any() {
        let src = r#"
[defaults]
upstream = "legacy"
[upstreams.legacy]
endpoints = ["127.0.0.1:1"]
[[routes]]
name = "api-orders"
match = { host = "api.example.com", path = "/orders" }
stage = "legacy"
[[routes]]
name = "shops"
match = { host = "*.shop.example.com", path = "/orders" }
stage = "legacy"
[[routes]]
name = "deep-shop"
match = { host = "*.eu.shop.example.com", path = "/orders" }
stage = "legacy"
[[routes]]
name = "any"
match = { path = "/**" }
stage = "legacy"
"#;
        let t = load_str("t.toml", src, None).unwrap();
        let cases: &[(Option<&str>, &str, Option<&str>)] = &[
            (Some("api.example.com"), "/orders", Some("api-orders")),
            (Some("API.Example.com:8080"), "/orders", Some("api-orders")),
            (Some("api.example.com."), "/orders", Some("api-orders")),
            (Some("api.example.com"), "/other", Some("any")),
            (Some("a.shop.example.com"), "/orders", Some("shops")),
            (Some("a.b.shop.example.com"), "/orders", Some("shops")),
            (Some("a.eu.shop.example.com"), "/orders", Some("deep-shop")),
            (Some("shop.example.com"), "/orders", Some("any")),
            (Some("evil-api.example.com"), "/orders", Some("any")),
            (None, "/orders", Some("any")),
        ];
        let h = http::HeaderMap::new();
        for (host, path, want) in cases {
            let got = t.router.find(&t.routes, *host, path, &http::Method::GET, &h).map(|i| t.routes[i].name.as_str());
            assert_eq!(got, *want, "{host:?} {path}");
        }
        assert!(super::HostMatch::parse("a.*.example.com").is_err());
        assert!(super::HostMatch::parse("*").is_err());
        // the same host and pattern twice is ambiguous; different hosts are not
        let dup = src.replace("*.eu.shop.example.com", "api.example.com");
        let e = load_str("t.toml", &dup, None).unwrap_err().to_string();
        assert!(e.contains("overlaps route \"api-orders\" ambiguously"), "{e}");
    }

    #[test]
    fn a_match_edit_rebuilds_only_the_tries_of_the_hosts_it_touches() {
        let mut src = String::from(TABLE);
        for i in 0..20 {
            src.push_str(&format!(
                "[[routes]]\nname = \"h{i}\"\nmatch = {{ host = \"h{i}.example.com\", path = \"/items/{{id}}\" }}\nstage = \"legacy\"\n"
            ));
        }
        let old = load_str("t.toml", &src, None).unwrap();
        let edited = src.replace(
            "host = \"h7.example.com\", path = \"/items/{id}\"",
            "host = \"h7.example.com\", path = \"/things/{id}\"",
        );
        assert_ne!(edited, src);
        let new = load_str("t.toml", &edited, Some(&old)).unwrap();
        let (o, n) = (&old.router, &new.router);
        assert!(!Arc::ptr_eq(o, n), "a match edit builds a new router");
        assert!(Arc::ptr_eq(&o.any, &n.any), "the routes for any host did not change");
        for i in 0..20 {
            let h = format!("h{i}.example.com");
            assert_eq!(Arc::ptr_eq(&o.exact[&h], &n.exact[&h]), i != 7, "{h}");
        }
        // and the new router routes by the edit
        let hm = http::HeaderMap::new();
        let find = |path: &str| {
            n.find(&new.routes, Some("h7.example.com"), path, &http::Method::GET, &hm)
                .map(|i| new.routes[i].name.as_str())
        };
        assert_eq!(find("/things/1"), Some("h7"));
        assert_eq!(find("/items/1"), None);
        // a route inserted before them shifts every index: nothing is taken over
        let shifted = edited.replacen(
            "[[routes]]",
            "[[routes]]\nname = \"first\"\nmatch = { path = \"/first\" }\nstage = \"legacy\"\n[[routes]]",
            1,
        );
        let s = load_str("t.toml", &shifted, Some(&new)).unwrap();
        assert!(!Arc::ptr_eq(&s.router.exact["h3.example.com"], &n.exact["h3.example.com"]));
        let i = s.router.find(&s.routes, Some("h3.example.com"), "/items/1", &http::Method::GET, &hm).unwrap();
        assert_eq!(s.routes[i].name, "h3");
    }

    #[test]
    fn bad_patterns() {
        use super::PathPattern;
        assert!(PathPattern::parse("api").is_err());
        assert!(PathPattern::parse("/a/**/b").is_err());
        assert!(PathPattern::parse("/a/{}").is_err());
        assert!(PathPattern::parse("/a/x{id}").is_err());
        assert!(PathPattern::parse("/a//b").is_err());
        assert!(PathPattern::parse("/**").is_ok());
    }

    #[test]
    fn thousand_routes_compile() {
        let mut s = String::from(TABLE);
        for i in 0..1000 {
            s.push_str(&format!(
                "[[routes]]\nname = \"r{i}\"\nmatch = {{ path = \"/gen/{i}/items/{{id}}\" }}\nstage = \"legacy\"\n"
            ));
        }
        let t = load_str("t.toml", &s, None).unwrap();
        let h = http::HeaderMap::new();
        let i = t.router.find(&t.routes, None, "/gen/999/items/5", &http::Method::GET, &h).unwrap();
        assert_eq!(t.routes[i].name, "r999");
    }
}
