#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The table loader: validation and line numbers, whole-file errors, the
//! invalid-row allowance, gzip, batches, building in spare memory, the
//! shrink guard; and the source as untrusted input — compression bombs,
//! endless rows and slow or stalled URL sources are rejected in bounded
//! memory and time, and the running table keeps serving.
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use common::*;
use icpgate::snapshot::Filing;
use icpgate::table::{self, LoadOptions, TableError};

const HEADER: &str = "domain,icp,filing,access,access_expires,ips\n";

fn tsnap() -> icpgate::snapshot::Snapshot {
    table::load_bytes(TABLE.as_bytes(), "t", &LoadOptions::default())
        .unwrap()
        .snapshot
}

fn load_err(csv: &str) -> Vec<(u64, String)> {
    match table::load_bytes(
        csv.as_bytes(),
        "t",
        &LoadOptions {
            max_invalid_rows: usize::MAX,
            ..LoadOptions::default()
        },
    ) {
        Ok(l) => l.errors.into_iter().map(|e| (e.line, e.message)).collect(),
        Err(e) => vec![(0, e.to_string())],
    }
}

#[test]
fn malformed_tables_reported_at_the_right_line() {
    let h = "domain,icp,filing,access,access_expires,ips\n";
    let body = [
        "ok.cn,京ICP备1号-1,filed,active,,",                    // 2 ok
        "bad domain.cn,京ICP备1号-1,filed,active,,",            // 3
        "com.cn,京ICP备1号-1,filed,active,,",                   // 4 public suffix
        "a.cn,京ICP备1号-1,filled,active,,",                    // 5 bad filing
        "b.cn,京ICP备1号-1,filed,on,,",                         // 6 bad access
        "c.cn,京ICP备1号-1,filed,initial_review,,",             // 7 missing expiry
        "d.cn,京ICP备1号-1,filed,initial_review,tomorrow,",     // 8 bad time
        "e.cn,京ICP备1号-1,filed,active,2026-12-01T00:00:00Z,", // 9 expiry without review
        "f.cn,京ICP备1号-1,filed,active,,1.2.3.4/33",           // 10 bad cidr
        "g.cn,京ICP备1号-1,filed,active,,10.0.0.1/8",           // 11 host bits
        "h.cn,京ICP备1号-1,filed,active",                       // 12 field count
        "ok.cn,京ICP备1号-1,filed,active,,",                    // 13 duplicate
        "i.cn,,filed,active,,",                                 // 14 empty icp
        "203.0.113.1,京ICP备1号-1,filed,active,,",              // 15 ip as domain
        "\"j.cn\n\",京ICP备1号-1,filed,active,,", // 16 (spans 2 lines) newline in domain
        "k.cn,京ICP备1号-1,filed,active,,",       // 18 ok
    ]
    .join("\n");
    let errs = load_err(&format!("{h}{body}\n"));
    let lines: Vec<u64> = errs.iter().map(|e| e.0).collect();
    assert_eq!(
        lines,
        [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16],
        "{errs:#?}"
    );
    assert!(errs[1].1.contains("public suffix"));
    assert!(
        errs[10].1.contains("duplicate") && errs[10].1.contains("line 2"),
        "{}",
        errs[10].1
    );
}

#[test]
fn whole_file_errors() {
    // Wrong header, empty file, invalid UTF-8, gzip garbage, oversize.
    assert!(load_err("").remove(0).1.contains("empty"));
    assert!(load_err("domain,icp,filing,access\nx.cn,1,filed,active\n")
        .remove(0)
        .1
        .contains("header"));
    let bad_utf8 = b"domain,icp,filing,access,access_expires,ips\n\xff\xfe.cn,1,filed,active,,\n";
    let r = table::load_bytes(bad_utf8, "t", &LoadOptions::default());
    assert!(
        matches!(r, Err(TableError::Rejected { ref errors, .. }) if errors[0].line == 2 && errors[0].message.contains("UTF-8")),
        "{r:?}"
    );
    let r = table::load_bytes(&[0x1f, 0x8b, 0, 1, 2, 3], "t", &LoadOptions::default());
    assert!(r.is_err());
    let big = format!(
        "domain,icp,filing,access,access_expires,ips\n{}",
        "a.cn,京ICP备1号-1,filed,active,,\n".repeat(100)
    );
    let r = table::load_bytes(
        big.as_bytes(),
        "t",
        &LoadOptions {
            max_bytes: 1000,
            ..LoadOptions::default()
        },
    );
    assert!(
        matches!(r, Err(TableError::Format(ref m)) if m.contains("limit")),
        "{r:?}"
    );
    let long_row = format!(
        "domain,icp,filing,access,access_expires,ips\na.cn,京ICP备1号-1,filed,active,,{}\n",
        "1.2.3.4 ".repeat(1000)
    );
    assert!(load_err(&long_row)[0].1.contains("longer than"));
}

#[test]
fn allowance_and_gzip() {
    use std::io::Write;
    let csv = "domain,icp,filing,access,access_expires,ips\nok.cn,京ICP备1号-1,filed,active,,\nbad..cn,京ICP备1号-1,filed,active,,\n";
    assert!(table::load_bytes(csv.as_bytes(), "t", &LoadOptions::default()).is_err());
    let l = table::load_bytes(
        csv.as_bytes(),
        "t",
        &LoadOptions {
            max_invalid_rows: 1,
            ..LoadOptions::default()
        },
    )
    .unwrap();
    assert_eq!((l.snapshot.len(), l.invalid), (1, 1));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(TABLE.as_bytes()).unwrap();
    let gz = gz.finish().unwrap();
    let a = table::load_bytes(&gz, "t.gz", &LoadOptions::default())
        .unwrap()
        .snapshot;
    assert_eq!(a.len(), tsnap().len());
    // The version is the sha256 of the source bytes as given.
    assert_ne!(a.meta.version, tsnap().meta.version);
    assert_eq!(tsnap().meta.version, tsnap().meta.version);
    // A gzip bomb is capped by the decompressed-size limit.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(TABLE.as_bytes()).unwrap();
    gz.write_all(&vec![b'\n'; 10 << 20]).unwrap();
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 100_000);
    let r = table::load_bytes(
        &bomb,
        "bomb",
        &LoadOptions {
            max_bytes: 1 << 20,
            ..LoadOptions::default()
        },
    );
    assert!(
        matches!(r, Err(TableError::Format(ref m)) if m.contains("decompressed")),
        "{r:?}"
    );
}

/// 50k rows, so the loader's batches (4096 rows) are recycled many times:
/// invalid rows, duplicates and subdomains across batch boundaries are each
/// counted once, and every valid row is found.
#[test]
fn many_batches_count_each_error_once() {
    let mut csv = String::from("domain,icp,filing,access,access_expires,ips\n");
    for i in 0..50_000u32 {
        match i {
            // invalid in the parser (bad name), in three different batches
            5 | 20_000 | 45_000 => csv.push_str("bad..cn,京ICP备1号-1,filed,active,,\n"),
            // a duplicate of row 1, found by the builder much later
            30_000 => csv.push_str("n1.cn,京ICP备1号-1,filed,active,,\n"),
            // subdomains of a row from another batch
            _ if i % 1000 == 999 => csv.push_str(&format!(
                "www.n{}.cn,京ICP备{i}号-1,revoked,active,,\n",
                i - 999
            )),
            _ => csv.push_str(&format!("n{i}.cn,京ICP备{i}号-1,filed,active,,\n")),
        }
    }
    let allowing = |n| LoadOptions {
        max_invalid_rows: n,
        ..LoadOptions::default()
    };
    let l = table::load_bytes(csv.as_bytes(), "t", &allowing(4)).unwrap();
    assert_eq!(l.invalid, 4);
    assert_eq!(l.snapshot.len(), 50_000 - 4);
    let lines: Vec<u64> = l.errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![7, 20_002, 30_002, 45_002]);
    assert!(
        l.errors[2].message.contains("first at line 3"),
        "{:?}",
        l.errors[2]
    );
    for i in [0u32, 4095, 4096, 8191, 49_998] {
        assert_eq!(
            l.snapshot.get(&format!("n{i}.cn")).unwrap().icp(),
            format!("京ICP备{i}号-1")
        );
    }
    // www.n0.cn (row 999) is revoked; n0.cn itself stays filed.
    let w = l.snapshot.lookup("www.n0.cn").unwrap();
    assert_eq!((w.domain(), w.filing()), ("www.n0.cn", Filing::Revoked));
    assert_eq!(l.snapshot.lookup("x.n0.cn").unwrap().domain(), "n0.cn");
    // one more invalid row than the allowance rejects the table
    let r = table::load_bytes(csv.as_bytes(), "t", &allowing(3));
    assert!(
        matches!(r, Err(TableError::Rejected { invalid: 4, .. })),
        "{r:?}"
    );
}

/// A table built in a retired snapshot's memory holds exactly its own rows:
/// nothing of the old table's names, slots or filing numbers shows through,
/// whether the spare is the same size, bigger or smaller.
#[test]
fn builds_in_spare_memory_hold_only_their_own_rows() {
    fn csv(prefix: &str, n: u32) -> String {
        let mut c = String::from("domain,icp,filing,access,access_expires,ips\n");
        for i in 0..n {
            c.push_str(&format!("{prefix}{i}.cn,京ICP备{i}号-1,filed,active,,\n"));
        }
        c
    }
    let opts = LoadOptions::default();
    let mut spare = table::load_bytes(csv("a", 20_000).as_bytes(), "a", &opts)
        .unwrap()
        .snapshot
        .into_spare();
    // same size, then much smaller (spare too big), then bigger (too small)
    for (prefix, n) in [("b", 20_000u32), ("c", 300), ("d", 90_000), ("e", 20_000)] {
        let snap = table::load_bytes_reusing(csv(prefix, n).as_bytes(), prefix, &opts, spare)
            .unwrap()
            .snapshot;
        assert_eq!(snap.len(), n as usize);
        assert_eq!(snap.rows().count(), n as usize);
        for i in [0, n / 2, n - 1] {
            let r = snap.get(&format!("{prefix}{i}.cn")).unwrap();
            assert_eq!(r.icp(), format!("京ICP备{i}号-1"));
        }
        for old in ["a0.cn", "a199.cn", "b5.cn", "c7.cn", "d100.cn"] {
            if !old.starts_with(prefix) {
                assert!(snap.get(old).is_none(), "{old} in table {prefix}");
                assert!(snap.lookup(&format!("www.{old}")).is_none());
            }
        }
        spare = snap.into_spare();
    }
    // A prefaulted spare works too.
    let base = table::load_bytes(csv("f", 5_000).as_bytes(), "f", &opts)
        .unwrap()
        .snapshot;
    let spare = icpgate::snapshot::Spare::prefaulted_like(&base);
    assert!(spare.bytes() > 0);
    let snap = table::load_bytes_reusing(csv("g", 5_000).as_bytes(), "g", &opts, spare)
        .unwrap()
        .snapshot;
    assert_eq!(snap.get("g4999.cn").unwrap().icp(), "京ICP备4999号-1");
    assert!(snap.get("f1.cn").is_none());
}

#[test]
fn shrink_guard() {
    assert!(table::shrink_violation(1000, 900, 0.10).is_none());
    assert!(table::shrink_violation(1000, 899, 0.10).is_some());
    assert!(table::shrink_violation(0, 0, 0.10).is_none());
    assert!(table::shrink_violation(10, 20, 0.10).is_none());
}

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
