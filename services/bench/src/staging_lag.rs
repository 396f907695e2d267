//! `biglearn staging bench-lag`: staging's lag behind production while production takes a
//! paced response load, with production's own projector lag as the baseline (BENCHMARKS.md).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use biglearn_staging::SourceConfig;
use clap::Args;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use biglearn_node::run::{Backend, Role, RunConfig};
use biglearn_node::staging::{lag_records, StagingBackend};

use crate::measure::scrape;

/// Options of the staging lag benchmark.
#[derive(Args, Debug, Clone)]
pub struct StagingLagArgs {
    /// Kafka bootstrap servers (production and staging topics go to this cluster).
    #[arg(long)]
    pub kafka: String,
    /// The cluster has a single broker.
    #[arg(long)]
    pub single_broker: bool,
    /// Responses per second offered to production.
    #[arg(long, default_value_t = 5000)]
    pub rate: u64,
    /// Seconds of load.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Responses per `/record_responses` request.
    #[arg(long, default_value_t = 100)]
    pub batch: u64,
    /// Courses (each a sequence of its own); one sender per course group.
    #[arg(long, default_value_t = 64)]
    pub courses: u64,
    /// Concurrent senders.
    #[arg(long, default_value_t = 8)]
    pub concurrency: u64,
    /// Append the response events straight to production's course-events topic (Kafka
    /// producer, as the writer would after its checks) instead of through the HTTP writer:
    /// measures the consumers at rates the co-located writer cannot take.
    #[arg(long)]
    pub raw: bool,
}

struct Process {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    join: tokio::task::JoinHandle<anyhow::Result<()>>,
}

const TOKEN: &str = "bench-token";

async fn start(config: RunConfig) -> anyhow::Result<Process> {
    let (stop, stop_rx) = oneshot::channel::<()>();
    let (addr_tx, addr_rx) = oneshot::channel();
    let join = tokio::spawn(biglearn_node::run::run_with(
        config,
        async move {
            let _ = stop_rx.await;
        },
        move |addr| {
            let _ = addr_tx.send(addr);
        },
    ));
    let addr = tokio::time::timeout(Duration::from_secs(120), addr_rx)
        .await
        .context("a process did not start listening within 120 s")?
        .context("a process stopped before listening")?;
    Ok(Process { addr, stop, join })
}

async fn wait_ready(client: &reqwest::Client, addr: SocketAddr) -> anyhow::Result<()> {
    // Bounded: 600 polls of 200 ms.
    for _ in 0..600 {
        let ready = client
            .get(format!("http://{addr}/readyz"))
            .send()
            .await
            .map(|response| response.status().is_success())
            .unwrap_or(false);
        if ready {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("http://{addr} did not become ready within 120 s")
}

fn run_config(dir: &Path, backend: Backend, prefix: &str, roles: Vec<Role>) -> RunConfig {
    RunConfig {
        data_dir: dir.to_owned(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        backend,
        topic_prefix: prefix.to_owned(),
        roles,
        api_token: TOKEN.into(),
        admin_token: TOKEN.into(),
        observer_token: None,
        writer_id: format!("{prefix}-writer"),
        flags: Default::default(),
        http: Default::default(),
        kafka: Default::default(),
    }
}

async fn post(
    client: &reqwest::Client,
    addr: SocketAddr,
    path: &str,
    body: &Value,
) -> anyhow::Result<()> {
    let response = client
        .post(format!("http://{addr}{path}"))
        .header("Biglearn-Api-Token", TOKEN)
        .json(body)
        .send()
        .await
        .with_context(|| format!("cannot reach {path}"))?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        anyhow::bail!("{path} answered {status}: {text}");
    }
    Ok(())
}

/// `(count, p50, p99)` of `biglearn_event_age_seconds{component}` from a /metrics text, the
/// quantiles interpolated linearly inside buckets (as Prometheus's histogram_quantile).
pub fn age_quantiles(metrics_text: &str, component: &str) -> (u64, f64, f64) {
    let label = format!("component=\"{component}\"");
    let mut buckets: Vec<(f64, f64)> = metrics_text
        .lines()
        .filter(|line| {
            line.starts_with("biglearn_event_age_seconds_bucket") && line.contains(&label)
        })
        .filter_map(|line| {
            let le = line.split("le=\"").nth(1)?.split('"').next()?;
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let count: f64 = line.rsplit(' ').next()?.parse().ok()?;
            Some((bound, count))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().map_or(0.0, |(_, count)| *count);
    let quantile = |q: f64| -> f64 {
        if total <= 0.0 {
            return 0.0;
        }
        let rank = q * total;
        let mut previous = (0.0, 0.0);
        for &(bound, count) in &buckets {
            if count >= rank {
                if bound.is_infinite() {
                    return previous.0;
                }
                let width = count - previous.1;
                let within = if width > 0.0 {
                    (rank - previous.1) / width
                } else {
                    1.0
                };
                return previous.0 + (bound - previous.0) * within;
            }
            previous = (bound, count);
        }
        previous.0
    };
    (total as u64, quantile(0.5), quantile(0.99))
}

/// Runs the benchmark and prints one JSON line.
pub async fn run_staging_lag(args: StagingLagArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let stamp = uuid::Uuid::new_v4().simple().to_string();
    let production_prefix = format!("benchprod{}", &stamp[..8]);
    let staging_prefix = format!("benchstaging{}", &stamp[..8]);
    let production_dir = tempfile_dir("production")?;
    let staging_dir = tempfile_dir("staging")?;
    let kafka = Backend::Kafka {
        bootstrap_servers: args.kafka.clone(),
        single_broker: args.single_broker,
    };
    let production = start(run_config(
        &production_dir,
        kafka.clone(),
        &production_prefix,
        vec![Role::Writer, Role::Reader, Role::Scheduler],
    ))
    .await?;
    wait_ready(&client, production.addr).await?;
    let staging = start(run_config(
        &staging_dir,
        Backend::Staging(Box::new(StagingBackend {
            source: SourceConfig::new(args.kafka.clone(), staging_prefix.clone()),
            source_prefix: production_prefix.clone(),
            target: kafka,
            pseudonymizer: None,
            own_sparfa: false,
        })),
        &staging_prefix,
        vec![Role::Reader, Role::Scheduler],
    ))
    .await?;
    wait_ready(&client, staging.addr).await?;

    let ecosystem = uuid::Uuid::new_v4();
    let exercise = uuid::Uuid::new_v4();
    post(
        &client,
        production.addr,
        "/create_ecosystem",
        &json!({
            "ecosystem_uuid": ecosystem,
            "book": {"contents": [{
                "container_uuid": uuid::Uuid::new_v4(),
                "container_parent_uuid": ecosystem,
                "pools": [{"use_for_clue": true,
                    "use_for_personalized_for_assignment_types": ["reading"],
                    "exercise_uuids": [exercise]}],
            }]},
            "exercises": [{"exercise_uuid": exercise, "group_uuid": uuid::Uuid::new_v4(),
                "version": 1, "los": ["lo1"]}],
            "imported_at": "2017-06-27T23:26:40.000000Z",
        }),
    )
    .await?;
    let courses: Vec<uuid::Uuid> = (0..args.courses).map(|_| uuid::Uuid::new_v4()).collect();
    for course in &courses {
        post(
            &client,
            production.addr,
            "/create_course",
            &json!({
                "course_uuid": course, "ecosystem_uuid": ecosystem, "is_real_course": true,
                "starts_at": "2017-03-27T23:26:43.502491Z", "ends_at": "2017-09-27T23:26:43.502707Z",
                "created_at": "2017-06-27T23:26:45.704487Z",
            }),
        )
        .await?;
    }
    let student = uuid::Uuid::new_v4();
    let raw_store: Option<biglearn_stream::SharedStreamStore> = if args.raw {
        let mut config = biglearn_stream::kafka::KafkaConfig::new(args.kafka.clone(), "bench-raw");
        if args.single_broker {
            config = config.single_broker();
        }
        Some(Arc::new(
            biglearn_stream::kafka::KafkaStore::connect(config).await?,
        ))
    } else {
        None
    };
    let settings_version = production_settings_version(&client, production.addr).await?;
    let course_topic = biglearn_stream::Topics::new(production_prefix.clone()).course_events();

    // Load: each sender owns every `concurrency`-th course and sends its batches in
    // sequence order, paced to rate / concurrency responses per second.
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let per_sender = (args.rate as f64 / args.concurrency as f64).max(1.0);
    let mut senders = Vec::new();
    for sender in 0..args.concurrency {
        let owned: Vec<uuid::Uuid> = courses
            .iter()
            .copied()
            .skip(sender as usize)
            .step_by(args.concurrency as usize)
            .collect();
        let (client, sent, failed) = (client.clone(), sent.clone(), failed.clone());
        let (addr, batch) = (production.addr, args.batch);
        let (raw_store, course_topic) = (raw_store.clone(), course_topic.clone());
        senders.push(tokio::spawn(async move {
            let mut next_seq = vec![1i64; owned.len()];
            let mut n_sent: u64 = 0;
            let mut turn = 0usize;
            while Instant::now() < deadline && !owned.is_empty() {
                let due = started + Duration::from_secs_f64(n_sent as f64 / per_sender);
                tokio::time::sleep_until(due.into()).await;
                let index = turn % owned.len();
                turn += 1;
                if let Some(store) = &raw_store {
                    let records = raw_responses(
                        owned[index],
                        next_seq[index],
                        batch,
                        (ecosystem, student, exercise),
                        settings_version,
                    );
                    let delivered = store.append(&course_topic, records).await;
                    match delivered {
                        Ok(outcomes) if outcomes.iter().all(Result::is_ok) => {
                            next_seq[index] += batch as i64;
                            sent.fetch_add(batch, Ordering::Relaxed);
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    n_sent += batch;
                    continue;
                }
                let items: Vec<Value> = (0..batch)
                    .map(|offset| {
                        json!({
                            "response_uuid": uuid::Uuid::new_v4(),
                            "course_uuid": owned[index],
                            "sequence_number": next_seq[index] + offset as i64,
                            "ecosystem_uuid": ecosystem,
                            "trial_uuid": uuid::Uuid::new_v4(),
                            "student_uuid": student,
                            "exercise_uuid": exercise,
                            "is_correct": offset % 2 == 0,
                            "is_real_response": true,
                            "responded_at": "2017-06-27T23:26:48.986100Z",
                        })
                    })
                    .collect();
                match post(
                    &client,
                    addr,
                    "/record_responses",
                    &json!({"responses": items}),
                )
                .await
                {
                    Ok(()) => {
                        next_seq[index] += batch as i64;
                        sent.fetch_add(batch, Ordering::Relaxed);
                    }
                    Err(error) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%error, "a benchmark request failed");
                    }
                }
                n_sent += batch;
            }
        }));
    }
    // Staging's lag in seconds, sampled once a second from its /metrics during the load.
    let mut lag_samples: Vec<f64> = Vec::new();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Ok(text) = scrape(&client, &format!("http://{}", staging.addr)).await {
            lag_samples.push(max_lag_seconds(&text));
        }
    }
    for sender in senders {
        let _ = sender.await;
    }
    let load_seconds = started.elapsed().as_secs_f64();
    let n_sent = sent.load(Ordering::Relaxed);
    // Drain: both apply everything (bounded).
    let drain_started = Instant::now();
    for _ in 0..600 {
        let production_text = scrape(&client, &format!("http://{}", production.addr)).await?;
        let staging_text = scrape(&client, &format!("http://{}", staging.addr)).await?;
        if lag_records(&production_text) == 0
            && lag_records(&staging_text) == 0
            && age_quantiles(&staging_text, "projector").0 >= n_sent
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let drain_seconds = drain_started.elapsed().as_secs_f64();
    let production_text = scrape(&client, &format!("http://{}", production.addr)).await?;
    let staging_text = scrape(&client, &format!("http://{}", staging.addr)).await?;
    let (production_n, production_p50, production_p99) =
        age_quantiles(&production_text, "projector");
    let (staging_n, staging_p50, staging_p99) = age_quantiles(&staging_text, "projector");
    lag_samples.sort_by(f64::total_cmp);
    let sample_quantile = |q: f64| {
        lag_samples
            .get(((lag_samples.len() as f64 - 1.0) * q).round().max(0.0) as usize)
            .copied()
            .unwrap_or(0.0)
    };
    println!(
        "{}",
        json!({
            "bench": "staging_lag",
            "mode": if args.raw { "raw_appends" } else { "http_writer" },
            "offered_rate": args.rate,
            "seconds": args.seconds,
            "responses_accepted": n_sent,
            "accepted_per_second": n_sent as f64 / load_seconds,
            "failed_requests": failed.load(Ordering::Relaxed),
            "drain_seconds": drain_seconds,
            "production_projector_age_seconds": {"n": production_n, "p50": production_p50, "p99": production_p99},
            "staging_projector_age_seconds": {"n": staging_n, "p50": staging_p50, "p99": staging_p99},
            "staging_lag_seconds_sampled": {"n": lag_samples.len(), "p50": sample_quantile(0.5), "p99": sample_quantile(0.99), "max": lag_samples.last().copied().unwrap_or(0.0)},
        })
    );
    let _ = staging.stop.send(());
    let _ = production.stop.send(());
    staging.join.await.context("staging task")??;
    production.join.await.context("production task")??;
    let _ = std::fs::remove_dir_all(&production_dir);
    let _ = std::fs::remove_dir_all(&staging_dir);
    Ok(())
}

/// `batch` record_response events of `course` from `first_seq`, as the writer stamps them.
fn raw_responses(
    course: uuid::Uuid,
    first_seq: i64,
    batch: u64,
    (ecosystem, student, exercise): (uuid::Uuid, uuid::Uuid, uuid::Uuid),
    settings_version: i64,
) -> Vec<biglearn_stream::OutgoingRecord> {
    use biglearn_domain::events::{
        CourseEvent, CoursePayload, EnvelopeMeta, RecordResponse, Timestamp,
    };
    use biglearn_domain::ids::{
        CourseUuid, EcosystemUuid, EventUuid, ExerciseUuid, ResponseUuid, SequenceNumber,
        StudentUuid, TrialUuid,
    };
    let accepted_at_micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_micros() as i64)
        .unwrap_or(0);
    (0..batch as i64)
        .map(|offset| {
            let response = uuid::Uuid::new_v4();
            let event = CourseEvent {
                meta: EnvelopeMeta {
                    event_uuid: EventUuid(response),
                    sequence_number: SequenceNumber(first_seq + offset),
                    accepted_at_micros,
                    writer_id: "bench-raw".into(),
                    settings_version,
                    metadata_sequence_number: None,
                },
                course_uuid: CourseUuid(course),
                payload: CoursePayload::RecordResponse(RecordResponse {
                    response_uuid: ResponseUuid(response),
                    course_uuid: CourseUuid(course),
                    sequence_number: SequenceNumber(first_seq + offset),
                    ecosystem_uuid: EcosystemUuid(ecosystem),
                    trial_uuid: TrialUuid(uuid::Uuid::new_v4()),
                    student_uuid: StudentUuid(student),
                    exercise_uuid: ExerciseUuid(exercise),
                    is_correct: offset % 2 == 0,
                    is_real_response: true,
                    responded_at: Timestamp("2017-06-27T23:26:48.986100Z".into()),
                }),
            };
            let encoded = biglearn_events::course_event_record(&event);
            biglearn_stream::OutgoingRecord {
                key: encoded.key,
                value: encoded.value,
                headers: encoded.headers,
            }
        })
        .collect()
}

/// The settings version production's writer stamps (from `/admin/state_digest`).
async fn production_settings_version(
    client: &reqwest::Client,
    addr: SocketAddr,
) -> anyhow::Result<i64> {
    let answer: Value = client
        .post(format!("http://{addr}/admin/state_digest"))
        .header("Biglearn-Admin-Token", TOKEN)
        .header("Biglearn-Actor", "bench")
        .json(&json!({}))
        .send()
        .await?
        .json()
        .await?;
    answer["settings_version"]
        .as_i64()
        .context("/admin/state_digest answered without settings_version")
}

/// The largest `biglearn_consumer_lag_seconds` of a /metrics text.
fn max_lag_seconds(metrics_text: &str) -> f64 {
    metrics_text
        .lines()
        .filter(|line| line.starts_with("biglearn_consumer_lag_seconds"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, f64::max)
}

fn tempfile_dir(role: &str) -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "biglearn-bench-staging-{role}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_buckets() {
        let text = "biglearn_event_age_seconds_bucket{component=\"projector\",le=\"0.1\"} 50\n\
            biglearn_event_age_seconds_bucket{component=\"projector\",le=\"1\"} 100\n\
            biglearn_event_age_seconds_bucket{component=\"projector\",le=\"+Inf\"} 100\n\
            biglearn_event_age_seconds_bucket{component=\"event_log\",le=\"0.1\"} 7\n";
        let (n, p50, p99) = age_quantiles(text, "projector");
        assert_eq!(n, 100);
        assert!((p50 - 0.1).abs() < 1e-9, "{p50}");
        assert!((p99 - (0.1 + 0.9 * 49.0 / 50.0)).abs() < 1e-9, "{p99}");
        assert_eq!(age_quantiles(text, "state").0, 0);
    }
}
