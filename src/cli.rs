//! The `check` and `validate` commands (docs/interfaces.md).

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

/// One decision as the JSON object of docs/interfaces.md (also used by the admin API).
pub fn decision_json(
    host: &str,
    snap: &Snapshot,
    d: &Decision<'_>,
    dst: Option<IpAddr>,
    mode: crate::decision::Mode,
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
        "mode": mode.as_str(),
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
        let v = decision_json(host, snap, &d, dst, policy.mode_for(dst), now);
        let line = if as_json {
            v.to_string()
        } else {
            let canonical = v["canonical"].as_str().unwrap_or("(invalid host name)");
            format!(
                "{host}\t{}\t{}\n  canonical: {canonical}\n  mode: {}\n  matched: {}\n  why: {}",
                d.action.as_str(),
                d.reason.as_str(),
                policy.mode_for(dst).as_str(),
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

/// `icpgate diff OLD NEW [--traffic FILE] [--config PATH] [--json]`.
pub fn diff(
    old: &Path,
    new: &Path,
    traffic: Option<&Path>,
    config: Option<&Path>,
    as_json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let run = || -> Result<(serde_json::Value, bool), String> {
        let (policy, max_flip, max_shrink) = match config {
            Some(c) => {
                let cfg = Config::load(c)?;
                (cfg.policy()?, cfg.table.max_flip, cfg.table.max_shrink)
            }
            None => {
                let d = crate::config::TableConfig::default();
                (
                    Policy {
                        mainland: decision::IpRanges::everything(),
                        ..Policy::default()
                    },
                    d.max_flip,
                    d.max_shrink,
                )
            }
        };
        let load = |p: &Path| {
            table::load_path(p, &LoadOptions::default())
                .map(|l| l.snapshot)
                .map_err(|e| format!("{}: {e}", p.display()))
        };
        let (a, b) = (load(old)?, load(new)?);
        let rows = crate::flip::diff(&a, &b);
        let shrink = table::shrink_violation(a.len(), b.len(), max_shrink);
        let flip = match traffic {
            Some(t) => {
                let text =
                    std::fs::read_to_string(t).map_err(|e| format!("{}: {e}", t.display()))?;
                let recent = crate::flip::Recent::new(usize::MAX >> 1);
                for (i, line) in text.lines().enumerate() {
                    let mut w = line.split_whitespace();
                    let Some(name) = w.next() else { continue };
                    let n = match w.next() {
                        None => 1,
                        Some(c) => c.parse::<u64>().map_err(|_| {
                            format!("{}:{}: count {c:?} is not a number", t.display(), i + 1)
                        })?,
                    };
                    recent.add(name, n);
                }
                Some(crate::flip::evaluate(
                    &a,
                    &b,
                    &policy,
                    &recent.entries(),
                    decision::now_unix(),
                ))
            }
            None => None,
        };
        let violation = flip.as_ref().and_then(|f| f.violation(max_flip));
        let reject = shrink.is_some() || violation.is_some();
        Ok((
            json!({
                "old": old.display().to_string(),
                "new": new.display().to_string(),
                "rows": rows,
                "traffic": flip,
                "shrink_violation": shrink,
                "flip_violation": violation,
                "would_be": if reject { "rejected unless forced" } else { "accepted" },
            }),
            reject,
        ))
    };
    match run() {
        Err(e) => {
            let _ = writeln!(err, "icpgate diff: {e}");
            EXIT_ERROR
        }
        Ok((v, reject)) => {
            let text = if as_json {
                v.to_string()
            } else {
                let mut t = format!(
                    "rows: {} -> {} ({} added, {} removed, {} changed)\n",
                    v["rows"]["old_entries"],
                    v["rows"]["new_entries"],
                    v["rows"]["added"],
                    v["rows"]["removed"],
                    v["rows"]["changed"]
                );
                for ex in v["rows"]["examples"].as_array().into_iter().flatten() {
                    t.push_str(&format!("  {}\n", ex.as_str().unwrap_or("")));
                }
                if let Some(f) = v["traffic"].as_object() {
                    t.push_str(&format!(
                        "traffic: {} names, {:.2}% of the traffic newly blocked, {} names newly allowed\n",
                        f["names"],
                        f["share"].as_f64().unwrap_or(0.0) * 100.0,
                        f["newly_allowed"]
                    ));
                    for n in f["newly_blocked"].as_array().into_iter().flatten().take(20) {
                        t.push_str(&format!(
                            "  newly blocked: {} ({}, weight {}{})\n",
                            n["name"].as_str().unwrap_or(""),
                            n["reason"].as_str().unwrap_or(""),
                            n["weight"],
                            if n["top"].as_bool() == Some(true) {
                                ", a busiest name"
                            } else {
                                ""
                            }
                        ));
                    }
                }
                for k in ["shrink_violation", "flip_violation"] {
                    if let Some(m) = v[k].as_str() {
                        t.push_str(&format!("{k}: {m}\n"));
                    }
                }
                t.push_str(&format!(
                    "would be {}",
                    v["would_be"].as_str().unwrap_or("")
                ));
                t
            };
            if writeln!(out, "{text}").is_err() {
                return EXIT_ERROR;
            }
            if reject {
                EXIT_BLOCKED
            } else {
                EXIT_OK
            }
        }
    }
}
