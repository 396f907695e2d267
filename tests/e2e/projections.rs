//! The state projection of a running node: an online (blue/green) rebuild that keeps
//! serving and lands on the same state, and the dead-letter tools on a real broker.

use std::time::{Duration, Instant};

use biglearn_events::{
    HEADER_AGGREGATE_UUID, HEADER_EVENT_TYPE, HEADER_EVENT_UUID, HEADER_SEQUENCE_NUMBER,
};
use biglearn_stream::kafka::{KafkaConfig, KafkaStore};
use biglearn_stream::{OutgoingRecord, StreamStore, Topics};
use biglearn_suite::{
    create_course, create_ecosystem, event_request, new_uuid, record_responses, response_item,
    Node, TestBackend, ALL_COURSE_EVENT_TYPES,
};
use biglearn_testkit::{unique_topic_prefix, TestBroker};
use serde_json::{json, Value};

async fn status(node: &Node) -> Value {
    let (code, answer) = node.admin("/admin/rebuild_status", &json!({})).await;
    assert_eq!(code, 200, "{answer}");
    answer
}

/// The live state hash once the projection has applied everything written so far: the
/// writes are acknowledged before the state consumers apply them, so wait until the hash
/// stops changing (bounded).
async fn settled_hash(node: &Node) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    loop {
        let hash = status(node).await["state_hash"]
            .as_str()
            .unwrap()
            .to_owned();
        if hash == last {
            return hash;
        }
        assert!(Instant::now() < deadline, "the state never settled");
        last = hash;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
}

async fn rebuild_and_wait(node: &Node) -> Value {
    let (code, started) = node.admin("/admin/rebuild", &json!({})).await;
    assert_eq!(code, 200, "{started}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let answer = status(node).await;
        match answer["status"].as_str() {
            Some("finished") => return answer,
            Some("failed") => panic!("the rebuild failed: {answer}"),
            _ => {}
        }
        // The old state keeps serving while the rebuild runs.
        assert!(
            Instant::now() < deadline,
            "the rebuild did not finish: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn write_course(node: &Node, course: &str, n_responses: i64) {
    let ecosystem = new_uuid();
    let (code, answer) = node
        .post("/create_ecosystem", &create_ecosystem(&ecosystem))
        .await;
    assert_eq!(code, 200, "{answer}");
    let (code, answer) = node
        .post("/create_course", &create_course(course, &ecosystem))
        .await;
    assert_eq!(code, 200, "{answer}");
    let items = (1..=n_responses)
        .map(|seq| response_item(course, seq, &new_uuid()))
        .collect();
    let (code, answer) = node
        .post("/record_responses", &record_responses(items))
        .await;
    assert_eq!(code, 200, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_rebuild_keeps_serving_and_switches_to_an_equal_state() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), TestBackend::Embedded).await;
    let course = new_uuid();
    write_course(&node, &course, 30).await;
    let before = settled_hash(&node).await;
    assert_eq!(status(&node).await["generation"], 1);

    let (code, started) = node.admin("/admin/rebuild", &json!({})).await;
    assert_eq!(
        (code, started["status"].as_str()),
        (200, Some("started")),
        "{started}"
    );
    // Reads keep working while the new generation is built beside the live one.
    let (code, answer) = node
        .post(
            "/fetch_course_events",
            &json!({
                "course_event_requests": [event_request("course", &course, 0, &ALL_COURSE_EVENT_TYPES)],
                "max_num_events": 100,
            }),
        )
        .await;
    assert_eq!(code, 200, "{answer}");
    let deadline = Instant::now() + Duration::from_secs(120);
    let finished = loop {
        let answer = status(&node).await;
        if answer["status"] == "finished" {
            break answer;
        }
        assert_ne!(answer["status"], "failed", "{answer}");
        assert!(Instant::now() < deadline, "{answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(finished["generation"], 2);
    assert_eq!(
        finished["rebuilt_state_hash"].as_str(),
        Some(before.as_str())
    );
    assert_eq!(finished["state_hash"].as_str(), Some(before.as_str()));
    assert!(finished["records"].as_u64().unwrap() >= 32, "{finished}");

    // The new generation is live: a new event changes it.
    let (code, answer) = node
        .post(
            "/record_responses",
            &record_responses(vec![response_item(&course, 31, &new_uuid())]),
        )
        .await;
    assert_eq!(code, 200, "{answer}");
    let after_write = settled_hash(&node).await;
    assert_ne!(
        after_write, before,
        "the state must change when an event is applied"
    );

    // Rebuilding again lands on the live state once more, and a restart keeps generation 3.
    let again = rebuild_and_wait(&node).await;
    assert_eq!(again["generation"], 3);
    assert_eq!(
        again["rebuilt_state_hash"].as_str(),
        Some(after_write.as_str())
    );
    node.stop().await.unwrap();
    let node = Node::start(dir.path(), TestBackend::Embedded).await;
    let restarted = status(&node).await;
    assert_eq!(restarted["generation"], 3);
    assert_eq!(settled_hash(&node).await, after_write);
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_rebuild_needs_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), TestBackend::Embedded).await;
    let (code, _) = node.post("/admin/rebuild", &json!({})).await;
    assert_eq!(
        code, 401,
        "the API token is not accepted on admin endpoints"
    );
    let (code, answer) = node.admin("/admin/rebuild", &json!({"now": true})).await;
    assert_eq!(code, 400, "unknown members are refused: {answer}");
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_replayed_without_losing_anything() {
    let broker = tokio::task::spawn_blocking(TestBroker::start)
        .await
        .unwrap();
    let prefix = unique_topic_prefix("e2e-dlq");
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(
        dir.path(),
        TestBackend::Kafka {
            bootstrap: broker.bootstrap().to_owned(),
            prefix: prefix.clone(),
        },
    )
    .await;
    let course = new_uuid();
    write_course(&node, &course, 3).await;

    // Poison: one record without routing headers, one with headers but an undecodable value.
    let topics = Topics::new(prefix.clone());
    let producer =
        KafkaStore::connect(KafkaConfig::new(broker.bootstrap(), "dlq-test").single_broker())
            .await
            .unwrap();
    let blocked_course = new_uuid();
    let headers = vec![
        (
            HEADER_AGGREGATE_UUID.to_owned(),
            blocked_course.as_bytes().to_vec(),
        ),
        (HEADER_SEQUENCE_NUMBER.to_owned(), b"0".to_vec()),
        (HEADER_EVENT_UUID.to_owned(), new_uuid().as_bytes().to_vec()),
        (HEADER_EVENT_TYPE.to_owned(), b"create_course".to_vec()),
    ];
    let outcomes = producer
        .append(
            &topics.course_events(),
            vec![
                OutgoingRecord {
                    key: b"poison".to_vec(),
                    value: b"\x00not avro".to_vec(),
                    headers: Vec::new(),
                },
                OutgoingRecord {
                    key: blocked_course.as_bytes().to_vec(),
                    value: b"\xc3\x01garbage".to_vec(),
                    headers,
                },
            ],
        )
        .await
        .unwrap();
    assert!(outcomes.iter().all(Result::is_ok));

    // Both consumers (event log and state projection) dead-letter both records.
    let deadline = Instant::now() + Duration::from_secs(60);
    let letters = loop {
        let (code, answer) = node.admin("/admin/dlq/list", &json!({"limit": 100})).await;
        assert_eq!(code, 200, "{answer}");
        let letters = answer["dead_letters"].as_array().cloned().unwrap();
        if letters.len() >= 4 {
            break letters;
        }
        assert!(Instant::now() < deadline, "dead letters missing: {answer}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        letters.iter().all(|l| l["reason"] == "undecodable"
            && l["source_topic"] == topics.course_events().as_str()),
        "{letters:?}"
    );
    let components: std::collections::BTreeSet<&str> = letters
        .iter()
        .filter_map(|l| l["component"].as_str())
        .collect();
    assert!(
        components.contains("projector") && components.contains("event_log"),
        "{components:?}"
    );

    // The healthy course is unaffected by the poison.
    let (code, answer) = node
        .post(
            "/record_responses",
            &record_responses(vec![response_item(&course, 4, &new_uuid())]),
        )
        .await;
    assert_eq!(code, 200, "{answer}");

    // Replay one dead letter: its original record goes back to its source topic, where it
    // is dead-lettered again (the cause is not fixed), and nothing else changes.
    let high_before: i64 = producer
        .high_watermarks(&topics.course_events())
        .await
        .unwrap()
        .iter()
        .sum();
    let first = &letters[0];
    let (code, answer) = node
        .admin(
            "/admin/dlq/replay",
            &json!({"partition": first["partition"], "offsets": [first["offset"]], "reason": "TICKET-1 retry"}),
        )
        .await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["replayed"].as_array().map(Vec::len), Some(1));
    let high_after: i64 = producer
        .high_watermarks(&topics.course_events())
        .await
        .unwrap()
        .iter()
        .sum();
    assert_eq!(
        high_after,
        high_before + 1,
        "the original record is appended once"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, answer) = node.admin("/admin/dlq/list", &json!({"limit": 100})).await;
        if answer["dead_letters"].as_array().map_or(0, Vec::len) >= letters.len() + 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replayed record was not dead-lettered again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A replay of an offset that holds no dead letter is refused with a clear error.
    let (code, answer) = node
        .admin(
            "/admin/dlq/replay",
            &json!({"partition": 0, "offsets": [999_999], "reason": "x"}),
        )
        .await;
    assert_eq!(code, 400, "{answer}");
    node.stop().await.unwrap();
    tokio::task::spawn_blocking(move || drop(broker))
        .await
        .unwrap();
}
