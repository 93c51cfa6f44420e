//! Upstream connections: a fixed address or the original destination, with
//! an optional fwmark so transparent-mode sockets are not intercepted again.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use dashmap::DashSet;
use tokio::net::{TcpSocket, TcpStream};

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

/// Is a connection from `peer`, made to `target` (its original
/// destination), one of our own upstream connections?
pub fn is_own(peer: SocketAddr, target: SocketAddr) -> bool {
    TRACKED.load(Ordering::Relaxed) != 0 && own().contains(&(peer, target))
}

/// An upstream connection, registered in the own-connections set while open.
pub struct Tracked {
    inner: TcpStream,
    ends: Option<(SocketAddr, SocketAddr)>,
}

impl Tracked {
    /// `peer`: the address we connected to (no getpeername needed).
    fn new(inner: TcpStream, peer: SocketAddr) -> Self {
        let ends = if tracked(peer.port()) {
            inner.local_addr().ok().map(|l| (l, peer))
        } else {
            None
        };
        if let Some(e) = ends {
            // Counted before it is visible, so `is_own` never skips a
            // present entry.
            TRACKED.fetch_add(1, Ordering::Relaxed);
            own().insert(e);
        }
        Tracked { inner, ends }
    }

    /// For a pooled connection: still open, nothing unread? (Readiness is
    /// tracked by the reactor, so a live idle socket costs no syscall here.)
    pub fn still_idle(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.inner.try_read(&mut b), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(e) = self.ends {
            own().remove(&e);
            TRACKED.fetch_sub(1, Ordering::Relaxed);
        }
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
}

impl Upstream {
    pub fn new(addr: SocketAddr, fwmark: Option<u32>) -> Self {
        Upstream { addr, fwmark }
    }

    pub async fn connect(&self, timeout: Duration) -> io::Result<Tracked> {
        connect(self.addr, self.fwmark, timeout)
            .await
            .map(|s| Tracked::new(s, self.addr))
    }
}

pub async fn connect(
    addr: SocketAddr,
    fwmark: Option<u32>,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(mark) = fwmark {
        socket2::SockRef::from(&sock).set_mark(mark)?;
    }
    let s = tokio::time::timeout(timeout, sock.connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "upstream connect timed out"))??;
    s.set_nodelay(true)?;
    Ok(s)
}
