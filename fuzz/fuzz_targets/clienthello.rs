//! `sniff::tls::parse` must never panic or hang, and must be consistent
//! with itself on prefixes of its input.
#![no_main]

use icpgate::sniff::tls::{parse, Parse};
use libfuzzer_sys::fuzz_target;

fn sni_bytes(h: &icpgate::sniff::tls::Hello) -> Option<&[u8]> {
    h.sni.as_ref().map(|s| s.as_bytes())
}

fuzz_target!(|data: &[u8]| {
    let full = parse(data);
    let Parse::Found(h) = full else {
        return;
    };
    assert!(
        h.len <= data.len(),
        "Found.len {} > input length {}",
        h.len,
        data.len()
    );
    // The bytes it says make up the hello are enough on their own.
    match parse(&data[..h.len]) {
        Parse::Found(h2) => assert_eq!(
            sni_bytes(&h2),
            sni_bytes(&h),
            "parse(&data[..len]) found a different SNI"
        ),
        other => panic!("parse(&data[..{}]) = {other:?}, full input gave {full:?}", h.len),
    }
    // A strict prefix is NeedMore or Invalid, or Found with the same SNI
    // (possible when the last record runs past the hello); never Found with
    // a different SNI. Every 7th length only, to keep it cheap.
    for k in (0..data.len()).step_by(7) {
        if let Parse::Found(hk) = parse(&data[..k]) {
            assert_eq!(
                sni_bytes(&hk),
                sni_bytes(&h),
                "prefix of {k} bytes found a different SNI ({hk:?} vs {h:?})"
            );
        }
    }
});
