//! `property`: the article's property manager. One JSON document per object
//! and the time it was last updated.
//!
//! Storage: key `doc` holds the document as JSON text, key `updated` the
//! update time (8 bytes big-endian ms). Both are written by one `put_many`,
//! so they are never seen out of step, even after a crash.
//!
//! The article's sketch stored whatever the body was; here an update that is
//! not valid JSON is refused with 400 and changes nothing.

use serde_json::{Value, json};

use super::common::{bad_request, json, json_body, method_not_allowed, no_route, now_ms, read_be};
use super::storage_error;
use crate::context::Context;
use crate::object::{ErrorCode, LocalFuture, Object, Request, Response};

const ROUTES: &str = "GET|PUT|PATCH|DELETE /, POST /update";

/// The property manager class. Stateless in memory: every read goes to
/// storage, which serves recent writes from memory anyway.
pub struct Property;

impl Property {
    async fn load(ctx: &Context) -> Result<Option<(Value, u64)>, Response> {
        let got = ctx
            .storage()
            .get_many(&[b"doc", b"updated"])
            .await
            .map_err(|e| storage_error(&e))?;
        let (Some(doc), Some(updated)) = (&got[0], &got[1]) else {
            return Ok(None);
        };
        // Only this class writes these keys, always valid JSON; a failure here
        // means the data was changed behind the class's back (e.g. an import).
        let doc: Value = serde_json::from_slice(doc).map_err(|e| {
            Response::error(
                ErrorCode::StorageFailed,
                &format!("the stored document is not JSON: {e}"),
            )
        })?;
        Ok(Some((doc, read_be(updated).unwrap_or(0))))
    }

    fn save(ctx: &Context, doc: &Value) -> Response {
        let now = now_ms();
        let text = doc.to_string();
        match ctx
            .storage()
            .put_many(&[(b"doc", text.as_bytes()), (b"updated", &now.to_be_bytes())])
        {
            Ok(()) => json(200, &json!({"doc": doc, "updated_ms": now})),
            Err(e) => storage_error(&e),
        }
    }

    async fn patch(ctx: &Context, req: &Request) -> Response {
        let patch = match json_body(req) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return bad_request("a PATCH body must be a JSON object"),
            Err(r) => return r,
        };
        let mut doc = match Self::load(ctx).await {
            Ok(Some((Value::Object(d), _))) => d,
            Ok(Some(_)) => {
                return bad_request("the stored document is not an object; PUT a new one");
            }
            Ok(None) => serde_json::Map::new(),
            Err(r) => return r,
        };
        for (k, v) in patch {
            if v.is_null() {
                doc.remove(&k);
            } else {
                doc.insert(k, v);
            }
        }
        Self::save(ctx, &Value::Object(doc))
    }
}

impl Object for Property {
    fn fetch<'a>(&'a mut self, ctx: &'a Context, req: Request) -> LocalFuture<'a, Response> {
        Box::pin(async move {
            match (req.path.as_str(), req.method.as_str()) {
                ("" | "/", "GET") => match Self::load(ctx).await {
                    Ok(Some((doc, updated))) => {
                        json(200, &json!({"doc": doc, "updated_ms": updated}))
                    }
                    Ok(None) => Response::error(ErrorCode::NotFound, "no document yet; PUT one"),
                    Err(r) => r,
                },
                ("" | "/", "PUT") | ("/update", "POST") => match json_body(&req) {
                    Ok(doc) => Self::save(ctx, &doc),
                    Err(r) => r,
                },
                ("" | "/", "PATCH") => Self::patch(ctx, &req).await,
                ("" | "/", "DELETE") => {
                    match ctx.storage().delete_many(&[b"doc", b"updated"]).await {
                        Ok(n) => json(200, &json!({"deleted": n > 0})),
                        Err(e) => storage_error(&e),
                    }
                }
                ("" | "/", _) => method_not_allowed("GET, PUT, PATCH, DELETE"),
                ("/update", _) => method_not_allowed("POST"),
                _ => no_route(ROUTES),
            }
        })
    }
}
