#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The table source is untrusted input: compression bombs, endless rows and
//! slow or stalled URL sources are rejected in bounded memory and time, and
//! the running table keeps serving.
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use common::*;
use icpgate::table::{self, LoadOptions, TableError};

const HEADER: &str = "domain,icp,filing,access,access_expires,ips\n";

/// A gzip file of `members` concatenated members, each `chunk` inflated:
/// compressed once, repeated (a multi-member gzip is one stream).
fn gz_members(first: &[u8], chunk: &[u8], members: usize) -> Vec<u8> {
    let gz = |data: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    };
    let mut out = gz(first);
    let one = gz(chunk);
    for _ in 0..members {
        out.extend_from_slice(&one);
    }
    out
}

/// 2 GiB of zeros (no line end at all) in about 2 MB.
fn bomb_no_newline() -> Vec<u8> {
    gz_members(b"", &vec![0u8; 16 << 20], 128)
}

/// A valid header and row, then 2 GiB of empty lines.
fn bomb_newlines() -> Vec<u8> {
    gz_members(
        format!("{HEADER}a.cn,京ICP备1号-1,filed,active,,\n").as_bytes(),
        &vec![b'\n'; 16 << 20],
        128,
    )
}

fn format_err(r: Result<table::Loaded, TableError>) -> String {
    match r {
        Err(TableError::Format(m)) => m,
        other => panic!("expected a rejected table, got {other:?}"),
    }
}

#[test]
fn bombs_and_endless_rows_stop_early() {
    let b = bomb_no_newline();
    assert!(b.len() < 3 << 20, "{}", b.len());
    let t = Instant::now();
    let m = format_err(table::load_bytes(&b, "bomb", &LoadOptions::default()));
    assert!(m.contains("line 1: row longer than 4096 bytes"), "{m}");
    assert!(t.elapsed() < Duration::from_secs(5));
    // Empty lines compress too well: stopped by the ratio rule.
    let m = format_err(table::load_bytes(
        &bomb_newlines(),
        "bomb",
        &LoadOptions::default(),
    ));
    assert!(m.contains("inflates more than 100:1"), "{m}");
    // A quoted field running over many lines is one row.
    let quoted = format!("{HEADER}\"{}", "a\n".repeat(10_000));
    let m = format_err(table::load_bytes(
        quoted.as_bytes(),
        "q",
        &LoadOptions::default(),
    ));
    assert!(m.contains("row longer than"), "{m}");
    // A plain file whose header line never ends.
    let endless = vec![b'a'; 1 << 20];
    let m = format_err(table::load_bytes(&endless, "e", &LoadOptions::default()));
    assert!(m.contains("line 1: row longer"), "{m}");
    // The row guard counts lines: the error names the right one.
    let rows = format!(
        "{HEADER}a.cn,京ICP备1号-1,filed,active,,\nb.cn,{}\n",
        "x".repeat(5000)
    );
    let m = format_err(table::load_bytes(
        rows.as_bytes(),
        "r",
        &LoadOptions::default(),
    ));
    assert!(m.contains("line 3: row longer"), "{m}");
    // A real table with quotes still loads.
    let ok = format!("{HEADER}\"a.cn\",\"京ICP备1号-1\",filed,active,,\n");
    assert_eq!(
        table::load_bytes(ok.as_bytes(), "ok", &LoadOptions::default())
            .unwrap()
            .snapshot
            .len(),
        1
    );
}

/// kB from /proc/PID/status.
fn status_kb(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

const BOUND_KB: u64 = 256 * 1024;

/// `icpgate validate` on a bomb: rejected, peak RSS well under the bound.
#[test]
fn validate_rejects_a_bomb_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bomb) in [
        ("a.csv.gz", bomb_no_newline()),
        ("b.csv.gz", bomb_newlines()),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, bomb).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_icpgate"))
            .arg("validate")
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id() as libc::pid_t;
        let mut status = 0;
        // SAFETY: zeroed rusage is a valid value for wait4 to fill.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: waits for our own child; the out-pointers are valid.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        assert_eq!(r, pid);
        std::mem::forget(child);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) != 0);
        let peak_kb = ru.ru_maxrss as u64;
        assert!(
            peak_kb < BOUND_KB,
            "{name}: validate peaked at {peak_kb} kB"
        );
    }
}

/// A bomb dropped in place of the running table: rejected, the old table
/// keeps serving, and the process's peak RSS stays within the bound.
#[test]
fn a_bomb_file_is_rejected_in_bounded_memory() {
    let p = Proxy::start(http_upstream(), "\"127.0.0.0/8\"", "");
    let (_, before) = p.admin_get("/v1/table");
    let base = status_kb(p.child.id(), "VmRSS:");
    for bomb in [bomb_no_newline(), bomb_newlines()] {
        let tmp = p.dir.path().join("next.csv.gz");
        std::fs::write(&tmp, bomb).unwrap();
        std::fs::rename(&tmp, p.table_path()).unwrap();
        let (st, body) = p.admin_post("/v1/reload");
        assert_eq!(st, 409, "{body}");
        assert!(
            body.contains("row longer") || body.contains("inflates"),
            "{body}"
        );
    }
    let peak = status_kb(p.child.id(), "VmHWM:");
    assert!(
        peak < base + BOUND_KB,
        "peak RSS {peak} kB, steady state {base} kB"
    );
    let (_, after) = p.admin_get("/v1/table");
    let version = |s: &str| {
        let body = s.split("\r\n\r\n").nth(1).unwrap_or(s);
        serde_json::from_str::<serde_json::Value>(body).unwrap()["version"].clone()
    };
    assert_eq!(version(&before), version(&after));
    let (st, r) = http_raw(
        p.addr,
        "GET /x HTTP/1.1\r\nHost: www.example.com.cn\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(st, 200, "{r}");
}

/// An HTTP table source: serves `body()` (read per request), or stalls
/// after the head when it returns `None`.
fn table_server(body: impl Fn() -> Option<Vec<u8>> + Send + 'static) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut head = Vec::new();
            let mut b = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&b[..n]),
                }
            }
            match body() {
                Some(body) => {
                    let _ = s.write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .as_bytes(),
                    );
                    let _ = s.write_all(&body);
                }
                None => {
                    let _ = s.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\nConnection: close\r\n\r\nx",
                    );
                    std::thread::sleep(Duration::from_secs(10));
                }
            }
        }
    });
    addr
}

fn url_proxy(src: SocketAddr, table_extra: &str) -> (Spawned, SocketAddr) {
    let port = free_port();
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let up = http_upstream();
    let cfg = format!(
        "[[listener]]\naddr = \"127.0.0.1:{port}\"\nupstream = \"{up}\"\n[regions]\nmainland = [\"127.0.0.0/8\"]\n[table]\nurl = \"http://{src}/t.csv.gz\"\npoll_interval_secs = 3600\n{table_extra}\n[admin]\naddr = \"{admin}\"\n"
    );
    (spawn_config(&cfg, admin), admin)
}

fn post(admin: SocketAddr, path: &str) -> (u16, String) {
    http_raw(
        admin,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    )
}

/// The URL source streams to disk: a bomb served over HTTP is rejected
/// like a file, in bounded memory; a stalled source times out.
#[test]
fn a_bomb_or_stall_from_a_url_is_rejected() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let bomb = Arc::new(bomb_no_newline());
    let bomb2 = Arc::new(bomb_newlines());
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let src = table_server(move || match n2.fetch_add(1, Ordering::SeqCst) {
        0 => Some(TABLE.as_bytes().to_vec()),
        1 => Some(bomb.to_vec()),
        2 => Some(bomb2.to_vec()),
        _ => None,
    });
    let (p, admin) = url_proxy(src, "fetch_timeout_secs = 2");
    let base = status_kb(p.child.id(), "VmRSS:");
    for want in ["row longer", "inflates"] {
        let (st, body) = post(admin, "/v1/reload");
        assert_eq!(st, 409, "{body}");
        assert!(body.contains(want), "{body}");
    }
    let peak = status_kb(p.child.id(), "VmHWM:");
    assert!(
        peak < base + BOUND_KB,
        "peak RSS {peak} kB, steady state {base} kB"
    );
    // Stalled after one byte: given up at fetch_timeout_secs.
    let t = Instant::now();
    let (st, body) = post(admin, "/v1/reload");
    assert_eq!(st, 409, "{body}");
    assert!(body.contains("timed out"), "{body}");
    assert!(t.elapsed() < Duration::from_secs(6));
    let (_, table) = http_raw(
        admin,
        "GET /v1/table HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(table.contains("\"entries\":6"), "{table}");
}
