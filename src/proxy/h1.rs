//! The HTTP/1.x data path: every request on a client connection is parsed,
//! decided (keep-alive and pipelined ones included) and either forwarded or
//! answered with the block page.
//!
//! Forwarding moves the client's own bytes: the request head goes upstream
//! as it arrived unless a hop-by-hop header has to go (RFC 9110 §7.6.1) or
//! an absolute-form target becomes origin-form; bodies are relayed as they
//! come, their end found by `Content-Length` or by scanning the chunked
//! framing (never re-encoded). The response comes back the same way. One
//! task per client connection, which holds one upstream connection while it
//! lives (taken from and given back to a per-listener idle pool): no
//! per-request channel hop, no per-request allocation on the allowed path.
//! Upgrades (`101`) and `CONNECT` 2xx become byte tunnels.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::collections::HashMap;

use super::client::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::chunked::Chunked;
use super::conn::MAX_TUNNEL_DEPTH;
use super::ctx::{record, registrable_of, write_within, ConnInfo, OwnedBlock, Shared};
use super::upstream::Tracked;
use crate::decision::{Action, Decision, Reason};
use crate::hostname::{self, Host};
use crate::metrics::{Proto, Sniffed};
use crate::sniff::http::{header_slots, request_host};

use super::http::REASON_HEADER;

/// Largest upstream response head accepted.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// How long a pooled upstream connection may sit idle.
const POOL_IDLE: Duration = Duration::from_secs(60);
/// Idle upstream connections kept per destination.
const POOL_PER_DEST: usize = 256;
/// After a block answer: how long / how much we read and discard before
/// closing, so the answer is not destroyed by an RST (lingering close).
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 256 * 1024;
/// How long a lingering close may go on while the client keeps sending and
/// our answer is still not acknowledged (nginx's `lingering_time`), and how
/// often it looks.
const LINGER_MAX: Duration = Duration::from_secs(30);
const LINGER_POLL: Duration = Duration::from_millis(50);

/// What a pooled upstream connection may be reused for: its destination,
/// and the client address it was bound from (`source = "client"`): a
/// connection that carries one visitor's address is never handed to
/// another (the origin would attribute one visitor's requests to another).
pub type UpKey = (SocketAddr, Option<SocketAddr>);

type IdleMap = HashMap<UpKey, Vec<(Tracked, Instant)>, foldhash::fast::RandomState>;

/// Idle upstream connections of one listener, by destination and source.
#[derive(Default)]
pub struct UpPool {
    idle: Mutex<IdleMap>,
}

impl UpPool {
    fn take(&self, addr: UpKey) -> Option<Tracked> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(&addr)?;
        while let Some((mut t, since)) = list.pop() {
            if since.elapsed() < POOL_IDLE && t.still_idle() {
                return Some(t);
            }
        }
        None
    }

    fn put(&self, addr: UpKey, t: Tracked) {
        if let Ok(mut idle) = self.idle.lock() {
            let list = idle.entry(addr).or_default();
            if list.len() >= POOL_PER_DEST {
                list.remove(0);
            }
            list.push((t, Instant::now()));
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    None,
    Length(u64),
    Chunked,
    /// Response only: until the upstream closes.
    UntilClose,
}

/// What to do with a parsed request.
enum Plan {
    /// Forward; `obuf` holds the rewritten head unless `verbatim`.
    Forward(Fwd),
    /// `obuf` holds a complete answer; then close. `linger`: the client
    /// may still be sending (keep-alive, a body, pipelined bytes), so read
    /// and drop for a moment before closing, lest an RST destroy the answer.
    Answer { linger: bool },
    /// Shadow mode, a request that cannot be followed: the rest of the
    /// connection (from the unparsed bytes on) is piped to the upstream.
    Pipe,
}

#[derive(Debug, Clone, Copy)]
struct Fwd {
    /// First byte of the request line (after leading empty lines).
    start: usize,
    /// End of the head (through the blank line).
    end: usize,
    verbatim: bool,
    body: Body,
    /// Close the client connection after this response.
    close: bool,
    upgrade: bool,
    connect: bool,
    head: bool,
}

#[derive(Debug, Clone, Copy)]
struct Resp {
    start: usize,
    end: usize,
    verbatim: bool,
    status: u16,
    body: Body,
    /// The upstream connection can carry another request afterwards.
    reusable: bool,
}

enum Next {
    Continue,
    Close,
    /// Tunnel the two connections: a WebSocket (101), blind; or a
    /// `CONNECT` 2xx (`connect`), whose first bytes are sniffed again.
    Tunnel {
        connect: bool,
    },
    /// Shadow mode: pipe the client's unparsed bytes and the rest.
    Pipe,
}

struct Up {
    s: Tracked,
    addr: UpKey,
    /// Came from the pool (or served an earlier request): a failure before
    /// any response byte may just be the upstream having closed it.
    reused: bool,
}

struct Conn<'a> {
    shared: &'a Shared,
    info: &'a ConnInfo,
    client: Client,
    cbuf: Vec<u8>,
    ubuf: Vec<u8>,
    obuf: Vec<u8>,
    up: Option<Up>,
    /// Until the first head is complete: its deadline (from accept).
    first: Option<tokio::time::Instant>,
    /// Inside this many `CONNECT` tunnels. In a tunnel the upstream is the
    /// tunnel itself: never pooled, never replaced.
    depth: u8,
}

/// Serve a client connection the sniffer found to start like HTTP/1.x
/// (`buf`: the bytes read so far). The first head must be complete by
/// `first_deadline`.
pub async fn serve(
    shared: Arc<Shared>,
    info: ConnInfo,
    client: Client,
    buf: Vec<u8>,
    first_deadline: tokio::time::Instant,
    pre: Option<Tracked>,
    depth: u8,
) {
    let mut c = Conn {
        first: Some(first_deadline),
        shared: &shared,
        info: &info,
        client,
        cbuf: buf,
        ubuf: Vec::new(),
        obuf: Vec::new(),
        // An upstream connection opened before the first request (it may
        // have idled: retried once like a pooled one).
        up: pre.map(|s| Up {
            s,
            addr: info.upstream.key(),
            reused: true,
        }),
        depth,
    };
    let next = c.run().await;
    let Conn {
        client,
        cbuf,
        ubuf,
        up,
        ..
    } = c;
    match (next, up) {
        (Next::Tunnel { connect: true }, Some(up)) => {
            // The tunnel is a new connection to decide (docs/data-path.md, Tunnels).
            Box::pin(super::conn::tunnel(
                shared, info, client, up.s, cbuf, ubuf, depth,
            ))
            .await;
        }
        (Next::Tunnel { connect: false }, Some(up)) => {
            // Splicing needs the reactor's socket.
            let Ok(mut client) = client.into_registered() else {
                return;
            };
            let mut upstream = up.s;
            // Bytes already read past the heads go first; a peer that
            // does not take them is as idle as a silent tunnel.
            let idle = Duration::from_secs(shared.limits.idle_timeout_secs);
            if !write_within(&mut *upstream, &cbuf, idle).await
                || !write_within(&mut client, &ubuf, idle).await
            {
                return;
            }
            drop((cbuf, ubuf));
            let limits = &shared.limits;
            super::pipe::pipe(
                &mut client,
                &mut upstream,
                limits.copy_buffer_bytes,
                Duration::from_secs(limits.idle_timeout_secs),
            )
            .await;
        }
        (Next::Pipe, up) => {
            let up = match (up, depth) {
                (Some(up), _) => up.s,
                (None, 0) => match info.upstream.connect(shared.limits.connect_timeout()).await {
                    Ok(s) => s,
                    Err(_) => return client.reset(),
                },
                // In a tunnel whose end is gone: nowhere to forward to.
                (None, _) => return,
            };
            super::conn::pipe_from(&shared, client, up, cbuf).await;
        }
        (_, Some(up)) if depth == 0 => info.listener.pool.put(up.addr, up.s),
        (_, _) => {}
    }
}

impl Conn<'_> {
    fn idle(&self) -> Duration {
        Duration::from_secs(self.shared.limits.idle_timeout_secs)
    }

    async fn run(&mut self) -> Next {
        loop {
            let plan = match self.next_request().await {
                Some(p) => p,
                None => return Next::Close,
            };
            match plan {
                Plan::Answer { linger } => {
                    self.answer_and_close(linger).await;
                    return Next::Close;
                }
                Plan::Pipe => return Next::Pipe,
                Plan::Forward(f) => match self.forward(f).await {
                    Next::Continue => {}
                    other => return other,
                },
            }
            if *self.shared.shutdown.borrow() {
                return Next::Close;
            }
        }
    }

    /// Read until a complete head is buffered, then plan it. `None`: the
    /// connection is over (EOF, timeout, shutdown, or an error answered).
    /// The connection's first head is what the sniffer saw: its outcome is
    /// counted in `icpgate_sniff_total` and its deadline runs from accept.
    async fn next_request(&mut self) -> Option<Plan> {
        let mut header_deadline: Option<tokio::time::Instant> = self.first;
        loop {
            if !self.cbuf.is_empty() {
                // Parsing happens in a plain function: the 4 KiB header
                // array must not become part of this future's state.
                match parse_and_plan(
                    self.shared,
                    self.info,
                    &self.cbuf,
                    &mut self.obuf,
                    self.depth,
                ) {
                    Parsed::Plan(p) => {
                        if self.first.take().is_some() {
                            self.shared.metrics.sniffed(Sniffed::Http);
                        }
                        return Some(p);
                    }
                    Parsed::Invalid => {
                        if self.first.take().is_some() {
                            self.shared.metrics.sniffed(Sniffed::Invalid);
                        }
                        tracing::debug!(peer = %self.info.peer, "invalid request head");
                        return Some(self.refusal(400, Reason::BadRequest));
                    }
                    Parsed::NeedMore => {}
                }
                if self.cbuf.len() >= self.shared.limits.max_sniff_bytes {
                    // Too long to decide on: refused, never passed (414
                    // while the request line is not complete, 431 after).
                    if self.first.take().is_some() {
                        self.shared.metrics.sniffed(Sniffed::Invalid);
                    }
                    let start = skip_empty_lines(&self.cbuf);
                    let line_done = self.cbuf[start..].contains(&b'\n');
                    return Some(self.refusal(if line_done { 431 } else { 414 }, Reason::TooLong));
                }
            }
            let now = tokio::time::Instant::now();
            if self.cbuf.is_empty() {
                // Between requests: idle keep-alive, ends on shutdown too.
                if *self.shared.shutdown.borrow() {
                    return None;
                }
                let mut shutdown = self.shared.shutdown.clone();
                let idle = now + self.idle();
                let read = tokio::time::timeout_at(idle, self.client.read_buf(&mut self.cbuf));
                tokio::select! {
                    // The read first: a request already here (pipelined, or
                    // a quick client) costs no shutdown waiter.
                    biased;
                    r = read => match r {
                        Ok(Ok(n)) if n > 0 => {}
                        _ => return None,
                    },
                    _ = shutdown.wait_for(|s| *s) => return None,
                }
            } else {
                let dl = *header_deadline.get_or_insert(
                    now + Duration::from_millis(self.shared.limits.header_timeout_ms),
                );
                // Never buffer past the cap.
                let room = self.shared.limits.max_sniff_bytes - self.cbuf.len();
                self.cbuf.reserve(room.min(4096));
                let mut limited = (&mut self.client).take(room as u64);
                match tokio::time::timeout_at(dl, limited.read_buf(&mut self.cbuf)).await {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => {
                        // A partial head that stalled or was cut: fail closed.
                        if self.first.is_some() {
                            self.shared.metrics.sniffed(Sniffed::Incomplete);
                        }
                        return None;
                    }
                }
            }
        }
    }

    /// Refuse the request at hand (see [`refusal`]).
    fn refusal(&mut self, status: u16, reason: Reason) -> Plan {
        refusal(self.shared, self.info, &mut self.obuf, status, reason)
    }

    async fn answer_and_close(&mut self, linger: bool) {
        let idle = self.idle();
        if !write_within(&mut self.client, &self.obuf, idle).await {
            return;
        }
        if linger {
            self.linger_close().await;
        }
    }

    /// Lingering close: FIN, then read (and drop) what the client still
    /// sends for a moment, so the answer written before is not lost to an
    /// RST (closing a socket with unread bytes resets it, and the reset
    /// throws away what is still unsent).
    ///
    /// It ends when the client closes, or has been silent for `LINGER`
    /// (nothing unread: the close is clean, and the kernel goes on
    /// delivering the answer), or after `LINGER` / `LINGER_BYTES` once our
    /// answer has been acknowledged. While the client keeps sending and
    /// part of the answer is still out (a large answer, a client reading
    /// slowly while it uploads), the reading goes on, up to `LINGER_MAX`
    /// (at most the idle timeout) in all.
    async fn linger_close(&mut self) {
        let _ = self.client.shutdown().await;
        let start = tokio::time::Instant::now();
        let hard = start + LINGER_MAX.min(self.idle());
        let mut last = start;
        let mut seen = 0;
        loop {
            let now = tokio::time::Instant::now();
            if now >= hard || now >= last + LINGER {
                break;
            }
            let enough = seen >= LINGER_BYTES || now >= start + LINGER;
            if enough && self.client.unacked() == 0 {
                break;
            }
            let until = if enough {
                now + LINGER_POLL
            } else {
                start + LINGER
            };
            self.ubuf.clear();
            self.ubuf.reserve(16 * 1024);
            let read = self.client.read_buf(&mut self.ubuf);
            match tokio::time::timeout_at(until.min(last + LINGER).min(hard), read).await {
                Ok(Ok(n)) if n > 0 => {
                    seen += n;
                    last = tokio::time::Instant::now();
                }
                Ok(_) => break,
                Err(_) => {}
            }
        }
    }

    /// An upstream connection for this client: the one we hold, one from
    /// the pool, or a new one.
    async fn upstream(&mut self) -> Result<(), ()> {
        let addr = self.info.upstream.key();
        if let Some(up) = &self.up {
            if up.addr == addr {
                return Ok(());
            }
        }
        if self.depth > 0 {
            // In a tunnel: once it is gone there is no other way there.
            return Err(());
        }
        if let Some(s) = self.info.listener.pool.take(addr) {
            self.up = Some(Up {
                s,
                addr,
                reused: true,
            });
            return Ok(());
        }
        self.connect().await
    }

    async fn connect(&mut self) -> Result<(), ()> {
        if self.depth > 0 {
            return Err(());
        }
        let t = Duration::from_millis(self.shared.limits.upstream_connect_timeout_ms);
        match self.info.upstream.connect(t).await {
            Ok(s) => {
                self.up = Some(Up {
                    s,
                    addr: self.info.upstream.key(),
                    reused: false,
                });
                Ok(())
            }
            Err(e) => {
                self.shared
                    .metrics
                    .upstream_errors
                    .with_label_values(&[&self.info.listener.label])
                    .inc();
                tracing::debug!(upstream = %self.info.upstream.addr, error = %e, "upstream connect failed");
                Err(())
            }
        }
    }

    async fn fail(&mut self, status: u16) -> Next {
        self.up = None;
        simple(&mut self.obuf, status, None);
        self.answer_and_close(true).await;
        Next::Close
    }

    async fn forward(&mut self, mut f: Fwd) -> Next {
        let idle = self.idle();
        let cap = self.shared.limits.copy_buffer_bytes.max(4096);
        // Body bytes that arrived with the head go out in the same write.
        let mut chunked = Chunked::new();
        let (sent_body, mut body_done) =
            match body_prefix(f.body, &self.cbuf[f.end..], &mut chunked) {
                Ok(p) => p,
                Err(why) => {
                    tracing::debug!(peer = %self.info.peer, why, "bad chunked request body");
                    return self.fail(400).await;
                }
            };
        if !f.verbatim {
            self.obuf
                .extend_from_slice(&self.cbuf[f.end..f.end + sent_body]);
        }
        let mut attempt = 0;
        let resp = loop {
            attempt += 1;
            let got = if attempt == 1 {
                self.upstream().await
            } else {
                self.connect().await
            };
            if got.is_err() {
                return self.fail(502).await;
            }
            let Some(up) = self.up.as_mut() else {
                return self.fail(502).await;
            };
            // Only a request with nothing left to send is retried, and only
            // once, when a reused connection turns out closed.
            let retry = up.reused && attempt == 1 && body_done;
            let out: &[u8] = if f.verbatim {
                &self.cbuf[f.start..f.end + sent_body]
            } else {
                &self.obuf
            };
            if !write_within(&mut *up.s, out, idle).await {
                self.up = None;
                if retry {
                    continue;
                }
                return self.fail(502).await;
            }
            up.reused = true;
            self.ubuf.clear();
            if body_done {
                let head = read_response_head(
                    &mut *up.s,
                    &mut self.client,
                    &mut self.ubuf,
                    &mut self.obuf,
                    f,
                    idle,
                )
                .await;
                match head {
                    Ok(r) => {
                        self.cbuf.drain(..f.end + sent_body);
                        break r;
                    }
                    Err(HeadErr::NothingYet) if retry => {
                        self.up = None;
                        continue;
                    }
                    Err(HeadErr::Client) => {
                        self.up = None;
                        return Next::Close;
                    }
                    Err(_) => return self.fail(502).await,
                }
            }
            // The rest of the body streams while we wait for the response
            // (an interim 100 may be what the client waits for; an early
            // final response ends the exchange).
            self.cbuf.drain(..f.end + sent_body);
            let head = {
                let Ok(client) = self.client.registered() else {
                    self.up = None;
                    return Next::Close;
                };
                let (mut cr, mut cw) = client.split();
                let (mut ur, mut uw) = up.s.split();
                let body = relay(
                    &mut cr,
                    &mut uw,
                    &mut self.cbuf,
                    f.body,
                    sent_body as u64,
                    chunked.clone(),
                    idle,
                    cap,
                );
                let head =
                    read_response_head(&mut ur, &mut cw, &mut self.ubuf, &mut self.obuf, f, idle);
                tokio::pin!(body, head);
                loop {
                    tokio::select! {
                        r = &mut body, if !body_done => match r {
                            Ok(()) => body_done = true,
                            Err(()) => break None,
                        },
                        h = &mut head => break Some(h),
                    }
                }
            };
            match head {
                None => {
                    // The client's body broke off (or was malformed): nothing
                    // sane can follow on either connection.
                    self.up = None;
                    return Next::Close;
                }
                Some(Ok(r)) => break r,
                Some(Err(HeadErr::Client)) => {
                    self.up = None;
                    return Next::Close;
                }
                Some(Err(_)) => return self.fail(502).await,
            }
        };
        if body_done {
            return self.respond(f, resp, body_done, cap).await;
        }
        // Answered before the request body was complete: the rest of the
        // body will not be read, so the connection ends after this answer.
        // Its head was planned while the body still ran: plan it again as
        // the last one (`Connection: close`), relay it, then close the way
        // our own answers do — FIN, then drop what the client still sends
        // for a moment, lest an RST destroy the answer.
        f.close = true;
        let RespParse::Final(resp) = parse_response(&self.ubuf, f, &mut self.obuf) else {
            // The same bytes parsed as a final head a moment ago.
            return self.fail(502).await;
        };
        let next = self.respond(f, resp, false, cap).await;
        if matches!(next, Next::Close) {
            self.linger_close().await;
        }
        next
    }

    /// Send the response head (and body) to the client.
    async fn respond(&mut self, f: Fwd, r: Resp, body_done: bool, cap: usize) -> Next {
        let idle = self.idle();
        let tunnel =
            (r.status == 101 && f.upgrade) || (f.connect && (200..300).contains(&r.status));
        let Some(up) = self.up.as_mut() else {
            return Next::Close;
        };
        if tunnel {
            let out: &[u8] = if r.verbatim {
                &self.ubuf[r.start..r.end]
            } else {
                &self.obuf
            };
            if !write_within(&mut self.client, out, idle).await {
                self.up = None;
                return Next::Close;
            }
            self.ubuf.drain(..r.end);
            return Next::Tunnel { connect: f.connect };
        }
        let mut chunked = Chunked::new();
        let (here, done) = match body_prefix(r.body, &self.ubuf[r.end..], &mut chunked) {
            Ok(p) => p,
            Err(why) => {
                tracing::debug!(upstream = %up.addr.0, why, "bad chunked response body");
                return self.fail(502).await;
            }
        };
        // Bytes after a complete response: the upstream is confused.
        let mut reusable = r.reusable && body_done && r.end + here == self.ubuf.len();
        let out: &[u8] = if r.verbatim {
            &self.ubuf[r.start..r.end + here]
        } else {
            self.obuf.extend_from_slice(&self.ubuf[r.end..r.end + here]);
            &self.obuf
        };
        if !write_within(&mut self.client, out, idle).await {
            self.up = None;
            return Next::Close;
        }
        if !done {
            self.ubuf.clear();
            let relayed = relay(
                &mut *up.s,
                &mut self.client,
                &mut self.ubuf,
                r.body,
                here as u64,
                chunked,
                idle,
                cap,
            )
            .await;
            if relayed.is_err() || !self.ubuf.is_empty() {
                reusable = false;
            }
            if relayed.is_err() {
                self.up = None;
                return Next::Close;
            }
        }
        if !reusable {
            self.up = None;
        }
        if f.close || r.body == Body::UntilClose {
            Next::Close
        } else {
            Next::Continue
        }
    }
}

enum HeadErr {
    /// EOF or reset before any response byte.
    NothingYet,
    /// The upstream's head was malformed, too large or late.
    Bad,
    /// Writing an interim response to the client failed.
    Client,
}

fn simple(out: &mut Vec<u8>, status: u16, reason: Option<Reason>) {
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

/// Copy one message body from `r` to `w` (`done` bytes of it already
/// went). Chunked bodies are scanned to find their end; bytes read past it
/// (a pipelined request) stay in `buf`. Everything else is read exactly.
#[allow(clippy::too_many_arguments)]
async fn relay<R, W>(
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
async fn read_response_head<R, W>(
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

/// A complete request head at the start of `buf`, planned.
fn parse_and_plan(
    shared: &Shared,
    info: &ConnInfo,
    buf: &[u8],
    obuf: &mut Vec<u8>,
    depth: u8,
) -> Parsed {
    let mut slots = header_slots();
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(end)) => {
            Parsed::Plan(plan(shared, info, buf, &req, end, obuf, depth))
        }
        Ok(httparse::Status::Partial) => Parsed::NeedMore,
        Err(_) => Parsed::Invalid,
    }
}

/// A request refused whatever its name (malformed, too long, unsound
/// framing): `status` with `X-Icpgate-Reason` in `out`, counted as a
/// blocking decision with `reason`. In shadow mode it is counted as
/// `would_block` and the connection becomes a pipe from this request on
/// (what cannot be parsed cannot be followed): traffic as if icpgate were
/// not there.
fn refusal(
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

enum Parsed {
    NeedMore,
    /// Not a valid request head.
    Invalid,
    Plan(Plan),
}

enum RespParse {
    Partial,
    /// An interim (1xx) response of this many bytes.
    Interim(usize),
    Final(Resp),
    Bad,
}

fn parse_response(ubuf: &[u8], f: Fwd, obuf: &mut Vec<u8>) -> RespParse {
    let mut slots = header_slots();
    let mut resp = httparse::Response::new(&mut []);
    match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, ubuf, &mut slots)
    {
        Ok(httparse::Status::Complete(end)) => {
            let status = resp.code.unwrap_or(0);
            if (100..200).contains(&status) && status != 101 {
                return RespParse::Interim(end);
            }
            match plan_response(ubuf, &resp, end, f, obuf) {
                Some(r) => RespParse::Final(r),
                None => RespParse::Bad,
            }
        }
        Ok(httparse::Status::Partial) => RespParse::Partial,
        Err(_) => RespParse::Bad,
    }
}

/// How many of `avail` (the bytes read after a head) belong to a body of
/// this kind, and whether they complete it.
fn body_prefix(
    body: Body,
    avail: &[u8],
    chunked: &mut Chunked,
) -> Result<(usize, bool), &'static str> {
    Ok(match body {
        Body::None => (0, true),
        Body::Length(n) => {
            let k = avail.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            (k, k as u64 == n)
        }
        Body::Chunked => (chunked.feed(avail)?, chunked.is_done()),
        Body::UntilClose => (avail.len(), false),
    })
}

/// A `Content-Length` value: digits only (no sign, list or blank).
fn content_length(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// A `Connection` value that says only `keep-alive` (at least once).
fn only_keep_alive(v: &[u8]) -> bool {
    let mut any = false;
    for t in tokens(v) {
        if !t.eq_ignore_ascii_case(b"keep-alive") {
            return false;
        }
        any = true;
    }
    any
}

/// Headers that describe one hop (RFC 9110 §7.6.1), besides those the
/// `Connection` header names.
fn is_hop_header(n: &str) -> bool {
    eq(n, "connection") || eq(n, "keep-alive") || eq(n, "proxy-connection")
}

/// The start line of a head, with its line ending.
fn first_line(head: &[u8]) -> &[u8] {
    let end = head
        .iter()
        .position(|b| *b == b'\n')
        .map_or(head.len(), |i| i + 1);
    &head[..end]
}

fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Comma-separated list tokens of a header value, trimmed, empty ones skipped.
fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|b| *b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// Header names a `Connection` header listed (bounded).
struct Named<'a> {
    names: [&'a [u8]; 16],
    n: usize,
}

impl<'a> Named<'a> {
    fn new() -> Self {
        Named {
            names: [&[]; 16],
            n: 0,
        }
    }
    fn add(&mut self, t: &'a [u8]) -> bool {
        if self.n == self.names.len() {
            return false;
        }
        self.names[self.n] = t;
        self.n += 1;
        true
    }
    fn has(&self, name: &str) -> bool {
        self.names[..self.n]
            .iter()
            .any(|t| t.eq_ignore_ascii_case(name.as_bytes()))
    }
}

/// Start of a message after leading empty lines.
fn skip_empty_lines(buf: &[u8]) -> usize {
    buf.iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(buf.len())
}

/// The head's lines after the first, paired with httparse's headers (one
/// line per header: obsolete line folding is rejected by httparse).
fn header_lines<'b, 'h>(
    head: &'b [u8],
    headers: &'h [httparse::Header<'b>],
) -> impl Iterator<Item = (&'b [u8], &'h httparse::Header<'b>)> {
    head.split_inclusive(|b| *b == b'\n').skip(1).zip(headers)
}

/// Parse, decide and plan one request (the hot path: no allocation when
/// the request is allowed and its head can go out as it is).
fn plan(
    shared: &Shared,
    info: &ConnInfo,
    buf: &[u8],
    req: &httparse::Request<'_, '_>,
    end: usize,
    obuf: &mut Vec<u8>,
    depth: u8,
) -> Plan {
    let started = Instant::now();
    obuf.clear();
    let target = req.path.unwrap_or("");
    let http10 = req.version == Some(0);
    let mut hosts = req
        .headers
        .iter()
        .filter(|h| eq(h.name, "host"))
        .map(|h| h.value);
    let connect = eq(req.method.unwrap_or(""), "CONNECT");
    let host = match request_host(target, connect, http10, &mut hosts) {
        Ok(h) => h,
        Err(reason) => {
            let d = shared.policy.refuse(reason, Some(info.dst));
            if d.action == Action::Block {
                record(shared, Proto::Http, &d, "", info, started);
                simple(obuf, 400, Some(reason));
                return Plan::Answer { linger: true };
            }
            // Shadow mode: forwarded as it came, the refusal recorded.
            return match frame_request(buf, req, end, obuf, depth) {
                Some(f) => {
                    record(shared, Proto::Http, &d, "", info, started);
                    Plan::Forward(f)
                }
                None => refusal(shared, info, obuf, 400, Reason::BadRequest),
            };
        }
    };
    // Allowed (or passed): counted once the framing is known to be sound.
    let allowed = {
        let snap = shared.table.load();
        let now = crate::decision::now_unix();
        // Found once: the lookup walks up to it, a block page shows it.
        let apex = match &host {
            Some(Host::Name(n)) => hostname::registrable_domain(n),
            _ => None,
        };
        let d: Decision<'_> = match &host {
            Some(h) => shared
                .policy
                .decide_host_under(&snap, h, apex, Some(info.dst), now),
            None => shared.policy.decide_no_name(Some(info.dst)),
        };
        if d.action == Action::Block {
            let name = host.as_ref().map(Host::text).unwrap_or_default();
            record(shared, Proto::Http, &d, &name, info, started);
            let block = OwnedBlock::from(&d);
            drop(snap);
            let raw_host = req
                .headers
                .iter()
                .find(|h| eq(h.name, "host"))
                .and_then(|h| std::str::from_utf8(h.value).ok())
                .unwrap_or(target);
            let registrable = match (&host, apex) {
                (_, Some(a)) => Cow::Borrowed(a),
                (Some(h), None) => registrable_of(h),
                (None, None) => Cow::Borrowed(""),
            };
            block_answer(shared, raw_host.trim(), &registrable, &block, obuf);
            // Linger only when more bytes are known to be on their way: a
            // request body, or pipelined bytes already here (nginx's
            // heuristic). A keep-alive client reads our `Connection: close`
            // before it sends again.
            let done = end == buf.len()
                && !req
                    .headers
                    .iter()
                    .any(|h| eq(h.name, "content-length") || eq(h.name, "transfer-encoding"));
            return Plan::Answer { linger: !done };
        }
        // Shadow mode: reported under its name like a block.
        let name = (d.action == Action::WouldBlock).then(|| {
            host.as_ref()
                .map(Host::text)
                .unwrap_or_default()
                .into_owned()
        });
        (d.action, d.reason, name)
    };

    match frame_request(buf, req, end, obuf, depth) {
        Some(f) => {
            let (action, reason, name) = allowed;
            let d = Decision {
                action,
                reason,
                matched: None,
            };
            // An allowed name is recorded for the table guard (sampled).
            let shown = match (&name, &host) {
                (Some(n), _) => n.as_str(),
                (None, Some(Host::Name(n))) => n.as_ref(),
                _ => "",
            };
            record(shared, Proto::Http, &d, shown, info, started);
            Plan::Forward(f)
        }
        None => refusal(shared, info, obuf, 400, Reason::BadRequest),
    }
}

/// What the request planner makes of `buf` without a table or a
/// connection: the parts of the data path that are pure functions of the
/// bytes (for the fuzz target and unit tests).
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pure {
    NeedMore,
    /// Not a request head: 400.
    Invalid,
    /// A head that is refused whatever the table says.
    Refused(Reason),
    /// A head to decide on `host` (canonical; `None`: no name, R3), then
    /// forward as `head`; the request's own head ended at `end`.
    Forward {
        host: Option<String>,
        head: Vec<u8>,
        end: usize,
    },
}

#[doc(hidden)]
pub fn plan_pure(buf: &[u8]) -> Pure {
    let mut slots = header_slots();
    let mut req = httparse::Request::new(&mut []);
    let end = match req.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(end)) => end,
        Ok(httparse::Status::Partial) => return Pure::NeedMore,
        Err(_) => return Pure::Invalid,
    };
    let target = req.path.unwrap_or("");
    let mut hosts = req
        .headers
        .iter()
        .filter(|h| eq(h.name, "host"))
        .map(|h| h.value);
    let connect = eq(req.method.unwrap_or(""), "CONNECT");
    let host = match request_host(target, connect, req.version == Some(0), &mut hosts) {
        Ok(h) => h.map(|h| h.to_string()),
        Err(r) => return Pure::Refused(r),
    };
    let mut obuf = Vec::new();
    match frame_request(buf, &req, end, &mut obuf, 0) {
        None => Pure::Refused(Reason::BadRequest),
        Some(f) if f.verbatim => Pure::Forward {
            host,
            head: buf[f.start..f.end].to_vec(),
            end,
        },
        Some(_) => Pure::Forward {
            host,
            head: obuf,
            end,
        },
    }
}

/// The framing of a request whose host is decided, and its head as it goes
/// upstream (in `obuf` unless `verbatim`): hop-by-hop headers dropped, an
/// absolute-form target made origin-form, upgrades other than WebSocket
/// (h2c included) removed. `None`: unsound framing (conflicting lengths,
/// `Transfer-Encoding` not ending in `chunked`, ...) or a `CONNECT` nested
/// deeper than `MAX_TUNNEL_DEPTH` — refused (400), never forwarded.
fn frame_request(
    buf: &[u8],
    req: &httparse::Request<'_, '_>,
    end: usize,
    obuf: &mut Vec<u8>,
    depth: u8,
) -> Option<Fwd> {
    let target = req.path.unwrap_or("");
    let method = req.method.unwrap_or("");
    let http10 = req.version == Some(0);
    let mut length: Option<u64> = None;
    let mut te = false;
    let mut te_chunked_last = false;
    let mut bad = false;
    let mut hop = false;
    // A hop-by-hop header other than `Connection: keep-alive`.
    let mut hop_other = false;
    let mut close = http10;
    let mut conn_upgrade = false;
    let mut upgrade_hdr = false;
    // An upgrade to anything but WebSocket (h2c included).
    let mut bad_upgrade = false;
    let mut named = Named::new();
    for h in req.headers.iter() {
        let n = h.name;
        if eq(n, "content-length") {
            match (content_length(h.value), length) {
                (None, _) => bad = true,
                (Some(v), Some(prev)) if v != prev => bad = true,
                (Some(v), _) => length = Some(v),
            }
        } else if eq(n, "transfer-encoding") {
            te = true;
            for t in tokens(h.value) {
                if te_chunked_last {
                    // Something after `chunked`, or `chunked` twice.
                    bad = true;
                }
                te_chunked_last = t.eq_ignore_ascii_case(b"chunked");
            }
        } else if eq(n, "connection") {
            hop = true;
            hop_other |= !only_keep_alive(h.value);
            for t in tokens(h.value) {
                if t.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if t.eq_ignore_ascii_case(b"upgrade") {
                    conn_upgrade = true;
                } else if !t.eq_ignore_ascii_case(b"keep-alive") && !named.add(t) {
                    bad = true;
                }
            }
        } else if is_hop_header(n) {
            hop = true;
            hop_other = true;
        } else if eq(n, "http2-settings") {
            bad_upgrade = true;
        } else if eq(n, "upgrade") {
            upgrade_hdr = true;
            if tokens(h.value).any(|t| !t.eq_ignore_ascii_case(b"websocket")) {
                bad_upgrade = true;
            }
        }
    }
    if te && (http10 || !te_chunked_last) {
        bad = true;
    }
    let connect = eq(method, "CONNECT");
    if bad || (connect && depth >= MAX_TUNNEL_DEPTH) {
        return None;
    }
    // TE with CL: chunked wins, CL is dropped, and the connection closes
    // after the response (RFC 9112 §6.1).
    let te_and_cl = te && length.is_some();
    close |= te_and_cl;
    let body = if te {
        Body::Chunked
    } else {
        match length {
            Some(0) | None => Body::None,
            Some(n) => Body::Length(n),
        }
    };
    // An `Upgrade: h2c` would turn the connection into HTTP/2, whose
    // streams name any authority without another decision, and any other
    // protocol but WebSocket would be a blind pipe: the offer is removed
    // (clients then go on in HTTP/1.1; RFC 9113 §3.1 for h2c).
    let upgrade = upgrade_hdr && conn_upgrade && !bad_upgrade;
    let abs_form = !connect && !target.starts_with('/') && target != "*";
    let start = skip_empty_lines(&buf[..end]);
    let f = Fwd {
        start,
        end,
        // `Connection: keep-alive` alone on HTTP/1.1 is what we would say
        // to the upstream ourselves (its pooled connection stays open): it
        // may go as it came.
        verbatim: (!hop || (!hop_other && !http10)) && !te_and_cl && !abs_form && !bad_upgrade,
        body,
        close,
        upgrade,
        connect,
        head: eq(method, "HEAD"),
    };
    if f.verbatim {
        return Some(f);
    }
    // Rewrite: request line (origin-form), kept header lines as they came.
    let head = &buf[start..end];
    obuf.reserve(head.len() + 64);
    if abs_form {
        let after = target.find("://").map_or(target, |i| &target[i + 3..]);
        let path = after.find(['/', '?']).map_or("", |i| &after[i..]);
        obuf.extend_from_slice(method.as_bytes());
        obuf.push(b' ');
        if !path.starts_with('/') {
            obuf.push(b'/');
        }
        obuf.extend_from_slice(path.as_bytes());
        obuf.extend_from_slice(if http10 {
            b" HTTP/1.0\r\n"
        } else {
            b" HTTP/1.1\r\n"
        });
        // HTTP/1.0 may name its host in the target alone: made origin-form,
        // the request carries it as Host (or the origin would serve its
        // default site, not the name decided on).
        if !req.headers.iter().any(|h| eq(h.name, "host")) {
            if let Ok(Some(auth)) = crate::sniff::http::target_authority(target, false) {
                obuf.extend_from_slice(b"Host: ");
                obuf.extend_from_slice(auth.as_bytes());
                obuf.extend_from_slice(b"\r\n");
            }
        }
    } else {
        obuf.extend_from_slice(first_line(head));
    }
    for (line, h) in header_lines(head, req.headers) {
        let n = h.name;
        let drop = is_hop_header(n)
            || (te_and_cl && eq(n, "content-length"))
            || (bad_upgrade && (eq(n, "upgrade") || eq(n, "http2-settings")))
            || (named.has(n)
                && !eq(n, "transfer-encoding")
                && !eq(n, "content-length")
                && !eq(n, "host")
                && (!upgrade || !eq(n, "upgrade")));
        if !drop {
            obuf.extend_from_slice(line);
        }
    }
    if upgrade {
        obuf.extend_from_slice(b"Connection: upgrade\r\n");
    }
    obuf.extend_from_slice(b"\r\n");
    Some(f)
}

/// Framing and hop-by-hop handling of an upstream response head.
fn plan_response(
    ubuf: &[u8],
    resp: &httparse::Response<'_, '_>,
    end: usize,
    f: Fwd,
    obuf: &mut Vec<u8>,
) -> Option<Resp> {
    let status = resp.code?;
    let http11 = resp.version == Some(1);
    let mut length: Option<u64> = None;
    let mut te = false;
    let mut te_chunked_last = false;
    let mut hop = false;
    // A hop-by-hop header other than `Connection: keep-alive`.
    let mut hop_other = false;
    let mut up_close = !http11;
    let mut named = Named::new();
    for h in resp.headers.iter() {
        let n = h.name;
        if eq(n, "content-length") {
            let v = content_length(h.value)?;
            if length.is_some_and(|p| p != v) {
                return None;
            }
            length = Some(v);
        } else if eq(n, "transfer-encoding") {
            te = true;
            te_chunked_last = tokens(h.value)
                .last()
                .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
        } else if eq(n, "connection") {
            hop = true;
            hop_other |= !only_keep_alive(h.value);
            for t in tokens(h.value) {
                if t.eq_ignore_ascii_case(b"close") {
                    up_close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    if !http11 {
                        up_close = false;
                    }
                } else if !t.eq_ignore_ascii_case(b"upgrade") {
                    named.add(t);
                }
            }
        } else if is_hop_header(n) {
            hop = true;
            hop_other = true;
        }
    }
    let tunnel = (status == 101 && f.upgrade) || (f.connect && (200..300).contains(&status));
    if status == 101 && !f.upgrade {
        return None;
    }
    let body = if tunnel || f.head || status == 204 || status == 304 {
        Body::None
    } else if te {
        if te_chunked_last {
            Body::Chunked
        } else {
            Body::UntilClose
        }
    } else {
        match length {
            Some(0) => Body::None,
            Some(n) => Body::Length(n),
            None => Body::UntilClose,
        }
    };
    let start = skip_empty_lines(&ubuf[..end]);
    let add_close = (f.close || body == Body::UntilClose) && !tunnel;
    // `Connection: keep-alive` alone on an HTTP/1.1 response the client's
    // connection outlives is what we would tell the client ourselves: it
    // may go as it came (no rewrite of the head).
    let verbatim = tunnel || (!add_close && (!hop || (!hop_other && http11)));
    let r = Resp {
        start,
        end,
        verbatim,
        status,
        body,
        reusable: !up_close && body != Body::UntilClose && !tunnel,
    };
    if verbatim {
        return Some(r);
    }
    obuf.clear();
    // The head, what we add, and the body bytes read with it: one allocation.
    obuf.reserve(ubuf.len() - start + 32);
    let head = &ubuf[start..end];
    obuf.extend_from_slice(first_line(head));
    for (line, h) in header_lines(head, resp.headers) {
        let n = h.name;
        let drop = is_hop_header(n)
            || (named.has(n) && !eq(n, "transfer-encoding") && !eq(n, "content-length"));
        if !drop {
            obuf.extend_from_slice(line);
        }
    }
    if add_close {
        obuf.extend_from_slice(b"Connection: close\r\n");
    }
    obuf.extend_from_slice(b"\r\n");
    Some(r)
}

/// The block page (docs/interfaces.md, block page) as a complete HTTP/1.1 answer in `out`.
fn block_answer(
    shared: &Shared,
    host: &str,
    registrable: &str,
    block: &OwnedBlock,
    out: &mut Vec<u8>,
) {
    out.clear();
    super::http::render_block(shared, host, registrable, block, |a, page| {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fwd(req: &str) -> (Option<String>, String) {
        match plan_pure(req.as_bytes()) {
            Pure::Forward { host, head, end } => {
                assert!(end <= req.len());
                (host, String::from_utf8(head).unwrap())
            }
            other => panic!("{req:?}: {other:?}"),
        }
    }

    #[test]
    fn heads_forwarded_as_they_came_or_rewritten() {
        let r = "GET / HTTP/1.1\r\nHost: a.cn\r\n\r\n";
        assert_eq!(fwd(r), (Some("a.cn".into()), r.into()));
        // Leading empty lines are not forwarded.
        assert_eq!(fwd(&format!("\r\n{r}")).1, r);
        // HTTP/1.0 naming its host in the target alone: it goes as Host.
        assert_eq!(
            fwd("GET http://a.cn/x HTTP/1.0\r\n\r\n"),
            (
                Some("a.cn".into()),
                "GET /x HTTP/1.0\r\nHost: a.cn\r\n\r\n".into()
            )
        );
        // Absolute form becomes origin form; the Host stays.
        assert_eq!(
            fwd("GET http://a.cn/x?y HTTP/1.1\r\nHost: a.cn\r\n\r\n").1,
            "GET /x?y HTTP/1.1\r\nHost: a.cn\r\n\r\n"
        );
        // Hop-by-hop headers go, and what Connection names.
        assert_eq!(
            fwd("GET / HTTP/1.1\r\nHost: a.cn\r\nConnection: close, X-A\r\nX-A: 1\r\nKeep-Alive: 5\r\n\r\n").1,
            "GET / HTTP/1.1\r\nHost: a.cn\r\n\r\n"
        );
        // h2c and other non-WebSocket upgrades are removed; WebSocket stays.
        assert_eq!(
            fwd("GET / HTTP/1.1\r\nHost: a.cn\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AA\r\n\r\n").1,
            "GET / HTTP/1.1\r\nHost: a.cn\r\n\r\n"
        );
        assert_eq!(
            fwd("GET / HTTP/1.1\r\nHost: a.cn\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n").1,
            "GET / HTTP/1.1\r\nHost: a.cn\r\n\r\n"
        );
        assert_eq!(
            fwd(
                "GET / HTTP/1.1\r\nHost: a.cn\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
            )
            .1,
            "GET / HTTP/1.1\r\nHost: a.cn\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
        );
        // TE with CL: CL dropped.
        assert_eq!(
            fwd("POST / HTTP/1.1\r\nHost: a.cn\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n").1,
            "POST / HTTP/1.1\r\nHost: a.cn\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn unsound_heads_are_refused() {
        for r in [
            "POST / HTTP/1.1\r\nHost: a.cn\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a.cn\r\nContent-Length: +1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a.cn\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a.cn\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.0\r\nHost: a.cn\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(plan_pure(r.as_bytes()), Pure::Refused(Reason::BadRequest), "{r:?}");
        }
        assert_eq!(
            plan_pure(b"GET http://a.cn/ HTTP/1.1\r\n\r\n"),
            Pure::Refused(Reason::AmbiguousHost)
        );
        assert_eq!(
            plan_pure(b"GET / HTTP/1.1\r\nHost: a.cn\r\n"),
            Pure::NeedMore
        );
        assert_eq!(plan_pure(b"GET\x0b/ HTTP/1.1\r\n\r\n"), Pure::Invalid);
        // Authority-form is for CONNECT only; CONNECT takes nothing else
        // (found by the h1_plan fuzz target: the name decided on was not
        // the one forwarded).
        assert_eq!(
            plan_pure(b"GET a.cn?q=1 HTTP/1.0\r\n\r\n"),
            Pure::Refused(Reason::BadRequest)
        );
        assert_eq!(
            plan_pure(b"CONNECT / HTTP/1.1\r\nHost: a.cn\r\n\r\n"),
            Pure::Refused(Reason::BadRequest)
        );
    }
}
