//! The state projection of a running node: an online (blue/green) rebuild that keeps
//! serving and lands on the same state, and the dead-letter tools on a real broker.

use std::time::{Duration, Instant};

use biglearn_events::{
    HEADER_AGGREGATE_UUID, HEADER_EVENT_TYPE, HEADER_EVENT_UUID, HEADER_SEQUENCE_NUMBER,
};
use biglearn_stream::kafka::{KafkaConfig, KafkaStore};
use biglearn_stream::{OutgoingRecord, StreamStore, Topics};
use biglearn_suite::{
    create_course, create_ecosystem, event_request, new_uuid, one_chapter_ecosystem,
    record_responses, response_item, roster_of_one, Node, TestBackend, ALL_COURSE_EVENT_TYPES,
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

/// A small course whose results depend on a setting: 12 exercises in one chapter, one
/// student, and an assignment that leaves its number of PEs to
/// `scheduler.default_num_pes_per_book_container`.
struct SettingsCourse {
    ecosystem: String,
    chapter: String,
    course: String,
    student: String,
    exercises: Vec<String>,
}

impl SettingsCourse {
    async fn create(node: &Node) -> SettingsCourse {
        let this = SettingsCourse {
            ecosystem: new_uuid(),
            chapter: new_uuid(),
            course: new_uuid(),
            student: new_uuid(),
            exercises: (0..12).map(|_| new_uuid()).collect(),
        };
        let ecosystem = one_chapter_ecosystem(
            &this.ecosystem,
            &this.chapter,
            &this.exercises,
            &["reading"],
        );
        let period = new_uuid();
        for (path, body) in [
            ("/create_ecosystem", ecosystem),
            (
                "/create_course",
                create_course(&this.course, &this.ecosystem),
            ),
            (
                "/update_rosters",
                roster_of_one(&this.course, 1, &period, &this.student),
            ),
        ] {
            let (code, answer) = node.post(path, &body).await;
            assert_eq!(code, 200, "{path}: {answer}");
        }
        this
    }

    /// An assignment at `sequence_number` with no PE goal; returns its uuid.
    async fn assignment(&self, node: &Node, sequence_number: i64) -> String {
        let assignment = new_uuid();
        let (code, answer) = node
            .post(
                "/create_update_assignments",
                &json!({"assignments": [{
                    "request_uuid": new_uuid(), "course_uuid": self.course,
                    "sequence_number": sequence_number, "assignment_uuid": assignment,
                    "is_deleted": false, "ecosystem_uuid": self.ecosystem, "student_uuid": self.student,
                    "assignment_type": "reading",
                    "assigned_book_container_uuids": [self.chapter],
                    "goal_num_tutor_assigned_spes": 0, "spes_are_assigned": false,
                    "pes_are_assigned": false,
                    "assigned_exercises": [{"trial_uuid": new_uuid(), "exercise_uuid": self.exercises[sequence_number as usize], "is_spe": false, "is_pe": false}],
                    "created_at": "2017-06-27T23:26:49.142898Z", "updated_at": "2017-06-27T23:26:49.142925Z",
                }]}),
            )
            .await;
        assert_eq!(code, 200, "{answer}");
        assignment
    }
}

/// Waits (bounded) until `count` `local_query` PEs are served for `assignment`; returns it.
async fn pes_become(node: &Node, assignment: &str, count: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let served = ready_pes(node, assignment).await;
        if served == count {
            return served;
        }
        assert!(
            Instant::now() < deadline,
            "{served} PEs, never {count}, for {assignment}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The number of `local_query` PEs served for `assignment`, once they are ready (bounded).
async fn ready_pes(node: &Node, assignment: &str) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, answer) = node
            .post(
                "/fetch_assignment_pes",
                &json!({"pe_requests": [{"request_uuid": new_uuid(), "assignment_uuid": assignment, "algorithm_name": "local_query", "max_num_exercises": 10}]}),
            )
            .await;
        assert_eq!(code, 200, "{answer}");
        let item = &answer["pe_responses"][0];
        if item["assignment_status"] == "assignment_ready" {
            return item["exercise_uuids"].as_array().map_or(0, Vec::len);
        }
        assert!(
            Instant::now() < deadline,
            "PEs never became ready: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setting_changed_mid_stream_survives_an_offline_rebuild_with_the_same_state_hash() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), TestBackend::Embedded).await;
    let course = SettingsCourse::create(&node).await;
    let before_change = course.assignment(&node, 2).await;
    assert_eq!(
        ready_pes(&node, &before_change).await,
        3,
        "the initial default: 3 per chapter"
    );

    let (code, answer) = node
        .admin(
            "/admin/settings/change_default",
            &json!({"key": "scheduler.default_num_pes_per_book_container", "value": 2, "overrides": "keep", "applies_to": "all", "reason": "TICKET-7 fewer PEs"}),
        )
        .await;
    assert_eq!(code, 200, "{answer}");
    // Settings act at once (docs/design/scheduler.md S9): the open assignment gets the new
    // default without an event of its course, and new work has it too.
    pes_become(&node, &before_change, 2).await;
    let after_change = course.assignment(&node, 3).await;
    assert_eq!(
        ready_pes(&node, &after_change).await,
        2,
        "the new default applies to new work"
    );
    settled_hash(&node).await;
    node.stop().await.unwrap();

    let state_dir = dir.path().join("state");
    let hash = || {
        let db = sled::Config::new().path(&state_dir).open().unwrap();
        let parts = biglearn_projector::service::state_hash_parts(&db).unwrap();
        drop(db);
        parts
    };
    let live = hash();
    assert_eq!(
        live.iter()
            .map(|(part, _)| part.as_str())
            .collect::<Vec<_>>(),
        ["state", "results"],
        "{live:?}"
    );
    let config = biglearn::run::RunConfig {
        data_dir: dir.path().to_owned(),
        listen: "127.0.0.1:0".parse().unwrap(),
        backend: biglearn::run::Backend::Embedded,
        topic_prefix: "test".into(),
        roles: vec![],
        api_token: "unused-api-token-0123456789".into(),
        admin_token: "unused-admin-token-0123456789".into(),
        observer_token: None,
        writer_id: "rebuild".into(),
        flags: Default::default(),
        http: Default::default(),
        kafka: Default::default(),
    };
    // Checkpoints every 7 records (many, falling inside batches), every 1,000, and none
    // before the end: the same digest whatever the checkpoint size.
    for records in [7, 1_000, 1_000_000] {
        let checkpoint = biglearn_projector::overlay::CheckpointPolicy {
            records,
            interval: Duration::from_secs(3600),
        };
        biglearn::rebuild::rebuild_offline_with(config.clone(), checkpoint)
            .await
            .unwrap();
        assert_eq!(
            hash(),
            live,
            "an offline rebuild with checkpoints every {records} records reproduces the live state and results"
        );
    }

    // The rebuilt node serves what the live one served.
    let node = Node::start(dir.path(), TestBackend::Embedded).await;
    assert_eq!(ready_pes(&node, &before_change).await, 2);
    assert_eq!(ready_pes(&node, &after_change).await, 2);
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feature_flag_turns_online_rebuilds_off_in_one_environment() {
    let dir = tempfile::tempdir().unwrap();
    let flags = biglearn::run::FeatureFlags::parse("online_rebuild=off").unwrap();
    let node = Node::start_with_flags(dir.path(), TestBackend::Embedded, flags).await;
    let (code, answer) = node.admin("/admin/rebuild", &json!({})).await;
    assert_eq!(code, 403, "{answer}");
    assert!(
        answer.to_string().contains("online_rebuild"),
        "the refusal names the flag: {answer}"
    );
    // Nothing started, and the status still answers.
    let status = status(&node).await;
    assert_eq!(
        (status["status"].as_str(), &status["generation"]),
        (Some("idle"), &json!(1))
    );
    // Flags are listed beside the toggles.
    let (code, listed) = node.admin("/admin/settings/list", &json!({})).await;
    assert_eq!(code, 200, "{listed}");
    let flags = listed["feature_flags"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let online = flags
        .iter()
        .find(|flag| flag["name"] == "online_rebuild")
        .expect("listed");
    assert_eq!(online["enabled"], false);
    let inbox = flags
        .iter()
        .find(|flag| flag["name"] == "kafka_inbox")
        .expect("listed");
    assert_eq!(inbox["enabled"], true);
    node.stop().await.unwrap();
}

/// Issue 15: a clean stop right after a workload, with computations still pending and both
/// cores busy with other work, leaves the digest that an offline rebuild of the same log
/// gives: the consumers drain what the topics hold at the stop, the results consumer last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_with_work_pending_on_busy_cores_leaves_the_digest_of_a_rebuild() {
    const WEEK_MICROS: i64 = 7 * 24 * 3600 * 1_000_000;
    const NOW_MICROS: i64 = 1_760_000_000_000_000;
    let dir = tempfile::tempdir().unwrap();
    // Two spinning threads: the machine is loaded while the node works and stops. Bounded
    // by the flag and by a deadline of their own.
    let busy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let spinners: Vec<_> = (0..2)
        .map(|_| {
            let busy = busy.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut x = 0u64;
                while busy.load(std::sync::atomic::Ordering::Relaxed)
                    && started.elapsed() < Duration::from_secs(600)
                {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            })
        })
        .collect();

    let node = Node::start(dir.path(), TestBackend::Embedded).await;
    let mut workload =
        biglearn_simulator::WorkloadConfig::new(3, 6, 2, 7, NOW_MICROS - WEEK_MICROS);
    workload.cutoff_micros = Some(NOW_MICROS);
    let summary = biglearn_simulator::run_simulation(biglearn_simulator::SimulateConfig {
        workload,
        target: node.base(),
        token: biglearn_suite::API_TOKEN.into(),
        concurrency: 8,
        rate: None,
        faults: Vec::new(),
        truth_out: None,
        request_timeout: Duration::from_secs(60),
        slow_delay: Duration::from_millis(50),
    })
    .await
    .unwrap();
    assert!(summary.is_success(), "{}", summary.to_table());
    // Stopped at once: the scheduler is still working off what the workload dirtied.
    node.stop().await.unwrap();

    let state_dir = dir.path().join("state");
    let hash = || {
        let db = sled::Config::new().path(&state_dir).open().unwrap();
        let parts = biglearn_projector::service::state_hash_parts(&db).unwrap();
        drop(db);
        parts
    };
    let live = hash();
    let config = biglearn::run::RunConfig {
        data_dir: dir.path().to_owned(),
        listen: "127.0.0.1:0".parse().unwrap(),
        backend: biglearn::run::Backend::Embedded,
        topic_prefix: "test".into(),
        roles: vec![],
        api_token: "unused-api-token-0123456789".into(),
        admin_token: "unused-admin-token-0123456789".into(),
        observer_token: None,
        writer_id: "rebuild".into(),
        flags: Default::default(),
        http: Default::default(),
        kafka: Default::default(),
    };
    biglearn::rebuild::rebuild_offline(config).await.unwrap();
    busy.store(false, std::sync::atomic::Ordering::Relaxed);
    for spinner in spinners {
        spinner.join().unwrap();
    }
    assert_eq!(
        hash(),
        live,
        "the digest of a node stopped with work pending equals a rebuild's"
    );
}
