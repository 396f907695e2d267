//! The node builder: opens one process's stream store and sled, then assembles its roles
//! (writer, reader, projector, sparfa) one by one, serves HTTP and stops in order.
//!
//! Invariants:
//! - Glue only: wiring of components, signals and operator-facing error messages; the
//!   rules live in the library crates.
//! - A component that fails fatally stops the whole process (non-zero exit); transient
//!   errors are retried inside the component.
//!
//! Does not: parse a command line (the `biglearn` binary does) or implement any rule of
//! the domain.
//!
//! Modules, in reading order:
//! - [`config`]: roles, backends and the `RunConfig` of one process.
//! - [`run`]: `up` and `serve`: stream store, consumers, writer, HTTP, shutdown.
//! - [`derived`]: the runtime of derived-state consumers, below the request path's priority.
//! - [`kafka_options`]: `--kafka-property`, the stable `client.id`, the schema registry.
//! - [`staging`]: the split store of a staging node (production's topics read-only).
//! - [`tokens`]: API and admin tokens from the environment or the data directory.

pub mod config;
pub mod derived;
pub mod kafka_options;
pub mod run;
pub mod staging;
pub mod tokens;
