//! The runner survives the broker (rdkafka's MockCluster): started while the only broker is
//! down, it reports the stall and retries; once the broker is back (answering ListOffsets
//! with timeouts for a while) it resumes by itself and applies every record exactly once,
//! including those written after the outage.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use biglearn_runtime::{
    Applied, ApplyError, Backoff, Batch, ConsumerProgress, Projection, RunOptions, TopicConsumer,
};
use biglearn_stream::kafka::{KafkaConfig, KafkaStore};
use biglearn_stream::{OutgoingRecord, SharedStreamStore, StreamStore};
use parking_lot::Mutex;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use tokio::sync::watch;

const TOPIC: &str = "outage.events";
const PARTITIONS: i32 = 3;
/// Bounds every wait of the scenario; only a stuck run reaches them.
const DEADLINE: Duration = Duration::from_secs(120);

/// Keeps the offsets it applied per partition, and its positions.
#[derive(Default)]
struct Recorder {
    applied: Mutex<Vec<(i32, i64)>>,
    positions: Mutex<Vec<i64>>,
}

#[async_trait]
impl Projection<()> for Recorder {
    fn positions(&self, _topic: &str, n_partitions: i32) -> Result<Vec<i64>, ApplyError> {
        let mut positions = self.positions.lock();
        positions.resize(n_partitions as usize, 0);
        Ok(positions.clone())
    }

    async fn apply(&self, batch: &Batch<'_, ()>) -> Result<Applied, ApplyError> {
        let mut applied = self.applied.lock();
        for record in &batch.records {
            applied.push((record.partition, record.offset));
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

async fn append(store: &KafkaStore, from: usize, to: usize) {
    let records = (from..to)
        .map(|i| OutgoingRecord {
            key: format!("course-{}", i % 7).into_bytes(),
            value: format!("{i}").into_bytes(),
            headers: Vec::new(),
        })
        .collect();
    for outcome in store.append(TOPIC, records).await.expect("append") {
        outcome.expect("delivered");
    }
}

async fn wait_for(
    progress: &mut watch::Receiver<ConsumerProgress>,
    what: &str,
    done: impl FnMut(&ConsumerProgress) -> bool,
) -> ConsumerProgress {
    tokio::time::timeout(DEADLINE, progress.wait_for(done))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting until {what}"))
        .expect("the consumer reports")
        .clone()
}

#[test]
fn a_consumer_started_during_a_broker_outage_stalls_then_resumes_by_itself() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    // MockCluster is !Send: it stays on this thread, driven from `block_on`.
    let mock = MockCluster::new(1).expect("mock cluster");
    mock.create_topic(TOPIC, PARTITIONS, 1)
        .expect("create topic");
    runtime.block_on(async {
        let mut config = KafkaConfig::new(mock.bootstrap_servers(), "runtime-outage")
            .single_broker()
            .with("socket.connection.setup.timeout.ms", "1000")
            .with("reconnect.backoff.max.ms", "500");
        // Metadata and offsets requests give up after 2 s, so the outage is seen quickly.
        config.request_deadline = Duration::from_secs(2);
        let store = Arc::new(KafkaStore::connect(config).await.expect("connect"));
        append(&store, 0, 40).await;

        mock.broker_down(1).expect("broker down");
        let projection = Arc::new(Recorder::default());
        let (progress_tx, mut progress) = watch::channel(ConsumerProgress::default());
        let (stop, stop_rx) = watch::channel(false);
        let shared: SharedStreamStore = store.clone();
        let consumer = tokio::spawn(
            TopicConsumer::new(TOPIC, "outage", |_: &biglearn_stream::ConsumedRecord| ())
                .feed("outage", projection.clone(), progress_tx)
                .options(RunOptions {
                    poll_timeout: Duration::from_millis(200),
                    backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(1)),
                    ..RunOptions::default()
                })
                .run(shared, stop_rx),
        );
        let stalled = wait_for(&mut progress, "the stall is reported", |progress| {
            progress.stalled.is_some()
        })
        .await;
        let reason = stalled.stalled.expect("a reason");
        assert!(reason.contains("retrying"), "{reason}");
        // Still down a while: the consumer keeps retrying and does not end.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(
            !consumer.is_finished(),
            "a broker outage never ends the consumer"
        );

        // Back, but answering offsets requests with timeouts for a while.
        mock.request_errors(
            RDKafkaApiKey::ListOffsets,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT; 6],
        );
        mock.broker_up(1).expect("broker up");
        let caught_up = wait_for(&mut progress, "all 40 records are applied", |progress| {
            progress.positions.iter().sum::<i64>() == 40 && progress.stalled.is_none()
        })
        .await;
        assert!(caught_up.caught_up);

        append(&store, 40, 60).await;
        wait_for(
            &mut progress,
            "the 20 written after are applied",
            |progress| progress.positions.iter().sum::<i64>() == 60,
        )
        .await;
        stop.send_replace(true);
        consumer
            .await
            .expect("consumer task")
            .expect("a clean stop");

        let mut applied = projection.applied.lock().clone();
        applied.sort_unstable();
        let before = applied.len();
        applied.dedup();
        assert_eq!(before, applied.len(), "no record applied twice");
        assert_eq!(applied.len(), 60, "every record applied");
    });
}
