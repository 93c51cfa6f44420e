//! Structured logs (`tracing`), and the rate limit on per-block log lines
//! so a flood of blocked requests cannot fill a disk.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::decision::Reason;
use crate::metrics::{Metrics, Proto};

/// At most `per_sec` block lines per second; the rest are counted in
/// `icpgate_block_logs_suppressed_total`.
pub struct BlockLog {
    enabled: bool,
    level: tracing::Level,
    per_sec: u64,
    /// (second << 32) | count in that second
    window: AtomicU64,
    /// Same, for operational warnings a client can trigger at will.
    warn_window: AtomicU64,
}

/// Fixed-window limiter: at most `per_sec` admissions per wall-clock second.
fn admit(window: &AtomicU64, per_sec: u64) -> bool {
    let now = crate::decision::now_unix() as u64 & 0xffff_ffff;
    let mut cur = window.load(Ordering::Relaxed);
    loop {
        let (sec, n) = (cur >> 32, cur & 0xffff_ffff);
        if sec == now && n >= per_sec {
            return false;
        }
        let next = if sec == now {
            (now << 32) | (n + 1)
        } else {
            (now << 32) | 1
        };
        match window.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return true,
            Err(actual) => cur = actual,
        }
    }
}

/// Warnings a client can trigger (refused connections, accept errors): at
/// most this many per second.
const WARNS_PER_SEC: u64 = 5;

impl BlockLog {
    pub fn new(enabled: bool, level: tracing::Level, per_sec: u32) -> Self {
        BlockLog {
            enabled,
            level,
            per_sec: u64::from(per_sec),
            window: AtomicU64::new(0),
            warn_window: AtomicU64::new(0),
        }
    }

    fn admit(&self) -> bool {
        admit(&self.window, self.per_sec)
    }

    /// May a client-triggerable warning be logged now?
    pub fn warn_admit(&self) -> bool {
        admit(&self.warn_window, WARNS_PER_SEC)
    }

    /// `would`: a shadow-mode decision (forwarded, logged as `would_block`).
    pub fn block(
        &self,
        proto: Proto,
        host: &str,
        reason: Reason,
        would: bool,
        peer: SocketAddr,
        dst: IpAddr,
    ) {
        if !self.enabled {
            return;
        }
        if self.admit() {
            macro_rules! line {
                ($lvl:expr) => {
                    tracing::event!(target: "icpgate::block", $lvl, protocol = proto.as_str(), host, reason = reason.as_str(), %peer, %dst, "{}", if would { "would_block (shadow mode: forwarded)" } else { "blocked" })
                };
            }
            match self.level {
                tracing::Level::ERROR => line!(tracing::Level::ERROR),
                tracing::Level::WARN => line!(tracing::Level::WARN),
                tracing::Level::INFO => line!(tracing::Level::INFO),
                tracing::Level::DEBUG => line!(tracing::Level::DEBUG),
                tracing::Level::TRACE => line!(tracing::Level::TRACE),
            }
        } else {
            Metrics::get().block_logs_suppressed.inc();
        }
    }
}

/// Install the global subscriber.
pub fn init(level: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal, never in log files or the journal.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = if json {
        b.json().try_init()
    } else {
        b.try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_admits_per_second_budget() {
        let log = BlockLog::new(true, tracing::Level::INFO, 3);
        let admitted = (0..100).filter(|_| log.admit()).count();
        // All 100 calls fall within one or two wall-clock seconds.
        assert!((3..=6).contains(&admitted), "{admitted}");
    }
}
