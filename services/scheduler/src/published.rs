//! What the scheduler has published (docs/design/scheduler.md §3.4 step 3, §10.5, §11 read it
//! back).

use std::collections::BTreeMap;

use biglearn_domain::state::StateError;
use biglearn_events::{ResultKey, ResultKind, ResultRecord};
use uuid::Uuid;

use crate::version::{may_replace, ResultVersion};

/// Read access to the current result per key (the highest version stored).
pub trait PublishedView {
    /// The result stored under `key` (the text of a `ResultKey`).
    fn result(&self, key: &str) -> Result<Option<ResultRecord>, StateError>;
    /// Every stored result of `kind` whose first key part is `subject` (an assignment, a
    /// student or a course container), any algorithm, in ascending key order.
    fn results_about(
        &self,
        kind: ResultKind,
        subject: Uuid,
    ) -> Result<Vec<ResultRecord>, StateError>;
}

/// Published results in memory, keyed by result key; a lower version never replaces a higher.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MemoryPublished {
    pub results: BTreeMap<String, ResultRecord>,
}

impl MemoryPublished {
    /// Stores `record` unless a higher version is stored; returns whether it was stored.
    pub fn store(&mut self, record: ResultRecord) -> bool {
        let key = record.key();
        if let Some(stored) = self.results.get(&key) {
            if !may_replace(ResultVersion::of(&record), ResultVersion::of(stored)) {
                return false;
            }
        }
        self.results.insert(key, record);
        true
    }
}

impl PublishedView for MemoryPublished {
    fn result(&self, key: &str) -> Result<Option<ResultRecord>, StateError> {
        Ok(self.results.get(key).cloned())
    }

    fn results_about(
        &self,
        kind: ResultKind,
        subject: Uuid,
    ) -> Result<Vec<ResultRecord>, StateError> {
        let prefix = ResultKey::subject_prefix(kind, subject);
        Ok(self
            .results
            .range(prefix.clone()..)
            .take_while(|(key, _)| key.starts_with(&prefix))
            .map(|(_, record)| record.clone())
            .collect())
    }
}

/// The results of the computation in progress over what was published before it, so that
/// later steps of one pass (SPEs after PEs, worst areas after CLUEs) see earlier ones.
pub(crate) struct Overlay<'a> {
    pub base: &'a dyn PublishedView,
    pub fresh: MemoryPublished,
}

impl PublishedView for Overlay<'_> {
    fn result(&self, key: &str) -> Result<Option<ResultRecord>, StateError> {
        match self.fresh.results.get(key) {
            Some(record) => Ok(Some(record.clone())),
            None => self.base.result(key),
        }
    }

    fn results_about(
        &self,
        kind: ResultKind,
        subject: Uuid,
    ) -> Result<Vec<ResultRecord>, StateError> {
        let mut merged: BTreeMap<String, ResultRecord> = self
            .base
            .results_about(kind, subject)?
            .into_iter()
            .map(|record| (record.key(), record))
            .collect();
        for record in self.fresh.results_about(kind, subject)? {
            merged.insert(record.key(), record);
        }
        Ok(merged.into_values().collect())
    }
}
