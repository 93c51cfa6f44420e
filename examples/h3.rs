//! An HTTP/3 origin and client (quinn + h3), for the README's QUIC demo:
//! a real HTTP/3 exchange through icpgate's UDP listener.
//!
//!   h3 server ADDR CERT_DER_OUT
//!       serve HTTP/3 on ADDR with a self-signed certificate (for
//!       www.example.com.cn, unknown.cn, localhost), written as DER to
//!       CERT_DER_OUT for the client to trust; every request gets 200 and a
//!       one-line body naming the :authority it was served for
//!   h3 client ADDR HOST CERT_DER [PATH]
//!       connect to ADDR with SNI = HOST, trusting only CERT_DER, send
//!       GET https://HOST/PATH; print the status and the body (exit 0), or
//!       the QUIC / HTTP/3 error (exit 1) — all within 5 s
//!
//! Not for load: one connection, one request.
use std::error::Error;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use hyper::http::{Request, Response, StatusCode};

type BoxError = Box<dyn Error + Send + Sync>;

/// The client's whole budget: handshake, request, response.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// HTTP/3's "no error" application close code (RFC 9114 §8.1).
const H3_NO_ERROR: quinn::VarInt = quinn::VarInt::from_u32(0x100);

const USAGE: &str = "usage: h3 server ADDR CERT_DER_OUT | client ADDR HOST CERT_DER [PATH]";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["server", addr, cert_out] => match server(addr, cert_out).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        ["client", addr, host, cert, rest @ ..] if rest.len() <= 1 => {
            let path = rest.first().copied().unwrap_or("/");
            match tokio::time::timeout(CLIENT_TIMEOUT, client(addr, host, cert, path)).await {
                Ok(Ok(())) => ExitCode::SUCCESS,
                Ok(Err(e)) => {
                    println!("error: {e}");
                    ExitCode::FAILURE
                }
                Err(_) => {
                    println!("error: no answer within {} s", CLIENT_TIMEOUT.as_secs());
                    ExitCode::FAILURE
                }
            }
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

async fn server(addr: &str, cert_out: &str) -> Result<(), BoxError> {
    let addr: SocketAddr = addr.parse()?;
    let c = rcgen::generate_simple_self_signed(vec![
        "www.example.com.cn".into(),
        "unknown.cn".into(),
        "localhost".into(),
    ])?;
    std::fs::write(cert_out, c.cert.der())?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(c.key_pair.serialize_der().into());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![c.cert.der().clone()], key)?;
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let qc = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let ep = quinn::Endpoint::server(quinn::ServerConfig::with_crypto(Arc::new(qc)), addr)?;
    println!("h3 origin on udp {addr}, certificate in {cert_out}");
    while let Some(inc) = ep.accept().await {
        tokio::spawn(async move {
            if let Err(e) = serve_conn(inc).await {
                println!("connection: {e}");
            }
        });
    }
    Ok(())
}

async fn serve_conn(inc: quinn::Incoming) -> Result<(), BoxError> {
    let conn = inc.await?;
    let peer = conn.remote_address();
    let mut h3c = h3::server::Connection::<_, Bytes>::new(h3_quinn::Connection::new(conn)).await?;
    loop {
        match h3c.accept().await {
            Ok(Some(resolver)) => {
                tokio::spawn(async move {
                    if let Err(e) = serve_request(resolver, peer).await {
                        println!("request from {peer}: {e}");
                    }
                });
            }
            Ok(None) => return Ok(()),
            // The client closing with H3_NO_ERROR is the normal end.
            Err(e) if e.is_h3_no_error() => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

async fn serve_request(
    resolver: h3::server::RequestResolver<h3_quinn::Connection, Bytes>,
    peer: SocketAddr,
) -> Result<(), BoxError> {
    let (req, mut stream) = resolver.resolve_request().await?;
    let authority = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_else(|| "(none)".into());
    println!("{peer} {} {}", req.method(), req.uri());
    let body = format!(
        "h3 origin: {} {} for {authority}\n",
        req.method(),
        req.uri().path()
    );
    let resp = Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/plain; charset=utf-8")
        .header("content-length", body.len())
        .body(())?;
    stream.send_response(resp).await?;
    stream.send_data(Bytes::from(body)).await?;
    stream.finish().await?;
    Ok(())
}

async fn client(addr: &str, host: &str, cert: &str, path: &str) -> Result<(), BoxError> {
    let addr: SocketAddr = addr.parse()?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(std::fs::read(cert)?.into())?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let qc = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(qc));
    let mut tr = quinn::TransportConfig::default();
    tr.max_idle_timeout(Some(CLIENT_TIMEOUT.try_into()?));
    cfg.transport_config(Arc::new(tr));
    let local: SocketAddr = if addr.is_ipv6() {
        "[::]:0".parse()?
    } else {
        "0.0.0.0:0".parse()?
    };
    let mut ep = quinn::Endpoint::client(local)?;
    ep.set_default_client_config(cfg);

    let conn = ep
        .connect(addr, host)?
        .await
        .map_err(|e| format!("QUIC handshake with {addr} as {host}: {}", describe(&e)))?;
    let quic = conn.clone();
    let (mut driver, mut send) = h3::client::new(h3_quinn::Connection::new(conn)).await?;
    // The connection's control streams make progress only while polled.
    let drive = tokio::spawn(async move { driver.wait_idle().await });

    let path = path.trim_start_matches('/');
    let req = Request::get(format!("https://{host}/{path}")).body(())?;
    let mut stream = send.send_request(req).await?;
    stream.finish().await?;
    let resp = stream.recv_response().await?;
    println!("{:?} {}", resp.version(), resp.status());
    let mut body = Vec::new();
    while let Some(mut chunk) = stream.recv_data().await? {
        while chunk.has_remaining() {
            let c = chunk.chunk();
            body.extend_from_slice(c);
            let n = c.len();
            chunk.advance(n);
        }
    }
    print!("{}", String::from_utf8_lossy(&body));

    drop(send);
    quic.close(H3_NO_ERROR, b"");
    drive.abort();
    ep.wait_idle().await;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("status {}", resp.status()).into())
    }
}

/// A QUIC connection error, with a peer's CONNECTION_CLOSE spelled out: a
/// CRYPTO_ERROR (0x100 + TLS alert) is how icpgate refuses a blocked name
/// (alert 112, unrecognized_name).
fn describe(e: &quinn::ConnectionError) -> String {
    let quinn::ConnectionError::ConnectionClosed(close) = e else {
        return e.to_string();
    };
    let code = u64::from(close.error_code);
    let mut s = format!("peer sent CONNECTION_CLOSE, error code {code:#x}");
    if let Some(alert) = code.checked_sub(0x100).filter(|a| *a <= 0xff) {
        s += &format!(" = CRYPTO_ERROR, TLS alert {alert}");
        if let Some(name) = alert_name(alert) {
            s += &format!(" ({name})");
        }
    } else {
        s += &format!(" ({})", close.error_code);
    }
    if !close.reason.is_empty() {
        s += &format!(", reason {:?}", String::from_utf8_lossy(&close.reason));
    }
    s
}

fn alert_name(alert: u64) -> Option<&'static str> {
    Some(match alert {
        40 => "handshake_failure",
        42 => "bad_certificate",
        46 => "certificate_unknown",
        48 => "unknown_ca",
        70 => "protocol_version",
        80 => "internal_error",
        112 => "unrecognized_name",
        120 => "no_application_protocol",
        _ => return None,
    })
}
