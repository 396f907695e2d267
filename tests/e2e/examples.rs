//! The recorded Tutor exchanges replayed in order against a fresh node give the
//! recorded statuses and responses, except the differences the spec names.

use biglearn_suite::{recorded_examples, Node, TestBackend};
use serde_json::Value;

/// Fields the current API returns beyond the 2017 recordings (examples README, "Differences
/// from the current biglearn-api"): always `null` while no result is stored.
const FIELDS_ADDED_SINCE_2017: [&str; 2] = ["calculation_uuid", "ecosystem_matrix_uuid"];

/// `actual` has every member of `recorded` with an equal value; members beyond them
/// must be among `FIELDS_ADDED_SINCE_2017` and null.
pub(crate) fn assert_matches_recording(path: &str, recorded: &Value, actual: &Value) {
    match (recorded, actual) {
        (Value::Object(recorded), Value::Object(actual)) => {
            for (key, value) in recorded {
                let other = actual
                    .get(key)
                    .unwrap_or_else(|| panic!("{path}/{key} is missing from {actual:?}"));
                assert_matches_recording(&format!("{path}/{key}"), value, other);
            }
            for (key, value) in actual {
                if !recorded.contains_key(key) {
                    assert!(
                        FIELDS_ADDED_SINCE_2017.contains(&key.as_str()) && value.is_null(),
                        "{path}/{key} = {value} is not in the recording"
                    );
                }
            }
        }
        (Value::Array(recorded), Value::Array(actual)) => {
            assert_eq!(recorded.len(), actual.len(), "{path}: array length");
            for (idx, (recorded, actual)) in recorded.iter().zip(actual).enumerate() {
                assert_matches_recording(&format!("{path}/{idx}"), recorded, actual);
            }
        }
        (Value::Number(recorded), Value::Number(actual)) => {
            assert_eq!(recorded.as_f64(), actual.as_f64(), "{path}");
        }
        _ => assert_eq!(recorded, actual, "{path}"),
    }
}

/// Replays every recorded example twice against `node`: the recorded answers, then the
/// same answers again as no-ops (first write wins).
pub(crate) async fn replay_examples(node: &Node) {
    let examples = recorded_examples();
    assert_eq!(
        examples.len(),
        15,
        "the replay set is files 01–16 (14 lives in legacy/)"
    );
    for (name, example) in &examples {
        let endpoint = example["endpoint"].as_str().unwrap();
        let (status, body) = node.post(endpoint, &example["request"]).await;
        assert_eq!(
            status,
            example["status"].as_u64().unwrap() as u16,
            "{name}: {body}"
        );
        assert_matches_recording(name, &example["response"], &body);
    }
    for (name, example) in &examples {
        let endpoint = example["endpoint"].as_str().unwrap();
        let (status, body) = node.post(endpoint, &example["request"]).await;
        assert_eq!(status, 200, "{name} again: {body}");
        assert_matches_recording(name, &example["response"], &body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_examples_replay_with_their_recorded_answers() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), TestBackend::Embedded).await;
    replay_examples(&node).await;
    node.stop().await.unwrap();
}
