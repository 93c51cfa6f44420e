//! The `check` and `validate` commands (SPEC §5).

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;

use serde_json::json;

use crate::config::Config;
use crate::decision::{self, explain, Action, Decision, Policy};
use crate::hostname::{self, Host};
use crate::snapshot::Snapshot;
use crate::table::{self, LoadOptions, TableError};

/// Exit codes of `check` / `validate`.
pub const EXIT_OK: i32 = 0;
pub const EXIT_BLOCKED: i32 = 1;
pub const EXIT_ERROR: i32 = 2;

/// Where `check` gets its table and policy.
pub enum CheckSource<'a> {
    Config(&'a Path),
    Table(&'a Path),
}

/// Load the snapshot and policy for `check`.
pub fn load_for_check(source: CheckSource<'_>) -> Result<(Snapshot, Policy), String> {
    match source {
        CheckSource::Table(path) => {
            let loaded =
                table::load_path(path, &LoadOptions::default()).map_err(|e| e.to_string())?;
            Ok((
                loaded.snapshot,
                Policy {
                    mainland: decision::IpRanges::everything(),
                    ..Policy::default()
                },
            ))
        }
        CheckSource::Config(path) => {
            let cfg = Config::load(path)?;
            let policy = cfg.policy()?;
            let Some(table_path) = cfg.table.path.as_deref() else {
                return Err(format!(
                    "config {} takes its table from a URL; use --table PATH with a downloaded copy",
                    path.display()
                ));
            };
            let loaded = table::load_path(table_path, &cfg.table.load_options())
                .map_err(|e| e.to_string())?;
            Ok((loaded.snapshot, policy))
        }
    }
}

/// One decision as the JSON object of SPEC §5 (also used by the admin API).
pub fn decision_json(
    host: &str,
    snap: &Snapshot,
    d: &Decision<'_>,
    dst: Option<IpAddr>,
    now: i64,
) -> serde_json::Value {
    let canonical = hostname::canonicalize(host).ok();
    let registrable = match &canonical {
        Some(Host::Name(n)) => hostname::registrable_domain(n).map(str::to_owned),
        _ => None,
    };
    json!({
        "host": host,
        "canonical": canonical.as_ref().map(|c| c.to_string()),
        "registrable": registrable,
        "dst": dst.map(|d| d.to_string()),
        "decision": d.action.as_str(),
        "reason": d.reason.as_str(),
        "matched": d.matched.map(|r| r.domain()),
        "icp": d.matched.map(|r| r.icp()),
        "filing": d.matched.map(|r| r.filing().as_str()),
        "access": d.matched.map(|r| r.access().as_str()),
        "access_expires": d.matched.and_then(|r| r.access_expires()).map(decision::rfc3339),
        "explanation": explain(d, now),
        "table_version": snap.meta.version,
    })
}

/// `icpgate check`: print each decision; return the exit code.
pub fn check(
    snap: &Snapshot,
    policy: &Policy,
    hosts: &[String],
    dst: Option<IpAddr>,
    as_json: bool,
    now: i64,
    out: &mut dyn Write,
) -> i32 {
    let mut blocked = false;
    for host in hosts {
        let d = policy.decide_raw(snap, host, dst, now);
        blocked |= d.action == Action::Block;
        let v = decision_json(host, snap, &d, dst, now);
        let line = if as_json {
            v.to_string()
        } else {
            let canonical = v["canonical"].as_str().unwrap_or("(invalid host name)");
            format!(
                "{host}\t{}\t{}\n  canonical: {canonical}\n  matched: {}\n  why: {}",
                d.action.as_str(),
                d.reason.as_str(),
                d.matched
                    .map(|r| format!("{} ({})", r.domain(), r.icp()))
                    .unwrap_or_else(|| "none".into()),
                v["explanation"].as_str().unwrap_or(""),
            )
        };
        if writeln!(out, "{line}").is_err() {
            return EXIT_ERROR;
        }
    }
    if blocked {
        EXIT_BLOCKED
    } else {
        EXIT_OK
    }
}

/// `icpgate validate`: lint a table with the default limits and zero
/// allowance (every invalid row is reported). Returns the exit code.
pub fn validate(path: &Path, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let opts = LoadOptions {
        // Report every invalid row, then reject if there was any.
        max_invalid_rows: usize::MAX,
        ..LoadOptions::default()
    };
    match table::load_path(path, &opts) {
        Ok(loaded) if loaded.invalid == 0 => {
            let _ = writeln!(
                out,
                "{}: ok, {} entries, version {}",
                path.display(),
                loaded.snapshot.len(),
                loaded.snapshot.meta.version
            );
            EXIT_OK
        }
        Ok(loaded) => {
            for e in &loaded.errors {
                let _ = writeln!(err, "{}:{}: {}", path.display(), e.line, e.message);
            }
            if loaded.invalid > loaded.errors.len() {
                let _ = writeln!(err, "… and {} more", loaded.invalid - loaded.errors.len());
            }
            let _ = writeln!(
                err,
                "{}: {} invalid row(s): the table would be rejected",
                path.display(),
                loaded.invalid
            );
            EXIT_BLOCKED
        }
        Err(TableError::Io(e)) => {
            let _ = writeln!(err, "{e}");
            EXIT_ERROR
        }
        Err(e) => {
            let _ = writeln!(err, "{}: {e}", path.display());
            EXIT_BLOCKED
        }
    }
}
