//! Feature toggles over HTTP and the CLI (docs/design/operations.md §6, docs/design/api.md §7):
//! define, change, override, kill, explain, list and audit; refusals record nothing; settings
//! survive a restart; course events carry the settings version of their acceptance.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use biglearn::settings_cli::SettingsCommand;
use biglearn_stream::StreamStore;
use biglearn_suite::{create_course, new_uuid, Node, TestBackend, ADMIN_TOKEN};
use clap::Parser;
use serde_json::{json, Value};

const PES: &str = "scheduler.default_num_pes_per_book_container";
const PUBLISH: &str = "scheduler.publish_biglearn_sparfa";
const GROWTH: &str = "sparfa.retrain_growth";

async fn admin_ok(node: &Node, path: &str, body: Value) -> Value {
    let (status, answer) = node.admin(path, &body).await;
    assert_eq!(status, 200, "{path} {body}: {answer}");
    answer
}

/// A settings write; returns its `settings_version`.
async fn change(node: &Node, path: &str, body: Value) -> i64 {
    let answer = admin_ok(node, path, body).await;
    answer["settings_version"]
        .as_i64()
        .unwrap_or_else(|| panic!("{path}: {answer}"))
}

async fn new_course(node: &Node) -> String {
    let course = new_uuid();
    let (status, answer) = node
        .post("/create_course", &create_course(&course, &new_uuid()))
        .await;
    assert_eq!(status, 200, "{answer}");
    course
}

async fn get(node: &Node, key: &str, course: Option<&str>, as_of: Option<i64>) -> Value {
    let mut body = json!({ "key": key });
    if let Some(course) = course {
        body["course_uuid"] = json!(course);
    }
    if let Some(as_of) = as_of {
        body["as_of_version"] = json!(as_of);
    }
    admin_ok(node, "/admin/settings/get", body).await
}

/// `(value, source, [(type, settings_version)] of the because chain)`.
fn explained(answer: &Value) -> (Value, String, Vec<(String, i64)>) {
    let because = answer["because"]
        .as_array()
        .expect("a because chain")
        .iter()
        .map(|event| {
            (
                event["type"].as_str().unwrap().to_owned(),
                event["settings_version"].as_i64().unwrap(),
            )
        })
        .collect();
    (
        answer["value"].clone(),
        answer["source"].as_str().unwrap().to_owned(),
        because,
    )
}

fn chain(links: &[(&str, i64)]) -> Vec<(String, i64)> {
    links
        .iter()
        .map(|(type_name, version)| (type_name.to_string(), *version))
        .collect()
}

async fn audit(node: &Node, filters: Value) -> Vec<Value> {
    let mut body = json!({ "limit": 1000 });
    if let (Value::Object(body), Value::Object(filters)) = (&mut body, filters) {
        body.extend(filters);
    }
    let answer = admin_ok(node, "/admin/settings/audit", body).await;
    answer["events"].as_array().unwrap().clone()
}

fn versions(events: &[Value]) -> Vec<i64> {
    events
        .iter()
        .map(|event| event["settings_version"].as_i64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_are_changed_overridden_killed_explained_and_audited_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), TestBackend::Embedded).await;

    // The initial settings of docs/design/operations.md §6.5 are defined at versions 1..=7 by the
    // node itself.
    let bootstrap = audit(&node, json!({})).await;
    assert_eq!(versions(&bootstrap), (1..=7).collect::<Vec<i64>>());
    assert!(bootstrap
        .iter()
        .all(|event| event["actor"] == "biglearn" && event["type"] == "setting_defined"));
    let listed = admin_ok(&node, "/admin/settings/list", json!({})).await;
    let pes = listed["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|setting| setting["key"] == PES)
        .cloned()
        .unwrap();
    assert_eq!(
        pes,
        json!({"key": PES, "value_type": "int", "scope": "course", "default": 3, "value": 3, "source": "default"})
    );

    let (a, b) = (new_course(&node).await, new_course(&node).await);
    let overridden = change(
        &node,
        "/admin/settings/set_course_override",
        json!({"key": PES, "course_uuid": a, "value": 5, "reason": "pilot section"}),
    )
    .await;
    assert_eq!(overridden, 8);
    // keep + new_courses: A and B exist, so each gets a pin (9, 10) before the change (11).
    let changed = change(
        &node,
        "/admin/settings/change_default",
        json!({"key": PES, "value": 4, "overrides": "keep", "applies_to": "new_courses", "reason": "fall term"}),
    )
    .await;
    assert_eq!(changed, 11);
    let c = new_course(&node).await;

    // (course, as_of, value, source, because)
    let cases = [
        (
            &a,
            None,
            json!(5),
            "override",
            chain(&[
                ("setting_defined", 1),
                ("course_override_set", 8),
                ("global_default_changed", 11),
            ]),
        ),
        (
            &b,
            None,
            json!(3),
            "pinned",
            chain(&[
                ("setting_defined", 1),
                ("value_pinned", 10),
                ("global_default_changed", 11),
            ]),
        ),
        (
            &c,
            None,
            json!(4),
            "default",
            chain(&[("setting_defined", 1), ("global_default_changed", 11)]),
        ),
        // As of version 8, before the change: the old default.
        (
            &b,
            Some(8),
            json!(3),
            "default",
            chain(&[("setting_defined", 1)]),
        ),
    ];
    for (course, as_of, value, source, because) in cases {
        let answer = get(&node, PES, Some(course), as_of).await;
        assert_eq!(
            explained(&answer),
            (value, source.to_owned(), because),
            "{course} as of {as_of:?}: {answer}"
        );
        assert_eq!(answer["settings_version"], as_of.unwrap_or(changed));
    }
    let b_pin = &get(&node, PES, Some(&b), None).await["because"][1];
    assert_eq!(
        (
            b_pin["course_uuid"].clone(),
            b_pin["value"].clone(),
            b_pin["actor"].clone(),
            b_pin["reason"].clone()
        ),
        (json!(b), json!(3), json!("e2e-test"), json!("fall term"))
    );

    // The kill switch beats A's override; releasing it restores the override.
    change(
        &node,
        "/admin/settings/set_course_override",
        json!({"key": PUBLISH, "course_uuid": a, "value": true, "reason": "keep publishing"}),
    )
    .await;
    let engaged = change(
        &node,
        "/admin/settings/kill_switch",
        json!({"key": PUBLISH, "engaged": true, "reason": "bad model"}),
    )
    .await;
    let answer = get(&node, PUBLISH, Some(&a), None).await;
    assert_eq!(
        explained(&answer),
        (
            json!(false),
            "kill_switch".to_owned(),
            chain(&[("setting_defined", 4), ("kill_switch_set", engaged)])
        )
    );
    let released = change(
        &node,
        "/admin/settings/kill_switch",
        json!({"key": PUBLISH, "engaged": false, "reason": "model fixed"}),
    )
    .await;
    assert_eq!(
        get(&node, PUBLISH, Some(&a), None).await["source"],
        "override"
    );
    assert_eq!(
        get(&node, PUBLISH, Some(&a), Some(released - 1)).await["source"],
        "kill_switch"
    );

    let listed = admin_ok(&node, "/admin/settings/list", json!({"course_uuid": a})).await;
    let pes = listed["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|setting| setting["key"] == PES)
        .cloned()
        .unwrap();
    assert_eq!(
        (
            pes["default"].clone(),
            pes["value"].clone(),
            pes["source"].clone()
        ),
        (json!(4), json!(5), json!("override"))
    );

    // Audit filters combine.
    assert_eq!(
        versions(&audit(&node, json!({"key": PES, "course_uuid": b})).await),
        [10]
    );
    assert_eq!(
        versions(&audit(&node, json!({"course_uuid": a})).await),
        [8, 9, 12]
    );
    assert_eq!(
        versions(&audit(&node, json!({"actor": "e2e-test", "after_version": 11})).await),
        [12, engaged, released]
    );
    assert_eq!(
        versions(
            &audit(
                &node,
                json!({"from": "2000-01-01T00:00:00Z", "to": "2001-01-01T00:00:00Z"})
            )
            .await
        ),
        Vec::<i64>::new()
    );
    assert_eq!(
        audit(&node, json!({"after_version": 7, "limit": 1})).await[0]["type"],
        "course_override_set"
    );

    // Refusals: 400 with the field to fix, and nothing recorded.
    let before = audit(&node, json!({})).await;
    let refusals = [
        (
            "/admin/settings/change_default",
            json!({"key": PES, "value": "four", "overrides": "keep", "applies_to": "all", "reason": "r"}),
            "/value",
        ),
        (
            "/admin/settings/change_default",
            json!({"key": "no.such_key", "value": 1, "overrides": "keep", "applies_to": "all", "reason": "r"}),
            "/key",
        ),
        (
            "/admin/settings/change_default",
            json!({"key": GROWTH, "value": 0.2, "overrides": "keep", "applies_to": "new_courses", "reason": "r"}),
            "/applies_to",
        ),
        (
            "/admin/settings/set_course_override",
            json!({"key": GROWTH, "course_uuid": a, "value": 0.2, "reason": "r"}),
            "/course_uuid",
        ),
        (
            "/admin/settings/set_course_override",
            json!({"key": PES, "course_uuid": a, "value": 2.5, "reason": "r"}),
            "/value",
        ),
        (
            "/admin/settings/kill_switch",
            json!({"key": PES, "engaged": true, "reason": "r"}),
            "/engaged",
        ),
        (
            "/admin/settings/define",
            json!({"key": PES, "value_type": "int", "scope": "course", "default": 3, "description": "d", "reason": "r"}),
            "/key",
        ),
        (
            "/admin/settings/define",
            json!({"key": "tutor.flag", "value_type": "bool", "scope": "course", "default": "yes", "description": "d", "reason": "r"}),
            "/default",
        ),
        (
            // No implied intent: `applies_to` is required.
            "/admin/settings/change_default",
            json!({"key": PES, "value": 4, "overrides": "keep", "reason": "r"}),
            "",
        ),
        ("/admin/settings/get", json!({"key": "no.such_key"}), "/key"),
    ];
    for (path, body, pointer) in refusals {
        let (status, answer) = node.admin(path, &body).await;
        assert_eq!(status, 400, "{path} {body}: {answer}");
        let message = answer["errors"][0]["message"].as_str().unwrap_or("");
        assert!(!message.is_empty(), "{answer}");
        if !pointer.is_empty() {
            assert_eq!(
                answer["errors"][0]["path"], pointer,
                "{path} {body}: {answer}"
            );
        }
    }
    assert_eq!(
        audit(&node, json!({})).await,
        before,
        "refusals record nothing"
    );

    // A new key, its definition explained.
    let defined = change(
        &node,
        "/admin/settings/define",
        json!({"key": "tutor.practice_label", "value_type": "string", "scope": "course", "default": "Practice", "description": "label", "reason": "new feature"}),
    )
    .await;
    let answer = get(&node, "tutor.practice_label", Some(&c), None).await;
    assert_eq!(
        explained(&answer),
        (
            json!("Practice"),
            "default".to_owned(),
            chain(&[("setting_defined", defined)])
        )
    );
    node.stop().await.unwrap();
}

/// Every course event in the embedded log under `data_dir`: course uuid and event type →
/// the settings version stamped at acceptance.
async fn stamped_versions(data_dir: &Path) -> HashMap<(String, String), i64> {
    let store = biglearn_stream::embedded::EmbeddedStore::open(&data_dir.join("log")).unwrap();
    let topic = "test.course-events";
    let n_partitions = store.partition_count(topic).await.unwrap();
    let high = store.high_watermarks(topic).await.unwrap();
    let start: Vec<(i32, i64)> = (0..n_partitions).map(|partition| (partition, 0)).collect();
    let mut reader = store.open_reader(topic, &start).await.unwrap();
    let total: i64 = high.iter().sum();
    let mut stamped = HashMap::new();
    let mut n_read = 0;
    for _ in 0..100 {
        if n_read >= total {
            break;
        }
        for record in reader.poll(1000, Duration::from_millis(200)).await.unwrap() {
            n_read += 1;
            let event =
                biglearn_events::decode_course_event(record.value.as_deref().unwrap()).unwrap();
            stamped.insert(
                (
                    event.course_uuid.to_string(),
                    event.event_type().as_str().to_owned(),
                ),
                event.meta.settings_version,
            );
        }
    }
    assert_eq!(n_read, total, "read the whole course topic");
    stamped
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_survive_a_restart_and_course_events_carry_their_version() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), TestBackend::Embedded).await;
    let before_change = new_course(&node).await;
    let changed = change(
        &node,
        "/admin/settings/change_default",
        json!({"key": PES, "value": 6, "overrides": "reset", "applies_to": "new_courses", "reason": "term"}),
    )
    .await;
    // One pin (8) for the one existing course, then the change (9).
    assert_eq!(changed, 9);
    let after_change = new_course(&node).await;
    let audit_before = audit(&node, json!({})).await;
    node.stop().await.unwrap();

    let stamped = stamped_versions(dir.path()).await;
    let version_of = |course: &str| stamped[&(course.to_owned(), "create_course".to_owned())];
    assert_eq!(
        (version_of(&before_change), version_of(&after_change)),
        (7, changed)
    );

    let node = Node::start(dir.path(), TestBackend::Embedded).await;
    // Nothing bootstrapped again, nothing lost.
    assert_eq!(audit(&node, json!({})).await, audit_before);
    assert_eq!(
        explained(&get(&node, PES, Some(&before_change), None).await).0,
        json!(3)
    );
    assert_eq!(
        explained(&get(&node, PES, Some(&after_change), None).await).0,
        json!(6)
    );
    let after_restart = new_course(&node).await;
    let overridden = change(
        &node,
        "/admin/settings/set_course_override",
        json!({"key": PES, "course_uuid": after_restart, "value": 1, "reason": "r"}),
    )
    .await;
    assert_eq!(overridden, changed + 1);
    node.stop().await.unwrap();
    let stamped = stamped_versions(dir.path()).await;
    // The restarted writer stamps the version it re-read from the settings topic.
    assert_eq!(
        stamped[&(after_restart.clone(), "create_course".to_owned())],
        changed
    );
}

/// `biglearn settings …` parsed by clap exactly as the binary parses its subcommand.
#[derive(Parser, Debug)]
struct SettingsCli {
    #[command(subcommand)]
    command: SettingsCommand,
}

async fn run_settings(node: &Node, subcommand: &str, rest: &[&str]) -> anyhow::Result<()> {
    let base = node.base();
    let args = [
        "settings",
        subcommand,
        "--target",
        &base,
        "--admin-token",
        ADMIN_TOKEN,
        "--actor",
        "cli-operator",
    ]
    .into_iter()
    .chain(rest.iter().copied());
    let cli = SettingsCli::try_parse_from(args)?;
    biglearn::settings_cli::run_settings(cli.command).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_settings_cli_mirrors_the_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), TestBackend::Embedded).await;
    let course = new_course(&node).await;
    let steps: [(&str, Vec<&str>); 8] = [
        (
            "define",
            vec![
                "--key",
                "tutor.banner",
                "--value-type",
                "string",
                "--scope",
                "course",
                "--default",
                "hello",
                "--kill-value",
                "\"\"",
                "--description",
                "banner text",
                "--reason",
                "TICKET-3",
            ],
        ),
        (
            "change-default",
            vec![
                "--key",
                "tutor.banner",
                "--value",
                "welcome",
                "--overrides",
                "keep",
                "--applies-to",
                "new_courses",
                "--reason",
                "TICKET-4",
            ],
        ),
        (
            "set-override",
            vec![
                "--key",
                "tutor.banner",
                "--course",
                &course,
                "--value",
                "custom",
                "--reason",
                "TICKET-5",
            ],
        ),
        (
            "clear-override",
            vec![
                "--key",
                "tutor.banner",
                "--course",
                &course,
                "--reason",
                "TICKET-6",
            ],
        ),
        (
            "kill-switch",
            vec![
                "--key",
                "tutor.banner",
                "--engaged",
                "true",
                "--reason",
                "TICKET-7",
            ],
        ),
        ("get", vec!["--key", "tutor.banner", "--course", &course]),
        ("list", vec!["--course", &course, "--json"]),
        (
            "audit",
            vec!["--key", "tutor.banner", "--by", "cli-operator"],
        ),
    ];
    for (subcommand, rest) in &steps {
        run_settings(&node, subcommand, rest)
            .await
            .unwrap_or_else(|error| panic!("settings {subcommand}: {error:#}"));
    }
    let events = audit(&node, json!({"key": "tutor.banner"})).await;
    let summary: Vec<(Value, Value)> = events
        .iter()
        .map(|event| (event["type"].clone(), event["reason"].clone()))
        .collect();
    assert_eq!(
        summary,
        [
            (json!("setting_defined"), json!("TICKET-3")),
            (json!("value_pinned"), json!("TICKET-4")),
            (json!("global_default_changed"), json!("TICKET-4")),
            (json!("course_override_set"), json!("TICKET-5")),
            (json!("course_override_cleared"), json!("TICKET-6")),
            (json!("kill_switch_set"), json!("TICKET-7")),
        ]
    );
    assert!(events.iter().all(|event| event["actor"] == "cli-operator"));
    assert_eq!(
        explained(&get(&node, "tutor.banner", Some(&course), None).await).0,
        json!("")
    );
    run_settings(
        &node,
        "kill-switch",
        &[
            "--key",
            "tutor.banner",
            "--engaged",
            "false",
            "--reason",
            "r",
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        explained(&get(&node, "tutor.banner", Some(&course), None).await).0,
        json!("hello"),
        "pinned at the old default"
    );
    // A refusal fails the command with the status and records nothing.
    let error = run_settings(
        &node,
        "set-override",
        &[
            "--key",
            "sparfa.retrain_growth",
            "--course",
            &course,
            "--value",
            "0.3",
            "--reason",
            "r",
        ],
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("400"), "{error:#}");
    assert_eq!(
        audit(&node, json!({"key": "sparfa.retrain_growth"}))
            .await
            .len(),
        1
    );
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_courses_change_racing_course_creation_pins_exactly_the_earlier_courses() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), TestBackend::Embedded).await;
    let fifth_created = tokio::sync::Notify::new();
    let creating = async {
        let mut courses = Vec::new();
        for idx in 0..20 {
            courses.push(new_course(&node).await);
            if idx == 4 {
                fifth_created.notify_one();
            }
        }
        courses
    };
    let changing = async {
        // The change starts while the later creates keep coming.
        fifth_created.notified().await;
        change(
            &node,
            "/admin/settings/change_default",
            json!({"key": PES, "value": 9, "overrides": "keep", "applies_to": "new_courses", "reason": "race"}),
        )
        .await
    };
    let (courses, changed) = tokio::join!(creating, changing);
    let pinned: Vec<String> = audit(&node, json!({"key": PES}))
        .await
        .iter()
        .filter(|event| event["type"] == "value_pinned")
        .map(|event| event["course_uuid"].as_str().unwrap().to_owned())
        .collect();
    let change_event = audit(&node, json!({"key": PES, "after_version": changed - 1})).await;
    let cutoff = change_event[0]["existing_course_cutoff"].as_i64().unwrap();
    assert_eq!(
        pinned.len() as i64,
        cutoff + 1,
        "every course up to the cutoff is pinned"
    );
    assert!(
        cutoff >= 4,
        "the five courses created before the change are pinned"
    );
    let mut values = Vec::new();
    for course in &courses {
        values.push(explained(&get(&node, PES, Some(course), None).await).0);
    }
    node.stop().await.unwrap();
    let stamped = stamped_versions(dir.path()).await;
    for (course, value) in courses.iter().zip(values) {
        let version = stamped[&(course.clone(), "create_course".to_owned())];
        let is_pinned = pinned.contains(course);
        // Accepted before the change: pinned at the old default; after: the new default.
        assert_eq!(
            (is_pinned, version < changed, value),
            (
                is_pinned,
                is_pinned,
                if is_pinned { json!(3) } else { json!(9) }
            ),
            "{course}: stamped {version}, change {changed}"
        );
    }
}
