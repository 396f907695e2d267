//! Support for the end-to-end tests: a whole Biglearn node started in-process on
//! 127.0.0.1:0, and a small HTTP client speaking Tutor's and the operator's protocol.
//!
//! Invariants:
//! - Nodes listen on 127.0.0.1 only and stop when asked (or when the test ends).
//! - A node on Kafka gets its own topic prefix, so tests sharing a broker never meet.
//!
//! - Request builders produce bodies that pass validation unless a test mutates them.
//!
//! Does not: assert anything; tests do.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use biglearn::run::{Backend, Role, RunConfig};
use serde_json::{json, Value};
use tokio::sync::oneshot;

/// The token every test node accepts from Tutor.
pub const API_TOKEN: &str = "test-api-token";
/// The token every test node accepts on admin endpoints.
pub const ADMIN_TOKEN: &str = "test-admin-token";
/// The token every test node accepts on its read-only admin endpoints (docs/design/api.md D14).
pub const OBSERVER_TOKEN: &str = "test-observer-token";

/// One running Biglearn process (all roles), in this test process.
pub struct Node {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    join: tokio::task::JoinHandle<anyhow::Result<()>>,
    client: reqwest::Client,
}

/// How a node stores its log.
#[derive(Clone, Debug)]
pub enum TestBackend {
    Embedded,
    Kafka { bootstrap: String, prefix: String },
}

impl Node {
    /// Starts a node with every role on `data_dir`.
    pub async fn start(data_dir: &Path, backend: TestBackend) -> Node {
        Node::start_with_flags(data_dir, backend, Default::default()).await
    }

    /// Starts a node with every role and these feature flags.
    pub async fn start_with_flags(
        data_dir: &Path,
        backend: TestBackend,
        flags: biglearn::run::FeatureFlags,
    ) -> Node {
        Node::start_with_roles(
            data_dir,
            backend,
            flags,
            vec![Role::Writer, Role::Reader, Role::Scheduler],
        )
        .await
    }

    /// Starts a node with these roles and feature flags (e.g. with `Role::Sparfa`, as
    /// `biglearn up` runs, to fit models; or a reader alone beside another node on Kafka).
    pub async fn start_with_roles(
        data_dir: &Path,
        backend: TestBackend,
        flags: biglearn::run::FeatureFlags,
        roles: Vec<Role>,
    ) -> Node {
        let node = Node::start_listening(data_dir, backend, flags, roles).await;
        node.wait_ready(Duration::from_secs(60)).await;
        node
    }

    /// Starts a node and returns as soon as it listens, before it is ready (its consumers
    /// and the writer's index may still be catching up with the log).
    pub async fn start_listening(
        data_dir: &Path,
        backend: TestBackend,
        flags: biglearn::run::FeatureFlags,
        roles: Vec<Role>,
    ) -> Node {
        let (topic_prefix, backend, kafka) = match backend {
            TestBackend::Embedded => ("test".to_owned(), Backend::Embedded, Default::default()),
            TestBackend::Kafka { bootstrap, prefix } => (
                prefix,
                Backend::Kafka {
                    bootstrap_servers: bootstrap,
                    single_broker: true,
                },
                // A short group session: the scheduler computes once `<prefix>.scheduler` has
                // assigned it partitions, which tansu does after ~3 s with it instead of ~23 s
                // (docs/design/operations.md §8.2).
                biglearn::kafka_options::KafkaOptions {
                    properties: vec![("session.timeout.ms".into(), "6000".into())],
                    ..Default::default()
                },
            ),
        };
        let config = RunConfig {
            data_dir: data_dir.to_owned(),
            listen: "127.0.0.1:0".parse().expect("a valid address"),
            backend,
            topic_prefix,
            roles,
            api_token: API_TOKEN.into(),
            admin_token: ADMIN_TOKEN.into(),
            observer_token: Some(OBSERVER_TOKEN.into()),
            writer_id: "test-writer".into(),
            flags,
            http: Default::default(),
            kafka,
        };
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (addr_tx, addr_rx) = oneshot::channel::<SocketAddr>();
        let join = tokio::spawn(biglearn::run::run_with(
            config,
            async move {
                let _ = stop_rx.await;
            },
            move |addr| {
                let _ = addr_tx.send(addr);
            },
        ));
        let addr = match tokio::time::timeout(Duration::from_secs(60), addr_rx).await {
            Ok(Ok(addr)) => addr,
            _ => {
                let outcome = join.await;
                panic!("the node did not start listening: {outcome:?}");
            }
        };
        Node {
            addr,
            data_dir: data_dir.to_owned(),
            stop: Some(stop_tx),
            join,
            client: reqwest::Client::new(),
        }
    }

    /// The base URL, e.g. `http://127.0.0.1:41234`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits (bounded) until `/readyz` answers 200.
    pub async fn wait_ready(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let ready = self
                .client
                .get(format!("{}/readyz", self.base()))
                .send()
                .await
                .map(|response| response.status().as_u16() == 200)
                .unwrap_or(false);
            if ready {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the node did not become ready within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// POSTs a Tutor request with the API token; returns status and JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_with(path, body, &[("Biglearn-Api-Token", API_TOKEN)])
            .await
    }

    /// POSTs an admin request with the admin token and an actor.
    pub async fn admin(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_with(
            path,
            body,
            &[
                ("Biglearn-Admin-Token", ADMIN_TOKEN),
                ("Biglearn-Actor", "e2e-test"),
            ],
        )
        .await
    }

    /// POSTs JSON with the given headers.
    pub async fn post_with(
        &self,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut request = self
            .client
            .post(format!("{}{path}", self.base()))
            .header("Content-Type", "application/json")
            .body(body.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("the node answers");
        let status = response.status().as_u16();
        let text = response.text().await.expect("a body");
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, json)
    }

    /// The text of `/metrics`.
    pub async fn metrics_text(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.base()))
            .send()
            .await
            .expect("/metrics answers")
            .text()
            .await
            .expect("a scrape")
    }

    /// A raw request, for tests of the HTTP edge itself.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends any method, headers and raw body; returns status, headers and body (JSON if
    /// it parses, else the text as a JSON string).
    pub async fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Reply {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base()))
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("the node answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("a body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply {
            status,
            headers,
            body,
        }
    }

    /// One `/fetch_course_events` sub-request for `course` from `offset`, alone.
    pub async fn course_events(
        &self,
        course: &str,
        offset: i64,
        event_types: &[&str],
        max_num_events: u32,
    ) -> Value {
        let (status, body) = self
            .post(
                "/fetch_course_events",
                &json!({
                    "course_event_requests": [event_request("course", course, offset, event_types)],
                    "max_num_events": max_num_events,
                }),
            )
            .await;
        assert_eq!(status, 200, "fetch_course_events: {body}");
        body["course_event_responses"][0].clone()
    }

    /// Stops the node gracefully and returns how it ended.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match tokio::time::timeout(Duration::from_secs(60), &mut self.join).await {
            Ok(Ok(result)) => result,
            Ok(Err(error)) => Err(anyhow::anyhow!("the node task failed: {error}")),
            Err(_) => Err(anyhow::anyhow!("the node did not stop within 60 s")),
        }
    }
}

/// The recorded Tutor exchanges of `testdata/biglearn-api`, in replay order.
pub fn recorded_examples() -> Vec<(String, Value)> {
    let dir = examples_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| {
            panic!(
                "cannot read the recorded examples in {}: {error}",
                dir.display()
            )
        })
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("a readable example");
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, serde_json::from_str(&text).expect("a JSON example"))
        })
        .collect()
}

/// `testdata/biglearn-api` of the repository (testdata/README.md says where it comes from).
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/biglearn-api")
}

/// A raw HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    /// A header as text, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

/// A fresh random uuid, lower case.
pub fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Every course event type of docs/design/api.md §1.6.
pub const ALL_COURSE_EVENT_TYPES: [&str; 10] = biglearn_domain::events::CourseEventType::NAMES;

/// A `/create_course` body.
pub fn create_course(course: &str, ecosystem: &str) -> Value {
    json!({
        "course_uuid": course,
        "ecosystem_uuid": ecosystem,
        "is_real_course": true,
        "starts_at": "2017-03-27T23:26:43.502491Z",
        "ends_at": "2017-09-27T23:26:43.502707Z",
        "created_at": "2017-06-27T23:26:45.704487Z",
    })
}

/// A minimal valid `/create_ecosystem` body: one book container, one exercise.
pub fn create_ecosystem(ecosystem: &str) -> Value {
    let exercise = new_uuid();
    json!({
        "ecosystem_uuid": ecosystem,
        "book": {
            "contents": [{
                "container_uuid": new_uuid(),
                "container_parent_uuid": ecosystem,
                "pools": [{
                    "use_for_clue": true,
                    "use_for_personalized_for_assignment_types": ["reading"],
                    "exercise_uuids": [exercise],
                }],
            }],
        },
        "exercises": [{
            "exercise_uuid": exercise,
            "group_uuid": new_uuid(),
            "version": 1,
            "los": ["lo1"],
        }],
        "imported_at": "2017-06-27T23:26:40.000000Z",
    })
}

/// A `/create_ecosystem` body of one chapter whose one pool holds `exercises` (each with
/// its own group, learning objective `lo1`), personalized for `assignment_types`.
pub fn one_chapter_ecosystem(
    ecosystem: &str,
    chapter: &str,
    exercises: &[String],
    assignment_types: &[&str],
) -> Value {
    json!({
        "ecosystem_uuid": ecosystem,
        "book": {"contents": [{
            "container_uuid": chapter,
            "container_parent_uuid": ecosystem,
            "pools": [{
                "use_for_clue": true,
                "use_for_personalized_for_assignment_types": assignment_types,
                "exercise_uuids": exercises,
            }],
        }]},
        "exercises": exercises.iter().map(|exercise| json!({
            "exercise_uuid": exercise,
            "group_uuid": new_uuid(),
            "version": 1,
            "los": ["lo1"],
        })).collect::<Vec<_>>(),
        "imported_at": "2017-06-27T23:26:40.000000Z",
    })
}

/// An `/update_rosters` body for `course` at `sequence_number`: one period holding one
/// student.
pub fn roster_of_one(course: &str, sequence_number: i64, period: &str, student: &str) -> Value {
    json!({"rosters": [{
        "request_uuid": new_uuid(),
        "course_uuid": course,
        "sequence_number": sequence_number,
        "course_containers": [{
            "container_uuid": period,
            "parent_container_uuid": course,
            "created_at": "2017-06-27T23:26:45.927417Z",
        }],
        "students": [{
            "student_uuid": student,
            "container_uuid": period,
            "enrolled_at": "2017-06-27T23:26:46.047659Z",
            "last_course_container_change_at": "2017-06-27T23:26:46.077294Z",
        }],
    }]})
}

/// One `record_responses` item for `course` at `sequence_number`.
pub fn response_item(course: &str, sequence_number: i64, response_uuid: &str) -> Value {
    json!({
        "response_uuid": response_uuid,
        "course_uuid": course,
        "sequence_number": sequence_number,
        "ecosystem_uuid": "0bb8d3d9-060f-4645-bcda-f2558236bf81",
        "trial_uuid": new_uuid(),
        "student_uuid": "238fce26-a6e0-4aed-9421-9e8b7ec43c86",
        "exercise_uuid": "b4f2c32e-450b-4c36-b18e-d4c0f5cf2d29",
        "is_correct": false,
        "is_real_response": true,
        "responded_at": "2017-06-27T23:26:48.986100Z",
    })
}

/// A `/record_responses` body of these items.
pub fn record_responses(items: Vec<Value>) -> Value {
    json!({ "responses": items })
}

/// A `/update_course_active_dates` body (an event of a type other than record_response).
pub fn update_course_active_dates(course: &str, sequence_number: i64) -> Value {
    json!({
        "request_uuid": new_uuid(),
        "course_uuid": course,
        "sequence_number": sequence_number,
        "starts_at": "2017-03-27T23:26:43.502491Z",
        "ends_at": "2017-10-27T23:26:43.502707Z",
        "updated_at": "2017-06-28T23:26:45.704487Z",
    })
}

/// A `/prepare_course_ecosystem` body with an empty mapping.
pub fn prepare_course_ecosystem(
    preparation: &str,
    course: &str,
    sequence_number: i64,
    next_ecosystem: &str,
) -> Value {
    json!({
        "preparation_uuid": preparation,
        "course_uuid": course,
        "sequence_number": sequence_number,
        "next_ecosystem_uuid": next_ecosystem,
        "ecosystem_map": {
            "from_ecosystem_uuid": "0bb8d3d9-060f-4645-bcda-f2558236bf81",
            "to_ecosystem_uuid": next_ecosystem,
            "book_container_mappings": [],
            "exercise_mappings": [],
        },
        "prepared_at": "2017-06-27T23:26:50.000000Z",
    })
}

/// One `update_course_ecosystems` item.
pub fn update_course_ecosystem_item(
    request: &str,
    course: &str,
    sequence_number: i64,
    preparation: &str,
) -> Value {
    json!({
        "request_uuid": request,
        "course_uuid": course,
        "sequence_number": sequence_number,
        "preparation_uuid": preparation,
        "updated_at": "2017-06-27T23:26:55.000000Z",
    })
}

/// One sub-request of `/fetch_course_events` (`stream` = "course") or
/// `/fetch_ecosystem_events` (`stream` = "ecosystem").
pub fn event_request(stream: &str, aggregate: &str, offset: i64, event_types: &[&str]) -> Value {
    json!({
        "request_uuid": new_uuid(),
        "event_types": event_types,
        format!("{stream}_uuid"): aggregate,
        "sequence_number_offset": offset,
    })
}

/// The `sequence_number`s of a fetch answer's events, in order.
pub fn sequence_numbers(answer: &Value) -> Vec<i64> {
    answer["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .map(|event| {
                    event["sequence_number"]
                        .as_i64()
                        .expect("a sequence_number")
                })
                .collect()
        })
        .unwrap_or_default()
}
