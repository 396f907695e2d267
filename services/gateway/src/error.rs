//! The error of a validated request that was not answered with 200, and the one JSON
//! shape of every error answer (`{"errors":[{"path","message"}]}`): its own module so that
//! the HTTP edge, handlers, reads, operations and settings answers share it without
//! depending on one another.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::writer::{SlotConflict, WriteError};

/// One error of the error body `{"errors":[{"path","message"}]}`.
pub fn error_body(errors: &[(String, String)]) -> Value {
    json!({
        "errors": errors
            .iter()
            .map(|(path, message)| json!({"path": path, "message": message}))
            .collect::<Vec<_>>()
    })
}

/// A JSON response with a status.
pub fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

/// An error response with one error.
pub fn error_response(status: StatusCode, path: &str, message: impl Into<String>) -> Response {
    json_response(status, &error_body(&[(path.to_owned(), message.into())]))
}

/// `Retry-After` of every 503: the same body may be sent again after this many seconds.
pub const RETRY_AFTER_SECONDS: &str = "5";

/// Why a validated request was not answered with 200.
#[derive(Debug)]
pub enum HandlerError {
    /// 422: slots taken by other events.
    Conflicts(Vec<SlotConflict>),
    /// 400 after validation, for rules that need state (e.g. settings types).
    BadRequest { path: String, message: String },
    /// 503: retry with the same body.
    Unavailable { message: String },
    /// 403: a feature flag of this environment turns the capability off.
    Disabled { message: String },
    /// 500.
    Internal { detail: String },
}

impl HandlerError {
    /// 503 for a write or admin change sent to a process without the writer role.
    pub fn not_the_writer() -> HandlerError {
        HandlerError::Unavailable {
            message: "not the writer".into(),
        }
    }

    /// The error response; internal errors are logged with the request id.
    pub fn into_response_with(self, request_id: &str) -> Response {
        match self {
            HandlerError::Conflicts(conflicts) => {
                let errors: Vec<(String, String)> = conflicts
                    .iter()
                    .map(|conflict| {
                        let by = match &conflict.taken_by_type {
                            Some(event_type) => {
                                format!("event {} ({event_type})", conflict.taken_by)
                            }
                            None => format!("event {} of the same request", conflict.taken_by),
                        };
                        (
                            conflict.path.clone(),
                            format!(
                                "{} {}: sequence_number {} is already taken by {by}",
                                conflict.stream.as_str(),
                                conflict.aggregate,
                                conflict.sequence_number
                            ),
                        )
                    })
                    .collect();
                json_response(StatusCode::UNPROCESSABLE_ENTITY, &error_body(&errors))
            }
            HandlerError::BadRequest { path, message } => {
                error_response(StatusCode::BAD_REQUEST, &path, message)
            }
            HandlerError::Unavailable { message } => {
                let mut response = error_response(StatusCode::SERVICE_UNAVAILABLE, "", message);
                response.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from_static(RETRY_AFTER_SECONDS),
                );
                response
            }
            HandlerError::Disabled { message } => {
                error_response(StatusCode::FORBIDDEN, "", message)
            }
            HandlerError::Internal { detail } => {
                tracing::error!(request_id, %detail, "A request failed with an internal error.");
                error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "",
                    format!("internal error {request_id}"),
                )
            }
        }
    }
}

impl From<WriteError> for HandlerError {
    fn from(error: WriteError) -> Self {
        match error {
            WriteError::Conflicts(conflicts) => HandlerError::Conflicts(conflicts),
            WriteError::Unavailable { detail } => HandlerError::Unavailable {
                message: format!("event log unavailable; retry with the same body ({detail})"),
            },
            WriteError::Internal { detail } => HandlerError::Internal { detail },
        }
    }
}

impl From<biglearn_projector::ProjectionError> for HandlerError {
    fn from(error: biglearn_projector::ProjectionError) -> Self {
        HandlerError::Internal {
            detail: error.to_string(),
        }
    }
}
