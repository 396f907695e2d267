//! The benchmarks of BENCHMARKS.md behind `biglearn bench …` (and `biglearn staging
//! bench-lag`): load generators and latency probes that print one JSON line each, beside a
//! baseline measured in the same run.
//!
//! Invariants:
//! - Each benchmark prints JSON lines on stdout, with the baseline its doc names measured
//!   in the same run.
//! - A failed request makes the run an error.
//!
//! Does not: run in production (no role of a node uses it); it drives nodes over HTTP, or
//! builds one through `biglearn-node`, like any client.
//!
//! Modules, in reading order:
//! - [`measure`]: latency percentiles, the API token, /metrics scrapes.
//! - [`load`]: `bench ingest` (HTTP) and `bench append` (raw appends).
//! - [`replay`]: `bench replay` and `bench read` (rebuilding from an embedded log).
//! - [`scheduler`]: `bench scheduler` (read latency, response → served CLUE).
//! - [`staging_lag`]: `staging bench-lag` (staging's lag behind production under load).

use clap::Subcommand;

pub mod load;
pub mod measure;
pub mod replay;
pub mod scheduler;
pub mod staging_lag;

/// `biglearn bench …`
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// record_responses over HTTP against a running server, after a /ping baseline of as
    /// many requests (the HTTP ceiling) in the same run.
    Ingest(load::IngestArgs),
    /// Raw appends of encoded record_response events to a fresh embedded store: the
    /// ingest baseline without HTTP, validation or the writer's index.
    Append(load::AppendArgs),
    /// Rebuild of the event-log projection from an embedded log (e.g. one written by
    /// `biglearn simulate --offline`), beside a raw sled batch insert of as many keys.
    Replay(replay::ReplayArgs),
    /// Read and decode every event of an embedded log through the consumer runtime,
    /// applying nothing: the ceiling of a rebuild of the same log.
    Read(replay::ReadArgs),
    /// Scheduler latencies: fetch_student_clues and fetch_assignment_pes at a fixed
    /// request rate beside a /ping baseline, then response → served CLUE under
    /// simulator load, measured with probe courses of its own.
    Scheduler(scheduler::SchedulerBenchArgs),
}

/// Runs a benchmark and prints its JSON line; an error if any request failed.
pub async fn run_bench(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Ingest(args) => load::ingest(args).await,
        BenchCommand::Append(args) => load::append(args).await,
        BenchCommand::Replay(args) => replay::replay(args).await,
        BenchCommand::Read(args) => replay::read(args).await,
        BenchCommand::Scheduler(args) => scheduler::scheduler_bench(args).await,
    }
}
