//! The scheduler scales out (issue 17, docs/design/scheduler.md §1), with real processes on a
//! real Kafka-protocol broker (tansu): a `serve --role writer` node takes Tutor's writes, a
//! `serve --role reader` (no state projection) serves the results, and two `serve --role
//! scheduler` processes share 40 courses through the consumer group `<prefix>.scheduler`.
//!
//! Checked: both own partitions and each course's results are computed by one of them (no
//! result is published twice at the same version); the CLUEs served equal, by content, those
//! of a single all-roles process given the same writes; after one scheduler is killed with
//! SIGKILL, the other takes over its courses once the group notices (its
//! `session.timeout.ms`), and a new response in every course reaches its served CLUE.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use biglearn_events::decode_result_record;
use biglearn_stream::kafka::{KafkaConfig, KafkaStore};
use biglearn_stream::StreamStore;
use biglearn_testkit::{listening_address, unique_topic_prefix, TestBroker};
use serde_json::{json, Value};
use uuid::Uuid;

const API_TOKEN: &str = "scale-out-api-token-0123456789";
const ADMIN_TOKEN: &str = "scale-out-admin-token-0123456789";
const COURSES: usize = 40;
/// The schedulers' group session: how long the group takes to notice a killed member.
const SESSION_TIMEOUT: Duration = Duration::from_secs(6);

struct Process {
    child: Child,
    base: String,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(roles: &str, data_dir: &Path, bootstrap: &str, prefix: &str) -> Process {
    let mut child = Command::new(env!("CARGO_BIN_EXE_biglearn"))
        .args(["serve", "--role", roles, "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data_dir)
        .args([
            "--kafka",
            bootstrap,
            "--single-broker",
            "--topic-prefix",
            prefix,
        ])
        .args([
            "--kafka-property",
            &format!("session.timeout.ms={}", SESSION_TIMEOUT.as_millis()),
            "--kafka-property",
            "heartbeat.interval.ms=1000",
        ])
        .env("BIGLEARN_API_TOKEN", API_TOKEN)
        .env("BIGLEARN_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("biglearn starts");
    let base = listening_address(&mut child);
    Process { child, base }
}

async fn wait_ready(client: &reqwest::Client, process: &Process) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(answer) = client.get(format!("{}/readyz", process.base)).send().await {
            if answer.status().as_u16() == 200 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "/readyz did not turn 200");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn post(client: &reqwest::Client, process: &Process, path: &str, body: &Value) -> Value {
    let answer = client
        .post(format!("{}{path}", process.base))
        .header("Biglearn-Api-Token", API_TOKEN)
        .json(body)
        .send()
        .await
        .expect("the request is answered");
    let status = answer.status().as_u16();
    let body: Value = answer.json().await.expect("a JSON answer");
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// How many course-event partitions a scheduler process owns (its metrics).
async fn partitions_owned(client: &reqwest::Client, process: &Process) -> Option<u32> {
    let text = client
        .get(format!("{}/metrics", process.base))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|line| line.starts_with("biglearn_scheduler_partitions_owned "))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

/// One course of the test: a student with a reading of three exercises.
struct Course {
    course: String,
    student: String,
    trials: Vec<String>,
}

/// The writes of the whole test, with fixed uuids: the same bodies go to both deployments.
struct Plan {
    ecosystem: String,
    chapter: String,
    exercises: Vec<String>,
    courses: Vec<Course>,
}

fn uuid(n: u128) -> String {
    Uuid::from_u128(n).to_string()
}

impl Plan {
    fn new() -> Plan {
        Plan {
            ecosystem: uuid(0xE0),
            chapter: uuid(0xC4),
            exercises: (0..6).map(|n| uuid(0xEE00 + n)).collect(),
            courses: (0..COURSES as u128)
                .map(|n| Course {
                    course: uuid(0xC0_0000 + n),
                    student: uuid(0x57_0000 + n),
                    trials: (0..4).map(|t| uuid(0x7_0000 + n * 16 + t)).collect(),
                })
                .collect(),
        }
    }

    /// The ecosystem, then each course's creation, roster and assignment.
    async fn set_up(&self, client: &reqwest::Client, writer: &Process) {
        post(
            client,
            writer,
            "/create_ecosystem",
            &json!({
                "ecosystem_uuid": self.ecosystem,
                "book": {"contents": [{
                    "container_uuid": self.chapter,
                    "container_parent_uuid": self.ecosystem,
                    "pools": [{
                        "use_for_clue": true,
                        "use_for_personalized_for_assignment_types": ["reading"],
                        "exercise_uuids": self.exercises,
                    }],
                }]},
                "exercises": self.exercises.iter().enumerate().map(|(n, exercise)| json!({
                    "exercise_uuid": exercise,
                    "group_uuid": uuid(0x6000 + n as u128),
                    "version": 1,
                    "los": ["lo1"],
                })).collect::<Vec<_>>(),
                "imported_at": "2017-06-27T23:26:40.000000Z",
            }),
        )
        .await;
        for (n, course) in self.courses.iter().enumerate() {
            post(
                client,
                writer,
                "/create_course",
                &json!({
                    "course_uuid": course.course,
                    "ecosystem_uuid": self.ecosystem,
                    "is_real_course": true,
                    "starts_at": "2017-03-27T23:26:43.502491Z",
                    "ends_at": "2017-09-27T23:26:43.502707Z",
                    "created_at": "2017-06-27T23:26:45.704487Z",
                }),
            )
            .await;
            let period = uuid(0xCC_0000 + n as u128);
            post(
                client,
                writer,
                "/update_rosters",
                &json!({"rosters": [{
                    "request_uuid": uuid(0x1_0000 + n as u128),
                    "course_uuid": course.course,
                    "sequence_number": 1,
                    "course_containers": [{
                        "container_uuid": period,
                        "parent_container_uuid": course.course,
                        "created_at": "2017-06-27T23:26:45.927417Z",
                    }],
                    "students": [{
                        "student_uuid": course.student,
                        "container_uuid": period,
                        "enrolled_at": "2017-06-27T23:26:46.047659Z",
                        "last_course_container_change_at": "2017-06-27T23:26:46.077294Z",
                    }],
                }]}),
            )
            .await;
            post(
                client,
                writer,
                "/create_update_assignments",
                &json!({"assignments": [{
                    "request_uuid": uuid(0x2_0000 + n as u128),
                    "course_uuid": course.course,
                    "sequence_number": 2,
                    "assignment_uuid": uuid(0xA_0000 + n as u128),
                    "is_deleted": false,
                    "ecosystem_uuid": self.ecosystem,
                    "student_uuid": course.student,
                    "assignment_type": "reading",
                    "exclusion_info": {
                        "opens_at": "2017-06-27T23:26:47.514672Z",
                        "due_at": "2017-07-04T23:26:47.514672Z",
                    },
                    "assigned_book_container_uuids": [self.chapter],
                    "goal_num_tutor_assigned_spes": 0,
                    "spes_are_assigned": false,
                    "goal_num_tutor_assigned_pes": 1,
                    "pes_are_assigned": false,
                    "assigned_exercises": course.trials.iter().zip(&self.exercises).map(|(trial, exercise)| json!({
                        "trial_uuid": trial,
                        "exercise_uuid": exercise,
                        "is_spe": false,
                        "is_pe": false,
                    })).collect::<Vec<_>>(),
                    "created_at": "2017-06-27T23:26:49.142898Z",
                    "updated_at": "2017-06-27T23:26:49.142925Z",
                }]}),
            )
            .await;
        }
    }

    /// Response `index` (0-based) of every course, in one request: correctness differs
    /// from course to course, so that their CLUEs differ.
    async fn respond(&self, client: &reqwest::Client, writer: &Process, index: usize) {
        let items: Vec<Value> = self
            .courses
            .iter()
            .enumerate()
            .map(|(n, course)| {
                json!({
                    "response_uuid": uuid(0x8_0000 + (n * 16 + index) as u128),
                    "course_uuid": course.course,
                    "sequence_number": 3 + index,
                    "ecosystem_uuid": self.ecosystem,
                    "trial_uuid": course.trials[index],
                    "student_uuid": course.student,
                    "exercise_uuid": self.exercises[index],
                    "is_correct": is_correct(n, index),
                    "is_real_response": true,
                    "responded_at": "2017-06-28T23:26:48.986100Z",
                })
            })
            .collect();
        post(
            client,
            writer,
            "/record_responses",
            &json!({ "responses": items }),
        )
        .await;
    }

    /// Waits until every student's CLUE is real and `done` holds for it; returns the CLUEs'
    /// content (without the calculation's identity), by course.
    async fn clues_when(
        &self,
        client: &reqwest::Client,
        reader: &Process,
        limit: Duration,
        done: impl Fn(&str, &Value) -> bool,
    ) -> BTreeMap<String, Value> {
        let deadline = Instant::now() + limit;
        loop {
            let answer = post(
                client,
                reader,
                "/fetch_student_clues",
                &json!({"student_clue_requests": self.courses.iter().map(|course| json!({
                    "request_uuid": uuid(0x9_0000),
                    "student_uuid": course.student,
                    "book_container_uuid": self.chapter,
                    "algorithm_name": "local_query",
                })).collect::<Vec<_>>()}),
            )
            .await;
            let clues = answer["student_clue_responses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let ready = clues.len() == COURSES
                && self.courses.iter().zip(&clues).all(|(course, clue)| {
                    clue["clue_status"] == "clue_ready"
                        && clue["clue_data"]["is_real"] == true
                        && done(&course.course, &clue["clue_data"])
                });
            if ready {
                return self
                    .courses
                    .iter()
                    .zip(clues)
                    .map(|(course, clue)| (course.course.clone(), clue["clue_data"].clone()))
                    .collect();
            }
            assert!(
                Instant::now() < deadline,
                "not every CLUE was served within {limit:?}: {answer}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Whether response `index` of course `n` is correct: the first three spell `n`'s low
/// bits; the fourth moves the share of correct answers whatever they were (correct unless
/// all three were), so that every course's CLUE changes with it.
fn is_correct(n: usize, index: usize) -> bool {
    if index < 3 {
        (n >> index) & 1 == 1
    } else {
        n & 0b111 != 0b111
    }
}

/// Every result record on `<prefix>.results`: (key, input_seq, model_seq) of each.
async fn published(bootstrap: &str, prefix: &str) -> Vec<(String, i64, i64)> {
    let store = KafkaStore::connect(KafkaConfig::new(bootstrap, "scale-out-test").single_broker())
        .await
        .expect("the broker answers");
    let topic = format!("{prefix}.results");
    let high = store
        .high_watermarks(&topic)
        .await
        .expect("high watermarks");
    let mut records = Vec::new();
    for (partition, high) in high.iter().enumerate() {
        if *high == 0 {
            continue;
        }
        let mut reader = store
            .open_reader(&topic, &[(partition as i32, 0)])
            .await
            .expect("a reader");
        let mut read = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while read < *high {
            assert!(Instant::now() < deadline, "cannot read {topic}");
            for record in reader
                .poll(10_000, Duration::from_millis(200))
                .await
                .expect("a poll")
            {
                read = read.max(record.offset + 1);
                let result = decode_result_record(record.value.as_deref().unwrap_or_default())
                    .expect("a result record");
                records.push((result.key(), result.input_seq, result.model_seq));
            }
        }
    }
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_share_the_courses_and_one_takes_over_when_the_other_is_killed() {
    let broker = tokio::task::spawn_blocking(TestBroker::start)
        .await
        .expect("the broker starts");
    let bootstrap = broker.bootstrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let plan = Plan::new();

    // The reference: one process with every role but SPARFA, given the same writes.
    let single_prefix = unique_topic_prefix("scale-single");
    let single = serve(
        "writer,reader,scheduler",
        &dir.path().join("single"),
        &bootstrap,
        &single_prefix,
    );
    wait_ready(&client, &single).await;

    let prefix = unique_topic_prefix("scale-out");
    let writer = serve("writer", &dir.path().join("writer"), &bootstrap, &prefix);
    let reader = serve("reader", &dir.path().join("reader"), &bootstrap, &prefix);
    wait_ready(&client, &writer).await;
    wait_ready(&client, &reader).await;
    let first = serve("scheduler", &dir.path().join("first"), &bootstrap, &prefix);
    let second = serve("scheduler", &dir.path().join("second"), &bootstrap, &prefix);
    wait_ready(&client, &first).await;
    wait_ready(&client, &second).await;
    // Both own course partitions before any course exists.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let owned = (
            partitions_owned(&client, &first).await.unwrap_or(0),
            partitions_owned(&client, &second).await.unwrap_or(0),
        );
        if owned.0 > 0 && owned.1 > 0 {
            eprintln!("partitions owned by the two schedulers: {owned:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the group never gave both schedulers partitions: {owned:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    for deployment in [&single, &writer] {
        plan.set_up(&client, deployment).await;
        for index in 0..3 {
            plan.respond(&client, deployment, index).await;
        }
    }
    let limit = Duration::from_secs(60);
    let expected = plan.clues_when(&client, &single, limit, |_, _| true).await;
    let shared = plan.clues_when(&client, &reader, limit, |_, _| true).await;
    assert_eq!(shared, expected, "two schedulers serve what one serves");
    let distinct: BTreeSet<String> = expected.values().map(Value::to_string).collect();
    assert!(
        distinct.len() > 1,
        "the courses' CLUEs differ: {distinct:?}"
    );

    // Each course was computed by one scheduler: no result was published twice at the same
    // version, as two schedulers computing the same course would.
    let records = published(&bootstrap, &prefix).await;
    let mut versions: BTreeMap<&(String, i64, i64), usize> = BTreeMap::new();
    for record in &records {
        *versions.entry(record).or_default() += 1;
    }
    let twice: Vec<_> = versions.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "published more than once: {twice:?}");
    assert!(
        records
            .iter()
            .any(|(key, _, _)| key.starts_with("student_clue")),
        "CLUEs were published"
    );

    // One scheduler dies without leaving the group; the other takes its courses over once
    // the group notices, and a new response in every course reaches its CLUE.
    let mut first = first;
    first.child.kill().expect("SIGKILL is delivered");
    first.child.wait().expect("the killed process is reaped");
    let killed_at = Instant::now();
    for deployment in [&single, &writer] {
        plan.respond(&client, deployment, 3).await;
    }
    let changed = |before: &BTreeMap<String, Value>| {
        let before = before.clone();
        move |course: &str, clue: &Value| before.get(course) != Some(clue)
    };
    let expected = plan
        .clues_when(&client, &single, limit, changed(&expected))
        .await;
    let shared = plan
        .clues_when(&client, &reader, SESSION_TIMEOUT + limit, changed(&shared))
        .await;
    eprintln!(
        "every course's CLUE served {:?} after one scheduler was killed",
        killed_at.elapsed()
    );
    assert_eq!(
        shared, expected,
        "the survivor serves what one process serves"
    );
    assert!(
        partitions_owned(&client, &second).await.unwrap_or(0)
            >= partitions_owned(&client, &single).await.unwrap_or(0),
        "the survivor owns every partition"
    );

    drop((single, writer, reader, first, second));
    tokio::task::spawn_blocking(move || drop(broker))
        .await
        .unwrap();
}
