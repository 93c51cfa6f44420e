//! Table rows (`table::load_bytes`) and `hostname::canonicalize` must never
//! panic or hang; canonicalization must be idempotent.
#![no_main]

use icpgate::hostname::{canonicalize, Host};
use icpgate::table::{load_bytes, LoadOptions};
use libfuzzer_sys::fuzz_target;

const HEADER: &[u8] = b"domain,icp,filing,access,access_expires,ips\n";

fuzz_target!(|data: &[u8]| {
    let mut bytes = Vec::with_capacity(HEADER.len() + data.len());
    bytes.extend_from_slice(HEADER);
    bytes.extend_from_slice(data);
    let opts = LoadOptions {
        max_invalid_rows: usize::MAX,
        max_bytes: 1 << 20,
        ..Default::default()
    };
    let _ = load_bytes(&bytes, "fuzz", &opts);

    let s = String::from_utf8_lossy(data);
    if let Ok(Host::Name(n)) = canonicalize(&s) {
        match canonicalize(&n) {
            Ok(Host::Name(n2)) => assert_eq!(n2, n, "canonicalize not idempotent on {s:?}"),
            other => panic!("canonicalize({s:?}) = {n:?}, but canonicalize({n:?}) = {other:?}"),
        }
    }
});
