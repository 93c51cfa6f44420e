//! The immutable lookup structure built from a filing table, and the
//! `ArcSwap` holder that hot-swaps it (SPEC §4).
//!
//! Layout, chosen for 10M+ rows: all canonical names live in one byte arena;
//! a `hashbrown::HashTable` of 16-byte slots (arena offset, length, packed
//! statuses, interned ICP id, side-table index) answers "is this exact name a
//! row"; ICP strings are interned in a second arena; the rare rows that carry
//! an expiry or an IP list point into a side table. A lookup hashes the
//! candidate, probes, and compares bytes in the arena: no allocation, no lock.

use std::fmt;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use hashbrown::HashTable;
use ipnet::IpNet;

use crate::hostname;

/// Filing status (SPEC R6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Filing {
    Filed,
    ChangePending,
    FirstPending,
    Revoked,
}

impl Filing {
    pub const ALL: [Filing; 4] = [
        Filing::Filed,
        Filing::ChangePending,
        Filing::FirstPending,
        Filing::Revoked,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Filing::Filed => "filed",
            Filing::ChangePending => "change_pending",
            Filing::FirstPending => "first_pending",
            Filing::Revoked => "revoked",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == s)
    }
}

/// Access-record status at this provider (SPEC R6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    Active,
    InitialReview,
    Cancelled,
    None,
}

impl Access {
    pub const ALL: [Access; 4] = [
        Access::Active,
        Access::InitialReview,
        Access::Cancelled,
        Access::None,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Active => "active",
            Access::InitialReview => "initial_review",
            Access::Cancelled => "cancelled",
            Access::None => "none",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

const NO_AUX: u32 = u32::MAX;
/// Status bit: some row names a subdomain of this (registrable) domain.
const HAS_CHILDREN: u8 = 1 << 4;
/// Status bit: no row of its own; the slot only carries `HAS_CHILDREN`.
const VIRTUAL: u8 = 1 << 5;

#[derive(Clone, Copy)]
struct Slot {
    off: u32,
    icp: u32,
    aux: u32,
    len: u8,
    status: u8,
}

impl Slot {
    fn is_virtual(self) -> bool {
        self.status & VIRTUAL != 0
    }
    fn has_children(self) -> bool {
        self.status & HAS_CHILDREN != 0
    }
    fn filing(self) -> Filing {
        Filing::ALL[(self.status & 3) as usize]
    }
    fn access(self) -> Access {
        Access::ALL[((self.status >> 2) & 3) as usize]
    }
}

/// Data of the rare rows with an expiry or registered IPs.
#[derive(Debug, Clone, Default)]
struct Aux {
    expires: Option<i64>,
    ips: Box<[IpNet]>,
}

fn hasher() -> foldhash::fast::FixedState {
    foldhash::fast::FixedState::with_seed(0x1c9_9a7e_5eed)
}

/// Strings stored back to back in one arena, addressed by id.
#[derive(Default)]
struct StrArena {
    bytes: Vec<u8>,
    ends: Vec<u32>,
}

impl StrArena {
    fn get(&self, id: u32) -> &str {
        let id = id as usize;
        let start = if id == 0 {
            0
        } else {
            self.ends[id - 1] as usize
        };
        let end = self.ends[id] as usize;
        std::str::from_utf8(&self.bytes[start..end]).unwrap_or("")
    }
    fn heap_bytes(&self) -> usize {
        self.bytes.capacity() + self.ends.capacity() * 4
    }
}

/// What a snapshot was built from.
#[derive(Debug, Clone)]
pub struct TableMeta {
    /// sha256 of the source bytes, hex.
    pub version: String,
    /// Where it came from (path or URL).
    pub source: String,
    pub loaded_at: SystemTime,
}

impl Default for TableMeta {
    fn default() -> Self {
        TableMeta {
            version: String::new(),
            source: String::new(),
            loaded_at: SystemTime::UNIX_EPOCH,
        }
    }
}

/// An immutable filing table, ready for lookups.
pub struct Snapshot {
    names: Vec<u8>,
    table: HashTable<Slot>,
    /// Real rows (the table also holds virtual apex slots).
    rows: usize,
    icps: StrArena,
    aux: Vec<Aux>,
    pub meta: TableMeta,
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("entries", &self.len())
            .field("meta", &self.meta)
            .finish()
    }
}

/// One row of a snapshot.
#[derive(Clone, Copy)]
pub struct Row<'a> {
    snap: &'a Snapshot,
    slot: Slot,
}

impl fmt::Debug for Row<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Row")
            .field("domain", &self.domain())
            .field("icp", &self.icp())
            .field("filing", &self.filing())
            .field("access", &self.access())
            .field("expires", &self.access_expires())
            .field("ips", &self.ips())
            .finish()
    }
}

impl<'a> Row<'a> {
    /// The row's canonical domain.
    pub fn domain(&self) -> &'a str {
        let s = self.slot.off as usize;
        std::str::from_utf8(&self.snap.names[s..s + self.slot.len as usize]).unwrap_or("")
    }
    pub fn icp(&self) -> &'a str {
        self.snap.icps.get(self.slot.icp)
    }
    pub fn filing(&self) -> Filing {
        self.slot.filing()
    }
    pub fn access(&self) -> Access {
        self.slot.access()
    }
    fn aux(&self) -> Option<&'a Aux> {
        if self.slot.aux == NO_AUX {
            None
        } else {
            self.snap.aux.get(self.slot.aux as usize)
        }
    }
    /// `access_expires` as Unix seconds.
    pub fn access_expires(&self) -> Option<i64> {
        self.aux().and_then(|a| a.expires)
    }
    /// Registered IPs (R7); empty when the row lists none.
    pub fn ips(&self) -> &'a [IpNet] {
        self.aux().map_or(&[], |a| &a.ips)
    }
    pub fn ip_registered(&self, ip: IpAddr) -> bool {
        self.ips().iter().any(|net| net.contains(&ip))
    }
}

impl Snapshot {
    pub fn empty() -> Snapshot {
        Builder::new().finish(TableMeta::default())
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    #[inline]
    fn probe(&self, name: &str) -> Option<Slot> {
        let bytes = name.as_bytes();
        if bytes.len() > u8::MAX as usize {
            return None;
        }
        let hash = hasher().hash_one(bytes);
        self.table
            .find(hash, |slot| {
                slot.len as usize == bytes.len()
                    && self.names[slot.off as usize..slot.off as usize + bytes.len()] == *bytes
            })
            .copied()
    }

    fn row(&self, slot: Slot) -> Option<Row<'_>> {
        (!slot.is_virtual()).then_some(Row { snap: self, slot })
    }

    /// Exact-name row, if any. `name` must be canonical.
    #[inline]
    pub fn get(&self, name: &str) -> Option<Row<'_>> {
        self.probe(name).and_then(|s| self.row(s))
    }

    /// The most specific row covering a canonical name (SPEC R4), whole
    /// labels only, never a public suffix. The registrable domain is probed
    /// first: a miss there means no row covers the name (one probe); only
    /// when rows exist below it are the longer candidates probed, most
    /// specific first.
    #[inline]
    pub fn lookup(&self, name: &str) -> Option<Row<'_>> {
        let apex = hostname::registrable_domain(name)?;
        let apex_slot = self.probe(apex)?;
        if apex_slot.has_children() {
            let mut candidate = name;
            while candidate.len() > apex.len() {
                if let Some(slot) = self.probe(candidate) {
                    if let Some(row) = self.row(slot) {
                        return Some(row);
                    }
                }
                match candidate.find('.') {
                    Some(i) => candidate = &candidate[i + 1..],
                    None => break,
                }
            }
        }
        self.row(apex_slot)
    }

    /// Approximate heap bytes held by this snapshot.
    pub fn heap_bytes(&self) -> usize {
        self.names.capacity()
            + self.table.capacity() * (std::mem::size_of::<Slot>() + 1)
            + self.icps.heap_bytes()
            + self.aux.capacity() * std::mem::size_of::<Aux>()
    }

    /// Iterate over all rows (order unspecified).
    pub fn rows(&self) -> impl Iterator<Item = Row<'_>> {
        self.table.iter().filter_map(move |slot| self.row(*slot))
    }
}

/// Call `probe` on the name and each parent down to the registrable domain;
/// return the first hit. Nothing is probed for a name that is a public suffix.
#[inline]
pub fn walk<'n, T>(name: &'n str, mut probe: impl FnMut(&'n str) -> Option<T>) -> Option<T> {
    let suffix_len = hostname::icann_suffix_len(name);
    if suffix_len == 0 || name.len() < suffix_len + 2 {
        return None;
    }
    // The registrable domain is the suffix plus one label: the shortest
    // candidate must still contain a dot before the suffix.
    let min_len = suffix_len + 2;
    let mut candidate = name;
    loop {
        if let Some(hit) = probe(candidate) {
            return Some(hit);
        }
        match candidate.find('.') {
            Some(i) if candidate.len() - i > min_len => candidate = &candidate[i + 1..],
            _ => return None,
        }
    }
}

/// Error from [`Builder::push`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushError {
    /// The name is already a row; carries the index of the first push.
    Duplicate {
        first: u32,
    },
    /// The arenas would exceed 4 GiB.
    TooLarge,
    NameTooLong,
    TooManyIps,
}

/// A row given to the builder.
#[derive(Debug, Clone)]
pub struct RowData<'a> {
    /// Canonical name (see [`hostname::canonicalize_bare`]).
    pub domain: &'a str,
    pub icp: &'a str,
    pub filing: Filing,
    pub access: Access,
    pub access_expires: Option<i64>,
    pub ips: Vec<IpNet>,
}

/// Builds a [`Snapshot`] row by row.
pub struct Builder {
    names: Vec<u8>,
    table: HashTable<Slot>,
    /// Arena offset of each pushed row, in push order (offsets grow with
    /// each push, so a binary search maps a slot back to its push index).
    push_offs: Vec<u32>,
    icps: StrArena,
    aux: Vec<Aux>,
    rows: usize,
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    pub fn new() -> Self {
        Builder {
            names: Vec::new(),
            table: HashTable::new(),
            push_offs: Vec::new(),
            icps: StrArena::default(),
            aux: Vec::new(),
            rows: 0,
        }
    }

    pub fn with_capacity(rows: usize) -> Self {
        let mut b = Self::new();
        b.names.reserve(rows * 20);
        b.push_offs.reserve(rows);
        b.table.reserve(rows, |_| 0);
        b
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Mark `apex` as having rows below it, creating a virtual slot if it
    /// has no row of its own (yet).
    fn mark_children(&mut self, apex: &str) -> Result<(), PushError> {
        let bytes = apex.as_bytes();
        let hash = hasher().hash_one(bytes);
        let off = self.names.len();
        if off + bytes.len() > u32::MAX as usize {
            return Err(PushError::TooLarge);
        }
        let names = &self.names;
        match self.table.entry(
            hash,
            |s| {
                s.len as usize == bytes.len()
                    && names[s.off as usize..s.off as usize + bytes.len()] == *bytes
            },
            |s| hasher().hash_one(&names[s.off as usize..s.off as usize + s.len as usize]),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut o) => o.get_mut().status |= HAS_CHILDREN,
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert(Slot {
                    off: off as u32,
                    icp: 0,
                    aux: NO_AUX,
                    len: bytes.len() as u8,
                    status: VIRTUAL | HAS_CHILDREN,
                });
                self.names.extend_from_slice(bytes);
            }
        }
        Ok(())
    }

    /// Add a row. The domain must already be canonical.
    ///
    /// ICP strings are deduplicated against the previous row only: exports
    /// list a filing's websites and subdomains together, and a global index
    /// would cost a hash probe per row and memory per distinct number.
    pub fn push(&mut self, row: RowData<'_>) -> Result<(), PushError> {
        let bytes = row.domain.as_bytes();
        if bytes.is_empty() || bytes.len() > u8::MAX as usize {
            return Err(PushError::NameTooLong);
        }
        if row.ips.len() > u16::MAX as usize {
            return Err(PushError::TooManyIps);
        }
        let apex = hostname::registrable_domain(row.domain);
        let hash = hasher().hash_one(bytes);
        let off = self.names.len();
        if off + bytes.len() > u32::MAX as usize {
            return Err(PushError::TooLarge);
        }
        let names = &self.names;
        let entry = self.table.entry(
            hash,
            |s| {
                s.len as usize == bytes.len()
                    && names[s.off as usize..s.off as usize + bytes.len()] == *bytes
            },
            |s| hasher().hash_one(&names[s.off as usize..s.off as usize + s.len as usize]),
        );
        // A virtual apex slot becomes this row (keeping HAS_CHILDREN); it is
        // replaced by a fresh slot so arena offsets stay in push order.
        let mut inherited = 0u8;
        let vacant = match entry {
            hashbrown::hash_table::Entry::Occupied(o) if o.get().is_virtual() => {
                inherited = o.get().status & HAS_CHILDREN;
                let (_, vacant) = o.remove();
                vacant
            }
            hashbrown::hash_table::Entry::Occupied(o) => {
                let first = self.push_offs.binary_search(&o.get().off).unwrap_or(0) as u32;
                return Err(PushError::Duplicate { first });
            }
            hashbrown::hash_table::Entry::Vacant(v) => v,
        };
        // Everything below is infallible except the side tables' size caps,
        // which are checked before anything is written.
        let needs_aux = row.access_expires.is_some() || !row.ips.is_empty();
        if needs_aux && self.aux.len() >= NO_AUX as usize {
            return Err(PushError::TooLarge);
        }
        let icp = match self.icps.ends.len().checked_sub(1) {
            Some(last) if self.icps.get(last as u32) == row.icp => last as u32,
            _ => {
                let end = self.icps.bytes.len() + row.icp.len();
                if end > u32::MAX as usize || self.icps.ends.len() >= u32::MAX as usize {
                    return Err(PushError::TooLarge);
                }
                self.icps.bytes.extend_from_slice(row.icp.as_bytes());
                self.icps.ends.push(end as u32);
                (self.icps.ends.len() - 1) as u32
            }
        };
        let aux = if needs_aux {
            self.aux.push(Aux {
                expires: row.access_expires,
                ips: row.ips.into_boxed_slice(),
            });
            (self.aux.len() - 1) as u32
        } else {
            NO_AUX
        };
        let status = (row.filing as u8) | ((row.access as u8) << 2) | inherited;
        vacant.insert(Slot {
            off: off as u32,
            icp,
            aux,
            len: bytes.len() as u8,
            status,
        });
        self.names.extend_from_slice(bytes);
        self.push_offs.push(off as u32);
        self.rows += 1;
        if let Some(apex) = apex {
            if apex.len() < row.domain.len() {
                self.mark_children(apex)?;
            }
        }
        Ok(())
    }

    pub fn finish(mut self, meta: TableMeta) -> Snapshot {
        self.names.shrink_to_fit();
        self.icps.bytes.shrink_to_fit();
        self.icps.ends.shrink_to_fit();
        self.aux.shrink_to_fit();
        let names = &self.names;
        self.table.shrink_to_fit(|s| {
            hasher().hash_one(&names[s.off as usize..s.off as usize + s.len as usize])
        });
        Snapshot {
            names: self.names,
            table: self.table,
            rows: self.rows,
            icps: self.icps,
            aux: self.aux,
            meta,
        }
    }
}

/// The running table: readers `load` (or `load_full` across an `.await`),
/// the reloader `store`s a new snapshot in one atomic step.
pub struct TableHolder {
    current: ArcSwap<Snapshot>,
}

impl TableHolder {
    pub fn new(snapshot: Snapshot) -> Self {
        TableHolder {
            current: ArcSwap::from_pointee(snapshot),
        }
    }

    /// Cheap, lock-free; do not hold the guard across an `.await`.
    #[inline]
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    pub fn load_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Install a new snapshot; returns the previous one.
    pub fn swap(&self, snapshot: Arc<Snapshot>) -> Arc<Snapshot> {
        self.current.swap(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(domain: &str, filing: Filing, access: Access) -> RowData<'_> {
        RowData {
            domain,
            icp: "京ICP备09051301号-1",
            filing,
            access,
            access_expires: None,
            ips: vec![],
        }
    }

    #[test]
    fn walk_candidates() {
        let mut seen = vec![];
        walk("a.b.example.com.cn", |c| {
            seen.push(c.to_owned());
            None::<()>
        });
        assert_eq!(
            seen,
            ["a.b.example.com.cn", "b.example.com.cn", "example.com.cn"]
        );
        seen.clear();
        walk("com.cn", |c| {
            seen.push(c.to_owned());
            None::<()>
        });
        assert!(seen.is_empty());
        walk("example.com", |c| {
            seen.push(c.to_owned());
            None::<()>
        });
        assert_eq!(seen, ["example.com"]);
    }

    #[test]
    fn duplicates_and_lookup() {
        let mut b = Builder::new();
        b.push(row("example.com.cn", Filing::Filed, Access::Active))
            .unwrap();
        b.push(row("shop.example.net", Filing::Filed, Access::None))
            .unwrap();
        assert_eq!(
            b.push(row("shop.example.net", Filing::Filed, Access::Active)),
            Err(PushError::Duplicate { first: 1 })
        );
        let s = b.finish(TableMeta::default());
        assert_eq!(s.len(), 2);
        let r = s.lookup("www.example.com.cn").unwrap();
        assert_eq!(r.domain(), "example.com.cn");
        assert_eq!(r.icp(), "京ICP备09051301号-1");
        assert!(s.lookup("evilexample.com.cn").is_none());
        assert!(s.lookup("example.net").is_none());
        assert_eq!(
            s.lookup("a.shop.example.net").unwrap().access(),
            Access::None
        );
    }

    #[test]
    fn children_before_and_after_apex() {
        let mut b = Builder::new();
        // deep row first: apex gets a virtual slot
        b.push(row("a.b.example.com", Filing::Filed, Access::Active))
            .unwrap();
        b.push(row("x.other.cn", Filing::Revoked, Access::Active))
            .unwrap();
        // then the apex row itself replaces the virtual slot
        b.push(row("example.com", Filing::Filed, Access::None))
            .unwrap();
        assert_eq!(
            b.push(row("example.com", Filing::Filed, Access::None)),
            Err(PushError::Duplicate { first: 2 })
        );
        b.push(row("plain.cn", Filing::Filed, Access::Active))
            .unwrap();
        let s = b.finish(TableMeta::default());
        assert_eq!(s.len(), 4);
        assert_eq!(s.rows().count(), 4);
        assert_eq!(
            s.lookup("z.a.b.example.com").unwrap().domain(),
            "a.b.example.com"
        );
        assert_eq!(
            s.lookup("a.b.example.com").unwrap().domain(),
            "a.b.example.com"
        );
        assert_eq!(s.lookup("b.example.com").unwrap().domain(), "example.com");
        assert_eq!(s.lookup("www.example.com").unwrap().access(), Access::None);
        // virtual apex: no row of its own
        assert!(s.get("other.cn").is_none());
        assert!(s.lookup("other.cn").is_none());
        assert!(s.lookup("y.other.cn").is_none());
        assert_eq!(s.lookup("q.x.other.cn").unwrap().filing(), Filing::Revoked);
        assert_eq!(s.lookup("www.plain.cn").unwrap().domain(), "plain.cn");
        assert!(s.lookup("cn").is_none());
    }
}
