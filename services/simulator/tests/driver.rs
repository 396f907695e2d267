//! The driver against a recording in-test server on 127.0.0.1: ordering per course, concurrency bound, faults, checks and summary counts.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::Json;
use biglearn_simulator::{
    generate_offline, run_simulation, Fault, SimulateConfig, SimulationSummary, WorkloadConfig,
};
use serde_json::{json, Value};

/// 2017-08-21, a Monday.
const START: i64 = 1_503_273_600_000_000;
const TOKEN: &str = "test-token";
/// The server keeps at most this many requests.
const MAX_RECORDED: usize = 200_000;

struct Recorded {
    path: String,
    body: Value,
}

#[derive(Default)]
struct Server {
    received: Mutex<Vec<Recorded>>,
    in_flight_by_course: Mutex<HashMap<String, u32>>,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    overlaps: AtomicU64,
    first_exercise: Mutex<HashMap<String, String>>,
    recommend_assigned: bool,
}

fn course_of(body: &Value) -> Option<String> {
    if let Some(course) = body.get("course_uuid").and_then(Value::as_str) {
        return Some(course.to_string());
    }
    ["rosters", "assignments", "responses", "update_requests"]
        .iter()
        .find_map(|key| body.get(*key)?.get(0)?.get("course_uuid")?.as_str())
        .map(str::to_string)
}

async fn answer(
    State(server): State<Arc<Server>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Json<Value>) {
    if headers
        .get("Biglearn-Api-Token")
        .and_then(|v| v.to_str().ok())
        != Some(TOKEN)
    {
        return (
            StatusCode::UNAUTHORIZED,
            Json(
                json!({"errors": [{"path": "", "message": "missing or invalid Biglearn-Api-Token"}]}),
            ),
        );
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let path = uri.path().to_string();
    let course = course_of(&body);
    let now = server.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    server.max_in_flight.fetch_max(now, Ordering::SeqCst);
    if let Some(course) = &course {
        let mut map = server
            .in_flight_by_course
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let entry = map.entry(course.clone()).or_default();
        if *entry > 0 {
            server.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        *entry += 1;
    }
    // Give other connections a chance to arrive while this one is "in progress".
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    if let Some(course) = &course {
        let mut map = server
            .in_flight_by_course
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = map.get_mut(course) {
            *entry -= 1;
        }
    }
    server.in_flight.fetch_sub(1, Ordering::SeqCst);
    if path == "/create_update_assignments" {
        let mut map = server
            .first_exercise
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for item in body["assignments"].as_array().into_iter().flatten() {
            if let (Some(assignment), Some(exercise)) = (
                item["assignment_uuid"].as_str(),
                item["assigned_exercises"][0]["exercise_uuid"].as_str(),
            ) {
                map.entry(assignment.to_string())
                    .or_insert_with(|| exercise.to_string());
            }
        }
    }
    let reply = reply_for(&server, &path, &body);
    let mut received = server.received.lock().unwrap_or_else(|e| e.into_inner());
    if received.len() < MAX_RECORDED {
        received.push(Recorded { path, body });
    }
    (StatusCode::OK, Json(reply))
}

fn reply_for(server: &Server, path: &str, body: &Value) -> Value {
    let items = |key: &str, item: Value| {
        let n = body[key].as_array().map_or(0, Vec::len);
        vec![item; n]
    };
    match path {
        "/fetch_assignment_pes" | "/fetch_assignment_spes" => {
            let (request_key, answer_key) = if path == "/fetch_assignment_pes" {
                ("pe_requests", "pe_responses")
            } else {
                ("spe_requests", "spe_responses")
            };
            let assignment = body[request_key][0]["assignment_uuid"]
                .as_str()
                .unwrap_or_default();
            let own = server
                .first_exercise
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(assignment)
                .cloned();
            let item = match own.filter(|_| server.recommend_assigned) {
                Some(exercise) => {
                    json!({"assignment_uuid": assignment, "assignment_status": "assignment_ready", "exercise_uuids": [exercise], "spy_info": {}})
                }
                None => {
                    json!({"assignment_uuid": assignment, "assignment_status": "assignment_unready", "exercise_uuids": [], "spy_info": {}})
                }
            };
            json!({ answer_key: [item] })
        }
        "/fetch_practice_worst_areas_exercises" => json!({
            "worst_areas_responses": items("worst_areas_requests", json!({"student_status": "student_unready", "exercise_uuids": [], "spy_info": {}}))
        }),
        "/fetch_student_clues" => json!({
            "student_clue_responses": items("student_clue_requests", json!({"clue_status": "clue_unready", "clue_data": {"minimum": 0, "most_likely": 0.5, "maximum": 1, "is_real": false}}))
        }),
        "/fetch_teacher_clues" => json!({
            "teacher_clue_responses": items("teacher_clue_requests", json!({"clue_status": "clue_unready", "clue_data": {"minimum": 0, "most_likely": 0.5, "maximum": 1, "is_real": false}}))
        }),
        _ => json!({"status": "success"}),
    }
}

async fn start(server: Arc<Server>) -> String {
    let app = axum::Router::new().fallback(answer).with_state(server);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let address = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{address}")
}

fn config(target: String, faults: &[&str], concurrency: usize) -> SimulateConfig {
    SimulateConfig {
        workload: WorkloadConfig::new(4, 5, 3, 1, START),
        target,
        token: TOKEN.to_string(),
        concurrency,
        rate: None,
        faults: faults
            .iter()
            .map(|f| f.parse::<Fault>().expect("valid fault"))
            .collect(),
        truth_out: None,
        request_timeout: Duration::from_secs(30),
        slow_delay: Duration::from_millis(20),
    }
}

async fn simulate(
    server: Server,
    config_for: impl FnOnce(String) -> SimulateConfig,
) -> (SimulationSummary, Arc<Server>) {
    let server = Arc::new(server);
    let target = start(Arc::clone(&server)).await;
    let summary = run_simulation(config_for(target))
        .await
        .expect("simulation runs");
    (summary, server)
}

/// Per course, the sequence-number lists of the writes in arrival order.
fn arrivals(server: &Server) -> BTreeMap<String, Vec<Vec<u32>>> {
    let received = server.received.lock().unwrap_or_else(|e| e.into_inner());
    let mut by_course: BTreeMap<String, Vec<Vec<u32>>> = BTreeMap::new();
    for recorded in received.iter() {
        let Some(course) = course_of(&recorded.body) else {
            continue;
        };
        let seqs = if recorded.path == "/create_course" {
            vec![0]
        } else {
            sequence_numbers(&recorded.body)
        };
        if !seqs.is_empty() {
            by_course.entry(course).or_default().push(seqs);
        }
    }
    by_course
}

fn sequence_numbers(body: &Value) -> Vec<u32> {
    let items: Vec<&Value> = ["rosters", "assignments", "responses", "update_requests"]
        .iter()
        .find_map(|key| body.get(*key).and_then(Value::as_array))
        .map_or_else(|| vec![body], |items| items.iter().collect());
    items
        .iter()
        .filter_map(|item| item.get("sequence_number")?.as_u64())
        .map(|s| s as u32)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_every_course_in_order_within_the_concurrency_bound() {
    let (summary, server) = simulate(Server::default(), |target| config(target, &[], 8)).await;
    assert!(summary.is_success(), "{}", summary.to_table());
    let received = server
        .received
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .len() as u64;
    assert_eq!(received, summary.requests_sent);
    let mut by_path: BTreeMap<String, u64> = BTreeMap::new();
    for recorded in server
        .received
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
    {
        *by_path.entry(recorded.path.clone()).or_default() += 1;
    }
    assert_eq!(by_path, summary.requests_by_endpoint);
    assert_eq!(
        server.overlaps.load(Ordering::SeqCst),
        0,
        "a course had two requests in flight"
    );
    let max_in_flight = server.max_in_flight.load(Ordering::SeqCst);
    assert!(
        (2..=8).contains(&max_in_flight),
        "max in flight {max_in_flight}"
    );
    let by_course = arrivals(&server);
    assert_eq!(by_course.len(), 4);
    for seqs in by_course.values() {
        let flat: Vec<u32> = seqs.iter().flatten().copied().collect();
        assert_eq!(flat, (0..flat.len() as u32).collect::<Vec<_>>());
    }
    assert!(summary.unready_answers > 0);
    assert!(
        summary.latency.count == summary.requests_sent
            && summary.latency.max_ms >= summary.latency.p50_ms
    );
    // The events are those of the offline generation (the server never had results).
    let offline = generate_offline(&config(String::new(), &[], 1).workload, |_| {});
    assert_eq!(summary.events_sent, offline.events);
    assert_eq!(summary.responses_sent, offline.responses);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_seed_sends_identical_events() {
    let bodies = |server: &Server| -> BTreeMap<String, Vec<String>> {
        let received = server.received.lock().unwrap_or_else(|e| e.into_inner());
        let mut by_lane: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for recorded in received.iter() {
            let lane = course_of(&recorded.body)
                .or_else(|| recorded.body["ecosystem_uuid"].as_str().map(str::to_string))
                .unwrap_or_else(|| "reads".to_string());
            if lane != "reads" {
                by_lane
                    .entry(lane)
                    .or_default()
                    .push(format!("{} {}", recorded.path, recorded.body));
            }
        }
        by_lane
    };
    let (first, server_a) = simulate(Server::default(), |target| config(target, &[], 4)).await;
    let (second, server_b) = simulate(Server::default(), |target| config(target, &[], 3)).await;
    assert!(first.is_success() && second.is_success());
    assert_eq!(bodies(&server_a), bodies(&server_b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_requests_leave_exactly_their_gaps() {
    let (summary, server) = simulate(Server::default(), |target| {
        config(target, &["drop:0.05"], 4)
    })
    .await;
    assert!(summary.is_success(), "{}", summary.to_table());
    assert!(summary.faults.dropped > 0);
    let by_course = arrivals(&server);
    let mut dropped: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for drop in &summary.faults.dropped_requests {
        dropped
            .entry(drop.course_uuid.clone())
            .or_default()
            .extend(&drop.sequence_numbers);
    }
    let mut n_dropped = 0;
    for (course, seqs) in &by_course {
        let mut received: Vec<u32> = seqs.iter().flatten().copied().collect();
        let missing = dropped.get(course).cloned().unwrap_or_default();
        n_dropped += missing.len();
        assert!(
            missing.iter().all(|seq| !received.contains(seq)),
            "a dropped sequence number arrived"
        );
        received.extend(&missing);
        received.sort_unstable();
        assert_eq!(
            received,
            (0..received.len() as u32).collect::<Vec<_>>(),
            "course {course}"
        );
    }
    assert!(n_dropped > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resent_requests_arrive_twice() {
    let (summary, server) = simulate(Server::default(), |target| {
        config(target, &["resend:0.1"], 4)
    })
    .await;
    assert!(summary.is_success(), "{}", summary.to_table());
    assert!(summary.faults.resent > 0);
    let received = server.received.lock().unwrap_or_else(|e| e.into_inner());
    let mut seen: HashMap<String, u32> = HashMap::new();
    for recorded in received.iter() {
        *seen
            .entry(format!("{} {}", recorded.path, recorded.body))
            .or_default() += 1;
    }
    let twice = seen.values().filter(|&&n| n == 2).count() as u64;
    assert_eq!(twice, summary.faults.resent);
    assert!(seen.values().all(|&n| n <= 2));
    assert_eq!(received.len() as u64, summary.requests_sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reordered_requests_swap_with_their_successor() {
    let (summary, server) = simulate(Server::default(), |target| {
        config(target, &["reorder:0.1"], 4)
    })
    .await;
    assert!(summary.is_success(), "{}", summary.to_table());
    assert!(summary.faults.reordered > 0);
    let mut descents = 0;
    for seqs in arrivals(&server).values() {
        for pair in seqs.windows(2) {
            if pair[1][0] < pair[0][0] {
                descents += 1;
            }
        }
        let mut flat: Vec<u32> = seqs.iter().flatten().copied().collect();
        flat.sort_unstable();
        assert_eq!(flat, (0..flat.len() as u32).collect::<Vec<_>>());
    }
    assert_eq!(descents, summary.faults.reordered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_uploads_and_rate_limit_still_deliver_everything() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let truth_path = directory.path().join("truth.json");
    let truth_out = truth_path.clone();
    let (summary, server) = simulate(Server::default(), move |target| {
        let mut config = config(target, &["slow:0.3"], 4);
        config.workload = WorkloadConfig::new(2, 3, 1, 5, START);
        config.rate = Some(400.0);
        config.truth_out = Some(truth_out);
        config
    })
    .await;
    let truth: Value = serde_json::from_slice(&std::fs::read(&truth_path).expect("truth written"))
        .expect("truth is JSON");
    assert_eq!(truth["students"].as_array().map(Vec::len), Some(6));
    assert!(truth["books"][0]["questions"][0]["w"]
        .as_array()
        .is_some_and(|w| !w.is_empty()));
    assert!(summary.is_success(), "{}", summary.to_table());
    assert!(summary.faults.slowed > 0);
    let received = server
        .received
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .len() as u64;
    assert_eq!(received, summary.requests_sent);
    let minimum = (summary.requests_sent - 1) as f64 / 400.0;
    assert!(
        summary.elapsed_secs >= minimum * 0.9,
        "{} s for {} requests",
        summary.elapsed_secs,
        summary.requests_sent
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recommending_an_assigned_exercise_is_an_error() {
    let server = Server {
        recommend_assigned: true,
        ..Server::default()
    };
    let (summary, _) = simulate(server, |target| config(target, &[], 4)).await;
    assert!(!summary.is_success());
    assert!(
        summary
            .errors_by_class
            .get("recommended_assigned")
            .copied()
            .unwrap_or(0)
            > 0,
        "{:?}",
        summary.errors_by_class
    );
    let json: Value =
        serde_json::from_str(&summary.to_json_line()).expect("summary is one JSON line");
    assert!(json["errors_by_class"]["recommended_assigned"]
        .as_u64()
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_an_error() {
    let (summary, _) = simulate(Server::default(), |target| {
        let mut config = config(target, &[], 2);
        config.workload = WorkloadConfig::new(1, 2, 1, 5, START);
        config.token = "wrong".to_string();
        config
    })
    .await;
    assert!(
        summary
            .errors_by_class
            .get("http_401")
            .copied()
            .unwrap_or(0)
            > 0,
        "{:?}",
        summary.errors_by_class
    );
    assert!(summary.to_table().contains("FAILED"));
}
