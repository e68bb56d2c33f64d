//! Retrying calls between objects: exponential backoff with full jitter,
//! bounded by an attempt count and a time budget ([`RetryPolicy`], used by
//! [`crate::context::Stub::fetch_with_retry`]).
//!
//! **Idempotency:** a retry re-sends the whole request, and a failed attempt
//! may have taken effect (a 503 from a full queue did not run, but a 500
//! `storage_failed` may have applied in memory before its commit failed, and
//! a shard going away mid-call leaves the outcome unknown). So only retry
//! requests that are safe to repeat: reads, puts of a whole value, or
//! operations carrying a caller-chosen idempotency key the callee
//! de-duplicates. `docs/EMBEDDING.md` says the same to embedders.
//!
//! **Why full jitter:** callers that failed together (one overloaded object)
//! would otherwise retry together; a uniformly random delay in
//! `[0, min(cap, base * 2^attempt)]` spreads them out.

use std::cell::Cell;

use crate::object::Response;

/// How a stub call is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Most attempts in total, the first included. Default 4.
    pub attempts_max: u32,
    /// The backoff ceiling before the first retry; doubles per retry. Default 50.
    pub backoff_ms_base: u64,
    /// Largest backoff ceiling. Default 2000.
    pub backoff_ms_max: u64,
    /// Most total time spent waiting between attempts; a retry whose delay
    /// would exceed what is left is not made. Default 5000.
    pub budget_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts_max: 4,
            backoff_ms_base: 50,
            backoff_ms_max: 2000,
            budget_ms: 5000,
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `retry` (0 for the first retry), given a
    /// uniformly random `rand`: uniform in `[0, min(max, base * 2^retry)]`.
    pub fn delay_ms(&self, retry: u32, rand: u64) -> u64 {
        let ceiling = self
            .backoff_ms_base
            .saturating_mul(1u64.checked_shl(retry).unwrap_or(u64::MAX))
            .min(self.backoff_ms_max);
        rand % (ceiling + 1)
    }

    /// Whether `resp` is worth retrying: 503 (the object's queue or a mailbox
    /// was full, or the server is stopping) and 500 `storage_failed` (the write
    /// was not acknowledged). Other answers, 4xx included, are final.
    pub fn is_retryable(resp: &Response) -> bool {
        resp.status == 503
            || (resp.status == 500
                && resp
                    .body
                    .windows(b"storage_failed".len())
                    .any(|w| w == b"storage_failed"))
    }
}

thread_local! {
    static RNG: Cell<u64> = Cell::new({
        let mut seed = [0u8; 8];
        // Jitter needs spread, not secrecy: a failed seed read falls back to the clock.
        if getrandom::fill(&mut seed).is_err() {
            seed = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                .to_le_bytes();
        }
        u64::from_le_bytes(seed) | 1
    });
}

/// A random number for jitter (xorshift64*, per thread).
pub(crate) fn jitter_rand() -> u64 {
    RNG.with(|r| {
        let mut x = r.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        r.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_up_to_the_cap_and_stay_in_range() {
        let p = RetryPolicy::default();
        // The largest delay any random draw gives is the ceiling.
        let ceil = |r| (0..=5000).map(|x| p.delay_ms(r, x)).max().unwrap();
        assert_eq!(
            [ceil(0), ceil(1), ceil(2), ceil(6), ceil(60)],
            [50, 100, 200, 2000, 2000]
        );
        for i in 0..1000 {
            let d = p.delay_ms(3, jitter_rand());
            assert!(d <= 400, "attempt 3 delay {d} (sample {i})");
        }
    }

    /// Answers `/fail/N` with 503 for its first `N` calls, then 200; `/bad`
    /// always with 400. The body is the number of calls so far.
    #[derive(Default)]
    struct Flaky {
        calls: u32,
    }

    impl crate::object::Object for Flaky {
        fn fetch<'a>(
            &'a mut self,
            _ctx: &'a crate::context::Context,
            req: crate::object::Request,
        ) -> crate::object::LocalFuture<'a, Response> {
            self.calls += 1;
            let calls = self.calls;
            Box::pin(async move {
                let status = match req.path.strip_prefix("/fail/") {
                    Some(n) if calls <= n.parse().unwrap() => 503,
                    Some(_) => 200,
                    None => 400,
                };
                Response::new(status, calls.to_string())
            })
        }
    }

    /// Calls `flaky/{name}{path}` with retries; answers "status calls-body".
    struct Caller;

    impl crate::object::Object for Caller {
        fn fetch<'a>(
            &'a mut self,
            ctx: &'a crate::context::Context,
            req: crate::object::Request,
        ) -> crate::object::LocalFuture<'a, Response> {
            Box::pin(async move {
                let policy = RetryPolicy {
                    attempts_max: 3,
                    backoff_ms_base: 1,
                    backoff_ms_max: 4,
                    budget_ms: 1000,
                };
                let r = ctx
                    .stub("flaky", req.path.as_bytes())
                    .fetch_with_retry(crate::object::Request::new("GET", &req.path), &policy)
                    .await;
                Response::new(
                    200,
                    format!("{} {}", r.status, String::from_utf8_lossy(&r.body)),
                )
            })
        }
    }

    fn call_with_retry(path: &str) -> String {
        let path = path.to_string();
        crate::testing::run_local(async move {
            let store = crate::store::Store::open(
                crate::store::StoreOptions::default(),
                std::rc::Rc::new(crate::store::ImmediateCommits),
            )
            .await
            .unwrap();
            let mut c = crate::object::Classes::new();
            c.register("flaky", Flaky::default);
            c.register("caller", || Caller);
            let host = crate::host::ObjectHost::new(
                crate::host::HostConfig::default(),
                c,
                store,
                crate::host::system_clock(),
            );
            let t = crate::host::Target {
                class: "caller".into(),
                id: crate::id::id_from_name("caller", b"c"),
                name: None,
            };
            let r = host
                .call(t, crate::object::Request::new("GET", &path))
                .await;
            String::from_utf8(r.body.to_vec()).unwrap()
        })
    }

    #[test]
    fn a_stub_call_is_retried_until_it_succeeds_within_its_attempts() {
        assert_eq!(call_with_retry("/fail/2"), "200 3");
    }

    #[test]
    fn a_stub_call_gives_up_after_its_attempts_with_the_last_answer() {
        assert_eq!(call_with_retry("/fail/5"), "503 3");
    }

    #[test]
    fn a_final_answer_is_not_retried() {
        assert_eq!(call_with_retry("/bad"), "400 1");
    }

    #[test]
    fn only_overload_and_unacknowledged_writes_are_retried() {
        use crate::object::ErrorCode;
        assert!(RetryPolicy::is_retryable(&Response::error(
            ErrorCode::Overloaded,
            "x"
        )));
        assert!(RetryPolicy::is_retryable(&Response::error(
            ErrorCode::StorageFailed,
            "x"
        )));
        assert!(!RetryPolicy::is_retryable(&Response::error(
            ErrorCode::HandlerPanicked,
            "x"
        )));
        assert!(!RetryPolicy::is_retryable(&Response::error(
            ErrorCode::BadRequest,
            "x"
        )));
        assert!(!RetryPolicy::is_retryable(&Response::new(200, "ok")));
    }
}
