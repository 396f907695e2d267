//! Derived-state tools: `biglearn state-hash` and `biglearn rebuild` (process stopped, or
//! `--online` through a running process's admin endpoint).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use biglearn_domain::events::StreamKind;
use biglearn_projector::consumer::{
    run_event_log_consumer, ConsumerProgress, EventLogConsumerConfig,
};
use biglearn_projector::event_log::EventLog;
use biglearn_projector::service::{
    combined_hash, state_hash_parts, Generations, ProjectionService, RebuildProgress, EVENT_LOG,
};
use biglearn_stream::{SharedStreamStore, Topics};
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

/// Rebuilds the event-log projection (events, identities, gaps, stored results) into a new
/// generation and switches to it. The process must be stopped.
async fn rebuild_event_log(
    db: &sled::Db,
    store: &SharedStreamStore,
    topics: &Topics,
    metrics: &Metrics,
) -> anyhow::Result<u64> {
    let generations = Generations::open(db)?;
    let generation = generations.active(EVENT_LOG)? + 1;
    let name = Generations::tree_name(EVENT_LOG, generation);
    db.drop_tree(name.as_bytes())?;
    let log = EventLog::open(db, &name)?;
    let mut watchers: Vec<watch::Receiver<ConsumerProgress>> = Vec::new();
    let mut stops = Vec::new();
    let mut tasks = Vec::new();
    for (stream, topic) in [
        (StreamKind::Course, topics.course_events()),
        (StreamKind::Ecosystem, topics.ecosystem_events()),
    ] {
        let (progress_tx, progress_rx) = watch::channel(ConsumerProgress::default());
        let (stop_tx, stop_rx) = watch::channel(false);
        watchers.push(progress_rx);
        stops.push(stop_tx);
        tasks.push(tokio::spawn(run_event_log_consumer(
            log.clone(),
            store.clone(),
            EventLogConsumerConfig {
                component: "event_log".into(),
                stream,
                topic,
                dlq_topic: topics.dlq(),
                max_batch: 4000,
                poll_timeout: Duration::from_millis(100),
                metrics: metrics.clone(),
                write_dead_letters: false,
            },
            progress_tx,
            stop_rx,
        )));
    }
    {
        let (progress_tx, progress_rx) = watch::channel(ConsumerProgress::default());
        let (stop_tx, stop_rx) = watch::channel(false);
        watchers.push(progress_rx);
        stops.push(stop_tx);
        tasks.push(tokio::spawn(
            biglearn_projector::results::run_results_consumer(
                log.clone(),
                store.clone(),
                topics.results(),
                progress_tx,
                stop_rx,
            ),
        ));
    }
    let progress_bar = bar(0, "event log");
    loop {
        let (mut applied, mut total, mut all_done) = (0i64, 0i64, true);
        for (watcher, stop) in watchers.iter().zip(&stops) {
            let progress = watcher.borrow().clone();
            applied += progress.positions.iter().sum::<i64>();
            total += progress.start_high_watermarks.iter().sum::<i64>();
            // A consumer reports caught_up only after reading its start high watermarks.
            let started = !progress.start_high_watermarks.is_empty() || progress.caught_up;
            if started && progress.caught_up {
                stop.send_replace(true);
            } else {
                all_done = false;
            }
        }
        progress_bar.set_length(total.max(1) as u64);
        progress_bar.set_position(applied.max(0) as u64);
        if all_done || tasks.iter().all(|task| task.is_finished()) {
            progress_bar.finish();
            for stop in &stops {
                stop.send_replace(true);
            }
            for task in tasks {
                task.await
                    .context("an event-log rebuild consumer panicked")??;
            }
            let old = generations.active(EVENT_LOG)?;
            generations.switch(EVENT_LOG, generation)?;
            db.drop_tree(Generations::tree_name(EVENT_LOG, old).as_bytes())?;
            return Ok(applied.max(0) as u64);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `biglearn rebuild` with the process stopped: every derived state is replayed from the
/// beginning of the streams into a new generation, then switched to.
pub async fn rebuild_offline(config: RunConfig) -> anyhow::Result<()> {
    let store = open_store(&config).await?;
    let topics = Topics::new(config.topic_prefix.clone());
    let db = open_state_db(&config.data_dir).or_else(|_| {
        std::fs::create_dir_all(config.data_dir.join("state"))?;
        open_state_db(&config.data_dir)
    })?;
    let metrics = Metrics::new(env!("CARGO_PKG_VERSION"));

    let records = rebuild_event_log(&db, &store, &topics, &metrics).await?;
    println!("event log rebuilt from {records} records");

    let (failed_tx, _failed_rx) = tokio::sync::mpsc::channel(4);
    let projections = ProjectionService::open(db.clone(), store, topics, metrics, failed_tx, None)?;
    let progress_bar = Arc::new(bar(0, "state"));
    let report = {
        let progress_bar = progress_bar.clone();
        projections
            .rebuild(move |progress: RebuildProgress| {
                progress_bar.set_length(progress.total.max(1));
                progress_bar.set_position(progress.applied);
            })
            .await?
    };
    progress_bar.finish();
    db.flush_async()
        .await
        .context("cannot flush the rebuilt state")?;
    println!(
        "state projection rebuilt: generation {}, {} records in {:.1} s ({:.0} records/s); state hash {}",
        report.generation,
        report.records,
        report.seconds,
        report.records as f64 / report.seconds.max(1e-9),
        report.state_hash
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
