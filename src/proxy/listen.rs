//! Listening sockets: bind with the options every listener needs (one
//! socket per worker, SO_REUSEPORT), and accept connections whose first
//! read waits for the reactor.
//!
//! Why not `tokio::net::TcpListener::accept`: tokio marks an accepted
//! socket readable before the kernel says so, so the first read is tried
//! at once. Under load the client's request has usually not arrived yet
//! when its connection is accepted (the handshake completes one packet
//! earlier), and that read is an `EAGAIN` — one wasted `recvfrom` per
//! connection (measured: 2.95 `recvfrom` per `Connection: close` request,
//! against 2 here and in nginx; BENCHMARKS.md §7). Accepted here, a socket
//! starts with no readiness and its first read happens on the reactor's
//! event, as in nginx.

use std::io;
use std::net::SocketAddr;

use super::client::Client;
use super::upstream::{set_int, set_transparent};
use socket2::{Domain, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::config::{ListenerConfig, Transparent};

/// A bound, listening socket registered with the reactor.
#[derive(Debug)]
pub struct Listener {
    io: AsyncFd<Socket>,
}

impl Listener {
    /// Register a socket from [`bind`] with the current runtime (the
    /// worker's own: the socket is then served by that worker only).
    pub fn register(sock: Socket) -> io::Result<Listener> {
        // SAFETY: the `Socket` owns its descriptor for as long as the
        // `AsyncFd` holds it, and always reports that same descriptor.
        let io = unsafe { AsyncFd::register_with_interest(sock, Interest::READABLE) }?;
        Ok(Listener { io })
    }

    /// The next connection: non-blocking, close-on-exec, not yet in epoll
    /// (see [`Client`]).
    pub async fn accept(&self) -> io::Result<(Client, SocketAddr)> {
        loop {
            let mut ready = self.io.readable().await?;
            let accepted = ready.try_io(|s| {
                // Near saturation, an accept must not take the descriptor
                // that a shedding worker has just freed and means to take
                // back (the reserve would be lost while nothing closes).
                let _gate = if saturated() {
                    RESERVE.lock().ok()
                } else {
                    None
                };
                s.get_ref()
                    .accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
            });
            let (sock, addr) = match accepted {
                Ok(r) => r?,
                Err(_would_block) => continue,
            };
            let peer = addr.as_socket().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "accepted a non-IP peer")
            })?;
            return Ok((Client::new(std::net::TcpStream::from(sock)), peer));
        }
    }
}

/// A descriptor held in reserve for shedding connections when the process
/// has run out (`EMFILE`): closed, it makes room to accept one queued
/// connection and reset it at once, then it is taken again (as nginx and
/// HAProxy do). Without it, connections the kernel completed wait in the
/// backlog with no answer until the client gives up.
static RESERVE: std::sync::Mutex<Option<std::fs::File>> = std::sync::Mutex::new(None);

/// Set while the reserve could not be taken back (another thread took the
/// descriptor it freed): the next connection accepted is reset in its
/// place, freeing a descriptor to take it again.
static RESERVE_MISSING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Take the reserve descriptor (at start, and after each shedding).
pub fn keep_reserve() {
    if let Ok(mut r) = RESERVE.lock() {
        if r.is_none() {
            *r = std::fs::File::open("/dev/null").ok();
        }
        RESERVE_MISSING.store(r.is_none(), std::sync::atomic::Ordering::Relaxed);
    }
}

/// Is the reserve descriptor missing? Then the caller should give up the
/// connection it just accepted (reset it) and call [`keep_reserve`]: a
/// saturated process must keep its way to shed.
pub fn reserve_missing() -> bool {
    RESERVE_MISSING.load(std::sync::atomic::Ordering::Relaxed)
}

/// Is this accept error a lack of descriptors (process or system)? Also
/// notes the time: for a while after, accepts are serialized with the
/// shedding (see [`Listener::accept`]).
pub fn out_of_descriptors(e: &io::Error) -> bool {
    let out = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
    if out {
        LAST_EMFILE_MS.store(now_ms().max(1), std::sync::atomic::Ordering::Relaxed);
    }
    out
}

/// When descriptors last ran out (ms since [`now_ms`]'s epoch; 0: never).
static LAST_EMFILE_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// For this long after running out, accepts take the reserve's lock.
const SATURATED_FOR_MS: u64 = 2000;

fn now_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

/// Recently out of descriptors? (One atomic load when never.)
fn saturated() -> bool {
    let last = LAST_EMFILE_MS.load(std::sync::atomic::Ordering::Relaxed);
    last != 0 && now_ms().saturating_sub(last) < SATURATED_FOR_MS
}

impl Listener {
    /// Out of descriptors: free the reserve, then accept and reset queued
    /// connections (up to `max`) so that their clients learn at once;
    /// returns how many were shed.
    pub fn shed(&self, max: usize) -> usize {
        let Ok(mut reserve) = RESERVE.lock() else {
            return 0;
        };
        drop(reserve.take());
        let mut n = 0;
        while n < max {
            match self
                .io
                .get_ref()
                .accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
            {
                Ok((sock, _)) => {
                    let _ = sock.set_linger(Some(std::time::Duration::ZERO));
                    drop(sock);
                    n += 1;
                }
                Err(_) => break,
            }
        }
        *reserve = std::fs::File::open("/dev/null").ok();
        RESERVE_MISSING.store(reserve.is_none(), std::sync::atomic::Ordering::Relaxed);
        n
    }
}

/// Raise the soft `RLIMIT_NOFILE` to the hard limit; returns the soft
/// limit in force afterwards.
pub fn raise_nofile() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    Ok(lim.rlim_cur)
}

/// Bind `count` listening sockets for one listener, one per worker. With
/// more than one, each has SO_REUSEPORT and the kernel spreads new
/// connections across them. A plain bind first checks that nothing listens
/// there yet: otherwise a second icpgate started by mistake would silently
/// take a share of the connections instead of failing to start.
pub fn bind(cfg: &ListenerConfig, count: usize) -> io::Result<Vec<Socket>> {
    let count = count.max(1);
    let mut addr = cfg.addr;
    if count > 1 && addr.port() != 0 {
        drop(socket(cfg, addr, false, false)?);
    }
    let mut socks = Vec::with_capacity(count);
    for _ in 0..count {
        let s = socket(cfg, addr, count > 1, true)?;
        if addr.port() == 0 {
            // The kernel chose a port: the other workers join that one.
            if let Some(a) = s.local_addr()?.as_socket() {
                addr = a;
            }
        }
        socks.push(s);
    }
    Ok(socks)
}

/// One bound (and, with `listen`, listening) socket. v6 sockets are v6-only
/// so `0.0.0.0:P` and `[::]:P` can both be listed; TPROXY listeners get
/// IP_TRANSPARENT.
fn socket(
    cfg: &ListenerConfig,
    addr: SocketAddr,
    reuse_port: bool,
    listen: bool,
) -> io::Result<Socket> {
    if cfg.transport == crate::config::Transport::Udp {
        return udp_socket(cfg, addr, reuse_port);
    }
    let sock = base_socket(cfg, addr, Type::STREAM, reuse_port)?;
    if cfg.defer_accept {
        // Seconds; 1 as nginx's `deferred`: a client that stays silent is
        // handed over at the next handshake retransmission instead.
        set_int(&sock, libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT, 1)?;
    }
    sock.set_nonblocking(true)?;
    // Accepted sockets inherit TCP_NODELAY on Linux: one setsockopt here
    // instead of one per connection.
    sock.set_nodelay(true)?;
    sock.bind(&addr.into())?;
    if listen {
        sock.listen(4096)?;
    }
    Ok(sock)
}

/// What TCP and UDP listeners share: address reuse (SO_REUSEPORT across
/// workers), v6-only for v6 addresses, and under TPROXY the right to
/// receive traffic for addresses that are not local.
fn base_socket(
    cfg: &ListenerConfig,
    addr: SocketAddr,
    ty: Type,
    reuse_port: bool,
) -> io::Result<Socket> {
    let sock = Socket::new(Domain::for_address(addr), ty, None)?;
    sock.set_reuse_address(true)?;
    if reuse_port {
        sock.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    if cfg.upstream.is_none() && cfg.transparent == Transparent::Tproxy {
        set_transparent(&sock, addr.is_ipv6())?;
    }
    Ok(sock)
}

/// A UDP listener socket (QUIC): SO_REUSEPORT across workers (the kernel
/// keeps each flow on one of them); under TPROXY, IP_TRANSPARENT and the
/// original destination of each datagram (IP_RECVORIGDSTADDR).
fn udp_socket(cfg: &ListenerConfig, addr: SocketAddr, reuse_port: bool) -> io::Result<Socket> {
    let sock = base_socket(cfg, addr, Type::DGRAM, reuse_port)?;
    if cfg.upstream.is_none() && cfg.transparent == Transparent::Tproxy {
        if addr.is_ipv6() {
            set_int(&sock, libc::SOL_IPV6, libc::IPV6_RECVORIGDSTADDR, 1)?;
        } else {
            set_int(&sock, libc::SOL_IP, libc::IP_RECVORIGDSTADDR, 1)?;
        }
    }
    // Room for bursts of Initials (the default is ~200 KiB).
    let _ = sock.set_recv_buffer_size(4 << 20);
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    Ok(sock)
}
