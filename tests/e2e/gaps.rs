//! Gap visibility and repair (spec api.md §7, events.md §5.2): the admin endpoints, the
//! `biglearn gap` commands, and the no_op written for an unknown preparation.

use biglearn::admin::GapCommand;
use biglearn_suite::{
    create_course, create_ecosystem, new_uuid, prepare_course_ecosystem, record_responses,
    response_item, sequence_numbers, update_course_ecosystem_item, Node, TestBackend, ADMIN_TOKEN,
    ALL_COURSE_EVENT_TYPES,
};
use clap::Parser;
use serde_json::{json, Value};

async fn ok(node: &Node, path: &str, body: &Value) -> Value {
    let (status, answer) = node.post(path, body).await;
    assert_eq!(status, 200, "{path}: {answer}");
    answer
}

async fn course_with_responses(node: &Node, sequence_numbers: &[i64]) -> String {
    let course = new_uuid();
    ok(node, "/create_course", &create_course(&course, &new_uuid())).await;
    let items = sequence_numbers
        .iter()
        .map(|&seq| response_item(&course, seq, &new_uuid()))
        .collect();
    ok(node, "/record_responses", &record_responses(items)).await;
    course
}

async fn list_gaps(node: &Node, stream: &str) -> Vec<Value> {
    let (status, body) = node
        .admin(
            "/admin/list_sequence_gaps",
            &json!({"stream": stream, "limit": 100}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["gaps"].as_array().unwrap().clone()
}

fn fill(stream: &str, aggregate: &str, sequence_number: i64) -> Value {
    json!({"stream": stream, "aggregate_uuid": aggregate, "sequence_number": sequence_number, "reason": "TICKET-17: Tutor timed out"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_sequence_number_is_listed_and_filled_by_an_audited_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), TestBackend::Embedded).await;
    assert_eq!(list_gaps(&node, "course").await, Vec::<Value>::new());
    let whole = course_with_responses(&node, &[1, 2, 3]).await;
    let course = course_with_responses(&node, &[1, 2, 5]).await;

    let gaps = list_gaps(&node, "course").await;
    assert_eq!(gaps.len(), 1, "only the course with holes: {gaps:?}");
    let gap = &gaps[0];
    assert_eq!(gap["aggregate_uuid"], course.as_str());
    assert_eq!(
        (
            gap["first_missing"].clone(),
            gap["missing_count"].clone(),
            gap["highest_received"].clone()
        ),
        (json!(3), json!(2), json!(5))
    );
    let blocked_since = gap["blocked_since"].as_str().unwrap();
    assert!(
        blocked_since.len() >= 20 && blocked_since.ends_with('Z') && blocked_since.contains('T'),
        "{blocked_since}"
    );
    let answer = node
        .course_events(&course, 0, &ALL_COURSE_EVENT_TYPES, 1000)
        .await;
    assert_eq!(
        (sequence_numbers(&answer), answer["is_gap"].clone()),
        (vec![0, 1, 2], json!(true))
    );
    assert_eq!(
        node.course_events(&whole, 0, &ALL_COURSE_EVENT_TYPES, 1000)
            .await["is_gap"],
        false
    );

    // (body, expected status, expected answer)
    let cases = [
        (fill("course", &course, 3), 200, json!({"status": "filled"})),
        (
            fill("course", &course, 3),
            200,
            json!({"status": "already_filled"}),
        ),
        (fill("course", &course, 5), 422, Value::Null),
        (fill("course", &course, 4), 200, json!({"status": "filled"})),
        (
            fill("course", &course, 4),
            200,
            json!({"status": "already_filled"}),
        ),
        (fill("course", &course, 0), 400, Value::Null),
    ];
    for (body, status, expected) in cases {
        let (got_status, answer) = node.admin("/admin/fill_sequence_gap", &body).await;
        assert_eq!(got_status, status, "{body}: {answer}");
        match status {
            200 => assert_eq!(answer, expected, "{body}"),
            // 422 (slot taken) and 400 (sequence number 0) both point at the number.
            _ => assert_eq!(answer["errors"][0]["path"], "/sequence_number", "{answer}"),
        }
    }

    assert_eq!(list_gaps(&node, "course").await, Vec::<Value>::new());
    let answer = node
        .course_events(&course, 0, &ALL_COURSE_EVENT_TYPES, 1000)
        .await;
    assert_eq!(
        (
            sequence_numbers(&answer),
            answer["is_gap"].clone(),
            answer["is_end"].clone()
        ),
        (vec![0, 1, 2, 3, 4, 5], json!(false), json!(true))
    );
    for seq in [3usize, 4] {
        let event = &answer["events"][seq];
        assert_eq!(event["event_type"], "no_op");
        assert_eq!(event["event_data"]["reason"], "admin_fill");
        assert_eq!(event["event_data"]["actor"], "e2e-test");
    }
    // The slot that held a response still holds it (the refused fill wrote nothing).
    assert_eq!(answer["events"][5]["event_type"], "record_response");
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecosystem_gaps_are_filled_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), TestBackend::Embedded).await;
    let ecosystem = new_uuid();
    ok(&node, "/create_ecosystem", &create_ecosystem(&ecosystem)).await;
    assert_eq!(list_gaps(&node, "ecosystem").await, Vec::<Value>::new());
    let (status, answer) = node
        .admin(
            "/admin/fill_sequence_gap",
            &fill("ecosystem", &ecosystem, 2),
        )
        .await;
    assert_eq!((status, answer), (200, json!({"status": "filled"})));
    let gaps = list_gaps(&node, "ecosystem").await;
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!(
        (
            gaps[0]["first_missing"].clone(),
            gaps[0]["missing_count"].clone(),
            gaps[0]["highest_received"].clone()
        ),
        (json!(1), json!(1), json!(2))
    );
    let (status, answer) = node
        .admin(
            "/admin/fill_sequence_gap",
            &fill("ecosystem", &ecosystem, 1),
        )
        .await;
    assert_eq!((status, answer), (200, json!({"status": "filled"})));
    assert_eq!(list_gaps(&node, "ecosystem").await, Vec::<Value>::new());
    let answer = ok(&node, "/fetch_ecosystem_events", &json!({
        "ecosystem_event_requests": [biglearn_suite::event_request("ecosystem", &ecosystem, 0, &["create_ecosystem", "no_op"])],
        "max_num_events": 10,
    })).await;
    let answer = &answer["ecosystem_event_responses"][0];
    assert_eq!(sequence_numbers(answer), [0, 1, 2], "{answer}");
    assert_eq!(answer["events"][1]["event_data"]["reason"], "admin_fill");
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_course_ecosystems_with_an_unknown_preparation_leaves_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), TestBackend::Embedded).await;
    let course = new_uuid();
    let other_course = new_uuid();
    ok(
        &node,
        "/create_course",
        &create_course(&course, &new_uuid()),
    )
    .await;
    ok(
        &node,
        "/create_course",
        &create_course(&other_course, &new_uuid()),
    )
    .await;
    let known = new_uuid();
    let foreign = new_uuid();
    ok(
        &node,
        "/prepare_course_ecosystem",
        &prepare_course_ecosystem(&known, &course, 1, &new_uuid()),
    )
    .await;
    ok(
        &node,
        "/prepare_course_ecosystem",
        &prepare_course_ecosystem(&foreign, &other_course, 1, &new_uuid()),
    )
    .await;

    let items = vec![
        update_course_ecosystem_item(&new_uuid(), &course, 2, &new_uuid()),
        update_course_ecosystem_item(&new_uuid(), &course, 3, &foreign),
        update_course_ecosystem_item(&new_uuid(), &course, 4, &known),
    ];
    let expected = json!({"update_responses": [
        {"request_uuid": items[0]["request_uuid"], "update_status": "preparation_unknown"},
        {"request_uuid": items[1]["request_uuid"], "update_status": "preparation_unknown"},
        {"request_uuid": items[2]["request_uuid"], "update_status": "updated_but_unready"},
    ]});
    let body = json!({"update_requests": items});
    assert_eq!(
        ok(&node, "/update_course_ecosystems", &body).await,
        expected
    );
    // Re-sending gives the same statuses (first write wins) and writes nothing.
    assert_eq!(
        ok(&node, "/update_course_ecosystems", &body).await,
        expected
    );

    let answer = node
        .course_events(&course, 0, &ALL_COURSE_EVENT_TYPES, 1000)
        .await;
    assert_eq!(
        (sequence_numbers(&answer), answer["is_gap"].clone()),
        (vec![0, 1, 2, 3, 4], json!(false))
    );
    for (seq, item) in [
        (2usize, &body["update_requests"][0]),
        (3, &body["update_requests"][1]),
    ] {
        let event = &answer["events"][seq];
        assert_eq!(event["event_type"], "no_op", "{event}");
        assert_eq!(event["event_uuid"], item["request_uuid"]);
        assert_eq!(event["event_data"]["reason"], "preparation_unknown");
    }
    let event = &answer["events"][4];
    assert_eq!(event["event_type"], "update_course_ecosystem");
    assert_eq!(event["event_data"]["preparation_uuid"], known.as_str());
    assert_eq!(list_gaps(&node, "course").await, Vec::<Value>::new());
    node.stop().await.unwrap();
}

/// `biglearn gap …` parsed by clap exactly as the binary parses its subcommand.
#[derive(Parser, Debug)]
struct GapCli {
    #[command(subcommand)]
    command: GapCommand,
}

async fn run_gap(args: &[String]) -> anyhow::Result<()> {
    let cli =
        GapCli::try_parse_from(std::iter::once("gap").chain(args.iter().map(String::as_str)))?;
    biglearn::admin::run_gap(cli.command).await
}

/// `gap <subcommand> --target <node> --admin-token <token> --actor cli-operator <rest>`.
fn gap_args(node: &Node, subcommand: &str, token: &str, rest: &[&str]) -> Vec<String> {
    let base = node.base();
    [
        subcommand,
        "--target",
        &base,
        "--admin-token",
        token,
        "--actor",
        "cli-operator",
    ]
    .iter()
    .chain(rest)
    .map(|arg| arg.to_string())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gap_cli_lists_and_fills_against_a_running_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), TestBackend::Embedded).await;
    let course = course_with_responses(&node, &[1, 3]).await;

    run_gap(&gap_args(
        &node,
        "list",
        ADMIN_TOKEN,
        &["--stream", "course"],
    ))
    .await
    .unwrap();
    let fill = |seq: &'static str| {
        gap_args(
            &node,
            "fill",
            ADMIN_TOKEN,
            &["--course", &course, "--seq", seq, "--reason", "TICKET-9"],
        )
    };
    run_gap(&fill("2")).await.unwrap();
    // Idempotent: the same fill again succeeds (already_filled).
    run_gap(&fill("2")).await.unwrap();
    assert_eq!(list_gaps(&node, "course").await, Vec::<Value>::new());
    let answer = node.course_events(&course, 2, &["no_op"], 10).await;
    assert_eq!(sequence_numbers(&answer), [2], "{answer}");
    assert_eq!(answer["events"][0]["event_data"]["reason"], "admin_fill");
    assert_eq!(answer["events"][0]["event_data"]["actor"], "cli-operator");

    // A taken slot is refused, and so is a wrong token: the command fails with the status.
    let error = run_gap(&fill("3")).await.unwrap_err();
    assert!(error.to_string().contains("422"), "{error:#}");
    let error = run_gap(&gap_args(&node, "list", "not-the-token", &[]))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("401"), "{error:#}");
    node.stop().await.unwrap();
}
