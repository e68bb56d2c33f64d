//! HTTP/1.1 (RFC 9112): request parsing and response writing for servers,
//! request writing and response parsing for clients.
