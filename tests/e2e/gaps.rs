//! Gap visibility and repair (docs/design/api.md §7, docs/design/events.md §5.2): the admin
//! endpoints, the `biglearn gap` commands, and the no_op written for an unknown preparation.

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
        (
            fill("course", &course, 3),
            200,
            json!({"status": "filled", "filled_count": 1}),
        ),
        (
            fill("course", &course, 3),
            200,
            json!({"status": "already_filled", "filled_count": 0}),
        ),
        (fill("course", &course, 5), 422, Value::Null),
        (
            fill("course", &course, 4),
            200,
            json!({"status": "filled", "filled_count": 1}),
        ),
        (
            fill("course", &course, 4),
            200,
            json!({"status": "already_filled", "filled_count": 0}),
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
    assert_eq!(
        (status, answer),
        (200, json!({"status": "filled", "filled_count": 1}))
    );
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
    assert_eq!(
        (status, answer),
        (200, json!({"status": "filled", "filled_count": 1}))
    );
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

fn fill_range(stream: &str, aggregate: &str, from: i64, to: i64) -> Value {
    json!({"stream": stream, "aggregate_uuid": aggregate, "sequence_number": from, "sequence_number_to": to, "reason": "TICKET-18: a client bug jumped the sequence"})
}

/// Total size of the files under `dir` (the embedded log's segments).
fn bytes_under(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            bytes_under(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

/// The state projection's next sequence number of a course, waited for (bounded) until it
/// reaches `expected`.
async fn state_next_sequence_number(node: &Node, course: &str, expected: i64) -> i64 {
    let mut next = -1;
    for _ in 0..200 {
        let (status, digest) = node
            .admin("/admin/state_digest", &json!({"list_sequences": true}))
            .await;
        assert_eq!(status, 200, "{digest}");
        next = digest["sequences"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["aggregate_uuid"] == course)
            .and_then(|row| row["next_sequence_number"].as_i64())
            .unwrap_or(-1);
        if next == expected {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    next
}

fn noop_count(metrics: &str) -> f64 {
    metrics
        .lines()
        .find(|line| {
            line.starts_with("biglearn_noop_events_total")
                && line.contains("reason=\"admin_fill\"")
                && line.contains("stream=\"course\"")
        })
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_million_slot_gap_is_filled_in_one_call_by_one_record_and_the_course_reads_through() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), TestBackend::Embedded).await;
    // 4 ..= 2_000_003 never arrive: 2,000,000 missing slots.
    let course = course_with_responses(&node, &[1, 2, 3, 2_000_004, 2_000_005]).await;
    let answer = node
        .course_events(&course, 0, &ALL_COURSE_EVENT_TYPES, 1000)
        .await;
    assert_eq!(
        (sequence_numbers(&answer), answer["is_gap"].clone()),
        (vec![0, 1, 2, 3], json!(true))
    );
    assert_eq!(state_next_sequence_number(&node, &course, 4).await, 4);
    // The course-events topic of the embedded log (prefix `test`).
    let course_events = dir.path().join("log").join("test.course-events");
    let log_before = bytes_under(&course_events);
    let noops_before = noop_count(&node.metrics_text().await);

    let (status, answer) = node
        .admin(
            "/admin/fill_sequence_gap",
            &fill_range("course", &course, 4, 2_000_003),
        )
        .await;
    assert_eq!(
        (status, answer),
        (200, json!({"status": "filled", "filled_count": 2_000_000}))
    );
    // One record: the log grew by one small record, not by two million.
    let grown = bytes_under(&course_events) - log_before;
    assert!(grown < 4096, "the log grew by {grown} bytes");
    assert_eq!(noop_count(&node.metrics_text().await) - noops_before, 1.0);
    // A retry finds nothing missing.
    let (status, answer) = node
        .admin(
            "/admin/fill_sequence_gap",
            &fill_range("course", &course, 4, 2_000_003),
        )
        .await;
    assert_eq!(
        (status, answer),
        (200, json!({"status": "already_filled", "filled_count": 0}))
    );
    assert_eq!(list_gaps(&node, "course").await, Vec::<Value>::new());

    // The course reads through: the range is one no_op row, the events after it follow.
    let answer = node
        .course_events(&course, 0, &ALL_COURSE_EVENT_TYPES, 1000)
        .await;
    assert_eq!(
        (
            sequence_numbers(&answer),
            answer["is_gap"].clone(),
            answer["is_end"].clone()
        ),
        (
            vec![0, 1, 2, 3, 4, 2_000_004, 2_000_005],
            json!(false),
            json!(true)
        )
    );
    let no_op = &answer["events"][4];
    assert_eq!(no_op["event_type"], "no_op");
    assert_eq!(no_op["event_data"]["through_sequence_number"], 2_000_003);
    assert_eq!(no_op["event_data"]["reason"], "admin_fill");
    let answer = node
        .course_events(&course, 0, &["record_response"], 1000)
        .await;
    assert_eq!(
        (sequence_numbers(&answer), answer["is_end"].clone()),
        (vec![1, 2, 3, 2_000_004, 2_000_005], json!(true))
    );
    // From an offset inside the covered range.
    let answer = node
        .course_events(&course, 1_000_000, &["record_response"], 1000)
        .await;
    assert_eq!(
        (sequence_numbers(&answer), answer["is_gap"].clone()),
        (vec![2_000_004, 2_000_005], json!(false))
    );

    // The state projection applied the range and the events after it, and applies new ones.
    assert_eq!(
        state_next_sequence_number(&node, &course, 2_000_006).await,
        2_000_006
    );
    ok(
        &node,
        "/record_responses",
        &record_responses(vec![response_item(&course, 2_000_006, &new_uuid())]),
    )
    .await;
    assert_eq!(
        state_next_sequence_number(&node, &course, 2_000_007).await,
        2_000_007
    );
    // A covered slot is taken by the range no_op, as a one-slot no_op's slot is.
    let (status, answer) = node
        .post(
            "/record_responses",
            &record_responses(vec![response_item(&course, 1_000_000, &new_uuid())]),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("no_op"),
        "{answer}"
    );
    // A one-slot fill inside the range finds it filled.
    let (status, answer) = node
        .admin("/admin/fill_sequence_gap", &fill("course", &course, 77))
        .await;
    assert_eq!(
        (status, answer),
        (200, json!({"status": "already_filled", "filled_count": 0}))
    );
    node.stop().await.unwrap();

    // After a restart (the projections resume from sled), nothing changed.
    let node = Node::start(dir.path(), TestBackend::Embedded).await;
    let answer = node
        .course_events(&course, 0, &["record_response"], 1000)
        .await;
    assert_eq!(
        (sequence_numbers(&answer), answer["is_end"].clone()),
        (vec![1, 2, 3, 2_000_004, 2_000_005, 2_000_006], json!(true))
    );
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stray_maximal_sequence_number_is_repaired_by_filling_everything_below_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), TestBackend::Embedded).await;
    let course = course_with_responses(&node, &[1, 2]).await;
    // A client bug: 2^31 - 1 on a live course answers 200 and blocks the course's reads.
    ok(
        &node,
        "/record_responses",
        &record_responses(vec![response_item(&course, 2_147_483_647, &new_uuid())]),
    )
    .await;
    let answer = node
        .course_events(&course, 0, &["record_response"], 1000)
        .await;
    assert_eq!(answer["is_gap"], true, "{answer}");
    let gaps = list_gaps(&node, "course").await;
    assert_eq!(gaps[0]["missing_count"], 2_147_483_644i64, "{gaps:?}");

    let (status, answer) = node
        .admin(
            "/admin/fill_sequence_gap",
            &fill_range("course", &course, 3, 2_147_483_646),
        )
        .await;
    assert_eq!(
        (status, answer),
        (
            200,
            json!({"status": "filled", "filled_count": 2_147_483_644i64})
        )
    );
    let answer = node
        .course_events(&course, 0, &["record_response"], 1000)
        .await;
    assert_eq!(
        (
            sequence_numbers(&answer),
            answer["is_gap"].clone(),
            answer["is_end"].clone()
        ),
        (vec![1, 2, 2_147_483_647], json!(false), json!(true))
    );
    assert_eq!(list_gaps(&node, "course").await, Vec::<Value>::new());
    assert_eq!(
        state_next_sequence_number(&node, &course, 2_147_483_648).await,
        2_147_483_648
    );
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_fill_keeps_taken_slots_and_writes_one_no_op_per_missing_run() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), TestBackend::Embedded).await;
    let course = course_with_responses(&node, &[1, 5, 6, 9, 30]).await;

    let cases = [
        // 2..=4, 7..=8, 10..=20: three runs, 3 + 2 + 11 slots.
        (
            fill_range("course", &course, 2, 20),
            200,
            json!({"status": "filled", "filled_count": 16}),
        ),
        (
            fill_range("course", &course, 1, 20),
            200,
            json!({"status": "already_filled", "filled_count": 0}),
        ),
        // 21..=29 is one run; 30 is taken.
        (
            fill_range("course", &course, 21, 30),
            200,
            json!({"status": "filled", "filled_count": 9}),
        ),
        // A range that ends before it starts is refused, nothing written.
        (fill_range("course", &course, 40, 39), 400, Value::Null),
        // Slot 0 is create_course's: never fillable.
        (fill_range("course", &course, 0, 3), 400, Value::Null),
    ];
    for (body, status, expected) in cases {
        let (got_status, answer) = node.admin("/admin/fill_sequence_gap", &body).await;
        assert_eq!(got_status, status, "{body}: {answer}");
        match status {
            200 => assert_eq!(answer, expected, "{body}"),
            _ => assert!(
                answer["errors"][0]["path"]
                    .as_str()
                    .unwrap()
                    .starts_with("/sequence_number"),
                "{answer}"
            ),
        }
    }
    let answer = node
        .course_events(&course, 0, &ALL_COURSE_EVENT_TYPES, 1000)
        .await;
    assert_eq!(
        (
            sequence_numbers(&answer),
            answer["is_gap"].clone(),
            answer["is_end"].clone()
        ),
        (
            vec![0, 1, 2, 5, 6, 7, 9, 10, 21, 30],
            json!(false),
            json!(true)
        )
    );
    let through: Vec<Value> = answer["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["event_type"] == "no_op")
        .map(|event| event["event_data"]["through_sequence_number"].clone())
        .collect();
    assert_eq!(through, [json!(4), json!(8), json!(20), json!(29)]);
    // The responses kept their slots.
    for (idx, seq) in [(1usize, 1), (3, 5), (4, 6), (6, 9), (9, 30)] {
        assert_eq!(answer["events"][idx]["event_type"], "record_response");
        assert_eq!(answer["events"][idx]["sequence_number"], seq);
    }
    assert_eq!(state_next_sequence_number(&node, &course, 31).await, 31);
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gap_cli_fills_a_range_in_one_call() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), TestBackend::Embedded).await;
    let course = course_with_responses(&node, &[1, 500_000]).await;
    run_gap(&gap_args(
        &node,
        "fill",
        ADMIN_TOKEN,
        &[
            "--course",
            &course,
            "--seq",
            "2",
            "--to",
            "499999",
            "--reason",
            "TICKET-18",
        ],
    ))
    .await
    .unwrap();
    assert_eq!(list_gaps(&node, "course").await, Vec::<Value>::new());
    let answer = node.course_events(&course, 0, &["no_op"], 10).await;
    assert_eq!(sequence_numbers(&answer), [2], "{answer}");
    assert_eq!(
        answer["events"][0]["event_data"]["through_sequence_number"],
        499_999
    );
    assert_eq!(answer["events"][0]["event_data"]["actor"], "cli-operator");
    node.stop().await.unwrap();
}
