//! The SPARFA consumer loop (docs/design/sparfa.md §1, §8): owned partitions of the two input
//! topics, fits on a worker pool, `ModelComputed` published to `<prefix>.models`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use biglearn_domain::events::{CoursePayload, EcosystemPayload};
use biglearn_domain::ids::EcosystemUuid;
use biglearn_events::{
    aggregate_key, decode_course_event, decode_ecosystem_event, decode_model_computed,
    model_computed_record, ModelComputed, TopicPosition,
};
use biglearn_stream::{
    partition_for_key, Assignment, ConsumedRecord, GroupMembership, OutgoingRecord,
    SharedStreamStore, StreamReader, Topics,
};
use biglearn_telemetry::Metrics;
use tokio::sync::{mpsc, watch, Semaphore};

use crate::model::{compute_model, snapshot, FitInput};
use crate::partition_book::{PartitionBook, PublishedModel, Trigger};
use crate::sparfa_settings::SparfaSettingsSource;
use crate::{stream_error, ModelError, SparfaConsumerError};

/// Empty polls in a row after which a read up to a high watermark gives up (a bound, so
/// that a watermark that cannot be reached never stalls an assignment).
const MAX_IDLE_POLLS: u32 = 100;

/// How the consumer runs.
#[derive(Clone)]
pub struct SparfaConsumerConfig {
    pub topics: Topics,
    /// Fits running at once (`sparfa.fit_workers`, default ⌈cores / 2⌉).
    pub fit_workers: usize,
    /// Threads of one fit (the model does not depend on it).
    pub fit_threads: usize,
    /// Most records read per poll.
    pub max_batch: usize,
    /// How long one poll of the responses waits for a first record.
    pub poll_timeout: Duration,
    pub metrics: Metrics,
}

impl SparfaConsumerConfig {
    /// The defaults: ⌈cores / 2⌉ one-threaded fits, batches of 2000, 100 ms polls.
    pub fn new(topics: Topics, metrics: Metrics) -> SparfaConsumerConfig {
        SparfaConsumerConfig {
            topics,
            fit_workers: default_fit_workers(),
            fit_threads: 1,
            max_batch: 2000,
            poll_timeout: Duration::from_millis(100),
            metrics,
        }
    }
}

/// ⌈cores / 2⌉, at least 1.
pub fn default_fit_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .div_ceil(2)
        .max(1)
}

/// The consumer group of the SPARFA consumers: `<prefix>.sparfa`.
pub fn group_id(topics: &Topics) -> String {
    format!("{}.sparfa", topics.prefix())
}

/// The topics the group subscribes to: ecosystem events and routed responses.
pub fn group_topics(topics: &Topics) -> Vec<String> {
    vec![topics.ecosystem_events(), topics.sparfa_responses()]
}

/// One owned partition (p of both input topics).
struct Owned {
    /// Unique per (re)build, so that a fit of a dropped build is not published.
    epoch: u64,
    book: PartitionBook,
    ecosystem_next: i64,
    responses_next: i64,
    /// The high watermark of the responses partition when it was assigned.
    responses_high: i64,
}

/// A finished fit.
struct FitDone {
    partition: i32,
    epoch: u64,
    ecosystem: EcosystemUuid,
    model_seq: i64,
    trigger: Trigger,
    result: Result<ModelComputed, ModelError>,
    elapsed: Duration,
}

struct Consumer {
    store: SharedStreamStore,
    config: SparfaConsumerConfig,
    settings: SparfaSettingsSource,
    ecosystem_partitions: i32,
    generation: u64,
    next_epoch: u64,
    owned: BTreeMap<i32, Owned>,
    /// The latest model per ecosystem known from `<prefix>.models` and our publications.
    known: BTreeMap<EcosystemUuid, PublishedModel>,
    ecosystem_reader: Option<Box<dyn StreamReader>>,
    responses_reader: Option<Box<dyn StreamReader>>,
    pool: Arc<Semaphore>,
    waiting_for_worker: Arc<AtomicUsize>,
    done_tx: mpsc::UnboundedSender<FitDone>,
}

fn responses_through(topics: &Topics, model: &ModelComputed) -> Option<i64> {
    let topic = topics.sparfa_responses();
    model
        .trained_through
        .iter()
        .find(|position| position.topic == topic)
        .map(|position| position.next_offset)
}

impl Consumer {
    fn partition_of(&self, ecosystem: EcosystemUuid) -> i32 {
        partition_for_key(&aggregate_key(ecosystem.0), self.ecosystem_partitions)
    }

    /// Reads `<prefix>.models` from the start to its high watermarks into `known`.
    async fn read_models(&mut self) -> Result<(), SparfaConsumerError> {
        let topic = self.config.topics.models();
        let high = self
            .store
            .high_watermarks(&topic)
            .await
            .map_err(stream_error("reading the model high watermarks"))?;
        let start: Vec<(i32, i64)> = high
            .iter()
            .enumerate()
            .filter(|(_, h)| **h > 0)
            .map(|(p, _)| (p as i32, 0))
            .collect();
        if start.is_empty() {
            return Ok(());
        }
        let mut reader = self
            .store
            .open_reader(&topic, &start)
            .await
            .map_err(stream_error("opening the models"))?;
        let mut remaining: BTreeSet<i32> = start.iter().map(|(p, _)| *p).collect();
        let mut idle_polls = 0;
        while !remaining.is_empty() {
            let records = reader
                .poll(500, self.config.poll_timeout)
                .await
                .map_err(stream_error("reading the models"))?;
            idle_polls = if records.is_empty() {
                idle_polls + 1
            } else {
                0
            };
            if idle_polls > MAX_IDLE_POLLS {
                tracing::warn!(partitions = ?remaining, "The models topic stopped short of its high watermarks; going on with what was read.");
                break;
            }
            for record in records {
                if record.offset + 1 >= high[record.partition as usize] {
                    remaining.remove(&record.partition);
                }
                let Some(value) = &record.value else { continue };
                match decode_model_computed(value) {
                    Ok(model) => {
                        let published = PublishedModel {
                            model_seq: model.model_seq,
                            created_at_micros: model.created_at_micros,
                            responses_through: responses_through(&self.config.topics, &model),
                        };
                        let ecosystem = EcosystemUuid(model.ecosystem_uuid);
                        let entry = self.known.entry(ecosystem).or_insert(published);
                        if entry.model_seq < published.model_seq {
                            *entry = published;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "An undecodable model record was skipped.")
                    }
                }
            }
        }
        Ok(())
    }

    /// Takes a new assignment: drops revoked partitions, rebuilds newly owned ones from
    /// offset 0 (their ecosystem events first, so that responses find their content),
    /// refreshes the known models, and reopens the readers.
    async fn reassign(&mut self, assignment: Assignment) -> Result<(), SparfaConsumerError> {
        let topics = self.config.topics.clone();
        let wanted: BTreeSet<i32> = assignment
            .partitions_of(&topics.ecosystem_events())
            .into_iter()
            .chain(assignment.partitions_of(&topics.sparfa_responses()))
            .collect();
        self.owned.retain(|p, _| wanted.contains(p));
        tracing::info!(generation = assignment.generation, partitions = ?wanted, "SPARFA partitions assigned.");
        self.generation = assignment.generation;
        self.read_models().await?;
        let fresh: Vec<i32> = wanted
            .iter()
            .copied()
            .filter(|p| !self.owned.contains_key(p))
            .collect();
        if !fresh.is_empty() {
            let responses_high = self
                .store
                .high_watermarks(&topics.sparfa_responses())
                .await
                .map_err(stream_error("reading the response high watermarks"))?;
            let ecosystem_high = self
                .store
                .high_watermarks(&topics.ecosystem_events())
                .await
                .map_err(stream_error("reading the ecosystem high watermarks"))?;
            for p in &fresh {
                self.next_epoch += 1;
                let owned = Owned {
                    epoch: self.next_epoch,
                    book: PartitionBook::catching_up(),
                    ecosystem_next: 0,
                    responses_next: 0,
                    responses_high: responses_high.get(*p as usize).copied().unwrap_or(0),
                };
                self.owned.insert(*p, owned);
            }
            // Ecosystem events of the fresh partitions, up to their high watermarks.
            let start: Vec<(i32, i64)> = fresh
                .iter()
                .filter(|p| ecosystem_high.get(**p as usize).is_some_and(|h| *h > 0))
                .map(|p| (*p, 0))
                .collect();
            if !start.is_empty() {
                let mut reader = self
                    .store
                    .open_reader(&topics.ecosystem_events(), &start)
                    .await
                    .map_err(stream_error("opening the ecosystem events"))?;
                let mut remaining: BTreeSet<i32> = start.iter().map(|(p, _)| *p).collect();
                let mut idle_polls = 0;
                while !remaining.is_empty() {
                    let records = reader
                        .poll(self.config.max_batch, self.config.poll_timeout)
                        .await
                        .map_err(stream_error("reading the ecosystem events"))?;
                    idle_polls = if records.is_empty() {
                        idle_polls + 1
                    } else {
                        0
                    };
                    if idle_polls > MAX_IDLE_POLLS {
                        tracing::warn!(partitions = ?remaining, "The ecosystem events stopped short of their high watermarks; the rest is read by the loop.");
                        break;
                    }
                    for record in &records {
                        if record.offset + 1 >= ecosystem_high[record.partition as usize] {
                            remaining.remove(&record.partition);
                        }
                    }
                    self.apply_ecosystem_records(&records);
                }
            }
        }
        for (ecosystem, model) in self.known.clone() {
            let p = self.partition_of(ecosystem);
            if let Some(owned) = self.owned.get_mut(&p) {
                owned.book.model_known(ecosystem, model);
            }
        }
        self.open_readers().await
    }

    async fn open_readers(&mut self) -> Result<(), SparfaConsumerError> {
        let topics = self.config.topics.clone();
        let ecosystem_start: Vec<(i32, i64)> = self
            .owned
            .iter()
            .map(|(p, owned)| (*p, owned.ecosystem_next))
            .collect();
        let responses_start: Vec<(i32, i64)> = self
            .owned
            .iter()
            .map(|(p, owned)| (*p, owned.responses_next))
            .collect();
        self.ecosystem_reader = None;
        self.responses_reader = None;
        if !ecosystem_start.is_empty() {
            self.ecosystem_reader = Some(
                self.store
                    .open_reader(&topics.ecosystem_events(), &ecosystem_start)
                    .await
                    .map_err(stream_error("opening the ecosystem events"))?,
            );
            self.responses_reader = Some(
                self.store
                    .open_reader(&topics.sparfa_responses(), &responses_start)
                    .await
                    .map_err(stream_error("opening the routed responses"))?,
            );
        }
        Ok(())
    }

    fn apply_ecosystem_records(&mut self, records: &[ConsumedRecord]) {
        for record in records {
            let Some(owned) = self.owned.get_mut(&record.partition) else {
                continue;
            };
            owned.ecosystem_next = owned.ecosystem_next.max(record.offset + 1);
            let Some(value) = &record.value else { continue };
            match decode_ecosystem_event(value) {
                Ok(event) => {
                    if let EcosystemPayload::CreateEcosystem(create) = &event.payload {
                        owned
                            .book
                            .create_ecosystem(create, event.meta.accepted_at_micros);
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, offset = record.offset, "An undecodable ecosystem event was skipped (the event log dead-letters it).");
                }
            }
        }
    }

    fn apply_response_records(&mut self, records: &[ConsumedRecord], growth: f64) {
        for record in records {
            let Some(owned) = self.owned.get_mut(&record.partition) else {
                continue;
            };
            owned.responses_next = owned.responses_next.max(record.offset + 1);
            let Some(value) = &record.value else { continue };
            match decode_course_event(value) {
                Ok(event) => {
                    if let CoursePayload::RecordResponse(response) = &event.payload {
                        owned.book.record_response(
                            response,
                            event.meta.accepted_at_micros,
                            record.offset + 1,
                            growth,
                        );
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, offset = record.offset, "An undecodable routed response was skipped.");
                }
            }
        }
    }

    /// End of a batch: partitions that reached their assignment-time high watermark stop
    /// catching up; due fits are snapshotted and queued on the pool.
    fn start_due_fits(&mut self) {
        let settings = (self.settings)();
        let topics = self.config.topics.clone();
        for (p, owned) in &mut self.owned {
            if owned.book.catching_up && owned.responses_next >= owned.responses_high {
                owned.book.catching_up = false;
            }
            let trained_through = vec![
                TopicPosition {
                    topic: topics.ecosystem_events(),
                    partition: *p,
                    next_offset: owned.ecosystem_next,
                },
                TopicPosition {
                    topic: topics.sparfa_responses(),
                    partition: *p,
                    next_offset: owned.responses_next,
                },
            ];
            for (ecosystem, trigger, model_seq) in owned.book.due_fits(settings.retrain_enabled) {
                let Some(input) = snapshot(
                    &mut owned.book,
                    ecosystem,
                    trigger,
                    model_seq,
                    &settings,
                    trained_through.clone(),
                ) else {
                    owned.book.fit_finished(ecosystem, model_seq, None);
                    continue;
                };
                spawn_fit(
                    input,
                    *p,
                    owned.epoch,
                    self.config.fit_threads,
                    self.pool.clone(),
                    self.waiting_for_worker.clone(),
                    self.done_tx.clone(),
                );
            }
        }
        let queued: usize = self.owned.values().map(|o| o.book.queued()).sum::<usize>()
            + self.waiting_for_worker.load(Ordering::Relaxed);
        let unready: usize = self.owned.values().map(|o| o.book.unready()).sum();
        self.config
            .metrics
            .sparfa_state(queued as i64, unready as i64);
        let waiting: u64 = self
            .owned
            .values()
            .map(|o| o.book.responses_waiting())
            .sum();
        let age_micros = self
            .owned
            .values()
            .map(|o| o.book.oldest_model_age_micros())
            .max()
            .unwrap_or(0);
        self.config.metrics.sparfa_staleness(
            waiting as i64,
            std::time::Duration::from_micros(age_micros.max(0) as u64),
        );
    }

    /// Publishes a finished fit if its partition is still owned by the same build and no
    /// equal or higher model_seq is known.
    async fn finish_fit(&mut self, done: FitDone) -> Result<(), SparfaConsumerError> {
        let still_owned = self
            .owned
            .get(&done.partition)
            .is_some_and(|owned| owned.epoch == done.epoch);
        let stale = self
            .known
            .get(&done.ecosystem)
            .is_some_and(|known| known.model_seq >= done.model_seq);
        let model = match done.result {
            Ok(model) => model,
            Err(error) => {
                tracing::error!(%error, ecosystem = %done.ecosystem.0, "A SPARFA fit failed; the next retrain mark retries it.");
                self.config.metrics.sparfa_fit_finished(
                    done.trigger.as_str(),
                    false,
                    done.elapsed,
                    None,
                );
                if let Some(owned) = self.owned.get_mut(&done.partition) {
                    owned
                        .book
                        .fit_finished(done.ecosystem, done.model_seq, None);
                }
                return Ok(());
            }
        };
        if !still_owned || stale {
            tracing::info!(ecosystem = %done.ecosystem.0, model_seq = done.model_seq, "A fit of a partition no longer owned, or already superseded, was dropped.");
            if let Some(owned) = self.owned.get_mut(&done.partition) {
                owned
                    .book
                    .fit_finished(done.ecosystem, done.model_seq, None);
            }
            return Ok(());
        }
        let encoded = model_computed_record(&model);
        let topic = self.config.topics.models();
        let outcomes = self
            .store
            .append(
                &topic,
                vec![OutgoingRecord {
                    key: encoded.key,
                    value: encoded.value,
                    headers: encoded.headers,
                }],
            )
            .await
            .map_err(stream_error("publishing a model"))?;
        if let Some(Err(error)) = outcomes.first() {
            return Err(SparfaConsumerError::NotDelivered {
                topic,
                detail: error.to_string(),
            });
        }
        self.config.metrics.sparfa_fit_finished(
            done.trigger.as_str(),
            true,
            done.elapsed,
            model.holdout_accuracy.zip(model.holdout_log_loss),
        );
        tracing::info!(ecosystem = %done.ecosystem.0, model_seq = model.model_seq, trigger = %model.trigger, observations = model.training_observations + model.holdout_observations, "A SPARFA model was published.");
        let published = PublishedModel {
            model_seq: model.model_seq,
            created_at_micros: model.created_at_micros,
            responses_through: responses_through(&self.config.topics, &model),
        };
        self.known.insert(done.ecosystem, published);
        if let Some(owned) = self.owned.get_mut(&done.partition) {
            owned
                .book
                .fit_finished(done.ecosystem, done.model_seq, Some(published));
        }
        Ok(())
    }
}

fn spawn_fit(
    input: FitInput,
    partition: i32,
    epoch: u64,
    threads: usize,
    pool: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    done_tx: mpsc::UnboundedSender<FitDone>,
) {
    waiting.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(async move {
        let permit = pool.acquire_owned().await;
        waiting.fetch_sub(1, Ordering::Relaxed);
        let Ok(_permit) = permit else { return };
        let (ecosystem, model_seq, trigger) = (input.ecosystem, input.model_seq, input.trigger);
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(move || compute_model(&input, threads))
            .await
            .unwrap_or_else(|error| {
                Err(ModelError::Malformed {
                    matrix_uuid: crate::model::matrix_uuid(ecosystem, model_seq),
                    detail: format!("the fit task failed: {error}"),
                })
            });
        let elapsed = started.elapsed();
        let result = result.map(|mut model| {
            model.fit_seconds = elapsed.as_secs_f64();
            model
        });
        let _ = done_tx.send(FitDone {
            partition,
            epoch,
            ecosystem,
            model_seq,
            trigger,
            result,
            elapsed,
        });
    });
}

/// Runs the SPARFA consumer until `shutdown` turns true. `membership` is this instance's
/// membership in [`group_id`] over [`group_topics`]. On every new assignment, newly owned
/// partitions are rebuilt from offset 0 (simple and deterministic: no state is persisted)
/// and `<prefix>.models` is read again, so that no lower model_seq is ever published.
pub async fn run_sparfa_consumer(
    store: SharedStreamStore,
    membership: Box<dyn GroupMembership>,
    config: SparfaConsumerConfig,
    settings: SparfaSettingsSource,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), SparfaConsumerError> {
    let ecosystem_partitions = store
        .partition_count(&config.topics.ecosystem_events())
        .await
        .map_err(stream_error("counting the ecosystem partitions"))?;
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut consumer = Consumer {
        store,
        pool: Arc::new(Semaphore::new(config.fit_workers.max(1))),
        config,
        settings,
        ecosystem_partitions,
        generation: 0,
        next_epoch: 0,
        owned: BTreeMap::new(),
        known: BTreeMap::new(),
        ecosystem_reader: None,
        responses_reader: None,
        waiting_for_worker: Arc::new(AtomicUsize::new(0)),
        done_tx,
    };
    tracing::info!("The SPARFA consumer started.");
    while !*shutdown.borrow() {
        let assignment = membership.current();
        if assignment.generation != consumer.generation {
            consumer.reassign(assignment).await?;
        }
        while let Ok(done) = done_rx.try_recv() {
            consumer.finish_fit(done).await?;
        }
        let poll_timeout = consumer.config.poll_timeout;
        let max_batch = consumer.config.max_batch;
        let (Some(ecosystem_reader), Some(_)) = (
            consumer.ecosystem_reader.as_mut(),
            consumer.responses_reader.as_ref(),
        ) else {
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = tokio::time::sleep(poll_timeout) => {}
            }
            continue;
        };
        let ecosystem_records = ecosystem_reader
            .poll(max_batch, Duration::from_millis(1))
            .await
            .map_err(stream_error("reading the ecosystem events"))?;
        consumer.apply_ecosystem_records(&ecosystem_records);
        let growth = (consumer.settings)().retrain_growth;
        let responses = {
            let Some(reader) = consumer.responses_reader.as_mut() else {
                continue;
            };
            // Polls are not cancelled (a cancelled Kafka poll may lose records); a
            // finished fit waits at most one poll timeout to be published.
            reader
                .poll(max_batch, poll_timeout)
                .await
                .map_err(stream_error("reading the routed responses"))?
        };
        consumer.apply_response_records(&responses, growth);
        consumer.start_due_fits();
    }
    tracing::info!("The SPARFA consumer stopped.");
    Ok(())
}
