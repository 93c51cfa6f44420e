//! The TOML configuration (docs/interfaces.md). Every key is documented, with its
//! default, in `config/icpgate.reference.toml`. Unknown keys are errors, so a
//! typo never silently falls back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;
use std::time::Duration;

use crate::decision::{IpAccess, IpRanges, Mode, NameSet, Policy, Rollout};
use crate::table::LoadOptions;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default, rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    #[serde(default)]
    pub regions: Regions,
    #[serde(default)]
    pub table: TableConfig,
    #[serde(default)]
    pub policy: PolicyConfig,
    #[serde(default)]
    pub overrides: Overrides,
    #[serde(default)]
    pub block: BlockConfig,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub runtime: RuntimeConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub demo: DemoConfig,
}

/// How a transparent listener learns the original destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transparent {
    /// nftables REDIRECT/DNAT: `SO_ORIGINAL_DST`.
    #[default]
    Redirect,
    /// TPROXY: the accepted socket's local address (listener has IP_TRANSPARENT).
    Tproxy,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub addr: SocketAddr,
    /// Fixed upstream; omit for transparent mode.
    pub upstream: Option<SocketAddr>,
    #[serde(default)]
    pub transparent: Transparent,
    /// SO_MARK on upstream sockets (so they are not intercepted again).
    pub upstream_fwmark: Option<u32>,
    #[serde(default)]
    pub proxy_protocol: bool,
    /// TCP_DEFER_ACCEPT: hand over a connection only once its first bytes
    /// are in (or after ~1 s). For listeners that see client-first
    /// protocols only (HTTP, TLS); server-first ones would wait.
    #[serde(default)]
    pub defer_accept: bool,
    /// Label for metrics and logs; defaults to the address.
    pub name: Option<String>,
    /// Transparent listeners: upstream connections leave from the gateway's
    /// address ("gateway") or from the client's own ("client": the origin
    /// sees its visitors).
    #[serde(default)]
    pub source: Source,
    /// With `source = "client"`: "any" (an ephemeral port, the default) or
    /// "client" (the client's own port too).
    #[serde(default)]
    pub source_port: SourcePort,
    /// "tcp" (TLS, HTTP, anything) or "udp" (QUIC / HTTP/3 inspection).
    #[serde(default)]
    pub transport: Transport,
}

/// What a listener carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[default]
    Tcp,
    /// QUIC on UDP: the Initial packets' ClientHello is decided.
    Udp,
}

/// What a blocked QUIC flow gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuicBlock {
    /// A CONNECTION_CLOSE in a server Initial: the browser gives up at once
    /// and falls back to TCP, where the block page is.
    #[default]
    Close,
    /// Nothing: the client times out.
    Drop,
}

/// Where upstream connections leave from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    #[default]
    Gateway,
    Client,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourcePort {
    #[default]
    Any,
    Client,
}

impl ListenerConfig {
    pub fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.addr.to_string())
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Regions {
    #[serde(default)]
    pub mainland: Vec<IpNet>,
    /// Per-range modes (`[[regions.rollout]]`): the most specific wins.
    #[serde(default)]
    pub rollout: Vec<RolloutRange>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutRange {
    pub cidr: IpNet,
    pub mode: Mode,
}

fn default_max_shrink() -> f64 {
    0.10
}
fn default_max_flip() -> f64 {
    0.01
}
fn default_poll() -> u64 {
    60
}
fn default_true() -> bool {
    true
}

fn default_watch_ms() -> u64 {
    1000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    pub path: Option<PathBuf>,
    pub url: Option<String>,
    #[serde(default = "default_max_shrink")]
    pub max_shrink: f64,
    /// Largest share of recently allowed traffic a new table may block.
    #[serde(default = "default_max_flip")]
    pub max_flip: f64,
    /// Accept a shrinking table anyway (every reload).
    #[serde(default)]
    pub force: bool,
    #[serde(default)]
    pub max_invalid_rows: usize,
    pub max_bytes: Option<u64>,
    pub max_decompressed_bytes: Option<u64>,
    pub max_gzip_ratio: Option<u64>,
    pub max_row_bytes: Option<usize>,
    /// URL source: the whole fetch must end within this.
    #[serde(default = "default_fetch_timeout")]
    pub fetch_timeout_secs: u64,
    /// URL source: slower than this over any 30 s window is given up.
    #[serde(default = "default_fetch_min_speed")]
    pub fetch_min_bytes_per_sec: u64,
    pub max_rows: Option<usize>,
    /// URL source: seconds between polls.
    #[serde(default = "default_poll")]
    pub poll_interval_secs: u64,
    /// File source: how often the file is checked for replacement (ms).
    #[serde(default = "default_watch_ms")]
    pub watch_interval_ms: u64,
    /// File source: also react to the directory's change events (inotify)
    /// instead of waiting for the next look.
    #[serde(default = "default_true")]
    pub watch_events: bool,
    /// Keep a replaced table's memory to build the next one in.
    #[serde(default = "default_true")]
    pub reuse_memory: bool,
}

impl Default for TableConfig {
    fn default() -> Self {
        TableConfig {
            path: None,
            url: None,
            max_shrink: default_max_shrink(),
            max_flip: default_max_flip(),
            force: false,
            max_invalid_rows: 0,
            max_bytes: None,
            max_decompressed_bytes: None,
            max_gzip_ratio: None,
            max_row_bytes: None,
            fetch_timeout_secs: default_fetch_timeout(),
            fetch_min_bytes_per_sec: default_fetch_min_speed(),
            max_rows: None,
            poll_interval_secs: default_poll(),
            watch_interval_ms: default_watch_ms(),
            watch_events: true,
            reuse_memory: true,
        }
    }
}

fn default_fetch_timeout() -> u64 {
    120
}

fn default_fetch_min_speed() -> u64 {
    4096
}

impl TableConfig {
    /// Limits of a URL fetch.
    pub fn fetch_limits(&self) -> crate::fetch::FetchLimits {
        crate::fetch::FetchLimits {
            max_bytes: self.load_options().max_bytes,
            timeout: Duration::from_secs(self.fetch_timeout_secs),
            min_bytes_per_sec: self.fetch_min_bytes_per_sec,
        }
    }

    pub fn load_options(&self) -> LoadOptions {
        let d = LoadOptions::default();
        LoadOptions {
            max_invalid_rows: self.max_invalid_rows,
            max_bytes: self.max_bytes.unwrap_or(d.max_bytes),
            max_decompressed_bytes: self
                .max_decompressed_bytes
                .unwrap_or(d.max_decompressed_bytes),
            max_gzip_ratio: self.max_gzip_ratio.unwrap_or(d.max_gzip_ratio),
            max_row_bytes: self.max_row_bytes.unwrap_or(d.max_row_bytes),
            max_rows: self.max_rows.unwrap_or(d.max_rows),
            max_ips_per_row: d.max_ips_per_row,
        }
    }
}

/// What to do with a ClientHello that carries Encrypted Client Hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EchPolicy {
    /// Decide on the outer (public) SNI.
    #[default]
    Outer,
    /// Block every ECH hello (reason `ech`).
    Block,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// enforce | shadow (the default for destinations no rollout range
    /// covers).
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub ip_access: IpAccess,
    #[serde(default)]
    pub strict_ip: bool,
    #[serde(default)]
    pub ech: EchPolicy,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsBlock {
    #[default]
    Reset,
    Alert,
    Page,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    pub name: String,
    pub url: String,
}

fn default_status() -> u16 {
    403
}
fn default_provider() -> String {
    "Example Cloud".to_owned()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockConfig {
    #[serde(default = "default_status")]
    pub http_status: u16,
    #[serde(default)]
    pub tls: TlsBlock,
    /// PEM certificate chain and key for `tls = "page"`; without them a
    /// self-signed certificate is generated at startup.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Operator template replacing the built-in page.
    pub template: Option<PathBuf>,
    /// Operator per-reason texts replacing the built-in ones.
    pub reasons: Option<PathBuf>,
    #[serde(default = "default_provider")]
    pub provider_name: String,
    #[serde(default)]
    pub links: Vec<Link>,
    /// Blocked QUIC flows: "close" (default) or "drop".
    #[serde(default)]
    pub quic: QuicBlock,
    /// How long a blocked QUIC flow's datagrams are dropped.
    #[serde(default = "default_quic_hold")]
    pub quic_hold_secs: u64,
}

fn default_quic_hold() -> u64 {
    30
}

impl Default for BlockConfig {
    fn default() -> Self {
        BlockConfig {
            quic: QuicBlock::default(),
            quic_hold_secs: default_quic_hold(),
            http_status: default_status(),
            tls: TlsBlock::default(),
            cert: None,
            key: None,
            template: None,
            reasons: None,
            provider_name: default_provider(),
            links: Vec::new(),
        }
    }
}

/// Upper bound on `[runtime] workers` (each holds a socket per listener).
pub const MAX_WORKERS: usize = 1024;

/// Threads that serve connections.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Worker threads, each with its own event loop and its own socket of
    /// every listener (SO_REUSEPORT). 0: one per CPU this process may use.
    pub workers: usize,
}

impl RuntimeConfig {
    /// The number of workers to start (at least 1).
    pub fn workers(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_WORKERS)),
            n => n,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_connections: usize,
    /// Cap on bytes read while sniffing (ClientHello or request head).
    pub max_sniff_bytes: usize,
    /// With no client bytes for this long, pass through as `other`.
    pub server_first_wait_ms: u64,
    /// A partial ClientHello / request head must complete within this.
    pub header_timeout_ms: u64,
    /// Idle connections (no bytes either way) are closed after this.
    pub idle_timeout_secs: u64,
    pub upstream_connect_timeout_ms: u64,
    /// On SIGTERM: how long to let connections drain.
    pub drain_secs: u64,
    /// Copy buffer per direction for passthrough.
    pub copy_buffer_bytes: usize,
    /// UDP (QUIC) flows tracked at once per worker; new flows beyond are
    /// dropped (never passed undecided).
    pub max_flows: usize,
    /// A UDP flow with no datagram either way for this long is forgotten.
    pub flow_idle_secs: u64,
}

impl Limits {
    pub fn idle(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }
    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.upstream_connect_timeout_ms)
    }
    pub fn server_first_wait(&self) -> Duration {
        Duration::from_millis(self.server_first_wait_ms)
    }
    pub fn drain(&self) -> Duration {
        Duration::from_secs(self.drain_secs)
    }
    pub fn flow_idle(&self) -> Duration {
        Duration::from_secs(self.flow_idle_secs.max(1))
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 100_000,
            max_sniff_bytes: 16 * 1024,
            server_first_wait_ms: 500,
            header_timeout_ms: 10_000,
            idle_timeout_secs: 300,
            upstream_connect_timeout_ms: 5_000,
            drain_secs: 30,
            copy_buffer_bytes: 64 * 1024,
            max_flows: 100_000,
            flow_idle_secs: 60,
        }
    }
}

fn default_admin() -> Option<SocketAddr> {
    Some(SocketAddr::from(([127, 0, 0, 1], 9090)))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default = "default_admin")]
    pub addr: Option<SocketAddr>,
    /// Bearer token required for POST endpoints.
    pub token: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            addr: default_admin(),
            token: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing` filter, e.g. "info" or "icpgate=debug".
    pub level: String,
    /// "text" or "json".
    pub format: String,
    /// Log each block decision (rate-limited).
    pub blocks: bool,
    /// Level of the block lines: "error" | "warn" | "info" | "debug" | "trace".
    pub blocks_level: String,
    /// At most this many block lines per second; the rest are counted.
    pub blocks_per_sec: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: "text".into(),
            blocks: true,
            blocks_level: "info".into(),
            blocks_per_sec: 50,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoConfig {
    /// Start a built-in demo origin serving HTTP on this address — only for
    /// the bundled demo.
    pub origin: Option<SocketAddr>,
    /// … and TLS (self-signed) on this one.
    pub origin_tls: Option<SocketAddr>,
}

impl Config {
    pub fn from_toml(text: &str) -> Result<Config, String> {
        let cfg: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
        Config::from_toml(&text).map_err(|e| format!("config {}: {e}", path.display()))
    }

    fn validate(&self) -> Result<(), String> {
        if self.table.path.is_some() == self.table.url.is_some() {
            return Err("[table]: set exactly one of `path` or `url`".into());
        }
        if !(0.0..=1.0).contains(&self.table.max_shrink) {
            return Err("[table] max_shrink: must be between 0.0 and 1.0".into());
        }
        if !(400..=599).contains(&self.block.http_status) {
            return Err("[block] http_status: must be a 4xx or 5xx status".into());
        }
        if self.block.cert.is_some() != self.block.key.is_some() {
            return Err("[block]: `cert` and `key` go together".into());
        }
        if self.runtime.workers > MAX_WORKERS {
            return Err(format!(
                "[runtime] workers: at most {MAX_WORKERS} (0 = one per CPU)"
            ));
        }
        for l in &self.listeners {
            if l.transport == Transport::Udp
                && (l.proxy_protocol
                    || l.defer_accept
                    || (l.upstream.is_none() && l.transparent != Transparent::Tproxy))
            {
                return Err(format!(
                    "[[listener]] {}: transport = \"udp\" takes a fixed `upstream` or transparent = \"tproxy\" (no REDIRECT, PROXY protocol or defer_accept for UDP)",
                    l.label()
                ));
            }
            if l.source == Source::Client && l.upstream.is_some() {
                return Err(format!(
                    "[[listener]] {}: source = \"client\" needs a transparent listener (no fixed `upstream`): a fixed upstream is not on the clients' return path",
                    l.label()
                ));
            }
            if l.source_port == SourcePort::Client && l.source != Source::Client {
                return Err(format!(
                    "[[listener]] {}: source_port = \"client\" goes with source = \"client\"",
                    l.label()
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.table.max_flip) {
            return Err("[table] max_flip: a fraction between 0 and 1".into());
        }
        if self.table.fetch_timeout_secs == 0 {
            return Err("[table] fetch_timeout_secs: at least 1".into());
        }
        if self.limits.idle_timeout_secs == 0 {
            // 0 would cut every tunnel at its first pause, not "no limit".
            return Err("[limits] idle_timeout_secs: at least 1".into());
        }
        // Durations become deadlines (now + duration): bounded, so a huge
        // value meant as "no limit" is an error here, not an overflow later.
        const DAY: u64 = 86_400;
        for (key, v, max) in [
            (
                "[limits] server_first_wait_ms",
                self.limits.server_first_wait_ms,
                DAY * 1000,
            ),
            (
                "[limits] header_timeout_ms",
                self.limits.header_timeout_ms,
                DAY * 1000,
            ),
            (
                "[limits] upstream_connect_timeout_ms",
                self.limits.upstream_connect_timeout_ms,
                DAY * 1000,
            ),
            (
                "[limits] idle_timeout_secs",
                self.limits.idle_timeout_secs,
                365 * DAY,
            ),
            ("[limits] drain_secs", self.limits.drain_secs, DAY),
            (
                "[table] watch_interval_ms",
                self.table.watch_interval_ms,
                DAY * 1000,
            ),
            (
                "[table] poll_interval_secs",
                self.table.poll_interval_secs,
                DAY,
            ),
            (
                "[table] fetch_timeout_secs",
                self.table.fetch_timeout_secs,
                DAY,
            ),
            ("[limits] flow_idle_secs", self.limits.flow_idle_secs, DAY),
            ("[block] quic_hold_secs", self.block.quic_hold_secs, DAY),
        ] {
            if v > max {
                return Err(format!("{key}: at most {max}"));
            }
        }
        if self.limits.max_sniff_bytes < 512 {
            return Err("[limits] max_sniff_bytes: at least 512".into());
        }
        if self.log.blocks_level.parse::<tracing::Level>().is_err() {
            return Err("[log] blocks_level: error, warn, info, debug or trace".into());
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err("[log] format: \"text\" or \"json\"".into());
        }
        self.policy().map(|_| ())
    }

    /// The decision policy this config describes.
    pub fn policy(&self) -> Result<Policy, String> {
        let ranges: Vec<_> = self
            .regions
            .rollout
            .iter()
            .map(|r| (r.cidr.trunc(), r.mode))
            .collect();
        for (i, (a, _)) in ranges.iter().enumerate() {
            if ranges[..i].iter().any(|(b, _)| b == a) {
                return Err(format!("[[regions.rollout]]: {a} listed twice"));
            }
        }
        Ok(Policy {
            rollout: Rollout::new(self.policy.mode, &ranges),
            // No regions configured: everything counts as mainland (fail
            // closed rather than silently enforcing nothing).
            mainland: if self.regions.mainland.is_empty() {
                IpRanges::everything()
            } else {
                IpRanges::new(&self.regions.mainland)
            },
            ip_access: self.policy.ip_access,
            strict_ip: self.policy.strict_ip,
            allow: NameSet::new(&self.overrides.allow)
                .map_err(|e| format!("[overrides] allow: {e}"))?,
            deny: NameSet::new(&self.overrides.deny)
                .map_err(|e| format!("[overrides] deny: {e}"))?,
        })
    }
}
