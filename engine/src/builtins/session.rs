//! `session`: the article's user session, with expiry by alarm. One object per
//! session (name it after the session token).
//!
//! Storage: key `session` holds the session as JSON. `POST /login` creates it
//! and arms the object's alarm at its expiry; `POST /activity` moves both
//! forward; the alarm deletes all of the object's storage once the session
//! has been idle for its TTL. Alarms are durable, so a session whose server
//! was down at its expiry is deleted soon after the restart.
//!
//! The article's sketch compared against `lastActivity` only when a request
//! happened to arrive; here a session also expires with no traffic at all,
//! and a read of a session past its expiry answers 404 even if the alarm has
//! not run yet (alarms fire at or after their time, never before).

use serde_json::{Value, json};

use super::common::{
    bad_request, json, json_object_body, method_not_allowed, no_route, now_ms, opt_u64,
};
use super::storage_error;
use crate::context::Context;
use crate::object::{ErrorCode, LocalFuture, Object, Request, Response};

const ROUTES: &str = "POST /login, POST /activity, POST /logout, GET /";

/// TTL of a session when login does not give one: 30 minutes.
pub const TTL_MS_DEFAULT: u64 = 30 * 60 * 1000;
/// Longest TTL a login may ask for: 30 days.
pub const TTL_MS_MAX: u64 = 30 * 24 * 60 * 60 * 1000;
/// Largest `user` string.
pub const USER_BYTES_MAX: usize = 256;

/// The session class. Keeps nothing in memory.
pub struct Session;

fn not_found() -> Response {
    Response::error(
        ErrorCode::NotFound,
        "no session (never created, logged out or expired)",
    )
}

impl Session {
    /// The live session, or `None` if absent or past its expiry at `now`.
    async fn load(
        ctx: &Context,
        now: u64,
    ) -> Result<Option<serde_json::Map<String, Value>>, Response> {
        let raw = ctx
            .storage()
            .get(b"session")
            .await
            .map_err(|e| storage_error(&e))?;
        let Some(raw) = raw else { return Ok(None) };
        let Ok(Value::Object(s)) = serde_json::from_slice::<Value>(&raw) else {
            return Ok(None);
        };
        let expires = s.get("expires_ms").and_then(Value::as_u64).unwrap_or(0);
        Ok((now < expires).then_some(s))
    }

    fn save(ctx: &Context, s: serde_json::Map<String, Value>) -> Response {
        let expires = s.get("expires_ms").and_then(Value::as_u64).unwrap_or(0);
        let v = Value::Object(s);
        let r = ctx
            .storage()
            .put(b"session", v.to_string().as_bytes())
            .and_then(|()| ctx.set_alarm(expires));
        match r {
            Ok(()) => json(200, &v),
            Err(e) => storage_error(&e),
        }
    }

    fn login(ctx: &Context, req: &Request) -> Response {
        let body = match json_object_body(req) {
            Ok(b) => b,
            Err(r) => return r,
        };
        let user = match body.get("user") {
            Some(Value::String(u)) if !u.is_empty() && u.len() <= USER_BYTES_MAX => u.clone(),
            _ => {
                return bad_request(&format!(
                    "user is required: a string of 1 to {USER_BYTES_MAX} bytes"
                ));
            }
        };
        let ttl = match opt_u64(&body, "ttl_ms", 1, TTL_MS_MAX) {
            Ok(t) => t.unwrap_or(TTL_MS_DEFAULT),
            Err(r) => return r,
        };
        let now = now_ms();
        let mut s = serde_json::Map::new();
        s.insert("user".into(), Value::String(user));
        s.insert(
            "data".into(),
            body.get("data").cloned().unwrap_or(Value::Null),
        );
        s.insert("created_ms".into(), now.into());
        s.insert("last_activity_ms".into(), now.into());
        s.insert("ttl_ms".into(), ttl.into());
        s.insert("expires_ms".into(), (now + ttl).into());
        Self::save(ctx, s)
    }

    async fn activity(ctx: &Context) -> Response {
        let now = now_ms();
        let mut s = match Self::load(ctx, now).await {
            Ok(Some(s)) => s,
            Ok(None) => return not_found(),
            Err(r) => return r,
        };
        let ttl = s
            .get("ttl_ms")
            .and_then(Value::as_u64)
            .unwrap_or(TTL_MS_DEFAULT);
        s.insert("last_activity_ms".into(), now.into());
        s.insert("expires_ms".into(), (now + ttl).into());
        Self::save(ctx, s)
    }
}

impl Object for Session {
    fn fetch<'a>(&'a mut self, ctx: &'a Context, req: Request) -> LocalFuture<'a, Response> {
        Box::pin(async move {
            match (req.path.as_str(), req.method.as_str()) {
                ("/login", "POST") => Self::login(ctx, &req),
                ("/activity", "POST") => Self::activity(ctx).await,
                ("/logout", "POST") => match Self::load(ctx, now_ms()).await {
                    Ok(found) => match ctx.storage().delete_all() {
                        Ok(()) if found.is_some() => json(200, &json!({"logged_out": true})),
                        Ok(()) => not_found(),
                        Err(e) => storage_error(&e),
                    },
                    Err(r) => r,
                },
                ("" | "/", "GET") => match Self::load(ctx, now_ms()).await {
                    Ok(Some(s)) => json(200, &Value::Object(s)),
                    Ok(None) => not_found(),
                    Err(r) => r,
                },
                ("/login" | "/activity" | "/logout", _) => method_not_allowed("POST"),
                ("" | "/", _) => method_not_allowed("GET"),
                _ => no_route(ROUTES),
            }
        })
    }

    fn alarm<'a>(
        &'a mut self,
        ctx: &'a Context,
    ) -> LocalFuture<'a, Result<(), Box<dyn std::error::Error>>> {
        Box::pin(async move {
            let now = now_ms();
            let raw = ctx.storage().get(b"session").await?;
            let expires = raw
                .and_then(|r| serde_json::from_slice::<Value>(&r).ok())
                .and_then(|s| s.get("expires_ms").and_then(Value::as_u64));
            match expires {
                // Activity moved the expiry after this alarm was armed: wait again.
                Some(at) if at > now => ctx.set_alarm(at)?,
                _ => ctx.storage().delete_all()?,
            }
            Ok(())
        })
    }
}
