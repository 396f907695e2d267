//! Whole-request atomicity and identity rules of the write path (docs/design/api.md §3.1, §3.3):
//! a 422 or 400 anywhere in a batch writes nothing; a re-sent identity is a 200 no-op.

use biglearn_suite::{
    create_course, new_uuid, record_responses, response_item, sequence_numbers, Node, TestBackend,
    ALL_COURSE_EVENT_TYPES,
};
use serde_json::{json, Value};

async fn course_with_create(node: &Node) -> String {
    let course = new_uuid();
    let (status, body) = node
        .post("/create_course", &create_course(&course, &new_uuid()))
        .await;
    assert_eq!(status, 200, "{body}");
    course
}

/// Ten responses at sequence numbers 1..=10 of `course`.
fn ten_items(course: &str) -> Vec<Value> {
    (1..=10)
        .map(|seq| response_item(course, seq, &new_uuid()))
        .collect()
}

fn uuids(items: &[Value]) -> Vec<Value> {
    items
        .iter()
        .map(|item| item["response_uuid"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_422_in_item_7_of_10_writes_nothing_of_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), TestBackend::Embedded).await;
    let course = course_with_create(&node).await;
    // Another event already holds sequence number 7.
    let holder = new_uuid();
    let (status, _) = node
        .post(
            "/record_responses",
            &record_responses(vec![response_item(&course, 7, &holder)]),
        )
        .await;
    assert_eq!(status, 200);

    let items = ten_items(&course);
    let (status, body) = node
        .post("/record_responses", &record_responses(items.clone()))
        .await;
    assert_eq!(status, 422, "{body}");
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{body}");
    assert_eq!(errors[0]["path"], "/responses/6/sequence_number");
    let message = errors[0]["message"].as_str().unwrap();
    assert!(
        message.contains(&holder) && message.contains("record_response"),
        "{message}"
    );

    // Nothing of items 0–5 (sequence numbers 1..=6) nor 7–9 is there: only 0 and 7.
    let answer = node
        .course_events(&course, 0, &ALL_COURSE_EVENT_TYPES, 1000)
        .await;
    assert_eq!(sequence_numbers(&answer), [0], "{answer}");
    assert_eq!(answer["is_gap"], true, "7 is held back by the hole at 1");
    let answer = node
        .course_events(&course, 7, &ALL_COURSE_EVENT_TYPES, 1000)
        .await;
    assert_eq!(
        (answer["events"].clone(), answer["is_gap"].clone()),
        (json!([]), json!(true))
    );

    // Items 0–5 alone are new: written, and the course reads 0..=7 contiguously.
    let (status, body) = node
        .post("/record_responses", &record_responses(items[..6].to_vec()))
        .await;
    assert_eq!(
        (status, body),
        (200, json!({"recorded_response_uuids": uuids(&items[..6])}))
    );
    let answer = node
        .course_events(&course, 0, &ALL_COURSE_EVENT_TYPES, 1000)
        .await;
    assert_eq!(
        sequence_numbers(&answer),
        [0, 1, 2, 3, 4, 5, 6, 7],
        "{answer}"
    );
    for (event, item) in answer["events"].as_array().unwrap()[1..7]
        .iter()
        .zip(&items[..6])
    {
        assert_eq!(event["event_uuid"], item["response_uuid"]);
    }
    assert_eq!(answer["events"][7]["event_uuid"], holder.as_str());
    assert_eq!(
        (answer["is_gap"].clone(), answer["is_end"].clone()),
        (json!(false), json!(true))
    );
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_in_item_7_of_10_writes_nothing_of_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), TestBackend::Embedded).await;
    let course = course_with_create(&node).await;
    let mut items = ten_items(&course);
    items[6]["student_uuid"] = json!("238fce26-a6e0-4aed-9421-9e8b7ec43c8");
    let (status, body) = node
        .post("/record_responses", &record_responses(items.clone()))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errors"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["errors"][0]["path"], "/responses/6/student_uuid");

    let answer = node
        .course_events(&course, 0, &ALL_COURSE_EVENT_TYPES, 1000)
        .await;
    assert_eq!(sequence_numbers(&answer), [0], "{answer}");
    assert_eq!(
        (answer["is_gap"].clone(), answer["is_end"].clone()),
        (json!(false), json!(true))
    );

    // With item 7 fixed, all ten are new.
    items[6]["student_uuid"] = json!("238fce26-a6e0-4aed-9421-9e8b7ec43c86");
    let (status, body) = node
        .post("/record_responses", &record_responses(items.clone()))
        .await;
    assert_eq!(
        (status, body),
        (200, json!({"recorded_response_uuids": uuids(&items)}))
    );
    let answer = node
        .course_events(&course, 0, &ALL_COURSE_EVENT_TYPES, 1000)
        .await;
    assert_eq!(sequence_numbers(&answer), (0..=10).collect::<Vec<_>>());
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_items_claiming_one_slot_with_different_identities_get_422_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), TestBackend::Embedded).await;
    let course = course_with_create(&node).await;
    let other_course = course_with_create(&node).await;
    let first = new_uuid();
    let items = vec![
        response_item(&other_course, 1, &new_uuid()),
        response_item(&course, 1, &new_uuid()),
        response_item(&course, 2, &first),
        response_item(&course, 2, &new_uuid()),
    ];
    let (status, body) = node
        .post("/record_responses", &record_responses(items))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["errors"][0]["path"], "/responses/3/sequence_number");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains(&first),
        "{body}"
    );
    for course in [&course, &other_course] {
        let answer = node
            .course_events(course, 0, &ALL_COURSE_EVENT_TYPES, 1000)
            .await;
        assert_eq!(sequence_numbers(&answer), [0], "{answer}");
    }
    // The same identity twice in one request collapses to its first occurrence.
    let twice = new_uuid();
    let (status, body) = node
        .post(
            "/record_responses",
            &record_responses(vec![
                response_item(&course, 1, &twice),
                response_item(&course, 1, &twice),
            ]),
        )
        .await;
    assert_eq!(
        (status, body),
        (200, json!({"recorded_response_uuids": [twice]}))
    );
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_resent_with_a_different_payload_is_a_no_op_and_the_first_write_wins() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), TestBackend::Embedded).await;
    let ecosystem = new_uuid();
    let course = new_uuid();
    let (status, first_body) = node
        .post("/create_course", &create_course(&course, &ecosystem))
        .await;
    assert_eq!(status, 200);
    let mut changed_create = create_course(&course, &new_uuid());
    changed_create["is_real_course"] = json!(false);
    let (status, body) = node.post("/create_course", &changed_create).await;
    assert_eq!((status, &body), (200, &first_body));

    let response = new_uuid();
    let original = response_item(&course, 1, &response);
    let (status, first_body) = node
        .post(
            "/record_responses",
            &record_responses(vec![original.clone()]),
        )
        .await;
    assert_eq!(status, 200);
    let mut changed = original.clone();
    changed["is_correct"] = json!(true);
    changed["responded_at"] = json!("2018-01-01T00:00:00Z");
    let (status, body) = node
        .post(
            "/record_responses",
            &record_responses(vec![changed.clone()]),
        )
        .await;
    assert_eq!((status, &body), (200, &first_body));
    // Even at another sequence number the identity wins: nothing is written at 2.
    let mut moved = changed.clone();
    moved["sequence_number"] = json!(2);
    let (status, body) = node
        .post("/record_responses", &record_responses(vec![moved]))
        .await;
    assert_eq!((status, &body), (200, &first_body));

    let answer = node
        .course_events(&course, 1, &ALL_COURSE_EVENT_TYPES, 1000)
        .await;
    assert_eq!(sequence_numbers(&answer), [1], "{answer}");
    assert_eq!(
        (answer["is_gap"].clone(), answer["is_end"].clone()),
        (json!(false), json!(true))
    );
    let recorded = &answer["events"][0];
    assert_eq!(recorded["event_uuid"], response.as_str());
    assert_eq!(recorded["event_data"]["is_correct"], false);
    assert_eq!(
        recorded["event_data"]["responded_at"],
        original["responded_at"]
    );
    let answer = node
        .course_events(&course, 0, &["create_course"], 1000)
        .await;
    assert_eq!(
        answer["events"][0]["event_data"]["ecosystem_uuid"],
        ecosystem.as_str()
    );
    assert_eq!(answer["events"][0]["event_data"]["is_real_course"], true);

    // Sequence 2 is still free for a new identity.
    let (status, _) = node
        .post(
            "/record_responses",
            &record_responses(vec![response_item(&course, 2, &new_uuid())]),
        )
        .await;
    assert_eq!(status, 200);
    node.stop().await.unwrap();
}
