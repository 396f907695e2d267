//! The runner against the embedded log: decode once for every projection, each offered
//! only what it lacks, transient failures retried and shown as a stall, fatal ones ending
//! the run, drains on shutdown, and stops by itself once caught up when asked to.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use biglearn_runtime::{
    Applied, ApplyError, Backoff, Batch, ConsumerProgress, Projection, RunOptions, TopicConsumer,
};
use biglearn_stream::embedded::EmbeddedStore;
use biglearn_stream::{
    ConsumedRecord, OutgoingRecord, SharedStreamStore, StreamError, StreamReader, StreamStore,
    TopicSpec,
};
use parking_lot::Mutex;
use tokio::sync::watch;

const TOPIC: &str = "t.events";

/// Keeps `(partition, offset, decoded value)` of what it applied, and its positions.
struct Recorder {
    applied: Mutex<Vec<(i32, i64, String)>>,
    positions: Mutex<Vec<i64>>,
    /// Fail this many applications with a transient error first.
    transient_failures: AtomicUsize,
    /// Fail every application with a fatal error.
    fatal: bool,
}

impl Recorder {
    fn at(positions: Vec<i64>) -> Arc<Recorder> {
        Arc::new(Recorder {
            applied: Mutex::new(Vec::new()),
            positions: Mutex::new(positions),
            transient_failures: AtomicUsize::new(0),
            fatal: false,
        })
    }

    fn offsets(&self) -> Vec<i64> {
        self.applied
            .lock()
            .iter()
            .map(|(_, offset, _)| *offset)
            .collect()
    }
}

#[async_trait]
impl Projection<String> for Recorder {
    fn positions(&self, _topic: &str, n_partitions: i32) -> Result<Vec<i64>, ApplyError> {
        let positions = self.positions.lock().clone();
        Ok((0..n_partitions as usize)
            .map(|p| positions.get(p).copied().unwrap_or(0))
            .collect())
    }

    async fn apply(&self, batch: &Batch<'_, String>) -> Result<Applied, ApplyError> {
        if self.fatal {
            return Err(ApplyError::fatal("the state is corrupt"));
        }
        if self
            .transient_failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(ApplyError::transient("the dead-letter topic timed out"));
        }
        let mut applied = self.applied.lock();
        for (record, decoded) in batch.records.iter().zip(&batch.decoded) {
            applied.push((record.partition, record.offset, (*decoded).clone()));
        }
        let mut positions = self.positions.lock();
        for (partition, next) in &batch.positions {
            positions[*partition as usize] = *next;
        }
        Ok(Applied {
            n_applied: batch.records.len() as u64,
            ..Applied::default()
        })
    }
}

async fn store_with(n: usize) -> (tempfile::TempDir, SharedStreamStore) {
    let dir = tempfile::tempdir().unwrap();
    let store: SharedStreamStore = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    store
        .ensure_topics(&[TopicSpec {
            name: TOPIC.into(),
            partitions: 1,
            compacted: false,
            retention_ms: None,
            max_message_bytes: 1 << 20,
        }])
        .await
        .unwrap();
    append(&store, 0, n).await;
    (dir, store)
}

async fn append(store: &SharedStreamStore, from: usize, to: usize) {
    let records = (from..to)
        .map(|i| OutgoingRecord {
            key: b"k".to_vec(),
            value: format!("r{i}").into_bytes(),
            headers: Vec::new(),
        })
        .collect();
    for outcome in store.append(TOPIC, records).await.unwrap() {
        outcome.unwrap();
    }
}

fn counting_decoder(calls: Arc<AtomicUsize>) -> impl Fn(&ConsumedRecord) -> String {
    move |record| {
        calls.fetch_add(1, Ordering::SeqCst);
        String::from_utf8(record.value.clone().unwrap_or_default()).unwrap()
    }
}

fn fast() -> RunOptions {
    RunOptions {
        max_batch: 7,
        poll_timeout: Duration::from_millis(20),
        backoff: Backoff::new(Duration::from_millis(5), Duration::from_millis(20)),
        ..RunOptions::default()
    }
}

#[tokio::test]
async fn each_record_is_decoded_once_and_each_projection_gets_only_what_it_lacks() {
    let (_dir, store) = store_with(30).await;
    let behind = Recorder::at(vec![0]);
    let ahead = Recorder::at(vec![12]);
    let decodes = Arc::new(AtomicUsize::new(0));
    let (behind_tx, behind_rx) = watch::channel(ConsumerProgress::default());
    let (ahead_tx, _ahead_rx) = watch::channel(ConsumerProgress::default());
    let (_stop, stop_rx) = watch::channel(false);
    TopicConsumer::new(TOPIC, "test", counting_decoder(decodes.clone()))
        .feed("behind", behind.clone(), behind_tx)
        .feed("ahead", ahead.clone(), ahead_tx)
        .options(RunOptions {
            stop_when_caught_up: true,
            ..fast()
        })
        .run(store, stop_rx)
        .await
        .unwrap();
    assert_eq!(behind.offsets(), (0..30).collect::<Vec<i64>>());
    assert_eq!(ahead.offsets(), (12..30).collect::<Vec<i64>>());
    assert_eq!(ahead.applied.lock()[0].2, "r12");
    assert_eq!(
        decodes.load(Ordering::SeqCst),
        30,
        "one decode per record read"
    );
    let progress = behind_rx.borrow().clone();
    assert!(progress.caught_up);
    assert_eq!(progress.positions, vec![30]);
    assert_eq!(progress.n_applied, 30);
}

#[tokio::test]
async fn a_transient_failure_is_retried_with_the_same_batch_and_shown_as_a_stall() {
    let (_dir, store) = store_with(10).await;
    let projection = Recorder::at(vec![0]);
    projection.transient_failures.store(3, Ordering::SeqCst);
    let (progress_tx, mut progress_rx) = watch::channel(ConsumerProgress::default());
    let (_stop, stop_rx) = watch::channel(false);
    let run = tokio::spawn(
        TopicConsumer::new(TOPIC, "test", counting_decoder(Arc::default()))
            .feed("p", projection.clone(), progress_tx)
            .options(RunOptions {
                stop_when_caught_up: true,
                ..fast()
            })
            .run(store, stop_rx),
    );
    let stalled = tokio::time::timeout(
        Duration::from_secs(10),
        progress_rx.wait_for(|progress| progress.stalled.is_some()),
    )
    .await
    .expect("the stall is reported")
    .unwrap()
    .clone();
    assert!(
        stalled.stalled.unwrap().contains("timed out"),
        "the stall names the error"
    );
    run.await.unwrap().unwrap();
    assert_eq!(
        projection.offsets(),
        (0..10).collect::<Vec<i64>>(),
        "nothing lost or doubled"
    );
    assert_eq!(
        progress_rx.borrow().stalled,
        None,
        "the stall ends with the retry"
    );
}

#[tokio::test]
async fn a_fatal_failure_ends_the_run_with_its_error() {
    let (_dir, store) = store_with(3).await;
    let projection = Arc::new(Recorder {
        fatal: true,
        ..Arc::try_unwrap(Recorder::at(vec![0])).ok().unwrap()
    });
    let (progress_tx, _progress_rx) = watch::channel(ConsumerProgress::default());
    let (_stop, stop_rx) = watch::channel(false);
    let error = TopicConsumer::new(TOPIC, "test", counting_decoder(Arc::default()))
        .feed("p", projection, progress_tx)
        .options(fast())
        .run(store, stop_rx)
        .await
        .unwrap_err();
    assert!(!error.transient);
    assert!(error.to_string().contains("corrupt"), "{error}");
}

/// A store whose readers fail (timeout) a few times before working: the runner reopens
/// them at the applied positions.
struct FlakyStore {
    inner: SharedStreamStore,
    failures: Arc<AtomicUsize>,
    /// This many readers (the first opened) never deliver anything.
    blind_readers: Arc<AtomicUsize>,
}

struct FlakyReader {
    inner: Box<dyn StreamReader>,
    failures: Arc<AtomicUsize>,
    blind: bool,
}

#[async_trait]
impl StreamReader for FlakyReader {
    async fn poll(
        &mut self,
        max_records: usize,
        timeout: Duration,
    ) -> Result<Vec<ConsumedRecord>, StreamError> {
        if self.blind {
            tokio::time::sleep(timeout).await;
            return Ok(Vec::new());
        }
        let records = self.inner.poll(max_records, timeout).await?;
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            // The fetched records are lost with the reader, as with a broker that died.
            return Err(StreamError::Timeout {
                context: "fetching".into(),
                waited: timeout,
            });
        }
        Ok(records)
    }
}

#[async_trait]
impl StreamStore for FlakyStore {
    fn backend_name(&self) -> &'static str {
        "flaky"
    }
    async fn ensure_topics(&self, specs: &[TopicSpec]) -> Result<(), StreamError> {
        self.inner.ensure_topics(specs).await
    }
    async fn partition_count(&self, topic: &str) -> Result<i32, StreamError> {
        self.inner.partition_count(topic).await
    }
    async fn append(
        &self,
        topic: &str,
        records: Vec<OutgoingRecord>,
    ) -> Result<Vec<Result<biglearn_stream::Delivered, biglearn_stream::DeliveryError>>, StreamError>
    {
        self.inner.append(topic, records).await
    }
    async fn high_watermarks(&self, topic: &str) -> Result<Vec<i64>, StreamError> {
        self.inner.high_watermarks(topic).await
    }
    async fn open_reader(
        &self,
        topic: &str,
        start: &[(i32, i64)],
    ) -> Result<Box<dyn StreamReader>, StreamError> {
        let blind = self
            .blind_readers
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        Ok(Box::new(FlakyReader {
            inner: self.inner.open_reader(topic, start).await?,
            failures: self.failures.clone(),
            blind,
        }))
    }
}

#[tokio::test]
async fn a_reader_that_times_out_is_reopened_at_the_applied_positions() {
    let (_dir, inner) = store_with(25).await;
    let store: SharedStreamStore = Arc::new(FlakyStore {
        inner,
        failures: Arc::new(AtomicUsize::new(4)),
        blind_readers: Arc::new(AtomicUsize::new(0)),
    });
    let projection = Recorder::at(vec![0]);
    let (progress_tx, _progress_rx) = watch::channel(ConsumerProgress::default());
    let (_stop, stop_rx) = watch::channel(false);
    TopicConsumer::new(TOPIC, "test", counting_decoder(Arc::default()))
        .feed("p", projection.clone(), progress_tx)
        .options(RunOptions {
            stop_when_caught_up: true,
            ..fast()
        })
        .run(store, stop_rx)
        .await
        .unwrap();
    assert_eq!(projection.offsets(), (0..25).collect::<Vec<i64>>());
}

#[tokio::test]
async fn a_clean_stop_drains_what_the_topic_holds_at_that_moment() {
    let (_dir, inner) = store_with(40).await;
    // The live reader sees nothing (a broker that has not fetched yet); only the drain's
    // reader, opened at the stop, delivers.
    let store: SharedStreamStore = Arc::new(FlakyStore {
        inner,
        failures: Arc::new(AtomicUsize::new(0)),
        blind_readers: Arc::new(AtomicUsize::new(1)),
    });
    let projection = Recorder::at(vec![0]);
    let (progress_tx, _progress_rx) = watch::channel(ConsumerProgress::default());
    let (stop, stop_rx) = watch::channel(false);
    let run = tokio::spawn(
        TopicConsumer::new(TOPIC, "test", counting_decoder(Arc::default()))
            .feed("p", projection.clone(), progress_tx)
            .options(RunOptions {
                drain_on_shutdown: Some(Duration::from_secs(10)),
                ..fast()
            })
            .run(store.clone(), stop_rx),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(projection.offsets().is_empty(), "the live reader is blind");
    stop.send_replace(true);
    run.await.unwrap().unwrap();
    assert_eq!(projection.offsets(), (0..40).collect::<Vec<i64>>());
}
