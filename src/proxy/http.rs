//! The block page as an HTTP answer (docs/interfaces.md, block page), and the hyper server that
//! answers every request with it after a TLS block handshake
//! (`tls = "page"`). The HTTP data path itself is [`super::h1`].

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use super::ctx::{registrable_of, OwnedBlock, Shared};
use crate::block::{self, PageInput};
use crate::decision::{rfc3339, Reason};

pub type Body = BoxBody<Bytes, hyper::Error>;
pub const REASON_HEADER: &str = "x-icpgate-reason";

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// A rendered block answer: its status and per-request headers.
pub struct BlockAnswer {
    pub status: StatusCode,
    pub reason: Reason,
    pub request_id: block::RequestId,
}

impl BlockAnswer {
    /// The answer's headers (docs/interfaces.md, block page), one list for both HTTP paths.
    pub fn headers(&self) -> [(&'static str, &str); 5] {
        [
            ("content-type", "text/html; charset=utf-8"),
            ("cache-control", "no-store"),
            ("connection", "close"),
            (REASON_HEADER, self.reason.as_str()),
            ("x-icpgate-request-id", self.request_id.as_str()),
        ]
    }
}

/// An RFC 3339 time, formatted again only when its second changes.
struct Stamp {
    secs: i64,
    text: String,
}

impl Stamp {
    fn get(&mut self, secs: i64) -> &str {
        if self.secs != secs || self.text.is_empty() {
            self.secs = secs;
            self.text = rfc3339(secs);
        }
        &self.text
    }
}

thread_local! {
    /// Per thread: the page's "now" and "table loaded at" texts.
    static STAMPS: std::cell::RefCell<[Stamp; 2]> = const {
        std::cell::RefCell::new([
            Stamp { secs: 0, text: String::new() },
            Stamp { secs: 0, text: String::new() },
        ])
    };
}

/// The block page (docs/interfaces.md, block page) for one request: `f` gets the answer's status
/// and headers and the filled page (whose length is known before it is
/// written).
pub fn render_block<R>(
    shared: &Shared,
    host: &str,
    registrable: &str,
    block: &OwnedBlock,
    f: impl FnOnce(&BlockAnswer, &block::Filled<'_>) -> R,
) -> R {
    let request_id = block::request_id();
    let answer = BlockAnswer {
        status: StatusCode::from_u16(shared.page.status()).unwrap_or(StatusCode::FORBIDDEN),
        reason: block.reason,
        request_id,
    };
    STAMPS.with_borrow_mut(|[now, table]| {
        let time = now.get(crate::decision::now_unix());
        let table_time = table.get(block.table_loaded);
        let page = shared.page.fill(&PageInput {
            host,
            registrable,
            reason: block.reason,
            icp: block.icp.as_deref(),
            request_id: answer.request_id.as_str(),
            time,
            table_time,
        });
        f(&answer, &page)
    })
}

/// The block page as hyper parts.
pub fn block_parts(
    shared: &Shared,
    host: &str,
    registrable: &str,
    block: &OwnedBlock,
) -> (StatusCode, hyper::HeaderMap, Bytes) {
    render_block(shared, host, registrable, block, |a, page| {
        let mut body = Vec::with_capacity(page.len());
        page.write_to(&mut body);
        let mut h = hyper::HeaderMap::new();
        for (name, value) in a.headers() {
            if let Ok(v) = HeaderValue::from_str(value) {
                h.insert(name, v);
            }
        }
        (a.status, h, Bytes::from(body))
    })
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
        .header_read_timeout(shared.limits.header_timeout())
        .max_buf_size(shared.limits.max_sniff_bytes.max(8192));
    b
}

/// After a TLS block handshake (`tls = "page"`): answer every request with
/// the block page (the connection closes after the first). `registrable`:
/// the SNI's registrable domain when the decision found it (else found
/// here).
pub async fn serve_block_only<I>(
    shared: &Shared,
    io: I,
    name: &str,
    registrable: Option<String>,
    block: OwnedBlock,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let registrable =
        registrable.unwrap_or_else(|| match crate::hostname::canonicalize_bare(name) {
            Ok(h) => registrable_of(&h).into_owned(),
            Err(_) => name.to_owned(),
        });
    let (status, headers, body) = block_parts(shared, name, &registrable, &block);
    let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
        let r = response(status, headers.clone(), body.clone());
        async move { Ok::<_, Infallible>(r) }
    });
    let _ = server_builder(shared)
        .serve_connection(TokioIo::new(io), svc)
        .await;
}
