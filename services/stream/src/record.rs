//! Records going into and coming out of the stream store.

/// A record to append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingRecord {
    /// Partitioning key: for event topics the 36-byte lower-case aggregate uuid.
    pub key: Vec<u8>,
    /// The encoded value.
    pub value: Vec<u8>,
    /// Headers, in order (names are `bl-…`; docs/design/events.md §4.1).
    pub headers: Vec<(String, Vec<u8>)>,
}

/// A record read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Create time in milliseconds since the epoch, if the backend knows it.
    pub timestamp_ms: Option<i64>,
}

impl ConsumedRecord {
    /// The first header with this name.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(header_name, _)| header_name == name)
            .map(|(_, value)| value.as_slice())
    }
}

/// Where a record landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

/// Why a record was not delivered.
///
/// The distinction drives the writer (docs/design/api.md §3.5): after a `Definite` failure
/// the record is known not to be in the log; after `Uncertain` or `Fatal` it may be,
/// and the writer must re-read the log before trusting its index.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    #[error("not persisted: {0}")]
    Definite(String),
    #[error("possibly persisted: {0}")]
    Uncertain(String),
    #[error("fatal producer error: {0}")]
    Fatal(String),
}

impl DeliveryError {
    /// The `outcome` label of `biglearn_producer_errors_total`.
    pub fn outcome_label(&self) -> &'static str {
        match self {
            DeliveryError::Definite(_) => "definite",
            DeliveryError::Uncertain(_) => "uncertain",
            DeliveryError::Fatal(_) => "fatal",
        }
    }
}
