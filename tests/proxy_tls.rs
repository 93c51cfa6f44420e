#![allow(clippy::unwrap_used, clippy::expect_used)]
//! TLS through the real proxy: captured ClientHellos from real clients, fed
//! whole, one byte per write and re-framed over several records; the
//! upstream must receive exactly the client's bytes.
mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::*;

const FIXTURES: [(&str, Option<&str>); 6] = [
    ("chromium_pq.bin", Some("www.example.com.cn")),
    ("curl.bin", Some("www.example.com.cn")),
    ("openssl.bin", Some("shop.example.net")),
    ("openssl_nosni.bin", None),
    ("openssl_tls12.bin", Some("www.example.com.cn")),
    ("python.bin", Some("xn--fsqu00a.xn--fiqs8s")),
];

fn send(proxy: &Proxy, bytes: &[u8], per_write: usize) -> TcpStream {
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    s.set_nodelay(true).unwrap();
    for chunk in bytes.chunks(per_write) {
        s.write_all(chunk).unwrap();
        if per_write < 64 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    s
}

#[test]
fn allowed_hellos_reach_upstream_byte_for_byte() {
    let up = Recorder::start(None);
    let proxy = Proxy::start(up.addr, "\"127.0.0.0/8\"", "");
    for (name, _) in FIXTURES {
        let hello = fixture(name);
        for (how, bytes, per_write) in [
            ("whole", hello.clone(), hello.len()),
            ("byte-by-byte", hello.clone(), 1),
            ("5 records", reframe(&hello, hello.len() / 5 + 1), 7),
            ("1-byte records", reframe(&hello, 1), 4096),
        ] {
            let mut s = send(&proxy, &bytes, per_write);
            // Some bytes after the hello (e.g. early data) follow verbatim.
            s.write_all(b"\x17\x03\x03\x00\x01Z").unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            let got = up
                .next()
                .unwrap_or_else(|| panic!("{name} {how}: nothing reached upstream"));
            let mut want = bytes.clone();
            want.extend_from_slice(b"\x17\x03\x03\x00\x01Z");
            assert_eq!(got, want, "{name} {how}: upstream bytes differ");
        }
    }
    assert!(proxy.metric("icpgate_sniff_total{outcome=\"tls\"}") >= 24.0);
    assert!(
        proxy.metric(
            "icpgate_decisions_total{decision=\"allow\",protocol=\"tls\",reason=\"filed\"}"
        ) >= 20.0
    );
}

#[test]
fn blocked_sni_is_reset_and_nothing_forwarded() {
    let up = Recorder::start(None);
    let proxy = Proxy::start(up.addr, "\"127.0.0.0/8\"", "");
    for names in [
        &["unknown.cn"][..],
        &["example.net"],
        &["evilexample.com.cn"],
        &["a.com", "b.com"],
        &["example.com.cn", "example.com.cn"],
        &["bad name.cn"],
    ] {
        let hello = client_hello(names);
        let mut s = send(&proxy, &hello, 3);
        assert!(closed_by_peer(&mut s), "{names:?} not closed");
    }
    assert!(
        up.quiet(Duration::from_millis(500)),
        "a blocked hello reached the upstream"
    );
    assert_eq!(proxy.metric("icpgate_decisions_total{decision=\"block\",protocol=\"tls\",reason=\"ambiguous_host\"}"), 2.0);
    assert_eq!(proxy.metric("icpgate_decisions_total{decision=\"block\",protocol=\"tls\",reason=\"no_access_record\"}"), 1.0);
    assert_eq!(
        proxy.metric(
            "icpgate_decisions_total{decision=\"block\",protocol=\"tls\",reason=\"unfiled\"}"
        ),
        3.0
    );
}

#[test]
fn alert_mode_sends_unrecognized_name() {
    let up = Recorder::start(None);
    let proxy = Proxy::start(up.addr, "\"127.0.0.0/8\"", "[block]\ntls = \"alert\"\n");
    let mut s = send(&proxy, &client_hello(&["unknown.cn"]), 4096);
    let resp = read_to_end(&mut s);
    assert_eq!(resp.as_bytes(), &[21, 3, 1, 0, 2, 2, 112]);
}

#[test]
fn page_mode_finishes_handshake_and_serves_block_page() {
    use std::sync::Arc;
    let up = Recorder::start(None);
    let proxy = Proxy::start(up.addr, "\"127.0.0.0/8\"", "[block]\ntls = \"page\"\n");
    // A real rustls client that accepts any certificate (the browser would warn).
    #[derive(Debug)]
    struct AnyCert;
    impl rustls::client::danger::ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AnyCert))
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("unknown.cn").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
    let mut sock = TcpStream::connect(proxy.addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    tls.write_all(b"GET / HTTP/1.1\r\nHost: unknown.cn\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = std::io::Read::read_to_end(&mut tls, &mut out);
    let resp = String::from_utf8_lossy(&out);
    assert_eq!(status_of(&resp), 403, "{resp}");
    assert_eq!(header(&resp, "x-icpgate-reason"), Some("unfiled"));
    assert!(resp.contains("unknown.cn"));
}

#[test]
fn stalled_partial_hello_is_closed_and_counted() {
    let up = Recorder::start(None);
    let proxy = Proxy::start(
        up.addr,
        "\"127.0.0.0/8\"",
        "[limits]\nheader_timeout_ms = 300\n",
    );
    let hello = fixture("chromium_pq.bin");
    // Stop inside the extensions: must never be read as "no SNI".
    let mut s = send(&proxy, &hello[..hello.len() - 40], 4096);
    let t = std::time::Instant::now();
    assert!(closed_by_peer(&mut s));
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "closed before the header timeout"
    );
    assert!(up.quiet(Duration::from_millis(300)));
    assert_eq!(
        proxy.metric("icpgate_sniff_total{outcome=\"incomplete\"}"),
        1.0
    );
}

#[test]
fn outside_mainland_passes_untouched() {
    let up = Recorder::start(None);
    // Loopback is not in the mainland ranges here.
    let proxy = Proxy::start(up.addr, "\"192.0.2.0/24\"", "");
    let hello = client_hello(&["unknown.cn"]);
    let s = send(&proxy, &hello, 4096);
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(up.next().unwrap(), hello);
    assert!(proxy.metric("icpgate_decisions_total{decision=\"pass\",protocol=\"other\",reason=\"outside_mainland\"}") >= 1.0);
    assert_eq!(
        proxy.metric("icpgate_decisions_total{decision=\"block\""),
        0.0
    );
}

#[test]
fn server_first_protocol_gets_its_banner() {
    let up = Recorder::start(Some(b"220 smtp.example ESMTP\r\n"));
    let proxy = Proxy::start(
        up.addr,
        "\"127.0.0.0/8\"",
        "[limits]\nserver_first_wait_ms = 100\n",
    );
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 64];
    let n = std::io::Read::read(&mut s, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"220 smtp.example ESMTP\r\n");
    s.write_all(b"EHLO x\r\n").unwrap();
    let n = std::io::Read::read(&mut s, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"EHLO x\r\n");
    assert_eq!(
        proxy.metric("icpgate_sniff_total{outcome=\"nothing\"}"),
        1.0
    );
}

#[test]
fn other_protocols_follow_ip_access_policy() {
    let up = Recorder::start(None);
    let proxy = Proxy::start(up.addr, "\"127.0.0.0/8\"", "");
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    s.write_all(b"SSH-2.0-OpenSSH_9.6\r\n").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(up.next().unwrap(), b"SSH-2.0-OpenSSH_9.6\r\n");
    let blocking = Proxy::start(
        up.addr,
        "\"127.0.0.0/8\"",
        "[policy]\nip_access = \"block\"\n",
    );
    let mut s = TcpStream::connect(blocking.addr).unwrap();
    s.write_all(b"SSH-2.0-OpenSSH_9.6\r\n").unwrap();
    assert!(closed_by_peer(&mut s));
}

/// Echo upstream: every byte back (the hello included), then EOF after the
/// client's EOF.
fn echo_upstream() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                let _ = std::io::copy(&mut s, &mut w);
                let _ = w.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    up
}

/// Long flows move to splice(2) after the first MiB in each direction: a
/// 6 MiB echo must come back intact, and a half-close must still pass the
/// EOF on and let the other direction finish.
#[test]
fn bulk_both_ways_survives_the_switch_to_splice() {
    use sha2::Digest;
    use std::io::Read;
    let up = echo_upstream();
    let proxy = Proxy::start(up, "\"127.0.0.0/8\"", "");
    let mut data = client_hello(&["www.example.com.cn"]);
    data.extend((0..6u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8));
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut w = s.try_clone().unwrap();
    let sent = data.clone();
    let writer = std::thread::spawn(move || {
        for chunk in sent.chunks(100_000) {
            w.write_all(chunk).unwrap();
        }
        w.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    s.read_to_end(&mut back).unwrap();
    writer.join().unwrap();
    assert_eq!(back.len(), data.len());
    assert_eq!(sha2::Sha256::digest(&back), sha2::Sha256::digest(&data));
}

/// An upstream that refuses, and one that never answers the SYN: the client
/// is dropped (not left waiting) and each failure is counted. The silent
/// one must take the configured connect timeout — not succeed early on the
/// first event-loop turn, not hang.
#[test]
fn upstream_refusing_or_silent_fails_within_connect_timeout() {
    use std::time::Instant;
    const ERRORS: &str = "icpgate_upstream_connect_errors_total{listener=\"test\"}";
    let hello = fixture("curl.bin");

    // Refused: nothing listens on the port.
    let closed = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let proxy = Proxy::start(
        closed,
        "\"127.0.0.0/8\"",
        "[limits]\nupstream_connect_timeout_ms = 400\n",
    );
    let mut s = send(&proxy, &hello, hello.len());
    let t = Instant::now();
    assert!(closed_by_peer(&mut s), "refused upstream: client left open");
    assert!(
        t.elapsed() < Duration::from_millis(350),
        "refused upstream waited {:?}",
        t.elapsed()
    );
    assert_eq!(proxy.metric(ERRORS), 1.0);
    drop(proxy);

    // Silent: a listener whose accept queue is full drops further SYNs.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    sock.bind(&any.into()).unwrap();
    sock.listen(0).unwrap();
    let full = sock.local_addr().unwrap().as_socket().unwrap();
    let _queued = TcpStream::connect(full).unwrap();
    let proxy = Proxy::start(
        full,
        "\"127.0.0.0/8\"",
        "[limits]\nupstream_connect_timeout_ms = 400\n",
    );
    for _ in 0..2 {
        let mut s = send(&proxy, &hello, hello.len());
        let t = Instant::now();
        assert!(closed_by_peer(&mut s), "silent upstream: client left open");
        let waited = t.elapsed();
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_secs(3),
            "silent upstream: client dropped after {waited:?}, timeout is 400 ms"
        );
    }
    assert_eq!(proxy.metric(ERRORS), 2.0);
}

/// `idle_timeout_secs`: a forwarded connection with no bytes either way is
/// closed after the idle time (up to a quarter more: the watchdog looks
/// four times per period), and one that keeps talking, for well over the
/// idle time in total, is not.
#[test]
fn idle_passthrough_is_closed_and_a_talking_one_is_not() {
    use std::io::Read;
    use std::time::Instant;
    let up = echo_upstream();
    let proxy = Proxy::start(up, "\"127.0.0.0/8\"", "[limits]\nidle_timeout_secs = 1\n");
    let hello = client_hello(&["www.example.com.cn"]);
    let open = |s: &mut TcpStream| {
        s.write_all(&hello).unwrap();
        let mut back = vec![0u8; hello.len()];
        s.read_exact(&mut back).unwrap();
        assert_eq!(back, hello, "the echo of the hello");
    };
    let mut silent = TcpStream::connect(proxy.addr).unwrap();
    let mut talking = TcpStream::connect(proxy.addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    talking
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    open(&mut silent);
    let silent_since = Instant::now();
    open(&mut talking);

    // One byte each way every 200 ms for 2.6 s: never idle for a second.
    let mut closed_after = None;
    for i in 0..13u8 {
        std::thread::sleep(Duration::from_millis(200));
        talking.write_all(&[i]).unwrap();
        let mut b = [0u8; 1];
        talking.read_exact(&mut b).unwrap();
        assert_eq!(
            b[0],
            i,
            "talking connection cut after {} ms",
            200 * (u32::from(i) + 1)
        );
        if closed_after.is_none() {
            silent.set_nonblocking(true).unwrap();
            if matches!(silent.read(&mut b), Ok(0)) {
                closed_after = Some(silent_since.elapsed());
            }
            silent.set_nonblocking(false).unwrap();
        }
    }
    let closed_after = closed_after.expect("the silent connection was still open after 2.6 s");
    assert!(
        closed_after >= Duration::from_millis(950) && closed_after < Duration::from_millis(1900),
        "silent connection closed after {closed_after:?}, idle timeout 1 s"
    );

    // Now the talking one goes quiet: closed within the idle second and
    // its quarter (plus slack for a loaded machine), not left open.
    let quiet_since = Instant::now();
    assert!(
        closed_by_peer(&mut talking),
        "a quiet connection was left open"
    );
    let waited = quiet_since.elapsed();
    assert!(
        waited >= Duration::from_millis(950) && waited < Duration::from_millis(1900),
        "quiet connection closed after {waited:?}, idle timeout 1 s"
    );
}

/// A client that reads slowly behind a fast server: the proxy holds back
/// (the server's writes block) instead of buffering what the client has not
/// taken, and a reader that keeps taking bytes is not idle, even over three
/// idle timeouts.
#[test]
fn a_slow_reader_holds_the_server_back_and_is_not_idle() {
    use std::io::Read;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Instant;
    // The server: after the first bytes, writes 64 KiB pieces as fast as
    // the connection takes them, counting what its socket accepted.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let counted = accepted.clone();
    std::thread::spawn(move || {
        let Ok((mut s, _)) = l.accept() else { return };
        let mut first = [0u8; 4096];
        let _ = s.read(&mut first);
        let piece = vec![b'f'; 64 << 10];
        while s.write_all(&piece).is_ok() {
            counted.fetch_add(piece.len() as u64, Ordering::SeqCst);
        }
    });
    let proxy = Proxy::start(up, "\"127.0.0.0/8\"", "[limits]\nidle_timeout_secs = 1\n");
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&client_hello(&["www.example.com.cn"])).unwrap();
    // ~5 MB/s: 256 KiB every 50 ms, for three idle timeouts.
    let mut piece = vec![0u8; 256 << 10];
    let mut read = 0u64;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        s.read_exact(&mut piece)
            .unwrap_or_else(|e| panic!("cut after {:?} and {read} bytes: {e}", start.elapsed()));
        read += piece.len() as u64;
        std::thread::sleep(Duration::from_millis(50));
    }
    // What is in flight is bounded by the two connections' socket buffers
    // (each at most the kernel's tcp_wmem + tcp_rmem maximum) and the
    // proxy's 1 MiB pipe; a proxy reading ahead of its client would have
    // taken gigabytes from this server in three seconds.
    let max_of = |f: &str| -> u64 {
        std::fs::read_to_string(f)
            .ok()
            .and_then(|v| v.split_whitespace().nth(2)?.parse().ok())
            .unwrap_or(8 << 20)
    };
    let buffers = max_of("/proc/sys/net/ipv4/tcp_wmem") + max_of("/proc/sys/net/ipv4/tcp_rmem");
    let bound = 2 * buffers + (8 << 20);
    let ahead = accepted.load(Ordering::SeqCst).saturating_sub(read);
    assert!(
        ahead < bound,
        "the server got {ahead} bytes ahead of a client that read {read} (bound {bound})"
    );
}
