//! Responses the output gate holds until the writes before them are durable.
//!
//! A shard keeps one queue of held responses and one task that releases
//! them, instead of a task per held response: under durable writes nearly
//! every response is held, and a task each (allocate, schedule, poll twice,
//! free) was a measurable share of a write's CPU. The task waits on the
//! front response's ticket; when it resolves, the front is released and so
//! is every response after it whose write is durable by then (commit groups
//! become durable in order, so one wake-up usually releases a whole group's
//! responses).
//!
//! INVARIANT: a response leaves the queue only once its ticket is durable
//! (then it is sent) or has failed (then the storage error is sent in its
//! place), so no response overtakes the write it follows. The order in
//! which responses leave does not matter: a connection writes its responses
//! in request order whatever order they are released in.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};
use std::task::{Poll, Waker};

use crate::host::{HostInner, Reply};
use crate::object::Response;
use crate::store::{CommitError, Ticket};

/// One held response.
struct Held {
    ticket: Ticket,
    resp: Response,
    reply: Reply,
}

/// A shard's held responses (see the module doc).
#[derive(Default)]
pub(crate) struct HeldReplies {
    queue: RefCell<VecDeque<Held>>,
    /// The release task's waker while the queue is empty.
    waker: RefCell<Option<Waker>>,
    started: Cell<bool>,
}

impl HeldReplies {
    /// Holds `resp` until `ticket` is durable, then sends it with `reply`
    /// (or the storage error, if the write failed).
    pub(crate) fn hold(host: &Rc<HostInner>, ticket: Ticket, resp: Response, reply: Reply) {
        let held = &host.held;
        held.queue.borrow_mut().push_back(Held {
            ticket,
            resp,
            reply,
        });
        if !held.started.replace(true) {
            glommio::spawn_local(release(Rc::downgrade(host))).detach();
        }
        if let Some(w) = held.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Responses held now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.queue.borrow().len()
    }
}

/// The release task: waits on the front response's ticket, then releases
/// every response at the front that is settled. Ends when the host is gone.
async fn release(host: Weak<HostInner>) {
    loop {
        let front = {
            let Some(h) = host.upgrade() else { return };
            let q = h.held.queue.borrow();
            q.front().map(|e| e.ticket.clone())
        };
        let Some(ticket) = front else {
            std::future::poll_fn(|cx| {
                let Some(h) = host.upgrade() else {
                    return Poll::Ready(());
                };
                if !h.held.queue.borrow().is_empty() {
                    return Poll::Ready(());
                }
                *h.held.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            })
            .await;
            continue;
        };
        let outcome = ticket.durable().await;
        let Some(h) = host.upgrade() else { return };
        release_settled(&h, &ticket, outcome);
    }
}

/// Sends every held response that may go: the ones whose ticket is
/// `awaited` (resolved with `outcome`) and any whose write is durable,
/// wherever they are in the queue.
fn release_settled(host: &Rc<HostInner>, awaited: &Ticket, outcome: Result<(), CommitError>) {
    let settled = |e: &Held| e.ticket.same_group(awaited) || e.ticket.is_durable();
    let ready: Vec<Held> = {
        let mut q = host.held.queue.borrow_mut();
        // Usually the settled ones are a prefix (groups become durable in
        // order and responses are held in about that order).
        let prefix = q.iter().take_while(|e| settled(e)).count();
        let mut ready: Vec<Held> = q.drain(..prefix).collect();
        if q.iter().any(settled) {
            for e in std::mem::take(&mut *q) {
                if settled(&e) {
                    ready.push(e);
                } else {
                    q.push_back(e);
                }
            }
        }
        ready
    };
    // Answered with the queue released: a reply may run code that holds
    // another response.
    for e in ready {
        match (&outcome, e.ticket.is_durable()) {
            (_, true) | (Ok(()), false) => (e.reply)(e.resp),
            (Err(err), false) => (e.reply)(host.storage_failure(err)),
        }
    }
}
