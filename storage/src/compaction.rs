//! Background compaction: reclaim a sealed segment by rewriting its live entries at the head.
//!
//! Policy: after each durable group, if dead bytes exceed `compaction_dead_ratio_min` of all
//! bytes written, pick the sealed segment with the largest share of dead bytes among those
//! allowed (below), rewrite its live entries through the ordinary commit path,
//! `compaction_step_bytes` per group (waiting for each to be durable, so a foreground commit
//! never queues behind more than one step), delete the file, then write a checkpoint so that a
//! restart scans only the log after it.
//!
//! Which segments may go: a delete tombstone in segment `s` must outlive every older segment
//! that may hold a put of the same key, or recovery would resurrect the key. So a segment
//! holding tombstones is compacted only once it is the oldest (no older segment exists, so its
//! tombstones can simply be dropped); a segment without tombstones may go at any time. Removing
//! a segment from the middle leaves a gap in segment numbers, across which recovery accepts a
//! jump in sequence numbers (`recovery::SegScan::check_continues`).

use std::rc::{Rc, Weak};

use crate::format::{OP_PUT, Op};
use crate::index::entry_bytes;
use crate::store::internal;

pub(crate) async fn compaction_loop(weak: Weak<crate::store::InnerHandle>) {
    loop {
        {
            let Some(inner) = weak.upgrade() else { return };
            internal::wait_for_work(&inner).await;
        }
        let Some(inner) = weak.upgrade() else { return };
        if internal::is_stopped(&inner) {
            return;
        }
        while let Some(seg) = internal::pick_victim(&inner) {
            if compact_segment(&inner, seg).await.is_err() {
                return;
            }
        }
    }
}

/// Rewrites every live entry of `seg`, then deletes it. Errors stop compaction (the commit loop
/// has already made the store read-only if the disk failed).
async fn compact_segment(inner: &Rc<crate::store::InnerHandle>, seg: u32) -> Result<(), ()> {
    let step = internal::step_bytes(inner);
    let entries = internal::entries_in(inner, seg);
    let mut since_sync = 0u64;
    for (obj, key, loc) in entries {
        let value = inner.load(loc).await.map_err(|_| ())?;
        // The load may have suspended: the key may have been overwritten meanwhile.
        if !internal::still_at(inner, &obj, &key, seg) || internal::is_stopped(inner) {
            continue;
        }
        since_sync += entry_bytes(key.len(), value.len());
        let ticket = inner.mutate(vec![Op {
            obj,
            code: OP_PUT,
            key,
            value: value.to_vec(),
        }]);
        if since_sync >= step {
            since_sync = 0;
            ticket.durable().await.map_err(|_| ())?;
        }
    }
    inner.last_ticket().durable().await.map_err(|_| ())?;
    if !internal::entries_in(inner, seg).is_empty() {
        // Something moved back in meanwhile (cannot happen to a sealed segment); try later.
        return Err(());
    }
    internal::remove_segment(inner, seg).await.map_err(|_| ())?;
    // So that a restart after compaction scans only the log written from here on. A failure is
    // not fatal: without a checkpoint the next open scans everything, which is always correct.
    if !internal::is_stopped(inner) {
        let _ = internal::checkpoint_now(inner).await;
    }
    Ok(())
}
