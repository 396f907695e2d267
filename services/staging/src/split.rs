//! One stream store over two: the system-of-record topics from the read-only source,
//! everything else on staging's own store.

use std::collections::BTreeSet;

use async_trait::async_trait;
use biglearn_stream::{
    Delivered, DeliveryError, GroupMembership, OutgoingRecord, SharedStreamStore, StreamError,
    StreamReader, StreamStore, TopicSpec, Topics,
};

use crate::source::read_only_error;

/// Routes by topic name: reads of the source topics go to `source`, every write to a
/// source topic is refused here (before any client sees it), and every other topic lives
/// on `staging`.
pub struct SplitStore {
    source: SharedStreamStore,
    staging: SharedStreamStore,
    source_topics: BTreeSet<String>,
}

impl SplitStore {
    /// The source topics are `topics.system_of_record()` (under the source prefix).
    pub fn new(
        source: SharedStreamStore,
        staging: SharedStreamStore,
        topics: &Topics,
    ) -> SplitStore {
        SplitStore {
            source,
            staging,
            source_topics: topics.system_of_record().into_iter().collect(),
        }
    }

    /// Also reads `topic` from the source, read-only like the system of record: staging
    /// follows production's `<prefix>.models` this way (docs/design/operations.md O7).
    pub fn with_source_topic(mut self, topic: impl Into<String>) -> SplitStore {
        self.source_topics.insert(topic.into());
        self
    }

    fn is_source(&self, topic: &str) -> bool {
        self.source_topics.contains(topic)
    }

    fn route(&self, topic: &str) -> &SharedStreamStore {
        if self.is_source(topic) {
            &self.source
        } else {
            &self.staging
        }
    }
}

#[async_trait]
impl StreamStore for SplitStore {
    fn backend_name(&self) -> &'static str {
        "staging"
    }

    /// Creates staging's own topics; the source topics must exist already and are only
    /// checked (the source store creates nothing).
    async fn ensure_topics(&self, specs: &[TopicSpec]) -> Result<(), StreamError> {
        let (source, own): (Vec<TopicSpec>, Vec<TopicSpec>) = specs
            .iter()
            .cloned()
            .partition(|spec| self.is_source(&spec.name));
        for spec in &source {
            self.source.partition_count(&spec.name).await?;
        }
        self.staging.ensure_topics(&own).await
    }

    async fn partition_count(&self, topic: &str) -> Result<i32, StreamError> {
        self.route(topic).partition_count(topic).await
    }

    async fn append(
        &self,
        topic: &str,
        records: Vec<OutgoingRecord>,
    ) -> Result<Vec<Result<Delivered, DeliveryError>>, StreamError> {
        if self.is_source(topic) {
            tracing::error!(%topic, "A write to a production topic was refused.");
            return Err(read_only_error(topic));
        }
        self.staging.append(topic, records).await
    }

    async fn high_watermarks(&self, topic: &str) -> Result<Vec<i64>, StreamError> {
        self.route(topic).high_watermarks(topic).await
    }

    async fn open_reader(
        &self,
        topic: &str,
        start: &[(i32, i64)],
    ) -> Result<Box<dyn StreamReader>, StreamError> {
        self.route(topic).open_reader(topic, start).await
    }

    /// Groups are joined on staging's own store only, never on the source: a group assigns
    /// partition numbers, and co-partitioned topics share them, so staging's own topics of
    /// the subscription (e.g. `sparfa-responses` beside the source's `ecosystem-events`)
    /// decide ownership of both. A subscription of source topics only is joined on
    /// staging's cluster under the same names, which works when that cluster holds them
    /// (MirrorMaker 2, or staging under its own prefix on the production cluster).
    async fn join_group(
        &self,
        group_id: &str,
        topics: &[String],
    ) -> Result<Box<dyn GroupMembership>, StreamError> {
        let own: Vec<String> = topics
            .iter()
            .filter(|topic| !self.is_source(topic))
            .cloned()
            .collect();
        if own.is_empty() {
            return self.staging.join_group(group_id, topics).await;
        }
        self.staging.join_group(group_id, &own).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use biglearn_stream::embedded::EmbeddedStore;

    use super::*;

    fn record(key: &str) -> OutgoingRecord {
        OutgoingRecord {
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
            headers: Vec::new(),
        }
    }

    #[tokio::test]
    async fn reads_come_from_the_source_and_writes_stay_in_staging() {
        let source_dir = tempfile::tempdir().unwrap();
        let staging_dir = tempfile::tempdir().unwrap();
        let production: SharedStreamStore =
            Arc::new(EmbeddedStore::open(source_dir.path()).unwrap());
        production
            .ensure_topics(&Topics::new("prod").all_specs(12))
            .await
            .unwrap();
        production
            .append("prod.course-events", vec![record("c1")])
            .await
            .unwrap();
        let before = production
            .high_watermarks("prod.course-events")
            .await
            .unwrap();
        let staging_store: SharedStreamStore =
            Arc::new(EmbeddedStore::open(staging_dir.path()).unwrap());
        let topics = Topics::with_source("staging", "prod");
        let split = SplitStore::new(production.clone(), staging_store.clone(), &topics);
        split.ensure_topics(&topics.all_specs(12)).await.unwrap();

        // Writes to any source topic are refused before reaching the source store.
        for topic in topics.system_of_record() {
            let refused = split.append(&topic, vec![record("c1")]).await;
            assert!(
                matches!(&refused, Err(StreamError::ReadOnly { topic: refused_topic }) if *refused_topic == topic),
                "{refused:?}"
            );
        }
        assert_eq!(
            production
                .high_watermarks("prod.course-events")
                .await
                .unwrap(),
            before
        );

        // Derived topics are staging's own.
        let delivered = split
            .append("staging.results", vec![record("r")])
            .await
            .unwrap();
        assert!(delivered[0].is_ok());
        assert_eq!(
            staging_store
                .high_watermarks("staging.results")
                .await
                .unwrap()
                .iter()
                .sum::<i64>(),
            1
        );
        assert!(production.partition_count("staging.results").await.is_err());
        assert!(staging_store
            .partition_count("prod.course-events")
            .await
            .is_err());

        // Reads of the source topics see production's records.
        let starts: Vec<(i32, i64)> = (0..before.len() as i32).map(|p| (p, 0)).collect();
        let mut reader = split
            .open_reader("prod.course-events", &starts)
            .await
            .unwrap();
        let read = reader.poll(10, Duration::from_millis(500)).await.unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].key.as_deref(), Some(&b"c1"[..]));
    }

    #[tokio::test]
    async fn production_models_are_read_from_the_source_and_never_written() {
        let source_dir = tempfile::tempdir().unwrap();
        let staging_dir = tempfile::tempdir().unwrap();
        let production: SharedStreamStore =
            Arc::new(EmbeddedStore::open(source_dir.path()).unwrap());
        production
            .ensure_topics(&Topics::new("prod").all_specs(12))
            .await
            .unwrap();
        production
            .append("prod.models", vec![record("e1")])
            .await
            .unwrap();
        let before = production.high_watermarks("prod.models").await.unwrap();
        let staging_store: SharedStreamStore =
            Arc::new(EmbeddedStore::open(staging_dir.path()).unwrap());
        let topics = Topics::with_source("staging", "prod");
        let split = SplitStore::new(production.clone(), staging_store.clone(), &topics)
            .with_source_topic("prod.models");
        split.ensure_topics(&topics.all_specs(12)).await.unwrap();

        let starts: Vec<(i32, i64)> = (0..before.len() as i32).map(|p| (p, 0)).collect();
        let mut reader = split.open_reader("prod.models", &starts).await.unwrap();
        let read = reader.poll(10, Duration::from_millis(500)).await.unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].key.as_deref(), Some(&b"e1"[..]));
        let refused = split.append("prod.models", vec![record("e2")]).await;
        assert!(
            matches!(&refused, Err(StreamError::ReadOnly { topic }) if topic == "prod.models"),
            "{refused:?}"
        );
        assert_eq!(
            production.high_watermarks("prod.models").await.unwrap(),
            before
        );
        assert!(staging_store.partition_count("prod.models").await.is_err());
        // Staging's own models topic stays its own (used with --own-sparfa).
        assert!(split
            .append("staging.models", vec![record("e3")])
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn a_missing_source_topic_is_an_error_not_a_creation() {
        let source_dir = tempfile::tempdir().unwrap();
        let staging_dir = tempfile::tempdir().unwrap();
        let production: SharedStreamStore =
            Arc::new(EmbeddedStore::open(source_dir.path()).unwrap());
        let staging_store: SharedStreamStore =
            Arc::new(EmbeddedStore::open(staging_dir.path()).unwrap());
        let topics = Topics::with_source("staging", "prod");
        let split = SplitStore::new(production.clone(), staging_store, &topics);
        let outcome = split.ensure_topics(&topics.all_specs(12)).await;
        assert!(
            matches!(outcome, Err(StreamError::UnknownTopic { .. })),
            "{outcome:?}"
        );
        assert!(production
            .partition_count("prod.course-events")
            .await
            .is_err());
    }

    #[tokio::test]
    async fn groups_are_never_joined_on_the_source() {
        let source_dir = tempfile::tempdir().unwrap();
        let staging_dir = tempfile::tempdir().unwrap();
        let topics = Topics::with_source("staging", "prod");
        // The source has every production topic, staging only its own: a group call
        // routed to the source would succeed where staging's store refuses.
        let source: SharedStreamStore = Arc::new(EmbeddedStore::open(source_dir.path()).unwrap());
        source
            .ensure_topics(&Topics::new("prod").all_specs(12))
            .await
            .unwrap();
        let staging_store: SharedStreamStore =
            Arc::new(EmbeddedStore::open(staging_dir.path()).unwrap());
        staging_store
            .ensure_topics(&topics.owned_specs(12))
            .await
            .unwrap();
        let split = SplitStore::new(source, staging_store, &topics);
        let only_source = split
            .join_group("staging.sparfa-router", &[topics.course_events()])
            .await
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert!(
            only_source.contains("prod.course-events does not exist"),
            "{only_source}"
        );
        let joined = split
            .join_group(
                "staging.sparfa",
                &[topics.ecosystem_events(), topics.sparfa_responses()],
            )
            .await;
        assert!(joined.is_ok(), "joined on staging's own store");
    }
}
