//! An event record decoded once per process, shared by every projection of its topic.

use biglearn_domain::events::{CourseEvent, EcosystemEvent, StreamKind};
use biglearn_domain::ids::{EventUuid, SequenceNumber};
use biglearn_events::{
    decode_course_event, decode_ecosystem_event, routing_headers, DeadLetterReason, DecodeError,
};
use biglearn_stream::ConsumedRecord;
use uuid::Uuid;

/// Where an undecodable record belongs, from its `bl-*` headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routing {
    pub aggregate: Uuid,
    pub sequence_number: SequenceNumber,
    pub event_uuid: EventUuid,
    pub event_type: String,
}

/// One record of an event topic, as every projection sees it.
#[derive(Clone, Debug)]
pub enum DecodedEvent {
    Course(Box<CourseEvent>),
    Ecosystem(Box<EcosystemEvent>),
    /// This build cannot decode it: each projection dead-letters it under its own name,
    /// and one it can route by its headers (`routing`) blocks its aggregate (opaque).
    Undecodable {
        reason: DeadLetterReason,
        detail: String,
        routing: Option<Routing>,
    },
}

impl DecodedEvent {
    /// When the writer accepted the event (µs), for decoded events.
    pub fn accepted_at_micros(&self) -> Option<i64> {
        match self {
            DecodedEvent::Course(event) => Some(event.meta.accepted_at_micros),
            DecodedEvent::Ecosystem(event) => Some(event.meta.accepted_at_micros),
            DecodedEvent::Undecodable { .. } => None,
        }
    }
}

/// Decodes a record of the `stream` topic (never fails: failures are values).
pub fn decode_event(stream: StreamKind, record: &ConsumedRecord) -> DecodedEvent {
    let value = record.value.as_deref().unwrap_or_default();
    let decoded = match stream {
        StreamKind::Course => {
            decode_course_event(value).map(|event| DecodedEvent::Course(Box::new(event)))
        }
        StreamKind::Ecosystem => {
            decode_ecosystem_event(value).map(|event| DecodedEvent::Ecosystem(Box::new(event)))
        }
    };
    decoded.unwrap_or_else(|error| DecodedEvent::Undecodable {
        reason: match error {
            DecodeError::UnknownEventType { .. } => DeadLetterReason::UnknownType,
            _ => DeadLetterReason::Undecodable,
        },
        detail: error.to_string(),
        routing: routing_headers(&record.headers).map(|routing| Routing {
            aggregate: routing.aggregate_uuid,
            sequence_number: SequenceNumber(routing.sequence_number),
            event_uuid: EventUuid(routing.event_uuid),
            event_type: routing.event_type,
        }),
    })
}

/// The decoder of `stream`'s topic for a [`biglearn_runtime::TopicConsumer`].
pub fn decoder(stream: StreamKind) -> impl Fn(&ConsumedRecord) -> DecodedEvent + Send + Sync {
    move |record| decode_event(stream, record)
}
