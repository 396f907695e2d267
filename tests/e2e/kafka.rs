//! The write rules on a real Kafka-compatible broker (tansu via `TestBroker`): the
//! recorded examples, identity and slot rules, and an index rebuilt from the topics.

use biglearn_suite::{Node, TestBackend};
use biglearn_testkit::{unique_topic_prefix, TestBroker};

use crate::examples::replay_examples;
use crate::restart::{check_after_restart, write_before_restart};

async fn broker() -> TestBroker {
    tokio::task::spawn_blocking(TestBroker::start)
        .await
        .expect("the broker starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_examples_replay_on_kafka() {
    let broker = broker().await;
    let dir = tempfile::tempdir().unwrap();
    let backend = TestBackend::Kafka {
        bootstrap: broker.bootstrap().to_owned(),
        prefix: unique_topic_prefix("e2e-examples"),
    };
    let node = Node::start(dir.path(), backend).await;
    replay_examples(&node).await;
    node.stop().await.unwrap();
    tokio::task::spawn_blocking(move || drop(broker))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_data_dir_rebuilds_the_write_index_from_the_topics() {
    let broker = broker().await;
    let backend = TestBackend::Kafka {
        bootstrap: broker.bootstrap().to_owned(),
        prefix: unique_topic_prefix("e2e-rebuild"),
    };
    let first_dir = tempfile::tempdir().unwrap();
    let node = Node::start(first_dir.path(), backend.clone()).await;
    let written = write_before_restart(&node).await;
    node.stop().await.unwrap();

    // No sled state survives: everything the new node knows comes from the topics.
    let fresh_dir = tempfile::tempdir().unwrap();
    let node = Node::start(fresh_dir.path(), backend).await;
    check_after_restart(&node, &written).await;
    node.stop().await.unwrap();
    tokio::task::spawn_blocking(move || drop(broker))
        .await
        .unwrap();
}
