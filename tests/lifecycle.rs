#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Connection limit and graceful shutdown of the real binary.
mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn connection_limit_rejects_and_counts() {
    let up = Recorder::start(None);
    let p = Proxy::start(
        up.addr,
        "\"127.0.0.0/8\"",
        "[limits]\nmax_connections = 2\n",
    );
    // The harness's readiness probes may still wait in the listen backlog
    // (a connect succeeds before icpgate accepts): a sentinel connection,
    // accepted after them (first in, first out), must reach the upstream;
    // then every connection is gone.
    let mut sentinel = TcpStream::connect(p.addr).unwrap();
    sentinel.write_all(b"SSH-2.0-sentinel\r\n").unwrap();
    sentinel.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(up.next().unwrap(), b"SSH-2.0-sentinel\r\n");
    drop(sentinel);
    p.wait_metric("icpgate_connections_active{listener=\"test\"}", |v| {
        v == 0.0
    });
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(p.addr).unwrap();
        s.write_all(b"SSH-2.0-x\r\n").unwrap();
        held.push(s);
    }
    p.wait_metric("icpgate_connections_active{listener=\"test\"}", |v| {
        v == 2.0
    });
    let mut third = TcpStream::connect(p.addr).unwrap();
    assert!(closed_by_peer(&mut third));
    assert!(p.metric("icpgate_connections_rejected_total{listener=\"test\"}") >= 1.0);
    assert_eq!(
        p.metric("icpgate_connections_active{listener=\"test\"}"),
        2.0
    );
    drop(held);
}

#[test]
fn sigterm_drains_in_flight_requests() {
    // An upstream that answers after 800 ms.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let up = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                std::thread::sleep(Duration::from_millis(800));
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nslow",
                );
            });
        }
    });
    let mut p = Proxy::start(up, "\"127.0.0.0/8\"", "[limits]\ndrain_secs = 10\n");
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: www.example.com.cn\r\n\r\n")
        .unwrap();
    // In flight: decided and forwarded.
    p.wait_metric(
        "icpgate_decisions_total{decision=\"allow\",protocol=\"http\",reason=\"filed\"}",
        |v| v >= 1.0,
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(p.pid(), libc::SIGTERM) };
    // No new connections once draining (the listeners close at once).
    let t = std::time::Instant::now();
    while TcpStream::connect(p.addr).is_ok() {
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "still accepting after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let resp = read_to_end(&mut s);
    assert!(
        resp.ends_with("slow"),
        "in-flight request was cut: {resp:?}"
    );
    let t = Instant::now();
    let status = loop {
        if let Some(st) = p.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "did not exit after draining"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn forwarding_loop_is_refused_not_multiplied() {
    // A listener whose upstream is itself: every forwarded connection would
    // come back. The loop guard recognises icpgate's own upstream sockets,
    // also when another worker accepts the looping connection while the
    // connecting one is still inside `connect` (loopback completes the
    // handshake there): many loops at once on 4 workers, and each must be
    // exactly one client connection plus one refused hop.
    let port = free_port();
    let admin_port = free_port();
    let admin: std::net::SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let _p = spawn_config(
        &format!("[[listener]]\nname = \"loop\"\naddr = \"127.0.0.1:{port}\"\nupstream = \"127.0.0.1:{port}\"\n[regions]\nmainland = [\"127.0.0.0/8\"]\n[table]\npath = \"{{table}}\"\n[admin]\naddr = \"{admin}\"\n[runtime]\nworkers = 4\n"),
        admin,
    );
    const LOOPS: usize = 200;
    let clients: Vec<_> = (0..LOOPS)
        .map(|_| {
            std::thread::spawn(move || {
                http_raw(
                    format!("127.0.0.1:{port}").parse().unwrap(),
                    "GET / HTTP/1.1\r\nHost: www.example.com.cn\r\nConnection: close\r\n\r\n",
                )
                .0
            })
        })
        .collect();
    for c in clients {
        assert_eq!(
            c.join().unwrap(),
            502,
            "a looping request must fail, not hang"
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    let metrics = http_raw(
        admin,
        "GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .1;
    let value = |prefix: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in {metrics}"))
    };
    let hops = value("icpgate_connections_total{listener=\"loop\"}");
    let refused = value("icpgate_connections_refused_total{cause=\"loop\",listener=\"loop\"}");
    assert_eq!(refused, LOOPS as f64);
    assert_eq!(hops, 2.0 * LOOPS as f64, "a loop was forwarded again");
}

#[test]
fn logs_to_a_file_have_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(&p, "[table]\npath = \"/nonexistent/t.csv\"\n").unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_icpgate"))
        .args(["run", "--config", p.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no usable filing table"), "{err}");
    assert!(!err.contains('\u{1b}'), "ANSI escape in piped log: {err:?}");
}

#[test]
fn a_second_instance_cannot_take_a_share_of_the_port() {
    // Workers share a listener's port through SO_REUSEPORT; a second
    // icpgate (same user, same sockets options) must still fail to start
    // rather than silently receive part of the connections.
    let up = TcpListener::bind("127.0.0.1:0").unwrap();
    let first = Proxy::start(
        up.local_addr().unwrap(),
        "\"127.0.0.0/8\"",
        "[runtime]\nworkers = 2\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("t.csv");
    std::fs::write(&table, TABLE).unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[listener]]\naddr = \"{}\"\nupstream = \"{}\"\n[table]\npath = \"{}\"\n[admin]\naddr = \"127.0.0.1:{}\"\n[runtime]\nworkers = 2\n",
            first.addr,
            up.local_addr().unwrap(),
            table.display(),
            free_port()
        ),
    )
    .unwrap();
    let mut second = std::process::Command::new(env!("CARGO_BIN_EXE_icpgate"))
        .args(["run", "--config", cfg.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let status = loop {
        if let Some(st) = second.try_wait().unwrap() {
            break st;
        }
        if t.elapsed() > Duration::from_secs(20) {
            let _ = second.kill();
            panic!("the second instance started serving on the first one's port");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(1));
    let mut err = String::new();
    second
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("cannot listen on"), "{err}");
}
