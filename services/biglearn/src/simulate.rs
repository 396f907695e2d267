//! `biglearn simulate`: drives a running Biglearn with a seeded Tutor workload.

use biglearn_stream::clock::now_micros;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use biglearn_simulator::{parse_date_or_datetime, Fault, SimulateConfig, WorkloadConfig};
use clap::Args;

/// Options of `biglearn simulate`.
#[derive(Args, Debug)]
pub struct SimulateArgs {
    /// Base URL of the Biglearn API to drive.
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    target: String,
    /// Number of courses.
    #[arg(long, default_value_t = 10)]
    courses: usize,
    /// Students per course.
    #[arg(long, default_value_t = 20)]
    students_per_course: usize,
    /// Length of the semester in weeks.
    #[arg(long, default_value_t = 4)]
    weeks: u32,
    /// Events per second (default: as fast as the server answers, bounded by --concurrency).
    #[arg(long)]
    rate: Option<f64>,
    /// Most requests in flight at once (a course's requests stay in order).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Seed of the workload: the same seed sends the same events.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The semester's first day (YYYY-MM-DD or a datetime); default: now minus half of --weeks.
    #[arg(long)]
    start: Option<String>,
    /// API token (default: $BIGLEARN_API_TOKEN).
    #[arg(long, env = "BIGLEARN_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Write the events straight into a new embedded log instead of calling a server
    /// (for large histories); needs --data-dir.
    #[arg(long, requires = "data_dir")]
    offline: bool,
    /// With --offline: the data directory to create the log in (must be empty).
    #[arg(long, requires = "offline")]
    data_dir: Option<PathBuf>,
    /// With --offline: the topic prefix of the log.
    #[arg(long, default_value = "biglearn", env = "BIGLEARN_TOPIC_PREFIX")]
    topic_prefix: String,
    /// Fault modes, repeatable: drop|resend|reorder|slow[:probability] (default probability 0.01).
    #[arg(long = "fault")]
    faults: Vec<Fault>,
    /// Write the ground-truth model (JSON) here after the run.
    #[arg(long)]
    truth_out: Option<PathBuf>,
    /// Print the summary as one JSON line instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs the simulation; an unexpected answer or a failed check is an error.
pub async fn run_simulate(args: SimulateArgs) -> anyhow::Result<()> {
    const WEEK_MICROS: i64 = 7 * 24 * 3600 * 1_000_000;
    let now = now_micros();
    let start_micros = match &args.start {
        Some(text) => parse_date_or_datetime(text).with_context(|| {
            format!("--start {text:?} is not a date (YYYY-MM-DD) or a datetime")
        })?,
        None => now - i64::from(args.weeks) * WEEK_MICROS / 2,
    };
    let mut workload = WorkloadConfig::new(
        args.courses,
        args.students_per_course,
        args.weeks,
        args.seed,
        start_micros,
    );
    workload.cutoff_micros = Some(now);
    if args.offline {
        let data_dir = args
            .data_dir
            .context("--offline needs --data-dir (an empty directory for the new log)")?;
        let report = crate::offline::generate_into(workload, &data_dir, &args.topic_prefix).await?;
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    let token = args.token.context(
        "no API token: pass --token or set BIGLEARN_API_TOKEN (biglearn up stores one in <data-dir>/api-token)",
    )?;
    let config = SimulateConfig {
        workload,
        target: args.target,
        token,
        concurrency: args.concurrency.max(1),
        rate: args.rate,
        faults: args.faults,
        truth_out: args.truth_out,
        request_timeout: Duration::from_secs(120),
        slow_delay: Duration::from_secs(2),
    };
    let summary = biglearn_simulator::run_simulation(config).await?;
    if args.json {
        println!("{}", summary.to_json_line());
    } else {
        println!("{}", summary.to_table());
    }
    if !summary.is_success() {
        anyhow::bail!(
            "the simulation saw unexpected answers or failed checks (see the summary above)"
        );
    }
    Ok(())
}
