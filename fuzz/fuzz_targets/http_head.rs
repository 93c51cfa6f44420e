//! `sniff::http::parse` and `sniff::classify` must never panic or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let icpgate::sniff::http::Parse::Found(head) = icpgate::sniff::http::parse(data) {
        assert!(head.len <= data.len(), "Head.len {} > input {}", head.len, data.len());
    }
    let _ = icpgate::sniff::classify(data);
});
