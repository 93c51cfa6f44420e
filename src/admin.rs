//! The admin HTTP API (docs/interfaces.md), on its own listener.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
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

/// The query's parameters, decoded (`+` is a space). `Err` names the first
/// parameter that is not valid percent-encoded UTF-8: the request is
/// answered 400, never as if the parameter were absent.
pub fn query_params(q: &str) -> Result<Vec<(String, String)>, String> {
    let dec = |s: &str| {
        let s = s.replace('+', " ");
        percent_encoding::percent_decode_str(&s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .ok()
    };
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            match (dec(k), dec(v)) {
                (Some(k), Some(v)) => Ok((k, v)),
                _ => Err(format!(
                    "query parameter {k:?} is not valid percent-encoded UTF-8"
                )),
            }
        })
        .collect()
}

fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Admin connections served at once; more are closed at accept.
pub const MAX_CONNECTIONS: usize = 64;
/// A request head must arrive within this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head read (the API takes no request bodies).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

use crate::decision::unix_secs as secs;

impl Admin {
    /// Serve the admin API: at most [`MAX_CONNECTIONS`] at once, each
    /// request head within [`HEADER_TIMEOUT`] and [`MAX_HEAD_BYTES`], a
    /// connection idle (no request in progress) for [`HEADER_TIMEOUT`]
    /// closed.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(x) => x,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                drop(stream);
                continue;
            };
            let me = self.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let me = me.clone();
                    async move { Ok::<_, Infallible>(me.route(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .max_buf_size(MAX_HEAD_BYTES)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
                drop(permit);
            });
        }
    }

    async fn route(&self, req: Request<Incoming>) -> Resp {
        let q = match query_params(req.uri().query().unwrap_or("")) {
            Ok(q) => q,
            Err(e) => return json_reply(StatusCode::BAD_REQUEST, json!({ "error": e })),
        };
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
                let limit = param(&q, "limit")
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
                let force = matches!(param(&q, "force"), Some("1" | "true"));
                if matches!(param(&q, "dry_run"), Some("1" | "true")) {
                    return match self.reloader.dry_run().await {
                        Ok(r) => json_reply(StatusCode::OK, json!({"dry_run": true, "report": r})),
                        Err(r) => json_reply(
                            StatusCode::CONFLICT,
                            json!({"dry_run": true, "accepted": false, "report": r}),
                        ),
                    };
                }
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

    fn decision(&self, q: &[(String, String)]) -> Resp {
        let Some(host) = param(q, "host") else {
            return json_reply(
                StatusCode::BAD_REQUEST,
                json!({"error": "host= is required"}),
            );
        };
        let dst = match param(q, "dst") {
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
        let d = self.shared.policy.decide_raw(&snap, host, dst, now);
        let mode = self.shared.policy.mode_for(dst);
        let v = crate::cli::decision_json(host, &snap, &d, dst, mode, now);
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
