//! Two SPARFA consumers in one group on the tansu test broker: each ecosystem is fitted once per trigger, and a survivor takes over a stopped instance's ecosystems.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use biglearn_events::aggregate_key;
use biglearn_sparfa_consumer::{
    group_id, group_topics, router_group_id, run_response_router, run_sparfa_consumer,
    RouterConfig, SparfaConsumerConfig, SparfaConsumerError, SparfaSettings,
};
use biglearn_stream::kafka::{KafkaConfig, KafkaStore};
use biglearn_stream::{
    partition_for_key, Assignment, GroupMembership, SharedStreamStore, StreamError, Topics,
};
use biglearn_telemetry::Metrics;
use biglearn_testkit::{unique_topic_prefix, TestBroker};
use common::{append, create_ecosystem, id, models_on, response, wait_for};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const LIMIT: Duration = Duration::from_secs(90);

/// A membership the test can watch while a consumer owns it.
struct Observed(Arc<dyn GroupMembership>);

#[async_trait]
impl GroupMembership for Observed {
    fn current(&self) -> Assignment {
        self.0.current()
    }

    async fn changed(
        &self,
        seen_generation: u64,
        timeout: Duration,
    ) -> Result<Option<Assignment>, StreamError> {
        self.0.changed(seen_generation, timeout).await
    }
}

struct Instance {
    membership: Arc<dyn GroupMembership>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), SparfaConsumerError>>,
}

async fn start_instance(store: &SharedStreamStore, topics: &Topics) -> Instance {
    let membership: Arc<dyn GroupMembership> = Arc::from(
        store
            .join_group(&group_id(topics), &group_topics(topics))
            .await
            .expect("join"),
    );
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(run_sparfa_consumer(
        store.clone(),
        Box::new(Observed(membership.clone())),
        SparfaConsumerConfig::new(topics.clone(), Metrics::new("test")),
        Arc::new(|| SparfaSettings::INITIAL),
        stop_rx,
    ));
    Instance {
        membership,
        stop,
        task,
    }
}

/// Waits until every ecosystem has a model at `seq`, then checks that no
/// (ecosystem, model_seq) was published twice.
async fn expect_models(store: &SharedStreamStore, topics: &Topics, ecosystems: &[u128], seq: i64) {
    let wanted: BTreeSet<uuid::Uuid> = ecosystems.iter().map(|e| id(*e)).collect();
    let models = wait_for(
        LIMIT,
        &format!("model_seq {seq} of every ecosystem"),
        || {
            let (store, topic, wanted) = (store.clone(), topics.models(), wanted.clone());
            async move {
                let models = models_on(&store, &topic).await;
                let have: BTreeSet<uuid::Uuid> = models
                    .iter()
                    .filter(|m| m.model_seq == seq)
                    .map(|m| m.ecosystem_uuid)
                    .collect();
                have.is_superset(&wanted).then_some(models)
            }
        },
    )
    .await;
    let mut counts: BTreeMap<(uuid::Uuid, i64), usize> = BTreeMap::new();
    for model in &models {
        *counts
            .entry((model.ecosystem_uuid, model.model_seq))
            .or_default() += 1;
    }
    for ((ecosystem, model_seq), count) in counts {
        assert_eq!(
            count, 1,
            "ecosystem {ecosystem} model_seq {model_seq} published {count} times"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_share_the_ecosystems_and_one_takes_over() {
    let broker = TestBroker::start();
    let config = KafkaConfig::new(broker.bootstrap(), "sparfa-consumer-tests").single_broker();
    let store: SharedStreamStore = Arc::new(KafkaStore::connect(config).await.expect("connect"));
    let topics = Topics::new(unique_topic_prefix("sparfa"));
    // Scale 2: three partitions of each input topic.
    store
        .ensure_topics(&topics.all_specs(2))
        .await
        .expect("topics");
    let partitions = store
        .partition_count(&topics.ecosystem_events())
        .await
        .expect("partitions");
    // Two ecosystems on every partition.
    let mut ecosystems = Vec::new();
    let mut per_partition: BTreeMap<i32, usize> = BTreeMap::new();
    for eco in 1..200u128 {
        let p = partition_for_key(&aggregate_key(id(eco)), partitions);
        let n = per_partition.entry(p).or_default();
        if *n < 2 {
            *n += 1;
            ecosystems.push(eco);
        }
    }
    assert_eq!(ecosystems.len(), 2 * partitions as usize);

    let db_dir = tempfile::tempdir().expect("tempdir");
    let db = sled::open(db_dir.path()).expect("sled");
    let (router_stop, router_stop_rx) = watch::channel(false);
    let router_membership = store
        .join_group(&router_group_id(&topics), &[topics.course_events()])
        .await
        .expect("join the routers");
    let router = tokio::spawn(run_response_router(
        db,
        store.clone(),
        router_membership,
        RouterConfig::new(topics.clone()),
        router_stop_rx,
    ));
    let first = start_instance(&store, &topics).await;
    let second = start_instance(&store, &topics).await;
    let all = 2 * partitions as usize;
    wait_for(LIMIT, "the group to split the partitions", || {
        let (a, b) = (first.membership.current(), second.membership.current());
        async move {
            let (x, y) = (&a.partitions, &b.partitions);
            (!x.is_empty() && !y.is_empty() && x.is_disjoint(y) && x.len() + y.len() == all)
                .then_some(())
        }
    })
    .await;

    // Trigger 1: creation (initial models).
    let creates = ecosystems
        .iter()
        .map(|eco| create_ecosystem(*eco, 3))
        .collect();
    append(&store, &topics.ecosystem_events(), creates).await;
    expect_models(&store, &topics, &ecosystems, 0).await;

    // Trigger 2: the first response of each ecosystem (threshold 1).
    let responses = ecosystems
        .iter()
        .map(|eco| response(*eco, 0x1000 + eco, 1, eco * 10 + 1, *eco, 0, true))
        .collect();
    append(&store, &topics.course_events(), responses).await;
    expect_models(&store, &topics, &ecosystems, 1).await;

    // The first instance stops; the second takes over its partitions.
    first.stop.send_replace(true);
    first.task.await.expect("task").expect("first instance");
    drop(first.membership);
    wait_for(LIMIT, "the survivor to own every partition", || {
        let owned = second.membership.current().partitions.len();
        async move { (owned == all).then_some(()) }
    })
    .await;

    // Trigger 3: a second trial of the same group (threshold floor(1.1 · 1) + 1 = 2).
    let responses = ecosystems
        .iter()
        .map(|eco| response(*eco, 0x1000 + eco, 2, eco * 10 + 2, *eco, 0, false))
        .collect();
    append(&store, &topics.course_events(), responses).await;
    expect_models(&store, &topics, &ecosystems, 2).await;
    // Nothing more arrives later (no duplicate refit after the takeover).
    tokio::time::sleep(Duration::from_secs(2)).await;
    expect_models(&store, &topics, &ecosystems, 2).await;

    second.stop.send_replace(true);
    second.task.await.expect("task").expect("second instance");
    router_stop.send_replace(true);
    router.await.expect("router task").expect("router");
}
