//! Tests of the object runtime: gates, panics, eviction, alarms and the storage API.

use std::cell::{Cell, RefCell};
use std::error::Error;
use std::rc::Rc;

use super::*;
use crate::id::id_from_name;
use crate::object::LocalFuture;
use crate::store::{CommitVerdicts, ImmediateCommits, ListOptions, ScriptedCommits, StoreOptions};
use crate::testing::{run_local, settle};

/// A test class whose behaviour is chosen by the request path.
#[derive(Default)]
struct Probe {
    hits: u64,
}

fn num(v: Option<bytes::Bytes>) -> u64 {
    v.and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok())
        .unwrap_or(0)
}

fn text(status: u16, s: impl ToString) -> Response {
    Response::new(status, s.to_string())
}

impl Object for Probe {
    fn fetch<'a>(&'a mut self, ctx: &'a Context, req: Request) -> LocalFuture<'a, Response> {
        Box::pin(async move {
            self.hits += 1;
            let st = ctx.storage();
            match req.path.as_str() {
                "/incr" => {
                    let n = num(st.get(b"n").await.unwrap());
                    // Suspend between read and write: the input gate must keep
                    // other events of this object out of this window.
                    for _ in 0..3 {
                        glommio::executor().yield_task_queue_now().await;
                    }
                    st.put(b"n", (n + 1).to_string().as_bytes()).unwrap();
                    text(200, n + 1)
                }
                "/get" => text(200, num(st.get(b"n").await.unwrap())),
                "/peek" => {
                    ctx.allow_unconfirmed();
                    text(200, num(st.get(b"n").await.unwrap()))
                }
                "/hits" => text(200, self.hits),
                "/block" => {
                    // `?fail=1` fails the work, `?sleep_ms=N` sleeps in it, and
                    // `?limit_ms=N` bounds it (default 50).
                    let fail = req.query_param("fail").is_some();
                    let sleep = num(req.query_param("sleep_ms").map(bytes::Bytes::from));
                    let limit = match num(req.query_param("limit_ms").map(bytes::Bytes::from)) {
                        0 => 50,
                        n => n,
                    };
                    let r = ctx
                        .block_concurrency_while(std::time::Duration::from_millis(limit), async {
                            glommio::timer::sleep(std::time::Duration::from_millis(sleep)).await;
                            if fail { Err("asked to fail") } else { Ok(7) }
                        })
                        .await;
                    match r {
                        Ok(v) => text(200, v),
                        Err(e) => text(500, e),
                    }
                }
                "/panic" => panic!("probe asked to panic"),
                "/set-alarm" => {
                    let at = num(req.query_param("at").map(bytes::Bytes::from));
                    ctx.set_alarm(at).unwrap();
                    text(200, "ok")
                }
                "/alarm" => text(200, format!("{:?}", ctx.get_alarm().await.unwrap())),
                "/clear" => {
                    st.delete_all().unwrap();
                    text(200, "ok")
                }
                "/call" => {
                    let other = req.query_param("name").unwrap();
                    let r = ctx
                        .stub("probe", &other)
                        .fetch(Request::new("POST", "/incr"))
                        .await;
                    text(200, format!("other={}", String::from_utf8_lossy(&r.body)))
                }
                _ => text(404, "no such probe route"),
            }
        })
    }

    fn alarm<'a>(&'a mut self, ctx: &'a Context) -> LocalFuture<'a, Result<(), Box<dyn Error>>> {
        Box::pin(async move {
            let st = ctx.storage();
            let runs = num(st.get(b"alarm_runs").await?) + 1;
            st.put(b"alarm_runs", runs.to_string().as_bytes())?;
            if runs <= num(st.get(b"fail_first").await?) {
                return Err("probe alarm failing on purpose".into());
            }
            Ok(())
        })
    }

    fn memory_bytes(&self) -> usize {
        1000
    }
}

/// A class that loads its state in `init`, which fails while the stored
/// `fail_inits` count is above the inits run so far, and sleeps `init_sleep_ms`.
#[derive(Default)]
struct Loaded {
    n: Option<u64>,
}

impl Object for Loaded {
    fn init<'a>(&'a mut self, ctx: &'a Context) -> LocalFuture<'a, Result<(), Box<dyn Error>>> {
        Box::pin(async move {
            let st = ctx.storage();
            let runs = num(st.get(b"init_runs").await?) + 1;
            st.put(b"init_runs", runs.to_string().as_bytes())?;
            let sleep = num(st.get(b"init_sleep_ms").await?);
            if sleep > 0 {
                glommio::timer::sleep(std::time::Duration::from_millis(sleep)).await;
            }
            if runs <= num(st.get(b"panic_inits").await?) {
                panic!("init panicking on purpose");
            }
            if runs <= num(st.get(b"fail_inits").await?) {
                return Err("init failing on purpose".into());
            }
            self.n = Some(num(st.get(b"n").await?));
            Ok(())
        })
    }

    fn fetch<'a>(&'a mut self, ctx: &'a Context, req: Request) -> LocalFuture<'a, Response> {
        Box::pin(async move {
            let st = ctx.storage();
            match req.path.as_str() {
                "/n" => match self.n {
                    Some(n) => text(200, n),
                    None => text(500, "fetch before init"),
                },
                "/runs" => text(200, num(st.get(b"init_runs").await.unwrap())),
                "/set" => {
                    for k in ["fail_inits", "panic_inits", "init_sleep_ms", "n"] {
                        if let Some(v) = req.query_param(k) {
                            st.put(k.as_bytes(), &v).unwrap();
                        }
                    }
                    text(200, "ok")
                }
                _ => text(404, "no such route"),
            }
        })
    }
}

fn classes() -> Classes {
    let mut c = Classes::new();
    c.register("probe", Probe::default);
    c.register("loaded", Loaded::default);
    c
}

fn loaded(name: &str) -> Target {
    Target {
        class: "loaded".into(),
        id: id_from_name("loaded", name.as_bytes()),
        name: Some(name.into()),
    }
}

async fn call_loaded(host: &ObjectHost, name: &str, path: &str) -> (u16, String) {
    let r = host.call(loaded(name), Request::new("GET", path)).await;
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

fn target(name: &str) -> Target {
    Target {
        class: "probe".into(),
        id: id_from_name("probe", name.as_bytes()),
        name: Some(name.into()),
    }
}

struct Rig {
    host: ObjectHost,
    now: Rc<Cell<u64>>,
    verdicts: Option<CommitVerdicts>,
}

async fn rig_with(cfg: HostConfig, scripted: bool) -> Rig {
    let (path, verdicts): (Rc<dyn crate::store::CommitPath>, _) = if scripted {
        let (p, v) = ScriptedCommits::new();
        (Rc::new(p), Some(v))
    } else {
        (Rc::new(ImmediateCommits), None)
    };
    let store = Store::open(StoreOptions::default(), path).await.unwrap();
    let now = Rc::new(Cell::new(1_000_000));
    let clock_now = now.clone();
    let host = ObjectHost::new(cfg, classes(), store, Rc::new(move || clock_now.get()));
    Rig {
        host,
        now,
        verdicts,
    }
}

async fn rig() -> Rig {
    rig_with(HostConfig::default(), false).await
}

/// Dispatches a request whose response lands in the returned cell.
fn send(host: &ObjectHost, name: &str, method: &str, path: &str) -> Rc<RefCell<Option<Response>>> {
    let slot = Rc::new(RefCell::new(None));
    let s = slot.clone();
    host.dispatch(
        target(name),
        Request::new(method, path),
        Box::new(move |r| *s.borrow_mut() = Some(r)),
    );
    slot
}

fn body(slot: &Rc<RefCell<Option<Response>>>) -> Option<String> {
    slot.borrow()
        .as_ref()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
}

async fn call(host: &ObjectHost, name: &str, method: &str, path: &str) -> (u16, String) {
    let r = host.call(target(name), Request::new(method, path)).await;
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

#[test]
fn input_gate_delivers_events_in_arrival_order() {
    run_local(async {
        let r = rig().await;
        let slots: Vec<_> = (0..10)
            .map(|_| send(&r.host, "a", "POST", "/incr"))
            .collect();
        settle().await;
        let got: Vec<_> = slots.iter().map(|s| body(s).unwrap()).collect();
        let expected: Vec<_> = (1..=10).map(|n| n.to_string()).collect();
        assert_eq!(
            got, expected,
            "each increment saw the previous one: no interleaving"
        );
    });
}

#[test]
fn init_runs_once_before_the_first_event_of_each_instance() {
    run_local(async {
        let r = rig().await;
        assert_eq!(call_loaded(&r.host, "x", "/set?n=41").await.1, "ok");
        // The instance that served /set was initialised before n was stored.
        assert_eq!(call_loaded(&r.host, "x", "/n").await, (200, "0".into()));
        assert_eq!(call_loaded(&r.host, "x", "/runs").await.1, "1");
        r.now.set(r.now.get() + r.host.config().idle_ms_evict);
        assert_eq!(r.host.evict(r.now.get()), 1);
        assert_eq!(call_loaded(&r.host, "x", "/n").await, (200, "41".into()));
        assert_eq!(call_loaded(&r.host, "x", "/runs").await.1, "2");
    });
}

#[test]
fn a_failed_init_fails_its_event_resets_the_object_and_is_retried() {
    run_local(async {
        let r = rig().await;
        call_loaded(&r.host, "x", "/set?fail_inits=3&n=5").await;
        r.now.set(r.now.get() + r.host.config().idle_ms_evict);
        r.host.evict(r.now.get());
        // Inits 2 and 3 fail (the first succeeded before fail_inits was set).
        for _ in 0..2 {
            let (status, body) = call_loaded(&r.host, "x", "/n").await;
            assert_eq!(status, 503, "{body}");
            assert!(body.contains("init_failed"), "{body}");
        }
        assert_eq!(r.host.metrics().init_failures, 2);
        assert_eq!(call_loaded(&r.host, "x", "/n").await, (200, "5".into()));
        assert_eq!(call_loaded(&r.host, "x", "/runs").await.1, "4");
    });
}

#[test]
fn an_init_past_its_timeout_is_abandoned_and_the_object_reset() {
    run_local(async {
        let cfg = HostConfig {
            init_timeout_ms: 30,
            ..HostConfig::default()
        };
        let r = rig_with(cfg, false).await;
        call_loaded(&r.host, "x", "/set?init_sleep_ms=5000&n=9").await;
        r.now.set(r.now.get() + r.host.config().idle_ms_evict);
        r.host.evict(r.now.get());
        let t0 = std::time::Instant::now();
        let (status, body) = call_loaded(&r.host, "x", "/n").await;
        assert_eq!(status, 503, "{body}");
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            t0.elapsed()
        );
        assert_eq!(r.host.metrics().init_failures, 1);
    });
}

#[test]
fn block_concurrency_while_returns_the_work_and_resets_the_object_when_it_fails() {
    run_local(async {
        let r = rig().await;
        assert_eq!(call(&r.host, "a", "GET", "/block").await, (200, "7".into()));
        assert_eq!(call(&r.host, "a", "GET", "/hits").await.1, "2", "no reset");
        let (status, msg) = call(&r.host, "a", "GET", "/block?fail=1").await;
        assert_eq!((status, msg.as_str()), (500, "asked to fail"));
        assert_eq!(
            call(&r.host, "a", "GET", "/hits").await.1,
            "1",
            "a fresh instance"
        );
        let (status, msg) = call(&r.host, "a", "GET", "/block?sleep_ms=5000").await;
        assert_eq!((status, msg.as_str()), (500, "timed out after 50 ms"));
        assert_eq!(
            call(&r.host, "a", "GET", "/hits").await.1,
            "1",
            "reset again"
        );
        // Other objects' events run while one blocks (only its own gate is held).
        let slow = send(&r.host, "a", "GET", "/block?sleep_ms=300&limit_ms=600000");
        assert_eq!(call(&r.host, "b", "GET", "/hits").await.1, "1");
        assert_eq!(body(&slow), None);
        assert_eq!(answered(&slow).await, "7");
    });
}

/// The body of `slot`'s response once it comes (within 30 s).
async fn answered(slot: &Rc<RefCell<Option<Response>>>) -> String {
    for _ in 0..3000 {
        if let Some(b) = body(slot) {
            return b;
        }
        glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("no response within 30 s");
}

async fn init_runs(r: &Rig) -> u64 {
    let mut k = vec![crate::context::NS_USER];
    k.extend_from_slice(b"init_runs");
    let v = r
        .host
        .store()
        .get(loaded("x").id.as_bytes(), &k)
        .await
        .unwrap();
    num(v.map(|v| bytes::Bytes::copy_from_slice(&v[..])))
}

#[test]
fn a_panicking_init_fails_its_event_and_the_next_event_tries_again() {
    run_local(async {
        let r = rig().await;
        call_loaded(&r.host, "x", "/set?panic_inits=2&n=3").await;
        r.now.set(r.now.get() + r.host.config().idle_ms_evict);
        r.host.evict(r.now.get());
        let (status, msg) = call_loaded(&r.host, "x", "/n").await;
        assert_eq!(status, 503, "{msg}");
        assert!(msg.contains("init_failed"), "{msg}");
        let m = r.host.metrics();
        assert_eq!((m.panics, m.init_failures), (1, 1));
        assert_eq!(call_loaded(&r.host, "x", "/n").await, (200, "3".into()));
    });
}

#[test]
fn events_queued_behind_a_failed_init_fail_with_it_without_running_init_again() {
    run_local(async {
        let r = rig().await;
        call_loaded(&r.host, "x", "/set?fail_inits=1000").await;
        r.now.set(r.now.get() + r.host.config().idle_ms_evict);
        r.host.evict(r.now.get());
        let runs_before = init_runs(&r).await;
        let slots: Vec<_> = (0..5)
            .map(|_| {
                let slot = Rc::new(RefCell::new(None));
                let s = slot.clone();
                r.host.dispatch(
                    loaded("x"),
                    Request::new("GET", "/n"),
                    Box::new(move |resp| *s.borrow_mut() = Some(resp)),
                );
                slot
            })
            .collect();
        settle().await;
        for s in &slots {
            assert!(body(s).unwrap().contains("init_failed"));
        }
        let runs = init_runs(&r).await;
        assert_eq!(
            runs,
            runs_before + 1,
            "one init for the five queued requests"
        );
        assert_eq!(r.host.metrics().init_failures, 1);
        // A request after the run tries init again.
        assert_eq!(call_loaded(&r.host, "x", "/n").await.0, 503);
        let runs = init_runs(&r).await;
        assert_eq!(runs, runs_before + 2);
    });
}

#[test]
fn a_failed_init_makes_an_alarm_attempt_fail_and_retry() {
    run_local(async {
        let r = rig().await;
        let at = r.now.get();
        // An alarm set through a probe-less path: store it, then fail inits.
        let st = r.host.store().clone();
        let id = loaded("x").id;
        let mut key = vec![crate::context::NS_USER];
        key.extend_from_slice(b"fail_inits");
        st.put(id.as_bytes(), &key, b"2").unwrap();
        st.put(id.as_bytes(), crate::context::META_ALARM, &at.to_be_bytes())
            .unwrap();
        st.put(id.as_bytes(), crate::context::META_CLASS, b"loaded")
            .unwrap();
        r.host.recover_alarms().await;
        assert_eq!(r.host.fire_due_alarms(at), 1);
        settle().await;
        let m = r.host.metrics();
        assert_eq!((m.alarms_failed, m.init_failures), (1, 1));
        let base = r.host.config().alarm_backoff_ms_base;
        assert_eq!(
            r.host.next_alarm_ms(),
            Some(at + base),
            "retried with backoff"
        );
    });
}

#[test]
fn input_gate_refuses_events_past_the_queue_limit() {
    run_local(async {
        let cfg = HostConfig {
            object_queue_depth_max: 3,
            ..HostConfig::default()
        };
        let r = rig_with(cfg, false).await;
        // Without a suspension in between the runner cannot drain the queue.
        let slots: Vec<_> = (0..4).map(|_| send(&r.host, "a", "GET", "/get")).collect();
        let refused = slots[3]
            .borrow()
            .clone()
            .expect("the fourth is refused at once");
        assert_eq!(refused.status, 503);
        assert!(body(&slots[3]).unwrap().contains("\"overloaded\""));
        settle().await;
        assert!(
            slots[..3]
                .iter()
                .all(|s| s.borrow().as_ref().unwrap().status == 200),
            "three fit"
        );
        assert_eq!(r.host.metrics().overloaded, 1);
    });
}

#[test]
fn output_gate_holds_response_until_fdatasync() {
    run_local(async {
        let r = rig_with(HostConfig::default(), true).await;
        let v = r.verdicts.as_ref().unwrap();
        let slot = send(&r.host, "a", "POST", "/incr");
        settle().await;
        assert_eq!(v.started(), 1, "the write is being committed");
        assert_eq!(body(&slot), None, "held while the commit is in flight");
        v.release();
        settle().await;
        assert_eq!(body(&slot).as_deref(), Some("1"));
    });
}

#[test]
fn held_responses_leave_group_by_group_and_none_early() {
    run_local(async {
        let r = rig_with(HostConfig::default(), true).await;
        let v = r.verdicts.as_ref().unwrap();
        let a = send(&r.host, "a", "POST", "/incr");
        settle().await;
        assert_eq!(v.started(), 1, "a's write is being committed");
        // b's write joins the next group; then c reads a's value behind a's
        // write, held after b's response though its group is older.
        let b = send(&r.host, "b", "POST", "/incr");
        settle().await;
        let c = send(&r.host, "a", "GET", "/get");
        settle().await;
        assert_eq!((body(&a), body(&b), body(&c)), (None, None, None));
        assert_eq!(r.host.inner.held.len(), 3);
        v.release();
        settle().await;
        assert_eq!(body(&a).as_deref(), Some("1"), "a's group is durable");
        assert_eq!(body(&c).as_deref(), Some("1"), "so is the write c follows");
        assert_eq!(body(&b), None, "b's group is not");
        v.release();
        settle().await;
        assert_eq!(body(&b).as_deref(), Some("1"));
        assert_eq!(r.host.inner.held.len(), 0);
        // The queue is served again after it emptied.
        let d = send(&r.host, "d", "POST", "/incr");
        settle().await;
        assert_eq!(body(&d), None);
        v.release();
        settle().await;
        assert_eq!(body(&d).as_deref(), Some("1"));
    });
}

#[test]
fn a_failed_group_fails_its_held_responses_and_not_the_ones_before() {
    run_local(async {
        let r = rig_with(HostConfig::default(), true).await;
        let v = r.verdicts.as_ref().unwrap();
        let a = send(&r.host, "a", "POST", "/incr");
        settle().await;
        let b = send(&r.host, "b", "POST", "/incr");
        settle().await;
        v.release();
        settle().await;
        v.fail("injected write failure");
        settle().await;
        assert_eq!(body(&a).as_deref(), Some("1"));
        let b = b.borrow().clone().unwrap();
        assert_eq!(b.status, 503, "{b:?}");
        assert_eq!(r.host.inner.held.len(), 0);
    });
}

#[test]
fn failed_flush_never_releases_response() {
    run_local(async {
        let r = rig_with(HostConfig::default(), true).await;
        let slot = send(&r.host, "a", "POST", "/incr");
        settle().await;
        r.verdicts
            .as_ref()
            .unwrap()
            .fail("injected fdatasync failure");
        settle().await;
        let resp = slot.borrow().clone().unwrap();
        assert_eq!(resp.status, 503);
        assert!(
            body(&slot).unwrap().contains("storage_failed"),
            "{:?}",
            body(&slot)
        );
        assert_eq!(r.host.metrics().storage_failures, 1);
    });
}

#[test]
fn read_after_unconfirmed_write_is_held_too() {
    run_local(async {
        let r = rig_with(HostConfig::default(), true).await;
        let w = send(&r.host, "a", "POST", "/incr");
        let rd = send(&r.host, "a", "GET", "/get");
        settle().await;
        assert_eq!(
            (body(&w), body(&rd)),
            (None, None),
            "the read saw an uncommitted write"
        );
        r.verdicts.as_ref().unwrap().release();
        settle().await;
        assert_eq!(
            (body(&w).as_deref(), body(&rd).as_deref()),
            (Some("1"), Some("1"))
        );
    });
}

#[test]
fn object_handles_next_event_while_previous_write_commits() {
    run_local(async {
        let r = rig_with(HostConfig::default(), true).await;
        let w = send(&r.host, "a", "POST", "/incr");
        let peek = send(&r.host, "a", "GET", "/peek");
        settle().await;
        assert_eq!(body(&w), None, "the write's response waits for its commit");
        assert_eq!(
            body(&peek).as_deref(),
            Some("1"),
            "the next event ran and read the uncommitted write"
        );
        r.verdicts.as_ref().unwrap().release();
        settle().await;
        assert_eq!(body(&w).as_deref(), Some("1"));
    });
}

#[test]
fn writes_of_concurrent_events_share_one_commit() {
    run_local(async {
        let r = rig_with(HostConfig::default(), true).await;
        let v = r.verdicts.as_ref().unwrap();
        let slots: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|n| send(&r.host, n, "POST", "/incr"))
            .collect();
        settle().await;
        v.release();
        settle().await;
        assert!(slots.iter().all(|s| body(s).as_deref() == Some("1")));
        assert_eq!(
            v.started(),
            1,
            "three objects' writes went out in one group commit"
        );
    });
}

#[test]
fn panicking_handler_gets_500_with_request_id_and_object_is_reset() {
    run_local(async {
        let r = rig().await;
        assert_eq!(call(&r.host, "a", "POST", "/incr").await, (200, "1".into()));
        assert_eq!(call(&r.host, "a", "GET", "/hits").await, (200, "2".into()));
        let (status, b) = call(&r.host, "a", "GET", "/panic").await;
        assert_eq!(status, 500);
        assert!(
            b.contains("handler_panicked") && b.contains("request id 0-1"),
            "{b}"
        );
        assert_eq!(
            call(&r.host, "a", "GET", "/hits").await,
            (200, "1".into()),
            "fresh instance"
        );
        assert_eq!(
            call(&r.host, "a", "GET", "/get").await,
            (200, "1".into()),
            "storage survived"
        );
        assert_eq!(r.host.metrics().panics, 1);
    });
}

#[test]
fn unknown_class_is_404() {
    run_local(async {
        let r = rig().await;
        let t = Target {
            class: "nope".into(),
            id: id_from_name("nope", b"x"),
            name: None,
        };
        let resp = r.host.call(t, Request::new("GET", "/")).await;
        assert_eq!(resp.status, 404);
    });
}

#[test]
fn idle_objects_are_evicted_and_come_back_from_storage() {
    run_local(async {
        let r = rig().await;
        call(&r.host, "a", "POST", "/incr").await;
        assert_eq!(r.host.active_count(), 1);
        let idle = r.host.config().idle_ms_evict;
        assert_eq!(
            r.host.evict(r.now.get() + idle - 1),
            0,
            "not idle long enough"
        );
        assert_eq!(
            r.host.evict(r.now.get() + idle),
            1,
            "idle exactly the limit"
        );
        assert_eq!(r.host.active_count(), 0);
        assert_eq!(call(&r.host, "a", "GET", "/get").await, (200, "1".into()));
        assert_eq!(
            call(&r.host, "a", "GET", "/hits").await,
            (200, "2".into()),
            "a new instance"
        );
    });
}

#[test]
fn objects_with_uncommitted_writes_are_not_evicted() {
    run_local(async {
        let r = rig_with(HostConfig::default(), true).await;
        let _w = send(&r.host, "a", "POST", "/incr");
        settle().await;
        assert_eq!(r.host.evict(u64::MAX), 0);
        r.verdicts.as_ref().unwrap().release();
        settle().await;
        assert_eq!(r.host.evict(u64::MAX), 1);
    });
}

#[test]
fn memory_budget_evicts_least_recently_used_first() {
    run_local(async {
        // Probe reports 1000 bytes; no overhead; room for two objects, each
        // charged what one object is charged (its footprint plus 1000).
        let probe = rig_with(
            HostConfig {
                object_overhead_bytes: 0,
                ..HostConfig::default()
            },
            false,
        )
        .await;
        call(&probe.host, "a", "GET", "/get").await;
        let each = probe.host.memory_bytes();
        assert!(each > 1000, "the footprint is charged on top: {each}");
        let cfg = HostConfig {
            object_overhead_bytes: 0,
            // Room for two (each is over 1000 bytes, so a third's initial
            // charge, its footprint without the 1000 it reports, does not fit).
            // A quarter of the budget is held back (BUDGET_RESERVE_DIVISOR).
            object_memory_bytes_max: (2 * each + 100) * BUDGET_RESERVE_DIVISOR
                / (BUDGET_RESERVE_DIVISOR - 1),
            ..HostConfig::default()
        };
        let r = rig_with(cfg, false).await;
        for (i, n) in ["a", "b"].iter().enumerate() {
            r.now.set(1_000_000 + i as u64);
            call(&r.host, n, "GET", "/get").await;
        }
        assert_eq!(r.host.evict(r.now.get()), 0, "two fit");
        // The third activation takes the charge over the budget: the oldest
        // goes at once, not at the next tick.
        r.now.set(1_000_002);
        call(&r.host, "c", "GET", "/get").await;
        assert!(
            !r.host.inner.active.borrow().contains_key(&target("a").id),
            "oldest went"
        );
        assert_eq!(r.host.active_count(), 2);
        assert_eq!(r.host.evict(r.now.get()), 0, "nothing left to do");
    });
}

#[test]
fn alarm_fires_when_due_and_is_then_cleared() {
    run_local(async {
        let r = rig().await;
        let at = r.now.get() + 500;
        call(&r.host, "a", "POST", &format!("/set-alarm?at={at}")).await;
        assert_eq!(
            call(&r.host, "a", "GET", "/alarm").await.1,
            format!("Some({at})")
        );
        assert_eq!(r.host.fire_due_alarms(at - 1), 0);
        assert_eq!(r.host.fire_due_alarms(at), 1);
        settle().await;
        assert_eq!(r.host.metrics().alarms_fired, 1);
        assert_eq!(call(&r.host, "a", "GET", "/alarm").await.1, "None");
        assert_eq!(r.host.next_alarm_ms(), None);
    });
}

#[test]
fn failing_alarm_is_retried_with_exponential_backoff() {
    run_local(async {
        let r = rig().await;
        let st = r.host.store().clone();
        let id = target("a").id;
        let mut key = vec![crate::context::NS_USER];
        key.extend_from_slice(b"fail_first");
        st.put(id.as_bytes(), &key, b"2").unwrap();
        let at = r.now.get();
        call(&r.host, "a", "POST", &format!("/set-alarm?at={at}")).await;
        let base = r.host.config().alarm_backoff_ms_base;
        r.host.fire_due_alarms(at);
        settle().await;
        assert_eq!(
            r.host.next_alarm_ms(),
            Some(at + base),
            "first retry after the base delay"
        );
        r.now.set(at + base);
        r.host.fire_due_alarms(at + base);
        settle().await;
        assert_eq!(
            r.host.next_alarm_ms(),
            Some(at + base + 2 * base),
            "then twice as long"
        );
        r.now.set(at + 3 * base);
        r.host.fire_due_alarms(at + 3 * base);
        settle().await;
        let m = r.host.metrics();
        assert_eq!((m.alarms_failed, m.alarms_fired), (2, 1));
        assert_eq!(r.host.next_alarm_ms(), None);
    });
}

#[test]
fn alarm_is_abandoned_after_the_attempt_limit() {
    run_local(async {
        let r = rig().await;
        let id = target("a").id;
        let mut key = vec![crate::context::NS_USER];
        key.extend_from_slice(b"fail_first");
        r.host.store().put(id.as_bytes(), &key, b"1000").unwrap();
        call(
            &r.host,
            "a",
            "POST",
            &format!("/set-alarm?at={}", r.now.get()),
        )
        .await;
        let attempts = r.host.config().alarm_attempts_max;
        assert!(attempts >= 6, "the brief asks for at least 6 attempts");
        for _ in 0..attempts {
            let due = r.host.next_alarm_ms().expect("still scheduled");
            r.now.set(due);
            r.host.fire_due_alarms(due);
            settle().await;
        }
        let m = r.host.metrics();
        assert_eq!(
            (m.alarms_failed, m.alarms_abandoned),
            (u64::from(attempts), 1)
        );
        assert_eq!(r.host.next_alarm_ms(), None);
        assert_eq!(call(&r.host, "a", "GET", "/alarm").await.1, "None");
    });
}

#[test]
fn delete_all_also_clears_the_alarm() {
    run_local(async {
        let r = rig().await;
        call(&r.host, "a", "POST", "/set-alarm?at=5000000").await;
        call(&r.host, "a", "POST", "/clear").await;
        assert_eq!(r.host.next_alarm_ms(), None);
        assert_eq!(call(&r.host, "a", "GET", "/alarm").await.1, "None");
    });
}

#[test]
fn alarms_are_rearmed_from_storage_after_a_restart() {
    run_local(async {
        let r = rig().await;
        call(&r.host, "a", "POST", "/set-alarm?at=5000000").await;
        // A new host over the same store stands in for a restart.
        let host2 = ObjectHost::new(
            HostConfig::default(),
            classes(),
            r.host.store().clone(),
            system_clock(),
        );
        assert_eq!(host2.next_alarm_ms(), None);
        assert_eq!(host2.recover_alarms().await, 1);
        assert_eq!(host2.next_alarm_ms(), Some(5_000_000));
        host2.fire_due_alarms(5_000_000);
        settle().await;
        assert_eq!(
            host2.metrics().alarms_fired,
            1,
            "the re-created object knew its class"
        );
    });
}

#[test]
fn stubs_call_other_objects() {
    run_local(async {
        let r = rig().await;
        assert_eq!(
            call(&r.host, "a", "GET", "/call?name=b").await,
            (200, "other=1".into())
        );
        assert_eq!(call(&r.host, "b", "GET", "/get").await, (200, "1".into()));
    });
}

/// A class that exercises the storage API directly.
struct StorageUser;

impl Object for StorageUser {
    fn fetch<'a>(&'a mut self, ctx: &'a Context, req: Request) -> LocalFuture<'a, Response> {
        Box::pin(async move {
            let st = ctx.storage();
            let max = ctx.host.cfg.key_bytes_max;
            let out: String = match req.path.as_str() {
                "/limits" => {
                    let at = st.put(&vec![b'k'; max], b"v").is_ok();
                    let past = st.put(&vec![b'k'; max + 1], b"v").is_err();
                    let keys: Vec<Vec<u8>> =
                        (0..129).map(|i: u32| i.to_be_bytes().to_vec()).collect();
                    let entries: Vec<(&[u8], &[u8])> =
                        keys.iter().map(|k| (k.as_slice(), &b""[..])).collect();
                    let batch_at = st.put_many(&entries[..128]).is_ok();
                    let batch_past = st.put_many(&entries).is_err();
                    format!("{at} {past} {batch_at} {batch_past}")
                }
                "/list" => {
                    for k in ["a", "b1", "b2", "c"] {
                        st.put(k.as_bytes(), b"").unwrap();
                    }
                    ctx.set_alarm(9).unwrap();
                    let all = st.list(&ListOptions::default()).await.unwrap();
                    let rev = st
                        .list(&ListOptions {
                            reverse: true,
                            limit: Some(1),
                            ..ListOptions::default()
                        })
                        .await
                        .unwrap();
                    let pre = st
                        .list(&ListOptions {
                            prefix: Some(b"b".to_vec()),
                            ..ListOptions::default()
                        })
                        .await
                        .unwrap();
                    let show = |v: Vec<(Vec<u8>, bytes::Bytes)>| {
                        v.into_iter()
                            .map(|(k, _)| String::from_utf8(k).unwrap())
                            .collect::<Vec<_>>()
                            .join(",")
                    };
                    format!("{} | {} | {}", show(all), show(rev), show(pre))
                }
                "/txn" => {
                    st.put(b"x", b"old").unwrap();
                    let t = st.transaction();
                    t.put(b"x", b"new").unwrap();
                    let inside = t.get(b"x").await.unwrap().unwrap();
                    drop(t);
                    let after_drop = st.get(b"x").await.unwrap().unwrap();
                    let t = st.transaction();
                    t.put(b"x", b"committed").unwrap();
                    t.delete(b"y").unwrap();
                    t.commit().unwrap();
                    let after_commit = st.get(b"x").await.unwrap().unwrap();
                    let deleted = st.delete_many(&[b"x", b"zz"]).await.unwrap();
                    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                    format!(
                        "{} {} {} {deleted}",
                        s(&inside),
                        s(&after_drop),
                        s(&after_commit)
                    )
                }
                _ => String::new(),
            };
            Response::new(200, out)
        })
    }
}

fn storage_call(path: &str) -> String {
    let path = path.to_string();
    run_local(async move {
        let store = Store::open(StoreOptions::default(), Rc::new(ImmediateCommits))
            .await
            .unwrap();
        let mut c = Classes::new();
        c.register("s", || StorageUser);
        let host = ObjectHost::new(HostConfig::default(), c, store, system_clock());
        let t = Target {
            class: "s".into(),
            id: id_from_name("s", b"x"),
            name: None,
        };
        let r = host.call(t, Request::new("GET", &path)).await;
        String::from_utf8(r.body.to_vec()).unwrap()
    })
}

#[test]
fn storage_limits_hold_at_the_limit_and_refuse_one_past_it() {
    assert_eq!(storage_call("/limits"), "true true true true");
}

#[test]
fn list_sees_user_keys_only_never_engine_metadata() {
    assert_eq!(storage_call("/list"), "a,b1,b2,c | c | b1,b2");
}

#[test]
fn transactions_see_their_writes_and_apply_only_on_commit() {
    assert_eq!(storage_call("/txn"), "new old committed 1");
}

/// A host on a `cairn-storage` store (in memory, on `MemDisk`), whose index
/// is counted, with `budget` bytes per shard.
async fn host_on_storage(budget: u64, now: Rc<Cell<u64>>) -> ObjectHost {
    let disk: Rc<dyn cairn_storage::Disk> = Rc::new(cairn_storage::MemDisk::new());
    let store = Store::open_on(disk, cairn_storage::StoreOptions::default())
        .await
        .expect("open a store on MemDisk");
    let cfg = HostConfig {
        object_overhead_bytes: 0,
        object_memory_bytes_max: budget,
        ..HostConfig::default()
    };
    ObjectHost::new(cfg, classes(), store, Rc::new(move || now.get()))
}

#[test]
fn the_storage_index_takes_its_share_of_the_memory_budget_first() {
    run_local(async {
        // What one probe is charged, and what its keys cost in the index.
        let now = Rc::new(Cell::new(1_000_000));
        let probe = host_on_storage(u64::MAX / 2, now.clone()).await;
        assert_eq!(call(&probe, "x", "POST", "/incr").await.0, 200);
        let each = probe.memory_bytes();
        let index_one = probe.store().index_bytes();
        assert!(index_one > 0, "a disk store counts its index");

        // Room for four and a half objects in the itemised three quarters,
        // were there no index; then 32 objects are stored.
        let budget = (4 * each + each / 2) * BUDGET_RESERVE_DIVISOR / (BUDGET_RESERVE_DIVISOR - 1);
        let host = host_on_storage(budget, now.clone()).await;
        for i in 0..32u64 {
            now.set(1_000_000 + i);
            assert_eq!(call(&host, &format!("o{i}"), "POST", "/incr").await.0, 200);
        }
        host.evict(now.get());
        let index = host.store().index_bytes();
        assert!(index >= 32 * index_one / 2, "index {index} for 32 objects");
        let room = (budget - budget / BUDGET_RESERVE_DIVISOR).saturating_sub(index);
        assert!(
            host.active_count() as u64 <= room / each,
            "{} objects in memory, room for {} beside an index of {index} bytes",
            host.active_count(),
            room / each
        );
        assert!(host.active_count() < 4, "the index took room from objects");
        assert!(host.active_count() >= 1, "the most recent object stays");

        // A budget the index alone outgrows: every idle object goes, and
        // objects still answer (from storage).
        let tiny = host_on_storage(index_one, now.clone()).await;
        for i in 0..8u64 {
            now.set(2_000_000 + i);
            assert_eq!(call(&tiny, &format!("t{i}"), "POST", "/incr").await.0, 200);
        }
        tiny.evict(now.get());
        assert_eq!(tiny.active_count(), 0);
        assert_eq!(
            call(&tiny, "t3", "GET", "/get").await,
            (200, "1".to_string())
        );
        assert!(tiny.stats().store.index_bytes > index_one);
    });
}
