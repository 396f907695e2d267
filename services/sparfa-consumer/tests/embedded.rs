//! Router, SPARFA consumer and model store together on the embedded log.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use biglearn_domain::ids::EcosystemUuid;
use biglearn_events::{encode_model_computed, ModelComputed};
use biglearn_scheduler::ModelView;
use biglearn_sparfa_consumer::{
    group_id, group_topics, matrix_uuid, route, router_group_id, run_model_store,
    run_response_router, run_sparfa_consumer, ModelStore, RouterConfig, SparfaConsumerConfig,
    SparfaSettings, Stored, MODELS_KEPT,
};
use biglearn_stream::embedded::EmbeddedStore;
use biglearn_stream::{ConsumedRecord, SharedStreamStore, Topics};
use biglearn_telemetry::Metrics;
use common::{append, create_ecosystem, id, models_on, response, wait_for};
use tokio::sync::watch;

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn the_router_forwards_only_responses_keyed_by_ecosystem() {
    let consumed = |record: biglearn_stream::OutgoingRecord| ConsumedRecord {
        topic: "t.course-events".into(),
        partition: 0,
        offset: 0,
        key: Some(record.key),
        value: Some(record.value),
        headers: record.headers,
        timestamp_ms: None,
    };
    let original = response(7, 0x77, 3, 1, 1, 0, true);
    let routed = route(&consumed(original.clone())).expect("a response is routed");
    assert_eq!(routed.key, id(7).to_string().into_bytes());
    assert_eq!(
        (routed.value, routed.headers),
        (original.value.clone(), original.headers.clone())
    );
    // Not a response: skipped on the header alone, even if its value is garbage.
    let mut other = consumed(original);
    other.headers[0].1 = b"update_roster".to_vec();
    other.value = Some(vec![1, 2, 3]);
    assert_eq!(route(&other), None);
}

fn model(eco: u128, seq: i64) -> ModelComputed {
    ModelComputed {
        matrix_uuid: matrix_uuid(EcosystemUuid(id(eco)), seq),
        ecosystem_uuid: id(eco),
        model_seq: seq,
        algorithm: "biglearn_sparfa".into(),
        spec_version: 1,
        trigger: "response_growth".into(),
        q_ids: vec![id(0x51), id(0x52)],
        c_ids: vec![id(0x61)],
        d: vec![0.5, -0.5],
        w_rows: vec![0],
        w_cols: vec![1],
        w_values: vec![seq as f64 + 1.0],
        h_rows: vec![0],
        h_cols: vec![1],
        hyperparameters: biglearn_events::ModelHyperparameters {
            lambda_h_l2: 0.05,
            lambda_nh_l1: 10.0,
            lambda_d_l2: 0.05,
            gamma_u: 1.0,
            holdout_modulus: 10,
            patience: 20,
            max_outer_iterations: 500,
            inner_steps: 5,
        },
        settings_version: 0,
        trained_through: vec![],
        training_observations: 0,
        holdout_observations: 0,
        learners: 0,
        training_set_sha256: [0; 32],
        holdout_accuracy: None,
        holdout_log_loss: None,
        outer_iterations: 0,
        best_iteration: 0,
        fit_seconds: 0.0,
        created_at_micros: 0,
    }
}

#[test]
fn the_store_keeps_the_latest_and_the_last_ten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sled::open(dir.path()).expect("sled");
    let store = ModelStore::open(&db).expect("open");
    let records: Vec<(i32, i64, Vec<u8>)> = (0..12)
        .map(|seq| (0, seq, encode_model_computed(&model(1, seq))))
        .collect();
    assert_eq!(store.digest().expect("digest"), None);
    let outcomes = store.apply(&records).expect("apply");
    assert!(outcomes
        .iter()
        .all(|(_, _, stored)| *stored == Stored::Latest));
    // Replayed and older records change nothing.
    let again = store.apply(&records[11..]).expect("apply");
    assert_eq!(again[0].2, Stored::Duplicate);
    let eco = EcosystemUuid(id(1));
    assert_eq!(store.latest_model(eco).map(|m| m.model_seq), Some(11));
    for seq in 0..12 {
        let kept = store
            .model_by_matrix(matrix_uuid(eco, seq))
            .expect("read")
            .map(|m| m.model_seq);
        let expected = (seq >= 12 - MODELS_KEPT as i64).then_some(seq);
        assert_eq!(kept, expected, "model_seq {seq}");
    }
    // Reopened, the cache is loaded from sled.
    let digest = store.digest().expect("digest").expect("a model is stored");
    drop(store);
    let reopened = ModelStore::open(&db).expect("reopen");
    assert_eq!(reopened.latest_model(eco).map(|m| m.model_seq), Some(11));
    assert_eq!(reopened.digest().expect("digest"), Some(digest));
    let older = reopened
        .apply(&[(0, 12, encode_model_computed(&model(1, 5)))])
        .expect("apply");
    assert_eq!(older[0].2, Stored::Duplicate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_ecosystem_gets_a_model_and_responses_refit_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: SharedStreamStore =
        Arc::new(EmbeddedStore::open(&dir.path().join("log")).expect("embedded log"));
    let topics = Topics::new("t");
    store
        .ensure_topics(&topics.all_specs(12))
        .await
        .expect("topics");
    let db = sled::open(dir.path().join("state")).expect("sled");
    let (stop_tx, stop_rx) = watch::channel(false);
    let metrics = Metrics::new("test");

    let router_membership = store
        .join_group(&router_group_id(&topics), &[topics.course_events()])
        .await
        .expect("join the routers");
    let router = tokio::spawn(run_response_router(
        db.clone(),
        store.clone(),
        router_membership,
        RouterConfig::new(topics.clone()),
        stop_rx.clone(),
    ));
    // Retraining starts switched off (the kill switch of docs/design/operations.md §6).
    let retrain_enabled = Arc::new(AtomicBool::new(false));
    let membership = store
        .join_group(&group_id(&topics), &group_topics(&topics))
        .await
        .expect("join");
    let consumer = tokio::spawn(run_sparfa_consumer(
        store.clone(),
        membership,
        SparfaConsumerConfig::new(topics.clone(), metrics.clone()),
        {
            let retrain_enabled = retrain_enabled.clone();
            Arc::new(move || SparfaSettings {
                retrain_enabled: retrain_enabled.load(Ordering::Relaxed),
                ..SparfaSettings::INITIAL
            })
        },
        stop_rx.clone(),
    ));
    let models = Arc::new(ModelStore::open(&db).expect("model store"));
    let (progress_tx, _progress_rx) = watch::channel(Default::default());
    let model_store = tokio::spawn(run_model_store(
        models.clone(),
        store.clone(),
        topics.models(),
        progress_tx,
        stop_rx.clone(),
    ));

    let eco = EcosystemUuid(id(1));
    append(
        &store,
        &topics.ecosystem_events(),
        vec![create_ecosystem(1, 4)],
    )
    .await;
    let initial = wait_for(LIMIT, "the initial model", || {
        let models = models.clone();
        async move { models.latest_model(eco) }
    })
    .await;
    assert_eq!(initial.model_seq, 0);
    assert_eq!(initial.matrix_uuid, matrix_uuid(eco, 0));
    assert_eq!(initial.serving.n_questions(), 4);

    // 30 students answer every group: the first response triggers (threshold 1).
    let mut records = Vec::new();
    let mut n = 0;
    for student in 0..30u128 {
        for g in 0..4u128 {
            n += 1;
            records.push(response(
                1,
                0x100 + student,
                g as i64,
                n,
                student,
                g,
                (student + g) % 3 != 0,
            ));
        }
    }
    append(&store, &topics.course_events(), records).await;
    // Off: the marks accumulate and nothing is fitted; on: one refit for all of them.
    wait_for(LIMIT, "the responses to be marked", || {
        let metrics = metrics.clone();
        async move {
            metrics
                .render()
                .contains("biglearn_sparfa_fit_queue 1")
                .then_some(())
        }
    })
    .await;
    assert_eq!(models.latest_model(eco).map(|m| m.model_seq), Some(0));
    retrain_enabled.store(true, Ordering::Relaxed);
    let refit = wait_for(LIMIT, "a refit", || {
        let models = models.clone();
        async move { models.latest_model(eco).filter(|m| m.model_seq >= 1) }
    })
    .await;
    let stored = models
        .model_by_matrix(refit.matrix_uuid)
        .expect("read")
        .expect("kept");
    assert_eq!(stored.trigger, "response_growth");
    assert!(stored.training_observations + stored.holdout_observations > 0);

    // Every (ecosystem, model_seq) was published once, in increasing order.
    let published = wait_for(LIMIT, "the models to settle", || {
        let store = store.clone();
        let topic = topics.models();
        async move {
            let all = models_on(&store, &topic).await;
            (!all.is_empty()).then_some(all)
        }
    })
    .await;
    let seqs: Vec<i64> = published.iter().map(|m| m.model_seq).collect();
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(seqs, sorted, "model_seqs increase, no duplicates");
    assert_eq!(seqs[..2], [0, 1]);
    let rendered = metrics.render();
    let fits = format!(
        "biglearn_sparfa_fits_total{{outcome=\"ok\"}} {}",
        seqs.len()
    );
    assert!(rendered.contains(&fits), "{fits} in {rendered}");
    assert!(rendered.contains("biglearn_sparfa_ecosystems_unready 0"));

    stop_tx.send_replace(true);
    router.await.expect("router task").expect("router");
    consumer.await.expect("consumer task").expect("consumer");
    model_store
        .await
        .expect("model store task")
        .expect("model store");
}
