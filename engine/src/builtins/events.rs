//! `events`: the article's event store / audit trail. One object per stream.
//!
//! Each event gets a server-assigned sequence number (1, 2, 3... with no
//! gaps) and timestamp (ms, never decreasing within a stream) and is stored
//! as its own record under `e` + `u64be(seq)`, next to `seq`, the last
//! number used; both are written in one atomic commit. Nothing lives only in
//! memory (the article's sketch kept the stream in an array and lost it on
//! restart, and sliced its pages from the wrong end).
//!
//! Reads page with a cursor: `after=N` returns events past `N` in the reading
//! direction (higher numbers oldest-first, lower numbers newest-first), and
//! the answer's `next` is the cursor for the following page (`null` at the
//! end).

use serde_json::{Value, json};

use super::common::{
    bad_request, json, json_body, method_not_allowed, no_route, now_ms, query_u64, read_be,
};
use super::storage_error;
use crate::context::Context;
use crate::object::{LocalFuture, Object, Request, Response};
use crate::store::ListOptions;

const ROUTES: &str = "POST /events, GET /events, GET /count";

/// Events returned per page when `limit` is not given.
pub const PAGE_DEFAULT: u64 = 100;
/// Largest `limit`.
pub const PAGE_MAX: u64 = 1000;
/// Records a filtered read examines before it answers with what it found and
/// a cursor, so a rare type cannot make one request scan a huge stream.
pub const SCAN_MAX: usize = 10_000;
/// Largest `type` string.
pub const TYPE_BYTES_MAX: usize = 128;

fn event_key(seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'e';
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The event store class. Caches the last sequence number and timestamp.
#[derive(Default)]
pub struct Events {
    /// (last seq, last timestamp), once loaded.
    head: Option<(u64, u64)>,
}

impl Events {
    async fn head(&mut self, ctx: &Context) -> Result<(u64, u64), Response> {
        if let Some(h) = self.head {
            return Ok(h);
        }
        let raw = ctx
            .storage()
            .get(b"seq")
            .await
            .map_err(|e| storage_error(&e))?;
        let h = match raw.as_deref() {
            Some(r) => (
                read_be(r).unwrap_or(0),
                r.get(8..).and_then(read_be).unwrap_or(0),
            ),
            None => (0, 0),
        };
        self.head = Some(h);
        Ok(h)
    }

    async fn append(&mut self, ctx: &Context, req: &Request) -> Response {
        let body = match json_body(req) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return bad_request("the body must be a JSON object with a type"),
            Err(r) => return r,
        };
        let ty = match body.get("type") {
            Some(Value::String(t)) if !t.is_empty() && t.len() <= TYPE_BYTES_MAX => t.clone(),
            _ => {
                return bad_request(&format!(
                    "type is required: a string of 1 to {TYPE_BYTES_MAX} bytes"
                ));
            }
        };
        let (seq, ts) = match self.head(ctx).await {
            Ok(h) => h,
            Err(r) => return r,
        };
        let (seq, ts) = (seq + 1, now_ms().max(ts));
        let mut ev = serde_json::Map::new();
        ev.insert("seq".into(), seq.into());
        ev.insert("ts_ms".into(), ts.into());
        ev.insert("type".into(), Value::String(ty));
        ev.insert(
            "data".into(),
            body.get("data").cloned().unwrap_or(Value::Null),
        );
        if let Some(u) = body.get("user") {
            ev.insert("user".into(), u.clone());
        }
        let ev = Value::Object(ev);
        let mut head = seq.to_be_bytes().to_vec();
        head.extend_from_slice(&ts.to_be_bytes());
        match ctx.storage().put_many(&[
            (&event_key(seq), ev.to_string().as_bytes()),
            (b"seq", &head),
        ]) {
            Ok(()) => {
                self.head = Some((seq, ts));
                json(201, &ev)
            }
            Err(e) => {
                self.head = None;
                storage_error(&e)
            }
        }
    }

    async fn read(&mut self, ctx: &Context, req: &Request) -> Response {
        let parsed = (|| {
            let limit = query_u64(req, "limit", 1, PAGE_MAX)?.unwrap_or(PAGE_DEFAULT);
            let after = query_u64(req, "after", 0, u64::MAX)?;
            let newest_first = match req.query_param("order").as_deref() {
                None | Some(b"asc") => false,
                Some(b"desc") => true,
                Some(_) => return Err(bad_request("order must be asc or desc")),
            };
            let ty = req
                .query_param("type")
                .map(|t| String::from_utf8_lossy(&t).into_owned());
            Ok((limit as usize, after, newest_first, ty))
        })();
        let (limit, after, newest_first, ty) = match parsed {
            Ok(p) => p,
            Err(r) => return r,
        };
        let mut out = Vec::new();
        let mut cursor = after;
        let mut scanned = 0;
        let mut exhausted = false;
        while out.len() < limit && scanned < SCAN_MAX {
            let mut opts = ListOptions {
                prefix: Some(b"e".to_vec()),
                reverse: newest_first,
                limit: Some(limit.max(64)),
                ..ListOptions::default()
            };
            match (cursor, newest_first) {
                (Some(c), false) => opts.start_after = Some(event_key(c).to_vec()),
                (Some(c), true) => opts.end = Some(event_key(c).to_vec()),
                (None, _) => {}
            }
            let page = match ctx.storage().list(&opts).await {
                Ok(p) => p,
                Err(e) => return storage_error(&e),
            };
            if page.is_empty() {
                exhausted = true;
                break;
            }
            for (k, v) in page {
                scanned += 1;
                cursor = k.get(1..).and_then(read_be);
                let Ok(ev) = serde_json::from_slice::<Value>(&v) else {
                    continue;
                };
                if ty
                    .as_deref()
                    .is_none_or(|t| ev.get("type").and_then(Value::as_str) == Some(t))
                {
                    out.push(ev);
                    if out.len() == limit {
                        break;
                    }
                }
            }
        }
        // At the end of the stream there is no next page; otherwise resume after
        // the last record examined (which, with a filter, may not be returned).
        let last = match self.head(ctx).await {
            Ok((seq, _)) => seq,
            Err(r) => return r,
        };
        let at_end = exhausted || cursor == Some(if newest_first { 1 } else { last });
        let next = match cursor {
            Some(c) if !at_end => Value::from(c),
            _ => Value::Null,
        };
        json(200, &json!({"events": out, "next": next}))
    }
}

impl Object for Events {
    fn fetch<'a>(&'a mut self, ctx: &'a Context, req: Request) -> LocalFuture<'a, Response> {
        Box::pin(async move {
            match (req.path.as_str(), req.method.as_str()) {
                ("/events", "POST") => self.append(ctx, &req).await,
                ("/events", "GET") => self.read(ctx, &req).await,
                ("/events", _) => method_not_allowed("GET, POST"),
                ("/count", "GET") => match self.head(ctx).await {
                    Ok((n, _)) => json(200, &json!({"count": n})),
                    Err(r) => r,
                },
                ("/count", _) => method_not_allowed("GET"),
                _ => no_route(ROUTES),
            }
        })
    }
}
