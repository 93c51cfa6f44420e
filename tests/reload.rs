#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Hot reload with guard rails, the admin API, and swaps under load.
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

fn decision(p: &Proxy, host: &str) -> serde_json::Value {
    let (s, body) = p.admin_get(&format!("/v1/decision?host={host}"));
    assert_eq!(s, 200, "{body}");
    serde_json::from_str(body.split("\r\n\r\n").nth(1).unwrap()).unwrap()
}

fn json_body(resp: &str) -> serde_json::Value {
    let body = resp.split("\r\n\r\n").nth(1).unwrap();
    serde_json::from_str(body).unwrap()
}

/// Replace the table file atomically (write + rename), as exporters do.
fn replace(path: &std::path::Path, content: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn wait_for(mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn table_with(extra: &str) -> String {
    format!("{TABLE}{extra}")
}

/// The table loads so far (the one at start not counted), by result:
/// `successes` successful ones and no other. Asserted after a load that
/// must come last, it also catches an unwanted load that came late.
fn assert_loads(p: &Proxy, successes: f64) {
    for (result, n) in [
        ("success", successes),
        ("unchanged", 0.0),
        ("rejected", 0.0),
        ("error", 0.0),
        ("flip_rejected", 0.0),
    ] {
        let metric = format!("icpgate_table_reloads_total{{result=\"{result}\"}}");
        assert_eq!(p.metric(&metric), n, "{metric}");
    }
}

#[test]
fn file_replacement_is_picked_up_and_bad_tables_are_rejected() {
    let p = Proxy::start(http_upstream(), "\"127.0.0.0/8\"", "");
    assert_eq!(decision(&p, "new.cn")["reason"], "unfiled");
    let v1 = json_body(&p.admin_get("/v1/table").1)["version"].clone();

    replace(
        &p.table_path(),
        &table_with("new.cn,京ICP备1号-1,filed,active,,\n"),
    );
    assert!(
        wait_for(|| decision(&p, "www.new.cn")["decision"] == "allow"),
        "file change not picked up"
    );
    let t = json_body(&p.admin_get("/v1/table").1);
    assert_ne!(t["version"], v1);
    assert_eq!(t["entries"], 7);
    assert!(t["last_error"].is_null());

    // An invalid row: the whole table is rejected, the running one stays.
    replace(
        &p.table_path(),
        &table_with("new.cn,京ICP备1号-1,filed,active,,\nbroken..cn,x1,filed,active,,\n"),
    );
    assert!(wait_for(|| !json_body(&p.admin_get("/v1/table").1)
        ["last_error"]
        .is_null()));
    let t = json_body(&p.admin_get("/v1/table").1);
    assert_eq!(t["entries"], 7);
    let err = &t["last_error"];
    assert_eq!(err["result"], "rejected");
    assert_eq!(err["errors"][0]["line"], 9, "{err}");
    assert_eq!(decision(&p, "www.new.cn")["decision"], "allow");
    assert!(p.metric("icpgate_table_reloads_total{result=\"rejected\"}") >= 1.0);
    assert_eq!(p.metric("icpgate_table_reload_failing"), 1.0);

    // Shrinking by more than 10%: rejected unless forced.
    replace(
        &p.table_path(),
        "domain,icp,filing,access,access_expires,ips\nnew.cn,京ICP备1号-1,filed,active,,\n",
    );
    assert!(wait_for(|| json_body(&p.admin_get("/v1/table").1)
        ["last_error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("shrinks"))));
    assert_eq!(json_body(&p.admin_get("/v1/table").1)["entries"], 7);
    let (s, body) = p.admin_post("/v1/reload");
    assert_eq!(s, 409, "{body}");
    assert_eq!(json_body(&body)["accepted"], false);
    let (s, body) = p.admin_post("/v1/reload?force=1");
    assert_eq!(s, 200, "{body}");
    assert_eq!(json_body(&p.admin_get("/v1/table").1)["entries"], 1);
    assert_eq!(p.metric("icpgate_table_reload_failing"), 0.0);
    assert_eq!(p.metric("icpgate_table_entries"), 1.0);
    assert_eq!(decision(&p, "www.example.com.cn")["reason"], "unfiled");
}

#[test]
fn sighup_reloads_and_post_needs_the_token() {
    // File watching off (no directory events, looks once an hour): only
    // SIGHUP / POST reload.
    let p = Proxy::start_full(
        http_upstream(),
        "\"127.0.0.0/8\"",
        "watch_interval_ms = 3600000\nwatch_events = false",
        "token = \"s3cret\"",
        "",
        TABLE,
    );
    replace(
        &p.table_path(),
        &table_with("hup.cn,京ICP备1号-1,filed,active,,\n"),
    );
    // A moment in which a watcher that should not look could load it.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(decision(&p, "hup.cn")["reason"], "unfiled");
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(p.pid(), libc::SIGHUP) };
    assert!(
        wait_for(|| decision(&p, "hup.cn")["reason"] == "filed"),
        "SIGHUP did not reload"
    );
    // The signal's load is the only one: nothing loaded the file before it,
    // however late (that load would have left the signal's "unchanged").
    assert_loads(&p, 1.0);

    replace(
        &p.table_path(),
        &table_with("hup.cn,京ICP备1号-1,filed,active,,\npost.cn,京ICP备1号-1,filed,active,,\n"),
    );
    assert_eq!(p.admin_post("/v1/reload").0, 401);
    assert_eq!(
        p.admin_post_auth("/v1/reload", "Authorization: Bearer wrong\r\n")
            .0,
        401
    );
    let (s, body) = p.admin_post_auth("/v1/reload", "Authorization: Bearer s3cret\r\n");
    assert_eq!(s, 200, "{body}");
    assert_eq!(decision(&p, "post.cn")["reason"], "filed");
    // Same content again: unchanged.
    let (_, body) = p.admin_post_auth("/v1/reload", "Authorization: Bearer s3cret\r\n");
    assert_eq!(json_body(&body)["report"]["result"], "unchanged");
}

/// A proxy whose watcher looks once an hour: only the directory's events
/// (or a request) can load a change.
fn events_only() -> Proxy {
    Proxy::start_full(
        http_upstream(),
        "\"127.0.0.0/8\"",
        "watch_interval_ms = 3600000",
        "",
        "",
        TABLE,
    )
}

#[test]
fn directory_events_load_a_change_without_waiting_for_a_look() {
    let p = events_only();
    let filed = |host: &str| decision(&p, host)["reason"] == "filed";
    let row = |d: &str| format!("{d},京ICP备1号-1,filed,active,,\n");
    let t = Instant::now();

    // Renamed into place.
    replace(&p.table_path(), &table_with(&row("renamed.cn")));
    assert!(wait_for(|| filed("renamed.cn")), "rename not picked up");

    // Written in place (open with truncation, write, close): loaded at the
    // close, never while the writer still has it open.
    let mut f = std::fs::File::create(p.table_path()).unwrap();
    f.write_all(table_with(&row("half.cn")).as_bytes()).unwrap();
    f.flush().unwrap();
    // The writer keeps it open a while: no load may happen meanwhile.
    std::thread::sleep(Duration::from_millis(600));
    assert!(!filed("half.cn"), "loaded while the writer had it open");
    f.write_all(row("closed.cn").as_bytes()).unwrap();
    drop(f);
    assert!(
        wait_for(|| filed("closed.cn")),
        "write in place not picked up"
    );
    assert!(filed("half.cn"));
    // Two loads so far, the rename's and the close's: none of the
    // truncated or half-written file, even one that came too late for the
    // check above.
    assert_loads(&p, 2.0);

    // A symlink swapped in the directory, as Kubernetes updates a mounted
    // ConfigMap: the event names `..data`, not the table.
    let dir = p.dir.path();
    let version = |v: &str, host: &str| {
        std::fs::create_dir(dir.join(v)).unwrap();
        // As many rows as the running table (the shrink guard stays quiet).
        let rows = format!("{}{}{}", row("half.cn"), row("closed.cn"), row(host));
        std::fs::write(dir.join(v).join("table.csv"), table_with(&rows)).unwrap();
        std::os::unix::fs::symlink(v, dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    };
    version("..v1", "v1.cn");
    std::os::unix::fs::symlink("..data/table.csv", dir.join("link.tmp")).unwrap();
    std::fs::rename(dir.join("link.tmp"), p.table_path()).unwrap();
    assert!(wait_for(|| filed("v1.cn")), "symlinked table not picked up");
    version("..v2", "v2.cn");
    assert!(wait_for(|| filed("v2.cn")), "symlink swap not picked up");
    assert!(!filed("v1.cn"));

    assert!(t.elapsed() < Duration::from_secs(60));
    assert!(json_body(&p.admin_get("/v1/table").1)["last_error"].is_null());
}

/// The table's directory removed (a volume unmounted, a deploy that
/// deletes and recreates it): the last good table keeps serving, the
/// watcher falls back to its looks, and once the directory is back it
/// watches its events again — a later rename is live long before the next
/// look (looks every 4 s here).
#[test]
fn the_watcher_watches_a_recreated_directory_again() {
    directory_comes_back(false);
}

/// The same with the directory renamed away instead of removed (its watch
/// would follow the old directory).
#[test]
fn the_watcher_watches_a_directory_recreated_after_a_rename() {
    directory_comes_back(true);
}

fn directory_comes_back(renamed: bool) {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("tables");
    std::fs::create_dir(&dir).unwrap();
    let table = dir.join("table.csv");
    std::fs::write(&table, TABLE).unwrap();
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let cfg = format!(
        "[[listener]]\naddr = \"127.0.0.1:{}\"\nupstream = \"{}\"\n\
         [regions]\nmainland = [\"127.0.0.0/8\"]\n\
         [table]\npath = \"{}\"\nwatch_interval_ms = 4000\n\
         [admin]\naddr = \"{admin}\"\n",
        free_port(),
        http_upstream(),
        table.display()
    );
    let _p = spawn_config(&cfg, admin);
    let filed = |host: &str| {
        let (s, body) = http_raw(
            admin,
            &format!(
                "GET /v1/decision?host={host} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
            ),
        );
        assert_eq!(s, 200, "{body}");
        json_body(&body)["reason"] == "filed"
    };
    let row = |d: &str| format!("{d},京ICP备1号-1,filed,active,,\n");
    assert!(filed("www.example.com.cn"));

    if renamed {
        std::fs::rename(&dir, root.path().join("tables.old")).unwrap();
    } else {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    // A moment for the watcher to see its directory go.
    std::thread::sleep(Duration::from_millis(300));
    assert!(filed("www.example.com.cn"), "the last good table must stay");

    // Back, with a new table (which has the old rows too): found by a look.
    // The last good table serves until then, through the watcher's looks
    // while its events were lost: checked at every poll, up to the load.
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(&table, table_with(&row("back.cn"))).unwrap();
    assert!(
        wait_for(|| {
            assert!(filed("www.example.com.cn"), "the last good table must stay");
            filed("back.cn")
        }),
        "recreated table not loaded"
    );

    // The look that loaded it was just now; the next is ~4 s away. A
    // rename is live well before it only if the events are watched again.
    let t = Instant::now();
    let rows = format!("{}{}", row("back.cn"), row("evented.cn"));
    replace(&table, &table_with(&rows));
    assert!(wait_for(|| filed("evented.cn")), "rename not picked up");
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "rename took {:?}: directory events not watched again",
        t.elapsed()
    );
}

#[test]
fn a_reload_request_joins_the_watchers_load_of_the_same_file() {
    let p = events_only();
    // A table that takes a while to build, renamed into place: the
    // directory event starts the watcher's load at once.
    // Its build must outlast the 30 ms head start below: a release build
    // of icpgate loads 50k rows in about that time.
    let rows: u64 = if cfg!(debug_assertions) {
        50_000
    } else {
        400_000
    };
    let tmp = p.dir.path().join("big.tmp");
    icpgate::synth::write_table(rows, 7, std::fs::File::create(&tmp).unwrap()).unwrap();
    std::fs::rename(&tmp, p.table_path()).unwrap();
    std::thread::sleep(Duration::from_millis(30));
    // The API request comes while that load runs, for the same file: it
    // gets that load's answer, not a second build saying "unchanged".
    // Loads run at nice 19: on a busy machine one can take many seconds.
    let post_reload = || {
        let mut c = TcpStream::connect(p.admin).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        c.write_all(
            b"POST /v1/reload HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        read_to_end(&mut c)
    };
    let body = post_reload();
    assert_eq!(status_of(&body), 200, "{body}");
    let report = &json_body(&body)["report"];
    assert_eq!(report["result"], "success", "{body}");
    assert_eq!(report["entries"], rows, "{body}");
    assert_eq!(
        p.metric("icpgate_table_reloads_total{result=\"success\"}"),
        1.0
    );
    assert_eq!(
        p.metric("icpgate_table_reloads_total{result=\"unchanged\"}"),
        0.0
    );

    // Asked again with nothing running: a real reload, which finds the
    // file unchanged.
    let body = post_reload();
    assert_eq!(json_body(&body)["report"]["result"], "unchanged", "{body}");
}

/// A one-file HTTP server for the URL source: serves `body` with an ETag,
/// answers 304 to a matching If-None-Match, or `status` when set.
struct Origin {
    addr: SocketAddr,
    body: Arc<Mutex<(u16, String)>>,
    hits: Arc<AtomicU64>,
    not_modified: Arc<AtomicU64>,
}

fn origin(initial: &str) -> Origin {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let body = Arc::new(Mutex::new((200u16, initial.to_owned())));
    let hits = Arc::new(AtomicU64::new(0));
    let nm = Arc::new(AtomicU64::new(0));
    let (b, h, n) = (body.clone(), hits.clone(), nm.clone());
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            h.fetch_add(1, Ordering::SeqCst);
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut inm = None;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("if-none-match:") {
                    inm = Some(v.trim().to_owned());
                }
            }
            let (status, content) = b.lock().unwrap().clone();
            let etag = format!(
                "\"{:x}\"",
                content.len() * 31 + content.bytes().map(u64::from).sum::<u64>() as usize
            );
            let resp = if status != 200 {
                format!("HTTP/1.1 {status} Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            } else if inm.as_deref() == Some(etag.as_str()) {
                n.fetch_add(1, Ordering::SeqCst);
                "HTTP/1.1 304 Not Modified\r\nConnection: close\r\n\r\n".to_owned()
            } else {
                format!("HTTP/1.1 200 OK\r\nETag: {etag}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{content}", content.len())
            };
            let _ = s.write_all(resp.as_bytes());
        }
    });
    Origin {
        addr,
        body,
        hits,
        not_modified: nm,
    }
}

#[test]
fn url_source_etag_304_and_5xx() {
    let o = origin(TABLE);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let admin = free_port();
    let cfg = format!(
        "[[listener]]\naddr = \"127.0.0.1:{port}\"\nupstream = \"127.0.0.1:1\"\n[regions]\nmainland = [\"127.0.0.0/8\"]\n[table]\nurl = \"http://{}/export.csv\"\npoll_interval_secs = 1\n[admin]\naddr = \"127.0.0.1:{admin}\"\n",
        o.addr
    );
    let cfg_path = dir.path().join("c.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let log = dir.path().join("stderr.log");
    let mut child = spawn_icpgate(&cfg_path, &log, None);
    let admin: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    let listener: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_listening(&mut child, &[listener, admin], &log);
    let _running = Spawned { child, dir }; // killed on drop, also when an assert fails
    let get = |path: &str| {
        http_raw(
            admin,
            &format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
        )
        .1
    };
    assert_eq!(json_body(&get("/v1/table"))["entries"], 6);
    // Polls with the ETag get 304 and keep the table.
    assert!(wait_for(|| o.not_modified.load(Ordering::SeqCst) >= 2));
    // A 5xx keeps the table and is reported.
    o.body.lock().unwrap().0 = 503;
    assert!(wait_for(|| json_body(&get("/v1/table"))["last_error"]
        ["message"]
        .as_str()
        .is_some_and(|m| m.contains("503"))));
    assert_eq!(json_body(&get("/v1/table"))["entries"], 6);
    // New content is fetched and swapped in.
    *o.body.lock().unwrap() = (200, table_with("url.cn,京ICP备1号-1,filed,active,,\n"));
    assert!(wait_for(|| json_body(&get("/v1/table"))["entries"] == 7));
    assert!(o.hits.load(Ordering::SeqCst) >= 4);
}

#[test]
fn swaps_under_keep_alive_load_fail_no_request() {
    let p = Proxy::start(http_upstream(), "\"127.0.0.0/8\"", "");
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, addr) = (stop.clone(), ok.clone(), failed.clone(), p.addr);
        workers.push(std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = vec![0u8; 4096];
            while !stop.load(Ordering::Relaxed) {
                s.write_all(b"GET /k HTTP/1.1\r\nHost: www.example.com.cn\r\n\r\n")
                    .unwrap();
                let n = s.read(&mut buf).unwrap_or(0);
                let r = String::from_utf8_lossy(&buf[..n]);
                if r.starts_with("HTTP/1.1 200") && r.contains("path=/k") {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }));
    }
    let before = json_body(&p.admin_get("/v1/table").1)["version"].clone();
    for i in 0..12 {
        let extra = format!("swap{i}.cn,京ICP备1号-1,filed,active,,\n");
        std::fs::write(p.table_path(), table_with(&extra)).unwrap();
        let (s, body) = p.admin_post("/v1/reload");
        assert_eq!(s, 200, "{body}");
        // The watcher may have loaded this write first (its close event).
        let result = json_body(&body)["report"]["result"].clone();
        assert!(result == "success" || result == "unchanged", "{body}");
        std::thread::sleep(Duration::from_millis(30));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(
        ok.load(Ordering::Relaxed) > 100,
        "only {} requests",
        ok.load(Ordering::Relaxed)
    );
    assert_ne!(json_body(&p.admin_get("/v1/table").1)["version"], before);
    assert!(p.metric("icpgate_table_reloads_total{result=\"success\"}") >= 12.0);
}

#[test]
fn admin_endpoints() {
    let p = Proxy::start(http_upstream(), "\"127.0.0.0/8\"", "");
    assert_eq!(p.admin_get("/healthz").0, 200);
    assert_eq!(p.admin_get("/readyz").0, 200);
    for _ in 0..3 {
        http_raw(
            p.addr,
            "GET / HTTP/1.1\r\nHost: a.unknown.cn\r\nConnection: close\r\n\r\n",
        );
    }
    http_raw(
        p.addr,
        "GET / HTTP/1.1\r\nHost: example.net\r\nConnection: close\r\n\r\n",
    );
    let top = json_body(&p.admin_get("/v1/top-blocked?limit=1").1);
    assert_eq!(top["top"][0]["host"], "a.unknown.cn");
    assert_eq!(top["top"][0]["count"], 3);
    assert_eq!(top["top"].as_array().unwrap().len(), 1);
    let d = decision(&p, "%E4%BE%8B%E5%AD%90%E3%80%82%E4%B8%AD%E5%9B%BD");
    assert_eq!(d["canonical"], "xn--fsqu00a.xn--fiqs8s");
    assert_eq!(d["matched"], "xn--fsqu00a.xn--fiqs8s");
    let d = json_body(&p.admin_get("/v1/decision?host=unknown.cn&dst=192.0.2.1").1);
    assert_eq!(d["decision"], "pass");
    assert_eq!(p.admin_get("/v1/decision").0, 400);
    assert_eq!(p.admin_get("/v1/decision?host=a.cn&dst=nope").0, 400);
    assert_eq!(p.admin_get("/nope").0, 404);
    let m = p.admin_get("/metrics").1;
    for name in [
        "icpgate_decisions_total",
        "icpgate_table_entries",
        "icpgate_table_loaded_timestamp_seconds",
        "icpgate_table_age_seconds",
        "icpgate_connections_active",
        "icpgate_decision_duration_seconds_bucket",
        "icpgate_upstream_connect_errors_total",
        "icpgate_sniff_total",
    ] {
        assert!(m.contains(name), "{name} missing");
    }
    // No per-domain labels.
    assert!(!m.contains("unknown.cn"));
}
