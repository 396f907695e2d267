//! The event-stream reads over HTTP (docs/design/api.md §6): contiguous prefixes, gaps, the
//! shared limit, metadata lists, and read-your-writes within one process.

use biglearn_suite::{
    create_course, create_ecosystem, event_request, new_uuid, record_responses, response_item,
    sequence_numbers, update_course_active_dates, Node, TestBackend, ALL_COURSE_EVENT_TYPES,
};
use serde_json::{json, Value};

async fn ok(node: &Node, path: &str, body: &Value) -> Value {
    let (status, answer) = node.post(path, body).await;
    assert_eq!(status, 200, "{path}: {answer}");
    answer
}

/// A new course holding exactly these events: `r` = record_response, `d` =
/// update_course_active_dates, at the given sequence numbers (0 is create_course).
async fn course_with(node: &Node, events: &[(i64, char)]) -> String {
    let course = new_uuid();
    ok(node, "/create_course", &create_course(&course, &new_uuid())).await;
    for &(seq, kind) in events {
        match kind {
            'r' => {
                ok(
                    node,
                    "/record_responses",
                    &record_responses(vec![response_item(&course, seq, &new_uuid())]),
                )
                .await
            }
            _ => {
                ok(
                    node,
                    "/update_course_active_dates",
                    &update_course_active_dates(&course, seq),
                )
                .await
            }
        };
    }
    course
}

/// (events' sequence numbers, is_gap, is_end) of one answer.
type Summary = (Vec<i64>, bool, bool);

/// One row of the fetch table: (name, course, offset, event types, expected summary).
type FetchCase<'a> = (&'a str, &'a str, i64, &'a [&'a str], Summary);

fn summary(answer: &Value) -> Summary {
    (
        sequence_numbers(answer),
        answer["is_gap"].as_bool().unwrap(),
        answer["is_end"].as_bool().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_course_events_serves_contiguous_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), TestBackend::Embedded).await;
    const REQUESTED: [&str; 2] = ["create_course", "record_response"];
    let contiguous = course_with(&node, &[(1, 'r'), (2, 'd'), (3, 'r')]).await;
    let middle_gap = course_with(&node, &[(1, 'r'), (2, 'r'), (4, 'r'), (5, 'r')]).await;
    let hidden_gap = course_with(&node, &[(1, 'd'), (2, 'r'), (4, 'd'), (5, 'r')]).await;
    let unknown = new_uuid();

    let cases: Vec<FetchCase> = vec![
        (
            "contiguous prefix, unrequested type in between",
            &contiguous,
            0,
            &REQUESTED,
            (vec![0, 1, 3], false, true),
        ),
        (
            "contiguous prefix from the middle",
            &contiguous,
            2,
            &REQUESTED,
            (vec![3], false, true),
        ),
        (
            "only the unrequested type",
            &contiguous,
            0,
            &["update_course_active_dates"],
            (vec![2], false, true),
        ),
        (
            "offset beyond the last event",
            &contiguous,
            4,
            &REQUESTED,
            (vec![], false, true),
        ),
        (
            "gap in the middle",
            &middle_gap,
            0,
            &ALL_COURSE_EVENT_TYPES,
            (vec![0, 1, 2], true, false),
        ),
        (
            "gap just below the offset",
            &middle_gap,
            4,
            &ALL_COURSE_EVENT_TYPES,
            (vec![], true, false),
        ),
        // Spec conformance case 5 (events at 4 and 5, 3 missing, offset 5): still a gap.
        (
            "hole two below the offset",
            &middle_gap,
            5,
            &ALL_COURSE_EVENT_TYPES,
            (vec![], true, false),
        ),
        (
            "hole hidden behind an unrequested type",
            &hidden_gap,
            0,
            &["record_response"],
            (vec![2], true, false),
        ),
        (
            "unknown course",
            &unknown,
            0,
            &REQUESTED,
            (vec![], false, true),
        ),
    ];
    for (name, course, offset, types, expected) in cases {
        let answer = node.course_events(course, offset, types, 1000).await;
        assert_eq!(summary(&answer), expected, "{name}: {answer}");
        assert_eq!(answer["course_uuid"], course, "{name}");
    }

    // The event fields: sequence_number, event_uuid, event_type, event_data.
    let answer = node
        .course_events(&contiguous, 2, &["update_course_active_dates"], 1000)
        .await;
    let event = answer["events"][0].as_object().unwrap();
    let mut keys: Vec<&String> = event.keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["event_data", "event_type", "event_uuid", "sequence_number"]
    );
    assert_eq!(event["event_type"], "update_course_active_dates");
    assert_eq!(event["event_data"]["course_uuid"], contiguous.as_str());
    assert_eq!(event["event_data"]["sequence_number"], 2);
    assert_eq!(event["event_data"]["request_uuid"], event["event_uuid"]);

    // Limit exhausted: the second sub-request gets nothing, and is not at its end.
    let body = json!({
        "course_event_requests": [
            event_request("course", &contiguous, 0, &REQUESTED),
            event_request("course", &middle_gap, 0, &REQUESTED),
        ],
        "max_num_events": 1,
    });
    let answer = ok(&node, "/fetch_course_events", &body).await;
    let answers = answer["course_event_responses"].as_array().unwrap();
    assert_eq!(answers.len(), 2);
    assert_eq!(
        answers[0]["request_uuid"],
        body["course_event_requests"][0]["request_uuid"]
    );
    assert_eq!(
        answers[1]["request_uuid"],
        body["course_event_requests"][1]["request_uuid"]
    );
    assert_eq!(summary(&answers[0]), (vec![0], false, false));
    assert_eq!(summary(&answers[1]), (vec![], false, false));
    // An empty request list answers an empty list.
    let answer = ok(
        &node,
        "/fetch_course_events",
        &json!({"course_event_requests": [], "max_num_events": 5}),
    )
    .await;
    assert_eq!(answer, json!({"course_event_responses": []}));
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn courses_share_one_max_num_events_breadth_first() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), TestBackend::Embedded).await;
    let mut courses = Vec::new();
    for _ in 0..2 {
        let course = new_uuid();
        ok(
            &node,
            "/create_course",
            &create_course(&course, &new_uuid()),
        )
        .await;
        for batch in 0..3 {
            let items = (1..=200)
                .map(|i| response_item(&course, batch * 200 + i, &new_uuid()))
                .collect();
            ok(&node, "/record_responses", &record_responses(items)).await;
        }
        courses.push(course);
    }
    let body = json!({
        "course_event_requests": courses.iter().map(|course| event_request("course", course, 1, &["record_response"])).collect::<Vec<_>>(),
        "max_num_events": 1000,
    });
    let answer = ok(&node, "/fetch_course_events", &body).await;
    for answer in answer["course_event_responses"].as_array().unwrap() {
        assert_eq!(
            summary(answer),
            ((1..=500).collect::<Vec<_>>(), false, false)
        );
    }
    // The reader re-queries from 501 and reaches the end of both.
    let body = json!({
        "course_event_requests": courses.iter().map(|course| event_request("course", course, 501, &["record_response"])).collect::<Vec<_>>(),
        "max_num_events": 1000,
    });
    let answer = ok(&node, "/fetch_course_events", &body).await;
    for answer in answer["course_event_responses"].as_array().unwrap() {
        assert_eq!(
            summary(answer),
            ((501..=600).collect::<Vec<_>>(), false, true)
        );
    }
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecosystem_events_and_metadata_lists() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), TestBackend::Embedded).await;
    let ecosystems: Vec<String> = (0..3).map(|_| new_uuid()).collect();
    for ecosystem in &ecosystems {
        ok(&node, "/create_ecosystem", &create_ecosystem(ecosystem)).await;
    }
    let courses: Vec<(String, String)> = (0..5)
        .map(|i| (new_uuid(), ecosystems[i % 3].clone()))
        .collect();
    for (course, ecosystem) in &courses {
        ok(&node, "/create_course", &create_course(course, ecosystem)).await;
    }
    // Re-sending a create takes no new number.
    ok(
        &node,
        "/create_course",
        &create_course(&courses[1].0, &courses[1].1),
    )
    .await;
    ok(
        &node,
        "/create_ecosystem",
        &create_ecosystem(&ecosystems[0]),
    )
    .await;

    // fetch_ecosystem_events.
    let body = json!({
        "ecosystem_event_requests": [
            event_request("ecosystem", &ecosystems[1], 0, &["create_ecosystem"]),
            event_request("ecosystem", &new_uuid(), 0, &["create_ecosystem", "no_op"]),
            event_request("ecosystem", &ecosystems[2], 1, &["create_ecosystem"]),
        ],
        "max_num_events": 10,
    });
    let answer = ok(&node, "/fetch_ecosystem_events", &body).await;
    let answers = answer["ecosystem_event_responses"].as_array().unwrap();
    assert_eq!(summary(&answers[0]), (vec![0], false, true));
    assert_eq!(answers[0]["ecosystem_uuid"], ecosystems[1].as_str());
    let event = &answers[0]["events"][0];
    assert_eq!(event["event_type"], "create_ecosystem");
    assert_eq!(event["event_uuid"], ecosystems[1].as_str());
    assert_eq!(
        event["event_data"]["ecosystem_uuid"],
        ecosystems[1].as_str()
    );
    assert_eq!(
        event["event_data"]["exercises"].as_array().unwrap().len(),
        1
    );
    assert_eq!(
        summary(&answers[1]),
        (vec![], false, true),
        "unknown ecosystem"
    );
    assert_eq!(
        summary(&answers[2]),
        (vec![], false, true),
        "offset beyond the end"
    );

    // Metadata numbers are dense from 0 in acceptance order; offset and max are honoured.
    let metadatas = |offset: i64, max: i64| json!({"metadata_sequence_number_offset": offset, "max_num_metadatas": max});
    let expected_courses: Vec<Value> = courses
        .iter()
        .enumerate()
        .map(|(n, (course, ecosystem))| json!({"uuid": course, "initial_ecosystem_uuid": ecosystem, "metadata_sequence_number": n}))
        .collect();
    let answer = ok(&node, "/fetch_course_metadatas", &metadatas(0, 1000)).await;
    assert_eq!(answer["course_responses"], json!(expected_courses));
    let answer = ok(&node, "/fetch_course_metadatas", &metadatas(2, 2)).await;
    assert_eq!(answer["course_responses"], json!(expected_courses[2..4]));
    let answer = ok(&node, "/fetch_course_metadatas", &metadatas(4, 1000)).await;
    assert_eq!(answer["course_responses"], json!(expected_courses[4..]));
    let answer = ok(&node, "/fetch_course_metadatas", &metadatas(5, 1000)).await;
    assert_eq!(answer["course_responses"], json!([]));
    let expected_ecosystems: Vec<Value> = ecosystems
        .iter()
        .enumerate()
        .map(|(n, ecosystem)| json!({"uuid": ecosystem, "metadata_sequence_number": n}))
        .collect();
    let answer = ok(&node, "/fetch_ecosystem_metadatas", &metadatas(0, 1000)).await;
    assert_eq!(answer["ecosystem_responses"], json!(expected_ecosystems));
    let answer = ok(&node, "/fetch_ecosystem_metadatas", &metadatas(1, 1)).await;
    assert_eq!(
        answer["ecosystem_responses"],
        json!(expected_ecosystems[1..2])
    );
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_right_after_a_write_sees_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), TestBackend::Embedded).await;
    for round in 0..40 {
        let course = new_uuid();
        ok(
            &node,
            "/create_course",
            &create_course(&course, &new_uuid()),
        )
        .await;
        let answer = ok(
            &node,
            "/fetch_course_metadatas",
            &json!({"metadata_sequence_number_offset": round, "max_num_metadatas": 1}),
        )
        .await;
        assert_eq!(
            answer["course_responses"][0]["uuid"],
            course.as_str(),
            "round {round}"
        );
        for seq in 1..=3 {
            let response = new_uuid();
            ok(
                &node,
                "/record_responses",
                &record_responses(vec![response_item(&course, seq, &response)]),
            )
            .await;
            let answer = node
                .course_events(&course, seq, &["record_response"], 10)
                .await;
            assert_eq!(
                summary(&answer),
                (vec![seq], false, true),
                "round {round}, seq {seq}"
            );
            assert_eq!(answer["events"][0]["event_uuid"], response.as_str());
        }
    }
    node.stop().await.unwrap();
}
