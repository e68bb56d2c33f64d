//! The built-in object classes the `cairn` server hosts: `counter` and `kv`;
//! the article's patterns (`property`, `ratelimit`, `session`, `events`,
//! `cache`); and the WebSocket classes `echo` and `room`. Their HTTP routes
//! are documented in `docs/HTTP-API.md`.

pub mod cache;
mod common;
pub mod events;
pub mod property;
pub mod ratelimit;
pub mod session;

pub mod echo;
pub mod room;

use bytes::Bytes;

use crate::context::Context;
use crate::object::{
    Classes, ErrorCode, LocalFuture, Object, Request, Response, json_escape, percent_decode,
};
use crate::store::{ListOptions, StorageError};

/// Registers every built-in class in `classes`.
pub fn register(classes: &mut Classes) {
    classes.register("counter", || Counter { value: 0 });
    classes.register("kv", || Kv);
    classes.register("property", || property::Property);
    classes.register("ratelimit", ratelimit::RateLimit::default);
    classes.register("session", || session::Session);
    classes.register("events", events::Events::default);
    classes.register("cache", cache::Cache::default);
    classes.register("echo", || echo::Echo);
    classes.register("room", room::Room::default);
}

/// The response for an upgrade `accept` refused: 503 when the object has
/// all the sockets it may have, else 400.
fn accept_refused(e: &crate::ws::WsError) -> Response {
    match e {
        crate::ws::WsError::TooManySockets { .. } => {
            Response::error(ErrorCode::Overloaded, &e.to_string())
        }
        _ => Response::error(ErrorCode::BadRequest, &e.to_string()),
    }
}

fn storage_error(e: &StorageError) -> Response {
    match e {
        StorageError::KeyTooLarge { .. }
        | StorageError::ValueTooLarge { .. }
        | StorageError::BatchTooLarge { .. } => {
            Response::error(ErrorCode::TooLarge, &e.to_string())
        }
        _ => {
            let reason = e.to_string();
            Response::error(ErrorCode::for_storage_failure(&reason), &reason)
        }
    }
}

/// A signed 64-bit counter. State: key `value`, 8 bytes big-endian, loaded
/// once per activation by `init` (the Durable Objects pattern of a
/// constructor that loads state under `blockConcurrencyWhile`).
pub struct Counter {
    /// The value, as of the latest write.
    value: i64,
}

impl Object for Counter {
    fn init<'a>(
        &'a mut self,
        ctx: &'a Context,
    ) -> LocalFuture<'a, Result<(), Box<dyn std::error::Error>>> {
        Box::pin(async move {
            let v = ctx.storage().get(b"value").await?;
            self.value = v
                .and_then(|b| <[u8; 8]>::try_from(&b[..]).ok())
                .map_or(0, i64::from_be_bytes);
            Ok(())
        })
    }

    fn fetch<'a>(&'a mut self, ctx: &'a Context, req: Request) -> LocalFuture<'a, Response> {
        Box::pin(async move {
            let value = self.value;
            match (req.method.as_str(), req.path.as_str()) {
                ("GET", "" | "/") => value_response(value),
                ("POST", "/increment") => {
                    let by = match req.query_param("by") {
                        None => 1,
                        Some(b) => match std::str::from_utf8(&b)
                            .ok()
                            .and_then(|s| s.parse::<i64>().ok())
                        {
                            Some(by) => by,
                            None => {
                                return Response::error(
                                    ErrorCode::BadRequest,
                                    "by must be a signed 64-bit integer",
                                );
                            }
                        },
                    };
                    let Some(next) = value.checked_add(by) else {
                        return Response::error(
                            ErrorCode::BadRequest,
                            "the counter would overflow",
                        );
                    };
                    if let Err(e) = ctx.storage().put(b"value", &next.to_be_bytes()) {
                        return storage_error(&e);
                    }
                    self.value = next;
                    value_response(next)
                }
                (_, "" | "/" | "/increment") => {
                    Response::error(ErrorCode::MethodNotAllowed, "see docs/HTTP-API.md")
                }
                _ => Response::error(
                    ErrorCode::NotFound,
                    "counter routes: GET /, POST /increment",
                ),
            }
        })
    }
}

/// `200 {"value":N}`, written without the formatting machinery: it answers
/// every counter request.
fn value_response(v: i64) -> Response {
    let mut body = Vec::with_capacity(32);
    body.extend_from_slice(br#"{"value":"#);
    if v < 0 {
        body.push(b'-');
    }
    cairn_proto::http::put_decimal(&mut body, v.unsigned_abs());
    body.push(b'}');
    Response::json(
        200,
        String::from_utf8(body).expect("INVARIANT: ASCII digits and punctuation"),
    )
}

/// A key-value map over the object's storage.
pub struct Kv;

/// A byte string as JSON: a string when it is UTF-8, else `{"hex":"..."}`.
fn json_bytes(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => format!("\"{}\"", json_escape(s)),
        Err(_) => format!(
            r#"{{"hex":"{}"}}"#,
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        ),
    }
}

impl Kv {
    async fn list(&self, ctx: &Context, req: &Request) -> Response {
        let mut opts = ListOptions {
            prefix: req.query_param("prefix"),
            start: req.query_param("start"),
            start_after: req.query_param("start_after"),
            end: req.query_param("end"),
            reverse: req
                .query_param("reverse")
                .is_some_and(|v| v.is_empty() || v == b"true" || v == b"1"),
            limit: None,
        };
        if let Some(l) = req.query_param("limit") {
            match std::str::from_utf8(&l).ok().and_then(|s| s.parse().ok()) {
                Some(l) => opts.limit = Some(l),
                None => {
                    return Response::error(
                        ErrorCode::BadRequest,
                        "limit must be a non-negative integer",
                    );
                }
            }
        }
        match ctx.storage().list(&opts).await {
            Ok(entries) => {
                let items: Vec<String> = entries
                    .iter()
                    .map(|(k, v)| {
                        format!(r#"{{"key":{},"value":{}}}"#, json_bytes(k), json_bytes(v))
                    })
                    .collect();
                Response::json(200, format!(r#"{{"entries":[{}]}}"#, items.join(",")))
            }
            Err(e) => storage_error(&e),
        }
    }

    /// Applies a batch body: one operation per line, `put <key> <value>` or
    /// `delete <key>`, key and value percent-encoded.
    fn batch(&self, ctx: &Context, body: &Bytes) -> Response {
        let Ok(text) = std::str::from_utf8(body) else {
            return Response::error(ErrorCode::BadRequest, "batch body must be UTF-8 text");
        };
        let txn = ctx.storage().transaction();
        let mut n = 0;
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let parts: Vec<&str> = line.split(' ').collect();
            let bad = || {
                Response::error(
                    ErrorCode::BadRequest,
                    &format!("batch line {}: expected `put K V` or `delete K`", i + 1),
                )
            };
            let r = match parts.as_slice() {
                ["put", k, v] => match (percent_decode(k), percent_decode(v)) {
                    (Some(k), Some(v)) => txn.put(&k, &v),
                    _ => return bad(),
                },
                ["delete", k] => match percent_decode(k) {
                    Some(k) => txn.delete(&k),
                    None => return bad(),
                },
                _ => return bad(),
            };
            if let Err(e) = r {
                return storage_error(&e);
            }
            n += 1;
        }
        match txn.commit() {
            Ok(()) => Response::json(200, format!(r#"{{"applied":{n}}}"#)),
            Err(e) => storage_error(&e),
        }
    }
}

impl Object for Kv {
    fn fetch<'a>(&'a mut self, ctx: &'a Context, req: Request) -> LocalFuture<'a, Response> {
        Box::pin(async move {
            if req.path == "/keys" {
                return match req.method.as_str() {
                    "GET" => self.list(ctx, &req).await,
                    _ => Response::error(ErrorCode::MethodNotAllowed, "GET /keys lists"),
                };
            }
            if req.path == "/batch" {
                return match req.method.as_str() {
                    "POST" => self.batch(ctx, &req.body),
                    _ => Response::error(ErrorCode::MethodNotAllowed, "POST /batch"),
                };
            }
            let Some(raw) = req.path.strip_prefix("/keys/") else {
                return Response::error(
                    ErrorCode::NotFound,
                    "kv routes: /keys, /keys/{key}, /batch",
                );
            };
            let Some(key) = percent_decode(raw) else {
                return Response::error(ErrorCode::BadRequest, "the key has a bad percent escape");
            };
            let st = ctx.storage();
            match req.method.as_str() {
                "GET" => match st.get(&key).await {
                    Ok(Some(v)) => {
                        let mut r = Response::new(200, v);
                        r.headers
                            .push(("content-type".into(), "application/octet-stream".into()));
                        r
                    }
                    Ok(None) => Response::error(ErrorCode::NotFound, "no such key"),
                    Err(e) => storage_error(&e),
                },
                "PUT" => match st.put(&key, &req.body) {
                    Ok(()) => Response::json(200, r#"{"ok":true}"#),
                    Err(e) => storage_error(&e),
                },
                "DELETE" => match st.delete(&key) {
                    Ok(existed) => Response::json(200, format!(r#"{{"deleted":{existed}}}"#)),
                    Err(e) => storage_error(&e),
                },
                _ => Response::error(ErrorCode::MethodNotAllowed, "GET, PUT or DELETE a key"),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_values_are_written_as_json_exactly() {
        for v in [0, 7, -1, 10, -10, 1_234_567, i64::MAX, i64::MIN] {
            let r = value_response(v);
            assert_eq!(r.status, 200);
            assert_eq!(&r.body[..], format!(r#"{{"value":{v}}}"#).as_bytes());
            assert_eq!(r.header("content-type"), Some("application/json"));
        }
    }
}
