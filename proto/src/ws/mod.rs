//! WebSocket (RFC 6455): handshake, frame codec, message assembly and the close handshake.
