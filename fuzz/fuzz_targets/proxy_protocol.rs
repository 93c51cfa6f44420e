//! `proxy::proxy_protocol::parse` must never panic or hang.
#![no_main]

use icpgate::proxy::proxy_protocol::{parse, ProxyParse, MAX_HEADER};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let ProxyParse::Found(h) = parse(data) {
        assert!(h.len <= data.len(), "header len {} > input {}", h.len, data.len());
        assert!(h.len <= MAX_HEADER, "header len {} > MAX_HEADER", h.len);
    }
});
