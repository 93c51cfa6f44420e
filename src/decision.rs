//! The enforcement rules R1–R10 of docs/rules.md, as one pure function:
//! host + destination + snapshot + policy + clock → [`Decision`].

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::hostname::{self, Host};
use crate::snapshot::{walk, Access, Filing, Row, Snapshot};

/// What happens to the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Enforced and allowed.
    Allow,
    /// Enforced and blocked.
    Block,
    /// Not enforced (destination outside the mainland ranges, R2).
    Pass,
    /// Blocked by the rules, but the destination is in shadow mode: the
    /// traffic is forwarded exactly as if allowed, and the decision recorded.
    WouldBlock,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Block => "block",
            Action::Pass => "pass",
            Action::WouldBlock => "would_block",
        }
    }
}

/// Why. These tokens are stable: metric labels, `X-Icpgate-Reason`, JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Filed,
    Allowlisted,
    IpAccess,
    OutsideMainland,
    Unfiled,
    FilingPending,
    FilingRevoked,
    NoAccessRecord,
    AccessCancelled,
    AccessReviewExpired,
    IpNotRegistered,
    Denylisted,
    BadHost,
    AmbiguousHost,
    /// Encrypted Client Hello seen and the ECH policy is `block`.
    Ech,
    /// Bytes that start like an HTTP request but do not parse as one (or
    /// ask for what icpgate cannot follow): 400, never forwarded.
    BadRequest,
    /// A request line, request head or ClientHello longer than the limits
    /// (`[limits] max_sniff_bytes`): 414 / 431 / reset.
    TooLong,
}

impl Reason {
    pub const ALL: [Reason; 17] = [
        Reason::Filed,
        Reason::Allowlisted,
        Reason::IpAccess,
        Reason::OutsideMainland,
        Reason::Unfiled,
        Reason::FilingPending,
        Reason::FilingRevoked,
        Reason::NoAccessRecord,
        Reason::AccessCancelled,
        Reason::AccessReviewExpired,
        Reason::IpNotRegistered,
        Reason::Denylisted,
        Reason::BadHost,
        Reason::AmbiguousHost,
        Reason::Ech,
        Reason::BadRequest,
        Reason::TooLong,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Filed => "filed",
            Reason::Allowlisted => "allowlisted",
            Reason::IpAccess => "ip_access",
            Reason::OutsideMainland => "outside_mainland",
            Reason::Unfiled => "unfiled",
            Reason::FilingPending => "filing_pending",
            Reason::FilingRevoked => "filing_revoked",
            Reason::NoAccessRecord => "no_access_record",
            Reason::AccessCancelled => "access_cancelled",
            Reason::AccessReviewExpired => "access_review_expired",
            Reason::IpNotRegistered => "ip_not_registered",
            Reason::Denylisted => "denylisted",
            Reason::BadHost => "bad_host",
            Reason::AmbiguousHost => "ambiguous_host",
            Reason::Ech => "ech",
            Reason::BadRequest => "bad_request",
            Reason::TooLong => "too_long",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome for one host.
#[derive(Debug, Clone, Copy)]
pub struct Decision<'s> {
    pub action: Action,
    pub reason: Reason,
    /// The table row that decided, if any.
    pub matched: Option<Row<'s>>,
}

impl Decision<'_> {
    fn new(action: Action, reason: Reason) -> Self {
        Decision {
            action,
            reason,
            matched: None,
        }
    }
    pub fn is_block(&self) -> bool {
        self.action == Action::Block
    }
}

/// R3 policy for access without a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpAccess {
    #[default]
    Allow,
    Block,
}

/// A set of IP ranges with O(log n) membership, for the mainland regions.
/// IPv4 and IPv6 are kept apart (as sorted, merged `u128` intervals) so that
/// an IPv4 range never matches an IPv6 address by accident.
#[derive(Debug, Clone, Default)]
pub struct IpRanges {
    v4: Vec<(u128, u128)>,
    v6: Vec<(u128, u128)>,
}

fn merge(mut ranges: Vec<(u128, u128)>) -> Vec<(u128, u128)> {
    ranges.sort_unstable();
    let mut out: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match out.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

fn contains(ranges: &[(u128, u128)], x: u128) -> bool {
    let i = ranges.partition_point(|(lo, _)| *lo <= x);
    i > 0 && ranges[i - 1].1 >= x
}

impl IpRanges {
    pub fn new(nets: &[IpNet]) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for net in nets {
            match net {
                IpNet::V4(n) => v4.push((
                    u128::from(u32::from(n.network())),
                    u128::from(u32::from(n.broadcast())),
                )),
                IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
            }
        }
        IpRanges {
            v4: merge(v4),
            v6: merge(v6),
        }
    }

    /// Every address (used when no regions are configured: `check` without
    /// `--dst` counts the destination as mainland).
    pub fn everything() -> Self {
        IpRanges {
            v4: vec![(0, u128::from(u32::MAX))],
            v6: vec![(0, u128::MAX)],
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => contains(&self.v4, u128::from(u32::from(a))),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => contains(&self.v4, u128::from(u32::from(v4))),
                None => contains(&self.v6, u128::from(a)),
            },
        }
    }
}

/// Allow/deny override lists (R9): canonical names, matched like R4.
#[derive(Debug, Clone, Default)]
pub struct NameSet {
    names: HashSet<String>,
}

impl NameSet {
    /// Canonicalize each entry; an entry that is not a valid name is an error.
    pub fn new<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        let mut names = HashSet::new();
        for e in entries {
            let e = e.as_ref();
            match hostname::canonicalize_bare(e) {
                Ok(Host::Name(n)) => {
                    if hostname::registrable_domain(&n).is_none() {
                        return Err(format!("{e:?} is a public suffix"));
                    }
                    names.insert(n.into_owned());
                }
                Ok(Host::Ip(_)) => return Err(format!("{e:?} is an IP address, not a domain")),
                Err(err) => return Err(format!("{e:?}: {err}")),
            }
        }
        Ok(NameSet { names })
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The entry covering `name`, most specific first.
    pub fn matches<'n>(&self, name: &'n str) -> Option<&'n str> {
        if self.names.is_empty() {
            return None;
        }
        walk(name, |c| self.names.contains(c).then_some(c))
    }
}

/// Whether blocking decisions are carried out (rollout, docs/table.md Modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    /// Forward everything; record blocks as `would_block`.
    Shadow,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Shadow => "shadow",
        }
    }
}

/// Per-destination modes: the most specific range containing the
/// destination wins; none → the default.
#[derive(Debug, Clone, Default)]
pub struct Rollout {
    pub default: Mode,
    /// Most specific (longest prefix) first.
    ranges: Vec<(IpNet, Mode)>,
}

impl Rollout {
    pub fn new(default: Mode, ranges: &[(IpNet, Mode)]) -> Self {
        let mut ranges = ranges.to_vec();
        ranges.sort_by_key(|r| std::cmp::Reverse(r.0.prefix_len()));
        Rollout { default, ranges }
    }

    /// The mode for a destination (`None`: unknown, the default).
    pub fn mode_for(&self, dst: Option<IpAddr>) -> Mode {
        let Some(ip) = dst else {
            return self.default;
        };
        if self.ranges.is_empty() {
            return self.default;
        }
        let ip = match ip {
            IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.ranges
            .iter()
            .find(|(net, _)| net.contains(&ip))
            .map_or(self.default, |(_, m)| *m)
    }
}

/// Everything besides the table that the rules need.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Enforce or shadow, per destination range.
    pub rollout: Rollout,
    /// R2: enforced destinations.
    pub mainland: IpRanges,
    /// R3.
    pub ip_access: IpAccess,
    /// R7.
    pub strict_ip: bool,
    /// R9.
    pub allow: NameSet,
    pub deny: NameSet,
}

impl Policy {
    /// Is this destination enforced? `None` (unknown) counts as mainland.
    pub fn enforced(&self, dst: Option<IpAddr>) -> bool {
        dst.map_or(true, |ip| self.mainland.contains(ip))
    }

    /// The mode for this destination.
    pub fn mode_for(&self, dst: Option<IpAddr>) -> Mode {
        self.rollout.mode_for(dst)
    }

    /// A blocking decision becomes `would_block` where the destination is
    /// in shadow mode.
    pub fn moded<'s>(&self, d: Decision<'s>, dst: Option<IpAddr>) -> Decision<'s> {
        if d.action == Action::Block && self.mode_for(dst) == Mode::Shadow {
            Decision {
                action: Action::WouldBlock,
                ..d
            }
        } else {
            d
        }
    }

    /// A refusal made outside the name rules (a malformed request, an
    /// oversized head, R10, R8 in an SNI, the ECH policy), as a decision
    /// for this destination's mode.
    pub fn refuse(&self, reason: Reason, dst: Option<IpAddr>) -> Decision<'static> {
        self.moded(Decision::new(Action::Block, reason), dst)
    }

    /// A complete ClientHello (TLS or QUIC): the ECH policy, then R3 for
    /// no SNI, R8 for an SNI that is not a host name, then the rules on
    /// the name.
    pub fn decide_hello<'s>(
        &self,
        snap: &'s Snapshot,
        hello: &crate::sniff::tls::Hello,
        ech: crate::config::EchPolicy,
        dst: IpAddr,
        now: i64,
    ) -> Decision<'s> {
        self.decide_hello_then(snap, hello, ech, dst, now, |d, _| d)
    }

    /// [`Policy::decide_hello`], handing `then` the decision and, when the
    /// rules were applied to the SNI, its canonical host and registrable
    /// domain (found once: for the lookup, and for a block page).
    pub fn decide_hello_then<'s, R>(
        &self,
        snap: &'s Snapshot,
        hello: &crate::sniff::tls::Hello,
        ech: crate::config::EchPolicy,
        dst: IpAddr,
        now: i64,
        then: impl FnOnce(Decision<'s>, Option<(&Host<'_>, Option<&str>)>) -> R,
    ) -> R {
        if hello.ech && ech == crate::config::EchPolicy::Block && self.enforced(Some(dst)) {
            return then(self.refuse(Reason::Ech, Some(dst)), None);
        }
        let Some(sni) = hello.sni else {
            return then(self.decide_no_name(Some(dst)), None);
        };
        match sni.as_str().map(hostname::canonicalize_bare) {
            Some(Ok(host)) => {
                let apex = match &host {
                    Host::Name(n) => hostname::registrable_domain(n),
                    Host::Ip(_) => None,
                };
                let d = self.decide_host_under(snap, &host, apex, Some(dst), now);
                then(d, Some((&host, apex)))
            }
            // R8: not a host name (or not UTF-8): never allowed.
            _ => then(self.refuse(Reason::Unfiled, Some(dst)), None),
        }
    }

    /// A ClientHello that cannot be decided on a name: two names (R10) and
    /// an oversized hello are blocking decisions; anything else malformed is
    /// `None` (reset, counted as invalid) — except in shadow mode, where it
    /// is passed through and so recorded as a decision (`bad_request`).
    pub fn decide_bad_hello(
        &self,
        why: &crate::sniff::tls::Invalid,
        dst: IpAddr,
    ) -> Option<Decision<'static>> {
        use crate::sniff::tls::Invalid;
        let reason = match why {
            Invalid::TwoNames => Reason::AmbiguousHost,
            Invalid::TooLarge => Reason::TooLong,
            Invalid::Malformed(_) if self.mode_for(Some(dst)) == Mode::Shadow => Reason::BadRequest,
            Invalid::Malformed(_) => return None,
        };
        Some(self.refuse(reason, Some(dst)))
    }

    fn ip_access(&self) -> Decision<'static> {
        match self.ip_access {
            IpAccess::Allow => Decision::new(Action::Allow, Reason::IpAccess),
            IpAccess::Block => Decision::new(Action::Block, Reason::IpAccess),
        }
    }

    /// Decision for a connection or request that carries no domain at all
    /// (no SNI, HTTP/1.0 without Host, a non-TLS non-HTTP protocol): R2, R3.
    pub fn decide_no_name(&self, dst: Option<IpAddr>) -> Decision<'static> {
        if !self.enforced(dst) {
            return Decision::new(Action::Pass, Reason::OutsideMainland);
        }
        self.moded(self.ip_access(), dst)
    }

    /// Decide for a raw host string (an SNI, a Host header value with an
    /// optional port, a CLI argument).
    pub fn decide_raw<'s>(
        &self,
        snap: &'s Snapshot,
        raw: &str,
        dst: Option<IpAddr>,
        now: i64,
    ) -> Decision<'s> {
        if !self.enforced(dst) {
            return Decision::new(Action::Pass, Reason::OutsideMainland);
        }
        self.decide_canonicalized(snap, &hostname::canonicalize(raw), dst, now)
    }

    /// [`Policy::decide_raw`] for a raw host string canonicalized already
    /// (one name decided against several tables canonicalizes it once).
    pub fn decide_canonicalized<'s>(
        &self,
        snap: &'s Snapshot,
        host: &Result<Host<'_>, hostname::HostError>,
        dst: Option<IpAddr>,
        now: i64,
    ) -> Decision<'s> {
        match host {
            Ok(host) => self.decide_host(snap, host, dst, now),
            // R8: not a hostname → never allowed, treated as unfiled.
            Err(_) => self.refuse(Reason::Unfiled, dst),
        }
    }

    /// Decide for a canonical host.
    pub fn decide_host<'s>(
        &self,
        snap: &'s Snapshot,
        host: &Host<'_>,
        dst: Option<IpAddr>,
        now: i64,
    ) -> Decision<'s> {
        self.decide_host_under(snap, host, None, dst, now)
    }

    /// [`Policy::decide_host`] with the name's registrable domain when the
    /// caller already has it (the block page shows it: one public-suffix
    /// lookup per blocked request instead of two); `None`: found here.
    pub fn decide_host_under<'s>(
        &self,
        snap: &'s Snapshot,
        host: &Host<'_>,
        apex: Option<&str>,
        dst: Option<IpAddr>,
        now: i64,
    ) -> Decision<'s> {
        if !self.enforced(dst) {
            return Decision::new(Action::Pass, Reason::OutsideMainland);
        }
        self.moded(self.decide_rules(snap, host, apex, dst, now), dst)
    }

    /// R3–R9 for an enforced destination, before its mode applies.
    fn decide_rules<'s>(
        &self,
        snap: &'s Snapshot,
        host: &Host<'_>,
        apex: Option<&str>,
        dst: Option<IpAddr>,
        now: i64,
    ) -> Decision<'s> {
        let name = match host {
            Host::Ip(_) => return self.ip_access(),
            Host::Name(n) => n.as_ref(),
        };
        if self.deny.matches(name).is_some() {
            return Decision::new(Action::Block, Reason::Denylisted);
        }
        if self.allow.matches(name).is_some() {
            return Decision::new(Action::Allow, Reason::Allowlisted);
        }
        let row = match apex {
            Some(apex) => snap.lookup_under(name, apex),
            None => snap.lookup(name),
        };
        let Some(row) = row else {
            return Decision::new(Action::Block, Reason::Unfiled);
        };
        let (action, reason) = judge_row(&row, self.strict_ip, dst, now);
        Decision {
            action,
            reason,
            matched: Some(row),
        }
    }
}

/// R5–R7 for a matched row.
fn judge_row(row: &Row<'_>, strict_ip: bool, dst: Option<IpAddr>, now: i64) -> (Action, Reason) {
    match row.filing() {
        Filing::Filed | Filing::ChangePending => {}
        Filing::FirstPending => return (Action::Block, Reason::FilingPending),
        Filing::Revoked => return (Action::Block, Reason::FilingRevoked),
    }
    match row.access() {
        Access::Active => {}
        Access::InitialReview => {
            // A missing expiry cannot pass validation; fail closed anyway.
            match row.access_expires() {
                Some(exp) if now < exp => {}
                _ => return (Action::Block, Reason::AccessReviewExpired),
            }
        }
        Access::Cancelled => return (Action::Block, Reason::AccessCancelled),
        Access::None => return (Action::Block, Reason::NoAccessRecord),
    }
    if strict_ip && !row.ips().is_empty() {
        match dst {
            Some(ip) if row.ip_registered(ip) => {}
            _ => return (Action::Block, Reason::IpNotRegistered),
        }
    }
    (Action::Allow, Reason::Filed)
}

/// A support-facing explanation of a decision, in English.
pub fn explain(d: &Decision<'_>, now: i64) -> String {
    let row = d.matched;
    let icp = row.map(|r| r.icp()).unwrap_or("");
    let dom = row.map(|r| r.domain()).unwrap_or("");
    match d.reason {
        Reason::Filed => {
            let r = row.map(|r| (r.filing(), r.access(), r.access_expires()));
            match r {
                Some((f, Access::InitialReview, Some(exp))) => format!(
                    "covered by row {dom} ({icp}, filing {}), access in initial review: allowed for {} more",
                    f.as_str(),
                    human_duration(exp - now)
                ),
                Some((f, a, _)) => format!(
                    "covered by row {dom} ({icp}): filing {}, access {}",
                    f.as_str(),
                    a.as_str()
                ),
                None => "filed".to_owned(),
            }
        }
        Reason::Allowlisted => "on the provider's allow list".to_owned(),
        Reason::IpAccess => "no domain name (IP literal or none): R3 ip_access policy".to_owned(),
        Reason::OutsideMainland => "destination outside the mainland ranges: not enforced".to_owned(),
        Reason::Unfiled => "no filing row covers this name (or it is not a valid host name)".to_owned(),
        Reason::FilingPending => format!("row {dom}: first filing under review, no number yet"),
        Reason::FilingRevoked => format!("row {dom} ({icp}): filing revoked (注销)"),
        Reason::NoAccessRecord => format!(
            "row {dom} ({icp}): filed with another provider, no access record here — add access (接入备案)"
        ),
        Reason::AccessCancelled => format!("row {dom} ({icp}): access cancelled here (取消接入)"),
        Reason::AccessReviewExpired => {
            let exp = row.and_then(|r| r.access_expires()).map(rfc3339).unwrap_or_default();
            format!("row {dom} ({icp}): initial-review access expired at {exp}")
        }
        Reason::IpNotRegistered => format!(
            "row {dom} ({icp}) registers IPs {} and the destination is not among them",
            row.map(|r| {
                r.ips()
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
        ),
        Reason::Denylisted => "on the deny list (regulator order)".to_owned(),
        Reason::BadHost => "malformed host".to_owned(),
        Reason::AmbiguousHost => "conflicting host names".to_owned(),
        Reason::Ech => "encrypted ClientHello refused by policy".to_owned(),
        Reason::BadRequest => "not a well-formed HTTP request: refused, never forwarded".to_owned(),
        Reason::TooLong => "request line, head or ClientHello over the size limit: refused".to_owned(),
    }
}

fn human_duration(secs: i64) -> String {
    let secs = secs.max(0);
    if secs >= 86400 {
        format!("{}d{}h", secs / 86400, (secs % 86400) / 3600)
    } else {
        format!("{}h{}m", secs / 3600, (secs % 3600) / 60)
    }
}

/// Unix seconds → RFC 3339 UTC.
pub fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

/// Current Unix time in seconds.
pub fn now_unix() -> i64 {
    unix_secs(std::time::SystemTime::now())
}

/// A time as Unix seconds (0 before the epoch): the one conversion.
pub fn unix_secs(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
