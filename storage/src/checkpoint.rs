//! The checkpoint (hint file): a snapshot of the index written after each compaction and at
//! clean shutdown, so that the next open loads it and scans only the log written after it.
//!
//! Byte layout 2 (little-endian, `docs/STORAGE-FORMAT.md`): magic `CAIRNCP2`, version u32,
//! crc u32 (CRC32C of everything after it), tail segment u32, tail offset u64, next seq u64,
//! segment count u32 and per segment (id u32, written u64, live u64, tombstones u64), entry
//! count u64 and per entry: object id (32), key length u32, key, tag u8, then tag 0: segment
//! u32, value length u32 and value, tag 1: segment u32, offset u64, length u32.
//!
//! A checkpoint is trusted only whole: any mismatch makes the open fall back to a full scan,
//! which is always correct. It is deleted as soon as it has been loaded, because compaction
//! may later remove segments it refers to.

use crate::format::FORMAT_VERSION;
use crate::index::{Loc, ObjectId, Value};

pub(crate) const CHECKPOINT_NAME: &str = "CHECKPOINT";
/// Layout 2 (segment tombstone counts, the segment of in-memory values): a layout-1 file fails
/// the magic check and is ignored, which only costs a full scan.
const MAGIC: [u8; 8] = *b"CAIRNCP2";

/// What a checkpoint holds.
pub(crate) struct Checkpoint {
    pub(crate) tail_seg: u32,
    pub(crate) tail_off: u64,
    pub(crate) next_seq: u64,
    /// `(segment id, bytes written, live bytes, tombstones)`.
    pub(crate) segs: Vec<(u32, u64, u64, u64)>,
    pub(crate) entries: Vec<(ObjectId, Vec<u8>, Loc)>,
}

pub(crate) fn encode(c: &Checkpoint) -> Vec<u8> {
    let mut b = Vec::with_capacity(64 + c.entries.len() * 64);
    b.extend_from_slice(&MAGIC);
    b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&c.tail_seg.to_le_bytes());
    b.extend_from_slice(&c.tail_off.to_le_bytes());
    b.extend_from_slice(&c.next_seq.to_le_bytes());
    b.extend_from_slice(&(c.segs.len() as u32).to_le_bytes());
    for (id, written, live, tombstones) in &c.segs {
        b.extend_from_slice(&id.to_le_bytes());
        b.extend_from_slice(&written.to_le_bytes());
        b.extend_from_slice(&live.to_le_bytes());
        b.extend_from_slice(&tombstones.to_le_bytes());
    }
    b.extend_from_slice(&(c.entries.len() as u64).to_le_bytes());
    for (obj, key, loc) in &c.entries {
        b.extend_from_slice(obj);
        b.extend_from_slice(&(key.len() as u32).to_le_bytes());
        b.extend_from_slice(key);
        match loc {
            Loc::Mem(v) => {
                b.push(0);
                b.extend_from_slice(&v.seg().to_le_bytes());
                b.extend_from_slice(&(v.len() as u32).to_le_bytes());
                b.extend_from_slice(v);
            }
            Loc::Disk { seg, off, len } => {
                b.push(1);
                b.extend_from_slice(&seg.to_le_bytes());
                b.extend_from_slice(&off.to_le_bytes());
                b.extend_from_slice(&len.to_le_bytes());
            }
        }
    }
    let crc = crc32c::crc32c(&b[16..]);
    b[12..16].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Decodes a checkpoint; `None` if anything is off. Never panics on any input.
pub(crate) fn decode(b: &[u8]) -> Option<Checkpoint> {
    let mut r = Reader { b, at: 0 };
    if r.take(8)? != MAGIC || r.u32()? != FORMAT_VERSION {
        return None;
    }
    let crc = r.u32()?;
    if crc != crc32c::crc32c(&b[16..]) {
        return None;
    }
    let tail_seg = r.u32()?;
    let tail_off = r.u64()?;
    let next_seq = r.u64()?;
    let nsegs = r.u32()?;
    let mut segs = Vec::new();
    for _ in 0..nsegs {
        segs.push((r.u32()?, r.u64()?, r.u64()?, r.u64()?));
    }
    let n = r.u64()?;
    let mut entries = Vec::new();
    for _ in 0..n {
        let obj: ObjectId = r.take(32)?.try_into().ok()?;
        let klen = r.u32()? as usize;
        let key = r.take(klen)?.to_vec();
        let loc = match r.take(1)?[0] {
            0 => {
                let seg = r.u32()?;
                let vlen = r.u32()? as usize;
                Loc::Mem(Value::loaded(r.take(vlen)?.to_vec(), seg))
            }
            1 => Loc::Disk {
                seg: r.u32()?,
                off: r.u64()?,
                len: r.u32()?,
            },
            _ => return None,
        };
        entries.push((obj, key, loc));
    }
    (r.at == b.len()).then_some(Checkpoint {
        tail_seg,
        tail_off,
        next_seq,
        segs,
        entries,
    })
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.b.get(self.at..end)?;
        self.at = end;
        Some(s)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_round_trips_and_any_truncation_or_flip_is_rejected() {
        let c = Checkpoint {
            tail_seg: 3,
            tail_off: 8192,
            next_seq: 77,
            segs: vec![(2, 100, 50, 0), (3, 8192, 10, 4)],
            entries: vec![
                (
                    [1; 32],
                    b"k".to_vec(),
                    Loc::Mem(Value::loaded(b"v".to_vec(), 2)),
                ),
                (
                    [2; 32],
                    b"big".to_vec(),
                    Loc::Disk {
                        seg: 2,
                        off: 4128,
                        len: 9000,
                    },
                ),
            ],
        };
        let b = encode(&c);
        let d = decode(&b).unwrap();
        assert_eq!(
            (d.tail_seg, d.tail_off, d.next_seq, d.segs.clone()),
            (3, 8192, 77, c.segs.clone())
        );
        assert_eq!(d.entries.len(), 2);
        for cut in 0..b.len() {
            assert!(decode(&b[..cut]).is_none(), "cut {cut}");
        }
        for i in 0..b.len() {
            let mut f = b.clone();
            f[i] ^= 4;
            assert!(decode(&f).is_none(), "flip at {i}");
        }
    }
}
