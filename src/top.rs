//! The most blocked hosts since start, for `GET /v1/top-blocked` (never as
//! Prometheus labels). Bounded: at most `capacity` hosts are tracked; when
//! full, the least-hit half is evicted (a space-saving approximation that
//! keeps heavy hitters).

use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;

pub struct TopBlocked {
    /// Hosts are client-chosen: a per-process seeded hash (no fixed seed
    /// to build collisions against), cheaper than SipHash.
    counts: DashMap<Box<str>, AtomicU64, foldhash::fast::RandomState>,
    capacity: usize,
}

impl TopBlocked {
    pub fn new(capacity: usize) -> Self {
        TopBlocked {
            counts: DashMap::with_hasher(foldhash::fast::RandomState::default()),
            capacity: capacity.max(2),
        }
    }

    pub fn hit(&self, host: &str) {
        self.add(host, 1);
    }

    /// `n` hits at once.
    pub fn add(&self, host: &str, n: u64) {
        if host.is_empty() || host.len() > 253 || n == 0 {
            return;
        }
        if let Some(c) = self.counts.get(host) {
            c.fetch_add(n, Ordering::Relaxed);
            return;
        }
        if self.counts.len() >= self.capacity {
            self.evict();
        }
        self.counts
            .entry(host.into())
            .or_insert_with(|| AtomicU64::new(0))
            .fetch_add(n, Ordering::Relaxed);
    }

    /// Halve every count; drop those that reach zero.
    pub fn decay(&self) {
        self.counts.retain(|_, v| {
            let n = v.load(Ordering::Relaxed) / 2;
            v.store(n, Ordering::Relaxed);
            n > 0
        });
    }

    fn evict(&self) {
        let mut all: Vec<u64> = self
            .counts
            .iter()
            .map(|e| e.value().load(Ordering::Relaxed))
            .collect();
        if all.len() < self.capacity {
            return;
        }
        let mid = all.len() / 2;
        let (_, median, _) = all.select_nth_unstable(mid);
        let cut = *median;
        let mut removed = 0;
        self.counts.retain(|_, v| {
            let keep = v.load(Ordering::Relaxed) > cut || removed >= mid;
            if !keep {
                removed += 1;
            }
            keep
        });
    }

    /// The `limit` most blocked hosts, most first.
    pub fn top(&self, limit: usize) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .counts
            .iter()
            .map(|e| (e.key().to_string(), e.value().load(Ordering::Relaxed)))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(limit);
        v
    }

    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_keeps_heavy_hitters() {
        let t = TopBlocked::new(100);
        for _ in 0..50 {
            t.hit("heavy.cn");
        }
        for i in 0..10_000 {
            t.hit(&format!("h{i}.cn"));
        }
        assert!(t.len() <= 100);
        assert_eq!(t.top(1), vec![("heavy.cn".to_string(), 50)]);
    }
}
