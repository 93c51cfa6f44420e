#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A QUIC echo server and client (quinn), for the network-namespace test of
//! transparent QUIC (tests/transparent.sh):
//!
//!   quic_echo server ADDR CERT_OUT     # serve; writes its certificate (DER)
//!                                      # to CERT_OUT; prints "peer <addr>"
//!                                      # per connection
//!   quic_echo client ADDR NAME CERT BYTES
//!                                      # echo BYTES bytes as NAME; prints
//!                                      # "ok <n>" or "error <why>"
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("server") => server(args[1].parse().unwrap(), &args[2]).await,
        Some("client") => {
            let r = client(
                args[1].parse().unwrap(),
                &args[2],
                &args[3],
                args[4].parse().unwrap(),
            )
            .await;
            match r {
                Ok(n) => println!("ok {n}"),
                Err(e) => println!("error {e}"),
            }
        }
        _ => {
            eprintln!("usage: quic_echo server ADDR CERT_OUT | client ADDR NAME CERT BYTES");
            std::process::exit(2);
        }
    }
}

async fn server(addr: SocketAddr, cert_out: &str) {
    let c =
        rcgen::generate_simple_self_signed(vec!["www.example.com.cn".into(), "unknown.cn".into()])
            .unwrap();
    std::fs::write(cert_out, c.cert.der()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(c.key_pair.serialize_der().into());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![c.cert.der().clone()], key)
        .unwrap();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let qc = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let ep = quinn::Endpoint::server(quinn::ServerConfig::with_crypto(Arc::new(qc)), addr).unwrap();
    while let Some(inc) = ep.accept().await {
        tokio::spawn(async move {
            let Ok(conn) = inc.await else { return };
            println!("peer {}", conn.remote_address().ip());
            while let Ok((mut s, mut r)) = conn.accept_bi().await {
                tokio::spawn(async move {
                    if let Ok(data) = r.read_to_end(1 << 28).await {
                        let _ = s.write_all(&data).await;
                        let _ = s.finish();
                    }
                });
            }
        });
    }
}

async fn client(addr: SocketAddr, name: &str, cert: &str, bytes: usize) -> Result<usize, String> {
    let mut roots = rustls::RootCertStore::empty();
    let der = std::fs::read(cert).map_err(|e| e.to_string())?;
    roots.add(der.into()).map_err(|e| e.to_string())?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let qc = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(qc));
    let mut tr = quinn::TransportConfig::default();
    tr.max_idle_timeout(Some(Duration::from_secs(5).try_into().map_err(|_| "idle")?));
    cfg.transport_config(Arc::new(tr));
    let local: SocketAddr = if addr.is_ipv6() {
        "[::]:0".parse().map_err(|_| "addr")?
    } else {
        "0.0.0.0:0".parse().map_err(|_| "addr")?
    };
    let mut ep = quinn::Endpoint::client(local).map_err(|e| e.to_string())?;
    ep.set_default_client_config(cfg);
    let conn = ep
        .connect(addr, name)
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    let (mut s, mut r) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let payload = vec![b'q'; bytes];
    s.write_all(&payload).await.map_err(|e| e.to_string())?;
    s.finish().map_err(|e| e.to_string())?;
    let got = r.read_to_end(1 << 28).await.map_err(|e| e.to_string())?;
    conn.close(0u32.into(), b"done");
    ep.wait_idle().await;
    if got != payload {
        return Err(format!("echo differs ({} bytes back)", got.len()));
    }
    Ok(got.len())
}
