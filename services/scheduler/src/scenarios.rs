//! Acceptance scenarios 8–20 of docs/design/scheduler.md §17 (10, 12, 21 and 22 sit next to their
//! code), and a seeded whole-course property check of the exclusion invariant.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use biglearn_domain::ids::ExerciseUuid;
use biglearn_domain::state::{AssignmentState, Effect, StateView};
use biglearn_events::{ResultKind, ResultRecord};
use serde_json::Value;
use uuid::Uuid;

use crate::clue::clue_exercises;
use crate::fixture::*;
use crate::history::{HistoryType, Positions};
use crate::published::PublishedView;
use crate::reader::Reader;
use crate::shuffle::det_shuffle;
use crate::targets::Target;

const READING_HOMEWORK: &[&str] = &["reading", "homework"];
const PRACTICE: &[&str] = &["practice"];
const ALL_TYPES: &[&str] = &["reading", "homework", "practice"];

fn range(from: u128, n: u128) -> Vec<u128> {
    (from..from + n).collect()
}

fn spy(record: &ResultRecord) -> Value {
    serde_json::from_str(&record.spy_info_json).unwrap()
}

fn clue_of(record: &ResultRecord) -> (f64, bool) {
    let clue = record.clue_data.as_ref().unwrap();
    (clue.most_likely, clue.is_real)
}

/// One ecosystem, one chapter 0x100 with sections `sections[i] = (bc, exercises)`, every
/// pool usable for CLUEs, readings, homeworks and practice.
fn simple_book(
    ecosystem: biglearn_domain::ids::EcosystemUuid,
    sections: &[(u128, Vec<u128>)],
) -> EcosystemSpec {
    let mut spec = EcosystemSpec::new(ecosystem).container(
        0x100 + ecosystem.0.as_u128() % 16 * 0x1000,
        0,
        vec![],
    );
    let chapter = 0x100 + ecosystem.0.as_u128() % 16 * 0x1000;
    for (section, exercises) in sections {
        spec = spec.container(
            *section,
            chapter,
            vec![(true, ALL_TYPES, exercises.clone())],
        );
    }
    spec
}

/// Scenario 8: future feedback hides a response from the student CLUE (not from the
/// teacher's) until the logical clock passes `feedback_at`.
#[test]
fn s08_future_feedback_hides_responses_from_the_student_clue_until_it_opens() {
    let a = eco(0xA);
    let mut world = World::new();
    world.ecosystem(simple_book(a, &[(0x101, range(1, 10))]));
    world.create_course(a);
    world.roster(&[(0x50, 0)], &[(1, 0x50), (2, 0x50)]);
    let feedback_at = T0 + 10 * DAY;
    let mut hidden = AssignmentSpec::new(0xA1, 1, a, "homework").core(&[1, 2, 3]);
    hidden.bcs = vec![0x101];
    hidden.due_at = Some(T0 + 5 * DAY);
    hidden.feedback_at = Some(feedback_at);
    world.assignment(&hidden);
    let trial = |n: u128| 0x70_0000 + 0xA1 * 0x100 + n;

    world.now = T0 + DAY;
    world.respond(1, trial(0), 1, a, true, T0 + DAY);
    let student_clue = world
        .student_clue(1, 0x101, "local_query")
        .expect("a CLUE with no visible responses");
    assert_eq!(clue_of(&student_clue), (0.5, false));
    assert_eq!(spy(&student_clue)["num_responses"], 0);
    let target = Target::StudentClue {
        ecosystem: a,
        book_container: bc(0x101),
        student: student(1),
    };
    assert!(world.last.recalculate_at.contains(&(target, feedback_at)));
    assert_eq!(
        spy(&student_clue)["recalculate_at"],
        biglearn_domain::time::format_datetime_micros(feedback_at)
    );
    let teacher_clue = world.teacher_clue(0x50, 0x101, "local_query").unwrap();
    assert_eq!(
        spy(&teacher_clue)["num_responses"],
        1,
        "the teacher sees it"
    );

    world.respond(1, trial(1), 2, a, true, T0 + DAY);
    world.respond(1, trial(2), 3, a, false, T0 + DAY);
    let teacher_clue = world.teacher_clue(0x50, 0x101, "local_query").unwrap();
    assert!(clue_of(&teacher_clue).1, "three responses: real");
    assert_eq!(
        clue_of(&world.student_clue(1, 0x101, "local_query").unwrap()),
        (0.5, false)
    );

    // The clock passes feedback_at: the FeedbackAt timer re-dirties the student CLUE.
    world.advance_to(feedback_at);
    let student_clue = world.student_clue(1, 0x101, "local_query").unwrap();
    assert_eq!(spy(&student_clue)["num_responses"], 3);
    assert_eq!(spy(&student_clue)["recalculate_at"], Value::Null);
    assert_eq!(
        clue_of(&student_clue),
        clue_of(&teacher_clue),
        "same three responses"
    );
}

/// Scenario 9: after a switch, a response in the old ecosystem targets the mapped
/// container of the new one, whose input set includes the old container's CLUE pool.
#[test]
fn s09_old_ecosystem_responses_target_the_new_ecosystem_through_the_mappings() {
    let (a, b) = (eco(0xA), eco(0xB));
    let mut world = World::new();
    world.ecosystem(simple_book(
        a,
        &[(0x101, range(1, 3)), (0x102, range(4, 3))],
    ));
    let mut b_spec = simple_book(b, &[(0x201, range(11, 3)), (0x202, range(14, 3))]);
    for n in 0..6 {
        b_spec = b_spec.same_group(11 + n, 1 + n);
    }
    world.ecosystem(b_spec);
    world.create_course(a);
    world.roster(&[(0x50, 0)], &[(1, 0x50)]);
    let mut old = AssignmentSpec::new(0xA1, 1, a, "reading").core(&[1, 2]);
    old.bcs = vec![0x101];
    world.assignment(&old);
    world.switch(a, b, &[(0x101, 0x201), (0x102, 0x202)]);

    let targets = world.respond(1, 0x70_0000 + 0xA1 * 0x100, 1, a, true, T0);
    assert!(targets.contains(&Target::StudentClue {
        ecosystem: b,
        book_container: bc(0x201),
        student: student(1)
    }));
    assert!(targets.contains(&Target::TeacherClue {
        ecosystem: b,
        book_container: bc(0x201),
        container: cc(0x50)
    }));
    assert!(!targets
        .iter()
        .any(|t| matches!(t, Target::StudentClue { ecosystem, .. } if *ecosystem == a)));

    let reader = Reader::new(&world.state, COURSE);
    let (exercises, groups) = clue_exercises(&reader, b, bc(0x201)).unwrap();
    let expected: Vec<ExerciseUuid> = [11, 12, 13, 1, 2, 3].iter().map(|n| x(*n)).collect();
    assert_eq!(
        exercises, expected,
        "the target's pool, then the reverse-mapped old pool"
    );
    assert_eq!(groups.len(), 3, "versions share groups");

    let clue = world.student_clue(1, 0x201, "local_query").unwrap();
    assert_eq!(clue.clue_data.as_ref().unwrap().ecosystem_uuid, Some(b.0));
    assert_eq!(spy(&clue)["num_responses"], 1);
}

/// Scenario 11: no teacher CLUE for an unknown or empty course container.
#[test]
fn s11_no_teacher_clue_for_unknown_or_empty_containers() {
    let a = eco(0xA);
    let mut world = World::new();
    world.ecosystem(simple_book(a, &[(0x101, range(1, 5))]));
    world.create_course(a);
    world.roster(&[(0x50, 0), (0x51, 0)], &[(1, 0x50)]);
    let mut hw = AssignmentSpec::new(0xA1, 1, a, "homework").core(&[1]);
    hw.bcs = vec![0x101];
    world.assignment(&hw);
    world.respond(1, 0x70_0000 + 0xA1 * 0x100, 1, a, true, T0);
    assert!(world.teacher_clue(0x50, 0x101, "local_query").is_some());
    for container in [0x51, 0x99] {
        let target = Target::TeacherClue {
            ecosystem: a,
            book_container: bc(0x101),
            container: cc(container),
        };
        let computed = world.compute(&[target]);
        assert!(computed.records.is_empty(), "container {container:#x}");
    }
}

fn pe_world() -> World {
    let a = eco(0xA);
    let mut world = World::new();
    world.ecosystem(simple_book(
        a,
        &[
            (0x101, range(1, 5)),
            (0x102, range(11, 5)),
            (0x103, vec![21]),
        ],
    ));
    world.create_course(a);
    world.roster(&[(0x50, 0)], &[(1, 0x50)]);
    world
}

/// Scenario 13: PE counts per container, including a shortfall carried to the next one.
#[test]
fn s13_pe_counts_follow_goals_and_carry_shortfalls() {
    fn check(goal: Option<i64>, bcs: &[u128], expected: impl Fn(&[u128]) -> Vec<usize>) {
        let mut world = pe_world();
        let mut spec = AssignmentSpec::new(0xA1, 1, eco(0xA), "reading");
        spec.bcs = bcs.to_vec();
        spec.goal_pes = goal;
        spec.goal_spes = Some(0);
        world.assignment(&spec);
        for algorithm in ["local_query", "biglearn_sparfa"] {
            let record = world
                .result(&format!("assignment_pes|{}|{algorithm}", asg(0xA1)))
                .unwrap();
            let order = det_shuffle(
                &bcs.iter().map(|b| bc(*b)).collect::<Vec<_>>(),
                &format!("{}|{}|pe", asg(0xA1), record.calculation_uuid),
            );
            let order: Vec<u128> = order.iter().map(|b| b.0.as_u128()).collect();
            let pes = world.pes(0xA1, algorithm).unwrap();
            let reader = Reader::new(&world.state, COURSE);
            let counts: Vec<usize> = order
                .iter()
                .map(|b| {
                    let pool = reader.pool_exercises(eco(0xA), bc(*b), "reading").unwrap();
                    pes.iter().filter(|e| pool.contains(e)).count()
                })
                .collect();
            assert_eq!(
                counts,
                expected(&order),
                "goal {goal:?}, order {order:x?}, {algorithm}"
            );
        }
    }
    check(None, &[0x101, 0x102], |_| vec![3, 3]);
    check(Some(5), &[0x101, 0x102], |_| vec![3, 2]);
    check(Some(4), &[0x101, 0x103], |order| {
        if order[0] == 0x103 {
            vec![1, 3]
        } else {
            vec![2, 1]
        }
    });
}

/// Scenario 14: PEs never include the assignment's exercises, excluded versions, excluded
/// groups' versions, or a version of a group assigned in a not-yet-due assignment.
#[test]
fn s14_pes_skip_assigned_excluded_and_open_assignment_exercises() {
    let (a, b) = (eco(0xA), eco(0xB));
    let mut world = World::new();
    world.ecosystem(simple_book(a, &[(0x101, range(1, 8))]));
    // Exercise 31 (in B) is another version of exercise 4's group; 33 of 3's.
    world.ecosystem(
        simple_book(b, &[(0x201, vec![31, 33])])
            .same_group(31, 4)
            .same_group(33, 3),
    );
    world.create_course(a);
    world.roster(&[(0x50, 0)], &[(1, 0x50)]);
    world.now = T0 + 5 * DAY;
    world.exclude(false, &[2], &[]);
    world.exclude(true, &[], &[group_of(3)]);
    // Open (due later) in B with 31: every version of 4's group is excluded.
    let mut open = AssignmentSpec::new(0xA2, 1, b, "homework").core(&[31]);
    open.due_at = Some(T0 + 9 * DAY);
    world.assignment(&open);
    // Past due with feedback given: 5 stays allowed.
    let mut closed = AssignmentSpec::new(0xA3, 1, a, "homework").core(&[5]);
    closed.due_at = Some(T0 + DAY);
    closed.feedback_at = Some(T0 + 2 * DAY);
    world.assignment(&closed);
    // Feedback in the future although due: 6 is excluded.
    let mut feedback_later = AssignmentSpec::new(0xA4, 1, a, "homework").core(&[6]);
    feedback_later.due_at = Some(T0 + DAY);
    feedback_later.feedback_at = Some(T0 + 9 * DAY);
    world.assignment(&feedback_later);

    let mut target = AssignmentSpec::new(0xA1, 1, a, "reading").core(&[1]);
    target.bcs = vec![0x101];
    target.goal_pes = Some(8);
    world.assignment(&target);
    let allowed: BTreeSet<ExerciseUuid> = [5, 7, 8].iter().map(|n| x(*n)).collect();
    for algorithm in ["local_query", "biglearn_sparfa"] {
        let pes: BTreeSet<ExerciseUuid> = world.pes(0xA1, algorithm).unwrap().into_iter().collect();
        assert_eq!(pes, allowed, "{algorithm}");
    }
    // Clearing the course exclusions recomputes: 2 is back.
    world.exclude(false, &[], &[]);
    assert!(world.pes(0xA1, "local_query").unwrap().contains(&x(2)));
    // Once 0xA4's feedback opens, 6 is allowed again (a timer recomputes).
    world.advance_to(T0 + 9 * DAY);
    assert!(world.pes(0xA1, "local_query").unwrap().contains(&x(6)));
    assert!(
        world.pes(0xA1, "local_query").unwrap().contains(&x(4)),
        "0xA2 is due"
    );
}

/// Scenario 15: SPEs never repeat any algorithm's PEs; slots with no history fall back to
/// the assignment's own containers with k_ago 0.
#[test]
fn s15_spes_avoid_pes_and_fall_back_to_own_containers() {
    let a = eco(0xA);
    let mut world = World::new();
    world.ecosystem(simple_book(a, &[(0x101, range(1, 12))]));
    world.create_course(a);
    world.roster(&[(0x50, 0)], &[(1, 0x50)]);
    let mut spec = AssignmentSpec::new(0xA1, 1, a, "reading").core(&[1]);
    spec.bcs = vec![0x101];
    spec.goal_pes = Some(2);
    world.assignment(&spec);
    let mut all_pes: HashSet<ExerciseUuid> = HashSet::new();
    for algorithm in ["local_query", "biglearn_sparfa"] {
        all_pes.extend(world.pes(0xA1, algorithm).unwrap());
    }
    assert!(all_pes.len() >= 2);
    for algorithm in [
        "instructor_driven_local_query",
        "student_driven_local_query",
        "instructor_driven_biglearn_sparfa",
        "student_driven_biglearn_sparfa",
    ] {
        let record = world.spes(0xA1, algorithm).unwrap();
        let spes: Vec<ExerciseUuid> = record
            .exercise_uuids
            .clone()
            .unwrap()
            .into_iter()
            .map(ExerciseUuid)
            .collect();
        // goal null: slots 1, 3, 5 have no history and carry to the X = 0 slot.
        assert_eq!(spes.len(), 4, "{algorithm}");
        assert!(
            spes.iter().all(|e| !all_pes.contains(e) && *e != x(1)),
            "{algorithm}"
        );
        let info = spy(&record);
        for e in &spes {
            assert_eq!(info["exercises"][e.to_string()]["k_ago"], 0, "{algorithm}");
            assert_eq!(info["exercises"][e.to_string()]["is_random_ago"], false);
        }
        assert_eq!(
            info["history_type"],
            algorithm
                .trim_end_matches("_local_query")
                .trim_end_matches("_biglearn_sparfa")
        );
        assert_eq!(
            info["assignment_history"]["1"]["assignment_uuid"],
            Value::Null
        );
    }
}

/// Scenario 16: across two ecosystems, SPE containers come from the mapped earlier
/// assignments of the same type, and the histories differ when assignments are
/// completed out of order.
#[test]
fn s16_spe_histories_map_earlier_assignments_across_ecosystems() {
    fn run(reverse: bool) {
        let (a, b) = (eco(0xA), eco(0xB));
        let mut world = World::new();
        let sections_a: Vec<(u128, Vec<u128>)> =
            (0..6).map(|i| (0x101 + i, range(1 + 10 * i, 6))).collect();
        let sections_b: Vec<(u128, Vec<u128>)> = (0..6)
            .map(|i| (0x201 + i, range(101 + 10 * i, 6)))
            .collect();
        world.ecosystem(simple_book(a, &sections_a));
        let mut b_spec = simple_book(b, &sections_b);
        for n in 0..60 {
            b_spec = b_spec.same_group(101 + n, 1 + n);
        }
        world.ecosystem(b_spec);
        world.create_course(a);
        world.roster(&[(0x50, 0)], &[(1, 0x50)]);
        // Readings on sections 1, 2 (A) and 3 (B); homeworks on 4, 5 (A) and 6 (B).
        let mk =
            |uuid: u128, kind: &'static str, ecosystem, bc: u128, core: u128, due_days: i64| {
                let mut spec = AssignmentSpec::new(uuid, 1, ecosystem, kind).core(&[core]);
                spec.bcs = vec![bc];
                spec.due_at = Some(T0 + due_days * DAY);
                spec.goal_spes = Some(2);
                spec.goal_pes = Some(0);
                spec
            };
        let r1 = mk(0xB1, "reading", a, 0x101, 1, 10);
        let r2 = mk(0xB2, "reading", a, 0x102, 11, 11);
        let h1 = mk(0xC1, "homework", a, 0x104, 31, 10);
        let h2 = mk(0xC2, "homework", a, 0x105, 41, 11);
        for spec in [&r1, &r2, &h1, &h2] {
            world.assignment(spec);
        }
        // Complete in the expected order (1 then 2) or in reverse.
        let order = if reverse {
            [(&r2, &h2), (&r1, &h1)]
        } else {
            [(&r1, &h1), (&r2, &h2)]
        };
        for (day, (reading, homework)) in order.iter().enumerate() {
            let at = T0 + (day as i64 + 1) * DAY;
            world.now = at;
            for spec in [reading, homework] {
                let (trial, exercise, _, _) = spec.exercises[0];
                world.respond(1, trial, exercise, a, true, at);
            }
        }
        world.switch(
            a,
            b,
            &(0..6).map(|i| (0x101 + i, 0x201 + i)).collect::<Vec<_>>(),
        );
        let r3 = mk(0xB3, "reading", b, 0x203, 121, 12);
        let h3 = mk(0xC3, "homework", b, 0x206, 151, 12);
        world.assignment(&r3);
        world.assignment(&h3);

        for (target, earlier_by_due, earlier_done_last) in [
            (0xB3, (0x202, 0x201), if reverse { 0x201 } else { 0x202 }),
            (0xC3, (0x205, 0x204), if reverse { 0x204 } else { 0x205 }),
        ] {
            let instructor = world.spes(target, "instructor_driven_local_query").unwrap();
            let student_driven = world.spes(target, "student_driven_local_query").unwrap();
            let history = |record: &ResultRecord, k: &str| -> Vec<String> {
                spy(record)["assignment_history"][k]["book_container_uuids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_owned())
                    .collect()
            };
            assert_eq!(
                history(&instructor, "1"),
                vec![bc(earlier_by_due.0).to_string()]
            );
            assert_eq!(
                history(&instructor, "2"),
                vec![bc(earlier_by_due.1).to_string()]
            );
            assert_eq!(
                history(&student_driven, "1"),
                vec![bc(earlier_done_last).to_string()]
            );
            // The k = 1 SPE comes from that (mapped, new-ecosystem) container's pool.
            let reader = Reader::new(&world.state, COURSE);
            for (record, bc1) in [
                (&instructor, earlier_by_due.0),
                (&student_driven, earlier_done_last),
            ] {
                let info = spy(record);
                let pool = reader.pool_exercises(b, bc(bc1), "reading").unwrap();
                let from_k1: Vec<ExerciseUuid> = record
                    .exercise_uuids
                    .clone()
                    .unwrap()
                    .into_iter()
                    .map(ExerciseUuid)
                    .filter(|e| info["exercises"][e.to_string()]["k_ago"] == 1)
                    .collect();
                assert_eq!(from_k1.len(), 1, "{target:#x} reverse={reverse}");
                assert!(pool.contains(&from_k1[0]));
                assert_eq!(record.exercise_uuids.as_ref().unwrap().len(), 2);
            }
            let differ = history(&instructor, "1") != history(&student_driven, "1");
            assert_eq!(
                differ, reverse,
                "histories differ only when completed out of order"
            );
        }
    }
    run(false);
    run(true);
}

/// Scenario 17: instructor_seq and student_seq.
#[test]
fn s17_positions_in_both_histories() {
    let now = T0 + 10 * DAY;
    let a = |n: u128, due: i64, opens: i64, history: Option<i64>, deleted: bool| AssignmentState {
        uuid: asg(n),
        student: student(1),
        ecosystem: eco(0xA),
        assignment_type: "homework".into(),
        opens_at: Some(opens),
        due_at: Some(due),
        feedback_at: None,
        assigned_book_container_uuids: vec![],
        assigned_exercise_uuids: vec![],
        goal_pes: None,
        goal_spes: None,
        pes_are_assigned: false,
        spes_are_assigned: false,
        is_deleted: deleted,
        created_at: Some(T0 + n as i64),
        history_at: history,
        trial_uuids: vec![],
    };
    let yesterday = now - DAY;
    let assignments = vec![
        // Listed out of order on purpose; uuids 1..8 are the expected instructor order.
        a(7, now, now - 2 * DAY, None, false),
        a(3, yesterday, now - 2 * DAY, Some(now), false),
        a(1, yesterday, now - 3 * DAY, Some(now), false),
        a(9, yesterday, now - 4 * DAY, Some(now - 2 * DAY), true),
        a(4, yesterday, now - 2 * DAY, Some(now - DAY), false),
        a(2, yesterday, now - 3 * DAY, Some(now - DAY), false),
        a(5, now, now - 3 * DAY, None, false),
        a(8, now, now - 2 * DAY, None, false),
        a(6, now, now - 3 * DAY, None, false),
    ];
    let positions = Positions::of(&assignments, "homework");
    let instructor: Vec<(u128, i64)> = positions
        .instructor_seq
        .iter()
        .map(|(k, v)| (k.0.as_u128(), *v))
        .collect();
    assert_eq!(
        instructor,
        (1..=8).map(|n| (n, n as i64)).collect::<Vec<_>>()
    );
    let student_seq: BTreeMap<u128, i64> = positions
        .student_seq
        .iter()
        .map(|(k, v)| (k.0.as_u128(), *v))
        .collect();
    let expected: BTreeMap<u128, i64> = [
        (2, 1),
        (4, 2),
        (1, 3),
        (3, 4),
        (5, 5),
        (6, 5),
        (7, 5),
        (8, 5),
    ]
    .into_iter()
    .collect();
    assert_eq!(student_seq, expected);
    assert_eq!(
        positions.position(HistoryType::InstructorDriven, asg(9)),
        None,
        "deleted"
    );
    assert_eq!(
        positions.at(HistoryType::StudentDriven, 5),
        None,
        "shared rank"
    );
    assert_eq!(positions.at(HistoryType::StudentDriven, 2), Some(asg(4)));
    assert!(Positions::of(&assignments, "reading")
        .instructor_seq
        .is_empty());
}

/// Scenario 18: the student history (completion rule from the domain, past-due rule here).
#[test]
fn s18_student_history_entries() {
    let a = eco(0xA);
    let mut world = World::new();
    world.ecosystem(simple_book(a, &[(0x101, range(1, 6))]));
    world.create_course(a);
    world.roster(&[(0x50, 0)], &[(1, 0x50)]);
    let mk = |uuid: u128, core: &[u128], due_days: i64| {
        let mut spec = AssignmentSpec::new(uuid, 1, a, "homework").core(core);
        spec.bcs = vec![0x101];
        spec.due_at = Some(T0 + due_days * DAY);
        spec
    };
    let done = mk(0xA1, &[1, 2], 5);
    let late = mk(0xA2, &[3, 4], 6);
    let pending = mk(0xA3, &[5], 30);
    for spec in [&done, &late, &pending] {
        world.assignment(spec);
    }
    world.now = T0 + DAY;
    world.respond(1, done.exercises[0].0, 1, a, true, T0 + DAY);
    world.respond(1, done.exercises[1].0, 2, a, true, T0 + 2 * DAY);
    world.respond(1, late.exercises[0].0, 3, a, true, T0 + 2 * DAY);
    assert_eq!(
        world.assignment_state(0xA1).history_at,
        Some(T0 + 2 * DAY),
        "last response"
    );
    assert_eq!(
        world.assignment_state(0xA2).history_at,
        None,
        "incomplete, not due"
    );
    world.advance_to(T0 + 7 * DAY);
    assert_eq!(
        world.assignment_state(0xA2).history_at,
        Some(T0 + 6 * DAY),
        "past due → due_at"
    );
    assert_eq!(world.assignment_state(0xA3).history_at, None);
    world.respond(1, late.exercises[1].0, 4, a, true, T0 + 7 * DAY);
    world.respond(1, done.exercises[0].0, 1, a, false, T0 + 7 * DAY);
    assert_eq!(
        world.assignment_state(0xA2).history_at,
        Some(T0 + 6 * DAY),
        "sticky"
    );
    assert_eq!(
        world.assignment_state(0xA1).history_at,
        Some(T0 + 2 * DAY),
        "sticky"
    );
    assert_eq!(world.assignment_state(0xA3).history_at, None);
}

/// Scenario 19: worst areas from the weakest CLUEs' practice pools through the slot table;
/// a container without practice exercises borrows; no CLUEs give an empty list.
#[test]
fn s19_worst_areas_follow_the_weakest_clues_and_borrow() {
    let a = eco(0xA);
    let mut world = World::new();
    let mut spec = EcosystemSpec::new(a).container(0x100, 0, vec![]);
    // Sections 1..4: CLUE pool 10i+1..+3, practice pool 100i+1..+6; section 3 has no practice.
    for i in 1..=4u128 {
        let mut pools: Vec<PoolSpec> = vec![(true, READING_HOMEWORK, range(10 * i + 1, 3))];
        if i != 3 {
            pools.push((false, PRACTICE, range(100 * i + 1, 6)));
        }
        spec = spec.container(0x100 + i, 0x100, pools);
    }
    world.ecosystem(spec);
    world.create_course(a);
    world.roster(&[(0x50, 0)], &[(1, 0x50), (2, 0x50)]);
    let mut hw = AssignmentSpec::new(0xA1, 1, a, "homework");
    let core: Vec<u128> = (1..=4).flat_map(|i| range(10 * i + 1, 3)).collect();
    hw = hw.core(&core);
    world.assignment(&hw);
    let answer = |world: &mut World, section: u128, correct: [bool; 3]| {
        for (j, is_correct) in correct.iter().enumerate() {
            let exercise = 10 * section + 1 + j as u128;
            let idx = core.iter().position(|e| *e == exercise).unwrap();
            world.respond(1, hw.exercises[idx].0, exercise, a, *is_correct, T0);
        }
    };
    answer(&mut world, 1, [false, false, false]);
    answer(&mut world, 2, [true, false, false]);
    answer(&mut world, 4, [true, true, true]);
    let practice = |section: u128| -> HashSet<ExerciseUuid> {
        range(100 * section + 1, 6).into_iter().map(x).collect()
    };
    let count = |list: &[ExerciseUuid], section: u128| {
        list.iter()
            .filter(|e| practice(section).contains(e))
            .count()
    };
    let worst = world.worst_areas(1, "local_query").unwrap();
    assert_eq!(
        [count(&worst, 1), count(&worst, 2), count(&worst, 4)],
        [2, 2, 1],
        "weakest first: sections 1, 2, 4"
    );
    // Section 3 becomes the weakest but has no practice exercises: it borrows.
    answer(&mut world, 3, [false, false, false]);
    let worst = world.worst_areas(1, "local_query").unwrap();
    assert_eq!(worst.len(), 5);
    assert_eq!(count(&worst, 1) + count(&worst, 2) + count(&worst, 4), 5);
    assert_eq!(worst.iter().collect::<HashSet<_>>().len(), 5, "distinct");
    // No CLUEs: an empty list, and no SPARFA CLUE before a model means empty too.
    world.compute(&[Target::WorstAreas(student(2))]);
    assert_eq!(world.worst_areas(2, "local_query"), Some(vec![]));
    assert_eq!(world.worst_areas(1, "biglearn_sparfa"), Some(vec![]));
}

/// Scenario 20: before E's first model, SPARFA PEs come from the prior (nil matrix uuid) and
/// no SPARFA CLUE exists; the first model recomputes both with its matrix uuid.
#[test]
fn s20_sparfa_results_before_and_after_the_first_model() {
    let a = eco(0xA);
    let mut world = World::new();
    world.ecosystem(simple_book(a, &[(0x101, range(1, 10))]));
    world.create_course(a);
    world.roster(&[(0x50, 0)], &[(1, 0x50)]);
    let mut spec = AssignmentSpec::new(0xA1, 1, a, "reading").core(&[1, 2, 3]);
    spec.bcs = vec![0x101];
    world.assignment(&spec);
    for n in 0..3u128 {
        world.respond(1, spec.exercises[n as usize].0, 1 + n, a, n != 1, T0);
    }
    let pes = world
        .result(&format!("assignment_pes|{}|biglearn_sparfa", asg(0xA1)))
        .unwrap();
    assert_eq!(pes.ecosystem_matrix_uuid, Some(Uuid::nil()));
    assert_eq!(pes.model_seq, -1);
    assert_eq!(pes.exercise_uuids.as_ref().unwrap().len(), 3);
    assert!(world.student_clue(1, 0x101, "biglearn_sparfa").is_none());
    assert!(world.student_clue(1, 0x101, "local_query").is_some());

    let model = world.add_model(a, 0);
    let targets = world
        .scheduler()
        .targets_for_model(COURSE, a, 0)
        .unwrap()
        .targets;
    assert!(targets.contains(&Target::Assignment(asg(0xA1))));
    assert!(targets.contains(&Target::WorstAreas(student(1))));
    assert!(targets
        .iter()
        .any(|t| matches!(t, Target::StudentClue { .. })));
    assert!(targets
        .iter()
        .any(|t| matches!(t, Target::TeacherClue { .. })));
    world.compute(&targets);
    let pes = world
        .result(&format!("assignment_pes|{}|biglearn_sparfa", asg(0xA1)))
        .unwrap();
    assert_eq!(pes.ecosystem_matrix_uuid, Some(model.matrix_uuid));
    assert_eq!(pes.model_seq, 0);
    let clue = world.student_clue(1, 0x101, "biglearn_sparfa").unwrap();
    assert_eq!(clue.model_seq, 0);
    assert!(clue.clue_data.unwrap().is_real);
    assert_eq!(
        spy(&world.teacher_clue(0x50, 0x101, "biglearn_sparfa").unwrap())["ecosystem_matrix_uuid"],
        model.matrix_uuid.to_string()
    );
    // Nothing is left on the prior, and later models dirty nothing.
    assert!(world
        .scheduler()
        .targets_for_model(COURSE, a, 0)
        .unwrap()
        .targets
        .is_empty());
    assert!(world
        .scheduler()
        .targets_for_model(COURSE, a, 1)
        .unwrap()
        .targets
        .is_empty());
}

/// Two students in nested periods with one answered assignment each, in ecosystem A, with
/// ecosystem B mapped section to section.
fn two_student_world() -> World {
    let (a, b) = (eco(0xA), eco(0xB));
    let mut world = World::new();
    world.ecosystem(simple_book(
        a,
        &[(0x101, range(1, 3)), (0x102, range(4, 3))],
    ));
    world.ecosystem(simple_book(
        b,
        &[(0x201, range(11, 3)), (0x202, range(14, 3))],
    ));
    world.create_course(a);
    world.roster(&[(0x50, 0), (0x51, 0x50)], &[(1, 0x50), (2, 0x51)]);
    for (uuid, who, section, exercise) in [(0xA1, 1, 0x101, 1), (0xA2, 2, 0x102, 4)] {
        let mut spec = AssignmentSpec::new(uuid, who, a, "reading").core(&[exercise]);
        spec.bcs = vec![section];
        world.assignment(&spec);
        world.respond(who, spec.exercises[0].0, exercise, a, true, T0);
    }
    world
}

fn sorted(mut targets: Vec<Target>) -> Vec<Target> {
    targets.sort();
    targets.dedup();
    targets
}

/// Scenario 3 (the scheduler's part), §3.1: a switch dirties every student and teacher CLUE
/// of the course, re-targeted to the new ecosystem, and every active student's
/// assignments and worst areas.
#[test]
fn a_switch_dirties_every_clue_and_every_active_students_results() {
    let b = eco(0xB);
    let mut world = two_student_world();
    let targets = world.switch(eco(0xA), b, &[(0x101, 0x201), (0x102, 0x202)]);
    let student_clue = |who, section| Target::StudentClue {
        ecosystem: b,
        book_container: bc(section),
        student: student(who),
    };
    let teacher_clue = |container, section| Target::TeacherClue {
        ecosystem: b,
        book_container: bc(section),
        container: cc(container),
    };
    let expected = sorted(vec![
        student_clue(1, 0x201),
        student_clue(2, 0x202),
        teacher_clue(0x50, 0x201),
        teacher_clue(0x50, 0x202),
        teacher_clue(0x51, 0x202),
        Target::Assignment(asg(0xA1)),
        Target::Assignment(asg(0xA2)),
        Target::WorstAreas(student(1)),
        Target::WorstAreas(student(2)),
    ]);
    assert_eq!(targets, expected);
    let clue = world.student_clue(1, 0x201, "local_query").unwrap();
    assert_eq!(clue.clue_data.unwrap().ecosystem_uuid, Some(b.0));
}

/// §3.1, §3.3: a roster update dirties the teacher CLUEs of every container (over its
/// members and anyone who just left) and the results of newly active students; an
/// exclusion change dirties every active student's assignments and worst areas.
#[test]
fn roster_and_exclusion_changes_dirty_what_the_spec_says() {
    let a = eco(0xA);
    let mut world = two_student_world();
    // Student 2 leaves, student 3 arrives.
    let targets = world.roster(&[(0x50, 0), (0x51, 0x50)], &[(1, 0x50), (3, 0x51)]);
    let teacher_clue = |container, section| Target::TeacherClue {
        ecosystem: a,
        book_container: bc(section),
        container: cc(container),
    };
    let expected = sorted(vec![
        teacher_clue(0x50, 0x101),
        teacher_clue(0x50, 0x102),
        teacher_clue(0x51, 0x102),
        Target::WorstAreas(student(3)),
    ]);
    assert_eq!(targets, expected);
    assert_eq!(world.worst_areas(3, "local_query"), Some(vec![]));

    let targets = world.exclude(false, &[2], &[]);
    let expected = sorted(vec![
        Target::Assignment(asg(0xA1)),
        Target::WorstAreas(student(1)),
        Target::WorstAreas(student(3)),
    ]);
    assert_eq!(targets, expected, "a dropped student gets no more results");
}

/// §3.4 step 3: a new assignment that is still open recomputes the student's other lists
/// that show a version of its groups; a closed one does not.
#[test]
fn s14_a_new_open_assignment_recomputes_lists_showing_its_groups() {
    let (a, b) = (eco(0xA), eco(0xB));
    let mut world = World::new();
    world.ecosystem(simple_book(a, &[(0x101, range(1, 6))]));
    let mut b_spec = simple_book(b, &[(0x201, range(11, 6))]);
    for n in 0..6 {
        b_spec = b_spec.same_group(11 + n, 1 + n);
    }
    world.ecosystem(b_spec);
    world.create_course(a);
    world.roster(&[(0x50, 0)], &[(1, 0x50)]);
    world.now = T0 + 5 * DAY;
    let mut reading = AssignmentSpec::new(0xA1, 1, a, "reading");
    reading.bcs = vec![0x101];
    reading.goal_pes = Some(6);
    world.assignment(&reading);
    assert!(world.pes(0xA1, "local_query").unwrap().contains(&x(3)));

    // Closed (due and feedback passed): no anti-cheating re-check of the reading.
    let mut closed = AssignmentSpec::new(0xA2, 1, b, "homework").core(&[14]);
    closed.due_at = Some(T0 + DAY);
    let targets = world.assignment(&closed);
    assert!(!targets.contains(&Target::Assignment(asg(0xA1))));

    let mut open = AssignmentSpec::new(0xA3, 1, b, "homework").core(&[13]);
    open.due_at = Some(T0 + 9 * DAY);
    let targets = world.assignment(&open);
    assert!(targets.contains(&Target::Assignment(asg(0xA1))));
    for algorithm in ["local_query", "biglearn_sparfa"] {
        let pes = world.pes(0xA1, algorithm).unwrap();
        assert!(
            !pes.contains(&x(3)),
            "{algorithm}: 13's group is open elsewhere"
        );
        assert_eq!(pes.len(), 5, "{algorithm}");
    }
}

/// `scheduler.publish_biglearn_sparfa = false` stops every `biglearn_sparfa` result.
#[test]
fn the_sparfa_setting_stops_sparfa_results() {
    let mut world = World::new();
    world.settings.publish_biglearn_sparfa = false;
    let a = eco(0xA);
    world.ecosystem(simple_book(a, &[(0x101, range(1, 6))]));
    world.add_model(a, 0);
    world.create_course(a);
    world.roster(&[(0x50, 0)], &[(1, 0x50)]);
    let mut spec = AssignmentSpec::new(0xA1, 1, a, "reading").core(&[1]);
    spec.bcs = vec![0x101];
    world.assignment(&spec);
    world.respond(1, spec.exercises[0].0, 1, a, true, T0);
    assert!(world.log.iter().any(|r| r.algorithm_name == "local_query"));
    assert!(!world
        .log
        .iter()
        .any(|r| r.algorithm_name.ends_with("biglearn_sparfa")));
    assert!(world
        .scheduler()
        .targets_for_model(COURSE, a, 0)
        .unwrap()
        .targets
        .is_empty());
}

/// S9: turning `scheduler.publish_biglearn_sparfa` off withdraws every served
/// `biglearn_sparfa` result of the targets computed (once: a withdrawn key stays quiet),
/// leaves the other algorithms alone, and turning it on again brings them back.
#[test]
fn the_sparfa_kill_switch_withdraws_served_results_and_releasing_it_restores_them() {
    let mut world = World::new();
    let a = eco(0xA);
    world.ecosystem(simple_book(a, &[(0x101, range(1, 6))]));
    world.add_model(a, 0);
    world.create_course(a);
    world.roster(&[(0x50, 0)], &[(1, 0x50)]);
    let mut spec = AssignmentSpec::new(0xA1, 1, a, "reading").core(&[1]);
    spec.bcs = vec![0x101];
    world.assignment(&spec);
    world.respond(1, spec.exercises[0].0, 1, a, true, T0);
    let everything = |world: &World| {
        world
            .scheduler()
            .targets_for(
                &Effect::EcosystemSwitched {
                    course: COURSE,
                    from: a,
                    to: a,
                },
                world.now,
            )
            .unwrap()
            .targets
    };
    let served_sparfa = |world: &World| -> Vec<String> {
        world
            .published
            .results
            .iter()
            .filter(|(key, record)| key.ends_with("biglearn_sparfa") && !record.is_withdrawal())
            .map(|(key, _)| key.clone())
            .collect()
    };
    let before = served_sparfa(&world);
    assert!(
        before.iter().any(|key| key.starts_with("assignment_pes|"))
            && before.iter().any(|key| key.starts_with("student_clue|")),
        "{before:?}"
    );
    let local_before = world.pes(0xA1, "local_query");

    world.settings.publish_biglearn_sparfa = false;
    let targets = everything(&world);
    let computed = world.compute(&targets);
    assert!(
        served_sparfa(&world).is_empty(),
        "{:?}",
        served_sparfa(&world)
    );
    let withdrawn: Vec<String> = computed
        .records
        .iter()
        .filter(|record| record.is_withdrawal())
        .map(|record| record.key())
        .collect();
    let mut expected = before.clone();
    expected.sort();
    let mut sorted = withdrawn.clone();
    sorted.sort();
    assert_eq!(sorted, expected, "each served key withdrawn once");
    assert_eq!(world.pes(0xA1, "biglearn_sparfa"), None);
    assert_eq!(world.pes(0xA1, "local_query"), local_before);
    // Computed again while off: nothing more to withdraw.
    let computed = world.compute(&targets);
    assert!(!computed.records.iter().any(|record| record.is_withdrawal()));

    world.settings.publish_biglearn_sparfa = true;
    let targets = everything(&world);
    world.compute(&targets);
    let mut after = served_sparfa(&world);
    after.sort();
    assert_eq!(after, expected, "every withdrawn key is served again");
}

/// §4: targets needing an ecosystem that is not created yet are deferred, and released
/// when it is.
#[test]
fn targets_wait_for_their_ecosystem() {
    let (a, c) = (eco(0xA), eco(0xC));
    let mut world = World::new();
    world.ecosystem(simple_book(a, &[(0x101, range(1, 6))]));
    world.create_course(a);
    world.roster(&[(0x50, 0)], &[(1, 0x50)]);
    let mut spec = AssignmentSpec::new(0xA1, 1, c, "reading").core(&[21]);
    spec.bcs = vec![0x301];
    world.assignment(&spec);
    assert_eq!(
        world.last.deferred,
        vec![(Target::Assignment(asg(0xA1)), c)]
    );
    assert!(world.pes(0xA1, "local_query").is_none());
    // A response in C cannot be targeted yet.
    let effects = world.apply(biglearn_domain::events::CoursePayload::RecordResponse(
        biglearn_domain::events::RecordResponse {
            response_uuid: biglearn_domain::ids::ResponseUuid(id(0xD_FFFF)),
            course_uuid: COURSE,
            sequence_number: biglearn_domain::ids::SequenceNumber(world.seq),
            ecosystem_uuid: c,
            trial_uuid: biglearn_domain::ids::TrialUuid(id(spec.exercises[0].0)),
            student_uuid: student(1),
            exercise_uuid: x(21),
            is_correct: true,
            is_real_response: true,
            responded_at: biglearn_domain::events::Timestamp(
                biglearn_domain::time::format_datetime_micros(T0),
            ),
        },
    ));
    let triggered = world
        .scheduler()
        .targets_for(&effects[0], world.now)
        .unwrap();
    assert_eq!(triggered.waits_for, vec![c]);
    world.ecosystem(simple_book(c, &[(0x301, range(21, 6))]));
    let released = world.scheduler().targets_for_ecosystem(COURSE, c).unwrap();
    assert!(released.targets.contains(&Target::Assignment(asg(0xA1))));
    assert!(released.waits_for.is_empty());
    world.compute(&released.targets);
    assert_eq!(world.pes(0xA1, "local_query").map(|p| p.len()), Some(3));
}

/// Dirty-set keys round-trip and sort in the §4 processing order.
#[test]
fn target_keys_round_trip_in_processing_order() {
    let targets = sorted(vec![
        Target::WorstAreas(student(1)),
        Target::Assignment(asg(2)),
        Target::TeacherClue {
            ecosystem: eco(1),
            book_container: bc(2),
            container: cc(3),
        },
        Target::StudentClue {
            ecosystem: eco(9),
            book_container: bc(9),
            student: student(9),
        },
    ]);
    let mut keys: Vec<Vec<u8>> = targets.iter().map(Target::to_key).collect();
    keys.sort();
    let decoded: Vec<Target> = keys.iter().map(|k| Target::from_key(k).unwrap()).collect();
    assert_eq!(decoded, targets);
    assert_eq!(Target::from_key(&[2, 1, 2]), None);
    assert_eq!(Target::from_key(&[]), None);
}

/// A small seeded generator (64-bit LCG), so the property check needs no extra crate.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Independent restatement of the exclusion invariant: course exclusions, every version of
/// excluded groups, and every version of groups assigned in the student's open assignments.
fn forbidden(world: &World, who: biglearn_domain::ids::StudentUuid) -> HashSet<ExerciseUuid> {
    let state = &world.state;
    let course = state.course(COURSE).unwrap().unwrap();
    let mut out: HashSet<ExerciseUuid> = HashSet::new();
    out.extend(course.global_excluded_exercise_uuids.iter().copied());
    out.extend(course.course_excluded_exercise_uuids.iter().copied());
    let mut groups: Vec<_> = course
        .global_excluded_group_uuids
        .iter()
        .chain(&course.course_excluded_group_uuids)
        .copied()
        .collect();
    for assignment in state.student_assignments(COURSE, who).unwrap() {
        let open = assignment.due_at.is_some_and(|d| d > world.now)
            || assignment.feedback_at.is_some_and(|f| f > world.now);
        if open {
            for e in &assignment.assigned_exercise_uuids {
                groups.push(state.exercise(*e).unwrap().unwrap().group_uuid);
            }
        }
    }
    for group in groups {
        out.extend(state.group_versions(group).unwrap());
    }
    out
}

/// Returns how many listed exercises were checked.
fn check_invariant(world: &World, step: usize) -> usize {
    let mut checked = 0;
    for ((_, who), student_state) in &world.state.students {
        let forbidden = forbidden(world, *who);
        for assignment in world.state.student_assignments(COURSE, *who).unwrap() {
            let mut lists: Vec<(String, Vec<Uuid>)> = Vec::new();
            if assignment.needs_pes() {
                for r in world
                    .published
                    .results_about(ResultKind::AssignmentPes, assignment.uuid.0)
                    .unwrap()
                {
                    lists.push((r.key(), r.exercise_uuids.unwrap()));
                }
            }
            if assignment.needs_spes() {
                for r in world
                    .published
                    .results_about(ResultKind::AssignmentSpes, assignment.uuid.0)
                    .unwrap()
                {
                    lists.push((r.key(), r.exercise_uuids.unwrap()));
                }
            }
            if !student_state.active {
                continue;
            }
            for (key, list) in lists {
                for e in list {
                    checked += 1;
                    let e = ExerciseUuid(e);
                    assert!(
                        !forbidden.contains(&e),
                        "step {step}: {key} holds forbidden {e}"
                    );
                    assert!(
                        !assignment.assigned_exercise_uuids.contains(&e),
                        "step {step}: {key} holds its own exercise {e}"
                    );
                }
            }
        }
        if student_state.active {
            for r in world
                .published
                .results_about(ResultKind::PracticeWorstAreas, who.0)
                .unwrap()
            {
                for e in r.exercise_uuids.clone().unwrap() {
                    checked += 1;
                    assert!(
                        !forbidden.contains(&ExerciseUuid(e)),
                        "step {step}: {} holds {e}",
                        r.key()
                    );
                }
            }
        }
    }
    checked
}

/// Over a generated semester (seeded, bounded): no PE, SPE or worst-areas list that is
/// still in use ever holds an excluded exercise or a version of a group assigned in an
/// open assignment of the student.
#[test]
fn property_no_list_ever_holds_an_excluded_or_open_assignment_exercise() {
    for seed in [1u64, 7, 42] {
        let (world, checked, switched) = semester(seed);
        assert!(
            world.log.len() > 100,
            "seed {seed}: the semester computed results"
        );
        assert!(
            checked > 2_000,
            "seed {seed}: only {checked} listed exercises checked"
        );
        assert!(switched, "seed {seed}: the course switched ecosystems");
    }
}

/// The same events at the same logical times compute the same records.
#[test]
fn a_replayed_semester_computes_identical_records() {
    let (first, _, _) = semester(5);
    let (second, _, _) = semester(5);
    assert!(!first.log.is_empty());
    assert_eq!(first.log, second.log);
    assert_eq!(first.published, second.published);
}

/// Drives a generated semester, checking the invariant after every event; returns the
/// world, how many listed exercises were checked and whether the course switched.
fn semester(seed: u64) -> (World, usize, bool) {
    let mut rng = Lcg(seed);
    let (a, b) = (eco(0xA), eco(0xB));
    let mut world = World::new();
    let sections = 6u128;
    let per = 8u128;
    let mut spec_a = EcosystemSpec::new(a).container(0x100, 0, vec![]);
    let mut spec_b = EcosystemSpec::new(b).container(0x200, 0, vec![]);
    for i in 0..sections {
        let ex_a = range(1 + per * i, per);
        let ex_b = range(1001 + per * i, per);
        spec_a = spec_a.container(
            0x101 + i,
            0x100,
            vec![
                (true, READING_HOMEWORK, ex_a.clone()),
                (false, PRACTICE, ex_a.clone()),
            ],
        );
        spec_b = spec_b.container(
            0x201 + i,
            0x200,
            vec![
                (true, READING_HOMEWORK, ex_b.clone()),
                (false, PRACTICE, ex_b.clone()),
            ],
        );
        for (va, vb) in ex_a.iter().zip(&ex_b) {
            spec_b = spec_b.same_group(*vb, *va);
        }
    }
    world.ecosystem(spec_a);
    world.ecosystem(spec_b);
    world.create_course(a);
    world.roster(
        &[(0x50, 0), (0x51, 0x50)],
        &[(1, 0x50), (2, 0x51), (3, 0x50), (4, 0x51)],
    );
    let mut current = a;
    let mut next_assignment = 0x1000u128;
    let mut open_trials: Vec<(u128, u128, u128)> = Vec::new(); // (student, trial, exercise)
    let mut trial_ecosystem: BTreeMap<u128, biglearn_domain::ids::EcosystemUuid> = BTreeMap::new();
    let mut checked = 0;
    for step in 0..120usize {
        world.now += (rng.below(12) as i64) * 3_600_000_000;
        match rng.below(10) {
            0..=2 => {
                let who = 1 + rng.below(4) as u128;
                let kind = if rng.chance(50) {
                    "reading"
                } else {
                    "homework"
                };
                let (offset, base) = if current == a {
                    (0x101, 1)
                } else {
                    (0x201, 1001)
                };
                let section = rng.below(sections as u64) as u128;
                let mut spec = AssignmentSpec::new(next_assignment, who, current, kind);
                let core: Vec<u128> = (0..3)
                    .map(|_| base + per * section + rng.below(per as u64) as u128)
                    .collect();
                spec = spec.core(&core);
                spec.bcs = vec![
                    offset + section,
                    offset + rng.below(sections as u64) as u128,
                ];
                spec.due_at = Some(world.now + (rng.below(6) as i64) * DAY);
                spec.feedback_at = rng
                    .chance(40)
                    .then(|| world.now + (rng.below(10) as i64) * DAY);
                spec.goal_pes = rng.chance(50).then(|| rng.below(5) as i64);
                spec.goal_spes = rng.chance(50).then(|| rng.below(6) as i64);
                spec.pes_are_assigned = rng.chance(15);
                spec.is_deleted = rng.chance(5);
                spec.created_at = world.now;
                for (t, e, _, _) in &spec.exercises {
                    open_trials.push((who, *t, *e));
                    trial_ecosystem.insert(*t, current);
                }
                world.assignment(&spec);
                next_assignment += 1;
            }
            3..=6 => {
                if !open_trials.is_empty() {
                    let (who, trial, exercise) =
                        open_trials[rng.below(open_trials.len() as u64) as usize];
                    let ecosystem = trial_ecosystem[&trial];
                    let correct = rng.chance(60);
                    let now = world.now;
                    world.respond(who, trial, exercise, ecosystem, correct, now);
                }
            }
            7 => {
                let base = if current == a { 1 } else { 1001 };
                let versions: Vec<u128> = (0..rng.below(3))
                    .map(|_| base + rng.below((sections * per) as u64) as u128)
                    .collect();
                let groups: Vec<_> = (0..rng.below(2))
                    .map(|_| group_of(1 + rng.below((sections * per) as u64) as u128))
                    .collect();
                world.exclude(rng.chance(50), &versions, &groups);
            }
            8 => {
                let target = world.now + (rng.below(3) as i64) * DAY;
                world.advance_to(target);
            }
            _ => {
                if current == a && step > 40 {
                    world.switch(
                        a,
                        b,
                        &(0..sections)
                            .map(|i| (0x101 + i, 0x201 + i))
                            .collect::<Vec<_>>(),
                    );
                    current = b;
                } else if rng.chance(30) {
                    // Student 4 drops out and comes back.
                    let roster: &[(u128, u128)] = if rng.chance(50) {
                        &[(1, 0x50), (2, 0x51), (3, 0x50)]
                    } else {
                        &[(1, 0x50), (2, 0x51), (3, 0x50), (4, 0x51)]
                    };
                    world.roster(&[(0x50, 0), (0x51, 0x50)], roster);
                }
            }
        }
        checked += check_invariant(&world, step);
    }
    (world, checked, current == b)
}
