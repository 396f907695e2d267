//! The `biglearn` binary (to be written).
fn main() {}
