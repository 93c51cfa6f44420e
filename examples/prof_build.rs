use std::time::Instant;
fn main() {
    let rows = 1_000_000u64;
    let mut csv = Vec::new();
    icpgate::synth::write_table(rows, 1, &mut csv).unwrap();
    let t = Instant::now();
    let mut r = csv::ReaderBuilder::new().has_headers(true).from_reader(&csv[..]);
    let mut rec = csv::ByteRecord::new();
    let mut doms = Vec::new();
    while r.read_byte_record(&mut rec).unwrap() { doms.push(String::from_utf8(rec[0].to_vec()).unwrap()); }
    println!("csv {:?}", t.elapsed());
    let t = Instant::now();
    let mut n = 0; for d in &doms { if icpgate::hostname::canonicalize_bare(d).is_ok() { n += 1; } }
    println!("canon {:?} {n}", t.elapsed());
    let t = Instant::now();
    for d in &doms { if icpgate::hostname::registrable_domain(d).is_some() { n += 1; } }
    println!("psl {:?} {n}", t.elapsed());
    let t = Instant::now();
    for d in &doms { if d.parse::<std::net::Ipv4Addr>().is_ok() { n += 1; } }
    println!("v4 {:?} {n}", t.elapsed());
}
