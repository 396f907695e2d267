//! Why applying a batch failed, and whether waiting can cure it.

use biglearn_stream::StreamError;

/// A failed application: `transient` failures are retried with the same batch, anything
/// else stops the consumer (and the process).
#[derive(Debug, thiserror::Error)]
#[error("{detail}")]
pub struct ApplyError {
    pub transient: bool,
    pub detail: String,
}

impl ApplyError {
    /// A failure that a wait can cure (the stream store was unavailable).
    pub fn transient(detail: impl Into<String>) -> ApplyError {
        ApplyError {
            transient: true,
            detail: detail.into(),
        }
    }

    /// A failure that retrying would only hide.
    pub fn fatal(detail: impl Into<String>) -> ApplyError {
        ApplyError {
            transient: false,
            detail: detail.into(),
        }
    }
}

impl From<StreamError> for ApplyError {
    fn from(error: StreamError) -> ApplyError {
        ApplyError {
            transient: error.is_transient(),
            detail: error.to_string(),
        }
    }
}
