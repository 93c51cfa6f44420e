//! Fetching the table from an HTTP(S) URL with `If-None-Match`: one
//! request per poll on a fresh connection (hyper + rustls with the Mozilla
//! roots), bounded in size and time.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{ETAG, HOST, IF_NONE_MATCH};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub enum Fetched {
    NotModified,
    Body { bytes: Bytes, etag: Option<String> },
}

const TIMEOUT: Duration = Duration::from_secs(120);

pub async fn get(url: &str, etag: Option<&str>, max_bytes: u64) -> Result<Fetched, String> {
    tokio::time::timeout(TIMEOUT, get_inner(url, etag, max_bytes))
        .await
        .map_err(|_| format!("fetching {url}: timed out after {}s", TIMEOUT.as_secs()))?
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

async fn get_inner(url: &str, etag: Option<&str>, max_bytes: u64) -> Result<Fetched, String> {
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
            let body = Limited::new(resp.into_body(), max_bytes as usize)
                .collect()
                .await
                .map_err(|e| format!("fetching {url}: body: {e}"))?
                .to_bytes();
            Ok(Fetched::Body { bytes: body, etag })
        }
        s => Err(format!("fetching {url}: HTTP {s}")),
    }
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
