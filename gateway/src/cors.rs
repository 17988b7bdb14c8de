//! CORS per route: preflights answered by the gateway (no upstream sees them), and the
//! `Access-Control-*` headers added to the answers of allowed origins. Pure.

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS,
    ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method};

/// A route's `[routes.cors]`, compiled.
#[derive(Debug, Clone)]
pub struct CorsPolicy {
    /// `"*"`: any origin (not with credentials).
    pub any_origin: bool,
    pub origins: Vec<HeaderValue>,
    pub methods: Vec<Method>,
    /// `methods` joined, for the preflight answer.
    pub methods_value: HeaderValue,
    /// `None`: the headers the preflight asks for are allowed.
    pub allow_headers: Option<HeaderValue>,
    pub expose_headers: Option<HeaderValue>,
    pub credentials: bool,
    pub max_age: Option<HeaderValue>,
}

/// The method a CORS preflight asks about (an OPTIONS request with `Origin` and
/// `Access-Control-Request-Method`).
pub fn preflight_method(method: &Method, headers: &HeaderMap) -> Option<Method> {
    if *method != Method::OPTIONS || !headers.contains_key(ORIGIN) {
        return None;
    }
    Method::from_bytes(headers.get(ACCESS_CONTROL_REQUEST_METHOD)?.as_bytes()).ok()
}

impl CorsPolicy {
    /// The `Access-Control-Allow-Origin` value for a request from `origin`, when it is allowed.
    pub fn allow_origin(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        let origin = origin?;
        if self.any_origin {
            return Some(HeaderValue::from_static("*"));
        }
        self.origins.iter().any(|o| o.as_bytes().eq_ignore_ascii_case(origin.as_bytes())).then(|| origin.clone())
    }

    /// The headers of an actual (non-preflight) answer to an allowed origin.
    pub fn response_headers(&self, allow_origin: &HeaderValue) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = vec![(ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin.clone())];
        if !self.any_origin {
            out.push((VARY, HeaderValue::from_static("Origin")));
        }
        if self.credentials {
            out.push((ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true")));
        }
        if let Some(e) = &self.expose_headers {
            out.push((ACCESS_CONTROL_EXPOSE_HEADERS, e.clone()));
        }
        out
    }

    /// The headers of a 204 answering a preflight when the origin, the method and the headers
    /// asked for are allowed; `None` (a 403) otherwise.
    pub fn preflight(&self, method: &Method, headers: &HeaderMap) -> Option<Vec<(HeaderName, HeaderValue)>> {
        let origin = self.allow_origin(headers.get(ORIGIN))?;
        if !self.methods.contains(method) {
            return None;
        }
        let asked = headers.get(ACCESS_CONTROL_REQUEST_HEADERS);
        let allow_headers = match (&self.allow_headers, asked) {
            (Some(allowed), Some(asked)) => {
                let allowed_list = allowed.to_str().unwrap_or("");
                let ok = asked
                    .to_str()
                    .unwrap_or("\u{0}")
                    .split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .all(|h| allowed_list.split(',').any(|a| a.trim().eq_ignore_ascii_case(h)));
                if !ok {
                    return None;
                }
                Some(allowed.clone())
            }
            (Some(allowed), None) => Some(allowed.clone()),
            (None, asked) => asked.cloned(),
        };
        let mut out = vec![
            (ACCESS_CONTROL_ALLOW_ORIGIN, origin),
            (ACCESS_CONTROL_ALLOW_METHODS, self.methods_value.clone()),
            (VARY, HeaderValue::from_static("Origin, Access-Control-Request-Method, Access-Control-Request-Headers")),
        ];
        if let Some(h) = allow_headers {
            out.push((ACCESS_CONTROL_ALLOW_HEADERS, h));
        }
        if self.credentials {
            out.push((ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true")));
        }
        if let Some(m) = &self.max_age {
            out.push((ACCESS_CONTROL_MAX_AGE, m.clone()));
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preflight_table() {
        let p = CorsPolicy {
            any_origin: false,
            origins: vec![HeaderValue::from_static("https://shop.test")],
            methods: vec![Method::GET, Method::POST],
            methods_value: HeaderValue::from_static("GET, POST"),
            allow_headers: Some(HeaderValue::from_static("content-type, authorization")),
            expose_headers: None,
            credentials: true,
            max_age: Some(HeaderValue::from_static("600")),
        };
        let h = |pairs: &[(&'static str, &'static str)]| -> HeaderMap {
            pairs.iter().map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v))).collect()
        };
        let ok = h(&[("origin", "https://shop.test"), ("access-control-request-headers", "Content-Type")]);
        assert!(p.preflight(&Method::POST, &ok).is_some());
        assert!(p.preflight(&Method::DELETE, &ok).is_none());
        assert!(p.preflight(&Method::GET, &h(&[("origin", "https://evil.test")])).is_none());
        let extra = h(&[("origin", "https://shop.test"), ("access-control-request-headers", "x-secret")]);
        assert!(p.preflight(&Method::GET, &extra).is_none());
        assert_eq!(p.allow_origin(Some(&HeaderValue::from_static("https://shop.test"))).unwrap(), "https://shop.test");
        assert!(p.allow_origin(None).is_none());
        let m = h(&[("origin", "x"), ("access-control-request-method", "PUT")]);
        assert_eq!(preflight_method(&Method::OPTIONS, &m), Some(Method::PUT));
        assert_eq!(preflight_method(&Method::GET, &m), None);
    }
}
