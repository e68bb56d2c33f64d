//! Operator endpoints under `/_cairn/objects`: list a class's objects, show
//! one object's storage and alarm, export it, import it. `docs/OPERATIONS.md`
//! is the reference.
//!
//! **Access:** with `--admin-token` set, every request needs
//! `Authorization: Bearer <token>` (401 without, 403 with a wrong one). With
//! no token, only loopback peers are served (403 otherwise), so an operator
//! on the host can inspect a server that was started without thinking about
//! it, and nobody else can.
//!
//! **Sharding:** an object's data lives in its owning shard's store, so
//! show/export/import run on that shard ([`AdminOp`] crosses as
//! [`crate::shard::Mail::Admin`]); a listing asks every shard for its part
//! and merges by ID. No locks: each shard touches only its own store.
//!
//! **Import and the input gate:** an import writes the store directly, which
//! would leave an active instance's cached state stale; so it first drops the
//! instance if it is idle and answers 409 `conflict` if it is busy (retry).

use bytes::Bytes;
use glommio::channels::local_channel;
use serde_json::{Value, json};

use crate::context::{META_ALARM, META_CLASS, META_NAME, NS_USER};
use crate::host::{ObjectHost, Target};
use crate::id::{ObjectId, id_from_name, id_from_string, shard_of};
use crate::object::{ErrorCode, Response, percent_decode};
use crate::shard::Shard;
use crate::store::{Batch, ListOptions};

/// Objects listed per page when `limit` is not given.
pub const LIST_DEFAULT: usize = 100;
/// Largest `limit` for listings and shown entries.
pub const LIST_MAX: usize = 10_000;
/// Object IDs one shard examines per listing request before it answers with a
/// cursor, so a rare class cannot make one request scan a huge store.
pub const SCAN_MAX: usize = 50_000;
/// The `format` field of an export; import refuses anything else.
pub const EXPORT_FORMAT: &str = "cairn-object-export/1";

/// An operation run on the shard that owns the data. Only `Send` data.
#[derive(Debug, Clone)]
pub enum AdminOp {
    /// This shard's objects of `class` with IDs after `after`, up to `limit`.
    List {
        /// Class name.
        class: String,
        /// Exclusive lower bound (the cursor).
        after: Option<[u8; 32]>,
        /// Most objects to return.
        limit: usize,
    },
    /// One object's entries (after user key `start_after`, up to `limit`) and alarm.
    Show {
        /// The object.
        target: Target,
        /// Exclusive lower bound on user keys.
        start_after: Option<Vec<u8>>,
        /// Most entries to return.
        limit: usize,
    },
    /// The whole object, as an export document.
    Export {
        /// The object.
        target: Target,
    },
    /// Replace the object's storage with `entries` and `alarm_ms`.
    Import {
        /// The object.
        target: Target,
        /// User keys and values.
        entries: Vec<(Vec<u8>, Vec<u8>)>,
        /// The alarm to arm, if any.
        alarm_ms: Option<u64>,
    },
}

fn admin_error(status: u16, code: &str, message: &str) -> Response {
    Response::json(
        status,
        json!({"error": {"code": code, "message": message}}).to_string(),
    )
}

/// Constant-time comparison, so response timing does not reveal how much of
/// a guessed token was right.
fn same_token(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks access; `None` means allowed.
fn refuse(token: Option<&str>, authorization: Option<&[u8]>, loopback: bool) -> Option<Response> {
    match token {
        None if loopback => None,
        None => Some(admin_error(
            403,
            "forbidden",
            "admin routes are served only to loopback peers unless --admin-token is set",
        )),
        Some(t) => match authorization.and_then(|a| a.strip_prefix(b"Bearer ")) {
            None => {
                let mut r = admin_error(401, "unauthorized", "send Authorization: Bearer <token>");
                r.headers
                    .push(("www-authenticate".into(), "Bearer realm=\"cairn\"".into()));
                Some(r)
            }
            Some(given) if same_token(given.trim_ascii(), t.as_bytes()) => None,
            Some(_) => Some(admin_error(403, "forbidden", "wrong admin token")),
        },
    }
}

/// Handles a request under `/_cairn/objects`. `loopback` says whether the
/// peer is on a loopback address.
pub async fn handle(
    shard: &Shard,
    method: &str,
    path: &str,
    query: &str,
    authorization: Option<&[u8]>,
    loopback: bool,
    body: Bytes,
) -> Response {
    if let Some(r) = refuse(shard.config.admin_token.as_deref(), authorization, loopback) {
        return r;
    }
    let q = crate::object::Request {
        query: query.into(),
        ..crate::object::Request::default()
    };
    let rest = path
        .strip_prefix("/_cairn/objects")
        .unwrap_or("")
        .trim_start_matches('/');
    let segs: Vec<&str> = rest.split('/').collect();
    let class = segs[0];
    if class.is_empty() || shard.host.classes().get(class).is_none() {
        return Response::error(
            ErrorCode::NotFound,
            "no such class; routes are /_cairn/objects/{class}[/{id}[/export|/import]]",
        );
    }
    let limit = |default: usize| -> Result<usize, Response> {
        match q.query_param("limit") {
            None => Ok(default),
            Some(v) => std::str::from_utf8(&v)
                .ok()
                .and_then(|s| s.parse().ok())
                .filter(|n| (1..=LIST_MAX).contains(n))
                .ok_or_else(|| {
                    Response::error(
                        ErrorCode::BadRequest,
                        &format!("limit must be an integer from 1 to {LIST_MAX}"),
                    )
                }),
        }
    };
    if segs.len() == 1 {
        if method != "GET" {
            return method_not_allowed("GET");
        }
        let after = match q.query_param("cursor") {
            None => None,
            Some(c) => match std::str::from_utf8(&c).ok().map(id_from_string) {
                Some(Ok(id)) => Some(id.0),
                _ => return Response::error(ErrorCode::BadRequest, "cursor must be an object ID"),
            },
        };
        return match limit(LIST_DEFAULT) {
            Ok(limit) => list(shard, class, after, limit).await,
            Err(r) => r,
        };
    }
    let target = match object_target(class, segs[1]) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let op = match (segs.get(2).copied(), segs.len(), method) {
        (None, 2, "GET") => match limit(1000) {
            Ok(limit) => AdminOp::Show {
                target,
                start_after: q.query_param("start_after"),
                limit,
            },
            Err(r) => return r,
        },
        (None, 2, _) => return method_not_allowed("GET"),
        (Some("export"), 3, "GET") => AdminOp::Export { target },
        (Some("export"), 3, _) => return method_not_allowed("GET"),
        (Some("import"), 3, "POST" | "PUT") => match parse_import(target, &body) {
            Ok(op) => op,
            Err(r) => return r,
        },
        (Some("import"), 3, _) => return method_not_allowed("POST, PUT"),
        _ => {
            return Response::error(
                ErrorCode::NotFound,
                "routes: /_cairn/objects/{class}[/{id}[/export|/import]]",
            );
        }
    };
    run_on_owner(shard, op).await
}

fn method_not_allowed(allowed: &'static str) -> Response {
    let mut r = Response::error(
        ErrorCode::MethodNotAllowed,
        &format!("this route accepts {allowed}"),
    );
    r.headers.push(("allow".into(), allowed.into()));
    r
}

/// `seg` is a 64-hex-char object ID, or else a percent-encoded object name.
fn object_target(class: &str, seg: &str) -> Result<Target, Response> {
    if seg.len() == 64
        && let Ok(id) = id_from_string(seg)
    {
        return Ok(Target {
            class: class.into(),
            id,
            name: None,
        });
    }
    let name = percent_decode(seg)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Response::error(ErrorCode::BadRequest, "bad object ID or name"))?;
    Ok(Target {
        class: class.into(),
        id: id_from_name(class, &name),
        name: Some(name),
    })
}

async fn run_on_owner(shard: &Shard, op: AdminOp) -> Response {
    let id = match &op {
        AdminOp::Show { target, .. }
        | AdminOp::Export { target }
        | AdminOp::Import { target, .. } => target.id,
        AdminOp::List { .. } => unreachable!("listings fan out"),
    };
    let owner = shard_of(&id, shard.host.config().shard_count);
    run_on(shard, owner, op).await
}

async fn run_on(shard: &Shard, owner: u32, op: AdminOp) -> Response {
    if owner == shard.id {
        return run_local(&shard.host, op).await;
    }
    let (tx, rx) = local_channel::new_bounded(1);
    shard.router.send_admin(
        owner,
        op,
        Box::new(move |resp| {
            let _ = tx.try_send(resp);
        }),
    );
    rx.recv()
        .await
        .unwrap_or_else(|| Response::error(ErrorCode::ShuttingDown, "the shard went away"))
}

async fn run_on_owned(shard: Shard, owner: u32, op: AdminOp) -> Response {
    run_on(&shard, owner, op).await
}

async fn list(shard: &Shard, class: &str, after: Option<[u8; 32]>, limit: usize) -> Response {
    let n = shard.host.config().shard_count;
    // Every shard's part is requested before any is awaited, so the shards
    // scan their stores at the same time; the answers are merged here.
    let mut waits = Vec::new();
    for s in 0..n {
        let op = AdminOp::List {
            class: class.to_string(),
            after,
            limit,
        };
        waits.push(glommio::spawn_local(run_on_owned(shard.clone(), s, op)));
    }
    let mut objects: Vec<(String, Value)> = Vec::new();
    // The cursor may only advance to the smallest point every shard reached.
    let mut bound: Option<String> = None;
    for w in waits {
        let r = w.await;
        if r.status != 200 {
            return r;
        }
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        for o in v["objects"].as_array().into_iter().flatten() {
            if let Some(id) = o["id"].as_str() {
                objects.push((id.to_string(), o.clone()));
            }
        }
        if let Some(resume) = v["resume"].as_str()
            && bound.as_deref().is_none_or(|b| resume < b)
        {
            bound = Some(resume.to_string());
        }
    }
    objects.sort_by(|a, b| a.0.cmp(&b.0));
    objects.retain(|(id, _)| bound.as_deref().is_none_or(|b| id.as_str() <= b));
    objects.truncate(limit);
    let next = if objects.len() == limit {
        objects.last().map(|(id, _)| id.clone())
    } else {
        bound
    };
    let list: Vec<Value> = objects.into_iter().map(|(_, o)| o).collect();
    Response::json(200, json!({"objects": list, "next": next}).to_string())
}

/// Bytes as JSON: a string if UTF-8, else `{"base64": ...}`.
fn bytes_json(b: &[u8]) -> Value {
    match std::str::from_utf8(b) {
        Ok(s) => Value::String(s.into()),
        Err(_) => json!({ "base64": base64_encode(b) }),
    }
}

fn user_key(k: &[u8]) -> Vec<u8> {
    let mut v = vec![NS_USER];
    v.extend_from_slice(k);
    v
}

/// Runs `op` against this shard's store. Called on the owning shard.
pub async fn run_local(host: &ObjectHost, op: AdminOp) -> Response {
    let store = host.store();
    let storage_err =
        |e: crate::store::StorageError| Response::error(ErrorCode::StorageFailed, &e.to_string());
    match op {
        AdminOp::List {
            class,
            after,
            limit,
        } => {
            let mut out = Vec::new();
            let mut cursor = after;
            let mut scanned = 0;
            let mut resume = None;
            'scan: loop {
                let ids = store.objects(cursor.as_ref(), 256);
                if ids.is_empty() {
                    break;
                }
                for raw in ids {
                    scanned += 1;
                    cursor = Some(raw);
                    let c = store.get(&raw, META_CLASS).await.ok().flatten();
                    if c.as_deref() == Some(class.as_bytes()) {
                        let name = store.get(&raw, META_NAME).await.ok().flatten();
                        let id = ObjectId(raw).to_hex();
                        out.push(json!({"id": id, "name": name.as_deref().map(bytes_json)}));
                        if out.len() == limit {
                            resume = Some(id);
                            break 'scan;
                        }
                    }
                    if scanned >= SCAN_MAX {
                        resume = Some(ObjectId(raw).to_hex());
                        break 'scan;
                    }
                }
            }
            Response::json(200, json!({"objects": out, "resume": resume}).to_string())
        }
        AdminOp::Show {
            target,
            start_after,
            limit,
        } => {
            let head = match describe(host, &target).await {
                Ok(h) => h,
                Err(r) => return r,
            };
            let opts = ListOptions {
                prefix: Some(vec![NS_USER]),
                start_after: start_after.as_deref().map(user_key),
                limit: Some(limit + 1),
                ..ListOptions::default()
            };
            let mut entries = match store.list(target.id.as_bytes(), &opts).await {
                Ok(e) => e,
                Err(e) => return storage_err(e),
            };
            let more = entries.len() > limit;
            entries.truncate(limit);
            let next = more
                .then(|| entries.last().map(|(k, _)| bytes_json(&k[1..])))
                .flatten();
            let list: Vec<Value> = entries
                .iter()
                .map(|(k, v)| json!({"key": bytes_json(&k[1..]), "value": bytes_json(v)}))
                .collect();
            let mut v = head;
            v["entries"] = Value::Array(list);
            v["next"] = next.unwrap_or(Value::Null);
            Response::json(200, v.to_string())
        }
        AdminOp::Export { target } => {
            let head = match describe(host, &target).await {
                Ok(h) => h,
                Err(r) => return r,
            };
            let opts = ListOptions {
                prefix: Some(vec![NS_USER]),
                ..ListOptions::default()
            };
            let entries = match store.list(target.id.as_bytes(), &opts).await {
                Ok(e) => e,
                Err(e) => return storage_err(e),
            };
            let list: Vec<Value> = entries
                .iter()
                .map(|(k, v)| json!({"key": base64_encode(&k[1..]), "value": base64_encode(v)}))
                .collect();
            let name = store
                .get(target.id.as_bytes(), META_NAME)
                .await
                .ok()
                .flatten();
            let v = json!({"format": EXPORT_FORMAT, "class": target.class,
                "id": target.id.to_hex(),
                "name": name.as_deref().map(base64_encode),
                "alarm_ms": head["alarm_ms"], "entries": list});
            Response::json(200, v.to_string())
        }
        AdminOp::Import {
            target,
            entries,
            alarm_ms,
        } => {
            if !host.deactivate_idle(&target.id) {
                return admin_error(409, "conflict", "the object is busy; retry the import");
            }
            let key_max = host.config().key_bytes_max;
            if let Some((k, _)) = entries.iter().find(|(k, _)| k.len() > key_max) {
                return Response::error(
                    ErrorCode::TooLarge,
                    &format!(
                        "a key of {} bytes is over the {key_max}-byte limit",
                        k.len()
                    ),
                );
            }
            let id = target.id.as_bytes();
            let mut b = Batch::new();
            b.delete_all(id);
            b.put(id, META_CLASS, target.class.as_bytes());
            if let Some(n) = &target.name {
                b.put(id, META_NAME, n);
            }
            if let Some(at) = alarm_ms {
                b.put(id, META_ALARM, &at.to_be_bytes());
            }
            for (k, v) in &entries {
                b.put(id, &user_key(k), v);
            }
            // One batch: the object is replaced atomically or not at all.
            let ticket = match store.commit(b) {
                Ok(t) => t,
                Err(e) => return storage_err(e),
            };
            if let Err(e) = ticket.durable().await {
                return Response::error(ErrorCode::StorageFailed, &e.to_string());
            }
            host.rearm_alarm(&target, alarm_ms);
            Response::json(
                200,
                json!({"imported": entries.len(), "id": target.id.to_hex()}).to_string(),
            )
        }
    }
}

/// The object's class, ID, name and alarm; 404 if it stores nothing or
/// belongs to another class.
async fn describe(host: &ObjectHost, target: &Target) -> Result<Value, Response> {
    let store = host.store();
    let id = target.id.as_bytes();
    let class = store.get(id, META_CLASS).await.ok().flatten();
    if class.as_deref() != Some(target.class.as_bytes()) {
        return Err(Response::error(
            ErrorCode::NotFound,
            "no such object: nothing is stored for it in this class",
        ));
    }
    let name = store.get(id, META_NAME).await.ok().flatten();
    let alarm = store
        .get(id, META_ALARM)
        .await
        .ok()
        .flatten()
        .and_then(|a| <[u8; 8]>::try_from(&a[..]).ok())
        .map(u64::from_be_bytes);
    Ok(json!({"class": target.class, "id": target.id.to_hex(),
        "name": name.as_deref().map(bytes_json), "alarm_ms": alarm}))
}

fn parse_import(mut target: Target, body: &[u8]) -> Result<AdminOp, Response> {
    let bad = |m: &str| Response::error(ErrorCode::BadRequest, m);
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| bad(&format!("the body is not valid JSON: {e}")))?;
    if v["format"] != EXPORT_FORMAT {
        return Err(bad(&format!("format must be {EXPORT_FORMAT:?}")));
    }
    if v["class"] != target.class.as_str() {
        return Err(bad("the export is of another class"));
    }
    let alarm_ms = match &v["alarm_ms"] {
        Value::Null => None,
        a => Some(
            a.as_u64()
                .ok_or_else(|| bad("alarm_ms must be an integer or null"))?,
        ),
    };
    // Keep the exported name only if it is this object's name: restoring into
    // another object must not record a name that hashes to a different ID.
    if target.name.is_none()
        && let Some(n) = v["name"].as_str().and_then(base64_decode)
        && id_from_name(&target.class, &n) == target.id
    {
        target.name = Some(n);
    }
    let mut entries = Vec::new();
    for e in v["entries"]
        .as_array()
        .ok_or_else(|| bad("entries must be an array"))?
    {
        let k = e["key"].as_str().and_then(base64_decode);
        let val = e["value"].as_str().and_then(base64_decode);
        match (k, val) {
            (Some(k), Some(val)) => entries.push((k, val)),
            _ => return Err(bad("each entry needs base64 key and value")),
        }
    }
    Ok(AdminOp::Import {
        target,
        entries,
        alarm_ms,
    })
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 (padding required); `None` if malformed.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    if !s.len().is_multiple_of(4) {
        return None;
    }
    let val = |c: u8| B64.iter().position(|&x| x == c).map(|p| p as u32);
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for (i, q) in s.chunks(4).enumerate() {
        let last = i == s.len() / 4 - 1;
        let pad = q.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &q[..4 - pad] {
            n = (n << 6) | val(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_refuses_garbage() {
        for (raw, enc) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (&[0xff, 0x00, 0xfe], "/wD+"),
        ] {
            assert_eq!(base64_encode(raw), enc);
            assert_eq!(base64_decode(enc).as_deref(), Some(raw));
        }
        assert_eq!(base64_decode("Zg="), None);
        assert_eq!(base64_decode("Z==="), None);
        assert_eq!(base64_decode("Zg==Zg=="), None);
        assert_eq!(base64_decode("Z!=="), None);
    }

    #[test]
    fn access_needs_the_token_or_loopback() {
        assert!(refuse(None, None, true).is_none());
        assert_eq!(refuse(None, None, false).unwrap().status, 403);
        assert_eq!(refuse(Some("s3"), None, true).unwrap().status, 401);
        assert_eq!(
            refuse(Some("s3"), Some(b"Bearer nope"), true)
                .unwrap()
                .status,
            403
        );
        assert_eq!(
            refuse(Some("s3"), Some(b"Basic s3"), false).unwrap().status,
            401
        );
        assert!(refuse(Some("s3"), Some(b"Bearer s3"), false).is_none());
    }
}
