//! Staging on production's topics (issue 9): a staging process reads a production
//! process's system-of-record topics on the same broker, read-only; bootstrapped from
//! empty it reaches production's state hash (every part) and serves the same results by
//! key; stopped while production moves on, it catches up to the same state; it refuses
//! writes, and never appends to any production topic. With pseudonymisation every
//! student id it serves is `pseudo(u)` of production's.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use biglearn::run::{Backend, Role, RunConfig};
use biglearn::staging::{StagingBackend, VerifyOptions};
use biglearn_simulator::{SimulateConfig, WorkloadConfig};
use biglearn_staging::{KafkaSource, Pseudonymizer, SourceConfig, Verdict};
use biglearn_stream::{StreamStore, Topics};
use biglearn_suite::{Node, TestBackend, ADMIN_TOKEN, API_TOKEN};
use biglearn_testkit::{unique_topic_prefix, TestBroker};
use serde_json::{json, Value};
use tokio::sync::oneshot;

const WEEK_MICROS: i64 = 7 * 24 * 3600 * 1_000_000;
const NOW_MICROS: i64 = 1_760_000_000_000_000;

fn simulation(target: String, seed: u64) -> SimulateConfig {
    let mut workload = WorkloadConfig::new(3, 6, 2, seed, NOW_MICROS - WEEK_MICROS);
    workload.cutoff_micros = Some(NOW_MICROS);
    SimulateConfig {
        workload,
        target,
        token: API_TOKEN.into(),
        concurrency: 8,
        rate: None,
        faults: Vec::new(),
        truth_out: None,
        request_timeout: Duration::from_secs(60),
        slow_delay: Duration::from_millis(50),
    }
}

/// A staging process in this test process.
struct StagingNode {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    join: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl StagingNode {
    async fn start(
        data_dir: &Path,
        bootstrap: &str,
        source_prefix: &str,
        prefix: &str,
        pseudonymizer: Option<Pseudonymizer>,
    ) -> StagingNode {
        let config = RunConfig {
            data_dir: data_dir.to_owned(),
            listen: "127.0.0.1:0".parse().expect("an address"),
            backend: Backend::Staging(Box::new(StagingBackend {
                source: SourceConfig::new(bootstrap, prefix),
                source_prefix: source_prefix.to_owned(),
                target: Backend::Kafka {
                    bootstrap_servers: bootstrap.to_owned(),
                    single_broker: true,
                },
                pseudonymizer,
            })),
            topic_prefix: prefix.to_owned(),
            roles: vec![Role::Reader, Role::Projector],
            api_token: API_TOKEN.into(),
            admin_token: ADMIN_TOKEN.into(),
            writer_id: format!("staging.{prefix}"),
            flags: Default::default(),
            kafka: Default::default(),
        };
        let (stop, stop_rx) = oneshot::channel::<()>();
        let (addr_tx, addr_rx) = oneshot::channel();
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
            _ => panic!("staging did not start listening: {:?}", join.await),
        };
        StagingNode { addr, stop, join }
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn wait_ready(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        let client = reqwest::Client::new();
        loop {
            let ready = client
                .get(format!("{}/readyz", self.base()))
                .send()
                .await
                .map(|response| response.status().is_success())
                .unwrap_or(false);
            if ready {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "staging did not catch up within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(format!("{}{path}", self.base()))
            .header("Biglearn-Api-Token", API_TOKEN)
            .json(body)
            .send()
            .await
            .expect("staging answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let outcome = tokio::time::timeout(Duration::from_secs(60), self.join)
            .await
            .expect("staging stops within 60 s")
            .expect("the staging task ends");
        outcome.expect("staging stops cleanly");
    }
}

/// High watermarks of every production topic (read through a read-only source client).
async fn production_watermarks(source: &KafkaSource, prefix: &str) -> Vec<(String, Vec<i64>)> {
    let mut marks = Vec::new();
    for spec in Topics::new(prefix).all_specs(1) {
        let high = source
            .high_watermarks(&spec.name)
            .await
            .expect("watermarks of a production topic");
        marks.push((spec.name, high));
    }
    marks
}

fn verify_options(production: &Node, staging: &StagingNode) -> VerifyOptions {
    VerifyOptions {
        production: production.base(),
        production_token: ADMIN_TOKEN.into(),
        staging: staging.base(),
        staging_token: ADMIN_TOKEN.into(),
        actor: "e2e-test".into(),
        timeout: Duration::from_secs(120),
        settle: Duration::from_secs(20),
        poll_interval: Duration::from_millis(200),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staging_follows_production_read_only_and_reaches_its_state_hash() {
    let broker = tokio::task::spawn_blocking(TestBroker::start)
        .await
        .expect("the broker starts");
    let bootstrap = broker.bootstrap().to_owned();
    let production_prefix = unique_topic_prefix("e2e-staging-prod");
    let staging_prefix = unique_topic_prefix("e2e-staging");
    let production_dir = tempfile::tempdir().unwrap();
    let production = Node::start(
        production_dir.path(),
        TestBackend::Kafka {
            bootstrap: bootstrap.clone(),
            prefix: production_prefix.clone(),
        },
    )
    .await;
    let first = biglearn_simulator::run_simulation(simulation(production.base(), 11))
        .await
        .unwrap();
    assert!(first.is_success(), "{}", first.to_table());

    let observer = KafkaSource::connect(SourceConfig::new(&bootstrap, "e2e-observer"))
        .await
        .unwrap();
    let before_staging = production_watermarks(&observer, &production_prefix).await;
    assert!(
        before_staging[0].1.iter().sum::<i64>() > 100,
        "{before_staging:?}"
    );

    // Bootstrap from empty: staging replays all of production's history.
    let staging_dir = tempfile::tempdir().unwrap();
    let staging = StagingNode::start(
        staging_dir.path(),
        &bootstrap,
        &production_prefix,
        &staging_prefix,
        None,
    )
    .await;
    staging.wait_ready(Duration::from_secs(120)).await;
    let report = biglearn::staging::verify(&verify_options(&production, &staging))
        .await
        .unwrap();
    // The state is a function of the applied sequence numbers alone: equal. Results are
    // also a function of when they were computed (a result's version and a `local_query`
    // shuffle follow the course's input sequence at computation time, spec scheduler.md
    // §7, §12): production computed while events arrived, staging once it had caught up,
    // so the results part may differ; `results diff` names the keys.
    assert!(
        report.production.same_input(&report.staging),
        "{}",
        report.text
    );
    assert_eq!(report.production.parts[0].0, "state");
    assert_eq!(
        report.production.parts.first(),
        report.staging.parts.first(),
        "{}",
        report.text
    );
    assert!(
        matches!(&report.verdict, Verdict::Equal)
            || matches!(&report.verdict, Verdict::Different { part, .. } if part == "results"),
        "{}",
        report.text
    );
    assert!(report.production.n_applied > 100, "{}", report.text);
    let applied_before_stop = report.staging.n_applied;
    let diff = biglearn::staging::diff_served_results(
        &production.base(),
        ADMIN_TOKEN,
        &staging.base(),
        ADMIN_TOKEN,
    )
    .await
    .unwrap();
    eprintln!(
        "results diff after bootstrap: {} equal, {} different, {} only in production, {} only in staging",
        diff.n_equal,
        diff.different.len(),
        diff.only_left.len(),
        diff.only_right.len()
    );
    assert!(diff.n_equal > 0, "{diff:?}");
    assert_eq!(
        (diff.n_left, diff.n_right),
        (
            diff.n_equal + diff.different.len() + diff.only_left.len(),
            diff.n_equal + diff.different.len() + diff.only_right.len()
        ),
        "{diff:?}"
    );
    assert!(
        matches!(&report.verdict, Verdict::Equal) == diff.is_equal(),
        "verify and results diff agree: {} / {diff:?}",
        report.text
    );

    // Staging refuses Tutor's writes: it has no writer.
    let (status, body) = staging
        .post(
            "/create_ecosystem",
            &biglearn_suite::create_ecosystem(&biglearn_suite::new_uuid()),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        production_watermarks(&observer, &production_prefix).await,
        before_staging,
        "staging's catch-up, verify and refused write appended nothing to production"
    );

    // Stopped while production moves on, staging catches up from its stored positions.
    staging.stop().await;
    let second = biglearn_simulator::run_simulation(simulation(production.base(), 12))
        .await
        .unwrap();
    assert!(second.is_success(), "{}", second.to_table());
    let before_restart = production_watermarks(&observer, &production_prefix).await;
    assert_ne!(before_restart, before_staging);
    let staging = StagingNode::start(
        staging_dir.path(),
        &bootstrap,
        &production_prefix,
        &staging_prefix,
        None,
    )
    .await;
    staging.wait_ready(Duration::from_secs(120)).await;
    // The state is a function of the applied sequence numbers alone. Results are not
    // compared here: on catch-up the scheduler recomputes whole courses at its (wall-clock
    // based) logical clock, so some are recomputed later than production computed them.
    let mut options = verify_options(&production, &staging);
    options.settle = Duration::from_secs(1);
    let report = biglearn::staging::verify(&options).await.unwrap();
    assert!(
        report.production.same_input(&report.staging),
        "{}",
        report.text
    );
    assert_eq!(
        report.production.parts.first(),
        report.staging.parts.first(),
        "{}",
        report.text
    );
    assert_eq!(report.production.parts[0].0, "state");
    assert!(
        report.staging.n_applied > applied_before_stop,
        "staging caught up with the second run: {}",
        report.text
    );
    assert_eq!(
        production_watermarks(&observer, &production_prefix).await,
        before_restart,
        "staging appended nothing to production after its restart"
    );
    // Staging's derived topics exist under its own prefix only.
    let staging_results = observer
        .high_watermarks(&format!("{staging_prefix}.results"))
        .await
        .unwrap();
    assert!(staging_results.iter().sum::<i64>() > 0);

    staging.stop().await;
    production.stop().await.unwrap();
    tokio::task::spawn_blocking(move || drop(broker))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pseudonymised_staging_never_serves_a_real_student_uuid() {
    let broker = tokio::task::spawn_blocking(TestBroker::start)
        .await
        .expect("the broker starts");
    let bootstrap = broker.bootstrap().to_owned();
    let production_prefix = unique_topic_prefix("e2e-pseudo-prod");
    let staging_prefix = unique_topic_prefix("e2e-pseudo");
    let production_dir = tempfile::tempdir().unwrap();
    let production = Node::start(
        production_dir.path(),
        TestBackend::Kafka {
            bootstrap: bootstrap.clone(),
            prefix: production_prefix.clone(),
        },
    )
    .await;
    let run = biglearn_simulator::run_simulation(simulation(production.base(), 21))
        .await
        .unwrap();
    assert!(run.is_success(), "{}", run.to_table());

    let pseudonymizer = Pseudonymizer::new(vec![42; 32]).unwrap();
    let staging_dir = tempfile::tempdir().unwrap();
    let staging = StagingNode::start(
        staging_dir.path(),
        &bootstrap,
        &production_prefix,
        &staging_prefix,
        Some(pseudonymizer.clone()),
    )
    .await;
    staging.wait_ready(Duration::from_secs(120)).await;

    // Every course's events: production's student ids map one-to-one onto staging's.
    let (status, metadatas) = production
        .post(
            "/fetch_course_metadatas",
            &json!({"metadata_sequence_number_offset": 0, "max_num_metadatas": 1000}),
        )
        .await;
    assert_eq!(status, 200, "{metadatas}");
    let courses: Vec<String> = metadatas["course_responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|course| course["uuid"].as_str().unwrap().to_owned())
        .collect();
    assert!(!courses.is_empty());
    let mut n_students = 0;
    for course in &courses {
        let request = json!({
            "course_event_requests": [biglearn_suite::event_request(
                "course", course, 0, &biglearn_suite::ALL_COURSE_EVENT_TYPES)],
            "max_num_events": 1000,
        });
        let (_, ours) = production.post("/fetch_course_events", &request).await;
        let (status, theirs) = staging.post("/fetch_course_events", &request).await;
        assert_eq!(status, 200, "{theirs}");
        let ours = &ours["course_event_responses"][0]["events"];
        let theirs = &theirs["course_event_responses"][0]["events"];
        assert_eq!(
            ours.as_array().unwrap().len(),
            theirs.as_array().unwrap().len()
        );
        let expected = replace_students(ours.clone(), &pseudonymizer, &mut n_students);
        assert_eq!(&expected, theirs, "course {course}");
    }
    assert!(n_students > 0, "the workload has students");

    staging.stop().await;
    production.stop().await.unwrap();
    tokio::task::spawn_blocking(move || drop(broker))
        .await
        .unwrap();
}

/// `value` with every `student_uuid` string replaced by its pseudonym.
fn replace_students(value: Value, pseudonymizer: &Pseudonymizer, n_replaced: &mut usize) -> Value {
    match value {
        Value::Object(object) => Value::Object(
            object
                .into_iter()
                .map(|(key, value)| {
                    let value = match (&*key, &value) {
                        ("student_uuid", Value::String(uuid)) => {
                            *n_replaced += 1;
                            let uuid = uuid::Uuid::parse_str(uuid).unwrap();
                            json!(pseudonymizer.pseudo(uuid).to_string())
                        }
                        _ => replace_students(value, pseudonymizer, n_replaced),
                    };
                    (key, value)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|item| replace_students(item, pseudonymizer, n_replaced))
                .collect(),
        ),
        other => other,
    }
}
