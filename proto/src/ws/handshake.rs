//! The opening handshake (RFC 6455 §4): server-side request validation and
//! response, client-side request and response validation, and the accept key.
//!
//! Headers arrive as plain `(name, value)` pairs with the method and HTTP
//! version, so any HTTP layer can call this; it does not parse HTTP itself.

use std::fmt;

use super::base64;
use super::sha1::sha1;

/// The GUID that RFC 6455 §1.3 appends to the client's key.
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Computes `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` value:
/// base64(SHA-1(key + GUID)), always 28 ASCII bytes.
pub fn accept_key(key: &[u8]) -> [u8; 28] {
    let mut input = Vec::with_capacity(key.len() + GUID.len());
    input.extend_from_slice(key);
    input.extend_from_slice(GUID);
    let mut encoded = Vec::with_capacity(28);
    base64::encode_into(&sha1(&input), &mut encoded);
    let mut out = [0u8; 28];
    out.copy_from_slice(&encoded);
    out
}

/// Why a handshake was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The request method is not GET.
    MethodNotGet,
    /// The request is not HTTP/1.1 or later.
    HttpVersionTooOld,
    /// No `Upgrade: websocket` header.
    MissingUpgrade,
    /// No `Connection` header containing the `upgrade` token.
    MissingConnectionUpgrade,
    /// No `Sec-WebSocket-Key`, or more than one.
    MissingKey,
    /// A `Sec-WebSocket-Key` that is not base64 of 16 bytes.
    BadKey,
    /// `Sec-WebSocket-Version` missing or not 13; answer 426 with
    /// `Sec-WebSocket-Version: 13`.
    UnsupportedVersion,
    /// (Client) the response status is not 101.
    StatusNot101(u16),
    /// (Client) `Sec-WebSocket-Accept` is missing or does not match our key.
    BadAccept,
    /// (Client) the server selected an extension or subprotocol we never offered.
    UnrequestedExtension,
}

impl HandshakeError {
    /// The HTTP status a server answers this refusal with.
    pub fn status(&self) -> u16 {
        match self {
            HandshakeError::MethodNotGet => 405,
            HandshakeError::UnsupportedVersion => 426,
            _ => 400,
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::MethodNotGet => f.write_str("websocket handshake must use GET"),
            HandshakeError::HttpVersionTooOld => f.write_str("websocket handshake needs HTTP/1.1"),
            HandshakeError::MissingUpgrade => f.write_str("missing `Upgrade: websocket`"),
            HandshakeError::MissingConnectionUpgrade => {
                f.write_str("missing `Connection: upgrade`")
            }
            HandshakeError::MissingKey => f.write_str("missing or repeated Sec-WebSocket-Key"),
            HandshakeError::BadKey => f.write_str("Sec-WebSocket-Key is not base64 of 16 bytes"),
            HandshakeError::UnsupportedVersion => f.write_str("Sec-WebSocket-Version must be 13"),
            HandshakeError::StatusNot101(s) => {
                write!(f, "handshake response status {s}, expected 101")
            }
            HandshakeError::BadAccept => f.write_str("Sec-WebSocket-Accept does not match the key"),
            HandshakeError::UnrequestedExtension => {
                f.write_str("server chose an extension or subprotocol we did not offer")
            }
        }
    }
}

impl std::error::Error for HandshakeError {}

/// True if the comma-separated header `value` contains `token`, ignoring ASCII case.
fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

fn values<'a>(
    headers: &'a [(&'a str, &'a [u8])],
    name: &'a str,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

/// A validated upgrade request; holds what the response needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerAccept {
    accept: [u8; 28],
}

impl ServerAccept {
    /// The `Sec-WebSocket-Accept` value.
    pub fn accept_value(&self) -> &str {
        std::str::from_utf8(&self.accept).expect("base64 is ASCII")
    }

    /// Appends the whole `101 Switching Protocols` response head to `out`.
    /// No extension and no subprotocol is ever selected.
    pub fn write_response(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n");
        out.extend_from_slice(b"Connection: Upgrade\r\nSec-WebSocket-Accept: ");
        out.extend_from_slice(&self.accept);
        out.extend_from_slice(b"\r\n\r\n");
    }
}

/// Validates a client's upgrade request (RFC 6455 §4.2.1).
///
/// `version_minor` is the HTTP/1.x minor version as `httparse` reports it
/// (1 for HTTP/1.1). Header names match case-insensitively; `Connection` and
/// `Upgrade` are token lists. `Sec-WebSocket-Extensions` and
/// `Sec-WebSocket-Protocol` are ignored: none is ever negotiated.
pub fn validate_request(
    method: &str,
    version_minor: u8,
    headers: &[(&str, &[u8])],
) -> Result<ServerAccept, HandshakeError> {
    if method != "GET" {
        return Err(HandshakeError::MethodNotGet);
    }
    if version_minor < 1 {
        return Err(HandshakeError::HttpVersionTooOld);
    }
    if !values(headers, "upgrade").any(|v| has_token(v, "websocket")) {
        return Err(HandshakeError::MissingUpgrade);
    }
    if !values(headers, "connection").any(|v| has_token(v, "upgrade")) {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    let mut keys = values(headers, "sec-websocket-key");
    let (Some(key), None) = (keys.next(), keys.next()) else {
        return Err(HandshakeError::MissingKey);
    };
    let key = key.trim_ascii();
    if base64::decode(key).is_none_or(|k| k.len() != 16) {
        return Err(HandshakeError::BadKey);
    }
    let mut versions = values(headers, "sec-websocket-version");
    if !matches!((versions.next(), versions.next()), (Some(v), None) if v.trim_ascii() == b"13") {
        return Err(HandshakeError::UnsupportedVersion);
    }
    Ok(ServerAccept {
        accept: accept_key(key),
    })
}

/// Appends the refusal for `err` to `out`: its status, `Sec-WebSocket-Version: 13`
/// for a version mismatch, and `Connection: close`.
pub fn write_rejection(err: HandshakeError, out: &mut Vec<u8>) {
    let (status, reason) = match err.status() {
        405 => (405, "Method Not Allowed"),
        426 => (426, "Upgrade Required"),
        _ => (400, "Bad Request"),
    };
    out.extend_from_slice(format!("HTTP/1.1 {status} {reason}\r\n").as_bytes());
    if status == 426 {
        out.extend_from_slice(b"Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n");
    }
    if status == 405 {
        out.extend_from_slice(b"Allow: GET\r\n");
    }
    out.extend_from_slice(b"Content-Length: 0\r\nConnection: close\r\n\r\n");
}

/// The client side of the handshake: writes the request and checks the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHandshake {
    key: Vec<u8>,
}

impl ClientHandshake {
    /// A handshake using `nonce` as the key. The nonce must be 16 random bytes
    /// chosen per connection (RFC 6455 §4.1); the caller supplies them because
    /// `proto` has no source of randomness.
    pub fn new(nonce: [u8; 16]) -> Self {
        let mut key = Vec::with_capacity(24);
        base64::encode_into(&nonce, &mut key);
        ClientHandshake { key }
    }

    /// The `Sec-WebSocket-Key` value this handshake sends.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// Appends the upgrade request for `host` (the Host header value) and
    /// `target` (the request target, e.g. `/chat?x=1`) to `out`.
    pub fn write_request(&self, host: &str, target: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n").as_bytes());
        out.extend_from_slice(b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ");
        out.extend_from_slice(&self.key);
        out.extend_from_slice(b"\r\nSec-WebSocket-Version: 13\r\n\r\n");
    }

    /// Validates the server's response head (RFC 6455 §4.1, client steps 1-6).
    pub fn validate_response(
        &self,
        status: u16,
        headers: &[(&str, &[u8])],
    ) -> Result<(), HandshakeError> {
        if status != 101 {
            return Err(HandshakeError::StatusNot101(status));
        }
        if !values(headers, "upgrade").any(|v| has_token(v, "websocket")) {
            return Err(HandshakeError::MissingUpgrade);
        }
        if !values(headers, "connection").any(|v| has_token(v, "upgrade")) {
            return Err(HandshakeError::MissingConnectionUpgrade);
        }
        let expected = accept_key(&self.key);
        let mut accepts = values(headers, "sec-websocket-accept");
        if !matches!((accepts.next(), accepts.next()), (Some(a), None) if a.trim_ascii() == expected)
        {
            return Err(HandshakeError::BadAccept);
        }
        let offered_nothing = |name| values(headers, name).all(|v| v.trim_ascii().is_empty());
        if !offered_nothing("sec-websocket-extensions")
            || !offered_nothing("sec-websocket-protocol")
        {
            return Err(HandshakeError::UnrequestedExtension);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_the_rfc_6455_example() {
        assert_eq!(
            &accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    const KEY: &[u8] = b"dGhlIHNhbXBsZSBub25jZQ==";

    fn good() -> Vec<(&'static str, &'static [u8])> {
        vec![
            ("Host", b"example.com"),
            ("Upgrade", b"websocket"),
            ("Connection", b"Upgrade"),
            ("Sec-WebSocket-Key", KEY),
            ("Sec-WebSocket-Version", b"13"),
        ]
    }

    /// Replaces (or with `None`, removes) header `name` in the good request.
    fn with(name: &str, value: Option<&'static [u8]>) -> Vec<(&'static str, &'static [u8])> {
        let mut h: Vec<_> = good()
            .into_iter()
            .filter(|(n, _)| !n.eq_ignore_ascii_case(name))
            .collect();
        if let Some(v) = value {
            h.push((Box::leak(name.to_string().into_boxed_str()), v));
        }
        h
    }

    fn check(
        method: &str,
        minor: u8,
        headers: &[(&str, &[u8])],
        expected: Result<&str, HandshakeError>,
    ) {
        let got = validate_request(method, minor, headers);
        assert_eq!(
            got.as_ref().map(|a| a.accept_value()).map_err(|e| *e),
            expected,
            "{method} 1.{minor} {headers:?}"
        );
    }

    #[test]
    fn valid_upgrade_requests_are_accepted() {
        let ok = Ok("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        check("GET", 1, &good(), ok);
        check(
            "GET",
            1,
            &with("Connection", Some(b"keep-alive, Upgrade")),
            ok,
        );
        check("GET", 1, &with("connection", Some(b"UPGRADE")), ok);
        check("GET", 1, &with("Upgrade", Some(b"WebSocket")), ok);
        check(
            "GET",
            1,
            &with("Sec-WebSocket-Key", Some(b" dGhlIHNhbXBsZSBub25jZQ== ")),
            ok,
        );
    }

    #[test]
    fn invalid_upgrade_requests_are_refused_with_the_reason() {
        use HandshakeError as H;
        check("POST", 1, &good(), Err(H::MethodNotGet));
        check("GET", 0, &good(), Err(H::HttpVersionTooOld));
        check("GET", 1, &with("Upgrade", None), Err(H::MissingUpgrade));
        check(
            "GET",
            1,
            &with("Upgrade", Some(b"h2c")),
            Err(H::MissingUpgrade),
        );
        check(
            "GET",
            1,
            &with("Connection", None),
            Err(H::MissingConnectionUpgrade),
        );
        check(
            "GET",
            1,
            &with("Connection", Some(b"keep-alive")),
            Err(H::MissingConnectionUpgrade),
        );
        check(
            "GET",
            1,
            &with("Sec-WebSocket-Key", None),
            Err(H::MissingKey),
        );
        check(
            "GET",
            1,
            &with("Sec-WebSocket-Key", Some(b"dGhlIHNhbXBsZQ==")),
            Err(H::BadKey),
        );
        check(
            "GET",
            1,
            &with("Sec-WebSocket-Key", Some(b"not base64 at all!!!!!!!")),
            Err(H::BadKey),
        );
        check(
            "GET",
            1,
            &with("Sec-WebSocket-Version", None),
            Err(H::UnsupportedVersion),
        );
        check(
            "GET",
            1,
            &with("Sec-WebSocket-Version", Some(b"8")),
            Err(H::UnsupportedVersion),
        );
        let mut two_keys = good();
        two_keys.push(("Sec-WebSocket-Key", KEY));
        check("GET", 1, &two_keys, Err(H::MissingKey));
    }

    #[test]
    fn refusals_carry_their_status() {
        let mut out = Vec::new();
        write_rejection(HandshakeError::UnsupportedVersion, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 426 ") && text.contains("Sec-WebSocket-Version: 13\r\n"),
            "{text}"
        );
        assert_eq!(HandshakeError::BadKey.status(), 400);
        assert_eq!(HandshakeError::MethodNotGet.status(), 405);
    }

    #[test]
    fn client_request_and_server_response_agree() {
        let client = ClientHandshake::new(*b"the sample nonce");
        assert_eq!(client.key(), KEY);
        let mut req = Vec::new();
        client.write_request("example.com", "/chat", &mut req);
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut parsed = httparse::Request::new(&mut headers);
        assert!(parsed.parse(&req).unwrap().is_complete());
        let pairs: Vec<(&str, &[u8])> = parsed.headers.iter().map(|h| (h.name, h.value)).collect();
        let accept =
            validate_request(parsed.method.unwrap(), parsed.version.unwrap(), &pairs).unwrap();
        let mut resp = Vec::new();
        accept.write_response(&mut resp);
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut parsed = httparse::Response::new(&mut headers);
        assert!(parsed.parse(&resp).unwrap().is_complete());
        let pairs: Vec<(&str, &[u8])> = parsed.headers.iter().map(|h| (h.name, h.value)).collect();
        assert_eq!(
            client.validate_response(parsed.code.unwrap(), &pairs),
            Ok(())
        );
    }

    #[test]
    fn client_refuses_bad_responses() {
        use HandshakeError as H;
        let client = ClientHandshake::new(*b"the sample nonce");
        let accept: &[u8] = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
        let base = [
            ("Upgrade", &b"websocket"[..]),
            ("Connection", b"Upgrade"),
            ("Sec-WebSocket-Accept", accept),
        ];
        assert_eq!(
            client.validate_response(200, &base),
            Err(H::StatusNot101(200))
        );
        assert_eq!(
            client.validate_response(101, &base[1..]),
            Err(H::MissingUpgrade)
        );
        assert_eq!(
            client.validate_response(101, &[base[0], base[2]]),
            Err(H::MissingConnectionUpgrade)
        );
        assert_eq!(client.validate_response(101, &base[..2]), Err(H::BadAccept));
        let wrong = [
            base[0],
            base[1],
            ("Sec-WebSocket-Accept", &b"AAAAAAAAAAAAAAAAAAAAAAAAAAA="[..]),
        ];
        assert_eq!(client.validate_response(101, &wrong), Err(H::BadAccept));
        let ext = [
            base[0],
            base[1],
            base[2],
            ("Sec-WebSocket-Extensions", &b"permessage-deflate"[..]),
        ];
        assert_eq!(
            client.validate_response(101, &ext),
            Err(H::UnrequestedExtension)
        );
    }
}
