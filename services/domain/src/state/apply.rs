//! Event effects (docs/design/scheduler.md §3): one event, in sequence order, changes the read
//! model.

use std::collections::{BTreeMap, BTreeSet};

use crate::events::{
    CourseEvent, CoursePayload, CreateEcosystem, CreateUpdateAssignment, EcosystemEvent,
    EcosystemPayload, PrepareCourseEcosystem, RecordResponse, Timestamp, UpdateExcludedExercises,
    UpdateRoster,
};
use crate::ids::{
    AssignmentUuid, BookContainerUuid, CourseContainerUuid, CourseUuid, EcosystemUuid,
    ExerciseGroupUuid, ExerciseUuid, PreparationUuid, StudentUuid, TrialUuid,
};

use super::model::{
    AssignmentState, CompletionState, CourseContainerState, CourseState, EcosystemState,
    ExerciseState, PoolState, PreparationState, ResponseState, StudentState, TrialState,
};
use super::{StateError, StateStore};

/// What an applied event changed, in the terms a scheduler turns into recompute targets
/// (docs/design/scheduler.md §3.1, §4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    CourseCreated {
        course: CourseUuid,
    },
    EcosystemSwitched {
        course: CourseUuid,
        from: EcosystemUuid,
        to: EcosystemUuid,
    },
    RosterUpdated {
        course: CourseUuid,
        /// Students that were not active before this snapshot.
        newly_active: Vec<StudentUuid>,
        /// Students that were active and are now dropped or absent.
        deactivated: Vec<StudentUuid>,
    },
    ExclusionsChanged {
        course: CourseUuid,
    },
    AssignmentChanged {
        course: CourseUuid,
        assignment: AssignmentUuid,
        student: StudentUuid,
        new_trials: Vec<TrialUuid>,
    },
    ResponseRecorded {
        course: CourseUuid,
        response: ResponseState,
        /// The trial is known and the student active: the response counts now (§3.5).
        counts: bool,
    },
    /// An assignment entered the student history (docs/design/scheduler.md §10.1).
    HistoryEntered {
        course: CourseUuid,
        assignment: AssignmentUuid,
        student: StudentUuid,
    },
    EcosystemCreated {
        ecosystem: EcosystemUuid,
    },
}

/// The result of applying one course event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The event is applied; these are its effects.
    Done(Vec<Effect>),
    /// `update_course_ecosystem` whose preparation is unknown: nothing changed, and the
    /// course waits at this event exactly as at a gap (docs/design/scheduler.md §3.2).
    WaitForPreparation(PreparationUuid),
}

fn micros(timestamp: &Timestamp) -> Option<i64> {
    timestamp.micros()
}

/// Registers a preparation and closes the course's mappings (docs/design/scheduler.md §3.2, §5).
/// Called on *receipt* of a `prepare_course_ecosystem`, and again when it is applied (idempotent).
pub fn register_preparation(
    store: &mut impl StateStore,
    prepare: &PrepareCourseEcosystem,
) -> Result<(), StateError> {
    let course = prepare.course_uuid;
    if store
        .preparation(course, prepare.preparation_uuid)?
        .is_some()
    {
        return Ok(());
    }
    let map = &prepare.ecosystem_map;
    store.put_preparation(
        course,
        PreparationState {
            uuid: prepare.preparation_uuid,
            from_ecosystem: map.from_ecosystem_uuid,
            next_ecosystem: prepare.ecosystem_uuid,
        },
    )?;
    let mut mappings = store.mappings(course)?;
    mappings.add(
        map.from_ecosystem_uuid,
        map.to_ecosystem_uuid,
        map.book_container_mappings
            .iter()
            .map(|m| (m.from_book_container_uuid, m.to_book_container_uuid)),
    );
    store.put_mappings(course, mappings)
}

/// Applies one course event, released in sequence order by the sequencer.
pub fn apply_course_event(
    store: &mut impl StateStore,
    event: &CourseEvent,
) -> Result<Applied, StateError> {
    let course = event.course_uuid;
    let effects = match &event.payload {
        CoursePayload::NoOp(_) => Vec::new(),
        CoursePayload::CreateCourse(create) => {
            store.put_course(CourseState {
                uuid: course,
                initial_ecosystem: create.ecosystem_uuid,
                current_ecosystem: create.ecosystem_uuid,
                is_real_course: create.is_real_course,
                starts_at: micros(&create.starts_at),
                ends_at: micros(&create.ends_at),
                global_excluded_exercise_uuids: Vec::new(),
                global_excluded_group_uuids: Vec::new(),
                course_excluded_exercise_uuids: Vec::new(),
                course_excluded_group_uuids: Vec::new(),
            })?;
            vec![Effect::CourseCreated { course }]
        }
        CoursePayload::PrepareCourseEcosystem(prepare) => {
            register_preparation(store, prepare)?;
            Vec::new()
        }
        CoursePayload::UpdateCourseEcosystem(update) => {
            let Some(preparation) = store.preparation(course, update.preparation_uuid)? else {
                return Ok(Applied::WaitForPreparation(update.preparation_uuid));
            };
            match store.course(course)? {
                Some(mut state) => {
                    let from = state.current_ecosystem;
                    state.current_ecosystem = preparation.next_ecosystem;
                    store.put_course(state)?;
                    vec![Effect::EcosystemSwitched {
                        course,
                        from,
                        to: preparation.next_ecosystem,
                    }]
                }
                None => Vec::new(),
            }
        }
        CoursePayload::UpdateRoster(roster) => apply_roster(store, course, roster)?,
        CoursePayload::UpdateCourseActiveDates(dates) => {
            if let Some(mut state) = store.course(course)? {
                state.starts_at = micros(&dates.starts_at);
                state.ends_at = micros(&dates.ends_at);
                store.put_course(state)?;
            }
            Vec::new()
        }
        CoursePayload::UpdateGloballyExcludedExercises(update) => {
            apply_exclusions(store, course, update, true)?
        }
        CoursePayload::UpdateCourseExcludedExercises(update) => {
            apply_exclusions(store, course, update, false)?
        }
        CoursePayload::CreateUpdateAssignment(assignment) => {
            apply_assignment(store, course, assignment)?
        }
        CoursePayload::RecordResponse(response) => {
            apply_response(store, course, response, event.meta.sequence_number)?
        }
    };
    Ok(Applied::Done(effects))
}

fn apply_exclusions(
    store: &mut impl StateStore,
    course: CourseUuid,
    update: &UpdateExcludedExercises,
    global: bool,
) -> Result<Vec<Effect>, StateError> {
    let Some(mut state) = store.course(course)? else {
        return Ok(Vec::new());
    };
    let exercises: Vec<ExerciseUuid> = update
        .exclusions
        .iter()
        .filter_map(|exclusion| exclusion.exercise_uuid)
        .collect();
    let groups: Vec<ExerciseGroupUuid> = update
        .exclusions
        .iter()
        .filter_map(|exclusion| exclusion.exercise_group_uuid)
        .collect();
    if global {
        state.global_excluded_exercise_uuids = exercises;
        state.global_excluded_group_uuids = groups;
    } else {
        state.course_excluded_exercise_uuids = exercises;
        state.course_excluded_group_uuids = groups;
    }
    store.put_course(state)?;
    Ok(vec![Effect::ExclusionsChanged { course }])
}

/// Spec §3.3: each roster is a full snapshot; dropped and absent students leave every container.
fn apply_roster(
    store: &mut impl StateStore,
    course: CourseUuid,
    roster: &UpdateRoster,
) -> Result<Vec<Effect>, StateError> {
    let course_as_container = CourseContainerUuid(course.0);
    let parent: BTreeMap<CourseContainerUuid, CourseContainerUuid> = roster
        .course_containers
        .iter()
        .map(|c| (c.container_uuid, c.parent_container_uuid))
        .collect();
    let before: BTreeMap<StudentUuid, StudentState> = store.students(course)?.into_iter().collect();
    let mut after: BTreeMap<StudentUuid, StudentState> = BTreeMap::new();
    for student in &roster.students {
        if student.dropped_at.is_some() {
            after.insert(
                student.student_uuid,
                StudentState {
                    containers: Vec::new(),
                    active: false,
                },
            );
            continue;
        }
        let mut chain = Vec::new();
        let mut cursor = Some(student.container_uuid);
        while let Some(container) = cursor {
            if container == course_as_container || chain.contains(&container) {
                break;
            }
            chain.push(container);
            cursor = parent.get(&container).copied();
        }
        after.insert(
            student.student_uuid,
            StudentState {
                containers: chain,
                active: true,
            },
        );
    }
    for student in before.keys() {
        after.entry(*student).or_insert(StudentState {
            containers: Vec::new(),
            active: false,
        });
    }

    let mut newly_active = Vec::new();
    let mut deactivated = Vec::new();
    for (student, state) in &after {
        let was_active = before.get(student).is_some_and(|s| s.active);
        if state.active && !was_active {
            newly_active.push(*student);
        }
        if !state.active && was_active {
            deactivated.push(*student);
        }
        if before.get(student) != Some(state) {
            store.put_student(course, *student, state.clone())?;
        }
    }

    let mut members: BTreeMap<CourseContainerUuid, BTreeSet<StudentUuid>> = BTreeMap::new();
    for (student, state) in &after {
        for container in &state.containers {
            members.entry(*container).or_default().insert(*student);
        }
    }
    let existing: BTreeSet<CourseContainerUuid> = store
        .course_containers(course)?
        .into_iter()
        .map(|(uuid, _)| uuid)
        .collect();
    let mut present = BTreeSet::new();
    for container in &roster.course_containers {
        let uuid = container.container_uuid;
        present.insert(uuid);
        let parent = Some(container.parent_container_uuid)
            .filter(|p| *p != course_as_container && *p != uuid);
        store.put_course_container(
            course,
            uuid,
            CourseContainerState {
                parent,
                archived_at: container.archived_at.as_ref().and_then(micros),
                student_uuids: members.remove(&uuid).unwrap_or_default(),
            },
        )?;
    }
    for gone in existing.difference(&present) {
        store.remove_course_container(course, *gone)?;
    }
    Ok(vec![Effect::RosterUpdated {
        course,
        newly_active,
        deactivated,
    }])
}

/// Spec §3.4: the latest event replaces the fields; new trials are inserted, old ones kept.
fn apply_assignment(
    store: &mut impl StateStore,
    course: CourseUuid,
    event: &CreateUpdateAssignment,
) -> Result<Vec<Effect>, StateError> {
    let previous = store.assignment(course, event.assignment_uuid)?;
    let mut trial_uuids = previous
        .as_ref()
        .map(|a| a.trial_uuids.clone())
        .unwrap_or_default();
    let mut new_trials = Vec::new();
    for assigned in &event.assigned_exercises {
        if store.trial(course, assigned.trial_uuid)?.is_some() {
            continue;
        }
        store.put_trial(
            course,
            assigned.trial_uuid,
            TrialState {
                assignment: event.assignment_uuid,
                exercise: assigned.exercise_uuid,
                is_spe: assigned.is_spe,
                is_pe: assigned.is_pe,
            },
        )?;
        trial_uuids.push(assigned.trial_uuid);
        new_trials.push(assigned.trial_uuid);
    }
    let mut assigned_exercise_uuids: Vec<ExerciseUuid> = Vec::new();
    for assigned in &event.assigned_exercises {
        if !assigned_exercise_uuids.contains(&assigned.exercise_uuid) {
            assigned_exercise_uuids.push(assigned.exercise_uuid);
        }
    }
    let exclusion = event.exclusion_info.as_ref();
    let at = |pick: fn(&crate::events::ExclusionInfo) -> &Option<Timestamp>| {
        exclusion
            .and_then(|info| pick(info).as_ref())
            .and_then(micros)
    };
    let assignment = AssignmentState {
        uuid: event.assignment_uuid,
        student: event.student_uuid,
        ecosystem: event.ecosystem_uuid,
        assignment_type: event.assignment_type.clone(),
        opens_at: at(|info| &info.opens_at),
        due_at: at(|info| &info.due_at),
        feedback_at: at(|info| &info.feedback_at),
        assigned_book_container_uuids: event.assigned_book_container_uuids.clone(),
        assigned_exercise_uuids,
        goal_pes: event.goal_num_tutor_assigned_pes,
        goal_spes: event.goal_num_tutor_assigned_spes,
        pes_are_assigned: event.pes_are_assigned,
        spes_are_assigned: event.spes_are_assigned,
        is_deleted: event.is_deleted,
        created_at: micros(&event.created_at),
        history_at: previous.as_ref().and_then(|a| a.history_at),
        trial_uuids,
    };
    let student = assignment.student;
    // Recomputed from the responses on every assignment event (rare): the due date or the
    // trials may have changed. Responses then update the small row incrementally.
    let (assignment, completion) = check_completion(store, course, assignment)?;
    store.put_completion(course, assignment.uuid, completion)?;
    let entered_history =
        assignment.history_at.is_some() && previous.as_ref().is_none_or(|p| p.history_at.is_none());
    store.put_assignment(course, assignment)?;
    let mut effects = vec![Effect::AssignmentChanged {
        course,
        assignment: event.assignment_uuid,
        student,
        new_trials,
    }];
    if entered_history {
        effects.push(Effect::HistoryEntered {
            course,
            assignment: event.assignment_uuid,
            student,
        });
    }
    Ok(effects)
}

/// Spec §3.5: store the response; it counts now if its trial is known and the student active.
fn apply_response(
    store: &mut impl StateStore,
    course: CourseUuid,
    event: &RecordResponse,
    course_seq: crate::ids::SequenceNumber,
) -> Result<Vec<Effect>, StateError> {
    let response = ResponseState {
        response_uuid: event.response_uuid,
        trial: event.trial_uuid,
        student: event.student_uuid,
        exercise: event.exercise_uuid,
        ecosystem: event.ecosystem_uuid,
        is_correct: event.is_correct,
        is_real: event.is_real_response,
        responded_at: micros(&event.responded_at).unwrap_or(i64::MIN),
        course_seq,
    };
    store.put_response(course, response)?;
    let trial = store.trial(course, event.trial_uuid)?;
    let active = store
        .student(course, event.student_uuid)?
        .is_some_and(|s| s.active);
    let mut effects = vec![Effect::ResponseRecorded {
        course,
        response,
        counts: trial.is_some() && active,
    }];
    if let Some(trial) = trial.filter(|t| !t.is_spe) {
        if let Some(mut completion) = store.completion(course, trial.assignment)? {
            let before = completion.clone();
            if completion.record(event.trial_uuid, response.responded_at) {
                if let Some(mut assignment) = store.assignment(course, trial.assignment)? {
                    assignment.history_at = completion.latest_on_time;
                    effects.push(Effect::HistoryEntered {
                        course,
                        assignment: assignment.uuid,
                        student: assignment.student,
                    });
                    store.put_assignment(course, assignment)?;
                }
                store.put_completion(course, trial.assignment, None)?;
            } else if completion != before {
                store.put_completion(course, trial.assignment, Some(completion))?;
            }
        }
    }
    Ok(effects)
}

/// The completion rule of docs/design/scheduler.md §10.1 from scratch: sets `history_at` when every
/// non-SPE trial has a response by the due date, and otherwise returns what is still awaited.
/// `history_at` is sticky; the past-due rule is the scheduler's (it needs the logical clock).
fn check_completion(
    store: &impl StateStore,
    course: CourseUuid,
    mut assignment: AssignmentState,
) -> Result<(AssignmentState, Option<CompletionState>), StateError> {
    let Some(due_at) = assignment.due_at else {
        return Ok((assignment, None));
    };
    if assignment.is_deleted || assignment.history_at.is_some() {
        return Ok((assignment, None));
    }
    let mut completion = CompletionState {
        due_at,
        ..CompletionState::default()
    };
    let mut trials = Vec::new();
    for trial_uuid in &assignment.trial_uuids {
        if let Some(trial) = store.trial(course, *trial_uuid)? {
            if !trial.is_spe {
                trials.push((*trial_uuid, trial));
            }
        }
    }
    completion.required = trials.iter().map(|(uuid, _)| *uuid).collect();
    completion.required.sort();
    completion.required.dedup();
    for (trial_uuid, trial) in &trials {
        for response in
            store.student_exercise_responses(course, assignment.student, trial.exercise)?
        {
            if response.trial == *trial_uuid {
                completion.record(*trial_uuid, response.responded_at);
            }
        }
    }
    if completion.is_complete() {
        assignment.history_at = completion.latest_on_time;
        return Ok((assignment, None));
    }
    Ok((assignment, Some(completion)))
}

/// Applies one ecosystem event (docs/design/scheduler.md §2.1): content is global and written once.
pub fn apply_ecosystem_event(
    store: &mut impl StateStore,
    event: &EcosystemEvent,
) -> Result<Vec<Effect>, StateError> {
    match &event.payload {
        EcosystemPayload::NoOp(_) => Ok(Vec::new()),
        EcosystemPayload::CreateEcosystem(create) => {
            if store.ecosystem(create.ecosystem_uuid)?.is_some() {
                return Ok(Vec::new());
            }
            let state = ecosystem_state(create, event.meta.metadata_sequence_number);
            for exercise in &create.exercises {
                if store.exercise(exercise.exercise_uuid)?.is_none() {
                    store.put_exercise(
                        exercise.exercise_uuid,
                        ExerciseState {
                            group_uuid: exercise.group_uuid,
                            version: exercise.version,
                        },
                    )?;
                }
                store.add_group_version(exercise.group_uuid, exercise.exercise_uuid)?;
            }
            store.put_ecosystem(state)?;
            Ok(vec![Effect::EcosystemCreated {
                ecosystem: create.ecosystem_uuid,
            }])
        }
    }
}

fn ecosystem_state(
    create: &CreateEcosystem,
    metadata_sequence_number: Option<i64>,
) -> EcosystemState {
    let ecosystem = create.ecosystem_uuid;
    let known: BTreeSet<BookContainerUuid> = create
        .book
        .contents
        .iter()
        .map(|c| c.container_uuid)
        .collect();
    let containers = create
        .book
        .contents
        .iter()
        .map(|c| {
            let parent = Some(c.container_parent_uuid)
                .filter(|p| p.0 != ecosystem.0 && *p != c.container_uuid && known.contains(p));
            (c.container_uuid, parent)
        })
        .collect();
    let mut pools = Vec::new();
    let mut exercise_book_containers: BTreeMap<ExerciseUuid, Vec<BookContainerUuid>> =
        BTreeMap::new();
    for container in &create.book.contents {
        for pool in &container.pools {
            for exercise in &pool.exercise_uuids {
                let list = exercise_book_containers.entry(*exercise).or_default();
                if !list.contains(&container.container_uuid) {
                    list.push(container.container_uuid);
                }
            }
            pools.push(PoolState {
                book_container_uuid: container.container_uuid,
                use_for_clue: pool.use_for_clue,
                types: pool.use_for_personalized_for_assignment_types.clone(),
                exercise_uuids: pool.exercise_uuids.clone(),
            });
        }
    }
    EcosystemState {
        uuid: ecosystem,
        metadata_sequence_number,
        containers,
        exercise_uuids: create.exercises.iter().map(|e| e.exercise_uuid).collect(),
        pools,
        exercise_book_containers,
    }
}
