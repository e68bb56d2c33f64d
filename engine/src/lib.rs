//! `cairn-engine`: the Durable Objects engine.

pub mod config;
pub mod datadir;
pub mod id;
pub mod store;
#[cfg(test)]
mod testing;
