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

/// Per-object ordered maps.
#[derive(Default, Debug)]
pub(crate) struct Index {
    pub(crate) objects: BTreeMap<ObjectId, BTreeMap<Key, Loc>>,
}

impl Index {
    pub(crate) fn get(&self, obj: &ObjectId, key: &[u8]) -> Option<&Loc> {
        self.objects.get(obj)?.get(key)
    }

    /// Sets a key, returning the location it replaces.
    pub(crate) fn put(&mut self, obj: &ObjectId, key: &[u8], loc: Loc) -> Option<Loc> {
        let map = self.objects.entry(*obj).or_default();
        match map.get_mut(key) {
            Some(slot) => Some(std::mem::replace(slot, loc)),
            None => {
                map.insert(Key::new(key), loc);
                None
            }
        }
    }

    pub(crate) fn delete(&mut self, obj: &ObjectId, key: &[u8]) -> Option<Loc> {
        let map = self.objects.get_mut(obj)?;
        let old = map.remove(key);
        if map.is_empty() {
            self.objects.remove(obj);
        }
        old
    }

    pub(crate) fn delete_all(&mut self, obj: &ObjectId) -> Option<BTreeMap<Key, Loc>> {
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
}
