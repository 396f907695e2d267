//! The wiring library of the `biglearn` binary: every role and operator tool, callable
//! from the CLI and from end-to-end tests.
//!
//! Invariants:
//! - This crate is glue: wiring of components, signals, and mapping errors to messages
//!   that tell the operator what to do. Business rules live in the library crates.
//! - `anyhow` is used here and nowhere else.
//!
//! Does not: implement any rule of the domain.
//!
//! Modules, in reading order:
//! - [`run`]: `up` and `serve`: stream store, consumers, writer, HTTP, shutdown.
//! - [`tokens`]: API and admin tokens from the environment or the data directory.
//! - [`kafka_options`]: `--kafka-property`, the stable `client.id`, the schema registry.
//! - [`logging`]: `--log-format text|json`, colour only on a terminal.
//! - [`admin`]: operator commands that call the admin endpoints (`gap`, `dlq`).
//! - [`derived`]: `state-hash` and `rebuild` (offline, or online through a running process).
//! - [`settings`]: `biglearn settings …`, the settings admin endpoints from the command line.
//! - [`publish`]: Tutor requests from a file onto the inbox topic.
//! - [`simulate`]: the Tutor simulator driving a running node.
//! - [`offline`]: the simulator's events written straight into an embedded log.
//! - [`replay`]: the replay benchmark (event-log projection rebuilt from a log).
//! - [`sparfa`]: offline evaluation of the SPARFA models.
//! - [`staging`]: staging on production's topics (read-only), `staging verify`, `results diff`.
//! - [`bench_staging`]: staging's lag behind production under load (BENCHMARKS.md).
//! - [`bench`]: load generators for BENCHMARKS.md (ingest over HTTP, raw appends).
//! - [`bench_latency`]: scheduler latencies (reads at a fixed rate, response → CLUE).

pub mod admin;
pub mod bench;
pub mod bench_latency;
pub mod bench_staging;
pub mod derived;
pub mod kafka_options;
pub mod logging;
pub mod offline;
pub mod publish;
pub mod replay;
pub mod run;
pub mod settings;
pub mod simulate;
pub mod sparfa;
pub mod staging;
pub mod tokens;
