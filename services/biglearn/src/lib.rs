//! The library of the `biglearn` binary: the operator tools, callable from the CLI and
//! from end-to-end tests; the node itself is built by `biglearn-node`.
//!
//! Invariants:
//! - This crate is glue: wiring of components, signals, and mapping errors to messages
//!   that tell the operator what to do. Business rules live in the library crates.
//! - `anyhow` is used here and in the crates it calls for wiring (`biglearn-node`,
//!   `biglearn-bench`), nowhere else.
//!
//! Does not: implement any rule of the domain.
//!
//! Modules, in reading order:
//! - [`run`], [`kafka_options`], [`tokens`]: re-exported from `biglearn-node`, the node
//!   builder.
//! - [`logging`]: `--log-format text|json`, colour only on a terminal.
//! - [`admin`]: operator commands that call the admin endpoints (`gap`, `dlq`).
//! - [`rebuild`]: `state-hash` and `rebuild` (offline, or online through a running process).
//! - [`settings_cli`]: `biglearn settings …`, the settings admin endpoints from the command line.
//! - [`publish`]: Tutor requests from a file onto the inbox topic.
//! - [`simulate`]: the Tutor simulator driving a running node.
//! - [`offline`]: the simulator's events written straight into an embedded log.
//! - [`sparfa`]: offline evaluation of the SPARFA models.
//! - [`staging`]: `staging run` over production's topics (read-only), `staging verify`,
//!   `results diff`.
//!
//! The benchmarks (`biglearn bench …`) live in `biglearn-bench`.

pub mod admin;
pub mod logging;
pub mod offline;
pub mod publish;
pub mod rebuild;
pub mod settings_cli;
pub mod simulate;
pub mod sparfa;
pub mod staging;

pub use biglearn_node::{kafka_options, run, tokens};
