//! Pure model building: an ecosystem's snapshot as a fit input, the fit as a `ModelComputed`, and a
//! `ModelComputed` as the scheduler's `EcosystemModel` (docs/design/sparfa.md §5, §6, §9).

use std::collections::BTreeMap;

use biglearn_domain::ids::{
    uuid_v5, BookContainerUuid, EcosystemUuid, ExerciseGroupUuid, StudentUuid,
};
use biglearn_events::{ModelComputed, ModelHyperparameters, TopicPosition};
use biglearn_scheduler::EcosystemModel;
use biglearn_sparfa::eval::SELECTION_CAP;
use biglearn_sparfa::select::{fit_selected, hinted_candidates, loadings_coo, SelectionInput};
use biglearn_sparfa::{
    is_holdout, keep_learner, Hyperparameters, Observation, Observations, ServingModel,
};
use ndarray::{Array1, Array2};
use sha2::{Digest, Sha256};

use crate::partition_book::{EcosystemContent, PartitionBook, Trigger};
use crate::sparfa_settings::SparfaSettings;
use crate::ModelError;

/// `algorithm` of every model this consumer publishes.
pub const ALGORITHM: &str = "biglearn_sparfa";
/// `spec_version`: docs/design/sparfa.md as implemented.
pub const SPEC_VERSION: i32 = 1;

/// `UUIDv5(NS_BIGLEARN, "model/<ecosystem_uuid>/<model_seq>")`.
pub fn matrix_uuid(ecosystem: EcosystemUuid, model_seq: i64) -> uuid::Uuid {
    uuid_v5(&format!("model/{}/{model_seq}", ecosystem.0))
}

/// The id of general concept `i` (a fit's rows beyond the pages): they have no page, so
/// they get `UUIDv5(NS_BIGLEARN, "concept/<ecosystem_uuid>/general/<i>")`, after the pages.
pub fn general_concept_uuid(ecosystem: EcosystemUuid, i: usize) -> uuid::Uuid {
    uuid_v5(&format!("concept/{}/general/{i}", ecosystem.0))
}

/// Everything one fit needs, owned: taken from the book at the end of a batch, fitted
/// off the consumer's thread.
#[derive(Clone, Debug)]
pub struct FitInput {
    pub ecosystem: EcosystemUuid,
    pub model_seq: i64,
    pub trigger: Trigger,
    pub content: EcosystemContent,
    /// L_ids: the (kept) learners with an observation, ascending.
    pub learners: Vec<StudentUuid>,
    pub train: Observations,
    pub holdout: Vec<Observation>,
    /// SHA-256 over the sorted (student, group, y) triples of Ω.
    pub training_set_sha256: [u8; 32],
    pub trained_through: Vec<TopicPosition>,
    pub settings_version: i64,
    /// The latest `accepted_at` of the ecosystem's applied events: a logical time, so the
    /// same log gives the same model bytes.
    pub created_at_micros: i64,
}

impl FitInput {
    /// H as a K × Q boolean matrix.
    pub fn page_hints(&self) -> Array2<bool> {
        let mut hints = Array2::from_elem(
            (self.content.concepts.len(), self.content.questions.len()),
            false,
        );
        for &(c, q) in &self.content.hints {
            hints[(c, q)] = true;
        }
        hints
    }

    /// The §7 fit problem with the spec's initialisation (W⁰ = H).
    pub fn problem<'a>(&'a self, hints: &'a Array2<bool>) -> biglearn_sparfa::FitProblem<'a> {
        biglearn_sparfa::FitProblem {
            hints: hints.view(),
            initial_loadings: None,
            train: &self.train,
            holdout: &self.holdout,
        }
    }
}

/// Snapshots `ecosystem` for a fit (§8 steps 1–3): Ω from the first responses (§5), the
/// holdout (§6), and the reset of its groups' thresholds. `None` without content.
pub fn snapshot(
    book: &mut PartitionBook,
    ecosystem: EcosystemUuid,
    trigger: Trigger,
    model_seq: i64,
    settings: &SparfaSettings,
    trained_through: Vec<TopicPosition>,
) -> Option<FitInput> {
    let eco_book = book.ecosystems.get(&ecosystem)?;
    let content = eco_book.content.clone()?;
    // Per (student, question): the lowest sequence over the group's versions.
    let mut omega: BTreeMap<(StudentUuid, usize), (i64, bool)> = BTreeMap::new();
    for ((student, exercise), first) in &eco_book.first {
        let Some(group) = content.group_of.get(exercise) else {
            continue;
        };
        let Ok(q) = content.questions.binary_search(group) else {
            continue;
        };
        let entry = omega
            .entry((*student, q))
            .or_insert((first.sequence_number, first.correct));
        if first.sequence_number < entry.0 {
            *entry = (first.sequence_number, first.correct);
        }
    }
    let created_at_micros = eco_book.latest_accepted_micros;
    book.counts
        .retrain_snapshotted(content.questions.iter().copied(), settings.retrain_growth);

    let eco_text = ecosystem.0.to_string();
    let n_omega = omega.len() as u64;
    let cap = settings.max_training_observations.max(1);
    let mut keep: BTreeMap<StudentUuid, bool> = BTreeMap::new();
    omega.retain(|(student, _), _| {
        *keep
            .entry(*student)
            .or_insert_with(|| keep_learner(&eco_text, &student.0.to_string(), n_omega, cap))
    });
    let learners: Vec<StudentUuid> = keep
        .into_iter()
        .filter_map(|(student, kept)| kept.then_some(student))
        .collect();
    let mut hasher = Sha256::new();
    let mut train = Vec::new();
    let mut holdout = Vec::new();
    let group_texts: Vec<String> = content.questions.iter().map(|g| g.0.to_string()).collect();
    let mut learner = 0usize;
    let mut current: Option<StudentUuid> = None;
    let mut student_text = String::new();
    for ((student, q), (_, correct)) in &omega {
        if current != Some(*student) {
            if current.is_some() {
                learner += 1;
            }
            current = Some(*student);
            student_text = student.0.to_string();
        }
        // The triple as one line `student|group|y\n`, lower-case hyphenated uuids.
        hasher.update(student_text.as_bytes());
        hasher.update(b"|");
        hasher.update(group_texts[*q].as_bytes());
        hasher.update(if *correct { b"|1\n" } else { b"|0\n" });
        let observation = Observation {
            learner,
            question: *q,
            correct: *correct,
        };
        if is_holdout(&eco_text, &student_text, &group_texts[*q], 10) {
            holdout.push(observation);
        } else {
            train.push(observation);
        }
    }
    let train = Observations::new(learners.len(), content.questions.len(), &train).ok()?;
    Some(FitInput {
        ecosystem,
        model_seq,
        trigger,
        content,
        learners,
        train,
        holdout,
        training_set_sha256: hasher.finalize().into(),
        trained_through,
        settings_version: settings.settings_version,
        created_at_micros,
    })
}

fn coo_i32(values: impl Iterator<Item = usize>) -> Vec<i32> {
    values
        .map(|v| i32::try_from(v).unwrap_or(i32::MAX))
        .collect()
}

fn recorded(h: &Hyperparameters) -> ModelHyperparameters {
    let int = |v: usize| i32::try_from(v).unwrap_or(i32::MAX);
    ModelHyperparameters {
        lambda_h_l2: h.lambda_h_l2,
        lambda_nh_l1: h.lambda_nh_l1,
        lambda_d_l2: h.lambda_d_l2,
        gamma_u: h.gamma_u,
        holdout_modulus: i32::try_from(h.holdout_modulus).unwrap_or(i32::MAX),
        patience: int(h.patience),
        max_outer_iterations: int(h.max_outer_iterations),
        inner_steps: int(h.inner_steps),
    }
}

/// Fits the snapshot (the CPU-heavy part; deterministic whatever `threads`) and builds the
/// model event. `fit_seconds` is 0: the shell stamps the measured time.
pub fn compute_model(input: &FitInput, threads: usize) -> Result<ModelComputed, ModelError> {
    let hints = input.page_hints();
    let eco = input.ecosystem;
    let mut c_ids: Vec<uuid::Uuid> = input.content.concepts.iter().map(|c| c.0).collect();
    let (coo, d, hyperparameters, stats) = if input.train.is_empty() && input.holdout.is_empty() {
        // §7 zero-data model: W = H, d = 0, no iterations, null statistics.
        let coo: Vec<(usize, usize, f64)> = input
            .content
            .hints
            .iter()
            .map(|&(c, q)| (c, q, 1.0))
            .collect();
        (
            coo,
            vec![0.0; input.content.questions.len()],
            Hyperparameters::spec(),
            None,
        )
    } else {
        let selection = SelectionInput {
            page_hints: hints.view(),
            free_init: None,
            train: &input.train,
            holdout: &input.holdout,
            selection_cap: SELECTION_CAP,
            threads: threads.max(1),
        };
        let selected = fit_selected(&selection, &hinted_candidates()).ok_or_else(|| {
            ModelError::Malformed {
                matrix_uuid: matrix_uuid(eco, input.model_seq),
                detail: "the candidate list is empty".into(),
            }
        })?;
        let extra = selected.fit.loadings.nrows().saturating_sub(c_ids.len());
        c_ids.extend((0..extra).map(|i| general_concept_uuid(eco, i)));
        (
            loadings_coo(selected.fit.loadings.view()),
            selected.fit.easiness.to_vec(),
            selected.chosen.hyperparameters.clone(),
            Some(selected.fit.stats),
        )
    };
    Ok(ModelComputed {
        matrix_uuid: matrix_uuid(eco, input.model_seq),
        ecosystem_uuid: eco.0,
        model_seq: input.model_seq,
        algorithm: ALGORITHM.into(),
        spec_version: SPEC_VERSION,
        trigger: input.trigger.as_str().into(),
        q_ids: input.content.questions.iter().map(|g| g.0).collect(),
        c_ids,
        d,
        w_rows: coo_i32(coo.iter().map(|e| e.0)),
        w_cols: coo_i32(coo.iter().map(|e| e.1)),
        w_values: coo.iter().map(|e| e.2).collect(),
        h_rows: coo_i32(input.content.hints.iter().map(|e| e.0)),
        h_cols: coo_i32(input.content.hints.iter().map(|e| e.1)),
        hyperparameters: recorded(&hyperparameters),
        settings_version: input.settings_version,
        trained_through: input.trained_through.clone(),
        training_observations: stats.as_ref().map_or(0, |s| s.training_observations as i64),
        holdout_observations: stats.as_ref().map_or(0, |s| s.holdout_observations as i64),
        learners: stats.as_ref().map_or(0, |s| s.learners as i64),
        training_set_sha256: input.training_set_sha256,
        holdout_accuracy: stats.as_ref().and_then(|s| s.holdout_accuracy),
        holdout_log_loss: stats.as_ref().and_then(|s| s.holdout_log_loss),
        outer_iterations: stats.as_ref().map_or(0, |s| s.outer_iterations as i32),
        best_iteration: stats.as_ref().map_or(0, |s| s.best_iteration as i32),
        fit_seconds: 0.0,
        created_at_micros: input.created_at_micros,
    })
}

/// The scheduler's serving form of a model event, checking every index.
pub fn ecosystem_model(model: &ModelComputed) -> Result<EcosystemModel, ModelError> {
    let malformed = |detail: String| ModelError::Malformed {
        matrix_uuid: model.matrix_uuid,
        detail,
    };
    let (k, q) = (model.c_ids.len(), model.q_ids.len());
    if model.d.len() != q {
        return Err(malformed(format!(
            "{} easiness values for {q} questions",
            model.d.len()
        )));
    }
    if model.w_rows.len() != model.w_values.len() || model.w_cols.len() != model.w_values.len() {
        return Err(malformed("W's COO arrays differ in length".into()));
    }
    let mut loadings = Array2::zeros((k, q));
    for ((row, col), value) in model.w_rows.iter().zip(&model.w_cols).zip(&model.w_values) {
        let (Ok(row), Ok(col)) = (usize::try_from(*row), usize::try_from(*col)) else {
            return Err(malformed(format!("negative W index ({row}, {col})")));
        };
        if row >= k || col >= q {
            return Err(malformed(format!(
                "W entry ({row}, {col}) outside {k} × {q}"
            )));
        }
        loadings[(row, col)] = *value;
    }
    let serving = ServingModel::new(
        loadings.view(),
        Array1::from(model.d.clone()).view(),
        model.hyperparameters.gamma_u,
    );
    let questions: Vec<ExerciseGroupUuid> =
        model.q_ids.iter().map(|g| ExerciseGroupUuid(*g)).collect();
    Ok(EcosystemModel::new(
        EcosystemUuid(model.ecosystem_uuid),
        model.matrix_uuid,
        model.model_seq,
        &questions,
        model.c_ids.iter().map(|c| BookContainerUuid(*c)).collect(),
        serving,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition_book::tests::{create, id, response};
    use biglearn_events::{decode_model_computed, encode_model_computed};

    fn settings() -> SparfaSettings {
        SparfaSettings {
            retrain_enabled: true,
            retrain_growth: 0.1,
            max_training_observations: 20_000_000,
            settings_version: 3,
        }
    }

    /// Ecosystem 1: 3 pages, 6 groups; `n_students` answer every group, student s
    /// correct on group g iff (s + g) % 3 != 0, on a course sequence of their own.
    fn book_with(n_students: u128) -> PartitionBook {
        let mut book = PartitionBook::default();
        book.create_ecosystem(&create(1, &[&[0, 1], &[2, 3], &[4, 5, 0]], 6), 100);
        let mut n = 0;
        for s in 0..n_students {
            for g in 0..6u128 {
                n += 1;
                let r = response(1, n, s, g, (s * 10 + g) as i64, (s + g) % 3 != 0);
                book.record_response(&r, 200 + n as i64, n as i64, 0.1);
            }
        }
        book
    }

    fn model_of(book: &mut PartitionBook, seq: i64) -> ModelComputed {
        let input = snapshot(
            book,
            EcosystemUuid(id(1)),
            Trigger::ResponseGrowth,
            seq,
            &settings(),
            vec![],
        )
        .expect("content known");
        compute_model(&input, 1).expect("fit")
    }

    #[test]
    fn a_model_without_responses_is_the_hints() {
        let mut book = PartitionBook::default();
        book.create_ecosystem(&create(1, &[&[0, 1], &[1]], 3), 7);
        let input = snapshot(
            &mut book,
            EcosystemUuid(id(1)),
            Trigger::Initial,
            0,
            &settings(),
            vec![],
        )
        .expect("content known");
        let model = compute_model(&input, 1).expect("fit");
        assert_eq!(model.matrix_uuid, uuid_v5(&format!("model/{}/0", id(1))));
        assert_eq!(
            (model.w_rows.clone(), model.w_cols.clone()),
            (vec![0, 0, 1], vec![0, 1, 1])
        );
        assert_eq!(model.w_values, vec![1.0; 3]);
        assert_eq!(
            (model.h_rows.clone(), model.h_cols.clone()),
            (model.w_rows.clone(), model.w_cols.clone())
        );
        assert_eq!(model.d, vec![0.0; 3]);
        assert_eq!((model.outer_iterations, model.holdout_accuracy), (0, None));
        assert_eq!(model.created_at_micros, 7);
        assert_eq!(
            model.training_set_sha256,
            <[u8; 32]>::from(Sha256::digest(b""))
        );
        let serving = ecosystem_model(&model).expect("valid");
        assert_eq!(serving.model_seq, 0);
        assert_eq!(serving.question(ExerciseGroupUuid(id(0x32))), Some(2));
    }

    #[test]
    fn first_responses_make_the_training_set() {
        let mut book = PartitionBook::default();
        book.create_ecosystem(&create(1, &[&[0]], 1), 0);
        // Student 1: a later correct answer and an earlier wrong one; student 2: practice only.
        book.record_response(&response(1, 1, 1, 0, 5, true), 0, 1, 0.1);
        book.record_response(&response(1, 2, 1, 0, 3, false), 0, 2, 0.1);
        let mut practice = response(1, 3, 2, 0, 1, true);
        practice.is_real_response = false;
        book.record_response(&practice, 0, 3, 0.1);
        let input = snapshot(
            &mut book,
            EcosystemUuid(id(1)),
            Trigger::ResponseGrowth,
            1,
            &settings(),
            vec![],
        )
        .expect("content known");
        let expected = format!("{}|{}|0\n", id(0x6001), id(0x30));
        assert_eq!(
            input.training_set_sha256,
            <[u8; 32]>::from(Sha256::digest(expected.as_bytes()))
        );
        assert_eq!(input.learners, vec![StudentUuid(id(0x6001))]);
        assert_eq!(input.train.len() + input.holdout.len(), 1);
    }

    #[test]
    fn the_same_log_gives_the_same_model_bytes() {
        let first = encode_model_computed(&model_of(&mut book_with(40), 1));
        let second = encode_model_computed(&model_of(&mut book_with(40), 1));
        assert_eq!(first, second);
        let decoded = decode_model_computed(&first).expect("decodes");
        assert_eq!(
            encode_model_computed(&decoded),
            first,
            "round trip is byte-identical"
        );
        assert!(decoded.outer_iterations > 0);
        assert_eq!(
            decoded.training_observations + decoded.holdout_observations,
            240
        );
        // The W COO is sorted by (col, row) and serves.
        let pairs: Vec<(i32, i32)> = decoded
            .w_cols
            .iter()
            .copied()
            .zip(decoded.w_rows.iter().copied())
            .collect();
        let mut sorted = pairs.clone();
        sorted.sort_unstable();
        assert_eq!(pairs, sorted);
        let serving = ecosystem_model(&decoded).expect("valid");
        assert_eq!(serving.serving.n_questions(), 6);
    }

    #[test]
    fn a_snapshot_resets_the_thresholds() {
        let mut book = book_with(5);
        let g = ExerciseGroupUuid(id(0x30));
        assert_eq!(book.counts.group(g).map(|c| c.count), Some(5));
        model_of(&mut book, 1);
        assert_eq!(book.counts.group(g).map(|c| c.threshold), Some(6));
    }

    #[test]
    fn malformed_models_are_errors() {
        let mut model = model_of(&mut book_with(3), 1);
        model.w_rows[0] = 99;
        assert!(matches!(
            ecosystem_model(&model),
            Err(ModelError::Malformed { .. })
        ));
        let mut model = model_of(&mut book_with(3), 1);
        model.d.pop();
        assert!(ecosystem_model(&model).is_err());
    }
}
