#![allow(clippy::unwrap_used, clippy::expect_used)]
//! deploy/: every file parsed and checked by `deploy/check.sh` (JSON, YAML,
//! TOML inside the ConfigMap, `promtool check/test rules`, `nft -c`,
//! `systemd-analyze verify`, cross-file consistency). A missing tool is a
//! SKIP inside the script; an invalid file is a failure.

#[test]
fn deploy_files_are_valid() {
    let out = std::process::Command::new("bash")
        .arg("deploy/check.sh")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("0 failed"), "{text}");
}

#[test]
fn dashboard_and_alerts_use_only_exported_metrics() {
    let known = icpgate::metrics::names::ALL;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("deploy/grafana/icpgate-dashboard.json")).unwrap(),
    )
    .unwrap();
    let alerts =
        std::fs::read_to_string(root.join("deploy/prometheus/icpgate-alerts.yml")).unwrap();
    let text = format!("{dash}\n{alerts}");
    let mut used = std::collections::BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(off) = text[i..].find("icpgate_") {
        let start = i + off;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        used.insert(text[start..end].to_owned());
        i = end;
    }
    assert!(!used.is_empty());
    for name in used {
        let base = name
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        assert!(
            known.contains(&name.as_str()) || known.contains(&base),
            "{name} is used by deploy/ but not exported"
        );
    }
}

/// `metrics::names::ALL` is exactly what the registry exports.
#[test]
fn metric_names_list_is_complete() {
    let m = icpgate::metrics::Metrics::get();
    // Labelled families appear once they have a series.
    m.connections_active.with_label_values(&["t"]);
    m.connections_total.with_label_values(&["t"]);
    m.connections_rejected.with_label_values(&["t"]);
    m.connections_shed.with_label_values(&["t"]);
    m.connections_refused.with_label_values(&["t", "loop"]);
    m.upstream_errors.with_label_values(&["t"]);
    let text = m.render();
    let exported: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let listed: std::collections::BTreeSet<&str> =
        icpgate::metrics::names::ALL.iter().copied().collect();
    assert_eq!(exported, listed);
}
