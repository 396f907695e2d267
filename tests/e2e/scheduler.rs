//! The scheduler end to end: Tutor's writes over HTTP, then the read endpoints serve what
//! the recompute loop computed (PEs from the assignment's pools and never excluded or
//! already assigned, SPEs, worst areas, real CLUEs); and a simulated course whose every
//! answer check passes.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use biglearn_simulator::{SimulateConfig, WorkloadConfig};
use biglearn_suite::{
    create_course, new_uuid, one_chapter_ecosystem, roster_of_one, Node, TestBackend, API_TOKEN,
};
use serde_json::{json, Value};

/// Polls `path` with `body` every 20 ms until `ready` holds for the answer (at most 30 s).
async fn poll_until(
    node: &Node,
    path: &str,
    body: &Value,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, answer) = node.post(path, body).await;
        assert_eq!(status, 200, "{path}: {answer}");
        if ready(&answer) {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never became ready: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The sum of the values of the scrape's lines that `select` picks.
fn sum_of(scrape: &str, select: impl Fn(&str) -> bool) -> f64 {
    scrape
        .lines()
        .filter(|line| select(line))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn uuid_list(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_computed_from_writes_and_served() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), TestBackend::Embedded).await;
    let ecosystem = new_uuid();
    let chapter = new_uuid();
    let course = new_uuid();
    let period = new_uuid();
    let student = new_uuid();
    let assignment = new_uuid();
    let exercises: Vec<String> = (0..12).map(|_| new_uuid()).collect();

    let (status, body) = node
        .post(
            "/create_ecosystem",
            &one_chapter_ecosystem(&ecosystem, &chapter, &exercises, &["reading", "practice"]),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = node
        .post("/create_course", &create_course(&course, &ecosystem))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = node
        .post(
            "/update_rosters",
            &roster_of_one(&course, 1, &period, &student),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let excluded = exercises[3].clone();
    let (status, body) = node
        .post(
            "/update_course_excluded_exercises",
            &json!({
                "request_uuid": new_uuid(),
                "course_uuid": course,
                "sequence_number": 2,
                "exclusions": [{"exercise_uuid": excluded}],
                "updated_at": "2017-06-27T23:26:47.000000Z",
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let trials: Vec<String> = (0..3).map(|_| new_uuid()).collect();
    let (status, body) = node
        .post(
            "/create_update_assignments",
            &json!({"assignments": [{
                "request_uuid": new_uuid(),
                "course_uuid": course,
                "sequence_number": 3,
                "assignment_uuid": assignment,
                "is_deleted": false,
                "ecosystem_uuid": ecosystem,
                "student_uuid": student,
                "assignment_type": "reading",
                "exclusion_info": {
                    "opens_at": "2017-06-27T23:26:47.514672Z",
                    "due_at": "2017-07-04T23:26:47.514672Z",
                },
                "assigned_book_container_uuids": [chapter],
                "goal_num_tutor_assigned_spes": 3,
                "spes_are_assigned": false,
                "goal_num_tutor_assigned_pes": 3,
                "pes_are_assigned": false,
                "assigned_exercises": trials.iter().zip(&exercises).map(|(trial, exercise)| json!({
                    "trial_uuid": trial,
                    "exercise_uuid": exercise,
                    "is_spe": false,
                    "is_pe": false,
                })).collect::<Vec<_>>(),
                "created_at": "2017-06-27T23:26:49.142898Z",
                "updated_at": "2017-06-27T23:26:49.142925Z",
            }]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // PEs: from the assignment's pool, never its own exercises nor the excluded one.
    let pe_request = |algorithm: &str| {
        json!({"pe_requests": [{
            "request_uuid": new_uuid(),
            "assignment_uuid": assignment,
            "algorithm_name": algorithm,
            "max_num_exercises": 5,
        }]})
    };
    let pool: BTreeSet<String> = exercises.iter().cloned().collect();
    let forbidden: BTreeSet<String> = exercises[..4].iter().cloned().collect();
    for algorithm in ["local_query", "biglearn_sparfa"] {
        let answer = poll_until(
            &node,
            "/fetch_assignment_pes",
            &pe_request(algorithm),
            |answer| answer["pe_responses"][0]["assignment_status"] == "assignment_ready",
        )
        .await;
        let item = &answer["pe_responses"][0];
        let pes = uuid_list(&item["exercise_uuids"]);
        assert_eq!(pes.len(), 3, "{algorithm}: {item}");
        for pe in &pes {
            assert!(
                pool.contains(pe) && !forbidden.contains(pe),
                "{algorithm}: {pe} in {item}"
            );
        }
        assert!(item["calculation_uuid"].is_string(), "{item}");
        assert_eq!(
            item["spy_info"]["exercise_algorithm_name"], algorithm,
            "{item}"
        );
    }
    let answer = poll_until(
        &node,
        "/fetch_assignment_spes",
        &json!({"spe_requests": [{
            "request_uuid": new_uuid(),
            "assignment_uuid": assignment,
            "algorithm_name": "student_driven_local_query",
            "max_num_exercises": 5,
        }]}),
        |answer| answer["spe_responses"][0]["assignment_status"] == "assignment_ready",
    )
    .await;
    let spes = uuid_list(&answer["spe_responses"][0]["exercise_uuids"]);
    for spe in &spes {
        assert!(
            pool.contains(spe) && !forbidden.contains(spe),
            "{spe}: {answer}"
        );
    }

    // Three responses make a real CLUE for the student and the period. The course was
    // just computed, and no minimum interval holds it back (docs/design/scheduler.md S10).
    let sent = Instant::now();
    let responses: Vec<Value> = trials
        .iter()
        .zip(&exercises)
        .enumerate()
        .map(|(idx, (trial, exercise))| {
            json!({
                "response_uuid": new_uuid(),
                "course_uuid": course,
                "sequence_number": 4 + idx,
                "ecosystem_uuid": ecosystem,
                "trial_uuid": trial,
                "student_uuid": student,
                "exercise_uuid": exercise,
                "is_correct": idx != 1,
                "is_real_response": true,
                "responded_at": "2017-06-28T23:26:48.986100Z",
            })
        })
        .collect();
    let (status, body) = node
        .post("/record_responses", &json!({"responses": responses}))
        .await;
    assert_eq!(status, 200, "{body}");
    let is_real = |answer: &Value, list: &str| {
        answer[list][0]["clue_status"] == "clue_ready"
            && answer[list][0]["clue_data"]["is_real"] == true
    };
    let answer = poll_until(
        &node,
        "/fetch_student_clues",
        &json!({"student_clue_requests": [{
            "request_uuid": new_uuid(),
            "student_uuid": student,
            "book_container_uuid": chapter,
            "algorithm_name": "local_query",
        }]}),
        |answer| is_real(answer, "student_clue_responses"),
    )
    .await;
    let latency = sent.elapsed();
    eprintln!("response → real student CLUE served: {latency:?}");
    assert!(latency < Duration::from_secs(5), "{latency:?}");
    let clue = &answer["student_clue_responses"][0]["clue_data"];
    // Trials [1, 0, 1]: docs/design/scheduler.md §17 scenario 10.
    let most_likely = clue["most_likely"].as_f64().unwrap();
    assert!((most_likely - 0.6444).abs() < 1e-4, "{clue}");
    assert_eq!(clue["ecosystem_uuid"], ecosystem.as_str(), "{clue}");
    poll_until(
        &node,
        "/fetch_teacher_clues",
        &json!({"teacher_clue_requests": [{
            "request_uuid": new_uuid(),
            "course_container_uuid": period,
            "book_container_uuid": chapter,
            "algorithm_name": "local_query",
        }]}),
        |answer| is_real(answer, "teacher_clue_responses"),
    )
    .await;
    let answer = poll_until(
        &node,
        "/fetch_practice_worst_areas_exercises",
        &json!({"worst_areas_requests": [{
            "request_uuid": new_uuid(),
            "student_uuid": student,
            "algorithm_name": "local_query",
            "max_num_exercises": 5,
        }]}),
        |answer| {
            answer["worst_areas_responses"][0]["student_status"] == "student_ready"
                && !uuid_list(&answer["worst_areas_responses"][0]["exercise_uuids"]).is_empty()
        },
    )
    .await;
    for exercise in uuid_list(&answer["worst_areas_responses"][0]["exercise_uuids"]) {
        assert!(pool.contains(&exercise) && exercise != excluded, "{answer}");
    }
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_course_passes_every_answer_check() {
    const WEEK_MICROS: i64 = 7 * 24 * 3600 * 1_000_000;
    const NOW_MICROS: i64 = 1_760_000_000_000_000;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), TestBackend::Embedded).await;
    let mut workload = WorkloadConfig::new(3, 6, 2, 11, NOW_MICROS - WEEK_MICROS);
    workload.cutoff_micros = Some(NOW_MICROS);
    let summary = biglearn_simulator::run_simulation(SimulateConfig {
        workload,
        target: node.base(),
        token: API_TOKEN.into(),
        concurrency: 8,
        // Paced, so that the scheduler (one pass per course per second) answers most reads
        // and their checks actually run.
        rate: Some(40.0),
        faults: Vec::new(),
        truth_out: None,
        request_timeout: Duration::from_secs(60),
        slow_delay: Duration::from_millis(50),
    })
    .await
    .unwrap();
    eprintln!("{}", summary.to_table());
    assert!(summary.is_success(), "{}", summary.to_table());
    assert!(summary.responses_sent > 0, "{}", summary.to_table());
    // Some answers were ready, so the checks above judged real recommendations.
    let scrape = node.metrics_text().await;
    let ready = sum_of(&scrape, |line| {
        line.starts_with("biglearn_read_results_total{") && line.contains("_ready\"")
    });
    assert!(ready > 0.0, "no ready answer was served:\n{scrape}");
    // The loop keeps up: the backlog drains (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let scrape = node.metrics_text().await;
        let backlog = sum_of(&scrape, |line| line.starts_with("biglearn_dirty_targets{"));
        let published = sum_of(&scrape, |line| {
            line.starts_with("biglearn_results_published_total{")
        });
        if backlog == 0.0 && published > 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the backlog did not drain: {backlog}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    node.stop().await.unwrap();
}
