//! The stream store: append keyed records to a topic, read a partition from an offset,
//! with two backends behind one trait, [`StreamStore`].
//!
//! Invariants:
//! - A record is reported delivered only once it is durable: on the embedded log after
//!   an fsync that covers it, on Kafka after a delivery report with `acks=all`.
//! - Records with the same key land on the same partition, in append order, on both
//!   backends (the Java-compatible murmur2 partitioner, [`partition_for_key`]).
//! - Readers start from an offset the caller gives; this crate never stores consumer
//!   positions. Consumers keep them in sled beside the state they produced
//!   (docs/design/events.md §7.1).
//! - Ownership comes from the group, positions from sled: [`StreamStore::join_group`]
//!   only decides which partitions an instance owns; nothing is committed to Kafka and
//!   owners read with [`StreamStore::open_reader`] from their stored positions.
//!
//! Does not: decode records (that is `biglearn-events`), order events by sequence
//! number, or deduplicate (consumers do).
//!
//! Modules, in reading order:
//! - [`record`]: records going in and coming out, delivery outcomes.
//! - [`topics`]: topic names per environment prefix and their fixed layout.
//! - [`partitioner`]: murmur2 key → partition, as Java clients compute it.
//! - [`group`]: consumer-group membership, [`Assignment`] and [`GroupMembership`].
//! - [`embedded`]: the default backend, checksummed segment files with group commit.
//! - [`kafka`]: the rdkafka backend, with its group membership in `kafka::group`.
//! - [`volume`]: free space of the data volume, the write reserve, disk-fault injection.
//! - [`clock`]: the wall clock (`now_micros`), shared by every crate that stamps or measures.

pub mod clock;
pub mod embedded;
pub mod group;
pub mod kafka;
pub mod partitioner;
pub mod record;
pub mod topics;
pub mod volume;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use group::{Assignment, GroupMembership};
pub use partitioner::partition_for_key;
pub use record::{ConsumedRecord, Delivered, DeliveryError, OutgoingRecord};
pub use topics::{TopicSpec, Topics};

/// Errors of the stream store other than per-record delivery outcomes.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(
        "topic {topic} does not exist; create it first (biglearn creates its topics at start-up)"
    )]
    UnknownTopic { topic: String },
    #[error("partition {partition} of topic {topic} does not exist (the topic has {partitions})")]
    UnknownPartition {
        topic: String,
        partition: i32,
        partitions: i32,
    },
    #[error("offset {offset} is outside partition {topic}/{partition} (valid: {low}..={high}); a stored position beyond the log is an alarm, not something to skip (spec events.md §7.1)")]
    OffsetOutOfRange {
        topic: String,
        partition: i32,
        offset: i64,
        low: i64,
        high: i64,
    },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("another process holds the lock {path}: if another biglearn process uses this data directory, stop that one first")]
    Locked { path: String },
    #[error("corrupt log segment {path} at byte {position}: {detail}")]
    Corrupt {
        path: String,
        position: u64,
        detail: String,
    },
    #[error("Kafka error while {context}: {source}")]
    Kafka {
        context: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("{topic} is read-only here: this store reads the cluster and never writes to it (staging reads production, spec operations.md §5); the write was refused before reaching any broker")]
    ReadOnly { topic: String },
    #[error("timed out after {waited:?} while {context}")]
    Timeout { context: String, waited: Duration },
    #[error("consumer group {group_id}: {detail}")]
    Group { group_id: String, detail: String },
}

impl StreamError {
    /// Whether waiting and trying again can cure this error: timeouts, a broker that is
    /// down or moving leaders, a metadata or offsets request that failed. Configuration,
    /// authorisation, fencing, corruption and positions outside the log are not: retrying
    /// them would hide a fault an operator must see.
    pub fn is_transient(&self) -> bool {
        match self {
            StreamError::Timeout { .. } | StreamError::UnknownTopic { .. } => true,
            StreamError::Group { .. } => true,
            StreamError::Kafka { source, .. } => kafka::is_transient(source),
            StreamError::UnknownPartition { .. }
            | StreamError::OffsetOutOfRange { .. }
            | StreamError::Io { .. }
            | StreamError::Locked { .. }
            | StreamError::Corrupt { .. }
            | StreamError::ReadOnly { .. } => false,
        }
    }
}

/// The append-only stream store that every component stands on.
#[async_trait]
pub trait StreamStore: Send + Sync + 'static {
    /// A short name for logs and metrics (`embedded` or `kafka`).
    fn backend_name(&self) -> &'static str;

    /// Creates the topics that do not exist yet. Existing topics are left as they are
    /// (their partition count is fixed forever).
    async fn ensure_topics(&self, specs: &[TopicSpec]) -> Result<(), StreamError>;

    /// The number of partitions of a topic.
    async fn partition_count(&self, topic: &str) -> Result<i32, StreamError>;

    /// Appends records, pipelined, and waits for every outcome. Outcomes are in input
    /// order. Records with the same key keep their relative order.
    async fn append(
        &self,
        topic: &str,
        records: Vec<OutgoingRecord>,
    ) -> Result<Vec<Result<Delivered, DeliveryError>>, StreamError>;

    /// The next offset to be written in every partition of `topic` (index = partition).
    async fn high_watermarks(&self, topic: &str) -> Result<Vec<i64>, StreamError>;

    /// Opens a reader of the given partitions, each starting at the given offset.
    async fn open_reader(
        &self,
        topic: &str,
        start: &[(i32, i64)],
    ) -> Result<Box<dyn StreamReader>, StreamError>;

    /// Joins consumer group `group_id` subscribed to `topics`, to learn which of their
    /// partitions this instance owns. Positions are not committed to the group: owners
    /// read with [`StreamStore::open_reader`] from the positions they keep in sled.
    /// Co-partitioned topics (same partition count) are assigned together: an owner of
    /// partition p of one owns partition p of all.
    ///
    /// The default answers that the backend has no consumer groups.
    async fn join_group(
        &self,
        group_id: &str,
        topics: &[String],
    ) -> Result<Box<dyn GroupMembership>, StreamError> {
        let _ = topics;
        Err(StreamError::Group {
            group_id: group_id.to_owned(),
            detail: format!(
                "the {} stream backend does not support consumer groups",
                self.backend_name()
            ),
        })
    }
}

/// Reads assigned partitions forward from their start offsets.
#[async_trait]
pub trait StreamReader: Send {
    /// Returns up to `max_records` records, waiting at most `timeout` for the first one.
    /// An empty result means nothing new arrived in time. Records of one partition come
    /// in offset order.
    async fn poll(
        &mut self,
        max_records: usize,
        timeout: Duration,
    ) -> Result<Vec<ConsumedRecord>, StreamError>;
}

/// A shared handle to whichever backend the process runs on.
pub type SharedStreamStore = Arc<dyn StreamStore>;
