//! Every metric icpgate exports, named in one place (docs/interfaces.md). Per-decision
//! counters are resolved once at startup into a fixed array, so the data
//! path only does an atomic add: no label hashing, no lock.

use std::sync::OnceLock;

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::decision::{Action, Reason};

pub mod names {
    pub const DECISIONS_TOTAL: &str = "icpgate_decisions_total";
    pub const DECISION_DURATION_SECONDS: &str = "icpgate_decision_duration_seconds";
    pub const TABLE_ENTRIES: &str = "icpgate_table_entries";
    pub const TABLE_LOADED_TIMESTAMP_SECONDS: &str = "icpgate_table_loaded_timestamp_seconds";
    pub const TABLE_AGE_SECONDS: &str = "icpgate_table_age_seconds";
    pub const TABLE_RELOADS_TOTAL: &str = "icpgate_table_reloads_total";
    pub const TABLE_RELOAD_FAILING: &str = "icpgate_table_reload_failing";
    pub const CONNECTIONS_ACTIVE: &str = "icpgate_connections_active";
    pub const CONNECTIONS_TOTAL: &str = "icpgate_connections_total";
    pub const CONNECTIONS_REJECTED_TOTAL: &str = "icpgate_connections_rejected_total";
    pub const CONNECTIONS_SHED_TOTAL: &str = "icpgate_connections_shed_total";
    pub const QUIC_FLOWS_ACTIVE: &str = "icpgate_quic_flows_active";
    pub const QUIC_DROPPED_TOTAL: &str = "icpgate_quic_dropped_total";
    pub const CONNECTIONS_REFUSED_TOTAL: &str = "icpgate_connections_refused_total";
    pub const SNIFF_TOTAL: &str = "icpgate_sniff_total";
    pub const UPSTREAM_CONNECT_ERRORS_TOTAL: &str = "icpgate_upstream_connect_errors_total";
    pub const BLOCK_LOGS_SUPPRESSED_TOTAL: &str = "icpgate_block_logs_suppressed_total";
    pub const BUILD_INFO: &str = "icpgate_build_info";

    /// Every metric icpgate exports (dashboards and alerts may use only
    /// these; tests/deploy.rs checks).
    pub const ALL: &[&str] = &[
        DECISIONS_TOTAL,
        DECISION_DURATION_SECONDS,
        TABLE_ENTRIES,
        TABLE_LOADED_TIMESTAMP_SECONDS,
        TABLE_AGE_SECONDS,
        TABLE_RELOADS_TOTAL,
        TABLE_RELOAD_FAILING,
        CONNECTIONS_ACTIVE,
        CONNECTIONS_TOTAL,
        CONNECTIONS_REJECTED_TOTAL,
        CONNECTIONS_SHED_TOTAL,
        CONNECTIONS_REFUSED_TOTAL,
        QUIC_FLOWS_ACTIVE,
        QUIC_DROPPED_TOTAL,
        SNIFF_TOTAL,
        UPSTREAM_CONNECT_ERRORS_TOTAL,
        BLOCK_LOGS_SUPPRESSED_TOTAL,
        BUILD_INFO,
    ];

    pub const LABEL_PROTOCOL: &str = "protocol";
    pub const LABEL_DECISION: &str = "decision";
    pub const LABEL_REASON: &str = "reason";
    pub const LABEL_RESULT: &str = "result";
    pub const LABEL_LISTENER: &str = "listener";
    pub const LABEL_OUTCOME: &str = "outcome";
    pub const LABEL_VERSION: &str = "version";
    pub const LABEL_CAUSE: &str = "cause";
}

/// Protocol label of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Http,
    Tls,
    Other,
    Quic,
}

impl Proto {
    pub const ALL: [Proto; 4] = [Proto::Http, Proto::Tls, Proto::Other, Proto::Quic];
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Http => "http",
            Proto::Tls => "tls",
            Proto::Other => "other",
            Proto::Quic => "quic",
        }
    }
}

/// Sniff outcome label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    Tls,
    Http,
    Other,
    Nothing,
    Incomplete,
    Invalid,
}

impl Sniffed {
    pub const ALL: [Sniffed; 6] = [
        Sniffed::Tls,
        Sniffed::Http,
        Sniffed::Other,
        Sniffed::Nothing,
        Sniffed::Incomplete,
        Sniffed::Invalid,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Sniffed::Tls => "tls",
            Sniffed::Http => "http",
            Sniffed::Other => "other",
            Sniffed::Nothing => "nothing",
            Sniffed::Incomplete => "incomplete",
            Sniffed::Invalid => "invalid",
        }
    }
}

/// Why a QUIC datagram was dropped (`icpgate_quic_dropped_total{reason}`).
pub mod quic_drop {
    /// A long header of a version icpgate cannot read.
    pub const UNKNOWN_VERSION: &str = "unknown_version";
    /// An Initial that does not decrypt with its connection ID's keys.
    pub const UNDECRYPTABLE: &str = "undecryptable";
    /// A flow whose ClientHello did not complete within the limits (time,
    /// datagrams).
    pub const INCOMPLETE: &str = "incomplete";
    /// Not a client Initial, for a flow without a decision (a short header,
    /// a stray packet).
    pub const NO_FLOW: &str = "no_flow";
    /// A new flow while `max_flows` are tracked and all allowed, or an
    /// undecided flow evicted to make room for a new one.
    pub const OVERLOAD: &str = "overload";
    /// A datagram of a blocked flow, within its hold time.
    pub const BLOCKED_HOLD: &str = "blocked_hold";
    /// A malformed Initial (bad frames, small datagram, short DCID, ...).
    pub const INVALID: &str = "invalid";
    pub const ALL: [&str; 7] = [
        UNKNOWN_VERSION,
        UNDECRYPTABLE,
        INCOMPLETE,
        NO_FLOW,
        OVERLOAD,
        BLOCKED_HOLD,
        INVALID,
    ];
}

pub mod reload_result {
    pub const SUCCESS: &str = "success";
    pub const REJECTED: &str = "rejected";
    pub const ERROR: &str = "error";
    pub const UNCHANGED: &str = "unchanged";
    /// Would block too much recent traffic, or a busiest name (docs/table.md).
    pub const FLIP_REJECTED: &str = "flip_rejected";
}

const ACTIONS: [Action; 4] = [
    Action::Allow,
    Action::Block,
    Action::Pass,
    Action::WouldBlock,
];

pub struct Metrics {
    pub registry: Registry,
    decisions: Vec<IntCounter>,
    pub decision_duration: Histogram,
    pub table_entries: IntGauge,
    pub table_loaded: IntGauge,
    pub table_age: IntGauge,
    pub table_reloads: IntCounterVec,
    pub table_reload_failing: IntGauge,
    pub connections_active: IntGaugeVec,
    pub connections_total: IntCounterVec,
    pub connections_rejected: IntCounterVec,
    pub connections_shed: IntCounterVec,
    /// QUIC flows tracked (inspecting, allowed, held blocked).
    pub quic_flows: IntGauge,
    /// QUIC datagrams dropped, by reason (see `quic_drop`).
    pub quic_dropped: IntCounterVec,
    /// Its series, in the order of `quic_drop::ALL` (no label lookup on
    /// the data path).
    quic_drops: Vec<IntCounter>,
    /// Loop guards: cause = loop | not_intercepted.
    pub connections_refused: IntCounterVec,
    sniffed: Vec<IntCounter>,
    pub upstream_errors: IntCounterVec,
    pub block_logs_suppressed: IntCounter,
}

/// Can the rules produce this pair?
fn possible(a: Action, r: Reason) -> bool {
    match a {
        Action::Pass => r == Reason::OutsideMainland,
        Action::Allow => matches!(r, Reason::Filed | Reason::Allowlisted | Reason::IpAccess),
        Action::Block | Action::WouldBlock => !matches!(
            r,
            Reason::Filed | Reason::Allowlisted | Reason::OutsideMainland
        ),
    }
}

fn build() -> Result<Metrics, prometheus::Error> {
    use names::*;
    let registry = Registry::new();
    let decisions_vec = IntCounterVec::new(
        Opts::new(
            DECISIONS_TOTAL,
            "Decisions by protocol, outcome and reason.",
        ),
        &[LABEL_PROTOCOL, LABEL_DECISION, LABEL_REASON],
    )?;
    // Only the combinations the rules can produce become series; the
    // others stay detached counters (never exported).
    let mut decisions = Vec::new();
    for p in Proto::ALL {
        for a in ACTIONS {
            for r in Reason::ALL {
                decisions.push(if possible(a, r) {
                    decisions_vec.with_label_values(&[p.as_str(), a.as_str(), r.as_str()])
                } else {
                    IntCounter::new("unused", "unused")?
                });
            }
        }
    }
    let decision_duration = Histogram::with_opts(
        HistogramOpts::new(
            DECISION_DURATION_SECONDS,
            "Time to decide (canonicalize, look up, apply the rules), seconds.",
        )
        .buckets(vec![
            1e-7, 2.5e-7, 5e-7, 1e-6, 2.5e-6, 5e-6, 1e-5, 1e-4, 1e-3, 1e-2,
        ]),
    )?;
    let table_entries = IntGauge::new(TABLE_ENTRIES, "Rows in the running table.")?;
    let table_loaded = IntGauge::new(
        TABLE_LOADED_TIMESTAMP_SECONDS,
        "Unix time the running table was loaded.",
    )?;
    let table_age = IntGauge::new(
        TABLE_AGE_SECONDS,
        "Seconds since the running table was loaded.",
    )?;
    let table_reloads = IntCounterVec::new(
        Opts::new(TABLE_RELOADS_TOTAL, "Table reload attempts by result."),
        &[LABEL_RESULT],
    )?;
    let table_reload_failing = IntGauge::new(
        TABLE_RELOAD_FAILING,
        "1 while the last reload attempt failed (the previous table keeps serving).",
    )?;
    let connections_active = IntGaugeVec::new(
        Opts::new(CONNECTIONS_ACTIVE, "Open client connections."),
        &[LABEL_LISTENER],
    )?;
    let connections_total = IntCounterVec::new(
        Opts::new(CONNECTIONS_TOTAL, "Accepted client connections."),
        &[LABEL_LISTENER],
    )?;
    let connections_rejected = IntCounterVec::new(
        Opts::new(
            CONNECTIONS_REJECTED_TOTAL,
            "Connections refused by the connection limit.",
        ),
        &[LABEL_LISTENER],
    )?;
    let connections_shed = IntCounterVec::new(
        Opts::new(
            CONNECTIONS_SHED_TOTAL,
            "Connections reset at accept because the process was out of file descriptors.",
        ),
        &[LABEL_LISTENER],
    )?;
    let quic_flows = IntGauge::new(
        QUIC_FLOWS_ACTIVE,
        "QUIC flows tracked: being inspected, allowed, or held after a block.",
    )?;
    let quic_dropped = IntCounterVec::new(
        Opts::new(
            QUIC_DROPPED_TOTAL,
            "QUIC datagrams dropped, by reason (never forwarded undecided).",
        ),
        &[LABEL_REASON],
    )?;
    let connections_refused = IntCounterVec::new(
        Opts::new(
            CONNECTIONS_REFUSED_TOTAL,
            "Connections refused by the loop guards (cause: loop, not_intercepted).",
        ),
        &[LABEL_LISTENER, LABEL_CAUSE],
    )?;
    let sniffed_vec = IntCounterVec::new(
        Opts::new(SNIFF_TOTAL, "First-bytes classification of connections."),
        &[LABEL_OUTCOME],
    )?;
    let sniffed = Sniffed::ALL
        .iter()
        .map(|s| sniffed_vec.with_label_values(&[s.as_str()]))
        .collect();
    let upstream_errors = IntCounterVec::new(
        Opts::new(
            UPSTREAM_CONNECT_ERRORS_TOTAL,
            "Failed upstream connections.",
        ),
        &[LABEL_LISTENER],
    )?;
    let block_logs_suppressed = IntCounter::new(
        BLOCK_LOGS_SUPPRESSED_TOTAL,
        "Block log lines dropped by the rate limit.",
    )?;
    let build_info = IntGaugeVec::new(
        Opts::new(BUILD_INFO, "Build information."),
        &[LABEL_VERSION],
    )?;
    build_info
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
    registry.register(Box::new(decisions_vec))?;
    registry.register(Box::new(decision_duration.clone()))?;
    registry.register(Box::new(table_entries.clone()))?;
    registry.register(Box::new(table_loaded.clone()))?;
    registry.register(Box::new(table_age.clone()))?;
    registry.register(Box::new(table_reloads.clone()))?;
    registry.register(Box::new(table_reload_failing.clone()))?;
    registry.register(Box::new(connections_active.clone()))?;
    registry.register(Box::new(connections_total.clone()))?;
    registry.register(Box::new(connections_rejected.clone()))?;
    registry.register(Box::new(connections_shed.clone()))?;
    registry.register(Box::new(quic_flows.clone()))?;
    registry.register(Box::new(quic_dropped.clone()))?;
    let quic_drops = quic_drop::ALL
        .iter()
        .map(|r| quic_dropped.with_label_values(&[r]))
        .collect();
    registry.register(Box::new(connections_refused.clone()))?;
    registry.register(Box::new(sniffed_vec))?;
    registry.register(Box::new(upstream_errors.clone()))?;
    registry.register(Box::new(block_logs_suppressed.clone()))?;
    registry.register(Box::new(build_info))?;
    for r in [
        reload_result::SUCCESS,
        reload_result::REJECTED,
        reload_result::ERROR,
        reload_result::UNCHANGED,
        reload_result::FLIP_REJECTED,
    ] {
        table_reloads.with_label_values(&[r]);
    }
    Ok(Metrics {
        registry,
        decisions,
        decision_duration,
        table_entries,
        table_loaded,
        table_age,
        table_reloads,
        table_reload_failing,
        connections_active,
        connections_total,
        connections_rejected,
        connections_shed,
        quic_flows,
        quic_dropped,
        quic_drops,
        connections_refused,
        sniffed,
        upstream_errors,
        block_logs_suppressed,
    })
}

impl Metrics {
    /// Count a dropped QUIC datagram (`reason`: one of `quic_drop`).
    pub fn quic_drop(&self, reason: &str) {
        if let Some(i) = quic_drop::ALL.iter().position(|r| *r == reason) {
            if let Some(c) = self.quic_drops.get(i) {
                c.inc();
            }
        }
    }

    /// The process-wide metrics.
    pub fn get() -> &'static Metrics {
        static M: OnceLock<Metrics> = OnceLock::new();
        M.get_or_init(|| match build() {
            Ok(m) => m,
            // Only reachable through a programming error in `build` (duplicate
            // names), which the tests exercise.
            Err(e) => panic!("metrics registration: {e}"),
        })
    }

    #[inline]
    pub fn decision(&self, proto: Proto, action: Action, reason: Reason) {
        let a = ACTIONS.iter().position(|x| *x == action).unwrap_or(0);
        let i = (proto as usize * ACTIONS.len() + a) * Reason::ALL.len() + reason.index();
        if let Some(c) = self.decisions.get(i) {
            c.inc();
        }
    }

    #[inline]
    pub fn sniffed(&self, s: Sniffed) {
        if let Some(c) = self.sniffed.get(s as usize) {
            c.inc();
        }
    }

    /// Prometheus text format.
    pub fn render(&self) -> String {
        use prometheus::Encoder;
        let mut buf = Vec::new();
        let enc = prometheus::TextEncoder::new();
        if enc.encode(&self.registry.gather(), &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
