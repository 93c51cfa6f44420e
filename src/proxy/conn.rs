//! A connection's path (docs/data-path.md): accept → destination → PROXY
//! header → R2 → first bytes (or whoever speaks first) → classification →
//! the TLS, HTTP or other path. Tunnels (`CONNECT`) come back here as new
//! connections inside the old one.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::time::timeout_at;

use super::client::Client;
use super::ctx::{record, upstream_error, write_within, ConnInfo, ListenerCtx, Shared};
use super::upstream::{Tracked, Upstream};
use super::{h1, origdst, pipe, proxy_protocol, tls, upstream};
use crate::config::{Limits, Transparent};
use crate::decision::Action;
use crate::metrics::Metrics;
use crate::metrics::{Proto, Sniffed};
use crate::sniff;

/// Why a connection ended before a decision.
#[derive(Debug)]
pub(crate) enum Early {
    /// Partial ClientHello / head / PROXY header stalled or was cut.
    Incomplete,
    Invalid(#[allow(dead_code)] &'static str),
    Io,
}

/// Handle one accepted connection to the end: where it was going, the
/// loop guards, the PROXY header, R2, its first bytes, then the path for
/// what they are.
pub async fn handle(
    shared: Arc<Shared>,
    lctx: Arc<ListenerCtx>,
    mut stream: Client,
    peer: SocketAddr,
) {
    // Without deferred accept a connection is usually handed over before
    // its first bytes: a direct `recv` would mostly fail with EAGAIN, so it
    // is registered now and the first read waits for one event-loop turn.
    // With it, the bytes are there (see `client`).
    if !lctx.defer_accept && stream.registered().is_err() {
        return;
    }
    let Some((local, upstream, dst)) = destination(&lctx, &stream, peer) else {
        return;
    };
    if let Some(reason) = loop_guard(&lctx, peer, local, &upstream).await {
        refuse(&shared, &lctx, peer, stream, reason);
        return;
    }
    let mut info = ConnInfo {
        peer,
        dst,
        upstream,
        listener: lctx.clone(),
    };
    let mut buf: Vec<u8> = Vec::with_capacity(2048);
    let mut header_deadline = tokio::time::Instant::now() + shared.limits.header_timeout();
    if lctx.proxy_protocol {
        match read_proxy_header(&mut stream, &mut buf, header_deadline).await {
            Ok(Some((src, orig))) => {
                info.peer = src;
                info.dst = orig.ip();
                if lctx.upstream.is_none() {
                    info.upstream = Upstream::new(orig, lctx.fwmark);
                }
            }
            Ok(None) => {}
            Err(e) => {
                count_early(&e);
                return;
            }
        }
    }
    // The origin sees the visitor: upstream connections leave from the
    // client's address (after the PROXY header: its address is the one).
    if lctx.source == crate::config::Source::Client {
        let port = match lctx.source_port {
            crate::config::SourcePort::Client => info.peer.port(),
            crate::config::SourcePort::Any => 0,
        };
        info.upstream = info
            .upstream
            .from_client(SocketAddr::new(info.peer.ip(), port));
    }
    // R2: destinations outside the mainland ranges pass untouched, unsniffed.
    if !shared.policy.enforced(Some(info.dst)) {
        let started = Instant::now();
        let d = shared.policy.decide_no_name(Some(info.dst));
        record(&shared, Proto::Other, &d, "", &info, started);
        Box::pin(passthrough(&shared, &info, stream, buf, None)).await;
        return;
    }
    let pre = match first_bytes(&shared, &info, &mut stream, &mut buf, &mut header_deadline).await {
        First::Client(pre) => pre,
        First::Server(up, said) => {
            Box::pin(server_spoke_first(&shared, &info, stream, up, said)).await;
            return;
        }
        First::Gone => return,
    };
    let cap = shared.limits.max_sniff_bytes;
    let path = match path_of(&buf, cap) {
        Some(path) => path,
        None => match sniff_path(&mut stream, &mut buf, header_deadline, cap).await {
            Some(path) => path,
            None => return,
        },
    };
    take_path(path, shared, info, stream, buf, pre, header_deadline, 0).await;
}

/// Where the connection was headed: the socket's local address, the
/// upstream (fixed, or the original destination) and the destination IP
/// for R2/R7. `None`: unknown (logged), the connection is dropped.
#[inline(always)] // once per connection: written straight into its state
fn destination(
    lctx: &ListenerCtx,
    stream: &Client,
    peer: SocketAddr,
) -> Option<(SocketAddr, Upstream, std::net::IpAddr)> {
    // TCP_NODELAY comes from the listening socket. A listener bound to one
    // address with a fixed upstream knows its local address without asking.
    let local = if lctx.upstream.is_some() && !lctx.addr.ip().is_unspecified() {
        lctx.addr
    } else {
        stream.local_addr().ok()?
    };
    Some(match (lctx.upstream, lctx.transparent) {
        (Some(up), _) => (local, Upstream::new(up, lctx.fwmark), local.ip()),
        (None, Transparent::Tproxy) => (local, Upstream::new(local, lctx.fwmark), local.ip()),
        (None, Transparent::Redirect) => match stream
            .fd()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotConnected))
            .and_then(|fd| origdst::original_dst(&fd, local.is_ipv6()))
        {
            Ok(orig) => (local, Upstream::new(orig, lctx.fwmark), orig.ip()),
            Err(e) => {
                tracing::warn!(listener = %lctx.label, %peer, error = %e, "no original destination (is the nftables REDIRECT in place?); closing");
                return None;
            }
        },
    })
}

/// Loop guards. (1) A transparent listener reached directly (no
/// REDIRECT/TPROXY in front) would "forward" to itself. (2) One of our own
/// upstream connections came back to us (the fwmark bypass is missing or
/// does not match): forwarding it again would multiply connections until
/// file descriptors run out. The cause, if refused.
async fn loop_guard(
    lctx: &ListenerCtx,
    peer: SocketAddr,
    local: SocketAddr,
    upstream: &Upstream,
) -> Option<&'static str> {
    // Where this connection was headed: the original destination in
    // transparent modes, our own listening address otherwise.
    let arrived_for = if lctx.upstream.is_some() {
        local
    } else {
        upstream.addr
    };
    if upstream::is_own(peer, arrived_for).await {
        Some("loop")
    } else if lctx.upstream.is_none()
        && not_intercepted(lctx.transparent, local, upstream.addr, lctx.addr)
    {
        Some("not_intercepted")
    } else {
        None
    }
}

/// Reset a connection the loop guards refused; counted, logged (limited).
fn refuse(shared: &Shared, lctx: &ListenerCtx, peer: SocketAddr, stream: Client, reason: &str) {
    Metrics::get()
        .connections_refused
        .with_label_values(&[&lctx.label, reason])
        .inc();
    if shared.log.warn_admit() {
        tracing::warn!(listener = %lctx.label, %peer, reason, "refusing connection: {}", if reason == "loop" {
            "it is one of icpgate's own upstream connections (check upstream_fwmark and the nftables bypass)"
        } else {
            "not intercepted (its destination is the listener itself)"
        });
    }
    stream.reset();
}

/// The client's first bytes, into `buf`. Nothing yet: wait briefly for
/// the client to speak; then whoever speaks first decides (see
/// [`first_speaker`]; the header deadline then runs from the client's first
/// byte). First one read without a timer: a client's first bytes usually
/// follow its handshake within microseconds (a registered socket: after one
/// turn of the event loop; with deferred accept they are queued already and
/// the socket need not even enter epoll, see `client`). Arming (then
/// cancelling) the server-first timer for every connection costs more.
/// The connection is borrowed, so that its path's future is not part of
/// this one's.
async fn first_bytes(
    shared: &Shared,
    info: &ConnInfo,
    stream: &mut Client,
    buf: &mut Vec<u8>,
    header_deadline: &mut tokio::time::Instant,
) -> First {
    if buf.is_empty() {
        if !info.listener.defer_accept {
            tokio::task::yield_now().await;
        }
        match read_now(stream, buf).await {
            Some(Ok(0)) | Some(Err(_)) => return First::Gone,
            Some(Ok(_)) | None => {}
        }
    }
    if !buf.is_empty() {
        return First::Client(None);
    }
    let wait = tokio::time::Instant::now() + server_first_wait(&shared.limits, info.peer);
    match timeout_at(wait, stream.read_buf(buf)).await {
        Err(_) => {
            // Boxed: a silent client is the rare case.
            let first = Box::pin(first_speaker(shared, info, stream, buf, None)).await;
            if let First::Client(_) = first {
                *header_deadline = tokio::time::Instant::now() + shared.limits.header_timeout();
            }
            first
        }
        Ok(Ok(0)) | Ok(Err(_)) => First::Gone,
        Ok(Ok(_)) => First::Client(None),
    }
}

/// The server-first wait for this client: `server_first_wait_ms`, spread
/// by up to half of it by the client's port, so that a burst of silent
/// connections (a port scan, preconnects, a reconnect storm) does not open
/// its upstream connections all in the same instant.
fn server_first_wait(limits: &Limits, peer: SocketAddr) -> Duration {
    let base = limits.server_first_wait();
    let spread = u32::from(peer.port()).wrapping_mul(2_654_435_761) >> 22; // 0..1024
    base + base.mul_f64(f64::from(spread) / 2048.0)
}

/// Tunnels (`CONNECT`) inside tunnels are sniffed again up to this depth;
/// a `CONNECT` deeper than that is refused.
pub const MAX_TUNNEL_DEPTH: u8 = 3;

/// Classify the client's first bytes (`buf`, at least one) and hand the
/// connection to the TLS, HTTP or other path. `pre`: an upstream connection
/// already open for it (after a server-first wait, or the tunnel of a
/// `CONNECT`). `depth`: how many `CONNECT` tunnels this connection is in.
pub(crate) async fn dispatch(
    shared: Arc<Shared>,
    info: ConnInfo,
    mut stream: Client,
    mut buf: Vec<u8>,
    pre: Option<Tracked>,
    header_deadline: tokio::time::Instant,
    depth: u8,
) {
    let cap = shared.limits.max_sniff_bytes;
    let Some(path) = sniff_path(&mut stream, &mut buf, header_deadline, cap).await else {
        return;
    };
    take_path(path, shared, info, stream, buf, pre, header_deadline, depth).await;
}

/// Where a connection's first bytes send it.
enum Path {
    Tls,
    Http,
    Other,
}

/// The path the first bytes (`buf`, at least one) choose; `None`: more
/// bytes are needed to tell.
fn path_of(buf: &[u8], cap: usize) -> Option<Path> {
    match sniff::classify(buf) {
        sniff::Kind::Tls => Some(Path::Tls),
        sniff::Kind::Http => Some(Path::Http),
        sniff::Kind::Other => Some(Path::Other),
        // Still a prefix of a request line at the cap: the HTTP engine
        // refuses it (414), so length never turns HTTP into "other".
        sniff::Kind::NeedMore if buf.len() >= cap => Some(Path::Http),
        sniff::Kind::NeedMore => None,
    }
}

/// Read until the first bytes (`buf`, at least one) say which path the
/// connection takes; `None`: it ended first (counted). (Most connections'
/// first read tells: [`path_of`] is asked first, without this future.)
async fn sniff_path(
    stream: &mut Client,
    buf: &mut Vec<u8>,
    header_deadline: tokio::time::Instant,
    cap: usize,
) -> Option<Path> {
    loop {
        if let Some(path) = path_of(buf, cap) {
            return Some(path);
        }
        if let Err(e) = read_more(stream, buf, header_deadline, cap).await {
            count_early(&e);
            return None;
        }
    }
}

/// The connection on its path, as a boxed future: a connection's task
/// holds only the small part before it (each path's state is several KiB,
/// and a future is copied whole at each level that creates it), and each
/// poll goes to the path directly.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn take_path(
    path: Path,
    shared: Arc<Shared>,
    info: ConnInfo,
    stream: Client,
    buf: Vec<u8>,
    pre: Option<Tracked>,
    header_deadline: tokio::time::Instant,
    depth: u8,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    match path {
        Path::Tls => Box::pin(tls::tls_conn(
            shared,
            info,
            stream,
            buf,
            header_deadline,
            pre,
        )),
        Path::Http => Box::pin(h1::serve(
            shared,
            info,
            stream,
            buf,
            header_deadline,
            pre,
            depth,
        )),
        Path::Other => {
            Metrics::get().sniffed(Sniffed::Other);
            Box::pin(async move { no_name(&shared, &info, stream, buf, pre).await })
        }
    }
}

/// The tunnel of a `CONNECT` answered 2xx is a new connection inside the
/// old one (docs/data-path.md, Tunnels): the client's first bytes in it (already in
/// `cbuf`, or still to come) are sniffed and decided like a fresh
/// connection's, with the tunnel as the upstream. `ubuf`: what the upstream
/// sent after its answer — the tunnel's server spoke first (a banner), unless
/// the client's bytes are here too, which are then decided.
pub(crate) async fn tunnel(
    shared: Arc<Shared>,
    info: ConnInfo,
    mut client: Client,
    up: Tracked,
    mut cbuf: Vec<u8>,
    ubuf: Vec<u8>,
    depth: u8,
) {
    if cbuf.is_empty() && !ubuf.is_empty() {
        server_spoke_first(&shared, &info, client, up, ubuf).await;
        return;
    }
    if !write_within(&mut client, &ubuf, shared.limits.idle()).await {
        return;
    }
    drop(ubuf);
    let mut pre = Some(up);
    if cbuf.is_empty() {
        match first_speaker(&shared, &info, &mut client, &mut cbuf, pre.take()).await {
            First::Server(up, said) => {
                server_spoke_first(&shared, &info, client, up, said).await;
                return;
            }
            First::Client(Some(up)) => pre = Some(up),
            // The tunnel closed: there is no other way to its end.
            First::Client(None) | First::Gone => return,
        }
    }
    let deadline = tokio::time::Instant::now() + shared.limits.header_timeout();
    dispatch(shared, info, client, cbuf, pre, deadline, depth + 1).await;
}

/// Who spoke first on a connection whose client was silent.
pub(crate) enum First {
    /// The server (a banner): its bytes.
    Server(Tracked, Vec<u8>),
    /// The client: its bytes are in the buffer; the upstream connection
    /// opened meanwhile, if it is still open.
    Client(Option<Tracked>),
    Gone,
}

/// The client has said nothing yet. Open the upstream (`pre`, or a new
/// connection) so that a server-first protocol's banner can come, and wait
/// — up to the idle timeout — for whichever side speaks first. Only the
/// server speaking first makes the connection a pipe; client bytes, however
/// late, are sniffed and decided like a fresh connection's (docs/data-path.md,
/// "Nothing yet"). An upstream that closes before anyone spoke is let go
/// and the wait goes on for the client alone.
pub(crate) async fn first_speaker(
    shared: &Shared,
    info: &ConnInfo,
    stream: &mut Client,
    buf: &mut Vec<u8>,
    pre: Option<Tracked>,
) -> First {
    let limits = &shared.limits;
    let deadline = tokio::time::Instant::now() + limits.idle();
    let mut up = match pre {
        Some(up) => Some(up),
        None => match info.upstream.connect(limits.connect_timeout()).await {
            Ok(up) => Some(up),
            Err(e) => {
                upstream_error(info, &e);
                None
            }
        },
    };
    let Ok(client) = stream.registered() else {
        return First::Gone;
    };
    loop {
        let Some(u) = up.as_mut() else {
            return match timeout_at(deadline, client.read_buf(buf)).await {
                Ok(Ok(n)) if n > 0 => First::Client(None),
                _ => First::Gone,
            };
        };
        let mut said = Vec::new();
        let who = timeout_at(deadline, async {
            tokio::select! {
                // The client first: bytes from both sides at once are
                // decided, not piped.
                biased;
                r = client.read_buf(buf) => (true, r),
                r = u.read_buf(&mut said) => (false, r),
            }
        })
        .await;
        match who {
            Ok((true, Ok(n))) if n > 0 => return First::Client(up),
            Ok((false, Ok(n))) if n > 0 => {
                return match up {
                    Some(u) => First::Server(u, said),
                    None => First::Gone,
                }
            }
            // The upstream gave up first: wait for the client alone.
            Ok((false, _)) => up = None,
            _ => return First::Gone,
        }
    }
}

/// The server spoke first (SMTP, FTP, MySQL banners): no name to decide on
/// (R3); allowed → its bytes go to the client and the connection is a pipe.
async fn server_spoke_first(
    shared: &Shared,
    info: &ConnInfo,
    stream: Client,
    up: Tracked,
    said: Vec<u8>,
) {
    Metrics::get().sniffed(Sniffed::Nothing);
    let started = Instant::now();
    let d = shared.policy.decide_no_name(Some(info.dst));
    record(shared, Proto::Other, &d, "", info, started);
    if d.action == Action::Block {
        stream.reset();
        return;
    }
    let Ok(mut client) = stream.into_registered() else {
        return;
    };
    if !write_within(&mut client, &said, shared.limits.idle()).await {
        return;
    }
    drop(said);
    let mut up = up;
    pipe::pipe(
        &mut client,
        &mut up,
        shared.limits.copy_buffer_bytes,
        shared.limits.idle(),
    )
    .await;
}

/// Was this connection made to the listener directly rather than
/// intercepted? REDIRECT: the original destination is the socket's own local
/// address (nothing was NATed). TPROXY: the local address is one of this
/// host's own addresses (a bind test without IP_TRANSPARENT succeeds only
/// for those); checked only when the port is the listener's, so real traffic
/// to other ports never pays for it.
fn not_intercepted(
    mode: Transparent,
    local: SocketAddr,
    dst: SocketAddr,
    listener: SocketAddr,
) -> bool {
    match mode {
        Transparent::Redirect => dst == local,
        Transparent::Tproxy => {
            if dst.port() != listener.port() {
                return false;
            }
            let probe = SocketAddr::new(dst.ip(), 0);
            let sock = match socket2::Socket::new(
                socket2::Domain::for_address(probe),
                socket2::Type::STREAM,
                None,
            ) {
                Ok(s) => s,
                Err(_) => return false,
            };
            sock.bind(&probe.into()).is_ok()
        }
    }
}

pub(crate) fn count_early(e: &Early) {
    match e {
        Early::Incomplete => Metrics::get().sniffed(Sniffed::Incomplete),
        Early::Invalid(_) => Metrics::get().sniffed(Sniffed::Invalid),
        Early::Io => {}
    }
}

/// One read if bytes are there, else `None` at once. Unregistered: a
/// direct `recv` (EAGAIN registers it); registered: if the reactor has seen
/// it readable. Through `AsyncRead`, so a short read marks a registered
/// socket drained (the next read waits instead of costing an EAGAIN).
async fn read_now(stream: &mut Client, buf: &mut Vec<u8>) -> Option<std::io::Result<usize>> {
    let mut read = std::pin::pin!(stream.read_buf(buf));
    std::future::poll_fn(|cx| match read.as_mut().poll(cx) {
        Poll::Ready(r) => Poll::Ready(Some(r)),
        Poll::Pending => Poll::Ready(None),
    })
    .await
}

/// Read more bytes before the deadline, within the size cap.
pub(crate) async fn read_more(
    stream: &mut Client,
    buf: &mut Vec<u8>,
    deadline: tokio::time::Instant,
    cap: usize,
) -> Result<(), Early> {
    if buf.len() >= cap {
        return Err(Early::Invalid("first bytes exceed max_sniff_bytes"));
    }
    buf.reserve((cap - buf.len()).min(4096));
    // Never read past the cap.
    let room = cap - buf.len();
    let mut limited = (&mut *stream).take(room as u64);
    match timeout_at(deadline, limited.read_buf(buf)).await {
        Err(_) => Err(Early::Incomplete),
        Ok(Ok(0)) => Err(Early::Incomplete),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(_)) => Err(Early::Io),
    }
}

async fn read_proxy_header(
    stream: &mut Client,
    buf: &mut Vec<u8>,
    deadline: tokio::time::Instant,
) -> Result<Option<(SocketAddr, SocketAddr)>, Early> {
    loop {
        match proxy_protocol::parse(buf) {
            proxy_protocol::ProxyParse::Found(h) => {
                buf.drain(..h.len);
                return Ok(h.addrs);
            }
            proxy_protocol::ProxyParse::Invalid(why) => return Err(Early::Invalid(why)),
            proxy_protocol::ProxyParse::NeedMore => {
                read_more(stream, buf, deadline, proxy_protocol::MAX_HEADER).await?;
            }
        }
    }
}

/// No domain in sight (a protocol other than TLS and HTTP): R3.
async fn no_name(
    shared: &Shared,
    info: &ConnInfo,
    stream: Client,
    buf: Vec<u8>,
    pre: Option<Tracked>,
) {
    let started = Instant::now();
    let d = shared.policy.decide_no_name(Some(info.dst));
    record(shared, Proto::Other, &d, "", info, started);
    if d.action == Action::Block {
        stream.reset();
    } else {
        passthrough(shared, info, stream, buf, pre).await;
    }
}

pub(crate) async fn passthrough(
    shared: &Shared,
    info: &ConnInfo,
    client: Client,
    first: Vec<u8>,
    pre: Option<Tracked>,
) {
    let limits = &shared.limits;
    let mut up = match pre {
        Some(up) => up,
        None => match info.upstream.connect(limits.connect_timeout()).await {
            Ok(s) => s,
            Err(e) => {
                upstream_error(info, &e);
                client.reset();
                return;
            }
        },
    };
    // The sniffed bytes go first, nearly always in one `send` (no timer
    // then); an upstream that does not take the rest within the idle
    // timeout is dropped like an idle pair.
    let sent = if first.is_empty() {
        0
    } else {
        match up.try_write(&first) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(_) => return,
        }
    };
    if let Some(rest) = first.get(sent..).filter(|r| !r.is_empty()) {
        let idle = shared.limits.idle();
        if !write_within(&mut *up, rest, idle).await {
            return;
        }
    }
    drop(first);
    // Splicing needs the reactor's socket.
    let Ok(mut client) = client.into_registered() else {
        return;
    };
    pipe::pipe(
        &mut client,
        &mut up,
        limits.copy_buffer_bytes,
        limits.idle(),
    )
    .await;
}
