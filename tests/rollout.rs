#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Rollout without surprises (docs/table.md Modes, guard rails): shadow mode
//! forwards exactly as if allowed and records would-blocks; per-range modes;
//! a table that would flip busy traffic is refused unless forced; dry runs
//! and `icpgate diff` change nothing.
mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};

use common::*;

fn body(resp: &str) -> serde_json::Value {
    let b = resp.split("\r\n\r\n").nth(1).unwrap_or(resp);
    serde_json::from_str(b).unwrap_or(serde_json::Value::Null)
}

/// Send `bytes`, half-close, return what the recording upstream got.
fn through(addr: SocketAddr, rec: &Recorder, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(bytes).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let got = rec.next().unwrap();
    drop(s);
    got
}

#[test]
fn shadow_mode_forwards_byte_for_byte_and_records_would_blocks() {
    let rec = Recorder::start(None);
    let p = Proxy::start(rec.addr, "\"127.0.0.0/8\"", "[policy]\nmode = \"shadow\"\n");
    let vectors: Vec<Vec<u8>> = vec![
        // Unfiled (the recorder never answers: one request per vector).
        b"GET /a HTTP/1.1\r\nHost: unknown.cn\r\n\r\n".to_vec(),
        // Ambiguous (two Hosts): forwarded as it came.
        b"GET / HTTP/1.1\r\nHost: a.cn\r\nHost: b.cn\r\n\r\n".to_vec(),
        // Malformed: piped from there on.
        b"GET\x0b/ HTTP/1.1\r\nHost: unknown.cn\r\n\r\nanything after".to_vec(),
        // Too long.
        format!(
            "GET /?q={} HTTP/1.1\r\nHost: unknown.cn\r\n\r\n",
            "q".repeat(20_000)
        )
        .into_bytes(),
        // TLS, unfiled SNI; and two names (R10).
        client_hello(&["unknown.cn"]),
        client_hello(&["a.cn", "b.cn"]),
    ];
    for v in &vectors {
        let got = through(p.addr, &rec, v);
        assert_eq!(
            got,
            *v,
            "not forwarded as it came: {:?}",
            String::from_utf8_lossy(v)
        );
    }
    let m = |a: &str, proto: &str, r: &str| {
        p.metric(&format!(
            "icpgate_decisions_total{{decision=\"{a}\",protocol=\"{proto}\",reason=\"{r}\"}}"
        ))
    };
    assert_eq!(m("would_block", "http", "unfiled"), 1.0);
    assert_eq!(m("would_block", "http", "ambiguous_host"), 1.0);
    assert_eq!(m("would_block", "http", "bad_request"), 1.0);
    assert_eq!(m("would_block", "http", "too_long"), 1.0);
    assert_eq!(m("would_block", "tls", "unfiled"), 1.0);
    assert_eq!(m("would_block", "tls", "ambiguous_host"), 1.0);
    assert_eq!(m("block", "http", "unfiled"), 0.0);
    let (_, top) = p.admin_get("/v1/top-blocked");
    assert!(top.contains("unknown.cn"), "{top}");
    let (_, d) = p.admin_get("/v1/decision?host=unknown.cn");
    let d = body(&d);
    assert_eq!(d["decision"], "would_block");
    assert_eq!(d["mode"], "shadow");
    // Keep-alive: an unfiled request, then a filed one, both answered by
    // the origin.
    let p = Proxy::start(
        http_upstream(),
        "\"127.0.0.0/8\"",
        "[policy]\nmode = \"shadow\"\n",
    );
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    s.write_all(b"GET /a HTTP/1.1\r\nHost: unknown.cn\r\n\r\nGET /b HTTP/1.1\r\nHost: www.example.com.cn\r\nConnection: close\r\n\r\n").unwrap();
    let r = read_to_end(&mut s);
    assert!(
        r.contains("host=unknown.cn path=/a") && r.contains("path=/b"),
        "{r}"
    );
    assert!(!r.contains("403"), "{r}");
}

/// `[[regions.rollout]]`: the most specific range wins, over the default.
#[test]
fn rollout_ranges_most_specific_wins() {
    let up = http_upstream();
    let port = free_port();
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let cfg = format!(
        r#"[[listener]]
addr = "127.0.0.1:{port}"
upstream = "{up}"
[[listener]]
addr = "127.0.0.2:{port}"
upstream = "{up}"
[regions]
mainland = ["127.0.0.0/8"]
[[regions.rollout]]
cidr = "127.0.0.0/8"
mode = "shadow"
[[regions.rollout]]
cidr = "127.0.0.1/32"
mode = "enforce"
[table]
path = "{{table}}"
[admin]
addr = "{admin}"
"#
    );
    let _p = spawn_config(&cfg, admin);
    let ask = |ip: [u8; 4]| {
        http_raw(
            SocketAddr::from((ip, port)),
            "GET /r HTTP/1.1\r\nHost: unknown.cn\r\nConnection: close\r\n\r\n",
        )
    };
    // 127.0.0.1: enforce (the /32 beats the /8).
    let (st, _) = ask([127, 0, 0, 1]);
    assert_eq!(st, 403);
    // 127.0.0.2: shadow (the /8): forwarded.
    let (st, r) = ask([127, 0, 0, 2]);
    assert_eq!(st, 200, "{r}");
    assert!(r.contains("host=unknown.cn path=/r"));
    for (dst, mode, decision) in [
        ("127.0.0.1", "enforce", "block"),
        ("127.0.0.9", "shadow", "would_block"),
    ] {
        let (_, d) = http_raw(
            admin,
            &format!("GET /v1/decision?host=unknown.cn&dst={dst} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
        );
        let d = body(&d);
        assert_eq!(
            (d["mode"].as_str(), d["decision"].as_str()),
            (Some(mode), Some(decision))
        );
    }
}

/// A table that would block a busy recently allowed name is refused (the
/// name in the error), a dry run says so and changes nothing, and a forced
/// reload goes through.
#[test]
fn a_table_that_flips_busy_traffic_is_refused_unless_forced() {
    let p = proxy_with_table(TABLE);
    for _ in 0..200 {
        let (st, _) = http_raw(
            p.addr,
            "GET / HTTP/1.1\r\nHost: www.example.com.cn\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(st, 200);
    }
    let (_, before) = p.admin_get("/v1/table");
    let version = body(&before)["version"].clone();
    let flipped = TABLE.replace(
        "example.com.cn,京ICP备09051301号-1,filed,active,,",
        "example.com.cn,京ICP备09051301号-1,revoked,cancelled,,",
    );
    assert_ne!(flipped, TABLE);
    let tmp = p.dir.path().join("next.csv");
    std::fs::write(&tmp, &flipped).unwrap();
    // Touch-free replace; the watcher's interval is an hour here.
    std::fs::rename(&tmp, p.table_path()).unwrap();

    // Dry run: says what would change, changes nothing.
    let (st, r) = p.admin_post("/v1/reload?dry_run=1");
    assert_eq!(st, 200, "{r}");
    let rep = body(&r)["report"].clone();
    assert_eq!(rep["diff"]["changed"], 1, "{r}");
    assert!(
        rep["message"]
            .as_str()
            .unwrap()
            .contains("www.example.com.cn"),
        "{r}"
    );
    assert!(rep["flip"]["share"].as_f64().unwrap() > 0.9, "{r}");
    assert_eq!(body(&p.admin_get("/v1/table").1)["version"], version);

    // A reload is refused, with the name.
    let (st, r) = p.admin_post("/v1/reload");
    assert_eq!(st, 409, "{r}");
    let rep = body(&r)["report"].clone();
    assert_eq!(rep["result"], "flip_rejected");
    assert!(
        rep["message"]
            .as_str()
            .unwrap()
            .contains("www.example.com.cn"),
        "{r}"
    );
    assert_eq!(
        p.metric("icpgate_table_reloads_total{result=\"flip_rejected\"}"),
        1.0
    );
    let t = body(&p.admin_get("/v1/table").1);
    assert_eq!(t["version"], version);
    assert_eq!(t["last_error"]["result"], "flip_rejected");
    let (st, _) = http_raw(
        p.addr,
        "GET / HTTP/1.1\r\nHost: www.example.com.cn\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(st, 200);

    // Forced: goes in.
    let (st, r) = p.admin_post("/v1/reload?force=1");
    assert_eq!(st, 200, "{r}");
    let (st, _) = http_raw(
        p.addr,
        "GET / HTTP/1.1\r\nHost: www.example.com.cn\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(st, 403);
}

/// A change that touches no recent traffic passes the guard.
#[test]
fn a_table_that_flips_nothing_busy_goes_in() {
    let p = proxy_with_table(TABLE);
    for _ in 0..100 {
        http_raw(
            p.addr,
            "GET / HTTP/1.1\r\nHost: www.example.com.cn\r\nConnection: close\r\n\r\n",
        );
    }
    let changed = TABLE.replace(
        "old-portal.com,京ICP备10001234号-1,revoked,cancelled,,",
        "old-portal.com,京ICP备10001234号-1,filed,active,,",
    );
    std::fs::write(p.dir.path().join("n.csv"), &changed).unwrap();
    std::fs::rename(p.dir.path().join("n.csv"), p.table_path()).unwrap();
    let (st, r) = p.admin_post("/v1/reload");
    assert_eq!(st, 200, "{r}");
    assert_eq!(body(&r)["report"]["result"], "success", "{r}");
}

fn proxy_with_table(table: &str) -> Proxy {
    Proxy::start_full(
        http_upstream(),
        "\"127.0.0.0/8\"",
        "watch_interval_ms = 3600000\nwatch_events = false",
        "",
        "",
        table,
    )
}

#[test]
fn diff_cli_reports_and_judges() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.csv");
    let new = dir.path().join("new.csv");
    let traffic = dir.path().join("traffic.txt");
    std::fs::write(&old, TABLE).unwrap();
    std::fs::write(
        &new,
        TABLE.replace(
            "example.com.cn,京ICP备09051301号-1,filed,active,,",
            "example.com.cn,京ICP备09051301号-1,revoked,cancelled,,",
        ),
    )
    .unwrap();
    std::fs::write(&traffic, "www.example.com.cn 900\nshop.example.net 100\n").unwrap();
    let run = |args: &[&std::path::Path]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_icpgate"))
            .arg("diff")
            .args(args)
            .arg("--json")
            .output()
            .unwrap();
        (
            o.status.code(),
            serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap(),
        )
    };
    let (code, v) = run(&[&old, &new, std::path::Path::new("--traffic"), &traffic]);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["rows"]["changed"], 1);
    assert_eq!(v["traffic"]["flipped"], 900);
    assert_eq!(
        v["traffic"]["newly_blocked"][0]["name"],
        "www.example.com.cn"
    );
    let (code, v) = run(&[&old, &old]);
    assert_eq!(code, Some(0), "{v}");
}
