//! Recompute targets (docs/design/scheduler.md §3, §4, §6.1): what an applied effect, a timer, a
//! created ecosystem or a first model makes dirty ([`Scheduler`]'s trigger methods).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use biglearn_domain::ids::{
    AssignmentUuid, BookContainerUuid, CourseContainerUuid, CourseUuid, EcosystemUuid,
    ExerciseUuid, StudentUuid, TrialUuid,
};
use biglearn_domain::state::{Effect, ResponseState, StateError, StudentState};
use biglearn_events::{ResultKey, ResultKind};
use uuid::Uuid;

use crate::allocation::is_open_for_anti_cheating;
use crate::published::PublishedView;
use crate::reader::Reader;
use crate::{Algorithm, Context, HistoryType, Scheduler, SchedulerError};

/// One recompute target of a course. The derived order is the §4 processing order:
/// CLUEs first, then assignments (PEs, then SPEs), then worst areas; ascending within a kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    StudentClue {
        ecosystem: EcosystemUuid,
        book_container: BookContainerUuid,
        student: StudentUuid,
    },
    TeacherClue {
        ecosystem: EcosystemUuid,
        book_container: BookContainerUuid,
        container: CourseContainerUuid,
    },
    /// PEs and SPEs of one assignment, every algorithm.
    Assignment(AssignmentUuid),
    /// Practice worst areas of one student, every algorithm.
    WorstAreas(StudentUuid),
}

impl Target {
    /// A fixed-width key (kind byte + uuids) whose byte order is the §4 processing order,
    /// for dirty sets in an ordered store.
    pub fn to_key(&self) -> Vec<u8> {
        let (tag, ids): (u8, Vec<Uuid>) = match self {
            Target::StudentClue {
                ecosystem,
                book_container,
                student,
            } => (0, vec![ecosystem.0, book_container.0, student.0]),
            Target::TeacherClue {
                ecosystem,
                book_container,
                container,
            } => (1, vec![ecosystem.0, book_container.0, container.0]),
            Target::Assignment(assignment) => (2, vec![assignment.0]),
            Target::WorstAreas(student) => (3, vec![student.0]),
        };
        let mut key = vec![tag];
        for id in ids {
            key.extend_from_slice(id.as_bytes());
        }
        key
    }

    /// The inverse of [`Target::to_key`]; `None` for a malformed key.
    pub fn from_key(key: &[u8]) -> Option<Target> {
        let (tag, rest) = key.split_first()?;
        let ids: Vec<Uuid> = rest
            .chunks(16)
            .map(|chunk| Uuid::from_slice(chunk).ok())
            .collect::<Option<_>>()?;
        match (tag, ids.as_slice()) {
            (0, [e, b, s]) => Some(Target::StudentClue {
                ecosystem: EcosystemUuid(*e),
                book_container: BookContainerUuid(*b),
                student: StudentUuid(*s),
            }),
            (1, [e, b, c]) => Some(Target::TeacherClue {
                ecosystem: EcosystemUuid(*e),
                book_container: BookContainerUuid(*b),
                container: CourseContainerUuid(*c),
            }),
            (2, [a]) => Some(Target::Assignment(AssignmentUuid(*a))),
            (3, [s]) => Some(Target::WorstAreas(StudentUuid(*s))),
            _ => None,
        }
    }
}

/// What an effect makes dirty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Triggered {
    /// Sorted, distinct.
    pub targets: Vec<Target>,
    /// Ecosystems whose `create_ecosystem` is not applied yet, so that some targets could not
    /// be derived; when one arrives, the shell asks [`crate::Scheduler::targets_for_ecosystem`].
    pub waits_for: Vec<EcosystemUuid>,
}

/// Which instant of an assignment a timer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerKind {
    /// Feedback opens: hidden responses become visible to the student CLUE
    /// (its `recalculate_at`), and anti-cheating may expire.
    FeedbackAt,
    /// Due: the past-due history rule runs, and anti-cheating may expire.
    DueAt,
}

/// A logical-clock instant at which targets become dirty (docs/design/scheduler.md §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timer {
    pub at: i64,
    pub kind: TimerKind,
    pub assignment: AssignmentUuid,
    pub student: StudentUuid,
}

/// Accumulates targets and missing ecosystems.
#[derive(Default)]
pub(crate) struct Collector {
    pub targets: BTreeSet<Target>,
    pub waits_for: BTreeSet<EcosystemUuid>,
}

impl Collector {
    pub fn finish(self) -> Triggered {
        Triggered {
            targets: self.targets.into_iter().collect(),
            waits_for: self.waits_for.into_iter().collect(),
        }
    }
}

/// §6.1: the student and teacher CLUE targets of one response, in the course's current
/// ecosystem (identity fallback for unmapped containers).
pub(crate) fn response_clue_targets(
    reader: &Reader<'_>,
    current: EcosystemUuid,
    student: &StudentState,
    response: &ResponseState,
    out: &mut Collector,
) -> Result<(), StateError> {
    let Some(eco) = reader.ecosystem(response.ecosystem)? else {
        out.waits_for.insert(response.ecosystem);
        return Ok(());
    };
    let Some(book_containers) = eco.exercise_book_containers.get(&response.exercise) else {
        return Ok(());
    };
    let mappings = reader.mappings()?;
    for bc in book_containers {
        let target_bc = mappings.forward_or_same(response.ecosystem, current, *bc);
        out.targets.insert(Target::StudentClue {
            ecosystem: current,
            book_container: target_bc,
            student: response.student,
        });
        for container in &student.containers {
            out.targets.insert(Target::TeacherClue {
                ecosystem: current,
                book_container: target_bc,
                container: *container,
            });
        }
    }
    Ok(())
}

/// The book containers (in the current ecosystem) that a student's counted responses target.
pub(crate) fn student_clue_book_containers(
    reader: &Reader<'_>,
    current: EcosystemUuid,
    student: StudentUuid,
    out: &mut Collector,
) -> Result<BTreeSet<BookContainerUuid>, StateError> {
    let state = StudentState {
        containers: Vec::new(),
        active: true,
    };
    let mut local = Collector::default();
    for response in counted_responses(reader, student)? {
        response_clue_targets(reader, current, &state, &response, &mut local)?;
    }
    out.waits_for.extend(local.waits_for);
    Ok(local
        .targets
        .into_iter()
        .filter_map(|t| match t {
            Target::StudentClue { book_container, .. } => Some(book_container),
            _ => None,
        })
        .collect())
}

/// The student's responses whose trial is known (those that count, docs/design/scheduler.md §3.5).
pub(crate) fn counted_responses(
    reader: &Reader<'_>,
    student: StudentUuid,
) -> Result<Vec<ResponseState>, StateError> {
    let mut out = Vec::new();
    let mut known: BTreeMap<TrialUuid, bool> = BTreeMap::new();
    for response in reader.view.student_responses(reader.course, student)? {
        let is_known = match known.get(&response.trial) {
            Some(k) => *k,
            None => {
                let k = reader.view.trial(reader.course, response.trial)?.is_some();
                known.insert(response.trial, k);
                k
            }
        };
        if is_known {
            out.push(response);
        }
    }
    Ok(out)
}

/// Rankings changed for the student: the assignments that need PEs or SPEs, and the worst
/// areas (docs/design/scheduler.md §3.5).
pub(crate) fn student_ranking_targets(
    reader: &Reader<'_>,
    student: StudentUuid,
    out: &mut Collector,
) -> Result<(), StateError> {
    student_assignment_targets(reader, student, out)?;
    if reader.is_active(student)? {
        out.targets.insert(Target::WorstAreas(student));
    }
    Ok(())
}

/// The student's assignments that need PEs or SPEs (none for a dropped student).
pub(crate) fn student_assignment_targets(
    reader: &Reader<'_>,
    student: StudentUuid,
    out: &mut Collector,
) -> Result<(), StateError> {
    if !reader.is_served(student)? {
        return Ok(());
    }
    for assignment in reader.student_assignments(student)? {
        if assignment.needs_pes() || assignment.needs_spes() {
            out.targets.insert(Target::Assignment(assignment.uuid));
        }
    }
    Ok(())
}

/// §3.5 for one counted response of an active student.
pub(crate) fn response_targets(
    reader: &Reader<'_>,
    current: EcosystemUuid,
    response: &ResponseState,
    out: &mut Collector,
) -> Result<(), StateError> {
    let Some(student) = reader.student(response.student)?.filter(|s| s.active) else {
        return Ok(());
    };
    response_clue_targets(reader, current, &student, response, out)?;
    student_ranking_targets(reader, response.student, out)
}

/// Every CLUE target of the course in its current ecosystem: what each counted response of
/// each active student targets (docs/design/scheduler.md §6.1, re-targeted after a switch).
pub(crate) fn all_clue_targets(
    reader: &Reader<'_>,
    current: EcosystemUuid,
    out: &mut Collector,
) -> Result<(), StateError> {
    for (student, state) in reader.view.students(reader.course)? {
        if !state.active {
            continue;
        }
        for response in counted_responses(reader, student)? {
            response_clue_targets(reader, current, &state, &response, out)?;
        }
    }
    Ok(())
}

/// §3.4 step 3: another open assignment now holds a version of these exercises' groups, so
/// results already published that show one of them are recomputed.
pub(crate) fn anti_cheating_targets(
    reader: &Reader<'_>,
    published: &dyn PublishedView,
    assignment: AssignmentUuid,
    student: StudentUuid,
    exercises: &HashSet<ExerciseUuid>,
    out: &mut Collector,
) -> Result<(), StateError> {
    if exercises.is_empty() || !reader.is_served(student)? {
        return Ok(());
    }
    let shows = |records: Vec<biglearn_events::ResultRecord>| {
        records.iter().any(|record| {
            record
                .exercise_uuids
                .iter()
                .flatten()
                .any(|e| exercises.contains(&ExerciseUuid(*e)))
        })
    };
    for other in reader.student_assignments(student)? {
        if other.uuid == assignment || !(other.needs_pes() || other.needs_spes()) {
            continue;
        }
        if shows(published.results_about(ResultKind::AssignmentPes, other.uuid.0)?)
            || shows(published.results_about(ResultKind::AssignmentSpes, other.uuid.0)?)
        {
            out.targets.insert(Target::Assignment(other.uuid));
        }
    }
    if reader.is_active(student)?
        && shows(published.results_about(ResultKind::PracticeWorstAreas, student.0)?)
    {
        out.targets.insert(Target::WorstAreas(student));
    }
    Ok(())
}

/// Every version of the groups of the new trials' exercises.
pub(crate) fn new_trial_versions(
    reader: &Reader<'_>,
    new_trials: &[TrialUuid],
) -> Result<HashSet<ExerciseUuid>, StateError> {
    let mut versions = HashSet::new();
    for trial in new_trials {
        if let Some(trial) = reader.view.trial(reader.course, *trial)? {
            versions.extend(reader.versions_of_exercise(trial.exercise)?);
        }
    }
    Ok(versions)
}

/// The anti-cheating re-check applies while the assignment is open (docs/design/scheduler.md §3.4
/// step 3). Unlike the spec's step 3, deleted assignments are re-checked too: §8's exclusion counts
/// them, so skipping them would leave published lists that the exclusion now forbids.
pub(crate) fn dedups_at(assignment: &biglearn_domain::state::AssignmentState, now: i64) -> bool {
    is_open_for_anti_cheating(assignment, now)
}

impl Scheduler<'_> {
    /// The targets an applied effect makes dirty (docs/design/scheduler.md §3.1, §3.3–§3.5). `now`
    /// is the logical clock at the effect (for the anti-cheating re-check of §3.4 step 3).
    pub fn targets_for(&self, effect: &Effect, now: i64) -> Result<Triggered, SchedulerError> {
        let mut out = Collector::default();
        self.collect_for(effect, now, &mut out)
            .reading("deriving the targets of an effect")?;
        Ok(out.finish())
    }

    fn collect_for(
        &self,
        effect: &Effect,
        now: i64,
        out: &mut Collector,
    ) -> Result<(), StateError> {
        let course = match effect {
            Effect::CourseCreated { .. } | Effect::EcosystemCreated { .. } => return Ok(()),
            Effect::EcosystemSwitched { course, .. }
            | Effect::RosterUpdated { course, .. }
            | Effect::ExclusionsChanged { course }
            | Effect::AssignmentChanged { course, .. }
            | Effect::ResponseRecorded { course, .. }
            | Effect::HistoryEntered { course, .. } => *course,
        };
        let reader = Reader::new(self.view, course);
        let Some(course_state) = reader.course_state()? else {
            return Ok(());
        };
        let current = course_state.current_ecosystem;
        match effect {
            Effect::CourseCreated { .. } | Effect::EcosystemCreated { .. } => {}
            Effect::EcosystemSwitched { to, .. } => {
                all_clue_targets(&reader, *to, out)?;
                for (student, state) in self.view.students(course)? {
                    if state.active {
                        student_ranking_targets(&reader, student, out)?;
                    }
                }
            }
            Effect::RosterUpdated {
                newly_active,
                deactivated,
                ..
            } => {
                // Teacher CLUEs of every container, over what its members (and anyone who
                // just left) answered.
                let mut bcs_of: BTreeMap<StudentUuid, BTreeSet<_>> = BTreeMap::new();
                let containers = self.view.course_containers(course)?;
                for (container, state) in &containers {
                    let mut targeted = BTreeSet::new();
                    for student in state.student_uuids.iter().chain(deactivated) {
                        if !bcs_of.contains_key(student) {
                            let bcs =
                                student_clue_book_containers(&reader, current, *student, out)?;
                            bcs_of.insert(*student, bcs);
                        }
                        targeted.extend(bcs_of[student].iter().copied());
                    }
                    for bc in targeted {
                        out.targets.insert(Target::TeacherClue {
                            ecosystem: current,
                            book_container: bc,
                            container: *container,
                        });
                    }
                }
                // Responses of newly active students count now (docs/design/scheduler.md §3.5).
                for student in newly_active {
                    if let Some(state) = reader.student(*student)?.filter(|s| s.active) {
                        for response in counted_responses(&reader, *student)? {
                            response_clue_targets(&reader, current, &state, &response, out)?;
                        }
                        student_ranking_targets(&reader, *student, out)?;
                    }
                }
            }
            Effect::ExclusionsChanged { .. } => {
                for (student, _) in self.view.students(course)? {
                    student_ranking_targets(&reader, student, out)?;
                }
            }
            Effect::AssignmentChanged {
                assignment,
                student,
                new_trials,
                ..
            } => {
                let Some(changed) = reader.assignment(*assignment)? else {
                    return Ok(());
                };
                if !reader.is_served(*student)? {
                    return Ok(());
                }
                // Step 1.
                if changed.needs_pes() || changed.needs_spes() {
                    out.targets.insert(Target::Assignment(changed.uuid));
                }
                // Step 2: positions in both histories may have moved.
                for other in reader.student_assignments(*student)? {
                    if other.assignment_type == changed.assignment_type && other.needs_spes() {
                        out.targets.insert(Target::Assignment(other.uuid));
                    }
                }
                // Step 3: anti-cheating deduplication by group.
                if dedups_at(&changed, now) {
                    let versions: HashSet<_> = new_trial_versions(&reader, new_trials)?;
                    anti_cheating_targets(
                        &reader,
                        self.published,
                        changed.uuid,
                        *student,
                        &versions,
                        out,
                    )?;
                }
                // Step 4: responses already recorded for the new trials count now.
                let new: HashSet<_> = new_trials.iter().copied().collect();
                for response in self.view.student_responses(course, *student)? {
                    if new.contains(&response.trial) {
                        response_targets(&reader, current, &response, out)?;
                    }
                }
            }
            Effect::ResponseRecorded {
                response, counts, ..
            } => {
                if *counts {
                    response_targets(&reader, current, response, out)?;
                }
            }
            Effect::HistoryEntered { student, .. } => {
                student_assignment_targets(&reader, *student, out)?;
            }
        }
        Ok(())
    }

    /// Targets to release once `create_ecosystem` of `ecosystem` is applied, for a course
    /// that was waiting on it: every CLUE target, and the results that use that ecosystem.
    pub fn targets_for_ecosystem(
        &self,
        course: CourseUuid,
        ecosystem: EcosystemUuid,
    ) -> Result<Triggered, SchedulerError> {
        let mut out = Collector::default();
        let reader = Reader::new(self.view, course);
        let run = |out: &mut Collector| -> Result<(), StateError> {
            let Some(state) = reader.course_state()? else {
                return Ok(());
            };
            all_clue_targets(&reader, state.current_ecosystem, out)?;
            for (student, student_state) in self.view.students(course)? {
                if !student_state.active {
                    continue;
                }
                if state.current_ecosystem == ecosystem {
                    out.targets.insert(Target::WorstAreas(student));
                }
                for assignment in reader.student_assignments(student)? {
                    if assignment.ecosystem == ecosystem
                        && (assignment.needs_pes() || assignment.needs_spes())
                    {
                        out.targets.insert(Target::Assignment(assignment.uuid));
                    }
                }
            }
            Ok(())
        };
        run(&mut out).reading("releasing targets waiting for an ecosystem")?;
        Ok(out.finish())
    }

    /// Spec §4: the first model of E (`model_seq = 0`) dirties every `biglearn_sparfa`
    /// target in E that has no result yet or whose result came from the prior; later models
    /// dirty nothing.
    pub fn targets_for_model(
        &self,
        course: CourseUuid,
        ecosystem: EcosystemUuid,
        model_seq: i64,
    ) -> Result<Triggered, SchedulerError> {
        let mut out = Collector::default();
        if model_seq != 0 || !self.settings.publish_biglearn_sparfa {
            return Ok(out.finish());
        }
        let reader = Reader::new(self.view, course);
        let sparfa = Algorithm::BiglearnSparfa;
        let from_prior = |key: ResultKey| -> Result<bool, StateError> {
            Ok(self
                .published
                .result(&key.text())?
                .is_none_or(|r| r.ecosystem_matrix_uuid.is_none_or(|m| m.is_nil())))
        };
        let missing = |key: ResultKey| -> Result<bool, StateError> {
            Ok(self.published.result(&key.text())?.is_none())
        };
        let run = |out: &mut Collector| -> Result<(), StateError> {
            let Some(state) = reader.course_state()? else {
                return Ok(());
            };
            if state.current_ecosystem == ecosystem {
                let mut clues = Collector::default();
                all_clue_targets(&reader, ecosystem, &mut clues)?;
                for target in clues.targets {
                    let key = match target {
                        Target::StudentClue {
                            book_container,
                            student,
                            ..
                        } => ResultKey::student_clue(student.0, book_container.0, sparfa.as_str()),
                        Target::TeacherClue {
                            book_container,
                            container,
                            ..
                        } => {
                            ResultKey::teacher_clue(container.0, book_container.0, sparfa.as_str())
                        }
                        _ => continue,
                    };
                    if missing(key)? {
                        out.targets.insert(target);
                    }
                }
            }
            for (student, student_state) in self.view.students(course)? {
                if !student_state.active {
                    continue;
                }
                if state.current_ecosystem == ecosystem
                    && from_prior(ResultKey::practice_worst_areas(student.0, sparfa.as_str()))?
                {
                    out.targets.insert(Target::WorstAreas(student));
                }
                for assignment in reader.student_assignments(student)? {
                    if assignment.ecosystem != ecosystem {
                        continue;
                    }
                    let a = assignment.uuid;
                    let pes = assignment.needs_pes()
                        && from_prior(ResultKey::assignment(
                            ResultKind::AssignmentPes,
                            a.0,
                            sparfa.as_str(),
                        ))?;
                    let mut spes = false;
                    if assignment.needs_spes() {
                        for history_type in HistoryType::ALL {
                            spes |= from_prior(ResultKey::assignment(
                                ResultKind::AssignmentSpes,
                                a.0,
                                &sparfa.spe_name(history_type),
                            ))?;
                        }
                    }
                    if pes || spes {
                        out.targets.insert(Target::Assignment(a));
                    }
                }
            }
            Ok(())
        };
        run(&mut out).reading_published("deriving the targets of a first model")?;
        Ok(out.finish())
    }

    /// The course's timers after logical time `after`: every assignment's `feedback_at` and
    /// `due_at` (deleted ones too, since their exercises stay excluded until then).
    pub fn timers_for(&self, course: CourseUuid, after: i64) -> Result<Vec<Timer>, SchedulerError> {
        let mut timers = BTreeSet::new();
        let run = |timers: &mut BTreeSet<Timer>| -> Result<(), StateError> {
            for (student, _) in self.view.students(course)? {
                for assignment in self.view.student_assignments(course, student)? {
                    for (kind, at) in [
                        (TimerKind::FeedbackAt, assignment.feedback_at),
                        (TimerKind::DueAt, assignment.due_at),
                    ] {
                        if let Some(at) = at.filter(|at| *at > after) {
                            timers.insert(Timer {
                                at,
                                kind,
                                assignment: assignment.uuid,
                                student,
                            });
                        }
                    }
                }
            }
            Ok(())
        };
        run(&mut timers).reading("listing timers")?;
        Ok(timers.into_iter().collect())
    }

    /// The targets a timer makes dirty when the logical clock reaches it (docs/design/scheduler.md
    /// §4): the student's assignments that need PEs/SPEs and worst areas (anti-cheating expiry),
    /// and for `feedback_at` the student CLUEs of the assignment's responses (`recalculate_at`).
    /// For `due_at`, the shell first applies [`crate::enter_past_due_history`] and feeds
    /// its effects to [`Scheduler::targets_for`].
    pub fn targets_for_timer(
        &self,
        course: CourseUuid,
        timer: &Timer,
    ) -> Result<Triggered, SchedulerError> {
        let mut out = Collector::default();
        let reader = Reader::new(self.view, course);
        let run = |out: &mut Collector| -> Result<(), StateError> {
            let Some(state) = reader.course_state()? else {
                return Ok(());
            };
            student_ranking_targets(&reader, timer.student, out)?;
            if timer.kind == TimerKind::FeedbackAt {
                let Some(student) = reader.student(timer.student)?.filter(|s| s.active) else {
                    return Ok(());
                };
                let Some(assignment) = reader.assignment(timer.assignment)? else {
                    return Ok(());
                };
                let trials: HashSet<_> = assignment.trial_uuids.iter().copied().collect();
                for response in counted_responses(&reader, timer.student)? {
                    if trials.contains(&response.trial) {
                        let mut clues = Collector::default();
                        response_clue_targets(
                            &reader,
                            state.current_ecosystem,
                            &student,
                            &response,
                            &mut clues,
                        )?;
                        out.waits_for.extend(clues.waits_for);
                        out.targets.extend(
                            clues
                                .targets
                                .into_iter()
                                .filter(|t| matches!(t, Target::StudentClue { .. })),
                        );
                    }
                }
            }
            Ok(())
        };
        run(&mut out).reading("deriving the targets of a timer")?;
        Ok(out.finish())
    }
}
