//! The scheduler's imperative shell: dirty targets written with the events that caused
//! them, the logical clock, and the loop that computes targets with the pure core
//! (`biglearn-scheduler`) and publishes results to `<prefix>.results`
//! (docs/design/scheduler.md §2.3, §4, §12).
//!
//! Invariants:
//! - Dirty targets, waits and timers are hook rows of the state projection: they commit in
//!   the same sled batch as the events that caused them and are not part of the state hash.
//! - A dirty row is removed only after its results were delivered, and only if no batch
//!   re-dirtied it meanwhile (its stamp is unchanged); a crash in between recomputes, and
//!   unchanged content is not republished.
//! - A lower result version is never published over a higher one (`publish_decision`).
//! - Nothing is computed while the state consumers catch up (docs/design/scheduler.md §12 replay
//!   mode); the hook then marks whole courses dirty, expanded into targets once caught up.
//! - The projection's state is never written by the loop: the past-due history rule, a
//!   function of the logical clock, is applied to an uncommitted batch each pass.
//! - Settings act at once (S9): a settings version that changes a course's resolved
//!   scheduler settings raises the course's settings floor and marks the whole course dirty;
//!   a course is computed at the later of its last event's settings version and its floor.
//!   While `scheduler.publish_biglearn_sparfa` is off, its served `biglearn_sparfa` results
//!   are withdrawn. At most [`WHOLE_COURSES_PER_PASS`] whole courses are expanded per pass,
//!   so a change touching every course is worked off without starving other work.
//! - Each course is computed by one process: any number of scheduler processes share the
//!   courses by the course-event partitions they own in `<prefix>.scheduler`
//!   ([`ownership`]); the others derive no targets for it, and whoever gains it computes
//!   it whole.
//! - No minimum interval per course (S10): a course is computed by the first pass after its
//!   batch is applied; work coalesces only while a pass runs.
//! - The logical clock never moves backwards. Simplification of §2.3: it advances to
//!   `wall − CLOCK_SAFETY_LAG` while caught up; the `max(accepted_at)` term is not tracked.
//!
//! Does not: apply events (the projector does), hold business rules (the core does), or
//! fit or store SPARFA models: it reads them through the `ModelView` it is given (the
//! model store of `biglearn-sparfa-consumer`); an ecosystem's first model marks its courses
//! whole-course dirty (docs/design/scheduler.md §4).
//!
//! Modules, in reading order:
//! - [`clock`]: the logical clock and the injectable wall clock.
//! - [`rows`]: hook-row keys: dirty targets, waiting courses, timers.
//! - [`hook`]: [`DirtyTargets`], the state projection's batch hook.
//! - [`ownership`]: which courses this process computes when several share them.
//! - [`published`]: published results read back, and published versions and hashes.
//! - [`scheduler_settings`]: a course's scheduler settings from the settings history.
//! - [`settings_watch`]: settings floors, so that settings act at once.
//! - [`recompute`]: the loop, [`run_recompute`].

pub mod clock;
pub mod hook;
pub mod ownership;
pub mod published;
pub mod recompute;
pub mod rows;
pub mod scheduler_settings;
pub mod settings_watch;

#[cfg(test)]
mod tests;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use biglearn_domain::state::StateError;
use biglearn_projector::consumer::ConsumerProgress;
use biglearn_projector::event_log::EventLog;
use biglearn_scheduler::{ModelView, SchedulerError};
use biglearn_stream::SharedStreamStore;
use biglearn_telemetry::Metrics;
use tokio::sync::{watch, Notify};

pub use clock::{system_wall_clock, LogicalClock, WallClock, CLOCK_SAFETY_LAG};
pub use hook::{DirtyTargets, Shared};
pub use ownership::{OwnedCourses, OwnershipSource};
pub use published::{EventLogPublished, PublishedVersions};
pub use recompute::{
    run_recompute, PassReport, ProjectionSource, Recompute, RecomputeConfig, FAILED_COURSE_RETRY,
    PASS_BUDGET, RECOMPUTE_TICK, WHOLE_COURSES_PER_PASS,
};

pub use settings_watch::{SettingsFloors, SettingsLook, SettingsSource};

/// Failures of the shell; a failing course is logged and retried, never fatal.
#[derive(Debug, thiserror::Error)]
pub enum RecomputeError {
    #[error("sled error while {doing}: {source}")]
    Sled {
        doing: &'static str,
        #[source]
        source: sled::Error,
    },
    #[error("projection error while {doing}: {source}")]
    Projection {
        doing: &'static str,
        #[source]
        source: biglearn_projector::ProjectionError,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    #[error("stream error while {doing}: {source}")]
    Stream {
        doing: &'static str,
        #[source]
        source: biglearn_stream::StreamError,
    },
    #[error("results not delivered to {topic}: {detail}; the targets stay dirty and are retried")]
    NotDelivered { topic: String, detail: String },
}

/// What [`build`] needs from the process.
pub struct ShellInputs {
    pub db: sled::Db,
    pub log: EventLog,
    pub store: SharedStreamStore,
    pub results_topic: String,
    pub metrics: Metrics,
    pub settings: SettingsSource,
    /// The latest SPARFA model per ecosystem.
    pub models: Arc<dyn ModelView + Send + Sync>,
}

/// The shell before the projection exists: its hook goes to `ProjectionService::open`, then
/// [`Shell::into_loop`] gives the loop, to run with [`run_recompute`].
pub struct Shell {
    pub hook: Arc<DirtyTargets>,
    shared: Shared,
    published: EventLogPublished,
    versions: PublishedVersions,
    store: SharedStreamStore,
    config: RecomputeConfig,
}

/// Builds the shell over the process's sled database, event log and stream store.
pub fn build(inputs: ShellInputs) -> Result<Shell, RecomputeError> {
    let published = EventLogPublished {
        log: inputs.log.clone(),
    };
    let shared = Shared {
        clock: LogicalClock::new(0),
        wall: system_wall_clock(),
        published: Arc::new(published.clone()),
        models: inputs.models,
        settings: inputs.settings,
        floors: SettingsFloors::default(),
        wake: Arc::new(Notify::new()),
        caught_up: Arc::new(AtomicBool::new(false)),
        ownership: Arc::default(),
    };
    let versions = PublishedVersions::open(&inputs.db).map_err(|source| RecomputeError::Sled {
        doing: "opening the published versions",
        source,
    })?;
    Ok(Shell {
        hook: Arc::new(DirtyTargets::new(shared.clone())),
        shared,
        published,
        versions,
        store: inputs.store,
        config: RecomputeConfig {
            results_topic: inputs.results_topic,
            failed_course_retry: FAILED_COURSE_RETRY,
            tick: RECOMPUTE_TICK,
            pass_budget: PASS_BUDGET,
            metrics: inputs.metrics,
        },
    })
}

impl Shell {
    /// The loop over the active projection; `progress` are the live state consumers'
    /// (nothing is computed until they are caught up).
    pub fn into_loop(
        self,
        projection: ProjectionSource,
        progress: Vec<watch::Receiver<ConsumerProgress>>,
    ) -> Recompute {
        Recompute::new(
            self.config,
            self.shared,
            projection,
            self.published,
            self.versions,
            self.store,
            progress,
        )
    }
}
