#![allow(clippy::unwrap_used, clippy::expect_used)]
//! HTTP/1.x through the real proxy: every request decided on its own,
//! evasion attempts, bodies, upgrades. Real sockets, raw writers.
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

fn proxy() -> Proxy {
    Proxy::start(http_upstream(), "\"127.0.0.0/8\"", "")
}

fn req(host_lines: &str) -> String {
    format!("GET /p HTTP/1.1\r\n{host_lines}Connection: close\r\n\r\n")
}

#[test]
fn allowed_and_blocked_with_header_variants() {
    let p = proxy();
    let allowed = [
        "Host: www.example.com.cn\r\n",
        "host: WWW.EXAMPLE.COM.CN\r\n",
        "HOST:www.example.com.cn\r\n",
        "Host:   www.example.com.cn   \r\n",
        "Host: www.example.com.cn.\r\n",
        "Host: www.example.com.cn:8080\r\n",
        "Host: 例子.中国\r\n",
        "Host: 203.0.113.5\r\n",
        "Host: [2001:db8::1]:80\r\n",
        "Host: a.shop.example.net\r\n",
    ];
    for h in allowed {
        let (status, resp) = http_raw(p.addr, &req(h));
        assert_eq!(status, 200, "{h:?}: {resp}");
        assert!(resp.contains("path=/p"), "{h:?}: {resp}");
    }
    let blocked = [
        ("Host: unknown.cn\r\n", 403, "unfiled"),
        ("Host: evilexample.com.cn\r\n", 403, "unfiled"),
        ("Host: www.beta.example.com.cn\r\n", 403, "filing_pending"),
        ("Host: example.net\r\n", 403, "no_access_record"),
        ("Host: old-portal.com\r\n", 403, "filing_revoked"),
        ("Host: a.com\r\nHost: a.com\r\n", 400, "ambiguous_host"),
        (
            "Host: www.example.com.cn\r\nHost: unknown.cn\r\n",
            400,
            "ambiguous_host",
        ),
        (
            "Host: unknown.cn\r\nHost: www.example.com.cn\r\n",
            400,
            "ambiguous_host",
        ),
        ("", 400, "ambiguous_host"),
        ("Host: exa mple.cn\r\n", 400, "bad_host"),
        ("Host: a..cn\r\n", 400, "bad_host"),
        ("Host: \r\n", 400, "bad_host"),
    ];
    for (h, want, reason) in blocked {
        let (status, resp) = http_raw(p.addr, &req(h));
        assert_eq!(status, want, "{h:?}: {resp}");
        assert_eq!(header(&resp, "x-icpgate-reason"), Some(reason), "{h:?}");
        assert!(!resp.contains("path=/p"), "{h:?} reached the upstream");
    }
}

#[test]
fn block_page_headers_and_body() {
    let p = proxy();
    let (status, resp) = http_raw(p.addr, &req("Host: www.unknown.cn\r\n"));
    assert_eq!(status, 403);
    assert_eq!(
        header(&resp, "content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(header(&resp, "cache-control"), Some("no-store"));
    assert_eq!(header(&resp, "connection"), Some("close"));
    assert!(header(&resp, "x-icpgate-request-id").is_some());
    assert!(resp.contains("www.unknown.cn") && resp.contains("unknown.cn"));
    // Chinese first, then English.
    let zh = resp.find("该网站暂时无法访问").unwrap();
    let en = resp.find("lang=\"en\"").unwrap();
    assert!(zh < en);
    assert!(!resp.contains("{{"));
    // The length is announced before the body is written: it must match.
    let body = resp.split_once("\r\n\r\n").unwrap().1;
    let announced: usize = header(&resp, "content-length").unwrap().parse().unwrap();
    assert_eq!(announced, body.len());
    // A name with markup is escaped, never injected.
    let (_, resp) = http_raw(p.addr, "GET / HTTP/1.0\r\nHost: x.cn\r\n\r\n");
    assert!(resp.contains("x.cn"));
}

#[test]
fn absolute_form_and_http10() {
    let p = proxy();
    let (s, r) = http_raw(
        p.addr,
        "GET http://unknown.cn/p HTTP/1.1\r\nHost: www.example.com.cn\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(
        (s, header(&r, "x-icpgate-reason")),
        (400, Some("ambiguous_host"))
    );
    let (s, r) = http_raw(p.addr, "GET http://www.example.com.cn/p HTTP/1.1\r\nHost: WWW.example.com.cn:80\r\nConnection: close\r\n\r\n");
    assert_eq!(s, 200, "{r}");
    let (s, _) = http_raw(
        p.addr,
        "GET http://unknown.cn/p HTTP/1.1\r\nHost: unknown.cn\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(s, 403);
    // HTTP/1.0 without Host: R3 (allowed by default), reaches the upstream.
    let (s, r) = http_raw(p.addr, "GET /p HTTP/1.0\r\n\r\n");
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        p.metric(
            "icpgate_decisions_total{decision=\"allow\",protocol=\"http\",reason=\"ip_access\"}"
        ),
        1.0
    );
}

#[test]
fn keep_alive_second_request_for_another_host_is_decided() {
    let p = proxy();
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /one HTTP/1.1\r\nHost: www.example.com.cn\r\n\r\n")
        .unwrap();
    let mut buf = vec![0u8; 65536];
    let n = s.read(&mut buf).unwrap();
    let first = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert_eq!(status_of(&first), 200, "{first}");
    assert!(first.contains("path=/one"));
    s.write_all(b"GET /two HTTP/1.1\r\nHost: unknown.cn\r\n\r\n")
        .unwrap();
    let rest = read_to_end(&mut s);
    assert_eq!(status_of(&rest), 403, "{rest}");
    assert!(!rest.contains("path=/two"));
}

#[test]
fn pipelined_requests_each_decided_in_one_write() {
    let p = proxy();
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(
        b"GET /a HTTP/1.1\r\nHost: www.example.com.cn\r\n\r\n\
          GET /b HTTP/1.1\r\nHost: shop.example.net\r\n\r\n\
          GET /c HTTP/1.1\r\nHost: unknown.cn\r\n\r\n\
          GET /d HTTP/1.1\r\nHost: www.example.com.cn\r\n\r\n",
    )
    .unwrap();
    let all = read_to_end(&mut s);
    let a = all.find("path=/a").expect("a");
    let b = all.find("path=/b").expect("b");
    let c = all.find("x-icpgate-reason: unfiled").expect("c blocked");
    assert!(a < b && b < c, "{all}");
    assert!(
        !all.contains("path=/c") && !all.contains("path=/d"),
        "{all}"
    );
}

#[test]
fn one_byte_per_write() {
    let p = proxy();
    for (host, want) in [("www.example.com.cn", 200), ("unknown.cn", 403)] {
        let mut s = TcpStream::connect(p.addr).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        for b in req(&format!("Host: {host}\r\n")).bytes() {
            s.write_all(&[b]).unwrap();
            std::thread::sleep(Duration::from_micros(300));
        }
        let resp = read_to_end(&mut s);
        assert_eq!(status_of(&resp), want, "{host}: {resp}");
    }
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

#[test]
fn one_mib_bodies_arrive_intact() {
    let p = proxy();
    let body: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let want = format!("len={} sha256={}", body.len(), sha256_hex(&body));
    // Content-Length
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "POST /up HTTP/1.1\r\nHost: www.example.com.cn\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).unwrap();
    s.write_all(&body).unwrap();
    let resp = read_to_end(&mut s);
    assert!(resp.contains(&want), "{resp}");
    // chunked, in odd chunk sizes
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"POST /up HTTP/1.1\r\nHost: www.example.com.cn\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").unwrap();
    for chunk in body.chunks(77_777) {
        write!(s, "{:x}\r\n", chunk.len()).unwrap();
        s.write_all(chunk).unwrap();
        s.write_all(b"\r\n").unwrap();
    }
    s.write_all(b"0\r\n\r\n").unwrap();
    let resp = read_to_end(&mut s);
    assert!(resp.contains(&want), "{resp}");
}

#[test]
fn conflicting_framing_cannot_smuggle() {
    // TE and CL together: chunked wins (RFC 9112 §6.3) and is what the
    // upstream gets; the bytes after the chunked body are a new request,
    // decided on their own.
    let p = proxy();
    let (_, resp) = http_raw(
        p.addr,
        "POST /a HTTP/1.1\r\nHost: www.example.com.cn\r\nContent-Length: 50\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: unknown.cn\r\nConnection: close\r\n\r\n",
    );
    assert!(resp.contains("path=/a len=0"), "{resp}");
    assert!(!resp.contains("path=/smuggled"), "{resp}");
}

#[test]
fn websocket_upgrade_tunnels() {
    let p = proxy();
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: www.example.com.cn\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert_eq!(status_of(&head), 101, "{head}");
    for msg in [&b"hello"[..], b"\x81\x05world", &[0u8; 3000]] {
        s.write_all(msg).unwrap();
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).unwrap();
        assert_eq!(got, msg);
    }
    // An upgrade for an unfiled host is blocked like any request.
    let (st, _) = http_raw(
        p.addr,
        "GET /ws HTTP/1.1\r\nHost: unknown.cn\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    );
    assert_eq!(st, 403);
}

#[test]
fn half_close_still_gets_the_response() {
    let p = proxy();
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /hc HTTP/1.1\r\nHost: www.example.com.cn\r\n\r\n")
        .unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let resp = read_to_end(&mut s);
    assert!(resp.contains("path=/hc"), "{resp}");
}

#[test]
fn malformed_and_stalled_heads() {
    let p = Proxy::start(
        http_upstream(),
        "\"127.0.0.0/8\"",
        "[limits]\nheader_timeout_ms = 300\n",
    );
    let (s, _) = http_raw(p.addr, "GET / HTTP/1.1\r\nHo st: x\r\n\r\n");
    assert_eq!(s, 400);
    let mut st = TcpStream::connect(p.addr).unwrap();
    st.write_all(b"GET / HTTP/1.1\r\nHost: www.exa").unwrap();
    assert!(closed_by_peer(&mut st));
    assert_eq!(p.metric("icpgate_sniff_total{outcome=\"incomplete\"}"), 1.0);
    assert_eq!(p.metric("icpgate_sniff_total{outcome=\"invalid\"}"), 1.0);
    // A head larger than the sniff cap is refused (431), not buffered
    // forever.
    let mut big = TcpStream::connect(p.addr).unwrap();
    big.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = big.write_all(format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(40_000)).as_bytes());
    let r = read_to_end(&mut big);
    assert_eq!(status_of(&r), 431, "{r}");
}

#[test]
fn leading_empty_lines_do_not_hide_a_request() {
    // Servers skip empty lines before a request line; so must the sniffer.
    let p = proxy();
    let (s, r) = http_raw(
        p.addr,
        "\r\n\r\nGET /x HTTP/1.1\r\nHost: unknown.cn\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(s, 403, "{r}");
    let (s, r) = http_raw(
        p.addr,
        "\nGET /x HTTP/1.1\r\nHost: www.example.com.cn\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(s, 200, "{r}");
    // A lowercase method is still HTTP and still decided.
    let (s, r) = http_raw(
        p.addr,
        "get /x HTTP/1.1\r\nHost: unknown.cn\r\nConnection: close\r\n\r\n",
    );
    assert!(s == 403 || s == 400, "{r}");
    assert!(!r.contains("path=/x"));
}

#[test]
fn h2c_upgrade_and_prior_knowledge_cannot_escape() {
    let p = proxy();
    // The h2c offer is removed: the request is answered in HTTP/1.1.
    let (s, r) = http_raw(
        p.addr,
        "GET /u HTTP/1.1\r\nHost: www.example.com.cn\r\nConnection: Upgrade, HTTP2-Settings\r\nConnection: close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
    );
    assert_eq!(s, 200, "{r}");
    assert!(r.contains("path=/u"));
    // HTTP/2 with prior knowledge cannot be decided per request: refused.
    let mut st = TcpStream::connect(p.addr).unwrap();
    st.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    let resp = read_to_end(&mut st);
    assert!(resp.is_empty() || status_of(&resp) == 400, "{resp}");
    // Refused by icpgate's sniffer (counted), not by the upstream.
    assert_eq!(p.metric("icpgate_sniff_total{outcome=\"invalid\"}"), 1.0);
}

#[test]
fn hop_by_hop_headers_stay_on_their_hop() {
    let p = proxy();
    let (s, r) = http_raw(
        p.addr,
        "GET /h HTTP/1.1\r\nHost: www.example.com.cn\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n\r\n",
    );
    assert_eq!(s, 200, "{r}");
    assert!(
        r.contains("hop=[]"),
        "hop-by-hop headers reached the upstream: {r}"
    );
}

/// `defer_accept = true`: a connection that has sent nothing yet is not
/// handed to icpgate (not even counted); once its request is in, it is
/// served as usual.
#[test]
fn defer_accept_hands_over_connections_with_their_first_bytes() {
    let up = http_upstream();
    let port = free_port();
    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _p = spawn_config(
        &format!("[[listener]]\nname = \"d\"\naddr = \"127.0.0.1:{port}\"\nupstream = \"{up}\"\ndefer_accept = true\n[regions]\nmainland = [\"127.0.0.0/8\"]\n[table]\npath = \"{{table}}\"\n[admin]\naddr = \"{admin}\"\n"),
        admin,
    );
    let accepted = || {
        let (_, body) = http_raw(
            admin,
            "GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        );
        body.lines()
            .find(|l| l.starts_with("icpgate_connections_total{listener=\"d\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(accepted(), 0.0, "a silent connection was handed over");
    s.write_all(b"GET /d HTTP/1.1\r\nHost: www.example.com.cn\r\nConnection: close\r\n\r\n")
        .unwrap();
    let resp = read_to_end(&mut s);
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert_eq!(accepted(), 1.0);
}
