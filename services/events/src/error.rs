//! Why a record could not be decoded: the two outcomes a consumer turns into an opaque pending entry.

/// A record this build cannot turn into an event (docs/design/events.md §4.3, §7.2).
///
/// Both variants are expected outcomes for a consumer: it stores the raw record as an
/// opaque pending entry (if the headers are readable) and copies it to the DLQ.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum DecodeError {
    /// Framing, schema lookup, schema resolution or the Avro body failed.
    #[error("undecodable record: {detail}")]
    Undecodable {
        /// What failed, for logs and the DLQ `detail` field.
        detail: String,
    },
    /// The envelope decoded, but its `event_type` is not known to this build.
    #[error("event type {event_type:?} is unknown to this build")]
    UnknownEventType {
        /// The `event_type` string as written.
        event_type: String,
    },
}

impl DecodeError {
    pub(crate) fn undecodable(detail: impl Into<String>) -> DecodeError {
        DecodeError::Undecodable {
            detail: detail.into(),
        }
    }

    /// The DLQ reason that goes with this error.
    pub fn dead_letter_reason(&self) -> crate::DeadLetterReason {
        match self {
            DecodeError::Undecodable { .. } => crate::DeadLetterReason::Undecodable,
            DecodeError::UnknownEventType { .. } => crate::DeadLetterReason::UnknownType,
        }
    }
}

/// An `apache_avro::types::Value` that does not fit its schema.
#[derive(Debug, thiserror::Error)]
#[error("value does not fit schema {schema}: {source}")]
pub struct EncodeError {
    /// The schema family's full name.
    pub schema: &'static str,
    /// apache-avro's reason.
    #[source]
    pub source: apache_avro::Error,
}
