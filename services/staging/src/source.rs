//! The production cluster seen from staging: a read-only Kafka store (consumers and metadata only, no producer, no admin client).

use std::time::Duration;

use async_trait::async_trait;
use biglearn_stream::kafka::{KafkaConfig, KafkaStore};
use biglearn_stream::{
    Delivered, DeliveryError, OutgoingRecord, StreamError, StreamReader, StreamStore, TopicSpec,
};
use parking_lot::Mutex;

/// How staging reaches the source (production) cluster.
#[derive(Clone, PartialEq, Eq)]
pub struct SourceConfig {
    /// `bootstrap.servers` of the source cluster.
    pub bootstrap_servers: String,
    /// `client.id` stem. Every client id and (never joined) group id starts with
    /// `staging.<client_id>`: the `staging.` prefix is what the read-only ACL and the
    /// quotas match on, and keeps staging from ever sharing a group with production
    /// (docs/design/events.md §7.1).
    pub client_id: String,
    /// librdkafka properties applied last (credentials of the read-only principal, test
    /// timeouts).
    pub extra: Vec<(String, String)>,
    /// Bound on metadata and watermark requests.
    pub request_deadline: Duration,
}

/// Prints the properties with their secret values (`sasl.password`, …) redacted.
impl std::fmt::Debug for SourceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("client_id", &self.client_id)
            .field(
                "extra",
                &biglearn_stream::kafka::properties::Redacted(&self.extra),
            )
            .field("request_deadline", &self.request_deadline)
            .finish()
    }
}

impl SourceConfig {
    /// A source at `bootstrap_servers` with a 30 s request deadline.
    pub fn new(bootstrap_servers: impl Into<String>, client_id: impl Into<String>) -> SourceConfig {
        SourceConfig {
            bootstrap_servers: bootstrap_servers.into(),
            client_id: client_id.into(),
            extra: Vec::new(),
            request_deadline: Duration::from_secs(30),
        }
    }

    /// Adds a librdkafka property applied after the defaults.
    pub fn with_extra(mut self, key: impl Into<String>, value: impl Into<String>) -> SourceConfig {
        self.extra.push((key.into(), value.into()));
        self
    }

    /// The group id a reader of `role` names (never joined, never committed to).
    pub fn group_id(&self, role: &str) -> String {
        format!("staging.{}.{role}.assign-only", self.client_id)
    }

    /// The configuration of the read-only store.
    fn kafka_config(&self) -> KafkaConfig {
        let mut config = KafkaConfig::new(
            self.bootstrap_servers.clone(),
            format!("staging.{}", self.client_id),
        );
        config.extra = self.extra.clone();
        config.request_deadline = self.request_deadline;
        config
    }
}

/// Read-only access to the source cluster: a [`KafkaStore`] opened with
/// `connect_read_only`, which holds consumers only. There is no code path that creates a
/// producer or an admin client, so staging cannot write to production (nor create topics
/// there) whatever it is asked to do.
pub struct KafkaSource {
    store: KafkaStore,
    /// Refused appends, for tests and the log.
    refused_appends: Mutex<u64>,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// The error every write to the source answers.
pub fn read_only_error(topic: &str) -> StreamError {
    StreamError::ReadOnly {
        topic: topic.to_owned(),
    }
}

impl KafkaSource {
    /// Creates the metadata consumer and checks that the cluster answers.
    pub async fn connect(config: SourceConfig) -> Result<KafkaSource, StreamError> {
        let store = KafkaStore::connect_read_only(config.kafka_config()).await?;
        Ok(KafkaSource {
            store,
            refused_appends: Mutex::new(0),
        })
    }

    /// Appends refused so far (each one a bug in a caller: staging routes no write here).
    pub fn refused_appends(&self) -> u64 {
        *self.refused_appends.lock()
    }

    /// Producers created for the source: always 0.
    pub fn producers_created(&self) -> u64 {
        self.store.producers_created()
    }
}

#[async_trait]
impl StreamStore for KafkaSource {
    fn backend_name(&self) -> &'static str {
        "kafka-source"
    }

    /// Checks that every topic exists; creates nothing (staging has no admin rights there).
    async fn ensure_topics(&self, specs: &[TopicSpec]) -> Result<(), StreamError> {
        self.store.ensure_topics(specs).await
    }

    async fn partition_count(&self, topic: &str) -> Result<i32, StreamError> {
        self.store.partition_count(topic).await
    }

    async fn append(
        &self,
        topic: &str,
        _records: Vec<OutgoingRecord>,
    ) -> Result<Vec<Result<Delivered, DeliveryError>>, StreamError> {
        *self.refused_appends.lock() += 1;
        tracing::error!(%topic, "A write to the source cluster was refused.");
        Err(read_only_error(topic))
    }

    async fn high_watermarks(&self, topic: &str) -> Result<Vec<i64>, StreamError> {
        self.store.high_watermarks(topic).await
    }

    async fn open_reader(
        &self,
        topic: &str,
        start: &[(i32, i64)],
    ) -> Result<Box<dyn StreamReader>, StreamError> {
        self.store.open_reader(topic, start).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_client_is_named_for_staging_and_keeps_the_extras() {
        let config = SourceConfig::new("b:9092", "eu1")
            .with_extra("security.protocol", "SSL")
            .kafka_config();
        assert_eq!(config.client_id, "staging.eu1");
        assert_eq!(
            config.extra,
            vec![("security.protocol".to_owned(), "SSL".to_owned())]
        );
        assert!(SourceConfig::new("b:9092", "eu1")
            .group_id("reader")
            .starts_with("staging."));
    }
}
