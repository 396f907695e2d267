//! Tutor's requests published to `<prefix>.inbox` are applied by the writer with the
//! HTTP rules; rejected ones land in `<prefix>.dlq` with their error body.

use std::time::Duration;

use biglearn_events::{decode_dead_letter, DeadLetterReason};
use biglearn_stream::kafka::{KafkaConfig, KafkaStore};
use biglearn_stream::{OutgoingRecord, StreamStore, Topics};
use biglearn_suite::{recorded_examples, Node, TestBackend};
use biglearn_testkit::{unique_topic_prefix, TestBroker};
use serde_json::{json, Value};

fn inbox_record(endpoint: &str, request: &Value, request_id: &str) -> OutgoingRecord {
    OutgoingRecord {
        key: biglearn_gateway::inbox::inbox_key(request),
        value: json!({"endpoint": endpoint, "request": request, "request_id": request_id})
            .to_string()
            .into_bytes(),
        headers: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_requests_are_applied_and_rejects_are_dead_lettered() {
    let broker = TestBroker::start();
    let prefix = unique_topic_prefix("inbox");
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(
        dir.path(),
        TestBackend::Kafka {
            bootstrap: broker.bootstrap().to_owned(),
            prefix: prefix.clone(),
        },
    )
    .await;
    let publisher =
        KafkaStore::connect(KafkaConfig::new(broker.bootstrap(), "publisher").single_broker())
            .await
            .unwrap();
    let topics = Topics::new(prefix.clone());

    let examples = recorded_examples();
    let request_of = |endpoint: &str| {
        examples
            .iter()
            .find(|(_, example)| example["endpoint"] == endpoint)
            .map(|(_, example)| example["request"].clone())
            .unwrap()
    };
    let create_course = request_of("/create_course");
    // Sequence 1, right after create_course, so the fetch below sees a contiguous prefix.
    let mut record = request_of("/record_responses");
    record["responses"][0]["sequence_number"] = json!(1);
    let mut conflicting = record.clone();
    conflicting["responses"][0]["response_uuid"] = json!("00000000-0000-4000-8000-000000000001");
    let mut fresh = record.clone();
    fresh["responses"][0]["sequence_number"] = json!(2);
    fresh["responses"][0]["response_uuid"] = json!("00000000-0000-4000-8000-000000000002");
    let mut invalid = record.clone();
    invalid["responses"][0]["is_correct"] = json!("yes");
    let outcomes = publisher
        .append(
            &topics.inbox(),
            vec![
                inbox_record("/create_course", &create_course, "req-1"),
                inbox_record("/record_responses", &record, "req-2"),
                inbox_record("/record_responses", &conflicting, "req-3"),
                inbox_record("/record_responses", &invalid, "req-4"),
                // The last "responses" would write the item if the repeat were not refused.
                OutgoingRecord {
                    key: biglearn_gateway::inbox::inbox_key(&record),
                    value: format!(
                        r#"{{"endpoint":"/record_responses","request":{{"responses":[],"responses":{}}},"request_id":"req-5"}}"#,
                        fresh["responses"]
                    )
                    .into_bytes(),
                    headers: Vec::new(),
                },
            ],
        )
        .await
        .unwrap();
    assert!(outcomes.iter().all(Result::is_ok));

    // The valid ones become events, visible through the API.
    let course_uuid = create_course["course_uuid"].clone();
    let fetch = json!({
        "course_event_requests": [{
            "request_uuid": "11111111-1111-4111-8111-111111111111",
            "course_uuid": course_uuid,
            "sequence_number_offset": 0,
            "event_types": ["create_course", "record_response"],
        }],
        "max_num_events": 10,
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = node.post("/fetch_course_events", &fetch).await;
        assert_eq!(status, 200);
        let events = body["course_event_responses"][0]["events"]
            .as_array()
            .unwrap()
            .clone();
        let response_uuids: Vec<&Value> = events
            .iter()
            .filter(|event| event["event_type"] == "record_response")
            .map(|event| &event["event_uuid"])
            .collect();
        if events
            .iter()
            .any(|event| event["event_type"] == "create_course")
            && !response_uuids.is_empty()
        {
            assert_eq!(
                response_uuids,
                vec![&record["responses"][0]["response_uuid"]],
                "the conflicting request wrote nothing"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the inbox was not applied: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The conflict, the invalid request and the repeated key are in the DLQ with their
    // error bodies.
    let n_partitions = publisher.partition_count(&topics.dlq()).await.unwrap();
    let start: Vec<(i32, i64)> = (0..n_partitions).map(|partition| (partition, 0)).collect();
    let mut reader = publisher.open_reader(&topics.dlq(), &start).await.unwrap();
    let mut letters = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while letters.len() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "dead letters missing: {letters:?}"
        );
        for record in reader.poll(100, Duration::from_millis(500)).await.unwrap() {
            letters.push(decode_dead_letter(record.value.as_deref().unwrap()).unwrap());
        }
    }
    letters.sort_by_key(|letter| letter.source_offset);
    let detail = |idx: usize| -> Value { serde_json::from_str(&letters[idx].detail).unwrap() };
    assert_eq!(letters[0].reason, DeadLetterReason::SlotConflict);
    assert_eq!(detail(0)["request_id"], "req-3");
    assert_eq!(
        detail(0)["errors"][0]["path"],
        "/responses/0/sequence_number"
    );
    assert_eq!(letters[1].reason, DeadLetterReason::InvalidPayload);
    assert_eq!(detail(1)["request_id"], "req-4");
    assert_eq!(detail(1)["errors"][0]["path"], "/responses/0/is_correct");
    assert_eq!(letters[2].reason, DeadLetterReason::InvalidPayload);
    assert_eq!(detail(2)["errors"][0]["path"], "/request/responses");
    node.stop().await.unwrap();
}
