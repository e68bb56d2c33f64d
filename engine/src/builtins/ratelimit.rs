//! `ratelimit`: the article's API rate limiter, durable. Each object is one
//! limiter (name it after the client, e.g. its API key or IP).
//!
//! Two algorithms, chosen per object by `PUT /config`:
//! - `sliding_window` (default: 100 per 60000 ms): an exact sliding log. A
//!   check at time `t` is allowed iff fewer than `limit` checks were allowed
//!   in `(t - window_ms, t]`, so no window of `window_ms` ever holds more than
//!   `limit` allowed checks.
//! - `token_bucket`: `capacity` tokens, refilled at `refill_per_sec`; a check
//!   takes one token.
//!
//! **Durability:** the article's sketch kept the log in memory and forgot it on
//! restart, letting a client reset its limit by crashing the server. Here an
//! allowed check writes the whole limiter state (one key, `state`) before its
//! 200 leaves (the output gate), so a restart never forgets an admitted
//! request. A denied check writes nothing: denials change no limiter state,
//! and `denied_total` rides along with the next allowed write (so after a
//! crash it may be lower than the true count; `allowed_total` is exact).
//!
//! **Cost:** at most one durable write per check, and that write is one
//! `put` the shard's group commit coalesces with every other write issued
//! in the same tick, so many checks share one `fdatasync` under load.
//!
//! **Time:** the wall clock, clamped never to go backwards for this object,
//! so a clock step back cannot re-open a window.
//!
//! State encoding (key `state`): `u8` algorithm (1 sliding, 2 bucket), `u64`
//! allowed total, `u64` denied total, then for sliding `u64` timestamps (ms,
//! oldest first), for bucket `f64` tokens and `u64` last refill ms; all
//! big-endian.

use std::collections::VecDeque;

use serde_json::{Value, json};

use super::common::{
    bad_request, json, json_object_body, method_not_allowed, no_route, now_ms, read_be,
};
use super::storage_error;
use crate::context::Context;
use crate::object::{LocalFuture, Object, Request, Response};

const ROUTES: &str = "POST /check, GET|DELETE /, GET|PUT /config";

/// Largest `limit` of a sliding window: the log holds one 8-byte timestamp per
/// allowed check in the window, so this bounds the state value at 32 KiB.
pub const SLIDING_LIMIT_MAX: u64 = 4096;
/// Longest window: one day.
pub const WINDOW_MS_MAX: u64 = 86_400_000;
/// Largest token bucket.
pub const CAPACITY_MAX: u64 = 1_000_000;

/// A limiter's configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LimitConfig {
    /// At most `limit` allowed checks in any `window_ms`.
    SlidingWindow {
        /// Allowed checks per window.
        limit: u64,
        /// Window length in ms.
        window_ms: u64,
    },
    /// A bucket of `capacity` tokens refilled at `refill_per_sec`.
    TokenBucket {
        /// Bucket size (the burst).
        capacity: u64,
        /// Tokens added per second.
        refill_per_sec: f64,
    },
}

impl Default for LimitConfig {
    fn default() -> Self {
        LimitConfig::SlidingWindow {
            limit: 100,
            window_ms: 60_000,
        }
    }
}

impl LimitConfig {
    fn to_json(self) -> Value {
        match self {
            LimitConfig::SlidingWindow { limit, window_ms } => {
                json!({"algorithm": "sliding_window", "limit": limit, "window_ms": window_ms})
            }
            LimitConfig::TokenBucket {
                capacity,
                refill_per_sec,
            } => json!({"algorithm": "token_bucket", "capacity": capacity,
                        "refill_per_sec": refill_per_sec}),
        }
    }

    fn from_json(m: &serde_json::Map<String, Value>) -> Result<LimitConfig, Response> {
        let num = |f: &str, max: u64| -> Result<u64, Response> {
            match m.get(f).and_then(Value::as_u64) {
                Some(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(bad_request(&format!(
                    "{f} is required: an integer from 1 to {max}"
                ))),
            }
        };
        match m.get("algorithm").and_then(Value::as_str) {
            Some("sliding_window") | None => Ok(LimitConfig::SlidingWindow {
                limit: num("limit", SLIDING_LIMIT_MAX)?,
                window_ms: num("window_ms", WINDOW_MS_MAX)?,
            }),
            Some("token_bucket") => {
                let rate = m.get("refill_per_sec").and_then(Value::as_f64);
                let Some(rate) = rate.filter(|r| *r > 0.0 && *r <= 1e6) else {
                    return Err(bad_request(
                        "refill_per_sec is required: a number above 0, at most 1000000",
                    ));
                };
                Ok(LimitConfig::TokenBucket {
                    capacity: num("capacity", CAPACITY_MAX)?,
                    refill_per_sec: rate,
                })
            }
            Some(_) => Err(bad_request(
                "algorithm must be \"sliding_window\" or \"token_bucket\"",
            )),
        }
    }

    fn fresh_state(self) -> Algo {
        match self {
            LimitConfig::SlidingWindow { .. } => Algo::Sliding(VecDeque::new()),
            LimitConfig::TokenBucket { capacity, .. } => Algo::Bucket {
                tokens: capacity as f64,
                last_ms: 0,
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Algo {
    Sliding(VecDeque<u64>),
    Bucket { tokens: f64, last_ms: u64 },
}

#[derive(Debug, Clone)]
struct Loaded {
    config: LimitConfig,
    algo: Algo,
    allowed_total: u64,
    denied_total: u64,
    /// The latest time this object has seen; time never goes back below it.
    last_now: u64,
}

impl Loaded {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        match &self.algo {
            Algo::Sliding(log) => {
                out.push(1);
                out.extend_from_slice(&self.allowed_total.to_be_bytes());
                out.extend_from_slice(&self.denied_total.to_be_bytes());
                for t in log {
                    out.extend_from_slice(&t.to_be_bytes());
                }
            }
            Algo::Bucket { tokens, last_ms } => {
                out.push(2);
                out.extend_from_slice(&self.allowed_total.to_be_bytes());
                out.extend_from_slice(&self.denied_total.to_be_bytes());
                out.extend_from_slice(&tokens.to_bits().to_be_bytes());
                out.extend_from_slice(&last_ms.to_be_bytes());
            }
        }
        out
    }

    fn decode(config: LimitConfig, b: &[u8]) -> Option<Loaded> {
        let allowed_total = read_be(b.get(1..)?)?;
        let denied_total = read_be(b.get(9..)?)?;
        let rest = b.get(17..)?;
        let words: Vec<u64> = rest.chunks_exact(8).filter_map(read_be).collect();
        let algo = match (b[0], config) {
            (1, LimitConfig::SlidingWindow { .. }) => Algo::Sliding(words.into_iter().collect()),
            (2, LimitConfig::TokenBucket { .. }) if words.len() == 2 => Algo::Bucket {
                tokens: f64::from_bits(words[0]),
                last_ms: words[1],
            },
            _ => return None,
        };
        let last_now = match &algo {
            Algo::Sliding(log) => log.back().copied().unwrap_or(0),
            Algo::Bucket { last_ms, .. } => *last_ms,
        };
        Some(Loaded {
            config,
            algo,
            allowed_total,
            denied_total,
            last_now,
        })
    }

    /// Brings the state up to `now` without consuming; returns
    /// (limit, remaining, ms until one more check would be allowed, ms until reset).
    fn refresh(&mut self, now: u64) -> (u64, u64, u64, u64) {
        match (&mut self.algo, self.config) {
            (Algo::Sliding(log), LimitConfig::SlidingWindow { limit, window_ms }) => {
                // A timestamp `t` is in the window at `now` iff t > now - window.
                while log.front().is_some_and(|t| t + window_ms <= now) {
                    log.pop_front();
                }
                let used = log.len() as u64;
                let free_at = |i: usize| log.get(i).map_or(0, |t| t + window_ms - now);
                let next = if used < limit {
                    0
                } else {
                    free_at(log.len() - limit as usize)
                };
                let reset = log.back().map_or(0, |t| t + window_ms - now);
                (limit, limit.saturating_sub(used), next, reset)
            }
            (
                Algo::Bucket { tokens, last_ms },
                LimitConfig::TokenBucket {
                    capacity,
                    refill_per_sec,
                },
            ) => {
                let cap = capacity as f64;
                let elapsed = now.saturating_sub(*last_ms) as f64 / 1000.0;
                *tokens = (*tokens + elapsed * refill_per_sec).min(cap);
                *last_ms = now;
                let to_ms = |need: f64| (need.max(0.0) / refill_per_sec * 1000.0).ceil() as u64;
                let next = if *tokens >= 1.0 {
                    0
                } else {
                    to_ms(1.0 - *tokens)
                };
                (capacity, *tokens as u64, next, to_ms(cap - *tokens))
            }
            // `decode` and `configure` keep algorithm state and config in step.
            _ => unreachable!("limiter state does not match its config"),
        }
    }

    fn take(&mut self, now: u64) {
        match &mut self.algo {
            Algo::Sliding(log) => log.push_back(now),
            Algo::Bucket { tokens, .. } => *tokens -= 1.0,
        }
    }
}

/// The rate limiter class; state is cached in memory once loaded.
#[derive(Default)]
pub struct RateLimit {
    loaded: Option<Loaded>,
}

fn secs_ceil(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

impl RateLimit {
    async fn load(&mut self, ctx: &Context) -> Result<&mut Loaded, Response> {
        if self.loaded.is_none() {
            let got = ctx
                .storage()
                .get_many(&[b"config", b"state"])
                .await
                .map_err(|e| storage_error(&e))?;
            let config = match &got[0] {
                Some(c) => match serde_json::from_slice::<Value>(c) {
                    Ok(Value::Object(m)) => LimitConfig::from_json(&m)?,
                    _ => LimitConfig::default(),
                },
                None => LimitConfig::default(),
            };
            let loaded = got[1]
                .as_ref()
                .and_then(|s| Loaded::decode(config, s))
                .unwrap_or_else(|| Loaded {
                    config,
                    algo: config.fresh_state(),
                    allowed_total: 0,
                    denied_total: 0,
                    last_now: 0,
                });
            self.loaded = Some(loaded);
        }
        Ok(self.loaded.as_mut().expect("loaded just above"))
    }

    async fn check(&mut self, ctx: &Context) -> Response {
        let st = match self.load(ctx).await {
            Ok(s) => s,
            Err(r) => return r,
        };
        let now = now_ms().max(st.last_now);
        st.last_now = now;
        let (limit, remaining, next, reset) = st.refresh(now);
        let allowed = remaining > 0;
        let mut resp = if allowed {
            st.take(now);
            st.allowed_total += 1;
            if let Err(e) = ctx.storage().put(b"state", &st.encode()) {
                // Undo in memory: the check was not recorded, so it is not admitted.
                self.loaded = None;
                return storage_error(&e);
            }
            let (_, remaining, _, reset) = st.refresh(now);
            let mut r = json(
                200,
                &json!({"allowed": true, "limit": limit, "remaining": remaining,
                        "reset_ms": reset, "at_ms": now}),
            );
            r.headers
                .push(("x-ratelimit-remaining".into(), remaining.to_string().into()));
            r.headers.push((
                "x-ratelimit-reset".into(),
                secs_ceil(reset).to_string().into(),
            ));
            r
        } else {
            st.denied_total += 1;
            let mut r = json(
                429,
                &json!({"error": {"code": "rate_limited",
                    "message": format!("rate limit exceeded; retry in {next} ms")},
                    "retry_after_ms": next}),
            );
            r.headers.push(("x-ratelimit-remaining".into(), "0".into()));
            r.headers.push((
                "x-ratelimit-reset".into(),
                secs_ceil(reset).to_string().into(),
            ));
            r.headers.push((
                "retry-after".into(),
                secs_ceil(next).max(1).to_string().into(),
            ));
            r
        };
        resp.headers
            .push(("x-ratelimit-limit".into(), limit.to_string().into()));
        resp
    }

    async fn status(&mut self, ctx: &Context) -> Response {
        let st = match self.load(ctx).await {
            Ok(s) => s,
            Err(r) => return r,
        };
        let now = now_ms().max(st.last_now);
        let (limit, remaining, _, reset) = st.refresh(now);
        json(
            200,
            &json!({"config": st.config.to_json(), "limit": limit, "remaining": remaining,
                    "reset_ms": reset, "allowed_total": st.allowed_total,
                    "denied_total": st.denied_total}),
        )
    }

    async fn configure(&mut self, ctx: &Context, req: &Request) -> Response {
        let config = match json_object_body(req).and_then(|m| LimitConfig::from_json(&m)) {
            Ok(c) => c,
            Err(r) => return r,
        };
        let st = match self.load(ctx).await {
            Ok(s) => s,
            Err(r) => return r,
        };
        // A new config starts its algorithm afresh; the totals carry over.
        let next = Loaded {
            config,
            algo: config.fresh_state(),
            ..st.clone()
        };
        let text = config.to_json().to_string();
        match ctx
            .storage()
            .put_many(&[(b"config", text.as_bytes()), (b"state", &next.encode())])
        {
            Ok(()) => {
                self.loaded = Some(next);
                json(200, &config.to_json())
            }
            Err(e) => {
                self.loaded = None;
                storage_error(&e)
            }
        }
    }
}

impl Object for RateLimit {
    fn fetch<'a>(&'a mut self, ctx: &'a Context, req: Request) -> LocalFuture<'a, Response> {
        Box::pin(async move {
            match (req.path.as_str(), req.method.as_str()) {
                ("/check", "POST") => self.check(ctx).await,
                ("/check", _) => method_not_allowed("POST"),
                ("" | "/", "GET") => self.status(ctx).await,
                ("" | "/", "DELETE") => {
                    self.loaded = None;
                    match ctx.storage().delete_all() {
                        Ok(()) => json(200, &json!({"reset": true})),
                        Err(e) => storage_error(&e),
                    }
                }
                ("" | "/", _) => method_not_allowed("GET, DELETE"),
                ("/config", "GET") => match self.load(ctx).await {
                    Ok(st) => json(200, &st.config.to_json()),
                    Err(r) => r,
                },
                ("/config", "PUT") => self.configure(ctx, &req).await,
                ("/config", _) => method_not_allowed("GET, PUT"),
                _ => no_route(ROUTES),
            }
        })
    }

    fn memory_bytes(&self) -> usize {
        self.loaded.as_ref().map_or(0, |l| match &l.algo {
            Algo::Sliding(log) => 64 + log.len() * 8,
            Algo::Bucket { .. } => 64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sliding(limit: u64, window_ms: u64) -> Loaded {
        let config = LimitConfig::SlidingWindow { limit, window_ms };
        Loaded {
            config,
            algo: config.fresh_state(),
            allowed_total: 0,
            denied_total: 0,
            last_now: 0,
        }
    }

    #[test]
    fn sliding_window_never_admits_more_than_the_limit_in_any_window() {
        let mut st = sliding(3, 1000);
        let mut admitted = Vec::new();
        for t in (0..5000).step_by(37) {
            if st.refresh(t).1 > 0 {
                st.take(t);
                admitted.push(t);
            }
        }
        for (i, t) in admitted.iter().enumerate() {
            let in_window = admitted[i..].iter().take_while(|u| **u < t + 1000).count();
            assert!(
                in_window <= 3,
                "{in_window} admitted in the window from {t}"
            );
        }
        assert!(admitted.len() >= 15, "the limiter admits up to its limit");
    }

    #[test]
    fn state_round_trips_through_its_encoding() {
        let mut st = sliding(5, 1000);
        st.take(10);
        st.take(20);
        st.allowed_total = 7;
        st.denied_total = 2;
        let back = Loaded::decode(st.config, &st.encode()).unwrap();
        assert_eq!(back.algo, st.algo);
        assert_eq!((back.allowed_total, back.denied_total), (7, 2));
        let config = LimitConfig::TokenBucket {
            capacity: 4,
            refill_per_sec: 2.0,
        };
        let b = Loaded {
            config,
            algo: Algo::Bucket {
                tokens: 1.5,
                last_ms: 99,
            },
            ..st
        };
        assert_eq!(Loaded::decode(config, &b.encode()).unwrap().algo, b.algo);
        // A state written under another algorithm is not misread.
        assert!(Loaded::decode(config, &sliding(1, 1).encode()).is_none());
    }

    #[test]
    fn token_bucket_refills_at_its_rate() {
        let config = LimitConfig::TokenBucket {
            capacity: 2,
            refill_per_sec: 1.0,
        };
        let mut st = Loaded {
            config,
            algo: config.fresh_state(),
            allowed_total: 0,
            denied_total: 0,
            last_now: 0,
        };
        assert_eq!(st.refresh(0).1, 2);
        st.take(0);
        st.take(0);
        let (_, remaining, next, _) = st.refresh(0);
        assert_eq!((remaining, next), (0, 1000));
        assert_eq!(st.refresh(1000).1, 1);
    }
}
