//! Fetching the table from an HTTP(S) URL with `If-None-Match`: one
//! request per poll on a fresh connection (hyper + rustls with the Mozilla
//! roots), bounded in size and time. The body is streamed to a temporary
//! file, never held in memory: the loader then reads it like a file source,
//! with the same limits.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{ETAG, HOST, IF_NONE_MATCH};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub enum Fetched {
    NotModified,
    /// The body, in a temporary file removed when this is dropped.
    Body {
        file: tempfile::NamedTempFile,
        etag: Option<String>,
    },
}

/// Bounds of one fetch (`[table] max_bytes`, `fetch_timeout_secs`,
/// `fetch_min_bytes_per_sec`).
#[derive(Debug, Clone, Copy)]
pub struct FetchLimits {
    pub max_bytes: u64,
    pub timeout: Duration,
    /// Fewer bytes than this per second over a window of [`SPEED_WINDOW`]
    /// give the fetch up (a trickling source would hold a reload for the
    /// whole timeout).
    pub min_bytes_per_sec: u64,
}

/// The window the minimum speed is measured over.
pub const SPEED_WINDOW: Duration = Duration::from_secs(30);

pub async fn get(url: &str, etag: Option<&str>, limits: FetchLimits) -> Result<Fetched, String> {
    tokio::time::timeout(limits.timeout, get_inner(url, etag, limits))
        .await
        .map_err(|_| {
            format!(
                "fetching {url}: timed out after {}s ([table] fetch_timeout_secs)",
                limits.timeout.as_secs()
            )
        })?
}

fn tls_config() -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
        .unwrap_or_else(|_| {
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        }),
    )
}

async fn get_inner(url: &str, etag: Option<&str>, limits: FetchLimits) -> Result<Fetched, String> {
    let uri: Uri = url.parse().map_err(|e| format!("table url {url:?}: {e}"))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(format!("table url {url:?}: scheme must be http or https")),
    };
    let host = uri
        .host()
        .ok_or_else(|| format!("table url {url:?}: no host"))?
        .to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let authority = uri
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_else(|| host.clone());
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let tcp = TcpStream::connect((host.trim_matches(|c| c == '[' || c == ']'), port))
        .await
        .map_err(|e| format!("fetching {url}: connect: {e}"))?;
    let mut req = Request::get(path).header(HOST, authority);
    if let Some(e) = etag {
        req = req.header(IF_NONE_MATCH, e);
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("fetching {url}: {e}"))?;
    let resp = if https {
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| format!("fetching {url}: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(tls_config())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("fetching {url}: TLS: {e}"))?;
        send(TokioIo::new(tls), req).await
    } else {
        send(TokioIo::new(tcp), req).await
    }
    .map_err(|e| format!("fetching {url}: {e}"))?;
    match resp.status() {
        StatusCode::NOT_MODIFIED => Ok(Fetched::NotModified),
        StatusCode::OK => {
            let etag = resp
                .headers()
                .get(ETAG)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let file = stream_to_file(resp.into_body(), limits)
                .await
                .map_err(|e| format!("fetching {url}: body: {e}"))?;
            Ok(Fetched::Body { file, etag })
        }
        s => Err(format!("fetching {url}: HTTP {s}")),
    }
}

/// Write the body to a temporary file, within the size limit and the
/// minimum speed.
async fn stream_to_file(
    mut body: hyper::body::Incoming,
    limits: FetchLimits,
) -> Result<tempfile::NamedTempFile, String> {
    use tokio::io::AsyncWriteExt;
    let tmp = tempfile::Builder::new()
        .prefix("icpgate-table-")
        .tempfile()
        .map_err(|e| format!("temporary file: {e}"))?;
    let std_file = tmp
        .as_file()
        .try_clone()
        .map_err(|e| format!("temporary file: {e}"))?;
    let mut out = tokio::io::BufWriter::new(tokio::fs::File::from_std(std_file));
    let mut total = 0u64;
    let mut window_start = tokio::time::Instant::now();
    let mut window_bytes = 0u64;
    let window_need = limits
        .min_bytes_per_sec
        .saturating_mul(SPEED_WINDOW.as_secs());
    loop {
        let window_end = window_start + SPEED_WINDOW;
        let too_slow = || {
            format!(
                "slower than {} bytes/s over {}s ([table] fetch_min_bytes_per_sec)",
                limits.min_bytes_per_sec,
                SPEED_WINDOW.as_secs()
            )
        };
        let Ok(frame) = tokio::time::timeout_at(window_end, body.frame()).await else {
            return Err(too_slow());
        };
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| e.to_string())?;
        if let Ok(data) = frame.into_data() {
            total += data.len() as u64;
            if total > limits.max_bytes {
                return Err(format!(
                    "larger than {} bytes ([table] max_bytes)",
                    limits.max_bytes
                ));
            }
            window_bytes += data.len() as u64;
            out.write_all(&data).await.map_err(|e| e.to_string())?;
        }
        let now = tokio::time::Instant::now();
        if now >= window_end {
            if window_bytes < window_need {
                return Err(too_slow());
            }
            (window_start, window_bytes) = (now, 0);
        }
    }
    out.flush().await.map_err(|e| e.to_string())?;
    Ok(tmp)
}

async fn send<I>(
    io: I,
    req: Request<Empty<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender.send_request(req).await.map_err(|e| e.to_string())
}
