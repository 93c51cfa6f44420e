//! Table changes judged by the traffic they would flip (docs/table.md, guard
//! rails): a bounded, decaying record of the names recently allowed, and
//! the evaluation of a new table against it before the swap; the row diff
//! between two tables (`POST /v1/reload?dry_run=1`, `icpgate diff`).

use std::cell::Cell;
use std::collections::BTreeMap;

use serde::Serialize;

use crate::decision::{Action, Policy};
use crate::snapshot::{Row, Snapshot};
use crate::top::TopBlocked;

/// Names tracked at most (a few MB: a name, a counter and the map's own
/// overhead, about 100 bytes each).
pub const RECENT_NAMES: usize = 50_000;
/// One allowed decision in this many is recorded (per thread), so the
/// allowed path pays a counter increment, not a map update.
pub const SAMPLE_EVERY: u32 = 16;
/// Counts are halved this often: "recent" is the last few of these.
pub const DECAY_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

thread_local! {
    static TICK: Cell<u32> = const { Cell::new(0) };
}

/// The names recently allowed, weighted by (sampled) traffic.
pub struct Recent {
    counts: TopBlocked,
}

impl Default for Recent {
    fn default() -> Self {
        Self::new(RECENT_NAMES)
    }
}

impl Recent {
    pub fn new(capacity: usize) -> Self {
        Recent {
            counts: TopBlocked::new(capacity),
        }
    }

    /// An allowed decision for `name` (a Host or SNI as sent; canonicalized
    /// when evaluated). Sampled.
    #[inline]
    pub fn hit(&self, name: &str) {
        let sampled = TICK.with(|t| {
            let n = t.get().wrapping_add(1);
            t.set(n);
            n % SAMPLE_EVERY == 0
        });
        if sampled {
            self.counts.hit(name);
        }
    }

    /// Every call counted (tests, and `--traffic` files).
    pub fn add(&self, name: &str, n: u64) {
        self.counts.add(name, n);
    }

    /// Halve every count (names that reach 0 are dropped).
    pub fn decay(&self) {
        self.counts.decay();
    }

    /// (name, weight), heaviest first.
    pub fn entries(&self) -> Vec<(String, u64)> {
        self.counts.top(usize::MAX)
    }

    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

/// One name the new table would block.
#[derive(Debug, Clone, Serialize)]
pub struct Flipped {
    pub name: String,
    pub weight: u64,
    pub reason: &'static str,
    /// Among the busiest names checked one by one.
    pub top: bool,
}

/// What a new table would do to the recent traffic.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FlipReport {
    /// Names recorded, and their total weight.
    pub names: usize,
    pub traffic: u64,
    /// Weight of the names allowed now and blocked by the new table.
    pub flipped: u64,
    /// `flipped / traffic` (0 without traffic).
    pub share: f64,
    /// The flipped names, heaviest first (at most 100 listed).
    pub newly_blocked: Vec<Flipped>,
    /// All flipped names by reason.
    pub by_reason: BTreeMap<&'static str, usize>,
    /// Names blocked now and allowed by the new table.
    pub newly_allowed: usize,
}

impl FlipReport {
    /// Why the new table must not go in unless forced, if it must not.
    pub fn violation(&self, max_flip: f64) -> Option<String> {
        if let Some(t) = self.newly_blocked.iter().find(|f| f.top) {
            return Some(format!(
                "the new table would block {} ({}), one of the {} busiest recently allowed names",
                t.name, t.reason, TOP_NAMES
            ));
        }
        if self.share > max_flip {
            return Some(format!(
                "the new table would block {:.2}% of the recently allowed traffic (limit {:.2}%, [table] max_flip); first: {}",
                self.share * 100.0,
                max_flip * 100.0,
                self.newly_blocked
                    .iter()
                    .take(5)
                    .map(|f| format!("{} ({})", f.name, f.reason))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        None
    }
}

/// The busiest recently allowed names, none of which may flip.
pub const TOP_NAMES: usize = 100;

fn blocks(a: Action) -> bool {
    matches!(a, Action::Block | Action::WouldBlock)
}

/// Decide every recorded name with the old and the new table (destination
/// unknown: counted as mainland, default mode).
pub fn evaluate(
    old: &Snapshot,
    new: &Snapshot,
    policy: &Policy,
    recent: &[(String, u64)],
    now: i64,
) -> FlipReport {
    let mut r = FlipReport {
        names: recent.len(),
        ..FlipReport::default()
    };
    let mut flipped = Vec::new();
    for (i, (name, w)) in recent.iter().enumerate() {
        r.traffic += w;
        // Canonicalized once, decided with both tables.
        let host = crate::hostname::canonicalize(name);
        let before = policy.decide_canonicalized(old, &host, None, now);
        let after = policy.decide_canonicalized(new, &host, None, now);
        match (blocks(before.action), blocks(after.action)) {
            (false, true) => {
                r.flipped += w;
                *r.by_reason.entry(after.reason.as_str()).or_default() += 1;
                flipped.push(Flipped {
                    name: name.clone(),
                    weight: *w,
                    reason: after.reason.as_str(),
                    top: i < TOP_NAMES,
                });
            }
            (true, false) => r.newly_allowed += 1,
            _ => {}
        }
    }
    if r.traffic > 0 {
        r.share = r.flipped as f64 / r.traffic as f64;
    }
    flipped.truncate(100);
    r.newly_blocked = flipped;
    r
}

/// Rows added, removed and changed between two tables.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableDiff {
    pub old_entries: usize,
    pub new_entries: usize,
    pub added: usize,
    pub removed: usize,
    pub changed: usize,
    /// A few of each, for the operator to look at.
    pub examples: Vec<String>,
}

fn same(a: &Row<'_>, b: &Row<'_>) -> bool {
    a.icp() == b.icp()
        && a.filing() == b.filing()
        && a.access() == b.access()
        && a.access_expires() == b.access_expires()
        && a.ips() == b.ips()
}

pub fn diff(old: &Snapshot, new: &Snapshot) -> TableDiff {
    let mut d = TableDiff {
        old_entries: old.len(),
        new_entries: new.len(),
        ..TableDiff::default()
    };
    let note = |d: &mut TableDiff, s: String| {
        if d.examples.len() < 20 {
            d.examples.push(s);
        }
    };
    for row in old.rows() {
        match new.get(row.domain()) {
            None => {
                d.removed += 1;
                note(&mut d, format!("- {}", row.domain()));
            }
            Some(n) if !same(&row, &n) => {
                d.changed += 1;
                note(
                    &mut d,
                    format!(
                        "~ {}: {}/{} -> {}/{}",
                        row.domain(),
                        row.filing().as_str(),
                        row.access().as_str(),
                        n.filing().as_str(),
                        n.access().as_str()
                    ),
                );
            }
            Some(_) => {}
        }
    }
    for row in new.rows() {
        if old.get(row.domain()).is_none() {
            d.added += 1;
            note(&mut d, format!("+ {}", row.domain()));
        }
    }
    d
}
