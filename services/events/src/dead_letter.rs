//! `DeadLetter` records of `<prefix>.dlq` (docs/design/events.md §7.4).

use crate::binary::{AvroReader, AvroWriter};
use crate::error::DecodeError;
use crate::process::ProcessLookup;
use crate::record::EncodedRecord;
use crate::schemas::SchemaFamily;
use crate::wire::{self, SchemaLookup, WireFormat};

/// Why a record went to the DLQ.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum DeadLetterReason {
    /// Framing, schema or body could not be decoded.
    Undecodable,
    /// The envelope decoded but its event type is unknown to this build.
    UnknownType,
    /// A second, different event at an already taken `(aggregate, sequence_number)`.
    SlotConflict,
    /// An inbox request that HTTP would have answered with 400.
    InvalidPayload,
}

impl DeadLetterReason {
    /// Every reason, in the Avro enum's symbol order.
    pub const ALL: [DeadLetterReason; 4] = [
        DeadLetterReason::Undecodable,
        DeadLetterReason::UnknownType,
        DeadLetterReason::SlotConflict,
        DeadLetterReason::InvalidPayload,
    ];

    /// The Avro symbol, also usable as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::Undecodable => "undecodable",
            DeadLetterReason::UnknownType => "unknown_type",
            DeadLetterReason::SlotConflict => "slot_conflict",
            DeadLetterReason::InvalidPayload => "invalid_payload",
        }
    }
}

/// One dead letter: the original record and why it was set aside.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct DeadLetter {
    /// Topic the original record was read from (or, for the inbox, written to).
    pub source_topic: String,
    /// Its partition.
    pub source_partition: i32,
    /// Its offset.
    pub source_offset: i64,
    /// The consumer group or component that set it aside.
    pub consumer_group_or_component: String,
    /// Why.
    pub reason: DeadLetterReason,
    /// Human-readable cause (the decode error, the conflicting identities, the error body).
    pub detail: String,
    /// The original key, if the record had one.
    pub original_key: Option<Vec<u8>>,
    /// The original value, if the record had one.
    pub original_value: Option<Vec<u8>>,
    /// The original headers, in record order.
    pub original_headers: Vec<(String, Vec<u8>)>,
    /// When the consumer set it aside, microseconds since the epoch.
    pub observed_at_micros: i64,
}

/// Encodes a dead letter in single-object encoding.
pub fn encode_dead_letter(dead_letter: &DeadLetter) -> Vec<u8> {
    let hint = 64
        + dead_letter.detail.len()
        + dead_letter.original_key.as_ref().map_or(0, Vec::len)
        + dead_letter.original_value.as_ref().map_or(0, Vec::len);
    let buf = WireFormat::SingleObject.start(SchemaFamily::DeadLetter, hint);
    let mut w = AvroWriter::with_buffer(buf);
    w.string(&dead_letter.source_topic);
    w.int(dead_letter.source_partition);
    w.long(dead_letter.source_offset);
    w.string(&dead_letter.consumer_group_or_component);
    w.index(
        DeadLetterReason::ALL
            .iter()
            .position(|reason| *reason == dead_letter.reason)
            .unwrap_or_default(),
    );
    w.string(&dead_letter.detail);
    w.optional(dead_letter.original_key.as_deref(), AvroWriter::bytes);
    w.optional(dead_letter.original_value.as_deref(), AvroWriter::bytes);
    w.array(&dead_letter.original_headers, |w, (key, value)| {
        w.string(key);
        w.bytes(value);
    });
    w.long(dead_letter.observed_at_micros);
    w.buf
}

/// Decodes a dead letter in either framing, without a registry.
pub fn decode_dead_letter(bytes: &[u8]) -> Result<DeadLetter, DecodeError> {
    decode_dead_letter_with(bytes, &ProcessLookup)
}

/// Decodes a dead letter in either framing, looking Confluent schema ids up in `lookup`.
pub fn decode_dead_letter_with(
    bytes: &[u8],
    lookup: &dyn SchemaLookup,
) -> Result<DeadLetter, DecodeError> {
    let family = SchemaFamily::DeadLetter;
    let body = wire::current_body(family, wire::unframe(family, bytes, lookup)?, |_| Ok(()))?;
    let mut r = AvroReader::new(&body);
    let dead_letter = DeadLetter {
        source_topic: r.string()?,
        source_partition: r.int()?,
        source_offset: r.long()?,
        consumer_group_or_component: r.string()?,
        reason: DeadLetterReason::ALL[r.index(DeadLetterReason::ALL.len())?],
        detail: r.string()?,
        original_key: r.optional(|r| r.bytes().map(<[u8]>::to_vec))?,
        original_value: r.optional(|r| r.bytes().map(<[u8]>::to_vec))?,
        original_headers: r.array(|r| Ok((r.string()?, r.bytes()?.to_vec())))?,
        observed_at_micros: r.long()?,
    };
    r.finish()?;
    Ok(dead_letter)
}

/// A dead letter as a `<prefix>.dlq` record: keyed by the original key, without headers.
pub fn dead_letter_record(dead_letter: &DeadLetter) -> EncodedRecord {
    EncodedRecord {
        key: dead_letter.original_key.clone().unwrap_or_default(),
        value: encode_dead_letter(dead_letter),
        headers: Vec::new(),
    }
}
