//! Shared harness for Cairn's end-to-end tests.
//!
//! The tests in `tests/tests/` start a real `cairn` process and talk to it
//! over loopback sockets with clients that share no code with the server's
//! request path, so they catch what unit tests of one layer cannot. The
//! `tidy` test lives here too: it reads the repository itself and enforces
//! the conventions in `docs/ARCHITECTURE.md`.
