#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Decision cost (canonicalize + apex walk + rules) on 1M and 10M-row
//! synthetic tables, 50% hits / 50% misses over 200k distinct names; and the
//! snapshot build from CSV. Figures go in BENCHMARKS.md.
//!
//!   cargo bench --bench lookup
//!   ICPGATE_BENCH_ROWS=1000000 cargo bench --bench lookup   # skip the 10M table
use std::hint::black_box;
use std::net::IpAddr;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use icpgate::decision::{IpRanges, Policy};
use icpgate::{hostname, synth, table};

const NOW: i64 = 1_795_392_000;

fn sizes() -> Vec<u64> {
    match std::env::var("ICPGATE_BENCH_ROWS") {
        Ok(v) => v.split(',').filter_map(|s| s.trim().parse().ok()).collect(),
        Err(_) => vec![1_000_000, 10_000_000],
    }
}

fn decide(c: &mut Criterion) {
    let policy = Policy {
        mainland: IpRanges::everything(),
        ..Policy::default()
    };
    let dst: Option<IpAddr> = Some("203.0.113.7".parse().unwrap());
    let mut g = c.benchmark_group("decide");
    g.throughput(Throughput::Elements(1));
    for rows in sizes() {
        let mut csv = Vec::new();
        synth::write_table(rows, 1, &mut csv).unwrap();
        let snap = table::load_bytes(&csv, "synthetic", &Default::default())
            .unwrap()
            .snapshot;
        drop(csv);
        let queries = synth::queries(rows, 200_000, 7);
        let hits = queries.iter().filter(|q| snap.lookup(q).is_some()).count();
        eprintln!(
            "{rows} rows: {} queries, {hits} covered by a row",
            queries.len()
        );
        let mut i = 0usize;
        g.bench_with_input(BenchmarkId::from_parameter(rows), &rows, |b, _| {
            b.iter(|| {
                let q = &queries[i];
                i = (i + 1) % queries.len();
                black_box(policy.decide_raw(&snap, black_box(q), dst, NOW).action)
            })
        });
    }
    g.finish();
}

fn canonicalize(c: &mut Criterion) {
    let mut g = c.benchmark_group("canonicalize");
    for (name, host) in [
        ("lowercase", "www.example.com.cn"),
        ("with_port", "www.example.com.cn:443"),
        ("uppercase", "WWW.Example.COM.CN"),
        ("idn", "www.例子。中国"),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| black_box(hostname::canonicalize(black_box(host)).is_ok()))
        });
    }
    g.finish();
}

fn build(c: &mut Criterion) {
    let rows = 1_000_000;
    let mut csv = Vec::new();
    synth::write_table(rows, 1, &mut csv).unwrap();
    let mut g = c.benchmark_group("build");
    g.sample_size(10);
    g.throughput(Throughput::Elements(rows));
    g.bench_function("1M_from_csv", |b| {
        b.iter(|| {
            black_box(
                table::load_bytes(&csv, "synthetic", &Default::default())
                    .unwrap()
                    .snapshot
                    .len(),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, canonicalize, decide, build);
criterion_main!(benches);
