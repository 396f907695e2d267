//! Staging on production data: a store that reads production's system-of-record topics
//! and never writes to them, optional pseudonymised student ids, and the comparisons of
//! `biglearn staging verify` and `biglearn results diff` (docs/design/operations.md §5, §10).
//!
//! Invariants:
//! - No producer or admin client is ever created for the source cluster: [`KafkaSource`]
//!   holds consumers only, and [`SplitStore`] refuses every write to a source topic before
//!   any client sees it.
//! - With pseudonymisation on, no consumer ever sees a real `student_uuid`: records are
//!   rewritten inside the reader, before decode-and-apply; a record that cannot be
//!   rewritten loses its value.
//! - Comparison is by (aggregate, sequence_number) and result key, never by offset:
//!   offsets differ under MirrorMaker 2.
//!
//! Does not: decide staging's topics (`biglearn_stream::Topics::with_source` does), or
//! wire processes (the `biglearn` crate does).
//!
//! Modules, in reading order:
//! - [`source`]: [`KafkaSource`], the read-only view of the source cluster.
//! - [`split`]: [`SplitStore`], source topics from the source, the rest on staging's store.
//! - [`pseudonym`]: [`Pseudonymizer`] and the store wrapper that applies it to course events.
//! - [`compare`]: state digests and result sets compared.

pub mod compare;
pub mod pseudonym;
pub mod source;
pub mod split;

pub use compare::{
    compare_parts, diff_results, first_sequence_difference, ResultsDiff, SequenceDifference,
    StateDigest, Verdict,
};
pub use pseudonym::{KeyError, Pseudonymizer, PseudonymizingStore};
pub use source::{KafkaSource, SourceConfig};
pub use split::SplitStore;
