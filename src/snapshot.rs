//! The immutable lookup structure built from a filing table, and the
//! `ArcSwap` holder that hot-swaps it (docs/table.md).
//!
//! Layout, chosen for 10M+ rows: all canonical names live in one byte arena;
//! an open-addressing table (linear probing, load ≤ 3/4) of 16-byte slots —
//! a 32-bit hash tag, arena offset, ICP id, length, packed statuses — answers
//! "is this exact name a row". A miss usually costs one cache line (tags
//! differ); a hit one line plus the name bytes. ICP strings sit in a second
//! arena; the rare rows with an expiry or IP list are found in a side map.
//! Both big arrays are advised into transparent huge pages, so random probes
//! into hundreds of MB do not also miss the TLB. No allocation, no lock.

use std::fmt;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use std::collections::HashMap;

use arc_swap::ArcSwap;
use ipnet::IpNet;

use crate::hostname;

/// Filing status (R6, docs/rules.md).
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

/// Access-record status at this provider (R6, docs/rules.md).
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

/// Status bit: some row names a subdomain of this (registrable) domain.
const HAS_CHILDREN: u8 = 1 << 4;
/// Status bit: no row of its own; the slot only carries `HAS_CHILDREN`.
const VIRTUAL: u8 = 1 << 5;
/// Status bit: the row has an expiry or registered IPs (side map).
const HAS_AUX: u8 = 1 << 6;

/// One table slot. `tag == 0` is an empty slot.
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Slot {
    tag: u32,
    off: u32,
    icp: u32,
    len: u8,
    status: u8,
    _pad: [u8; 2],
}

const _: () = assert!(std::mem::size_of::<Slot>() == 16);

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

#[inline]
fn hash_of(bytes: &[u8]) -> u64 {
    hasher().hash_one(bytes)
}

/// (tag, start index) of a hash: the tag from the high half (never 0), the
/// index from the low half.
#[inline]
fn split(hash: u64) -> (u32, usize) {
    ((hash >> 32) as u32 | 1, hash as usize)
}

/// Ask for transparent huge pages on the 2 MiB-aligned interior of a big
/// buffer (THP in `madvise` mode is common). Advice only: failure is fine.
fn advise_huge(ptr: *const u8, len: usize) {
    const HUGE: usize = 2 << 20;
    let start = (ptr as usize).div_ceil(HUGE) * HUGE;
    let end = (ptr as usize + len) / HUGE * HUGE;
    if end > start {
        // SAFETY: madvise only changes paging advice for memory we own; the
        // range lies inside the allocation.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

#[inline]
fn prefetch_read<T>(p: &T) {
    // SAFETY: SSE is part of the x86_64 baseline; a prefetch is a hint
    // that never faults, and the pointer comes from a live reference.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            (p as *const T).cast::<i8>(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// An empty byte buffer of `cap` capacity, advised into huge pages before
/// anything touches it.
fn huge_vec(cap: usize) -> Vec<u8> {
    let v = Vec::with_capacity(cap);
    advise_huge(v.as_ptr(), v.capacity());
    v
}

/// Open addressing, linear probing, power-of-two capacity, load ≤ 3/4.
struct Flat {
    slots: Vec<Slot>,
    mask: usize,
    len: usize,
}

enum Probe {
    Found(usize),
    Vacant(usize),
    /// Every slot was probed: the table is full. The load limit makes this
    /// impossible; it is reported instead of probing forever.
    Full,
}

impl Flat {
    /// Empty slots for `rows` rows at load ≤ 3/4: `spare` emptied in place
    /// when it is the right size (the capacity for `rows` or twice it),
    /// else fresh memory.
    fn reusing(rows: usize, mut spare: Vec<Slot>) -> Flat {
        let cap = (rows.saturating_mul(4) / 3 + 1).next_power_of_two().max(16);
        let slots = if spare.len() == cap || spare.len() == cap.saturating_mul(2) {
            spare.fill(Slot::default());
            spare
        } else {
            Self::alloc(cap)
        };
        Flat {
            mask: slots.len() - 1,
            slots,
            len: 0,
        }
    }

    /// `cap` empty slots, from zeroed memory (fresh pages for large sizes,
    /// advised into huge pages before the first write touches them).
    fn alloc(cap: usize) -> Vec<Slot> {
        let layout = match std::alloc::Layout::array::<Slot>(cap) {
            Ok(l) if l.size() > 0 => l,
            _ => return vec![Slot::default(); cap],
        };
        // SAFETY: the layout is non-zero-sized; all-zero bytes are a valid
        // `Slot` (the empty slot); the Vec takes ownership with the same
        // layout (capacity == length == cap).
        unsafe {
            let ptr = std::alloc::alloc_zeroed(layout);
            if ptr.is_null() {
                std::alloc::handle_alloc_error(layout);
            }
            advise_huge(ptr, layout.size());
            Vec::from_raw_parts(ptr.cast::<Slot>(), cap, cap)
        }
    }

    #[inline]
    fn probe(&self, hash: u64, bytes: &[u8], names: &[u8]) -> Probe {
        let (tag, mut i) = split(hash);
        for _ in 0..self.slots.len() {
            i &= self.mask;
            let s = &self.slots[i];
            if s.tag == 0 {
                return Probe::Vacant(i);
            }
            if s.tag == tag
                && s.len as usize == bytes.len()
                && names.get(s.off as usize..s.off as usize + bytes.len()) == Some(bytes)
            {
                return Probe::Found(i);
            }
            i += 1;
        }
        Probe::Full
    }

    #[inline]
    fn prefetch(&self, hash: u64) {
        let i = split(hash).1 & self.mask;
        if let Some(slot) = self.slots.get(i) {
            prefetch_read(slot);
        }
    }

    /// Make room for one more slot (call before `probe` + insert).
    fn reserve_one(&mut self, names: &[u8]) {
        if (self.len + 1) * 4 <= self.slots.len() * 3 {
            return;
        }
        let cap = self.slots.len() * 2;
        let old = std::mem::replace(&mut self.slots, Self::alloc(cap));
        self.mask = cap - 1;
        for s in old.into_iter().filter(|s| s.tag != 0) {
            let start = s.off as usize;
            let (_, mut i) = split(hash_of(&names[start..start + s.len as usize]));
            loop {
                i &= self.mask;
                if self.slots[i].tag == 0 {
                    self.slots[i] = s;
                    break;
                }
                i += 1;
            }
        }
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
        self.bytes.len() + self.ends.len() * 4
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
    table: Flat,
    /// Real rows (the table also holds virtual apex slots).
    rows: usize,
    icps: StrArena,
    /// Side data by arena offset, for slots with `HAS_AUX`.
    aux: HashMap<u32, Aux>,
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
        if self.slot.status & HAS_AUX == 0 {
            None
        } else {
            self.snap.aux.get(&self.slot.off)
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
        match self.table.probe(hash_of(bytes), bytes, &self.names) {
            Probe::Found(i) => Some(self.table.slots[i]),
            Probe::Vacant(_) | Probe::Full => None,
        }
    }

    fn row(&self, slot: Slot) -> Option<Row<'_>> {
        (!slot.is_virtual()).then_some(Row { snap: self, slot })
    }

    /// Exact-name row, if any. `name` must be canonical.
    #[inline]
    pub fn get(&self, name: &str) -> Option<Row<'_>> {
        self.probe(name).and_then(|s| self.row(s))
    }

    /// The most specific row covering a canonical name (R4, docs/rules.md), whole
    /// labels only, never a public suffix. The registrable domain is probed
    /// first: a miss there means no row covers the name (one probe); only
    /// when rows exist below it are the longer candidates probed, most
    /// specific first.
    #[inline]
    pub fn lookup(&self, name: &str) -> Option<Row<'_>> {
        self.lookup_under(name, hostname::registrable_domain(name)?)
    }

    /// [`Snapshot::lookup`] for a caller that already has the name's
    /// registrable domain (`apex` must be `registrable_domain(name)`).
    #[inline]
    pub fn lookup_under(&self, name: &str, apex: &str) -> Option<Row<'_>> {
        debug_assert_eq!(hostname::registrable_domain(name), Some(apex));
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

    /// Take the snapshot apart for its memory (see [`Spare`]).
    pub fn into_spare(self) -> Spare {
        Spare {
            names: self.names,
            slots: self.table.slots,
            icp_bytes: self.icps.bytes,
            icp_ends: self.icps.ends,
        }
    }

    /// Approximate heap bytes held by this snapshot. Arenas count their
    /// used bytes (their unused tail is never written, so never resident).
    pub fn heap_bytes(&self) -> usize {
        self.names.len()
            + self.table.slots.capacity() * std::mem::size_of::<Slot>()
            + self.icps.heap_bytes()
            + self.aux.capacity() * (std::mem::size_of::<Aux>() + 8)
    }

    /// Iterate over all rows (order unspecified).
    pub fn rows(&self) -> impl Iterator<Item = Row<'_>> {
        self.table
            .slots
            .iter()
            .filter(|s| s.tag != 0)
            .filter_map(move |slot| self.row(*slot))
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
    /// The hash table had no free slot (an internal error: never expected).
    Full,
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
    /// Length of the domain's registrable part, when the caller already
    /// knows it (the loader does); `None` makes the builder compute it.
    pub registrable_len: Option<usize>,
}

/// Builds a [`Snapshot`] row by row.
pub struct Builder {
    names: Vec<u8>,
    table: Flat,
    /// Arena offset of each pushed row, in push order (offsets grow with
    /// each push, so a binary search maps a slot back to its push index).
    push_offs: Vec<u32>,
    icps: StrArena,
    aux: HashMap<u32, Aux>,
    rows: usize,
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    pub fn with_capacity(rows: usize) -> Self {
        Self::reusing(rows, rows * 20, 0, Spare::default())
    }

    /// Pre-sized for about `rows` rows, `name_bytes` of names and
    /// `icp_bytes` of filing numbers, so a table of the expected size is
    /// built without a growth step (each would copy into freshly faulted
    /// pages); over-estimates cost address space only, as pages never
    /// written are never resident. Built in the memory of a retired
    /// snapshot (`spare`) where it is big enough: the hints are generous,
    /// so a buffer of at least half the hint is taken (the arenas grow if
    /// not); an empty `Spare` means fresh memory.
    pub fn reusing(rows: usize, name_bytes: usize, icp_bytes: usize, spare: Spare) -> Self {
        fn arena(mut v: Vec<u8>, hint: usize) -> Vec<u8> {
            if v.capacity() >= hint / 2 && v.capacity() > 0 {
                v.clear();
                v
            } else {
                huge_vec(hint)
            }
        }
        let mut ends = spare.icp_ends;
        ends.clear();
        ends.reserve(rows);
        Builder {
            names: arena(spare.names, name_bytes),
            table: Flat::reusing(rows, spare.slots),
            push_offs: Vec::with_capacity(rows),
            icps: StrArena {
                bytes: arena(spare.icp_bytes, icp_bytes),
                ends,
            },
            aux: HashMap::new(),
            rows: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Append a name to the arena; its offset.
    fn append_name(&mut self, bytes: &[u8]) -> Result<u32, PushError> {
        let off = self.names.len();
        if off + bytes.len() > u32::MAX as usize {
            return Err(PushError::TooLarge);
        }
        if self.names.capacity() - off < bytes.len() {
            // Grow by doubling into a fresh buffer advised into huge pages
            // before the copy touches it (a plain realloc would fault 4 KiB
            // pages first).
            let mut bigger = huge_vec((self.names.capacity() * 2).max(1 << 16));
            bigger.extend_from_slice(&self.names);
            self.names = bigger;
        }
        self.names.extend_from_slice(bytes);
        Ok(off as u32)
    }

    /// Mark `apex` as having rows below it, creating a virtual slot if it
    /// has no row of its own (yet).
    fn mark_children(&mut self, apex: &str) -> Result<(), PushError> {
        let bytes = apex.as_bytes();
        let hash = hash_of(bytes);
        self.table.reserve_one(&self.names);
        match self.table.probe(hash, bytes, &self.names) {
            Probe::Found(i) => self.table.slots[i].status |= HAS_CHILDREN,
            Probe::Full => return Err(PushError::Full),
            Probe::Vacant(i) => {
                let off = self.append_name(bytes)?;
                self.table.slots[i] = Slot {
                    tag: split(hash).0,
                    off,
                    icp: 0,
                    len: bytes.len() as u8,
                    status: VIRTUAL | HAS_CHILDREN,
                    _pad: [0; 2],
                };
                self.table.len += 1;
            }
        }
        Ok(())
    }

    /// Hint that `name` (and its registrable apex, when `apex_len` says it
    /// has a shorter one) will be pushed soon: start loading their slots'
    /// cache lines, so a loader that calls this a few rows ahead overlaps
    /// the table's cache misses instead of waiting for each in turn.
    #[inline]
    pub fn prefetch(&self, name: &str, apex_len: usize) {
        self.table.prefetch(hash_of(name.as_bytes()));
        if apex_len < name.len() {
            if let Some(apex) = name.get(name.len() - apex_len..) {
                self.table.prefetch(hash_of(apex.as_bytes()));
            }
        }
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
        let apex = match row.registrable_len {
            Some(l) if l <= row.domain.len() => row.domain.get(row.domain.len() - l..),
            _ => hostname::registrable_domain(row.domain),
        };
        let hash = hash_of(bytes);
        self.table.reserve_one(&self.names);
        // A virtual apex slot becomes this row (keeping HAS_CHILDREN), with a
        // fresh arena copy of the name so offsets stay in push order.
        let (index, inherited, fresh) = match self.table.probe(hash, bytes, &self.names) {
            Probe::Found(i) if self.table.slots[i].is_virtual() => {
                (i, self.table.slots[i].status & HAS_CHILDREN, false)
            }
            Probe::Found(i) => {
                let off = self.table.slots[i].off;
                let first = self.push_offs.binary_search(&off).unwrap_or(0) as u32;
                return Err(PushError::Duplicate { first });
            }
            Probe::Vacant(i) => (i, 0, true),
            Probe::Full => return Err(PushError::Full),
        };
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
        let off = self.append_name(bytes)?;
        let mut status = (row.filing as u8) | ((row.access as u8) << 2) | inherited;
        if row.access_expires.is_some() || !row.ips.is_empty() {
            status |= HAS_AUX;
            self.aux.insert(
                off,
                Aux {
                    expires: row.access_expires,
                    ips: row.ips.into_boxed_slice(),
                },
            );
        }
        self.table.slots[index] = Slot {
            tag: split(hash).0,
            off,
            icp,
            len: bytes.len() as u8,
            status,
            _pad: [0; 2],
        };
        if fresh {
            self.table.len += 1;
        }
        self.push_offs.push(off);
        self.rows += 1;
        if let Some(apex) = apex {
            if apex.len() < row.domain.len() {
                self.mark_children(apex)?;
            }
        }
        Ok(())
    }

    /// The arenas keep their spare capacity: shrinking would copy them into
    /// fresh pages, and the never-written tail is not resident anyway.
    pub fn finish(mut self, meta: TableMeta) -> Snapshot {
        self.aux.shrink_to_fit();
        advise_huge(self.names.as_ptr(), self.names.capacity());
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

/// The big buffers of a retired snapshot, kept to build the next one in
/// memory that is already resident: on a rebuild of a 1M-row table, a third
/// of the CPU was the kernel zeroing freshly faulted pages.
#[derive(Default)]
pub struct Spare {
    names: Vec<u8>,
    slots: Vec<Slot>,
    icp_bytes: Vec<u8>,
    icp_ends: Vec<u32>,
}

impl Spare {
    /// Fresh memory shaped like `snap`'s, each page it uses written once
    /// now, so even the first reload builds in resident memory (and the
    /// process's footprint does not jump at that reload).
    pub fn prefaulted_like(snap: &Snapshot) -> Spare {
        fn touched(cap: usize, used: usize) -> Vec<u8> {
            let mut v = huge_vec(cap);
            v.resize(used.min(cap), 0);
            v.clear();
            v
        }
        let mut slots = Flat::alloc(snap.table.slots.len());
        slots.fill(Slot::default());
        let mut icp_ends = Vec::with_capacity(snap.icps.ends.capacity());
        icp_ends.resize(snap.icps.ends.len(), 0);
        icp_ends.clear();
        Spare {
            names: touched(snap.names.capacity(), snap.names.len()),
            slots,
            icp_bytes: touched(snap.icps.bytes.capacity(), snap.icps.bytes.len()),
            icp_ends,
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.names.capacity()
            + self.slots.capacity() * std::mem::size_of::<Slot>()
            + self.icp_bytes.capacity()
            + self.icp_ends.capacity() * 4
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
            registrable_len: None,
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
