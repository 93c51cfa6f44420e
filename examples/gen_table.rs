#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Generate a synthetic filing table, or measure building one.
//!
//!   cargo run --release --example gen_table -- ROWS OUT.csv     # write a table
//!   cargo run --release --example gen_table -- --build ROWS      # build time + RSS per row
use std::io::{BufWriter, Write};
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

extern "C" {
    #[link_name = "malloc_trim"]
    fn libc_malloc_trim(pad: usize) -> i32;
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag, rows] if flag == "--build" => {
            let rows: u64 = rows.parse().expect("ROWS");
            let mut csv = Vec::new();
            icpgate::synth::write_table(rows, 1, &mut csv).unwrap();
            let name_bytes: u64 = (0..rows)
                .map(|i| icpgate::synth::domain(i).len() as u64)
                .sum();
            let before = rss_kib();
            let t = Instant::now();
            let loaded =
                icpgate::table::load_bytes(&csv, "synthetic", &Default::default()).unwrap();
            let took = t.elapsed();
            let after = rss_kib();
            let csv_len = csv.len() as u64;
            drop(csv);
            let snap = loaded.snapshot;
            // Return freed build temporaries (and the CSV) to the OS so RSS
            // shows what stays: the snapshot.
            unsafe { libc_malloc_trim(0) };
            let trimmed = rss_kib();
            println!(
                "peak-ish rss during build: +{:.1} MB over the CSV",
                (after.saturating_sub(before)) as f64 / 1024.0
            );
            let rss = (trimmed * 1024 + csv_len).saturating_sub(before * 1024);
            println!(
                "rows {} build {:.2?} ({:.0} ns/row)",
                snap.len(),
                took,
                took.as_nanos() as f64 / rows as f64
            );
            println!("rss_delta {:.1} MB = {:.1} B/row; heap_bytes {:.1} B/row; name bytes {:.1} B/row; beyond names {:.1} B/row (rss) {:.1} B/row (heap)",
                rss as f64 / 1e6, rss as f64 / rows as f64,
                snap.heap_bytes() as f64 / rows as f64,
                name_bytes as f64 / rows as f64,
                (rss as f64 - name_bytes as f64) / rows as f64,
                (snap.heap_bytes() as f64 - name_bytes as f64) / rows as f64);
        }
        [rows, out] => {
            let rows: u64 = rows.parse().expect("ROWS");
            let mut w = BufWriter::new(std::fs::File::create(out).expect("create OUT"));
            icpgate::synth::write_table(rows, 1, &mut w).unwrap();
            w.flush().unwrap();
        }
        _ => {
            eprintln!("usage: gen_table ROWS OUT.csv | gen_table --build ROWS");
            std::process::exit(2);
        }
    }
}
