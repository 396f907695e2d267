//! The workload generator: a seeded, streaming state machine that yields Tutor requests in simulated-time order and takes the server's answers back.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::clock::{DAY, WEEK};
use crate::content::{Content, IMPORT_LEAD};
use crate::course::{Course, ReadContext};
use crate::truth::{ClueReport, ClueStats, GroundTruth, StudentTruth};

/// What to generate. Every field is explicit; [`WorkloadConfig::new`] fills the knobs
/// the CLI does not expose with the documented defaults.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    pub courses: usize,
    pub students_per_course: usize,
    pub weeks: u32,
    pub seed: u64,
    /// The semester's first day (microseconds since the Unix epoch, UTC).
    pub start_micros: i64,
    /// "Now": nothing that happens later in simulated time is generated (assignments
    /// published before it may still be due after it). `None`: the whole semester.
    pub cutoff_micros: Option<i64>,
    /// Number of distinct books; course i uses book i mod `books`.
    pub books: usize,
    /// Course containers (periods) per course, at least 1.
    pub periods_per_course: usize,
    /// Algorithm asked for PEs and CLUEs; SPEs use `student_driven_<name>` for readings
    /// and `instructor_driven_<name>` for homeworks.
    pub algorithm_name: String,
    /// Emit reads (PE/SPE fetches, CLUEs, worst areas). Off in offline mode.
    pub emit_reads: bool,
    /// Mark the server's PEs/SPEs as assigned when it has them ready (what Tutor does).
    /// When false, the generator's own choice is always used, so the events sent are
    /// identical whatever the server answers.
    pub follow_recommendations: bool,
    /// Keep every student's knowledge for [`Workload::ground_truth`].
    pub collect_truth: bool,
}

impl WorkloadConfig {
    /// Defaults: whole semester, 2 books, 2 periods, `biglearn_sparfa`, reads on,
    /// recommendations followed, truth collected.
    pub fn new(
        courses: usize,
        students_per_course: usize,
        weeks: u32,
        seed: u64,
        start_micros: i64,
    ) -> Self {
        WorkloadConfig {
            courses,
            students_per_course,
            weeks,
            seed,
            start_micros,
            cutoff_micros: None,
            books: 2,
            periods_per_course: 2,
            algorithm_name: "biglearn_sparfa".to_string(),
            emit_reads: true,
            follow_recommendations: true,
            collect_truth: true,
        }
    }

    /// Chapters per book: one per week plus one, so the course exclusions can target
    /// a chapter not yet assigned.
    pub(crate) fn n_chapters(&self) -> usize {
        (self.weeks as usize + 1).clamp(2, 30)
    }

    /// The week in which some courses switch to the second ecosystem version
    /// (`None` for semesters shorter than two weeks).
    pub(crate) fn switch_week(&self) -> Option<u32> {
        (self.weeks >= 2).then_some(self.weeks / 2)
    }

    pub(crate) fn is_past(&self, at_micros: i64) -> bool {
        self.cutoff_micros.is_none_or(|cutoff| at_micros <= cutoff)
    }
}

/// One HTTP request Tutor would send.
#[derive(Clone, Debug)]
pub struct TutorRequest {
    /// Position in generation order, from 0.
    pub id: u64,
    /// The API path, e.g. `/record_responses`.
    pub endpoint: &'static str,
    pub body: Value,
    /// The course whose stream the request writes to or reads about.
    pub course: Option<Uuid>,
    /// Set for `/create_ecosystem` only.
    pub ecosystem: Option<Uuid>,
    /// Sequence numbers this request occupies in its aggregate (the course, or the
    /// ecosystem for `/create_ecosystem`), in body order; empty for reads.
    pub sequence_numbers: Vec<u32>,
    /// Simulated time at which Tutor sends it.
    pub at_micros: i64,
    /// Number of `record_response` events in the body.
    pub n_responses: u32,
    pub(crate) read: Option<ReadContext>,
    /// Σ of the ground-truth P(correct) over the body's responses: the expected number
    /// of `is_correct: true` answers.
    pub expected_correct: f64,
}

impl TutorRequest {
    /// What Biglearn answers to this read before it has results, one item per request
    /// item (`{}` for writes): the answer a test server gives.
    pub fn unready_answer(&self) -> Value {
        let (request_key, answer_key, item) = match self.endpoint {
            "/fetch_assignment_pes" => (
                "pe_requests",
                "pe_responses",
                json!({"assignment_status": "assignment_unready", "exercise_uuids": []}),
            ),
            "/fetch_assignment_spes" => (
                "spe_requests",
                "spe_responses",
                json!({"assignment_status": "assignment_unready", "exercise_uuids": []}),
            ),
            "/fetch_practice_worst_areas_exercises" => (
                "worst_areas_requests",
                "worst_areas_responses",
                json!({"student_status": "student_unready", "exercise_uuids": []}),
            ),
            "/fetch_student_clues" => (
                "student_clue_requests",
                "student_clue_responses",
                json!({"clue_status": "clue_unready"}),
            ),
            "/fetch_teacher_clues" => (
                "teacher_clue_requests",
                "teacher_clue_responses",
                json!({"clue_status": "clue_unready"}),
            ),
            _ => return json!({}),
        };
        let n_items = self.body[request_key].as_array().map_or(0, Vec::len);
        json!({ answer_key: vec![item; n_items] })
    }

    /// True for requests that write events (everything except the `fetch_*` reads).
    pub fn is_write(&self) -> bool {
        self.read.is_none()
    }

    /// The aggregate whose ordering the request must respect (course, else ecosystem).
    pub fn lane(&self) -> Option<Uuid> {
        self.course.or(self.ecosystem)
    }
}

/// A request body before it gets its global id.
pub(crate) struct Pending {
    pub endpoint: &'static str,
    pub body: Value,
    pub sequence_numbers: Vec<u32>,
    pub at_micros: i64,
    pub n_responses: u32,
    pub read: Option<ReadContext>,
    pub expected_correct: f64,
}

/// The generator's next step.
// Returned by value once per request and consumed at once; boxing would add an
// allocation per request for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Next {
    Request(TutorRequest),
    /// Every remaining course waits for answers to reads already handed out.
    AwaitingResponses,
    Finished,
}

/// What the generator learned from one answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResponseReport {
    /// `*_unready` / `clue_unready` items.
    pub unready: u32,
    /// `*_unknown` items (the server has not applied the events yet, or they were dropped).
    pub unknown: u32,
    pub failures: Vec<CheckFailure>,
}

/// A failed check on a read answer.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckFailure {
    /// One of `recommended_excluded`, `recommended_assigned`, `recommended_anti_cheating`,
    /// `recommended_unknown_exercise`, `clue_malformed`, `malformed_answer`.
    pub class: &'static str,
    pub detail: String,
}

/// The generator. Feed every answer to a read back through [`Workload::on_response`].
pub struct Workload {
    config: WorkloadConfig,
    content: Arc<Content>,
    courses: Vec<Course>,
    /// Ready courses keyed by the simulated time of their next request.
    ready: BinaryHeap<Reverse<(i64, usize)>>,
    /// Pending `/create_ecosystem` requests: (imported_at, book, version).
    ecosystem_queue: VecDeque<(i64, usize, usize)>,
    next_id: u64,
    n_awaiting_courses: usize,
    finished_students: Vec<StudentTruth>,
    clue_stats: ClueStats,
}

/// Mixes a seed and a stream index into an independent seed (splitmix64 finaliser).
pub(crate) fn mix_seed(seed: u64, stream: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Workload {
    pub fn new(config: WorkloadConfig) -> Workload {
        let books = config.books.max(1);
        let switch_at = config.switch_week().map_or(i64::MAX, |week| {
            config.start_micros + i64::from(week) * WEEK - 3 * DAY
        });
        let mut content_rng = ChaCha8Rng::seed_from_u64(mix_seed(config.seed, u64::MAX));
        let content = Arc::new(Content::generate(
            &mut content_rng,
            books,
            config.n_chapters(),
            config.start_micros - IMPORT_LEAD,
            switch_at,
        ));
        let mut ecosystem_queue = VecDeque::new();
        for version in 0..2 {
            for book in 0..books {
                let imported_at = content.books[book].versions[version].imported_at;
                if imported_at != i64::MAX && config.is_past(imported_at) {
                    ecosystem_queue.push_back((imported_at, book, version));
                }
            }
        }
        let courses: Vec<Course> = (0..config.courses)
            .map(|course_idx| Course::new(&config, &content, course_idx))
            .collect();
        let mut workload = Workload {
            config,
            content,
            courses,
            ready: BinaryHeap::new(),
            ecosystem_queue,
            next_id: 0,
            n_awaiting_courses: 0,
            finished_students: Vec::new(),
            clue_stats: ClueStats::default(),
        };
        for course_idx in 0..workload.courses.len() {
            workload.schedule(course_idx);
        }
        workload
    }

    pub fn config(&self) -> &WorkloadConfig {
        &self.config
    }

    /// Puts a course back in the ready heap, or retires it when it has nothing left.
    fn schedule(&mut self, course_idx: usize) {
        let course = &mut self.courses[course_idx];
        if let Some(at) = course.next_time(&self.config) {
            self.ready.push(Reverse((at, course_idx)));
        } else if course.awaiting > 0 {
            if !course.parked {
                course.parked = true;
                self.n_awaiting_courses += 1;
            }
        } else if !course.finished {
            course.finished = true;
            if self.config.collect_truth {
                self.finished_students.extend(course.take_truth());
            } else {
                course.release();
            }
        }
    }

    /// The next request in simulated-time order.
    pub fn next_request(&mut self) -> Next {
        loop {
            let course_at = self.ready.peek().map(|Reverse((at, _))| *at);
            let ecosystem_at = self.ecosystem_queue.front().map(|(at, _, _)| *at);
            let ecosystem_first = match (ecosystem_at, course_at) {
                (Some(eco_at), Some(at)) => eco_at <= at,
                (Some(_), None) => true,
                (None, _) => false,
            };
            match (ecosystem_first, course_at) {
                (true, _) => {
                    let Some((at, book, version)) = self.ecosystem_queue.pop_front() else {
                        continue;
                    };
                    let body = self.content.create_ecosystem_body(book, version);
                    let uuid = self.content.books[book].versions[version].uuid;
                    let id = self.take_id();
                    return Next::Request(TutorRequest {
                        id,
                        endpoint: "/create_ecosystem",
                        body,
                        course: None,
                        ecosystem: Some(uuid),
                        sequence_numbers: vec![0],
                        at_micros: at,
                        n_responses: 0,
                        read: None,
                        expected_correct: 0.0,
                    });
                }
                (false, Some(_)) => {
                    let Some(Reverse((_, course_idx))) = self.ready.pop() else {
                        continue;
                    };
                    let course = &mut self.courses[course_idx];
                    if course.outbox.is_empty() {
                        course.run_next_action(&self.config, &self.content);
                    }
                    let pending = course.outbox.pop_front();
                    let course_uuid = course.uuid;
                    self.schedule(course_idx);
                    if let Some(pending) = pending {
                        let id = self.take_id();
                        return Next::Request(TutorRequest {
                            id,
                            endpoint: pending.endpoint,
                            body: pending.body,
                            course: Some(course_uuid),
                            ecosystem: None,
                            sequence_numbers: pending.sequence_numbers,
                            at_micros: pending.at_micros,
                            n_responses: pending.n_responses,
                            read: pending.read,
                            expected_correct: pending.expected_correct,
                        });
                    }
                }
                (false, None) => {
                    return if self.n_awaiting_courses > 0 {
                        Next::AwaitingResponses
                    } else {
                        Next::Finished
                    };
                }
            }
        }
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Takes the server's answer to `request` into account (checks it, and for PE/SPE
    /// fetches continues the waiting session). `status` is the HTTP status, `body` the
    /// parsed JSON (`Value::Null` if unparseable). Answers to writes are ignored here.
    pub fn on_response(
        &mut self,
        request: &TutorRequest,
        status: u16,
        body: &Value,
    ) -> ResponseReport {
        let Some(read) = &request.read else {
            return ResponseReport::default();
        };
        let mut report = ResponseReport::default();
        let course_idx = read.course_idx();
        let course = &mut self.courses[course_idx];
        course.on_read_answer(
            &self.config,
            &self.content,
            read,
            (status, body),
            &mut report,
            &mut self.clue_stats,
        );
        let course = &mut self.courses[course_idx];
        if course.parked && course.awaiting == 0 {
            course.parked = false;
            self.n_awaiting_courses -= 1;
            self.schedule(course_idx);
        }
        report
    }

    /// How far the served CLUEs were from the truth, by semester half.
    pub fn clue_report(&self) -> ClueReport {
        self.clue_stats.report(self.config.weeks)
    }

    /// The ground-truth model: W and d of every book, and the knowledge of every student
    /// of the finished courses (all courses once [`Next::Finished`] was returned).
    pub fn ground_truth(&self) -> GroundTruth {
        GroundTruth {
            seed: self.config.seed,
            link: "logistic",
            books: GroundTruth::books_of(&self.content),
            students: self.finished_students.clone(),
        }
    }
}

/// Counts from [`generate_offline`].
#[derive(Clone, Debug)]
pub struct OfflineSummary {
    pub requests: u64,
    pub events: u64,
    pub responses: u64,
    /// The ground truth, when `collect_truth` was set.
    pub truth: Option<GroundTruth>,
}

/// Generates the whole workload without a server: reads are skipped and PEs/SPEs are
/// the generator's own choice. Every request goes to `sink` in generation order.
pub fn generate_offline(
    config: &WorkloadConfig,
    mut sink: impl FnMut(TutorRequest),
) -> OfflineSummary {
    let mut config = config.clone();
    config.emit_reads = false;
    let collect_truth = config.collect_truth;
    let mut workload = Workload::new(config);
    let mut summary = OfflineSummary {
        requests: 0,
        events: 0,
        responses: 0,
        truth: None,
    };
    // Without reads nothing ever waits, so the loop ends at Finished.
    while let Next::Request(request) = workload.next_request() {
        summary.requests += 1;
        summary.events += request.sequence_numbers.len() as u64;
        summary.responses += u64::from(request.n_responses);
        sink(request);
    }
    if collect_truth {
        summary.truth = Some(workload.ground_truth());
    }
    summary
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use serde_json::json;
    use sha2::{Digest, Sha256};

    use super::*;
    use crate::clock::parse_date_or_datetime;

    /// 2017-08-21, a Monday.
    const START: i64 = 1_503_273_600_000_000;

    fn small(seed: u64) -> WorkloadConfig {
        WorkloadConfig::new(3, 6, 4, seed, START)
    }

    fn offline(config: &WorkloadConfig) -> Vec<TutorRequest> {
        let mut requests = Vec::new();
        generate_offline(config, |request| requests.push(request));
        requests
    }

    fn hash(requests: &[TutorRequest]) -> String {
        let mut hasher = Sha256::new();
        for request in requests {
            hasher.update(request.endpoint.as_bytes());
            hasher.update(serde_json::to_vec(&request.body).unwrap_or_default());
        }
        format!("{:x}", hasher.finalize())
    }

    #[test]
    fn same_seed_same_bytes_different_seed_different_bytes() {
        let first = offline(&small(7));
        let second = offline(&small(7));
        let other = offline(&small(8));
        assert!(first.len() > 100, "{} requests", first.len());
        assert_eq!(hash(&first), hash(&second));
        assert_ne!(hash(&first), hash(&other));
    }

    /// Per aggregate, the sequence numbers in generation order are 0, 1, 2, … and each
    /// request's list matches the `sequence_number` fields of its body.
    #[test]
    fn sequence_numbers_are_dense_and_in_generation_order() {
        let mut config = small(3);
        config.emit_reads = true;
        let requests = drive_with_unready_answers(config);
        let mut per_aggregate: HashMap<Uuid, Vec<u32>> = HashMap::new();
        for request in &requests {
            let Some(lane) = request.lane() else {
                panic!("request {} has no aggregate", request.endpoint);
            };
            if request.endpoint == "/create_course" || request.endpoint == "/create_ecosystem" {
                assert_eq!(request.sequence_numbers, vec![0]);
            }
            assert_eq!(
                body_sequence_numbers(&request.body),
                sequence_numbers_in_body(request),
                "{}",
                request.endpoint
            );
            per_aggregate
                .entry(lane)
                .or_default()
                .extend(&request.sequence_numbers);
        }
        assert_eq!(
            per_aggregate.len(),
            3 + 2 * 2,
            "3 courses and 2 books × 2 versions"
        );
        for seqs in per_aggregate.values() {
            let expected: Vec<u32> = (0..seqs.len() as u32).collect();
            assert_eq!(seqs, &expected);
        }
    }

    fn sequence_numbers_in_body(request: &TutorRequest) -> Vec<u32> {
        match request.endpoint {
            "/create_course" | "/create_ecosystem" => Vec::new(),
            _ => request.sequence_numbers.clone(),
        }
    }

    fn body_sequence_numbers(body: &Value) -> Vec<u32> {
        let mut found = Vec::new();
        let items: Vec<&Value> = match body {
            Value::Object(map) => match ["rosters", "assignments", "responses", "update_requests"]
                .iter()
                .find_map(|key| map.get(*key).and_then(Value::as_array))
            {
                Some(items) => items.iter().collect(),
                None => vec![body],
            },
            _ => Vec::new(),
        };
        for item in items {
            if let Some(seq) = item.get("sequence_number").and_then(Value::as_u64) {
                found.push(seq as u32);
            }
        }
        found
    }

    /// Runs the generator with reads on, answering every read as Biglearn does before
    /// it has results.
    fn drive_with_unready_answers(config: WorkloadConfig) -> Vec<TutorRequest> {
        let mut workload = Workload::new(config);
        let mut requests = Vec::new();
        let mut unanswered: VecDeque<TutorRequest> = VecDeque::new();
        for _ in 0..1_000_000 {
            match workload.next_request() {
                Next::Request(request) => {
                    if !request.is_write() {
                        unanswered.push_back(request.clone());
                    }
                    requests.push(request);
                }
                Next::AwaitingResponses => {
                    let Some(read) = unanswered.pop_front() else {
                        panic!("awaiting answers with none outstanding");
                    };
                    let report = workload.on_response(&read, 200, &read.unready_answer());
                    assert!(report.failures.is_empty(), "{report:?}");
                }
                Next::Finished => return requests,
            }
        }
        panic!("the generator did not finish");
    }

    fn is_uuid(value: &Value) -> bool {
        value.as_str().is_some_and(|text| {
            text.len() == 36
                && Uuid::parse_str(text).is_ok()
                && text.chars().filter(|&c| c == '-').count() == 4
        })
    }

    fn is_datetime(value: &Value) -> bool {
        value.as_str().is_some_and(|text| {
            let shape = text.len() == 27
                && text.ends_with('Z')
                && text.as_bytes()[10] == b'T'
                && text.as_bytes()[19] == b'.';
            shape && parse_date_or_datetime(text).is_some()
        })
    }

    /// Every `*_uuid` is a hyphenated uuid, every `*_uuids` a list of them, every `*_at`
    /// a microsecond UTC datetime; returns the number of fields checked.
    fn check_formats(value: &Value, path: &str, errors: &mut Vec<String>) -> usize {
        let mut checked = 0;
        match value {
            Value::Object(map) => {
                for (key, field) in map {
                    let here = format!("{path}/{key}");
                    if key.ends_with("_uuid") {
                        checked += 1;
                        if !is_uuid(field) {
                            errors.push(format!("{here} is not a uuid: {field}"));
                        }
                    } else if key.ends_with("_uuids") {
                        checked += 1;
                        if !field
                            .as_array()
                            .is_some_and(|items| items.iter().all(is_uuid))
                        {
                            errors.push(format!("{here} is not a uuid list"));
                        }
                    } else if key.ends_with("_at") {
                        checked += 1;
                        if !is_datetime(field) {
                            errors.push(format!("{here} is not a datetime: {field}"));
                        }
                    } else {
                        checked += check_formats(field, &here, errors);
                    }
                }
            }
            Value::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    checked += check_formats(item, &format!("{path}/{index}"), errors);
                }
            }
            _ => {}
        }
        checked
    }

    /// Required fields per endpoint (docs/design/api.md §2 and §4), for the body or each batch
    /// item.
    fn required_fields(endpoint: &str) -> (Option<&'static str>, &'static [&'static str]) {
        match endpoint {
            "/create_ecosystem" => (
                None,
                &["ecosystem_uuid", "book", "exercises", "imported_at"],
            ),
            "/create_course" => (
                None,
                &[
                    "course_uuid",
                    "ecosystem_uuid",
                    "is_real_course",
                    "starts_at",
                    "ends_at",
                    "created_at",
                ],
            ),
            "/update_course_active_dates" => (
                None,
                &[
                    "request_uuid",
                    "course_uuid",
                    "sequence_number",
                    "starts_at",
                    "ends_at",
                    "updated_at",
                ],
            ),
            "/update_rosters" => (
                Some("rosters"),
                &[
                    "request_uuid",
                    "course_uuid",
                    "sequence_number",
                    "course_containers",
                    "students",
                ],
            ),
            "/prepare_course_ecosystem" => (
                None,
                &[
                    "preparation_uuid",
                    "course_uuid",
                    "sequence_number",
                    "next_ecosystem_uuid",
                    "ecosystem_map",
                    "prepared_at",
                ],
            ),
            "/update_course_ecosystems" => (
                Some("update_requests"),
                &[
                    "request_uuid",
                    "course_uuid",
                    "sequence_number",
                    "preparation_uuid",
                    "updated_at",
                ],
            ),
            "/update_globally_excluded_exercises" | "/update_course_excluded_exercises" => (
                None,
                &[
                    "request_uuid",
                    "course_uuid",
                    "sequence_number",
                    "exclusions",
                    "updated_at",
                ],
            ),
            "/create_update_assignments" => (
                Some("assignments"),
                &[
                    "request_uuid",
                    "course_uuid",
                    "sequence_number",
                    "assignment_uuid",
                    "is_deleted",
                    "ecosystem_uuid",
                    "student_uuid",
                    "assignment_type",
                    "assigned_book_container_uuids",
                    "spes_are_assigned",
                    "pes_are_assigned",
                    "assigned_exercises",
                    "created_at",
                    "updated_at",
                ],
            ),
            "/record_responses" => (
                Some("responses"),
                &[
                    "response_uuid",
                    "course_uuid",
                    "sequence_number",
                    "ecosystem_uuid",
                    "trial_uuid",
                    "student_uuid",
                    "exercise_uuid",
                    "is_correct",
                    "is_real_response",
                    "responded_at",
                ],
            ),
            "/fetch_assignment_pes" => (
                Some("pe_requests"),
                &["request_uuid", "assignment_uuid", "algorithm_name"],
            ),
            "/fetch_assignment_spes" => (
                Some("spe_requests"),
                &["request_uuid", "assignment_uuid", "algorithm_name"],
            ),
            "/fetch_practice_worst_areas_exercises" => (
                Some("worst_areas_requests"),
                &["request_uuid", "student_uuid", "algorithm_name"],
            ),
            "/fetch_student_clues" => (
                Some("student_clue_requests"),
                &[
                    "request_uuid",
                    "student_uuid",
                    "book_container_uuid",
                    "algorithm_name",
                ],
            ),
            "/fetch_teacher_clues" => (
                Some("teacher_clue_requests"),
                &[
                    "request_uuid",
                    "course_container_uuid",
                    "book_container_uuid",
                    "algorithm_name",
                ],
            ),
            _ => (None, &["unknown endpoint"]),
        }
    }

    #[test]
    fn every_body_has_required_fields_and_valid_formats() {
        let mut config = small(11);
        config.cutoff_micros = Some(START + 2 * WEEK + 3 * DAY);
        let requests = drive_with_unready_answers(config);
        let mut errors = Vec::new();
        let mut per_endpoint: BTreeMap<&str, usize> = BTreeMap::new();
        let mut n_checked = 0;
        for request in &requests {
            *per_endpoint.entry(request.endpoint).or_default() += 1;
            let (batch, fields) = required_fields(request.endpoint);
            let items: Vec<&Value> = match batch {
                Some(key) => request
                    .body
                    .get(key)
                    .and_then(Value::as_array)
                    .map(|a| a.iter().collect())
                    .unwrap_or_default(),
                None => vec![&request.body],
            };
            if items.is_empty() || items.len() > 1000 {
                errors.push(format!("{} has {} items", request.endpoint, items.len()));
            }
            for item in items {
                for field in fields {
                    if item.get(*field).is_none() {
                        errors.push(format!("{} lacks {field}", request.endpoint));
                    }
                }
            }
            n_checked += check_formats(&request.body, "", &mut errors);
        }
        assert!(
            errors.is_empty(),
            "{} errors, first: {:?}",
            errors.len(),
            &errors[..errors.len().min(5)]
        );
        assert!(n_checked > 1000);
        for endpoint in [
            "/create_ecosystem",
            "/create_course",
            "/update_course_active_dates",
            "/update_rosters",
            "/prepare_course_ecosystem",
            "/update_course_ecosystems",
            "/update_globally_excluded_exercises",
            "/update_course_excluded_exercises",
            "/create_update_assignments",
            "/record_responses",
            "/fetch_assignment_pes",
            "/fetch_assignment_spes",
            "/fetch_practice_worst_areas_exercises",
            "/fetch_student_clues",
            "/fetch_teacher_clues",
        ] {
            assert!(
                per_endpoint.contains_key(endpoint),
                "no {endpoint} in {per_endpoint:?}"
            );
        }
    }

    #[test]
    fn nothing_after_the_cutoff_and_some_assignments_still_due() {
        let mut config = small(5);
        let cutoff = START + 2 * WEEK + 3 * DAY;
        config.cutoff_micros = Some(cutoff);
        let requests = offline(&config);
        assert!(requests.iter().all(|r| r.at_micros <= cutoff));
        let due_later = requests
            .iter()
            .filter(|r| r.endpoint == "/create_update_assignments")
            .flat_map(|r| {
                r.body["assignments"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter(|item| {
                let due = item["exclusion_info"]["due_at"]
                    .as_str()
                    .and_then(parse_date_or_datetime);
                due.is_some_and(|due| due > cutoff)
            })
            .count();
        let due_earlier = requests
            .iter()
            .filter(|r| r.endpoint == "/record_responses")
            .count();
        assert!(due_later > 0 && due_earlier > 0);
        assert!(requests.len() < offline(&small(5)).len());
    }

    /// Correctness follows the truth: the share of correct answers matches the mean
    /// model probability, and students end the semester knowing more than at its start.
    #[test]
    fn responses_follow_the_truth_model() {
        let config = WorkloadConfig::new(4, 25, 6, 42, START);
        let mut n_responses = 0u64;
        let mut n_correct = 0u64;
        let mut expected = 0.0;
        let summary = generate_offline(&config, |request| {
            if request.endpoint == "/record_responses" {
                expected += request.expected_correct;
                for item in request.body["responses"].as_array().into_iter().flatten() {
                    n_responses += 1;
                    n_correct += u64::from(item["is_correct"].as_bool() == Some(true));
                }
            }
        });
        assert_eq!(summary.responses, n_responses);
        assert!(n_responses > 10_000, "{n_responses}");
        let observed_mean = n_correct as f64 / n_responses as f64;
        let model_mean = expected / n_responses as f64;
        // The standard error of the mean is below 0.005 here; allow four of them.
        assert!(
            (observed_mean - model_mean).abs() < 0.02,
            "observed {observed_mean}, model {model_mean}"
        );
        assert!((0.3..0.95).contains(&model_mean), "model mean {model_mean}");
        let truth = summary
            .truth
            .as_ref()
            .map(|t| t.students.clone())
            .unwrap_or_default();
        assert_eq!(truth.len(), 4 * 25 + 2, "students plus two late enrollees");
        let gain: f64 = truth
            .iter()
            .map(|s| {
                s.final_knowledge.iter().sum::<f64>() - s.initial_knowledge.iter().sum::<f64>()
            })
            .sum();
        assert!(gain > 0.0);
    }

    #[test]
    fn offline_counts_match_the_stream() {
        let config = small(9);
        let mut events = 0;
        let summary = generate_offline(&config, |request| {
            events += request.sequence_numbers.len() as u64
        });
        assert_eq!(summary.events, events);
        assert!(summary.requests > 0 && summary.responses > 0);
    }

    /// The first PE fetch of a run, answered by `answer(fetch, first own exercise)`.
    fn first_pe_answer(
        answer: impl Fn(&TutorRequest, &str) -> Value,
    ) -> (ResponseReport, Vec<TutorRequest>) {
        let mut workload = Workload::new(small(21));
        let mut own_exercise: HashMap<String, String> = HashMap::new();
        let mut after = Vec::new();
        let mut report = None;
        for _ in 0..100_000 {
            match workload.next_request() {
                Next::Request(request) => {
                    if request.endpoint == "/create_update_assignments" {
                        for item in request.body["assignments"].as_array().into_iter().flatten() {
                            let exercise = item["assigned_exercises"][0]["exercise_uuid"]
                                .as_str()
                                .unwrap_or_default();
                            own_exercise.insert(
                                item["assignment_uuid"]
                                    .as_str()
                                    .unwrap_or_default()
                                    .to_string(),
                                exercise.to_string(),
                            );
                        }
                    }
                    if report.is_some() {
                        after.push(request.clone());
                        if after.len() > 20 {
                            break;
                        }
                    }
                    if request.is_write() {
                        continue;
                    }
                    let body = if request.endpoint == "/fetch_assignment_pes" && report.is_none() {
                        let assignment = request.body["pe_requests"][0]["assignment_uuid"]
                            .as_str()
                            .unwrap_or_default();
                        answer(
                            &request,
                            own_exercise
                                .get(assignment)
                                .map(String::as_str)
                                .unwrap_or_default(),
                        )
                    } else {
                        request.unready_answer()
                    };
                    let this = workload.on_response(&request, 200, &body);
                    if request.endpoint == "/fetch_assignment_pes" && report.is_none() {
                        report = Some(this);
                    }
                }
                Next::AwaitingResponses | Next::Finished => break,
            }
        }
        (report.unwrap_or_default(), after)
    }

    #[test]
    fn recommending_an_assigned_exercise_fails_the_check() {
        let (report, _) = first_pe_answer(
            |_, own| json!({"pe_responses": [{"assignment_status": "assignment_ready", "exercise_uuids": [own]}]}),
        );
        let classes: Vec<&str> = report.failures.iter().map(|f| f.class).collect();
        assert_eq!(classes, vec!["recommended_assigned"]);
    }

    #[test]
    fn ready_pes_are_marked_assigned_as_trials() {
        let mut chosen = String::new();
        let (report, after) = first_pe_answer(|_, _| json!({}));
        assert_eq!(
            report.failures.len(),
            1,
            "an answer without pe_responses is malformed"
        );
        // Answer with an exercise the generator itself would accept: one it assigned
        // as a PE in the fallback run, which is never forbidden.
        let marking = after
            .iter()
            .find(|r| r.endpoint == "/create_update_assignments");
        if let Some(marking) = marking {
            let item = &marking.body["assignments"][0];
            if let Some(pe) = item["assigned_exercises"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| e["is_pe"] == json!(true))
            {
                chosen = pe["exercise_uuid"].as_str().unwrap_or_default().to_string();
            }
        }
        assert!(!chosen.is_empty(), "the fallback marked PEs");
        let calculation = "0a6f6c38-8f5c-4c53-9ad6-2d1f3f6bca10";
        let (report, after) = first_pe_answer(
            |_, _| json!({"pe_responses": [{"assignment_status": "assignment_ready", "exercise_uuids": [chosen], "calculation_uuid": calculation, "ecosystem_matrix_uuid": calculation}]}),
        );
        assert!(report.failures.is_empty(), "{report:?}");
        let marking = after
            .iter()
            .find(|r| r.endpoint == "/create_update_assignments");
        let item = marking
            .map(|m| m.body["assignments"][0].clone())
            .unwrap_or_default();
        assert_eq!(item["pes_are_assigned"], json!(true));
        assert_eq!(item["pes"]["calculation_uuid"], json!(calculation));
        let pes: Vec<&Value> = item["assigned_exercises"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["is_pe"] == json!(true))
            .collect();
        assert_eq!(pes.len(), 1);
        assert_eq!(pes[0]["exercise_uuid"], json!(chosen));
    }

    #[test]
    fn unready_answers_are_counted_not_failed() {
        let (report, _) = first_pe_answer(|read, _| read.unready_answer());
        assert_eq!(
            report,
            ResponseReport {
                unready: 1,
                unknown: 0,
                failures: Vec::new()
            }
        );
    }
}
