//! The admin HTTP API (SPEC §5), on its own listener.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;

use crate::decision::rfc3339;
use crate::metrics::Metrics;
use crate::proxy::Shared;
use crate::reload::Reloader;

pub struct Admin {
    pub shared: Arc<Shared>,
    pub reloader: Arc<Reloader>,
    pub token: Option<String>,
}

type Resp = Response<Full<Bytes>>;

fn reply(status: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static(ctype));
    r
}

fn json_reply(status: StatusCode, v: serde_json::Value) -> Resp {
    reply(status, "application/json", v.to_string())
}

/// Percent-decode a query component (`+` is a space).
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                let v = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
                out.push(v);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn query_param(q: &str, key: &str) -> Option<String> {
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| percent_decode(v)).flatten()
    })
}

fn secs(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Admin {
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(x) => x,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let me = self.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let me = me.clone();
                    async move { Ok::<_, Infallible>(me.route(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    }

    async fn route(&self, req: Request<Incoming>) -> Resp {
        let q = req.uri().query().unwrap_or("").to_owned();
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/metrics") => {
                let m = Metrics::get();
                let loaded = secs(self.shared.table.load().meta.loaded_at);
                m.table_age
                    .set((crate::decision::now_unix() - loaded).max(0));
                reply(StatusCode::OK, "text/plain; version=0.0.4", m.render())
            }
            (&Method::GET, "/healthz") => reply(StatusCode::OK, "text/plain", "ok\n"),
            // The proxy only starts serving once a table is loaded.
            (&Method::GET, "/readyz") => reply(StatusCode::OK, "text/plain", "ready\n"),
            (&Method::GET, "/v1/decision") => self.decision(&q),
            (&Method::GET, "/v1/table") => self.table(),
            (&Method::GET, "/v1/top-blocked") => {
                let limit = query_param(&q, "limit")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(20usize)
                    .min(1000);
                let top: Vec<_> = self
                    .shared
                    .top
                    .top(limit)
                    .into_iter()
                    .map(|(host, count)| json!({"host": host, "count": count}))
                    .collect();
                json_reply(StatusCode::OK, json!({ "top": top }))
            }
            (&Method::POST, "/v1/reload") => {
                if let Some(tok) = &self.token {
                    let ok = req
                        .headers()
                        .get(AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("Bearer "))
                        == Some(tok.as_str());
                    if !ok {
                        return json_reply(
                            StatusCode::UNAUTHORIZED,
                            json!({"error": "bearer token required"}),
                        );
                    }
                }
                let force = matches!(query_param(&q, "force").as_deref(), Some("1" | "true"));
                match self.reloader.reload(force).await {
                    Ok(r) => json_reply(StatusCode::OK, json!({"accepted": true, "report": r})),
                    Err(r) => json_reply(
                        StatusCode::CONFLICT,
                        json!({"accepted": false, "report": r}),
                    ),
                }
            }
            (
                _,
                "/metrics" | "/healthz" | "/readyz" | "/v1/decision" | "/v1/table"
                | "/v1/top-blocked" | "/v1/reload",
            ) => json_reply(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"error": "method not allowed"}),
            ),
            _ => json_reply(StatusCode::NOT_FOUND, json!({"error": "not found"})),
        }
    }

    fn decision(&self, q: &str) -> Resp {
        let Some(host) = query_param(q, "host") else {
            return json_reply(
                StatusCode::BAD_REQUEST,
                json!({"error": "host= is required"}),
            );
        };
        let dst = match query_param(q, "dst") {
            None => None,
            Some(d) => match d.parse::<IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    return json_reply(
                        StatusCode::BAD_REQUEST,
                        json!({"error": "dst is not an IP address"}),
                    )
                }
            },
        };
        let snap = self.shared.table.load_full();
        let now = crate::decision::now_unix();
        let d = self.shared.policy.decide_raw(&snap, &host, dst, now);
        let v = crate::cli::decision_json(&host, &snap, &d, dst, now);
        json_reply(StatusCode::OK, v)
    }

    fn table(&self) -> Resp {
        let snap = self.shared.table.load_full();
        json_reply(
            StatusCode::OK,
            json!({
                "version": snap.meta.version,
                "entries": snap.len(),
                "loaded_at": rfc3339(secs(snap.meta.loaded_at)),
                "source": snap.meta.source,
                "last_error": self.reloader.last_error(),
            }),
        )
    }
}
