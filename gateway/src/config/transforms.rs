//! What a route changes about the traffic it takes: `[routes.cors]` and `[routes.rewrite]`.

use http::{HeaderName, HeaderValue, Method};
use toml::Spanned;

use super::diagnostics::Issues;
use super::raw::{RawCors, RawHeaderOps, RawRoute, RawSideRewrite};
use super::values::{dur, KNOWN_METHODS};
use crate::cors::CorsPolicy;
use crate::rewrite::{compile_template, HeaderOps, PathRewrite, Rewrites, SideRewrite};

/// `[routes.rewrite]`.
pub(super) fn rewrites(issues: &mut Issues<'_>, r: &RawRoute) -> Option<Box<Rewrites>> {
    let raw = r.rewrite.as_ref()?;
    let pattern = r.matcher.get_ref().path.get_ref();
    let side =
        |issues: &mut Issues<'_>, s: &Option<RawSideRewrite>| s.as_ref().map(|s| side_rewrite(issues, s, pattern));
    Some(Box::new(Rewrites { legacy: side(issues, &raw.legacy), extracted: side(issues, &raw.extracted) }))
}

fn side_rewrite(issues: &mut Issues<'_>, s: &RawSideRewrite, pattern: &str) -> SideRewrite {
    let prefix = |issues: &mut Issues<'_>, v: &Option<Spanned<String>>| {
        let v = v.as_ref()?;
        let ok = v.get_ref().starts_with('/') && v.get_ref().parse::<http::Uri>().is_ok() && !v.get_ref().contains('?');
        if !ok {
            issues.at(v, format!("{:?} is not a path prefix", v.get_ref()), Some("e.g. \"/api/v1\"".into()));
        }
        ok.then(|| v.get_ref().clone())
    };
    let path = match (&s.path, &s.strip_prefix, &s.add_prefix) {
        (Some(t), None, None) => match compile_template(t.get_ref(), pattern) {
            Ok(parts) => Some(PathRewrite::Template(parts)),
            Err(e) => {
                issues.at(t, e, Some("use the route's {parameters}, e.g. \"/products/{id}\"".into()));
                None
            }
        },
        (Some(t), _, _) => {
            issues.at(t, "path cannot be combined with strip_prefix or add_prefix", None);
            None
        }
        (None, None, None) => None,
        (None, strip, add) => Some(PathRewrite::Prefix { strip: prefix(issues, strip), add: prefix(issues, add) }),
    };
    SideRewrite {
        path,
        request_headers: header_ops(issues, &s.request_headers),
        response_headers: header_ops(issues, &s.response_headers),
    }
}

/// `{ set, add, remove }`; the gateway's own `x-strangler-*` headers cannot be touched.
fn header_ops(issues: &mut Issues<'_>, raw: &Option<RawHeaderOps>) -> HeaderOps {
    let mut out = HeaderOps::default();
    let Some(raw) = raw else { return out };
    let name = |issues: &mut Issues<'_>, n: &str, at: usize| match HeaderName::from_bytes(n.trim().as_bytes()) {
        Ok(h) if strangler_wire::headers::is_internal(h.as_str()) => {
            issues.push(at, format!("{n:?}: x-strangler-* headers are the gateway's"), Some("use another name".into()));
            None
        }
        Ok(h) => Some(h),
        Err(_) => {
            issues.push(at, format!("{n:?} is not a header name"), None);
            None
        }
    };
    for (map, list) in [(&raw.set, &mut out.set), (&raw.add, &mut out.add)] {
        for (k, v) in map.iter().flatten() {
            let n = name(issues, k, v.span().start);
            match HeaderValue::from_str(v.get_ref()) {
                Ok(val) => list.extend(n.map(|n| (n, val))),
                Err(_) => issues.at(v, format!("{:?} is not a header value", v.get_ref()), None),
            }
        }
    }
    for r in raw.remove.iter().flatten() {
        out.remove.extend(name(issues, r.get_ref(), r.span().start));
    }
    out
}

/// `[routes.cors]`.
pub(super) fn cors(issues: &mut Issues<'_>, r: &RawRoute, route_methods: Option<&[Method]>) -> Option<Box<CorsPolicy>> {
    let raw = r.cors.as_ref()?;
    let c: &RawCors = raw.get_ref();
    let mut origins = Vec::new();
    let mut any_origin = false;
    for o in &c.allow_origins {
        let v = o.get_ref().trim();
        if v == "*" {
            any_origin = true;
        } else if (v.starts_with("http://") || v.starts_with("https://"))
            && !v.ends_with('/')
            && HeaderValue::from_str(v).is_ok()
        {
            origins.push(HeaderValue::from_str(v).expect("checked"));
        } else {
            issues.at(
                o,
                format!("{v:?} is not an origin"),
                Some("write scheme://host[:port] without a path, e.g. \"https://shop.example.com\", or \"*\"".into()),
            );
        }
    }
    if c.allow_origins.is_empty() {
        issues.at(raw, "allow_origins is empty", None);
    }
    let credentials = c.allow_credentials.unwrap_or(false);
    if any_origin && credentials {
        issues.at(
            raw,
            "allow_origins = [\"*\"] cannot be used with allow_credentials = true",
            Some("browsers refuse it; list the origins".into()),
        );
    }
    let methods: Vec<Method> = match &c.allow_methods {
        Some(list) => list
            .iter()
            .filter_map(|m| {
                let up = m.get_ref().to_ascii_uppercase();
                let ok = KNOWN_METHODS.contains(&up.as_str());
                if !ok {
                    issues.at(
                        m,
                        format!("unknown method {:?}", m.get_ref()),
                        Some(format!("use one of: {}", KNOWN_METHODS.join(", "))),
                    );
                }
                ok.then(|| Method::from_bytes(up.as_bytes()).ok()).flatten()
            })
            .collect(),
        None => route_methods.map(<[Method]>::to_vec).unwrap_or_else(|| vec![Method::GET, Method::HEAD, Method::POST]),
    };
    let methods_value = HeaderValue::from_str(&methods.iter().map(Method::as_str).collect::<Vec<_>>().join(", "))
        .expect("method names");
    Some(Box::new(CorsPolicy {
        any_origin,
        origins,
        methods,
        methods_value,
        allow_headers: header_list(issues, &c.allow_headers),
        expose_headers: header_list(issues, &c.expose_headers),
        credentials,
        max_age: c
            .max_age
            .as_ref()
            .map(|_| HeaderValue::from(dur(issues, &c.max_age, std::time::Duration::ZERO).as_secs())),
    }))
}

/// A list of header names as one comma-separated value.
fn header_list(issues: &mut Issues<'_>, v: &Option<Vec<Spanned<String>>>) -> Option<HeaderValue> {
    let list = v.as_ref()?;
    let mut names = Vec::new();
    for h in list {
        match HeaderName::from_bytes(h.get_ref().trim().as_bytes()) {
            Ok(n) => names.push(n.as_str().to_string()),
            Err(_) => issues.at(h, format!("{:?} is not a header name", h.get_ref()), None),
        }
    }
    HeaderValue::from_str(&names.join(", ")).ok()
}
