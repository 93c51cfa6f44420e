#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Load for the TLS passthrough rows of `benches/compare/run.sh`, without
//! TLS crypto on the load generator's core: what a passthrough proxy does
//! is read the ClientHello, decide, connect upstream and then move opaque
//! bytes, so the client sends a real-sized ClientHello (1.9 KB, like a
//! post-quantum Chromium hello) carrying the SNI and then opaque data, and
//! the upstream answers with opaque bytes. The proxy cannot tell.
//!
//!   tcpload serve ADDR REPLY_BYTES
//!       upstream: per connection read one TLS record (the hello), write
//!       REPLY_BYTES, then read and drop until EOF
//!   tcpload conns ADDR SNI CONNS SECS REPLY_BYTES
//!       CONNS loops of: connect, send the hello, read REPLY_BYTES, close;
//!       prints `conns=N per_s=R p50_ms=A p99_ms=B errors=E`
//!   tcpload bulk ADDR SNI SECS REPLY_BYTES
//!       one connection: hello, read the reply, then write 256 KiB blocks
//!       for SECS; prints `bytes=N mb_per_s=R`
//!   tcpload once ADDR SNI REPLY_BYTES
//!       one exchange; prints `ok` or `closed` (exit 0 either way)
//!   tcpload halfclose ADDR SNI REPLY_BYTES
//!       one exchange, then the marker below and the client's EOF
//!       (`shutdown(SHUT_WR)`); the upstream answers a marked connection's
//!       EOF with a last record before it closes. Prints `passed` if that
//!       record comes back (the proxy passed the half-close on and kept the
//!       other direction open), else `failed`
//!
//! `serve` looks for the marker only in the first bytes after its reply
//! (until they differ from it), so the load rows (which never send it)
//! cost the same.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Sent by `halfclose` after the reply: "answer my EOF".
const MARKER: &[u8] = b"icpgate-compare half-close?";
/// The upstream's answer to a marked connection's EOF.
const LAST: &[u8] = b"icpgate-compare: the server's last words";

fn hello(sni: &str) -> Vec<u8> {
    let mut exts = icpgate::sniff::tls::sni_extension(&[sni]);
    // A padding extension (RFC 7685) brings it to the size of a modern
    // hello with an X25519MLKEM768 key share.
    let pad = 1900usize.saturating_sub(exts.len() + 60);
    exts.extend([0x00, 0x15]);
    exts.extend((pad as u16).to_be_bytes());
    exts.extend(vec![0u8; pad]);
    icpgate::sniff::tls::synthetic_hello(&exts)
}

async fn serve(addr: SocketAddr, reply: usize) {
    let l = TcpListener::bind(addr).await.expect("bind");
    let reply = Arc::new(vec![0x17u8; reply]);
    loop {
        let Ok((mut s, _)) = l.accept().await else {
            continue;
        };
        let _ = s.set_nodelay(true);
        let reply = reply.clone();
        tokio::spawn(async move {
            let mut hdr = [0u8; 5];
            if s.read_exact(&mut hdr).await.is_err() {
                return;
            }
            let len = usize::from(u16::from_be_bytes([hdr[3], hdr[4]]));
            let mut body = vec![0u8; len];
            if s.read_exact(&mut body).await.is_err() || s.write_all(&reply).await.is_err() {
                return;
            }
            let mut sink = vec![0u8; 256 * 1024];
            // The first bytes after the reply, while they may be the marker
            // (a proxy may pass it on in pieces).
            let mut head: Option<Vec<u8>> = Some(Vec::new());
            let mut marked = false;
            while let Ok(n) = s.read(&mut sink).await {
                if let Some(h) = head.as_mut() {
                    let take = (MARKER.len() - h.len()).min(n);
                    h.extend_from_slice(&sink[..take]);
                    if !MARKER.starts_with(h) || n == 0 {
                        head = None;
                    } else if h.len() == MARKER.len() {
                        marked = true;
                        head = None;
                    }
                }
                if n == 0 {
                    if marked {
                        let _ = s.write_all(LAST).await;
                    }
                    break;
                }
            }
        });
    }
}

async fn exchange(addr: SocketAddr, hello: &[u8], reply: usize) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    s.write_all(hello).await?;
    let mut got = vec![0u8; reply];
    s.read_exact(&mut got).await?;
    Ok(s)
}

async fn conns(addr: SocketAddr, sni: &str, n: usize, secs: f64, reply: usize) {
    let hello = Arc::new(hello(sni));
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let lat = Arc::new(Mutex::new(Vec::<u32>::new()));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (hello, stop, errors, lat) = (hello.clone(), stop.clone(), errors.clone(), lat.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match exchange(addr, &hello, reply).await {
                    Ok(s) => {
                        drop(s);
                        mine.push(t.elapsed().as_micros() as u32);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
            lat.lock().expect("lock").extend(mine);
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let el = start.elapsed().as_secs_f64();
    let mut l = std::mem::take(&mut *lat.lock().expect("lock"));
    l.sort_unstable();
    let pct = |p: f64| {
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
            .map_or(0.0, |v| f64::from(*v) / 1000.0)
    };
    println!(
        "conns={} per_s={:.0} p50_ms={:.3} p99_ms={:.3} errors={}",
        l.len(),
        l.len() as f64 / el,
        pct(0.5),
        pct(0.99),
        errors.load(Ordering::Relaxed)
    );
}

async fn bulk(addr: SocketAddr, sni: &str, secs: f64, reply: usize) {
    let mut s = exchange(addr, &hello(sni), reply).await.expect("exchange");
    let block = vec![0x17u8; 256 * 1024];
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        s.write_all(&block).await.expect("write");
        sent += block.len() as u64;
    }
    let el = start.elapsed().as_secs_f64();
    println!("bytes={sent} mb_per_s={:.1}", sent as f64 / el / 1e6);
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let arg = |i: usize| a.get(i).cloned().unwrap_or_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let addr: SocketAddr = arg(2).parse().expect("ADDR");
    rt.block_on(async {
        match arg(1).as_str() {
            "serve" => serve(addr, arg(3).parse().expect("REPLY_BYTES")).await,
            "conns" => {
                conns(
                    addr,
                    &arg(3),
                    arg(4).parse().expect("CONNS"),
                    arg(5).parse().expect("SECS"),
                    arg(6).parse().expect("REPLY_BYTES"),
                )
                .await
            }
            "bulk" => {
                bulk(
                    addr,
                    &arg(3),
                    arg(4).parse().expect("SECS"),
                    arg(5).parse().expect("REPLY_BYTES"),
                )
                .await
            }
            "once" => {
                let r = tokio::time::timeout(
                    Duration::from_secs(5),
                    exchange(addr, &hello(&arg(3)), arg(4).parse().expect("REPLY_BYTES")),
                )
                .await;
                println!(
                    "{}",
                    if matches!(r, Ok(Ok(_))) {
                        "ok"
                    } else {
                        "closed"
                    }
                );
            }
            "halfclose" => {
                let r = tokio::time::timeout(Duration::from_secs(5), async {
                    let mut s =
                        exchange(addr, &hello(&arg(3)), arg(4).parse().expect("REPLY_BYTES"))
                            .await?;
                    s.write_all(MARKER).await?;
                    s.shutdown().await?;
                    let mut rest = Vec::new();
                    s.read_to_end(&mut rest).await?;
                    Ok::<_, std::io::Error>(rest)
                })
                .await;
                println!(
                    "{}",
                    if matches!(&r, Ok(Ok(rest)) if rest.as_slice() == LAST) {
                        "passed"
                    } else {
                        "failed"
                    }
                );
            }
            _ => eprintln!("usage: tcpload serve|conns|bulk|once|halfclose ... (see the source)"),
        }
    });
}
