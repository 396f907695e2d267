//! Event-stream reads (docs/design/api.md §6): course and ecosystem metadata, and
//! `fetch_course_events` / `fetch_ecosystem_events` over the event-log projection.

use std::sync::Arc;

use biglearn_domain::events::StreamKind;
use biglearn_domain::fetch::{
    fetch_events, EventLogView, LogRow, SubRequest, MAX_EVENT_DATA_BYTES,
};
use biglearn_domain::ids::{RequestUuid, SequenceNumber};
use biglearn_projector::event_log::{EventLog, EventRow};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::error::HandlerError;
use crate::requests::{EventStreamRequest, FetchMetadatasRequest};
use crate::GatewayState;

/// A read-only view of one stream kind of the event-log projection.
struct StreamView<'l> {
    log: &'l EventLog,
    stream: StreamKind,
}

impl StreamView<'_> {
    fn report(&self, error: biglearn_projector::ProjectionError) {
        tracing::error!(%error, "The event-log projection could not be read.");
    }
}

impl EventLogView for StreamView<'_> {
    type Event = EventRow;

    fn max_sequence(&self, aggregate: Uuid) -> Option<SequenceNumber> {
        match self.log.aggregate(self.stream, aggregate) {
            Ok(row) => row
                .filter(|row| row.max_seq >= 0)
                .map(|row| SequenceNumber(row.max_seq)),
            Err(error) => {
                self.report(error);
                None
            }
        }
    }

    fn first_missing_from(&self, aggregate: Uuid, from: SequenceNumber) -> SequenceNumber {
        let next_seq = match self.log.aggregate(self.stream, aggregate) {
            Ok(row) => row.map(|row| row.next_seq).unwrap_or(0),
            Err(error) => {
                self.report(error);
                0
            }
        };
        if from.0 <= next_seq {
            return SequenceNumber(next_seq);
        }
        // Range no_ops (docs/design/api.md D13) make whole runs present: crossed in one step.
        match self.log.first_missing_from(self.stream, aggregate, from) {
            Ok(seq) => seq,
            Err(error) => {
                self.report(error);
                from
            }
        }
    }

    fn events_from(
        &self,
        aggregate: Uuid,
        offset: SequenceNumber,
        event_types: &[String],
        limit: usize,
    ) -> Vec<LogRow<EventRow>> {
        let mut rows = Vec::new();
        let mut from = offset;
        // Rows of unrequested types are skipped; read in chunks so a long run of them
        // does not materialise at once.
        loop {
            let chunk = match self.log.events_from(self.stream, aggregate, from, 256) {
                Ok(chunk) => chunk,
                Err(error) => {
                    self.report(error);
                    return rows;
                }
            };
            let n_read = chunk.len();
            for (seq, row) in chunk {
                from = seq.next();
                if event_types.contains(&row.event_type) {
                    rows.push(LogRow {
                        sequence_number: seq,
                        data_len: row.event_data.as_ref().map_or(0, String::len),
                        event: row,
                    });
                    if rows.len() >= limit {
                        return rows;
                    }
                }
            }
            if n_read < 256 {
                return rows;
            }
        }
    }

    fn any_after(&self, aggregate: Uuid, after: SequenceNumber, event_types: &[String]) -> bool {
        !self
            .events_from(aggregate, after.next(), event_types, 1)
            .is_empty()
    }
}

fn event_json(seq: SequenceNumber, row: &EventRow) -> Value {
    let data: Value = row
        .event_data
        .as_deref()
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or(Value::Null);
    json!({
        "sequence_number": seq,
        "event_uuid": row.event_uuid,
        "event_type": row.event_type,
        "event_data": data,
    })
}

/// Answers an event-stream read (docs/design/api.md §6).
pub fn answer_event_stream(
    state: &Arc<GatewayState>,
    request: EventStreamRequest,
) -> Result<Value, HandlerError> {
    let log = &state.log;
    let caught_up = state.readiness.check().0;
    match request {
        EventStreamRequest::FetchCourseMetadatas(request) => {
            metadatas(log, StreamKind::Course, &request, caught_up)
        }
        EventStreamRequest::FetchEcosystemMetadatas(request) => {
            metadatas(log, StreamKind::Ecosystem, &request, caught_up)
        }
        EventStreamRequest::FetchCourseEvents(request) => {
            let subs: Vec<SubRequest> = request
                .course_event_requests
                .iter()
                .map(|sub| {
                    sub_request(
                        sub.request_uuid,
                        sub.course_uuid.0,
                        sub.sequence_number_offset,
                        sub.event_types.iter().map(|t| t.as_str()),
                    )
                })
                .collect();
            Ok(fetch_stream_events(
                log,
                StreamKind::Course,
                &subs,
                request.max_num_events,
            ))
        }
        EventStreamRequest::FetchEcosystemEvents(request) => {
            let subs: Vec<SubRequest> = request
                .ecosystem_event_requests
                .iter()
                .map(|sub| {
                    sub_request(
                        sub.request_uuid,
                        sub.ecosystem_uuid.0,
                        sub.sequence_number_offset,
                        sub.event_types.iter().map(|t| t.as_str()),
                    )
                })
                .collect();
            Ok(fetch_stream_events(
                log,
                StreamKind::Ecosystem,
                &subs,
                request.max_num_events,
            ))
        }
    }
}

/// `fetch_course_metadatas` / `fetch_ecosystem_metadatas`, answered under
/// `<stream>_responses`; a course also names its initial ecosystem.
fn metadatas(
    log: &EventLog,
    stream: StreamKind,
    request: &FetchMetadatasRequest,
    caught_up: bool,
) -> Result<Value, HandlerError> {
    let rows = log.metadata_from(
        stream,
        request.metadata_sequence_number_offset,
        request.max_num_metadatas as usize,
        caught_up,
    )?;
    let answers: Vec<Value> = rows
        .iter()
        .map(|row| {
            let mut item = json!({"uuid": row.aggregate});
            if stream == StreamKind::Course {
                item["initial_ecosystem_uuid"] = json!(row.initial_ecosystem);
            }
            item["metadata_sequence_number"] = json!(row.metadata_sequence_number);
            item
        })
        .collect();
    let mut body = serde_json::Map::new();
    body.insert(
        format!("{}_responses", stream.as_str()),
        Value::Array(answers),
    );
    Ok(Value::Object(body))
}

/// One sub-request of `fetch_course_events` / `fetch_ecosystem_events`, its event types
/// by name.
fn sub_request<'t>(
    request_uuid: RequestUuid,
    aggregate: Uuid,
    sequence_number_offset: SequenceNumber,
    event_types: impl Iterator<Item = &'t str>,
) -> SubRequest {
    SubRequest {
        request_uuid,
        aggregate,
        sequence_number_offset,
        event_types: event_types.map(str::to_owned).collect(),
    }
}

/// `fetch_course_events` / `fetch_ecosystem_events`: the §6.3 algorithm over one stream
/// kind of the projection, answered under `<stream>_event_responses` with `<stream>_uuid`.
fn fetch_stream_events(
    log: &EventLog,
    stream: StreamKind,
    subs: &[SubRequest],
    max_num_events: u32,
) -> Value {
    let view = StreamView { log, stream };
    let answers = fetch_events(&view, subs, max_num_events as usize, MAX_EVENT_DATA_BYTES);
    let aggregate_field = format!("{}_uuid", stream.as_str());
    let answers: Vec<Value> = answers
        .iter()
        .map(|answer| {
            let mut item = json!({
                "request_uuid": answer.request_uuid,
                "events": answer.events.iter().map(|(seq, row)| event_json(*seq, row)).collect::<Vec<_>>(),
                "is_gap": answer.is_gap,
                "is_end": answer.is_end,
            });
            item[aggregate_field.as_str()] = json!(answer.aggregate);
            item
        })
        .collect();
    let mut body = serde_json::Map::new();
    body.insert(
        format!("{}_event_responses", stream.as_str()),
        Value::Array(answers),
    );
    Value::Object(body)
}
