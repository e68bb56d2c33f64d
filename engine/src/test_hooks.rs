//! Hooks for the end-to-end tests, compiled only with the `test-hooks` cargo
//! feature (the test harness builds `cairn` with it; release builds never
//! carry it).
//!
//! - An artificial commit delay (`CAIRN_TEST_COMMIT_DELAY_MS`): every commit
//!   group's durability is reported that much later than storage reports it,
//!   so a test can see whether any response escapes the output gate early.
//! - The `testhooks` class, whose routes exercise the runtime from outside:
//!   - `POST /rmw`: read-modify-write of `n` with awaits (a storage read and a
//!     timer) between the read and the write; `GET /rmw` reads `n`. A lost
//!     update would show up as a final `n` below the number of requests.
//!   - `POST /panic`: the handler panics.
//!   - `POST /alarm?in_ms=N&fail=K`: sets the alarm `N` ms ahead; its handler
//!     fails its first `K` runs. `GET /alarm` reports
//!     `{"runs":R,"fired":F,"times":[...]}` (run times in ms since the epoch).
//!   - `POST /cycle[?to=NAME]`: calls `NAME` (default itself), which calls
//!     back: a call cycle.
//!   - `GET /sleep?ms=N`: answers after `N` ms (a slow handler, for overload).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::context::Context;
use crate::object::{Classes, LocalFuture, Object, Request, Response};

static COMMIT_DELAY_MS: AtomicU64 = AtomicU64::new(0);

/// Delays every commit's reported durability by `ms` (0: no delay).
pub fn set_commit_delay_ms(ms: u64) {
    COMMIT_DELAY_MS.store(ms, Ordering::Relaxed);
}

/// The artificial commit delay in force.
pub fn commit_delay_ms() -> u64 {
    COMMIT_DELAY_MS.load(Ordering::Relaxed)
}

/// Reads the hooks' environment variables and registers the test class.
pub fn install(classes: &mut Classes) {
    if let Some(ms) = std::env::var("CAIRN_TEST_COMMIT_DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        set_commit_delay_ms(ms);
    }
    classes.register("testhooks", || TestHooks);
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

async fn get_u64(ctx: &Context, key: &[u8]) -> u64 {
    ctx.storage()
        .get(key)
        .await
        .ok()
        .flatten()
        .and_then(|b| <[u8; 8]>::try_from(&b[..]).ok())
        .map_or(0, u64::from_be_bytes)
}

fn query_u64(req: &Request, name: &str) -> u64 {
    req.query_param(name)
        .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok())
        .unwrap_or(0)
}

/// The test class; all its state is in storage.
struct TestHooks;

impl Object for TestHooks {
    fn fetch<'a>(&'a mut self, ctx: &'a Context, req: Request) -> LocalFuture<'a, Response> {
        Box::pin(async move {
            match (req.method.as_str(), req.path.as_str()) {
                ("POST", "/rmw") => {
                    let n = get_u64(ctx, b"n").await;
                    // Suspend between the read and the write: a storage read and a
                    // real timer, so other events could interleave if the input
                    // gate let them.
                    let _ = get_u64(ctx, b"other").await;
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                    if let Err(e) = ctx.storage().put(b"n", &(n + 1).to_be_bytes()) {
                        return Response::new(500, e.to_string());
                    }
                    Response::json(200, format!(r#"{{"value":{}}}"#, n + 1))
                }
                ("GET", "/rmw") => {
                    Response::json(200, format!(r#"{{"value":{}}}"#, get_u64(ctx, b"n").await))
                }
                ("POST", "/panic") => panic!("testhooks: asked to panic"),
                ("POST", "/alarm") => {
                    let at = now_ms() + query_u64(&req, "in_ms");
                    let fail = query_u64(&req, "fail");
                    let s = ctx.storage();
                    let r = s
                        .put(b"fail", &fail.to_be_bytes())
                        .and_then(|()| ctx.set_alarm(at));
                    match r {
                        Ok(()) => Response::json(200, format!(r#"{{"at":{at}}}"#)),
                        Err(e) => Response::new(500, e.to_string()),
                    }
                }
                ("GET", "/alarm") => {
                    let runs = get_u64(ctx, b"runs").await;
                    let fired = get_u64(ctx, b"fired").await;
                    let mut times = Vec::new();
                    for i in 0..runs {
                        times.push(
                            get_u64(ctx, format!("run-{i}").as_bytes())
                                .await
                                .to_string(),
                        );
                    }
                    Response::json(
                        200,
                        format!(
                            r#"{{"runs":{runs},"fired":{fired},"times":[{}]}}"#,
                            times.join(",")
                        ),
                    )
                }
                ("POST", "/cycle") => {
                    let Some(me) = ctx.name().map(<[u8]>::to_vec) else {
                        return Response::new(400, "address the object by name");
                    };
                    // `?to=NAME` calls NAME, which calls back; without it, call self.
                    let to = req.query_param("to").unwrap_or_else(|| me.clone());
                    let back = format!("/cycle?to={}", String::from_utf8_lossy(&me));
                    ctx.stub(ctx.class(), &to)
                        .fetch(Request::new("POST", &back))
                        .await
                }
                ("GET", "/sleep") => {
                    glommio::timer::sleep(Duration::from_millis(query_u64(&req, "ms"))).await;
                    Response::json(200, "{}")
                }
                _ => Response::new(404, "no such testhooks route"),
            }
        })
    }

    fn alarm<'a>(
        &'a mut self,
        ctx: &'a Context,
    ) -> LocalFuture<'a, Result<(), Box<dyn std::error::Error>>> {
        Box::pin(async move {
            let runs = get_u64(ctx, b"runs").await;
            let fail = get_u64(ctx, b"fail").await;
            let s = ctx.storage();
            s.put(format!("run-{runs}").as_bytes(), &now_ms().to_be_bytes())?;
            s.put(b"runs", &(runs + 1).to_be_bytes())?;
            if runs < fail {
                return Err(format!("testhooks: alarm run {runs} fails on purpose").into());
            }
            s.put(b"fired", &1u64.to_be_bytes())?;
            Ok(())
        })
    }
}
