//! Helpers the article-pattern classes share: the wall clock, JSON bodies,
//! method checks and fixed-width integer encodings.

use serde_json::Value;

use crate::object::{ErrorCode, Request, Response};

/// Milliseconds since the Unix epoch (wall clock).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The request body parsed as JSON, or the 400 to answer with.
pub(crate) fn json_body(req: &Request) -> Result<Value, Response> {
    serde_json::from_slice(&req.body).map_err(|e| {
        Response::error(
            ErrorCode::BadRequest,
            &format!("the body is not valid JSON: {e}"),
        )
    })
}

/// The request body as a JSON object (an empty body counts as `{}`).
pub(crate) fn json_object_body(req: &Request) -> Result<serde_json::Map<String, Value>, Response> {
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    match json_body(req)? {
        Value::Object(m) => Ok(m),
        _ => Err(bad_request("the body must be a JSON object")),
    }
}

/// 400 `bad_request` with `message`.
pub(crate) fn bad_request(message: &str) -> Response {
    Response::error(ErrorCode::BadRequest, message)
}

/// 405 naming the methods the route accepts.
pub(crate) fn method_not_allowed(allowed: &'static str) -> Response {
    let mut r = Response::error(
        ErrorCode::MethodNotAllowed,
        &format!("this route accepts {allowed}"),
    );
    r.headers.push(("allow".into(), allowed.into()));
    r
}

/// 404 for a path the class does not have, listing its routes.
pub(crate) fn no_route(routes: &str) -> Response {
    Response::error(ErrorCode::NotFound, &format!("routes: {routes}"))
}

/// An optional non-negative integer field of `obj` within `min..=max`.
pub(crate) fn opt_u64(
    obj: &serde_json::Map<String, Value>,
    field: &str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, Response> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(bad_request(&format!(
                "{field} must be an integer from {min} to {max}"
            ))),
        },
    }
}

/// An optional integer query parameter within `min..=max`.
pub(crate) fn query_u64(
    req: &Request,
    name: &str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, Response> {
    match req.query_param(name) {
        None => Ok(None),
        Some(v) => match std::str::from_utf8(&v).ok().and_then(|s| s.parse().ok()) {
            Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(bad_request(&format!(
                "{name} must be an integer from {min} to {max}"
            ))),
        },
    }
}

/// `v` as 8 bytes big-endian (so byte order is numeric order).
pub(crate) fn be(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}

/// Reads a big-endian u64 from the first 8 bytes of `b`, if there are 8.
pub(crate) fn read_be(b: &[u8]) -> Option<u64> {
    b.get(..8)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map(u64::from_be_bytes)
}

/// A JSON response from a `serde_json` value.
pub(crate) fn json(status: u16, v: &Value) -> Response {
    Response::json(status, v.to_string())
}
