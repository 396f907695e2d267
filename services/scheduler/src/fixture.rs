//! Test fixture: a course built by applying real events, scheduled like the shell would.

use std::collections::BTreeMap;
use std::sync::Arc;

use biglearn_domain::events::*;
use biglearn_domain::ids::*;
use biglearn_domain::state::{
    apply_course_event, apply_ecosystem_event, register_preparation, Applied, AssignmentState,
    Effect, MemoryState, StateView,
};
use biglearn_domain::time::format_datetime_micros;
use biglearn_events::ResultRecord;
use biglearn_sparfa::ServingModel;
use uuid::Uuid;

use crate::models::EcosystemModel;
use crate::published::{MemoryPublished, PublishedView};
use crate::settings::SchedulerSettings;
use crate::targets::{Target, Timer, TimerKind};
use crate::{enter_past_due_history, Computed, Scheduler};

pub const DAY: i64 = 86_400_000_000;
/// 2026-01-01T00:00:00Z.
pub const T0: i64 = 1_767_225_600_000_000;
pub const COURSE: CourseUuid = CourseUuid(Uuid::from_u128(0xC0));

pub fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}
pub fn eco(n: u128) -> EcosystemUuid {
    EcosystemUuid(id(n))
}
pub fn bc(n: u128) -> BookContainerUuid {
    BookContainerUuid(id(n))
}
pub fn x(n: u128) -> ExerciseUuid {
    ExerciseUuid(id(n))
}
pub fn student(n: u128) -> StudentUuid {
    StudentUuid(id(n))
}
pub fn cc(n: u128) -> CourseContainerUuid {
    CourseContainerUuid(id(n))
}
pub fn asg(n: u128) -> AssignmentUuid {
    AssignmentUuid(id(n))
}
/// The group of exercise `n` unless a fixture says otherwise: one group per exercise.
pub fn group_of(n: u128) -> ExerciseGroupUuid {
    ExerciseGroupUuid(id(0x6_0000 + n))
}
fn ts(micros: i64) -> Timestamp {
    Timestamp(format_datetime_micros(micros))
}

/// One pool: (use_for_clue, types, exercises).
pub type PoolSpec = (bool, &'static [&'static str], Vec<u128>);

/// An ecosystem: containers `(bc, parent or 0, pools)` and exercise groups by exercise
/// (exercises not listed get [`group_of`]).
pub struct EcosystemSpec {
    pub uuid: EcosystemUuid,
    pub containers: Vec<(u128, u128, Vec<PoolSpec>)>,
    pub groups: BTreeMap<u128, u128>,
}

impl EcosystemSpec {
    pub fn new(uuid: EcosystemUuid) -> Self {
        EcosystemSpec {
            uuid,
            containers: Vec::new(),
            groups: BTreeMap::new(),
        }
    }

    pub fn container(mut self, bc: u128, parent: u128, pools: Vec<PoolSpec>) -> Self {
        self.containers.push((bc, parent, pools));
        self
    }

    /// Exercise `n` is a version of the group of exercise `of`.
    pub fn same_group(mut self, n: u128, of: u128) -> Self {
        self.groups.insert(n, of);
        self
    }
}

/// An assignment event, with fields set by the test.
#[derive(Clone)]
pub struct AssignmentSpec {
    pub uuid: u128,
    pub student: u128,
    pub ecosystem: EcosystemUuid,
    pub kind: &'static str,
    pub opens_at: Option<i64>,
    pub due_at: Option<i64>,
    pub feedback_at: Option<i64>,
    pub created_at: i64,
    pub bcs: Vec<u128>,
    /// (trial, exercise, is_spe, is_pe).
    pub exercises: Vec<(u128, u128, bool, bool)>,
    pub goal_pes: Option<i64>,
    pub goal_spes: Option<i64>,
    pub pes_are_assigned: bool,
    pub spes_are_assigned: bool,
    pub is_deleted: bool,
}

impl AssignmentSpec {
    pub fn new(uuid: u128, student: u128, ecosystem: EcosystemUuid, kind: &'static str) -> Self {
        AssignmentSpec {
            uuid,
            student,
            ecosystem,
            kind,
            opens_at: None,
            due_at: None,
            feedback_at: None,
            created_at: T0,
            bcs: Vec::new(),
            exercises: Vec::new(),
            goal_pes: None,
            goal_spes: None,
            pes_are_assigned: false,
            spes_are_assigned: false,
            is_deleted: false,
        }
    }

    /// Core exercises (not PE/SPE), one trial each: trial = 0x7_0000 + uuid·0x100 + idx.
    pub fn core(mut self, exercises: &[u128]) -> Self {
        let base = 0x70_0000 + self.uuid * 0x100;
        self.exercises = exercises
            .iter()
            .enumerate()
            .map(|(i, e)| (base + i as u128, *e, false, false))
            .collect();
        self
    }
}

/// A course, its content and what was published, driven like the shell would.
pub struct World {
    pub state: MemoryState,
    pub published: MemoryPublished,
    pub models: BTreeMap<EcosystemUuid, Arc<EcosystemModel>>,
    pub settings: SchedulerSettings,
    pub seq: i64,
    pub now: i64,
    /// Every record computed, in order.
    pub log: Vec<ResultRecord>,
    pub last: Computed,
}

impl World {
    pub fn new() -> World {
        World {
            state: MemoryState::default(),
            published: MemoryPublished::default(),
            models: BTreeMap::new(),
            settings: SchedulerSettings::INITIAL,
            seq: 0,
            now: T0,
            log: Vec::new(),
            last: Computed::default(),
        }
    }

    pub fn scheduler(&self) -> Scheduler<'_> {
        Scheduler {
            view: &self.state,
            published: &self.published,
            models: &self.models,
            settings: self.settings,
        }
    }

    pub fn ecosystem(&mut self, spec: EcosystemSpec) {
        let mut exercises: Vec<u128> = Vec::new();
        let contents = spec
            .containers
            .iter()
            .map(|(b, parent, pools)| BookContainer {
                container_uuid: bc(*b),
                container_parent_uuid: if *parent == 0 {
                    BookContainerUuid(spec.uuid.0)
                } else {
                    bc(*parent)
                },
                container_cnx_identity: None,
                pools: pools
                    .iter()
                    .map(|(clue, types, list)| {
                        for e in list {
                            if !exercises.contains(e) {
                                exercises.push(*e);
                            }
                        }
                        Pool {
                            use_for_clue: *clue,
                            use_for_personalized_for_assignment_types: types
                                .iter()
                                .map(|t| t.to_string())
                                .collect(),
                            exercise_uuids: list.iter().map(|e| x(*e)).collect(),
                        }
                    })
                    .collect(),
            })
            .collect();
        let create = CreateEcosystem {
            ecosystem_uuid: spec.uuid,
            sequence_number: SequenceNumber(0),
            book: Book {
                cnx_identity: None,
                contents,
            },
            exercises: exercises
                .iter()
                .map(|e| Exercise {
                    exercise_uuid: x(*e),
                    group_uuid: group_of(*spec.groups.get(e).unwrap_or(e)),
                    version: 1,
                    los: Vec::new(),
                })
                .collect(),
            imported_at: ts(T0),
        };
        let event = EcosystemEvent {
            meta: self.meta(0),
            ecosystem_uuid: spec.uuid,
            payload: EcosystemPayload::CreateEcosystem(Box::new(create)),
        };
        apply_ecosystem_event(&mut self.state, &event).unwrap();
    }

    fn meta(&self, seq: i64) -> EnvelopeMeta {
        EnvelopeMeta {
            event_uuid: EventUuid(id(0xE_0000_0000 + seq as u128)),
            sequence_number: SequenceNumber(seq),
            accepted_at_micros: self.now,
            writer_id: "test".into(),
            settings_version: 0,
            metadata_sequence_number: None,
        }
    }

    /// Applies one course event at the current logical time; returns its effects.
    pub fn apply(&mut self, payload: CoursePayload) -> Vec<Effect> {
        let event = CourseEvent {
            meta: self.meta(self.seq),
            course_uuid: COURSE,
            payload,
        };
        self.seq += 1;
        match apply_course_event(&mut self.state, &event).unwrap() {
            Applied::Done(effects) => effects,
            other => panic!("not applied: {other:?}"),
        }
    }

    /// Applies, derives targets, computes and publishes: the shell's loop for one event.
    pub fn step(&mut self, payload: CoursePayload) -> Vec<Target> {
        let effects = self.apply(payload);
        let mut targets = Vec::new();
        for effect in &effects {
            let triggered = self.scheduler().targets_for(effect, self.now).unwrap();
            assert!(triggered.waits_for.is_empty(), "{triggered:?}");
            targets.extend(triggered.targets);
        }
        self.compute(&targets);
        targets
    }

    pub fn compute(&mut self, targets: &[Target]) -> Computed {
        let computed = self
            .scheduler()
            .compute(COURSE, targets, self.now, self.seq - 1)
            .unwrap();
        for record in &computed.records {
            self.published.store(record.clone());
            self.log.push(record.clone());
        }
        self.last = computed.clone();
        computed
    }

    /// Moves the logical clock to `now`, firing the timers passed on the way
    /// (docs/design/scheduler.md §4).
    pub fn advance_to(&mut self, now: i64) {
        let before = self.now;
        let timers: Vec<Timer> = self
            .scheduler()
            .timers_for(COURSE, before)
            .unwrap()
            .into_iter()
            .filter(|t| t.at <= now)
            .collect();
        self.now = now;
        let mut targets = Vec::new();
        for timer in &timers {
            if timer.kind == TimerKind::DueAt {
                for effect in enter_past_due_history(&mut self.state, COURSE, now).unwrap() {
                    targets.extend(self.scheduler().targets_for(&effect, now).unwrap().targets);
                }
            }
            targets.extend(
                self.scheduler()
                    .targets_for_timer(COURSE, timer)
                    .unwrap()
                    .targets,
            );
        }
        self.compute(&targets);
    }

    pub fn create_course(&mut self, ecosystem: EcosystemUuid) {
        self.step(CoursePayload::CreateCourse(CreateCourse {
            course_uuid: COURSE,
            sequence_number: SequenceNumber(0),
            ecosystem_uuid: ecosystem,
            is_real_course: true,
            starts_at: ts(T0),
            ends_at: ts(T0 + 180 * DAY),
            created_at: ts(T0),
        }));
    }

    /// Containers `(container, parent or 0)`, students `(student, container)`.
    pub fn roster(
        &mut self,
        containers: &[(u128, u128)],
        students: &[(u128, u128)],
    ) -> Vec<Target> {
        self.step(CoursePayload::UpdateRoster(UpdateRoster {
            request_uuid: RequestUuid(id(0xF_0000 + self.seq as u128)),
            course_uuid: COURSE,
            sequence_number: SequenceNumber(self.seq),
            course_containers: containers
                .iter()
                .map(|(c, p)| RosterCourseContainer {
                    container_uuid: cc(*c),
                    parent_container_uuid: if *p == 0 {
                        CourseContainerUuid(COURSE.0)
                    } else {
                        cc(*p)
                    },
                    created_at: ts(T0),
                    archived_at: None,
                })
                .collect(),
            students: students
                .iter()
                .map(|(s, c)| RosterStudent {
                    student_uuid: student(*s),
                    container_uuid: cc(*c),
                    enrolled_at: ts(T0),
                    last_course_container_change_at: ts(T0),
                    dropped_at: None,
                })
                .collect(),
        }))
    }

    pub fn assignment(&mut self, spec: &AssignmentSpec) -> Vec<Target> {
        let payload = CoursePayload::CreateUpdateAssignment(CreateUpdateAssignment {
            request_uuid: RequestUuid(id(0xF_0000 + self.seq as u128)),
            course_uuid: COURSE,
            sequence_number: SequenceNumber(self.seq),
            assignment_uuid: asg(spec.uuid),
            is_deleted: spec.is_deleted,
            ecosystem_uuid: spec.ecosystem,
            student_uuid: student(spec.student),
            assignment_type: spec.kind.into(),
            exclusion_info: Some(ExclusionInfo {
                opens_at: spec.opens_at.map(ts),
                due_at: spec.due_at.map(ts),
                feedback_at: spec.feedback_at.map(ts),
            }),
            pes: None,
            spes: None,
            assigned_book_container_uuids: spec.bcs.iter().map(|b| bc(*b)).collect(),
            goal_num_tutor_assigned_spes: spec.goal_spes,
            spes_are_assigned: spec.spes_are_assigned,
            goal_num_tutor_assigned_pes: spec.goal_pes,
            pes_are_assigned: spec.pes_are_assigned,
            assigned_exercises: spec
                .exercises
                .iter()
                .map(|(t, e, is_spe, is_pe)| AssignedExercise {
                    trial_uuid: TrialUuid(id(*t)),
                    exercise_uuid: x(*e),
                    is_spe: *is_spe,
                    is_pe: *is_pe,
                })
                .collect(),
            created_at: ts(spec.created_at),
            updated_at: ts(self.now),
        });
        self.step(payload)
    }

    /// A response to trial `trial` (of exercise `exercise`) in `ecosystem`.
    pub fn respond(
        &mut self,
        who: u128,
        trial: u128,
        exercise: u128,
        ecosystem: EcosystemUuid,
        is_correct: bool,
        at: i64,
    ) -> Vec<Target> {
        self.step(CoursePayload::RecordResponse(RecordResponse {
            response_uuid: ResponseUuid(id(0xD_0000 + self.seq as u128)),
            course_uuid: COURSE,
            sequence_number: SequenceNumber(self.seq),
            ecosystem_uuid: ecosystem,
            trial_uuid: TrialUuid(id(trial)),
            student_uuid: student(who),
            exercise_uuid: x(exercise),
            is_correct,
            is_real_response: true,
            responded_at: ts(at),
        }))
    }

    /// Registers and applies a preparation, then switches to it.
    pub fn switch(
        &mut self,
        from: EcosystemUuid,
        to: EcosystemUuid,
        pairs: &[(u128, u128)],
    ) -> Vec<Target> {
        let prepare = PrepareCourseEcosystem {
            preparation_uuid: PreparationUuid(id(0xB_0000 + self.seq as u128)),
            course_uuid: COURSE,
            sequence_number: SequenceNumber(self.seq),
            ecosystem_uuid: to,
            ecosystem_map: EcosystemMap {
                from_ecosystem_uuid: from,
                to_ecosystem_uuid: to,
                book_container_mappings: pairs
                    .iter()
                    .map(|(f, t)| BookContainerMapping {
                        from_book_container_uuid: bc(*f),
                        to_book_container_uuid: bc(*t),
                    })
                    .collect(),
                exercise_mappings: Vec::new(),
            },
            prepared_at: ts(self.now),
        };
        register_preparation(&mut self.state, &prepare).unwrap();
        let preparation = prepare.preparation_uuid;
        self.step(CoursePayload::PrepareCourseEcosystem(prepare));
        self.step(CoursePayload::UpdateCourseEcosystem(
            UpdateCourseEcosystem {
                request_uuid: RequestUuid(id(0xF_0000 + self.seq as u128)),
                course_uuid: COURSE,
                sequence_number: SequenceNumber(self.seq),
                preparation_uuid: preparation,
                updated_at: ts(self.now),
            },
        ))
    }

    /// Replaces the course (or global) exclusions: exercise versions and groups.
    pub fn exclude(
        &mut self,
        global: bool,
        exercises: &[u128],
        groups: &[ExerciseGroupUuid],
    ) -> Vec<Target> {
        let exclusions = exercises
            .iter()
            .map(|e| ExerciseExclusion {
                exercise_uuid: Some(x(*e)),
                exercise_group_uuid: None,
            })
            .chain(groups.iter().map(|g| ExerciseExclusion {
                exercise_uuid: None,
                exercise_group_uuid: Some(*g),
            }))
            .collect();
        let update = UpdateExcludedExercises {
            request_uuid: RequestUuid(id(0xF_0000 + self.seq as u128)),
            course_uuid: COURSE,
            sequence_number: SequenceNumber(self.seq),
            exclusions,
            updated_at: ts(self.now),
        };
        self.step(if global {
            CoursePayload::UpdateGloballyExcludedExercises(update)
        } else {
            CoursePayload::UpdateCourseExcludedExercises(update)
        })
    }

    /// A model over the groups of ecosystem E with one concept loading 1.0 on every group.
    pub fn add_model(&mut self, ecosystem: EcosystemUuid, model_seq: i64) -> Arc<EcosystemModel> {
        let eco = self.state.ecosystem(ecosystem).unwrap().unwrap();
        let mut groups: Vec<ExerciseGroupUuid> = eco
            .exercise_uuids
            .iter()
            .map(|e| self.state.exercise(*e).unwrap().unwrap().group_uuid)
            .collect();
        groups.sort();
        groups.dedup();
        let q = groups.len();
        let w = ndarray::Array2::from_elem((1, q), 1.0);
        let d = ndarray::Array1::from_iter((0..q).map(|i| (i as f64 - q as f64 / 2.0) / q as f64));
        let model = Arc::new(EcosystemModel::new(
            ecosystem,
            uuid_v5(&format!("model/{ecosystem}/{model_seq}")),
            model_seq,
            &groups,
            eco.leaf_book_containers(),
            ServingModel::new(w.view(), d.view(), 1.0),
        ));
        self.models.insert(ecosystem, model.clone());
        model
    }

    pub fn result(&self, key: &str) -> Option<ResultRecord> {
        self.published.result(key).unwrap()
    }

    pub fn pes(&self, assignment: u128, algorithm: &str) -> Option<Vec<ExerciseUuid>> {
        self.result(&format!("assignment_pes|{}|{algorithm}", asg(assignment)))
            .and_then(|r| r.exercise_uuids)
            .map(|list| list.into_iter().map(ExerciseUuid).collect())
    }

    pub fn spes(&self, assignment: u128, algorithm: &str) -> Option<ResultRecord> {
        self.result(&format!("assignment_spes|{}|{algorithm}", asg(assignment)))
    }

    pub fn student_clue(
        &self,
        who: u128,
        book_container: u128,
        algorithm: &str,
    ) -> Option<ResultRecord> {
        self.result(&format!(
            "student_clue|{}|{}|{algorithm}",
            student(who),
            bc(book_container)
        ))
    }

    pub fn teacher_clue(
        &self,
        container: u128,
        book_container: u128,
        algorithm: &str,
    ) -> Option<ResultRecord> {
        self.result(&format!(
            "teacher_clue|{}|{}|{algorithm}",
            cc(container),
            bc(book_container)
        ))
    }

    pub fn worst_areas(&self, who: u128, algorithm: &str) -> Option<Vec<ExerciseUuid>> {
        self.result(&format!(
            "practice_worst_areas|{}|{algorithm}",
            student(who)
        ))
        .and_then(|r| r.exercise_uuids)
        .map(|list| list.into_iter().map(ExerciseUuid).collect())
    }

    pub fn assignment_state(&self, assignment: u128) -> AssignmentState {
        self.state
            .assignment(COURSE, asg(assignment))
            .unwrap()
            .unwrap()
    }
}
