//! [`DirtyTargets`]: the batch hook that writes the scheduler's dirty targets, waits and
//! timers in the same sled batch as the events that caused them (docs/design/scheduler.md §4).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use biglearn_domain::ids::{CourseUuid, EcosystemUuid};
use biglearn_domain::state::{Effect, StateError, StateView};
use biglearn_projector::state::{BatchHook, SledState};
use biglearn_scheduler::{ModelView, PublishedView, Scheduler, Target, Timer, TimerKind};
use tokio::sync::Notify;

use crate::clock::{LogicalClock, WallClock};
use crate::ownership::{OwnedCourses, OwnershipSource};
use crate::rows::{dirty_key, timer_key, waiting_key, whole_course_key, DirtyMark, TimerAction};
use crate::settings_watch::{SettingsFloors, SettingsSource};
use biglearn_scheduler::SchedulerSettings;

/// What every part of the shell shares: the clock, the views the core reads besides the
/// state, the settings, and the loop's wake-up.
#[derive(Clone)]
pub struct Shared {
    pub clock: LogicalClock,
    pub wall: WallClock,
    pub published: Arc<dyn PublishedView + Send + Sync>,
    pub models: Arc<dyn ModelView + Send + Sync>,
    pub settings: SettingsSource,
    /// Each course's settings floor (settings that act at once, S9).
    pub floors: SettingsFloors,
    /// Notified after every batch that dirtied something.
    pub wake: Arc<Notify>,
    /// Whether the live state consumers are caught up (set by the loop every pass). While
    /// they are not, the hook marks whole courses dirty instead of deriving targets.
    pub caught_up: Arc<AtomicBool>,
    /// Which courses this process computes, once the node has joined `<prefix>.scheduler`
    /// (unset: every course; [`crate::ownership`]).
    pub ownership: Arc<std::sync::OnceLock<OwnershipSource>>,
}

impl Shared {
    /// The courses this process computes now.
    pub fn owned(&self) -> OwnedCourses {
        self.ownership
            .get()
            .map_or(OwnedCourses::All, |source| source())
    }

    /// `course`'s scheduler settings at its effective settings version.
    pub fn settings_of(&self, course: CourseUuid) -> SchedulerSettings {
        (self.settings.resolve)(course, self.floors.floor(course))
    }
}

/// The batch hook of the state projection.
pub struct DirtyTargets {
    shared: Shared,
    /// Unique per dirty-row write (seeded from the wall clock, so unique across restarts).
    stamp: AtomicU64,
}

/// Everything one batch makes dirty, before it is written.
#[derive(Default)]
struct Marks {
    /// Courses whose every target is dirty (while catching up).
    courses: BTreeSet<CourseUuid>,
    targets: BTreeSet<(CourseUuid, Target)>,
    waits: BTreeSet<(EcosystemUuid, CourseUuid)>,
    timers: BTreeSet<(CourseUuid, Timer)>,
}

fn effect_course(effect: &Effect) -> Option<CourseUuid> {
    match effect {
        Effect::CourseCreated { .. } | Effect::EcosystemCreated { .. } => None,
        Effect::EcosystemSwitched { course, .. }
        | Effect::RosterUpdated { course, .. }
        | Effect::ExclusionsChanged { course }
        | Effect::AssignmentChanged { course, .. }
        | Effect::ResponseRecorded { course, .. }
        | Effect::HistoryEntered { course, .. } => Some(*course),
    }
}

impl DirtyTargets {
    pub fn new(shared: Shared) -> DirtyTargets {
        let seed = (shared.wall)().max(0) as u64;
        DirtyTargets {
            shared,
            stamp: AtomicU64::new(seed),
        }
    }

    /// An ecosystem's model arrived (docs/design/scheduler.md §4): the first one (`model_seq` 0)
    /// makes every course on that ecosystem dirty as a whole, so that its `biglearn_sparfa`
    /// targets computed from the prior (or not at all: CLUEs) are computed with the model;
    /// unchanged results are not republished. Later models dirty nothing. Returns the
    /// number of courses marked.
    pub fn model_arrived(
        &self,
        tree: &sled::Tree,
        ecosystem: EcosystemUuid,
        model_seq: i64,
    ) -> Result<usize, StateError> {
        if model_seq != 0 {
            return Ok(0);
        }
        let courses = {
            let mut overlay = biglearn_projector::overlay::Overlay::new(tree);
            SledState::new(&mut overlay).courses_on_ecosystem(ecosystem)?
        };
        let dirty_at_micros = (self.shared.wall)();
        let mut batch = sled::Batch::default();
        for course in &courses {
            let mark = DirtyMark {
                dirty_at_micros,
                stamp: self.stamp.fetch_add(1, Ordering::Relaxed),
            };
            batch.insert(
                crate::rows::in_tree(&whole_course_key(*course)),
                mark.encode(),
            );
        }
        tree.apply_batch(batch).map_err(|error| {
            StateError(format!("marking the courses of a new model dirty: {error}"))
        })?;
        if !courses.is_empty() {
            self.shared.wake.notify_one();
        }
        Ok(courses.len())
    }

    fn collect(&self, view: &dyn StateView, effects: &[Effect]) -> Result<Marks, StateError> {
        let now = self.shared.clock.now();
        let catching_up = !self.shared.caught_up.load(Ordering::Acquire);
        // Another scheduler's courses get no targets here: whoever gains them computes them
        // whole. Until a group has assigned anything every course is marked (the first
        // assignment may gain nothing, e.g. after a restart that owns the same partitions).
        let owned = self.shared.owned();
        let mut marks = Marks::default();
        // Effects are evaluated against the batch's final state, so a repeated response
        // of one student to one exercise yields the same targets: derive them once.
        let mut responses_seen = BTreeSet::new();
        for effect in effects {
            let Some(course) = effect_course(effect) else {
                continue;
            };
            if let Effect::ResponseRecorded {
                response, counts, ..
            } = effect
            {
                let seen = (
                    course,
                    response.student,
                    response.ecosystem,
                    response.exercise,
                );
                if !*counts || !responses_seen.insert(seen) {
                    continue;
                }
            }
            // Timers (below) are written for every course: they come from the events alone,
            // and a new owner needs them.
            let mine = !owned.is_assigned() || owned.owns(course);
            if mine && catching_up {
                marks.courses.insert(course);
            } else if mine {
                let scheduler = Scheduler {
                    view,
                    published: self.shared.published.as_ref(),
                    models: self.shared.models.as_ref(),
                    settings: self.shared.settings_of(course),
                };
                let triggered = scheduler
                    .targets_for(effect, now)
                    .map_err(|error| StateError(error.to_string()))?;
                marks
                    .targets
                    .extend(triggered.targets.into_iter().map(|target| (course, target)));
                marks
                    .waits
                    .extend(triggered.waits_for.into_iter().map(|eco| (eco, course)));
            }
            if let Effect::AssignmentChanged {
                assignment,
                student,
                ..
            } = effect
            {
                if let Some(state) = view.assignment(course, *assignment)? {
                    for (kind, at) in [
                        (TimerKind::FeedbackAt, state.feedback_at),
                        (TimerKind::DueAt, state.due_at),
                    ] {
                        if let Some(at) = at.filter(|at| *at > now) {
                            marks.timers.insert((
                                course,
                                Timer {
                                    at,
                                    kind,
                                    assignment: *assignment,
                                    student: *student,
                                },
                            ));
                        }
                    }
                }
            }
        }
        Ok(marks)
    }
}

impl BatchHook for DirtyTargets {
    fn on_batch(
        &self,
        state: &mut SledState<'_, '_>,
        effects: &[Effect],
    ) -> Result<(), StateError> {
        let marks = self.collect(&*state, effects)?;
        if marks.courses.is_empty()
            && marks.targets.is_empty()
            && marks.waits.is_empty()
            && marks.timers.is_empty()
        {
            return Ok(());
        }
        let dirty_at_micros = (self.shared.wall)();
        for course in &marks.courses {
            let mark = DirtyMark {
                dirty_at_micros,
                stamp: self.stamp.fetch_add(1, Ordering::Relaxed),
            };
            state.put_hook_row(&whole_course_key(*course), mark.encode());
        }
        for (course, target) in &marks.targets {
            let mark = DirtyMark {
                dirty_at_micros,
                stamp: self.stamp.fetch_add(1, Ordering::Relaxed),
            };
            state.put_hook_row(&dirty_key(*course, target), mark.encode());
        }
        for (ecosystem, course) in &marks.waits {
            state.put_hook_row(&waiting_key(*ecosystem, *course), Vec::new());
        }
        for (course, timer) in &marks.timers {
            state.put_hook_row(
                &timer_key(timer.at, *course, &TimerAction::Assignment(*timer)),
                Vec::new(),
            );
        }
        self.shared.wake.notify_one();
        Ok(())
    }
}
