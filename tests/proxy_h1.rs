#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The HTTP/1 forwarding engine against a scripted raw upstream: exact bytes
//! on the wire, response framings, upstream connection reuse, interim
//! responses, early answers and malformed framing.
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// What the scripted upstream does for one request (chosen by path).
enum Act {
    /// Send these bytes, keep the connection.
    Send(Vec<u8>),
    /// Send these bytes, then close.
    SendClose(Vec<u8>),
    /// Send an interim 100, read the body, then send these bytes.
    Continue(Vec<u8>),
    /// Answer before reading the body, then close.
    EarlyClose(Vec<u8>),
    /// Answer before reading the body, then read and drop until EOF (the
    /// answer says nothing about closing).
    Early(Vec<u8>),
}

struct Upstream {
    addr: SocketAddr,
    conns: Arc<AtomicUsize>,
    /// Every request as received (head + body), in order.
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
}

fn find(h: &[u8], pat: &[u8]) -> Option<usize> {
    h.windows(pat.len()).position(|w| w == pat)
}

fn content_length(head: &[u8]) -> usize {
    let s = String::from_utf8_lossy(head).to_ascii_lowercase();
    s.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap_or(0))
}

fn upstream(script: fn(&str) -> Act) -> Upstream {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (c2, s2) = (conns.clone(), seen.clone());
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            c2.fetch_add(1, Ordering::SeqCst);
            let seen = s2.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 65536];
                loop {
                    // One request head.
                    let end = loop {
                        if let Some(i) = find(&buf, b"\r\n\r\n") {
                            break i + 4;
                        }
                        match s.read(&mut tmp) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        }
                    };
                    let head: Vec<u8> = buf.drain(..end).collect();
                    let line = String::from_utf8_lossy(&head).into_owned();
                    let path = line.split(' ').nth(1).unwrap_or("").to_owned();
                    let act = script(&path);
                    let mut read_body = |s: &mut TcpStream, buf: &mut Vec<u8>| -> Vec<u8> {
                        let chunked = line
                            .to_ascii_lowercase()
                            .contains("transfer-encoding: chunked");
                        loop {
                            let done = if chunked {
                                find(buf, b"0\r\n\r\n").map(|i| i + 5)
                            } else {
                                let n = content_length(&head);
                                (buf.len() >= n).then_some(n)
                            };
                            if let Some(n) = done {
                                return buf.drain(..n).collect();
                            }
                            match s.read(&mut tmp) {
                                Ok(0) | Err(_) => return std::mem::take(buf),
                                Ok(n) => buf.extend_from_slice(&tmp[..n]),
                            }
                        }
                    };
                    match act {
                        Act::EarlyClose(resp) => {
                            seen.lock().unwrap().push(head);
                            let _ = s.write_all(&resp);
                            return;
                        }
                        Act::Early(resp) => {
                            seen.lock().unwrap().push(head);
                            let _ = s.write_all(&resp);
                            while matches!(s.read(&mut tmp), Ok(n) if n > 0) {}
                            return;
                        }
                        Act::Continue(resp) => {
                            let _ = s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
                            let body = read_body(&mut s, &mut buf);
                            let mut all = head;
                            all.extend_from_slice(&body);
                            seen.lock().unwrap().push(all);
                            let _ = s.write_all(&resp);
                        }
                        Act::Send(ref resp) | Act::SendClose(ref resp) => {
                            let close = matches!(act, Act::SendClose(_));
                            let body = read_body(&mut s, &mut buf);
                            let mut all = head;
                            all.extend_from_slice(&body);
                            seen.lock().unwrap().push(all);
                            let _ = s.write_all(resp);
                            if close {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    Upstream { addr, conns, seen }
}

fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn script(path: &str) -> Act {
    match path {
        "/head" => Act::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".to_vec()),
        "/204" => Act::Send(b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n".to_vec()),
        "/chunked" => Act::Send(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nX-T: 1\r\n\r\n".to_vec(),
        ),
        "/until-close" => Act::SendClose(b"HTTP/1.0 200 OK\r\n\r\nuntil-close-body".to_vec()),
        "/continue" => Act::Continue(ok("continued")),
        "/early" => Act::EarlyClose(
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbig".to_vec(),
        ),
        "/early-ka" => {
            let mut r = format!("HTTP/1.1 401 Unauthorized\r\nContent-Length: {BIG}\r\n\r\n")
                .into_bytes();
            r.resize(r.len() + BIG, b'n');
            Act::Early(r)
        }
        "/bye" => Act::SendClose(ok("bye")),
        "/ka" => Act::Send(KA_RESPONSE.to_vec()),
        "/ka-named" => Act::Send(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nkn".to_vec(),
        ),
        "/big" => {
            let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\n\r\n").into_bytes();
            r.extend((0..BIG).map(|i| (i % 251) as u8));
            Act::Send(r)
        }
        p => Act::Send(ok(&format!("path={p}"))),
    }
}

/// What nginx and most servers answer on a kept connection.
const KA_RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nServer: t\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nka";

/// Larger than any socket buffer on loopback: the proxy's writes to a
/// client that does not read must block and resume.
const BIG: usize = 8 << 20;

fn proxy_to(up: &Upstream) -> Proxy {
    Proxy::start(up.addr, "\"127.0.0.0/8\"", "")
}

fn connect(p: &Proxy) -> TcpStream {
    let s = TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Read one response whose end we know from its text.
fn read_until(s: &mut TcpStream, end: &str) -> String {
    let mut got = Vec::new();
    let mut tmp = [0u8; 4096];
    while find(&got, end.as_bytes()).is_none() {
        let n = s.read(&mut tmp).expect("response");
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&tmp[..n]);
    }
    String::from_utf8(got).unwrap()
}

#[test]
fn request_bytes_arrive_as_sent_and_upstream_connections_are_reused() {
    let up = upstream(script);
    // One worker: each worker keeps its own idle upstream connections.
    let p = Proxy::start(up.addr, "\"127.0.0.0/8\"", "[runtime]\nworkers = 1\n");
    // Without hop-by-hop headers the head goes out byte for byte.
    let raw = "GET /v?q=1 HTTP/1.1\r\nHost: www.example.com.cn\r\nX-Odd:   spaced value  \r\nx-lower: a\r\n\r\n";
    let mut s = connect(&p);
    s.write_all(raw.as_bytes()).unwrap();
    read_until(&mut s, "path=/v?q=1");
    assert_eq!(up.seen.lock().unwrap()[0], raw.as_bytes());
    drop(s);
    // The proxy gives the upstream connection back once it sees our EOF.
    std::thread::sleep(Duration::from_millis(200));
    // A client's `Connection: close` is removed (it is about that hop) and
    // five such clients, one after the other, share one upstream connection.
    for i in 0..5 {
        let (st, r) = http_raw(
            p.addr,
            &format!("GET /c{i} HTTP/1.1\r\nHost: www.example.com.cn\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(st, 200, "{r}");
        assert_eq!(header(&r, "connection"), Some("close"), "{r}");
    }
    let seen = up.seen.lock().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&seen[1]),
        "GET /c0 HTTP/1.1\r\nHost: www.example.com.cn\r\n\r\n"
    );
    assert_eq!(up.conns.load(Ordering::SeqCst), 1);
}

#[test]
fn workers_share_the_listener_and_keep_their_own_upstream_connections() {
    let up = upstream(script);
    let p = Proxy::start(up.addr, "\"127.0.0.0/8\"", "[runtime]\nworkers = 2\n");
    // New connections are spread over both workers' sockets by the kernel
    // (by address hash: 40 all on one socket has odds of 2^-39); each
    // worker opens one upstream connection and reuses it.
    for i in 0..40 {
        let (st, r) = http_raw(
            p.addr,
            &format!("GET /w{i} HTTP/1.1\r\nHost: www.example.com.cn\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(st, 200, "{r}");
        assert!(r.contains(&format!("path=/w{i}")), "{r}");
    }
    assert_eq!(up.conns.load(Ordering::SeqCst), 2);
    // A blocked host is decided on either worker alike.
    for _ in 0..10 {
        let (st, _) = http_raw(
            p.addr,
            "GET / HTTP/1.1\r\nHost: unfiled.example\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(st, 403);
    }
}

#[test]
fn absolute_form_becomes_origin_form() {
    let up = upstream(script);
    let p = proxy_to(&up);
    let (st, r) = http_raw(
        p.addr,
        "GET http://www.example.com.cn?x=1 HTTP/1.1\r\nHost: www.example.com.cn\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(st, 200, "{r}");
    assert_eq!(
        String::from_utf8_lossy(&up.seen.lock().unwrap()[0]),
        "GET /?x=1 HTTP/1.1\r\nHost: www.example.com.cn\r\n\r\n"
    );
}

#[test]
fn response_framings_keep_the_connection_in_step() {
    let up = upstream(script);
    let p = proxy_to(&up);
    let mut s = connect(&p);
    let h = "Host: www.example.com.cn\r\n";
    // HEAD: a Content-Length but no body.
    s.write_all(format!("HEAD /head HTTP/1.1\r\n{h}\r\n").as_bytes())
        .unwrap();
    let r = read_until(&mut s, "\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    // 204: no body.
    s.write_all(format!("GET /204 HTTP/1.1\r\n{h}\r\n").as_bytes())
        .unwrap();
    let r = read_until(&mut s, "\r\n\r\n");
    assert_eq!(r, "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n");
    // Chunked, with extensions and trailers, relayed as it came.
    s.write_all(format!("GET /chunked HTTP/1.1\r\n{h}\r\n").as_bytes())
        .unwrap();
    let r = read_until(&mut s, "X-T: 1\r\n\r\n");
    assert_eq!(
        r,
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nX-T: 1\r\n\r\n"
    );
    // Still in step: a plain request on the same connection.
    s.write_all(format!("GET /after HTTP/1.1\r\n{h}\r\n").as_bytes())
        .unwrap();
    read_until(&mut s, "path=/after");
    // A body that ends when the upstream closes: the client gets all of it,
    // told the connection closes, and it does.
    s.write_all(format!("GET /until-close HTTP/1.1\r\n{h}\r\n").as_bytes())
        .unwrap();
    let r = read_to_end(&mut s);
    assert!(r.ends_with("until-close-body"), "{r}");
    assert_eq!(header(&r, "connection"), Some("close"), "{r}");
}

#[test]
fn interim_100_continue_reaches_the_client() {
    let up = upstream(script);
    let p = proxy_to(&up);
    let mut s = connect(&p);
    s.write_all(b"POST /continue HTTP/1.1\r\nHost: www.example.com.cn\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        .unwrap();
    // The client waits for the 100 before sending its body.
    let r = read_until(&mut s, "\r\n\r\n");
    assert_eq!(r, "HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"hello").unwrap();
    read_until(&mut s, "continued");
    assert!(up.seen.lock().unwrap()[0].ends_with(b"\r\n\r\nhello"));
}

#[test]
fn an_early_answer_ends_the_upload() {
    let up = upstream(script);
    let p = proxy_to(&up);
    let mut s = connect(&p);
    s.write_all(b"POST /early HTTP/1.1\r\nHost: www.example.com.cn\r\nContent-Length: 1000000\r\n\r\n0123456789")
        .unwrap();
    let t = Instant::now();
    let r = read_to_end(&mut s);
    assert_eq!(status_of(&r), 413, "{r}");
    assert!(r.ends_with("big"), "{r}");
    assert!(t.elapsed() < Duration::from_secs(3));
}

/// An upstream that answers before the body is complete, without saying
/// it will close, while the client goes on uploading: the proxy will not
/// read the rest, so the answer must say `Connection: close`, and it must
/// arrive whole — closing with the client's bytes unread would reset the
/// connection and could throw away what was not yet delivered.
#[test]
fn an_early_answer_says_close_and_survives_a_client_still_sending() {
    let up = upstream(script);
    let p = proxy_to(&up);
    for _ in 0..3 {
        let mut s = connect(&p);
        s.write_all(b"POST /early-ka HTTP/1.1\r\nHost: www.example.com.cn\r\nContent-Length: 100000000\r\n\r\n")
            .unwrap();
        let mut w = s.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            let chunk = [b'u'; 65536];
            let mut sent = 0usize;
            while sent < 100_000_000 && w.write_all(&chunk).is_ok() {
                sent += chunk.len();
            }
        });
        let r = read_to_end(&mut s);
        assert_eq!(status_of(&r), 401, "{}", &r[..r.len().min(300)]);
        assert_eq!(
            header(&r, "connection"),
            Some("close"),
            "{}",
            &r[..r.len().min(300)]
        );
        let body = r.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        assert_eq!(body.len(), BIG, "the answer was cut short");
        drop(s);
        writer.join().unwrap();
    }
}

/// A blocked upload from a client that never reads, with a receive
/// window too small for the block page: the page is never acknowledged,
/// so the lingering close reads on while the client sends — but not past
/// the idle timeout.
#[test]
fn a_lingering_close_ends_at_the_idle_timeout_for_a_client_that_never_reads() {
    let up = upstream(script);
    let p = Proxy::start(
        up.addr,
        "\"127.0.0.0/8\"",
        "[limits]\nidle_timeout_secs = 2\n",
    );
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(2048).unwrap();
    sock.connect(&p.addr.into()).unwrap();
    let mut s: TcpStream = sock.into();
    s.write_all(
        b"POST / HTTP/1.1\r\nHost: www.unfiled-example.cn\r\nContent-Length: 100000000\r\n\r\n",
    )
    .unwrap();
    let t = Instant::now();
    let chunk = [b'u'; 16384];
    let end = loop {
        if s.write_all(&chunk).is_err() {
            break t.elapsed();
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "still reading after 10 s"
        );
    };
    assert!(
        end >= Duration::from_millis(900),
        "closed after {end:?}, with the page not yet acknowledged"
    );
    assert!(end < Duration::from_secs(5), "closed after {end:?}");
}

/// An upstream that switches protocols while the request body is still
/// coming (and not yet read: the proxy's write to it is stuck mid-way):
/// the rest of the body goes through the tunnel, and no byte of it twice.
#[test]
fn a_switch_in_the_middle_of_a_body_sends_no_byte_twice() {
    const N: usize = 32 << 20;
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut got = Vec::new();
        let mut tmp = [0u8; 65536];
        let end = loop {
            if let Some(i) = find(&got, b"\r\n\r\n") {
                break i + 4;
            }
            let n = s.read(&mut tmp).unwrap();
            assert!(n > 0);
            got.extend_from_slice(&tmp[..n]);
        };
        // Let the body fill every buffer on the way, then switch.
        std::thread::sleep(Duration::from_millis(500));
        s.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .unwrap();
        let mut body = got.split_off(end).len();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut tail = Vec::new();
        loop {
            let n = s.read(&mut tmp).unwrap();
            assert!(n > 0, "closed before the end marker");
            tail.extend_from_slice(&tmp[..n]);
            if let Some(i) = find(&tail, b"<<END>>") {
                body += i;
                break;
            }
            // Keep only what could be the start of the marker.
            let keep = tail.len().min(6);
            body += tail.len() - keep;
            tail.drain(..tail.len() - keep);
        }
        tx.send(body).unwrap();
    });
    let p = Proxy::start(addr, "\"127.0.0.0/8\"", "");
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(
        format!("POST /up HTTP/1.1\r\nHost: www.example.com.cn\r\nConnection: upgrade\r\nUpgrade: websocket\r\nContent-Length: {N}\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'b'; 1 << 20];
        for _ in 0..N / chunk.len() {
            w.write_all(&chunk).unwrap();
        }
        w.write_all(b"<<END>>").unwrap();
    });
    let r = read_until(&mut s, "\r\n\r\n");
    assert_eq!(status_of(&r), 101, "{r}");
    writer.join().unwrap();
    let body = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(body, N, "body bytes the upstream got before the marker");
}

#[test]
fn upstream_closing_a_pooled_connection_is_survived() {
    let up = upstream(script);
    let p = proxy_to(&up);
    let (st, r) = http_raw(
        p.addr,
        "GET /bye HTTP/1.1\r\nHost: www.example.com.cn\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(st, 200, "{r}");
    std::thread::sleep(Duration::from_millis(100));
    let (st, r) = http_raw(
        p.addr,
        "GET /next HTTP/1.1\r\nHost: www.example.com.cn\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(st, 200, "{r}");
    assert!(r.contains("path=/next"));
    assert_eq!(up.conns.load(Ordering::SeqCst), 2);
}

#[test]
fn pipelined_bodies_are_split_where_they_end() {
    let up = upstream(script);
    let p = proxy_to(&up);
    let mut s = connect(&p);
    s.write_all(
        b"POST /a HTTP/1.1\r\nHost: www.example.com.cn\r\nContent-Length: 3\r\n\r\nabc\
          POST /b HTTP/1.1\r\nHost: www.example.com.cn\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\n\r\n\
          GET /c HTTP/1.1\r\nHost: www.example.com.cn\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let r = read_to_end(&mut s);
    let (a, b, c) = (
        r.find("path=/a").unwrap(),
        r.find("path=/b").unwrap(),
        r.find("path=/c").unwrap(),
    );
    assert!(a < b && b < c, "{r}");
    let seen = up.seen.lock().unwrap();
    assert!(seen[0].ends_with(b"\r\n\r\nabc"));
    assert!(seen[1].ends_with(b"\r\n\r\n2\r\nde\r\n0\r\n\r\n"));
    assert!(seen[2].starts_with(b"GET /c "));
}

#[test]
fn malformed_framing_never_reaches_the_upstream() {
    let up = upstream(script);
    let p = proxy_to(&up);
    let h = "Host: www.example.com.cn\r\n";
    for bad in [
        format!("POST / HTTP/1.1\r\n{h}Content-Length: 5, 6\r\n\r\nhello"),
        format!("POST / HTTP/1.1\r\n{h}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello"),
        format!("POST / HTTP/1.1\r\n{h}Content-Length: -1\r\n\r\n"),
        format!("POST / HTTP/1.0\r\n{h}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        format!("POST / HTTP/1.1\r\n{h}Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"),
        format!("POST / HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        format!("POST / HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\nzz\r\n"),
    ] {
        let (st, r) = http_raw(p.addr, &bad);
        assert_eq!(st, 400, "{bad:?}: {r}");
    }
    assert!(up.seen.lock().unwrap().is_empty());
}

/// On a `defer_accept` listener a client's socket is only registered with
/// the reactor once an operation would block (`src/proxy/client.rs`): an
/// answer larger than the socket buffers to a client that is not reading
/// yet, then heads that arrive in two parts (on that connection and on a
/// new one).
#[test]
fn reads_and_writes_that_would_block_resume() {
    let up = upstream(script);
    let port = free_port();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _p = spawn_config(
        &format!("[[listener]]\nname = \"d\"\naddr = \"127.0.0.1:{port}\"\nupstream = \"{}\"\ndefer_accept = true\n[regions]\nmainland = [\"127.0.0.0/8\"]\n[table]\npath = \"{{table}}\"\n[admin]\naddr = \"{admin}\"\n", up.addr),
        admin,
    );
    let connect = || {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    };
    let mut s = connect();
    // In one piece: the socket is still outside epoll when the answer
    // starts.
    s.write_all(b"GET /big HTTP/1.1\r\nHost: www.example.com.cn\r\n\r\n")
        .unwrap();
    // Not reading: the proxy fills the socket buffers and must wait.
    std::thread::sleep(Duration::from_millis(500));
    let mut tmp = vec![0u8; 1 << 16];
    let mut got = Vec::new();
    let end = loop {
        if let Some(i) = find(&got, b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut tmp).expect("head");
        assert!(n > 0, "closed before the head");
        got.extend_from_slice(&tmp[..n]);
    };
    assert!(got.starts_with(b"HTTP/1.1 200"));
    assert_eq!(content_length(&got[..end]), BIG);
    let mut body = got.split_off(end);
    while body.len() < BIG {
        let n = s.read(&mut tmp).expect("body");
        assert!(n > 0, "closed after {} of {BIG} bytes", body.len());
        body.extend_from_slice(&tmp[..n]);
    }
    assert_eq!(body.len(), BIG);
    assert!(
        body.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8),
        "body corrupted"
    );
    // The same connection goes on, with a head in two parts.
    s.write_all(b"GET /again HTTP/1.1\r\nHo").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    s.write_all(b"st: www.example.com.cn\r\n\r\n").unwrap();
    assert!(read_until(&mut s, "path=/again").starts_with("HTTP/1.1 200"));
    // And a new connection whose head comes in two parts (answered at
    // once, not when some timer happens to wake the connection).
    let mut s = connect();
    s.write_all(b"GET /split HTTP/1.1\r\nHo").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    s.write_all(b"st: www.example.com.cn\r\n\r\n").unwrap();
    assert!(read_until(&mut s, "path=/split").starts_with("HTTP/1.1 200"));
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "answered after {:?}",
        t.elapsed()
    );
}

/// `Connection: keep-alive` alone (what browsers send and servers answer)
/// is what icpgate would say on each leg itself, so such a head goes out
/// byte for byte; any other hop-by-hop header still sends the head through
/// a rewrite that drops them, and the connections stay in step.
#[test]
fn keep_alive_alone_passes_as_is_and_other_hop_headers_go() {
    let up = upstream(script);
    let p = Proxy::start(up.addr, "\"127.0.0.0/8\"", "[runtime]\nworkers = 1\n");
    let mut s = connect(&p);
    let ka = "GET /ka HTTP/1.1\r\nHost: www.example.com.cn\r\nConnection: keep-alive\r\n\r\n";
    s.write_all(ka.as_bytes()).unwrap();
    let got = read_until(&mut s, "\r\n\r\nka");
    assert_eq!(got.as_bytes(), KA_RESPONSE, "response head rewritten");
    assert_eq!(
        up.seen.lock().unwrap()[0],
        ka.as_bytes(),
        "request head rewritten"
    );

    // Other hop-by-hop headers: removed both ways, `Connection` with them.
    s.write_all(
        b"GET /ka-named HTTP/1.1\r\nHost: www.example.com.cn\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=9\r\n\r\n",
    )
    .unwrap();
    let got = read_until(&mut s, "\r\n\r\nkn");
    assert_eq!(got, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nkn");
    assert_eq!(
        String::from_utf8_lossy(&up.seen.lock().unwrap()[1]),
        "GET /ka-named HTTP/1.1\r\nHost: www.example.com.cn\r\n\r\n"
    );

    // Still in step, on one upstream connection; `Connection: close` from
    // the client is still the client's own.
    s.write_all(b"GET /ka HTTP/1.1\r\nHost: www.example.com.cn\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut rest = String::new();
    s.read_to_string(&mut rest).unwrap();
    assert_eq!(
        rest,
        "HTTP/1.1 200 OK\r\nServer: t\r\nContent-Length: 2\r\nConnection: close\r\n\r\nka"
    );
    assert_eq!(
        String::from_utf8_lossy(&up.seen.lock().unwrap()[2]),
        "GET /ka HTTP/1.1\r\nHost: www.example.com.cn\r\n\r\n"
    );
    assert_eq!(up.conns.load(Ordering::SeqCst), 1);
}
