//! An object's input queue: a FIFO of events with one consumer (the object's
//! runner) that allocates only for the events it holds.
//!
//! It replaces a bounded `local_channel`, which preallocated room for
//! `object_queue_depth_max` events per active object (128 events, about
//! 14 KiB) whether or not any ever queued: at a million objects touched that
//! memory, not the objects, set the resident set. Here an idle object's queue
//! is an empty `VecDeque` (no heap), the limit is a counter check, and a queue
//! that grew under a burst gives its buffer back once it drains.
//!
//! INVARIANT: once the [`MailboxTx`] is dropped (the object is evicted), the
//! runner receives the events already queued, then `None`, and ends.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

/// Slots kept after a queue drains; a larger buffer (left by a burst) is freed.
const KEEP_SLOTS: usize = 4;

struct Shared<T> {
    events: RefCell<VecDeque<T>>,
    waker: RefCell<Option<Waker>>,
    closed: Cell<bool>,
    depth_max: usize,
}

/// The sending half, held by the object's `Active` entry; dropping it closes the queue.
pub(crate) struct MailboxTx<T>(Rc<Shared<T>>);

/// The receiving half, held by the object's runner.
pub(crate) struct MailboxRx<T>(Rc<Shared<T>>);

/// A queue refusing at most `depth_max` events queued at once.
pub(crate) fn mailbox<T>(depth_max: usize) -> (MailboxTx<T>, MailboxRx<T>) {
    let shared = Rc::new(Shared {
        events: RefCell::new(VecDeque::new()),
        waker: RefCell::new(None),
        closed: Cell::new(false),
        depth_max,
    });
    (MailboxTx(shared.clone()), MailboxRx(shared))
}

impl<T> MailboxTx<T> {
    /// Appends `ev`, or gives it back if `depth_max` events are already queued.
    pub(crate) fn try_send(&self, ev: T) -> Result<(), T> {
        let mut q = self.0.events.borrow_mut();
        if q.len() >= self.0.depth_max {
            return Err(ev);
        }
        q.push_back(ev);
        drop(q);
        if let Some(w) = self.0.waker.borrow_mut().take() {
            w.wake();
        }
        Ok(())
    }

    /// Heap bytes the queue holds now (its buffer), for the memory budget.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.0.events.borrow().capacity() * std::mem::size_of::<T>()
    }
}

impl<T> Drop for MailboxTx<T> {
    fn drop(&mut self) {
        self.0.closed.set(true);
        if let Some(w) = self.0.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

impl<T> MailboxRx<T> {
    /// Events queued now.
    pub(crate) fn len(&self) -> usize {
        self.0.events.borrow().len()
    }

    /// The next event, or `None` once the sender is gone and the queue is empty.
    pub(crate) async fn recv(&self) -> Option<T> {
        poll_fn(|cx| {
            let mut q = self.0.events.borrow_mut();
            if let Some(ev) = q.pop_front() {
                if q.is_empty() && q.capacity() > KEEP_SLOTS {
                    q.shrink_to(KEEP_SLOTS);
                }
                return Poll::Ready(Some(ev));
            }
            if self.0.closed.get() {
                return Poll::Ready(None);
            }
            *self.0.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

/// Bytes one queue costs besides its buffer: the shared block and its `Rc` counts.
pub(crate) fn fixed_bytes<T>() -> usize {
    std::mem::size_of::<Shared<T>>() + 2 * std::mem::size_of::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        let ex = glommio::LocalExecutorBuilder::default()
            .make()
            .expect("executor");
        ex.run(f)
    }

    #[test]
    fn refuses_past_the_depth_and_keeps_order() {
        block_on(async {
            let (tx, rx) = mailbox::<u32>(2);
            assert_eq!(tx.try_send(1), Ok(()));
            assert_eq!(tx.try_send(2), Ok(()));
            assert_eq!(tx.try_send(3), Err(3));
            assert_eq!(rx.recv().await, Some(1));
            assert_eq!(tx.try_send(4), Ok(()));
            assert_eq!(rx.recv().await, Some(2));
            assert_eq!(rx.recv().await, Some(4));
        });
    }

    #[test]
    fn an_idle_queue_holds_no_buffer_and_a_drained_burst_gives_it_back() {
        block_on(async {
            let (tx, rx) = mailbox::<[u8; 100]>(128);
            assert_eq!(
                tx.heap_bytes(),
                0,
                "nothing allocated before the first event"
            );
            for _ in 0..100 {
                tx.try_send([0; 100]).unwrap();
            }
            assert!(tx.heap_bytes() >= 100 * 100);
            for _ in 0..100 {
                rx.recv().await.unwrap();
            }
            assert!(tx.heap_bytes() <= KEEP_SLOTS * 100, "{}", tx.heap_bytes());
        });
    }

    #[test]
    fn dropping_the_sender_ends_the_runner_after_queued_events() {
        block_on(async {
            let (tx, rx) = mailbox::<u32>(4);
            tx.try_send(7).unwrap();
            let runner = glommio::spawn_local(async move {
                let mut got = Vec::new();
                while let Some(v) = rx.recv().await {
                    got.push(v);
                }
                got
            });
            glommio::yield_if_needed().await;
            drop(tx);
            assert_eq!(runner.await, vec![7]);
        });
    }
}
