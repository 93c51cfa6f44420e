//! icpgate's own HTTP answers: refusals (400 / 414 / 431 with
//! `X-Icpgate-Reason`, or a pipe in shadow mode) and the block page.

use super::head::*;
use crate::decision::{Action, Reason};
use crate::metrics::Proto;
use crate::proxy::ctx::{record, ConnInfo, OwnedBlock, Shared};
use crate::proxy::http::REASON_HEADER;
use std::time::Instant;

pub(super) fn simple(out: &mut Vec<u8>, status: u16, reason: Option<Reason>) {
    out.clear();
    let phrase = hyper::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let _ = std::io::Write::write_fmt(
        out,
        format_args!(
            "HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\nCache-Control: no-store\r\nConnection: close\r\n"
        ),
    );
    if let Some(r) = reason {
        out.extend_from_slice(REASON_HEADER.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(r.as_str().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let body_len = 4 + phrase.len() + 1;
    let _ = std::io::Write::write_fmt(
        out,
        format_args!("Content-Length: {body_len}\r\n\r\n{status} {phrase}\n"),
    );
}

/// A request refused whatever its name (malformed, too long, unsound
/// framing): `status` with `X-Icpgate-Reason` in `out`, counted as a
/// blocking decision with `reason`. In shadow mode it is counted as
/// `would_block` and the connection becomes a pipe from this request on
/// (what cannot be parsed cannot be followed): traffic as if icpgate were
/// not there.
pub(super) fn refusal(
    shared: &Shared,
    info: &ConnInfo,
    out: &mut Vec<u8>,
    status: u16,
    reason: Reason,
) -> Plan {
    let d = shared.policy.refuse(reason, Some(info.dst));
    record(shared, Proto::Http, &d, "", info, Instant::now());
    if d.action == Action::Block {
        simple(out, status, Some(reason));
        Plan::Answer { linger: true }
    } else {
        Plan::Pipe
    }
}

/// The block page (docs/interfaces.md, block page) as a complete HTTP/1.1 answer in `out`.
pub(super) fn block_answer(
    shared: &Shared,
    host: &str,
    registrable: &str,
    block: &OwnedBlock,
    out: &mut Vec<u8>,
) {
    out.clear();
    crate::proxy::http::render_block(shared, host, registrable, block, |a, page| {
        // The body's length is known up front: head and body are written
        // once each, in place.
        let len = page.len();
        out.reserve(len + 320);
        out.extend_from_slice(b"HTTP/1.1 ");
        crate::block::push_decimal(out, u64::from(a.status.as_u16()));
        out.push(b' ');
        out.extend_from_slice(a.status.canonical_reason().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, value) in a.headers() {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"content-length: ");
        crate::block::push_decimal(out, len as u64);
        out.extend_from_slice(b"\r\n\r\n");
        page.write_to(out);
    });
}
