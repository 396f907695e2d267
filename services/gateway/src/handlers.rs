//! The top-level dispatch: each validated request goes to the module of its family
//! (`writes`, `reads`, `stream_reads`, `pushes`, `admin`), which builds Tutor's answer.

use std::sync::Arc;

use serde_json::Value;

use crate::error::HandlerError;
use crate::requests::Request;
use crate::{admin, pushes, reads, stream_reads, writes, GatewayState};

/// Answers one validated request.
pub async fn handle(
    state: &Arc<GatewayState>,
    request: Request,
    actor: Option<&str>,
) -> Result<Value, HandlerError> {
    // A read after a write's 200 sees it (read-your-writes in the writer's process).
    if matches!(
        request,
        Request::Read(_) | Request::EventStream(_) | Request::Admin(_)
    ) {
        if let Some(writer) = &state.writer {
            writer.await_writes_indexed().await;
        }
    }
    match request {
        Request::Write(write) => writes::answer_write(state, write).await,
        Request::Read(read) => reads::answer_read(state, read),
        Request::EventStream(read) => stream_reads::answer_event_stream(state, read),
        Request::Push(push) => pushes::answer_push(state, push).await,
        Request::Admin(admin) => {
            admin::answer_admin(state, admin, actor.unwrap_or("unknown")).await
        }
    }
}
