//! The pure book-keeping of one owned partition: ecosystem content, first responses, retrain marks
//! and fit coalescing (docs/design/sparfa.md §1, §3, §5, §8).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use biglearn_domain::events::{CreateEcosystem, RecordResponse};
use biglearn_domain::ids::{
    BookContainerUuid, EcosystemUuid, ExerciseGroupUuid, ExerciseUuid, StudentUuid,
};
use biglearn_scheduler::RetrainCounts;

/// Why a fit runs (the model event's `trigger`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Trigger {
    /// The first model of an ecosystem (model_seq 0 unless one was already published).
    Initial,
    /// A retrain mark of docs/design/scheduler.md §14.
    ResponseGrowth,
}

impl Trigger {
    /// The model event's `trigger` string, also the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Initial => "initial",
            Trigger::ResponseGrowth => "response_growth",
        }
    }
}

/// C_ids, Q_ids and H of one ecosystem (docs/design/sparfa.md §3), from its `create_ecosystem`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EcosystemContent {
    /// Leaf book containers (page-modules), ascending.
    pub concepts: Vec<BookContainerUuid>,
    /// Exercise groups of every exercise, ascending.
    pub questions: Vec<ExerciseGroupUuid>,
    /// Exercise version → its group.
    pub group_of: BTreeMap<ExerciseUuid, ExerciseGroupUuid>,
    /// Hints as (concept index, question index), sorted by (question, concept).
    pub hints: Vec<(usize, usize)>,
}

impl EcosystemContent {
    /// Builds the §3 index from a `create_ecosystem` payload.
    pub fn from_create(create: &CreateEcosystem) -> EcosystemContent {
        let parents: BTreeSet<BookContainerUuid> = create
            .book
            .contents
            .iter()
            .map(|container| container.container_parent_uuid)
            .collect();
        let concepts: Vec<BookContainerUuid> = create
            .book
            .contents
            .iter()
            .map(|container| container.container_uuid)
            .filter(|uuid| !parents.contains(uuid))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let group_of: BTreeMap<ExerciseUuid, ExerciseGroupUuid> = create
            .exercises
            .iter()
            .map(|exercise| (exercise.exercise_uuid, exercise.group_uuid))
            .collect();
        let questions: Vec<ExerciseGroupUuid> = group_of
            .values()
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut hints = BTreeSet::new();
        for container in &create.book.contents {
            let Ok(c) = concepts.binary_search(&container.container_uuid) else {
                continue;
            };
            for exercise in container.pools.iter().flat_map(|p| &p.exercise_uuids) {
                let Some(group) = group_of.get(exercise) else {
                    continue;
                };
                if let Ok(q) = questions.binary_search(group) {
                    hints.insert((q, c));
                }
            }
        }
        EcosystemContent {
            concepts,
            questions,
            group_of,
            hints: hints.into_iter().map(|(q, c)| (c, q)).collect(),
        }
    }
}

/// The first real response of a student to an exercise version seen so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirstResponse {
    /// The course sequence number (a student belongs to one course, so this orders).
    pub sequence_number: i64,
    pub correct: bool,
}

/// What is known of one ecosystem of the partition.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EcosystemBook {
    /// Known once its `create_ecosystem` was read.
    pub content: Option<EcosystemContent>,
    /// Per (student, exercise version): the lowest-sequence real response. Keeping the
    /// minimum per version and taking the minimum over a group's versions at snapshot time
    /// equals the §5 rule per (student, group), and works before the content is known.
    pub first: BTreeMap<(StudentUuid, ExerciseUuid), FirstResponse>,
    /// The latest `accepted_at` of the events applied (the model's logical `created_at`).
    pub latest_accepted_micros: i64,
    /// The latest `model_seq` published for the ecosystem (by anyone), and how far into
    /// this partition of `<prefix>.sparfa-responses` it was trained.
    pub published: Option<PublishedModel>,
    /// A fit is wanted, and why (the first reason wins: initial before growth).
    pub marked: Option<Trigger>,
    /// The model_seq of the fit in flight, if any.
    pub fitting: Option<i64>,
    /// First responses added or replaced since the last snapshot (a metric only).
    pub waiting: u64,
}

/// The latest model of an ecosystem as the consumer tracks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublishedModel {
    pub model_seq: i64,
    /// The model's `created_at` (logical: the newest `accepted_at` in its snapshot).
    pub created_at_micros: i64,
    /// `trained_through.next_offset` of this partition of `<prefix>.sparfa-responses`.
    pub responses_through: Option<i64>,
}

/// Whether an applied event changed anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// A `create_ecosystem` for an ecosystem already known: ignored.
    DuplicateEcosystem,
    /// Not an event the consumer uses (no_op, other course events).
    Ignored,
    /// Applied; these ecosystems were marked for a fit.
    Marked(BTreeSet<EcosystemUuid>),
}

/// The book of one partition (partition p of both co-partitioned input topics).
#[derive(Clone, Debug, Default)]
pub struct PartitionBook {
    pub ecosystems: BTreeMap<EcosystemUuid, EcosystemBook>,
    /// docs/design/scheduler.md §14, counted over the responses of this partition.
    pub counts: RetrainCounts,
    /// Exercise version → group, over every ecosystem of the partition.
    group_of: HashMap<ExerciseUuid, ExerciseGroupUuid>,
    /// Group → the ecosystems of the partition holding a version of it.
    ecosystems_of_group: BTreeMap<ExerciseGroupUuid, BTreeSet<EcosystemUuid>>,
    /// True while the partition is rebuilt after an assignment: marks already covered by a
    /// published model only reset thresholds, and no fit is queued.
    pub catching_up: bool,
}

impl PartitionBook {
    /// An empty book of a partition being rebuilt after an assignment.
    pub fn catching_up() -> PartitionBook {
        PartitionBook {
            catching_up: true,
            ..PartitionBook::default()
        }
    }

    /// A `create_ecosystem` read from `<prefix>.ecosystem-events`.
    pub fn create_ecosystem(
        &mut self,
        create: &CreateEcosystem,
        accepted_at_micros: i64,
    ) -> Applied {
        let ecosystem = create.ecosystem_uuid;
        let book = self.ecosystems.entry(ecosystem).or_default();
        if book.content.is_some() {
            return Applied::DuplicateEcosystem;
        }
        let content = EcosystemContent::from_create(create);
        self.counts.groups_seen(content.questions.iter().copied());
        for (exercise, group) in &content.group_of {
            self.group_of.insert(*exercise, *group);
            self.ecosystems_of_group
                .entry(*group)
                .or_default()
                .insert(ecosystem);
        }
        book.content = Some(content);
        book.latest_accepted_micros = book.latest_accepted_micros.max(accepted_at_micros);
        let mut marked = BTreeSet::new();
        if book.published.is_none() {
            book.marked = Some(Trigger::Initial);
            marked.insert(ecosystem);
        }
        Applied::Marked(marked)
    }

    /// A `record_response` read from `<prefix>.sparfa-responses`, whose record ends at
    /// `next_offset` of this partition. Duplicates (same response_uuid) change nothing:
    /// the first-response minimum and the distinct-trial count are both idempotent.
    pub fn record_response(
        &mut self,
        response: &RecordResponse,
        accepted_at_micros: i64,
        next_offset: i64,
        growth: f64,
    ) -> Applied {
        let book = self.ecosystems.entry(response.ecosystem_uuid).or_default();
        book.latest_accepted_micros = book.latest_accepted_micros.max(accepted_at_micros);
        if response.is_real_response {
            let candidate = FirstResponse {
                sequence_number: response.sequence_number.0,
                correct: response.is_correct,
            };
            let mut changed = true;
            book.first
                .entry((response.student_uuid, response.exercise_uuid))
                .and_modify(|first| {
                    if candidate.sequence_number < first.sequence_number {
                        *first = candidate;
                    } else {
                        changed = false;
                    }
                })
                .or_insert(candidate);
            if changed {
                book.waiting += 1;
            }
        }
        let Some(group) = self.group_of.get(&response.exercise_uuid).copied() else {
            return Applied::Marked(BTreeSet::new());
        };
        if !self.counts.record_response(group, response.trial_uuid) {
            return Applied::Marked(BTreeSet::new());
        }
        let mut marked = BTreeSet::new();
        let holders: Vec<EcosystemUuid> = self
            .ecosystems_of_group
            .get(&group)
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default();
        for ecosystem in holders {
            let Some(book) = self.ecosystems.get_mut(&ecosystem) else {
                continue;
            };
            let covered = self.catching_up
                && book.published.is_some_and(|published| {
                    published
                        .responses_through
                        .is_some_and(|through| through >= next_offset)
                });
            if covered {
                // The published model already saw this response: its snapshot reset the
                // thresholds then; do the same, without a fit.
                if let Some(content) = &book.content {
                    self.counts
                        .retrain_snapshotted(content.questions.iter().copied(), growth);
                }
                continue;
            }
            if book.marked.is_none() {
                book.marked = Some(Trigger::ResponseGrowth);
            }
            marked.insert(ecosystem);
        }
        Applied::Marked(marked)
    }

    /// A model of `ecosystem` was read from `<prefix>.models` (or published by us).
    pub fn model_known(&mut self, ecosystem: EcosystemUuid, model: PublishedModel) {
        let book = self.ecosystems.entry(ecosystem).or_default();
        if book
            .published
            .is_none_or(|known| known.model_seq < model.model_seq)
        {
            book.published = Some(model);
        }
        if book.marked == Some(Trigger::Initial) {
            book.marked = None;
        }
    }

    /// The ecosystems whose fit may start now (end of a batch), in uuid order, each with
    /// the model_seq it will publish; they are then "fitting" until [`Self::fit_finished`].
    /// Nothing starts while catching up; growth fits wait while `retrain_enabled` is off.
    pub fn due_fits(&mut self, retrain_enabled: bool) -> Vec<(EcosystemUuid, Trigger, i64)> {
        if self.catching_up {
            return Vec::new();
        }
        let mut due = Vec::new();
        for (ecosystem, book) in &mut self.ecosystems {
            let Some(trigger) = book.marked else {
                continue;
            };
            if book.fitting.is_some() || book.content.is_none() {
                continue;
            }
            if trigger == Trigger::ResponseGrowth && !retrain_enabled {
                continue;
            }
            let model_seq = book.published.map_or(0, |p| p.model_seq + 1);
            book.marked = None;
            book.waiting = 0;
            book.fitting = Some(model_seq);
            due.push((*ecosystem, trigger, model_seq));
        }
        due
    }

    /// The fit of `ecosystem` at `model_seq` ended; on success its model is the latest.
    /// Marks made meanwhile stay, so they coalesce into one follow-up fit.
    pub fn fit_finished(
        &mut self,
        ecosystem: EcosystemUuid,
        model_seq: i64,
        published: Option<PublishedModel>,
    ) {
        let Some(book) = self.ecosystems.get_mut(&ecosystem) else {
            return;
        };
        if book.fitting == Some(model_seq) {
            book.fitting = None;
        }
        if let Some(model) = published {
            self.model_known(ecosystem, model);
        }
    }

    /// Ecosystems with content and no model yet.
    pub fn unready(&self) -> usize {
        self.ecosystems
            .values()
            .filter(|book| book.content.is_some() && book.published.is_none())
            .count()
    }

    /// First responses not yet in any snapshot, over every ecosystem.
    pub fn responses_waiting(&self) -> u64 {
        self.ecosystems.values().map(|book| book.waiting).sum()
    }

    /// The largest event-time age of an ecosystem's latest model: its newest response's
    /// `accepted_at` minus the model's `created_at` (0 when no ecosystem has a model).
    pub fn oldest_model_age_micros(&self) -> i64 {
        self.ecosystems
            .values()
            .filter_map(|book| {
                let model = book.published?;
                Some((book.latest_accepted_micros - model.created_at_micros).max(0))
            })
            .max()
            .unwrap_or(0)
    }

    /// Ecosystems marked and waiting for a fit.
    pub fn queued(&self) -> usize {
        self.ecosystems
            .values()
            .filter(|book| book.marked.is_some())
            .count()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use biglearn_domain::events::Timestamp;
    use biglearn_domain::events::{Book, BookContainer, Exercise, Pool};
    use biglearn_domain::ids::{CourseUuid, ResponseUuid, SequenceNumber, TrialUuid};
    use uuid::Uuid;

    pub(crate) fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    /// Ecosystem `eco` with pages 0x10.. holding groups 0x30.. (one version 0x20.. each);
    /// `pages` lists each page's groups by index.
    pub(crate) fn create(eco: u128, pages: &[&[u128]], groups: u128) -> CreateEcosystem {
        let root = BookContainerUuid(id(eco * 1000 + 1));
        let mut contents = vec![BookContainer {
            container_uuid: root,
            container_parent_uuid: BookContainerUuid(id(eco)),
            container_cnx_identity: None,
            pools: vec![],
        }];
        for (p, groups_of_page) in pages.iter().enumerate() {
            contents.push(BookContainer {
                container_uuid: BookContainerUuid(id(eco * 1000 + 0x10 + p as u128)),
                container_parent_uuid: root,
                container_cnx_identity: None,
                pools: vec![Pool {
                    use_for_clue: true,
                    use_for_personalized_for_assignment_types: vec![],
                    exercise_uuids: groups_of_page
                        .iter()
                        .map(|g| ExerciseUuid(id(0x20 + g)))
                        .collect(),
                }],
            });
        }
        CreateEcosystem {
            ecosystem_uuid: EcosystemUuid(id(eco)),
            sequence_number: SequenceNumber(0),
            book: Book {
                cnx_identity: None,
                contents,
            },
            exercises: (0..groups)
                .map(|g| Exercise {
                    exercise_uuid: ExerciseUuid(id(0x20 + g)),
                    group_uuid: ExerciseGroupUuid(id(0x30 + g)),
                    version: 1,
                    los: vec![],
                })
                .collect(),
            imported_at: Timestamp::from("2017-01-01T00:00:00Z"),
        }
    }

    pub(crate) fn response(
        eco: u128,
        n: u128,
        student: u128,
        group: u128,
        seq: i64,
        correct: bool,
    ) -> RecordResponse {
        RecordResponse {
            response_uuid: ResponseUuid(id(0x9000_0000 + n)),
            course_uuid: CourseUuid(id(0x5000)),
            sequence_number: SequenceNumber(seq),
            ecosystem_uuid: EcosystemUuid(id(eco)),
            trial_uuid: TrialUuid(id(0x7000_0000 + n)),
            student_uuid: StudentUuid(id(0x6000 + student)),
            exercise_uuid: ExerciseUuid(id(0x20 + group)),
            is_correct: correct,
            is_real_response: true,
            responded_at: Timestamp::from("2017-01-01T00:00:00Z"),
        }
    }

    fn marked(ecos: &[u128]) -> Applied {
        Applied::Marked(ecos.iter().map(|e| EcosystemUuid(id(*e))).collect())
    }

    #[test]
    fn content_indexes_leaf_pages_groups_and_hints() {
        let content = EcosystemContent::from_create(&create(1, &[&[0, 1], &[1]], 3));
        assert_eq!(
            content.concepts,
            vec![
                BookContainerUuid(id(1000 + 0x10)),
                BookContainerUuid(id(1000 + 0x11))
            ]
        );
        assert_eq!(content.questions.len(), 3);
        // Group 1 is in both pages: two hints; group 2 is in none.
        assert_eq!(content.hints, vec![(0, 0), (0, 1), (1, 1)]);
    }

    #[test]
    fn create_marks_an_initial_fit_once() {
        let mut book = PartitionBook::default();
        assert_eq!(
            book.create_ecosystem(&create(1, &[&[0]], 1), 5),
            marked(&[1])
        );
        assert_eq!(
            book.create_ecosystem(&create(1, &[&[0]], 1), 6),
            Applied::DuplicateEcosystem
        );
        assert_eq!(
            book.due_fits(false),
            vec![(EcosystemUuid(id(1)), Trigger::Initial, 0)],
            "the initial model is published even with retraining off"
        );
    }

    #[test]
    fn waiting_responses_and_model_age_follow_snapshots_and_models() {
        let mut book = PartitionBook::default();
        let eco = EcosystemUuid(id(1));
        book.create_ecosystem(&create(1, &[&[0, 1]], 2), 0);
        assert_eq!(
            (book.responses_waiting(), book.oldest_model_age_micros()),
            (0, 0)
        );
        book.record_response(&response(1, 1, 1, 0, 10, false), 5_000_000, 1, 0.1);
        book.record_response(&response(1, 1, 1, 0, 10, false), 5_000_000, 2, 0.1);
        book.record_response(&response(1, 2, 1, 0, 12, true), 6_000_000, 3, 0.1);
        book.record_response(&response(1, 3, 2, 1, 11, true), 7_000_000, 4, 0.1);
        assert_eq!(
            book.responses_waiting(),
            2,
            "duplicates and later answers do not wait"
        );
        let due = book.due_fits(true);
        assert_eq!(due.len(), 1, "{due:?}");
        assert_eq!(book.responses_waiting(), 0, "the snapshot took them");
        book.fit_finished(
            eco,
            due[0].2,
            Some(PublishedModel {
                created_at_micros: 7_000_000,
                model_seq: due[0].2,
                responses_through: Some(4),
            }),
        );
        assert_eq!(book.oldest_model_age_micros(), 0);
        book.record_response(&response(1, 4, 3, 1, 13, true), 9_500_000, 5, 0.1);
        assert_eq!(book.responses_waiting(), 1);
        assert_eq!(book.oldest_model_age_micros(), 2_500_000);
    }

    #[test]
    fn duplicates_and_later_responses_keep_the_first_response() {
        let mut book = PartitionBook::default();
        book.create_ecosystem(&create(1, &[&[0]], 1), 0);
        let key = (StudentUuid(id(0x6001)), ExerciseUuid(id(0x20)));
        let check = |book: &PartitionBook, expected: (i64, bool)| {
            let first = book.ecosystems[&EcosystemUuid(id(1))].first[&key];
            assert_eq!((first.sequence_number, first.correct), expected);
        };
        let first = response(1, 1, 1, 0, 10, false);
        book.record_response(&first, 0, 1, 0.1);
        let before = book.ecosystems.clone();
        book.record_response(&first, 0, 2, 0.1);
        assert_eq!(book.ecosystems, before, "a duplicate changes nothing");
        book.record_response(&response(1, 2, 1, 0, 12, true), 0, 3, 0.1);
        check(&book, (10, false));
        // A late-arriving earlier response replaces it.
        book.record_response(&response(1, 3, 1, 0, 4, true), 0, 4, 0.1);
        check(&book, (4, true));
        // Practice (not real) responses never enter Ω.
        let mut practice = response(1, 4, 1, 0, 1, false);
        practice.is_real_response = false;
        book.record_response(&practice, 0, 5, 0.1);
        check(&book, (4, true));
    }

    #[test]
    fn growth_marks_every_holder_and_fits_coalesce() {
        let mut book = PartitionBook::default();
        book.create_ecosystem(&create(1, &[&[0]], 1), 0);
        book.create_ecosystem(&create(2, &[&[0]], 1), 0);
        let e1 = EcosystemUuid(id(1));
        assert_eq!(book.due_fits(true).len(), 2);
        book.fit_finished(
            e1,
            0,
            Some(PublishedModel {
                created_at_micros: 0,
                model_seq: 0,
                responses_through: None,
            }),
        );
        // Threshold 1: the first response marks both ecosystems holding the group.
        assert_eq!(
            book.record_response(&response(1, 1, 1, 0, 1, true), 0, 1, 0.1),
            marked(&[1, 2])
        );
        // E2's initial fit still runs: its mark waits; E1 fits at seq 1.
        assert_eq!(book.due_fits(true), vec![(e1, Trigger::ResponseGrowth, 1)]);
        // Marks during the fit coalesce into one follow-up.
        for n in 2..5 {
            book.record_response(&response(1, n, n, 0, 1, true), 0, n as i64, 0.1);
        }
        assert_eq!(
            book.due_fits(true),
            vec![],
            "one fit per ecosystem at a time"
        );
        book.fit_finished(
            e1,
            1,
            Some(PublishedModel {
                created_at_micros: 0,
                model_seq: 1,
                responses_through: Some(1),
            }),
        );
        assert_eq!(book.due_fits(true), vec![(e1, Trigger::ResponseGrowth, 2)]);
        // A failed fit publishes nothing: the next one reuses its model_seq.
        book.fit_finished(e1, 2, None);
        book.record_response(&response(1, 9, 9, 0, 1, true), 0, 9, 0.1);
        assert_eq!(book.due_fits(true), vec![(e1, Trigger::ResponseGrowth, 2)]);
    }

    #[test]
    fn retraining_off_accumulates_marks() {
        let mut book = PartitionBook::default();
        book.create_ecosystem(&create(1, &[&[0]], 1), 0);
        let e1 = EcosystemUuid(id(1));
        book.due_fits(false);
        book.fit_finished(
            e1,
            0,
            Some(PublishedModel {
                created_at_micros: 0,
                model_seq: 0,
                responses_through: None,
            }),
        );
        book.record_response(&response(1, 1, 1, 0, 1, true), 0, 1, 0.1);
        assert_eq!(book.due_fits(false), vec![]);
        assert_eq!(book.queued(), 1);
        assert_eq!(book.due_fits(true), vec![(e1, Trigger::ResponseGrowth, 1)]);
    }

    #[test]
    fn model_seq_never_goes_below_a_published_one() {
        let mut book = PartitionBook::default();
        let e1 = EcosystemUuid(id(1));
        // Another instance published seq 4 before this one rebuilt the partition.
        book.model_known(
            e1,
            PublishedModel {
                created_at_micros: 0,
                model_seq: 4,
                responses_through: Some(3),
            },
        );
        book.model_known(
            e1,
            PublishedModel {
                created_at_micros: 0,
                model_seq: 2,
                responses_through: Some(1),
            },
        );
        assert_eq!(
            book.create_ecosystem(&create(1, &[&[0]], 1), 0),
            marked(&[]),
            "a published model makes the initial fit unnecessary"
        );
        book.record_response(&response(1, 1, 1, 0, 1, true), 0, 1, 0.1);
        assert_eq!(book.due_fits(true), vec![(e1, Trigger::ResponseGrowth, 5)]);
    }

    #[test]
    fn catching_up_skips_marks_a_published_model_covers() {
        let mut book = PartitionBook::catching_up();
        let e1 = EcosystemUuid(id(1));
        book.model_known(
            e1,
            PublishedModel {
                created_at_micros: 0,
                model_seq: 1,
                responses_through: Some(2),
            },
        );
        book.create_ecosystem(&create(1, &[&[0]], 1), 0);
        // Covered: the model was trained through offset 2.
        assert_eq!(
            book.record_response(&response(1, 1, 1, 0, 1, true), 0, 1, 0.1),
            marked(&[])
        );
        let g = ExerciseGroupUuid(id(0x30));
        assert_eq!(book.counts.group(g).map(|c| c.threshold), Some(2));
        book.record_response(&response(1, 2, 2, 0, 2, true), 0, 2, 0.1);
        // Not covered: waits for the end of the catch-up.
        assert_eq!(
            book.record_response(&response(1, 3, 3, 0, 3, true), 0, 3, 0.1),
            marked(&[1])
        );
        assert_eq!(book.due_fits(true), vec![]);
        book.catching_up = false;
        assert_eq!(book.due_fits(true), vec![(e1, Trigger::ResponseGrowth, 2)]);
    }
}
