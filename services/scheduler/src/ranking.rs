//! Exercise rankings (docs/design/scheduler.md §7, §13): the order PEs, SPEs and worst areas are
//! drawn from, with the calculation uuid and matrix uuid that explain them.

use std::collections::BTreeMap;

use biglearn_domain::ids::{uuid_v5, EcosystemUuid, ExerciseGroupUuid, ExerciseUuid, StudentUuid};
use biglearn_domain::state::StateError;
use uuid::Uuid;

use crate::models::ModelView;
use crate::reader::Reader;
use crate::shuffle::det_shuffle;
use crate::Algorithm;

/// `R(s, E, alg)`: every exercise of E, most recommended first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ranking {
    pub exercise_uuids: Vec<ExerciseUuid>,
    pub calculation_uuid: Uuid,
    pub ecosystem_matrix_uuid: Uuid,
    /// The model used; −1 for `local_query` and the prior.
    pub model_seq: i64,
}

/// `UUIDv5(NS, "ranking/<s>/<E>/<alg>/<input_seq>/<model_seq>")`.
pub fn ranking_calculation_uuid(
    student: StudentUuid,
    ecosystem: EcosystemUuid,
    algorithm: Algorithm,
    input_seq: i64,
    model_seq: i64,
) -> Uuid {
    uuid_v5(&format!(
        "ranking/{student}/{ecosystem}/{}/{input_seq}/{model_seq}",
        algorithm.as_str()
    ))
}

/// `UUIDv5(NS, "local_query/<E>")`: `local_query`'s stand-in matrix uuid.
pub fn local_query_matrix_uuid(ecosystem: EcosystemUuid) -> Uuid {
    uuid_v5(&format!("local_query/{ecosystem}"))
}

/// The prior ranking before E's first model (docs/design/scheduler.md §13).
pub fn prior_ranking(exercises: &[ExerciseUuid], ecosystem: EcosystemUuid) -> Vec<ExerciseUuid> {
    det_shuffle(exercises, &format!("prior/{ecosystem}"))
}

/// Computes `R(s, E, alg)`; `None` when E is not known yet.
pub fn rank(
    reader: &Reader<'_>,
    models: &dyn ModelView,
    student: StudentUuid,
    ecosystem: EcosystemUuid,
    algorithm: Algorithm,
    input_seq: i64,
) -> Result<Option<Ranking>, StateError> {
    let Some(eco) = reader.ecosystem(ecosystem)? else {
        return Ok(None);
    };
    let ranking = match algorithm {
        Algorithm::LocalQuery => {
            let calculation_uuid =
                ranking_calculation_uuid(student, ecosystem, algorithm, input_seq, -1);
            Ranking {
                exercise_uuids: det_shuffle(&eco.exercise_uuids, &calculation_uuid.to_string()),
                calculation_uuid,
                ecosystem_matrix_uuid: local_query_matrix_uuid(ecosystem),
                model_seq: -1,
            }
        }
        Algorithm::BiglearnSparfa => match models.latest_model(ecosystem) {
            None => Ranking {
                exercise_uuids: prior_ranking(&eco.exercise_uuids, ecosystem),
                calculation_uuid: ranking_calculation_uuid(
                    student, ecosystem, algorithm, input_seq, -1,
                ),
                ecosystem_matrix_uuid: Uuid::nil(),
                model_seq: -1,
            },
            Some(model) => {
                let calculation_uuid = ranking_calculation_uuid(
                    student,
                    ecosystem,
                    algorithm,
                    input_seq,
                    model.model_seq,
                );
                // The student's latest response per group among responses recorded in E.
                let mut latest: BTreeMap<ExerciseGroupUuid, ((i64, i64), bool)> = BTreeMap::new();
                for response in reader.view.student_responses(reader.course, student)? {
                    if response.ecosystem != ecosystem {
                        continue;
                    }
                    let Some(group) = reader.group(response.exercise)? else {
                        continue;
                    };
                    let at = (response.responded_at, response.course_seq.0);
                    let entry = latest.entry(group).or_insert((at, response.is_correct));
                    if at >= entry.0 {
                        *entry = (at, response.is_correct);
                    }
                }
                let responses: Vec<(usize, bool)> = latest
                    .iter()
                    .filter_map(|(group, (_, correct))| {
                        model.question(*group).map(|q| (q, *correct))
                    })
                    .collect();
                let mut candidates = Vec::with_capacity(eco.exercise_uuids.len());
                for exercise in &eco.exercise_uuids {
                    let q = reader.group(*exercise)?.and_then(|g| model.question(g));
                    candidates.push((*exercise, q));
                }
                let ranked = model.serving.rank_exercises(&responses, &candidates);
                let mut exercise_uuids: Vec<ExerciseUuid> =
                    ranked.ranked.into_iter().map(|(e, _)| e).collect();
                exercise_uuids.extend(det_shuffle(&ranked.unknown, &calculation_uuid.to_string()));
                Ranking {
                    exercise_uuids,
                    calculation_uuid,
                    ecosystem_matrix_uuid: model.matrix_uuid,
                    model_seq: model.model_seq,
                }
            }
        },
    };
    Ok(Some(ranking))
}
