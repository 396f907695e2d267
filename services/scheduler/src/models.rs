//! The latest SPARFA model per ecosystem as the scheduler uses it (docs/design/sparfa.md §9, §10).

use std::collections::BTreeMap;
use std::sync::Arc;

use biglearn_domain::ids::{BookContainerUuid, EcosystemUuid, ExerciseGroupUuid};
use biglearn_sparfa::ServingModel;
use uuid::Uuid;

/// One `ModelComputed`, ready for per-learner solves.
#[derive(Clone, Debug, PartialEq)]
pub struct EcosystemModel {
    pub ecosystem: EcosystemUuid,
    /// Served as `ecosystem_matrix_uuid`.
    pub matrix_uuid: Uuid,
    /// 0 for the initial model, +1 per refit.
    pub model_seq: i64,
    /// `Q_ids`: exercise group → question index of `serving`.
    pub question_index: BTreeMap<ExerciseGroupUuid, usize>,
    /// `C_ids`: the concepts (leaf book containers), ascending.
    pub concept_ids: Vec<BookContainerUuid>,
    pub serving: ServingModel,
}

impl EcosystemModel {
    /// Builds the model from the event's ascending `Q_ids` (row `i` of `serving` is `Q_ids[i]`).
    pub fn new(
        ecosystem: EcosystemUuid,
        matrix_uuid: Uuid,
        model_seq: i64,
        question_ids: &[ExerciseGroupUuid],
        concept_ids: Vec<BookContainerUuid>,
        serving: ServingModel,
    ) -> EcosystemModel {
        EcosystemModel {
            ecosystem,
            matrix_uuid,
            model_seq,
            question_index: question_ids
                .iter()
                .enumerate()
                .map(|(idx, group)| (*group, idx))
                .collect(),
            concept_ids,
            serving,
        }
    }

    /// The question index of a group, if the model knows it.
    pub fn question(&self, group: ExerciseGroupUuid) -> Option<usize> {
        self.question_index.get(&group).copied()
    }
}

/// Read access to the latest model of each ecosystem.
pub trait ModelView {
    fn latest_model(&self, ecosystem: EcosystemUuid) -> Option<Arc<EcosystemModel>>;
}

impl ModelView for BTreeMap<EcosystemUuid, Arc<EcosystemModel>> {
    fn latest_model(&self, ecosystem: EcosystemUuid) -> Option<Arc<EcosystemModel>> {
        self.get(&ecosystem).cloned()
    }
}
