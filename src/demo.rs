//! The built-in demo origin (only `config/demo.toml` enables it): an HTTP
//! server and a TLS server (self-signed) that say which host they served,
//! so the README's curl lines work on a fresh machine with nothing else.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

async fn answer(req: Request<Incoming>, tls: bool) -> Result<Response<Full<Bytes>>, Infallible> {
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let n = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    Ok(Response::new(Full::new(Bytes::from(format!(
        "icpgate demo origin ({}): {method} {host}{path} ({n} body bytes) — allowed through\n",
        if tls { "https" } else { "http" }
    )))))
}

async fn serve_conn<I: AsyncRead + AsyncWrite + Unpin + Send + 'static>(io: I, tls: bool) {
    let svc = hyper::service::service_fn(move |req| answer(req, tls));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades()
        .await;
}

/// Self-signed certificate for the demo names and the TLS block page.
pub fn self_signed(names: &[&str]) -> Result<rustls::ServerConfig, String> {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let ck = rcgen::generate_simple_self_signed(names).map_err(|e| e.to_string())?;
    let cert = ck.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(|e| e.to_string())
}

/// Start the demo origin: HTTP on `http`, TLS on `https`.
pub async fn start(http: SocketAddr, https: Option<SocketAddr>) -> Result<(), String> {
    let l = TcpListener::bind(http)
        .await
        .map_err(|e| format!("demo origin {http}: {e}"))?;
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(serve_conn(s, false));
        }
    });
    if let Some(https) = https {
        let cfg = self_signed(&["*.example.com.cn", "example.com.cn", "localhost"])?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let l = TcpListener::bind(https)
            .await
            .map_err(|e| format!("demo origin {https}: {e}"))?;
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(t) = acceptor.accept(s).await {
                        serve_conn(t, true).await;
                    }
                });
            }
        });
    }
    Ok(())
}
