#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Sniffing cost: a real post-quantum ClientHello (in one record, and
//! re-framed into 100-byte records), a curl hello, a browser-like request
//! head (classification, and the data path's request planner: parse, Host
//! rules, framing), and a QUIC client Initial (RFC 9001 A.2: initial keys,
//! header protection, decryption, frames, the ClientHello), Chromium's
//! two-Initial hello, and the CONNECTION_CLOSE answer.
//!
//!   cargo bench --bench sniff
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use icpgate::proxy::h1;
use icpgate::sniff::{self, quic, tls};

const CHROMIUM: &[u8] = include_bytes!("../tests/fixtures/clienthello/chromium_pq.bin");
const CURL: &[u8] = include_bytes!("../tests/fixtures/clienthello/curl.bin");
const CHROMIUM_QUIC_0: &[u8] = include_bytes!("../tests/fixtures/quic/chromium156_unfiled_0.bin");
const CHROMIUM_QUIC_1: &[u8] = include_bytes!("../tests/fixtures/quic/chromium156_unfiled_1.bin");

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("sniff");
    g.bench_function("tls_chromium_pq_2022B", |b| {
        b.iter(|| {
            black_box(matches!(
                tls::parse(black_box(CHROMIUM)),
                tls::Parse::Found(_)
            ))
        })
    });
    g.bench_function("tls_curl_517B", |b| {
        b.iter(|| black_box(matches!(tls::parse(black_box(CURL)), tls::Parse::Found(_))))
    });
    let framed = tls::reframe(CHROMIUM, 100);
    g.bench_function("tls_chromium_pq_21_records", |b| {
        b.iter(|| {
            black_box(matches!(
                tls::parse(black_box(&framed)),
                tls::Parse::Found(_)
            ))
        })
    });
    let head = b"GET /index.html?q=1 HTTP/1.1\r\nHost: www.example.com.cn\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36\r\nAccept: text/html,application/xhtml+xml\r\nAccept-Language: zh-CN,zh;q=0.9,en;q=0.8\r\nAccept-Encoding: gzip, deflate, br\r\nConnection: keep-alive\r\n\r\n";
    g.bench_function("classify_http", |b| {
        b.iter(|| black_box(sniff::classify(black_box(head))))
    });
    g.bench_function("h1_plan_pure", |b| {
        b.iter(|| {
            black_box(matches!(
                h1::plan_pure(black_box(head)),
                h1::Pure::Forward { .. }
            ))
        })
    });
    let initial = quic::rfc9001_a2_client_initial();
    g.bench_function("quic_initial_to_hello", |b| {
        b.iter(|| {
            let mut f = quic::Flow::new(16 * 1024);
            black_box(matches!(
                f.feed(black_box(&initial)),
                Ok(quic::Step::Hello(_))
            ))
        })
    });
    // Chromium 156's post-quantum hello: two Initials, CRYPTO in many
    // small frames out of order; then the CONNECTION_CLOSE a block sends.
    let (q0, q1) = (CHROMIUM_QUIC_0, CHROMIUM_QUIC_1);
    g.bench_function("quic_chromium156_two_initials_to_hello", |b| {
        b.iter(|| {
            let mut f = quic::Flow::new(16 * 1024);
            let _ = f.feed(black_box(q0));
            black_box(matches!(f.feed(black_box(q1)), Ok(quic::Step::Hello(_))))
        })
    });
    let mut f = quic::Flow::new(16 * 1024);
    let _ = f.feed(q0);
    let _ = f.feed(q1);
    let mut out = Vec::with_capacity(256);
    g.bench_function("quic_close_packet", |b| {
        b.iter(|| {
            out.clear();
            black_box(f.close_packet(&mut out).is_ok())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
