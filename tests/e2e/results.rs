//! Results pushed by external algorithms (docs/design/api.md §5) are published to
//! `<prefix>.results` and served by the read endpoints; built-in names are refused.

use biglearn_suite::{new_uuid, recorded_examples, Node, TestBackend};
use serde_json::{json, Value};

fn example(endpoint: &str) -> Value {
    recorded_examples()
        .into_iter()
        .find(|(_, example)| example["endpoint"] == endpoint)
        .map(|(_, example)| example)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_results_are_served_and_reserved_names_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), TestBackend::Embedded).await;
    for endpoint in [
        "/create_ecosystem",
        "/create_course",
        "/update_rosters",
        "/create_update_assignments",
    ] {
        let (status, body) = node.post(endpoint, &example(endpoint)["request"]).await;
        assert_eq!(status, 200, "{endpoint}: {body}");
    }
    let pes = example("/fetch_assignment_pes");
    let assignment = pes["request"]["pe_requests"][0]["assignment_uuid"].clone();
    let student = example("/fetch_student_clues")["request"]["student_clue_requests"][0]
        ["student_uuid"]
        .clone();
    let book_container = example("/fetch_student_clues")["request"]["student_clue_requests"][0]
        ["book_container_uuid"]
        .clone();
    let ecosystem = example("/create_ecosystem")["request"]["ecosystem_uuid"].clone();
    let exercises: Vec<Value> = example("/create_ecosystem")["request"]["exercises"]
        .as_array()
        .unwrap()
        .iter()
        .take(4)
        .map(|exercise| exercise["exercise_uuid"].clone())
        .collect();

    // Built-in names are reserved, in any case; nothing of the request is stored.
    let calculation = new_uuid();
    let matrix = new_uuid();
    let push = |algorithm: &str, uuids: &[Value]| {
        json!({"pe_updates": [{
            "request_uuid": new_uuid(),
            "assignment_uuid": assignment,
            "algorithm_name": algorithm,
            "calculation_uuid": calculation,
            "ecosystem_matrix_uuid": matrix,
            "exercise_uuids": uuids,
            "spy_info": {"why": "test"},
        }]})
    };
    let (status, body) = node
        .post("/update_assignment_pes", &push("Local_Query", &exercises))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errors"][0]["path"], "/pe_updates/0/algorithm_name");

    // An external algorithm's result is accepted and then served (names case-insensitive),
    // with duplicates removed and the list cut to max_num_exercises.
    let mut with_duplicate = exercises.clone();
    with_duplicate.insert(1, exercises[0].clone());
    let (status, body) = node
        .post("/update_assignment_pes", &push("Tesr", &with_duplicate))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pe_update_responses"][0]["update_status"], "accepted");
    let fetch = json!({"pe_requests": [{
        "request_uuid": new_uuid(), "assignment_uuid": assignment, "algorithm_name": "TESR", "max_num_exercises": 3,
    }]});
    let (status, body) = node.post("/fetch_assignment_pes", &fetch).await;
    assert_eq!(status, 200);
    let answer = &body["pe_responses"][0];
    assert_eq!(answer["assignment_status"], "assignment_ready");
    assert_eq!(answer["calculation_uuid"], json!(calculation));
    assert_eq!(answer["ecosystem_matrix_uuid"], json!(matrix));
    assert_eq!(answer["exercise_uuids"], json!(exercises[..3]));
    assert_eq!(answer["spy_info"], json!({"why": "test"}));

    // A pushed student CLUE is served verbatim.
    let clue = json!({"minimum": 0.25, "most_likely": 0.5, "maximum": 0.75, "is_real": true, "ecosystem_uuid": ecosystem});
    let (status, body) = node
        .post("/update_student_clues", &json!({"student_clue_updates": [{
            "request_uuid": new_uuid(), "student_uuid": student, "book_container_uuid": book_container,
            "algorithm_name": "tesr", "calculation_uuid": calculation, "clue_data": clue,
        }]}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = node
        .post("/fetch_student_clues", &json!({"student_clue_requests": [{
            "request_uuid": new_uuid(), "student_uuid": student, "book_container_uuid": book_container, "algorithm_name": "tesr",
        }]}))
        .await;
    let answer = &body["student_clue_responses"][0];
    assert_eq!(answer["clue_status"], "clue_ready");
    assert_eq!(answer["clue_data"], clue);

    // The pushes went through <prefix>.results: a restarted node serves them from the log.
    node.stop().await.unwrap();
    let fresh = tempfile::tempdir().unwrap();
    std::fs::rename(dir.path().join("log"), fresh.path().join("log")).unwrap();
    let node = Node::start(fresh.path(), TestBackend::Embedded).await;
    let (_, body) = node.post("/fetch_assignment_pes", &fetch).await;
    assert_eq!(
        body["pe_responses"][0]["assignment_status"], "assignment_ready",
        "{body}"
    );
    node.stop().await.unwrap();
}
