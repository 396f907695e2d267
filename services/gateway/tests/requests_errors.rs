//! One test per error class of the request schemas, with exact pointers and messages.

use biglearn_gateway::requests::{
    candidates, parse_request, Endpoint, Request, WriteRequest, MAX_ERRORS,
};
use serde_json::{json, Value};

const MISSING: &str = "required field is missing";
const UNKNOWN: &str = "unknown field";
const FRACTION: &str = "expected integer, written without fraction or exponent";
const BAD_UUID: &str = "expected a hyphenated uuid (8-4-4-4-12 hex digits)";
const BAD_DATETIME: &str =
    "expected a UTC datetime YYYY-MM-DDTHH:MM:SS[.ffffff]Z (at most 6 fractional digits)";
const SEQUENCE_ZERO: &str = "sequence_number must be at least 1 (0 is reserved for create_course)";
const RESERVED: &str = "algorithm_name is reserved for a built-in algorithm";

const COURSE: &str = "581df776-a323-44bd-8cb1-346cd664b974";
const ECOSYSTEM: &str = "0bb8d3d9-060f-4645-bcda-f2558236bf81";
const UUID_A: &str = "2581627b-28e8-4862-882d-6564056b6a04";
const UUID_B: &str = "a848b203-15c4-4623-85e0-c39b23314bce";
const TIME: &str = "2017-06-27T23:26:48.986100Z";

fn response() -> Value {
    json!({
        "response_uuid": UUID_A, "course_uuid": COURSE, "sequence_number": 6,
        "ecosystem_uuid": ECOSYSTEM, "trial_uuid": UUID_B, "student_uuid": UUID_A,
        "exercise_uuid": UUID_B, "is_correct": false, "is_real_response": true,
        "responded_at": TIME
    })
}

fn create_course() -> Value {
    json!({
        "course_uuid": COURSE, "ecosystem_uuid": ECOSYSTEM, "is_real_course": true,
        "starts_at": TIME, "ends_at": TIME, "created_at": TIME
    })
}

fn create_ecosystem() -> Value {
    json!({
        "ecosystem_uuid": ECOSYSTEM,
        "book": {
            "cnx_identity": "9ba7f072-ebd5-4adf-ad18-7a181715089c@4",
            "contents": [{
                "container_uuid": UUID_A, "container_parent_uuid": ECOSYSTEM,
                "pools": [{"use_for_clue": true,
                           "use_for_personalized_for_assignment_types": ["reading"],
                           "exercise_uuids": [UUID_B]}]
            }]
        },
        "exercises": [{"exercise_uuid": UUID_B, "group_uuid": UUID_A, "version": 1,
                       "los": ["lo:1"]}],
        "imported_at": TIME
    })
}

fn exclusions(items: Value) -> Value {
    json!({"request_uuid": UUID_A, "course_uuid": COURSE, "sequence_number": 3,
           "exclusions": items, "updated_at": TIME})
}

fn pe_update(algorithm_name: &str, spy_info: Value) -> Value {
    json!({"pe_updates": [{
        "request_uuid": UUID_A, "assignment_uuid": UUID_B, "algorithm_name": algorithm_name,
        "calculation_uuid": UUID_A, "ecosystem_matrix_uuid": UUID_B,
        "exercise_uuids": [UUID_A], "spy_info": spy_info
    }]})
}

/// Sets (or inserts) the member at `pointer` in a copy of `body`.
fn with(mut body: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let target = body.pointer_mut(parent).unwrap();
    match target {
        Value::Object(map) => {
            map.insert(key.to_owned(), value);
        }
        Value::Array(items) => items[key.parse::<usize>().unwrap()] = value,
        other => panic!("cannot set {pointer} in {other}"),
    }
    body
}

/// Removes the member at `pointer` from a copy of `body`.
fn without(mut body: Value, pointer: &str) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    body.pointer_mut(parent)
        .unwrap()
        .as_object_mut()
        .unwrap()
        .remove(key)
        .unwrap();
    body
}

fn responses(items: Vec<Value>) -> Value {
    json!({ "responses": items })
}

fn check(endpoint: Endpoint, body: Value, expected: &[(&str, &str)]) {
    let got = match parse_request(endpoint, &body) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.0,
    };
    let got: Vec<(&str, &str)> = got
        .iter()
        .map(|e| (e.path.as_str(), e.message.as_str()))
        .collect();
    let shown: String = body.to_string().chars().take(300).collect();
    assert_eq!(got, expected, "{endpoint:?} body: {shown}");
}

#[test]
fn valid_bases_are_valid() {
    check(Endpoint::RecordResponses, responses(vec![response()]), &[]);
    check(Endpoint::CreateCourse, create_course(), &[]);
    check(Endpoint::CreateEcosystem, create_ecosystem(), &[]);
    check(
        Endpoint::UpdateCourseExcludedExercises,
        exclusions(json!([])),
        &[],
    );
    check(
        Endpoint::UpdateAssignmentPes,
        pe_update("my_alg", json!({})),
        &[],
    );
}

#[test]
fn missing_fields() {
    check(
        Endpoint::RecordResponses,
        responses(vec![without(response(), "/is_correct")]),
        &[("/responses/0/is_correct", MISSING)],
    );
    check(
        Endpoint::CreateCourse,
        without(create_course(), "/ecosystem_uuid"),
        &[("/ecosystem_uuid", MISSING)],
    );
    check(
        Endpoint::CreateEcosystem,
        without(create_ecosystem(), "/book/contents/0/pools/0/use_for_clue"),
        &[("/book/contents/0/pools/0/use_for_clue", MISSING)],
    );
    check(
        Endpoint::RecordResponses,
        json!({}),
        &[("/responses", MISSING)],
    );
    check(
        Endpoint::FetchCourseEvents,
        json!({"course_event_requests": [{"request_uuid": UUID_A, "course_uuid": COURSE,
               "sequence_number_offset": 0}], "max_num_events": 10}),
        &[("/course_event_requests/0/event_types", MISSING)],
    );
    check(
        Endpoint::AdminSettingsChangeDefault,
        json!({"key": "scheduler.x", "value": 4, "overrides": "keep", "reason": "r"}),
        &[("/applies_to", MISSING)],
    );
}

#[test]
fn unknown_fields_at_top_and_nested_levels() {
    check(
        Endpoint::CreateCourse,
        with(create_course(), "/extra", json!(1)),
        &[("/extra", UNKNOWN)],
    );
    check(
        Endpoint::RecordResponses,
        responses(vec![{
            let mut item = response();
            item.as_object_mut()
                .unwrap()
                .insert("a~b/c".into(), json!(null));
            item
        }]),
        &[("/responses/0/a~0b~1c", UNKNOWN)],
    );
    check(
        Endpoint::CreateEcosystem,
        with(
            create_ecosystem(),
            "/book/contents/0/pools/0/weight",
            json!(2),
        ),
        &[("/book/contents/0/pools/0/weight", UNKNOWN)],
    );
    // spy_info is the one free-form object.
    check(
        Endpoint::UpdateAssignmentPes,
        pe_update("my_alg", json!({"anything": {"nested": [1, "x"]}})),
        &[],
    );
}

#[test]
fn wrong_types() {
    check(
        Endpoint::RecordResponses,
        responses(vec![with(response(), "/is_correct", json!("false"))]),
        &[("/responses/0/is_correct", "expected boolean")],
    );
    check(
        Endpoint::RecordResponses,
        json!({"responses": {}}),
        &[("/responses", "expected array")],
    );
    check(
        Endpoint::CreateCourse,
        with(create_course(), "/course_uuid", json!(5)),
        &[("/course_uuid", "expected string")],
    );
    check(
        Endpoint::CreateCourse,
        json!([create_course()]),
        &[("", "expected object")],
    );
    check(
        Endpoint::CreateCourse,
        json!(null),
        &[("", "expected object")],
    );
    check(
        Endpoint::RecordResponses,
        responses(vec![with(response(), "/sequence_number", json!("6"))]),
        &[("/responses/0/sequence_number", "expected integer")],
    );
    check(
        Endpoint::UpdateStudentClues,
        json!({"student_clue_updates": [{"request_uuid": UUID_A, "student_uuid": UUID_B,
               "book_container_uuid": UUID_A, "algorithm_name": "x", "calculation_uuid": UUID_B,
               "clue_data": {"minimum": 0, "most_likely": "0.5", "maximum": 1.5, "is_real": true}}]}),
        &[
            (
                "/student_clue_updates/0/clue_data/most_likely",
                "expected number",
            ),
            (
                "/student_clue_updates/0/clue_data/maximum",
                "must be between 0 and 1",
            ),
        ],
    );
    check(
        Endpoint::FetchCourseEvents,
        json!({"course_event_requests": [{"request_uuid": UUID_A, "course_uuid": COURSE,
               "sequence_number_offset": 0, "event_types": ["create_course", "create_ecosystem"]}],
               "max_num_events": 10}),
        &[(
            "/course_event_requests/0/event_types/1",
            "expected one of: no_op, create_course, prepare_course_ecosystem, \
             update_course_ecosystem, update_roster, update_course_active_dates, \
             update_globally_excluded_exercises, update_course_excluded_exercises, \
             create_update_assignment, record_response",
        )],
    );
}

#[test]
fn fractions_and_exponents_are_not_integers() {
    let fraction: Value =
        serde_json::from_str(r#"{"responses": [{"sequence_number": 6.0}]}"#).unwrap();
    let item = with(
        response(),
        "/sequence_number",
        fraction["responses"][0]["sequence_number"].clone(),
    );
    check(
        Endpoint::RecordResponses,
        responses(vec![item]),
        &[("/responses/0/sequence_number", FRACTION)],
    );
    let exponent: Value = serde_json::from_str("1e3").unwrap();
    check(
        Endpoint::CreateEcosystem,
        with(create_ecosystem(), "/exercises/0/version", exponent),
        &[("/exercises/0/version", FRACTION)],
    );
    check(
        Endpoint::FetchCourseMetadatas,
        json!({"metadata_sequence_number_offset": 0, "max_num_metadatas": 2.5}),
        &[("/max_num_metadatas", FRACTION)],
    );
}

#[test]
fn integer_ranges() {
    check(
        Endpoint::FetchCourseMetadatas,
        json!({"metadata_sequence_number_offset": -1, "max_num_metadatas": 0}),
        &[
            (
                "/metadata_sequence_number_offset",
                "must be between 0 and 2147483647",
            ),
            ("/max_num_metadatas", "must be between 1 and 1000"),
        ],
    );
    check(
        Endpoint::FetchAssignmentPes,
        json!({"pe_requests": [{"request_uuid": UUID_A, "assignment_uuid": UUID_B,
               "algorithm_name": "FTP", "max_num_exercises": 1001}]}),
        &[(
            "/pe_requests/0/max_num_exercises",
            "must be between 0 and 1000",
        )],
    );
    check(
        Endpoint::RecordResponses,
        responses(vec![with(
            response(),
            "/sequence_number",
            json!(2_147_483_648u64),
        )]),
        &[(
            "/responses/0/sequence_number",
            "must be between 0 and 2147483647",
        )],
    );
}

#[test]
fn strings_too_long_or_too_short() {
    let long = "é".repeat(101);
    check(
        Endpoint::FetchStudentClues,
        json!({"student_clue_requests": [{"request_uuid": UUID_A, "student_uuid": UUID_B,
               "book_container_uuid": UUID_A, "algorithm_name": long}]}),
        &[(
            "/student_clue_requests/0/algorithm_name",
            "length must be between 1 and 100 characters",
        )],
    );
    check(
        Endpoint::FetchStudentClues,
        json!({"student_clue_requests": [{"request_uuid": UUID_A, "student_uuid": UUID_B,
               "book_container_uuid": UUID_A, "algorithm_name": ""}]}),
        &[(
            "/student_clue_requests/0/algorithm_name",
            "length must be between 1 and 100 characters",
        )],
    );
    check(
        Endpoint::CreateEcosystem,
        with(
            create_ecosystem(),
            "/book/contents/0/pools/0/use_for_personalized_for_assignment_types/0",
            json!("hw"),
        ),
        &[(
            "/book/contents/0/pools/0/use_for_personalized_for_assignment_types/0",
            "length must be between 3 and 100 characters",
        )],
    );
    // 100 characters of 2 bytes each are fine: lengths count characters.
    check(
        Endpoint::UpdateAssignmentPes,
        pe_update(&"é".repeat(100), json!({})),
        &[],
    );
}

#[test]
fn arrays_too_long_or_too_short() {
    let types: Vec<&str> = vec!["no_op"; 21];
    check(
        Endpoint::FetchCourseEvents,
        json!({"course_event_requests": [{"request_uuid": UUID_A, "course_uuid": COURSE,
               "sequence_number_offset": 0, "event_types": types}], "max_num_events": 10}),
        &[(
            "/course_event_requests/0/event_types",
            "must have between 1 and 20 items (has 21)",
        )],
    );
    check(
        Endpoint::FetchEcosystemEvents,
        json!({"ecosystem_event_requests": [{"request_uuid": UUID_A, "ecosystem_uuid": ECOSYSTEM,
               "sequence_number_offset": 0, "event_types": []}], "max_num_events": 10}),
        &[(
            "/ecosystem_event_requests/0/event_types",
            "must have between 1 and 20 items (has 0)",
        )],
    );
    check(
        Endpoint::CreateEcosystem,
        with(create_ecosystem(), "/book/contents", json!([])),
        &[(
            "/book/contents",
            "must have between 1 and 500 items (has 0)",
        )],
    );
    let many = vec![response(); 1001];
    let errors = parse_request(Endpoint::RecordResponses, &responses(many)).unwrap_err();
    assert_eq!(errors.0.len(), 1);
    assert_eq!(errors.0[0].path, "/responses");
    assert_eq!(
        errors.0[0].message,
        "must have between 0 and 1000 items (has 1001)"
    );
}

#[test]
fn bad_uuids_and_cnx_identities() {
    for bad in [
        "581df776a32344bd8cb1346cd664b974",
        "{581df776-a323-44bd-8cb1-346cd664b974}",
        "581df776-a323-44bd-8cb1-346cd664b97g",
        " 581df776-a323-44bd-8cb1-346cd664b974",
        "",
    ] {
        check(
            Endpoint::CreateCourse,
            with(create_course(), "/course_uuid", json!(bad)),
            &[("/course_uuid", BAD_UUID)],
        );
    }
    check(
        Endpoint::CreateEcosystem,
        with(
            create_ecosystem(),
            "/book/cnx_identity",
            json!("9ba7f072-ebd5-4adf-ad18-7a181715089c@0"),
        ),
        &[(
            "/book/cnx_identity",
            "expected a cnx_identity: <uuid> or <uuid>@<version>",
        )],
    );
    // A version-less identity and a nil uuid are fine.
    check(
        Endpoint::CreateEcosystem,
        with(
            with(
                create_ecosystem(),
                "/book/contents/0/container_cnx_identity",
                json!(UUID_A),
            ),
            "/book/contents/0/container_uuid",
            json!("00000000-0000-0000-0000-000000000000"),
        ),
        &[],
    );
}

#[test]
fn upper_case_uuids_are_normalised_to_lower_case() {
    let body = responses(vec![with(
        response(),
        "/course_uuid",
        json!(COURSE.to_uppercase()),
    )]);
    let Ok(Request::Write(write)) = parse_request(Endpoint::RecordResponses, &body) else {
        panic!()
    };
    let WriteRequest::RecordResponses(request) = &write else {
        panic!()
    };
    assert_eq!(request.responses[0].course_uuid.to_string(), COURSE);
    assert_eq!(candidates(&write)[0].aggregate.to_string(), COURSE);
    // cnx identities are validated case-insensitively and kept verbatim.
    let upper = "9BA7F072-EBD5-4ADF-AD18-7A181715089C@4";
    let body = with(create_ecosystem(), "/book/cnx_identity", json!(upper));
    let Ok(Request::Write(WriteRequest::CreateEcosystem(create))) =
        parse_request(Endpoint::CreateEcosystem, &body)
    else {
        panic!()
    };
    assert_eq!(create.book.cnx_identity.as_deref(), Some(upper));
}

#[test]
fn bad_datetimes() {
    for bad in [
        "2017-06-27T23:26:48.9861001Z",
        "2017-06-27T23:26:48+00:00",
        "2017-06-27T23:26:48.986100",
        "2017-06-27 23:26:48Z",
        "2017-06-32T23:26:48Z",
        "2017-06-27T24:00:00Z",
    ] {
        check(
            Endpoint::CreateCourse,
            with(create_course(), "/starts_at", json!(bad)),
            &[("/starts_at", BAD_DATETIME)],
        );
    }
    check(
        Endpoint::CreateCourse,
        with(create_course(), "/starts_at", json!("2017-06-27t23:26:60z")),
        &[],
    );
}

#[test]
fn impossible_calendar_dates_name_their_field() {
    check(
        Endpoint::CreateCourse,
        with(create_course(), "/ends_at", json!("2017-02-31T00:00:00Z")),
        &[(
            "/ends_at",
            "2017-02-31 is not a calendar date (that month has fewer days)",
        )],
    );
    check(
        Endpoint::RecordResponses,
        responses(vec![
            response(),
            with(response(), "/responded_at", json!("2018-04-31T10:00:00.5Z")),
        ]),
        &[(
            "/responses/1/responded_at",
            "2018-04-31 is not a calendar date (that month has fewer days)",
        )],
    );
    check(
        Endpoint::CreateCourse,
        with(create_course(), "/starts_at", json!("2016-02-29T00:00:00Z")),
        &[],
    );
}

#[test]
fn sequence_number_zero_on_a_course_event() {
    check(
        Endpoint::RecordResponses,
        responses(vec![with(response(), "/sequence_number", json!(0))]),
        &[("/responses/0/sequence_number", SEQUENCE_ZERO)],
    );
    check(
        Endpoint::UpdateCourseExcludedExercises,
        with(exclusions(json!([])), "/sequence_number", json!(0)),
        &[("/sequence_number", SEQUENCE_ZERO)],
    );
    check(
        Endpoint::AdminFillSequenceGap,
        json!({"stream": "course", "aggregate_uuid": COURSE, "sequence_number": 0, "reason": "r"}),
        &[("/sequence_number", "must be between 1 and 2147483647")],
    );
    // Event-stream offsets may be 0.
    check(
        Endpoint::FetchCourseEvents,
        json!({"course_event_requests": [{"request_uuid": UUID_A, "course_uuid": COURSE,
               "sequence_number_offset": 0, "event_types": ["create_course"]}], "max_num_events": 1}),
        &[],
    );
}

#[test]
fn reserved_algorithm_names_are_rejected_on_pushes_only() {
    for name in [
        "local_query",
        "BIGLEARN_SPARFA",
        "Instructor_Driven_Local_Query",
        "student_driven_local_query",
        "instructor_driven_biglearn_sparfa",
        "student_driven_biglearn_SPARFA",
    ] {
        check(
            Endpoint::UpdateAssignmentPes,
            pe_update(name, json!({})),
            &[("/pe_updates/0/algorithm_name", RESERVED)],
        );
        check(
            Endpoint::FetchAssignmentPes,
            json!({"pe_requests": [{"request_uuid": UUID_A, "assignment_uuid": UUID_B, "algorithm_name": name}]}),
            &[],
        );
    }
    check(
        Endpoint::UpdateAssignmentPes,
        pe_update("local_query2", json!({})),
        &[],
    );
}

#[test]
fn exclusions_need_exactly_one_key() {
    check(
        Endpoint::UpdateGloballyExcludedExercises,
        exclusions(
            json!([{"exercise_uuid": UUID_A}, {"exercise_group_uuid": UUID_B},
                          {"exercise_uuid": UUID_A, "exercise_group_uuid": UUID_B}, {}]),
        ),
        &[
            (
                "/exclusions/2",
                "exactly one of exercise_uuid or exercise_group_uuid is allowed, not both",
            ),
            (
                "/exclusions/3",
                "exactly one of exercise_uuid or exercise_group_uuid is required",
            ),
        ],
    );
}

#[test]
fn spy_info_too_large() {
    let big = "x".repeat(65_536);
    check(
        Endpoint::UpdateAssignmentPes,
        pe_update("my_alg", json!({ "blob": big })),
        &[(
            "/pe_updates/0/spy_info",
            "spy_info exceeds 65536 bytes when serialised",
        )],
    );
    // {"b":"…"} is exactly 65536 bytes with 65528 characters of payload.
    check(
        Endpoint::UpdateAssignmentPes,
        pe_update("my_alg", json!({ "b": "x".repeat(65_528) })),
        &[],
    );
    check(
        Endpoint::UpdateAssignmentPes,
        pe_update("my_alg", json!({ "b": "x".repeat(65_529) })),
        &[(
            "/pe_updates/0/spy_info",
            "spy_info exceeds 65536 bytes when serialised",
        )],
    );
    check(
        Endpoint::UpdateAssignmentPes,
        pe_update("my_alg", json!([])),
        &[("/pe_updates/0/spy_info", "expected object")],
    );
}

#[test]
fn setting_values_must_match_their_value_type() {
    let define = json!({"key": "scheduler.default_num_pes", "value_type": "int", "scope": "course",
                        "default": 3.5, "kill_value": "0", "description": "d", "reason": "r"});
    check(
        Endpoint::AdminSettingsDefine,
        define,
        &[
            ("/default", "expected a int value (value_type)"),
            ("/kill_value", "expected a int value (value_type)"),
        ],
    );
    check(
        Endpoint::AdminSettingsKillSwitch,
        json!({"key": "Scheduler..x", "engaged": true, "reason": "r"}),
        &[(
            "/key",
            "expected a setting key: words of a-z, 0-9 and _ separated by single dots",
        )],
    );
}

#[test]
fn errors_follow_document_order_and_are_capped_at_one_hundred() {
    let item = with(
        with(
            without(response(), "/student_uuid"),
            "/is_correct",
            json!(1),
        ),
        "/course_uuid",
        json!("x"),
    );
    check(
        Endpoint::RecordResponses,
        responses(vec![item.clone()]),
        &[
            ("/responses/0/course_uuid", BAD_UUID),
            ("/responses/0/is_correct", "expected boolean"),
            ("/responses/0/student_uuid", MISSING),
        ],
    );
    let errors = parse_request(Endpoint::RecordResponses, &responses(vec![item; 50])).unwrap_err();
    assert_eq!(errors.0.len(), MAX_ERRORS);
    assert_eq!(errors.0[99].path, "/responses/33/course_uuid");
}
