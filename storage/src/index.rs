//! The in-memory index: per object, keys in order mapped to their latest value or its location.
//!
//! INVARIANT: the index reflects every mutation issued, durable or not (read-your-writes), and
//! nothing else. It is ordered (`BTreeMap`) for `list` and `objects()`. Recovery replays into the
//! same structure: a hash map replay (sorted once at the end) was measured slower on a log of
//! mostly sequential keys, where the tree's neighbouring keys stay in cache and a hash scatters
//! them (`docs/BENCHMARKS.md`, storage section).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::ops::{Bound, Deref, Range};
use std::rc::Rc;

use crate::format::BodyBytes;

/// An object's identity: 32 opaque bytes (the engine hashes names into it).
pub type ObjectId = [u8; 32];

/// Segment number meaning "not yet written".
pub(crate) const SEG_PENDING: u32 = u32::MAX;

/// One archived record kept in memory, and where it went on disk once written.
#[derive(Debug)]
pub(crate) struct RecordBuf {
    /// The archived body (rkyv), 16-byte aligned.
    pub(crate) body: BodyBytes,
    /// Segment holding it, `SEG_PENDING` until written.
    pub(crate) seg: Cell<u32>,
    /// File offset of the body inside the segment, once written.
    pub(crate) body_off: Cell<u64>,
    /// Bytes of this record's operations already superseded while it was pending.
    pub(crate) dead_bytes: Cell<u64>,
    /// Bytes its puts are charged for (`entry_bytes`), counted once when it is made.
    pub(crate) put_bytes: u64,
    /// True if a put's value is larger than the inline limit (it leaves memory once durable).
    pub(crate) has_large: bool,
    /// Delete operations (tombstones) in it: a segment holding any may only be compacted once it
    /// is the oldest (`compaction.rs`).
    pub(crate) tombstones: u32,
}

#[derive(Clone, Debug)]
enum Backing {
    Record(Rc<RecordBuf>),
    /// Bytes of their own: read off disk, or loaded from a checkpoint (then with the segment
    /// the entry lives in, so that overwriting it discharges that segment's live bytes).
    Plain(Rc<[u8]>, u32),
}

/// A value: a cheap handle to bytes that are read in place from the archived record (for
/// in-memory values) or from a buffer read off disk (for large values).
#[derive(Clone, Debug)]
pub struct Value {
    backing: Backing,
    range: Range<usize>,
}

impl Value {
    pub(crate) fn in_record(rec: Rc<RecordBuf>, range: Range<usize>) -> Value {
        assert!(range.end <= rec.body.len());
        Value {
            backing: Backing::Record(rec),
            range,
        }
    }

    pub(crate) fn plain(bytes: Vec<u8>) -> Value {
        Value::loaded(bytes, SEG_PENDING)
    }

    /// A value loaded from a checkpoint, stored in segment `seg` (`SEG_PENDING`: in the log
    /// after the checkpoint's tail).
    pub(crate) fn loaded(bytes: Vec<u8>, seg: u32) -> Value {
        let range = 0..bytes.len();
        Value {
            backing: Backing::Plain(bytes.into(), seg),
            range,
        }
    }

    /// [`Value::loaded`] from borrowed bytes: one allocation (the `Rc`
    /// block), where a `Vec` first would be two and a copy.
    pub(crate) fn loaded_from(bytes: &[u8], seg: u32) -> Value {
        Value {
            backing: Backing::Plain(Rc::from(bytes), seg),
            range: 0..bytes.len(),
        }
    }

    /// The segment holding this value, or `SEG_PENDING`.
    pub(crate) fn seg(&self) -> u32 {
        match &self.backing {
            Backing::Record(r) => r.seg.get(),
            Backing::Plain(_, seg) => *seg,
        }
    }

    pub(crate) fn record(&self) -> Option<&Rc<RecordBuf>> {
        match &self.backing {
            Backing::Record(r) => Some(r),
            Backing::Plain(..) => None,
        }
    }

    pub(crate) fn range(&self) -> Range<usize> {
        self.range.clone()
    }
}

impl Deref for Value {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.backing {
            Backing::Record(r) => &r.body[self.range.clone()],
            Backing::Plain(p, _) => &p[self.range.clone()],
        }
    }
}

impl AsRef<[u8]> for Value {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl PartialEq<[u8]> for Value {
    fn eq(&self, other: &[u8]) -> bool {
        **self == *other
    }
}

/// Where a key's latest value is.
#[derive(Clone, Debug)]
pub(crate) enum Loc {
    /// In memory, inside its archived record.
    Mem(Value),
    /// On disk only: segment, file offset and length of the value bytes.
    Disk { seg: u32, off: u64, len: u32 },
}

impl Loc {
    /// The segment holding it, or `SEG_PENDING`.
    pub(crate) fn seg(&self) -> u32 {
        match self {
            Loc::Mem(v) => v.seg(),
            Loc::Disk { seg, .. } => *seg,
        }
    }

    pub(crate) fn value_len(&self) -> usize {
        match self {
            Loc::Mem(v) => v.len(),
            Loc::Disk { len, .. } => *len as usize,
        }
    }
}

/// Bytes an entry is charged for when counting live and dead bytes per segment.
pub(crate) fn entry_bytes(key_len: usize, value_len: usize) -> u64 {
    (key_len + value_len + 64) as u64
}

/// A key as the index stores it: short keys (the common case) inline, so that the comparisons of
/// a tree descent read only the node, not one heap allocation per key compared. Ordered like
/// the bytes (`[u8]` order), so ranges over `[u8]` bounds work unchanged.
#[derive(Clone)]
pub(crate) enum Key {
    /// Up to `KEY_INLINE` bytes, stored in place.
    Inline { len: u8, bytes: [u8; KEY_INLINE] },
    /// Longer keys.
    Heap(Box<[u8]>),
}

/// Longest key stored inline (the enum is then 24 bytes, like a `Vec`).
const KEY_INLINE: usize = 22;
const _: () = assert!(std::mem::size_of::<Key>() == 24);

impl Key {
    pub(crate) fn new(key: &[u8]) -> Key {
        if key.len() <= KEY_INLINE {
            let mut bytes = [0u8; KEY_INLINE];
            bytes[..key.len()].copy_from_slice(key);
            Key::Inline {
                len: key.len() as u8,
                bytes,
            }
        } else {
            Key::Heap(key.into())
        }
    }
}

impl Deref for Key {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..*len as usize],
            Key::Heap(b) => b,
        }
    }
}

impl std::borrow::Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        **self == **other
    }
}

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Key) -> std::cmp::Ordering {
        (**self).cmp(&**other)
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

/// Keys an object may hold before its map turns from a sorted `Vec` into a `BTreeMap`.
const SMALL_KEYS_MAX: usize = 16;

/// Longest value a packed map holds: values up to this size are copied out of their record
/// into their object's packed map once the record is written, so the record can be freed.
pub(crate) const PACKED_VALUE_MAX: usize = 64;
/// Longest key a packed map holds (its length is stored in one byte).
const PACKED_KEY_MAX: usize = 255;

/// Bytes charged per object on top of its map: its slot in the object tree (a 32-byte id and
/// a 24-byte `KeyMap`), in B-tree nodes (11 slots, 632 bytes) about 70% full on random ids,
/// plus the inner nodes.
pub(crate) const OBJECT_SLOT_BYTES: u64 = 96;
/// Bytes charged per entry of a `Large` map: a 64-byte slot in nodes about 70% full.
const LARGE_ENTRY_BYTES: u64 = 96;

/// What the allocator takes for a block of `n` bytes, modelled on mimalloc (the `cairn`
/// binary's allocator): no header, 8-byte size classes up to 64 bytes, then four classes per
/// doubling.
pub(crate) fn alloc_bytes(n: usize) -> u64 {
    let words = n.div_ceil(8);
    if words <= 8 {
        return (words * 8) as u64;
    }
    let b = usize::BITS - 1 - (words - 1).leading_zeros();
    let step = 1usize << (b - 2);
    (words.div_ceil(step) * step * 8) as u64
}

/// Heap bytes an entry holds outside its slot: a long key's buffer, and its value's bytes
/// (a buffer of its own, or its share of the record it lives in: the value and about 64 bytes
/// of operation framing).
fn entry_extra(key: &[u8], loc: &Loc) -> u64 {
    let key_heap = if key.len() > KEY_INLINE {
        alloc_bytes(key.len())
    } else {
        0
    };
    let value = match loc {
        Loc::Mem(v) => match &v.backing {
            Backing::Record(_) => v.len() as u64 + 64,
            // An `Rc<[u8]>` block: two counts and the bytes.
            Backing::Plain(p, _) => alloc_bytes(16 + p.len()),
        },
        Loc::Disk { .. } => 0,
    };
    key_heap + value
}

/// The segment and bytes of an entry a packed map can hold: a small value in memory whose
/// record is written, or that has bytes of its own.
fn packable<'a>(key: &[u8], loc: &'a Loc) -> Option<(u32, &'a [u8])> {
    match loc {
        Loc::Mem(v)
            if key.len() <= PACKED_KEY_MAX
                && v.len() <= PACKED_VALUE_MAX
                && !(v.record().is_some() && v.seg() == SEG_PENDING) =>
        {
            Some((v.seg(), v))
        }
        _ => None,
    }
}

/// The location a packed entry stands for: its bytes, copied, in segment `seg`.
fn unpacked(seg: u32, value: &[u8]) -> Loc {
    Loc::Mem(Value::loaded_from(value, seg))
}

/// Bytes one packed entry takes: key length (1), key, segment (4), value length (1), value.
fn packed_len(key: &[u8], value: &[u8]) -> usize {
    6 + key.len() + value.len()
}

fn push_packed(out: &mut Vec<u8>, key: &[u8], seg: u32, value: &[u8]) {
    out.push(key.len() as u8);
    out.extend_from_slice(key);
    out.extend_from_slice(&seg.to_le_bytes());
    out.push(value.len() as u8);
    out.extend_from_slice(value);
}

/// The entries of a packed map in key order: (key, segment, value).
#[derive(Clone)]
pub(crate) struct PackedIter<'a>(&'a [u8]);

impl<'a> Iterator for PackedIter<'a> {
    type Item = (&'a [u8], LocRef<'a>);
    fn next(&mut self) -> Option<Self::Item> {
        // The buffer was written by `push_packed`; its lengths are ours, not the disk's.
        let (&klen, rest) = self.0.split_first()?;
        let (key, rest) = rest.split_at(klen as usize);
        let (seg, rest) = rest.split_at(4);
        let (&vlen, rest) = rest.split_first()?;
        let (value, rest) = rest.split_at(vlen as usize);
        self.0 = rest;
        let seg = u32::from_le_bytes([seg[0], seg[1], seg[2], seg[3]]);
        Some((key, LocRef::Packed { seg, value }))
    }
}

/// A borrowed view of an entry's location: a [`Loc`] in a `Small` or `Large` map, or a packed
/// entry's segment and bytes (made into a `Loc` only when asked, which copies the bytes).
#[derive(Clone, Copy, Debug)]
pub(crate) enum LocRef<'a> {
    /// An entry of a `Small` or `Large` map.
    Full(&'a Loc),
    /// An entry of a packed map.
    Packed { seg: u32, value: &'a [u8] },
}

impl LocRef<'_> {
    /// The segment holding it, or `SEG_PENDING`.
    pub(crate) fn seg(&self) -> u32 {
        match self {
            LocRef::Full(l) => l.seg(),
            LocRef::Packed { seg, .. } => *seg,
        }
    }

    /// An owned location (a packed entry's bytes are copied).
    pub(crate) fn to_loc(self) -> Loc {
        match self {
            LocRef::Full(l) => l.clone(),
            LocRef::Packed { seg, value } => unpacked(seg, value),
        }
    }
}

/// One object's keys in order, mapped to their locations.
///
/// Most objects hold a handful of keys with small values (a counter: its value and the
/// engine's two meta keys, 8 bytes or fewer each), and there are millions of them, so their
/// shape decides the index's memory. Once every entry of an object is written and holds a
/// value of at most `PACKED_VALUE_MAX` bytes, the map is `Packed`: one exactly sized buffer of
/// `[key length][key][segment][value length][value]` entries in key order, about 20 bytes per
/// key of a counter, and no record kept alive. A mutation not yet written turns the map into
/// a sorted `Vec` of (key, location) (64 bytes an entry; the new value lives in its record);
/// the commit loop packs it again once the record is durable (`Index::repack`). Past
/// `SMALL_KEYS_MAX` keys the map becomes a `BTreeMap`, so inserts into large objects stay
/// logarithmic (a `BTreeMap` allocates an 11-slot leaf node, about 720 bytes, for even one
/// key, which is why small objects do not use one).
#[derive(Debug)]
pub(crate) enum KeyMap {
    /// Every entry packable, sorted by key, at most `SMALL_KEYS_MAX` entries.
    Packed(Box<[u8]>),
    /// Sorted by key, no duplicates, at most `SMALL_KEYS_MAX` entries, capacity = length.
    Small(Vec<(Key, Loc)>),
    /// More keys (boxed, so that the enum is 24 bytes: it sits in every object's slot, and
    /// large maps are few).
    #[allow(clippy::box_collection)]
    Large(Box<BTreeMap<Key, Loc>>),
}

impl Default for KeyMap {
    fn default() -> Self {
        KeyMap::Packed(Box::default())
    }
}

/// A packed buffer with `key` set to `new` (or removed, if `None`), and the location it held.
fn packed_with(blob: &[u8], key: &[u8], new: Option<(u32, &[u8])>) -> (Box<[u8]>, Option<Loc>) {
    let extra = new.map_or(0, |(_, v)| packed_len(key, v));
    let mut out = Vec::with_capacity(blob.len() + extra);
    let mut old = None;
    let mut placed = new.is_none();
    for (k, l) in PackedIter(blob) {
        let LocRef::Packed { seg, value } = l else {
            unreachable!("a packed buffer yields packed entries")
        };
        if !placed && k >= key {
            if let Some((s, v)) = new {
                push_packed(&mut out, key, s, v);
            }
            placed = true;
        }
        if k == key {
            old = Some(unpacked(seg, value));
            continue;
        }
        push_packed(&mut out, k, seg, value);
    }
    if !placed && let Some((s, v)) = new {
        push_packed(&mut out, key, s, v);
    }
    (out.into_boxed_slice(), old)
}

impl KeyMap {
    /// A key's location (a packed entry's bytes are copied).
    pub(crate) fn get(&self, key: &[u8]) -> Option<Loc> {
        self.get_ref(key).map(LocRef::to_loc)
    }

    /// A key's location, borrowed.
    pub(crate) fn get_ref(&self, key: &[u8]) -> Option<LocRef<'_>> {
        match self {
            KeyMap::Packed(b) => PackedIter(b)
                .take_while(|(k, _)| *k <= key)
                .find(|(k, _)| *k == key)
                .map(|(_, l)| l),
            KeyMap::Small(v) => v
                .binary_search_by(|(k, _)| (**k).cmp(key))
                .ok()
                .map(|i| LocRef::Full(&v[i].1)),
            KeyMap::Large(m) => m.get(key).map(LocRef::Full),
        }
    }

    /// Turns a packed map into a `Small` one (copying its values into buffers of their own).
    fn unpack(&mut self) {
        if let KeyMap::Packed(b) = self {
            let mut v = Vec::with_capacity(PackedIter(b).count());
            v.extend(PackedIter(b).map(|(k, l)| (Key::new(k), l.to_loc())));
            *self = KeyMap::Small(v);
        }
    }

    /// Packs a `Small` map if every entry is packable (see `KeyMap`).
    pub(crate) fn try_pack(&mut self) {
        let KeyMap::Small(v) = self else { return };
        let mut len = 0;
        for (k, l) in v.iter() {
            match packable(k, l) {
                Some((_, value)) => len += packed_len(k, value),
                None => return,
            }
        }
        let mut out = Vec::with_capacity(len);
        for (k, l) in v.iter() {
            if let Some((seg, value)) = packable(k, l) {
                push_packed(&mut out, k, seg, value);
            }
        }
        *self = KeyMap::Packed(out.into_boxed_slice());
    }

    /// Sets a key, returning the location it replaces.
    pub(crate) fn insert(&mut self, key: &[u8], loc: Loc) -> Option<Loc> {
        let pack = packable(key, &loc).is_some();
        let fits = match &*self {
            KeyMap::Packed(b) => {
                Some(PackedIter(b).count() < SMALL_KEYS_MAX || self.get_ref(key).is_some())
            }
            _ => None,
        };
        if let Some(fits) = fits {
            if let (true, Some((seg, value)), KeyMap::Packed(b)) =
                (fits, packable(key, &loc), &mut *self)
            {
                let (blob, old) = packed_with(b, key, Some((seg, value)));
                *b = blob;
                return old;
            }
            self.unpack();
        }
        let old = match self {
            KeyMap::Packed(_) => unreachable!("unpacked above"),
            KeyMap::Small(v) => match v.binary_search_by(|(k, _)| (**k).cmp(key)) {
                Ok(i) => Some(std::mem::replace(&mut v[i].1, loc)),
                Err(i) if v.len() < SMALL_KEYS_MAX => {
                    // Exact growth: small maps are the many, and each spare slot is 64 bytes.
                    v.reserve_exact(1);
                    v.insert(i, (Key::new(key), loc));
                    None
                }
                Err(_) => {
                    let mut m: BTreeMap<Key, Loc> = std::mem::take(v).into_iter().collect();
                    m.insert(Key::new(key), loc);
                    *self = KeyMap::Large(Box::new(m));
                    None
                }
            },
            KeyMap::Large(m) => match m.get_mut(key) {
                Some(slot) => Some(std::mem::replace(slot, loc)),
                None => {
                    m.insert(Key::new(key), loc);
                    None
                }
            },
        };
        if pack {
            self.try_pack();
        }
        old
    }

    pub(crate) fn remove(&mut self, key: &[u8]) -> Option<Loc> {
        match self {
            KeyMap::Packed(b) => {
                let (blob, old) = packed_with(b, key, None);
                if old.is_some() {
                    *b = blob;
                }
                old
            }
            KeyMap::Small(v) => {
                let i = v.binary_search_by(|(k, _)| (**k).cmp(key)).ok()?;
                let (_, loc) = v.remove(i);
                v.shrink_to_fit();
                self.try_pack();
                Some(loc)
            }
            KeyMap::Large(m) => m.remove(key),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        match self {
            KeyMap::Packed(b) => b.is_empty(),
            KeyMap::Small(v) => v.is_empty(),
            KeyMap::Large(m) => m.is_empty(),
        }
    }

    /// Heap bytes the map holds (what `Index::bytes` sums): its buffer or slots, and each
    /// entry's extra (`entry_extra`). Linear in the entries; `Index` keeps `Large` maps' share
    /// up to date incrementally instead.
    pub(crate) fn heap_bytes(&self) -> u64 {
        match self {
            KeyMap::Packed(b) => alloc_bytes(b.len()),
            KeyMap::Small(v) => {
                alloc_bytes(v.capacity() * std::mem::size_of::<(Key, Loc)>())
                    + v.iter().map(|(k, l)| entry_extra(k, l)).sum::<u64>()
            }
            KeyMap::Large(m) => m
                .iter()
                .map(|(k, l)| LARGE_ENTRY_BYTES + entry_extra(k, l))
                .sum(),
        }
    }

    /// Entries in key order.
    pub(crate) fn iter(&self) -> Iter<'_> {
        match self {
            KeyMap::Packed(b) => Iter::Packed(PackedIter(b)),
            _ => self.range((Bound::Unbounded, Bound::Unbounded)),
        }
    }

    /// Entries with keys inside `bounds`, in key order. An inverted range is empty (where
    /// `BTreeMap::range` would panic, callers answer it first).
    pub(crate) fn range(&self, bounds: (Bound<&[u8]>, Bound<&[u8]>)) -> Iter<'_> {
        match self {
            KeyMap::Packed(b) => {
                let inside = |k: &[u8]| {
                    let lo = match bounds.0 {
                        Bound::Included(x) => k >= x,
                        Bound::Excluded(x) => k > x,
                        Bound::Unbounded => true,
                    };
                    let hi = match bounds.1 {
                        Bound::Included(x) => k <= x,
                        Bound::Excluded(x) => k < x,
                        Bound::Unbounded => true,
                    };
                    lo && hi
                };
                let v: Vec<_> = PackedIter(b).filter(|(k, _)| inside(k)).collect();
                Iter::Collected(v.into_iter())
            }
            KeyMap::Small(v) => {
                let at = |b: Bound<&[u8]>, after_equal: bool, none: usize| match b {
                    Bound::Included(x) => {
                        v.partition_point(|(k, _)| if after_equal { **k <= *x } else { **k < *x })
                    }
                    Bound::Excluded(x) => {
                        v.partition_point(|(k, _)| if after_equal { **k < *x } else { **k <= *x })
                    }
                    Bound::Unbounded => none,
                };
                let start = at(bounds.0, false, 0);
                let end = at(bounds.1, true, v.len()).max(start);
                Iter::Small(v[start..end].iter())
            }
            KeyMap::Large(m) => Iter::Large(m.range::<[u8], _>(bounds)),
        }
    }
}

impl IntoIterator for KeyMap {
    type Item = (Key, Loc);
    type IntoIter = std::vec::IntoIter<(Key, Loc)>;
    fn into_iter(mut self) -> Self::IntoIter {
        self.unpack();
        match self {
            KeyMap::Packed(_) => unreachable!("unpacked above"),
            KeyMap::Small(v) => v.into_iter(),
            KeyMap::Large(m) => m.into_iter().collect::<Vec<_>>().into_iter(),
        }
    }
}

/// An iterator over a [`KeyMap`]'s entries.
pub(crate) enum Iter<'a> {
    Packed(PackedIter<'a>),
    /// A packed map's entries, collected (for ranges and iterating backwards).
    Collected(std::vec::IntoIter<(&'a [u8], LocRef<'a>)>),
    Small(std::slice::Iter<'a, (Key, Loc)>),
    Large(std::collections::btree_map::Range<'a, Key, Loc>),
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a [u8], LocRef<'a>);
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Packed(i) => i.next(),
            Iter::Collected(i) => i.next(),
            Iter::Small(i) => i.next().map(|(k, l)| (&**k, LocRef::Full(l))),
            Iter::Large(i) => i.next().map(|(k, l)| (&**k, LocRef::Full(l))),
        }
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Packed(i) => {
                let v: Vec<_> = i.collect();
                *self = Iter::Collected(v.into_iter());
                self.next_back()
            }
            Iter::Collected(i) => i.next_back(),
            Iter::Small(i) => i.next_back().map(|(k, l)| (&**k, LocRef::Full(l))),
            Iter::Large(i) => i.next_back().map(|(k, l)| (&**k, LocRef::Full(l))),
        }
    }
}

thread_local! {
    /// True while this thread runs a change to an index (see [`in_index_change`]).
    static IN_INDEX: Cell<bool> = const { Cell::new(false) };
}

/// True while this thread is inside a change to a store's in-memory index: what it allocates
/// then is the index's, and lives as long as the data. A global allocator may use this to put
/// the index's memory apart from everything else: the `cairn` binary does, so that the index's
/// small long-lived buffers do not pin the pages of short-lived objects
/// (docs/ARCHITECTURE.md, "Memory"). Cheap (a thread-local read); never allocates.
pub fn in_index_change() -> bool {
    IN_INDEX.try_with(Cell::get).unwrap_or(false)
}

/// Marks the current thread as inside an index change until dropped.
struct ChangeScope(bool);

impl ChangeScope {
    fn enter() -> ChangeScope {
        ChangeScope(IN_INDEX.with(|c| c.replace(true)))
    }
}

impl Drop for ChangeScope {
    fn drop(&mut self) {
        IN_INDEX.with(|c| c.set(self.0));
    }
}

/// An object ID as the index's tree key. Ordered exactly like its bytes, but
/// compared as four big-endian words: a search through the tree (three per
/// durable write) is then a few integer comparisons per node, nearly always
/// decided by the first word of a random ID, instead of a `memcmp` call for
/// every key it passes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) struct IdKey(pub(crate) ObjectId);

impl IdKey {
    fn words(&self) -> [u64; 4] {
        std::array::from_fn(|i| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&self.0[i * 8..i * 8 + 8]);
            u64::from_be_bytes(w)
        })
    }
}

impl Ord for IdKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.words().cmp(&other.words())
    }
}

impl PartialOrd for IdKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Per-object ordered maps.
#[derive(Default, Debug)]
pub(crate) struct Index {
    pub(crate) objects: BTreeMap<IdKey, KeyMap>,
    /// Heap bytes held: `OBJECT_SLOT_BYTES` per object plus each map's `heap_bytes`, kept up
    /// to date by every change (an estimate of what the allocator holds, checked in tests
    /// against the sum and in `tests/tests/memory.rs` against the resident set).
    bytes: u64,
}

impl Index {
    pub(crate) fn get(&self, obj: &ObjectId, key: &[u8]) -> Option<Loc> {
        self.objects.get(&IdKey(*obj))?.get(key)
    }

    /// The segment of a key's entry, if it exists (no copy of its value).
    pub(crate) fn seg_of(&self, obj: &ObjectId, key: &[u8]) -> Option<u32> {
        Some(self.objects.get(&IdKey(*obj))?.get_ref(key)?.seg())
    }

    /// Heap bytes the index holds (see the field).
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Runs `change` on `obj`'s map (made if absent), keeping `bytes` true, and drops the map
    /// if it ends empty.
    fn change<R>(&mut self, obj: &ObjectId, change: impl FnOnce(&mut KeyMap) -> (R, i64)) -> R {
        let _scope = ChangeScope::enter();
        let map = match self.objects.entry(IdKey(*obj)) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                self.bytes += OBJECT_SLOT_BYTES;
                e.insert(KeyMap::default())
            }
        };
        // `Large` maps are charged incrementally (`change` reports the delta); the rest are
        // small enough to measure before and after.
        let large = matches!(map, KeyMap::Large(_));
        let before = if large { 0 } else { map.heap_bytes() };
        let (out, delta) = change(map);
        let after = if large { 0 } else { map.heap_bytes() };
        let empty = map.is_empty();
        self.bytes = (self.bytes as i64 + after as i64 - before as i64 + delta).max(0) as u64;
        if empty && let Some(m) = self.objects.remove(&IdKey(*obj)) {
            self.bytes = self
                .bytes
                .saturating_sub(OBJECT_SLOT_BYTES + m.heap_bytes());
        }
        out
    }

    /// Sets a key, returning the location it replaces.
    pub(crate) fn put(&mut self, obj: &ObjectId, key: &[u8], loc: Loc) -> Option<Loc> {
        self.change(obj, |map| {
            let large = matches!(map, KeyMap::Large(_));
            let add = entry_extra(key, &loc) as i64;
            let old = map.insert(key, loc);
            let delta = match (&old, large) {
                (_, false) => 0,
                (None, true) => add + LARGE_ENTRY_BYTES as i64,
                (Some(o), true) => add - entry_extra(key, o) as i64,
            };
            (old, delta)
        })
    }

    pub(crate) fn delete(&mut self, obj: &ObjectId, key: &[u8]) -> Option<Loc> {
        if !self.objects.contains_key(&IdKey(*obj)) {
            return None;
        }
        self.change(obj, |map| {
            let large = matches!(map, KeyMap::Large(_));
            let old = map.remove(key);
            let delta = match (&old, large) {
                (Some(o), true) => -((LARGE_ENTRY_BYTES + entry_extra(key, o)) as i64),
                _ => 0,
            };
            (old, delta)
        })
    }

    pub(crate) fn delete_all(&mut self, obj: &ObjectId) -> Option<KeyMap> {
        let m = self.objects.remove(&IdKey(*obj))?;
        self.bytes = self
            .bytes
            .saturating_sub(OBJECT_SLOT_BYTES + m.heap_bytes());
        Some(m)
    }

    /// Packs `obj`'s map if every entry has become packable (its records are written).
    pub(crate) fn repack(&mut self, obj: &ObjectId) {
        // `change` without its second tree search: this runs for every
        // object after every durable write, and a `Small` map is never empty.
        let _scope = ChangeScope::enter();
        let Some(map @ KeyMap::Small(_)) = self.objects.get_mut(&IdKey(*obj)) else {
            return;
        };
        let before = map.heap_bytes();
        map.try_pack();
        let after = map.heap_bytes();
        self.bytes = (self.bytes as i64 + after as i64 - before as i64).max(0) as u64;
    }

    pub(crate) fn objects_after(&self, after: Option<&ObjectId>, limit: usize) -> Vec<ObjectId> {
        let lower = after.map_or(Bound::Unbounded, |a| Bound::Excluded(IdKey(*a)));
        self.objects
            .range((lower, Bound::Unbounded))
            .take(limit)
            .map(|(k, _)| k.0)
            .collect()
    }
}

/// The smallest key greater than every key starting with `prefix`, if there is one.
pub(crate) fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut p = prefix.to_vec();
    while let Some(last) = p.pop() {
        if last < u8::MAX {
            p.push(last + 1);
            return Some(p);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_keys_order_exactly_like_their_bytes() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut ids: Vec<ObjectId> = (0..200)
            .map(|i| {
                let mut id = [0u8; 32];
                for b in id.iter_mut() {
                    *b = next() as u8;
                }
                // Shared prefixes, so that later words decide too.
                if i % 3 == 0 {
                    id[..24].fill(0xab);
                }
                id
            })
            .collect();
        ids.extend([[0u8; 32], [0xff; 32], [0x80; 32], [0x7f; 32]]);
        for a in &ids {
            for b in &ids {
                assert_eq!(IdKey(*a).cmp(&IdKey(*b)), a.cmp(b), "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn prefix_successor_skips_trailing_ff_bytes() {
        let check = |p: &[u8], want: Option<&[u8]>| {
            assert_eq!(prefix_successor(p).as_deref(), want, "{p:?}")
        };
        check(b"a", Some(b"b"));
        check(b"ab", Some(b"ac"));
        check(&[1, 0xff], Some(&[2]));
        check(&[0xff, 0xff], None);
        check(b"", None);
    }

    #[test]
    fn keys_order_like_their_bytes_inline_or_not() {
        let long = |b: u8| vec![b; KEY_INLINE + 1];
        let mut raw: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"a".to_vec(),
            b"a\0".to_vec(),
            b"b".to_vec(),
            vec![0xff; KEY_INLINE],
            long(b'a'),
            long(0xff),
            long(0),
        ];
        raw.sort();
        let mut keys: Vec<Key> = raw.iter().rev().map(|k| Key::new(k)).collect();
        keys.sort();
        let back: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
        assert_eq!(back, raw);
    }

    #[test]
    fn key_map_matches_a_btree_map_packed_small_and_large() {
        // A small deterministic generator; keys from a small alphabet so puts overwrite,
        // deletes hit, and maps cross SMALL_KEYS_MAX both ways. Values are either small and
        // in memory (packable) or on disk (not), so maps also go packed and back.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut index = Index::default();
        let obj = [7u8; 32];
        let mut model: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
        let mut packed_seen = false;
        let seg = |l: Option<Loc>| l.map(|l| l.seg());
        for step in 0..6000u64 {
            let key = vec![b'a' + (next() % 40) as u8; 1 + (next() % 3) as usize];
            if next() % 3 == 0 {
                assert_eq!(
                    seg(index.delete(&obj, &key)),
                    model.remove(&key).map(|n| n as u32)
                );
            } else {
                let loc = if next() % 8 == 0 {
                    Loc::Disk {
                        seg: step as u32,
                        off: step,
                        len: 1,
                    }
                } else {
                    Loc::Mem(Value::loaded(step.to_be_bytes().to_vec(), step as u32))
                };
                let old = model.insert(key.clone(), step);
                assert_eq!(seg(index.put(&obj, &key, loc)), old.map(|n| n as u32));
            }
            assert_eq!(
                seg(index.get(&obj, &key)),
                model.get(&key).map(|n| *n as u32)
            );
            packed_seen |= matches!(index.objects.get(&IdKey(obj)), Some(KeyMap::Packed(_)));
            let want_bytes = index
                .objects
                .values()
                .map(|m| OBJECT_SLOT_BYTES + m.heap_bytes())
                .sum::<u64>();
            assert_eq!(index.bytes(), want_bytes, "step {step}");
            let Some(ours) = index.objects.get(&IdKey(obj)) else {
                assert!(model.is_empty());
                continue;
            };
            let a = vec![b'a' + (next() % 40) as u8];
            let b = vec![b'a' + (next() % 40) as u8];
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let bounds = [
                (Bound::Included(&lo[..]), Bound::Excluded(&hi[..])),
                (Bound::Excluded(&lo[..]), Bound::Included(&hi[..])),
                (Bound::Unbounded, Bound::Included(&hi[..])),
                (Bound::Included(&lo[..]), Bound::Unbounded),
            ];
            for bd in bounds {
                if matches!(bd, (Bound::Excluded(l), Bound::Included(h)) if l == h) {
                    continue;
                }
                let got: Vec<(Vec<u8>, u32)> = ours
                    .range(bd)
                    .rev()
                    .map(|(k, l)| (k.to_vec(), l.seg()))
                    .collect();
                let want: Vec<(Vec<u8>, u32)> = model
                    .range::<[u8], _>(bd)
                    .rev()
                    .map(|(k, n)| (k.clone(), *n as u32))
                    .collect();
                assert_eq!(got, want, "step {step} {bd:?}");
            }
            let all: Vec<Vec<u8>> = ours.iter().map(|(k, _)| k.to_vec()).collect();
            assert_eq!(all, model.keys().cloned().collect::<Vec<_>>());
        }
        assert!(packed_seen, "the walk went through packed maps");
        let left = index.delete_all(&obj).map(|m| m.into_iter().count());
        assert_eq!(left, (!model.is_empty()).then_some(model.len()));
        assert_eq!(index.bytes(), 0);
    }

    #[test]
    fn a_durable_counter_is_one_small_buffer_and_keeps_no_record() {
        let mut index = Index::default();
        let obj = [1u8; 32];
        let rec = Rc::new(RecordBuf {
            body: crate::format::encode_body(&crate::format::Body { ops: Vec::new() }),
            seg: Cell::new(SEG_PENDING),
            body_off: Cell::new(0),
            dead_bytes: Cell::new(0),
            put_bytes: 0,
            has_large: false,
            tombstones: 0,
        });
        // Three small values, the way a counter's record holds them (the record's body here is
        // an empty batch; the values are plain, as loaded), then one pending in a record.
        for (k, v) in [
            (&b"\x01value"[..], &7u64.to_be_bytes()[..]),
            (b"\0c", b"counter"),
            (b"\0n", b"m123456"),
        ] {
            index.put(&obj, k, Loc::Mem(Value::loaded(v.to_vec(), 3)));
        }
        let Some(KeyMap::Packed(b)) = index.objects.get(&IdKey(obj)) else {
            panic!("durable small values are packed")
        };
        assert_eq!(b.len(), 3 * 6 + 6 + 8 + 2 + 7 + 2 + 7);
        assert_eq!(index.bytes(), OBJECT_SLOT_BYTES + alloc_bytes(b.len()));
        assert!(index.bytes() < 200, "{} bytes for a counter", index.bytes());
        let bytes = |l: Option<Loc>| match l {
            Some(Loc::Mem(v)) => Some(v.to_vec()),
            _ => None,
        };
        assert_eq!(bytes(index.get(&obj, b"\0c")), Some(b"counter".to_vec()));

        // A write not yet durable lives in its record; the map unpacks until it is written.
        let pending = Value::in_record(rec.clone(), 0..0);
        index.put(&obj, b"\x01value", Loc::Mem(pending));
        assert!(matches!(
            index.objects.get(&IdKey(obj)),
            Some(KeyMap::Small(_))
        ));
        assert_eq!(Rc::strong_count(&rec), 2);
        rec.seg.set(4);
        index.repack(&obj);
        assert!(matches!(
            index.objects.get(&IdKey(obj)),
            Some(KeyMap::Packed(_))
        ));
        assert_eq!(Rc::strong_count(&rec), 1, "the record is no longer held");
        assert_eq!(index.seg_of(&obj, b"\x01value"), Some(4));
        assert_eq!(bytes(index.get(&obj, b"\x01value")), Some(Vec::new()));
        let want = OBJECT_SLOT_BYTES + index.objects[&IdKey(obj)].heap_bytes();
        assert_eq!(index.bytes(), want);
    }

    #[test]
    fn key_map_sizes() {
        assert_eq!(std::mem::size_of::<(Key, Loc)>(), 64);
        assert_eq!(
            std::mem::size_of::<KeyMap>(),
            24,
            "an object's slot is 56 bytes"
        );
    }
}
