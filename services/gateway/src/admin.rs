//! The admin endpoints (docs/design/api.md §7): the sequence-gap answers here, the rest
//! sent on to `operations` (rebuilds, dead letters, digests) and `settings_admin`.

use std::sync::Arc;

use biglearn_stream::clock::now_micros;
use serde_json::{json, Value};

use crate::error::HandlerError;
use crate::requests::AdminRequest;
use crate::GatewayState;

/// Answers a §7 admin request; `actor` is the `Biglearn-Actor` that made it.
pub async fn answer_admin(
    state: &Arc<GatewayState>,
    request: AdminRequest,
    actor: &str,
) -> Result<Value, HandlerError> {
    match request {
        AdminRequest::FillSequenceGap(fill) => {
            let writer = state
                .writer
                .as_ref()
                .ok_or_else(HandlerError::not_the_writer)?;
            let outcome = writer
                .fill_sequence_gap(
                    fill.stream,
                    fill.aggregate_uuid,
                    fill.sequence_number,
                    fill.sequence_number_to,
                    actor,
                    &fill.reason,
                )
                .await?;
            let filled_count = match outcome {
                crate::writer::GapFill::Filled(count) => count,
                crate::writer::GapFill::TooManyRuns(n_runs) => {
                    return Err(HandlerError::BadRequest {
                        path: "/sequence_number_to".into(),
                        message: format!(
                            "the range holds {n_runs} separate missing runs, more than the {} one call fills; fill a smaller range",
                            crate::writer::MAX_FILL_RUNS
                        ),
                    })
                }
            };
            tracing::info!(
                stream = fill.stream.as_str(),
                aggregate = %fill.aggregate_uuid,
                sequence_number = fill.sequence_number.0,
                sequence_number_to = fill.sequence_number_to.map(|seq| seq.0),
                actor,
                reason = %fill.reason,
                filled_count,
                "An operator filled a sequence gap."
            );
            Ok(json!({
                "status": if filled_count > 0 { "filled" } else { "already_filled" },
                "filled_count": filled_count,
            }))
        }
        AdminRequest::ListSequenceGaps(list) => {
            let now = now_micros();
            let gaps = state.log.gaps(list.stream, list.limit as usize)?;
            Ok(json!({
                "gaps": gaps.iter().map(|gap| json!({
                    "aggregate_uuid": gap.aggregate,
                    "first_missing": gap.first_missing,
                    "missing_count": gap.missing_count,
                    "highest_received": gap.highest_received,
                    "blocked_since": biglearn_domain::time::format_datetime_micros(gap.blocked_since_micros),
                    "age_seconds": ((now - gap.blocked_since_micros).max(0) as f64) / 1e6,
                })).collect::<Vec<_>>()
            }))
        }
        AdminRequest::Rebuild => crate::operations::start_rebuild(state, actor).await,
        AdminRequest::RebuildStatus => crate::operations::rebuild_status(state),
        AdminRequest::DlqList(list) => crate::operations::list_dead_letters(state, list).await,
        AdminRequest::DlqReplay(replay) => {
            crate::operations::replay_dead_letters(state, replay, actor).await
        }
        AdminRequest::StateDigest(digest) => crate::operations::state_digest(state, &digest),
        AdminRequest::ResultsList(list) => crate::operations::list_results(state, &list),
        settings => crate::settings_admin::answer_settings(state, settings, actor).await,
    }
}
