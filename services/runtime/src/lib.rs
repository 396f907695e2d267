//! The consumer runtime: the one way code in this repository turns a topic into state.
//!
//! A [`Projection`] says what it keeps (its stored positions) and how it applies a batch;
//! a [`TopicConsumer`] owns everything else: opening a reader at the projections'
//! positions, polling, decoding each record **once** and handing the decoded batch to
//! every projection of the process that reads the topic, progress and readiness,
//! retries, and shutdown. [`supervise`] gives components that are not projections (the
//! group members of the SPARFA side) the same retry discipline.
//!
//! Invariants:
//! - A projection stores its positions with its state, in the same atomic write; the
//!   runtime never stores positions and never asks the broker for committed offsets. A
//!   projection is offered only records at or past its own positions, so projections at
//!   different positions can share one reader.
//! - Application is idempotent by (aggregate, sequence_number) and identity, so that a
//!   batch retried after a transient error, or re-read after a crash, changes nothing
//!   twice; the runtime may offer a batch again, never skip one.
//! - Transient errors (timeouts, a broker down, a leader moving, a slow metadata or
//!   offsets request) are retried with capped exponential backoff, reported in
//!   [`ConsumerProgress::stalled`] (so `/readyz` shows them) and in metrics, and never
//!   stop the process. Fatal errors (corruption, fencing, authorisation, a position
//!   outside the log) end the consumer with an error, which stops the process.
//!
//! Does not: decode (the caller gives the decoder), decide what a record means, or keep
//! state of its own beyond progress.

mod backoff;
mod consumer;
mod error;
mod progress;
mod supervise;

pub use backoff::Backoff;
pub use consumer::{Applied, Batch, Projection, RunOptions, TopicConsumer};
pub use error::ApplyError;
pub use progress::{is_caught_up, ConsumerProgress};
pub use supervise::supervise;
