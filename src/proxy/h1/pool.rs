//! Idle upstream connections of one listener, kept for reuse per
//! destination and client address.

use crate::proxy::upstream::Tracked;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a pooled upstream connection may sit idle.
pub(super) const POOL_IDLE: Duration = Duration::from_secs(60);

/// Idle upstream connections kept per destination.
pub(super) const POOL_PER_DEST: usize = 256;

/// What a pooled upstream connection may be reused for: its destination,
/// and the client address it was bound from (`source = "client"`): a
/// connection that carries one visitor's address is never handed to
/// another (the origin would attribute one visitor's requests to another).
pub type UpKey = (SocketAddr, Option<SocketAddr>);

pub(super) type IdleMap = HashMap<UpKey, Vec<(Tracked, Instant)>, foldhash::fast::RandomState>;

/// Idle upstream connections of one listener, by destination and source.
#[derive(Default)]
pub struct UpPool {
    pub(super) idle: Mutex<IdleMap>,
}

impl UpPool {
    pub(super) fn take(&self, addr: UpKey) -> Option<Tracked> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(&addr)?;
        while let Some((mut t, since)) = list.pop() {
            if since.elapsed() < POOL_IDLE && t.still_idle() {
                return Some(t);
            }
        }
        None
    }

    pub(super) fn put(&self, addr: UpKey, t: Tracked) {
        if let Ok(mut idle) = self.idle.lock() {
            let list = idle.entry(addr).or_default();
            if list.len() >= POOL_PER_DEST {
                list.remove(0);
            }
            list.push((t, Instant::now()));
        }
    }
}
