//! Racing clients (docs/design/api.md §3.3): concurrent requests for one slot are serialised by
//! the single writer, so exactly one identity wins; metadata numbers stay dense.

use std::collections::BTreeSet;
use std::sync::Arc;

use biglearn_suite::{create_course, new_uuid, record_responses, response_item, Node, TestBackend};
use serde_json::json;

const RACERS: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writers_for_one_sequence_number_leave_exactly_one_identity() {
    let dir = tempfile::tempdir().unwrap();
    let node = Arc::new(Node::start(dir.path(), TestBackend::Embedded).await);
    let course = new_uuid();
    let (status, _) = node
        .post("/create_course", &create_course(&course, &new_uuid()))
        .await;
    assert_eq!(status, 200);
    for seq in 1..=5 {
        let uuids: Vec<String> = (0..RACERS).map(|_| new_uuid()).collect();
        let tasks: Vec<_> = uuids
            .iter()
            .map(|uuid| {
                let node = node.clone();
                let body = record_responses(vec![response_item(&course, seq, uuid)]);
                tokio::spawn(async move { node.post("/record_responses", &body).await })
            })
            .collect();
        let mut winners = Vec::new();
        let mut n_conflicts = 0;
        for (task, uuid) in tasks.into_iter().zip(&uuids) {
            let (status, body) = task.await.unwrap();
            match status {
                200 => {
                    assert_eq!(body, json!({"recorded_response_uuids": [uuid]}));
                    winners.push(uuid.clone());
                }
                422 => {
                    assert_eq!(body["errors"][0]["path"], "/responses/0/sequence_number");
                    n_conflicts += 1;
                }
                other => panic!("seq {seq}: unexpected {other}: {body}"),
            }
        }
        assert_eq!((winners.len(), n_conflicts), (1, RACERS - 1), "seq {seq}");
        let answer = node
            .course_events(&course, seq, &["record_response"], 100)
            .await;
        let events = answer["events"].as_array().unwrap();
        assert_eq!(events.len(), 1, "seq {seq}: {answer}");
        assert_eq!(events[0]["event_uuid"], winners[0].as_str(), "seq {seq}");
    }

    // Racing re-sends of one identity: all 200, one event.
    let uuid = new_uuid();
    let body = record_responses(vec![response_item(&course, 6, &uuid)]);
    let tasks: Vec<_> = (0..RACERS)
        .map(|_| {
            let node = node.clone();
            let body = body.clone();
            tokio::spawn(async move { node.post("/record_responses", &body).await })
        })
        .collect();
    for task in tasks {
        let (status, answer) = task.await.unwrap();
        assert_eq!(
            (status, answer),
            (200, json!({"recorded_response_uuids": [uuid]}))
        );
    }
    let answer = node
        .course_events(&course, 0, &["create_course", "record_response"], 100)
        .await;
    assert_eq!(
        biglearn_suite::sequence_numbers(&answer),
        [0, 1, 2, 3, 4, 5, 6]
    );
    Arc::into_inner(node)
        .expect("all tasks are done")
        .stop()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_create_course_takes_each_metadata_number_exactly_once() {
    const COURSES: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let node = Arc::new(Node::start(dir.path(), TestBackend::Embedded).await);
    let courses: Vec<String> = (0..COURSES).map(|_| new_uuid()).collect();
    let tasks: Vec<_> = courses
        .iter()
        .map(|course| {
            let node = node.clone();
            let body = create_course(course, &new_uuid());
            tokio::spawn(async move { node.post("/create_course", &body).await })
        })
        .collect();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = node
        .post(
            "/fetch_course_metadatas",
            &json!({"metadata_sequence_number_offset": 0, "max_num_metadatas": 1000}),
        )
        .await;
    assert_eq!(status, 200);
    let rows = body["course_responses"].as_array().unwrap();
    let numbers: Vec<i64> = rows
        .iter()
        .map(|row| row["metadata_sequence_number"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, (0..COURSES as i64).collect::<Vec<_>>());
    let listed: BTreeSet<&str> = rows
        .iter()
        .map(|row| row["uuid"].as_str().unwrap())
        .collect();
    let created: BTreeSet<&str> = courses.iter().map(String::as_str).collect();
    assert_eq!(listed, created);
    Arc::into_inner(node)
        .expect("all tasks are done")
        .stop()
        .await
        .unwrap();
}
