//! The settings follower: every process keeps the whole `<prefix>.settings` history in
//! memory, read from offset 0 at start by one `runtime::TopicConsumer`. The writer's
//! settings changes (gateway), the recompute loop and the SPARFA consumer resolve
//! settings from the history it holds.
//!
//! Invariants:
//! - The history changes only through the follower, one whole `apply` at a time, so a
//!   reader sees a consistent history at some settings version.
//! - An undecodable settings record is skipped and logged, never dead-lettered (every
//!   process follows the topic).
//! - It knows no HTTP and no writer: a process's writer is told each applied version
//!   through [`StampsSettingsVersion`].
//!
//! Does not: validate or append settings changes (the gateway's `settings_admin` does),
//! resolve settings (`biglearn-settings`), or store the history on disk.

use std::sync::{Arc, OnceLock, PoisonError, RwLock, RwLockReadGuard};
use std::time::Duration;

use biglearn_runtime::{
    Applied as RuntimeApplied, ApplyError, Batch, ConsumerProgress, Projection, RunOptions,
    TopicConsumer,
};
use biglearn_settings::avro::decode_settings_event;
use biglearn_settings::{Applied, SettingsError, SettingsEvent, SettingsHistory};
use biglearn_stream::SharedStreamStore;
use biglearn_telemetry::Metrics;
use tokio::sync::watch;

/// What the follower tells a process's writer: the settings version it has applied,
/// which the writer stamps on the events it appends.
pub trait StampsSettingsVersion: Send + Sync {
    /// The follower has applied every settings event up to `version`.
    fn set_settings_version(&self, version: i64);
}

/// Records per follower poll.
const MAX_BATCH: usize = 1000;

/// How long one follower poll waits; also its shutdown reaction time.
const POLL_TIMEOUT: Duration = Duration::from_millis(100);

/// The settings of this process: the history the follower keeps, its progress on the
/// topic, and the lock that serialises the writer's settings changes.
pub struct Settings {
    topic: String,
    history: RwLock<SettingsHistory>,
    progress: watch::Sender<ConsumerProgress>,
    /// Held from the catch-up check to the follower applying the appended events, so
    /// that versions are dense and every command validates against the latest history.
    write_lock: tokio::sync::Mutex<()>,
    /// The writer of this process, if any: told every applied version, to stamp it.
    writer: OnceLock<Arc<dyn StampsSettingsVersion>>,
}

impl Settings {
    /// Empty settings (version 0) for `topic` (`<prefix>.settings`).
    pub fn new(topic: String) -> Arc<Settings> {
        Arc::new(Settings {
            topic,
            history: RwLock::new(SettingsHistory::new()),
            progress: watch::Sender::new(ConsumerProgress::default()),
            write_lock: tokio::sync::Mutex::new(()),
            writer: OnceLock::new(),
        })
    }

    /// Makes the writer stamp the settings version this process has applied, from now
    /// on and already for what the follower applied before.
    pub fn attach_writer(&self, writer: Arc<dyn StampsSettingsVersion>) {
        let writer = self.writer.get_or_init(|| writer);
        writer.set_settings_version(self.last_version());
    }

    /// Waits until the follower has read the topic up to where it stood at start.
    pub async fn caught_up(&self) {
        let mut progress = self.progress();
        // The sender lives in `self`, so the wait ends only by catching up.
        let _ = progress.wait_for(|progress| progress.caught_up).await;
    }

    /// The settings topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The follower's progress (for readiness).
    pub fn progress(&self) -> watch::Receiver<ConsumerProgress> {
        self.progress.subscribe()
    }

    /// The history as applied so far; hold the guard briefly (the follower waits on it).
    pub fn history(&self) -> RwLockReadGuard<'_, SettingsHistory> {
        // A panic while the follower held the lock leaves the history as it was before
        // or after one whole `apply`, both consistent.
        self.history.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Serialises settings changes: held from the catch-up check until the follower has
    /// applied what was appended, so that versions are dense.
    pub async fn lock_changes(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.write_lock.lock().await
    }

    /// The last applied settings version.
    pub fn last_version(&self) -> i64 {
        self.history().last_version()
    }
}

/// A settings record decoded once.
type DecodedSettings = Result<SettingsEvent, SettingsError>;

fn decode_settings(record: &biglearn_stream::ConsumedRecord) -> DecodedSettings {
    record
        .value
        .as_deref()
        .ok_or_else(|| SettingsError::Undecodable {
            detail: "the record has no value".into(),
        })
        .and_then(decode_settings_event)
}

/// The settings history as a projection of `<prefix>.settings`: kept in memory and read
/// from offset 0 at every start, so its position is the one it reached in this process.
struct SettingsProjection {
    settings: Arc<Settings>,
    metrics: Metrics,
    next_offset: std::sync::atomic::AtomicI64,
}

#[async_trait::async_trait]
impl Projection<DecodedSettings> for SettingsProjection {
    fn positions(&self, _topic: &str, n_partitions: i32) -> Result<Vec<i64>, ApplyError> {
        let next = self.next_offset.load(std::sync::atomic::Ordering::SeqCst);
        Ok((0..n_partitions)
            .map(|partition| if partition == 0 { next } else { 0 })
            .collect())
    }

    async fn apply(
        &self,
        batch: &Batch<'_, DecodedSettings>,
    ) -> Result<RuntimeApplied, ApplyError> {
        let mut applied = RuntimeApplied::default();
        let last_version = {
            let mut history = self
                .settings
                .history
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            for (decoded, record) in batch.decoded.iter().zip(&batch.records) {
                match decoded {
                    Ok(event) => match history.apply((*event).clone()) {
                        Applied::Added => applied.n_applied += 1,
                        Applied::Stale { .. } => applied.n_duplicates += 1,
                    },
                    // Every process follows this topic, so none of them dead-letters it;
                    // an operator finds the offset in this line.
                    Err(error) => {
                        applied.n_dead_lettered += 1;
                        tracing::error!(topic = %batch.topic, offset = record.offset, %error, "A settings record is undecodable and was skipped.");
                    }
                }
            }
            history.last_version()
        };
        if let Some((_, next)) = batch
            .positions
            .iter()
            .find(|(partition, _)| *partition == 0)
        {
            self.next_offset
                .fetch_max(*next, std::sync::atomic::Ordering::SeqCst);
        }
        if let Some(writer) = self.settings.writer.get() {
            writer.set_settings_version(last_version);
        }
        self.metrics
            .settings_version_applied("settings_follower", last_version);
        Ok(applied)
    }
}

/// Reads `<prefix>.settings` from offset 0 into `settings` until `shutdown` turns true;
/// after every batch, tells the attached writer (if any) the new version to stamp.
pub async fn run_settings_follower(
    settings: Arc<Settings>,
    store: SharedStreamStore,
    metrics: Metrics,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ApplyError> {
    let topic = settings.topic.clone();
    let progress = settings.progress.clone();
    TopicConsumer::new(topic, "settings_follower", decode_settings)
        .feed(
            "settings_follower",
            Arc::new(SettingsProjection {
                settings,
                metrics: metrics.clone(),
                next_offset: std::sync::atomic::AtomicI64::new(0),
            }),
            progress,
        )
        .options(RunOptions {
            max_batch: MAX_BATCH,
            poll_timeout: POLL_TIMEOUT,
            ..RunOptions::default()
        })
        .metrics(metrics)
        .run(store, shutdown)
        .await
}
