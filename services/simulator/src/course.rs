//! One simulated course: its roster, assignments, student sessions and reads, as a queue of timed actions turned into requests.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashSet, VecDeque};
use std::sync::Arc;

use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::clock::{format_micros, DAY, HOUR, MINUTE, SECOND, WEEK};
use crate::content::{Content, ExId, Exclusion, GroupId, PoolType};
use crate::ids::random_uuid;
use crate::truth::{ClueStats, StudentTruth};
use crate::workload::{mix_seed, CheckFailure, Pending, ResponseReport, WorkloadConfig};

/// Most items Tutor puts in one batch request (the API's array bound).
const MAX_BATCH: usize = 1000;
/// Students whose CLUEs and worst areas are read each week.
const CLUE_SAMPLE_STUDENTS: usize = 4;
/// Most responses in one `/record_responses` request.
const MAX_RESPONSES_PER_REQUEST: usize = 5;
/// Knowledge gained per answered question, relative to the student's learning rate and W.
const KNOWLEDGE_CAP: f64 = 3.0;

/// A timed step of the course script. Ordered so the heap is deterministic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Setup,
    ActiveDates,
    LateEnroll,
    Prepare,
    UpdateEcosystem,
    CourseExclusions,
    Publish { week: u32, reading: bool },
    RosterChange,
    Session { assignment: u32 },
    ClueReads { week: u32 },
}

/// Everything a read's answer is checked against, captured when the read is generated.
#[derive(Clone, Debug)]
pub(crate) enum ReadContext {
    Pes {
        course_idx: usize,
        assignment: u32,
        forbidden: Arc<Forbidden>,
    },
    Spes {
        course_idx: usize,
        assignment: u32,
        forbidden: Arc<Forbidden>,
    },
    WorstAreas {
        course_idx: usize,
        excluded: Arc<HashSet<ExId>>,
    },
    StudentClues {
        course_idx: usize,
        week: u32,
        truths: Vec<f64>,
    },
    TeacherClues {
        course_idx: usize,
        week: u32,
        truths: Vec<f64>,
    },
}

impl ReadContext {
    pub(crate) fn course_idx(&self) -> usize {
        match self {
            ReadContext::Pes { course_idx, .. }
            | ReadContext::Spes { course_idx, .. }
            | ReadContext::WorstAreas { course_idx, .. }
            | ReadContext::StudentClues { course_idx, .. }
            | ReadContext::TeacherClues { course_idx, .. } => *course_idx,
        }
    }
}

/// Exercises that must never be recommended for one assignment. Only facts the server
/// had applied before the assignment's creation event are included, so a correct server
/// can never be blamed for a race.
#[derive(Debug)]
pub(crate) struct Forbidden {
    /// Global and course exclusions in force, expanded to versions.
    pub excluded: Arc<HashSet<ExId>>,
    /// The assignment's own assigned exercises.
    pub own: Vec<ExId>,
    /// Groups of the student's assignments that are certainly not yet due at "now".
    pub anti_cheating_groups: Vec<GroupId>,
}

impl Forbidden {
    fn allows(&self, content: &Content, exercise: ExId) -> bool {
        !self.excluded.contains(&exercise)
            && !self.own.contains(&exercise)
            && !self
                .anti_cheating_groups
                .contains(&content.group_of(exercise))
    }
}

struct Student {
    uuid: Uuid,
    period: usize,
    enrolled_at: i64,
    last_change_at: i64,
    dropped_at: Option<i64>,
    learning_rate: f64,
    initial: Vec<f64>,
    knowledge: Vec<f64>,
    /// (max(due_at, feedback_at), group) of every exercise assigned to the student.
    open_groups: Vec<(i64, GroupId)>,
}

impl Student {
    fn is_active_at(&self, at: i64) -> bool {
        self.enrolled_at <= at && self.dropped_at.is_none_or(|dropped| dropped > at)
    }
}

/// A recommendation answer: exercises plus the calculation that produced them.
struct Recommendation {
    exercises: Vec<ExId>,
    calculation_uuid: Option<String>,
    ecosystem_matrix_uuid: Option<String>,
}

struct Assignment {
    uuid: Uuid,
    student: usize,
    student_uuid: Uuid,
    pool_type: PoolType,
    ecosystem: Uuid,
    version: usize,
    chapter: usize,
    opens_at: i64,
    due_at: i64,
    feedback_at: Option<i64>,
    created_at: i64,
    week: u32,
    core: Vec<(Uuid, ExId)>,
    goal_pes: u32,
    goal_spes: u32,
    forbidden: Arc<Forbidden>,
    server_pes: Option<Recommendation>,
    server_spes: Option<Recommendation>,
}

pub(crate) struct Course {
    idx: usize,
    pub(crate) uuid: Uuid,
    book: usize,
    version: usize,
    rng: ChaCha8Rng,
    /// Request uuids of reads come from their own stream, so that emitting reads or not
    /// never changes the writes.
    read_rng: ChaCha8Rng,
    seed: u64,
    next_seq: u32,
    is_real: bool,
    starts_at: i64,
    ends_at: i64,
    periods: Vec<(Uuid, i64)>,
    students: Vec<Student>,
    actions: BinaryHeap<Reverse<(i64, Action)>>,
    pub(crate) outbox: VecDeque<Pending>,
    pub(crate) awaiting: u32,
    pub(crate) parked: bool,
    pub(crate) finished: bool,
    resume: Option<(u32, i64)>,
    assignments: BTreeMap<u32, Assignment>,
    next_assignment: u32,
    course_exclusions: Vec<Exclusion>,
    excluded_now: Arc<HashSet<ExId>>,
    excluded_at_setup: Arc<HashSet<ExId>>,
    preparation_uuid: Uuid,
    switches_ecosystem: bool,
}

impl Course {
    pub(crate) fn new(config: &WorkloadConfig, content: &Content, idx: usize) -> Course {
        let seed = mix_seed(config.seed, idx as u64);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let book = idx % content.books.len();
        let uuid = random_uuid(&mut rng);
        let start = config.start_micros;
        let setup_at = start - 3 * DAY + rng.random_range(0..8 * HOUR);
        let n_periods = config.periods_per_course.max(1);
        let periods: Vec<(Uuid, i64)> = (0..n_periods)
            .map(|_| (random_uuid(&mut rng), setup_at - HOUR))
            .collect();
        let ability = Normal::new(0.0, 0.8).expect("constant parameters are valid");
        let spread = Normal::new(0.0, 0.5).expect("constant parameters are valid");
        let n_concepts = content.books[book].n_concepts();
        let mut students = Vec::with_capacity(config.students_per_course + 1);
        for student_idx in 0..config.students_per_course {
            students.push(new_student(
                &mut rng,
                &ability,
                &spread,
                n_concepts,
                student_idx % n_periods,
                setup_at - 2 * HOUR,
            ));
        }
        let mut excluded_at_setup = HashSet::new();
        content.expand(&content.global_exclusions, &mut excluded_at_setup);
        let excluded_at_setup = Arc::new(excluded_at_setup);
        let preparation_uuid = random_uuid(&mut rng);
        let mut course = Course {
            idx,
            uuid,
            book,
            version: 0,
            read_rng: ChaCha8Rng::seed_from_u64(mix_seed(seed, u64::MAX)),
            seed,
            next_seq: 0,
            is_real: idx % 20 != 19,
            starts_at: start,
            ends_at: start + i64::from(config.weeks) * WEEK + 2 * WEEK,
            periods,
            students,
            actions: BinaryHeap::new(),
            outbox: VecDeque::new(),
            awaiting: 0,
            parked: false,
            finished: false,
            resume: None,
            assignments: BTreeMap::new(),
            next_assignment: 0,
            course_exclusions: Vec::new(),
            excluded_now: Arc::clone(&excluded_at_setup),
            excluded_at_setup,
            preparation_uuid,
            switches_ecosystem: config.switch_week().is_some() && idx % 2 == 0,
            rng,
        };
        course.push_action(setup_at, Action::Setup);
        if idx % 4 == 1 {
            course.push_action(start + 2 * DAY, Action::ActiveDates);
        }
        for week in 0..config.weeks {
            let week_start = start + i64::from(week) * WEEK;
            course.push_action(
                week_start - 2 * DAY + 9 * HOUR,
                Action::Publish {
                    week,
                    reading: true,
                },
            );
            course.push_action(
                week_start - 2 * DAY + 9 * HOUR + 30 * MINUTE,
                Action::Publish {
                    week,
                    reading: false,
                },
            );
            if config.emit_reads {
                course.push_action(week_start + 6 * DAY + 20 * HOUR, Action::ClueReads { week });
            }
        }
        if let Some(switch_week) = config.switch_week() {
            let week_start = start + i64::from(switch_week) * WEEK;
            if course.switches_ecosystem {
                course.push_action(week_start - 2 * DAY, Action::Prepare);
                course.push_action(week_start - 2 * DAY + HOUR, Action::UpdateEcosystem);
            }
            course.push_action(week_start + 2 * DAY + 10 * HOUR, Action::RosterChange);
            course.push_action(week_start + HOUR, Action::CourseExclusions);
            if idx % 3 == 0 {
                course.push_action(start + WEEK + DAY, Action::LateEnroll);
            }
        }
        course
    }

    fn push_action(&mut self, at: i64, action: Action) {
        self.actions.push(Reverse((at, action)));
    }

    fn take_seq(&mut self) -> u32 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    fn push(
        &mut self,
        endpoint: &'static str,
        body: Value,
        sequence_numbers: Vec<u32>,
        at_micros: i64,
    ) {
        self.outbox.push_back(Pending {
            endpoint,
            body,
            sequence_numbers,
            at_micros,
            n_responses: 0,
            read: None,
            expected_correct: 0.0,
        });
    }

    fn push_read(
        &mut self,
        endpoint: &'static str,
        body: Value,
        at_micros: i64,
        read: ReadContext,
    ) {
        self.outbox.push_back(Pending {
            endpoint,
            body,
            sequence_numbers: Vec::new(),
            at_micros,
            n_responses: 0,
            read: Some(read),
            expected_correct: 0.0,
        });
    }

    /// Simulated time of this course's next request; `None` while it waits for answers
    /// or when it has nothing left before the cutoff.
    pub(crate) fn next_time(&self, config: &WorkloadConfig) -> Option<i64> {
        if let Some(pending) = self.outbox.front() {
            return Some(pending.at_micros);
        }
        if self.awaiting > 0 {
            return None;
        }
        let Reverse((at, _)) = self.actions.peek()?;
        config.is_past(*at).then_some(*at)
    }

    /// Runs the earliest action, which may add requests to the outbox (or none).
    pub(crate) fn run_next_action(&mut self, config: &WorkloadConfig, content: &Content) {
        let Some(Reverse((at, action))) = self.actions.pop() else {
            return;
        };
        match action {
            Action::Setup => self.setup(content, at),
            Action::ActiveDates => {
                self.ends_at += WEEK;
                let seq = self.take_seq();
                let body = json!({
                    "request_uuid": random_uuid(&mut self.rng).to_string(),
                    "course_uuid": self.uuid.to_string(),
                    "sequence_number": seq,
                    "starts_at": format_micros(self.starts_at),
                    "ends_at": format_micros(self.ends_at),
                    "updated_at": format_micros(at),
                });
                self.push("/update_course_active_dates", body, vec![seq], at);
            }
            Action::LateEnroll => {
                let ability = Normal::new(0.0, 0.8).expect("constant parameters are valid");
                let spread = Normal::new(0.0, 0.5).expect("constant parameters are valid");
                let n_concepts = content.books[self.book].n_concepts();
                let period = self.students.len() % self.periods.len();
                let student = new_student(&mut self.rng, &ability, &spread, n_concepts, period, at);
                self.students.push(student);
                self.push_roster(at);
            }
            Action::RosterChange => {
                // One student moves to another period, one drops the course.
                if self.periods.len() > 1 {
                    if let Some(student) = self.students.iter_mut().find(|s| s.dropped_at.is_none())
                    {
                        student.period = (student.period + 1) % self.periods.len();
                        student.last_change_at = at;
                    }
                }
                if let Some(student) = self
                    .students
                    .iter_mut()
                    .rev()
                    .find(|s| s.dropped_at.is_none())
                {
                    student.dropped_at = Some(at);
                }
                self.push_roster(at);
            }
            Action::Prepare => {
                let next = &content.books[self.book].versions[1];
                let seq = self.take_seq();
                let body = json!({
                    "preparation_uuid": self.preparation_uuid.to_string(),
                    "course_uuid": self.uuid.to_string(),
                    "sequence_number": seq,
                    "next_ecosystem_uuid": next.uuid.to_string(),
                    "ecosystem_map": content.ecosystem_map(self.book),
                    "prepared_at": format_micros(at),
                });
                self.push("/prepare_course_ecosystem", body, vec![seq], at);
            }
            Action::UpdateEcosystem => {
                let seq = self.take_seq();
                let body = json!({"update_requests": [{
                    "request_uuid": random_uuid(&mut self.rng).to_string(),
                    "course_uuid": self.uuid.to_string(),
                    "sequence_number": seq,
                    "preparation_uuid": self.preparation_uuid.to_string(),
                    "updated_at": format_micros(at),
                }]});
                self.version = 1;
                self.push("/update_course_ecosystems", body, vec![seq], at);
            }
            Action::CourseExclusions => self.add_course_exclusions(content, at),
            Action::Publish { week, reading } => self.publish(config, content, week, reading, at),
            Action::Session { assignment } => self.start_session(config, content, assignment, at),
            Action::ClueReads { week } => self.clue_reads(config, content, week, at),
        }
    }

    fn setup(&mut self, content: &Content, at: i64) {
        let eco = &content.books[self.book].versions[0];
        let seq = self.take_seq();
        let body = json!({
            "course_uuid": self.uuid.to_string(),
            "ecosystem_uuid": eco.uuid.to_string(),
            "is_real_course": self.is_real,
            "starts_at": format_micros(self.starts_at),
            "ends_at": format_micros(self.ends_at),
            "created_at": format_micros(at),
        });
        self.push("/create_course", body, vec![seq], at);
        self.push_roster(at + MINUTE);
        let seq = self.take_seq();
        let body = json!({
            "request_uuid": random_uuid(&mut self.rng).to_string(),
            "course_uuid": self.uuid.to_string(),
            "sequence_number": seq,
            "exclusions": content.exclusions_json(&content.global_exclusions),
            "updated_at": format_micros(at + 2 * MINUTE),
        });
        self.push(
            "/update_globally_excluded_exercises",
            body,
            vec![seq],
            at + 2 * MINUTE,
        );
        let seq = self.take_seq();
        let body = json!({
            "request_uuid": random_uuid(&mut self.rng).to_string(),
            "course_uuid": self.uuid.to_string(),
            "sequence_number": seq,
            "exclusions": [],
            "updated_at": format_micros(at + 3 * MINUTE),
        });
        self.push(
            "/update_course_excluded_exercises",
            body,
            vec![seq],
            at + 3 * MINUTE,
        );
    }

    /// A full roster snapshot: every period and every student, dropped ones included.
    fn push_roster(&mut self, at: i64) {
        let seq = self.take_seq();
        let course_containers: Vec<Value> = self
            .periods
            .iter()
            .map(|(uuid, created_at)| {
                json!({
                    "container_uuid": uuid.to_string(),
                    "parent_container_uuid": self.uuid.to_string(),
                    "created_at": format_micros(*created_at),
                })
            })
            .collect();
        let students: Vec<Value> = self
            .students
            .iter()
            .filter(|s| s.enrolled_at <= at)
            .map(|s| {
                let mut item = json!({
                    "student_uuid": s.uuid.to_string(),
                    "container_uuid": self.periods[s.period].0.to_string(),
                    "enrolled_at": format_micros(s.enrolled_at),
                    "last_course_container_change_at": format_micros(s.last_change_at),
                });
                if let (Some(dropped_at), Value::Object(map)) = (s.dropped_at, &mut item) {
                    map.insert(
                        "dropped_at".into(),
                        Value::String(format_micros(dropped_at)),
                    );
                }
                item
            })
            .collect();
        let body = json!({"rosters": [{
            "request_uuid": random_uuid(&mut self.rng).to_string(),
            "course_uuid": self.uuid.to_string(),
            "sequence_number": seq,
            "course_containers": course_containers,
            "students": students,
        }]});
        self.push("/update_rosters", body, vec![seq], at);
    }

    fn add_course_exclusions(&mut self, content: &Content, at: i64) {
        // Two versions and one group from the last chapter, which later weeks may assign.
        let book = &content.books[self.book];
        let Some(last_chapter) = book.chapter_pages.last() else {
            return;
        };
        let candidates: Vec<ExId> = last_chapter
            .clone()
            .flat_map(|page| {
                book.versions[self.version].pages[page as usize]
                    .practice
                    .iter()
                    .copied()
            })
            .collect();
        let picked: Vec<ExId> = candidates
            .choose_multiple(&mut self.rng, 3)
            .copied()
            .collect();
        if let [a, b, c] = picked[..] {
            self.course_exclusions = vec![
                Exclusion::Exercise(a),
                Exclusion::Exercise(b),
                Exclusion::Group(content.group_of(c)),
            ];
        }
        let mut excluded = HashSet::new();
        content.expand(&content.global_exclusions, &mut excluded);
        content.expand(&self.course_exclusions, &mut excluded);
        self.excluded_now = Arc::new(excluded);
        let seq = self.take_seq();
        let body = json!({
            "request_uuid": random_uuid(&mut self.rng).to_string(),
            "course_uuid": self.uuid.to_string(),
            "sequence_number": seq,
            "exclusions": content.exclusions_json(&self.course_exclusions),
            "updated_at": format_micros(at),
        });
        self.push("/update_course_excluded_exercises", body, vec![seq], at);
    }

    /// Tutor publishes one reading or homework per active student for the week's chapter.
    fn publish(
        &mut self,
        config: &WorkloadConfig,
        content: &Content,
        week: u32,
        reading: bool,
        at: i64,
    ) {
        let pool_type = if reading {
            PoolType::Reading
        } else {
            PoolType::Homework
        };
        let book = &content.books[self.book];
        let chapter = week as usize % book.chapter_pages.len();
        let eco = &book.versions[self.version];
        let opens_at = config.start_micros + i64::from(week) * WEEK + 8 * HOUR;
        let (due_at, feedback_at, n_core, goal_pes, goal_spes) = if reading {
            (opens_at + 4 * DAY, None, 4, 3, 3)
        } else {
            (opens_at + 7 * DAY, Some(opens_at + 7 * DAY), 5, 2, 3)
        };
        let pool: Vec<ExId> = book.chapter_pages[chapter]
            .clone()
            .flat_map(|page| eco.pages[page as usize].of_type(pool_type).iter().copied())
            .filter(|exercise| !self.excluded_now.contains(exercise))
            .collect();
        // "Certainly not yet due" is judged against the cutoff plus a day of slack for the server's clock.
        let not_due_after = config.cutoff_micros.map_or(i64::MAX, |cutoff| cutoff + DAY);
        let mut items = Vec::new();
        let mut sequence_numbers = Vec::new();
        for student_idx in 0..self.students.len() {
            if !self.students[student_idx].is_active_at(at) {
                continue;
            }
            let mut core: Vec<ExId> = Vec::with_capacity(n_core);
            let mut shuffled = pool.clone();
            shuffled.shuffle(&mut self.rng);
            for exercise in shuffled {
                if core.len() == n_core {
                    break;
                }
                if core
                    .iter()
                    .all(|&c| content.group_of(c) != content.group_of(exercise))
                {
                    core.push(exercise);
                }
            }
            let core: Vec<(Uuid, ExId)> = core
                .into_iter()
                .map(|e| (random_uuid(&mut self.rng), e))
                .collect();
            let student = &mut self.students[student_idx];
            // Groups whose assignments are past due and past feedback no longer matter.
            student
                .open_groups
                .retain(|(open_until, _)| *open_until > at);
            let until = due_at.max(feedback_at.unwrap_or(i64::MIN));
            for &(_, exercise) in &core {
                student
                    .open_groups
                    .push((until, content.group_of(exercise)));
            }
            let mut anti_cheating_groups: Vec<GroupId> = student
                .open_groups
                .iter()
                .filter(|(open_until, _)| *open_until > not_due_after)
                .map(|(_, group)| *group)
                .collect();
            anti_cheating_groups.sort_unstable();
            anti_cheating_groups.dedup();
            let forbidden = Arc::new(Forbidden {
                excluded: Arc::clone(&self.excluded_now),
                own: core.iter().map(|&(_, e)| e).collect(),
                anti_cheating_groups,
            });
            let assignment = Assignment {
                uuid: random_uuid(&mut self.rng),
                student: student_idx,
                student_uuid: self.students[student_idx].uuid,
                pool_type,
                ecosystem: eco.uuid,
                version: self.version,
                chapter,
                opens_at,
                due_at,
                feedback_at,
                created_at: at,
                week,
                core,
                goal_pes,
                goal_spes,
                forbidden,
                server_pes: None,
                server_spes: None,
            };
            let seq = self.take_seq();
            sequence_numbers.push(seq);
            items.push(assignment_json(
                content,
                self.uuid,
                &assignment,
                random_uuid(&mut self.rng),
                seq,
                at,
                None,
            ));
            // 92 % of students work on it, some of them late.
            if self.rng.random_bool(0.92) {
                let window = (due_at - opens_at) + if self.rng.random_bool(0.1) { DAY } else { 0 };
                let session_at = opens_at + self.rng.random_range(0..window);
                let key = self.next_assignment;
                self.push_action(session_at, Action::Session { assignment: key });
            }
            self.assignments.insert(self.next_assignment, assignment);
            self.next_assignment += 1;
        }
        // Assignments two weeks old have no sessions left; keep memory bounded.
        self.assignments.retain(|_, a| a.week + 2 >= week);
        for (chunk, seqs) in items
            .chunks(MAX_BATCH)
            .zip(sequence_numbers.chunks(MAX_BATCH))
        {
            self.push(
                "/create_update_assignments",
                json!({"assignments": chunk}),
                seqs.to_vec(),
                at,
            );
        }
    }

    fn start_session(&mut self, config: &WorkloadConfig, content: &Content, key: u32, at: i64) {
        let Some(student_idx) = self.assignments.get(&key).map(|a| a.student) else {
            return;
        };
        if !self.students[student_idx].is_active_at(at) {
            return;
        }
        if !config.emit_reads {
            self.finish_session(config, content, key, at);
            return;
        }
        let Some(assignment) = self.assignments.get(&key) else {
            return;
        };
        let (spe_algorithm, uuid, goal_pes, goal_spes) = (
            match assignment.pool_type {
                PoolType::Reading => format!("student_driven_{}", config.algorithm_name),
                PoolType::Homework => format!("instructor_driven_{}", config.algorithm_name),
            },
            assignment.uuid.to_string(),
            assignment.goal_pes,
            assignment.goal_spes,
        );
        let forbidden = Arc::clone(&assignment.forbidden);
        let course_idx = self.idx;
        let body = json!({"pe_requests": [{
            "request_uuid": random_uuid(&mut self.read_rng).to_string(),
            "assignment_uuid": uuid,
            "algorithm_name": config.algorithm_name,
            "max_num_exercises": goal_pes,
        }]});
        self.push_read(
            "/fetch_assignment_pes",
            body,
            at,
            ReadContext::Pes {
                course_idx,
                assignment: key,
                forbidden: Arc::clone(&forbidden),
            },
        );
        let body = json!({"spe_requests": [{
            "request_uuid": random_uuid(&mut self.read_rng).to_string(),
            "assignment_uuid": uuid,
            "algorithm_name": spe_algorithm,
            "max_num_exercises": goal_spes,
        }]});
        self.push_read(
            "/fetch_assignment_spes",
            body,
            at,
            ReadContext::Spes {
                course_idx,
                assignment: key,
                forbidden,
            },
        );
        self.awaiting = 2;
        self.resume = Some((key, at));
    }

    /// Marks PEs and SPEs assigned (with the server's choice when it had one) and
    /// records the student's answers, drawn from the ground truth.
    fn finish_session(&mut self, config: &WorkloadConfig, content: &Content, key: u32, at: i64) {
        let Some(assignment) = self.assignments.remove(&key) else {
            return;
        };
        let assignment = &assignment;
        // The session's own stream: what the server answered never shifts later draws.
        let mut rng = ChaCha8Rng::seed_from_u64(mix_seed(self.seed, 1 + u64::from(key)));
        let book = &content.books[self.book];
        let eco = &book.versions[assignment.version];
        let pool_of = |chapter: usize| -> Vec<ExId> {
            book.chapter_pages[chapter]
                .clone()
                .flat_map(|page| {
                    eco.pages[page as usize]
                        .of_type(assignment.pool_type)
                        .iter()
                        .copied()
                })
                .collect()
        };
        let forbidden = &assignment.forbidden;
        let mut fallback_pes: Vec<ExId> = pool_of(assignment.chapter)
            .into_iter()
            .filter(|&e| forbidden.allows(content, e))
            .collect();
        fallback_pes.shuffle(&mut rng);
        fallback_pes.truncate(assignment.goal_pes as usize);
        let spe_chapter = if assignment.chapter > 0 {
            rng.random_range(0..assignment.chapter)
        } else {
            assignment.chapter
        };
        let mut fallback_spes: Vec<ExId> = pool_of(spe_chapter)
            .into_iter()
            .filter(|&e| forbidden.allows(content, e) && !fallback_pes.contains(&e))
            .collect();
        fallback_spes.shuffle(&mut rng);
        fallback_spes.truncate(assignment.goal_spes as usize);
        let pe_trials: Vec<Uuid> = (0..assignment.goal_pes)
            .map(|_| random_uuid(&mut rng))
            .collect();
        let spe_trials: Vec<Uuid> = (0..assignment.goal_spes)
            .map(|_| random_uuid(&mut rng))
            .collect();
        let request_uuid = random_uuid(&mut rng);
        let follow = config.follow_recommendations;
        let pick = |server: &Option<Recommendation>, fallback: Vec<ExId>, goal: u32| match server {
            Some(answer) if follow => {
                let mut chosen = answer.exercises.clone();
                chosen.truncate(goal as usize);
                chosen
            }
            _ => fallback,
        };
        let pes = pick(&assignment.server_pes, fallback_pes, assignment.goal_pes);
        let spes = pick(&assignment.server_spes, fallback_spes, assignment.goal_spes);
        let mut trials: Vec<(Uuid, ExId)> = assignment.core.clone();
        let mut extra = Vec::new();
        for (&trial, &exercise) in pe_trials.iter().zip(&pes) {
            extra.push((trial, exercise, false, true));
        }
        for (&trial, &exercise) in spe_trials.iter().zip(&spes) {
            extra.push((trial, exercise, true, false));
        }
        let meta = |server: &Option<Recommendation>| {
            server.as_ref().filter(|_| follow).and_then(|answer| {
                let mut map = serde_json::Map::new();
                if let Some(calculation) = &answer.calculation_uuid {
                    map.insert(
                        "calculation_uuid".into(),
                        Value::String(calculation.clone()),
                    );
                }
                if let Some(matrix) = &answer.ecosystem_matrix_uuid {
                    map.insert(
                        "ecosystem_matrix_uuid".into(),
                        Value::String(matrix.clone()),
                    );
                }
                (!map.is_empty()).then_some(Value::Object(map))
            })
        };
        let marking = Marking {
            extra: &extra,
            pes: meta(&assignment.server_pes),
            spes: meta(&assignment.server_spes),
        };
        let seq = self.take_seq();
        let body = json!({"assignments": [assignment_json(content, self.uuid, assignment, request_uuid, seq, at, Some(marking))]});
        let until = assignment
            .due_at
            .max(assignment.feedback_at.unwrap_or(i64::MIN));
        let (student_idx, is_reading, chapter, ecosystem) = (
            assignment.student,
            assignment.pool_type == PoolType::Reading,
            assignment.chapter,
            assignment.ecosystem,
        );
        trials.extend(
            extra
                .iter()
                .map(|&(trial, exercise, _, _)| (trial, exercise)),
        );
        self.push("/create_update_assignments", body, vec![seq], at);

        // Answers, drawn from the truth; every answer teaches the student a little.
        let student = &mut self.students[student_idx];
        for &(_, exercise, _, _) in &extra {
            student
                .open_groups
                .push((until, content.group_of(exercise)));
        }
        if is_reading {
            for page in book.chapter_pages[chapter].clone() {
                learn(student, page as usize, 0.5);
            }
        }
        let mut answers: Vec<Value> = Vec::with_capacity(trials.len() + 2);
        let mut answer_times = Vec::with_capacity(trials.len() + 2);
        let mut answer_p = Vec::with_capacity(trials.len() + 2);
        let mut responded_at = at;
        let course_uuid = self.uuid.to_string();
        let ecosystem_uuid = ecosystem.to_string();
        let student_uuid = student.uuid.to_string();
        for &(trial, exercise) in &trials {
            let n_answers = if rng.random_bool(0.05) { 2 } else { 1 };
            for _ in 0..n_answers {
                responded_at += rng.random_range(20 * SECOND..120 * SECOND);
                let group = content.group_of(exercise);
                let p = content.p_correct(group, &student.knowledge);
                let is_correct = rng.random::<f64>() < p;
                let is_real = rng.random_bool(0.97);
                for &(concept, w) in &content.groups[group as usize].loadings {
                    learn(student, concept as usize, w);
                }
                answers.push(object([
                    ("response_uuid", uuid_value(&random_uuid(&mut rng))),
                    ("course_uuid", Value::String(course_uuid.clone())),
                    // Filled in when the answers are cut into requests.
                    ("sequence_number", Value::from(0)),
                    ("ecosystem_uuid", Value::String(ecosystem_uuid.clone())),
                    ("trial_uuid", uuid_value(&trial)),
                    ("student_uuid", Value::String(student_uuid.clone())),
                    (
                        "exercise_uuid",
                        uuid_value(&content.exercises[exercise as usize].uuid),
                    ),
                    ("is_correct", Value::Bool(is_correct)),
                    ("is_real_response", Value::Bool(is_real)),
                    ("responded_at", Value::String(format_micros(responded_at))),
                ]));
                answer_times.push(responded_at);
                answer_p.push(p);
            }
        }
        let mut start = 0;
        while start < answers.len() {
            let size = rng
                .random_range(1..=MAX_RESPONSES_PER_REQUEST)
                .min(answers.len() - start);
            let mut chunk = Vec::with_capacity(size);
            let mut seqs = Vec::with_capacity(size);
            for answer in &mut answers[start..start + size] {
                let seq = self.next_seq;
                self.next_seq += 1;
                if let Value::Object(map) = answer {
                    map.insert("sequence_number".into(), Value::from(seq));
                }
                seqs.push(seq);
                chunk.push(std::mem::take(answer));
            }
            let sent_at = answer_times[start + size - 1];
            self.outbox.push_back(Pending {
                endpoint: "/record_responses",
                body: json!({"responses": chunk}),
                sequence_numbers: seqs,
                at_micros: sent_at,
                n_responses: size as u32,
                read: None,
                expected_correct: answer_p[start..start + size].iter().sum(),
            });
            start += size;
        }
    }

    fn clue_reads(&mut self, config: &WorkloadConfig, content: &Content, week: u32, at: i64) {
        let book = &content.books[self.book];
        let eco = &book.versions[self.version];
        let n_chapters = book.chapter_pages.len();
        let chapters_so_far = (week as usize + 1).min(n_chapters);
        let algorithm = config.algorithm_name.clone();
        // Truth of a container: mean P(correct) over its CLUE pool's groups.
        let truth_of = |knowledge: &[f64], pages: std::ops::Range<u32>| -> f64 {
            let mut groups: Vec<GroupId> = pages
                .flat_map(|page| {
                    eco.pages[page as usize]
                        .clue
                        .iter()
                        .map(|&e| content.group_of(e))
                })
                .collect();
            groups.sort_unstable();
            groups.dedup();
            let total: f64 = groups
                .iter()
                .map(|&g| content.p_correct(g, knowledge))
                .sum();
            total / groups.len().max(1) as f64
        };
        let sample: Vec<usize> = (0..self.students.len())
            .filter(|&s| self.students[s].is_active_at(at))
            .take(CLUE_SAMPLE_STUDENTS)
            .collect();
        let mut items = Vec::new();
        let mut truths = Vec::new();
        for &student_idx in &sample {
            let student = &self.students[student_idx];
            let mut targets: Vec<(Uuid, std::ops::Range<u32>)> = Vec::new();
            for chapter in 0..chapters_so_far {
                for page in book.chapter_pages[chapter].clone() {
                    targets.push((eco.page_uuids[page as usize], page..page + 1));
                }
            }
            let current = week as usize % n_chapters;
            targets.push((
                eco.chapter_uuids[current],
                book.chapter_pages[current].clone(),
            ));
            for (container, pages) in targets {
                if items.len() == MAX_BATCH {
                    break;
                }
                truths.push(truth_of(&student.knowledge, pages));
                items.push(json!({
                    "request_uuid": random_uuid(&mut self.read_rng).to_string(),
                    "student_uuid": student.uuid.to_string(),
                    "book_container_uuid": container.to_string(),
                    "algorithm_name": algorithm,
                }));
            }
        }
        let course_idx = self.idx;
        if !items.is_empty() {
            self.push_read(
                "/fetch_student_clues",
                json!({"student_clue_requests": items}),
                at,
                ReadContext::StudentClues {
                    course_idx,
                    week,
                    truths,
                },
            );
        }
        let current = week as usize % n_chapters;
        let mut items = Vec::new();
        let mut truths = Vec::new();
        for (period_idx, (period, _)) in self.periods.iter().enumerate() {
            let members: Vec<&Student> = self
                .students
                .iter()
                .filter(|s| s.period == period_idx && s.is_active_at(at))
                .collect();
            if members.is_empty() {
                continue;
            }
            for page in book.chapter_pages[current].clone() {
                let total: f64 = members
                    .iter()
                    .map(|s| truth_of(&s.knowledge, page..page + 1))
                    .sum();
                truths.push(total / members.len() as f64);
                items.push(json!({
                    "request_uuid": random_uuid(&mut self.read_rng).to_string(),
                    "course_container_uuid": period.to_string(),
                    "book_container_uuid": eco.page_uuids[page as usize].to_string(),
                    "algorithm_name": algorithm,
                }));
            }
        }
        if !items.is_empty() {
            self.push_read(
                "/fetch_teacher_clues",
                json!({"teacher_clue_requests": items}),
                at + MINUTE,
                ReadContext::TeacherClues {
                    course_idx,
                    week,
                    truths,
                },
            );
        }
        let items: Vec<Value> = sample
            .iter()
            .map(|&s| {
                json!({
                    "request_uuid": random_uuid(&mut self.read_rng).to_string(),
                    "student_uuid": self.students[s].uuid.to_string(),
                    "algorithm_name": algorithm,
                    "max_num_exercises": 5,
                })
            })
            .collect();
        if !items.is_empty() {
            let excluded = Arc::clone(&self.excluded_at_setup);
            self.push_read(
                "/fetch_practice_worst_areas_exercises",
                json!({"worst_areas_requests": items}),
                at + 2 * MINUTE,
                ReadContext::WorstAreas {
                    course_idx,
                    excluded,
                },
            );
        }
    }

    /// Checks a read's answer and, for PE/SPE fetches, resumes the waiting session.
    pub(crate) fn on_read_answer(
        &mut self,
        config: &WorkloadConfig,
        content: &Content,
        read: &ReadContext,
        (status, body): (u16, &Value),
        report: &mut ResponseReport,
        clue_stats: &mut ClueStats,
    ) {
        let ok = (200..300).contains(&status);
        match read {
            ReadContext::Pes {
                assignment,
                forbidden,
                ..
            }
            | ReadContext::Spes {
                assignment,
                forbidden,
                ..
            } => {
                let is_pes = matches!(read, ReadContext::Pes { .. });
                let (list_key, what) = if is_pes {
                    ("pe_responses", "PE")
                } else {
                    ("spe_responses", "SPE")
                };
                let answer = if ok {
                    check_recommendation(
                        content,
                        body,
                        list_key,
                        "assignment_status",
                        "assignment",
                        what,
                        Some(forbidden),
                        None,
                        report,
                    )
                } else {
                    None
                };
                if let Some(entry) = self.assignments.get_mut(assignment) {
                    if is_pes {
                        entry.server_pes = answer;
                    } else {
                        entry.server_spes = answer;
                    }
                }
                self.awaiting = self.awaiting.saturating_sub(1);
                if self.awaiting == 0 {
                    if let Some((key, at)) = self.resume.take() {
                        self.finish_session(config, content, key, at);
                    }
                }
            }
            ReadContext::WorstAreas { excluded, .. } => {
                if ok {
                    check_recommendation(
                        content,
                        body,
                        "worst_areas_responses",
                        "student_status",
                        "student",
                        "worst-areas exercise",
                        None,
                        Some(excluded),
                        report,
                    );
                }
            }
            ReadContext::StudentClues { week, truths, .. }
            | ReadContext::TeacherClues { week, truths, .. } => {
                if ok {
                    let key = if matches!(read, ReadContext::StudentClues { .. }) {
                        "student_clue_responses"
                    } else {
                        "teacher_clue_responses"
                    };
                    check_clues(body, key, *week, truths, report, clue_stats);
                }
            }
        }
    }

    /// The truth of every student, for `--truth-out`; frees the course's memory.
    pub(crate) fn take_truth(&mut self) -> Vec<StudentTruth> {
        let course_uuid = self.uuid.to_string();
        let truths = self
            .students
            .drain(..)
            .map(|s| StudentTruth {
                student_uuid: s.uuid.to_string(),
                course_uuid: course_uuid.clone(),
                book: self.book,
                learning_rate: s.learning_rate,
                initial_knowledge: s.initial,
                final_knowledge: s.knowledge,
            })
            .collect();
        self.release();
        truths
    }

    pub(crate) fn release(&mut self) {
        self.students = Vec::new();
        self.assignments = BTreeMap::new();
        self.actions = BinaryHeap::new();
    }
}

/// A JSON object with its fields in the given order, allocated once.
fn object<const N: usize>(fields: [(&str, Value); N]) -> Value {
    let mut map = serde_json::Map::with_capacity(N);
    for (key, value) in fields {
        map.insert(key.to_string(), value);
    }
    Value::Object(map)
}

/// A uuid as a lower-case hyphenated JSON string (without the formatting machinery).
fn uuid_value(uuid: &Uuid) -> Value {
    Value::String(
        uuid.hyphenated()
            .encode_lower(&mut Uuid::encode_buffer())
            .to_owned(),
    )
}

fn trial_json(trial: Uuid, exercise: Value, is_spe: bool, is_pe: bool) -> Value {
    object([
        ("trial_uuid", uuid_value(&trial)),
        ("exercise_uuid", exercise),
        ("is_spe", Value::Bool(is_spe)),
        ("is_pe", Value::Bool(is_pe)),
    ])
}

/// The PE/SPE trials added when marking an assignment, and the calculations used.
struct Marking<'a> {
    extra: &'a [(Uuid, ExId, bool, bool)],
    pes: Option<Value>,
    spes: Option<Value>,
}

fn learn(student: &mut Student, concept: usize, weight: f64) {
    let cap = student.initial[concept] + KNOWLEDGE_CAP;
    student.knowledge[concept] =
        (student.knowledge[concept] + student.learning_rate * weight).min(cap);
}

fn new_student(
    rng: &mut ChaCha8Rng,
    ability: &Normal<f64>,
    spread: &Normal<f64>,
    n_concepts: usize,
    period: usize,
    enrolled_at: i64,
) -> Student {
    let uuid = random_uuid(rng);
    let base = ability.sample(rng);
    let initial: Vec<f64> = (0..n_concepts).map(|_| base + spread.sample(rng)).collect();
    Student {
        uuid,
        period,
        enrolled_at,
        last_change_at: enrolled_at,
        dropped_at: None,
        learning_rate: rng.random_range(0.03..0.12),
        knowledge: initial.clone(),
        initial,
        open_groups: Vec::new(),
    }
}

/// One `create_update_assignments` item: the first version (nothing assigned yet) or,
/// with `marking`, the update that marks PEs and SPEs assigned.
fn assignment_json(
    content: &Content,
    course: Uuid,
    assignment: &Assignment,
    request_uuid: Uuid,
    seq: u32,
    at: i64,
    marking: Option<Marking<'_>>,
) -> Value {
    let mut exclusion_info = serde_json::Map::new();
    exclusion_info.insert(
        "opens_at".into(),
        Value::String(format_micros(assignment.opens_at)),
    );
    exclusion_info.insert(
        "due_at".into(),
        Value::String(format_micros(assignment.due_at)),
    );
    if let Some(feedback_at) = assignment.feedback_at {
        exclusion_info.insert(
            "feedback_at".into(),
            Value::String(format_micros(feedback_at)),
        );
    }
    let exercise = |e: ExId| uuid_value(&content.exercises[e as usize].uuid);
    let mut assigned: Vec<Value> = assignment
        .core
        .iter()
        .map(|&(trial, e)| trial_json(trial, exercise(e), false, false))
        .collect();
    let is_marking = marking.is_some();
    let mut item = serde_json::Map::new();
    item.insert(
        "request_uuid".into(),
        Value::String(request_uuid.to_string()),
    );
    item.insert("course_uuid".into(), Value::String(course.to_string()));
    item.insert("sequence_number".into(), Value::from(seq));
    item.insert(
        "assignment_uuid".into(),
        Value::String(assignment.uuid.to_string()),
    );
    item.insert("is_deleted".into(), Value::Bool(false));
    item.insert(
        "ecosystem_uuid".into(),
        Value::String(assignment.ecosystem.to_string()),
    );
    item.insert(
        "student_uuid".into(),
        Value::String(assignment.student_uuid.to_string()),
    );
    item.insert(
        "assignment_type".into(),
        Value::String(assignment.pool_type.as_str().into()),
    );
    item.insert("exclusion_info".into(), Value::Object(exclusion_info));
    if let Some(marking) = marking {
        for &(trial, e, is_spe, is_pe) in marking.extra {
            assigned.push(trial_json(trial, exercise(e), is_spe, is_pe));
        }
        if let Some(pes) = marking.pes {
            item.insert("pes".into(), pes);
        }
        if let Some(spes) = marking.spes {
            item.insert("spes".into(), spes);
        }
    }
    let book_container = content_page_uuids(content, assignment);
    item.insert(
        "assigned_book_container_uuids".into(),
        Value::Array(book_container),
    );
    item.insert(
        "goal_num_tutor_assigned_spes".into(),
        Value::from(assignment.goal_spes),
    );
    item.insert("spes_are_assigned".into(), Value::Bool(is_marking));
    item.insert(
        "goal_num_tutor_assigned_pes".into(),
        Value::from(assignment.goal_pes),
    );
    item.insert("pes_are_assigned".into(), Value::Bool(is_marking));
    item.insert("assigned_exercises".into(), Value::Array(assigned));
    item.insert(
        "created_at".into(),
        Value::String(format_micros(assignment.created_at)),
    );
    item.insert("updated_at".into(), Value::String(format_micros(at)));
    Value::Object(item)
}

fn content_page_uuids(content: &Content, assignment: &Assignment) -> Vec<Value> {
    let book = content
        .books
        .iter()
        .find(|b| b.versions[assignment.version].uuid == assignment.ecosystem);
    let Some(book) = book else {
        return Vec::new();
    };
    let eco = &book.versions[assignment.version];
    book.chapter_pages[assignment.chapter]
        .clone()
        .map(|page| Value::String(eco.page_uuids[page as usize].to_string()))
        .collect()
}

/// Checks one PE/SPE/worst-areas answer. Returns the recommendation when it is ready.
#[allow(clippy::too_many_arguments)]
fn check_recommendation(
    content: &Content,
    body: &Value,
    list_key: &str,
    status_key: &str,
    status_prefix: &str,
    what: &str,
    forbidden: Option<&Forbidden>,
    excluded: Option<&HashSet<ExId>>,
    report: &mut ResponseReport,
) -> Option<Recommendation> {
    let Some(items) = body.get(list_key).and_then(Value::as_array) else {
        report.failures.push(CheckFailure {
            class: "malformed_answer",
            detail: format!("answer has no `{list_key}` array"),
        });
        return None;
    };
    let mut ready = None;
    for item in items {
        let status = item.get(status_key).and_then(Value::as_str).unwrap_or("");
        match status.strip_prefix(status_prefix) {
            Some("_ready") => {}
            Some("_unready") => {
                report.unready += 1;
                continue;
            }
            Some("_unknown") => {
                report.unknown += 1;
                continue;
            }
            _ => {
                report.failures.push(CheckFailure {
                    class: "malformed_answer",
                    detail: format!("unexpected {status_key} {status:?}"),
                });
                continue;
            }
        }
        let Some(uuids) = item.get("exercise_uuids").and_then(Value::as_array) else {
            report.failures.push(CheckFailure {
                class: "malformed_answer",
                detail: "ready answer without exercise_uuids".into(),
            });
            continue;
        };
        let mut exercises = Vec::with_capacity(uuids.len());
        for uuid in uuids {
            let parsed = uuid.as_str().and_then(|text| Uuid::parse_str(text).ok());
            let Some(exercise) = parsed.and_then(|u| content.by_uuid.get(&u).copied()) else {
                report.failures.push(CheckFailure {
                    class: "recommended_unknown_exercise",
                    detail: format!("{what} {uuid} is not an exercise of any ecosystem"),
                });
                continue;
            };
            let excluded_here = forbidden.map(|f| f.excluded.as_ref()).or(excluded);
            if excluded_here.is_some_and(|set| set.contains(&exercise)) {
                report.failures.push(CheckFailure {
                    class: "recommended_excluded",
                    detail: format!("{what} {uuid} is excluded"),
                });
            } else if let Some(forbidden) = forbidden {
                if forbidden.own.contains(&exercise) {
                    report.failures.push(CheckFailure {
                        class: "recommended_assigned",
                        detail: format!("{what} {uuid} is already assigned in this assignment"),
                    });
                } else if forbidden
                    .anti_cheating_groups
                    .contains(&content.group_of(exercise))
                {
                    report.failures.push(CheckFailure {
                        class: "recommended_anti_cheating",
                        detail: format!(
                            "{what} {uuid} is in a group assigned to an assignment not yet due"
                        ),
                    });
                }
            }
            exercises.push(exercise);
        }
        let text = |key: &str| item.get(key).and_then(Value::as_str).map(str::to_string);
        ready = Some(Recommendation {
            exercises,
            calculation_uuid: text("calculation_uuid"),
            ecosystem_matrix_uuid: text("ecosystem_matrix_uuid"),
        });
    }
    ready
}

fn check_clues(
    body: &Value,
    key: &str,
    week: u32,
    truths: &[f64],
    report: &mut ResponseReport,
    clue_stats: &mut ClueStats,
) {
    let Some(items) = body.get(key).and_then(Value::as_array) else {
        report.failures.push(CheckFailure {
            class: "malformed_answer",
            detail: format!("answer has no `{key}` array"),
        });
        return;
    };
    for (item, truth) in items.iter().zip(truths) {
        let status = item
            .get("clue_status")
            .and_then(Value::as_str)
            .unwrap_or("");
        match status {
            "clue_ready" => {}
            "clue_unready" => {
                report.unready += 1;
                continue;
            }
            "student_unknown" | "course_container_unknown" | "book_container_unknown" => {
                report.unknown += 1;
                continue;
            }
            other => {
                report.failures.push(CheckFailure {
                    class: "malformed_answer",
                    detail: format!("unexpected clue_status {other:?}"),
                });
                continue;
            }
        }
        let data = item.get("clue_data");
        let number = |field: &str| data.and_then(|d| d.get(field)).and_then(Value::as_f64);
        let is_real = data.and_then(|d| d.get("is_real")).and_then(Value::as_bool);
        match (
            number("minimum"),
            number("most_likely"),
            number("maximum"),
            is_real,
        ) {
            (Some(min), Some(most_likely), Some(max), Some(is_real))
                if (0.0..=1.0).contains(&min)
                    && min <= most_likely
                    && most_likely <= max
                    && max <= 1.0 =>
            {
                if is_real {
                    clue_stats.record(week, (most_likely - truth).abs());
                }
            }
            _ => report.failures.push(CheckFailure {
                class: "clue_malformed",
                detail: format!(
                    "clue_data {} is not an ordered interval in [0, 1]",
                    data.cloned().unwrap_or(Value::Null)
                ),
            }),
        }
    }
}
