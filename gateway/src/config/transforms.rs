//! What a route changes about the traffic it takes: `[routes.cors]`.

use http::{HeaderName, HeaderValue, Method};
use toml::Spanned;

use super::diagnostics::Issues;
use super::raw::{RawCors, RawRoute};
use super::values::{dur, KNOWN_METHODS};
use crate::cors::CorsPolicy;

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
