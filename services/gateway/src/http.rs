//! The HTTP edge: one axum router that authenticates, limits, parses, validates and then
//! hands each request to the writer or a read handler, answering errors in one shape.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use biglearn_telemetry::Metrics;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use crate::error::{error_body, error_response, json_response};
use crate::handlers;
use crate::requests::{
    parse_request_body, BodyRefusal, Endpoint, EndpointFamily, ValidationErrors,
};
use crate::server::{read_body, BodyError, HttpLimits};
use crate::GatewayState;

/// The answer when a body was not read whole; the connection is closed after it, since
/// the rest of the body may still be on its way.
fn body_error_response(error: BodyError) -> Response {
    let mut response = match error {
        BodyError::TooLarge { limit } => error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "",
            format!("request body exceeds {limit} bytes"),
        ),
        BodyError::TooSlow { deadline } => error_response(
            StatusCode::REQUEST_TIMEOUT,
            "",
            format!(
                "the request body did not arrive within {:.1} s (the minimum upload rate)",
                deadline.as_secs_f64()
            ),
        ),
        BodyError::Broken(detail) => error_response(
            StatusCode::BAD_REQUEST,
            "",
            format!("the request body could not be read: {detail}"),
        ),
    };
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

fn validation_response(errors: ValidationErrors) -> Response {
    let errors: Vec<(String, String)> = errors
        .0
        .into_iter()
        .map(|error| (error.path, error.message))
        .collect();
    json_response(StatusCode::BAD_REQUEST, &error_body(&errors))
}

/// Builds the router of every API, admin and health path.
pub fn router(state: Arc<GatewayState>) -> Router {
    Router::new()
        .route(
            "/ping",
            get(|| async { json_response(StatusCode::OK, &json!({"status": "ok"})) }),
        )
        .route(
            "/healthz",
            get(|| async { json_response(StatusCode::OK, &json!({"status": "ok"})) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(dispatch)
        .with_state(state)
}

async fn readyz(State(state): State<Arc<GatewayState>>) -> Response {
    let (ready, detail) = state.readiness.check();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, &json!({"ready": ready, "detail": detail}))
}

async fn metrics(State(state): State<Arc<GatewayState>>) -> Response {
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

fn token_matches(header_value: Option<&HeaderValue>, tokens: &[String]) -> bool {
    let Some(sent) = header_value.map(HeaderValue::as_bytes) else {
        return false;
    };
    // Compare against every configured token without short-circuiting (rotation).
    let mut any = 0u8;
    for token in tokens {
        any |= sent.ct_eq(token.as_bytes()).unwrap_u8();
    }
    any == 1
}

fn is_json_content_type(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(|value| {
            value
                .split(';')
                .next()
                .map(str::trim)
                .is_some_and(|media| media.eq_ignore_ascii_case("application/json"))
        })
        .unwrap_or(false)
}

fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .filter(|value| !value.is_empty() && value.len() <= 200)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

async fn dispatch(
    State(state): State<Arc<GatewayState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    body: Body,
) -> Response {
    let started = Instant::now();
    let limits = crate::server::limits_of(&extensions);
    let request_id = request_id(&headers);
    let endpoint = Endpoint::from_path(uri.path());
    let endpoint_label = endpoint.map(Endpoint::path).unwrap_or("unknown");
    let mut response = match endpoint {
        None => error_response(StatusCode::NOT_FOUND, "", "not found"),
        Some(endpoint) => {
            serve(
                &state,
                endpoint,
                &method,
                &headers,
                body,
                &limits,
                &request_id,
            )
            .await
        }
    };
    response.headers_mut().insert(
        "x-request-id",
        HeaderValue::from_str(&request_id).unwrap_or(HeaderValue::from_static("invalid")),
    );
    record(&state.metrics, endpoint_label, response.status(), started);
    response
}

fn record(metrics: &Metrics, endpoint: &str, status: StatusCode, started: Instant) {
    metrics.http_request_finished(endpoint, status.as_u16(), started.elapsed());
}

async fn serve(
    state: &Arc<GatewayState>,
    endpoint: Endpoint,
    method: &Method,
    headers: &HeaderMap,
    body: Body,
    limits: &HttpLimits,
    request_id: &str,
) -> Response {
    if method != Method::POST {
        let mut response = error_response(StatusCode::METHOD_NOT_ALLOWED, "", "method not allowed");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    let is_admin = endpoint.family() == EndpointFamily::Admin;
    let actor = if is_admin {
        // The observer token (D14) opens the read-only admin endpoints and nothing else.
        let is_admitted = token_matches(headers.get("biglearn-admin-token"), &state.tokens.admin)
            || (endpoint.is_observable()
                && token_matches(
                    headers.get("biglearn-observer-token"),
                    &state.tokens.observer,
                ));
        if !is_admitted {
            return error_response(
                StatusCode::UNAUTHORIZED,
                "",
                if endpoint.is_observable() {
                    "missing or invalid Biglearn-Admin-Token or Biglearn-Observer-Token"
                } else {
                    "missing or invalid Biglearn-Admin-Token"
                },
            );
        }
        match headers
            .get("biglearn-actor")
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
        {
            Some(actor) if (1..=200).contains(&actor.chars().count()) => Some(actor.to_owned()),
            _ => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "",
                    "admin requests need a Biglearn-Actor header of 1 to 200 characters",
                )
            }
        }
    } else {
        if !token_matches(headers.get("biglearn-api-token"), &state.tokens.api) {
            return error_response(
                StatusCode::UNAUTHORIZED,
                "",
                "missing or invalid Biglearn-Api-Token",
            );
        }
        None
    };
    if !is_json_content_type(headers) {
        return error_response(
            StatusCode::BAD_REQUEST,
            "",
            "Content-Type must be application/json",
        );
    }
    let limit = endpoint.max_body_bytes();
    let content_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let bytes: Bytes = match read_body(body, content_length, limit, limits).await {
        Ok(bytes) => bytes,
        Err(error) => return body_error_response(error),
    };
    let request = match parse_request_body(endpoint, &bytes) {
        Ok(request) => request,
        Err(BodyRefusal::Json(error)) => {
            return error_response(StatusCode::BAD_REQUEST, error.pointer(), error.to_string())
        }
        Err(BodyRefusal::Invalid(errors)) => return validation_response(errors),
    };
    let answer = if endpoint.is_write() {
        answer_write_by(limits.write_deadline, state, request).await
    } else {
        handlers::handle(state, request, actor.as_deref()).await
    };
    match answer {
        Ok(body) => json_response(StatusCode::OK, &body),
        Err(error) => error.into_response_with(request_id),
    }
}

/// Answers a write by `deadline` (docs/design/api.md §3.5). The write runs in its own task,
/// so that at the deadline only the answer is given up: the task keeps the aggregates'
/// locks until its records have a final delivery outcome, and Tutor's retry of the same
/// body then finds them (200) or writes them.
async fn answer_write_by(
    deadline: std::time::Duration,
    state: &Arc<GatewayState>,
    request: crate::requests::Request,
) -> Result<Value, crate::error::HandlerError> {
    let write = {
        let state = state.clone();
        tokio::spawn(async move { handlers::handle(&state, request, None).await })
    };
    match tokio::time::timeout(deadline, write).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(panicked)) => Err(crate::error::HandlerError::Internal {
            detail: format!("the write task failed: {panicked}"),
        }),
        Err(_) => {
            state.metrics.write_deadline_passed();
            Err(crate::error::HandlerError::Unavailable {
                message: format!(
                    "the write was not durable within {} s; it goes on: retry with the same body",
                    deadline.as_secs_f64()
                ),
            })
        }
    }
}
