//! The QUIC Initial path (`sniff::quic`): long headers, a flow fed with
//! datagrams cut from the input (encrypted: mostly rejected early, which
//! the header and size checks must do without panicking), the frame reader
//! and the CRYPTO reassembler on the input as plaintext, and the handshake
//! entry of the ClientHello parser. Invariants: no panic; the reassembler
//! never exposes more than its limit, and its contiguous prefix only grows.
#![no_main]

use icpgate::sniff::quic::{frames, parse_long_header, Crypto, Flow, Frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_long_header(data);
    let mut flow = Flow::new(16 * 1024);
    for d in data.chunks(1300) {
        let _ = flow.feed(d);
    }
    let mut out = Vec::new();
    let _ = flow.close_packet(&mut out);

    let mut crypto = Crypto::new(4096);
    let mut seen = 0usize;
    for f in frames(data) {
        match f {
            Ok(Frame::Crypto { offset, data }) => {
                let _ = crypto.insert(offset, data);
                let now = crypto.contiguous().len();
                assert!(now <= crypto.max());
                assert!(now >= seen, "contiguous prefix shrank");
                seen = now;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let _ = icpgate::sniff::tls::parse_handshake(data, 16 * 1024);
});
