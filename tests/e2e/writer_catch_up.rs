//! A writer started on a long log accepts no write until its index holds the whole log
//! (issue 16, docs/design/api.md D15): written to from the moment it listens, a node on a log of
//! more than 200,000 events never accepts an event at a slot the log already holds. It
//! answers 503 while its index catches up, then 422 (the slot is taken), never 200.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use biglearn::offline::generate_into_store;
use biglearn::run::{partitions_scale, Backend, Role};
use biglearn_events::routing_headers;
use biglearn_simulator::WorkloadConfig;
use biglearn_stream::embedded::EmbeddedStore;
use biglearn_stream::{SharedStreamStore, Topics};
use biglearn_suite::{new_uuid, record_responses, response_item, Node, TestBackend};

/// The last course event of every partition: slots the event-log consumer reaches last.
async fn last_slots(store: &SharedStreamStore, topic: &str) -> Vec<(String, i64)> {
    let high = store.high_watermarks(topic).await.expect("high watermarks");
    let mut slots = Vec::new();
    for (partition, high) in high.iter().enumerate() {
        if *high == 0 {
            continue;
        }
        let mut reader = store
            .open_reader(topic, &[(partition as i32, high - 1)])
            .await
            .expect("a reader");
        let records = reader
            .poll(1, Duration::from_secs(5))
            .await
            .expect("the last record");
        let headers = routing_headers(&records[0].headers).expect("routing headers");
        slots.push((headers.aggregate_uuid.to_string(), headers.sequence_number));
    }
    slots
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_a_long_log_never_accepts_a_taken_slot_while_its_index_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("node");
    let slots = {
        let store: SharedStreamStore =
            Arc::new(EmbeddedStore::open(&data_dir.join("log")).expect("the log opens"));
        // 70 courses × 40 students × 6 weeks, fixed seed and start: the same log every run.
        let workload = WorkloadConfig::new(70, 40, 6, 7, 1_767_571_200_000_000);
        let report = generate_into_store(
            workload,
            store.clone(),
            "test",
            partitions_scale(&Backend::Embedded),
        )
        .await
        .expect("the history is generated");
        assert!(
            report.course_events + report.ecosystem_events >= 200_000,
            "{report:?}"
        );
        last_slots(&store, &Topics::new("test").course_events()).await
    };
    assert!(!slots.is_empty());

    let node = Node::start_listening(
        &data_dir,
        TestBackend::Embedded,
        Default::default(),
        vec![Role::Writer, Role::Reader, Role::Scheduler],
    )
    .await;
    let mut answers: BTreeMap<u16, usize> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let mut all_taken = true;
        for (course, seq) in &slots {
            let body = record_responses(vec![response_item(course, *seq, &new_uuid())]);
            let (status, answer) = node.post("/record_responses", &body).await;
            assert_ne!(
                status, 200,
                "a new event at the taken slot {course}/{seq} was accepted: {answer}"
            );
            assert!(
                status == 503 || status == 422,
                "catching up (503) or taken (422), got {status}: {answer}"
            );
            *answers.entry(status).or_default() += 1;
            all_taken &= status == 422;
        }
        if all_taken {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the index never caught up: {answers:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        answers.get(&503).copied().unwrap_or(0) > 0,
        "the first writes came while the index was catching up: {answers:?}"
    );
    node.stop().await.expect("a clean stop");
}
