//! Test harness: the real `icpgate` binary on loopback, real upstreams.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const TABLE: &str = "\
domain,icp,filing,access,access_expires,ips
example.com.cn,京ICP备09051301号-1,filed,active,,
www.beta.example.com.cn,京ICP备09051301号-2,first_pending,active,,
shop.example.net,浙B2-20040180-2,filed,active,,
example.net,浙B2-20040180-1,filed,none,,
xn--fsqu00a.xn--fiqs8s,粤ICP备12345678号-3,filed,active,,
old-portal.com,京ICP备10001234号-1,revoked,cancelled,,
";

/// A port for a listener the test's icpgate will bind. Taken below the
/// kernel's ephemeral range: a port from `bind(0)` is free only until the
/// next `connect()` of any parallel test picks it as a source port, and
/// icpgate's bind then fails (seen once in CI). Ports are handed out from a
/// per-process cursor (no two tests of one binary get the same port) and
/// checked free before they are returned.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let eph_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let low = eph_low.saturating_sub(12_000).max(1024);
    let span = eph_low.saturating_sub(low);
    if span < 1000 {
        return TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
    }
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (low + (start + n) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below the ephemeral range");
}

/// Start `icpgate run --config <cfg>` with its stderr kept in `log`.
pub fn spawn_icpgate(cfg: &Path, log: &Path, rust_log: Option<&str>) -> Child {
    // ICPGATE_TEST_BIN: run the tests against another build (to show that
    // a test fails on the code before a fix).
    let bin = std::env::var_os("ICPGATE_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_icpgate")));
    let mut cmd = Command::new(bin);
    cmd.args(["run", "--config"])
        .arg(cfg)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    if let Some(level) = rust_log {
        cmd.env("RUST_LOG", level);
    }
    cmd.spawn().unwrap()
}

/// Wait until every address accepts connections; if icpgate exits first or
/// takes more than 20 s, fail with what it wrote to stderr.
pub fn wait_listening(child: &mut Child, addrs: &[SocketAddr], log: &Path) {
    let t = Instant::now();
    loop {
        if addrs.iter().all(|a| TcpStream::connect(a).is_ok()) {
            return;
        }
        let why = match child.try_wait().unwrap() {
            Some(status) => format!("icpgate exited ({status}) before listening"),
            None if t.elapsed() > Duration::from_secs(20) => {
                format!("icpgate did not listen on {addrs:?} within 20 s")
            }
            None => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        let _ = child.kill();
        let err = std::fs::read_to_string(log).unwrap_or_default();
        panic!("{why}; its stderr:\n{err}");
    }
}

pub struct Proxy {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl Proxy {
    /// Start `icpgate run` with one listener to `upstream`. `extra` is
    /// appended to the config (sections not otherwise written).
    pub fn start(upstream: SocketAddr, mainland: &str, extra: &str) -> Proxy {
        Self::start_with_table(upstream, mainland, extra, TABLE)
    }

    pub fn start_with_table(
        upstream: SocketAddr,
        mainland: &str,
        extra: &str,
        table: &str,
    ) -> Proxy {
        Self::start_full(upstream, mainland, "", "", extra, table)
    }

    /// `table_keys` / `admin_keys` are added to the `[table]` / `[admin]`
    /// sections the harness writes.
    pub fn start_full(
        upstream: SocketAddr,
        mainland: &str,
        table_keys: &str,
        admin_keys: &str,
        extra: &str,
        table: &str,
    ) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let table_path = dir.path().join("table.csv");
        std::fs::write(&table_path, table).unwrap();
        let port = free_port();
        let admin_port = free_port();
        let cfg = format!(
            r#"
[[listener]]
name = "test"
addr = "127.0.0.1:{port}"
upstream = "{upstream}"

[regions]
mainland = [{mainland}]

[table]
path = "{table}"
{table_keys}

[admin]
addr = "127.0.0.1:{admin_port}"
{admin_keys}

{extra}
"#,
            table = table_path.display(),
            table_keys = "{table_keys}",
            admin_keys = "{admin_keys}",
        );
        let table_keys = if table_keys.is_empty() {
            "watch_interval_ms = 100"
        } else {
            table_keys
        };
        let cfg = cfg
            .replace("{table_keys}", table_keys)
            .replace("{admin_keys}", admin_keys);
        let cfg_path = dir.path().join("icpgate.toml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let log = dir.path().join("stderr.log");
        let mut child = spawn_icpgate(&cfg_path, &log, Some("warn"));
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
        wait_listening(&mut child, &[addr, admin], &log);
        Proxy {
            child,
            addr,
            admin,
            dir,
        }
    }

    pub fn table_path(&self) -> PathBuf {
        self.dir.path().join("table.csv")
    }

    /// GET on the admin API; returns (status, body).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        http_raw(
            self.admin,
            &format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"),
        )
    }

    pub fn admin_post(&self, path: &str) -> (u16, String) {
        self.admin_post_auth(path, "")
    }

    pub fn admin_post_auth(&self, path: &str, extra_headers: &str) -> (u16, String) {
        http_raw(
            self.admin,
            &format!("POST {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\n{extra_headers}Connection: close\r\n\r\n"),
        )
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Wait (up to 10 s) until the metric satisfies `ok`; its value.
    pub fn wait_metric(&self, line_prefix: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let t = Instant::now();
        loop {
            let v = self.metric(line_prefix);
            if ok(v) {
                return v;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{line_prefix} stayed at {v}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn metric(&self, line_prefix: &str) -> f64 {
        let (_, body) = self.admin_get("/metrics");
        body.lines()
            .find(|l| l.starts_with(line_prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process started from a hand-written config; killed on drop.
pub struct Spawned {
    pub child: Child,
    pub dir: tempfile::TempDir,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `icpgate run` with `cfg` (`{table}` is replaced by the path of a
/// file holding [`TABLE`]) and wait until `ready` accepts connections.
pub fn spawn_config(cfg: &str, ready: SocketAddr) -> Spawned {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table.csv");
    std::fs::write(&table, TABLE).unwrap();
    let path = dir.path().join("icpgate.toml");
    std::fs::write(&path, cfg.replace("{table}", &table.display().to_string())).unwrap();
    let log = dir.path().join("stderr.log");
    let mut child = spawn_icpgate(&path, &log, None);
    wait_listening(&mut child, &[ready], &log);
    Spawned { child, dir }
}

/// One request on a fresh connection, read to EOF: (status, whole response).
pub fn http_raw(addr: SocketAddr, req: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let resp = read_to_end(&mut s);
    (status_of(&resp), resp)
}

pub fn read_to_end(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn status_of(resp: &str) -> u16 {
    resp.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

pub fn header<'a>(resp: &'a str, name: &str) -> Option<&'a str> {
    let head = resp.split("\r\n\r\n").next()?;
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A raw TCP upstream that records everything each connection sends (until
/// the client half-closes or 2 s of silence), optionally writing a banner
/// first, and echoes nothing.
pub struct Recorder {
    pub addr: SocketAddr,
    pub rx: mpsc::Receiver<Vec<u8>>,
}

impl Recorder {
    pub fn start(banner: Option<&'static [u8]>) -> Recorder {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let tx = tx.clone();
                std::thread::spawn(move || {
                    if let Some(b) = banner {
                        let _ = s.write_all(b);
                    }
                    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    let mut got = Vec::new();
                    let mut buf = [0u8; 65536];
                    loop {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                got.extend_from_slice(&buf[..n]);
                                if banner.is_some() {
                                    // echo for server-first tests
                                    let _ = s.write_all(&buf[..n]);
                                }
                            }
                        }
                    }
                    let _ = tx.send(got);
                });
            }
        });
        Recorder { addr, rx }
    }

    /// The next non-empty recording (the harness's readiness probes open
    /// empty connections).
    pub fn next(&self) -> Option<Vec<u8>> {
        loop {
            let got = self.rx.recv_timeout(Duration::from_secs(10)).ok()?;
            if !got.is_empty() {
                return Some(got);
            }
        }
    }

    /// Nothing non-empty arrives within `d`.
    pub fn quiet(&self, d: Duration) -> bool {
        let end = std::time::Instant::now() + d;
        loop {
            let left = end.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(v) if v.is_empty() => continue,
                Ok(_) => return false,
                Err(_) => return true,
            }
        }
    }
}

pub fn fixture(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/clienthello")
        .join(name);
    std::fs::read(p).unwrap()
}

#[allow(unused_imports)]
pub use icpgate::sniff::tls::reframe;

/// A minimal ClientHello with these server names (none: no SNI extension).
pub fn client_hello(names: &[&str]) -> Vec<u8> {
    use icpgate::sniff::tls::{sni_extension, synthetic_hello};
    if names.is_empty() {
        synthetic_hello(&[])
    } else {
        synthetic_hello(&sni_extension(names))
    }
}

/// Did the proxy reset / close the connection without forwarding?
/// Returns true if a read gets EOF or a reset within the timeout.
pub fn closed_by_peer(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(0) | Err(_))
}

/// A real HTTP/1.1 upstream (hyper): answers `host=<Host> path=<path>
/// len=<body bytes> sha256=<hex>`; `Upgrade` requests get 101 and then an
/// echo of every byte (a stand-in for a WebSocket tunnel).
pub fn http_upstream() -> SocketAddr {
    use http_body_util::{BodyExt, Full};
    use hyper::body::{Bytes, Incoming};
    use hyper::{Request, Response};
    use hyper_util::rt::TokioIo;
    use sha2::Digest;
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(l).unwrap();
            loop {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|mut req: Request<Incoming>| async move {
                        if req.headers().contains_key(hyper::header::UPGRADE) {
                            let on = hyper::upgrade::on(&mut req);
                            tokio::spawn(async move {
                                if let Ok(up) = on.await {
                                    let mut io = TokioIo::new(up);
                                    let mut buf = [0u8; 4096];
                                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                                    while let Ok(n) = io.read(&mut buf).await {
                                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                            break;
                                        }
                                    }
                                }
                            });
                            let mut r = Response::new(Full::new(Bytes::new()));
                            *r.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
                            r.headers_mut()
                                .insert(hyper::header::UPGRADE, "websocket".parse().unwrap());
                            r.headers_mut()
                                .insert(hyper::header::CONNECTION, "upgrade".parse().unwrap());
                            return Ok::<_, hyper::Error>(r);
                        }
                        let host = req
                            .headers()
                            .get(hyper::header::HOST)
                            .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
                            .unwrap_or_else(|| "-".into());
                        let path = req.uri().path().to_owned();
                        let hop = ["connection", "keep-alive", "x-hop"]
                            .iter()
                            .filter(|h| req.headers().contains_key(**h))
                            .copied()
                            .collect::<Vec<_>>()
                            .join(",");
                        let body = req.into_body().collect().await?.to_bytes();
                        let hex: String = sha2::Sha256::digest(&body)
                            .iter()
                            .map(|b| format!("{b:02x}"))
                            .collect();
                        Ok(Response::new(Full::new(Bytes::from(format!(
                            "host={host} path={path} len={} sha256={hex} hop=[{hop}]\n",
                            body.len()
                        )))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
    });
    addr
}

/// kB from /proc/PID/status (`VmRSS:`, `VmHWM:`, …).
pub fn status_kb(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}
