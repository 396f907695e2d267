//! Every recorded Tutor request (testdata/biglearn-api, not legacy/) validates and converts.

use std::path::PathBuf;

use biglearn_domain::events::{CoursePayload, EcosystemPayload, NoOpReason, StreamKind};
use biglearn_domain::ids::SequenceNumber;
use biglearn_gateway::requests::{
    candidates, parse_request, CandidatePayload, Endpoint, Request, WriteRequest,
};
use biglearn_gateway::writer::{stamp_events, MetadataNumbers, Stamp};
use serde_json::Value;

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/biglearn-api")
}

/// (file name, endpoint, request body) of every recorded example.
fn recorded_examples() -> Vec<(String, Endpoint, Value)> {
    let dir = examples_dir();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", dir.display()))
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let text = std::fs::read_to_string(dir.join(&name)).unwrap();
            let recording: Value = serde_json::from_str(&text).unwrap();
            let path = recording["endpoint"].as_str().unwrap();
            let endpoint = Endpoint::from_path(path).unwrap_or_else(|| panic!("{name}: {path}"));
            (name, endpoint, recording["request"].clone())
        })
        .collect()
}

fn example(endpoint: Endpoint) -> Value {
    recorded_examples()
        .into_iter()
        .find(|(_, e, _)| *e == endpoint)
        .map(|(_, _, body)| body)
        .unwrap()
}

fn write_request(endpoint: Endpoint, body: &Value) -> WriteRequest {
    match parse_request(endpoint, body) {
        Ok(Request::Write(write)) => write,
        other => panic!("{endpoint:?}: {other:?}"),
    }
}

#[test]
fn every_recorded_request_validates_and_converts() {
    let examples = recorded_examples();
    assert_eq!(examples.len(), 15, "the 15 current recordings");
    for (name, endpoint, body) in &examples {
        let request = parse_request(*endpoint, body)
            .unwrap_or_else(|errors| panic!("{name}: {:#?}", errors.0));
        assert_eq!(request.endpoint(), *endpoint, "{name}");
        if let Request::Write(write) = &request {
            assert!(endpoint.is_write());
            assert_eq!(candidates(write).len(), 1, "{name}: one item per recording");
        }
    }
}

#[test]
fn legacy_recording_without_algorithm_name_is_rejected() {
    let text = std::fs::read_to_string(
        examples_dir().join("legacy/14_fetch_practice_worst_areas_pes.json"),
    )
    .unwrap();
    let recording: Value = serde_json::from_str(&text).unwrap();
    let errors = parse_request(
        Endpoint::FetchPracticeWorstAreasExercises,
        &recording["request"],
    )
    .unwrap_err();
    assert_eq!(errors.0.len(), 1);
    assert_eq!(errors.0[0].path, "/worst_areas_requests/0/algorithm_name");
    assert_eq!(errors.0[0].message, "required field is missing");
}

#[test]
fn create_course_and_create_ecosystem_take_sequence_zero_and_their_own_identity() {
    let body = example(Endpoint::CreateEcosystem);
    let all = candidates(&write_request(Endpoint::CreateEcosystem, &body));
    let candidate = &all[0];
    assert_eq!(candidate.stream, StreamKind::Ecosystem);
    assert_eq!(
        candidate.aggregate.to_string(),
        body["ecosystem_uuid"].as_str().unwrap()
    );
    assert_eq!(candidate.event_uuid.as_uuid(), candidate.aggregate);
    assert_eq!(candidate.sequence_number, SequenceNumber::ZERO);
    assert_eq!(candidate.item_path, "");
    let CandidatePayload::Ecosystem(EcosystemPayload::CreateEcosystem(create)) = &candidate.payload
    else {
        panic!("{:?}", candidate.payload)
    };
    assert_eq!(create.sequence_number, SequenceNumber::ZERO);
    assert_eq!(create.exercises.len(), 34);
    assert_eq!(create.book.contents.len(), 3);
    assert_eq!(
        create.book.cnx_identity.as_deref(),
        Some("9ba7f072-ebd5-4adf-ad18-7a181715089c@4")
    );

    let body = example(Endpoint::CreateCourse);
    let all = candidates(&write_request(Endpoint::CreateCourse, &body));
    assert_eq!(all[0].stream, StreamKind::Course);
    assert_eq!(all[0].sequence_number, SequenceNumber::ZERO);
    assert_eq!(
        all[0].event_uuid.to_string(),
        "581df776-a323-44bd-8cb1-346cd664b974"
    );
    let CandidatePayload::Course(payload) = &all[0].payload else {
        panic!()
    };
    assert_eq!(payload.event_type().as_str(), "create_course");
}

#[test]
fn course_events_take_the_identity_and_sequence_of_the_spec_table() {
    // (endpoint, identity field of the item, item path, event type)
    let cases = [
        (
            Endpoint::UpdateCourseActiveDates,
            "/request_uuid",
            "",
            "update_course_active_dates",
        ),
        (
            Endpoint::UpdateRosters,
            "/rosters/0/request_uuid",
            "/rosters/0",
            "update_roster",
        ),
        (
            Endpoint::PrepareCourseEcosystem,
            "/preparation_uuid",
            "",
            "prepare_course_ecosystem",
        ),
        (
            Endpoint::UpdateCourseEcosystems,
            "/update_requests/0/request_uuid",
            "/update_requests/0",
            "update_course_ecosystem",
        ),
        (
            Endpoint::UpdateGloballyExcludedExercises,
            "/request_uuid",
            "",
            "update_globally_excluded_exercises",
        ),
        (
            Endpoint::UpdateCourseExcludedExercises,
            "/request_uuid",
            "",
            "update_course_excluded_exercises",
        ),
        (
            Endpoint::CreateUpdateAssignments,
            "/assignments/0/request_uuid",
            "/assignments/0",
            "create_update_assignment",
        ),
        (
            Endpoint::RecordResponses,
            "/responses/0/response_uuid",
            "/responses/0",
            "record_response",
        ),
    ];
    for (endpoint, identity_pointer, item_path, event_type) in cases {
        let body = example(endpoint);
        let all = candidates(&write_request(endpoint, &body));
        assert_eq!(all.len(), 1, "{endpoint:?}");
        let candidate = &all[0];
        let item = body.pointer(item_path).unwrap();
        assert_eq!(candidate.stream, StreamKind::Course);
        assert_eq!(candidate.item_path, item_path);
        assert_eq!(
            candidate.event_uuid.to_string(),
            body.pointer(identity_pointer).unwrap().as_str().unwrap()
        );
        assert_eq!(
            candidate.aggregate.to_string(),
            item["course_uuid"].as_str().unwrap()
        );
        assert_eq!(
            candidate.sequence_number,
            SequenceNumber(item["sequence_number"].as_i64().unwrap())
        );
        let CandidatePayload::Course(payload) = &candidate.payload else {
            panic!()
        };
        assert_eq!(payload.event_type().as_str(), event_type, "{endpoint:?}");
    }
}

#[test]
fn prepare_course_ecosystem_stores_the_next_ecosystem_under_ecosystem_uuid() {
    let body = example(Endpoint::PrepareCourseEcosystem);
    let all = candidates(&write_request(Endpoint::PrepareCourseEcosystem, &body));
    let CandidatePayload::Course(payload) = &all[0].payload else {
        panic!()
    };
    let event_data = payload.to_event_data();
    assert_eq!(event_data["ecosystem_uuid"], body["next_ecosystem_uuid"]);
    assert!(event_data.get("next_ecosystem_uuid").is_none());
    assert_eq!(event_data["ecosystem_map"], body["ecosystem_map"]);
}

#[test]
fn event_data_equals_the_recorded_item_for_items_with_payload_shape() {
    // docs/design/events.md §3: each payload is the accepted request item (lower-case uuids).
    for (endpoint, item_path) in [
        (Endpoint::UpdateRosters, "/rosters/0"),
        (Endpoint::UpdateCourseActiveDates, ""),
        (Endpoint::UpdateGloballyExcludedExercises, ""),
        (Endpoint::UpdateCourseExcludedExercises, ""),
        (Endpoint::CreateUpdateAssignments, "/assignments/0"),
        (Endpoint::RecordResponses, "/responses/0"),
        (Endpoint::UpdateCourseEcosystems, "/update_requests/0"),
    ] {
        let body = example(endpoint);
        let all = candidates(&write_request(endpoint, &body));
        let CandidatePayload::Course(payload) = &all[0].payload else {
            panic!()
        };
        assert_eq!(
            &payload.to_event_data(),
            body.pointer(item_path).unwrap(),
            "{endpoint:?}"
        );
    }
}

#[test]
fn record_responses_collapse_duplicate_response_uuids_to_the_first_occurrence() {
    let mut body = example(Endpoint::RecordResponses);
    let first = body["responses"][0].clone();
    let mut other = first.clone();
    other["response_uuid"] = "0b0d3a4e-5f1e-4a57-9a59-2a7a8e0c1f10".into();
    other["sequence_number"] = 7.into();
    let mut duplicate = first.clone();
    // Same identity in upper case, different slot: still the same response.
    duplicate["response_uuid"] = first["response_uuid"]
        .as_str()
        .unwrap()
        .to_uppercase()
        .into();
    duplicate["sequence_number"] = 99.into();
    body["responses"] = Value::Array(vec![first, other, duplicate]);
    let all = candidates(&write_request(Endpoint::RecordResponses, &body));
    let seen: Vec<(String, i64, &str)> = all
        .iter()
        .map(|c| {
            (
                c.event_uuid.to_string(),
                c.sequence_number.0,
                c.item_path.as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (
                "2581627b-28e8-4862-882d-6564056b6a04".to_owned(),
                6,
                "/responses/0"
            ),
            (
                "0b0d3a4e-5f1e-4a57-9a59-2a7a8e0c1f10".to_owned(),
                7,
                "/responses/1"
            ),
        ]
    );
}

#[test]
fn empty_batches_give_no_candidates() {
    for (endpoint, key) in [
        (Endpoint::UpdateRosters, "rosters"),
        (Endpoint::UpdateCourseEcosystems, "update_requests"),
        (Endpoint::CreateUpdateAssignments, "assignments"),
        (Endpoint::RecordResponses, "responses"),
    ] {
        let body = serde_json::json!({ key: [] });
        assert!(
            candidates(&write_request(endpoint, &body)).is_empty(),
            "{endpoint:?}"
        );
    }
}

#[test]
fn unknown_preparation_becomes_a_no_op_with_the_item_as_detail() {
    let body = example(Endpoint::UpdateCourseEcosystems);
    let all = candidates(&write_request(Endpoint::UpdateCourseEcosystems, &body));
    let original = all[0].clone();
    let no_op = original.clone().into_preparation_unknown_no_op();
    assert_eq!(
        (
            no_op.stream,
            no_op.aggregate,
            no_op.sequence_number,
            no_op.event_uuid
        ),
        (
            original.stream,
            original.aggregate,
            original.sequence_number,
            original.event_uuid
        )
    );
    let CandidatePayload::Course(CoursePayload::NoOp(payload)) = &no_op.payload else {
        panic!("{:?}", no_op.payload)
    };
    assert_eq!(payload.reason, NoOpReason::PreparationUnknown);
    assert_eq!(payload.actor, None);
    let detail: Value = serde_json::from_str(payload.detail_json.as_deref().unwrap()).unwrap();
    assert_eq!(detail, body["update_requests"][0]);
    // Any other candidate is left as it is.
    let create = candidates(&write_request(
        Endpoint::CreateCourse,
        &example(Endpoint::CreateCourse),
    ));
    assert_eq!(
        create[0].clone().into_preparation_unknown_no_op(),
        create[0]
    );
}

#[test]
fn stamping_gives_every_envelope_the_stamp_and_each_create_the_next_metadata_number() {
    let mut all = Vec::new();
    for endpoint in [
        Endpoint::CreateCourse,
        Endpoint::CreateEcosystem,
        Endpoint::RecordResponses,
    ] {
        all.extend(candidates(&write_request(endpoint, &example(endpoint))));
    }
    let stamp = Stamp {
        accepted_at_micros: 1_700_000_000_123_456,
        writer_id: "writer-1".into(),
        settings_version: 7,
    };
    let mut next = MetadataNumbers {
        course: 3,
        ecosystem: 5,
    };
    let events = stamp_events(all.clone(), &stamp, &mut next);
    assert_eq!(
        next,
        MetadataNumbers {
            course: 4,
            ecosystem: 6
        }
    );
    let course: Vec<_> = all
        .iter()
        .filter(|candidate| candidate.stream == StreamKind::Course)
        .collect();
    assert_eq!(events.course.len(), course.len());
    assert!(course.len() > 1);
    assert_eq!(events.ecosystem.len(), 1);
    for (event, candidate) in events.course.iter().zip(course) {
        assert_eq!(event.meta.event_uuid, candidate.event_uuid);
        assert_eq!(event.meta.sequence_number, candidate.sequence_number);
        assert_eq!(event.course_uuid.0, candidate.aggregate);
        assert_eq!(event.meta.accepted_at_micros, stamp.accepted_at_micros);
        assert_eq!(event.meta.writer_id, "writer-1");
        assert_eq!(event.meta.settings_version, 7);
        let expected = matches!(event.payload, CoursePayload::CreateCourse(_)).then_some(3);
        assert_eq!(event.meta.metadata_sequence_number, expected);
    }
    let ecosystem = &events.ecosystem[0];
    assert_eq!(ecosystem.meta.metadata_sequence_number, Some(5));
    assert_eq!(ecosystem.meta.writer_id, "writer-1");
    assert_eq!(ecosystem.meta.accepted_at_micros, stamp.accepted_at_micros);
}
