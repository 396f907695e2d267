//! [`TopicConsumer`]: one reader of one topic feeding every projection that reads it.

use biglearn_stream::clock::now_micros;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use biglearn_stream::{ConsumedRecord, SharedStreamStore, StreamReader};
use biglearn_telemetry::Metrics;
use tokio::sync::watch;

use crate::{is_caught_up, ApplyError, Backoff, ConsumerProgress};

/// State derived from a topic, kept with the positions it has applied.
#[async_trait]
pub trait Projection<T: Sync>: Send + Sync {
    /// The next offset to apply of each partition `0..n_partitions` of `topic`, as stored
    /// with the state (0 where nothing was applied).
    fn positions(&self, topic: &str, n_partitions: i32) -> Result<Vec<i64>, ApplyError>;

    /// Applies `batch` and stores `batch.positions` with the resulting state, atomically.
    /// Called again with the same batch after a transient error: it must be idempotent.
    async fn apply(&self, batch: &Batch<'_, T>) -> Result<Applied, ApplyError>;

    /// `true` when the consumer starts behind the high watermarks it saw at start (a
    /// replay: start-up catch-up, recovery, rebuild), `false` once it has caught up and
    /// when it stops. A projection may keep its writes in memory while replaying and
    /// write them back at checkpoints; on `false` it must have written everything.
    fn replaying(&self, replaying: bool) -> Result<(), ApplyError> {
        let _ = replaying;
        Ok(())
    }
}

/// Records of one poll that a projection has not applied yet, decoded once for all.
pub struct Batch<'a, T> {
    pub topic: &'a str,
    /// In offset order within each partition.
    pub records: Vec<&'a ConsumedRecord>,
    /// `decoded[i]` is `records[i]` decoded.
    pub decoded: Vec<&'a T>,
    /// `(partition, next offset)` for every partition the batch touches.
    pub positions: Vec<(i32, i64)>,
}

/// What a projection made of a batch, for progress and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub n_applied: u64,
    pub n_duplicates: u64,
    pub n_dead_lettered: u64,
    /// When the newest applied record was accepted (µs), for the lag in seconds.
    pub last_accepted_at_micros: Option<i64>,
}

/// How a consumer polls and when it stops by itself.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Records per poll (one application per projection each).
    pub max_batch: usize,
    /// How long one poll waits for the first record; also the shutdown reaction time.
    pub poll_timeout: Duration,
    /// Stop once every projection reaches the high watermarks seen at start (rebuilds).
    pub stop_when_caught_up: bool,
    pub backoff: Backoff,
    /// On shutdown, first apply what the topic holds at that moment (for at most this
    /// long), so that a clean stop leaves nothing published behind: the same log then
    /// gives the same digest however the stop fell.
    pub drain_on_shutdown: Option<Duration>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            max_batch: 2000,
            poll_timeout: Duration::from_millis(100),
            stop_when_caught_up: false,
            backoff: Backoff::default(),
            drain_on_shutdown: None,
        }
    }
}

type Decoder<T> = Arc<dyn Fn(&ConsumedRecord) -> T + Send + Sync>;

struct Member<T> {
    name: String,
    projection: Arc<dyn Projection<T>>,
    progress: watch::Sender<ConsumerProgress>,
    state: ConsumerProgress,
    /// Told `replaying(true)` and not yet `replaying(false)`.
    replaying: bool,
}

/// Reads one topic and applies it to one or more projections.
pub struct TopicConsumer<T> {
    topic: String,
    decode: Decoder<T>,
    members: Vec<Member<T>>,
    options: RunOptions,
    metrics: Option<Metrics>,
    /// The label of retries and stalls in metrics.
    component: String,
}

/// What ended a wait.
enum Waited {
    Elapsed,
    Shutdown,
}

async fn wait_or_shutdown(delay: Duration, shutdown: &mut watch::Receiver<bool>) -> Waited {
    if *shutdown.borrow() {
        return Waited::Shutdown;
    }
    tokio::select! {
        _ = tokio::time::sleep(delay) => Waited::Elapsed,
        _ = shutdown.changed() => Waited::Shutdown,
    }
}

impl<T: Send + Sync + 'static> TopicConsumer<T> {
    /// A consumer of `topic` that decodes each record with `decode`; `component` names it
    /// in logs and metrics.
    pub fn new(
        topic: impl Into<String>,
        component: impl Into<String>,
        decode: impl Fn(&ConsumedRecord) -> T + Send + Sync + 'static,
    ) -> TopicConsumer<T> {
        TopicConsumer {
            topic: topic.into(),
            decode: Arc::new(decode),
            members: Vec::new(),
            options: RunOptions::default(),
            metrics: None,
            component: component.into(),
        }
    }

    /// Adds a projection, reporting its progress on `progress`; `name` labels its lag.
    pub fn feed(
        mut self,
        name: impl Into<String>,
        projection: Arc<dyn Projection<T>>,
        progress: watch::Sender<ConsumerProgress>,
    ) -> Self {
        self.members.push(Member {
            name: name.into(),
            projection,
            progress,
            state: ConsumerProgress::default(),
            replaying: false,
        });
        self
    }

    pub fn options(mut self, options: RunOptions) -> Self {
        self.options = options;
        self
    }

    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Runs until `shutdown` turns true (or, with `stop_when_caught_up`, until every
    /// projection has caught up). Transient errors are retried; a fatal one is returned.
    pub async fn run(
        mut self,
        store: SharedStreamStore,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), ApplyError> {
        let mut backoff = self.options.backoff.clone();
        let Some((n_partitions, start_high)) =
            self.start(&store, &mut backoff, &mut shutdown).await?
        else {
            return Ok(());
        };
        for member in &mut self.members {
            let positions = member.projection.positions(&self.topic, n_partitions)?;
            member.state = ConsumerProgress {
                caught_up: is_caught_up(&positions, &start_high),
                positions,
                start_high_watermarks: start_high.clone(),
                ..ConsumerProgress::default()
            };
            if !member.state.caught_up {
                member.projection.replaying(true)?;
                member.replaying = true;
            }
            member.progress.send_replace(member.state.clone());
        }
        let outcome = self
            .consume(&store, n_partitions, &mut backoff, &mut shutdown)
            .await;
        // Whatever ended the run, replayed state in memory is written back.
        for member in &mut self.members {
            if std::mem::take(&mut member.replaying) {
                let stopped = member.projection.replaying(false);
                if outcome.is_ok() {
                    stopped?;
                }
            }
        }
        outcome
    }

    async fn consume(
        &mut self,
        store: &SharedStreamStore,
        n_partitions: i32,
        backoff: &mut Backoff,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), ApplyError> {
        let (store, mut backoff, mut shutdown) = (store.clone(), backoff.clone(), shutdown.clone());
        tracing::info!(topic = %self.topic, component = %self.component, "Consumer started.");
        let mut last_lag_check = Instant::now() - Duration::from_secs(60);
        let mut last_accepted_at: Option<i64> = None;
        'reader: loop {
            if self.should_stop(&shutdown) {
                break;
            }
            let start: Vec<(i32, i64)> = (0..n_partitions)
                .map(|partition| {
                    let lowest = self
                        .members
                        .iter()
                        .filter_map(|member| member.state.positions.get(partition as usize))
                        .min()
                        .copied()
                        .unwrap_or(0);
                    (partition, lowest)
                })
                .collect();
            let mut reader: Box<dyn StreamReader> =
                match store.open_reader(&self.topic, &start).await {
                    Ok(reader) => reader,
                    Err(error) => {
                        if self
                            .retry_later(ApplyError::from(error), &mut backoff, &mut shutdown)
                            .await?
                        {
                            continue 'reader;
                        }
                        break 'reader;
                    }
                };
            loop {
                if self.should_stop(&shutdown) {
                    break 'reader;
                }
                let polled = tokio::select! {
                    biased;
                    _ = shutdown.changed() => continue,
                    polled = reader.poll(self.options.max_batch, self.options.poll_timeout) => polled,
                };
                let records = match polled {
                    Ok(records) => records,
                    Err(error) => {
                        // The reader is reopened from the applied positions: whatever it
                        // had fetched beyond them is read again.
                        if self
                            .retry_later(ApplyError::from(error), &mut backoff, &mut shutdown)
                            .await?
                        {
                            continue 'reader;
                        }
                        break 'reader;
                    }
                };
                self.clear_stall(&mut backoff);
                if !records.is_empty() {
                    let decoded: Vec<T> =
                        records.iter().map(|record| (self.decode)(record)).collect();
                    for index in 0..self.members.len() {
                        match self
                            .apply_to(index, &records, &decoded, &mut backoff, &mut shutdown)
                            .await?
                        {
                            Some(applied) => {
                                last_accepted_at =
                                    applied.last_accepted_at_micros.or(last_accepted_at)
                            }
                            None => break 'reader,
                        }
                    }
                }
                if last_lag_check.elapsed() >= Duration::from_secs(1) {
                    last_lag_check = Instant::now();
                    self.observe_lag(&store, last_accepted_at).await;
                }
            }
        }
        if *shutdown.borrow() {
            if let Some(limit) = self.options.drain_on_shutdown {
                self.drain(&store, limit).await?;
            }
        }
        tracing::info!(topic = %self.topic, component = %self.component, "Consumer stopped.");
        Ok(())
    }

    /// Applies every record up to the high watermarks of now, for at most `limit`; no
    /// retries (a store that fails now is left for the next start to read).
    async fn drain(
        &mut self,
        store: &SharedStreamStore,
        limit: Duration,
    ) -> Result<(), ApplyError> {
        let deadline = tokio::time::Instant::now() + limit;
        let Ok(high) = store.high_watermarks(&self.topic).await else {
            return Ok(());
        };
        let behind = |members: &[Member<T>]| {
            members
                .iter()
                .any(|member| !is_caught_up(&member.state.positions, &high))
        };
        if !behind(&self.members) {
            return Ok(());
        }
        let n_partitions = high.len() as i32;
        let start: Vec<(i32, i64)> = (0..n_partitions)
            .map(|partition| {
                let lowest = self
                    .members
                    .iter()
                    .filter_map(|member| member.state.positions.get(partition as usize))
                    .min()
                    .copied()
                    .unwrap_or(0);
                (partition, lowest)
            })
            .collect();
        let Ok(mut reader) = store.open_reader(&self.topic, &start).await else {
            return Ok(());
        };
        // Never signalled: a drain ends at the high watermarks or at the deadline.
        let (_no_stop, mut no_shutdown) = watch::channel(false);
        let mut no_retries = Backoff::new(Duration::ZERO, Duration::ZERO);
        while behind(&self.members) && tokio::time::Instant::now() < deadline {
            let Ok(records) = reader
                .poll(self.options.max_batch, self.options.poll_timeout)
                .await
            else {
                return Ok(());
            };
            let records: Vec<ConsumedRecord> = records
                .into_iter()
                .filter(|record| {
                    high.get(record.partition as usize)
                        .is_some_and(|h| record.offset < *h)
                })
                .collect();
            if records.is_empty() {
                continue;
            }
            let decoded: Vec<T> = records.iter().map(|record| (self.decode)(record)).collect();
            for index in 0..self.members.len() {
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
                let applied = tokio::time::timeout_at(
                    deadline,
                    self.apply_to(index, &records, &decoded, &mut no_retries, &mut no_shutdown),
                )
                .await;
                match applied {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => return Err(error),
                    Err(_) => return Ok(()),
                }
            }
        }
        Ok(())
    }

    fn should_stop(&self, shutdown: &watch::Receiver<bool>) -> bool {
        *shutdown.borrow()
            || (self.options.stop_when_caught_up
                && self.members.iter().all(|member| member.state.caught_up))
    }

    /// The topic's partition count and high watermarks, retried while the store is
    /// unavailable; None on shutdown.
    async fn start(
        &mut self,
        store: &SharedStreamStore,
        backoff: &mut Backoff,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Option<(i32, Vec<i64>)>, ApplyError> {
        loop {
            let started = async {
                let n_partitions = store.partition_count(&self.topic).await?;
                let high = store.high_watermarks(&self.topic).await?;
                Ok::<_, biglearn_stream::StreamError>((n_partitions, high))
            }
            .await;
            match started {
                Ok(started) => {
                    self.clear_stall(backoff);
                    return Ok(Some(started));
                }
                Err(error) => {
                    if !self.retry_later(error.into(), backoff, shutdown).await? {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Offers member `index` the records it has not applied; retries transient failures.
    /// None on shutdown.
    async fn apply_to(
        &mut self,
        index: usize,
        records: &[ConsumedRecord],
        decoded: &[T],
        backoff: &mut Backoff,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Option<Applied>, ApplyError> {
        let topic = self.topic.clone();
        let projection = self.members[index].projection.clone();
        let applied_positions = self.members[index].state.positions.clone();
        let mut batch = Batch {
            topic: &topic,
            records: Vec::with_capacity(records.len()),
            decoded: Vec::with_capacity(records.len()),
            positions: Vec::new(),
        };
        for (record, item) in records.iter().zip(decoded) {
            let applied_to = applied_positions
                .get(record.partition as usize)
                .copied()
                .unwrap_or(0);
            if record.offset < applied_to {
                continue;
            }
            batch.records.push(record);
            batch.decoded.push(item);
            match batch
                .positions
                .iter_mut()
                .find(|(partition, _)| *partition == record.partition)
            {
                Some((_, next)) => *next = (*next).max(record.offset + 1),
                None => batch.positions.push((record.partition, record.offset + 1)),
            }
        }
        if batch.records.is_empty() {
            return Ok(Some(Applied::default()));
        }
        let applied = loop {
            match projection.apply(&batch).await {
                Ok(applied) => break applied,
                Err(error) => {
                    if !self.retry_later(error, backoff, shutdown).await? {
                        return Ok(None);
                    }
                }
            }
        };
        self.clear_stall(backoff);
        let member = &mut self.members[index];
        for (partition, next) in &batch.positions {
            if let Some(position) = member.state.positions.get_mut(*partition as usize) {
                *position = (*position).max(*next);
            }
        }
        member.state.n_applied += applied.n_applied;
        member.state.n_duplicates += applied.n_duplicates;
        member.state.n_dead_lettered += applied.n_dead_lettered;
        if !member.state.caught_up
            && is_caught_up(&member.state.positions, &member.state.start_high_watermarks)
        {
            // Written back before anyone is told it caught up: readers then see it all.
            if std::mem::take(&mut member.replaying) {
                member.projection.replaying(false)?;
            }
            member.state.caught_up = true;
        }
        member.progress.send_replace(member.state.clone());
        Ok(Some(applied))
    }

    /// A fatal error is returned; a transient one is reported as a stall and waited out.
    /// Ok(false) when shutdown came during the wait.
    async fn retry_later(
        &mut self,
        error: ApplyError,
        backoff: &mut Backoff,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<bool, ApplyError> {
        if !error.transient {
            tracing::error!(topic = %self.topic, component = %self.component, %error, "Consumer failed.");
            return Err(error);
        }
        let delay = backoff.next_delay();
        tracing::warn!(topic = %self.topic, component = %self.component, %error, retry_in_ms = delay.as_millis() as u64, "Consumer stalled by a transient error; retrying.");
        if let Some(metrics) = &self.metrics {
            metrics.consumer_retried(&self.component);
            metrics.consumer_stalled(&self.component, true);
        }
        let reason = format!("retrying after a transient error: {error}");
        for member in &mut self.members {
            if member.state.stalled.as_deref() != Some(reason.as_str()) {
                member.state.stalled = Some(reason.clone());
                member.progress.send_replace(member.state.clone());
            }
        }
        Ok(matches!(
            wait_or_shutdown(delay, shutdown).await,
            Waited::Elapsed
        ))
    }

    fn clear_stall(&mut self, backoff: &mut Backoff) {
        backoff.reset();
        for member in &mut self.members {
            if member.state.stalled.take().is_some() {
                tracing::info!(topic = %self.topic, component = %self.component, "Consumer resumed.");
                member.progress.send_replace(member.state.clone());
            }
        }
        if let Some(metrics) = &self.metrics {
            metrics.consumer_stalled(&self.component, false);
        }
    }

    async fn observe_lag(&self, store: &SharedStreamStore, last_accepted_at: Option<i64>) {
        let Some(metrics) = &self.metrics else {
            return;
        };
        let Ok(high) = store.high_watermarks(&self.topic).await else {
            return;
        };
        for member in &self.members {
            let lags: Vec<i64> = high
                .iter()
                .zip(&member.state.positions)
                .map(|(high, position)| (high - position).max(0))
                .collect();
            let total: i64 = lags.iter().sum();
            let max = lags.iter().copied().max().unwrap_or(0);
            // The oldest unapplied record was accepted after the last applied one, so its
            // age is at most that one's: an upper bound, exact enough to alert on.
            let seconds = match (total, last_accepted_at) {
                (0, _) | (_, None) => 0.0,
                (_, Some(accepted_at)) => ((now_micros() - accepted_at).max(0) as f64) / 1e6,
            };
            metrics.consumer_lag_observed(&member.name, &self.topic, total, max, seconds);
        }
    }
}
