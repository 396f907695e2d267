//! The response router (docs/design/sparfa.md §1): `record_response` records of
//! `<prefix>.course-events` re-keyed by ecosystem onto `<prefix>.sparfa-responses`.

use std::time::Duration;

use biglearn_domain::events::CoursePayload;
use biglearn_events::{aggregate_key, decode_course_event, HEADER_EVENT_TYPE};
use biglearn_stream::{ConsumedRecord, GroupMembership, OutgoingRecord, SharedStreamStore, Topics};
use tokio::sync::watch;

use crate::{sled_error, stream_error, SparfaConsumerError};

/// The sled tree holding the router's position per course-events partition.
pub const ROUTER_TREE: &str = "sparfa_router";

/// How the router runs.
#[derive(Clone, Debug)]
pub struct RouterConfig {
    pub topics: Topics,
    /// Most records read per poll.
    pub max_batch: usize,
    /// How long one poll waits for a first record.
    pub poll_timeout: Duration,
}

impl RouterConfig {
    /// The defaults for `topics`: batches of 2000, 100 ms polls.
    pub fn new(topics: Topics) -> RouterConfig {
        RouterConfig {
            topics,
            max_batch: 2000,
            poll_timeout: Duration::from_millis(100),
        }
    }
}

/// The re-keyed record of a `record_response` course-event record: value and headers
/// unchanged, key = the response's ecosystem; `None` for other records. Only records
/// whose `bl-event-type` is `record_response` are decoded; an undecodable one is skipped
/// (the event-log consumer dead-letters it).
pub fn route(record: &ConsumedRecord) -> Option<OutgoingRecord> {
    if record.header(HEADER_EVENT_TYPE) != Some(b"record_response".as_slice()) {
        return None;
    }
    let value = record.value.as_ref()?;
    let event = match decode_course_event(value) {
        Ok(event) => event,
        Err(error) => {
            tracing::warn!(%error, partition = record.partition, offset = record.offset, "An undecodable record_response was not routed.");
            return None;
        }
    };
    let CoursePayload::RecordResponse(response) = &event.payload else {
        return None;
    };
    Some(OutgoingRecord {
        key: aggregate_key(response.ecosystem_uuid.0),
        value: value.clone(),
        headers: record.headers.clone(),
    })
}

fn position_key(partition: i32) -> [u8; 4] {
    partition.to_be_bytes()
}

/// The consumer group of the routers: `<prefix>.sparfa-router`, over the course events.
pub fn router_group_id(topics: &Topics) -> String {
    format!("{}.sparfa-router", topics.prefix())
}

fn read_position(tree: &sled::Tree, partition: i32) -> Result<i64, SparfaConsumerError> {
    Ok(tree
        .get(position_key(partition))
        .map_err(sled_error("reading the router's positions"))?
        .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_ref()).ok())
        .map_or(0, i64::from_be_bytes))
}

/// Runs the router until `shutdown` turns true, over the course-event partitions that
/// `membership` (of [`router_group_id`]) assigns, so that any number of routers share
/// the work. Positions are written to sled only after the batch's appends were
/// delivered: a crash, or a partition coming back after a while elsewhere, re-routes
/// records (the SPARFA consumer deduplicates).
pub async fn run_response_router(
    db: sled::Db,
    store: SharedStreamStore,
    membership: Box<dyn GroupMembership>,
    config: RouterConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), SparfaConsumerError> {
    let tree = db
        .open_tree(ROUTER_TREE)
        .map_err(sled_error("opening the router's positions"))?;
    let source = config.topics.course_events();
    let target = config.topics.sparfa_responses();
    let mut generation = 0;
    let mut reader = None;
    tracing::info!(from = %source, to = %target, "The response router started.");
    while !*shutdown.borrow() {
        let assignment = membership.current();
        if assignment.generation != generation {
            generation = assignment.generation;
            let mut start = Vec::new();
            for partition in assignment.partitions_of(&source) {
                start.push((partition, read_position(&tree, partition)?));
            }
            reader = None;
            if !start.is_empty() {
                reader = Some(
                    store
                        .open_reader(&source, &start)
                        .await
                        .map_err(stream_error("opening the course events"))?,
                );
            }
        }
        let Some(reader) = reader.as_mut() else {
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = tokio::time::sleep(config.poll_timeout) => {}
            }
            continue;
        };
        let records = reader
            .poll(config.max_batch, config.poll_timeout)
            .await
            .map_err(stream_error("reading the course events"))?;
        if records.is_empty() {
            continue;
        }
        let outgoing: Vec<OutgoingRecord> = records.iter().filter_map(route).collect();
        if !outgoing.is_empty() {
            let outcomes = store
                .append(&target, outgoing)
                .await
                .map_err(stream_error("appending routed responses"))?;
            if let Some(Err(error)) = outcomes.iter().find(|outcome| outcome.is_err()) {
                return Err(SparfaConsumerError::NotDelivered {
                    topic: target.clone(),
                    detail: error.to_string(),
                });
            }
        }
        let mut batch = sled::Batch::default();
        let mut next = std::collections::BTreeMap::new();
        for record in &records {
            next.insert(record.partition, record.offset + 1);
        }
        for (partition, offset) in next {
            batch.insert(
                position_key(partition).to_vec(),
                offset.to_be_bytes().to_vec(),
            );
        }
        tree.apply_batch(batch)
            .map_err(sled_error("writing the router's positions"))?;
    }
    tracing::info!("The response router stopped.");
    Ok(())
}
