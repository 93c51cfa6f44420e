#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The real `icpgate` binary: `check` and `validate`, output and exit codes (docs/interfaces.md).

use std::process::{Command, Output};

fn icpgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_icpgate"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn check_json_fields_and_exit_codes() {
    let o = icpgate(&[
        "check",
        "--table",
        "config/demo-table.csv",
        "--json",
        "www.example.com.cn",
        "例子。中国",
    ]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["host"], "www.example.com.cn");
    assert_eq!(lines[0]["canonical"], "www.example.com.cn");
    assert_eq!(lines[0]["decision"], "allow");
    assert_eq!(lines[0]["reason"], "filed");
    assert_eq!(lines[0]["matched"], "example.com.cn");
    assert_eq!(lines[0]["icp"], "京ICP备09051301号-1");
    assert_eq!(lines[1]["canonical"], "xn--fsqu00a.xn--fiqs8s");

    let o = icpgate(&[
        "check",
        "--table",
        "config/demo-table.csv",
        "--json",
        "www.example.com.cn",
        "unknown.cn",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).lines().nth(1).unwrap()).unwrap();
    assert_eq!(v["decision"], "block");
    assert_eq!(v["reason"], "unfiled");
    assert!(v["matched"].is_null() && v["icp"].is_null());
}

#[test]
fn check_human_output_explains() {
    let o = icpgate(&["check", "--table", "config/demo-table.csv", "example.net"]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(
        out.contains("block") && out.contains("no_access_record") && out.contains("接入备案"),
        "{out}"
    );
}

#[test]
fn check_with_config_regions_and_dst() {
    // demo.toml's mainland ranges are loopback: a destination outside passes.
    let o = icpgate(&[
        "check",
        "--config",
        "config/demo.toml",
        "--dst",
        "192.0.2.1",
        "--json",
        "unknown.cn",
    ]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(stdout(&o).contains("\"decision\":\"pass\""));
    let o = icpgate(&[
        "check",
        "--config",
        "config/demo.toml",
        "--dst",
        "127.0.0.1",
        "unknown.cn",
    ]);
    assert_eq!(o.status.code(), Some(1));
    // Without --dst the destination counts as mainland.
    let o = icpgate(&["check", "--config", "config/demo.toml", "unknown.cn"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn check_usage_and_table_errors_exit_2() {
    assert_eq!(
        icpgate(&["check", "--table", "config/demo-table.csv"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        icpgate(&["check", "--table", "/nonexistent.csv", "a.cn"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        icpgate(&[
            "check",
            "--table",
            "config/demo-table.csv",
            "--dst",
            "nope",
            "a.cn"
        ])
        .status
        .code(),
        Some(2)
    );
    // A table that fails validation is refused, never half-used.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "domain,icp,filing,access,access_expires,ips\nok.cn,京ICP备1号-1,filed,active,,\nbad..cn,x1,filed,active,,\n").unwrap();
    let o = icpgate(&["check", "--table", bad.to_str().unwrap(), "ok.cn"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("line 3"));
}

#[test]
fn validate_reports_line_numbers() {
    assert_eq!(
        icpgate(&["validate", "config/demo-table.csv"])
            .status
            .code(),
        Some(0)
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "domain,icp,filing,access,access_expires,ips\nok.cn,京ICP备1号-1,filed,active,,\nx.cn,京ICP备1号-1,filed,maybe,,\nok.cn,京ICP备1号-1,filed,active,,\n").unwrap();
    let o = icpgate(&["validate", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.csv:3: access \"maybe\""), "{err}");
    assert!(
        err.contains("bad.csv:4: duplicate domain ok.cn (first at line 2)"),
        "{err}"
    );
    assert_eq!(
        icpgate(&["validate", "/nonexistent.csv"]).status.code(),
        Some(2)
    );
}

#[test]
fn reference_and_demo_configs_parse() {
    for p in [
        "config/icpgate.reference.toml",
        "config/demo.toml",
        "config/icpgate.toml",
    ] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(p);
        icpgate::config::Config::load(&path).unwrap_or_else(|e| panic!("{p}: {e}"));
    }
}

#[test]
fn bad_config_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    // (a config error, what the message must name)
    for (section, key) in [
        ("[policy]\nip_acess = \"allow\"\n", "ip_acess"),
        ("[block]\ntls = \"maybe\"\n", "tls"),
        ("[runtime]\nworkers = 100000\n", "[runtime] workers"),
        (
            "[limits]\nidle_timeout_secs = 0\n",
            "[limits] idle_timeout_secs",
        ),
        // "No limit" spelt as a huge number: refused, not an overflow.
        (
            "[limits]\nidle_timeout_secs = 9223372036854775807\n",
            "[limits] idle_timeout_secs: at most",
        ),
        (
            "[limits]\nheader_timeout_ms = 9223372036854775807\n",
            "[limits] header_timeout_ms: at most",
        ),
        // source = "client" on a listener with a fixed upstream.
        (
            "[[listener]]\nname = \"l\"\naddr = \"127.0.0.1:1\"\nupstream = \"127.0.0.1:2\"\nsource = \"client\"\n",
            "source = \"client\" needs a transparent listener",
        ),
        (
            "[[listener]]\nname = \"l\"\naddr = \"127.0.0.1:1\"\nsource_port = \"client\"\n",
            "source_port = \"client\" goes with source = \"client\"",
        ),
        (
            "[[regions.rollout]]\ncidr = \"10.0.0.0/8\"\nmode = \"watch\"\n",
            "mode",
        ),
        ("[policy]\nmode = \"loud\"\n", "mode"),
    ] {
        std::fs::write(&p, format!("[table]\npath = \"x.csv\"\n{section}")).unwrap();
        let o = icpgate(&["run", "--config", p.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{section}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(key), "{section}: {err}");
    }
}

#[test]
fn run_without_a_table_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(&p, "[[listener]]\naddr = \"127.0.0.1:0\"\nupstream = \"127.0.0.1:1\"\n[table]\npath = \"/nonexistent/table.csv\"\n[admin]\naddr = \"127.0.0.1:0\"\n").unwrap();
    let o = icpgate(&["run", "--config", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no usable filing table"));
}
