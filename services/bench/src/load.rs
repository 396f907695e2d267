//! `biglearn bench ingest` and `bench append`: load generators that print one JSON line each, beside a baseline measured in the same run.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde_json::json;
use uuid::Uuid;

use biglearn_domain::events::{CourseEvent, CoursePayload, EnvelopeMeta, RecordResponse};
use biglearn_domain::ids::{
    CourseUuid, EcosystemUuid, EventUuid, ExerciseUuid, ResponseUuid, SequenceNumber, StudentUuid,
    TrialUuid,
};
use biglearn_stream::embedded::EmbeddedStore;
use biglearn_stream::{OutgoingRecord, StreamStore, Topics};

use crate::measure::{api_token, ms3, summarize};

/// Students on each simulated course roster.
const STUDENTS_PER_COURSE: usize = 40;
/// Size of the exercise pool that responses draw from.
const N_EXERCISES: usize = 1000;
/// Every simulated response carries this answer time; the server does not order by it.
const RESPONDED_AT: &str = "2026-11-27T12:00:00.000000Z";

/// Options of `biglearn bench ingest`.
#[derive(Args, Debug)]
pub struct IngestArgs {
    /// Base URL of the server under test.
    #[arg(long, default_value = "http://127.0.0.1:3000", env = "BIGLEARN_TARGET")]
    target: String,
    /// The API token (default: $BIGLEARN_API_TOKEN, else `<data-dir>/api-token`).
    #[arg(long, env = "BIGLEARN_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Data directory whose `api-token` file to use when no token is given.
    #[arg(long, default_value = "./biglearn-data", env = "BIGLEARN_DATA_DIR")]
    data_dir: PathBuf,
    /// Concurrent clients (one keep-alive connection each).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// record_responses requests in total (and as many /ping requests before them).
    #[arg(long, default_value_t = 10_000)]
    requests: u64,
    /// Responses per request.
    #[arg(long, default_value_t = 10)]
    batch: usize,
    /// Courses (default: the concurrency); each belongs to one client, so that sequence
    /// numbers never conflict.
    #[arg(long)]
    courses: Option<usize>,
    /// Seed of the uuids; reuse against the same server only to measure duplicates.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The server's stream backend, copied into the output (the HTTP API does not say).
    #[arg(long, default_value = "embedded")]
    backend: String,
}

/// Options of `biglearn bench append`.
#[derive(Args, Debug)]
pub struct AppendArgs {
    /// A new or empty directory for the store (it is not removed afterwards).
    #[arg(long)]
    data_dir: PathBuf,
    /// Records to append in total.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Concurrent appenders.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Records per append.
    #[arg(long, default_value_t = 10)]
    batch: usize,
    /// Courses (default: the concurrency).
    #[arg(long)]
    courses: Option<usize>,
    /// Seed of the uuids.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// SplitMix64: a tiny deterministic generator, cheap enough not to load the client.
#[derive(Clone, Debug)]
struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn uuid(&mut self) -> Uuid {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        bytes[8..].copy_from_slice(&self.next_u64().to_le_bytes());
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// One simulated course and the next sequence number its owner sends.
#[derive(Clone, Debug)]
struct Course {
    course_uuid: Uuid,
    ecosystem_uuid: Uuid,
    students: Vec<Uuid>,
    next_sequence: i64,
}

/// One response of a batch, with Tutor's fields.
#[derive(Clone, Debug, PartialEq)]
struct ResponseItem {
    response_uuid: Uuid,
    course_uuid: Uuid,
    sequence_number: i64,
    ecosystem_uuid: Uuid,
    trial_uuid: Uuid,
    student_uuid: Uuid,
    exercise_uuid: Uuid,
    is_correct: bool,
}

/// The courses of a run, dealt to `concurrency` owners: course `i` goes to owner
/// `i % concurrency`, so no two owners ever send for the same course.
fn deal_courses(
    seed: u64,
    n_courses: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<Vec<Course>>> {
    anyhow::ensure!(concurrency >= 1, "--concurrency must be at least 1");
    anyhow::ensure!(
        n_courses >= concurrency,
        "--courses ({n_courses}) must be at least --concurrency ({concurrency}): every client needs a course of its own"
    );
    let mut rng = SplitMix64::new(seed);
    let mut owners: Vec<Vec<Course>> = vec![Vec::new(); concurrency];
    for index in 0..n_courses {
        let course = Course {
            course_uuid: rng.uuid(),
            ecosystem_uuid: rng.uuid(),
            students: (0..STUDENTS_PER_COURSE).map(|_| rng.uuid()).collect(),
            // 0 is the course's create_course.
            next_sequence: 1,
        };
        owners[index % concurrency].push(course);
    }
    Ok(owners)
}

/// The exercise pool shared by every course.
fn exercise_pool(seed: u64) -> Arc<[Uuid]> {
    let mut rng = SplitMix64::new(seed ^ 0x005E_ED0F_E4E2_C15E);
    (0..N_EXERCISES).map(|_| rng.uuid()).collect()
}

/// Batches of responses for one owner's courses, round robin, with increasing
/// sequence numbers per course (no gaps, no reuse).
struct ResponseSource {
    courses: Vec<Course>,
    exercises: Arc<[Uuid]>,
    next_course: usize,
    rng: SplitMix64,
}

impl ResponseSource {
    fn new(courses: Vec<Course>, exercises: Arc<[Uuid]>, seed: u64, owner: usize) -> Self {
        let mut mix =
            SplitMix64::new(seed ^ (owner as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407));
        let rng = SplitMix64::new(mix.next_u64());
        ResponseSource {
            courses,
            exercises,
            next_course: 0,
            rng,
        }
    }

    fn next_batch(&mut self, batch: usize) -> Vec<ResponseItem> {
        let index = self.next_course % self.courses.len().max(1);
        self.next_course = index + 1;
        let Some(course) = self.courses.get_mut(index) else {
            return Vec::new();
        };
        let rng = &mut self.rng;
        (0..batch)
            .map(|_| {
                let sequence_number = course.next_sequence;
                course.next_sequence += 1;
                ResponseItem {
                    response_uuid: rng.uuid(),
                    course_uuid: course.course_uuid,
                    sequence_number,
                    ecosystem_uuid: course.ecosystem_uuid,
                    trial_uuid: rng.uuid(),
                    student_uuid: course.students[rng.below(course.students.len())],
                    exercise_uuid: self.exercises[rng.below(self.exercises.len())],
                    is_correct: rng.next_u64() & 1 == 1,
                }
            })
            .collect()
    }
}

/// The `/record_responses` body, formatted by hand: the client shares the machine with
/// the server, so it must stay cheap.
fn record_responses_body(items: &[ResponseItem]) -> String {
    let mut body = String::with_capacity(64 + items.len() * 420);
    body.push_str("{\"responses\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        // Writing to a String cannot fail.
        let _ = write!(
            body,
            "{{\"response_uuid\":\"{}\",\"course_uuid\":\"{}\",\"sequence_number\":{},\"ecosystem_uuid\":\"{}\",\"trial_uuid\":\"{}\",\"student_uuid\":\"{}\",\"exercise_uuid\":\"{}\",\"is_correct\":{},\"is_real_response\":true,\"responded_at\":\"{RESPONDED_AT}\"}}",
            item.response_uuid,
            item.course_uuid,
            item.sequence_number,
            item.ecosystem_uuid,
            item.trial_uuid,
            item.student_uuid,
            item.exercise_uuid,
            item.is_correct,
        );
    }
    body.push_str("]}");
    body
}

/// A response as the writer would append it (event uuid = response uuid).
fn record_response_event(item: &ResponseItem, accepted_at_micros: i64) -> CourseEvent {
    CourseEvent {
        meta: EnvelopeMeta {
            event_uuid: EventUuid(item.response_uuid),
            sequence_number: SequenceNumber(item.sequence_number),
            accepted_at_micros,
            writer_id: "biglearn-bench".to_owned(),
            settings_version: 0,
            metadata_sequence_number: None,
        },
        course_uuid: CourseUuid(item.course_uuid),
        payload: CoursePayload::RecordResponse(RecordResponse {
            response_uuid: ResponseUuid(item.response_uuid),
            course_uuid: CourseUuid(item.course_uuid),
            sequence_number: SequenceNumber(item.sequence_number),
            ecosystem_uuid: EcosystemUuid(item.ecosystem_uuid),
            trial_uuid: TrialUuid(item.trial_uuid),
            student_uuid: StudentUuid(item.student_uuid),
            exercise_uuid: ExerciseUuid(item.exercise_uuid),
            is_correct: item.is_correct,
            is_real_response: true,
            responded_at: RESPONDED_AT.into(),
        }),
    }
}

/// What one phase of requests measured.
#[derive(Debug, Default)]
struct PhaseOutcome {
    elapsed: Duration,
    ok: u64,
    errors: u64,
    latencies_micros: Vec<u64>,
    first_error: Option<String>,
}

impl PhaseOutcome {
    fn merge(&mut self, other: WorkerOutcome) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.latencies_micros.extend(other.latencies_micros);
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn per_second(&self, count: u64) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            count as f64 / seconds
        } else {
            0.0
        }
    }
}

/// What one client task measured.
#[derive(Debug, Default)]
struct WorkerOutcome {
    ok: u64,
    errors: u64,
    latencies_micros: Vec<u64>,
    first_error: Option<String>,
}

impl WorkerOutcome {
    fn fail(&mut self, message: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(message);
        }
    }
}

/// Takes one request from the shared budget; `false` once it is spent.
fn take(budget: &AtomicU64, total: u64) -> bool {
    budget.fetch_add(1, Ordering::Relaxed) < total
}

/// Sends one request; counts any non-200 answer or transport error as an error.
async fn send_timed(request: reqwest::RequestBuilder, outcome: &mut WorkerOutcome) {
    let started = Instant::now();
    let answer = request.send().await;
    let result = match answer {
        Ok(response) => {
            let status = response.status();
            match response.bytes().await {
                Ok(_) if status == reqwest::StatusCode::OK => Ok(()),
                Ok(body) => Err(format!(
                    "HTTP {status}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(300)])
                )),
                Err(error) => Err(format!("reading the answer failed: {error}")),
            }
        }
        Err(error) => Err(format!("request failed: {error}")),
    };
    outcome
        .latencies_micros
        .push(started.elapsed().as_micros() as u64);
    match result {
        Ok(()) => outcome.ok += 1,
        Err(message) => outcome.fail(message),
    }
}

/// `biglearn bench ingest`: a /ping baseline, then record_responses, one JSON line.
pub async fn ingest(args: IngestArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=1000).contains(&args.batch),
        "--batch must be in 1..=1000 (the spec's limit)"
    );
    let token = api_token(args.token.as_deref(), &args.data_dir)?;
    let base = args.target.trim_end_matches('/').to_owned();
    let concurrency = args.concurrency;
    let owners = deal_courses(args.seed, args.courses.unwrap_or(concurrency), concurrency)?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .build()
        .context("cannot build the HTTP client")?;

    create_courses(&client, &base, &token, &owners, concurrency).await?;

    // The HTTP ceiling: as many /ping requests, same concurrency, same client.
    let ping_url = format!("{base}/ping");
    let mut ping = run_phase(concurrency, args.requests, |_| {
        let client = client.clone();
        let url = ping_url.clone();
        move || client.get(&url)
    })
    .await;

    let record_url = format!("{base}/record_responses");
    let exercises = exercise_pool(args.seed);
    let mut sources: Vec<Option<ResponseSource>> = owners
        .into_iter()
        .enumerate()
        .map(|(owner, courses)| {
            Some(ResponseSource::new(
                courses,
                Arc::clone(&exercises),
                args.seed,
                owner,
            ))
        })
        .collect();
    let batch = args.batch;
    let mut ingest = run_phase(concurrency, args.requests, |owner| {
        let client = client.clone();
        let url = record_url.clone();
        let token = token.clone();
        let mut source = sources[owner].take();
        move || {
            let body = source
                .as_mut()
                .map(|source| record_responses_body(&source.next_batch(batch)))
                .unwrap_or_default();
            client
                .post(&url)
                .header("Biglearn-Api-Token", &token)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body)
        }
    })
    .await;

    let latency = summarize(std::mem::take(&mut ingest.latencies_micros));
    let ping_latency = summarize(std::mem::take(&mut ping.latencies_micros));
    let requests_per_s = ingest.per_second(ingest.ok);
    let line = json!({
        "bench": "ingest",
        "backend": args.backend,
        "concurrency": concurrency,
        "batch": batch,
        "requests": ingest.ok + ingest.errors,
        "responses_per_s": (requests_per_s * batch as f64).round(),
        "requests_per_s": requests_per_s.round(),
        "p50_ms": ms3(latency.p50_ms),
        "p99_ms": ms3(latency.p99_ms),
        "max_ms": ms3(latency.max_ms),
        "errors": ingest.errors + ping.errors,
        "ping_requests_per_s": ping.per_second(ping.ok).round(),
        "ping_p50_ms": ms3(ping_latency.p50_ms),
        "ping_p99_ms": ms3(ping_latency.p99_ms),
    });
    println!("{line}");
    if let Some(error) = ping.first_error.or(ingest.first_error) {
        anyhow::bail!(
            "{} requests failed; the first: {error}",
            ingest.errors + ping.errors
        );
    }
    Ok(())
}

/// Sends `/create_course` (sequence 0) for every course, as Tutor does before responses.
async fn create_courses(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    owners: &[Vec<Course>],
    concurrency: usize,
) -> anyhow::Result<()> {
    let bodies: Vec<String> = owners
        .iter()
        .flatten()
        .map(|course| {
            json!({
                "course_uuid": course.course_uuid.to_string(),
                "ecosystem_uuid": course.ecosystem_uuid.to_string(),
                "is_real_course": true,
                "starts_at": "2026-09-01T00:00:00.000000Z",
                "ends_at": "2027-01-31T00:00:00.000000Z",
                "created_at": "2026-08-15T00:00:00.000000Z",
            })
            .to_string()
        })
        .collect();
    let bodies = Arc::new(bodies);
    let url = format!("{base}/create_course");
    let next = Arc::new(AtomicU64::new(0));
    let created = run_phase(concurrency, bodies.len() as u64, |_| {
        let client = client.clone();
        let url = url.clone();
        let token = token.to_owned();
        let bodies = Arc::clone(&bodies);
        let next = Arc::clone(&next);
        move || {
            let index = next.fetch_add(1, Ordering::Relaxed) as usize;
            client
                .post(&url)
                .header("Biglearn-Api-Token", &token)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(bodies.get(index).cloned().unwrap_or_default())
        }
    })
    .await;
    if let Some(error) = created.first_error {
        anyhow::bail!(
            "create_course failed for {} of {} courses; the first: {error} (is the server at {base} up, and the token right?)",
            created.errors,
            bodies.len()
        );
    }
    Ok(())
}

/// Runs `concurrency` client tasks that share a budget of `total` requests; each task
/// builds its requests with the closure `make(owner)` returns.
async fn run_phase<M, B>(concurrency: usize, total: u64, mut make: M) -> PhaseOutcome
where
    M: FnMut(usize) -> B,
    B: FnMut() -> reqwest::RequestBuilder + Send + 'static,
{
    let budget = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|owner| {
            let mut build = make(owner);
            let budget = Arc::clone(&budget);
            tokio::spawn(async move {
                let mut outcome = WorkerOutcome::default();
                while take(&budget, total) {
                    send_timed(build(), &mut outcome).await;
                }
                outcome
            })
        })
        .collect();
    let mut phase = PhaseOutcome::default();
    for task in tasks {
        match task.await {
            Ok(outcome) => phase.merge(outcome),
            Err(error) => phase.merge(WorkerOutcome {
                errors: 1,
                first_error: Some(format!("a client task failed: {error}")),
                ..WorkerOutcome::default()
            }),
        }
    }
    phase.elapsed = started.elapsed();
    phase
}

/// `biglearn bench append`: raw appends to a fresh embedded store, one JSON line.
pub async fn append(args: AppendArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.batch >= 1, "--batch must be at least 1");
    ensure_fresh_dir(&args.data_dir)?;
    let concurrency = args.concurrency;
    let owners = deal_courses(args.seed, args.courses.unwrap_or(concurrency), concurrency)?;
    let store = Arc::new(
        EmbeddedStore::open(&args.data_dir)
            .with_context(|| format!("cannot open a store in {}", args.data_dir.display()))?,
    );
    let topics = Topics::new("bench");
    let topic = topics.course_events();
    let specs: Vec<_> = topics
        .all_specs(biglearn_node::run::partitions_scale(
            &biglearn_node::run::Backend::Embedded,
        ))
        .into_iter()
        .filter(|spec| spec.name == topic)
        .collect();
    store
        .ensure_topics(&specs)
        .await
        .context("cannot create the course-events topic")?;

    // Encode everything first, so that the timed part is the store alone.
    let n_appends = args.records.div_ceil(args.batch as u64);
    let exercises = exercise_pool(args.seed);
    let encode_started = Instant::now();
    let mut queues: Vec<Vec<Vec<OutgoingRecord>>> = vec![Vec::new(); concurrency];
    let mut sources: Vec<ResponseSource> = owners
        .into_iter()
        .enumerate()
        .map(|(owner, courses)| {
            ResponseSource::new(courses, Arc::clone(&exercises), args.seed, owner)
        })
        .collect();
    let accepted_at_micros = 1_795_000_000_000_000;
    for index in 0..n_appends as usize {
        let owner = index % concurrency;
        let records = sources[owner]
            .next_batch(args.batch)
            .iter()
            .map(|item| {
                let encoded = biglearn_events::course_event_record(&record_response_event(
                    item,
                    accepted_at_micros,
                ));
                OutgoingRecord {
                    key: encoded.key,
                    value: encoded.value,
                    headers: encoded.headers,
                }
            })
            .collect();
        queues[owner].push(records);
    }
    let n_records = n_appends * args.batch as u64;
    let encode_elapsed = encode_started.elapsed();
    let record_bytes: usize = queues
        .iter()
        .flatten()
        .flatten()
        .map(|record| {
            record.key.len()
                + record.value.len()
                + record
                    .headers
                    .iter()
                    .map(|(name, value)| name.len() + value.len())
                    .sum::<usize>()
        })
        .sum();

    let fsyncs_before = store.fsync_count();
    let commits_before = store.commit_count();
    let started = Instant::now();
    let tasks: Vec<_> = queues
        .into_iter()
        .map(|batches| {
            let store = Arc::clone(&store);
            let topic = topic.clone();
            tokio::spawn(async move {
                let mut outcome = WorkerOutcome::default();
                for records in batches {
                    let timer = Instant::now();
                    let result = store.append(&topic, records).await;
                    outcome
                        .latencies_micros
                        .push(timer.elapsed().as_micros() as u64);
                    match result {
                        Ok(outcomes) => match outcomes.iter().find_map(|o| o.as_ref().err()) {
                            None => outcome.ok += 1,
                            Some(error) => outcome.fail(error.to_string()),
                        },
                        Err(error) => outcome.fail(error.to_string()),
                    }
                }
                outcome
            })
        })
        .collect();
    let mut phase = PhaseOutcome::default();
    for task in tasks {
        match task.await {
            Ok(outcome) => phase.merge(outcome),
            Err(error) => phase.merge(WorkerOutcome {
                errors: 1,
                first_error: Some(format!("an appender task failed: {error}")),
                ..WorkerOutcome::default()
            }),
        }
    }
    phase.elapsed = started.elapsed();
    let latency = summarize(std::mem::take(&mut phase.latencies_micros));
    let appends_per_s = phase.per_second(phase.ok);
    let commits = store.commit_count() - commits_before;
    let line = json!({
        "bench": "append",
        "backend": "embedded",
        "concurrency": concurrency,
        "batch": args.batch,
        "records": n_records,
        "records_per_s": (appends_per_s * args.batch as f64).round(),
        "appends_per_s": appends_per_s.round(),
        "p50_ms": ms3(latency.p50_ms),
        "p99_ms": ms3(latency.p99_ms),
        "max_ms": ms3(latency.max_ms),
        "errors": phase.errors,
        "fsyncs": store.fsync_count() - fsyncs_before,
        "commits": commits,
        "records_per_commit": if commits > 0 { (n_records as f64 / commits as f64).round() } else { 0.0 },
        "bytes_per_record": record_bytes as u64 / n_records.max(1),
        "encode_us_per_record": ms3(encode_elapsed.as_secs_f64() * 1e6 / n_records.max(1) as f64),
    });
    println!("{line}");
    if let Some(error) = phase.first_error {
        anyhow::bail!("{} appends failed; the first: {error}", phase.errors);
    }
    Ok(())
}

/// Refuses a directory that holds anything: the benchmark must not write into real data.
fn ensure_fresh_dir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => anyhow::ensure!(
            entries.next().is_none(),
            "{} is not empty; give bench append a new directory (it must not write into real data)",
            dir.display()
        ),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(error).with_context(|| format!("cannot read {}", dir.display()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Per course, the sequence numbers a run of batches produced, in send order.
    fn sequences_by_course(
        sources: &mut [ResponseSource],
        rounds: usize,
        batch: usize,
    ) -> HashMap<Uuid, (usize, Vec<i64>)> {
        let mut seen: HashMap<Uuid, (usize, Vec<i64>)> = HashMap::new();
        for _ in 0..rounds {
            for (owner, source) in sources.iter_mut().enumerate() {
                for item in source.next_batch(batch) {
                    let entry = seen.entry(item.course_uuid).or_insert((owner, Vec::new()));
                    assert_eq!(entry.0, owner, "a course is sent by two owners");
                    entry.1.push(item.sequence_number);
                }
            }
        }
        seen
    }

    fn sources(seed: u64, courses: usize, concurrency: usize) -> Vec<ResponseSource> {
        let exercises = exercise_pool(seed);
        deal_courses(seed, courses, concurrency)
            .unwrap()
            .into_iter()
            .enumerate()
            .map(|(owner, courses)| {
                ResponseSource::new(courses, Arc::clone(&exercises), seed, owner)
            })
            .collect()
    }

    #[test]
    fn every_course_gets_contiguous_sequence_numbers_from_one_owner() {
        fn check(courses: usize, concurrency: usize, rounds: usize, batch: usize) {
            let mut sources = sources(7, courses, concurrency);
            let seen = sequences_by_course(&mut sources, rounds, batch);
            assert_eq!(seen.len(), courses.min(concurrency * rounds));
            let total: usize = seen.values().map(|(_, numbers)| numbers.len()).sum();
            assert_eq!(total, concurrency * rounds * batch);
            for (_, numbers) in seen.values() {
                let expected: Vec<i64> = (1..=numbers.len() as i64).collect();
                assert_eq!(numbers, &expected);
            }
        }
        check(4, 4, 5, 10);
        check(10, 3, 7, 10);
        check(64, 8, 3, 1);
    }

    #[test]
    fn fewer_courses_than_clients_is_refused() {
        fn check(courses: usize, concurrency: usize, expected_ok: bool) {
            assert_eq!(deal_courses(1, courses, concurrency).is_ok(), expected_ok);
        }
        check(3, 4, false);
        check(4, 4, true);
        check(1, 0, false);
    }

    #[test]
    fn the_same_seed_sends_the_same_responses() {
        let first = sources(3, 4, 2)[1].next_batch(5);
        let again = sources(3, 4, 2)[1].next_batch(5);
        let other = sources(4, 4, 2)[1].next_batch(5);
        assert_eq!(first, again);
        assert_ne!(first, other);
    }

    #[test]
    fn the_body_is_a_valid_record_responses_request() {
        let items = sources(1, 2, 2)[0].next_batch(3);
        let body: serde_json::Value = serde_json::from_str(&record_responses_body(&items)).unwrap();
        let responses = body["responses"].as_array().unwrap();
        assert_eq!(responses.len(), 3);
        for (response, item) in responses.iter().zip(&items) {
            assert_eq!(response["response_uuid"], item.response_uuid.to_string());
            assert_eq!(response["course_uuid"], item.course_uuid.to_string());
            assert_eq!(response["sequence_number"], item.sequence_number);
            assert_eq!(response["ecosystem_uuid"], item.ecosystem_uuid.to_string());
            assert_eq!(response["trial_uuid"], item.trial_uuid.to_string());
            assert_eq!(response["student_uuid"], item.student_uuid.to_string());
            assert_eq!(response["exercise_uuid"], item.exercise_uuid.to_string());
            assert_eq!(response["is_correct"], item.is_correct);
            assert_eq!(response["is_real_response"], true);
            assert_eq!(response["responded_at"], RESPONDED_AT);
            assert_eq!(response.as_object().unwrap().len(), 10);
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        fn check(micros: Vec<u64>, expected: (f64, f64, f64)) {
            let summary = summarize(micros);
            assert_eq!((summary.p50_ms, summary.p99_ms, summary.max_ms), expected);
        }
        check(vec![], (0.0, 0.0, 0.0));
        check(vec![5000], (5.0, 5.0, 5.0));
        check(
            (1..=100).rev().map(|ms| ms * 1000).collect(),
            (50.0, 99.0, 100.0),
        );
        check(vec![1000, 3000, 2000], (2.0, 3.0, 3.0));
    }

    #[test]
    fn the_budget_stops_after_the_total() {
        let budget = AtomicU64::new(0);
        let taken = (0..100).take_while(|_| take(&budget, 7)).count();
        assert_eq!(taken, 7);
    }

    #[tokio::test]
    async fn appends_land_in_a_fresh_store_and_a_used_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store_dir = dir.path().join("store");
        let args = AppendArgs {
            data_dir: store_dir.clone(),
            records: 95,
            concurrency: 3,
            batch: 10,
            courses: None,
            seed: 1,
        };
        append(args).await.unwrap();
        let store = EmbeddedStore::open(&store_dir).unwrap();
        let written: i64 = store
            .high_watermarks("bench.course-events")
            .await
            .unwrap()
            .iter()
            .sum();
        assert_eq!(written, 100);
        drop(store);
        let again = AppendArgs {
            data_dir: store_dir,
            records: 10,
            concurrency: 1,
            batch: 10,
            courses: None,
            seed: 1,
        };
        assert!(append(again).await.is_err());
    }
}
