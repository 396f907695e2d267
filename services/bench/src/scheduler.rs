//! `biglearn bench scheduler`: read latency at a fixed request rate beside a `/ping` baseline, and response → served CLUE latency under simulator load.
//!
//! Probe courses are created first (one ecosystem, one student and one reading each), so
//! that the measurement never depends on what the simulator happens to send: a probe
//! reads its student's CLUE, records one response, and polls until the served CLUE
//! differs. Latency is counted from the `200` of `record_responses` (the response is
//! accepted) to the first answer carrying the new CLUE.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::measure::{api_token, ms3, scrape, summarize, LatencySummary};
use biglearn_stream::clock::now_micros;

/// Exercises (each its own group) in a probe ecosystem: warm-up plus timed responses.
const PROBE_EXERCISES: usize = 64;
/// Untimed responses that make the probe CLUE real (`local_query` needs 3).
const WARM_UP: [bool; 3] = [false, true, true];
/// Longest wait for one probe's CLUE before it is counted as not updated.
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);
/// Poll interval while waiting for an updated CLUE.
const PROBE_POLL: Duration = Duration::from_millis(5);
/// Untimed `/ping` load before the read phases.
const WARM_UP_SECONDS: u64 = 2;
/// Open-loop read load is issued in ticks of this length.
const READ_TICK: Duration = Duration::from_millis(10);

/// Options of `biglearn bench scheduler`.
#[derive(Args, Debug)]
pub struct SchedulerBenchArgs {
    /// Base URL of the server under test (a node running the projector role, e.g. `biglearn up`).
    #[arg(long, default_value = "http://127.0.0.1:3000", env = "BIGLEARN_TARGET")]
    target: String,
    /// The API token (default: $BIGLEARN_API_TOKEN, else `<data-dir>/api-token`).
    #[arg(long, env = "BIGLEARN_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Data directory whose `api-token` file to use when no token is given.
    #[arg(long, default_value = "./biglearn-data", env = "BIGLEARN_DATA_DIR")]
    data_dir: std::path::PathBuf,
    /// Probe courses, each with one probed student.
    #[arg(long, default_value_t = 8)]
    probe_courses: usize,
    /// Timed responses per probe course (at most 61).
    #[arg(long, default_value_t = 25)]
    probes: usize,
    /// Pause between two responses of a probe student, in milliseconds (a student's pace).
    #[arg(long, default_value_t = 1500)]
    probe_interval_ms: u64,
    /// Simulated courses driven beside the probes (each course's requests go one at a time).
    #[arg(long, default_value_t = 100)]
    sim_courses: usize,
    /// Students per simulated course.
    #[arg(long, default_value_t = 40)]
    sim_students: usize,
    /// Weeks of each simulated semester (a finished semester starts the next seed).
    #[arg(long, default_value_t = 8)]
    sim_weeks: u32,
    /// Simulator requests per second.
    #[arg(long, default_value_t = 5000.0)]
    sim_rate: f64,
    /// Simulator requests in flight.
    #[arg(long, default_value_t = 64)]
    sim_concurrency: usize,
    /// Seed of the first simulated semester (+1 per further semester). Against a server
    /// that has seen a seed already, use another one: its events would be duplicates.
    #[arg(long, default_value_t = 1000)]
    sim_seed: u64,
    /// Read requests per second in the read phases.
    #[arg(long, default_value_t = 5000)]
    read_rate: u64,
    /// Length of each read phase, in seconds.
    #[arg(long, default_value_t = 15)]
    read_seconds: u64,
    /// Most read requests in flight; a request that would exceed it is counted as missed.
    #[arg(long, default_value_t = 256)]
    read_in_flight: usize,
    /// Skip the read phases.
    #[arg(long)]
    skip_reads: bool,
    /// Skip the response → CLUE phase.
    #[arg(long)]
    skip_clues: bool,
}

/// One probe course: its student, chapter and reading.
#[derive(Clone, Debug)]
struct Probe {
    ecosystem: Uuid,
    course: Uuid,
    chapter: Uuid,
    student: Uuid,
    assignment: Uuid,
    exercises: Vec<Uuid>,
    trials: Vec<Uuid>,
    next_sequence: i64,
    responses_sent: usize,
}

/// A small HTTP client for the API.
#[derive(Clone)]
struct Api {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let answer = self
            .client
            .post(format!("{}{path}", self.base))
            .header("Biglearn-Api-Token", &self.token)
            .json(body)
            .send()
            .await
            .with_context(|| format!("POST {path} failed; is the server at {} up?", self.base))?;
        let status = answer.status();
        let text = answer
            .text()
            .await
            .with_context(|| format!("reading the answer of POST {path}"))?;
        anyhow::ensure!(
            status == reqwest::StatusCode::OK,
            "POST {path} answered {status}: {}",
            &text[..text.len().min(400)]
        );
        serde_json::from_str(&text).with_context(|| format!("POST {path} answered non-JSON"))
    }

    async fn student_clue(&self, probe: &Probe) -> anyhow::Result<Value> {
        let answer = self
            .post(
                "/fetch_student_clues",
                &json!({"student_clue_requests": [{
                    "request_uuid": Uuid::new_v4(),
                    "student_uuid": probe.student,
                    "book_container_uuid": probe.chapter,
                    "algorithm_name": "local_query",
                }]}),
            )
            .await?;
        Ok(answer["student_clue_responses"][0].clone())
    }
}

/// Runs the benchmark and prints one JSON line per phase.
pub async fn scheduler_bench(args: SchedulerBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.probes + WARM_UP.len() <= PROBE_EXERCISES,
        "--probes must be at most {}",
        PROBE_EXERCISES - WARM_UP.len()
    );
    anyhow::ensure!(
        args.probe_courses >= 1,
        "--probe-courses must be at least 1"
    );
    anyhow::ensure!(args.read_rate >= 1, "--read-rate must be at least 1");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.read_in_flight.max(args.probe_courses))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .build()
        .context("cannot build the HTTP client")?;
    let api = Api {
        client,
        base: args.target.trim_end_matches('/').to_owned(),
        token: api_token(args.token.as_deref(), &args.data_dir)?,
    };

    let mut probes = Vec::with_capacity(args.probe_courses);
    for _ in 0..args.probe_courses {
        probes.push(create_probe(&api).await?);
    }
    for probe in &mut probes {
        for correct in WARM_UP {
            record_response(&api, probe, correct).await?;
        }
    }
    for probe in &probes {
        wait_for(&api, probe, PROBE_TIMEOUT * 2, |clue| {
            clue["clue_data"]["is_real"] == true
        })
        .await
        .context("a probe student's CLUE never became real after the warm-up responses; is the projector role running on this node?")?;
        wait_for_pes(&api, probe).await?;
    }

    if !args.skip_reads {
        read_phases(&api, &probes, &args).await?;
    }
    if !args.skip_clues {
        clue_phase(&api, probes, &args).await?;
    }
    Ok(())
}

/// Creates one probe ecosystem, course, roster and reading.
async fn create_probe(api: &Api) -> anyhow::Result<Probe> {
    let probe = Probe {
        ecosystem: Uuid::new_v4(),
        course: Uuid::new_v4(),
        chapter: Uuid::new_v4(),
        student: Uuid::new_v4(),
        assignment: Uuid::new_v4(),
        exercises: (0..PROBE_EXERCISES).map(|_| Uuid::new_v4()).collect(),
        trials: (0..PROBE_EXERCISES).map(|_| Uuid::new_v4()).collect(),
        next_sequence: 1,
        responses_sent: 0,
    };
    let period = Uuid::new_v4();
    api.post(
        "/create_ecosystem",
        &json!({
            "ecosystem_uuid": probe.ecosystem,
            "book": {"contents": [{
                "container_uuid": probe.chapter,
                "container_parent_uuid": probe.ecosystem,
                "pools": [{
                    "use_for_clue": true,
                    "use_for_personalized_for_assignment_types": ["reading", "practice"],
                    "exercise_uuids": probe.exercises,
                }],
            }]},
            "exercises": probe.exercises.iter().map(|exercise| json!({
                "exercise_uuid": exercise,
                "group_uuid": Uuid::new_v4(),
                "version": 1,
                "los": ["lo1"],
            })).collect::<Vec<_>>(),
            "imported_at": "2026-08-01T00:00:00.000000Z",
        }),
    )
    .await?;
    api.post(
        "/create_course",
        &json!({
            "course_uuid": probe.course,
            "ecosystem_uuid": probe.ecosystem,
            "is_real_course": true,
            "starts_at": "2026-09-01T00:00:00.000000Z",
            "ends_at": "2027-01-31T00:00:00.000000Z",
            "created_at": "2026-08-15T00:00:00.000000Z",
        }),
    )
    .await?;
    api.post(
        "/update_rosters",
        &json!({"rosters": [{
            "request_uuid": Uuid::new_v4(),
            "course_uuid": probe.course,
            "sequence_number": 1,
            "course_containers": [{
                "container_uuid": period,
                "parent_container_uuid": probe.course,
                "created_at": "2026-08-15T00:00:01.000000Z",
            }],
            "students": [{
                "student_uuid": probe.student,
                "container_uuid": period,
                "enrolled_at": "2026-08-15T00:00:02.000000Z",
                "last_course_container_change_at": "2026-08-15T00:00:02.000000Z",
            }],
        }]}),
    )
    .await?;
    api.post(
        "/create_update_assignments",
        &json!({"assignments": [{
            "request_uuid": Uuid::new_v4(),
            "course_uuid": probe.course,
            "sequence_number": 2,
            "assignment_uuid": probe.assignment,
            "is_deleted": false,
            "ecosystem_uuid": probe.ecosystem,
            "student_uuid": probe.student,
            "assignment_type": "reading",
            "exclusion_info": {
                "opens_at": "2026-09-01T00:00:00.000000Z",
                "due_at": "2027-01-01T00:00:00.000000Z",
            },
            "assigned_book_container_uuids": [probe.chapter],
            "goal_num_tutor_assigned_spes": 3,
            "spes_are_assigned": false,
            "goal_num_tutor_assigned_pes": 3,
            "pes_are_assigned": false,
            "assigned_exercises": probe.trials.iter().zip(&probe.exercises).map(|(trial, exercise)| json!({
                "trial_uuid": trial,
                "exercise_uuid": exercise,
                "is_spe": false,
                "is_pe": false,
            })).collect::<Vec<_>>(),
            "created_at": "2026-08-20T00:00:00.000000Z",
            "updated_at": "2026-08-20T00:00:00.000000Z",
        }]}),
    )
    .await?;
    Ok(Probe {
        next_sequence: 3,
        ..probe
    })
}

/// Records the probe student's next response; returns when it is accepted.
async fn record_response(api: &Api, probe: &mut Probe, correct: bool) -> anyhow::Result<()> {
    let index = probe.responses_sent;
    anyhow::ensure!(index < PROBE_EXERCISES, "the probe ran out of exercises");
    api.post(
        "/record_responses",
        &json!({"responses": [{
            "response_uuid": Uuid::new_v4(),
            "course_uuid": probe.course,
            "sequence_number": probe.next_sequence,
            "ecosystem_uuid": probe.ecosystem,
            "trial_uuid": probe.trials[index],
            "student_uuid": probe.student,
            "exercise_uuid": probe.exercises[index],
            "is_correct": correct,
            "is_real_response": true,
            "responded_at": "2026-09-02T00:00:00.000000Z",
        }]}),
    )
    .await?;
    probe.next_sequence += 1;
    probe.responses_sent += 1;
    Ok(())
}

/// Polls the probe's student CLUE until `done` holds; `None` after `timeout`.
async fn wait_for(
    api: &Api,
    probe: &Probe,
    timeout: Duration,
    done: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let started = Instant::now();
    loop {
        let clue = api.student_clue(probe).await?;
        if clue["clue_status"] == "clue_ready" && done(&clue) {
            return Ok(clue);
        }
        anyhow::ensure!(
            started.elapsed() < timeout,
            "no matching CLUE within {timeout:?}; last answer: {clue}"
        );
        tokio::time::sleep(PROBE_POLL).await;
    }
}

async fn wait_for_pes(api: &Api, probe: &Probe) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let answer = api
            .post("/fetch_assignment_pes", &pe_request(probe))
            .await?;
        if answer["pe_responses"][0]["assignment_status"] == "assignment_ready" {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < PROBE_TIMEOUT * 2,
            "the probe reading's PEs never became ready: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn pe_request(probe: &Probe) -> Value {
    json!({"pe_requests": [{
        "request_uuid": Uuid::new_v4(),
        "assignment_uuid": probe.assignment,
        "algorithm_name": "local_query",
        "max_num_exercises": 3,
    }]})
}

/// The three read phases, one JSON line each; the `/ping` phase is the baseline.
async fn read_phases(api: &Api, probes: &[Probe], args: &SchedulerBenchArgs) -> anyhow::Result<()> {
    // Untimed: opens the client's connections, so the baseline phase does not pay for it.
    open_loop(
        api,
        probes,
        "ping",
        args.read_rate,
        WARM_UP_SECONDS,
        args.read_in_flight,
    )
    .await;
    let mut baseline: Option<LatencySummary> = None;
    for endpoint in ["ping", "fetch_student_clues", "fetch_assignment_pes"] {
        let outcome = open_loop(
            api,
            probes,
            endpoint,
            args.read_rate,
            args.read_seconds,
            args.read_in_flight,
        )
        .await;
        let latency = summarize(outcome.latencies_micros.clone());
        let ratio = |own: f64, base: f64| {
            if base > 0.0 {
                (own / base * 100.0).round() / 100.0
            } else {
                0.0
            }
        };
        let mut line = json!({
            "bench": "read_latency",
            "endpoint": endpoint,
            "target_rate": args.read_rate,
            "achieved_rate": (outcome.ok as f64 / outcome.elapsed.as_secs_f64() * 10.0).round() / 10.0,
            "seconds": args.read_seconds,
            "ok": outcome.ok,
            "errors": outcome.errors,
            "missed": outcome.missed,
            "p50_ms": ms3(latency.p50_ms),
            "p99_ms": ms3(latency.p99_ms),
            "max_ms": ms3(latency.max_ms),
        });
        if let Some(base) = &baseline {
            line["p50_vs_ping"] = json!(ratio(latency.p50_ms, base.p50_ms));
            line["p99_vs_ping"] = json!(ratio(latency.p99_ms, base.p99_ms));
        } else {
            baseline = Some(latency);
        }
        if let Some(error) = &outcome.first_error {
            line["first_error"] = json!(error);
        }
        println!("{line}");
        anyhow::ensure!(
            outcome.errors == 0,
            "{endpoint}: {} requests failed",
            outcome.errors
        );
    }
    Ok(())
}

#[derive(Debug, Default)]
struct OpenLoopOutcome {
    elapsed: Duration,
    ok: u64,
    errors: u64,
    missed: u64,
    latencies_micros: Vec<u64>,
    first_error: Option<String>,
}

/// Issues `read_rate` requests per second for `read_seconds`, each timed from when it was
/// due (not when it was sent), so a stalled server cannot hide its queueing delay.
async fn open_loop(
    api: &Api,
    probes: &[Probe],
    endpoint: &'static str,
    rate: u64,
    seconds: u64,
    in_flight: usize,
) -> OpenLoopOutcome {
    let in_flight = Arc::new(tokio::sync::Semaphore::new(in_flight.max(1)));
    let total = rate * seconds;
    let per_tick = rate as f64 * READ_TICK.as_secs_f64();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    let mut outcome = OpenLoopOutcome::default();
    let mut issued: u64 = 0;
    let mut tick: u32 = 0;
    while issued < total {
        let due = started + READ_TICK * tick;
        tokio::time::sleep_until(due.into()).await;
        tick += 1;
        let until = ((f64::from(tick) * per_tick).round() as u64).min(total);
        while issued < until {
            let probe = &probes[issued as usize % probes.len()];
            issued += 1;
            let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                outcome.missed += 1;
                continue;
            };
            let request = match endpoint {
                "ping" => api.client.get(format!("{}/ping", api.base)),
                "fetch_student_clues" => api
                    .client
                    .post(format!("{}/fetch_student_clues", api.base))
                    .header("Biglearn-Api-Token", &api.token)
                    .json(&json!({"student_clue_requests": [{
                        "request_uuid": Uuid::new_v4(),
                        "student_uuid": probe.student,
                        "book_container_uuid": probe.chapter,
                        "algorithm_name": "local_query",
                    }]})),
                _ => api
                    .client
                    .post(format!("{}/fetch_assignment_pes", api.base))
                    .header("Biglearn-Api-Token", &api.token)
                    .json(&pe_request(probe)),
            };
            tasks.push(tokio::spawn(async move {
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
                drop(permit);
                (due.elapsed().as_micros() as u64, result)
            }));
        }
    }
    for task in tasks {
        match task.await {
            Ok((micros, Ok(()))) => {
                outcome.ok += 1;
                outcome.latencies_micros.push(micros);
            }
            Ok((_, Err(message))) => {
                outcome.errors += 1;
                outcome.first_error.get_or_insert(message);
            }
            Err(error) => {
                outcome.errors += 1;
                outcome
                    .first_error
                    .get_or_insert(format!("a request task failed: {error}"));
            }
        }
    }
    outcome.elapsed = started.elapsed();
    outcome
}

/// Sums `biglearn_events_applied_total` for record_response over the scrape.
fn responses_applied(scrape: &str) -> f64 {
    scrape
        .lines()
        .filter(|line| {
            line.starts_with("biglearn_events_applied_total{")
                && line.contains("event_type=\"record_response\"")
                && line.contains("component=\"projector\"")
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Simulator load in the background, probes in the foreground.
async fn clue_phase(
    api: &Api,
    probes: Vec<Probe>,
    args: &SchedulerBenchArgs,
) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let simulator = {
        let stop = stop.clone();
        let target = api.base.clone();
        let token = api.token.clone();
        let (courses, students, weeks, rate, concurrency, first_seed) = (
            args.sim_courses,
            args.sim_students,
            args.sim_weeks,
            args.sim_rate,
            args.sim_concurrency,
            args.sim_seed,
        );
        tokio::spawn(async move {
            const WEEK_MICROS: i64 = 7 * 24 * 3600 * 1_000_000;
            let now = now_micros();
            let mut seed = first_seed;
            // Bounded: one semester per seed, at most 100 of them.
            while !stop.load(Ordering::Relaxed) && seed < first_seed + 100 {
                let mut workload = biglearn_simulator::WorkloadConfig::new(
                    courses,
                    students,
                    weeks,
                    seed,
                    now - i64::from(weeks) * WEEK_MICROS / 2,
                );
                workload.cutoff_micros = Some(now);
                let config = biglearn_simulator::SimulateConfig {
                    workload,
                    target: target.clone(),
                    token: token.clone(),
                    concurrency,
                    rate: Some(rate),
                    faults: Vec::new(),
                    truth_out: None,
                    request_timeout: Duration::from_secs(120),
                    slow_delay: Duration::from_secs(2),
                };
                if let Err(error) = biglearn_simulator::run_simulation(config).await {
                    tracing::warn!(%error, "The background simulation failed.");
                    return;
                }
                seed += 1;
            }
        })
    };
    // Let the simulator's course set-up pass and its responses flow.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = responses_applied(&scrape(&api.client, &api.base).await?);
    let measuring = Instant::now();

    let interval = Duration::from_millis(args.probe_interval_ms);
    let mut runs = Vec::new();
    for (index, mut probe) in probes.into_iter().enumerate() {
        let api = api.clone();
        let count = args.probes;
        // Staggered, so the probes do not arrive in lockstep.
        let offset = interval.mul_f64(index as f64 / args.probe_courses as f64);
        runs.push(tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            let mut latencies = Vec::with_capacity(count);
            let mut timeouts = 0u64;
            for _ in 0..count {
                tokio::time::sleep(interval).await;
                let shown = api.student_clue(&probe).await?["clue_data"].clone();
                record_response(&api, &mut probe, true).await?;
                let accepted = Instant::now();
                match wait_for(&api, &probe, PROBE_TIMEOUT, |clue| {
                    clue["clue_data"] != shown
                })
                .await
                {
                    Ok(_) => latencies.push(accepted.elapsed().as_micros() as u64),
                    Err(_) => timeouts += 1,
                }
            }
            anyhow::Ok((latencies, timeouts))
        }));
    }
    let mut latencies = Vec::new();
    let mut timeouts = 0;
    for run in runs {
        let (own, own_timeouts) = run.await.context("a probe task failed")??;
        latencies.extend(own);
        timeouts += own_timeouts;
    }
    let elapsed = measuring.elapsed();
    let after = responses_applied(&scrape(&api.client, &api.base).await?);
    stop.store(true, Ordering::Relaxed);
    simulator.abort();
    let _ = simulator.await;

    let latency = summarize(latencies.clone());
    let responses_per_second = (after - before) / elapsed.as_secs_f64();
    println!(
        "{}",
        json!({
            "bench": "response_to_clue",
            "probes": latencies.len(),
            "not_updated_within_15s": timeouts,
            "probe_interval_ms": args.probe_interval_ms,
            "responses_applied_per_s": (responses_per_second * 10.0).round() / 10.0,
            "seconds": (elapsed.as_secs_f64() * 10.0).round() / 10.0,
            "p50_ms": ms3(latency.p50_ms),
            "p99_ms": ms3(latency.p99_ms),
            "max_ms": ms3(latency.max_ms),
        })
    );
    anyhow::ensure!(
        timeouts == 0,
        "{timeouts} probes saw no updated CLUE within {PROBE_TIMEOUT:?}"
    );
    Ok(())
}
