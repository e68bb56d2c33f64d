//! The `cairn` server binary.
fn main() {}
