#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Bounded under hostile inputs and exhausted resources: the admin API's
//! limits, running out of file descriptors, and the memory an idle
//! passthrough connection holds.
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Raise this test process's own descriptor limit to its hard limit.
fn raise_own_nofile() -> u64 {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit on a struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        l.rlim_cur = l.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &l);
    }
    l.rlim_cur
}

#[test]
fn admin_api_is_bounded() {
    let p = Proxy::start(http_upstream(), "\"127.0.0.0/8\"", "");
    // Undecodable query parameters are refused, not ignored.
    for q in ["host=a.cn&dst=%ff", "host=%e4%b8", "host=a.cn&dst=%zz"] {
        let (st, body) = p.admin_get(&format!("/v1/decision?{q}"));
        assert_eq!(st, 400, "{q}: {body}");
    }
    let (st, _) = p.admin_get("/v1/decision?host=%e4%be%8b%e5%ad%90.%e4%b8%ad%e5%9b%bd");
    assert_eq!(st, 200);
    // A partial request is closed at the header timeout (5 s).
    let mut s = TcpStream::connect(p.admin).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\n")
        .unwrap();
    let t = Instant::now();
    assert!(closed_by_peer(&mut s) || t.elapsed() < Duration::from_secs(7));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut b = [0u8; 1];
    let _ = s.read(&mut b);
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "held for {:?}",
        t.elapsed()
    );
    // An oversized head is refused.
    let (st, _) = http_raw(
        p.admin,
        &format!(
            "GET /metrics HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "a".repeat(40_000)
        ),
    );
    assert!(st == 431 || st == 0, "{st}");
    // At most 64 connections at once: the 65th is closed at accept.
    let idle: Vec<TcpStream> = (0..64)
        .map(|_| TcpStream::connect(p.admin).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = TcpStream::connect(p.admin).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n");
    let mut buf = [0u8; 64];
    assert!(matches!(extra.read(&mut buf), Ok(0) | Err(_)));
    drop(idle);
    std::thread::sleep(Duration::from_millis(200));
    let (st, _) = p.admin_get("/healthz");
    assert_eq!(st, 200);
}

/// A holder upstream: accepts connections and keeps them, reading nothing.
fn holder() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        for s in l.incoming().flatten() {
            kept.push(s);
        }
    });
    addr
}

/// With RLIMIT_NOFILE at 1024 and 2,000 connection attempts: attempts past
/// capacity are reset within 100 ms, an established client keeps being
/// served, and the proxy recovers once the flood ends.
#[test]
fn out_of_descriptors_sheds_and_recovers() {
    let own = raise_own_nofile();
    if own < 4500 {
        eprintln!("skipped: this process may open only {own} descriptors");
        return;
    }
    let up = http_upstream();
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table.csv");
    std::fs::write(&table, TABLE).unwrap();
    let port = free_port();
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let cfg = dir.path().join("icpgate.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[listener]]\nname = \"t\"\naddr = \"127.0.0.1:{port}\"\nupstream = \"{up}\"\n[regions]\nmainland = [\"127.0.0.0/8\"]\n[table]\npath = \"{}\"\n[admin]\naddr = \"{admin}\"\n",
            table.display()
        ),
    )
    .unwrap();
    let log = dir.path().join("stderr.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_icpgate"));
    cmd.args(["run", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    // SAFETY: only async-signal-safe setrlimit between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let l = libc::rlimit {
                rlim_cur: 1024,
                rlim_max: 1024,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_listening(&mut child, &[addr, admin], &log);
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = Kill(child);
    let warned = std::fs::read_to_string(&log).unwrap();
    assert!(warned.contains("RLIMIT_NOFILE"), "{warned}");

    // An established keep-alive client, its upstream connection open.
    let mut est = TcpStream::connect(addr).unwrap();
    est.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let ask = |s: &mut TcpStream| {
        s.write_all(b"GET /est HTTP/1.1\r\nHost: www.example.com.cn\r\n\r\n")
            .unwrap();
        let mut got = Vec::new();
        let mut b = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains("path=/est") {
            let n = s.read(&mut b).unwrap();
            assert!(n > 0);
            got.extend_from_slice(&b[..n]);
        }
    };
    ask(&mut est);

    // The flood: partial heads that hold a descriptor each.
    let mut flood = Vec::new();
    let mut closed_fast = 0;
    let mut late = Vec::new();
    for i in 0..2000 {
        let Ok(mut s) = TcpStream::connect(addr) else {
            continue;
        };
        let _ = s.write_all(b"GET / HTTP/1.1\r\n");
        if i >= 1200 {
            // Past capacity (1024 descriptors): reset or closed at once.
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let t = Instant::now();
            let mut b = [0u8; 16];
            match s.read(&mut b) {
                Ok(0) | Err(_) if t.elapsed() < Duration::from_millis(100) => closed_fast += 1,
                _ => late.push(i),
            }
        }
        flood.push(s);
    }
    assert!(
        late.len() <= 8,
        "{} of 800 attempts past capacity were not closed within 100 ms",
        late.len()
    );
    assert!(closed_fast >= 792);
    // The established client is still served during the flood.
    ask(&mut est);
    // The flood ends: the proxy recovers.
    drop(flood);
    std::thread::sleep(Duration::from_millis(500));
    let (st, r) = http_raw(
        addr,
        "GET /after HTTP/1.1\r\nHost: www.example.com.cn\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(st, 200, "{r}");
    let (_, m) = http_raw(
        admin,
        "GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    let shed: f64 = m
        .lines()
        .find(|l| l.starts_with("icpgate_connections_shed_total{listener=\"t\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    assert!(shed >= 700.0, "shed {shed}");
    drop(child);
}

/// An idle passthrough connection holds no copy buffers: ≤ 16 KiB of
/// process memory each (measured over 1,000).
#[test]
fn idle_passthrough_connections_are_small() {
    raise_own_nofile();
    let up = holder();
    let p = Proxy::start(up, "\"127.0.0.0/8\"", "");
    let hello = client_hello(&["www.example.com.cn"]);
    // Warm up (allocator arenas, the table).
    let mut warm = Vec::new();
    for _ in 0..100 {
        let mut s = TcpStream::connect(p.addr).unwrap();
        s.write_all(&hello).unwrap();
        warm.push(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    let before = status_kb(p.child.id(), "VmRSS:");
    const N: u64 = 1000;
    let mut conns = Vec::new();
    for _ in 0..N {
        let mut s = TcpStream::connect(p.addr).unwrap();
        s.write_all(&hello).unwrap();
        conns.push(s);
    }
    // All passed through (the gauge counts them), then idle.
    let t = Instant::now();
    while p.metric("icpgate_connections_active{listener=\"test\"}") < (N + 100) as f64 {
        assert!(t.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = status_kb(p.child.id(), "VmRSS:");
    let per = (after.saturating_sub(before)) * 1024 / N;
    eprintln!("idle passthrough: {per} bytes per connection ({before} kB -> {after} kB)");
    assert!(
        per <= 16 * 1024,
        "{per} bytes per idle passthrough connection"
    );
}
