//! The HTTP/1 planner the data path runs (`proxy::h1::plan_pure`: parse,
//! R3/R8/R10 host rules, framing, head rewrite) and the chunked-body scanner
//! (`proxy::chunked`), differentially against `httparse` and themselves:
//!
//! - the planner never panics, and agrees with `httparse` on where a head
//!   ends and whether it is one;
//! - never forwards undecided bytes: a head it would forward, planned again,
//!   is forwarded unchanged and decided on the same host;
//! - the chunked scanner finds the same end of body however its input is
//!   split.
#![no_main]

use icpgate::proxy::chunked::Chunked;
use icpgate::proxy::h1::{plan_pure, Pure};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = icpgate::sniff::classify(data);

    let plan = plan_pure(data);
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    match (&plan, req.parse(data)) {
        (Pure::NeedMore, Ok(httparse::Status::Partial)) => {}
        (Pure::Invalid, Err(_)) => {}
        (Pure::Refused(_), Ok(httparse::Status::Complete(_))) => {}
        (Pure::Forward { end, .. }, Ok(httparse::Status::Complete(n))) => assert_eq!(*end, n),
        (p, h) => panic!("planner {p:?} but httparse {h:?}"),
    }
    if let Pure::Forward { host, head, .. } = &plan {
        assert_eq!(
            icpgate::sniff::classify(head),
            icpgate::sniff::Kind::Http,
            "a forwarded head does not look like HTTP"
        );
        match plan_pure(head) {
            Pure::Forward {
                host: again,
                head: head2,
                end,
            } => {
                assert_eq!(&again, host, "forwarded head names another host");
                assert_eq!(&head2, head, "forwarded head is rewritten again");
                assert_eq!(end, head.len());
            }
            other => panic!("forwarded head plans as {other:?}"),
        }
    }

    // The chunked scanner, whole and split at a point the input chooses.
    let split = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let whole = Chunked::new().feed(data);
    let mut c = Chunked::new();
    let parts = match c.feed(&data[..split]) {
        Ok(n) if n == split && !c.is_done() => c.feed(&data[split..]).map(|m| n + m),
        other => other,
    };
    match (whole, parts) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "chunked end depends on the split"),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("chunked: whole {a:?}, split {b:?}"),
    }
});
