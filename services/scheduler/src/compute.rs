//! [`Scheduler`] and its computation of targets into result records, in the order of
//! docs/design/scheduler.md §4 (the rules: §6–§13).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::rc::Rc;

use biglearn_domain::ids::{
    uuid_v5, AssignmentUuid, CourseUuid, EcosystemUuid, ExerciseUuid, StudentUuid,
};
use biglearn_domain::state::{AssignmentState, StateView};
use biglearn_domain::time::format_datetime_micros;
use biglearn_events::{ResultClueData, ResultKind, ResultRecord};
use biglearn_sparfa::Clue;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::allocation::{build_pes, excluded};
use crate::clue::{
    local_query_clue, sparfa_clue, student_clue_inputs, teacher_clue_inputs, ClueInputs,
};
use crate::history::{extra_slot, k_ago_map, mapped_history, HistoryEntry, HistoryType, Positions};
use crate::models::ModelView;
use crate::published::{MemoryPublished, Overlay, PublishedView};
use crate::ranking::{rank, Ranking};
use crate::reader::Reader;
use crate::settings::SchedulerSettings;
use crate::spes::build_spes;
use crate::targets::Target;
use crate::worst_areas::{build_worst_areas, worst_containers};
use crate::{Algorithm, Context, SchedulerError};

/// The `producer` of every record computed here.
pub const PRODUCER: &str = "scheduler";

/// The inputs every scheduler decision reads. Build one per course pass, with the course's
/// settings resolved at its last applied event.
pub struct Scheduler<'a> {
    pub view: &'a dyn StateView,
    pub published: &'a dyn PublishedView,
    pub models: &'a dyn ModelView,
    pub settings: SchedulerSettings,
}

/// The outcome of one computation pass.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Computed {
    /// In computation order (CLUEs, PEs, SPEs, worst areas); publish with
    /// [`crate::publish_decision`], which skips older and unchanged results.
    pub records: Vec<ResultRecord>,
    /// Targets that need an ecosystem whose `create_ecosystem` is not applied yet: keep them
    /// dirty and deferred until it is.
    pub deferred: Vec<(Target, EcosystemUuid)>,
    /// Student CLUEs computed with hidden responses: re-dirty the target at this instant.
    pub recalculate_at: Vec<(Target, i64)>,
}

impl Scheduler<'_> {
    fn algorithms(&self) -> Vec<Algorithm> {
        Algorithm::ALL
            .into_iter()
            .filter(|alg| {
                *alg != Algorithm::BiglearnSparfa || self.settings.publish_biglearn_sparfa
            })
            .collect()
    }

    /// Computes targets of one course into result records, in the §4 order: CLUEs, then PEs
    /// of every assignment, then SPEs, then worst areas (a student CLUE also computes that
    /// student's worst areas, docs/design/scheduler.md §6.5). `now` is the logical clock;
    /// `input_seq` the course's last applied sequence number.
    pub fn compute(
        &self,
        course: CourseUuid,
        targets: &[Target],
        now: i64,
        input_seq: i64,
    ) -> Result<Computed, SchedulerError> {
        let mut pass = Pass {
            scheduler: self,
            reader: Reader::new(self.view, course),
            course,
            now,
            input_seq,
            algorithms: self.algorithms(),
            overlay: Overlay {
                base: self.published,
                fresh: MemoryPublished::default(),
            },
            rankings: BTreeMap::new(),
            exclusions: BTreeMap::new(),
            out: Computed::default(),
        };
        let Some(course_state) = pass.reader.course_state().reading("reading the course")? else {
            return Ok(Computed::default());
        };
        let current = course_state.current_ecosystem;
        let mut set: BTreeSet<Target> = BTreeSet::new();
        for target in targets {
            set.insert(pass.retarget(*target, current)?);
        }
        let clue_targets: Vec<Target> = set
            .iter()
            .copied()
            .filter(|t| matches!(t, Target::StudentClue { .. } | Target::TeacherClue { .. }))
            .collect();
        for target in clue_targets {
            if let Target::StudentClue { student, .. } = target {
                if pass.compute_clue(target)? {
                    set.insert(Target::WorstAreas(student));
                }
            } else {
                pass.compute_clue(target)?;
            }
        }
        let assignments: Vec<AssignmentState> = {
            let mut list = Vec::new();
            for target in &set {
                if let Target::Assignment(uuid) = target {
                    if let Some(a) = pass.servable_assignment(*target, *uuid)? {
                        list.push(a);
                    }
                }
            }
            list
        };
        for assignment in &assignments {
            pass.compute_pes(assignment)?;
        }
        for assignment in &assignments {
            pass.compute_spes(assignment)?;
        }
        for target in &set {
            if let Target::WorstAreas(student) = target {
                pass.compute_worst_areas(*target, *student, current)?;
            }
        }
        if !self.settings.publish_biglearn_sparfa {
            pass.withdraw_biglearn_sparfa(&set)?;
        }
        Ok(pass.out)
    }
}

/// One computation pass: caches, and the results so far over the published ones.
struct Pass<'s, 'a> {
    scheduler: &'s Scheduler<'a>,
    reader: Reader<'a>,
    course: CourseUuid,
    now: i64,
    input_seq: i64,
    algorithms: Vec<Algorithm>,
    overlay: Overlay<'a>,
    rankings: BTreeMap<(StudentUuid, EcosystemUuid, Algorithm), Option<Rc<Ranking>>>,
    /// `excluded(s, now)` per student: fixed within a pass.
    exclusions: BTreeMap<StudentUuid, Rc<HashSet<ExerciseUuid>>>,
    out: Computed,
}

impl Pass<'_, '_> {
    /// CLUE targets of an earlier ecosystem move to the current one (docs/design/scheduler.md
    /// §6.1).
    fn retarget(&self, target: Target, current: EcosystemUuid) -> Result<Target, SchedulerError> {
        let mappings = self.reader.mappings().reading("reading mappings")?;
        Ok(match target {
            Target::StudentClue {
                ecosystem,
                book_container,
                student,
            } if ecosystem != current => Target::StudentClue {
                ecosystem: current,
                book_container: mappings.forward_or_same(ecosystem, current, book_container),
                student,
            },
            Target::TeacherClue {
                ecosystem,
                book_container,
                container,
            } if ecosystem != current => Target::TeacherClue {
                ecosystem: current,
                book_container: mappings.forward_or_same(ecosystem, current, book_container),
                container,
            },
            other => other,
        })
    }

    fn base_record(
        &self,
        kind: ResultKind,
        algorithm_name: String,
        model_seq: i64,
    ) -> ResultRecord {
        ResultRecord {
            kind,
            student_uuid: None,
            course_container_uuid: None,
            book_container_uuid: None,
            assignment_uuid: None,
            algorithm_name,
            calculation_uuid: Uuid::nil(),
            ecosystem_matrix_uuid: None,
            exercise_uuids: None,
            clue_data: None,
            spy_info_json: "{}".into(),
            input_seq: self.input_seq,
            model_seq,
            computed_at_micros: self.now,
            course_uuid: Some(self.course.0),
            producer: PRODUCER.into(),
        }
    }

    /// While `scheduler.publish_biglearn_sparfa` is off for the course, every served
    /// `biglearn_sparfa` result of `targets` is withdrawn (docs/design/scheduler.md S9), so
    /// that reads answer `*_unready` and Tutor falls back; a withdrawn key stays quiet.
    fn withdraw_biglearn_sparfa(
        &mut self,
        targets: &BTreeSet<Target>,
    ) -> Result<(), SchedulerError> {
        let sparfa = Algorithm::BiglearnSparfa;
        for target in targets {
            let keyed = |pass: &Self, kind: ResultKind, name: String| -> ResultRecord {
                let mut record = pass.base_record(kind, name, -1);
                match *target {
                    Target::StudentClue {
                        book_container,
                        student,
                        ..
                    } => {
                        record.student_uuid = Some(student.0);
                        record.book_container_uuid = Some(book_container.0);
                    }
                    Target::TeacherClue {
                        book_container,
                        container,
                        ..
                    } => {
                        record.course_container_uuid = Some(container.0);
                        record.book_container_uuid = Some(book_container.0);
                    }
                    Target::Assignment(assignment) => record.assignment_uuid = Some(assignment.0),
                    Target::WorstAreas(student) => record.student_uuid = Some(student.0),
                }
                record
            };
            let templates: Vec<ResultRecord> = match target {
                Target::StudentClue { .. } => {
                    vec![keyed(self, ResultKind::StudentClue, sparfa.as_str().into())]
                }
                Target::TeacherClue { .. } => {
                    vec![keyed(self, ResultKind::TeacherClue, sparfa.as_str().into())]
                }
                Target::Assignment(_) => {
                    let mut list = vec![keyed(
                        self,
                        ResultKind::AssignmentPes,
                        sparfa.as_str().into(),
                    )];
                    for history_type in HistoryType::ALL {
                        list.push(keyed(
                            self,
                            ResultKind::AssignmentSpes,
                            sparfa.spe_name(history_type),
                        ));
                    }
                    list
                }
                Target::WorstAreas(_) => vec![keyed(
                    self,
                    ResultKind::PracticeWorstAreas,
                    sparfa.as_str().into(),
                )],
            };
            for template in templates {
                let served = self
                    .overlay
                    .result(&template.key())
                    .reading_published("reading a served biglearn_sparfa result")?;
                if let Some(served) = served.filter(|served| !served.is_withdrawal()) {
                    let mut withdrawal =
                        ResultRecord::withdrawal_of(&served, self.input_seq, self.now);
                    withdrawal.course_uuid = Some(self.course.0);
                    withdrawal.producer = PRODUCER.into();
                    self.emit(withdrawal);
                }
            }
        }
        Ok(())
    }

    fn emit(&mut self, record: ResultRecord) {
        self.overlay.fresh.store(record.clone());
        self.out.records.push(record);
    }

    fn ranking(
        &mut self,
        student: StudentUuid,
        ecosystem: EcosystemUuid,
        algorithm: Algorithm,
    ) -> Result<Option<Rc<Ranking>>, SchedulerError> {
        if let Some(cached) = self.rankings.get(&(student, ecosystem, algorithm)) {
            return Ok(cached.clone());
        }
        let ranking = rank(
            &self.reader,
            self.scheduler.models,
            student,
            ecosystem,
            algorithm,
            self.input_seq,
        )
        .reading("ranking exercises")?
        .map(Rc::new);
        self.rankings
            .insert((student, ecosystem, algorithm), ranking.clone());
        Ok(ranking)
    }

    fn excluded(
        &mut self,
        student: StudentUuid,
    ) -> Result<Rc<HashSet<ExerciseUuid>>, SchedulerError> {
        if let Some(cached) = self.exclusions.get(&student) {
            return Ok(cached.clone());
        }
        let excl =
            Rc::new(excluded(&self.reader, student, self.now).reading("reading exclusions")?);
        self.exclusions.insert(student, excl.clone());
        Ok(excl)
    }

    fn ecosystem_known(
        &mut self,
        target: Target,
        ecosystem: EcosystemUuid,
    ) -> Result<bool, SchedulerError> {
        let known = self
            .reader
            .ecosystem(ecosystem)
            .reading("reading an ecosystem")?
            .is_some();
        if !known {
            self.out.deferred.push((target, ecosystem));
        }
        Ok(known)
    }

    /// Computes one CLUE target under every algorithm; returns whether a student CLUE was
    /// produced.
    fn compute_clue(&mut self, target: Target) -> Result<bool, SchedulerError> {
        let (ecosystem, book_container) = match target {
            Target::StudentClue {
                ecosystem,
                book_container,
                ..
            }
            | Target::TeacherClue {
                ecosystem,
                book_container,
                ..
            } => (ecosystem, book_container),
            _ => return Ok(false),
        };
        if !self.ecosystem_known(target, ecosystem)? {
            return Ok(false);
        }
        let inputs = match target {
            Target::StudentClue { student, .. } => {
                if !self
                    .reader
                    .is_active(student)
                    .reading("reading a student")?
                {
                    return Ok(false);
                }
                student_clue_inputs(&self.reader, ecosystem, book_container, student, self.now)
                    .reading("building student CLUE inputs")?
            }
            Target::TeacherClue { container, .. } => {
                teacher_clue_inputs(&self.reader, ecosystem, book_container, container)
                    .reading("building teacher CLUE inputs")?
            }
            _ => None,
        };
        let Some(inputs) = inputs else {
            return Ok(false);
        };
        if let Some(at) = inputs.recalculate_at {
            self.out.recalculate_at.push((target, at));
        }
        for algorithm in self.algorithms.clone() {
            let (clue, model_seq, matrix) = match algorithm {
                Algorithm::LocalQuery => {
                    let responses: Vec<_> = inputs
                        .responses
                        .iter()
                        .map(|r| (r.trial, r.is_correct))
                        .collect();
                    let clue = local_query_clue(
                        &responses,
                        self.scheduler.settings.local_query_min_num_responses,
                    );
                    (clue, -1, None)
                }
                Algorithm::BiglearnSparfa => {
                    // No SPARFA CLUE before the first model (docs/design/scheduler.md §6.4, §13).
                    let Some(model) = self.scheduler.models.latest_model(ecosystem) else {
                        continue;
                    };
                    (
                        sparfa_clue(&model, &inputs),
                        model.model_seq,
                        Some(model.matrix_uuid),
                    )
                }
            };
            let record = self.clue_record(target, algorithm, &inputs, clue, model_seq, matrix);
            self.emit(record);
        }
        Ok(matches!(target, Target::StudentClue { .. }))
    }

    fn clue_record(
        &self,
        target: Target,
        algorithm: Algorithm,
        inputs: &ClueInputs,
        clue: Clue,
        model_seq: i64,
        matrix: Option<Uuid>,
    ) -> ResultRecord {
        let mut record = match target {
            Target::StudentClue { student, .. } => ResultRecord {
                student_uuid: Some(student.0),
                ..self.base_record(
                    ResultKind::StudentClue,
                    algorithm.as_str().into(),
                    model_seq,
                )
            },
            _ => ResultRecord {
                course_container_uuid: match target {
                    Target::TeacherClue { container, .. } => Some(container.0),
                    _ => None,
                },
                ..self.base_record(
                    ResultKind::TeacherClue,
                    algorithm.as_str().into(),
                    model_seq,
                )
            },
        };
        record.book_container_uuid = Some(inputs.book_container.0);
        record.clue_data = Some(ResultClueData {
            minimum: clue.minimum,
            most_likely: clue.most_likely,
            maximum: clue.maximum,
            is_real: clue.is_real,
            ecosystem_uuid: Some(inputs.ecosystem.0),
        });
        record.calculation_uuid = uuid_v5(&format!(
            "clue/{}/{}/{}/{}",
            record.key(),
            self.input_seq,
            model_seq,
            self.now
        ));
        let spy = json!({
            "clue_algorithm_name": algorithm.as_str(),
            "ecosystem_matrix_uuid": matrix.map(|m| m.to_string()),
            "num_responses": inputs.responses.len(),
            "num_exercises": inputs.exercise_uuids.len(),
            "recalculate_at": inputs.recalculate_at.map(format_datetime_micros),
        });
        record.spy_info_json = spy.to_string();
        record
    }

    /// The assignment behind a target, if its results are still computed: known, of a
    /// student who is not dropped, in a known ecosystem.
    fn servable_assignment(
        &mut self,
        target: Target,
        uuid: AssignmentUuid,
    ) -> Result<Option<AssignmentState>, SchedulerError> {
        let Some(assignment) = self
            .reader
            .assignment(uuid)
            .reading("reading an assignment")?
        else {
            return Ok(None);
        };
        if !self
            .reader
            .is_served(assignment.student)
            .reading("reading a student")?
        {
            return Ok(None);
        }
        if !self.ecosystem_known(target, assignment.ecosystem)? {
            return Ok(None);
        }
        Ok(Some(assignment))
    }

    fn compute_pes(&mut self, assignment: &AssignmentState) -> Result<(), SchedulerError> {
        if !assignment.needs_pes() {
            return Ok(());
        }
        let excl = self.excluded(assignment.student)?;
        for algorithm in self.algorithms.clone() {
            let Some(ranking) =
                self.ranking(assignment.student, assignment.ecosystem, algorithm)?
            else {
                continue;
            };
            let pes = build_pes(
                &self.reader,
                assignment,
                &ranking,
                &excl,
                self.scheduler.settings.default_num_pes_per_book_container,
            )
            .reading("allocating PEs")?;
            let spy = json!({
                "assignment_type": assignment.assignment_type,
                "exercise_algorithm_name": algorithm.as_str(),
            });
            let record = ResultRecord {
                assignment_uuid: Some(assignment.uuid.0),
                calculation_uuid: ranking.calculation_uuid,
                ecosystem_matrix_uuid: Some(ranking.ecosystem_matrix_uuid),
                exercise_uuids: Some(pes.iter().map(|e| e.0).collect()),
                spy_info_json: spy.to_string(),
                ..self.base_record(
                    ResultKind::AssignmentPes,
                    algorithm.as_str().into(),
                    ranking.model_seq,
                )
            };
            self.emit(record);
        }
        Ok(())
    }

    fn compute_spes(&mut self, assignment: &AssignmentState) -> Result<(), SchedulerError> {
        if !assignment.needs_spes() {
            return Ok(());
        }
        let student = assignment.student;
        let excl_student = self.excluded(student)?;
        // SPEs never repeat the assignment's PEs under any algorithm (docs/design/scheduler.md
        // §10.5, §10.6).
        let mut excl = excl_student.as_ref().clone();
        for record in self
            .overlay
            .results_about(ResultKind::AssignmentPes, assignment.uuid.0)
            .reading_published("reading published PEs")?
        {
            excl.extend(
                record
                    .exercise_uuids
                    .iter()
                    .flatten()
                    .map(|e| ExerciseUuid(*e)),
            );
        }
        let assignments = self
            .reader
            .student_assignments(student)
            .reading("reading the student's assignments")?;
        let positions = Positions::of(&assignments, &assignment.assignment_type);
        let mut histories = Vec::new();
        for history_type in HistoryType::ALL {
            let history = mapped_history(
                &self.reader,
                assignment,
                &assignments,
                &positions,
                history_type,
                &excl_student,
            )
            .reading("mapping the student history")?;
            let extra = extra_slot(
                history_type,
                positions.position(HistoryType::StudentDriven, assignment.uuid),
                self.scheduler.settings.random_ago_min_sequence_number,
            );
            histories.push((
                history_type,
                history,
                k_ago_map(assignment.goal_spes, extra),
            ));
        }
        for algorithm in self.algorithms.clone() {
            let Some(ranking) = self.ranking(student, assignment.ecosystem, algorithm)? else {
                continue;
            };
            for (history_type, history, kmap) in &histories {
                let (spes, spy) = build_spes(
                    &self.reader,
                    assignment,
                    history,
                    *history_type,
                    kmap,
                    &ranking,
                    &excl,
                )
                .reading("allocating SPEs")?;
                let mut exercises = Map::new();
                for exercise in &spes {
                    if let Some(s) = spy.get(exercise) {
                        exercises.insert(
                            exercise.to_string(),
                            json!({"k_ago": s.k_ago, "is_random_ago": s.is_random_ago}),
                        );
                    }
                }
                let spy_info = json!({
                    "assignment_type": assignment.assignment_type,
                    "exercise_algorithm_name": algorithm.as_str(),
                    "history_type": history_type.as_str(),
                    "assignment_history": history_json(history),
                    "exercises": Value::Object(exercises),
                });
                let record = ResultRecord {
                    assignment_uuid: Some(assignment.uuid.0),
                    calculation_uuid: ranking.calculation_uuid,
                    ecosystem_matrix_uuid: Some(ranking.ecosystem_matrix_uuid),
                    exercise_uuids: Some(spes.iter().map(|e| e.0).collect()),
                    spy_info_json: spy_info.to_string(),
                    ..self.base_record(
                        ResultKind::AssignmentSpes,
                        algorithm.spe_name(*history_type),
                        ranking.model_seq,
                    )
                };
                self.emit(record);
            }
        }
        Ok(())
    }

    fn compute_worst_areas(
        &mut self,
        target: Target,
        student: StudentUuid,
        current: EcosystemUuid,
    ) -> Result<(), SchedulerError> {
        if !self
            .reader
            .is_active(student)
            .reading("reading a student")?
        {
            return Ok(());
        }
        if !self.ecosystem_known(target, current)? {
            return Ok(());
        }
        let excl = self.excluded(student)?;
        let clues = self
            .overlay
            .results_about(ResultKind::StudentClue, student.0)
            .reading_published("reading published student CLUEs")?;
        for algorithm in self.algorithms.clone() {
            let Some(ranking) = self.ranking(student, current, algorithm)? else {
                continue;
            };
            let own: Vec<ResultRecord> = clues
                .iter()
                .filter(|r| r.algorithm_name == algorithm.as_str())
                .cloned()
                .collect();
            let worst = worst_containers(&own, current);
            let exercises = build_worst_areas(&self.reader, current, &worst, &ranking, &excl)
                .reading("choosing worst-areas exercises")?;
            let spy = json!({
                "clue_algorithm_name": algorithm.as_str(),
                "exercise_algorithm_name": algorithm.as_str(),
            });
            let record = ResultRecord {
                student_uuid: Some(student.0),
                calculation_uuid: ranking.calculation_uuid,
                ecosystem_matrix_uuid: Some(ranking.ecosystem_matrix_uuid),
                exercise_uuids: Some(exercises.iter().map(|e| e.0).collect()),
                spy_info_json: spy.to_string(),
                ..self.base_record(
                    ResultKind::PracticeWorstAreas,
                    algorithm.as_str().into(),
                    ranking.model_seq,
                )
            };
            self.emit(record);
        }
        Ok(())
    }
}

fn history_json(history: &[HistoryEntry]) -> Value {
    let mut map = Map::new();
    for (k, entry) in history.iter().enumerate() {
        map.insert(
            k.to_string(),
            json!({
                "assignment_uuid": entry.assignment_uuid.map(|a| a.to_string()),
                "book_container_uuids": entry
                    .book_container_uuids
                    .iter()
                    .map(|bc| bc.to_string())
                    .collect::<Vec<_>>(),
            }),
        );
    }
    Value::Object(map)
}
