//! Kafka records of the event topics: the aggregate key and the `bl-*` routing headers
//! (docs/design/events.md §4.1).

use biglearn_domain::events::{CourseEvent, EcosystemEvent, EnvelopeMeta};
use biglearn_domain::ids::parse_hyphenated_uuid;
use uuid::Uuid;

use crate::course::encode_course_event_as;
use crate::ecosystem::encode_ecosystem_event_as;
use crate::wire::WireFormat;

/// Header holding the event type name.
pub const HEADER_EVENT_TYPE: &str = "bl-event-type";
/// Header holding the event identity.
pub const HEADER_EVENT_UUID: &str = "bl-event-uuid";
/// Header holding the aggregate uuid (course or ecosystem).
pub const HEADER_AGGREGATE_UUID: &str = "bl-aggregate-uuid";
/// Header holding the decimal sequence number.
pub const HEADER_SEQUENCE_NUMBER: &str = "bl-sequence-number";
/// Header naming the value's framing.
pub const HEADER_ENCODING: &str = "bl-encoding";
/// `bl-encoding` of a Confluent-framed value.
pub const ENCODING_CONFLUENT: &str = "avro-confluent";
/// `bl-encoding` of a single-object encoded value.
pub const ENCODING_SINGLE_OBJECT: &str = "avro-single-object";

/// One Kafka record, ready to produce.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct EncodedRecord {
    /// The 36-byte lower-case aggregate uuid, not Avro-encoded.
    pub key: Vec<u8>,
    /// The framed Avro value.
    pub value: Vec<u8>,
    /// The `bl-*` headers, in the order of the spec's table.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// The routing fields of a record, read from its headers alone.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RoutingHeaders {
    /// `bl-event-type`, possibly a type this build does not know.
    pub event_type: String,
    /// `bl-event-uuid`.
    pub event_uuid: Uuid,
    /// `bl-aggregate-uuid`.
    pub aggregate_uuid: Uuid,
    /// `bl-sequence-number`.
    pub sequence_number: i64,
}

/// The Kafka key of an aggregate: its 36-byte lower-case uuid.
pub fn aggregate_key(aggregate_uuid: Uuid) -> Vec<u8> {
    let mut text = Uuid::encode_buffer();
    aggregate_uuid
        .hyphenated()
        .encode_lower(&mut text)
        .as_bytes()
        .to_vec()
}

/// A course event as a record in the process's framing (single-object unless a schema
/// registry is installed, see [`crate::process`]).
pub fn course_event_record(event: &CourseEvent) -> EncodedRecord {
    course_event_record_as(
        event,
        crate::process::process_format(crate::SchemaFamily::CourseEvent),
    )
}

/// A course event as a record in the given framing.
pub fn course_event_record_as(event: &CourseEvent, format: WireFormat) -> EncodedRecord {
    build_record(
        &event.meta,
        event.event_type().as_str(),
        event.course_uuid.0,
        encode_course_event_as(event, format),
        format,
    )
}

/// An ecosystem event as a record in the process's framing (see [`crate::process`]).
pub fn ecosystem_event_record(event: &EcosystemEvent) -> EncodedRecord {
    ecosystem_event_record_as(
        event,
        crate::process::process_format(crate::SchemaFamily::EcosystemEvent),
    )
}

/// An ecosystem event as a record in the given framing.
pub fn ecosystem_event_record_as(event: &EcosystemEvent, format: WireFormat) -> EncodedRecord {
    build_record(
        &event.meta,
        event.event_type().as_str(),
        event.ecosystem_uuid.0,
        encode_ecosystem_event_as(event, format),
        format,
    )
}

fn build_record(
    meta: &EnvelopeMeta,
    event_type: &str,
    aggregate_uuid: Uuid,
    value: Vec<u8>,
    format: WireFormat,
) -> EncodedRecord {
    let key = aggregate_key(aggregate_uuid);
    let headers = vec![
        (HEADER_EVENT_TYPE.to_owned(), event_type.as_bytes().to_vec()),
        (
            HEADER_EVENT_UUID.to_owned(),
            aggregate_key(meta.event_uuid.0),
        ),
        (HEADER_AGGREGATE_UUID.to_owned(), key.clone()),
        (
            HEADER_SEQUENCE_NUMBER.to_owned(),
            meta.sequence_number.0.to_string().into_bytes(),
        ),
        (
            HEADER_ENCODING.to_owned(),
            format.header_value().as_bytes().to_vec(),
        ),
    ];
    EncodedRecord {
        key,
        value,
        headers,
    }
}

/// Reads the routing fields from headers alone; `None` if one is missing or malformed.
///
/// If a header repeats, its first occurrence counts.
pub fn routing_headers(headers: &[(String, Vec<u8>)]) -> Option<RoutingHeaders> {
    let text = |name: &str| {
        headers
            .iter()
            .find(|(key, _)| key == name)
            .and_then(|(_, value)| std::str::from_utf8(value).ok())
    };
    let event_type = text(HEADER_EVENT_TYPE).filter(|name| !name.is_empty())?;
    Some(RoutingHeaders {
        event_type: event_type.to_owned(),
        event_uuid: parse_hyphenated_uuid(text(HEADER_EVENT_UUID)?)?,
        aggregate_uuid: parse_hyphenated_uuid(text(HEADER_AGGREGATE_UUID)?)?,
        sequence_number: text(HEADER_SEQUENCE_NUMBER)?.parse().ok()?,
    })
}
