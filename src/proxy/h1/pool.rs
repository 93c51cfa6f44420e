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

pub(super) type IdleMap = HashMap<Key, Vec<(Tracked, Instant)>, foldhash::fast::RandomState>;

/// An [`UpKey`] in the map: equal as the key, hashed as one or two words
/// (an address's derived hash feeds the hasher field by field, twice over
/// for the pair, on every take and give-back).
#[derive(PartialEq, Eq)]
pub(super) struct Key(UpKey);

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        h.write_u64(word(self.0 .0));
        if let Some(src) = self.0 .1 {
            h.write_u64(word(src));
        }
    }
}

/// An address folded into a word (equal addresses, equal words).
fn word(a: SocketAddr) -> u64 {
    let port = u64::from(a.port());
    match a {
        SocketAddr::V4(a) => u64::from(u32::from(*a.ip())) | port << 32,
        SocketAddr::V6(a) => {
            let ip = u128::from(*a.ip());
            (ip as u64) ^ ((ip >> 64) as u64).rotate_left(23) ^ port << 48 ^ u64::from(a.scope_id())
        }
    }
}

/// Idle upstream connections of one listener, by destination and source.
#[derive(Default)]
pub struct UpPool {
    pub(super) idle: Mutex<IdleMap>,
}

impl UpPool {
    pub(super) fn take(&self, addr: UpKey) -> Option<Tracked> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(&Key(addr))?;
        while let Some((mut t, since)) = list.pop() {
            if since.elapsed() < POOL_IDLE && t.still_idle() {
                return Some(t);
            }
        }
        None
    }

    pub(super) fn put(&self, addr: UpKey, t: Tracked) {
        if let Ok(mut idle) = self.idle.lock() {
            let list = idle.entry(Key(addr)).or_default();
            if list.len() >= POOL_PER_DEST {
                list.remove(0);
            }
            list.push((t, Instant::now()));
        }
    }
}
