//! `biglearn simulate --offline`: the simulator's writes turned into events and appended
//! straight to an embedded log, for large histories (replay benchmarks) in minutes.
//!
//! The generator is trusted (its sequence numbers never collide), so the writer's checks
//! are skipped; the events are exactly those the HTTP path would write, stamped by the
//! writer's own `stamp_events`, with the request's simulated time as `accepted_at` (so the
//! same seed gives the same log, byte for byte).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use biglearn_domain::events::CoursePayload;
use biglearn_events::{course_event_record, ecosystem_event_record};
use biglearn_gateway::requests::{candidates, parse_request, Endpoint, Request};
use biglearn_gateway::writer::{outgoing_record, stamp_events, MetadataNumbers, Stamp};
use biglearn_simulator::{generate_offline, TutorRequest, WorkloadConfig};
use biglearn_stream::embedded::EmbeddedStore;
use biglearn_stream::{OutgoingRecord, SharedStreamStore, Topics};
use indicatif::{ProgressBar, ProgressStyle};

use crate::run::{partitions_scale, Backend};

/// Records appended per call: large, so that one fsync covers many.
const APPEND_CHUNK: usize = 20_000;

/// What an offline generation wrote.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct OfflineReport {
    pub requests: u64,
    pub course_events: u64,
    pub ecosystem_events: u64,
    pub responses: u64,
    pub seconds: f64,
}

struct Appender {
    store: SharedStreamStore,
    topic: String,
    pending: Vec<OutgoingRecord>,
    appended: u64,
}

impl Appender {
    async fn push(&mut self, record: OutgoingRecord) -> anyhow::Result<()> {
        self.pending.push(record);
        if self.pending.len() >= APPEND_CHUNK {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let records = std::mem::take(&mut self.pending);
        let n_records = records.len() as u64;
        let outcomes = self.store.append(&self.topic, records).await?;
        if let Some(Err(error)) = outcomes.into_iter().find(Result::is_err) {
            anyhow::bail!("an append to {} failed: {error}", self.topic);
        }
        self.appended += n_records;
        Ok(())
    }
}

/// The envelope fields of an offline event: the request's simulated time, no settings.
fn stamp(accepted_at_micros: i64) -> Stamp {
    Stamp {
        accepted_at_micros,
        writer_id: "offline".into(),
        settings_version: 0,
    }
}

/// Generates the workload of `workload` into a new embedded log under `data_dir/log`
/// (topics prefixed `topic_prefix`), with a progress bar on standard error.
pub async fn generate_into(
    workload: WorkloadConfig,
    data_dir: &Path,
    topic_prefix: &str,
) -> anyhow::Result<OfflineReport> {
    let log_dir = data_dir.join("log");
    let open_dir = log_dir.clone();
    let store: SharedStreamStore = Arc::new(
        tokio::task::spawn_blocking(move || EmbeddedStore::open(&open_dir))
            .await?
            .with_context(|| format!("cannot open the embedded log at {}", log_dir.display()))?,
    );
    generate_into_store(
        workload,
        store,
        topic_prefix,
        partitions_scale(&Backend::Embedded),
    )
    .await
    .with_context(|| format!("offline generation into {}", data_dir.display()))
}

/// Generates the workload into any stream store (the Kafka crash-loop test uses this);
/// the event topics must be empty.
pub async fn generate_into_store(
    workload: WorkloadConfig,
    store: SharedStreamStore,
    topic_prefix: &str,
    partitions_scale: i32,
) -> anyhow::Result<OfflineReport> {
    let started = std::time::Instant::now();
    let topics = Topics::new(topic_prefix);
    store
        .ensure_topics(&topics.all_specs(partitions_scale))
        .await?;
    for topic in [topics.course_events(), topics.ecosystem_events()] {
        if store
            .high_watermarks(&topic)
            .await?
            .iter()
            .any(|high| *high > 0)
        {
            anyhow::bail!(
                "{topic} is not empty; offline generation writes a new history into empty topics"
            );
        }
    }

    let n_expected_responses =
        (workload.courses * workload.students_per_course) as u64 * u64::from(workload.weeks) * 40;
    let progress = ProgressBar::new(n_expected_responses.max(1));
    progress.set_style(
        ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{bar:40}] {human_pos} responses ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );

    // The generator is synchronous and CPU-bound: run it on a blocking thread and stream
    // its requests through a bounded channel, so memory stays flat however large the run.
    let (request_tx, mut request_rx) = tokio::sync::mpsc::channel::<TutorRequest>(4096);
    let generator = tokio::task::spawn_blocking(move || {
        generate_offline(&workload, |request| {
            let _ = request_tx.blocking_send(request);
        })
    });

    let mut course = Appender {
        store: store.clone(),
        topic: topics.course_events(),
        pending: Vec::new(),
        appended: 0,
    };
    let mut ecosystem = Appender {
        store: store.clone(),
        topic: topics.ecosystem_events(),
        pending: Vec::new(),
        appended: 0,
    };
    let mut report = OfflineReport::default();
    let mut next_numbers = MetadataNumbers::default();
    while let Some(request) = request_rx.recv().await {
        if !request.is_write() {
            continue;
        }
        report.requests += 1;
        let endpoint = Endpoint::from_path(request.endpoint).with_context(|| {
            format!(
                "the simulator produced an unknown endpoint {}",
                request.endpoint
            )
        })?;
        let write = match parse_request(endpoint, &request.body) {
            Ok(Request::Write(write)) => write,
            Ok(_) => continue,
            Err(errors) => anyhow::bail!(
                "the simulator produced an invalid {} request: {:?}",
                request.endpoint,
                errors.0
            ),
        };
        let events = stamp_events(
            candidates(&write),
            &stamp(request.at_micros),
            &mut next_numbers,
        );
        for event in &events.course {
            if matches!(event.payload, CoursePayload::RecordResponse(_)) {
                report.responses += 1;
                progress.inc(1);
            }
            course
                .push(outgoing_record(course_event_record(event)))
                .await?;
        }
        for event in &events.ecosystem {
            ecosystem
                .push(outgoing_record(ecosystem_event_record(event)))
                .await?;
        }
    }
    generator.await.context("the workload generator failed")?;
    ecosystem.flush().await?;
    course.flush().await?;
    progress.finish_and_clear();
    report.course_events = course.appended;
    report.ecosystem_events = ecosystem.appended;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
