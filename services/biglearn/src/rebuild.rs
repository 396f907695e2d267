//! Derived-state tools: `biglearn state-hash` and `biglearn rebuild` (process stopped, or
//! `--online` through a running process's admin endpoint).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use biglearn_domain::events::StreamKind;
use biglearn_projector::consumer::{ConsumerProgress, EventLogConsumerConfig, EventLogProjection};
use biglearn_projector::decoded::decoder;
use biglearn_projector::event_log::EventLog;
use biglearn_projector::overlay::CheckpointPolicy;
use biglearn_projector::results::{decode_result, ResultsProjection};
use biglearn_projector::service::{combined_hash, state_hash_parts, Generations, EVENT_LOG, STATE};
use biglearn_projector::state::consumer::{StateApplier, StateConsumerConfig};
use biglearn_projector::state::StateProjection;
use biglearn_runtime::{RunOptions, TopicConsumer};
use biglearn_stream::Topics;
use biglearn_telemetry::Metrics;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::watch;

use crate::run::{open_store, RunConfig};

/// Opens the sled state of a stopped process.
pub fn open_state_db(data_dir: &Path) -> anyhow::Result<sled::Db> {
    let state_dir = data_dir.join("state");
    if !state_dir.exists() {
        anyhow::bail!(
            "{} has no state; pass the --data-dir of a biglearn process",
            data_dir.display()
        );
    }
    sled::Config::new().path(&state_dir).open().with_context(|| {
        format!(
            "cannot open {}; stop the biglearn process that uses it first (or use `biglearn rebuild --online`)",
            state_dir.display()
        )
    })
}

/// `biglearn state-hash`: prints the digest of the derived state (and, with `parts`, the
/// digest of each part).
pub fn print_state_hash(data_dir: &Path, parts: bool) -> anyhow::Result<()> {
    let db = open_state_db(data_dir)?;
    let hashes = state_hash_parts(&db)?;
    if hashes.is_empty() {
        anyhow::bail!(
            "{} holds no derived state yet; start biglearn on it or run `biglearn rebuild`",
            data_dir.display()
        );
    }
    if parts {
        for (part, digest) in &hashes {
            println!("{part} {digest}");
        }
    }
    println!("{}", combined_hash(&hashes));
    Ok(())
}

fn bar(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total.max(1));
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>12} [{elapsed_precise}] {wide_bar} {pos}/{len} records ({per_sec}, ETA {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_owned());
    bar
}

/// Records per batch of an offline rebuild: large, since nothing waits on it.
const REBUILD_BATCH: usize = 10_000;

/// `biglearn rebuild` with the process stopped: every derived state (the event-log index
/// with its stored results, and the state projection) is replayed from the beginning of
/// the streams into new generations, then switched to. Each event topic is read and each
/// record decoded once, for both projections.
pub async fn rebuild_offline(config: RunConfig) -> anyhow::Result<()> {
    rebuild_offline_with(config, CheckpointPolicy::default()).await
}

/// [`rebuild_offline`], writing the replayed state back to sled by `checkpoint`.
pub async fn rebuild_offline_with(
    config: RunConfig,
    checkpoint: CheckpointPolicy,
) -> anyhow::Result<()> {
    let store = open_store(&config).await?;
    let topics = Topics::new(config.topic_prefix.clone());
    let db = open_state_db(&config.data_dir).or_else(|_| {
        std::fs::create_dir_all(config.data_dir.join("state"))?;
        open_state_db(&config.data_dir)
    })?;
    let metrics = Metrics::new(env!("CARGO_PKG_VERSION"));
    let started = Instant::now();

    let generations = Generations::open(&db)?;
    let fresh_generation = |projection: &str| -> anyhow::Result<(u64, String)> {
        let generation = generations.active(projection)? + 1;
        let name = Generations::tree_name(projection, generation);
        // A tree left by an interrupted rebuild is incomplete: start it afresh.
        db.drop_tree(name.as_bytes())?;
        Ok((generation, name))
    };
    let (log_generation, log_tree) = fresh_generation(EVENT_LOG)?;
    let (state_generation, state_tree) = fresh_generation(STATE)?;
    let log = EventLog::open(&db, &log_tree)?;
    let state = StateProjection::open(&db, &state_tree)?;

    let (_stop, stop_rx) = watch::channel(false);
    let mut watchers: Vec<watch::Receiver<ConsumerProgress>> = Vec::new();
    let mut tasks = Vec::new();
    let options = RunOptions {
        max_batch: REBUILD_BATCH,
        stop_when_caught_up: true,
        ..RunOptions::default()
    };
    for (stream, topic) in [
        (StreamKind::Ecosystem, topics.ecosystem_events()),
        (StreamKind::Course, topics.course_events()),
    ] {
        let (log_progress, log_watch) = watch::channel(ConsumerProgress::default());
        let (state_progress, state_watch) = watch::channel(ConsumerProgress::default());
        watchers.push(log_watch);
        watchers.push(state_watch);
        let event_log = EventLogProjection::new(
            log.clone(),
            store.clone(),
            EventLogConsumerConfig {
                checkpoint,
                component: "event_log".into(),
                stream,
                topic: topic.clone(),
                dlq_topic: topics.dlq(),
                max_batch: REBUILD_BATCH,
                poll_timeout: Duration::from_millis(100),
                metrics: metrics.clone(),
                // The live pass wrote these dead letters already.
                write_dead_letters: false,
            },
        );
        let state = StateApplier::new(
            state.clone(),
            store.clone(),
            StateConsumerConfig {
                checkpoint,
                component: "projector_rebuild".into(),
                stream,
                topic: topic.clone(),
                dlq_topic: topics.dlq(),
                max_batch: REBUILD_BATCH,
                poll_timeout: Duration::from_millis(100),
                stop_when_caught_up: true,
                write_dead_letters: false,
                metrics: metrics.clone(),
                hook: None,
            },
        )?;
        tasks.push(tokio::spawn(
            TopicConsumer::new(topic, "rebuild", decoder(stream))
                .feed("event_log", Arc::new(event_log), log_progress)
                .feed("projector_rebuild", Arc::new(state), state_progress)
                .options(options.clone())
                .run(store.clone(), stop_rx.clone()),
        ));
    }
    {
        let (progress, watcher) = watch::channel(ConsumerProgress::default());
        watchers.push(watcher);
        tasks.push(tokio::spawn(
            TopicConsumer::new(topics.results(), "rebuild", decode_result)
                .feed(
                    "results",
                    Arc::new(ResultsProjection::new(log.clone())),
                    progress,
                )
                .options(options.clone())
                .run(store.clone(), stop_rx.clone()),
        ));
    }
    let progress_bar = bar(0, "rebuild");
    // Bounded: every consumer stops by itself once it reaches its start high watermarks.
    let records = loop {
        // Each event topic has two projections: count its records once (the slower one).
        let mut applied = 0i64;
        let mut total = 0i64;
        for pair in watchers.chunks(2) {
            let slowest = pair
                .iter()
                .map(|watcher| watcher.borrow().positions.iter().sum::<i64>())
                .min()
                .unwrap_or(0);
            applied += slowest;
            total += pair[0].borrow().start_high_watermarks.iter().sum::<i64>();
        }
        progress_bar.set_length(total.max(1) as u64);
        progress_bar.set_position(applied.max(0) as u64);
        if tasks.iter().all(|task| task.is_finished()) {
            progress_bar.finish();
            break applied.max(0) as u64;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for task in tasks {
        task.await.context("a rebuild consumer panicked")??;
    }
    let seconds = started.elapsed().as_secs_f64();
    for (projection, generation) in [(EVENT_LOG, log_generation), (STATE, state_generation)] {
        let old = generations.active(projection)?;
        generations.switch(projection, generation)?;
        db.drop_tree(Generations::tree_name(projection, old).as_bytes())?;
    }
    db.flush_async()
        .await
        .context("cannot flush the rebuilt state")?;
    println!(
        "derived state rebuilt: event log generation {log_generation}, state generation {state_generation}, {records} records in {seconds:.1} s ({:.0} records/s); state hash {}",
        records as f64 / seconds.max(1e-9),
        state.state_hash()?
    );
    Ok(())
}

/// `biglearn rebuild --online`: asks a running process to rebuild, and follows its progress.
pub async fn rebuild_online(target: &str, data_dir: PathBuf, actor: &str) -> anyhow::Result<()> {
    let token = match std::env::var("BIGLEARN_ADMIN_TOKEN") {
        Ok(token) => token,
        Err(_) => std::fs::read_to_string(data_dir.join("admin-token"))
            .map(|text| text.trim().to_owned())
            .with_context(|| {
                format!(
                    "no admin token: set BIGLEARN_ADMIN_TOKEN (none found in {})",
                    data_dir.display()
                )
            })?,
    };
    let client = reqwest::Client::new();
    let call = |path: &'static str| {
        let request = client
            .post(format!("{}{path}", target.trim_end_matches('/')))
            .header("Biglearn-Admin-Token", &token)
            .header("Biglearn-Actor", actor)
            .json(&serde_json::json!({}));
        async move {
            let response = request
                .send()
                .await
                .with_context(|| format!("cannot reach {target}; is biglearn running there?"))?;
            let status = response.status();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            if !status.is_success() {
                anyhow::bail!("{path} answered {status}: {body}");
            }
            Ok::<_, anyhow::Error>(body)
        }
    };
    let started = call("/admin/rebuild").await?;
    println!(
        "rebuild {}: generation {}",
        started["status"].as_str().unwrap_or("?"),
        started["generation"]
    );
    let progress_bar = bar(0, "state");
    // Bounded by the rebuild itself; a process that stops answering ends the loop.
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let status = call("/admin/rebuild_status").await?;
        match status["status"].as_str() {
            Some("running") => {
                progress_bar.set_length(status["total"].as_u64().unwrap_or(1).max(1));
                progress_bar.set_position(status["applied"].as_u64().unwrap_or(0));
            }
            Some("finished") => {
                progress_bar.finish();
                println!(
                    "state projection rebuilt: generation {}, {} records in {:.1} s; state hash {}",
                    status["generation"],
                    status["records"],
                    status["seconds"].as_f64().unwrap_or(0.0),
                    status["rebuilt_state_hash"].as_str().unwrap_or("?")
                );
                return Ok(());
            }
            Some("failed") => anyhow::bail!(
                "the rebuild failed and the previous state stays active: {}",
                status["error"]
            ),
            _ => {}
        }
    }
}
