//! The HTTP driver: sends the generated requests with bounded concurrency, per-course order, an optional rate and injected faults, and turns the answers into a summary.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use serde_json::Value;
use uuid::Uuid;

use crate::faults::{Fault, FaultKind, FaultPlan};
use crate::summary::{DroppedRequest, LatencyHistogram, SimulationSummary};
use crate::workload::{Next, TutorRequest, Workload, WorkloadConfig};

/// Chunks a slow upload is split into.
const SLOW_CHUNKS: usize = 4;

/// Everything `biglearn simulate` needs.
#[derive(Clone, Debug)]
pub struct SimulateConfig {
    pub workload: WorkloadConfig,
    /// Base URL of the API, e.g. `http://127.0.0.1:8080`.
    pub target: String,
    /// Sent as `Biglearn-Api-Token`.
    pub token: String,
    /// Most requests in flight at once (at least 1).
    pub concurrency: usize,
    /// Most requests started per second; `None` = as fast as the server answers.
    pub rate: Option<f64>,
    pub faults: Vec<Fault>,
    /// Where to write the ground truth (JSON) after the run.
    pub truth_out: Option<PathBuf>,
    /// Client timeout per request (keep it above the server's 55 s deadline).
    pub request_timeout: Duration,
    /// Total pause spread over a slow upload.
    pub slow_delay: Duration,
}

/// Failures that stop a simulation before or after it runs (not the server's errors,
/// which are counted in the summary).
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error("invalid target {target:?}: expected an http:// or https:// base URL")]
    InvalidTarget { target: String },
    #[error("building the HTTP client failed: {0}")]
    Client(#[source] reqwest::Error),
    #[error("writing the ground truth to {path}: {source}")]
    TruthOut {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A request waiting in its lane, with its serialized body and injected fault.
struct Outgoing {
    request: TutorRequest,
    body: Bytes,
    slow: bool,
    sends_left: u8,
}

#[derive(Default)]
struct Lane {
    queue: VecDeque<Outgoing>,
    busy: bool,
    in_ready: bool,
}

struct Sent {
    lane: Uuid,
    outgoing: Outgoing,
    status: Option<u16>,
    body: Value,
    latency: Duration,
    transport_error: Option<String>,
}

/// Lanes (one per course or ecosystem) and the order in which idle ones get to send.
struct Lanes {
    lanes: HashMap<Uuid, Lane>,
    ready: VecDeque<Uuid>,
    queued: usize,
}

impl Lanes {
    fn push(&mut self, lane_id: Uuid, outgoing: Outgoing) {
        let lane = self.lanes.entry(lane_id).or_default();
        lane.queue.push_back(outgoing);
        self.queued += 1;
        if !lane.busy && !lane.in_ready {
            lane.in_ready = true;
            self.ready.push_back(lane_id);
        }
    }

    fn push_front(&mut self, lane_id: Uuid, outgoing: Outgoing) {
        let lane = self.lanes.entry(lane_id).or_default();
        lane.queue.push_front(outgoing);
        self.queued += 1;
    }

    /// The next request of an idle lane; the lane becomes busy.
    fn take(&mut self) -> Option<(Uuid, Outgoing)> {
        while let Some(lane_id) = self.ready.pop_front() {
            let Some(lane) = self.lanes.get_mut(&lane_id) else {
                continue;
            };
            lane.in_ready = false;
            if let Some(outgoing) = lane.queue.pop_front() {
                lane.busy = true;
                self.queued -= 1;
                return Some((lane_id, outgoing));
            }
        }
        None
    }

    fn release(&mut self, lane_id: Uuid) {
        let Some(lane) = self.lanes.get_mut(&lane_id) else {
            return;
        };
        lane.busy = false;
        if lane.queue.is_empty() {
            self.lanes.remove(&lane_id);
        } else if !lane.in_ready {
            lane.in_ready = true;
            self.ready.push_back(lane_id);
        }
    }
}

/// Runs the simulation against `config.target` and returns what happened. Server
/// errors and failed checks are in the summary ([`SimulationSummary::is_success`]).
pub async fn run_simulation(config: SimulateConfig) -> Result<SimulationSummary, SimulateError> {
    let target = config.target.trim_end_matches('/').to_string();
    if !(target.starts_with("http://") || target.starts_with("https://")) {
        return Err(SimulateError::InvalidTarget {
            target: config.target.clone(),
        });
    }
    let concurrency = config.concurrency.max(1);
    let client = reqwest::Client::builder()
        .timeout(config.request_timeout)
        .pool_max_idle_per_host(concurrency)
        .build()
        .map_err(SimulateError::Client)?;
    let mut workload = Workload::new(config.workload.clone());
    let mut plan = FaultPlan::new(&config.faults, config.workload.seed);
    let mut summary = SimulationSummary::default();
    let mut latencies = LatencyHistogram::new();
    let mut lanes = Lanes {
        lanes: HashMap::new(),
        ready: VecDeque::new(),
        queued: 0,
    };
    // Reorder: a held write is sent right after the next write of its course.
    let mut held: HashMap<Uuid, Outgoing> = HashMap::new();
    let mut in_flight = FuturesUnordered::new();
    let max_queued = concurrency * 4 + 16;
    let rate_interval = config
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(1.0 / r));
    let started = Instant::now();
    let mut next_start = tokio::time::Instant::now();
    let mut finished = false;
    let slow_pause = config.slow_delay / SLOW_CHUNKS as u32;

    loop {
        let mut awaiting = false;
        while !finished && lanes.queued < max_queued {
            match workload.next_request() {
                Next::Request(request) => {
                    dispatch(request, &mut plan, &mut lanes, &mut held, &mut summary);
                }
                Next::AwaitingResponses => {
                    awaiting = true;
                    break;
                }
                Next::Finished => {
                    finished = true;
                    for (lane_id, outgoing) in held.drain() {
                        lanes.push(lane_id, outgoing);
                    }
                }
            }
        }
        while in_flight.len() < concurrency {
            let Some((lane_id, outgoing)) = lanes.take() else {
                break;
            };
            if let Some(interval) = rate_interval {
                tokio::time::sleep_until(next_start).await;
                next_start = next_start.max(tokio::time::Instant::now() - interval) + interval;
            }
            *summary
                .requests_by_endpoint
                .entry(outgoing.request.endpoint.to_string())
                .or_default() += 1;
            summary.requests_sent += 1;
            let url = format!("{target}{}", outgoing.request.endpoint);
            in_flight.push(send(
                client.clone(),
                url,
                config.token.clone(),
                lane_id,
                outgoing,
                slow_pause,
            ));
        }
        let Some(sent) = in_flight.next().await else {
            if finished && lanes.queued == 0 && held.is_empty() {
                break;
            }
            if awaiting && lanes.queued == 0 {
                // Nothing in flight can answer the reads the generator waits for.
                summary.add_error(
                    "generator_stalled",
                    "the generator waits for answers but nothing is in flight".into(),
                );
                break;
            }
            continue;
        };
        record(
            sent,
            &mut workload,
            &mut lanes,
            &mut summary,
            &mut latencies,
        );
    }

    let clues = workload.clue_report();
    if clues.moved_toward_truth == Some(false) {
        summary.add_error(
            "clue_drift",
            format!(
                "served CLUEs moved away from the truth: mean error {:?} then {:?}",
                clues.mean_abs_error_first_half, clues.mean_abs_error_second_half
            ),
        );
    }
    summary.clues = clues;
    summary.finish(started.elapsed(), &latencies);
    if let Some(path) = &config.truth_out {
        let truth = workload.ground_truth();
        let json = serde_json::to_vec(&truth).map_err(|error| SimulateError::TruthOut {
            path: path.clone(),
            source: std::io::Error::other(error),
        })?;
        std::fs::write(path, json).map_err(|source| SimulateError::TruthOut {
            path: path.clone(),
            source,
        })?;
    }
    tracing::info!(
        requests = summary.requests_sent,
        events = summary.events_sent,
        errors = summary.errors_by_class.values().sum::<u64>(),
        "Simulation finished."
    );
    Ok(summary)
}

/// Applies the fault plan to one generated request and queues it in its lane.
fn dispatch(
    request: TutorRequest,
    plan: &mut FaultPlan,
    lanes: &mut Lanes,
    held: &mut HashMap<Uuid, Outgoing>,
    summary: &mut SimulationSummary,
) {
    let lane_id = request.lane().unwrap_or(Uuid::nil());
    let fault = plan.choose(&request);
    if fault == Some(FaultKind::Drop) {
        summary.add_drop(DroppedRequest {
            course_uuid: request.course.map(|c| c.to_string()).unwrap_or_default(),
            endpoint: request.endpoint.to_string(),
            sequence_numbers: request.sequence_numbers.clone(),
        });
        return;
    }
    summary.events_sent += request.sequence_numbers.len() as u64;
    summary.responses_sent += u64::from(request.n_responses);
    let body = Bytes::from(serde_json::to_vec(&request.body).unwrap_or_default());
    let is_write = request.is_write();
    let outgoing = Outgoing {
        slow: fault == Some(FaultKind::Slow),
        sends_left: if fault == Some(FaultKind::Resend) {
            2
        } else {
            1
        },
        request,
        body,
    };
    match fault {
        Some(FaultKind::Slow) => summary.faults.slowed += 1,
        Some(FaultKind::Resend) => summary.faults.resent += 1,
        _ => {}
    }
    let earlier = held.remove(&lane_id);
    if fault == Some(FaultKind::Reorder) && earlier.is_none() {
        held.insert(lane_id, outgoing);
        return;
    }
    match earlier {
        // The held write goes after this one only if this one is a write too.
        Some(earlier) if is_write => {
            summary.faults.reordered += 1;
            lanes.push(lane_id, outgoing);
            lanes.push(lane_id, earlier);
        }
        Some(earlier) => {
            lanes.push(lane_id, earlier);
            lanes.push(lane_id, outgoing);
        }
        None => lanes.push(lane_id, outgoing),
    }
}

async fn send(
    client: reqwest::Client,
    url: String,
    token: String,
    lane: Uuid,
    outgoing: Outgoing,
    slow_pause: Duration,
) -> Sent {
    let started = Instant::now();
    let body = if outgoing.slow {
        let chunk_size = outgoing.body.len().div_ceil(SLOW_CHUNKS).max(1);
        let chunks: Vec<Bytes> = (0..outgoing.body.len())
            .step_by(chunk_size)
            .map(|start| {
                outgoing
                    .body
                    .slice(start..(start + chunk_size).min(outgoing.body.len()))
            })
            .collect();
        let stream = futures::stream::iter(chunks.into_iter().enumerate()).then(
            move |(i, chunk)| async move {
                if i > 0 {
                    tokio::time::sleep(slow_pause).await;
                }
                Ok::<Bytes, std::io::Error>(chunk)
            },
        );
        reqwest::Body::wrap_stream(stream)
    } else {
        reqwest::Body::from(outgoing.body.clone())
    };
    let result = client
        .post(&url)
        .header("Content-Type", "application/json")
        .header("Biglearn-Api-Token", token)
        .body(body)
        .send()
        .await;
    let (status, body, transport_error) = match result {
        Ok(response) => {
            let status = response.status().as_u16();
            match response.bytes().await {
                Ok(bytes) => (
                    Some(status),
                    serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                    None,
                ),
                Err(error) => (Some(status), Value::Null, Some(error.to_string())),
            }
        }
        Err(error) => (None, Value::Null, Some(error.to_string())),
    };
    Sent {
        lane,
        outgoing,
        status,
        body,
        latency: started.elapsed(),
        transport_error,
    }
}

/// Records one answer: latency, errors, checks; re-queues a resend; frees the lane.
fn record(
    sent: Sent,
    workload: &mut Workload,
    lanes: &mut Lanes,
    summary: &mut SimulationSummary,
    latencies: &mut LatencyHistogram,
) {
    let Sent {
        lane,
        mut outgoing,
        status,
        body,
        latency,
        transport_error,
    } = sent;
    latencies.record(latency);
    let endpoint = outgoing.request.endpoint;
    if let Some(error) = transport_error {
        let class = if error.contains("timed out") {
            "timeout"
        } else {
            "transport"
        };
        summary.add_error(class, format!("{endpoint}: {error}"));
    } else if let Some(status) = status.filter(|s| !(200..300).contains(s)) {
        let text = body.to_string();
        let text: String = text.chars().take(300).collect();
        summary.add_error(
            &format!("http_{status}"),
            format!("{endpoint} (request {}): {text}", outgoing.request.id),
        );
    }
    outgoing.sends_left -= 1;
    if outgoing.sends_left > 0 {
        lanes.push_front(lane, outgoing);
        lanes.release(lane);
        return;
    }
    // A read is answered to the generator even when it failed, so the session goes on.
    let report = workload.on_response(&outgoing.request, status.unwrap_or(0), &body);
    summary.unready_answers += u64::from(report.unready);
    summary.unknown_answers += u64::from(report.unknown);
    for failure in report.failures {
        summary.add_error(
            failure.class,
            format!(
                "{endpoint} (request {}): {}",
                outgoing.request.id, failure.detail
            ),
        );
    }
    lanes.release(lane);
}
