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
use biglearn_suite::{Node, TestBackend, ADMIN_TOKEN, API_TOKEN, OBSERVER_TOKEN};
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

/// The configuration of a staging process reading `source_prefix` on the test broker:
/// roles reader and projector, following production's models (no `--own-sparfa`).
fn staging_config(
    data_dir: &Path,
    bootstrap: &str,
    source_prefix: &str,
    prefix: &str,
    pseudonymizer: Option<Pseudonymizer>,
) -> RunConfig {
    RunConfig {
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
            own_sparfa: false,
        })),
        topic_prefix: prefix.to_owned(),
        roles: vec![Role::Reader, Role::Scheduler],
        api_token: API_TOKEN.into(),
        admin_token: ADMIN_TOKEN.into(),
        observer_token: Some(OBSERVER_TOKEN.into()),
        writer_id: format!("staging.{prefix}"),
        flags: Default::default(),
        http: Default::default(),
        kafka: Default::default(),
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
        StagingNode::start_with(staging_config(
            data_dir,
            bootstrap,
            source_prefix,
            prefix,
            pseudonymizer,
        ))
        .await
    }

    async fn start_with(config: RunConfig) -> StagingNode {
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
        production_token: OBSERVER_TOKEN.into(),
        staging: staging.base(),
        staging_token: OBSERVER_TOKEN.into(),
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
    // shuffle follow the course's input sequence at computation time, docs/design/scheduler.md
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
        OBSERVER_TOKEN,
        &staging.base(),
        OBSERVER_TOKEN,
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

/// Every result a deployment serves: key → (version, content), paged through
/// `/admin/results/list`.
async fn served_results(base: &str) -> std::collections::BTreeMap<String, (Value, Value)> {
    let client = reqwest::Client::new();
    let mut results = std::collections::BTreeMap::new();
    let mut after: Option<String> = None;
    // Bounded: every page moves `after` strictly forward.
    loop {
        let mut body = json!({"limit": 1000});
        if let Some(after) = &after {
            body["after_key"] = json!(after);
        }
        let page: Value = client
            .post(format!("{base}/admin/results/list"))
            .header("Biglearn-Admin-Token", ADMIN_TOKEN)
            .header("Biglearn-Actor", "e2e-test")
            .json(&body)
            .send()
            .await
            .expect("results list")
            .json()
            .await
            .expect("a JSON page");
        for row in page["results"].as_array().expect("results") {
            results.insert(
                row["key"].as_str().expect("a key").to_owned(),
                (row["version"].clone(), row["content"].clone()),
            );
        }
        match page["next_after_key"].as_str() {
            Some(next) if Some(next) != after.as_deref() => after = Some(next.to_owned()),
            _ => return results,
        }
    }
}

/// Waits (bounded) until the high watermarks of `topic` have not moved for `quiet`.
async fn wait_topic_settled(source: &KafkaSource, topic: &str, quiet: Duration) -> Vec<i64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    let mut last = source.high_watermarks(topic).await.expect("watermarks");
    let mut since = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = source.high_watermarks(topic).await.expect("watermarks");
        if now != last {
            last = now;
            since = tokio::time::Instant::now();
        } else if since.elapsed() >= quiet {
            return last;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{topic} never settled"
        );
    }
}

/// Runs a simulated workload against `production` (all roles), waits until its models
/// have settled, then recomputes every result with the final models (online rebuild) and
/// waits until its results have settled. Returns the models topic's high watermarks.
async fn drive_production_to_final_models(
    production: &Node,
    observer: &KafkaSource,
    production_prefix: &str,
    seed: u64,
) -> Vec<i64> {
    let run = biglearn_simulator::run_simulation(simulation(production.base(), seed))
        .await
        .unwrap();
    assert!(run.is_success(), "{}", run.to_table());
    let models_topic = format!("{production_prefix}.models");
    // The SPARFA consumer first joins its group, then fits: wait for a first model.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    while observer
        .high_watermarks(&models_topic)
        .await
        .unwrap()
        .iter()
        .sum::<i64>()
        == 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no model was fitted"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let models = wait_topic_settled(observer, &models_topic, Duration::from_secs(10)).await;
    assert!(models.iter().sum::<i64>() > 0, "production fitted models");

    // Production computed each result with the model latest at that moment, and later
    // models dirty nothing (docs/design/scheduler.md §4); an online rebuild recomputes every
    // target with the final models, as staging computes them after its catch-up.
    let (code, started) = production.admin("/admin/rebuild", &json!({})).await;
    assert_eq!(
        (code, started["status"].as_str()),
        (200, Some("started")),
        "{started}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (_, answer) = production.admin("/admin/rebuild_status", &json!({})).await;
        if answer["status"] == "finished" {
            break;
        }
        assert_ne!(answer["status"], "failed", "{answer}");
        assert!(tokio::time::Instant::now() < deadline, "{answer}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_topic_settled(
        observer,
        &format!("{production_prefix}.results"),
        Duration::from_secs(5),
    )
    .await;
    models
}

/// Issue 18 item 6 (docs/design/operations.md O7): staging follows production's `<prefix>.models`
/// read-only by default, so once both have caught up and computed from the same inputs,
/// staging's `biglearn_sparfa` results equal production's by content; staging fits and
/// publishes no model of its own and writes nothing to production.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staging_serves_production_biglearn_sparfa_results_from_production_models() {
    let broker = tokio::task::spawn_blocking(TestBroker::start)
        .await
        .expect("the broker starts");
    let bootstrap = broker.bootstrap().to_owned();
    let production_prefix = unique_topic_prefix("e2e-models-prod");
    let staging_prefix = unique_topic_prefix("e2e-models");
    let production_dir = tempfile::tempdir().unwrap();
    // Production as `biglearn up` runs it: the SPARFA role fits models.
    let production = Node::start_with_roles(
        production_dir.path(),
        TestBackend::Kafka {
            bootstrap: bootstrap.clone(),
            prefix: production_prefix.clone(),
        },
        Default::default(),
        vec![Role::Writer, Role::Reader, Role::Scheduler, Role::Sparfa],
    )
    .await;
    let observer = KafkaSource::connect(SourceConfig::new(&bootstrap, "e2e-observer"))
        .await
        .unwrap();
    let models =
        drive_production_to_final_models(&production, &observer, &production_prefix, 31).await;
    let before_staging = production_watermarks(&observer, &production_prefix).await;

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
    wait_topic_settled(
        &observer,
        &format!("{staging_prefix}.results"),
        Duration::from_secs(5),
    )
    .await;

    let sparfa = |results: &std::collections::BTreeMap<String, (Value, Value)>| {
        results
            .iter()
            .filter(|(key, _)| key.contains("biglearn_sparfa"))
            .map(|(key, (version, content))| {
                (
                    key.clone(),
                    (
                        version.clone(),
                        biglearn_staging::compare::normalized_content(content),
                    ),
                )
            })
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    // Production keeps every result it ever stored, including those of an ecosystem a
    // course has since switched away from (computed before the switch); staging, replaying
    // the log from scratch, computes only the targets of the state the log ends in. So
    // every result staging serves must be one production serves, equal by content and
    // computed with the same model; production may serve more. Both sides converge: a
    // settled results topic says no result is being written right now, not that the last
    // recomputation has been served, so compare once they agree (bounded).
    let agree = |ours: &std::collections::BTreeMap<String, (Value, Value)>,
                 theirs: &std::collections::BTreeMap<String, (Value, Value)>| {
        theirs.iter().all(|(key, (version, content))| {
            ours.get(key).is_some_and(|(our_version, our_content)| {
                our_version["model_seq"] == version["model_seq"] && our_content == content
            })
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let (ours, theirs) = loop {
        let ours = sparfa(&served_results(&production.base()).await);
        let theirs = sparfa(&served_results(&staging.base()).await);
        if agree(&ours, &theirs) || tokio::time::Instant::now() >= deadline {
            break (ours, theirs);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for kind in [
        "student_clue|",
        "teacher_clue|",
        "assignment_pes|",
        "assignment_spes|",
    ] {
        assert!(
            ours.keys().any(|key| key.starts_with(kind)),
            "production serves biglearn_sparfa {kind} results"
        );
        assert!(
            theirs.keys().any(|key| key.starts_with(kind)),
            "staging serves biglearn_sparfa {kind} results"
        );
    }
    let mut model_seqs = std::collections::BTreeSet::new();
    for (key, (their_version, their_content)) in &theirs {
        let (version, content) = ours
            .get(key)
            .unwrap_or_else(|| panic!("staging serves {key}, which production does not"));
        assert_eq!(
            version["model_seq"], their_version["model_seq"],
            "{key}: computed with the same model"
        );
        assert_eq!(content, their_content, "{key}: equal by content");
        model_seqs.insert(version["model_seq"].as_i64().unwrap_or(-1));
    }
    eprintln!(
        "{} of production's {} biglearn_sparfa results served by staging, equal by content; model_seqs used: {model_seqs:?}; production's models topic: {models:?}",
        theirs.len(),
        ours.len()
    );

    // Staging fitted nothing of its own and wrote nothing to production.
    let own_models = observer
        .high_watermarks(&format!("{staging_prefix}.models"))
        .await
        .unwrap();
    assert_eq!(own_models.iter().sum::<i64>(), 0, "staging fits no model");
    assert_eq!(
        production_watermarks(&observer, &production_prefix).await,
        before_staging,
        "staging appended nothing to production"
    );
    staging.stop().await;

    // `--own-sparfa`: another staging fits its own models into its own topic, and its
    // ecosystems become ready from those.
    let own_prefix = unique_topic_prefix("e2e-own-models");
    let own_dir = tempfile::tempdir().unwrap();
    let mut config = staging_config(
        own_dir.path(),
        &bootstrap,
        &production_prefix,
        &own_prefix,
        None,
    );
    if let Backend::Staging(backend) = &mut config.backend {
        backend.own_sparfa = true;
    }
    config.roles.push(Role::Sparfa);
    let own = StagingNode::start_with(config).await;
    own.wait_ready(Duration::from_secs(120)).await;
    let (_, metadatas) = production
        .post(
            "/fetch_course_metadatas",
            &json!({"metadata_sequence_number_offset": 0, "max_num_metadatas": 1}),
        )
        .await;
    let course = metadatas["course_responses"][0]["uuid"].clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (_, answer) = own
            .post(
                "/fetch_course_ecosystem_statuses",
                &json!({"request_uuid": biglearn_suite::new_uuid(), "course_uuids": [course]}),
            )
            .await;
        let status = &answer["course_statuses"][0]["current_ecosystem_status"];
        if status["precompute_is_complete"] == json!(true) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{answer}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let own_models = observer
        .high_watermarks(&format!("{own_prefix}.models"))
        .await
        .unwrap();
    assert!(
        own_models.iter().sum::<i64>() > 0,
        "staging fitted its own models"
    );
    own.stop().await;
    assert_eq!(
        production_watermarks(&observer, &production_prefix).await,
        before_staging,
        "a staging fitting its own models appended nothing to production"
    );
    production.stop().await.unwrap();
    tokio::task::spawn_blocking(move || drop(broker))
        .await
        .unwrap();
}

/// Following production's models needs read access to `<source prefix>.models`: without
/// it staging does not start, and says why and what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staging_without_production_models_refuses_to_start_and_says_why() {
    let broker = tokio::task::spawn_blocking(TestBroker::start)
        .await
        .expect("the broker starts");
    let bootstrap = broker.bootstrap().to_owned();
    let production_prefix = unique_topic_prefix("e2e-nomodels-prod");
    // Only the system-of-record topics exist under the source prefix.
    let creator = biglearn_stream::kafka::KafkaStore::connect(
        biglearn_stream::kafka::KafkaConfig::new(bootstrap.clone(), "e2e-creator").single_broker(),
    )
    .await
    .unwrap();
    let topics = Topics::new(&production_prefix);
    let system_of_record = topics.system_of_record();
    let specs: Vec<_> = topics
        .all_specs(12)
        .into_iter()
        .filter(|spec| system_of_record.contains(&spec.name))
        .collect();
    creator.ensure_topics(&specs).await.unwrap();
    let staging_dir = tempfile::tempdir().unwrap();
    let config = staging_config(
        staging_dir.path(),
        &bootstrap,
        &production_prefix,
        &unique_topic_prefix("e2e-nomodels"),
        None,
    );
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        biglearn::run::run(config, std::future::pending()),
    )
    .await
    .expect("the start fails at once");
    let error = format!("{:#}", outcome.expect_err("refused"));
    assert!(
        error.contains(&format!("{production_prefix}.models")) && error.contains("--own-sparfa"),
        "{error}"
    );
    drop(creator);
    tokio::task::spawn_blocking(move || drop(broker))
        .await
        .unwrap();
}

/// O7 with pseudonymised students: a `ModelComputed` holds no learner id, so staging
/// serves, for `pseudo(s)`, the `biglearn_sparfa` CLUEs production serves for `s`, computed
/// from production's models.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pseudonymised_staging_serves_production_sparfa_clues_under_pseudonyms() {
    let broker = tokio::task::spawn_blocking(TestBroker::start)
        .await
        .expect("the broker starts");
    let bootstrap = broker.bootstrap().to_owned();
    let production_prefix = unique_topic_prefix("e2e-pmodels-prod");
    let staging_prefix = unique_topic_prefix("e2e-pmodels");
    let production_dir = tempfile::tempdir().unwrap();
    let production = Node::start_with_roles(
        production_dir.path(),
        TestBackend::Kafka {
            bootstrap: bootstrap.clone(),
            prefix: production_prefix.clone(),
        },
        Default::default(),
        vec![Role::Writer, Role::Reader, Role::Scheduler, Role::Sparfa],
    )
    .await;
    let observer = KafkaSource::connect(SourceConfig::new(&bootstrap, "e2e-observer"))
        .await
        .unwrap();
    drive_production_to_final_models(&production, &observer, &production_prefix, 41).await;

    let pseudonymizer = Pseudonymizer::new(vec![7; 32]).unwrap();
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
    wait_topic_settled(
        &observer,
        &format!("{staging_prefix}.results"),
        Duration::from_secs(5),
    )
    .await;

    let ours = served_results(&production.base()).await;
    let theirs = served_results(&staging.base()).await;
    let mut n_compared = 0;
    let mut mapped = std::collections::BTreeSet::new();
    for (key, (_, content)) in &ours {
        let parts: Vec<&str> = key.split('|').collect();
        let their_key = match parts.as_slice() {
            ["student_clue", student, container, "biglearn_sparfa"] => {
                let student = uuid::Uuid::parse_str(student).unwrap();
                format!(
                    "student_clue|{}|{container}|biglearn_sparfa",
                    pseudonymizer.pseudo(student)
                )
            }
            ["teacher_clue", _, _, "biglearn_sparfa"] => key.clone(),
            _ => continue,
        };
        mapped.insert(their_key.clone());
        // Production may also serve CLUEs of an ecosystem a course has since left, which a
        // replay from scratch never computes (see the test above): compare what both serve.
        let Some((_, their_content)) = theirs.get(&their_key) else {
            continue;
        };
        let expected = replace_students(content.clone(), &pseudonymizer, &mut 0);
        let (expected, served) = (
            biglearn_staging::compare::normalized_content(&expected),
            biglearn_staging::compare::normalized_content(their_content),
        );
        if parts[0] == "student_clue" {
            assert_eq!(expected, served, "{key}");
        } else {
            // A teacher CLUE sums over the container's students in uuid order, and
            // pseudonyms reorder them: equal up to floating-point summation order.
            let (ours, theirs) = (&expected["clue_data"], &served["clue_data"]);
            for field in ["is_real", "ecosystem_uuid"] {
                assert_eq!(ours[field], theirs[field], "{key}");
            }
            for field in ["minimum", "most_likely", "maximum"] {
                let (a, b) = (
                    ours[field].as_f64().unwrap(),
                    theirs[field].as_f64().unwrap(),
                );
                assert!((a - b).abs() <= 1e-12, "{key} {field}: {a} vs {b}");
            }
        }
        n_compared += 1;
    }
    assert!(n_compared > 0, "production serves biglearn_sparfa CLUEs");
    for key in theirs.keys().filter(|key| {
        key.ends_with("|biglearn_sparfa")
            && (key.starts_with("student_clue|") || key.starts_with("teacher_clue|"))
    }) {
        assert!(
            mapped.contains(key),
            "staging serves {key}, which no production CLUE maps to"
        );
    }
    eprintln!("{n_compared} biglearn_sparfa CLUEs equal under pseudonyms");
    staging.stop().await;
    production.stop().await.unwrap();
    tokio::task::spawn_blocking(move || drop(broker))
        .await
        .unwrap();
}
