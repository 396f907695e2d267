//! Settings act at once (docs/design/scheduler.md S9, docs/design/operations.md O8): with no
//! course event sent after the change, the kill switch of `scheduler.publish_biglearn_sparfa`
//! withdraws the served biglearn_sparfa PEs (reads answer `assignment_unready`, so Tutor
//! falls back), releasing it brings them back, and a lowered default reaches an open
//! assignment.

use std::time::{Duration, Instant};

use biglearn_suite::{
    create_course, new_uuid, one_chapter_ecosystem, roster_of_one, Node, TestBackend,
};
use serde_json::{json, Value};

const PES: &str = "scheduler.default_num_pes_per_book_container";
const PUBLISH: &str = "scheduler.publish_biglearn_sparfa";

/// Polls `fetch_assignment_pes` for `assignment` under `algorithm` every 20 ms until `done`
/// holds for its one answer item (at most 30 s); returns the item and how long it took.
async fn poll_pes(
    node: &Node,
    assignment: &str,
    algorithm: &str,
    done: impl Fn(&Value) -> bool,
) -> (Value, Duration) {
    let started = Instant::now();
    loop {
        let (status, answer) = node
            .post(
                "/fetch_assignment_pes",
                &json!({"pe_requests": [{
                    "request_uuid": new_uuid(),
                    "assignment_uuid": assignment,
                    "algorithm_name": algorithm,
                }]}),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        let item = answer["pe_responses"][0].clone();
        if done(&item) {
            return (item, started.elapsed());
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{algorithm} PEs never reached the expected answer: {item}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ready_with(count: usize) -> impl Fn(&Value) -> bool {
    move |item: &Value| {
        item["assignment_status"] == "assignment_ready"
            && item["exercise_uuids"].as_array().map(Vec::len) == Some(count)
    }
}

async fn admin(node: &Node, path: &str, body: Value) {
    let (status, answer) = node.admin(path, &body).await;
    assert_eq!(status, 200, "{path} {body}: {answer}");
}

/// An ecosystem of one chapter with 12 exercises, a course with one student, and an open
/// reading of 3 of them with no PE goal (so the default number of PEs per chapter applies).
/// Returns the assignment.
async fn open_assignment(node: &Node) -> String {
    let (ecosystem, chapter, course, period, student, assignment) = (
        new_uuid(),
        new_uuid(),
        new_uuid(),
        new_uuid(),
        new_uuid(),
        new_uuid(),
    );
    let exercises: Vec<String> = (0..12).map(|_| new_uuid()).collect();
    let requests = [
        (
            "/create_ecosystem",
            one_chapter_ecosystem(&ecosystem, &chapter, &exercises, &["reading"]),
        ),
        ("/create_course", create_course(&course, &ecosystem)),
        (
            "/update_rosters",
            roster_of_one(&course, 1, &period, &student),
        ),
        (
            "/create_update_assignments",
            json!({"assignments": [{
                "request_uuid": new_uuid(),
                "course_uuid": course,
                "sequence_number": 2,
                "assignment_uuid": assignment,
                "is_deleted": false,
                "ecosystem_uuid": ecosystem,
                "student_uuid": student,
                "assignment_type": "reading",
                "exclusion_info": {
                    "opens_at": "2017-06-27T23:26:47.514672Z",
                    "due_at": "2099-07-04T23:26:47.514672Z",
                },
                "assigned_book_container_uuids": [chapter],
                "spes_are_assigned": false,
                "pes_are_assigned": false,
                "assigned_exercises": exercises[..3].iter().map(|exercise| json!({
                    "trial_uuid": new_uuid(),
                    "exercise_uuid": exercise,
                    "is_spe": false,
                    "is_pe": false,
                })).collect::<Vec<_>>(),
                "created_at": "2017-06-27T23:26:49.142898Z",
                "updated_at": "2017-06-27T23:26:49.142925Z",
            }]}),
        ),
    ];
    for (path, body) in requests {
        let (status, answer) = node.post(path, &body).await;
        assert_eq!(status, 200, "{path}: {answer}");
    }
    assignment
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_switch_and_a_new_default_act_without_a_course_event() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), TestBackend::Embedded).await;
    let assignment = open_assignment(&node).await;
    poll_pes(&node, &assignment, "local_query", ready_with(3)).await;
    poll_pes(&node, &assignment, "biglearn_sparfa", ready_with(3)).await;

    // Engaged: biglearn_sparfa is withdrawn, local_query stays.
    admin(
        &node,
        "/admin/settings/kill_switch",
        json!({"key": PUBLISH, "engaged": true, "reason": "bad model"}),
    )
    .await;
    let (item, took) = poll_pes(&node, &assignment, "biglearn_sparfa", |item| {
        item["assignment_status"] == "assignment_unready"
    })
    .await;
    eprintln!("kill switch engaged → biglearn_sparfa PEs withdrawn after {took:?}");
    assert_eq!(item["exercise_uuids"], json!([]), "{item}");
    poll_pes(&node, &assignment, "local_query", ready_with(3)).await;

    // Released: recomputed and served again.
    admin(
        &node,
        "/admin/settings/kill_switch",
        json!({"key": PUBLISH, "engaged": false, "reason": "model fixed"}),
    )
    .await;
    let (_, took) = poll_pes(&node, &assignment, "biglearn_sparfa", ready_with(3)).await;
    eprintln!("kill switch released → biglearn_sparfa PEs back after {took:?}");

    // A lower default for every course reaches the open assignment.
    admin(
        &node,
        "/admin/settings/change_default",
        json!({"key": PES, "value": 2, "overrides": "keep", "applies_to": "all", "reason": "fewer PEs"}),
    )
    .await;
    let (_, took) = poll_pes(&node, &assignment, "local_query", ready_with(2)).await;
    eprintln!("default 3 → 2 reached the open assignment after {took:?}");
    poll_pes(&node, &assignment, "biglearn_sparfa", ready_with(2)).await;

    node.stop().await.unwrap();
}
