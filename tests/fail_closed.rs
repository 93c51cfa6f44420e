#![allow(clippy::unwrap_used, clippy::expect_used)]
//! No fail-open path (docs/data-path.md): every connection to an enforced destination
//! is decided on a name, or refused. Real binary, real sockets, raw writers.
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

fn proxy() -> Proxy {
    Proxy::start(http_upstream(), "\"127.0.0.0/8\"", "")
}

/// Write `bytes` one at a time (each its own segment: TCP_NODELAY).
fn write_bytewise(s: &mut TcpStream, bytes: &[u8]) {
    s.set_nodelay(true).unwrap();
    for b in bytes {
        if s.write_all(std::slice::from_ref(b)).is_err() {
            return;
        }
    }
}

/// A browser's preconnected socket: silent for 2 s (four times
/// `server_first_wait_ms`), then a request. Decided as on a fresh
/// connection: an unfiled host is blocked, a filed one forwarded.
#[test]
fn a_late_client_is_sniffed_not_piped() {
    let p = proxy();
    let late = |host: &str| {
        let mut s = TcpStream::connect(p.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        std::thread::sleep(Duration::from_secs(2));
        s.write_all(
            format!("GET /late HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
        read_to_end(&mut s)
    };
    let (blocked, allowed) = std::thread::scope(|sc| {
        let b = sc.spawn(|| late("unknown.cn"));
        let a = sc.spawn(|| late("www.example.com.cn"));
        (b.join().unwrap(), a.join().unwrap())
    });
    assert_eq!(status_of(&blocked), 403, "{blocked}");
    assert_eq!(header(&blocked, "x-icpgate-reason"), Some("unfiled"));
    assert!(!blocked.contains("path=/late"));
    assert_eq!(status_of(&allowed), 200, "{allowed}");
    assert!(
        allowed.contains("host=www.example.com.cn path=/late"),
        "{allowed}"
    );
    // A late TLS client too: its SNI is decided.
    let mut s = TcpStream::connect(p.addr).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    s.write_all(&client_hello(&["unknown.cn"])).unwrap();
    assert!(closed_by_peer(&mut s));
    assert_eq!(
        p.metric("icpgate_decisions_total{decision=\"block\",protocol=\"tls\",reason=\"unfiled\"}"),
        1.0
    );
    assert_eq!(p.metric("icpgate_sniff_total{outcome=\"nothing\"}"), 0.0);
}

/// Server-first protocols still work: the banner comes, then the
/// connection is a pipe (SMTP-like text, MySQL-like binary greeting).
#[test]
fn banner_protocols_still_work() {
    for banner in [
        &b"220 mail.example ESMTP\r\n"[..],
        &b"\x4a\x00\x00\x00\x0a8.0.36\x00\x01\x02\x03"[..],
    ] {
        let banner: &'static [u8] = Box::leak(banner.to_vec().into_boxed_slice());
        let rec = Recorder::start(Some(banner));
        let p = Proxy::start(rec.addr, "\"127.0.0.0/8\"", "");
        let mut s = TcpStream::connect(p.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = vec![0u8; banner.len()];
        s.read_exact(&mut got).unwrap();
        assert_eq!(got, banner);
        // What the client says after the banner goes through (echoed).
        s.write_all(b"EHLO client.example\r\n").unwrap();
        let mut echo = vec![0u8; 21];
        s.read_exact(&mut echo).unwrap();
        assert_eq!(&echo, b"EHLO client.example\r\n");
        drop(s);
        assert_eq!(rec.next().unwrap(), b"EHLO client.example\r\n");
        assert_eq!(p.metric("icpgate_sniff_total{outcome=\"nothing\"}"), 1.0);
    }
}

/// Length never decides the protocol: a 20 KB query string is refused with
/// 414 whether it arrives at once or a byte at a time, and nothing reaches
/// the upstream; a 12 KB one (within `max_sniff_bytes`) is decided.
#[test]
fn a_long_link_is_refused_or_decided_never_passed() {
    let rec = Recorder::start(None);
    let p = Proxy::start(rec.addr, "\"127.0.0.0/8\"", "");
    let q = "a".repeat(20_000);
    for host in ["unknown.cn", "www.example.com.cn"] {
        let req = format!("GET /?q={q} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let (s, r) = http_raw(p.addr, &req);
        assert_eq!(s, 414, "{r}");
        assert_eq!(header(&r, "x-icpgate-reason"), Some("too_long"));
        let mut c = TcpStream::connect(p.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write_bytewise(&mut c, &req.as_bytes()[..17_000]);
        let r = read_to_end(&mut c);
        assert_eq!(status_of(&r), 414, "{r}");
    }
    // A head over the limit after a complete request line: 431.
    let req = format!(
        "GET / HTTP/1.1\r\nHost: www.example.com.cn\r\nCookie: {}\r\n\r\n",
        "c".repeat(20_000)
    );
    let (s, _) = http_raw(p.addr, &req);
    assert_eq!(s, 431);
    // A request line of nothing but a 17 KB token: still HTTP, 414.
    let (s, _) = http_raw(p.addr, &"A".repeat(17_000));
    assert_eq!(s, 414);
    assert!(
        rec.quiet(Duration::from_millis(300)),
        "an oversized request reached the upstream"
    );
    assert!(
        p.metric(
            "icpgate_decisions_total{decision=\"block\",protocol=\"http\",reason=\"too_long\"}"
        ) >= 6.0
    );
    // 12 KB: within the limit, decided like any request.
    let q = "b".repeat(12_000);
    let (s, r) = http_raw(
        p.addr,
        &format!("GET /?q={q} HTTP/1.1\r\nHost: unknown.cn\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(s, 403, "{r}");
    assert!(rec.quiet(Duration::from_millis(300)));
    let up = http_upstream();
    let p2 = Proxy::start(up, "\"127.0.0.0/8\"", "");
    let (s, r) = http_raw(
        p2.addr,
        &format!(
            "GET /long?q={q} HTTP/1.1\r\nHost: www.example.com.cn\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(s, 200, "{r}");
    assert!(r.contains("path=/long"));
}

/// Request lines that origins accept but the strict parser does not are
/// HTTP all the same: refused with 400, never passed as "other".
#[test]
fn odd_request_lines_are_refused_not_passed() {
    let rec = Recorder::start(None);
    let p = Proxy::start(rec.addr, "\"127.0.0.0/8\"", "");
    let vectors: &[&[u8]] = &[
        b"GET\x0b/ HTTP/1.1\r\nHost: unknown.cn\r\n\r\n",
        b"GET\x0c/ HTTP/1.1\r\nHost: unknown.cn\r\n\r\n",
        b"GET\t/\tHTTP/1.1\r\nHost: unknown.cn\r\n\r\n",
        b"GET  /  HTTP/1.1\r\nHost: unknown.cn\r\n\r\n",
        b" GET / HTTP/1.1\r\nHost: unknown.cn\r\n\r\n",
        b"\x85GET\xa0/ HTTP/1.1\r\nHost: unknown.cn\r\n\r\n",
        b"GET / HTTP/1.1 \r\nHost: unknown.cn\r\n\r\n",
        b"GET / HTTP/1.2\r\nHost: unknown.cn\r\n\r\n",
        b"GET / HTTP/11\r\nHost: unknown.cn\r\n\r\n",
        b"GET / XTTP/1.1\r\nHost: unknown.cn\r\n\r\n",
        b"GET /\r\nHost: unknown.cn\r\n\r\n",
        b"GET http://unknown.cn/\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: unknown.cn\r\n folded: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : unknown.cn\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: unknown.cn\rX: y\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: un\0known.cn\r\n\r\n",
    ];
    for v in vectors {
        let mut s = TcpStream::connect(p.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(v).unwrap();
        let r = read_to_end(&mut s);
        let st = status_of(&r);
        assert!(
            st == 400 || st == 403,
            "{:?} got {r:?}",
            String::from_utf8_lossy(v)
        );
    }
    assert!(
        rec.quiet(Duration::from_millis(300)),
        "an undecided request reached the upstream"
    );
    assert_eq!(p.metric("icpgate_sniff_total{outcome=\"other\"}"), 0.0);
}

/// Protocols that are not HTTP still pass as "other" (R3), SSH banners
/// with a comment included.
#[test]
fn ssh_and_binary_protocols_still_pass() {
    let rec = Recorder::start(None);
    let p = Proxy::start(rec.addr, "\"127.0.0.0/8\"", "");
    for v in [
        &b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"[..],
        &b"SSH-2.0-OpenSSH_9.6\r\n"[..],
        &b"\x00\x00\x00\x08\x04\xd2\x16\x2f"[..],
        &b"*1\r\n$4\r\nPING\r\n"[..],
    ] {
        let mut s = TcpStream::connect(p.addr).unwrap();
        s.write_all(v).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(rec.next().unwrap(), v);
    }
    assert_eq!(p.metric("icpgate_sniff_total{outcome=\"other\"}"), 4.0);
}

/// R10: HTTP/1.1 with an absolute-form target and no Host is refused, the
/// authority filed or not.
#[test]
fn absolute_form_without_host_is_ambiguous() {
    let rec = Recorder::start(None);
    let p = Proxy::start(rec.addr, "\"127.0.0.0/8\"", "");
    for target in ["http://www.example.com.cn/", "http://unknown.cn/"] {
        let (s, r) = http_raw(p.addr, &format!("GET {target} HTTP/1.1\r\n\r\n"));
        assert_eq!(s, 400, "{r}");
        assert_eq!(header(&r, "x-icpgate-reason"), Some("ambiguous_host"));
    }
    assert!(rec.quiet(Duration::from_millis(300)));
}

/// Upgrades other than WebSocket are not passed on (no blind pipe).
#[test]
fn only_websocket_upgrades_become_tunnels() {
    let p = proxy();
    let (s, r) = http_raw(
        p.addr,
        "GET /u HTTP/1.1\r\nHost: www.example.com.cn\r\nConnection: Upgrade, close\r\nUpgrade: foo/1\r\n\r\n",
    );
    assert_eq!(s, 200, "{r}");
    assert!(r.contains("path=/u"), "{r}");
}

/// An upstream that is a forward proxy: answers `CONNECT` with 200, then
/// records what comes through the tunnel and answers an HTTP request in it.
fn connect_upstream() -> (SocketAddr, mpsc::Receiver<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let tx = tx.clone();
            std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                let mut got = Vec::new();
                let mut buf = [0u8; 65536];
                let mut answered = false;
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                    if !answered && got.windows(4).any(|w| w == b"\r\n\r\n") {
                        answered = true;
                        let end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                        got.drain(..end);
                        let _ = s.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
                    }
                    if answered && got.windows(4).any(|w| w == b"\r\n\r\n") {
                        let _ = s.write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\ninside",
                        );
                        break;
                    }
                }
                // Connections that never sent a CONNECT (readiness probes)
                // are not reported.
                if answered {
                    let _ = tx.send(got);
                }
            });
        }
    });
    (addr, rx)
}

/// After `CONNECT` is answered 2xx, the tunnel's first bytes are decided
/// like a new connection: an unfiled Host or SNI inside is blocked and
/// never reaches the other end; a filed one goes through.
#[test]
fn connect_tunnels_are_sniffed_again() {
    let (up, rx) = connect_upstream();
    let p = Proxy::start(up, "\"127.0.0.0/8\"", "");
    let connect = "CONNECT www.example.com.cn:443 HTTP/1.1\r\nHost: www.example.com.cn:443\r\n\r\n";
    let open = || {
        let mut s = TcpStream::connect(p.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(connect.as_bytes()).unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut b).unwrap(), 1);
            head.push(b[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        s
    };
    let recv = || rx.recv_timeout(Duration::from_secs(10)).unwrap();
    // HTTP inside, unfiled: the block page, nothing through.
    let mut s = open();
    s.write_all(b"GET /in HTTP/1.1\r\nHost: unknown.cn\r\n\r\n")
        .unwrap();
    let r = read_to_end(&mut s);
    assert_eq!(status_of(&r), 403, "{r}");
    assert_eq!(recv(), b"");
    // HTTP inside, filed: forwarded through the tunnel.
    let mut s = open();
    s.write_all(b"GET /in HTTP/1.1\r\nHost: www.example.com.cn\r\n\r\n")
        .unwrap();
    let r = read_to_end(&mut s);
    assert!(r.ends_with("inside"), "{r}");
    let got = recv();
    assert!(
        got.starts_with(b"GET /in HTTP/1.1\r\nHost: www.example.com.cn"),
        "{got:?}"
    );
    // TLS inside, unfiled SNI: reset, nothing through.
    let mut s = open();
    s.write_all(&client_hello(&["unknown.cn"])).unwrap();
    assert!(closed_by_peer(&mut s));
    assert_eq!(recv(), b"");
    // A CONNECT sent together with the tunnel's first bytes.
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("{connect}GET /x HTTP/1.1\r\nHost: unknown.cn\r\n\r\n").as_bytes())
        .unwrap();
    let r = read_to_end(&mut s);
    assert!(r.contains("403 Forbidden"), "{r}");
    assert_eq!(recv(), b"");
    // A CONNECT whose "body" is the tunnel's first request: a proxy that
    // ignores the framing would take it as tunnel data. Refused; nothing
    // reaches the upstream.
    let hidden = "GET /x HTTP/1.1\r\nHost: unknown.cn\r\n\r\n";
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        format!(
            "CONNECT www.example.com.cn:443 HTTP/1.1\r\nHost: www.example.com.cn:443\r\n\
             Content-Length: {}\r\n\r\n{hidden}",
            hidden.len()
        )
        .as_bytes(),
    )
    .unwrap();
    let r = read_to_end(&mut s);
    assert_eq!(status_of(&r), 400, "{r}");
    let got = rx.recv_timeout(Duration::from_millis(500));
    assert!(got.as_ref().map_or(true, |g| g.is_empty()), "{got:?}");
    assert!(
        p.metric("icpgate_decisions_total{decision=\"block\",protocol=\"tls\",reason=\"unfiled\"}")
            == 1.0
    );
}

/// A ClientHello of exactly one full 16 KiB record is read and decided; one
/// over `max_sniff_bytes` is reset and counted as too long.
#[test]
fn tls_hello_size_follows_max_sniff_bytes() {
    use icpgate::sniff::tls::{sni_extension, synthetic_hello};
    let rec = Recorder::start(None);
    let p = Proxy::start(rec.addr, "\"127.0.0.0/8\"", "");
    let hello = |name: &str, pad: usize| {
        let mut e = sni_extension(&[name]);
        e.extend([0x00, 0x15]);
        e.extend((pad as u16).to_be_bytes());
        e.extend(vec![0u8; pad]);
        synthetic_hello(&e)
    };
    let base = hello("www.example.com.cn", 0).len() - 5;
    let full = hello("www.example.com.cn", 16 * 1024 - base);
    assert_eq!(full.len(), 5 + 16 * 1024);
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.write_all(&full).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(rec.next().unwrap().len(), full.len());
    // 20 KiB across two records: over the default limit.
    let big = reframe(&hello("www.example.com.cn", 20 * 1024 - base), 16 * 1024);
    let mut s = TcpStream::connect(p.addr).unwrap();
    let _ = s.write_all(&big);
    assert!(closed_by_peer(&mut s));
    assert!(rec.quiet(Duration::from_millis(300)));
    assert_eq!(
        p.metric(
            "icpgate_decisions_total{decision=\"block\",protocol=\"tls\",reason=\"too_long\"}"
        ),
        1.0
    );
}
