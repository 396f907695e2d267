//! The write index is durable on the embedded store: a new node on the same data
//! directory keeps identities, slots and metadata numbers (docs/design/api.md §3.2).

use biglearn_suite::{
    create_course, create_ecosystem, new_uuid, record_responses, response_item, sequence_numbers,
    Node, TestBackend, ALL_COURSE_EVENT_TYPES,
};
use serde_json::{json, Value};

/// Writes, then checks the rules a restarted node must keep. Shared with the Kafka tests.
pub(crate) struct Written {
    pub course: String,
    pub ecosystem: String,
    pub responses: Vec<Value>,
    pub first_answer: Value,
}

pub(crate) async fn write_before_restart(node: &Node) -> Written {
    let ecosystem = new_uuid();
    let course = new_uuid();
    let (status, _) = node
        .post("/create_ecosystem", &create_ecosystem(&ecosystem))
        .await;
    assert_eq!(status, 200);
    let (status, _) = node
        .post("/create_course", &create_course(&course, &ecosystem))
        .await;
    assert_eq!(status, 200);
    let responses: Vec<Value> = (1..=3)
        .map(|seq| response_item(&course, seq, &new_uuid()))
        .collect();
    let (status, first_answer) = node
        .post("/record_responses", &record_responses(responses.clone()))
        .await;
    assert_eq!(status, 200, "{first_answer}");
    // The identity rules hold before the restart too.
    let (status, again) = node
        .post("/record_responses", &record_responses(responses.clone()))
        .await;
    assert_eq!((status, &again), (200, &first_answer));
    let (status, conflict) = node
        .post(
            "/record_responses",
            &record_responses(vec![response_item(&course, 2, &new_uuid())]),
        )
        .await;
    assert_eq!(status, 422, "{conflict}");
    assert_eq!(
        conflict["errors"][0]["path"],
        "/responses/0/sequence_number"
    );
    Written {
        course,
        ecosystem,
        responses,
        first_answer,
    }
}

pub(crate) async fn check_after_restart(node: &Node, written: &Written) {
    let Written {
        course,
        ecosystem,
        responses,
        first_answer,
    } = written;
    // A re-send of a recorded identity is a 200 no-op with the same answer.
    let (status, again) = node
        .post("/record_responses", &record_responses(responses.clone()))
        .await;
    assert_eq!((status, &again), (200, first_answer));
    let (status, body) = node
        .post("/create_course", &create_course(course, &new_uuid()))
        .await;
    assert_eq!(
        (status, body),
        (200, json!({"created_course_uuid": course}))
    );
    // A different identity at a taken slot is a 422.
    let (status, conflict) = node
        .post(
            "/record_responses",
            &record_responses(vec![response_item(course, 2, &new_uuid())]),
        )
        .await;
    assert_eq!(status, 422, "{conflict}");
    assert_eq!(
        conflict["errors"][0]["path"],
        "/responses/0/sequence_number"
    );
    // Reads still answer, and nothing was written twice.
    let answer = node
        .course_events(course, 0, &ALL_COURSE_EVENT_TYPES, 1000)
        .await;
    assert_eq!(sequence_numbers(&answer), [0, 1, 2, 3], "{answer}");
    assert_eq!(answer["is_end"], true);
    for (event, response) in answer["events"].as_array().unwrap()[1..]
        .iter()
        .zip(responses)
    {
        assert_eq!(event["event_uuid"], response["response_uuid"]);
    }
    // Metadata numbers continue densely.
    let next_course = new_uuid();
    let (status, _) = node
        .post("/create_course", &create_course(&next_course, ecosystem))
        .await;
    assert_eq!(status, 200);
    let next_ecosystem = new_uuid();
    let (status, _) = node
        .post("/create_ecosystem", &create_ecosystem(&next_ecosystem))
        .await;
    assert_eq!(status, 200);
    let metadatas = json!({"metadata_sequence_number_offset": 0, "max_num_metadatas": 1000});
    let (status, body) = node.post("/fetch_course_metadatas", &metadatas).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["course_responses"],
        json!([
            {"uuid": course, "initial_ecosystem_uuid": ecosystem, "metadata_sequence_number": 0},
            {"uuid": next_course, "initial_ecosystem_uuid": ecosystem, "metadata_sequence_number": 1},
        ])
    );
    let (status, body) = node.post("/fetch_ecosystem_metadatas", &metadatas).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["ecosystem_responses"],
        json!([
            {"uuid": ecosystem, "metadata_sequence_number": 0},
            {"uuid": next_ecosystem, "metadata_sequence_number": 1},
        ])
    );
    // The restarted writer still accepts new slots.
    let (status, _) = node
        .post(
            "/record_responses",
            &record_responses(vec![response_item(course, 4, &new_uuid())]),
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_index_survives_a_restart_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), TestBackend::Embedded).await;
    let written = write_before_restart(&node).await;
    node.stop().await.unwrap();

    let node = Node::start(dir.path(), TestBackend::Embedded).await;
    check_after_restart(&node, &written).await;
    node.stop().await.unwrap();
}
