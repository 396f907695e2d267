//! `biglearn bench replay`: rebuilds a projection (the state projection by default, or the
//! event log) from an embedded log into fresh sled state and times it, beside a raw sled
//! batch insert of as many keys.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use biglearn_domain::events::StreamKind;
use biglearn_projector::consumer::{
    run_event_log_consumer, ConsumerProgress, EventLogConsumerConfig,
};
use biglearn_projector::event_log::EventLog;
use biglearn_projector::state::consumer::{run_state_consumer, StateConsumerConfig};
use biglearn_projector::state::StateProjection;
use biglearn_stream::embedded::EmbeddedStore;
use biglearn_stream::{SharedStreamStore, Topics};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tokio::sync::watch;

/// Options of `biglearn bench replay`.
#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// The data directory whose embedded log (`<data-dir>/log`) to replay; no process may
    /// be using it. The rebuilt state goes to a scratch directory inside it, removed after.
    #[arg(long)]
    data_dir: PathBuf,
    /// Topic prefix of the log.
    #[arg(long, default_value = "biglearn", env = "BIGLEARN_TOPIC_PREFIX")]
    topic_prefix: String,
    /// Records per consumer batch (one sled batch each).
    #[arg(long, default_value_t = 5000)]
    batch: usize,
    /// Which projection to rebuild.
    #[arg(long, value_enum, default_value_t = ReplayedProjection::State)]
    projection: ReplayedProjection,
}

/// The projections `bench replay` can rebuild.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReplayedProjection {
    /// Courses, rosters, assignments, responses and content, in sequence order.
    State,
    /// Every event by slot, identities and gaps (the API's index).
    EventLog,
}

fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Runs the replay benchmark and prints one JSON line.
pub async fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let log_dir = args.data_dir.join("log");
    let open_dir = log_dir.clone();
    let store: SharedStreamStore = Arc::new(
        tokio::task::spawn_blocking(move || EmbeddedStore::open(&open_dir))
            .await?
            .with_context(|| format!("cannot open the embedded log at {}", log_dir.display()))?,
    );
    let topics = Topics::new(args.topic_prefix.clone());
    let scratch = args.data_dir.join(format!("replay-{}", std::process::id()));
    let db = sled::Config::new()
        .path(&scratch)
        .open()
        .with_context(|| format!("cannot create scratch state in {}", scratch.display()))?;
    let log = EventLog::open(&db, "event_log")?;
    let state = StateProjection::open(&db, "state")?;
    let mut n_records = 0i64;
    for topic in [topics.course_events(), topics.ecosystem_events()] {
        n_records += store.high_watermarks(&topic).await?.iter().sum::<i64>();
    }
    let progress_bar = ProgressBar::new(n_records.max(1) as u64);
    progress_bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {human_pos}/{human_len} events ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );

    let started = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut progresses = Vec::new();
    for (stream, topic) in [
        (StreamKind::Ecosystem, topics.ecosystem_events()),
        (StreamKind::Course, topics.course_events()),
    ] {
        let (progress_tx, progress_rx) = watch::channel(ConsumerProgress::default());
        progresses.push(progress_rx);
        if args.projection == ReplayedProjection::State {
            tasks.push(tokio::spawn(run_state_consumer(
                state.clone(),
                store.clone(),
                StateConsumerConfig {
                    checkpoint: Default::default(),
                    component: "projector".into(),
                    stream,
                    topic: topic.clone(),
                    dlq_topic: topics.dlq(),
                    max_batch: args.batch,
                    poll_timeout: Duration::from_millis(50),
                    stop_when_caught_up: false,
                    write_dead_letters: true,
                    metrics: biglearn_telemetry::Metrics::new(env!("CARGO_PKG_VERSION")),
                    hook: None,
                },
                progress_tx,
                stop_rx.clone(),
            )));
            continue;
        }
        tasks.push(tokio::spawn(run_event_log_consumer(
            log.clone(),
            store.clone(),
            EventLogConsumerConfig {
                checkpoint: Default::default(),
                write_dead_letters: true,
                component: "event_log".into(),
                stream,
                topic: topic.clone(),
                dlq_topic: topics.dlq(),
                max_batch: args.batch,
                poll_timeout: Duration::from_millis(50),
                metrics: biglearn_telemetry::Metrics::new(env!("CARGO_PKG_VERSION")),
            },
            progress_tx,
            stop_rx.clone(),
        )));
    }
    // Wait (bounded by progress: it stops when no consumer advances for 60 s).
    let mut last_applied = -1i64;
    let mut last_change = Instant::now();
    loop {
        let applied: i64 = progresses
            .iter()
            .map(|progress| progress.borrow().positions.iter().sum::<i64>())
            .sum();
        progress_bar.set_position(applied.max(0) as u64);
        if applied >= n_records
            && progresses
                .iter()
                .all(|progress| progress.borrow().caught_up)
        {
            break;
        }
        if applied != last_applied {
            last_applied = applied;
            last_change = Instant::now();
        } else if last_change.elapsed() > Duration::from_secs(60) {
            anyhow::bail!("the replay stopped advancing at {applied} of {n_records} events");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let replay_seconds = started.elapsed().as_secs_f64();
    progress_bar.finish_and_clear();
    stop_tx.send_replace(true);
    for task in tasks {
        task.await??;
    }
    db.flush_async().await?;
    let replay_peak_rss = peak_rss_bytes();
    let state_hash = match args.projection {
        ReplayedProjection::State => Some(state.state_hash()?),
        ReplayedProjection::EventLog => None,
    };
    drop(log);
    drop(state);
    drop(db);

    // Baseline: as many keys inserted raw into a fresh sled tree, in batches of the same size.
    let baseline_dir = args
        .data_dir
        .join(format!("replay-baseline-{}", std::process::id()));
    let baseline_db = sled::Config::new().path(&baseline_dir).open()?;
    let tree = baseline_db.open_tree("raw")?;
    // About the size of the rows each projection writes per event.
    let value_len = match args.projection {
        ReplayedProjection::State => 100,
        ReplayedProjection::EventLog => 300,
    };
    let value = vec![b'x'; value_len];
    let started = Instant::now();
    let mut batch = sled::Batch::default();
    for idx in 0..n_records {
        let mut key = Vec::with_capacity(26);
        key.extend_from_slice(b"Ec");
        key.extend_from_slice(
            &(idx as u128)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .to_be_bytes(),
        );
        key.extend_from_slice(&idx.to_be_bytes());
        batch.insert(key, value.clone());
        if (idx + 1) % args.batch as i64 == 0 {
            tree.apply_batch(std::mem::take(&mut batch))?;
        }
    }
    tree.apply_batch(batch)?;
    baseline_db.flush_async().await?;
    let baseline_seconds = started.elapsed().as_secs_f64();
    drop(tree);
    drop(baseline_db);
    let _ = std::fs::remove_dir_all(&scratch);
    let _ = std::fs::remove_dir_all(&baseline_dir);

    let events_per_s = n_records as f64 / replay_seconds.max(1e-9);
    let baseline_per_s = n_records as f64 / baseline_seconds.max(1e-9);
    println!(
        "{}",
        json!({
            "bench": "replay",
            "projection": match args.projection {
                ReplayedProjection::State => "state",
                ReplayedProjection::EventLog => "event_log",
            },
            "state_hash": state_hash,
            "events": n_records,
            "seconds": (replay_seconds * 1000.0).round() / 1000.0,
            "events_per_s": events_per_s.round(),
            "peak_rss_bytes": replay_peak_rss,
            "baseline": format!("raw sled batch insert, same key count, {value_len}-byte values"),
            "baseline_seconds": (baseline_seconds * 1000.0).round() / 1000.0,
            "baseline_keys_per_s": baseline_per_s.round(),
            "ratio_to_baseline": ((events_per_s / baseline_per_s) * 1000.0).round() / 1000.0,
        })
    );
    Ok(())
}

/// Options of `biglearn bench read`.
#[derive(Args, Debug)]
pub struct ReadArgs {
    /// The data directory whose embedded log (`<data-dir>/log`) to read.
    #[arg(long)]
    data_dir: PathBuf,
    /// Topic prefix of the log.
    #[arg(long, default_value = "biglearn", env = "BIGLEARN_TOPIC_PREFIX")]
    topic_prefix: String,
    /// Records per poll.
    #[arg(long, default_value_t = 10_000)]
    batch: usize,
}

/// Counts what it is offered and keeps nothing: the consumer runtime's cost alone.
struct Discard;

#[async_trait::async_trait]
impl biglearn_runtime::Projection<biglearn_projector::decoded::DecodedEvent> for Discard {
    fn positions(
        &self,
        _topic: &str,
        n_partitions: i32,
    ) -> Result<Vec<i64>, biglearn_runtime::ApplyError> {
        Ok(vec![0; n_partitions as usize])
    }

    async fn apply(
        &self,
        batch: &biglearn_runtime::Batch<'_, biglearn_projector::decoded::DecodedEvent>,
    ) -> Result<biglearn_runtime::Applied, biglearn_runtime::ApplyError> {
        Ok(biglearn_runtime::Applied {
            n_applied: batch.records.len() as u64,
            ..Default::default()
        })
    }
}

/// `biglearn bench read`: reads and decodes every event of an embedded log through the
/// consumer runtime and applies nothing — the ceiling a rebuild is measured against.
pub async fn read(args: ReadArgs) -> anyhow::Result<()> {
    let log_dir = args.data_dir.join("log");
    let open_dir = log_dir.clone();
    let store: SharedStreamStore = Arc::new(
        tokio::task::spawn_blocking(move || EmbeddedStore::open(&open_dir))
            .await?
            .with_context(|| format!("cannot open the embedded log at {}", log_dir.display()))?,
    );
    let topics = Topics::new(args.topic_prefix.clone());
    let started = Instant::now();
    let mut events = 0u64;
    for (stream, topic) in [
        (StreamKind::Ecosystem, topics.ecosystem_events()),
        (StreamKind::Course, topics.course_events()),
    ] {
        let (progress_tx, progress_rx) = watch::channel(ConsumerProgress::default());
        let (_stop, stop_rx) = watch::channel(false);
        biglearn_runtime::TopicConsumer::new(
            topic,
            "bench_read",
            biglearn_projector::decoded::decoder(stream),
        )
        .feed("bench_read", Arc::new(Discard), progress_tx)
        .options(biglearn_runtime::RunOptions {
            max_batch: args.batch,
            stop_when_caught_up: true,
            ..Default::default()
        })
        .run(store.clone(), stop_rx)
        .await?;
        events += progress_rx.borrow().n_applied;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({
            "bench": "read",
            "what": "read and decode every event record through the consumer runtime, apply nothing",
            "events": events,
            "seconds": (seconds * 1000.0).round() / 1000.0,
            "events_per_s": (events as f64 / seconds.max(1e-9)).round(),
            "peak_rss_bytes": peak_rss_bytes(),
        })
    );
    Ok(())
}
