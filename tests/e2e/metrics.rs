//! `/metrics` counts what the writer did, with the spec's names and bounded labels.

use biglearn_suite::{create_course, new_uuid, record_responses, response_item, Node, TestBackend};

async fn metric(node: &Node, line_prefix: &str) -> f64 {
    let text = node.metrics_text().await;
    text.lines()
        .find(|line| line.starts_with(line_prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_conflicts_and_payload_mismatches_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), TestBackend::Embedded).await;
    let course = new_uuid();
    let (status, _) = node
        .post("/create_course", &create_course(&course, &new_uuid()))
        .await;
    assert_eq!(status, 200);
    let response_uuid = new_uuid();
    let item = response_item(&course, 1, &response_uuid);
    assert_eq!(
        node.post("/record_responses", &record_responses(vec![item.clone()]))
            .await
            .0,
        200
    );
    // The same identity again, same payload: a no-op, not a mismatch.
    assert_eq!(
        node.post("/record_responses", &record_responses(vec![item.clone()]))
            .await
            .0,
        200
    );
    let mismatch = "biglearn_identity_payload_mismatch_total{stream=\"course\"}";
    assert_eq!(metric(&node, mismatch).await, 0.0);
    // The same identity with another answer: still a no-op, but counted.
    let mut changed = item.clone();
    changed["is_correct"] = serde_json::json!(!item["is_correct"].as_bool().unwrap());
    assert_eq!(
        node.post("/record_responses", &record_responses(vec![changed]))
            .await
            .0,
        200
    );
    assert_eq!(metric(&node, mismatch).await, 1.0);
    // Another identity at the taken slot: a 422, counted as a conflict.
    let other = response_item(&course, 1, &new_uuid());
    assert_eq!(
        node.post("/record_responses", &record_responses(vec![other]))
            .await
            .0,
        422
    );
    assert_eq!(
        metric(&node, "biglearn_write_conflicts_total{stream=\"course\"}").await,
        1.0
    );
    assert_eq!(
        metric(
            &node,
            "biglearn_events_written_total{event_type=\"record_response\",stream=\"course\"}"
        )
        .await,
        1.0
    );
    assert!(
        metric(
            &node,
            "biglearn_http_requests_total{endpoint=\"/record_responses\",status=\"200\"}"
        )
        .await
            >= 3.0
    );
    node.stop().await.unwrap();
}
