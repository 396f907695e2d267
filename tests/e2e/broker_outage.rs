//! A whole node survives its broker (rdkafka's MockCluster; issue 15): with every role of
//! `biglearn up` running and Tutor writing, the only broker goes down for 60 s, then comes
//! back answering ListOffsets and Fetch with timeouts for a while. The process stays up
//! (`/ping` answers throughout), `/readyz` reports the stall, every component resumes by
//! itself, a write that cannot become durable is answered 503 at the 55 s write deadline
//! (and lands once retried), every write Tutor retried lands exactly once, and the state
//! digest equals that of a clean run: a fresh reader that replays the same topics without
//! an outage.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use biglearn::run::Role;
use biglearn_suite::{
    create_course, create_ecosystem, new_uuid, record_responses, response_item, Node, TestBackend,
    API_TOKEN,
};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use serde_json::{json, Value};

/// How long the broker is down.
const OUTAGE: Duration = Duration::from_secs(60);
/// Responses Tutor records, one request each, paced so that the outage falls among them.
const N_RESPONSES: i64 = 120;
/// Bounds every wait; only a node that never recovers reaches it.
const DEADLINE: Duration = Duration::from_secs(240);

/// Posts `body` to `path` until it is answered 200, as Tutor retries a failed write with
/// the same body (identities make the retry safe). Each attempt gives up after 10 s.
async fn post_until_ok(client: &reqwest::Client, base: &str, path: &str, body: &Value) {
    let started = Instant::now();
    loop {
        let attempt = client
            .post(format!("{base}{path}"))
            .header("Biglearn-Api-Token", API_TOKEN)
            .json(body)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        match attempt {
            Ok(answer) if answer.status() == 200 => return,
            Ok(answer) => assert!(
                answer.status() == 503 || answer.status() == 408,
                "{path}: only 503 is an answer to a broker outage, got {}",
                answer.status()
            ),
            Err(_) => {} // the attempt's own timeout while the broker is away
        }
        assert!(started.elapsed() < DEADLINE, "{path} never succeeded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn readyz(client: &reqwest::Client, base: &str) -> (u16, Value) {
    let answer = client
        .get(format!("{base}/readyz"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("/readyz answers while the broker is down");
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or(Value::Null))
}

async fn digest(node: &Node) -> Value {
    let (status, digest) = node
        .admin("/admin/state_digest", &json!({"list_sequences": false}))
        .await;
    assert_eq!(status, 200, "{digest}");
    digest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_rides_out_a_minute_without_its_broker() {
    // MockCluster is !Send: it stays in the test's own future, never in a spawned task.
    let mock = MockCluster::new(1).expect("a mock cluster");
    let backend = TestBackend::Kafka {
        bootstrap: mock.bootstrap_servers(),
        prefix: "outage".to_owned(),
    };
    // The mock cannot answer CreateTopics: the topics are provisioned beforehand, with the
    // layout the node asks for, as an operator would for a principal that may not create
    // topics.
    let single_broker = biglearn::run::Backend::Kafka {
        bootstrap_servers: mock.bootstrap_servers(),
        single_broker: true,
    };
    let scale = biglearn::run::partitions_scale(&single_broker);
    for spec in biglearn_stream::Topics::new("outage").all_specs(scale) {
        mock.create_topic(&spec.name, spec.partitions, 1)
            .expect("a topic");
    }
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with_roles(
        dir.path(),
        backend.clone(),
        Default::default(),
        vec![Role::Writer, Role::Reader, Role::Scheduler, Role::Sparfa],
    )
    .await;
    let (base, client) = (node.base(), node.client().clone());
    let (ecosystem, course) = (new_uuid(), new_uuid());
    post_until_ok(
        &client,
        &base,
        "/create_ecosystem",
        &create_ecosystem(&ecosystem),
    )
    .await;
    post_until_ok(
        &client,
        &base,
        "/create_course",
        &create_course(&course, &ecosystem),
    )
    .await;
    let late_course = new_uuid();
    post_until_ok(
        &client,
        &base,
        "/create_course",
        &create_course(&late_course, &ecosystem),
    )
    .await;

    // Tutor: one response a request, every 100 ms, each retried until it is answered 200.
    let written = Arc::new(AtomicUsize::new(0));
    let tutor = {
        let (base, client, course, written) = (
            base.clone(),
            client.clone(),
            course.clone(),
            written.clone(),
        );
        tokio::spawn(async move {
            for sequence_number in 1..=N_RESPONSES {
                let body =
                    record_responses(vec![response_item(&course, sequence_number, &new_uuid())]);
                post_until_ok(&client, &base, "/record_responses", &body).await;
                written.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let started = Instant::now();
    while written.load(Ordering::SeqCst) < 20 {
        assert!(
            started.elapsed() < DEADLINE,
            "the first writes never landed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    mock.broker_down(1).expect("broker down");
    let down_at = Instant::now();
    // A write with a patient client (120 s, past the server's 55 s write deadline), on a
    // course of its own: answered 503 at the deadline instead of hanging, then retried.
    let late_write = record_responses(vec![response_item(&late_course, 1, &new_uuid())]);
    let late = {
        let (base, client, body) = (base.clone(), client.clone(), late_write.clone());
        tokio::spawn(async move {
            let answer = client
                .post(format!("{base}/record_responses"))
                .header("Biglearn-Api-Token", API_TOKEN)
                .json(&body)
                .timeout(Duration::from_secs(120))
                .send()
                .await
                .expect("an answer by the write deadline");
            let status = answer.status().as_u16();
            (status, answer.json::<Value>().await.unwrap_or(Value::Null))
        })
    };
    // The process stays up and says why it is not ready.
    let mut stall = None;
    while down_at.elapsed() < OUTAGE {
        let ping = client
            .get(format!("{base}/ping"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("/ping answers while the broker is down");
        assert_eq!(ping.status(), 200);
        let (status, body) = readyz(&client, &base).await;
        if status == 503
            && body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("stalled"))
        {
            stall.get_or_insert(body);
        }
        assert!(
            !tutor.is_finished(),
            "every write cannot land without a broker"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let stall = stall.expect("/readyz reported a stalled component during the outage");
    assert_eq!(stall["ready"], false, "{stall}");
    let (status, answer) = late.await.expect("the late write's task");
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer["errors"][0]["message"]
            .as_str()
            .is_some_and(|message| message.contains("not durable within 55 s")),
        "{answer}"
    );

    // Back, but answering offsets and fetch requests with timeouts for a while.
    let timeouts = [RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT; 6];
    mock.request_errors(RDKafkaApiKey::ListOffsets, &timeouts);
    mock.request_errors(RDKafkaApiKey::Fetch, &timeouts);
    mock.broker_up(1).expect("broker up");
    tokio::time::timeout(DEADLINE, tutor)
        .await
        .expect("every write lands once the broker is back")
        .expect("the Tutor task");
    node.wait_ready(DEADLINE).await;

    // Every response landed exactly once, in order.
    let events = node
        .course_events(&course, 0, &["create_course", "record_response"], 1000)
        .await;
    assert_eq!(
        biglearn_suite::sequence_numbers(&events),
        (0..=N_RESPONSES).collect::<Vec<_>>(),
        "{events}"
    );

    // The late write went on after its 503: its retry answers 200, and it stands once.
    post_until_ok(&client, &base, "/record_responses", &late_write).await;
    let late_events = node
        .course_events(&late_course, 0, &["create_course", "record_response"], 10)
        .await;
    assert_eq!(
        biglearn_suite::sequence_numbers(&late_events),
        [0, 1],
        "{late_events}"
    );
    let scrape = node.metrics_text().await;
    assert!(
        scrape.lines().any(|line| line
            .strip_prefix("biglearn_write_deadline_exceeded_total ")
            .and_then(|value| value.parse::<f64>().ok())
            .is_some_and(|n| n >= 1.0)),
        "the deadline is counted"
    );

    // A clean run: a reader and scheduler that replays the same topics from the start
    // reaches the same state digest as the node that lived through the outage (a process
    // that only reads keeps no state projection to digest).
    let clean_dir = tempfile::tempdir().unwrap();
    let clean = Node::start_with_roles(
        clean_dir.path(),
        backend,
        Default::default(),
        vec![Role::Reader, Role::Scheduler],
    )
    .await;
    let started = Instant::now();
    let (survivor, replayed) = loop {
        let (survivor, replayed) = (digest(&node).await, digest(&clean).await);
        let same = survivor["parts"] == replayed["parts"]
            && survivor["sequences"] == replayed["sequences"];
        if same || started.elapsed() > DEADLINE {
            break (survivor, replayed);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        (&survivor["parts"], &survivor["sequences"]),
        (&replayed["parts"], &replayed["sequences"]),
        "survivor {survivor}\nclean replay {replayed}"
    );
    assert!(survivor["sequences"]["n_applied"].as_i64() >= Some(N_RESPONSES));
    clean.stop().await.unwrap();
    node.stop().await.unwrap();
}
