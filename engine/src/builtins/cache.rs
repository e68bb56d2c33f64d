//! `cache`: the article's optimized cache. One object per cache (or shard of
//! a cache).
//!
//! - `GET /entries/{key}` reads through: a resident (in-memory) entry answers
//!   at once (`X-Cache: hit`); otherwise the entry is loaded from the object's
//!   storage, made resident, and returned (`X-Cache: miss`).
//! - `PUT /entries/{key}?ttl_ms=N` stores the body durably with an expiry.
//! - At most `max_resident` entries stay in memory; the least recently used
//!   goes first. Storage holds every unexpired entry regardless.
//! - Expired entries are never returned, and the object's alarm deletes them
//!   from storage at their expiry (earliest first), so storage does not grow
//!   with dead entries.
//!
//! Storage: `v` + key holds `u64be(expires_ms)` + value; `x` +
//! `u64be(expires_ms)` + key is an expiry index entry (empty value) so the
//! alarm finds due entries with one ordered range read. Both keys change in
//! one commit. `config` holds `{"max_resident":N}`.
//!
//! The article's sketch swept its whole map on every access and let stale
//! entries live in storage forever; here the sweep is by alarm and by index.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use serde_json::{Value, json};

use super::common::{
    be, json, json_object_body, method_not_allowed, no_route, now_ms, opt_u64, query_u64, read_be,
};
use super::storage_error;
use crate::context::Context;
use crate::object::{ErrorCode, LocalFuture, Object, Request, Response, percent_decode};
use crate::store::ListOptions;

const ROUTES: &str = "GET|PUT|DELETE /entries/{key}, GET /stats, GET|PUT /config";

/// TTL when a put gives none: 5 minutes.
pub const TTL_MS_DEFAULT: u64 = 5 * 60 * 1000;
/// Longest TTL: 30 days.
pub const TTL_MS_MAX: u64 = 30 * 24 * 60 * 60 * 1000;
/// Resident entries per object when not configured.
pub const RESIDENT_DEFAULT: u64 = 1000;
/// Largest `max_resident`.
pub const RESIDENT_MAX: u64 = 1_000_000;
/// Expired entries the alarm deletes per commit (two keys each, under the
/// engine's 128-key batch limit).
const EXPIRE_BATCH: usize = 64;

fn value_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(b'v');
    k.extend_from_slice(key);
    k
}

fn index_key(expires: u64, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 9);
    k.push(b'x');
    k.extend_from_slice(&be(expires));
    k.extend_from_slice(key);
    k
}

struct Resident {
    value: Bytes,
    expires: u64,
    tick: u64,
}

/// The cache class.
#[derive(Default)]
pub struct Cache {
    resident: HashMap<Vec<u8>, Resident>,
    /// Use order: tick -> key; the smallest tick is the least recently used.
    lru: BTreeMap<u64, Vec<u8>>,
    tick: u64,
    bytes: usize,
    max_resident: Option<u64>,
    hits: u64,
    misses: u64,
}

impl Cache {
    async fn max_resident(&mut self, ctx: &Context) -> Result<u64, Response> {
        if let Some(m) = self.max_resident {
            return Ok(m);
        }
        let raw = ctx
            .storage()
            .get(b"config")
            .await
            .map_err(|e| storage_error(&e))?;
        let m = raw
            .and_then(|r| serde_json::from_slice::<Value>(&r).ok())
            .and_then(|v| v.get("max_resident").and_then(Value::as_u64))
            .unwrap_or(RESIDENT_DEFAULT);
        self.max_resident = Some(m);
        Ok(m)
    }

    fn forget(&mut self, key: &[u8]) {
        if let Some(r) = self.resident.remove(key) {
            self.lru.remove(&r.tick);
            self.bytes -= r.value.len() + key.len();
        }
    }

    fn remember(&mut self, key: Vec<u8>, value: Bytes, expires: u64, max: u64) {
        self.forget(&key);
        self.tick += 1;
        self.bytes += value.len() + key.len();
        self.lru.insert(self.tick, key.clone());
        self.resident.insert(
            key,
            Resident {
                value,
                expires,
                tick: self.tick,
            },
        );
        while self.resident.len() as u64 > max {
            let Some((_, k)) = self.lru.pop_first() else {
                break;
            };
            if let Some(r) = self.resident.remove(&k) {
                self.bytes -= r.value.len() + k.len();
            }
        }
    }

    fn touch(&mut self, key: &[u8]) {
        let Some(r) = self.resident.get_mut(key) else {
            return;
        };
        self.lru.remove(&r.tick);
        self.tick += 1;
        r.tick = self.tick;
        self.lru.insert(self.tick, key.to_vec());
    }

    async fn get(&mut self, ctx: &Context, key: &[u8]) -> Response {
        let now = now_ms();
        if let Some(r) = self.resident.get(key) {
            if r.expires > now {
                let value = r.value.clone();
                self.touch(key);
                self.hits += 1;
                return found(value, "hit");
            }
            self.forget(key);
        }
        self.misses += 1;
        let max = match self.max_resident(ctx).await {
            Ok(m) => m,
            Err(r) => return r,
        };
        let raw = match ctx.storage().get(&value_key(key)).await {
            Ok(r) => r,
            Err(e) => return storage_error(&e),
        };
        match raw {
            Some(raw) if read_be(&raw).is_some_and(|exp| exp > now) => {
                let expires = read_be(&raw).unwrap_or(0);
                let value = raw.slice(8..);
                self.remember(key.to_vec(), value.clone(), expires, max);
                found(value, "miss")
            }
            _ => Response::error(ErrorCode::NotFound, "no such entry (or it expired)"),
        }
    }

    async fn put(&mut self, ctx: &Context, key: &[u8], req: &Request) -> Response {
        let ttl = match query_u64(req, "ttl_ms", 1, TTL_MS_MAX) {
            Ok(t) => t.unwrap_or(TTL_MS_DEFAULT),
            Err(r) => return r,
        };
        let max = match self.max_resident(ctx).await {
            Ok(m) => m,
            Err(r) => return r,
        };
        let expires = now_ms() + ttl;
        let vk = value_key(key);
        let st = ctx.storage();
        let old = match st.get(&vk).await {
            Ok(o) => o.and_then(|o| read_be(&o)),
            Err(e) => return storage_error(&e),
        };
        let mut stored = be(expires).to_vec();
        stored.extend_from_slice(&req.body);
        let txn = st.transaction();
        let r = (|| {
            if let Some(old) = old {
                txn.delete(&index_key(old, key))?;
            }
            txn.put(&vk, &stored)?;
            txn.put(&index_key(expires, key), b"")?;
            txn.commit()
        })();
        if let Err(e) = r {
            return storage_error(&e);
        }
        // The alarm serves the earliest expiry; move it earlier if this one is.
        let alarm = match ctx.get_alarm().await {
            Ok(a) => a,
            Err(e) => return storage_error(&e),
        };
        if alarm.is_none_or(|a| a > expires)
            && let Err(e) = ctx.set_alarm(expires)
        {
            return storage_error(&e);
        }
        self.remember(key.to_vec(), req.body.clone(), expires, max);
        json(200, &json!({"ok": true, "expires_ms": expires}))
    }

    async fn delete(&mut self, ctx: &Context, key: &[u8]) -> Response {
        self.forget(key);
        let vk = value_key(key);
        let st = ctx.storage();
        let old = match st.get(&vk).await {
            Ok(o) => o.and_then(|o| read_be(&o)),
            Err(e) => return storage_error(&e),
        };
        let Some(old) = old else {
            return json(200, &json!({"deleted": false}));
        };
        let txn = st.transaction();
        let r = txn
            .delete(&vk)
            .and_then(|()| txn.delete(&index_key(old, key)))
            .and_then(|()| txn.commit());
        match r {
            Ok(()) => json(200, &json!({"deleted": true})),
            Err(e) => storage_error(&e),
        }
    }

    async fn configure(&mut self, ctx: &Context, req: &Request) -> Response {
        let m = match json_object_body(req)
            .and_then(|b| opt_u64(&b, "max_resident", 1, RESIDENT_MAX))
        {
            Ok(Some(m)) => m,
            Ok(None) => return super::common::bad_request("max_resident is required"),
            Err(r) => return r,
        };
        let v = json!({ "max_resident": m });
        if let Err(e) = ctx.storage().put(b"config", v.to_string().as_bytes()) {
            return storage_error(&e);
        }
        self.max_resident = Some(m);
        while self.resident.len() as u64 > m {
            let Some((_, k)) = self.lru.pop_first() else {
                break;
            };
            if let Some(r) = self.resident.remove(&k) {
                self.bytes -= r.value.len() + k.len();
            }
        }
        json(200, &v)
    }

    /// Deletes every entry due by `now` from storage and memory; returns the
    /// next expiry still pending.
    async fn expire(
        &mut self,
        ctx: &Context,
        now: u64,
    ) -> Result<Option<u64>, Box<dyn std::error::Error>> {
        let st = ctx.storage();
        loop {
            let due = st
                .list(&ListOptions {
                    prefix: Some(b"x".to_vec()),
                    end: Some(index_key(now + 1, b"")),
                    limit: Some(EXPIRE_BATCH),
                    ..ListOptions::default()
                })
                .await?;
            if due.is_empty() {
                break;
            }
            let txn = st.transaction();
            for (ik, _) in &due {
                let key = &ik[9..];
                txn.delete(ik)?;
                // The value belongs to this index entry: every put and delete
                // moves or removes the old index entry in the same commit.
                txn.delete(&value_key(key))?;
                if self.resident.get(key).is_some_and(|r| r.expires <= now) {
                    self.forget(key);
                }
            }
            txn.commit()?;
        }
        let next = st
            .list(&ListOptions {
                prefix: Some(b"x".to_vec()),
                limit: Some(1),
                ..ListOptions::default()
            })
            .await?;
        Ok(next.first().and_then(|(k, _)| read_be(&k[1..])))
    }
}

fn found(value: Bytes, how: &'static str) -> Response {
    let mut r = Response::new(200, value);
    r.headers
        .push(("content-type".into(), "application/octet-stream".into()));
    r.headers.push(("x-cache".into(), how.into()));
    r
}

impl Object for Cache {
    fn fetch<'a>(&'a mut self, ctx: &'a Context, req: Request) -> LocalFuture<'a, Response> {
        Box::pin(async move {
            if let Some(raw) = req.path.strip_prefix("/entries/") {
                let Some(key) = percent_decode(raw).filter(|k| !k.is_empty()) else {
                    return super::common::bad_request(
                        "the key must be non-empty and percent-encoded",
                    );
                };
                return match req.method.as_str() {
                    "GET" => self.get(ctx, &key).await,
                    "PUT" => self.put(ctx, &key, &req).await,
                    "DELETE" => self.delete(ctx, &key).await,
                    _ => method_not_allowed("GET, PUT, DELETE"),
                };
            }
            match (req.path.as_str(), req.method.as_str()) {
                ("/stats", "GET") => {
                    let max = match self.max_resident(ctx).await {
                        Ok(m) => m,
                        Err(r) => return r,
                    };
                    json(
                        200,
                        &json!({"resident": self.resident.len(), "max_resident": max,
                                "hits": self.hits, "misses": self.misses}),
                    )
                }
                ("/stats", _) => method_not_allowed("GET"),
                ("/config", "GET") => match self.max_resident(ctx).await {
                    Ok(m) => json(200, &json!({ "max_resident": m })),
                    Err(r) => r,
                },
                ("/config", "PUT") => self.configure(ctx, &req).await,
                ("/config", _) => method_not_allowed("GET, PUT"),
                _ => no_route(ROUTES),
            }
        })
    }

    fn alarm<'a>(
        &'a mut self,
        ctx: &'a Context,
    ) -> LocalFuture<'a, Result<(), Box<dyn std::error::Error>>> {
        Box::pin(async move {
            if let Some(next) = self.expire(ctx, now_ms()).await? {
                ctx.set_alarm(next)?;
            }
            Ok(())
        })
    }

    fn memory_bytes(&self) -> usize {
        self.bytes + self.resident.len() * 64
    }
}
