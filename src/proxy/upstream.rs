//! Upstream connections: a fixed address or the original destination, with
//! an optional fwmark so transparent-mode sockets are not intercepted again.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::task::Poll;
use std::time::Duration;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use dashmap::DashSet;
use socket2::{Domain, Socket, Type};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Both ends (local, remote) of icpgate's own open upstream connections, to
/// recognise one of them coming back to a listener (a forwarding loop). Both
/// ends, not the local address alone: Linux reuses a source port towards
/// different destinations, so a real client may share a pooled upstream
/// socket's local address.
type OwnSet = DashSet<(SocketAddr, SocketAddr), foldhash::fast::RandomState>;

fn own() -> &'static OwnSet {
    // Checked on every accepted connection: a fast, per-process seeded hash.
    static OWN: OnceLock<OwnSet> = OnceLock::new();
    OWN.get_or_init(|| DashSet::with_hasher(foldhash::fast::RandomState::default()))
}

/// Entries in the own-connections set (read on every accept: when nothing
/// is tracked, the set is not consulted).
static TRACKED: AtomicUsize = AtomicUsize::new(0);

/// Which upstream connections could come back to a listener: set once at
/// start from the listeners (until then, and for library users, all).
static TRACK: OnceLock<Track> = OnceLock::new();

#[derive(Debug)]
enum Track {
    /// A transparent listener exists: an interception rule without the
    /// fwmark bypass can bring any of our connections back.
    All,
    /// Only fixed upstreams: a connection can come back only to a port we
    /// listen on (an upstream pointing at a listener, directly or through
    /// a redirect of that port).
    Ports(Vec<u16>),
}

/// Decide, from the listeners, which upstream connections are tracked for
/// the loop guard. Tracking costs a `getsockname` and a shared-set insert
/// and removal per upstream connection, so connections that cannot loop
/// are not tracked.
pub fn set_tracking(any_transparent: bool, listener_ports: Vec<u16>) {
    let t = if any_transparent {
        Track::All
    } else {
        Track::Ports(listener_ports)
    };
    let _ = TRACK.set(t);
}

fn tracked(port: u16) -> bool {
    match TRACK.get() {
        None | Some(Track::All) => true,
        Some(Track::Ports(p)) => p.contains(&port),
    }
}

/// Tracked connects between "about to call `connect`" and "recorded", per
/// stripe of their destination: on loopback the handshake can complete
/// inside the `connect` call, so another worker may accept the looping
/// connection before the connecting one has recorded it (a few µs;
/// measured: 4 of 200 loops missed with 4 workers on 2 CPUs). The
/// accepting side waits for connects to its own destination's stripe only,
/// so on a transparent node connects to other destinations do not delay
/// its accepts.
static CONNECTING: [AtomicUsize; STRIPES] = [const { AtomicUsize::new(0) }; STRIPES];
const STRIPES: usize = 64;

fn stripe(target: SocketAddr) -> &'static AtomicUsize {
    let ip = match target.ip() {
        std::net::IpAddr::V4(v4) => u64::from(u32::from(v4)),
        std::net::IpAddr::V6(v6) => {
            let v = u128::from(v6);
            (v as u64) ^ ((v >> 64) as u64)
        }
    };
    let h = (ip ^ (u64::from(target.port()) << 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    &CONNECTING[(h >> 58) as usize % STRIPES]
}

/// Is a connection from `peer`, made to `target` (its original
/// destination), one of our own upstream connections? Exact: when the set
/// misses while a tracked connect to the same destination (stripe) is
/// between its `connect` call and its recording (its connection may be
/// this one), it waits for the recording — a few yields, then up to 16 ms
/// if the connecting thread was preempted in that window. Untracked setups
/// pay two atomic loads.
pub async fn is_own(peer: SocketAddr, target: SocketAddr) -> bool {
    let ends = (peer, target);
    let connecting = stripe(target);
    for attempt in 0..24u32 {
        // In this order: a connect whose connection already exists has
        // announced itself; once it is no longer counted, its entry is
        // visible.
        let in_flight = connecting.load(Ordering::SeqCst);
        if TRACKED.load(Ordering::SeqCst) != 0 && own().contains(&ends) {
            return true;
        }
        if in_flight == 0 {
            return false;
        }
        if attempt < 8 {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    false
}

/// An upstream connection, registered in the own-connections set while open.
pub struct Tracked {
    inner: TcpStream,
    /// Held for its drop: the entry lives as long as the socket.
    _ends: Option<Registered>,
}

/// A tracked connect in its window (see [`CONNECTING`]); ends on drop,
/// also on the error returns.
struct Connecting(&'static AtomicUsize);

impl Connecting {
    fn announce(target: SocketAddr) -> Self {
        let c = stripe(target);
        c.fetch_add(1, Ordering::SeqCst);
        Connecting(c)
    }
}

impl Drop for Connecting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One entry in the own-connections set, removed on drop (also when the
/// connect fails or times out after it was recorded).
struct Registered((SocketAddr, SocketAddr));

impl Registered {
    fn new(ends: (SocketAddr, SocketAddr)) -> Self {
        // Counted before it is visible, so `is_own` never skips a present
        // entry.
        TRACKED.fetch_add(1, Ordering::SeqCst);
        own().insert(ends);
        Registered(ends)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        own().remove(&self.0);
        TRACKED.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Tracked {
    /// For a pooled connection: still open, nothing unread? (Readiness is
    /// tracked by the reactor, so a live idle socket costs no syscall here.)
    pub fn still_idle(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.inner.try_read(&mut b), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

/// Used as the socket it wraps.
impl std::ops::Deref for Tracked {
    type Target = TcpStream;
    fn deref(&self) -> &TcpStream {
        &self.inner
    }
}

impl std::ops::DerefMut for Tracked {
    fn deref_mut(&mut self) -> &mut TcpStream {
        &mut self.inner
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub fwmark: Option<u32>,
    /// `source = "client"`: bind the upstream socket to this (the client's)
    /// address first, with IP_TRANSPARENT (port 0: any).
    pub source: Option<SocketAddr>,
}

/// IPV6_TRANSPARENT (linux/in6.h); libc has no constant for it.
const IPV6_TRANSPARENT: libc::c_int = 75;

/// Make `sock` able to bind a non-local address (the client's).
pub fn set_transparent(sock: &Socket, v6: bool) -> io::Result<()> {
    if v6 {
        set_int(sock, libc::SOL_IPV6, IPV6_TRANSPARENT, 1)
    } else {
        sock.set_ip_transparent(true)
    }
}

/// An integer socket option socket2 has no setter for.
pub(crate) fn set_int(
    sock: &Socket,
    level: libc::c_int,
    opt: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: setsockopt reads an int we own for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            opt,
            &value as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Can this process bind upstream sockets to clients' addresses? (needs
/// CAP_NET_ADMIN or CAP_NET_RAW for IP_TRANSPARENT)
pub fn can_bind_transparent(v6: bool) -> io::Result<()> {
    let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
    let sock = Socket::new(domain, Type::STREAM, None)?;
    set_transparent(&sock, v6)
}

impl Upstream {
    pub fn new(addr: SocketAddr, fwmark: Option<u32>) -> Self {
        Upstream {
            addr,
            fwmark,
            source: None,
        }
    }

    /// The pool key of connections to this upstream.
    pub fn key(&self) -> super::h1::UpKey {
        (self.addr, self.source)
    }

    /// Leave from `src` (the client's address).
    pub fn from_client(mut self, src: SocketAddr) -> Self {
        self.source = Some(src);
        self
    }

    /// Connect (non-blocking), recording a tracked connection's ends as
    /// soon as the `connect` call has chosen the local address, before the
    /// handshake is awaited. On loopback the handshake can complete inside
    /// that call and another worker can accept the looping connection
    /// while this one still waits for writability; recorded only after
    /// completion, the loop went unrecognised (seen in the lifecycle test
    /// with 2 workers).
    pub async fn connect(&self, timeout: Duration) -> io::Result<Tracked> {
        let addr = self.addr;
        // Non-blocking from birth: two fcntl calls fewer per connection.
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking(), None)?;
        if let Some(mark) = self.fwmark {
            sock.set_mark(mark)?;
        }
        if let Some(src) = self.source {
            // The client's address: IP_TRANSPARENT lets us bind it, the
            // origin's replies come back through the gateway (its route to
            // the client) and the `socket transparent` rule hands them to
            // this socket. SO_REUSEADDR: the client's own port may still be
            // in TIME_WAIT from an earlier connection.
            set_transparent(&sock, src.is_ipv6())?;
            if src.port() != 0 {
                sock.set_reuse_address(true)?;
            }
            sock.bind(&src.into()).map_err(|e| {
                io::Error::new(e.kind(), format!("binding the client's address {src}: {e}"))
            })?;
        }
        let track = tracked(addr.port());
        let announced = track.then(|| Connecting::announce(addr));
        match sock.connect(&addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        let ends = if track {
            sock.local_addr()?
                .as_socket()
                .map(|l| Registered::new((l, addr)))
        } else {
            None
        };
        // Recorded (or failed): no longer in the window `is_own` waits for.
        drop(announced);
        let inner = TcpStream::from_std(std::net::TcpStream::from(sock))?;
        // One turn of the event loop first, without a timer: a near
        // upstream (loopback, same rack) has answered by then, and arming
        // the timeout costs a timer-wheel entry plus a wake-up of the
        // reactor (an eventfd write) because its deadline is the earliest.
        tokio::task::yield_now().await;
        let ready = {
            let mut ready = std::pin::pin!(inner.ready(Interest::WRITABLE));
            let quick = std::future::poll_fn(|cx| Poll::Ready(ready.as_mut().poll(cx))).await;
            match quick {
                Poll::Ready(r) => r?,
                Poll::Pending => tokio::time::timeout(timeout, ready).await.map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "upstream connect timed out")
                })??,
            }
        };
        // A failed connect is a closed socket (EPOLLHUP with EPOLLERR): only
        // then ask for the error (getsockopt SO_ERROR), not on every success.
        if ready.is_write_closed() || ready.is_error() {
            return Err(inner.take_error()?.unwrap_or_else(|| {
                io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "upstream connection closed while connecting",
                )
            }));
        }
        inner.set_nodelay(true)?;
        Ok(Tracked { inner, _ends: ends })
    }
}
