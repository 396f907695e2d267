//! The pure scheduler core: from the read model, the published results and the latest
//! models, decide what to recompute and compute student and teacher CLUEs, assignment PEs,
//! SPEs and practice worst areas for `local_query` and `biglearn_sparfa`
//! (docs/design/scheduler.md).
//!
//! Invariants:
//! - Pure and deterministic: no clock, no I/O, no randomness. "Now" (the logical clock of
//!   docs/design/scheduler.md §2.3) and the input sequence are parameters; every shuffle is
//!   [`det_shuffle`].
//! - Depends on none of tokio, sled, rdkafka or axum; reads state only through
//!   `biglearn_domain::state::StateView`, [`PublishedView`] and [`ModelView`].
//! - Within one [`Scheduler::compute`] pass, later steps see the results of earlier ones
//!   (SPEs exclude the PEs just computed; worst areas use the CLUEs just computed).
//! - No PE, SPE or worst-areas list contains an excluded exercise or a version of a group
//!   assigned in an assignment of the student that is not yet due or whose feedback is
//!   in the future.
//!
//! Does not: store dirty sets, keep the logical clock, publish records, or resolve
//! settings; the shell does, calling [`Scheduler`] and [`publish_decision`].
//!
//! Modules, in reading order:
//! - [`shuffle`]: the deterministic shuffle, `det_shuffle`.
//! - [`settings`]: the resolved settings, [`SchedulerSettings`].
//! - [`version`]: result versions, content hashes, the publish decision.
//! - [`models`]: [`EcosystemModel`] and [`ModelView`].
//! - [`published`]: [`PublishedView`] and [`MemoryPublished`].
//! - [`reader`]: the read model of one course, with caches.
//! - [`clue`]: CLUE input sets, the `local_query` formula, the SPARFA CLUE.
//! - [`ranking`]: exercise rankings and their calculation uuids.
//! - [`allocation`]: exclusions, the chooser, PE allocation.
//! - [`history`]: the past-due rule, positions, mapped histories, the k-ago map.
//! - [`spes`]: SPE allocation.
//! - [`worst_areas`]: practice worst areas.
//! - [`targets`]: recompute targets from effects, timers and models.
//! - [`compute`]: [`Scheduler`], which turns targets into result records.
//! - [`retrain`]: the retrain-trigger counts the SPARFA consumer keeps.

pub mod allocation;
pub mod clue;
pub mod compute;
pub mod history;
pub mod models;
pub mod published;
pub mod ranking;
pub mod reader;
pub mod retrain;
pub mod settings;
pub mod shuffle;
pub mod spes;
pub mod targets;
pub mod version;
pub mod worst_areas;

#[cfg(test)]
mod fixture;
#[cfg(test)]
mod scenarios;

pub use compute::{Computed, Scheduler};
pub use history::{enter_past_due_history, past_due_history, HistoryType};
pub use models::{EcosystemModel, ModelView};
pub use published::{MemoryPublished, PublishedView};
pub use retrain::RetrainCounts;
pub use settings::SchedulerSettings;
pub use shuffle::det_shuffle;
pub use targets::{Target, Timer, TimerKind, Triggered};
pub use version::{content_hash, may_replace, publish_decision, PublishDecision, ResultVersion};

use biglearn_domain::state::StateError;

/// The built-in algorithms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Algorithm {
    LocalQuery,
    BiglearnSparfa,
}

impl Algorithm {
    pub const ALL: [Algorithm; 2] = [Algorithm::LocalQuery, Algorithm::BiglearnSparfa];

    /// The `algorithm_name` of PE, worst-areas and CLUE results.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::LocalQuery => "local_query",
            Algorithm::BiglearnSparfa => "biglearn_sparfa",
        }
    }

    /// The `algorithm_name` of SPE results: `<history_type>_<alg>`.
    pub fn spe_name(self, history_type: HistoryType) -> String {
        format!("{}_{}", history_type.as_str(), self.as_str())
    }
}

/// A failure to read what a computation needs.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("reading the read model while {doing}: {source}")]
    State {
        doing: &'static str,
        #[source]
        source: StateError,
    },
    #[error("reading published results while {doing}: {source}")]
    Published {
        doing: &'static str,
        #[source]
        source: StateError,
    },
}

/// Adds what was being done to a read-model failure.
pub(crate) trait Context<T> {
    fn reading(self, doing: &'static str) -> Result<T, SchedulerError>;
    fn reading_published(self, doing: &'static str) -> Result<T, SchedulerError>;
}

impl<T> Context<T> for Result<T, StateError> {
    fn reading(self, doing: &'static str) -> Result<T, SchedulerError> {
        self.map_err(|source| SchedulerError::State { doing, source })
    }

    fn reading_published(self, doing: &'static str) -> Result<T, SchedulerError> {
        self.map_err(|source| SchedulerError::Published { doing, source })
    }
}
