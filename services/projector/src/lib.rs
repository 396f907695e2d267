//! Projections: consume the event streams into sled read models, with the stream
//! positions written in the same atomic batch as the state they produced.
//!
//! Invariants:
//! - A projection's state and its per-partition positions live in one sled tree and
//!   change only through one `sled::Batch`, so they can never disagree after a crash.
//! - On start a projection resumes from the positions in sled, never from offsets
//!   committed to a broker.
//! - Application is keyed by (aggregate, sequence_number) and identity, never by
//!   offset: re-applying a record is harmless, which is what makes resuming after a
//!   crash (sled may lose its last ~0.5 s) correct.
//!
//! Does not: serve HTTP (the gateway reads these projections), or compute results.
//!
//! Modules, in reading order:
//! - [`overlay`]: read-your-own-writes batches over one sled tree.
//! - [`event_log`]: every event by slot, identities, metadata numbers, gaps, known sets.
//! - [`decoded`]: an event record decoded once for every projection of its topic.
//! - [`consumer`]: the event-log projection as a projection of the consumer runtime.
//! - [`state`]: the read model (courses, rosters, assignments, responses, content), applied
//!   per aggregate in sequence order with gaps parked in sled, and its consumer loop.
//! - [`service`]: the state projection's live consumers and blue/green rebuilds.
//! - [`results`]: computed and pushed results by key, newest version wins.
//! - [`writer_index`]: the writer's identities and taken slots in memory, fed by
//!   [`event_log`].

pub mod consumer;
pub mod decoded;
pub mod event_log;
pub mod overlay;
pub mod results;
pub mod service;
pub mod state;
pub mod writer_index;

/// Errors of the projections.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("sled error: {0}; the projection is a rebuildable cache: stop, move its directory aside and restart to rebuild it")]
    Sled(#[from] sled::Error),
    #[error("corrupt projection: {detail}; move the state directory aside and restart to rebuild it from the log")]
    Corrupt { detail: String },
    #[error("a dead letter could not be written to {topic}: {detail}; the batch is not applied and will be retried")]
    DeadLetterNotDelivered { topic: String, detail: String },
    #[error("a rebuild is already running; wait for it to finish (see biglearn_projection_rebuild_progress_ratio)")]
    RebuildRunning,
    #[error(transparent)]
    Stream(#[from] biglearn_stream::StreamError),
    #[error("{detail}")]
    Consumer { detail: String },
}
