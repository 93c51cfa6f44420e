//! Bytes on the wire: a message body copied from one side to the other
//! (exact lengths, chunked ends found without decoding), and an upstream's
//! response head read with its interim (1xx) responses relayed.

use super::head::*;
use crate::proxy::chunked::Chunked;
use crate::proxy::ctx::write_within;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest upstream response head accepted.
pub(super) const MAX_RESPONSE_HEAD: usize = 64 * 1024;

pub(super) enum HeadErr {
    /// EOF or reset before any response byte.
    NothingYet,
    /// The upstream's head was malformed, too large or late.
    Bad,
    /// Writing an interim response to the client failed.
    Client,
}

/// Copy one message body from `r` to `w` (`done` bytes of it already
/// went). Chunked bodies are scanned to find their end; bytes read past it
/// (a pipelined request) stay in `buf`. Everything else is read exactly.
#[allow(clippy::too_many_arguments)]
pub(super) async fn relay<R, W>(
    r: &mut R,
    w: &mut W,
    buf: &mut Vec<u8>,
    body: Body,
    done: u64,
    mut chunked: Chunked,
    idle: Duration,
    cap: usize,
) -> Result<(), ()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut left = match body {
        Body::Length(n) => n.saturating_sub(done),
        _ => u64::MAX,
    };
    loop {
        if left == 0 || (body == Body::Chunked && chunked.is_done()) || body == Body::None {
            return Ok(());
        }
        buf.clear();
        buf.reserve(cap);
        let want = left.min(cap as u64);
        let n = match tokio::time::timeout(idle, (&mut *r).take(want).read_buf(buf)).await {
            Ok(Ok(n)) => n,
            _ => return Err(()),
        };
        if n == 0 {
            // EOF: the end of a close-delimited body, a truncation otherwise.
            buf.clear();
            return if body == Body::UntilClose {
                Ok(())
            } else {
                Err(())
            };
        }
        let mut k = match body {
            Body::Chunked => chunked.feed(buf).map_err(|_| ())?,
            _ => n,
        };
        // What is written leaves `buf` at once: if this copy is dropped
        // mid-way (an answer that turns the connection into a tunnel
        // while a request body still runs), `buf` holds exactly the bytes
        // not yet sent, and the tunnel sends those — none twice.
        while k > 0 {
            match tokio::time::timeout(idle, w.write(&buf[..k])).await {
                Ok(Ok(m)) if m > 0 => {
                    buf.drain(..m);
                    k -= m;
                    if let Body::Length(_) = body {
                        left -= m as u64;
                    }
                }
                _ => return Err(()),
            }
        }
        if body == Body::Chunked && chunked.is_done() {
            return Ok(());
        }
    }
}

/// Read the upstream's response head into `ubuf`, relaying interim (1xx)
/// responses to the client as they come. On success `obuf` holds the
/// rewritten head unless the result says `verbatim`.
pub(super) async fn read_response_head<R, W>(
    r: &mut R,
    client: &mut W,
    ubuf: &mut Vec<u8>,
    obuf: &mut Vec<u8>,
    f: Fwd,
    idle: Duration,
) -> Result<Resp, HeadErr>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut got_any = false;
    loop {
        if !ubuf.is_empty() {
            match parse_response(ubuf, f, obuf) {
                RespParse::Interim(end) => {
                    if !write_within(client, &ubuf[..end], idle).await {
                        return Err(HeadErr::Client);
                    }
                    ubuf.drain(..end);
                    continue;
                }
                RespParse::Final(r) => return Ok(r),
                RespParse::Partial => {
                    if ubuf.len() >= MAX_RESPONSE_HEAD {
                        return Err(HeadErr::Bad);
                    }
                }
                RespParse::Bad => return Err(HeadErr::Bad),
            }
        }
        ubuf.reserve(4096);
        match tokio::time::timeout(idle, r.read_buf(ubuf)).await {
            Ok(Ok(n)) if n > 0 => got_any = true,
            Ok(_) if !got_any => return Err(HeadErr::NothingYet),
            _ => return Err(HeadErr::Bad),
        }
    }
}
