//! The event-stream reads of external readers (docs/design/api.md §6): metadatas and events.

use serde::Deserialize;

use biglearn_domain::events::{CourseEventType, EcosystemEventType};
use biglearn_domain::ids::{CourseUuid, EcosystemUuid, RequestUuid, SequenceNumber};

use super::validate::{array, object, req, Schema, LIMIT_1_1000, NON_NEGATIVE_INTEGER, UUID};

static METADATAS: Schema = object(&[
    req("metadata_sequence_number_offset", &NON_NEGATIVE_INTEGER),
    req("max_num_metadatas", &LIMIT_1_1000),
]);

pub(crate) static FETCH_COURSE_METADATAS: &Schema = &METADATAS;
pub(crate) static FETCH_ECOSYSTEM_METADATAS: &Schema = &METADATAS;

pub(crate) static FETCH_COURSE_EVENTS: Schema = object(&[
    req(
        "course_event_requests",
        &array(
            &object(&[
                req("request_uuid", &UUID),
                req(
                    "event_types",
                    &array(&Schema::Enum(&CourseEventType::NAMES), 1, 20),
                ),
                req("course_uuid", &UUID),
                req("sequence_number_offset", &NON_NEGATIVE_INTEGER),
            ]),
            0,
            1000,
        ),
    ),
    req("max_num_events", &LIMIT_1_1000),
]);

pub(crate) static FETCH_ECOSYSTEM_EVENTS: Schema = object(&[
    req(
        "ecosystem_event_requests",
        &array(
            &object(&[
                req("request_uuid", &UUID),
                req(
                    "event_types",
                    &array(&Schema::Enum(&EcosystemEventType::NAMES), 1, 20),
                ),
                req("ecosystem_uuid", &UUID),
                req("sequence_number_offset", &NON_NEGATIVE_INTEGER),
            ]),
            0,
            1000,
        ),
    ),
    req("max_num_events", &LIMIT_1_1000),
]);

/// `/fetch_course_metadatas` and `/fetch_ecosystem_metadatas`.
#[derive(Clone, PartialEq, Eq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchMetadatasRequest {
    pub metadata_sequence_number_offset: i64,
    /// 1..=1000.
    pub max_num_metadatas: u32,
}

/// One item of `course_event_requests`.
#[derive(Clone, PartialEq, Eq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CourseEventRequest {
    pub request_uuid: RequestUuid,
    /// 1..=20 types, as sent (duplicates possible).
    pub event_types: Vec<CourseEventType>,
    pub course_uuid: CourseUuid,
    pub sequence_number_offset: SequenceNumber,
}

/// `/fetch_course_events`.
#[derive(Clone, PartialEq, Eq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchCourseEventsRequest {
    pub course_event_requests: Vec<CourseEventRequest>,
    /// 1..=1000, shared by all sub-requests.
    pub max_num_events: u32,
}

/// One item of `ecosystem_event_requests`.
#[derive(Clone, PartialEq, Eq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EcosystemEventRequest {
    pub request_uuid: RequestUuid,
    pub event_types: Vec<EcosystemEventType>,
    pub ecosystem_uuid: EcosystemUuid,
    pub sequence_number_offset: SequenceNumber,
}

/// `/fetch_ecosystem_events`.
#[derive(Clone, PartialEq, Eq, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchEcosystemEventsRequest {
    pub ecosystem_event_requests: Vec<EcosystemEventRequest>,
    pub max_num_events: u32,
}

/// A validated event-stream read: one variant per endpoint of docs/design/api.md §6.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum EventStreamRequest {
    FetchCourseMetadatas(FetchMetadatasRequest),
    FetchEcosystemMetadatas(FetchMetadatasRequest),
    FetchCourseEvents(FetchCourseEventsRequest),
    FetchEcosystemEvents(FetchEcosystemEventsRequest),
}
