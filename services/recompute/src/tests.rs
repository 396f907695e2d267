//! The shell over a temporary sled database and an embedded log: real events staged
//! through the state projection with the hook, then recompute passes with an injected
//! wall clock.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use biglearn_domain::events::*;
use biglearn_domain::ids::*;
use biglearn_domain::time::format_datetime_micros;
use biglearn_events::{
    decode_result_record, encode_course_event, encode_ecosystem_event, ResultKind, ResultRecord,
};
use biglearn_projector::consumer::ConsumerProgress;
use biglearn_projector::event_log::EventLog;
use biglearn_projector::state::{BatchHook, StateProjection, StateRecord};
use biglearn_scheduler::{SchedulerSettings, Target};
use biglearn_stream::embedded::EmbeddedStore;
use biglearn_stream::{SharedStreamStore, Topics};
use biglearn_telemetry::Metrics;
use tokio::sync::{watch, Notify};
use uuid::Uuid;

use crate::rows::{in_tree, parse_dirty_key, DIRTY, WAITING};
use crate::*;

const DAY: i64 = 86_400_000_000;
/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000_000;
const COURSE: CourseUuid = CourseUuid(Uuid::from_u128(0xC0));
const ECO: EcosystemUuid = EcosystemUuid(Uuid::from_u128(0xEA));
const BC: BookContainerUuid = BookContainerUuid(Uuid::from_u128(0xB1));
const PERIOD: CourseContainerUuid = CourseContainerUuid(Uuid::from_u128(0xCC));
const STUDENT: StudentUuid = StudentUuid(Uuid::from_u128(0x51));
const ASSIGNMENT: AssignmentUuid = AssignmentUuid(Uuid::from_u128(0xA1));

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn ts(micros: i64) -> Timestamp {
    Timestamp(format_datetime_micros(micros))
}

fn exercise(n: u128) -> ExerciseUuid {
    ExerciseUuid(id(0xE00 + n))
}

fn meta(seq: i64, accepted_at_micros: i64) -> EnvelopeMeta {
    EnvelopeMeta {
        event_uuid: EventUuid(Uuid::new_v4()),
        sequence_number: SequenceNumber(seq),
        accepted_at_micros,
        writer_id: "test".into(),
        settings_version: 0,
        metadata_sequence_number: None,
    }
}

/// One container with one pool of nine exercises, for CLUEs and readings.
fn create_ecosystem() -> EcosystemEvent {
    let exercises: Vec<ExerciseUuid> = (1..=9).map(exercise).collect();
    EcosystemEvent {
        meta: meta(0, T0),
        ecosystem_uuid: ECO,
        payload: EcosystemPayload::CreateEcosystem(Box::new(CreateEcosystem {
            ecosystem_uuid: ECO,
            sequence_number: SequenceNumber(0),
            book: Book {
                cnx_identity: None,
                contents: vec![BookContainer {
                    container_uuid: BC,
                    container_parent_uuid: BookContainerUuid(ECO.0),
                    container_cnx_identity: None,
                    pools: vec![Pool {
                        use_for_clue: true,
                        use_for_personalized_for_assignment_types: vec!["reading".into()],
                        exercise_uuids: exercises.clone(),
                    }],
                }],
            },
            exercises: exercises
                .iter()
                .map(|e| Exercise {
                    exercise_uuid: *e,
                    group_uuid: ExerciseGroupUuid(id(e.0.as_u128() + 0x1000)),
                    version: 1,
                    los: Vec::new(),
                })
                .collect(),
            imported_at: ts(T0),
        })),
    }
}

/// The events of a course with one student and a reading of exercises 1–3 whose
/// feedback opens at `feedback_at`, then a correct response to each.
fn course_events(feedback_at: i64) -> Vec<CourseEvent> {
    let mut payloads = vec![
        CoursePayload::CreateCourse(CreateCourse {
            course_uuid: COURSE,
            sequence_number: SequenceNumber(0),
            ecosystem_uuid: ECO,
            is_real_course: true,
            starts_at: ts(T0),
            ends_at: ts(T0 + 180 * DAY),
            created_at: ts(T0),
        }),
        CoursePayload::UpdateRoster(UpdateRoster {
            request_uuid: RequestUuid(id(0xF1)),
            course_uuid: COURSE,
            sequence_number: SequenceNumber(1),
            course_containers: vec![RosterCourseContainer {
                container_uuid: PERIOD,
                parent_container_uuid: CourseContainerUuid(COURSE.0),
                created_at: ts(T0),
                archived_at: None,
            }],
            students: vec![RosterStudent {
                student_uuid: STUDENT,
                container_uuid: PERIOD,
                enrolled_at: ts(T0),
                last_course_container_change_at: ts(T0),
                dropped_at: None,
            }],
        }),
        CoursePayload::CreateUpdateAssignment(CreateUpdateAssignment {
            request_uuid: RequestUuid(id(0xF2)),
            course_uuid: COURSE,
            sequence_number: SequenceNumber(2),
            assignment_uuid: ASSIGNMENT,
            is_deleted: false,
            ecosystem_uuid: ECO,
            student_uuid: STUDENT,
            assignment_type: "reading".into(),
            exclusion_info: Some(ExclusionInfo {
                opens_at: Some(ts(T0)),
                due_at: Some(ts(feedback_at)),
                feedback_at: Some(ts(feedback_at)),
            }),
            pes: None,
            spes: None,
            assigned_book_container_uuids: vec![BC],
            goal_num_tutor_assigned_spes: None,
            spes_are_assigned: false,
            goal_num_tutor_assigned_pes: None,
            pes_are_assigned: false,
            assigned_exercises: (1..=3)
                .map(|n| AssignedExercise {
                    trial_uuid: TrialUuid(id(0x700 + n)),
                    exercise_uuid: exercise(n),
                    is_spe: false,
                    is_pe: false,
                })
                .collect(),
            created_at: ts(T0),
            updated_at: ts(T0),
        }),
    ];
    for n in 1..=3u128 {
        payloads.push(CoursePayload::RecordResponse(RecordResponse {
            response_uuid: ResponseUuid(id(0x800 + n)),
            course_uuid: COURSE,
            sequence_number: SequenceNumber(2 + n as i64),
            ecosystem_uuid: ECO,
            trial_uuid: TrialUuid(id(0x700 + n)),
            student_uuid: STUDENT,
            exercise_uuid: exercise(n),
            is_correct: true,
            is_real_response: true,
            responded_at: ts(T0 + DAY),
        }));
    }
    payloads
        .into_iter()
        .enumerate()
        .map(|(seq, payload)| CourseEvent {
            meta: meta(seq as i64, T0 + DAY),
            course_uuid: COURSE,
            payload,
        })
        .collect()
}

/// A projection, an event log, an embedded log, the hook and the loop, with a wall clock
/// the test sets.
struct World {
    _dir: tempfile::TempDir,
    projection: StateProjection,
    store: SharedStreamStore,
    topics: Topics,
    hook: Arc<DirtyTargets>,
    recompute: Recompute,
    wall: Arc<AtomicI64>,
    /// The newest settings version (see the settings source in [`World::new`]).
    settings_version: Arc<AtomicI64>,
    metrics: Metrics,
    caught_up: watch::Sender<ConsumerProgress>,
}

impl World {
    async fn new() -> World {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let db = sled::Config::new()
            .path(dir.path().join("state"))
            .open()
            .expect("sled opens");
        let store: SharedStreamStore =
            Arc::new(EmbeddedStore::open(&dir.path().join("log")).expect("the log opens"));
        let topics = Topics::new("test");
        store
            .ensure_topics(&topics.all_specs(12))
            .await
            .expect("topics are created");
        let projection = StateProjection::open(&db, "state").expect("the projection opens");
        let log = EventLog::open(&db, "event_log").expect("the event log opens");
        let wall = Arc::new(AtomicI64::new(T0 + 10 * DAY));
        let settings_version = Arc::new(AtomicI64::new(1));
        let wall_clock: WallClock = {
            let wall = wall.clone();
            Arc::new(move || wall.load(Ordering::SeqCst))
        };
        let metrics = Metrics::new("test");
        let published = EventLogPublished { log };
        let models: BTreeMap<EcosystemUuid, Arc<biglearn_scheduler::EcosystemModel>> =
            BTreeMap::new();
        let shared = Shared {
            clock: LogicalClock::new(0),
            wall: wall_clock,
            published: Arc::new(published.clone()),
            models: Arc::new(models),
            settings: {
                let version = settings_version.clone();
                SettingsSource {
                    resolve: Arc::new(move |_, floor| {
                        // The test's settings history: the courses' events were accepted at
                        // version 1; version 2 turns biglearn_sparfa off, version 3 also
                        // lowers the PEs per chapter to 2.
                        let at = floor.max(1).min(version.load(Ordering::SeqCst));
                        SchedulerSettings {
                            publish_biglearn_sparfa: at < 2,
                            default_num_pes_per_book_container: if at >= 3 { 2 } else { 3 },
                            ..SchedulerSettings::INITIAL
                        }
                    }),
                    latest_version: {
                        let version = settings_version.clone();
                        Arc::new(move || version.load(Ordering::SeqCst))
                    },
                }
            },
            floors: SettingsFloors::default(),
            wake: Arc::new(Notify::new()),
            caught_up: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            ownership: Arc::default(),
        };
        let (caught_up, progress) = watch::channel(ConsumerProgress {
            caught_up: true,
            ..ConsumerProgress::default()
        });
        let source = projection.clone();
        let recompute = Recompute::new(
            RecomputeConfig {
                results_topic: topics.results(),
                failed_course_retry: FAILED_COURSE_RETRY,
                tick: RECOMPUTE_TICK,
                pass_budget: PASS_BUDGET,
                metrics: metrics.clone(),
            },
            shared.clone(),
            Arc::new(move || source.clone()),
            published,
            PublishedVersions::open(&db).expect("the versions tree opens"),
            store.clone(),
            vec![progress],
        );
        World {
            _dir: dir,
            projection,
            store,
            topics,
            hook: Arc::new(DirtyTargets::new(shared)),
            recompute,
            wall,
            settings_version,
            metrics,
            caught_up,
        }
    }

    /// Stages records as the state consumer does: the hook runs on the staged batch,
    /// which then commits (or not).
    fn feed(&self, records: &[StateRecord<'_>], commit: bool) {
        let mut staged = self
            .projection
            .stage(records, &[], T0)
            .expect("the batch stages");
        let effects = std::mem::take(&mut staged.report.effects);
        self.hook
            .on_batch(&mut staged.state(), &effects)
            .expect("the hook runs");
        if commit {
            staged.commit().expect("the batch commits");
        }
    }

    fn feed_ecosystem(&self) {
        let event = create_ecosystem();
        let raw = encode_ecosystem_event(&event);
        self.feed(
            &[StateRecord::Ecosystem {
                event: &event,
                raw: &raw,
            }],
            true,
        );
    }

    fn feed_course(&self, events: &[CourseEvent]) {
        let raws: Vec<Vec<u8>> = events.iter().map(encode_course_event).collect();
        let records: Vec<StateRecord<'_>> = events
            .iter()
            .zip(&raws)
            .map(|(event, raw)| StateRecord::Course { event, raw })
            .collect();
        self.feed(&records, true);
    }

    fn dirty(&self) -> Vec<Target> {
        self.projection
            .tree()
            .scan_prefix(in_tree(&[DIRTY]))
            .map(|row| {
                let (key, _) = row.expect("a dirty row");
                parse_dirty_key(&key[1..]).expect("a readable dirty row").1
            })
            .collect()
    }

    /// Every record published so far, in log order.
    async fn published(&self) -> Vec<ResultRecord> {
        let topic = self.topics.results();
        let partitions = self
            .store
            .partition_count(&topic)
            .await
            .expect("partitions");
        let start: Vec<(i32, i64)> = (0..partitions).map(|p| (p, 0)).collect();
        let mut reader = self
            .store
            .open_reader(&topic, &start)
            .await
            .expect("a reader");
        let mut records = Vec::new();
        for _ in 0..20 {
            let batch = reader
                .poll(10_000, Duration::from_millis(20))
                .await
                .expect("a poll");
            if batch.is_empty() {
                break;
            }
            records.extend(batch.into_iter().map(|record| {
                decode_result_record(record.value.as_deref().unwrap_or_default())
                    .expect("a result record")
            }));
        }
        records
    }

    /// Stores every published record in the event log, as the results consumer does.
    async fn store_published(&self) {
        let rows: Vec<biglearn_projector::event_log::ResultRow> = self
            .published()
            .await
            .iter()
            .map(biglearn_projector::event_log::ResultRow::of)
            .collect();
        self.recompute
            .published
            .log
            .apply_results(&rows, &[])
            .expect("results are stored");
    }

    fn set_wall(&self, micros: i64) {
        self.wall.store(micros, Ordering::SeqCst);
    }
}

fn latest<'r>(records: &'r [ResultRecord], key: &str) -> Option<&'r ResultRecord> {
    records.iter().rev().find(|record| record.key() == key)
}

fn student_clue_key() -> String {
    format!("student_clue|{}|{}|local_query", STUDENT.0, BC.0)
}

#[tokio::test]
async fn the_hook_writes_dirty_targets_only_with_its_batch() {
    let world = World::new().await;
    world.feed_ecosystem();
    let events = course_events(T0 + 20 * DAY);
    // A batch that never commits leaves nothing behind.
    let raws: Vec<Vec<u8>> = events.iter().map(encode_course_event).collect();
    let records: Vec<StateRecord<'_>> = events
        .iter()
        .zip(&raws)
        .map(|(event, raw)| StateRecord::Course { event, raw })
        .collect();
    world.feed(&records, false);
    assert_eq!(world.dirty(), Vec::new());

    world.feed_course(&events);
    let dirty = world.dirty();
    let expected = [
        Target::StudentClue {
            ecosystem: ECO,
            book_container: BC,
            student: STUDENT,
        },
        Target::TeacherClue {
            ecosystem: ECO,
            book_container: BC,
            container: PERIOD,
        },
        Target::Assignment(ASSIGNMENT),
        Target::WorstAreas(STUDENT),
    ];
    for target in expected {
        assert!(dirty.contains(&target), "{target:?} is dirty: {dirty:?}");
    }
    // The hook rows stay out of the state hash.
    let hash_with_rows = world.projection.state_hash().expect("a hash");
    world
        .projection
        .tree()
        .remove(in_tree(&crate::rows::dirty_key(
            COURSE,
            &Target::WorstAreas(STUDENT),
        )))
        .expect("a removal");
    assert_eq!(
        world.projection.state_hash().expect("a hash"),
        hash_with_rows
    );
}

#[tokio::test]
async fn a_pass_publishes_results_then_skips_unchanged_ones() {
    let mut world = World::new().await;
    world.feed_ecosystem();
    world.feed_course(&course_events(T0 + 20 * DAY));
    let report = world.recompute.pass().await.expect("a pass");
    assert_eq!(report.courses, 1);
    assert_eq!(report.dirty_left, 0, "{:?}", world.dirty());
    let records = world.published().await;
    assert_eq!(records.len(), report.published);

    // PEs: three from the container's pool, never the assignment's own exercises.
    let pes = latest(
        &records,
        &format!("assignment_pes|{}|local_query", ASSIGNMENT.0),
    )
    .expect("local_query PEs are published");
    let pe_list = pes.exercise_uuids.clone().expect("an exercise list");
    assert_eq!(pe_list.len(), 3, "{pe_list:?}");
    let own: Vec<Uuid> = (1..=3).map(|n| exercise(n).0).collect();
    let pool: Vec<Uuid> = (1..=9).map(|n| exercise(n).0).collect();
    for pe in &pe_list {
        assert!(
            pool.contains(pe) && !own.contains(pe),
            "{pe} is an allowed PE"
        );
    }
    assert_eq!(
        pes.input_seq, 5,
        "the course's last applied sequence number"
    );
    assert!(
        latest(
            &records,
            &format!("assignment_pes|{}|biglearn_sparfa", ASSIGNMENT.0)
        )
        .is_some_and(|r| r.ecosystem_matrix_uuid == Some(Uuid::nil())),
        "biglearn_sparfa PEs from the prior"
    );
    for name in [
        "instructor_driven_local_query",
        "student_driven_local_query",
    ] {
        assert!(
            latest(
                &records,
                &format!("assignment_spes|{}|{name}", ASSIGNMENT.0)
            )
            .is_some(),
            "{name} SPEs"
        );
    }
    // Feedback is in the future: the student CLUE hides the responses, the teacher's not.
    let student_clue = latest(&records, &student_clue_key()).expect("a student CLUE");
    assert!(!student_clue.clue_data.as_ref().is_some_and(|c| c.is_real));
    let teacher_clue = latest(
        &records,
        &format!("teacher_clue|{}|{}|local_query", PERIOD.0, BC.0),
    )
    .expect("a teacher CLUE");
    assert!(teacher_clue.clue_data.as_ref().is_some_and(|c| c.is_real));

    let scrape = world.metrics.render();
    for kind in ResultKind::ALL {
        assert!(
            scrape.contains(&format!(
                "biglearn_dirty_targets{{kind=\"{}\"}} 0",
                kind.as_str()
            )),
            "the backlog of {} is reported",
            kind.as_str()
        );
    }
    assert!(scrape.contains(
        "biglearn_results_published_total{algorithm=\"local_query\",kind=\"assignment_pes\"} 1"
    ));
    assert!(
        scrape.contains("biglearn_response_to_clue_seconds_count 1"),
        "{scrape}"
    );

    // The same targets again, nothing changed: nothing is republished.
    world.feed_course(&[]);
    let tree = world.projection.tree();
    let mark = crate::rows::DirtyMark {
        dirty_at_micros: T0,
        stamp: 1,
    };
    for target in [Target::Assignment(ASSIGNMENT), Target::WorstAreas(STUDENT)] {
        tree.insert(
            in_tree(&crate::rows::dirty_key(COURSE, &target)),
            mark.encode(),
        )
        .expect("an insert");
    }
    let again = world.recompute.pass().await.expect("a pass");
    assert_eq!(again.published, 0, "{again:?}");
    assert!(again.skipped_unchanged > 0, "{again:?}");
    assert_eq!(world.published().await.len(), records.len());
}

#[tokio::test]
async fn feedback_opening_recomputes_the_student_clue() {
    let mut world = World::new().await;
    let feedback_at = T0 + 20 * DAY;
    world.feed_ecosystem();
    world.feed_course(&course_events(feedback_at));
    world.recompute.pass().await.expect("a pass");
    let before = world.published().await;
    let hidden = latest(&before, &student_clue_key()).expect("a student CLUE");
    assert!(!hidden.clue_data.as_ref().is_some_and(|c| c.is_real));

    // The logical clock trails the wall clock by 5 s: not yet.
    world.set_wall(feedback_at + CLOCK_SAFETY_LAG.as_micros() as i64 - 1);
    let report = world.recompute.pass().await.expect("a pass");
    assert_eq!(report.timers_fired, 0, "{report:?}");

    world.set_wall(feedback_at + CLOCK_SAFETY_LAG.as_micros() as i64);
    let hash_before = world.projection.state_hash().expect("a hash");
    let report = world.recompute.pass().await.expect("a pass");
    // The assignment is past due now: the history rule applies to the computation only,
    // never to the projection's state.
    assert_eq!(world.projection.state_hash().expect("a hash"), hash_before);
    assert!(report.timers_fired > 0, "{report:?}");
    let after = world.published().await;
    let visible = latest(&after, &student_clue_key()).expect("a student CLUE");
    let clue = visible.clue_data.as_ref().expect("CLUE data");
    assert!(
        clue.is_real,
        "three visible responses make a real CLUE: {clue:?}"
    );
    assert!(visible.computed_at_micros >= feedback_at);
    assert_eq!(report.dirty_left, 0);
}

#[tokio::test]
async fn nothing_is_computed_while_catching_up_and_an_idle_course_at_once() {
    let mut world = World::new().await;
    world.feed_ecosystem();
    let events = course_events(T0 + 20 * DAY);
    world.feed_course(&events[..3]);
    world
        .caught_up
        .send_modify(|progress| progress.caught_up = false);
    let report = world.recompute.pass().await.expect("a pass");
    assert_eq!((report.courses, report.published), (0, 0));
    assert!(report.dirty_left > 0);

    world
        .caught_up
        .send_modify(|progress| progress.caught_up = true);
    let report = world.recompute.pass().await.expect("a pass");
    assert_eq!(report.courses, 1);

    // No minimum interval (docs/design/scheduler.md S10): a response right after the
    // course's computation, at the same wall-clock instant, is computed by the next pass.
    world.feed_course(&events[3..4]);
    let report = world.recompute.pass().await.expect("a pass");
    assert_eq!(report.courses, 1);
    assert_eq!(report.dirty_left, 0);
}

#[tokio::test]
async fn targets_wait_for_an_ecosystem_created_later() {
    let mut world = World::new().await;
    // The course's events arrive before the ecosystem's.
    world.feed_course(&course_events(T0 + 20 * DAY));
    world.recompute.pass().await.expect("a pass");
    let pes_key = format!("assignment_pes|{}|local_query", ASSIGNMENT.0);
    assert!(latest(&world.published().await, &pes_key).is_none());
    let waiting = world
        .projection
        .tree()
        .scan_prefix(in_tree(&[WAITING]))
        .count();
    let dirty = world.dirty();
    assert!(
        waiting > 0 || !dirty.is_empty(),
        "the work is kept until the ecosystem exists"
    );

    world.feed_ecosystem();
    world.recompute.pass().await.expect("a pass");
    // Released waits are computed on the next pass.
    world.recompute.pass().await.expect("a pass");
    let records = world.published().await;
    assert!(
        latest(&records, &pes_key).is_some(),
        "PEs once the ecosystem exists"
    );
    assert!(
        latest(&records, &student_clue_key()).is_some(),
        "the CLUE too"
    );
    assert_eq!(world.dirty(), Vec::new());
}

#[test]
fn a_row_redirtied_during_computation_stays_dirty() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = sled::Config::new()
        .path(dir.path())
        .open()
        .expect("sled opens");
    let tree = db.open_tree("state").expect("a tree");
    let key = |n: u128| {
        in_tree(&crate::rows::dirty_key(
            COURSE,
            &Target::WorstAreas(StudentUuid(id(n))),
        ))
    };
    let mark = |stamp: u64| {
        crate::rows::DirtyMark {
            dirty_at_micros: T0,
            stamp,
        }
        .encode()
    };
    tree.insert(key(1), mark(1)).expect("an insert");
    tree.insert(key(2), mark(2)).expect("an insert");
    let read = vec![(key(1), mark(1)), (key(2), mark(2))];
    // A batch re-dirties the second target while the loop computes.
    tree.insert(key(2), mark(3)).expect("an insert");
    let removed = crate::recompute::remove_unchanged(&tree, &read).expect("a removal");
    assert_eq!(removed, 1);
    assert_eq!(tree.get(key(1)).expect("a read"), None);
    assert_eq!(
        tree.get(key(2)).expect("a read").as_deref(),
        Some(mark(3).as_slice())
    );
}

#[tokio::test]
async fn a_course_replayed_while_catching_up_is_computed_whole_once_caught_up() {
    let mut world = World::new().await;
    world
        .caught_up
        .send_modify(|progress| progress.caught_up = false);
    world.recompute.pass().await.expect("a pass");
    world.feed_ecosystem();
    world.feed_course(&course_events(T0 + 20 * DAY));
    assert_eq!(
        world.dirty(),
        Vec::new(),
        "no per-effect targets while catching up"
    );
    assert_eq!(
        world
            .projection
            .tree()
            .scan_prefix(in_tree(&[crate::rows::WHOLE_COURSE]))
            .count(),
        1
    );

    world
        .caught_up
        .send_modify(|progress| progress.caught_up = true);
    let report = world.recompute.pass().await.expect("a pass");
    assert_eq!(report.dirty_left, 0, "{report:?}");
    let records = world.published().await;
    assert!(latest(
        &records,
        &format!("assignment_pes|{}|local_query", ASSIGNMENT.0)
    )
    .is_some());
    assert!(latest(&records, &student_clue_key()).is_some());
    assert!(latest(
        &records,
        &format!("practice_worst_areas|{}|local_query", STUDENT.0)
    )
    .is_some());
    assert_eq!(
        world
            .projection
            .tree()
            .scan_prefix(in_tree(&[crate::rows::WHOLE_COURSE]))
            .count(),
        0
    );
}

#[tokio::test]
async fn an_ecosystems_first_model_dirties_its_courses_and_later_models_do_not() {
    let mut world = World::new().await;
    world.feed_ecosystem();
    world.feed_course(&course_events(T0 + 20 * DAY));
    world.recompute.pass().await.expect("a pass");
    let whole_courses = |world: &World| {
        world
            .projection
            .tree()
            .scan_prefix(in_tree(&[crate::rows::WHOLE_COURSE]))
            .count()
    };
    assert_eq!(whole_courses(&world), 0);

    let tree = world.projection.tree().clone();
    assert_eq!(world.hook.model_arrived(&tree, ECO, 1).expect("marks"), 0);
    assert_eq!(whole_courses(&world), 0, "a refit dirties nothing");
    let other = EcosystemUuid(Uuid::from_u128(0xEC02));
    assert_eq!(world.hook.model_arrived(&tree, other, 0).expect("marks"), 0);
    assert_eq!(world.hook.model_arrived(&tree, ECO, 0).expect("marks"), 1);
    assert_eq!(whole_courses(&world), 1);

    let report = world.recompute.pass().await.expect("a pass");
    assert_eq!(report.dirty_left, 0, "{report:?}");
    assert_eq!(whole_courses(&world), 0, "expanded and computed");
}

#[tokio::test]
async fn a_settings_change_recomputes_its_courses_at_once_and_the_kill_switch_withdraws() {
    let mut world = World::new().await;
    world.feed_ecosystem();
    world.feed_course(&course_events(T0 + 20 * DAY));
    let report = world.recompute.pass().await.expect("a pass");
    assert_eq!((report.courses, report.settings_marked), (1, 0));
    world.store_published().await;
    let sparfa_key = format!("assignment_pes|{}|biglearn_sparfa", ASSIGNMENT.0);
    let local_key = format!("assignment_pes|{}|local_query", ASSIGNMENT.0);
    let records = world.published().await;
    assert!(!latest(&records, &sparfa_key)
        .expect("sparfa PEs")
        .is_withdrawal());
    let local_pes = |records: &[ResultRecord]| {
        latest(records, &local_key)
            .and_then(|record| record.exercise_uuids.clone())
            .expect("local_query PEs")
    };
    assert_eq!(local_pes(&records).len(), 3);

    // The kill switch: no course event, yet the next pass withdraws biglearn_sparfa.
    world.settings_version.store(2, Ordering::SeqCst);
    let report = world.recompute.pass().await.expect("a pass");
    assert_eq!((report.settings_marked, report.courses), (1, 1));
    world.store_published().await;
    let records = world.published().await;
    assert!(latest(&records, &sparfa_key)
        .expect("a record")
        .is_withdrawal());
    assert!(!latest(&records, &local_key)
        .expect("a record")
        .is_withdrawal());
    for record in &records {
        if record.algorithm_name.ends_with("biglearn_sparfa") {
            let key = record.key();
            assert!(
                latest(&records, &key).expect("a record").is_withdrawal(),
                "{key}"
            );
        }
    }
    let withdrawals = records.iter().filter(|r| r.is_withdrawal()).count();
    // Looked at once: the next pass marks nothing and withdraws nothing again.
    let report = world.recompute.pass().await.expect("a pass");
    assert_eq!((report.settings_marked, report.courses), (0, 0));
    assert_eq!(
        world
            .published()
            .await
            .iter()
            .filter(|r| r.is_withdrawal())
            .count(),
        withdrawals
    );

    // A default lowered for all courses reaches the open assignment without an event.
    world.settings_version.store(3, Ordering::SeqCst);
    let report = world.recompute.pass().await.expect("a pass");
    assert_eq!(report.settings_marked, 1);
    world.store_published().await;
    assert_eq!(local_pes(&world.published().await).len(), 2);

    // The floors are kept with the tree: a new loop over it does not look again.
    world.recompute.shared.floors = SettingsFloors::default();
    let report = world.recompute.pass().await.expect("a pass");
    assert_eq!(report.settings_marked, 0, "the seen version is stored");
    assert_eq!(world.recompute.shared.floors.floor(COURSE), 3);
}

#[tokio::test]
async fn whole_course_marks_are_expanded_at_a_bounded_rate_beside_other_work() {
    let mut world = World::new().await;
    world.feed_ecosystem();
    world.feed_course(&course_events(T0 + 20 * DAY));
    // A change that touched many courses: more whole-course marks than one pass expands.
    let marked = WHOLE_COURSES_PER_PASS + 36;
    let tree = world.projection.tree().clone();
    let mark = crate::rows::DirtyMark {
        dirty_at_micros: T0,
        stamp: 0,
    };
    for n in 0..marked {
        let course = CourseUuid(Uuid::from_u128(0xC0_0000 + n as u128));
        tree.insert(
            in_tree(&crate::rows::whole_course_key(course)),
            mark.encode(),
        )
        .unwrap();
    }
    let whole_courses = |tree: &sled::Tree| {
        tree.scan_prefix(in_tree(&[crate::rows::WHOLE_COURSE]))
            .count()
    };
    // The course with a response is computed in the first pass all the same.
    let report = world.recompute.pass().await.expect("a pass");
    assert_eq!(report.courses, 1);
    assert_eq!(whole_courses(&tree), 36);
    world.recompute.pass().await.expect("a pass");
    assert_eq!(whole_courses(&tree), 0);
}

#[tokio::test]
async fn a_pass_past_its_budget_leaves_courses_for_the_next_and_a_waiting_student_goes_first() {
    let mut world = World::new().await;
    // Every course past the first is over budget.
    world.recompute.config.pass_budget = Duration::ZERO;
    world.feed_ecosystem();
    // Courses the loop marked before the response arrived (a first model, a settings
    // change): work that must not hold the student's CLUE back.
    let tree = world.projection.tree().clone();
    let earlier = crate::rows::DirtyMark {
        dirty_at_micros: 1,
        stamp: 0,
    };
    for n in 0..3 {
        // Below COURSE in key order: only the turn puts COURSE first.
        let course = CourseUuid(Uuid::from_u128(1 + n));
        let target = Target::WorstAreas(StudentUuid(Uuid::from_u128(0xD0_0000 + n)));
        tree.insert(
            in_tree(&crate::rows::dirty_key(course, &target)),
            earlier.encode(),
        )
        .unwrap();
    }
    world.feed_course(&course_events(T0 + 20 * DAY));

    let report = world.recompute.pass().await.expect("a pass");
    assert_eq!((report.courses, report.courses_deferred), (1, 3));
    assert!(
        latest(&world.published().await, &student_clue_key()).is_some(),
        "the course with events is computed first"
    );
    for left in (0..3).rev() {
        let report = world.recompute.pass().await.expect("a pass");
        assert_eq!(report.courses_deferred, left);
    }
}

#[tokio::test]
async fn another_process_course_gets_no_targets_here_until_its_partition_is_gained() {
    use crate::ownership::OwnedCourses;
    use std::collections::BTreeSet;
    let ownership = Arc::new(std::sync::Mutex::new(OwnedCourses::Partitions {
        generation: 0,
        owned: BTreeSet::new(),
        partitions: 4,
    }));
    let mut world = World::new().await;
    let source = ownership.clone();
    world
        .recompute
        .set_ownership(Arc::new(move || source.lock().unwrap().clone()));
    world.feed_ecosystem();
    let events = course_events(T0 + 20 * DAY);
    let (setup, responses) = events.split_at(3);

    // Before the group has assigned anything every course is marked, none computed.
    world.feed_course(setup);
    let dirty_before = world.dirty().len();
    assert!(dirty_before > 0);
    let report = world.recompute.pass().await.expect("a pass");
    assert_eq!((report.courses, report.courses_not_owned), (0, 1));

    // Another process owns the course's partition: its marks stay, its new events mark
    // nothing here, nothing is computed.
    let partition = OwnedCourses::partition_of(COURSE, 4);
    let others: BTreeSet<i32> = (0..4).filter(|p| *p != partition).collect();
    *ownership.lock().unwrap() = OwnedCourses::Partitions {
        generation: 1,
        owned: others.clone(),
        partitions: 4,
    };
    world.feed_course(responses);
    assert_eq!(
        world.dirty().len(),
        dirty_before,
        "no targets for its responses"
    );
    let report = world.recompute.pass().await.expect("a pass");
    assert_eq!((report.courses, report.courses_not_owned), (0, 1));
    assert_eq!(
        report.courses_gained, 0,
        "no course in the owned partitions"
    );
    assert!(world.published().await.is_empty());

    // The other process is gone: the partition is gained, the course computed whole, at
    // its last event.
    *ownership.lock().unwrap() = OwnedCourses::Partitions {
        generation: 2,
        owned: (0..4).collect(),
        partitions: 4,
    };
    let report = world.recompute.pass().await.expect("a pass");
    assert_eq!(report.courses_gained, 1);
    assert_eq!((report.courses, report.courses_not_owned), (1, 0));
    let published = world.published().await;
    let clue = latest(&published, &student_clue_key()).expect("a CLUE");
    assert_eq!(
        clue.input_seq, 5,
        "computed after its last response: {clue:?}"
    );
    assert!(world.dirty().is_empty());
    // The same partitions again (a restart owning them): nothing is gained.
    let report = world.recompute.pass().await.expect("a pass");
    assert_eq!(report.courses_gained, 0);
}
