//! The Kafka backend through rdkafka: an idempotent producer per docs/design/events.md §6.3,
//! manual-assign readers per §7.1.

pub mod context;
pub mod group;
pub mod properties;
pub mod registry;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, DeliveryResult, Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};
use tokio::sync::oneshot;

use self::context::{BiglearnContext, StatsObserver};
use crate::group::GroupMembership;
use crate::record::{ConsumedRecord, Delivered, DeliveryError, OutgoingRecord};
use crate::topics::TopicSpec;
use crate::{StreamError, StreamReader, StreamStore};

/// How to reach the cluster and how to lay out topics created on it.
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// `bootstrap.servers`, e.g. `kafka-1:9092,kafka-2:9092`.
    pub bootstrap_servers: String,
    /// `client.id` prefix; clients append `-producer`, `-reader`, ….
    pub client_id: String,
    /// Replication factor of topics created by `ensure_topics` (3 in production, 1 on a
    /// single test broker).
    pub replication_factor: i32,
    /// `min.insync.replicas` of created topics; `None` leaves the broker default.
    pub min_insync_replicas: Option<i32>,
    /// librdkafka properties applied last to every client (producer, readers, admin):
    /// the operator's `--kafka-property` (security, `client.id`, …); tests use it to
    /// shorten timeouts. Values are final (`@file` already read, see [`properties`]).
    pub extra: Vec<(String, String)>,
    /// Bound on metadata, admin and watermark requests.
    pub request_deadline: Duration,
    /// Receives librdkafka's statistics reports (`statistics.interval.ms`).
    pub stats: StatsObserver,
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("client_id", &self.client_id)
            .field("replication_factor", &self.replication_factor)
            .field("min_insync_replicas", &self.min_insync_replicas)
            .field("extra", &properties::Redacted(&self.extra))
            .field("request_deadline", &self.request_deadline)
            .field("stats", &self.stats)
            .finish()
    }
}

impl KafkaConfig {
    /// Production layout: replication factor 3, `min.insync.replicas=2` (docs/design/events.md
    /// §6.1).
    pub fn new(bootstrap_servers: impl Into<String>, client_id: impl Into<String>) -> KafkaConfig {
        KafkaConfig {
            bootstrap_servers: bootstrap_servers.into(),
            client_id: client_id.into(),
            replication_factor: 3,
            min_insync_replicas: Some(2),
            extra: Vec::new(),
            request_deadline: Duration::from_secs(30),
            stats: StatsObserver::default(),
        }
    }

    /// Layout for a single-broker cluster (test brokers): replication factor 1.
    pub fn single_broker(mut self) -> KafkaConfig {
        self.replication_factor = 1;
        self.min_insync_replicas = None;
        self
    }

    /// Adds a librdkafka property applied after the defaults.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> KafkaConfig {
        self.extra.push((key.into(), value.into()));
        self
    }

    /// Sends every client's statistics reports to `observer`.
    pub fn with_stats(mut self, observer: StatsObserver) -> KafkaConfig {
        self.stats = observer;
        self
    }

    fn context(&self, role: &'static str) -> BiglearnContext {
        BiglearnContext::new(role, self.stats.clone())
    }

    fn client_config(&self, role: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", format!("{}-{role}", self.client_id));
        config
    }

    fn apply_extra(&self, config: &mut ClientConfig) {
        for (key, value) in &self.extra {
            config.set(key, value);
        }
    }

    /// The writer's producer, exactly docs/design/events.md §6.3.
    fn producer_config(&self) -> ClientConfig {
        let mut config = self.client_config("producer");
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("max.in.flight.requests.per.connection", "5")
            .set("message.timeout.ms", "300000")
            .set("request.timeout.ms", "30000")
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .set("message.max.bytes", "33554432")
            .set("partitioner", "murmur2_random")
            .set("enable.gapless.guarantee", "false")
            .set("statistics.interval.ms", "10000");
        self.apply_extra(&mut config);
        config
    }

    /// A reader per docs/design/events.md §7.1: no group, nothing committed, no silent resets.
    fn consumer_config(&self, role: &str, partition_eof: bool) -> ClientConfig {
        let mut config = self.client_config(role);
        config
            // librdkafka's assign() needs a group handle; the group is never joined
            // (no subscribe) and nothing is ever committed to it.
            .set("group.id", format!("{}.{role}.assign-only", self.client_id))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "error")
            .set("isolation.level", "read_committed")
            .set("allow.auto.create.topics", "false")
            .set(
                "enable.partition.eof",
                if partition_eof { "true" } else { "false" },
            )
            .set("fetch.message.max.bytes", "33554432")
            .set("receive.message.max.bytes", "100000000");
        if role == "reader" {
            // Consumer lag as librdkafka sees it (biglearn_kafka_consumer_lag_messages).
            config.set("statistics.interval.ms", "10000");
        }
        self.apply_extra(&mut config);
        config
    }

    fn admin_config(&self) -> ClientConfig {
        let mut config = self.client_config("admin");
        self.apply_extra(&mut config);
        config
    }
}

/// What the delivery callback reports for one record.
type DeliveryOutcome = Result<Delivered, ClassifiedFailure>;

/// A delivery failure, classified while librdkafka's message status is still readable.
#[derive(Debug)]
struct ClassifiedFailure {
    code: Option<RDKafkaErrorCode>,
    possibly_persisted: bool,
    detail: String,
}

/// Routes each delivery report to the `append` call waiting for it.
/// (Statistics and errors go through the shared context.)
struct DeliveryContext(BiglearnContext);

impl ClientContext for DeliveryContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        self.0.stats(statistics);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.0.error(error, reason);
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<oneshot::Sender<DeliveryOutcome>>;

    fn delivery(&self, result: &DeliveryResult<'_>, reply: Self::DeliveryOpaque) {
        let outcome = match result {
            Ok(message) => Ok(Delivered {
                partition: message.partition(),
                offset: message.offset(),
            }),
            Err((error, message)) => Err(classify_failure(error, message)),
        };
        // The appender may have been dropped (cancelled request); nobody to tell then.
        let _ = reply.send(outcome);
    }
}

fn classify_failure(error: &KafkaError, message: &BorrowedMessage<'_>) -> ClassifiedFailure {
    // SAFETY: `message` wraps a live rd_kafka_message_t for the duration of the callback.
    let status = unsafe { rdkafka::bindings::rd_kafka_message_status(message.ptr()) };
    let possibly_persisted =
        status != rdkafka::bindings::rd_kafka_msg_status_t::RD_KAFKA_MSG_STATUS_NOT_PERSISTED;
    ClassifiedFailure {
        code: error.rdkafka_error_code(),
        possibly_persisted,
        detail: format!("{error} (message status {status:?})"),
    }
}

/// Maps a failure to the writer's three outcomes (record.rs, docs/design/api.md §3.5).
fn delivery_error(failure: ClassifiedFailure, fatal: Option<&str>) -> DeliveryError {
    if let Some(reason) = fatal {
        return DeliveryError::Fatal(format!(
            "{}; producer fatal error: {reason}",
            failure.detail
        ));
    }
    let timeout_like = matches!(
        failure.code,
        Some(
            RDKafkaErrorCode::MessageTimedOut
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::PurgeInflight
        )
    );
    if failure.possibly_persisted || timeout_like {
        DeliveryError::Uncertain(failure.detail)
    } else {
        DeliveryError::Definite(failure.detail)
    }
}

type WriterProducer = ThreadedProducer<DeliveryContext>;

/// The Kafka stream store. Cheap to share behind an `Arc`.
pub struct KafkaStore {
    config: KafkaConfig,
    /// `None` for a read-only store ([`KafkaStore::connect_read_only`]).
    writing: Option<Writing>,
    /// Metadata and watermark queries.
    metadata: Arc<BaseConsumer<BiglearnContext>>,
    /// Topics seen to exist with their partition count (counts never change, §6.1).
    known_topics: Mutex<HashMap<String, i32>>,
    producers_created: Mutex<u64>,
}

/// The clients that write: absent from a read-only store.
struct Writing {
    /// Replaced after a fatal error (librdkafka: a fatal producer must be recreated).
    producer: RwLock<Arc<WriterProducer>>,
    /// Serialises recreation so one fatal error creates one new producer.
    recreate: Mutex<()>,
    admin: AdminClient<BiglearnContext>,
}

impl std::fmt::Debug for KafkaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaStore")
            .field("bootstrap_servers", &self.config.bootstrap_servers)
            .finish_non_exhaustive()
    }
}

/// Whether a client error can pass by waiting (see [`StreamError::is_transient`]).
pub(crate) fn is_transient(error: &KafkaError) -> bool {
    match error {
        // The client could not be built from its configuration: no wait changes that.
        KafkaError::ClientCreation(_) | KafkaError::ClientConfig(..) => false,
        _ => match error.rdkafka_error_code() {
            Some(code) => !matches!(
                code,
                RDKafkaErrorCode::Fatal
                    | RDKafkaErrorCode::Fenced
                    | RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::InvalidProducerEpoch
                    | RDKafkaErrorCode::Authentication
                    | RDKafkaErrorCode::SaslAuthenticationFailed
                    | RDKafkaErrorCode::TopicAuthorizationFailed
                    | RDKafkaErrorCode::GroupAuthorizationFailed
                    | RDKafkaErrorCode::ClusterAuthorizationFailed
                    | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
                    | RDKafkaErrorCode::SecurityDisabled
                    | RDKafkaErrorCode::InvalidConfig
                    | RDKafkaErrorCode::Conflict
            ),
            None => true,
        },
    }
}

fn kafka_error(context: impl Into<String>) -> impl FnOnce(KafkaError) -> StreamError {
    let context = context.into();
    move |source| StreamError::Kafka { context, source }
}

impl KafkaStore {
    /// Creates the clients and checks that the cluster answers metadata within
    /// `config.request_deadline`.
    pub async fn connect(config: KafkaConfig) -> Result<KafkaStore, StreamError> {
        let producer = Self::create_producer(&config)?;
        let admin: AdminClient<BiglearnContext> = config
            .admin_config()
            .create_with_context(config.context("admin"))
            .map_err(kafka_error("creating the Kafka admin client"))?;
        let writing = Writing {
            producer: RwLock::new(Arc::new(producer)),
            recreate: Mutex::new(()),
            admin,
        };
        Self::connect_with(config, Some(writing)).await
    }

    /// A store that only reads: it holds consumers and nothing else, so no code path can
    /// produce to the cluster or create topics there (staging reading production,
    /// docs/design/operations.md §5). `append` answers [`StreamError::ReadOnly`];
    /// `ensure_topics` only checks that the topics exist. Its assign-only group ids are
    /// `<client_id>.<role>.assign-only`: give it a client id the read-only ACL matches.
    pub async fn connect_read_only(config: KafkaConfig) -> Result<KafkaStore, StreamError> {
        Self::connect_with(config, None).await
    }

    async fn connect_with(
        config: KafkaConfig,
        writing: Option<Writing>,
    ) -> Result<KafkaStore, StreamError> {
        let metadata: BaseConsumer<BiglearnContext> = config
            .consumer_config("metadata", false)
            .create_with_context(config.context("metadata"))
            .map_err(kafka_error("creating the Kafka metadata client"))?;
        let producers_created = u64::from(writing.is_some());
        let store = KafkaStore {
            config,
            writing,
            metadata: Arc::new(metadata),
            known_topics: Mutex::new(HashMap::new()),
            producers_created: Mutex::new(producers_created),
        };
        let deadline = store.config.request_deadline;
        let metadata = store.metadata.clone();
        blocking(move || metadata.fetch_metadata(None, deadline))
            .await?
            .map_err(kafka_error(format!(
                "reading cluster metadata from {}",
                store.config.bootstrap_servers
            )))?;
        Ok(store)
    }

    /// The configuration this store was created with.
    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }

    /// Whether this store was opened with [`KafkaStore::connect_read_only`].
    pub fn is_read_only(&self) -> bool {
        self.writing.is_none()
    }

    /// How many producers this store has created (1 + recreations after fatal errors; 0
    /// for a read-only store).
    pub fn producers_created(&self) -> u64 {
        *self.producers_created.lock()
    }

    /// Raises a fatal error in the current producer, as librdkafka's own test hook does,
    /// so tests can exercise the recreate path. Not for production use.
    #[doc(hidden)]
    pub fn inject_fatal_error_for_tests(&self, reason: &str) {
        let Some(writing) = &self.writing else {
            return;
        };
        let producer = writing.producer.read().clone();
        let reason = std::ffi::CString::new(reason).unwrap_or_default();
        // SAFETY: the client pointer is valid while `producer` is alive; the call only
        // records the error and purges queues.
        unsafe {
            rdkafka::bindings::rd_kafka_test_fatal_error(
                producer.client().native_ptr(),
                rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                reason.as_ptr(),
            );
        }
    }

    fn create_producer(config: &KafkaConfig) -> Result<WriterProducer, StreamError> {
        config
            .producer_config()
            .create_with_context(DeliveryContext(config.context("producer")))
            .map_err(kafka_error("creating the Kafka producer"))
    }

    /// Replaces `failed` with a fresh producer unless another caller already did.
    fn recreate_producer(
        &self,
        writing: &Writing,
        failed: &Arc<WriterProducer>,
    ) -> Result<(), StreamError> {
        let _guard = writing.recreate.lock();
        if !Arc::ptr_eq(&writing.producer.read(), failed) {
            return Ok(());
        }
        let fresh = Arc::new(Self::create_producer(&self.config)?);
        *writing.producer.write() = fresh;
        *self.producers_created.lock() += 1;
        tracing::warn!("Kafka producer recreated after a fatal error");
        Ok(())
    }

    async fn topic_partitions(&self, topic: &str) -> Result<i32, StreamError> {
        if let Some(&count) = self.known_topics.lock().get(topic) {
            return Ok(count);
        }
        let count = self.fetch_partition_count(topic).await?;
        self.known_topics.lock().insert(topic.to_owned(), count);
        Ok(count)
    }

    async fn fetch_partition_count(&self, topic: &str) -> Result<i32, StreamError> {
        let metadata = self.metadata.clone();
        let deadline = self.config.request_deadline;
        let name = topic.to_owned();
        let result = blocking(move || metadata.fetch_metadata(Some(&name), deadline)).await?;
        let metadata = result.map_err(kafka_error(format!("reading metadata of {topic}")))?;
        let unknown = || StreamError::UnknownTopic {
            topic: topic.to_owned(),
        };
        let found = metadata
            .topics()
            .iter()
            .find(|entry| entry.name() == topic)
            .ok_or_else(unknown)?;
        if found.error().is_some() || found.partitions().is_empty() {
            return Err(unknown());
        }
        Ok(found.partitions().len() as i32)
    }

    /// `(low, high)` per partition, high computed from Fetch (see `fetch_high_watermarks`).
    async fn watermarks(
        &self,
        topic: &str,
        partitions: &[i32],
    ) -> Result<BTreeMap<i32, (i64, i64)>, StreamError> {
        let config = self.config.clone();
        let topic = topic.to_owned();
        let partitions = partitions.to_vec();
        blocking(move || fetch_watermarks(&config, &topic, &partitions)).await?
    }
}

/// Runs blocking librdkafka calls off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, StreamError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|join| StreamError::Io {
            path: "<blocking Kafka call>".to_owned(),
            source: std::io::Error::other(join.to_string()),
        })
}

/// Low and high watermarks of `partitions`.
///
/// tansu 0.6 answers ListOffsets(latest) with the last batch's base offset + 1
/// (docs/design/operations.md §8.2), so the ListOffsets value is only a lower bound. The true high
/// watermark is found by fetching from just below that bound to the end of the
/// partition (partition EOF): one batch per partition on a correct broker too.
fn fetch_watermarks(
    config: &KafkaConfig,
    topic: &str,
    partitions: &[i32],
) -> Result<BTreeMap<i32, (i64, i64)>, StreamError> {
    let deadline = config.request_deadline;
    let consumer: BaseConsumer<BiglearnContext> = config
        .consumer_config("watermarks", true)
        .create_with_context(config.context("watermarks"))
        .map_err(kafka_error("creating a watermark reader"))?;
    let mut listed = BTreeMap::new();
    for &partition in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, deadline)
            .map_err(kafka_error(format!(
                "listing offsets of {topic}/{partition}"
            )))?;
        listed.insert(partition, (low, high));
    }
    let mut assignment = TopicPartitionList::new();
    for (&partition, &(low, high)) in &listed {
        let start = (high - 1).max(low).max(0);
        assignment
            .add_partition_offset(topic, partition, Offset::Offset(start))
            .map_err(kafka_error("building a watermark assignment"))?;
    }
    consumer
        .assign(&assignment)
        .map_err(kafka_error(format!("assigning {topic} for watermarks")))?;
    let mut highs: BTreeMap<i32, i64> = listed.iter().map(|(&p, &(_, high))| (p, high)).collect();
    let mut pending: HashSet<i32> = listed.keys().copied().collect();
    let started = Instant::now();
    while !pending.is_empty() {
        let left = deadline.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(StreamError::Timeout {
                context: format!("finding the end of {topic} partitions {pending:?}"),
                waited: deadline,
            });
        }
        match consumer.poll(left.min(Duration::from_millis(200))) {
            None => {}
            Some(Ok(message)) => {
                let high = highs.entry(message.partition()).or_insert(0);
                *high = (*high).max(message.offset() + 1);
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                pending.remove(&partition);
            }
            Some(Err(error)) => {
                return Err(kafka_error(format!("reading the end of {topic}"))(error));
            }
        }
    }
    Ok(listed
        .into_iter()
        .map(|(partition, (low, _))| (partition, (low, highs[&partition])))
        .collect())
}

#[async_trait]
impl StreamStore for KafkaStore {
    fn backend_name(&self) -> &'static str {
        "kafka"
    }

    async fn ensure_topics(&self, specs: &[TopicSpec]) -> Result<(), StreamError> {
        let Some(writing) = &self.writing else {
            // Read-only: nothing is created; every topic must exist already.
            for spec in specs {
                self.topic_partitions(&spec.name).await?;
            }
            return Ok(());
        };
        // Topics provisioned beforehand (by an operator whose principal may create topics
        // when this one may not) are left as they are: only missing ones are created.
        let mut missing = Vec::new();
        for spec in specs {
            match self.fetch_partition_count(&spec.name).await {
                Ok(_) => {}
                Err(StreamError::UnknownTopic { .. }) => missing.push(spec.clone()),
                Err(error) => return Err(error),
            }
        }
        let specs = &missing[..];
        if specs.is_empty() {
            return Ok(());
        }
        let retention: Vec<String> = specs
            .iter()
            .map(|spec| spec.retention_ms.unwrap_or(-1).to_string())
            .collect();
        let max_bytes: Vec<String> = specs
            .iter()
            .map(|spec| spec.max_message_bytes.to_string())
            .collect();
        let min_isr = self.config.min_insync_replicas.map(|n| n.to_string());
        let new_topics: Vec<NewTopic<'_>> = specs
            .iter()
            .zip(retention.iter().zip(&max_bytes))
            .map(|(spec, (retention, max_bytes))| {
                let policy = if spec.compacted { "compact" } else { "delete" };
                let mut topic = NewTopic::new(
                    &spec.name,
                    spec.partitions,
                    TopicReplication::Fixed(self.config.replication_factor),
                )
                .set("cleanup.policy", policy)
                .set("max.message.bytes", max_bytes)
                .set("unclean.leader.election.enable", "false")
                .set("message.timestamp.type", "CreateTime");
                if !spec.compacted {
                    topic = topic.set("retention.ms", retention);
                }
                if let Some(min_isr) = &min_isr {
                    topic = topic.set("min.insync.replicas", min_isr);
                }
                topic
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(self.config.request_deadline));
        let results = writing
            .admin
            .create_topics(&new_topics, &options)
            .await
            .map_err(kafka_error("creating topics"))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(StreamError::Kafka {
                        context: format!("creating topic {name}"),
                        source: KafkaError::AdminOp(code),
                    });
                }
            }
        }
        // CreateTopics answers before every broker's metadata shows the topic.
        let started = Instant::now();
        for spec in specs {
            loop {
                match self.fetch_partition_count(&spec.name).await {
                    Ok(_) => break,
                    Err(StreamError::UnknownTopic { .. })
                        if started.elapsed() < self.config.request_deadline =>
                    {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(StreamError::UnknownTopic { topic }) => {
                        return Err(StreamError::Timeout {
                            context: format!("waiting for created topic {topic} in metadata"),
                            waited: self.config.request_deadline,
                        });
                    }
                    Err(other) => return Err(other),
                }
            }
        }
        Ok(())
    }

    async fn partition_count(&self, topic: &str) -> Result<i32, StreamError> {
        self.topic_partitions(topic).await
    }

    async fn append(
        &self,
        topic: &str,
        records: Vec<OutgoingRecord>,
    ) -> Result<Vec<Result<Delivered, DeliveryError>>, StreamError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let Some(writing) = &self.writing else {
            return Err(StreamError::ReadOnly {
                topic: topic.to_owned(),
            });
        };
        // librdkafka would queue records for an unknown topic until message.timeout.ms.
        self.topic_partitions(topic).await?;
        let producer = writing.producer.read().clone();
        let mut waiting = Vec::with_capacity(records.len());
        for record in &records {
            let (reply, outcome) = oneshot::channel();
            let mut reply = Box::new(reply);
            loop {
                let headers =
                    record
                        .headers
                        .iter()
                        .fold(OwnedHeaders::new(), |headers, (key, value)| {
                            headers.insert(Header {
                                key,
                                value: Some(value),
                            })
                        });
                let message = BaseRecord::with_opaque_to(topic, reply)
                    .key(&record.key)
                    .payload(&record.value)
                    .headers(headers);
                match producer.send(message) {
                    Ok(()) => {
                        waiting.push(Ok(outcome));
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), message)) => {
                        // Keep per-key order: wait for room rather than skip ahead.
                        reply = message.delivery_opaque;
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    Err((error, _)) => {
                        waiting.push(Err(error));
                        break;
                    }
                }
            }
        }
        let mut failures = Vec::new();
        let mut outcomes = Vec::with_capacity(waiting.len());
        for waiter in waiting {
            let outcome = match waiter {
                Ok(receiver) => match receiver.await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(ClassifiedFailure {
                        code: None,
                        possibly_persisted: true,
                        detail: "producer dropped the delivery report".to_owned(),
                    }),
                },
                Err(error) => Err(ClassifiedFailure {
                    code: error.rdkafka_error_code(),
                    possibly_persisted: false,
                    detail: format!("not enqueued: {error}"),
                }),
            };
            if outcome.is_err() {
                failures.push(outcomes.len());
            }
            outcomes.push(outcome);
        }
        let fatal = if failures.is_empty() {
            None
        } else {
            producer.client().fatal_error()
        };
        if fatal.is_some() {
            self.recreate_producer(writing, &producer)?;
        }
        let fatal_reason = fatal.map(|(code, reason)| format!("{code:?}: {reason}"));
        Ok(outcomes
            .into_iter()
            .map(|outcome| {
                outcome.map_err(|failure| delivery_error(failure, fatal_reason.as_deref()))
            })
            .collect())
    }

    async fn high_watermarks(&self, topic: &str) -> Result<Vec<i64>, StreamError> {
        let count = self.topic_partitions(topic).await?;
        let partitions: Vec<i32> = (0..count).collect();
        let watermarks = self.watermarks(topic, &partitions).await?;
        Ok(watermarks.values().map(|&(_, high)| high).collect())
    }

    async fn open_reader(
        &self,
        topic: &str,
        start: &[(i32, i64)],
    ) -> Result<Box<dyn StreamReader>, StreamError> {
        let count = self.topic_partitions(topic).await?;
        if let Some(&(partition, _)) = start.iter().find(|(p, _)| !(0..count).contains(p)) {
            return Err(StreamError::UnknownPartition {
                topic: topic.to_owned(),
                partition,
                partitions: count,
            });
        }
        let partitions: Vec<i32> = start.iter().map(|&(partition, _)| partition).collect();
        let watermarks = self.watermarks(topic, &partitions).await?;
        check_in_range(topic, start, &watermarks)?;
        let consumer: BaseConsumer<BiglearnContext> = self
            .config
            .consumer_config("reader", false)
            .create_with_context(self.config.context("reader"))
            .map_err(kafka_error("creating a Kafka reader"))?;
        let mut assignment = TopicPartitionList::new();
        for &(partition, offset) in start {
            assignment
                .add_partition_offset(topic, partition, Offset::Offset(offset))
                .map_err(kafka_error("building a reader assignment"))?;
        }
        consumer
            .assign(&assignment)
            .map_err(kafka_error(format!("assigning {topic} to a reader")))?;
        Ok(Box::new(KafkaReader {
            config: self.config.clone(),
            topic: topic.to_owned(),
            consumer: Arc::new(consumer),
            next: start.iter().copied().collect(),
        }))
    }

    /// Joins `group_id` with the range assignor; see [`group::KafkaMembership`].
    async fn join_group(
        &self,
        group_id: &str,
        topics: &[String],
    ) -> Result<Box<dyn GroupMembership>, StreamError> {
        if topics.is_empty() {
            return Err(StreamError::Group {
                group_id: group_id.to_owned(),
                detail: "no topics to subscribe to".to_owned(),
            });
        }
        // Fails with the topic's name (or the broker error) before joining, rather than
        // as a consumer error later.
        for topic in topics {
            self.topic_partitions(topic).await?;
        }
        let client = group::group_config(&self.config, group_id);
        Ok(Box::new(group::KafkaMembership::join(
            client,
            self.config.context("group"),
            group_id,
            topics,
        )?))
    }
}

fn check_in_range(
    topic: &str,
    positions: &[(i32, i64)],
    watermarks: &BTreeMap<i32, (i64, i64)>,
) -> Result<(), StreamError> {
    for &(partition, offset) in positions {
        let (low, high) = watermarks.get(&partition).copied().unwrap_or((0, 0));
        if offset < low || offset > high {
            return Err(StreamError::OffsetOutOfRange {
                topic: topic.to_owned(),
                partition,
                offset,
                low,
                high,
            });
        }
    }
    Ok(())
}

/// A manual-assign reader; positions live only in this struct and the caller's sled.
struct KafkaReader {
    config: KafkaConfig,
    topic: String,
    consumer: Arc<BaseConsumer<BiglearnContext>>,
    /// Next offset per partition, to name the partition when the broker says out of range.
    next: BTreeMap<i32, i64>,
}

fn consumed(message: &BorrowedMessage<'_>) -> ConsumedRecord {
    let headers = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|header| {
                    (
                        header.key.to_owned(),
                        header.value.unwrap_or_default().to_vec(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    ConsumedRecord {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec),
        headers,
        timestamp_ms: message.timestamp().to_millis(),
    }
}

/// Polls `consumer` for up to `max_records`, waiting up to `timeout` for the first.
fn poll_batch(
    consumer: &BaseConsumer<BiglearnContext>,
    max_records: usize,
    timeout: Duration,
) -> Result<Vec<ConsumedRecord>, KafkaError> {
    let started = Instant::now();
    let mut batch = Vec::new();
    while batch.len() < max_records {
        let wait = if batch.is_empty() {
            timeout.saturating_sub(started.elapsed())
        } else {
            Duration::ZERO
        };
        match consumer.poll(wait) {
            Some(Ok(message)) => batch.push(consumed(&message)),
            Some(Err(error)) => {
                if batch.is_empty() {
                    return Err(error);
                }
                // Hand over what arrived; the error surfaces again on the next poll.
                break;
            }
            None if batch.is_empty() && !wait.is_zero() => {}
            None => break,
        }
    }
    Ok(batch)
}

#[async_trait]
impl StreamReader for KafkaReader {
    async fn poll(
        &mut self,
        max_records: usize,
        timeout: Duration,
    ) -> Result<Vec<ConsumedRecord>, StreamError> {
        if max_records == 0 {
            return Ok(Vec::new());
        }
        let consumer = self.consumer.clone();
        match blocking(move || poll_batch(&consumer, max_records, timeout)).await? {
            Ok(batch) => {
                for record in &batch {
                    self.next.insert(record.partition, record.offset + 1);
                }
                Ok(batch)
            }
            Err(error) => {
                let out_of_range = matches!(
                    error.rdkafka_error_code(),
                    Some(RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange)
                );
                if out_of_range {
                    // The broker does not say which partition; find it from the watermarks.
                    let positions: Vec<(i32, i64)> =
                        self.next.iter().map(|(&p, &o)| (p, o)).collect();
                    let partitions: Vec<i32> = self.next.keys().copied().collect();
                    let (config, topic) = (self.config.clone(), self.topic.clone());
                    let watermarks =
                        blocking(move || fetch_watermarks(&config, &topic, &partitions)).await??;
                    check_in_range(&self.topic, &positions, &watermarks)?;
                }
                Err(kafka_error(format!("reading {}", self.topic))(error))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_and_broker_outages_are_transient_and_authorisation_is_not() {
        let transient = [
            KafkaError::MetadataFetch(RDKafkaErrorCode::OperationTimedOut),
            KafkaError::MessageConsumption(RDKafkaErrorCode::AllBrokersDown),
            KafkaError::OffsetFetch(RDKafkaErrorCode::RequestTimedOut),
            KafkaError::MessageConsumption(RDKafkaErrorCode::NotLeaderForPartition),
        ];
        for error in &transient {
            assert!(is_transient(error), "{error}");
        }
        let fatal = [
            KafkaError::MessageConsumption(RDKafkaErrorCode::TopicAuthorizationFailed),
            KafkaError::MessageProduction(RDKafkaErrorCode::ProducerFenced),
            KafkaError::Global(RDKafkaErrorCode::SaslAuthenticationFailed),
            KafkaError::ClientCreation("bad property".into()),
        ];
        for error in &fatal {
            assert!(!is_transient(error), "{error}");
        }
        let timeout = StreamError::Timeout {
            context: "finding the end of a topic".into(),
            waited: Duration::from_secs(30),
        };
        assert!(timeout.is_transient());
        let corrupt = StreamError::Corrupt {
            path: "segment".into(),
            position: 0,
            detail: "checksum".into(),
        };
        assert!(!corrupt.is_transient());
    }

    fn check(code: Option<RDKafkaErrorCode>, possibly_persisted: bool, expected: &str) {
        let failure = ClassifiedFailure {
            code,
            possibly_persisted,
            detail: "x".to_owned(),
        };
        assert_eq!(
            delivery_error(failure, None).outcome_label(),
            expected,
            "{code:?}"
        );
    }

    #[test]
    fn failures_are_classified_by_persistence() {
        check(Some(RDKafkaErrorCode::MessageTimedOut), false, "uncertain");
        check(Some(RDKafkaErrorCode::MessageTimedOut), true, "uncertain");
        check(Some(RDKafkaErrorCode::PurgeInflight), false, "uncertain");
        check(Some(RDKafkaErrorCode::RequestTimedOut), false, "uncertain");
        check(
            Some(RDKafkaErrorCode::MessageSizeTooLarge),
            false,
            "definite",
        );
        check(Some(RDKafkaErrorCode::PurgeQueue), false, "definite");
        check(
            Some(RDKafkaErrorCode::UnknownTopicOrPartition),
            true,
            "uncertain",
        );
        check(None, true, "uncertain");
    }

    #[test]
    fn a_fatal_producer_makes_every_failure_fatal() {
        let failure = ClassifiedFailure {
            code: Some(RDKafkaErrorCode::PurgeQueue),
            possibly_persisted: false,
            detail: "purged".to_owned(),
        };
        let error = delivery_error(failure, Some("OutOfOrderSequenceNumber"));
        assert_eq!(error.outcome_label(), "fatal");
    }

    #[test]
    fn producer_config_follows_the_spec_table() {
        let config = KafkaConfig::new("b:9092", "writer").with("linger.ms", "50");
        let producer = config.producer_config();
        for (key, value) in [
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("max.in.flight.requests.per.connection", "5"),
            ("message.timeout.ms", "300000"),
            ("request.timeout.ms", "30000"),
            ("compression.type", "lz4"),
            ("message.max.bytes", "33554432"),
            ("partitioner", "murmur2_random"),
            ("linger.ms", "50"),
        ] {
            assert_eq!(producer.get(key), Some(value), "{key}");
        }
        let reader = config.consumer_config("reader", false);
        for (key, value) in [
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "error"),
            ("isolation.level", "read_committed"),
        ] {
            assert_eq!(reader.get(key), Some(value), "{key}");
        }
        assert_eq!(reader.get("group.id"), Some("writer.reader.assign-only"));
    }

    /// Creates every kind of client from `config` (no broker is contacted).
    fn create_every_client(config: &KafkaConfig) -> Result<(), KafkaError> {
        let _producer: WriterProducer = config
            .producer_config()
            .create_with_context(DeliveryContext(config.context("producer")))?;
        let _reader: BaseConsumer<BiglearnContext> = config
            .consumer_config("reader", false)
            .create_with_context(config.context("reader"))?;
        let _admin: AdminClient<BiglearnContext> = config
            .admin_config()
            .create_with_context(config.context("admin"))?;
        Ok(())
    }

    #[test]
    fn tls_and_every_sasl_mechanism_are_built_in() {
        let base = || {
            KafkaConfig::new("127.0.0.1:9", "biglearn-test")
                .with("socket.connection.setup.timeout.ms", "1000")
        };
        let scram = base()
            .with("security.protocol", "SASL_SSL")
            .with("sasl.mechanism", "SCRAM-SHA-512")
            .with("sasl.username", "biglearn")
            .with("sasl.password", "s3cret");
        create_every_client(&scram).expect("SASL_SSL with SCRAM-SHA-512 is accepted");
        let scram256 = base()
            .with("security.protocol", "SASL_SSL")
            .with("sasl.mechanism", "SCRAM-SHA-256")
            .with("sasl.username", "biglearn")
            .with("sasl.password", "s3cret");
        create_every_client(&scram256).expect("SCRAM-SHA-256 is accepted");
        let plain = base()
            .with("security.protocol", "SASL_PLAINTEXT")
            .with("sasl.mechanism", "PLAIN")
            .with("sasl.username", "biglearn")
            .with("sasl.password", "s3cret");
        create_every_client(&plain).expect("SASL PLAIN is accepted");
        let oauth = base()
            .with("security.protocol", "SASL_SSL")
            .with("sasl.mechanism", "OAUTHBEARER")
            .with("enable.sasl.oauthbearer.unsecure.jwt", "true")
            .with("sasl.oauthbearer.config", "principal=biglearn");
        create_every_client(&oauth).expect("OAUTHBEARER is accepted");
        let tls = base()
            .with("security.protocol", "SSL")
            .with("ssl.endpoint.identification.algorithm", "https");
        create_every_client(&tls).expect("SSL is accepted");
    }

    #[test]
    fn an_unknown_mechanism_or_property_is_refused_by_librdkafka() {
        let unknown_mechanism = KafkaConfig::new("127.0.0.1:9", "biglearn-test")
            .with("security.protocol", "SASL_SSL")
            .with("sasl.mechanism", "NOPE");
        let error = create_every_client(&unknown_mechanism).unwrap_err();
        assert!(error.to_string().contains("NOPE"), "{error}");
        let unknown_property =
            KafkaConfig::new("127.0.0.1:9", "biglearn-test").with("no.such.property", "1");
        let error = create_every_client(&unknown_property).unwrap_err();
        assert!(
            error.to_string().contains("No such configuration property"),
            "{error}"
        );
    }

    #[test]
    fn secrets_are_redacted_when_a_config_is_printed() {
        let config = KafkaConfig::new("b:9092", "writer").with("sasl.password", "s3cret");
        let printed = format!("{config:?}");
        assert!(
            printed.contains("sasl.password") && !printed.contains("s3cret"),
            "{printed}"
        );
    }
}
