//! The SPARFA consumer: routes responses by ecosystem, keeps per-ecosystem training data of the
//! partitions it owns in consumer group `<prefix>.sparfa`, fits models off the async workers and
//! publishes them to `<prefix>.models`; and the model store every result-computing process reads
//! them from (docs/design/sparfa.md §1, §3, §5, §8, §9).
//!
//! Invariants:
//! - The book-keeping (`partition_book`, `model`) is pure: no clock, no I/O; the same records in the
//!   same order give byte-identical model records (`created_at` is the latest applied
//!   `accepted_at`, a logical time; only `fit_seconds` is measured by the shell).
//! - At most one fit per ecosystem runs at a time; marks made meanwhile coalesce into one
//!   follow-up fit.
//! - A model_seq is never published at or below one already seen on `<prefix>.models`,
//!   nor from a partition this instance no longer owns.
//! - Routers share the course-event partitions through group `<prefix>.sparfa-router` and
//!   write their positions to sled only after their appends were delivered; the
//!   consumer's first-response and trial counts are idempotent, so duplicates are harmless.
//! - Newly owned partitions are rebuilt from offset 0 on every assignment; no consumer
//!   state is persisted.
//!
//! Does not: compute CLUEs or rankings (the scheduler does), block on sequence gaps, or
//! mark results dirty when a model arrives (the model store offers a hook for that).
//!
//! Modules, in reading order:
//! - [`partition_book`]: one partition's ecosystems, first responses, retrain marks, fit coalescing.
//! - [`sparfa_settings`]: the global `sparfa.*` settings.
//! - [`model`]: snapshot → fit → `ModelComputed`, and `ModelComputed` → `EcosystemModel`.
//! - [`router`]: `record_response` records re-keyed onto `<prefix>.sparfa-responses`.
//! - [`consumer`]: the group member's loop and the fit pool.
//! - [`store`]: the `<prefix>.models` consumer, sled storage and the `ModelView`.

pub mod consumer;
pub mod model;
pub mod partition_book;
pub mod router;
pub mod sparfa_settings;
pub mod store;

pub use consumer::{
    default_fit_workers, group_id, group_topics, run_sparfa_consumer, SparfaConsumerConfig,
};
pub use model::{compute_model, ecosystem_model, matrix_uuid, snapshot, FitInput};
pub use partition_book::{
    Applied, EcosystemBook, EcosystemContent, PartitionBook, PublishedModel, Trigger,
};
pub use router::{route, router_group_id, run_response_router, RouterConfig};
pub use sparfa_settings::{SparfaSettings, SparfaSettingsSource};
pub use store::{run_model_store, ModelStore, NewModelHook, Stored, MODELS_KEPT};

/// A model record that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("undecodable model record: {0}")]
    Decode(#[source] biglearn_events::DecodeError),
    #[error("model {matrix_uuid} is malformed: {detail}")]
    Malformed {
        matrix_uuid: uuid::Uuid,
        detail: String,
    },
}

/// Failures of the shell (router, consumer, model store); each stops its loop, and the
/// process restarts it from its stored positions or from offset 0.
#[derive(Debug, thiserror::Error)]
pub enum SparfaConsumerError {
    #[error("stream error while {doing}: {source}")]
    Stream {
        doing: &'static str,
        #[source]
        source: biglearn_stream::StreamError,
    },
    #[error("sled error while {doing}: {source}")]
    Sled {
        doing: &'static str,
        #[source]
        source: sled::Error,
    },
    #[error("records not delivered to {topic}: {detail}")]
    NotDelivered { topic: String, detail: String },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("a background task failed: {0}")]
    Task(String),
    #[error("{0}")]
    Consumer(String),
}

impl SparfaConsumerError {
    /// Whether waiting and starting again can cure it (a stream that was unavailable).
    pub fn is_transient(&self) -> bool {
        match self {
            SparfaConsumerError::Stream { source, .. } => source.is_transient(),
            // Delivery of routed responses or models failed: nothing was stored past it.
            SparfaConsumerError::NotDelivered { .. } => true,
            _ => false,
        }
    }
}

pub(crate) fn stream_error(
    doing: &'static str,
) -> impl Fn(biglearn_stream::StreamError) -> SparfaConsumerError {
    move |source| SparfaConsumerError::Stream { doing, source }
}

pub(crate) fn sled_error(doing: &'static str) -> impl Fn(sled::Error) -> SparfaConsumerError {
    move |source| SparfaConsumerError::Sled { doing, source }
}
