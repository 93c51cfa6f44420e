//! QUIC / HTTP/3 on UDP listeners (docs/data-path.md, QUIC): every flow
//! (client address, destination) is held until its client Initial packets
//! give a complete ClientHello (`sniff::quic`), then decided with the same
//! rules as TLS (`protocol="quic"`):
//!
//! - allowed: the held datagrams go to the upstream in order, then the flow
//!   is relayed both ways until it idles;
//! - blocked: nothing is forwarded; the flow's datagrams are dropped for
//!   `[block] quic_hold_secs`, and (`[block] quic = "close"`) the client
//!   gets a CONNECTION_CLOSE in a server Initial, so it falls back to TCP
//!   at once, where the block page is;
//! - anything that cannot be decided — an unknown version, an Initial that
//!   does not decrypt, a hello not complete within the limits, a packet of
//!   no known flow, too many flows — is dropped and counted
//!   (`icpgate_quic_dropped_total{reason}`), never forwarded.
//!
//! One task per listener socket (one per worker, SO_REUSEPORT: the kernel
//! keeps a flow on one socket), its flow table owned by that task; each
//! allowed flow has a relay task for the upstream's answers.

mod io;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::ctx::{record, upstream_error, ConnInfo, ListenerCtx, Shared};
use super::upstream::set_transparent;
use crate::config::{QuicBlock, Transparent};
use crate::decision::{Action, Reason};
use crate::metrics::Metrics;
use crate::metrics::{quic_drop, Proto};
use crate::sniff::quic::{self, QuicError, Step};

/// Datagrams held per undecided flow (a post-quantum ClientHello takes 2;
/// a client may retransmit).
const MAX_HELD: usize = 16;
/// How often flows are looked at for expiry.
const TICK: Duration = Duration::from_millis(250);

/// A flow: the client, and the destination it asked for.
type Key = (SocketAddr, SocketAddr);

enum State {
    Inspecting {
        quic: Box<quic::Flow>,
        held: Vec<Vec<u8>>,
        deadline: Instant,
        /// Its place in the eviction order (`Udp::evictable`).
        stamp: u64,
    },
    /// The relay, and the inspection of a new connection on the same
    /// addresses, if one is being read.
    Allowed(Arc<Relay>, Option<Box<Second>>),
    Blocked {
        until: Instant,
        stamp: u64,
    },
}

impl State {
    /// The stamp of a flow that may be evicted when the table is full
    /// (undecided, or held blocked); `None` for an allowed flow.
    fn evictable(&self) -> Option<u64> {
        match self {
            State::Inspecting { stamp, .. } | State::Blocked { stamp, .. } => Some(*stamp),
            State::Allowed(..) => None,
        }
    }
}

/// An allowed flow's upstream socket and its activity.
struct Relay {
    up: UdpSocket,
    /// Milliseconds (since the listener started) of the last datagram
    /// either way.
    last: AtomicU64,
    done: AtomicBool,
    /// The Destination Connection ID of the client's first Initial, when
    /// the flow was inspected: the Initial of another connection on the
    /// same addresses is not relayed as it comes, but inspected (`Second`).
    /// Replaced when that connection is allowed.
    dcid: arc_swap::ArcSwapOption<quic::Cid>,
}

/// The reading of a new connection's hello on an allowed flow's addresses.
struct Second {
    quic: Box<quic::Flow>,
    held: Vec<Vec<u8>>,
}

/// What a second connection's datagram comes to.
enum Verdict {
    /// Held until the hello is complete.
    Hold,
    /// Allowed: these go upstream, in order.
    Forward(Vec<Vec<u8>>),
    /// Blocked: nothing goes; the flow's reading, for a CONNECTION_CLOSE.
    Block(Box<quic::Flow>),
    /// Undecidable (counted) or given up.
    Drop,
}

/// A client's datagram on an allowed flow that opens a new connection
/// (another Destination Connection ID, opening with that ID's keys: a
/// client's answer to a server's Retry, or a new connection from the same
/// port) is read as a new flow's would be, and decided the same way
/// (`judge`); allowed, its datagrams go upstream on this flow, which then
/// watches the new connection's ID.
fn reinspect(
    shared: &Shared,
    info: &ConnInfo,
    relay: &Relay,
    second: &mut Option<Box<Second>>,
    data: &[u8],
) -> Verdict {
    let max = shared.limits.max_sniff_bytes;
    let s = second.get_or_insert_with(|| {
        Box::new(Second {
            quic: Box::new(quic::Flow::new(max)),
            held: Vec::new(),
        })
    });
    let step = s.quic.feed(data);
    if matches!(step, Ok(Step::NeedMore)) {
        if s.held.len() >= MAX_HELD {
            drop_count(quic_drop::INCOMPLETE);
            *second = None;
            return Verdict::Drop;
        }
        s.held.push(data.to_vec());
        return Verdict::Hold;
    }
    let Some(s) = second.take() else {
        return Verdict::Drop;
    };
    match judge(shared, info, step) {
        Judgement::Forward { watch } => {
            if watch {
                let cid = s.quic.original_dcid().and_then(|d| quic::Cid::new(d).ok());
                relay.dcid.store(cid.map(Arc::new));
            }
            let mut out = s.held;
            out.push(data.to_vec());
            Verdict::Forward(out)
        }
        Judgement::Block => Verdict::Block(s.quic),
        Judgement::Drop => Verdict::Drop,
    }
}

/// What a complete reading of a flow's Initials decides.
enum Judgement {
    /// Forward (allowed, or shadow mode); `watch`: the flow's connection ID
    /// is watched for new connections (allowed, enforced).
    Forward {
        watch: bool,
    },
    Block,
    /// Dropped (counted), or the client gave up.
    Drop,
}

/// Decide on a flow's Initials (a ClientHello, or why there is none) and
/// record the decision, as for TLS (`protocol="quic"`).
fn judge(shared: &Shared, info: &ConnInfo, step: Result<Step, QuicError>) -> Judgement {
    let started = Instant::now();
    let policy = &shared.policy;
    let action = match step {
        Ok(Step::Hello(hello)) => {
            let snap = shared.table.load();
            let d = policy.decide_hello(
                &snap,
                &hello,
                shared.ech,
                info.dst,
                crate::decision::now_unix(),
            );
            let name = hello
                .sni
                .as_ref()
                .map(|s| String::from_utf8_lossy(s.as_bytes()))
                .unwrap_or_default();
            record(shared, Proto::Quic, &d, &name, info, started);
            d.action
        }
        // The client gave up before its hello was complete.
        Ok(Step::Closed) | Ok(Step::NeedMore) => return Judgement::Drop,
        Err(e) => match failure(&e) {
            Ok(reason) => {
                let d = policy.refuse(reason, Some(info.dst));
                record(shared, Proto::Quic, &d, "", info, started);
                d.action
            }
            Err(drop_reason) => {
                if policy.mode_for(Some(info.dst)) != crate::decision::Mode::Shadow {
                    drop_count(drop_reason);
                    return Judgement::Drop;
                }
                // Shadow mode changes nothing: forwarded, recorded.
                let d = policy.refuse(Reason::BadRequest, Some(info.dst));
                record(shared, Proto::Quic, &d, "", info, started);
                d.action
            }
        },
    };
    match action {
        Action::Block => Judgement::Block,
        // Shadow mode changes nothing: its flows are not watched.
        a => Judgement::Forward {
            watch: a == Action::Allow,
        },
    }
}

/// Where answers to a client go: the listener socket (fixed upstream), or a
/// socket bound to the original destination (TPROXY: replies must come
/// from the address the client sent to).
#[derive(Clone)]
enum Reply {
    Listener(Arc<UdpSocket>, SocketAddr),
    Bound(Arc<UdpSocket>),
}

impl Reply {
    /// Send now or not at all (a datagram the socket cannot take is lost,
    /// as on any UDP path). Straight to the system call: tokio's readiness
    /// of a new socket is not known yet, and UDP sends need none.
    fn send_all(&self, datagrams: &[&[u8]]) {
        match self {
            Reply::Listener(s, to) => io::send_all(s.as_raw_fd(), Some(&(*to).into()), datagrams),
            Reply::Bound(s) => io::send_all(s.as_raw_fd(), None, datagrams),
        }
    }
}

impl Relay {
    /// Whether a client's datagram belongs to this flow's connection: not
    /// when it opens a connection of its own (see [`reinspect`]).
    fn admits(&self, data: &[u8]) -> bool {
        match &*self.dcid.load() {
            Some(dcid) => !quic::opens_other_connection(data, dcid.as_bytes()),
            None => true,
        }
    }

    /// Send datagrams upstream; those the socket cannot take now are lost,
    /// as on any UDP path.
    fn send_up(&self, datagrams: &[&[u8]]) {
        io::send_all(self.up.as_raw_fd(), None, datagrams);
    }

    fn touch(&self, epoch: Instant) {
        self.last
            .store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

thread_local! {
    /// Receive buffers per worker thread, for the relays: a relay holds
    /// none while its flow is idle.
    static RELAY_BATCH: std::cell::RefCell<io::RecvBatch> = std::cell::RefCell::new(io::RecvBatch::default());
}

/// Move every datagram waiting on `from` to `send`, a batch at a time, now;
/// whether any moved.
fn pump(from: &UdpSocket, mut send: impl FnMut(&[&[u8]])) -> std::io::Result<bool> {
    // A connected socket: where its datagrams come from is known.
    let any = Some(SocketAddr::from(([0, 0, 0, 0], 0)));
    let fd = from.as_raw_fd();
    RELAY_BATCH.with(|b| {
        let mut b = b.borrow_mut();
        let mut moved = false;
        loop {
            match from.try_io(Interest::READABLE, || b.recv(fd, any)) {
                Ok(_) => {
                    moved = true;
                    let mut ds: [&[u8]; io::BATCH] = [&[]; io::BATCH];
                    for (d, slot) in b.bytes().zip(ds.iter_mut()) {
                        *slot = d;
                    }
                    send(&ds[..b.len()]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(moved),
                Err(e) => return Err(e),
            }
        }
    })
}

struct Udp {
    shared: Arc<Shared>,
    lctx: Arc<ListenerCtx>,
    sock: Arc<UdpSocket>,
    /// Seeded per table: clients choose the keys (and can forge them).
    flows: HashMap<Key, State, foldhash::fast::RandomState>,
    epoch: Instant,
    /// Answers to clients from the listener socket (CONNECTION_CLOSE),
    /// sent together after each batch of datagrams.
    out: io::SendBatch,
    /// Undecided and held-blocked flows, oldest first (key and stamp;
    /// entries whose flow has since changed or gone are skipped): when the
    /// table is full, a new flow takes the place of the oldest of them.
    evictable: std::collections::VecDeque<(Key, u64)>,
    stamps: u64,
}

/// Serve one UDP listener socket (this worker's): datagrams are read in
/// batches ([`io::BATCH`] per system call), each handled in order, then
/// the answers they produced are sent together.
pub async fn serve(shared: Arc<Shared>, lctx: Arc<ListenerCtx>, sock: UdpSocket) {
    // The destination of every datagram: this socket's address, or under
    // TPROXY each datagram's original destination.
    let local = if lctx.transparent_udp() {
        None
    } else {
        match sock.local_addr() {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::error!(listener = %lctx.label, error = %e, "UDP listener has no address");
                return;
            }
        }
    };
    let sock = Arc::new(sock);
    let fd = sock.as_raw_fd();
    let mut u = Udp {
        shared,
        lctx,
        sock: sock.clone(),
        flows: HashMap::default(),
        epoch: Instant::now(),
        out: io::SendBatch::default(),
        evictable: std::collections::VecDeque::new(),
        stamps: 0,
    };
    let mut batch = io::RecvBatch::default();
    // Datagrams of allowed flows in this batch: sent per flow together.
    let mut relayed: Vec<(Arc<Relay>, usize)> = Vec::with_capacity(io::BATCH);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            r = sock.async_io(Interest::READABLE, || batch.recv(fd, local)) => match r {
                Ok(_) => {
                    for i in 0..batch.len() {
                        let (data, client, dst) = batch.get(i);
                        if let Some(relay) = u.datagram(data, client, dst) {
                            relayed.push((relay, i));
                        }
                    }
                    forward_batch(&batch, &mut relayed);
                    if !u.out.is_empty() {
                        u.out.flush(fd);
                    }
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            },
            _ = tick.tick() => u.expire(),
        }
    }
}

/// Send the batch's datagrams of allowed flows upstream, each flow's in
/// the order they came, with one system call per flow.
fn forward_batch(batch: &io::RecvBatch, relayed: &mut Vec<(Arc<Relay>, usize)>) {
    relayed.sort_by_key(|(r, _)| Arc::as_ptr(r) as usize);
    for run in relayed.chunk_by(|a, b| Arc::ptr_eq(&a.0, &b.0)) {
        let mut ds: [&[u8]; io::BATCH] = [&[]; io::BATCH];
        for ((_, i), slot) in run.iter().zip(ds.iter_mut()) {
            *slot = batch.get(*i).0;
        }
        if let Some((relay, _)) = run.first() {
            io::send_all(relay.up.as_raw_fd(), None, &ds[..run.len()]);
        }
    }
    relayed.clear();
}

impl ListenerCtx {
    fn transparent_udp(&self) -> bool {
        self.upstream.is_none() && self.transparent == Transparent::Tproxy
    }
}

fn drop_count(reason: &str) {
    Metrics::get().quic_drop(reason);
}

/// Why a flow's Initial could not be read: a drop reason, or a blocking
/// decision (R10 ambiguity, an oversized hello).
fn failure(e: &QuicError) -> Result<Reason, &'static str> {
    if e.is_ambiguous() {
        return Ok(Reason::AmbiguousHost);
    }
    if e.is_too_large() {
        return Ok(Reason::TooLong);
    }
    Err(match e {
        QuicError::UnknownVersion(_) => quic_drop::UNKNOWN_VERSION,
        QuicError::Decrypt => quic_drop::UNDECRYPTABLE,
        QuicError::ShortHeader => quic_drop::NO_FLOW,
        _ => quic_drop::INVALID,
    })
}

impl Udp {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn info(&self, client: SocketAddr, dst: SocketAddr) -> ConnInfo {
        let upstream = match self.lctx.upstream {
            Some(up) => super::upstream::Upstream::new(up, self.lctx.fwmark),
            None => super::upstream::Upstream::new(dst, self.lctx.fwmark),
        };
        ConnInfo {
            peer: client,
            dst: dst.ip(),
            upstream,
            listener: self.lctx.clone(),
        }
    }

    /// Handle one datagram; for an allowed flow's, its relay (the caller
    /// sends it upstream, with the batch's other datagrams of that flow).
    fn datagram(&mut self, data: &[u8], client: SocketAddr, dst: SocketAddr) -> Option<Arc<Relay>> {
        let key = (client, dst);
        if let Some(State::Allowed(relay, _)) = self.flows.get(&key) {
            if !relay.done.load(Ordering::Relaxed) {
                relay.last.store(self.now_ms(), Ordering::Relaxed);
                if relay.admits(data) {
                    return Some(relay.clone());
                }
                self.second(key, data);
                return None;
            }
        }
        self.undecided(data, client, dst);
        None
    }

    /// A new connection on an allowed flow's addresses: [`reinspect`].
    fn second(&mut self, key: Key, data: &[u8]) {
        let info = self.info(key.0, key.1);
        let Some(State::Allowed(relay, second)) = self.flows.get_mut(&key) else {
            return;
        };
        let relay = relay.clone();
        match reinspect(&self.shared, &info, &relay, second, data) {
            Verdict::Forward(ds) => {
                let ds: Vec<&[u8]> = ds.iter().map(Vec::as_slice).collect();
                relay.send_up(&ds);
            }
            Verdict::Block(q) => self.close(key, &q),
            Verdict::Hold | Verdict::Drop => {}
        }
    }

    /// A datagram of a flow not (or no longer) allowed.
    fn undecided(&mut self, data: &[u8], client: SocketAddr, dst: SocketAddr) {
        let key = (client, dst);
        let now = Instant::now();
        match self.flows.get_mut(&key) {
            Some(State::Blocked { until, .. }) if now < *until => {
                drop_count(quic_drop::BLOCKED_HOLD);
                return;
            }
            Some(State::Inspecting { quic, held, .. }) => {
                let step = quic.feed(data);
                if matches!(step, Ok(Step::NeedMore)) {
                    if held.len() >= MAX_HELD {
                        drop_count(quic_drop::INCOMPLETE);
                        self.remove(&key);
                    } else {
                        held.push(data.to_vec());
                    }
                    return;
                }
                let Some(State::Inspecting { quic, held, .. }) = self.remove(&key) else {
                    return;
                };
                self.settle(key, *quic, held, data, step);
                return;
            }
            // Expired allowed or blocked flows start again.
            Some(_) => {
                self.remove(&key);
            }
            None => {}
        }
        // A new flow.
        if self.flows.len() >= self.shared.limits.max_flows && !self.evict_oldest() {
            drop_count(quic_drop::OVERLOAD);
            return;
        }
        let info = self.info(client, dst);
        if !self.shared.policy.enforced(Some(info.dst)) {
            // R2: outside the mainland ranges, passed untouched.
            let d = self.shared.policy.decide_no_name(Some(info.dst));
            record(&self.shared, Proto::Quic, &d, "", &info, Instant::now());
            self.allow(key, &info, Vec::new(), data, None);
            return;
        }
        let mut q = quic::Flow::new(self.shared.limits.max_sniff_bytes);
        let step = q.feed(data);
        if matches!(step, Ok(Step::NeedMore)) {
            let deadline = now + self.shared.limits.header_timeout();
            let stamp = self.stamp();
            self.insert(
                key,
                State::Inspecting {
                    quic: Box::new(q),
                    held: vec![data.to_vec()],
                    deadline,
                    stamp,
                },
            );
            return;
        }
        self.settle(key, q, Vec::new(), data, step);
    }

    /// A flow's Initials said what they say (`held`, then `last`): decide
    /// and act.
    fn settle(
        &mut self,
        key: Key,
        q: quic::Flow,
        held: Vec<Vec<u8>>,
        last: &[u8],
        step: Result<Step, QuicError>,
    ) {
        let info = self.info(key.0, key.1);
        match judge(&self.shared, &info, step) {
            Judgement::Block => self.block(key, &q),
            Judgement::Forward { watch } => {
                let watch = watch.then(|| q.original_dcid()).flatten();
                self.allow(key, &info, held, last, watch);
            }
            Judgement::Drop => {}
        }
    }

    /// Hold the flow blocked; answer with a CONNECTION_CLOSE unless told to
    /// drop (from the listener socket: queued for the batch's send).
    fn block(&mut self, key: Key, q: &quic::Flow) {
        let hold = Duration::from_secs(self.shared.quic_hold_secs);
        let stamp = self.stamp();
        self.insert(
            key,
            State::Blocked {
                until: Instant::now() + hold,
                stamp,
            },
        );
        self.close(key, q);
    }

    /// Answer a blocked flow with a CONNECTION_CLOSE, unless told to drop.
    fn close(&mut self, key: Key, q: &quic::Flow) {
        if self.shared.quic_block != QuicBlock::Close {
            return;
        }
        if !self.lctx.transparent_udp() {
            let _ = self.out.push(key.0, |out| q.close_packet(out));
            return;
        }
        let mut out = Vec::with_capacity(128);
        if q.close_packet(&mut out).is_ok() {
            if let Ok(reply) = self.reply(key) {
                reply.send_all(&[&out]);
            }
        }
    }

    /// The way back to a client.
    fn reply(&self, (client, dst): Key) -> std::io::Result<Reply> {
        if !self.lctx.transparent_udp() {
            return Ok(Reply::Listener(self.sock.clone(), client));
        }
        // From the original destination: a socket bound to it (it is not
        // one of ours: IP_TRANSPARENT), connected to the client.
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(dst),
            socket2::Type::DGRAM.nonblocking(),
            None,
        )?;
        set_transparent(&sock, dst.is_ipv6())?;
        sock.set_reuse_address(true)?;
        sock.set_reuse_port(true)?;
        if let Some(mark) = self.lctx.fwmark {
            sock.set_mark(mark)?;
        }
        sock.bind(&dst.into())?;
        sock.connect(&client.into())?;
        Ok(Reply::Bound(Arc::new(UdpSocket::from_std(sock.into())?)))
    }

    /// Connect the upstream, send what was held (`held`, then `last`) in
    /// order, relay the rest.
    fn allow(
        &mut self,
        key: Key,
        info: &ConnInfo,
        held: Vec<Vec<u8>>,
        last: &[u8],
        dcid: Option<&[u8]>,
    ) {
        let up = match connect(info).and_then(UdpSocket::from_std) {
            Ok(s) => s,
            Err(e) => {
                upstream_error(info, &e);
                return;
            }
        };
        let reply = match self.reply(key) {
            Ok(r) => r,
            Err(e) => {
                upstream_error(info, &e);
                return;
            }
        };
        // A new socket: its send buffer takes these at once.
        for d in held.iter().map(Vec::as_slice).chain([last]) {
            let _ = socket2::SockRef::from(&up).send(d);
        }
        let relay = Arc::new(Relay {
            up,
            last: AtomicU64::new(self.now_ms()),
            done: AtomicBool::new(false),
            dcid: arc_swap::ArcSwapOption::new(
                dcid.and_then(|d| quic::Cid::new(d).ok()).map(Arc::new),
            ),
        });
        self.insert(key, State::Allowed(relay.clone(), None));
        let idle = self.shared.limits.flow_idle();
        if let Reply::Bound(own) = &reply {
            // TPROXY: the flow's socket (bound to the destination,
            // connected to the client) now receives the client's datagrams
            // itself (the kernel prefers the connected socket): relay them.
            let (shared, info) = (self.shared.clone(), info.clone());
            tokio::spawn(from_client(
                shared,
                info,
                relay.clone(),
                own.clone(),
                self.epoch,
            ));
        }
        tokio::spawn(answers(relay, reply, idle, self.epoch));
    }

    fn stamp(&mut self) -> u64 {
        self.stamps += 1;
        self.stamps
    }

    fn insert(&mut self, key: Key, st: State) {
        if let Some(stamp) = st.evictable() {
            self.evictable.push_back((key, stamp));
        }
        if self.flows.insert(key, st).is_none() {
            Metrics::get().quic_flows.inc();
        }
    }

    /// Is `(key, stamp)` of the eviction order still the flow it was?
    fn current(&self, (key, stamp): &(Key, u64)) -> bool {
        self.flows.get(key).and_then(State::evictable) == Some(*stamp)
    }

    /// The table is full: forget the oldest undecided or held-blocked flow
    /// to make room (an undecided one's datagrams are dropped, counted
    /// `overload`; a blocked one's later datagrams are decided again).
    /// Allowed flows are never evicted. Whether room was made.
    fn evict_oldest(&mut self) -> bool {
        while let Some(e) = self.evictable.pop_front() {
            if !self.current(&e) {
                continue;
            }
            if let Some(State::Inspecting { .. }) = self.remove(&e.0) {
                drop_count(quic_drop::OVERLOAD);
            }
            return true;
        }
        false
    }

    fn remove(&mut self, key: &Key) -> Option<State> {
        let st = self.flows.remove(key);
        if st.is_some() {
            Metrics::get().quic_flows.dec();
        }
        st
    }

    /// Forget flows whose time is up: undecided past the header timeout
    /// (counted `incomplete`), blocked past their hold, allowed and idle.
    fn expire(&mut self) {
        let now = Instant::now();
        let mut gone = 0i64;
        self.flows.retain(|_, st| {
            let keep = match st {
                State::Inspecting { deadline, .. } => {
                    let keep = now < *deadline;
                    if !keep {
                        drop_count(quic_drop::INCOMPLETE);
                    }
                    keep
                }
                State::Blocked { until, .. } => now < *until,
                State::Allowed(r, _) => !r.done.load(Ordering::Relaxed),
            };
            if !keep {
                gone += 1;
            }
            keep
        });
        Metrics::get().quic_flows.sub(gone);
        // The eviction order forgets what is gone: from its front, and all
        // through when stale entries pile up behind live ones.
        while self.evictable.front().is_some_and(|e| !self.current(e)) {
            self.evictable.pop_front();
        }
        if self.evictable.len() > 2 * self.flows.len() + 1024 {
            let mut order = std::mem::take(&mut self.evictable);
            order.retain(|e| self.current(e));
            self.evictable = order;
        }
    }
}

/// A TPROXY flow's own socket: the client's datagrams, relayed upstream
/// (a new connection on the same addresses is decided first,
/// [`reinspect`]) until the flow ends.
async fn from_client(
    shared: Arc<Shared>,
    info: ConnInfo,
    relay: Arc<Relay>,
    own: Arc<UdpSocket>,
    epoch: Instant,
) {
    let idle = shared.limits.flow_idle();
    let mut second = None;
    let mut forward = |ds: &[&[u8]]| {
        if ds.iter().all(|d| relay.admits(d)) {
            return relay.send_up(ds);
        }
        for &d in ds {
            if relay.admits(d) {
                relay.send_up(&[d]);
                continue;
            }
            match reinspect(&shared, &info, &relay, &mut second, d) {
                Verdict::Forward(held) => {
                    let held: Vec<&[u8]> = held.iter().map(Vec::as_slice).collect();
                    relay.send_up(&held);
                }
                Verdict::Block(q) if shared.quic_block == QuicBlock::Close => {
                    let mut out = Vec::with_capacity(128);
                    if q.close_packet(&mut out).is_ok() {
                        io::send_all(own.as_raw_fd(), None, &[&out]);
                    }
                }
                _ => {}
            }
        }
    };
    while !relay.done.load(Ordering::Relaxed) {
        match tokio::time::timeout(idle, own.readable()).await {
            Ok(Ok(())) => match pump(&own, &mut forward) {
                Ok(true) => relay.touch(epoch),
                Ok(false) => {}
                Err(_) => break,
            },
            Ok(Err(_)) => break,
            Err(_) => {}
        }
    }
}

/// An allowed flow's upstream: its answers, relayed to the client, until
/// the flow is silent both ways for `idle`; then the flow is done.
async fn answers(relay: Arc<Relay>, reply: Reply, idle: Duration, epoch: Instant) {
    loop {
        let since = epoch.elapsed().as_millis() as u64;
        let last = relay.last.load(Ordering::Relaxed);
        let quiet = Duration::from_millis(since.saturating_sub(last));
        if quiet >= idle {
            break;
        }
        match tokio::time::timeout(idle - quiet, relay.up.readable()).await {
            Ok(Ok(())) => match pump(&relay.up, |ds| reply.send_all(ds)) {
                Ok(true) => relay.touch(epoch),
                Ok(false) => {}
                Err(_) => break,
            },
            Ok(Err(_)) => break,
            Err(_) => {}
        }
    }
    relay.done.store(true, Ordering::Relaxed);
}

/// An upstream UDP socket for a flow: the fwmark, the client's address as
/// the source with `source = "client"`, connected to the upstream.
fn connect(info: &ConnInfo) -> std::io::Result<std::net::UdpSocket> {
    let up = info.upstream;
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(up.addr),
        socket2::Type::DGRAM.nonblocking(),
        None,
    )?;
    if let Some(mark) = up.fwmark {
        sock.set_mark(mark)?;
    }
    if info.listener.source == crate::config::Source::Client {
        set_transparent(&sock, up.addr.is_ipv6())?;
        sock.bind(&SocketAddr::new(info.peer.ip(), 0).into())?;
    }
    sock.connect(&up.addr.into())?;
    Ok(sock.into())
}
