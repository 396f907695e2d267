//! The pure core of Biglearn: identifiers, the event payloads of the system of record,
//! and the rules that turn events into state.
//!
//! Invariants:
//! - No I/O, no clock, no spawning: every function here is deterministic in its inputs.
//!   "Now" is always a parameter.
//! - Depends on none of tokio, rdkafka, sled, axum or apache-avro.
//!
//! Does not: encode events (that is `biglearn-events`), store or transport them.
//!
//! Modules, in reading order:
//! - [`ids`]: uuid newtypes, [`ids::SequenceNumber`], UUIDv5 in the Biglearn namespace.
//! - [`time`]: Tutor's datetime strings to microseconds.
//! - [`events`]: payloads, event types and envelopes of course and ecosystem events.
//! - [`sequencing`]: per-aggregate order: park ahead of gaps, drop duplicates, detect conflicts.
//! - [`fetch`]: the contiguous-prefix event-stream reads of the API.
//! - [`state`]: the read model (courses, rosters, assignments, responses, content) and the
//!   event effects that build it.

pub mod events;
pub mod fetch;
pub mod ids;
pub mod sequencing;
pub mod state;
pub mod time;
