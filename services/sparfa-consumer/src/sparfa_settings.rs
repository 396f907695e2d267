//! The global `sparfa.*` settings the consumer reads (docs/design/operations.md §6), resolved by
//! the caller.

use std::sync::Arc;

use biglearn_settings::{keys, SettingsHistory};

/// The `sparfa.*` settings in force, with the version they were resolved at.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SparfaSettings {
    /// `sparfa.retrain_enabled` (kill switch): off, marks accumulate and only initial
    /// models are fitted.
    pub retrain_enabled: bool,
    /// `sparfa.retrain_growth`: thresholds become `floor((1 + growth) · count) + 1`.
    pub retrain_growth: f64,
    /// `sparfa.max_training_observations`: above it, learners are subsampled (§5).
    pub max_training_observations: u64,
    /// The settings version these values were resolved at (recorded with each model).
    pub settings_version: i64,
}

impl SparfaSettings {
    /// The initial settings of docs/design/operations.md §6.5, at version 0.
    pub const INITIAL: SparfaSettings = SparfaSettings {
        retrain_enabled: true,
        retrain_growth: 0.1,
        max_training_observations: 20_000_000,
        settings_version: 0,
    };

    /// Resolves the global keys at the history's last version.
    pub fn resolve(history: &SettingsHistory) -> SparfaSettings {
        let version = history.last_version();
        SparfaSettings {
            retrain_enabled: history.get(keys::SPARFA_RETRAIN_ENABLED, None, version),
            retrain_growth: history.get(keys::SPARFA_RETRAIN_GROWTH, None, version),
            max_training_observations: history
                .get(keys::SPARFA_MAX_TRAINING_OBSERVATIONS, None, version)
                .max(1) as u64,
            settings_version: version,
        }
    }
}

/// Where the consumer reads its settings from, asked at the end of every batch.
pub type SparfaSettingsSource = Arc<dyn Fn() -> SparfaSettings + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_history_resolves_to_the_initial_settings() {
        assert_eq!(
            SparfaSettings::resolve(&SettingsHistory::new()),
            SparfaSettings::INITIAL
        );
    }
}
