//! The Avro envelope of Biglearn's topics: the schemas in `schemas/`, the encoding and
//! decoding of course, ecosystem and dead-letter records, and the `bl-*` Kafka headers.
//!
//! Invariants:
//! - Every released schema version is embedded; a single-object value is read by looking
//!   its writer up by fingerprint among all of them, then resolving to the current version.
//! - Decoding never panics: any malformed input is a [`DecodeError`].
//! - The hand-written codecs write exactly the bytes apache-avro writes for the current
//!   schemas (tested); apache-avro stays the reference for parsing, fingerprints,
//!   resolution of older writers and compatibility checks.
//! - Every version of a schema folder reads every earlier one (BACKWARD_TRANSITIVE, tested).
//! - Kafka keys are the 36-byte lower-case aggregate uuid, never Avro.
//!
//! Does not: talk to Kafka or a schema registry (a registry client implements
//! [`SchemaLookup`]), validate business rules, or decide what to do with undecodable records.
//!
//! Modules, in reading order:
//! - [`schemas`]: the embedded `.avsc` files, parsed once, with fingerprints.
//! - `wire`: single-object and Confluent framing, [`SchemaLookup`], resolution of older writers.
//! - `process`: the process's schema-registry view (framing of writers, ids of decoders).
//! - `binary`: Avro binary primitives for the hand-written codecs.
//! - `course`, `ecosystem`: the envelope codecs.
//! - `record`: Kafka key and `bl-*` headers, [`routing_headers`].
//! - `dead_letter`: [`DeadLetter`] records of the DLQ.
//! - `model`: [`ModelComputed`] records of `<prefix>.models`.
//! - `error`: [`DecodeError`], [`EncodeError`].

mod binary;
mod course;
mod dead_letter;
mod ecosystem;
mod error;
mod model;
mod process;
mod record;
mod result_record;
pub mod schemas;
mod wire;

pub use course::{
    decode_course_event, decode_course_event_with, encode_course_event, encode_course_event_as,
};
pub use dead_letter::{
    dead_letter_record, decode_dead_letter, decode_dead_letter_with, encode_dead_letter,
    DeadLetter, DeadLetterReason,
};
pub use ecosystem::{
    decode_ecosystem_event, decode_ecosystem_event_with, encode_ecosystem_event,
    encode_ecosystem_event_as,
};
pub use error::{DecodeError, EncodeError};
pub use model::{
    decode_model_computed, encode_model_computed, model_computed_record, ModelComputed,
    ModelHyperparameters, TopicPosition,
};
pub use process::{install_registry_view, process_format, ProcessLookup, RegistryView};
pub use record::{
    aggregate_key, course_event_record, course_event_record_as, ecosystem_event_record,
    ecosystem_event_record_as, routing_headers, EncodedRecord, RoutingHeaders, ENCODING_CONFLUENT,
    ENCODING_SINGLE_OBJECT, HEADER_AGGREGATE_UUID, HEADER_ENCODING, HEADER_EVENT_TYPE,
    HEADER_EVENT_UUID, HEADER_SEQUENCE_NUMBER,
};
pub use result_record::{
    decode_result_record, encode_result_record, result_content_hash, result_record, ResultClueData,
    ResultKey, ResultKind, ResultRecord, ResultVersion,
};
pub use schemas::{EmbeddedSchema, SchemaFamily};
pub use wire::{
    decode_value, encode_value, InMemorySchemaLookup, NoSchemaRegistry, SchemaLookup, WireFormat,
    WriterSchema, CONFLUENT_MAGIC, SINGLE_OBJECT_MAGIC,
};

/// apache-avro, re-exported so that users of [`encode_value`] / [`decode_value`] and
/// [`SchemaLookup`] implementors use the same version.
pub use apache_avro;
