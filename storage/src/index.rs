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

/// One object's keys in order, mapped to their locations.
///
/// Most objects hold a handful of keys (a counter: its value and the engine's two meta keys).
/// A `BTreeMap` allocates a whole leaf node (11 slots of key and location, about 720 bytes)
/// for even one key, which at a million objects was most of the index's memory; a sorted
/// `Vec` sized exactly holds them in 64 bytes a key. Past `SMALL_KEYS_MAX` keys the map
/// becomes a `BTreeMap`, so inserts into large objects stay logarithmic.
#[derive(Debug)]
pub(crate) enum KeyMap {
    /// Sorted by key, no duplicates, at most `SMALL_KEYS_MAX` entries, capacity = length.
    Small(Vec<(Key, Loc)>),
    /// More keys.
    Large(BTreeMap<Key, Loc>),
}

impl Default for KeyMap {
    fn default() -> Self {
        KeyMap::Small(Vec::new())
    }
}

impl KeyMap {
    pub(crate) fn get(&self, key: &[u8]) -> Option<&Loc> {
        match self {
            KeyMap::Small(v) => v
                .binary_search_by(|(k, _)| (**k).cmp(key))
                .ok()
                .map(|i| &v[i].1),
            KeyMap::Large(m) => m.get(key),
        }
    }

    pub(crate) fn get_mut(&mut self, key: &[u8]) -> Option<&mut Loc> {
        match self {
            KeyMap::Small(v) => match v.binary_search_by(|(k, _)| (**k).cmp(key)) {
                Ok(i) => Some(&mut v[i].1),
                Err(_) => None,
            },
            KeyMap::Large(m) => m.get_mut(key),
        }
    }

    /// Sets a key, returning the location it replaces.
    pub(crate) fn insert(&mut self, key: &[u8], loc: Loc) -> Option<Loc> {
        match self {
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
                    *self = KeyMap::Large(m);
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
        }
    }

    pub(crate) fn remove(&mut self, key: &[u8]) -> Option<Loc> {
        match self {
            KeyMap::Small(v) => {
                let i = v.binary_search_by(|(k, _)| (**k).cmp(key)).ok()?;
                let (_, loc) = v.remove(i);
                v.shrink_to_fit();
                Some(loc)
            }
            KeyMap::Large(m) => m.remove(key),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        match self {
            KeyMap::Small(v) => v.is_empty(),
            KeyMap::Large(m) => m.is_empty(),
        }
    }

    /// Entries in key order.
    pub(crate) fn iter(&self) -> Iter<'_> {
        self.range((Bound::Unbounded, Bound::Unbounded))
    }

    /// Entries with keys inside `bounds`, in key order. An inverted range is empty (where
    /// `BTreeMap::range` would panic, callers answer it first).
    pub(crate) fn range(&self, bounds: (Bound<&[u8]>, Bound<&[u8]>)) -> Iter<'_> {
        match self {
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
    fn into_iter(self) -> Self::IntoIter {
        match self {
            KeyMap::Small(v) => v.into_iter(),
            KeyMap::Large(m) => m.into_iter().collect::<Vec<_>>().into_iter(),
        }
    }
}

/// An iterator over a [`KeyMap`]'s entries.
pub(crate) enum Iter<'a> {
    Small(std::slice::Iter<'a, (Key, Loc)>),
    Large(std::collections::btree_map::Range<'a, Key, Loc>),
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a Key, &'a Loc);
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Small(i) => i.next().map(|(k, l)| (k, l)),
            Iter::Large(i) => i.next(),
        }
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Small(i) => i.next_back().map(|(k, l)| (k, l)),
            Iter::Large(i) => i.next_back(),
        }
    }
}

/// Per-object ordered maps.
#[derive(Default, Debug)]
pub(crate) struct Index {
    pub(crate) objects: BTreeMap<ObjectId, KeyMap>,
}

impl Index {
    pub(crate) fn get(&self, obj: &ObjectId, key: &[u8]) -> Option<&Loc> {
        self.objects.get(obj)?.get(key)
    }

    /// Sets a key, returning the location it replaces.
    pub(crate) fn put(&mut self, obj: &ObjectId, key: &[u8], loc: Loc) -> Option<Loc> {
        self.objects.entry(*obj).or_default().insert(key, loc)
    }

    pub(crate) fn delete(&mut self, obj: &ObjectId, key: &[u8]) -> Option<Loc> {
        let map = self.objects.get_mut(obj)?;
        let old = map.remove(key);
        if map.is_empty() {
            self.objects.remove(obj);
        }
        old
    }

    pub(crate) fn delete_all(&mut self, obj: &ObjectId) -> Option<KeyMap> {
        self.objects.remove(obj)
    }

    pub(crate) fn objects_after(&self, after: Option<&ObjectId>, limit: usize) -> Vec<ObjectId> {
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.objects
            .range::<ObjectId, _>((lower, Bound::Unbounded))
            .take(limit)
            .map(|(k, _)| *k)
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
    fn key_map_matches_a_btree_map_small_and_large() {
        // A small deterministic generator; keys from a small alphabet so puts overwrite,
        // deletes hit, and maps cross SMALL_KEYS_MAX both ways.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let loc = |n: u64| Loc::Disk {
            seg: n as u32,
            off: n,
            len: 1,
        };
        let seg = |l: Option<&Loc>| l.map(Loc::seg);
        let mut ours = KeyMap::default();
        let mut model: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
        for step in 0..4000u64 {
            let key = vec![b'a' + (next() % 40) as u8; 1 + (next() % 3) as usize];
            if next() % 3 == 0 {
                assert_eq!(
                    seg(ours.remove(&key).as_ref()),
                    model.remove(&key).map(|n| n as u32)
                );
            } else {
                let old = model.insert(key.clone(), step);
                assert_eq!(
                    seg(ours.insert(&key, loc(step)).as_ref()),
                    old.map(|n| n as u32)
                );
            }
            assert_eq!(seg(ours.get(&key)), model.get(&key).map(|n| *n as u32));
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
                let got: Vec<Vec<u8>> = ours.range(bd).rev().map(|(k, _)| k.to_vec()).collect();
                let want: Vec<Vec<u8>> = model
                    .range::<[u8], _>(bd)
                    .rev()
                    .map(|(k, _)| k.clone())
                    .collect();
                assert_eq!(got, want, "step {step} {bd:?}");
            }
        }
        let all: Vec<Vec<u8>> = ours.into_iter().map(|(k, _)| k.to_vec()).collect();
        assert_eq!(all, model.keys().cloned().collect::<Vec<_>>());
    }

    #[test]
    fn a_small_object_costs_its_entries_not_a_tree_node() {
        let mut m = KeyMap::default();
        for k in [&b"v"[..], b"\0meta:class", b"\0meta:name"] {
            m.insert(
                k,
                Loc::Disk {
                    seg: 0,
                    off: 0,
                    len: 0,
                },
            );
        }
        let KeyMap::Small(v) = &m else {
            panic!("three keys stay small")
        };
        assert_eq!(v.capacity(), 3, "sized exactly");
        assert_eq!(std::mem::size_of::<(Key, Loc)>(), 64);
    }
}
