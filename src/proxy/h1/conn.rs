//! One client connection's HTTP/1 life: read each request head (bounded,
//! timed), plan it (decide, or refuse), forward it and its body on the
//! upstream connection the client holds, relay the response back; tunnels
//! after 101 / CONNECT 2xx; icpgate's own answers with a lingering close.

use super::answer::*;
use super::head::*;
use super::pool::*;
use super::relay::*;
use crate::decision::{Action, Decision, Reason};
use crate::hostname::{self, Host};
use crate::metrics::Metrics;
use crate::metrics::{Proto, Sniffed};
use crate::proxy::chunked::Chunked;
use crate::proxy::client::Client;
use crate::proxy::ctx::{record, registrable_of, write_within, ConnInfo, OwnedBlock, Shared};
use crate::proxy::upstream::Tracked;
use crate::snapshot::Snapshot;
use crate::sniff::http::header_slots;
use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// After a block answer: how long / how much we read and discard before
/// closing, so the answer is not destroyed by an RST (lingering close).
pub(super) const LINGER: Duration = Duration::from_millis(500);

pub(super) const LINGER_BYTES: usize = 256 * 1024;

/// How long a lingering close may go on while the client keeps sending and
/// our answer is still not acknowledged (nginx's `lingering_time`), and how
/// often it looks.
pub(super) const LINGER_MAX: Duration = Duration::from_secs(30);

pub(super) const LINGER_POLL: Duration = Duration::from_millis(50);

pub(super) enum Next {
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

pub(super) struct Up {
    pub(super) s: Tracked,
    /// Came from the pool (or served an earlier request): a failure before
    /// any response byte may just be the upstream having closed it.
    pub(super) reused: bool,
}

pub(super) struct Conn<'a> {
    pub(super) shared: &'a Shared,
    pub(super) info: &'a ConnInfo,
    pub(super) client: Client,
    pub(super) cbuf: Vec<u8>,
    pub(super) ubuf: Vec<u8>,
    pub(super) obuf: Vec<u8>,
    pub(super) up: Option<Up>,
    /// The pool key of this client's upstream connections (found once: its
    /// destination and source do not change while the connection lives).
    pub(super) key: UpKey,
    /// Until the first head is complete: its deadline (from accept).
    pub(super) first: Option<tokio::time::Instant>,
    /// Inside this many `CONNECT` tunnels. In a tunnel the upstream is the
    /// tunnel itself: never pooled, never replaced.
    pub(super) depth: u8,
}

/// Serve a client connection the sniffer found to start like HTTP/1.x
/// (`buf`: the bytes read so far). The first head must be complete by
/// `first_deadline`.
#[allow(clippy::manual_async_fn)] // on purpose, see the body
pub fn serve(
    shared: Arc<Shared>,
    info: ConnInfo,
    client: Client,
    buf: Vec<u8>,
    first_deadline: tokio::time::Instant,
    pre: Option<Tracked>,
    depth: u8,
) -> impl Future<Output = ()> + Send {
    // An async block, not an async fn: `shared` and `info` stay where they
    // were captured (an async fn moves each argument into a local of its
    // own, and its state holds both).
    async move {
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
            up: pre.map(|s| Up { s, reused: true }),
            key: info.upstream.key(),
            depth,
        };
        let next = c.run().await;
        let Conn {
            client,
            cbuf,
            ubuf,
            up,
            key,
            ..
        } = c;
        match (next, up) {
            (Next::Tunnel { connect: true }, Some(up)) => {
                // The tunnel is a new connection to decide (docs/data-path.md, Tunnels).
                Box::pin(crate::proxy::conn::tunnel(
                    shared, info, client, up.s, cbuf, ubuf, depth,
                ))
                .await;
            }
            (Next::Tunnel { connect: false }, Some(up)) => {
                // Boxed, as below: rare paths do not size the common one's state.
                Box::pin(websocket(&shared, client, up.s, cbuf, ubuf)).await;
            }
            // In a tunnel whose end is gone: nowhere to forward to.
            (Next::Pipe, None) if depth > 0 => {}
            (Next::Pipe, up) => {
                let up = up.map(|u| u.s);
                Box::pin(crate::proxy::conn::passthrough(
                    &shared, &info, client, cbuf, up,
                ))
                .await;
            }
            (_, Some(up)) if depth == 0 => info.listener.pool.put(key, up.s),
            (_, _) => {}
        }
    }
}

/// After a WebSocket upgrade (101): a blind byte tunnel, the only way an
/// HTTP connection stops being read. Bytes already read past the heads go
/// first; a peer that does not take them is as idle as a silent tunnel.
async fn websocket(
    shared: &Shared,
    client: Client,
    mut upstream: Tracked,
    cbuf: Vec<u8>,
    ubuf: Vec<u8>,
) {
    // Splicing needs the reactor's socket.
    let Ok(mut client) = client.into_registered() else {
        return;
    };
    let idle = shared.limits.idle();
    if !write_within(&mut *upstream, &cbuf, idle).await
        || !write_within(&mut client, &ubuf, idle).await
    {
        return;
    }
    drop((cbuf, ubuf));
    crate::proxy::pipe::pipe(
        &mut client,
        &mut upstream,
        shared.limits.copy_buffer_bytes,
        idle,
    )
    .await;
}

impl Conn<'_> {
    fn idle(&self) -> Duration {
        self.shared.limits.idle()
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
                            Metrics::get().sniffed(Sniffed::Http);
                        }
                        return Some(p);
                    }
                    Parsed::Invalid => {
                        if self.first.take().is_some() {
                            Metrics::get().sniffed(Sniffed::Invalid);
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
                        Metrics::get().sniffed(Sniffed::Invalid);
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
                let dl = *header_deadline.get_or_insert(now + self.shared.limits.header_timeout());
                // Never buffer past the cap.
                let room = self.shared.limits.max_sniff_bytes - self.cbuf.len();
                self.cbuf.reserve(room.min(4096));
                let mut limited = (&mut self.client).take(room as u64);
                match tokio::time::timeout_at(dl, limited.read_buf(&mut self.cbuf)).await {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => {
                        // A partial head that stalled or was cut: fail closed.
                        if self.first.is_some() {
                            Metrics::get().sniffed(Sniffed::Incomplete);
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
        // The connection held is the one for this client's destination and
        // source: they do not change while the client connection lives.
        if self.up.is_some() {
            return Ok(());
        }
        if self.depth > 0 {
            // In a tunnel: once it is gone there is no other way there.
            return Err(());
        }
        if let Some(s) = self.info.listener.pool.take(self.key) {
            self.up = Some(Up { s, reused: true });
            return Ok(());
        }
        self.connect().await
    }

    async fn connect(&mut self) -> Result<(), ()> {
        if self.depth > 0 {
            return Err(());
        }
        let t = self.shared.limits.connect_timeout();
        match self.info.upstream.connect(t).await {
            Ok(s) => {
                self.up = Some(Up { s, reused: false });
                Ok(())
            }
            Err(e) => {
                crate::proxy::ctx::upstream_error(self.info, &e);
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
        let resp = match self
            .send_and_await_head(f, sent_body, &mut body_done, chunked, idle, cap)
            .await
        {
            Ok(r) => r,
            Err(next) => return next,
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

    /// Send the request head (and the body bytes that came with it) on an
    /// upstream connection — once more on a new one if a reused connection
    /// turns out closed before any answer and nothing is left to send —
    /// then the response head. `Err`: the exchange is over (answered with
    /// an error, or closed).
    async fn send_and_await_head(
        &mut self,
        f: Fwd,
        sent_body: usize,
        body_done: &mut bool,
        chunked: Chunked,
        idle: Duration,
        cap: usize,
    ) -> Result<Resp, Next> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let got = if attempt == 1 {
                self.upstream().await
            } else {
                self.connect().await
            };
            if got.is_err() {
                return Err(self.fail(502).await);
            }
            let Some(up) = self.up.as_mut() else {
                return Err(self.fail(502).await);
            };
            // Only a request with nothing left to send is retried, and only
            // once, when a reused connection turns out closed.
            let retry = up.reused && attempt == 1 && *body_done;
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
                return Err(self.fail(502).await);
            }
            up.reused = true;
            self.ubuf.clear();
            if !*body_done {
                // The rest of the body streams while we wait for the
                // response (an interim 100 may be what the client waits
                // for; an early final response ends the exchange). Boxed:
                // the common exchange's state does not carry its size.
                self.cbuf.drain(..f.end + sent_body);
                return Box::pin(
                    self.stream_until_head(f, sent_body, chunked, body_done, idle, cap),
                )
                .await;
            }
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
                    return Ok(r);
                }
                Err(HeadErr::NothingYet) if retry => {
                    self.up = None;
                }
                Err(HeadErr::Client) => {
                    self.up = None;
                    return Err(Next::Close);
                }
                Err(_) => return Err(self.fail(502).await),
            }
        }
    }

    /// Relay the rest of the request body while reading the response head.
    async fn stream_until_head(
        &mut self,
        f: Fwd,
        sent_body: usize,
        chunked: Chunked,
        body_done: &mut bool,
        idle: Duration,
        cap: usize,
    ) -> Result<Resp, Next> {
        let Some(up) = self.up.as_mut() else {
            return Err(Next::Close);
        };
        let head = {
            let Ok(client) = self.client.registered() else {
                self.up = None;
                return Err(Next::Close);
            };
            let (mut cr, mut cw) = client.split();
            let (mut ur, mut uw) = up.s.split();
            let body = relay(
                &mut cr,
                &mut uw,
                &mut self.cbuf,
                f.body,
                sent_body as u64,
                chunked,
                idle,
                cap,
            );
            let head =
                read_response_head(&mut ur, &mut cw, &mut self.ubuf, &mut self.obuf, f, idle);
            tokio::pin!(body, head);
            loop {
                tokio::select! {
                    r = &mut body, if !*body_done => match r {
                        Ok(()) => *body_done = true,
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
                Err(Next::Close)
            }
            Some(Ok(r)) => Ok(r),
            Some(Err(HeadErr::Client)) => {
                self.up = None;
                Err(Next::Close)
            }
            Some(Err(_)) => Err(self.fail(502).await),
        }
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
                tracing::debug!(upstream = %self.key.0, why, "bad chunked response body");
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

/// A complete request head at the start of `buf`, planned.
pub(super) fn parse_and_plan(
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

pub(super) enum Parsed {
    NeedMore,
    /// Not a valid request head.
    Invalid,
    Plan(Plan),
}

/// Parse, decide and plan one request (the hot path: no allocation when
/// the request is allowed and its head can go out as it is).
pub(super) fn plan(
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
    let host = match host_of(req) {
        Ok(h) => h,
        Err(reason) => {
            return host_refused(shared, info, buf, req, end, obuf, depth, reason, started)
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
            return block_plan(
                shared, info, buf, req, end, &host, apex, &d, &snap, obuf, started,
            );
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

/// A request whose host cannot be decided on (R10, a malformed Host, a
/// target of the wrong form): 400 with the reason; in shadow mode forwarded
/// as it came with the refusal recorded (one decision per request: unsound
/// framing is recorded instead).
#[allow(clippy::too_many_arguments)]
fn host_refused(
    shared: &Shared,
    info: &ConnInfo,
    buf: &[u8],
    req: &httparse::Request<'_, '_>,
    end: usize,
    obuf: &mut Vec<u8>,
    depth: u8,
    reason: Reason,
    started: Instant,
) -> Plan {
    let d = shared.policy.refuse(reason, Some(info.dst));
    if d.action == Action::Block {
        record(shared, Proto::Http, &d, "", info, started);
        simple(obuf, 400, Some(reason));
        return Plan::Answer { linger: true };
    }
    match frame_request(buf, req, end, obuf, depth) {
        Some(f) => {
            record(shared, Proto::Http, &d, "", info, started);
            Plan::Forward(f)
        }
        None => refusal(shared, info, obuf, 400, Reason::BadRequest),
    }
}

/// A request blocked by its name: the block page in `obuf`, counted and
/// logged under the name; linger only when more bytes are known to be on
/// their way (a request body, or pipelined bytes already here: nginx's
/// heuristic). A keep-alive client reads our `Connection: close` before it
/// sends again.
#[allow(clippy::too_many_arguments)]
fn block_plan(
    shared: &Shared,
    info: &ConnInfo,
    buf: &[u8],
    req: &httparse::Request<'_, '_>,
    end: usize,
    host: &Option<Host<'_>>,
    apex: Option<&str>,
    d: &Decision<'_>,
    snap: &Snapshot,
    obuf: &mut Vec<u8>,
    started: Instant,
) -> Plan {
    let name = host.as_ref().map(Host::text).unwrap_or_default();
    record(shared, Proto::Http, d, &name, info, started);
    let block = OwnedBlock::new(d, snap);
    let raw_host = req
        .headers
        .iter()
        .find(|h| eq(h.name, "host"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .unwrap_or(req.path.unwrap_or(""));
    let registrable = match (host, apex) {
        (_, Some(a)) => Cow::Borrowed(a),
        (Some(h), None) => registrable_of(h),
        (None, None) => Cow::Borrowed(""),
    };
    block_answer(shared, raw_host.trim(), &registrable, &block, obuf);
    let done = end == buf.len()
        && !req
            .headers
            .iter()
            .any(|h| eq(h.name, "content-length") || eq(h.name, "transfer-encoding"));
    Plan::Answer { linger: !done }
}
