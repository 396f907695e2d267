//! Every error class of docs/design/api.md §1.4 over real HTTP: status, the exact error body, the
//! `X-Request-Id` header, and that rejected requests write nothing.

use biglearn_suite::{
    create_course, create_ecosystem, new_uuid, record_responses, response_item, Node, Reply,
    TestBackend, ADMIN_TOKEN, API_TOKEN,
};
use reqwest::Method;
use serde_json::{json, Value};

const JSON: (&str, &str) = ("Content-Type", "application/json");
const API: (&str, &str) = ("Biglearn-Api-Token", API_TOKEN);
const ADMIN: (&str, &str) = ("Biglearn-Admin-Token", ADMIN_TOKEN);
const ACTOR: (&str, &str) = ("Biglearn-Actor", "e2e-test");

/// The body is exactly `{"errors":[{"path","message"}, ...]}` with non-empty messages;
/// returns the paths in order.
fn error_paths(reply: &Reply) -> Vec<String> {
    let object = reply
        .body
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {:?}", reply.body));
    assert_eq!(
        object.keys().collect::<Vec<_>>(),
        ["errors"],
        "{:?}",
        reply.body
    );
    let errors = object["errors"].as_array().expect("errors is an array");
    assert!(!errors.is_empty(), "{:?}", reply.body);
    errors
        .iter()
        .map(|error| {
            let error = error.as_object().expect("an error object");
            let mut keys: Vec<&String> = error.keys().collect();
            keys.sort();
            assert_eq!(keys, ["message", "path"], "{error:?}");
            assert!(!error["message"].as_str().expect("a message").is_empty());
            error["path"].as_str().expect("a path").to_owned()
        })
        .collect()
}

/// One row of the error table.
struct Case {
    name: &'static str,
    method: Method,
    path: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    body: Vec<u8>,
    status: u16,
    /// The error paths, in order.
    paths: Vec<&'static str>,
}

fn case(
    name: &'static str,
    path: &'static str,
    headers: &[(&'static str, &'static str)],
    body: impl Into<Vec<u8>>,
    status: u16,
    paths: &[&'static str],
) -> Case {
    Case {
        name,
        method: Method::POST,
        path,
        headers: headers.to_vec(),
        body: body.into(),
        status,
        paths: paths.to_vec(),
    }
}

async fn check(node: &Node, case: Case) -> Reply {
    let reply = node
        .raw(case.method, case.path, &case.headers, case.body)
        .await;
    assert_eq!(reply.status, case.status, "{}: {:?}", case.name, reply.body);
    assert!(
        reply
            .header("x-request-id")
            .is_some_and(|id| !id.is_empty()),
        "{}: no X-Request-Id",
        case.name
    );
    assert_eq!(
        reply.header("content-type"),
        Some("application/json; charset=utf-8"),
        "{}",
        case.name
    );
    if case.status != 200 {
        assert_eq!(
            error_paths(&reply),
            case.paths,
            "{}: {:?}",
            case.name,
            reply.body
        );
    }
    reply
}

fn text(value: &Value) -> Vec<u8> {
    value.to_string().into_bytes()
}

/// `value` serialised and padded with JSON whitespace to exactly `len` bytes.
fn padded(value: &Value, len: usize) -> Vec<u8> {
    let mut bytes = text(value);
    assert!(bytes.len() <= len);
    bytes.resize(len, b' ');
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_class_has_its_status_body_shape_and_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), TestBackend::Embedded).await;
    let course = new_uuid();
    let (status, _) = node
        .post("/create_course", &create_course(&course, &new_uuid()))
        .await;
    assert_eq!(status, 200);
    let valid = record_responses(vec![response_item(&course, 1, &new_uuid())]);
    let with_item = |edit: &dyn Fn(&mut Value)| {
        let mut body = record_responses(vec![response_item(&course, 1, &new_uuid())]);
        edit(&mut body["responses"][0]);
        text(&body)
    };
    let gaps = text(&json!({"stream": "course", "limit": 10}));
    let long_actor: &'static str = Box::leak("a".repeat(201).into_boxed_str());

    let cases = vec![
        // 401: authentication, before anything else.
        case(
            "no API token",
            "/record_responses",
            &[JSON],
            text(&valid),
            401,
            &[""],
        ),
        case(
            "wrong API token",
            "/record_responses",
            &[JSON, ("Biglearn-Api-Token", "nope")],
            text(&valid),
            401,
            &[""],
        ),
        case(
            "API token one byte longer",
            "/record_responses",
            &[JSON, ("Biglearn-Api-Token", "test-api-tokenX")],
            text(&valid),
            401,
            &[""],
        ),
        case(
            "admin token header on an API path",
            "/record_responses",
            &[JSON, ADMIN, ACTOR],
            text(&valid),
            401,
            &[""],
        ),
        case(
            "admin token value as the API token",
            "/record_responses",
            &[JSON, ("Biglearn-Api-Token", ADMIN_TOKEN)],
            text(&valid),
            401,
            &[""],
        ),
        case(
            "API token header on an admin path",
            "/admin/list_sequence_gaps",
            &[JSON, API, ACTOR],
            gaps.clone(),
            401,
            &[""],
        ),
        case(
            "API token value as the admin token",
            "/admin/list_sequence_gaps",
            &[JSON, ("Biglearn-Admin-Token", API_TOKEN), ACTOR],
            gaps.clone(),
            401,
            &[""],
        ),
        case(
            "unauthenticated garbage is 401, not 400",
            "/record_responses",
            &[("Content-Type", "text/plain")],
            "{not json",
            401,
            &[""],
        ),
        // Admin requests need an actor of 1..200 characters.
        case(
            "admin without Biglearn-Actor",
            "/admin/list_sequence_gaps",
            &[JSON, ADMIN],
            gaps.clone(),
            400,
            &[""],
        ),
        case(
            "admin with a 201-character actor",
            "/admin/list_sequence_gaps",
            &[JSON, ADMIN, ("Biglearn-Actor", long_actor)],
            gaps.clone(),
            400,
            &[""],
        ),
        // 400: content type, JSON.
        case(
            "text/plain",
            "/record_responses",
            &[API, ("Content-Type", "text/plain")],
            text(&valid),
            400,
            &[""],
        ),
        case(
            "no content type",
            "/record_responses",
            &[API],
            text(&valid),
            400,
            &[""],
        ),
        case(
            "unparseable JSON",
            "/record_responses",
            &[JSON, API],
            "{\"responses\": [",
            400,
            &[""],
        ),
        // serde_json alone would keep the last "responses" and write its item.
        case(
            "a repeated key",
            "/record_responses",
            &[JSON, API],
            format!(
                "{{\"responses\":[],\"responses\":[{}]}}",
                response_item(&course, 1, &new_uuid())
            ),
            400,
            &["/responses"],
        ),
        case(
            "a repeated key inside an item",
            "/record_responses",
            &[JSON, API],
            {
                let item = response_item(&course, 1, &new_uuid()).to_string();
                format!(
                    "{{\"responses\":[{}]}}",
                    item.replacen('{', &format!("{{\"course_uuid\":\"{}\",", new_uuid()), 1)
                )
            },
            400,
            &["/responses/0/course_uuid"],
        ),
        case(
            "top level not an object",
            "/record_responses",
            &[JSON, API],
            "[]",
            400,
            &[""],
        ),
        // 400: schema errors with JSON pointers.
        case(
            "missing field",
            "/record_responses",
            &[JSON, API],
            with_item(&|item| {
                item.as_object_mut().unwrap().remove("is_correct");
            }),
            400,
            &["/responses/0/is_correct"],
        ),
        case(
            "unknown field",
            "/record_responses",
            &[JSON, API],
            with_item(&|item| item["colour"] = json!("red")),
            400,
            &["/responses/0/colour"],
        ),
        case(
            "unknown top-level field",
            "/record_responses",
            &[JSON, API],
            text(&json!({"responses": [], "extra": 1})),
            400,
            &["/extra"],
        ),
        case(
            "wrong type",
            "/record_responses",
            &[JSON, API],
            with_item(&|item| item["is_correct"] = json!("yes")),
            400,
            &["/responses/0/is_correct"],
        ),
        case(
            "bad uuid",
            "/record_responses",
            &[JSON, API],
            with_item(&|item| item["course_uuid"] = json!("not-a-uuid")),
            400,
            &["/responses/0/course_uuid"],
        ),
        case(
            "a day the month does not have (api.md §1.6)",
            "/record_responses",
            &[JSON, API],
            with_item(&|item| item["responded_at"] = json!("2017-02-31T00:00:00Z")),
            400,
            &["/responses/0/responded_at"],
        ),
        case(
            "uuid without hyphens",
            "/record_responses",
            &[JSON, API],
            with_item(&|item| item["trial_uuid"] = json!("238fce26a6e04aed94219e8b7ec43c86")),
            400,
            &["/responses/0/trial_uuid"],
        ),
        case(
            "fractional sequence_number",
            "/record_responses",
            &[JSON, API],
            with_item(&|item| item["sequence_number"] = json!(1.5)),
            400,
            &["/responses/0/sequence_number"],
        ),
        case(
            "sequence_number 0 on a non-create event",
            "/record_responses",
            &[JSON, API],
            with_item(&|item| item["sequence_number"] = json!(0)),
            400,
            &["/responses/0/sequence_number"],
        ),
        case(
            "errors are collected in document order",
            "/record_responses",
            &[JSON, API],
            text(&record_responses(vec![json!({"response_uuid": "bad"}), {
                let mut item = response_item(&course, 2, &new_uuid());
                item["is_real_response"] = json!(1);
                item
            }])),
            400,
            &[
                "/responses/0/response_uuid",
                "/responses/0/course_uuid",
                "/responses/0/sequence_number",
                "/responses/0/ecosystem_uuid",
                "/responses/0/trial_uuid",
                "/responses/0/student_uuid",
                "/responses/0/exercise_uuid",
                "/responses/0/is_correct",
                "/responses/0/is_real_response",
                "/responses/0/responded_at",
                "/responses/1/is_real_response",
            ],
        ),
        // 413: 8 MiB everywhere, 32 MiB for /create_ecosystem.
        case(
            "body over 8 MiB",
            "/record_responses",
            &[JSON, API],
            padded(&record_responses(vec![]), 8 * 1024 * 1024 + 1),
            413,
            &[""],
        ),
        case(
            "body over 32 MiB on /create_ecosystem",
            "/create_ecosystem",
            &[JSON, API],
            padded(&create_ecosystem(&new_uuid()), 32 * 1024 * 1024 + 1),
            413,
            &[""],
        ),
        // 404 and 405.
        case(
            "unknown path",
            "/no_such_endpoint",
            &[JSON, API],
            "{}",
            404,
            &[""],
        ),
        case(
            "path with a trailing slash",
            "/record_responses/",
            &[JSON, API],
            text(&valid),
            404,
            &[""],
        ),
        Case {
            method: Method::GET,
            ..case(
                "GET on an unknown path",
                "/no_such_endpoint",
                &[API],
                "",
                404,
                &[""],
            )
        },
    ];
    for case in cases {
        check(&node, case).await;
    }

    // Messages named by the spec.
    let reply = check(
        &node,
        case(
            "413 message",
            "/record_responses",
            &[JSON, API],
            padded(&json!({}), 8 * 1024 * 1024 + 10),
            413,
            &[""],
        ),
    )
    .await;
    assert_eq!(
        reply.body["errors"][0]["message"],
        "request body exceeds 8388608 bytes"
    );
    let reply = check(
        &node,
        case(
            "413 message on /create_ecosystem",
            "/create_ecosystem",
            &[JSON, API],
            padded(&json!({}), 32 * 1024 * 1024 + 10),
            413,
            &[""],
        ),
    )
    .await;
    assert_eq!(
        reply.body["errors"][0]["message"],
        "request body exceeds 33554432 bytes"
    );
    let reply = check(
        &node,
        case(
            "401 message",
            "/record_responses",
            &[JSON],
            text(&valid),
            401,
            &[""],
        ),
    )
    .await;
    assert_eq!(
        reply.body["errors"][0]["message"],
        "missing or invalid Biglearn-Api-Token"
    );

    // 405 names POST in Allow, on API and admin paths.
    for (method, path) in [
        (Method::GET, "/record_responses"),
        (Method::PUT, "/fetch_course_events"),
        (Method::DELETE, "/create_course"),
        (Method::GET, "/admin/list_sequence_gaps"),
    ] {
        let reply = check(
            &node,
            Case {
                method,
                ..case("405", path, &[API], "", 405, &[""])
            },
        )
        .await;
        assert_eq!(reply.header("allow"), Some("POST"), "{path}");
        assert_eq!(reply.body["errors"][0]["message"], "method not allowed");
    }

    // Nothing of the rejected requests was written: the course holds only create_course.
    let answer = node
        .course_events(&course, 0, &biglearn_suite::ALL_COURSE_EVENT_TYPES, 1000)
        .await;
    assert_eq!(biglearn_suite::sequence_numbers(&answer), [0], "{answer}");
    assert_eq!(answer["is_end"], true);
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_edges_charset_body_limits_and_request_id_echo() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), TestBackend::Embedded).await;
    let course = new_uuid();
    let (status, _) = node
        .post("/create_course", &create_course(&course, &new_uuid()))
        .await;
    assert_eq!(status, 200);

    // `application/json; charset=utf-8` is accepted.
    let response = new_uuid();
    let reply = check(
        &node,
        case(
            "charset parameter",
            "/record_responses",
            &[("Content-Type", "application/json; charset=utf-8"), API],
            text(&record_responses(vec![response_item(
                &course, 1, &response,
            )])),
            200,
            &[],
        ),
    )
    .await;
    assert_eq!(reply.body, json!({"recorded_response_uuids": [response]}));

    // Exactly 8 MiB is accepted on /record_responses; 9 MiB is accepted on /create_ecosystem.
    let response = new_uuid();
    let reply = check(
        &node,
        case(
            "exactly 8 MiB",
            "/record_responses",
            &[JSON, API],
            padded(
                &record_responses(vec![response_item(&course, 2, &response)]),
                8 * 1024 * 1024,
            ),
            200,
            &[],
        ),
    )
    .await;
    assert_eq!(reply.body, json!({"recorded_response_uuids": [response]}));
    let ecosystem = new_uuid();
    let reply = check(
        &node,
        case(
            "9 MiB create_ecosystem",
            "/create_ecosystem",
            &[JSON, API],
            padded(&create_ecosystem(&ecosystem), 9 * 1024 * 1024),
            200,
            &[],
        ),
    )
    .await;
    assert_eq!(reply.body, json!({"created_ecosystem_uuid": ecosystem}));

    // A client's X-Request-Id is echoed; otherwise each response gets its own.
    let reply = check(
        &node,
        case(
            "echo",
            "/record_responses",
            &[JSON, API, ("X-Request-Id", "tutor-req-42")],
            text(&record_responses(vec![])),
            200,
            &[],
        ),
    )
    .await;
    assert_eq!(reply.header("x-request-id"), Some("tutor-req-42"));
    let first = check(&node, case("fresh id 1", "/no_such", &[], "", 404, &[""])).await;
    let second = check(&node, case("fresh id 2", "/no_such", &[], "", 404, &[""])).await;
    assert_ne!(first.header("x-request-id"), second.header("x-request-id"));

    // Health endpoints need no token.
    let reply = node.raw(Method::GET, "/ping", &[], Vec::new()).await;
    assert_eq!((reply.status, reply.body), (200, json!({"status": "ok"})));
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upper_case_uuids_are_normalised_to_lower_case() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), TestBackend::Embedded).await;
    let course = new_uuid();
    let ecosystem = new_uuid();
    let response = new_uuid();
    let upper = |uuid: &str| uuid.to_uppercase();

    let (status, body) = node
        .post(
            "/create_course",
            &create_course(&upper(&course), &upper(&ecosystem)),
        )
        .await;
    assert_eq!(
        (status, body),
        (200, json!({"created_course_uuid": course}))
    );
    let (status, body) = node
        .post(
            "/record_responses",
            &record_responses(vec![response_item(&upper(&course), 1, &upper(&response))]),
        )
        .await;
    assert_eq!(
        (status, body),
        (200, json!({"recorded_response_uuids": [response]}))
    );
    // The lower-case form is the same identity: a no-op, not a conflict.
    let (status, body) = node
        .post(
            "/record_responses",
            &record_responses(vec![response_item(&course, 1, &response)]),
        )
        .await;
    assert_eq!(
        (status, body),
        (200, json!({"recorded_response_uuids": [response]}))
    );
    // A read by the upper-case uuid finds the data and answers in lower case.
    let answer = node
        .course_events(
            &upper(&course),
            0,
            &["create_course", "record_response"],
            10,
        )
        .await;
    assert_eq!(answer["course_uuid"], course);
    assert_eq!(
        biglearn_suite::sequence_numbers(&answer),
        [0, 1],
        "{answer}"
    );
    assert_eq!(answer["events"][0]["event_uuid"], course);
    assert_eq!(
        answer["events"][0]["event_data"]["ecosystem_uuid"],
        ecosystem
    );
    assert_eq!(answer["events"][1]["event_uuid"], response);
    assert_eq!(answer["events"][1]["event_data"]["course_uuid"], course);
    let (status, body) = node
        .post(
            "/fetch_course_metadatas",
            &json!({"metadata_sequence_number_offset": 0, "max_num_metadatas": 10}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["course_responses"],
        json!([{"uuid": course, "initial_ecosystem_uuid": ecosystem, "metadata_sequence_number": 0}])
    );
    node.stop().await.unwrap();
}
