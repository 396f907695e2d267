//! The Tutor simulator against a real node: a clean run has no errors; a dropped
//! request leaves exactly the gap the server then reports; the same seed sends the
//! same events.

use std::time::Duration;

use biglearn_simulator::{Fault, FaultKind, SimulateConfig, WorkloadConfig};
use biglearn_suite::{Node, TestBackend, ALL_COURSE_EVENT_TYPES, API_TOKEN};
use serde_json::json;

const WEEK_MICROS: i64 = 7 * 24 * 3600 * 1_000_000;
const NOW_MICROS: i64 = 1_760_000_000_000_000;

fn config(node: &Node, seed: u64, faults: Vec<Fault>) -> SimulateConfig {
    let mut workload = WorkloadConfig::new(3, 6, 2, seed, NOW_MICROS - WEEK_MICROS);
    workload.cutoff_micros = Some(NOW_MICROS);
    SimulateConfig {
        workload,
        target: node.base(),
        token: API_TOKEN.into(),
        concurrency: 8,
        rate: None,
        faults,
        truth_out: None,
        request_timeout: Duration::from_secs(60),
        slow_delay: Duration::from_millis(50),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_run_succeeds_and_a_dropped_request_is_a_reported_gap() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), TestBackend::Embedded).await;
    let clean = biglearn_simulator::run_simulation(config(&node, 7, Vec::new()))
        .await
        .unwrap();
    assert!(clean.is_success(), "{}", clean.to_table());
    assert!(clean.events_sent > 100 && clean.responses_sent > 0);
    assert_eq!(clean.faults.dropped, 0);

    let drop = Fault {
        kind: FaultKind::Drop,
        probability: 0.05,
    };
    let dropped = biglearn_simulator::run_simulation(config(&node, 8, vec![drop]))
        .await
        .unwrap();
    assert!(dropped.faults.dropped > 0, "{}", dropped.to_table());
    for request in &dropped.faults.dropped_requests {
        let Some(first_missing) = request.sequence_numbers.iter().min() else {
            continue;
        };
        let (status, gaps) = node
            .admin(
                "/admin/list_sequence_gaps",
                &json!({"stream": "course", "limit": 1000}),
            )
            .await;
        assert_eq!(status, 200);
        let gap = gaps["gaps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|gap| gap["aggregate_uuid"] == request.course_uuid.as_str())
            .unwrap_or_else(|| panic!("no gap listed for {request:?}: {gaps}"));
        assert!(gap["first_missing"].as_i64().unwrap() <= i64::from(*first_missing));
        // Reading from just below the hole stops there with is_gap.
        let offset = i64::from(*first_missing) - 1;
        let answer = node
            .course_events(
                &request.course_uuid,
                offset.max(0),
                &ALL_COURSE_EVENT_TYPES,
                1000,
            )
            .await;
        assert_eq!(answer["is_gap"], true, "{request:?}: {answer}");
        assert!(answer["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|event| event["sequence_number"].as_i64().unwrap() < i64::from(*first_missing)));
    }
    node.stop().await.unwrap();
}
