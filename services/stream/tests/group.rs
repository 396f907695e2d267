//! Consumer-group membership on the tansu test broker, librdkafka's MockCluster (faults) and the embedded log.

use std::collections::BTreeSet;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use biglearn_stream::embedded::EmbeddedStore;
use biglearn_stream::kafka::{KafkaConfig, KafkaStore};
use biglearn_stream::{Assignment, GroupMembership, StreamError, StreamStore, TopicSpec};
use biglearn_testkit::{unique_topic_prefix, TestBroker};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::RDKafkaRespErr;

const PARTITIONS: i32 = 4;
type Mock = MockCluster<'static, DefaultProducerContext>;
/// Generous: tansu joins take seconds, a rebalance after a leave a few more.
const SETTLE: Duration = Duration::from_secs(60);

async fn store_on(broker: &TestBroker) -> Arc<KafkaStore> {
    // A short session makes tansu group joins take ~3 s instead of ~23 s (docs/design/operations.md
    // §8.2).
    let config = KafkaConfig::new(broker.bootstrap(), "biglearn-group-tests")
        .single_broker()
        .with("session.timeout.ms", "6000");
    Arc::new(
        KafkaStore::connect(config)
            .await
            .expect("connect to the test broker"),
    )
}

fn spec(name: String) -> TopicSpec {
    TopicSpec {
        name,
        partitions: PARTITIONS,
        compacted: false,
        retention_ms: None,
        max_message_bytes: 1024 * 1024,
    }
}

/// Creates the co-partitioned pair the SPARFA consumer subscribes to.
async fn sparfa_topics(store: &dyn StreamStore, label: &str) -> (String, Vec<String>) {
    let prefix = unique_topic_prefix(label);
    let topics = vec![
        format!("{prefix}.ecosystem-events"),
        format!("{prefix}.sparfa-responses"),
    ];
    let specs: Vec<TopicSpec> = topics.iter().cloned().map(spec).collect();
    store.ensure_topics(&specs).await.expect("create topics");
    (format!("{prefix}.sparfa"), topics)
}

fn every_partition(topics: &[String]) -> BTreeSet<(String, i32)> {
    topics
        .iter()
        .flat_map(|topic| (0..PARTITIONS).map(move |p| (topic.clone(), p)))
        .collect()
}

/// Waits (bounded by [`SETTLE`]) until `done` holds for the members' assignments,
/// waking on every change any member reports.
async fn settle(
    members: &[&dyn GroupMembership],
    done: impl Fn(&[Assignment]) -> bool,
) -> Vec<Assignment> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let current: Vec<Assignment> = members.iter().map(|member| member.current()).collect();
        if done(&current) {
            return current;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "not settled after {SETTLE:?}: {current:?}");
        let waits = members
            .iter()
            .zip(&current)
            .map(|(member, seen)| member.changed(seen.generation, left))
            .map(Box::pin);
        let (changed, _, _) = futures::future::select_all(waits).await;
        changed.expect("membership error");
    }
}

fn is_co_partitioned(assignment: &Assignment, topics: &[String]) -> bool {
    let first = assignment.partitions_of(&topics[0]);
    topics[1..]
        .iter()
        .all(|topic| assignment.partitions_of(topic) == first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sole_member_owns_every_partition_of_both_topics() {
    let broker = TestBroker::start();
    let store = store_on(&broker).await;
    let (group, topics) = sparfa_topics(store.as_ref(), "sole").await;
    let member = store.join_group(&group, &topics).await.expect("join");
    let all = every_partition(&topics);
    let settled = settle(&[member.as_ref()], |a| a[0].partitions == all).await;
    assert!(settled[0].generation >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_split_co_partitioned_topics_and_one_takes_over_when_the_other_leaves() {
    let broker = TestBroker::start();
    let store = store_on(&broker).await;
    let (group, topics) = sparfa_topics(store.as_ref(), "pair").await;
    let all = every_partition(&topics);
    let first = store.join_group(&group, &topics).await.expect("join first");
    settle(&[first.as_ref()], |a| a[0].partitions == all).await;
    // Scale out: a second instance joins and the group rebalances.
    let second = store
        .join_group(&group, &topics)
        .await
        .expect("join second");

    let split = settle(&[first.as_ref(), second.as_ref()], |a| {
        let (x, y) = (&a[0].partitions, &a[1].partitions);
        !x.is_empty() && !y.is_empty() && x.is_disjoint(y) && x.union(y).count() == all.len()
    })
    .await;
    let union: BTreeSet<_> = split[0]
        .partitions
        .union(&split[1].partitions)
        .cloned()
        .collect();
    assert_eq!(union, all);
    for assignment in &split {
        assert!(
            is_co_partitioned(assignment, &topics),
            "partition p of both topics belongs to one member: {assignment:?}"
        );
    }

    let before = split[1].generation;
    drop(first);
    let taken_over = settle(&[second.as_ref()], |a| a[0].partitions == all).await;
    assert!(taken_over[0].generation > before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_groups_do_not_share_partitions() {
    let broker = TestBroker::start();
    let store = store_on(&broker).await;
    let (group, topics) = sparfa_topics(store.as_ref(), "groups").await;
    let all = every_partition(&topics);
    let production = store.join_group(&group, &topics).await.expect("join");
    let staging = store
        .join_group(&format!("staging.{group}"), &topics)
        .await
        .expect("join");
    settle(&[production.as_ref(), staging.as_ref()], |a| {
        a.iter().all(|assignment| assignment.partitions == all)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_over_a_missing_topic_names_it() {
    let broker = TestBroker::start();
    let store = store_on(&broker).await;
    let missing = format!("{}.ecosystem-events", unique_topic_prefix("missing"));
    let joined = store.join_group("g", std::slice::from_ref(&missing)).await;
    match joined {
        Err(StreamError::UnknownTopic { topic }) => assert_eq!(topic, missing),
        Err(other) => panic!("expected UnknownTopic, got {other}"),
        Ok(_) => panic!("joined a group over a missing topic"),
    }
}

/// Runs `scenario` against a one-broker librdkafka MockCluster (it is `!Send`, so it
/// stays on this thread while the runtime drives the future).
fn on_mock_cluster<F, Fut>(label: &str, scenario: F)
where
    F: FnOnce(Rc<Mock>, Arc<KafkaStore>, Vec<String>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mock = Rc::new(MockCluster::new(1).expect("mock cluster"));
    let prefix = unique_topic_prefix(label);
    let topics = vec![
        format!("{prefix}.ecosystem-events"),
        format!("{prefix}.sparfa-responses"),
    ];
    for topic in &topics {
        mock.create_topic(topic, PARTITIONS, 1)
            .expect("create mock topic");
    }
    runtime.block_on(async {
        let config = KafkaConfig::new(mock.bootstrap_servers(), format!("group-{label}"))
            .single_broker()
            .with("session.timeout.ms", "6000")
            .with("topic.metadata.refresh.interval.ms", "1000");
        let store = Arc::new(KafkaStore::connect(config).await.expect("connect"));
        scenario(Rc::clone(&mock), store, topics).await;
    });
}

/// A member that cannot reach its coordinator drops ownership once its session times
/// out, since by then the group may have handed its partitions to someone else.
#[test]
fn a_member_cut_off_from_its_broker_gives_up_ownership() {
    on_mock_cluster("cutoff", |mock, store, topics| async move {
        let member = store.join_group("cutoff", &topics).await.expect("join");
        let all = every_partition(&topics);
        settle(&[member.as_ref()], |a| a[0].partitions == all).await;
        mock.broker_down(1).expect("broker down");
        settle(&[member.as_ref()], |a| a[0].partitions.is_empty()).await;
    });
}

/// A subscribed topic that disappears is an error the operator must see; the member
/// owns nothing afterwards (and has left, so the group can rebalance).
#[test]
fn a_vanished_topic_fails_the_membership() {
    on_mock_cluster("vanished", |mock, store, topics| async move {
        let member = store.join_group("vanished", &topics).await.expect("join");
        let all = every_partition(&topics);
        let owned = settle(&[member.as_ref()], |a| a[0].partitions == all).await;
        mock.topic_error(
            &topics[0],
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
        )
        .expect("topic error");
        let deadline = Instant::now() + SETTLE;
        let mut seen = owned[0].generation;
        let error = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no error after {SETTLE:?}");
            match member.changed(seen, left).await {
                Err(error) => break error,
                Ok(Some(assignment)) => seen = assignment.generation,
                Ok(None) => {}
            }
        };
        let message = error.to_string();
        assert!(message.contains("vanished"), "{message}");
        assert!(message.contains("Unknown topic"), "{message}");
        assert!(member.current().partitions.is_empty());
    });
}

#[tokio::test]
async fn the_embedded_log_owns_every_partition_at_generation_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    let (group, topics) = sparfa_topics(&store, "embedded").await;
    let member = store.join_group(&group, &topics).await.expect("join");
    assert_eq!(
        member.current(),
        Assignment {
            generation: 1,
            partitions: every_partition(&topics),
        }
    );
    let unchanged = member.changed(1, Duration::from_millis(20)).await;
    assert_eq!(unchanged.expect("no error"), None);

    let missing = store
        .join_group(&group, &["nope".to_owned()])
        .await
        .err()
        .map(|error| error.to_string());
    assert!(
        missing.as_deref().is_some_and(|m| m.contains("nope")),
        "{missing:?}"
    );
}
