//! `cairn-engine`: the Durable Objects engine.

pub mod builtins;
pub mod config;
pub mod context;
pub mod datadir;
pub mod host;
pub mod http;
pub mod id;
pub mod object;
pub mod shard;
pub mod store;
#[cfg(test)]
mod testing;
