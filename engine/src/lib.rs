//! `cairn-engine`: the Durable Objects engine.

pub mod id;
