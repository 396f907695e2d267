//! The state projection as a running service: live consumers over the active generation,
//! and blue/green rebuilds that replay the log into a fresh generation beside it, then
//! switch atomically.
//!
//! Generations are sled trees named `state.<n>`; the meta tree `projections` names the
//! active one. A rebuild writes `state.<n+1>` while the live consumers keep applying to
//! `state.<n>` (readers keep reading it); once the new generation has caught up with the
//! high watermarks seen at the start it closes the live gate (the live consumers wait at
//! their next batch), lets the new generation catch up with the rest, records the switch,
//! opens the gate onto the new generation, and drops the old tree. A crash during a
//! rebuild leaves the old generation active; the half-built tree is cleared by the next
//! rebuild.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use biglearn_domain::events::StreamKind;
use biglearn_runtime::{Applied, ApplyError, Batch, Projection, RunOptions, TopicConsumer};
use biglearn_stream::{SharedStreamStore, Topics};
use parking_lot::RwLock;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch, Mutex};
use tokio::task::JoinHandle;

use crate::consumer::ConsumerProgress;
use crate::decoded::{decoder, DecodedEvent};
use crate::overlay::CheckpointPolicy;
use crate::state::consumer::{run_state_consumer, StateApplier, StateConsumerConfig};
use crate::state::{BatchHook, StateProjection};
use crate::ProjectionError;

/// The projection name in metric labels, the meta tree and tree names.
pub const STATE: &str = "state";
/// The event-log projection (the API's reads and the writer's index).
pub const EVENT_LOG: &str = "event_log";
const META_TREE: &str = "projections";

/// Which tree holds the active generation of each projection.
#[derive(Clone)]
pub struct Generations {
    meta: sled::Tree,
}

impl Generations {
    /// Opens the meta tree of `db`.
    pub fn open(db: &sled::Db) -> Result<Generations, ProjectionError> {
        Ok(Generations {
            meta: db.open_tree(META_TREE)?,
        })
    }

    /// The active generation number of `projection` (1 before any rebuild).
    pub fn active(&self, projection: &str) -> Result<u64, ProjectionError> {
        match self.meta.get(projection.as_bytes())? {
            Some(bytes) => Ok(u64::from_be_bytes(bytes.as_ref().try_into().map_err(
                |_| ProjectionError::Corrupt {
                    detail: format!("the generation of {projection} is not 8 bytes"),
                },
            )?)),
            None => Ok(1),
        }
    }

    /// The sled tree name of a generation: the projection's name for the first, so that
    /// state written before generations existed stays the first generation.
    pub fn tree_name(projection: &str, generation: u64) -> String {
        if generation <= 1 {
            projection.to_owned()
        } else {
            format!("{projection}.{generation}")
        }
    }

    /// The tree name of the active generation.
    pub fn active_tree(&self, projection: &str) -> Result<String, ProjectionError> {
        Ok(Self::tree_name(projection, self.active(projection)?))
    }

    /// Makes `generation` the active one, durably.
    pub fn switch(&self, projection: &str, generation: u64) -> Result<(), ProjectionError> {
        self.meta
            .insert(projection.as_bytes(), &generation.to_be_bytes())?;
        self.meta.flush()?;
        Ok(())
    }
}

/// Progress of a rebuild, reported while it runs.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RebuildProgress {
    /// Records read so far (all topics).
    pub applied: u64,
    /// Records to read: the high watermarks at the start of the rebuild.
    pub total: u64,
    /// Records per second since the start.
    pub rate: f64,
}

/// The outcome of a finished rebuild.
#[derive(Clone, Debug, PartialEq)]
pub struct RebuildReport {
    pub generation: u64,
    pub records: u64,
    pub seconds: f64,
    pub state_hash: String,
}

/// What `/admin/rebuild` reports.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum RebuildStatus {
    #[default]
    Idle,
    Running(RebuildProgress),
    Finished(RebuildReport),
    Failed(String),
}

struct Live {
    stop: watch::Sender<bool>,
    tasks: Vec<(String, JoinHandle<Result<(), ProjectionError>>)>,
}

/// The state projection of one process.
pub struct ProjectionService {
    db: sled::Db,
    store: SharedStreamStore,
    topics: Topics,
    metrics: biglearn_telemetry::Metrics,
    generations: Generations,
    current: RwLock<(u64, StateProjection)>,
    live: Mutex<Option<Live>>,
    /// The live appliers of the active generation, one per stream; held while a rebuild
    /// switches generations, so that no live batch lands in a generation being retired.
    gate: Mutex<Vec<(StreamKind, Arc<StateApplier>)>>,
    /// Stable per topic, so that readiness follows the live consumers across switches.
    progress: Vec<(StreamKind, String, watch::Sender<ConsumerProgress>)>,
    status: RwLock<RebuildStatus>,
    rebuild_lock: Mutex<()>,
    failed: mpsc::Sender<String>,
    hook: Option<Arc<dyn BatchHook>>,
}

impl ProjectionService {
    /// Opens the active generation. `failed` receives a message when a live consumer fails;
    /// `hook` (the scheduler's dirty targets) runs on every batch, live and rebuilding.
    pub fn open(
        db: sled::Db,
        store: SharedStreamStore,
        topics: Topics,
        metrics: biglearn_telemetry::Metrics,
        failed: mpsc::Sender<String>,
        hook: Option<Arc<dyn BatchHook>>,
    ) -> Result<Arc<ProjectionService>, ProjectionError> {
        let generations = Generations::open(&db)?;
        let generation = generations.active(STATE)?;
        let projection = StateProjection::open(&db, &Generations::tree_name(STATE, generation))?;
        let progress: Vec<_> = [
            (StreamKind::Course, topics.course_events()),
            (StreamKind::Ecosystem, topics.ecosystem_events()),
        ]
        .into_iter()
        .map(|(stream, topic)| (stream, topic, watch::channel(ConsumerProgress::default()).0))
        .collect();
        let appliers = progress
            .iter()
            .map(|(stream, topic, _)| {
                let config = consumer_config(&topics, &metrics, &hook, *stream, topic, false);
                Ok((
                    *stream,
                    Arc::new(StateApplier::new(
                        projection.clone(),
                        store.clone(),
                        config,
                    )?),
                ))
            })
            .collect::<Result<Vec<_>, ProjectionError>>()?;
        Ok(Arc::new(ProjectionService {
            gate: Mutex::new(appliers),
            db,
            store,
            topics,
            metrics,
            generations,
            current: RwLock::new((generation, projection)),
            live: Mutex::new(None),
            progress,
            status: RwLock::new(RebuildStatus::Idle),
            rebuild_lock: Mutex::new(()),
            failed,
            hook,
        }))
    }

    /// The active generation, for readers. A reader holding it across a switch keeps
    /// reading the old tree until it asks again.
    pub fn current(&self) -> StateProjection {
        self.current.read().1.clone()
    }

    /// The active generation number.
    pub fn generation(&self) -> u64 {
        self.current.read().0
    }

    /// Progress of the live consumers, per topic (for `/readyz`).
    pub fn progress(&self) -> Vec<(String, watch::Receiver<ConsumerProgress>)> {
        self.progress
            .iter()
            .map(|(_, topic, sender)| {
                (
                    format!("the state projection of {topic}"),
                    sender.subscribe(),
                )
            })
            .collect()
    }

    /// The last rebuild's status.
    pub fn rebuild_status(&self) -> RebuildStatus {
        self.status.read().clone()
    }

    /// Marks a rebuild as running before it is spawned, so that a status read right after
    /// the request never reports the previous rebuild; `Err` with the progress of the one
    /// already running.
    pub fn claim_rebuild(&self) -> Result<(), RebuildProgress> {
        let mut status = self.status.write();
        if let RebuildStatus::Running(progress) = &*status {
            return Err(*progress);
        }
        *status = RebuildStatus::Running(RebuildProgress::default());
        Ok(())
    }

    fn consumer_config(
        &self,
        stream: StreamKind,
        topic: &str,
        rebuild: bool,
    ) -> StateConsumerConfig {
        consumer_config(
            &self.topics,
            &self.metrics,
            &self.hook,
            stream,
            topic,
            rebuild,
        )
    }

    /// The live state projection of `stream`'s topic, for a consumer that feeds it (with
    /// other projections of the same topic), and the progress it must report on.
    pub fn live(
        self: &Arc<Self>,
        stream: StreamKind,
    ) -> (
        Arc<dyn Projection<DecodedEvent>>,
        watch::Sender<ConsumerProgress>,
    ) {
        let progress = self
            .progress
            .iter()
            .find(|(kind, _, _)| *kind == stream)
            .map(|(_, _, progress)| progress.clone())
            .unwrap_or_else(|| watch::channel(ConsumerProgress::default()).0);
        (
            Arc::new(LiveState {
                service: self.clone(),
                stream,
            }),
            progress,
        )
    }

    /// Starts the live consumers on the active generation, for a process that feeds no
    /// other projection from the event topics (else see [`ProjectionService::live`]).
    pub async fn start(self: &Arc<Self>) {
        let mut live = self.live.lock().await;
        if live.is_some() {
            return;
        }
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        for (stream, topic, _) in &self.progress {
            let (projection, progress) = self.live(*stream);
            let consumer = TopicConsumer::new(topic.clone(), "projector", decoder(*stream))
                .feed("projector", projection, progress)
                .options(RunOptions {
                    max_batch: 4000,
                    ..RunOptions::default()
                })
                .metrics(self.metrics.clone())
                .run(self.store.clone(), stop_rx.clone());
            let failed = self.failed.clone();
            let name = topic.clone();
            tasks.push((
                topic.clone(),
                tokio::spawn(async move {
                    let result = consumer.await.map_err(|error| ProjectionError::Consumer {
                        detail: error.to_string(),
                    });
                    if let Err(error) = &result {
                        let _ = failed
                            .send(format!("the state projection of {name} failed: {error}"))
                            .await;
                    }
                    result
                }),
            ));
        }
        *live = Some(Live { stop, tasks });
    }

    /// Stops the live consumers after their batch in flight.
    pub async fn stop(&self) {
        let Some(live) = self.live.lock().await.take() else {
            return;
        };
        live.stop.send_replace(true);
        for (topic, task) in live.tasks {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::error!(%error, %topic, "A state consumer stopped with an error.")
                }
                Err(error) => tracing::error!(%error, %topic, "A state consumer task panicked."),
            }
        }
    }

    /// Replays every stream from the beginning into a new generation beside the live one,
    /// then switches to it. `on_progress` is called about five times a second.
    pub async fn rebuild(
        &self,
        on_progress: impl Fn(RebuildProgress) + Send,
    ) -> Result<RebuildReport, ProjectionError> {
        let Ok(_guard) = self.rebuild_lock.try_lock() else {
            return Err(ProjectionError::RebuildRunning);
        };
        let result = self.rebuild_locked(&on_progress).await;
        self.metrics.rebuild_progress(STATE, None);
        *self.status.write() = match &result {
            Ok(report) => RebuildStatus::Finished(report.clone()),
            Err(error) => RebuildStatus::Failed(error.to_string()),
        };
        result
    }

    async fn rebuild_locked(
        &self,
        on_progress: &(impl Fn(RebuildProgress) + Send),
    ) -> Result<RebuildReport, ProjectionError> {
        let started = Instant::now();
        let generation = self.generation() + 1;
        let name = Generations::tree_name(STATE, generation);
        // A tree left by an interrupted rebuild is incomplete: start it afresh.
        self.db.drop_tree(name.as_bytes())?;
        let fresh = StateProjection::open(&self.db, &name)?;
        tracing::info!(
            generation,
            "Rebuilding the state projection from the beginning of the log."
        );
        *self.status.write() = RebuildStatus::Running(RebuildProgress::default());

        let records = self
            .replay_until_caught_up(&fresh, started, on_progress)
            .await?;
        // The live consumers advanced while the rebuild ran: hold them at their next batch
        // and catch up with them. Positions are absolute, so this pass reports every
        // record read into `fresh`.
        let mut gate = self.gate.lock().await;
        let records = records.max(
            self.replay_until_caught_up(&fresh, started, &|_| {})
                .await?,
        );
        let mut appliers = Vec::with_capacity(gate.len());
        for (stream, topic, _) in &self.progress {
            let config = self.consumer_config(*stream, topic, false);
            appliers.push((
                *stream,
                Arc::new(StateApplier::new(
                    fresh.clone(),
                    self.store.clone(),
                    config,
                )?),
            ));
        }
        self.generations.switch(STATE, generation)?;
        let old = {
            let mut current = self.current.write();
            std::mem::replace(&mut *current, (generation, fresh.clone())).0
        };
        *gate = appliers;
        drop(gate);
        self.db
            .drop_tree(Generations::tree_name(STATE, old).as_bytes())?;
        let report = RebuildReport {
            generation,
            records,
            seconds: started.elapsed().as_secs_f64(),
            state_hash: fresh.state_hash()?,
        };
        tracing::info!(
            generation,
            records,
            seconds = report.seconds,
            "The state projection is rebuilt and active."
        );
        Ok(report)
    }

    /// Runs rebuild consumers on `target` until both topics reach the high watermarks
    /// observed when they start; returns the records read.
    async fn replay_until_caught_up(
        &self,
        target: &StateProjection,
        started: Instant,
        on_progress: &(impl Fn(RebuildProgress) + Send),
    ) -> Result<u64, ProjectionError> {
        let (_stop, stop_rx) = watch::channel(false);
        let mut watchers = Vec::new();
        let mut tasks = Vec::new();
        for (stream, topic, _) in &self.progress {
            let (progress_tx, progress_rx) = watch::channel(ConsumerProgress::default());
            watchers.push(progress_rx);
            tasks.push(tokio::spawn(run_state_consumer(
                target.clone(),
                self.store.clone(),
                self.consumer_config(*stream, topic, true),
                progress_tx,
                stop_rx.clone(),
            )));
        }
        let report = |watchers: &[watch::Receiver<ConsumerProgress>]| {
            let (mut applied, mut total) = (0u64, 0u64);
            for watcher in watchers {
                let progress = watcher.borrow();
                applied += progress.positions.iter().sum::<i64>().max(0) as u64;
                total += progress.start_high_watermarks.iter().sum::<i64>().max(0) as u64;
            }
            let rate = applied as f64 / started.elapsed().as_secs_f64().max(1e-3);
            RebuildProgress {
                applied,
                total,
                rate,
            }
        };
        while !tasks.iter().all(|task| task.is_finished()) {
            let progress = report(&watchers);
            self.metrics.rebuild_progress(
                STATE,
                Some(if progress.total == 0 {
                    1.0
                } else {
                    progress.applied as f64 / progress.total as f64
                }),
            );
            *self.status.write() = RebuildStatus::Running(progress);
            on_progress(progress);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for task in tasks {
            task.await.map_err(|error| ProjectionError::Corrupt {
                detail: format!("a rebuild consumer panicked: {error}"),
            })??;
        }
        let progress = report(&watchers);
        on_progress(progress);
        Ok(progress.applied)
    }
}

fn consumer_config(
    topics: &Topics,
    metrics: &biglearn_telemetry::Metrics,
    hook: &Option<Arc<dyn BatchHook>>,
    stream: StreamKind,
    topic: &str,
    rebuild: bool,
) -> StateConsumerConfig {
    StateConsumerConfig {
        checkpoint: Default::default(),
        component: if rebuild {
            "projector_rebuild"
        } else {
            "projector"
        }
        .into(),
        stream,
        topic: topic.to_owned(),
        dlq_topic: topics.dlq(),
        max_batch: 4000,
        poll_timeout: Duration::from_millis(100),
        stop_when_caught_up: rebuild,
        // The live pass dead-lettered these records already; a replay only counts them.
        write_dead_letters: !rebuild,
        metrics: metrics.clone(),
        hook: hook.clone(),
    }
}

/// The live state projection of one stream: whichever generation is active, behind the
/// rebuild's gate.
struct LiveState {
    service: Arc<ProjectionService>,
    stream: StreamKind,
}

#[async_trait]
impl Projection<DecodedEvent> for LiveState {
    fn positions(&self, topic: &str, n_partitions: i32) -> Result<Vec<i64>, ApplyError> {
        let current = self.service.current();
        (0..n_partitions)
            .map(|partition| Ok(current.position(topic, partition)?.unwrap_or(0)))
            .collect()
    }

    async fn apply(&self, batch: &Batch<'_, DecodedEvent>) -> Result<Applied, ApplyError> {
        // Held for the whole batch: a switch waits for the batch in flight.
        let gate = self.service.gate.lock().await;
        let applier = gate
            .iter()
            .find(|(stream, _)| *stream == self.stream)
            .map(|(_, applier)| applier.clone())
            .ok_or_else(|| {
                ApplyError::fatal(format!(
                    "no state applier for the {} stream",
                    self.stream.as_str()
                ))
            })?;
        let applied = applier.apply(batch).await;
        drop(gate);
        applied
    }

    fn replaying(&self, replaying: bool) -> Result<(), ApplyError> {
        // The active generation's write-back. Should a rebuild switch generations while
        // the live consumer replays, the rebuild has written the new one back itself.
        let current = self.service.current();
        if replaying {
            current.begin_write_back(CheckpointPolicy::default());
            Ok(())
        } else {
            Ok(current.end_write_back()?)
        }
    }
}

/// The digest of every derived state in `db` that `biglearn state-hash` prints, part by
/// part: `(part, hex digest)`. Parts appear as their projections exist.
pub fn state_hash_parts(db: &sled::Db) -> Result<Vec<(String, String)>, ProjectionError> {
    let generations = Generations::open(db)?;
    let generation = generations.active(STATE)?;
    let name = Generations::tree_name(STATE, generation);
    let mut parts = Vec::new();
    let trees = db.tree_names();
    let exists = |name: &str| trees.iter().any(|tree| tree.as_ref() == name.as_bytes());
    if exists(&name) {
        parts.push((
            STATE.to_owned(),
            StateProjection::open(db, &name)?.state_hash()?,
        ));
    }
    let event_log = generations.active_tree(EVENT_LOG)?;
    if exists(&event_log) {
        if let Some(digest) = crate::event_log::EventLog::open(db, &event_log)?.results_digest()? {
            parts.push(("results".to_owned(), digest));
        }
    }
    Ok(parts)
}

/// One digest over all parts.
pub fn combined_hash(parts: &[(String, String)]) -> String {
    let mut hasher = Sha256::new();
    for (part, digest) in parts {
        hasher.update(part.as_bytes());
        hasher.update(b"=");
        hasher.update(digest.as_bytes());
        hasher.update(b"\n");
    }
    hex::encode(hasher.finalize())
}
