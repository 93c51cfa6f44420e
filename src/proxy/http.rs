//! HTTP/1.x: every request on a connection is decided on its own
//! (keep-alive and pipelined ones included); allowed requests go to the
//! upstream through a pooled hyper client, blocked ones get the block page
//! and the connection closes.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, HOST};
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::Client as LegacyClient;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use super::upstream::Connector;
use super::{record, registrable_of, ConnInfo, OwnedBlock, Shared};
use crate::block::{self, PageInput};
use crate::decision::{rfc3339, Action, Decision, Reason};
use crate::metrics::Proto;
use crate::sniff::http::request_host_parts;

pub type Body = BoxBody<Bytes, hyper::Error>;
pub type Client = LegacyClient<Connector, Incoming>;

pub const REASON_HEADER: &str = "x-icpgate-reason";

pub fn client(fwmark: Option<u32>, connect_timeout: Duration) -> Client {
    LegacyClient::builder(TokioExecutor::new())
        .http1_preserve_header_case(true)
        .set_host(false)
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_timer(TokioTimer::new())
        .build(Connector {
            fwmark,
            timeout: connect_timeout,
        })
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

fn simple(status: StatusCode, reason: Option<Reason>) -> Response<Body> {
    let mut r = Response::new(full(format!("{}\n", status)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(CONNECTION, HeaderValue::from_static("close"));
    if let Some(reason) = reason {
        h.insert(REASON_HEADER, HeaderValue::from_static(reason.as_str()));
    }
    r
}

/// The block page (SPEC §6): status, headers and body.
pub fn block_parts(
    shared: &Shared,
    host: &str,
    registrable: &str,
    block: &OwnedBlock,
) -> (StatusCode, hyper::HeaderMap, Bytes) {
    let request_id = block::request_id();
    let table_time = shared
        .table
        .load()
        .meta
        .loaded_at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or_else(|_| "—".to_owned(), |d| rfc3339(d.as_secs() as i64));
    let html = shared.page.render(&PageInput {
        host,
        registrable,
        reason: block.reason,
        icp: block.icp.as_deref(),
        request_id: &request_id,
        time: &rfc3339(crate::decision::now_unix()),
        table_time: &table_time,
    });
    let status = StatusCode::from_u16(shared.page.status()).unwrap_or(StatusCode::FORBIDDEN);
    let mut h = hyper::HeaderMap::new();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(CONNECTION, HeaderValue::from_static("close"));
    h.insert(
        REASON_HEADER,
        HeaderValue::from_static(block.reason.as_str()),
    );
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert("x-icpgate-request-id", v);
    }
    (status, h, Bytes::from(html))
}

fn response(status: StatusCode, headers: hyper::HeaderMap, body: Bytes) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}

fn server_builder(shared: &Shared) -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.preserve_header_case(true)
        .half_close(true)
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(shared.limits.header_timeout_ms))
        .max_buf_size(shared.limits.max_sniff_bytes.max(8192));
    b
}

/// Serve a client connection: decide, forward or block, per request.
pub async fn serve<I>(shared: Arc<Shared>, info: ConnInfo, io: I)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let info = Arc::new(info);
    let svc_shared = shared.clone();
    let svc_info = info.clone();
    let svc = hyper::service::service_fn(move |req| {
        let shared = svc_shared.clone();
        let info = svc_info.clone();
        async move { Ok::<_, Infallible>(handle(&shared, &info, req).await) }
    });
    let conn = server_builder(&shared)
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let mut shutdown = shared.shutdown.clone();
    let stopping = async move {
        let _ = shutdown.wait_for(|s| *s).await;
    };
    let drained = tokio::select! {
        _ = conn.as_mut() => true,
        _ = stopping => false,
    };
    if !drained {
        // Finish the request in flight, then close (idle keep-alive closes now).
        conn.as_mut().graceful_shutdown();
        let _ = conn.await;
    }
}

async fn handle(shared: &Shared, info: &ConnInfo, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    // Framing: hyper parsed the request; with both Transfer-Encoding and
    // Content-Length it has already dropped Content-Length (RFC 9112 §6.3),
    // so the framing we decide on is the framing the upstream receives
    // (tests/proxy_http.rs: conflicting_framing_cannot_smuggle).
    // Decide while borrowing the request (no allocation on the allow path;
    // the snapshot guard is dropped before any `.await`).
    let answered: Option<Response<Body>> = {
        let http10 = req.version() == Version::HTTP_10;
        let authority = req.uri().authority().map(|a| a.as_str());
        let bad_scheme = req
            .uri()
            .scheme_str()
            .is_some_and(|s| !s.eq_ignore_ascii_case("http") && !s.eq_ignore_ascii_case("https"));
        let mut hosts = req.headers().get_all(HOST).iter().map(|v| v.as_bytes());
        match request_host_parts(authority, http10, &mut hosts) {
            _ if bad_scheme => Some(blocked_early(shared, info, started, Reason::BadHost)),
            Err(reason) => Some(blocked_early(shared, info, started, reason)),
            Ok(host) => {
                let snap = shared.table.load();
                let now = crate::decision::now_unix();
                let d: Decision<'_> = match &host {
                    Some(h) => shared.policy.decide_host(&snap, h, Some(info.dst), now),
                    None => shared.policy.decide_no_name(Some(info.dst)),
                };
                if d.action == Action::Block {
                    let name = host.as_ref().map(|h| h.to_string()).unwrap_or_default();
                    record(shared, Proto::Http, &d, &name, info, started);
                    let block = OwnedBlock::from(&d);
                    drop(snap);
                    let raw_host = req
                        .headers()
                        .get(HOST)
                        .and_then(|v| v.to_str().ok())
                        .or(authority)
                        .unwrap_or("");
                    let registrable = host.as_ref().map(registrable_of).unwrap_or_default();
                    let (status, headers, body) =
                        block_parts(shared, raw_host, &registrable, &block);
                    Some(response(status, headers, body))
                } else {
                    record(shared, Proto::Http, &d, "", info, started);
                    None
                }
            }
        }
    };
    if let Some(r) = answered {
        return r;
    }
    forward(shared, info, req).await
}

fn blocked_early(
    shared: &Shared,
    info: &ConnInfo,
    started: Instant,
    reason: Reason,
) -> Response<Body> {
    let d = Decision {
        action: Action::Block,
        reason,
        matched: None,
    };
    record(shared, Proto::Http, &d, "", info, started);
    simple(StatusCode::BAD_REQUEST, Some(reason))
}

/// An `Upgrade: h2c` would turn the connection into HTTP/2, whose streams
/// can name any authority without another decision. The upgrade offer is
/// removed (the server answers in HTTP/1.1, as RFC 9113 §3.1 clients must
/// accept) — the one header rewrite icpgate does on its own.
fn strip_h2c_upgrade(headers: &mut hyper::HeaderMap) {
    use hyper::header::UPGRADE;
    let h2c = headers.get_all(UPGRADE).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case("h2c")))
            .unwrap_or(true)
    });
    if !h2c {
        return;
    }
    headers.remove(UPGRADE);
    headers.remove("http2-settings");
    let kept: Vec<String> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| {
            !t.eq_ignore_ascii_case("upgrade")
                && !t.eq_ignore_ascii_case("http2-settings")
                && !t.is_empty()
        })
        .map(str::to_owned)
        .collect();
    headers.remove(CONNECTION);
    if !kept.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&kept.join(", ")) {
            headers.insert(CONNECTION, v);
        }
    }
}

/// Remove hop-by-hop headers (RFC 9110 §7.6.1): `Connection`, every header
/// it names, `Keep-Alive` and `Proxy-Connection`. They describe one hop — the
/// client's `Connection: close` must not close the pooled upstream
/// connection. An upgrade being forwarded keeps `Connection: upgrade` and
/// `Upgrade`. Framing headers are hyper's business and are left alone.
fn strip_hop_by_hop(headers: &mut hyper::HeaderMap, upgrading: bool) {
    use hyper::header::UPGRADE;
    if !headers.contains_key(CONNECTION)
        && !headers.contains_key("keep-alive")
        && !headers.contains_key("proxy-connection")
    {
        return;
    }
    let named: Vec<hyper::header::HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| hyper::header::HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    headers.remove(CONNECTION);
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
    for name in named {
        if upgrading && name == UPGRADE {
            continue;
        }
        if name == hyper::header::TRANSFER_ENCODING || name == hyper::header::CONTENT_LENGTH {
            continue;
        }
        headers.remove(&name);
    }
    if upgrading && headers.contains_key(UPGRADE) {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

async fn forward(shared: &Shared, info: &ConnInfo, mut req: Request<Incoming>) -> Response<Body> {
    strip_h2c_upgrade(req.headers_mut());
    let upgrading = req.headers().contains_key(hyper::header::UPGRADE);
    strip_hop_by_hop(req.headers_mut(), upgrading);
    let pq = req
        .uri()
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    let uri = format!(
        "http://{}{}",
        info.upstream.addr,
        if pq.starts_with('/') {
            pq.as_str()
        } else {
            "/"
        }
    );
    match uri.parse::<Uri>() {
        Ok(u) => *req.uri_mut() = u,
        Err(_) => return simple(StatusCode::BAD_REQUEST, None),
    }
    let upgrade = req.headers().contains_key(hyper::header::UPGRADE);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    match info.listener.client.request(req).await {
        Ok(mut resp) => {
            if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                if let Some(client_up) = client_upgrade {
                    let upstream_up = hyper::upgrade::on(&mut resp);
                    let buf = shared.limits.copy_buffer_bytes;
                    let idle = Duration::from_secs(shared.limits.idle_timeout_secs);
                    tokio::spawn(async move {
                        if let (Ok(c), Ok(u)) = tokio::join!(client_up, upstream_up) {
                            super::pipe::pipe(TokioIo::new(c), TokioIo::new(u), buf, idle).await;
                        }
                    });
                }
            }
            let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
            strip_hop_by_hop(resp.headers_mut(), switching);
            resp.map(|b| b.boxed())
        }
        Err(e) => {
            if e.is_connect() {
                shared
                    .metrics
                    .upstream_errors
                    .with_label_values(&[&info.listener.label])
                    .inc();
            }
            tracing::debug!(upstream = %info.upstream.addr, error = %e, "upstream request failed");
            simple(StatusCode::BAD_GATEWAY, None)
        }
    }
}

/// After a TLS block handshake (`tls = "page"`): answer every request with
/// the block page (the connection closes after the first).
pub async fn serve_block_only<I>(shared: &Shared, io: I, name: &str, block: OwnedBlock)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let registrable = match crate::hostname::canonicalize_bare(name) {
        Ok(h) => registrable_of(&h),
        Err(_) => name.to_owned(),
    };
    let (status, headers, body) = block_parts(shared, name, &registrable, &block);
    let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
        let r = response(status, headers.clone(), body.clone());
        async move { Ok::<_, Infallible>(r) }
    });
    let _ = server_builder(shared)
        .serve_connection(TokioIo::new(io), svc)
        .await;
}
