#![allow(clippy::unwrap_used, clippy::expect_used)]
//! What the traffic-aware table guard costs a reload (BENCHMARKS.md):
//!
//!   cargo run --release --example flip_cost -- [ROWS] [NAMES]
//!
//! Loads a synthetic table of ROWS rows (default 1,000,000) twice — the
//! running one and the next — as a reload does, then fills the record of
//! recently allowed names with NAMES names (default 50,000, the cap) and
//! evaluates the next table against it. Prints the load time, the guard's
//! time and its share of the reload, and the record's memory.
use std::time::Instant;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a number"))
        .collect();
    let rows = args.first().copied().unwrap_or(1_000_000);
    let names = args.get(1).copied().unwrap_or(50_000) as usize;
    let mut csv = Vec::new();
    icpgate::synth::write_table(rows, 1, &mut csv).unwrap();
    let opts = icpgate::table::LoadOptions::default();
    let old = icpgate::table::load_bytes(&csv, "old", &opts)
        .unwrap()
        .snapshot;
    let t = Instant::now();
    let new = icpgate::table::load_bytes(&csv, "new", &opts)
        .unwrap()
        .snapshot;
    let load = t.elapsed();

    let queries = icpgate::synth::queries(rows, names, 7);
    let before = rss_kib();
    let recent = icpgate::flip::Recent::new(icpgate::flip::RECENT_NAMES);
    for (i, q) in queries.iter().enumerate() {
        recent.add(q, 1 + (i as u64 % 1000));
    }
    let entries = recent.entries();
    let record_kib = rss_kib().saturating_sub(before);
    let policy = icpgate::decision::Policy {
        mainland: icpgate::decision::IpRanges::everything(),
        ..Default::default()
    };
    let t = Instant::now();
    let report =
        icpgate::flip::evaluate(&old, &new, &policy, &entries, icpgate::decision::now_unix());
    let guard = t.elapsed();
    println!(
        "rows {rows}, names {} (record {} KiB incl. the entries list)\n\
         load of the next table: {:.3} s\n\
         guard (decide every name with both tables): {:.1} ms = {:.1}% of the load\n\
         flipped {} of {} traffic",
        recent.len(),
        record_kib,
        load.as_secs_f64(),
        guard.as_secs_f64() * 1000.0,
        guard.as_secs_f64() / load.as_secs_f64() * 100.0,
        report.flipped,
        report.traffic
    );
}
