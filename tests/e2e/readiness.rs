//! Decision D10 (docs/design/api.md §2.6, §4.5; issue 18 item 1): an ecosystem is "ready" once
//! its initial SPARFA model is on `<prefix>.models`. Statuses answer
//! `precompute_is_complete: true`, a switch to a prepared ecosystem with a model answers
//! `updated_and_ready`, a re-sent update recomputes its status, and all of it holds after
//! a restart and after the state directory is rebuilt from the log (readiness is derived
//! from the models topic). A reader-only process beside the writer follows the models too.

use std::time::Duration;

use biglearn::run::Role;
use biglearn_suite::{
    create_course, create_ecosystem, new_uuid, prepare_course_ecosystem,
    update_course_ecosystem_item, Node, TestBackend,
};
use biglearn_testkit::{unique_topic_prefix, TestBroker};
use serde_json::{json, Value};

/// The roles `biglearn up` runs: the SPARFA role fits the models.
fn all_roles() -> Vec<Role> {
    vec![Role::Writer, Role::Reader, Role::Scheduler, Role::Sparfa]
}

async fn ok(node: &Node, path: &str, body: &Value) -> Value {
    let (status, answer) = node.post(path, body).await;
    assert_eq!(status, 200, "{path}: {answer}");
    answer
}

/// `fetch_course_ecosystem_statuses` for one course.
async fn status(node: &Node, course: &str) -> Value {
    let answer = ok(
        node,
        "/fetch_course_ecosystem_statuses",
        &json!({"request_uuid": new_uuid(), "course_uuids": [course]}),
    )
    .await;
    answer["course_statuses"][0].clone()
}

/// Polls (bounded) until `which` (`current_ecosystem_status` or `next_ecosystem_status`)
/// of the course reports `precompute_is_complete: true`; returns that status.
async fn wait_precomputed(node: &Node, course: &str, which: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let answer = status(node, course).await;
        if answer[which]["precompute_is_complete"] == json!(true) {
            return answer;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{which} of {course} never became precompute_is_complete: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One update item sent alone; returns its `update_status`.
async fn update(node: &Node, item: &Value) -> String {
    let answer = ok(
        node,
        "/update_course_ecosystems",
        &json!({"update_requests": [item]}),
    )
    .await;
    assert_eq!(
        answer["update_responses"][0]["request_uuid"],
        item["request_uuid"]
    );
    answer["update_responses"][0]["update_status"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// `biglearn_sparfa_fits_total{outcome="ok"}` of the node.
async fn fits_ok(node: &Node) -> f64 {
    let text = node.metrics_text().await;
    text.lines()
        .filter(|line| {
            line.starts_with("biglearn_sparfa_fits_total") && line.contains("outcome=\"ok\"")
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecosystems_are_ready_once_their_initial_model_is_published_also_after_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        Node::start_with_roles(
            dir.path(),
            TestBackend::Embedded,
            Default::default(),
            all_roles(),
        )
    };
    let node = start().await;
    let (first, second) = (new_uuid(), new_uuid());
    let course = new_uuid();
    ok(&node, "/create_ecosystem", &create_ecosystem(&first)).await;
    ok(&node, "/create_course", &create_course(&course, &first)).await;

    // The initial model of the first ecosystem makes the current ecosystem ready.
    let answer = wait_precomputed(&node, &course, "current_ecosystem_status").await;
    assert_eq!(
        answer["current_ecosystem_status"],
        json!({"ecosystem_uuid": first, "ecosystem_is_known": true,
               "ecosystem_is_prepared": false, "precompute_is_complete": true}),
        "{answer}"
    );
    assert!(fits_ok(&node).await >= 1.0, "the model came from a fit");

    // A switch to an ecosystem that does not exist yet: no model can exist.
    let towards_second = new_uuid();
    ok(
        &node,
        "/prepare_course_ecosystem",
        &prepare_course_ecosystem(&towards_second, &course, 1, &second),
    )
    .await;
    let answer = status(&node, &course).await;
    assert_eq!(
        answer["next_ecosystem_status"],
        json!({"ecosystem_uuid": second, "ecosystem_is_known": false,
               "ecosystem_is_prepared": true, "precompute_is_complete": false}),
        "{answer}"
    );
    let switch_to_second = update_course_ecosystem_item(&new_uuid(), &course, 2, &towards_second);
    assert_eq!(
        update(&node, &switch_to_second).await,
        "updated_but_unready"
    );
    assert_eq!(
        update(&node, &switch_to_second).await,
        "updated_but_unready",
        "re-sent before any model: still unready"
    );

    // Its initial model arrives: statuses follow, and a re-send recomputes its status.
    ok(&node, "/create_ecosystem", &create_ecosystem(&second)).await;
    let answer = wait_precomputed(&node, &course, "current_ecosystem_status").await;
    assert_eq!(
        answer["current_ecosystem_preparation_uuid"],
        json!(towards_second)
    );
    assert_eq!(
        answer["current_ecosystem_status"]["ecosystem_uuid"],
        json!(second)
    );
    assert_eq!(update(&node, &switch_to_second).await, "updated_and_ready");

    // A switch to a prepared ecosystem whose model exists is ready at once.
    let back_to_first = new_uuid();
    ok(
        &node,
        "/prepare_course_ecosystem",
        &prepare_course_ecosystem(&back_to_first, &course, 3, &first),
    )
    .await;
    let answer = status(&node, &course).await;
    assert_eq!(
        answer["next_ecosystem_status"],
        json!({"ecosystem_uuid": first, "ecosystem_is_known": true,
               "ecosystem_is_prepared": true, "precompute_is_complete": true}),
        "{answer}"
    );
    let switch_to_first = update_course_ecosystem_item(&new_uuid(), &course, 4, &back_to_first);
    assert_eq!(update(&node, &switch_to_first).await, "updated_and_ready");
    let before_restart = status(&node, &course).await;
    assert_eq!(
        before_restart["current_ecosystem_status"]["precompute_is_complete"],
        json!(true)
    );
    assert_eq!(
        before_restart["next_ecosystem_status"],
        json!({"ecosystem_uuid": null, "ecosystem_is_known": false,
               "ecosystem_is_prepared": false, "precompute_is_complete": false})
    );
    node.stop().await.unwrap();

    // After a restart: the same answers, as soon as the node is ready.
    let node = start().await;
    assert_eq!(status(&node, &course).await, before_restart);
    assert_eq!(update(&node, &switch_to_second).await, "updated_and_ready");
    assert_eq!(update(&node, &switch_to_first).await, "updated_and_ready");
    node.stop().await.unwrap();

    // The state directory is a cache: without it the node rebuilds everything from the
    // log, readiness included (from `<prefix>.models`), before /readyz answers 200.
    std::fs::remove_dir_all(dir.path().join("state")).unwrap();
    let node = start().await;
    assert_eq!(status(&node, &course).await, before_restart);
    assert_eq!(update(&node, &switch_to_second).await, "updated_and_ready");
    assert_eq!(update(&node, &switch_to_first).await, "updated_and_ready");
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_process_follows_the_models_too() {
    let broker = tokio::task::spawn_blocking(TestBroker::start)
        .await
        .expect("the broker starts");
    let prefix = unique_topic_prefix("e2e-readiness");
    let backend = TestBackend::Kafka {
        bootstrap: broker.bootstrap().to_owned(),
        prefix,
    };
    let (writer_dir, reader_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let writer = Node::start_with_roles(
        writer_dir.path(),
        backend.clone(),
        Default::default(),
        all_roles(),
    )
    .await;
    let reader = Node::start_with_roles(
        reader_dir.path(),
        backend,
        Default::default(),
        vec![Role::Reader],
    )
    .await;
    let (ecosystem, course) = (new_uuid(), new_uuid());
    ok(&writer, "/create_ecosystem", &create_ecosystem(&ecosystem)).await;
    ok(
        &writer,
        "/create_course",
        &create_course(&course, &ecosystem),
    )
    .await;
    let on_reader = wait_precomputed(&reader, &course, "current_ecosystem_status").await;
    assert_eq!(
        on_reader["current_ecosystem_status"]["ecosystem_uuid"],
        json!(ecosystem)
    );
    // Each process follows the topic on its own: the writer too, in its own time.
    wait_precomputed(&writer, &course, "current_ecosystem_status").await;
    // The reader answers no writes, and keeps no state projection (it serves statuses from
    // the event log and results from `<prefix>.results`).
    let (code, _) = reader
        .post("/create_ecosystem", &create_ecosystem(&new_uuid()))
        .await;
    assert_eq!(code, 503);
    let (code, answer) = reader
        .admin("/admin/state_digest", &json!({"list_sequences": false}))
        .await;
    assert_eq!(code, 503, "{answer}");
    assert!(
        answer.to_string().contains("keeps no state projection"),
        "{answer}"
    );
    // The state projection applied the course's events in the writer, none in the reader.
    let applied_by_state = |scrape: String| -> f64 {
        scrape
            .lines()
            .filter(|line| {
                line.starts_with("biglearn_events_applied_total{component=\"projector\"")
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(applied_by_state(writer.metrics_text().await) >= 1.0);
    assert_eq!(applied_by_state(reader.metrics_text().await), 0.0);
    reader.stop().await.unwrap();
    writer.stop().await.unwrap();
    tokio::task::spawn_blocking(move || drop(broker))
        .await
        .unwrap();
}
