//! What every phase of a connection shares: the process-wide state
//! (`Shared`), a listener's settings (`ListenerCtx`), one connection's
//! facts (`ConnInfo`), and the helpers each phase uses to count a decision
//! and write within the idle timeout.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use super::h1;
use super::upstream::Upstream;
use crate::block::BlockPage;
use crate::config::{EchPolicy, Limits, ListenerConfig, TlsBlock, Transparent};
use crate::decision::{Action, Decision, Policy, Reason};
use crate::hostname::{self, Host};
use crate::metrics::{Metrics, Proto};
use crate::snapshot::{Snapshot, TableHolder};
use crate::top::TopBlocked;

/// State shared by every connection.
pub struct Shared {
    pub table: Arc<TableHolder>,
    pub policy: Policy,
    pub page: BlockPage,
    pub limits: Limits,
    pub tls_block: TlsBlock,
    pub ech: EchPolicy,
    /// For `tls = "page"`.
    pub tls_page: Option<tokio_rustls::TlsAcceptor>,
    /// Blocked QUIC flows: CONNECTION_CLOSE or silence, and for how long
    /// their datagrams are dropped.
    pub quic_block: crate::config::QuicBlock,
    pub quic_hold_secs: u64,
    pub top: TopBlocked,
    /// Names recently allowed, for the traffic-aware table guard.
    pub recent: Arc<crate::flip::Recent>,
    pub log: crate::logging::BlockLog,
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

/// Per-listener settings.
pub struct ListenerCtx {
    pub label: String,
    /// The configured listening address.
    pub addr: SocketAddr,
    pub upstream: Option<SocketAddr>,
    pub transparent: Transparent,
    pub fwmark: Option<u32>,
    pub proxy_protocol: bool,
    /// TCP_DEFER_ACCEPT: connections arrive with their first bytes.
    pub defer_accept: bool,
    /// Idle HTTP upstream connections (their sockets carry the fwmark).
    pub pool: h1::UpPool,
    /// Upstream connections leave from the client's address (and port).
    pub source: crate::config::Source,
    pub source_port: crate::config::SourcePort,
}

impl std::fmt::Debug for ListenerCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerCtx")
            .field("label", &self.label)
            .finish()
    }
}

impl ListenerCtx {
    pub fn new(cfg: &ListenerConfig) -> Self {
        ListenerCtx {
            label: cfg.label(),
            addr: cfg.addr,
            upstream: cfg.upstream,
            transparent: cfg.transparent,
            fwmark: cfg.upstream_fwmark,
            proxy_protocol: cfg.proxy_protocol,
            defer_accept: cfg.defer_accept,
            pool: h1::UpPool::default(),
            source: cfg.source,
            source_port: cfg.source_port,
        }
    }
}

/// What we know about one client connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// Destination IP for R2/R7.
    pub dst: IpAddr,
    /// Where allowed traffic goes.
    pub upstream: Upstream,
    pub listener: Arc<ListenerCtx>,
}

/// Record a decision: metrics, latency, top-blocked, rate-limited log.
pub fn record(
    shared: &Shared,
    proto: Proto,
    d: &Decision<'_>,
    host: &str,
    info: &ConnInfo,
    started: Instant,
) {
    Metrics::get().decision(proto, d.action, d.reason);
    Metrics::get()
        .decision_duration
        .observe(started.elapsed().as_secs_f64());
    if d.action == Action::Allow {
        shared.recent.hit(host);
    } else if matches!(d.action, Action::Block | Action::WouldBlock) {
        shared.top.hit(host);
        let would = d.action == Action::WouldBlock;
        shared
            .log
            .block(proto, host, d.reason, would, info.peer, info.dst);
    }
}

pub(crate) fn upstream_error(info: &ConnInfo, e: &std::io::Error) {
    Metrics::get()
        .upstream_errors
        .with_label_values(&[&info.listener.label])
        .inc();
    tracing::debug!(upstream = %info.upstream.addr, error = %e, "upstream connect failed");
}

/// `w.write_all(bytes)`, given `idle` to finish; false if it failed or
/// timed out. Nothing to write is done at once.
pub(crate) async fn write_within<W>(w: &mut W, bytes: &[u8], idle: Duration) -> bool
where
    W: tokio::io::AsyncWrite + Unpin + ?Sized,
{
    bytes.is_empty()
        || matches!(
            tokio::time::timeout(idle, w.write_all(bytes)).await,
            Ok(Ok(()))
        )
}

/// The parts of a blocking decision the page needs, detached from the
/// snapshot (so no snapshot is held across an `.await`).
#[derive(Debug, Clone)]
pub struct OwnedBlock {
    pub reason: Reason,
    pub icp: Option<String>,
    /// When the table that decided was loaded (Unix seconds): the page's
    /// "table loaded at".
    pub table_loaded: i64,
}

impl OwnedBlock {
    /// `d`, decided with `snap`.
    pub fn new(d: &Decision<'_>, snap: &Snapshot) -> Self {
        OwnedBlock {
            reason: d.reason,
            icp: d
                .matched
                .map(|r| r.icp().to_owned())
                .filter(|s| !s.is_empty()),
            table_loaded: crate::decision::unix_secs(snap.meta.loaded_at),
        }
    }
}

/// The host a blocked request or connection is reported under.
pub fn registrable_of<'h>(host: &'h Host<'_>) -> std::borrow::Cow<'h, str> {
    match host {
        Host::Name(n) => std::borrow::Cow::Borrowed(hostname::registrable_domain(n).unwrap_or(n)),
        Host::Ip(ip) => std::borrow::Cow::Owned(ip.to_string()),
    }
}
