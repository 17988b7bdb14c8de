//! The background half of shadowing: the shadow threads (never the proxy's: [`super::threads`]),
//! one bounded queue per route served by its dispatcher with bounded concurrency
//! ([`super::dispatch`]), the pooled client that sends the mirror (and the noise replay) the way
//! the primary path speaks to that upstream (TLS, h2: [`super::client`]), the comparison and the
//! report update.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

use super::body::{request_body, BodyCapture, CapturedBody};
use super::client::{error_chain, Clients, EndpointClient};
use super::compare::{compare, Captured, Difference, NoiseModel};
use super::dispatch::until;
use super::h1::{AnswerHeaders, H1Request};
use super::lane::{Job, Lane, LaneQueue, PrimaryHead};
use super::policy::{is_safe, ShadowSettings};
use super::report::{Count, Reports};
use super::store::StoreHandle;
use super::threads::ShadowThreads;
use crate::table::Upstream;

/// The shadow runtime: its own threads, its HTTP client and the sample store.
pub struct Shadower {
    threads: ShadowThreads,
    clients: Clients,
    store: Option<StoreHandle>,
}

impl Shadower {
    /// Starts the shadow runtime: restores persisted reports from `settings.dir` into `reports`,
    /// then starts the workers and the store.
    pub fn start(settings: &ShadowSettings, reports: &Arc<Reports>) -> anyhow::Result<Self> {
        let store = match &settings.dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                super::store::restore(dir, settings.files, reports)?;
                Some(super::store::spawn(dir.clone(), settings.file_bytes, settings.files, reports.clone())?)
            }
            None => None,
        };
        let threads = ShadowThreads::start(settings.threads, settings.nice)?;
        Ok(Shadower { threads, clients: Clients::new(), store })
    }

    /// A new queue of `queue` jobs with at most `concurrency` mirrors in flight, served by its
    /// dispatcher on one of the shadow threads.
    pub(crate) fn lane(self: &Arc<Self>, queue: usize, concurrency: usize) -> Lane {
        let q = Arc::new(LaneQueue::new(queue, concurrency));
        let me = self.clone();
        let theirs = q.clone();
        self.threads.spawn(async move {
            let me: &Shadower = &me;
            super::dispatch::run(theirs, concurrency, |job, deadline| me.process(job, deadline)).await;
        });
        Lane { queue: q }
    }

    /// Mirrors one job (and replays it to legacy when learning noise), compares, reports; its
    /// requests give up at `deadline`.
    async fn process(&self, mut job: Job, deadline: Instant) {
        let p = job.route.clone();
        let report = &p.report;
        let Some(primary) = job.primary.take().filter(|_| !job.primary_failed) else {
            report.count(Count::ErrorsLegacy);
            return;
        };
        if job.request_over {
            report.count(Count::Oversize);
            return;
        }
        // the captured chunks are moved out of the job, not cloned (the sends borrow the job)
        let body = match request_body(std::mem::take(&mut job.request_chunks), job.body_read) {
            Some(b) if job.request_complete => b,
            _ => {
                report.count(Count::Incomplete);
                return;
            }
        };
        report.count(Count::Mirrored);
        let replay = p.spec.learn_noise && is_safe(&job.req.method);
        let (shadow, second) =
            tokio::join!(self.send(&job, &job.shadow_upstream, body.clone(), true, deadline), async {
                if replay {
                    Some(self.send(&job, &job.legacy_upstream, body.clone(), false, deadline).await)
                } else {
                    None
                }
            });
        let shadow = match shadow {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(route = %p.route, "shadow request failed: {e}");
                // the latency first: a reader that sees the error counted sees its latency too
                report.record_latency(job.primary_ms, None);
                report.count(Count::ErrorsShadow);
                return;
            }
        };
        report.record_latency(job.primary_ms, Some(shadow.ms));

        let pbody = std::mem::take(&mut job.response).finish();
        let compared = &p.spec.rules.headers;
        let pheaders = primary.compared_pairs(compared);
        let sheaders = shadow.compared_pairs(compared);
        let legacy = Captured {
            status: primary.status,
            headers: &pheaders,
            body: &pbody.body,
            truncated: pbody.truncated,
            digest: pbody.digest,
        };
        let shadow_cap = Captured {
            status: shadow.status,
            headers: &sheaders,
            body: &shadow.body.body,
            truncated: shadow.body.truncated,
            digest: shadow.body.digest,
        };
        if let Some(Ok(again)) = &second {
            let aheaders = again.compared_pairs(compared);
            let again_cap = Captured {
                status: again.status,
                headers: &aheaders,
                body: &again.body.body,
                truncated: again.body.truncated,
                digest: again.body.digest,
            };
            let mut learnt = NoiseModel::default();
            if learnt.learn(&p.spec.rules, &legacy, &again_cap) > 0 {
                report.learn_noise(learnt.patterns().map(String::from));
            }
        }
        let cmp = compare(&p.spec.rules, &legacy, &shadow_cap);
        if pbody.truncated || shadow.body.truncated {
            report.count(Count::BodyOversize);
        }
        let (real, noisy) = report.split_noise(cmp.differences);
        let fields = (distinct_fields(&real), distinct_fields(&noisy));
        // the sample is kept before the comparison is counted: a reader that sees the count
        // sees its sample too
        if !real.is_empty() {
            let sample = self.sample(&job, &body, &primary, &pbody, &shadow, real, noisy);
            if let Some(store) = &self.store {
                store.append(sample.clone());
            }
            report.push_sample(sample);
        }
        report.record_comparison(&fields.0, &fields.1);
        // after the counts: a sampler that takes the mark reads them
        p.activity.mark(p.index);
    }

    async fn send(
        &self,
        job: &Job,
        upstream: &Arc<Upstream>,
        body: Bytes,
        shadow: bool,
        deadline: Instant,
    ) -> Result<Answer, String> {
        let ep = upstream.select().ok_or_else(|| format!("upstream {} has no endpoints", upstream.name))?;
        let target = self.clients.target(upstream)?;
        let (client, endpoint) = upstream
            .endpoints
            .iter()
            .position(|e| Arc::ptr_eq(e, ep))
            .and_then(|i| target.endpoints.get(i))
            .ok_or("endpoint not in its upstream")?;
        let req = if shadow { job.shadow_req.as_deref() } else { job.legacy_req.as_deref() }.unwrap_or(&job.req);
        let path = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let (max, oversize) = (job.route.spec.max_body, job.route.spec.oversize);
        let mut extra: [(&'static str, &HeaderValue); 2] = [("", &EMPTY), ("", &EMPTY)];
        let mut n = 0;
        if let Some(id) = &job.request_id {
            extra[n] = ("x-request-id", id);
            n += 1;
        }
        if let Some(v) = job.dry_run_header.as_ref().filter(|_| shadow) {
            extra[n] = (SHADOW_HEADER, v);
            n += 1;
        }
        let started = Instant::now();
        let answered = match client {
            EndpointClient::H1(h1) => {
                // `Host` is the request's own; without one, its URI's authority or the endpoint's
                let auth = req.uri.authority().unwrap_or(endpoint);
                let r = H1Request {
                    method: &job.req.method,
                    path_and_query: path,
                    authority: auth.as_str(),
                    headers: &req.headers,
                    skip: &SKIP_HEADERS,
                    extra: &extra[..n],
                    body: &body,
                };
                until(deadline, h1.send(r, max, oversize))
                    .await
                    .map(|r| r.map(|a| (a.status, AnswerHeaders::Raw(a.head), a.body)).map_err(|e| error_chain(&e)))
            }
            EndpointClient::Hyper(client) => {
                // the URI's authority is h2's `:authority`: the request's own (its URI's, else
                // its Host header, as Pingora does on the primary path); the client dials its
                // endpoint anyway
                let authority = req.uri.authority().cloned().or_else(|| {
                    req.headers.get(http::header::HOST).and_then(|h| Authority::try_from(h.as_bytes()).ok())
                });
                let mut parts = http::uri::Parts::default();
                parts.scheme = Some(target.scheme.clone());
                parts.authority = Some(authority.unwrap_or_else(|| endpoint.clone()));
                parts.path_and_query =
                    Some(req.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")));
                let uri = Uri::from_parts(parts).map_err(|e| e.to_string())?;
                let mut headers = HeaderMap::with_capacity(req.headers.len() + 2);
                for (k, v) in req.headers.iter() {
                    if !SKIP_HEADERS.contains(&k.as_str()) {
                        headers.append(k.clone(), v.clone());
                    }
                }
                for (k, v) in &extra[..n] {
                    headers.insert(HeaderName::from_static(k), (*v).clone());
                }
                // an empty body goes without a length unless the request had one (e.g. POST, length 0)
                let mut r = http::Request::new(Full::new(body));
                *r.method_mut() = job.req.method.clone();
                *r.uri_mut() = uri;
                *r.headers_mut() = headers;
                let attempt = async {
                    let resp = client.request(r).await.map_err(|e| error_chain(&e))?;
                    let (head, mut body) = resp.into_parts();
                    let mut cap = BodyCapture::default();
                    while let Some(frame) = body.frame().await {
                        if let Ok(chunk) = frame.map_err(|e| error_chain(&e))?.into_data() {
                            cap.push(&chunk, max, oversize);
                        }
                    }
                    Ok::<_, String>((head.status.as_u16(), AnswerHeaders::Map(head.headers), cap.finish()))
                };
                until(deadline, attempt).await
            }
        };
        match answered {
            None => Err(format!("no complete answer within {:?}", job.route.spec.timeout)),
            Some(Err(e)) => Err(e),
            Some(Ok((status, headers, body))) => {
                Ok(Answer { status, headers, body, ms: started.elapsed().as_secs_f64() * 1000.0 })
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn sample(
        &self,
        job: &Job,
        request_body: &Bytes,
        primary: &PrimaryHead,
        pbody: &CapturedBody,
        shadow: &Answer,
        real: Vec<Difference>,
        noisy: Vec<Difference>,
    ) -> Value {
        let redact = &job.route.spec.redact_headers;
        let pheaders = header_pairs(&primary.headers.map());
        let rheaders = header_pairs(&job.req.headers);
        let at = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        let redact_diff = |d: Difference| match d {
            Difference::Header { name, .. } if redact.contains(&name) => {
                Difference::Header { name, legacy: Some(REDACTED.into()), shadow: Some(REDACTED.into()) }
            }
            d => d,
        };
        json!({
            "route": job.route.route,
            "at_unix_ms": at,
            "request_id": job.request_id.as_ref().and_then(|v| v.to_str().ok()),
            "request": {
                "method": job.req.method.as_str(),
                "uri": job.req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
                "headers": headers_json(&rheaders, redact),
                "body": body_json(request_body, false),
                "body_len": request_body.len(),
            },
            "legacy": {
                "status": primary.status,
                "headers": headers_json(&pheaders, redact),
                "body": body_json(&pbody.body, pbody.truncated),
                "body_len": pbody.len,
                "latency_ms": (job.primary_ms * 1000.0).round() / 1000.0,
            },
            "shadow": {
                "status": shadow.status,
                "headers": headers_json(&header_pairs(&shadow.headers.map()), redact),
                "body": body_json(&shadow.body.body, shadow.body.truncated),
                "body_len": shadow.body.len,
                "latency_ms": (shadow.ms * 1000.0).round() / 1000.0,
                "uri": job.shadow_req.as_ref().and_then(|r| r.uri.path_and_query()).map(|p| p.as_str()),
            },
            "differences": real.into_iter().map(redact_diff).collect::<Vec<_>>(),
            "noise": noisy.into_iter().map(redact_diff).collect::<Vec<_>>(),
        })
    }
}

/// The header mirrored requests carry; extracted services run such requests as a dry run when
/// it carries the secret they share with the gateway.
use strangler_wire::SHADOW_HEADER;
const REDACTED: &str = "[redacted]";

/// Not copied to mirrored requests: hop-by-hop, framing (the client sets them) and our marker.
const SKIP_HEADERS: [&str; 11] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
    "transfer-encoding",
    "content-length",
    SHADOW_HEADER,
];

/// Splits a comparison's differences into real mismatches and learnt noise and records the
/// outcome: each differing field (and each noise field) counts once per comparison (as the
/// worker does, without the sample).
#[cfg(test)]
fn record_outcome(
    report: &super::report::RouteReport,
    differences: Vec<Difference>,
) -> (Vec<Difference>, Vec<Difference>) {
    let (real, noisy) = report.split_noise(differences);
    report.record_comparison(&distinct_fields(&real), &distinct_fields(&noisy));
    (real, noisy)
}

fn distinct_fields(diffs: &[Difference]) -> Vec<String> {
    let mut fields: Vec<String> = diffs.iter().map(Difference::field).collect();
    fields.sort();
    fields.dedup();
    fields
}

struct Answer {
    status: u16,
    headers: AnswerHeaders,
    body: CapturedBody,
    ms: f64,
}

impl Answer {
    /// The headers a comparison looks at; none built when none are compared (the default).
    fn compared_pairs(&self, names: &[String]) -> Vec<(String, String)> {
        compared_headers(&self.headers, names)
    }
}

impl PrimaryHead {
    /// The headers a comparison looks at; none built when none are compared (the default).
    fn compared_pairs(&self, names: &[String]) -> Vec<(String, String)> {
        compared_headers(&self.headers, names)
    }
}

fn compared_headers(h: &AnswerHeaders, names: &[String]) -> Vec<(String, String)> {
    if names.is_empty() {
        return Vec::new();
    }
    compared_pairs(&h.map(), names)
}

static EMPTY: HeaderValue = HeaderValue::from_static("");

/// The headers a comparison looks at (`rules.headers`, lowercase names) as name/value pairs; no
/// allocation when none are compared (the default).
fn compared_pairs(h: &HeaderMap, names: &[String]) -> Vec<(String, String)> {
    if names.is_empty() {
        return Vec::new();
    }
    h.iter()
        .filter(|(k, _)| names.iter().any(|n| n == k.as_str()))
        .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect()
}

fn header_pairs(h: &HeaderMap) -> Vec<(String, String)> {
    h.iter().map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect()
}

fn headers_json(h: &[(String, String)], redact: &[String]) -> Value {
    let mut m = serde_json::Map::new();
    for (k, v) in h {
        let v = if redact.iter().any(|r| r.eq_ignore_ascii_case(k)) { REDACTED } else { v.as_str() };
        match m.get_mut(k) {
            Some(Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(v);
            }
            _ => {
                m.insert(k.clone(), Value::String(v.to_string()));
            }
        }
    }
    Value::Object(m)
}

fn body_json(b: &[u8], truncated: bool) -> Value {
    if truncated {
        return Value::Null;
    }
    match std::str::from_utf8(b) {
        Ok(s) => Value::String(s.to_string()),
        Err(_) => Value::String(format!("(not UTF-8) {}", String::from_utf8_lossy(b))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn json_diff(pointer: &str, pattern: &str) -> Difference {
        Difference::Json {
            pointer: pointer.into(),
            pattern: pattern.into(),
            legacy: Some(json!(1)),
            shadow: Some(json!(2)),
        }
    }

    /// Two differences under one field count once per comparison, real or learnt noise alike.
    #[test]
    fn each_field_counts_once_per_comparison() {
        let reports = Reports::default();
        let report = reports.report("orders");
        report.learn_noise(["/items/*/nonce".to_string()]);
        let diffs = vec![
            json_diff("/items/0/nonce", "/items/*/nonce"),
            json_diff("/items/1/nonce", "/items/*/nonce"),
            json_diff("/lines/0/price", "/lines/*/price"),
            json_diff("/lines/1/price", "/lines/*/price"),
        ];
        let (real, noisy) = record_outcome(&report, diffs);
        assert_eq!((real.len(), noisy.len()), (2, 2));
        let v = report.to_json(false);
        assert_eq!(v["top_fields"], json!([{"field": "/lines/*/price", "count": 1}]), "{v:#}");
        assert_eq!(v["noise_fields"], json!([{"field": "/items/*/nonce", "suppressed": 1}]), "{v:#}");
        assert_eq!((v["compared"].as_u64(), v["mismatched"].as_u64()), (Some(1), Some(1)));
    }
}
