//! The recompute loop (docs/design/scheduler.md §4, §12): per course with dirty targets,
//! compute in §4 order, publish what changed to `<prefix>.results` (one append per pass),
//! then remove the computed dirty rows. There is no minimum interval per course (S10): an
//! idle course is computed as soon as its batch is applied, and work coalesces only when it
//! queues up (targets marked again while a pass runs are computed once, by the next pass).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use biglearn_domain::events::StreamKind;
use biglearn_domain::ids::{CourseUuid, EcosystemUuid};
use biglearn_domain::state::{Effect, StateView};
use biglearn_events::{result_record, ResultKind, ResultRecord};
use biglearn_projector::consumer::ConsumerProgress;
use biglearn_projector::overlay::Overlay;
use biglearn_projector::state::{SledState, StateProjection};
use biglearn_scheduler::{
    enter_past_due_history, publish_decision, PublishDecision, Scheduler, Target,
};
use biglearn_stream::{OutgoingRecord, SharedStreamStore};
use biglearn_telemetry::Metrics;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use tokio::sync::watch;

use crate::hook::Shared;
use crate::ownership::{OwnedCourses, OwnershipSource};
use crate::published::{EventLogPublished, PublishedVersions};
use crate::rows::{
    dirty_key, in_tree, parse_dirty_key, parse_timer_key, parse_waiting_key,
    parse_whole_course_key, timers_until, waiting_key, whole_course_key, DirtyMark, TimerAction,
    DIRTY, OWNED_PARTITIONS, TIMER, WAITING, WHOLE_COURSE,
};
use crate::RecomputeError;

/// A course whose computation failed is retried after this interval, not at every wake-up
/// (a poison target must not take the loop's time from the other courses).
pub const FAILED_COURSE_RETRY: Duration = Duration::from_secs(1);
/// At most this many whole-course marks (a first model, a settings change) are expanded
/// into targets per pass: a change touching every course is worked off at a bounded rate
/// while response-triggered work goes on between passes (docs/design/scheduler.md S9).
pub const WHOLE_COURSES_PER_PASS: usize = 64;
/// How often the loop looks for work without being woken (timers, courses to retry).
pub const RECOMPUTE_TICK: Duration = Duration::from_millis(200);
/// Once a pass has spent this long computing courses it computes no further course: it
/// publishes what it has and the next pass starts at once, with the courses whose events
/// are waiting first ([`in_turn`]). A response arriving while a first model or a settings
/// change recomputes many courses waits for at most this much of that work.
pub const PASS_BUDGET: Duration = Duration::from_millis(50);

/// After a wake-up, how long to let the waking batch commit before the pass.
const WAKE_SETTLE: Duration = Duration::from_millis(5);

/// The active state projection; asked again every pass (it changes after a rebuild).
pub type ProjectionSource = Arc<dyn Fn() -> StateProjection + Send + Sync>;

/// How the loop runs.
#[derive(Clone, Debug)]
pub struct RecomputeConfig {
    /// `<prefix>.results`.
    pub results_topic: String,
    /// A course whose computation or publication failed waits this long before it is
    /// tried again ([`FAILED_COURSE_RETRY`]).
    pub failed_course_retry: Duration,
    /// Pass interval when not woken ([`RECOMPUTE_TICK`]).
    pub tick: Duration,
    /// Computing time after which a pass stops taking courses ([`PASS_BUDGET`]).
    pub pass_budget: Duration,
    pub metrics: Metrics,
}

/// The recompute loop's inputs and bookkeeping.
pub struct Recompute {
    pub config: RecomputeConfig,
    pub shared: Shared,
    pub projection: ProjectionSource,
    pub published: EventLogPublished,
    pub versions: PublishedVersions,
    pub store: SharedStreamStore,
    /// The live state consumers' progress: nothing is computed until all are caught up
    /// (docs/design/scheduler.md §12 replay mode). Empty means always caught up.
    pub progress: Vec<watch::Receiver<ConsumerProgress>>,
    /// Wall-clock micros of each course's last failed computation or publication.
    failed_at: HashMap<CourseUuid, i64>,
    /// Targets whose computation needs an ecosystem not created yet: skipped, but kept
    /// dirty, until it exists (docs/design/scheduler.md §4).
    deferred: HashMap<(CourseUuid, Target), EcosystemUuid>,
}

/// What one pass did (for tests and logs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    pub caught_up: bool,
    /// Courses computed.
    pub courses: usize,
    pub published: usize,
    pub skipped_unchanged: usize,
    pub stale_dropped: usize,
    /// Dirty targets left after the pass.
    pub dirty_left: usize,
    pub timers_fired: usize,
    /// Courses marked dirty because a settings change changed their resolved settings.
    pub settings_marked: usize,
    /// Dirty courses left for the next pass because this one spent its budget.
    pub courses_deferred: usize,
    /// Dirty courses left alone because another scheduler process owns them.
    pub courses_not_owned: usize,
    /// Courses marked whole-course dirty because their partitions were gained.
    pub courses_gained: usize,
}

fn kind_label(target: &Target) -> &'static [&'static str] {
    match target {
        Target::StudentClue { .. } => &["student_clue"],
        Target::TeacherClue { .. } => &["teacher_clue"],
        Target::Assignment(_) => &["assignment_pes", "assignment_spes"],
        Target::WorstAreas(_) => &["practice_worst_areas"],
    }
}

/// The `algorithm` label of a result: the built-in algorithm, without an SPE's history
/// prefix; anything else is `external`.
fn algorithm_label(name: &str) -> &'static str {
    if name.ends_with("biglearn_sparfa") {
        "biglearn_sparfa"
    } else if name.ends_with("local_query") {
        "local_query"
    } else {
        "external"
    }
}

fn sled_error(doing: &'static str) -> impl Fn(sled::Error) -> RecomputeError {
    move |source| RecomputeError::Sled { doing, source }
}

#[derive(Clone)]
struct DirtyRow {
    target: Target,
    key: Vec<u8>,
    value: Vec<u8>,
    mark: Option<DirtyMark>,
}

impl Recompute {
    pub fn new(
        config: RecomputeConfig,
        shared: Shared,
        projection: ProjectionSource,
        published: EventLogPublished,
        versions: PublishedVersions,
        store: SharedStreamStore,
        progress: Vec<watch::Receiver<ConsumerProgress>>,
    ) -> Recompute {
        Recompute {
            config,
            shared,
            projection,
            published,
            versions,
            store,
            progress,
            failed_at: HashMap::new(),
            deferred: HashMap::new(),
        }
    }

    /// Computes (and its batch hook marks) only the courses `ownership` says this process
    /// owns (scale-out over the consumer group `<prefix>.scheduler`, [`crate::ownership`]).
    /// Set once; later calls change nothing.
    pub fn set_ownership(&self, ownership: OwnershipSource) {
        let _ = self.shared.ownership.set(ownership);
    }

    fn caught_up(&self) -> bool {
        self.progress
            .iter()
            .all(|progress| progress.borrow().caught_up)
    }

    fn scheduler<'a>(&'a self, view: &'a dyn StateView, course: CourseUuid) -> Scheduler<'a> {
        Scheduler {
            view,
            published: &self.published,
            models: self.shared.models.as_ref(),
            settings: self.shared.settings_of(course),
        }
    }

    /// One pass: release waits, fire due timers, compute every course with dirty targets
    /// (but those whose last try failed less than `failed_course_retry` ago), and report
    /// the backlog.
    pub async fn pass(&mut self) -> Result<PassReport, RecomputeError> {
        let projection = (self.projection)();
        let tree = projection.tree().clone();
        let owned = self.shared.owned();
        if let OwnedCourses::Partitions { owned, .. } = &owned {
            self.config.metrics.scheduler_partitions_owned(owned.len());
        }
        let mut report = PassReport {
            caught_up: self.caught_up(),
            ..PassReport::default()
        };
        self.shared
            .caught_up
            .store(report.caught_up, std::sync::atomic::Ordering::Release);
        if report.caught_up {
            let wall = (self.shared.wall)();
            let now = self.shared.clock.advance_with_wall(wall);
            let look = self.shared.floors.look(
                &tree,
                &self.shared.settings,
                || {
                    let courses =
                        projection
                            .courses()
                            .map_err(|source| RecomputeError::Projection {
                                doing: "listing the courses for a settings change",
                                source,
                            })?;
                    Ok(courses.into_iter().map(CourseUuid).collect())
                },
                DirtyMark {
                    dirty_at_micros: wall,
                    stamp: 0,
                },
            )?;
            report.settings_marked = look.courses;
            report.courses_gained = self.mark_gained_courses(&projection, &tree, &owned, wall)?;
            self.expand_whole_courses(&projection, &tree, &owned, now)?;
            self.release_waits(&projection, &tree)?;
            report.timers_fired = self.fire_timers(&projection, &tree, now)?;
        }
        let mut dirty = self.dirty_rows(&tree)?;
        dirty.retain(|course, _| owned.owns(*course));
        if report.caught_up {
            let now = self.shared.clock.now();
            let wall = (self.shared.wall)();
            let mut prepared = Vec::new();
            let started = Instant::now();
            let mut n_tried = 0;
            for (course, rows) in in_turn(&dirty) {
                // At least one course per pass, whatever the budget.
                if n_tried > 0 && started.elapsed() >= self.config.pass_budget {
                    report.courses_deferred += 1;
                    continue;
                }
                let due = self.failed_at.get(course).is_none_or(|failed| {
                    wall.saturating_sub(*failed)
                        >= self.config.failed_course_retry.as_micros() as i64
                });
                if !due {
                    continue;
                }
                n_tried += 1;
                match self.prepare_course(&projection, &tree, *course, rows, now) {
                    Ok(Some(course)) => prepared.push(course),
                    Ok(None) => {}
                    Err(error) => {
                        tracing::error!(%error, course = %course.0, "A course's recomputation failed; its targets stay dirty and are retried.");
                        self.failed_at.insert(*course, wall);
                    }
                }
                // Computation is CPU work on a runtime worker: let the consumers and the
                // HTTP handlers in between courses.
                tokio::task::yield_now().await;
            }
            match self.publish_prepared(&tree, &mut prepared).await {
                Ok(()) => {
                    for course in &prepared {
                        report.courses += 1;
                        report.published += course.outcome.published;
                        report.skipped_unchanged += course.outcome.skipped_unchanged;
                        report.stale_dropped += course.outcome.stale_dropped;
                        self.failed_at.remove(&course.course);
                    }
                }
                Err(error) => {
                    tracing::error!(%error, courses = prepared.len(), "Publishing a pass's results failed; their targets stay dirty and are retried.");
                    for course in &prepared {
                        self.failed_at.insert(course.course, wall);
                    }
                }
            }
        }
        // The backlog after the pass, every kind reported (0 included); another process's
        // courses are its backlog.
        let mut left = self.dirty_rows(&tree)?;
        let n_dirty = left.len();
        left.retain(|course, _| owned.owns(*course));
        report.courses_not_owned = n_dirty - left.len();
        let mut counts: BTreeMap<&str, i64> = biglearn_telemetry::known_labels::RESULT_KINDS
            .iter()
            .map(|kind| (*kind, 0))
            .collect();
        for rows in left.values() {
            report.dirty_left += rows.len();
            for row in rows {
                for kind in kind_label(&row.target) {
                    *counts.entry(kind).or_default() += 1;
                }
            }
        }
        for (kind, n) in counts {
            self.config.metrics.dirty_targets_observed(kind, n);
        }
        Ok(report)
    }

    fn dirty_rows(
        &self,
        tree: &sled::Tree,
    ) -> Result<BTreeMap<CourseUuid, Vec<DirtyRow>>, RecomputeError> {
        let mut by_course: BTreeMap<CourseUuid, Vec<DirtyRow>> = BTreeMap::new();
        for row in tree.scan_prefix(in_tree(&[DIRTY])) {
            let (key, value) = row.map_err(sled_error("scanning dirty targets"))?;
            let Some((course, target)) = parse_dirty_key(&key[1..]) else {
                tracing::warn!("An unreadable dirty-target row was skipped.");
                continue;
            };
            by_course.entry(course).or_default().push(DirtyRow {
                target,
                key: key.to_vec(),
                mark: DirtyMark::decode(&value),
                value: value.to_vec(),
            });
        }
        Ok(by_course)
    }

    fn mark_dirty(&self, batch: &mut sled::Batch, course: CourseUuid, targets: &[Target]) {
        let mark = DirtyMark {
            dirty_at_micros: (self.shared.wall)(),
            // Stamps from the loop are 0: a hook write always differs from them.
            stamp: 0,
        };
        for target in targets {
            batch.insert(in_tree(&dirty_key(course, target)), mark.encode());
        }
    }

    /// A process that gained course partitions (a rebalance of `<prefix>.scheduler`, or its
    /// first assignment) marks their courses whole-course dirty: the previous owner's
    /// recalculation timers and the results it computed last are not known here, and a
    /// whole-course computation re-derives both (unchanged results are not republished).
    /// The owned partitions are stored in the tree, so that a restart owning the same ones
    /// gains nothing. Returns how many courses were marked.
    fn mark_gained_courses(
        &self,
        projection: &StateProjection,
        tree: &sled::Tree,
        owned: &OwnedCourses,
        wall: i64,
    ) -> Result<usize, RecomputeError> {
        let OwnedCourses::Partitions {
            generation,
            owned: partitions,
            partitions: n_partitions,
        } = owned
        else {
            return Ok(0);
        };
        if *generation == 0 {
            return Ok(0);
        }
        let key = in_tree(&[OWNED_PARTITIONS]);
        let before = tree
            .get(&key)
            .map_err(sled_error("reading the owned partitions"))?
            .and_then(|bytes| OwnedCourses::decode_partitions(&bytes));
        if before.as_ref() == Some(partitions) {
            return Ok(0);
        }
        let gained = owned.gained_since(before.as_ref());
        let mut batch = sled::Batch::default();
        let mut marked = 0;
        if !gained.is_empty() {
            let courses = projection
                .courses()
                .map_err(|source| RecomputeError::Projection {
                    doing: "listing the courses of gained partitions",
                    source,
                })?;
            let mark = DirtyMark {
                dirty_at_micros: wall,
                stamp: 0,
            };
            for course in courses.into_iter().map(CourseUuid) {
                if gained.contains(&OwnedCourses::partition_of(course, *n_partitions)) {
                    batch.insert(in_tree(&whole_course_key(course)), mark.encode());
                    marked += 1;
                }
            }
        }
        batch.insert(key, OwnedCourses::encode_partitions(partitions));
        tree.apply_batch(batch)
            .map_err(sled_error("marking the courses of gained partitions"))?;
        if marked > 0 {
            tracing::info!(
                courses = marked,
                partitions = ?gained,
                "Course partitions gained: their courses are recomputed whole."
            );
        }
        Ok(marked)
    }

    /// Courses marked dirty as a whole while catching up get every target dirty: what an
    /// ecosystem "switch" to the current ecosystem dirties (every CLUE target, and the
    /// rankings, PEs, SPEs and worst areas of every active student). Another process's
    /// courses stay marked for it.
    fn expand_whole_courses(
        &self,
        projection: &StateProjection,
        tree: &sled::Tree,
        owned: &OwnedCourses,
        now: i64,
    ) -> Result<(), RecomputeError> {
        let rows = tree
            .scan_prefix(in_tree(&[WHOLE_COURSE]))
            .filter_map(|row| match row {
                Ok((key, value)) => {
                    let course = parse_whole_course_key(&key[1..])?;
                    owned.owns(course).then_some(Ok((key, value, course)))
                }
                Err(error) => Some(Err(error)),
            })
            .take(WHOLE_COURSES_PER_PASS);
        for row in rows {
            let (key, value, course) = row.map_err(sled_error("scanning whole-course rows"))?;
            let triggered = projection.with_view(|view| -> Result<_, RecomputeError> {
                let Some(state) = view.course(course)? else {
                    return Ok(None);
                };
                let everything = Effect::EcosystemSwitched {
                    course,
                    from: state.current_ecosystem,
                    to: state.current_ecosystem,
                };
                Ok(Some(
                    self.scheduler(view, course).targets_for(&everything, now)?,
                ))
            })?;
            let mut batch = sled::Batch::default();
            if let Some(triggered) = triggered {
                self.mark_dirty(&mut batch, course, &triggered.targets);
                for ecosystem in triggered.waits_for {
                    batch.insert(in_tree(&waiting_key(ecosystem, course)), Vec::new());
                }
            }
            tree.apply_batch(batch)
                .map_err(sled_error("expanding whole-course rows"))?;
            // Unless a batch marked the course again meanwhile.
            remove_unchanged(tree, &[(key.to_vec(), value.to_vec())])?;
        }
        Ok(())
    }

    /// Courses waiting for an ecosystem that now exists get their targets back
    /// (docs/design/scheduler.md §4).
    fn release_waits(
        &mut self,
        projection: &StateProjection,
        tree: &sled::Tree,
    ) -> Result<(), RecomputeError> {
        let mut batch = sled::Batch::default();
        let mut any = false;
        for row in tree.scan_prefix(in_tree(&[WAITING])) {
            let (key, _) = row.map_err(sled_error("scanning waiting courses"))?;
            let Some((ecosystem, course)) = parse_waiting_key(&key[1..]) else {
                continue;
            };
            let released = projection.with_view(|view| -> Result<_, RecomputeError> {
                if view.ecosystem(ecosystem)?.is_none() {
                    return Ok(None);
                }
                Ok(Some(
                    self.scheduler(view, course)
                        .targets_for_ecosystem(course, ecosystem)?,
                ))
            })?;
            if let Some(triggered) = released {
                self.mark_dirty(&mut batch, course, &triggered.targets);
                batch.remove(key.to_vec());
                any = true;
            }
        }
        self.deferred.retain(|_, ecosystem| {
            projection.with_view(|view| matches!(view.ecosystem(*ecosystem), Ok(None)))
        });
        if any {
            tree.apply_batch(batch)
                .map_err(sled_error("releasing waiting courses"))?;
        }
        Ok(())
    }

    /// Timers at or before `now` re-dirty their targets; returns how many fired.
    fn fire_timers(
        &self,
        projection: &StateProjection,
        tree: &sled::Tree,
        now: i64,
    ) -> Result<usize, RecomputeError> {
        let mut batch = sled::Batch::default();
        let mut fired = 0;
        for row in tree.range(in_tree(&[TIMER])..in_tree(&timers_until(now))) {
            let (key, _) = row.map_err(sled_error("scanning timers"))?;
            batch.remove(key.to_vec());
            fired += 1;
            let Some((_, course, action)) = parse_timer_key(&key[1..]) else {
                continue;
            };
            let targets = match action {
                TimerAction::Target(target) => vec![target],
                TimerAction::Assignment(timer) => projection.with_view(|view| {
                    self.scheduler(view, course)
                        .targets_for_timer(course, &timer)
                        .map(|triggered| triggered.targets)
                })?,
            };
            self.mark_dirty(&mut batch, course, &targets);
        }
        if fired > 0 {
            tree.apply_batch(batch)
                .map_err(sled_error("firing timers"))?;
        }
        Ok(fired)
    }

    /// Computes one course's dirty targets (those not deferred) and decides what to
    /// publish; `None` if there was nothing to compute. Nothing is written yet.
    fn prepare_course(
        &mut self,
        projection: &StateProjection,
        tree: &sled::Tree,
        course: CourseUuid,
        rows: &[DirtyRow],
        now: i64,
    ) -> Result<Option<PreparedCourse>, RecomputeError> {
        let rows: Vec<DirtyRow> = rows
            .iter()
            .filter(|row| !self.deferred.contains_key(&(course, row.target)))
            .cloned()
            .collect();
        if rows.is_empty() {
            return Ok(None);
        }
        let targets: Vec<Target> = rows.iter().map(|row| row.target).collect();
        let input_seq = projection
            .aggregate(StreamKind::Course, course.0)
            .map_err(|source| RecomputeError::Projection {
                doing: "reading the course's sequence",
                source,
            })?
            .next_seq
            .0
            - 1;
        let started = Instant::now();
        // The past-due history rule (docs/design/scheduler.md §10.1) is a function of the clock: it
        // is applied to a batch that is never committed, so the projection's state stays a function
        // of the log alone (its hash is replay-stable).
        let computed = {
            let mut overlay = Overlay::new(tree);
            let mut state = SledState::new(&mut overlay);
            enter_past_due_history(&mut state, course, now)?;
            self.scheduler(&state, course)
                .compute(course, &targets, now, input_seq)?
        };
        let elapsed = started.elapsed();
        let per_result = elapsed / computed.records.len().max(1) as u32;

        let mut prepared = PreparedCourse {
            course,
            rows,
            to_publish: Vec::new(),
            outcome: CourseOutcome::default(),
            deferred: computed.deferred,
            recalculate_at: computed.recalculate_at,
        };
        for record in computed.records {
            self.config
                .metrics
                .recomputed(record.kind.as_str(), per_result);
            let stored = self.versions.stored(&record.key(), &self.published)?;
            match publish_decision(&record, stored) {
                PublishDecision::Publish => prepared.to_publish.push(record),
                PublishDecision::SkipUnchanged => prepared.outcome.skipped_unchanged += 1,
                PublishDecision::SkipOlder => {
                    prepared.outcome.stale_dropped += 1;
                    self.config
                        .metrics
                        .stale_result_dropped(record.kind.as_str());
                }
            }
        }
        Ok(Some(prepared))
    }

    /// Publishes the results of every prepared course in one append (one durable write
    /// instead of one per course: a pass's latency is its computation plus one commit),
    /// then records versions, timers and the removal of the computed dirty rows.
    async fn publish_prepared(
        &mut self,
        tree: &sled::Tree,
        prepared: &mut [PreparedCourse],
    ) -> Result<(), RecomputeError> {
        let to_publish: Vec<&ResultRecord> = prepared
            .iter()
            .flat_map(|course| course.to_publish.iter())
            .collect();
        if !to_publish.is_empty() {
            let outgoing: Vec<OutgoingRecord> = to_publish
                .iter()
                .map(|record| {
                    let encoded = result_record(record);
                    OutgoingRecord {
                        key: encoded.key,
                        value: encoded.value,
                        headers: encoded.headers,
                    }
                })
                .collect();
            let outcomes = self
                .store
                .append(&self.config.results_topic, outgoing)
                .await
                .map_err(|source| RecomputeError::Stream {
                    doing: "publishing results",
                    source,
                })?;
            if let Some(Err(error)) = outcomes.iter().find(|outcome| outcome.is_err()) {
                return Err(RecomputeError::NotDelivered {
                    topic: self.config.results_topic.clone(),
                    detail: error.to_string(),
                });
            }
            self.versions
                .record(&to_publish)
                .map_err(sled_error("recording published versions"))?;
        }
        let wall = (self.shared.wall)();
        for course in prepared.iter_mut() {
            let clue_dirty_at: HashMap<(uuid::Uuid, uuid::Uuid), i64> = course
                .rows
                .iter()
                .filter_map(|row| match (row.target, row.mark) {
                    (
                        Target::StudentClue {
                            book_container,
                            student,
                            ..
                        },
                        Some(mark),
                    ) => Some(((student.0, book_container.0), mark.dirty_at_micros)),
                    _ => None,
                })
                .collect();
            for record in &course.to_publish {
                self.config.metrics.result_published(
                    record.kind.as_str(),
                    algorithm_label(&record.algorithm_name),
                );
                if record.kind == ResultKind::StudentClue {
                    if let (Some(student), Some(bc)) =
                        (record.student_uuid, record.book_container_uuid)
                    {
                        if let Some(dirty_at) = clue_dirty_at.get(&(student, bc)) {
                            let latency =
                                Duration::from_micros(wall.saturating_sub(*dirty_at).max(0) as u64);
                            self.config.metrics.clue_published_after(latency);
                        }
                    }
                }
            }
            course.outcome.published = course.to_publish.len();

            // Deferred targets stay dirty until their ecosystem exists; the rest are done,
            // unless a batch re-dirtied them meanwhile (their stamp changed).
            for (target, ecosystem) in &course.deferred {
                self.deferred.insert((course.course, *target), *ecosystem);
            }
            let mut timers = sled::Batch::default();
            for (target, at) in &course.recalculate_at {
                timers.insert(
                    in_tree(&crate::rows::timer_key(
                        *at,
                        course.course,
                        &TimerAction::Target(*target),
                    )),
                    Vec::new(),
                );
            }
            tree.apply_batch(timers)
                .map_err(sled_error("writing recalculation timers"))?;
            let done: Vec<(Vec<u8>, Vec<u8>)> = course
                .rows
                .iter()
                .filter(|row| !self.deferred.contains_key(&(course.course, row.target)))
                .map(|row| (row.key.clone(), row.value.clone()))
                .collect();
            remove_unchanged(tree, &done)?;
        }
        Ok(())
    }
}

/// One course computed in a pass, waiting for the pass's publication.
struct PreparedCourse {
    course: CourseUuid,
    rows: Vec<DirtyRow>,
    to_publish: Vec<ResultRecord>,
    outcome: CourseOutcome,
    deferred: Vec<(Target, EcosystemUuid)>,
    recalculate_at: Vec<(Target, i64)>,
}

/// The order a pass computes dirty courses in: first the courses a batch of events marked
/// (a student is waiting for the answer), then those only the loop marked (a first model,
/// a settings change, timers); within each, the oldest mark first, so that no course waits
/// behind courses marked after it. Marks written by the loop carry stamp 0, the batch
/// hook's never do.
fn in_turn(dirty: &BTreeMap<CourseUuid, Vec<DirtyRow>>) -> Vec<(&CourseUuid, &Vec<DirtyRow>)> {
    let turn = |rows: &Vec<DirtyRow>| {
        let marks = rows.iter().filter_map(|row| row.mark);
        match marks
            .clone()
            .filter(|mark| mark.stamp != 0)
            .map(|mark| mark.dirty_at_micros)
            .min()
        {
            Some(oldest) => (0, oldest),
            None => (
                1,
                marks
                    .map(|mark| mark.dirty_at_micros)
                    .min()
                    .unwrap_or(i64::MIN),
            ),
        }
    };
    let mut courses: Vec<_> = dirty.iter().collect();
    courses.sort_by_cached_key(|(course, rows)| (turn(rows), **course));
    courses
}

/// Removes dirty rows whose value is still the one read (one sled transaction): a row a
/// batch re-dirtied meanwhile carries a new stamp and stays. Returns how many were removed.
pub fn remove_unchanged(
    tree: &sled::Tree,
    rows: &[(Vec<u8>, Vec<u8>)],
) -> Result<usize, RecomputeError> {
    tree.transaction(|tx| {
        let mut removed = 0;
        for (key, value) in rows {
            if tx.get(key)?.as_deref() == Some(value.as_slice()) {
                tx.remove(key.as_slice())?;
                removed += 1;
            }
        }
        Ok::<usize, ConflictableTransactionError<sled::Error>>(removed)
    })
    .map_err(|error| match error {
        TransactionError::Abort(source) | TransactionError::Storage(source) => {
            RecomputeError::Sled {
                doing: "removing computed dirty targets",
                source,
            }
        }
    })
}

#[derive(Default)]
struct CourseOutcome {
    published: usize,
    skipped_unchanged: usize,
    stale_dropped: usize,
}

/// Runs passes until `shutdown` turns true: after each wake-up from the batch hook, and
/// at least every `config.tick`. A failing pass is logged and retried; it never stops the
/// loop (a poison target stays dirty, the rest of the course's work goes on).
pub async fn run_recompute(mut recompute: Recompute, mut shutdown: watch::Receiver<bool>) {
    let wake = recompute.shared.wake.clone();
    let tick = recompute.config.tick;
    tracing::info!("The recompute loop started.");
    while !*shutdown.borrow() {
        match recompute.pass().await {
            Ok(report) if report.courses_deferred > 0 => {
                tracing::debug!(?report, "Recompute pass; courses left for the next one.");
                // Work is queued: the next pass at once, after the consumers' turn.
                tokio::task::yield_now().await;
                continue;
            }
            Ok(report)
                if report.courses > 0 || report.timers_fired > 0 || report.settings_marked > 0 =>
            {
                tracing::debug!(?report, "Recompute pass.");
            }
            Ok(_) => {}
            Err(error) => tracing::error!(%error, "A recompute pass failed; retrying."),
        }
        tokio::select! {
            _ = shutdown.changed() => {}
            // The hook wakes the loop just before its batch commits.
            _ = wake.notified() => tokio::time::sleep(WAKE_SETTLE).await,
            _ = tokio::time::sleep(tick) => {}
        }
    }
    tracing::info!("The recompute loop stopped.");
}

#[cfg(test)]
mod turn_tests {
    use super::*;
    use biglearn_domain::ids::AssignmentUuid;
    use uuid::Uuid;

    fn row(dirty_at_micros: i64, stamp: u64) -> DirtyRow {
        DirtyRow {
            target: Target::Assignment(AssignmentUuid(Uuid::from_u128(1))),
            key: Vec::new(),
            value: Vec::new(),
            mark: Some(DirtyMark {
                dirty_at_micros,
                stamp,
            }),
        }
    }

    fn course(n: u128) -> CourseUuid {
        CourseUuid(Uuid::from_u128(n))
    }

    #[test]
    fn courses_with_waiting_events_go_first_then_the_oldest_mark() {
        let dirty: BTreeMap<CourseUuid, Vec<DirtyRow>> = [
            // A first model's whole-course work, marked long ago by the loop.
            (course(1), vec![row(10, 0), row(11, 0)]),
            (course(2), vec![row(5, 0)]),
            // A response, marked by the batch hook after the loop's marks.
            (course(3), vec![row(300, 7)]),
            // A course with both: its event mark decides.
            (course(4), vec![row(1, 0), row(200, 9)]),
            // Unreadable marks sort first within the loop's work (they are rare and cheap).
            (
                course(5),
                vec![DirtyRow {
                    mark: None,
                    ..row(0, 0)
                }],
            ),
        ]
        .into_iter()
        .collect();
        let order: Vec<CourseUuid> = in_turn(&dirty).into_iter().map(|(c, _)| *c).collect();
        assert_eq!(
            order,
            vec![course(4), course(3), course(5), course(2), course(1)]
        );
    }
}
