//! `ModelComputed` (docs/design/sparfa.md §9): one fitted SPARFA model of one ecosystem, on
//! `<prefix>.models`, keyed by ecosystem.

use uuid::Uuid;

use crate::binary::{AvroReader, AvroWriter};
use crate::error::DecodeError;
use crate::record::{aggregate_key, EncodedRecord};
use crate::schemas::SchemaFamily;
use crate::wire::{self, WireFormat};

/// The fit's hyper-parameters as the v1 schema records them.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelHyperparameters {
    pub lambda_h_l2: f64,
    pub lambda_nh_l1: f64,
    pub lambda_d_l2: f64,
    pub gamma_u: f64,
    pub holdout_modulus: i32,
    pub patience: i32,
    pub max_outer_iterations: i32,
    pub inner_steps: i32,
}

/// How far into one partition of an input topic a model was trained.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TopicPosition {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
}

/// One `ModelComputed` record.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelComputed {
    /// `UUIDv5(NS_BIGLEARN, "model/<ecosystem_uuid>/<model_seq>")`.
    pub matrix_uuid: Uuid,
    pub ecosystem_uuid: Uuid,
    /// 0 for the initial model, +1 per refit.
    pub model_seq: i64,
    /// `biglearn_sparfa`.
    pub algorithm: String,
    pub spec_version: i32,
    /// `initial`, `response_growth` or `manual`.
    pub trigger: String,
    /// Exercise groups, ascending.
    pub q_ids: Vec<Uuid>,
    /// Concepts: the page-modules ascending (then any general concepts of the fit).
    pub c_ids: Vec<Uuid>,
    /// Easiness, one per question.
    pub d: Vec<f64>,
    /// W's COO entries with W > 0, sorted by (col, row).
    pub w_rows: Vec<i32>,
    pub w_cols: Vec<i32>,
    pub w_values: Vec<f64>,
    /// H's COO entries, sorted by (col, row).
    pub h_rows: Vec<i32>,
    pub h_cols: Vec<i32>,
    pub hyperparameters: ModelHyperparameters,
    pub settings_version: i64,
    pub trained_through: Vec<TopicPosition>,
    pub training_observations: i64,
    pub holdout_observations: i64,
    pub learners: i64,
    pub training_set_sha256: [u8; 32],
    pub holdout_accuracy: Option<f64>,
    pub holdout_log_loss: Option<f64>,
    pub outer_iterations: i32,
    pub best_iteration: i32,
    pub fit_seconds: f64,
    pub created_at_micros: i64,
}

/// Encodes a model in single-object encoding.
pub fn encode_model_computed(model: &ModelComputed) -> Vec<u8> {
    let hint = 512
        + 37 * (model.q_ids.len() + model.c_ids.len())
        + 8 * model.d.len()
        + 14 * model.w_values.len()
        + 6 * model.h_rows.len();
    let buf = WireFormat::SingleObject.start(SchemaFamily::ModelComputed, hint);
    let mut w = AvroWriter::with_buffer(buf);
    w.uuid(model.matrix_uuid);
    w.uuid(model.ecosystem_uuid);
    w.long(model.model_seq);
    w.string(&model.algorithm);
    w.int(model.spec_version);
    w.string(&model.trigger);
    w.array(&model.q_ids, |w, id| w.uuid(*id));
    w.array(&model.c_ids, |w, id| w.uuid(*id));
    w.array(&model.d, |w, x| w.double(*x));
    w.array(&model.w_rows, |w, x| w.int(*x));
    w.array(&model.w_cols, |w, x| w.int(*x));
    w.array(&model.w_values, |w, x| w.double(*x));
    w.array(&model.h_rows, |w, x| w.int(*x));
    w.array(&model.h_cols, |w, x| w.int(*x));
    let h = &model.hyperparameters;
    for x in [h.lambda_h_l2, h.lambda_nh_l1, h.lambda_d_l2, h.gamma_u] {
        w.double(x);
    }
    for x in [
        h.holdout_modulus,
        h.patience,
        h.max_outer_iterations,
        h.inner_steps,
    ] {
        w.int(x);
    }
    w.long(model.settings_version);
    w.array(&model.trained_through, |w, p| {
        w.string(&p.topic);
        w.int(p.partition);
        w.long(p.next_offset);
    });
    w.long(model.training_observations);
    w.long(model.holdout_observations);
    w.long(model.learners);
    // `fixed(32)`: the raw bytes, no length prefix.
    w.buf.extend_from_slice(&model.training_set_sha256);
    w.optional(model.holdout_accuracy.as_ref(), |w, x| w.double(*x));
    w.optional(model.holdout_log_loss.as_ref(), |w, x| w.double(*x));
    w.int(model.outer_iterations);
    w.int(model.best_iteration);
    w.double(model.fit_seconds);
    w.long(model.created_at_micros);
    w.buf
}

/// Reads a `fixed(32)`. The reader has no `fixed` primitive; four doubles are 32 raw
/// bytes, and `f64::from_le_bytes`/`to_le_bytes` round-trip every bit pattern (NaNs too).
fn sha256(r: &mut AvroReader<'_>) -> Result<[u8; 32], DecodeError> {
    let mut out = [0u8; 32];
    for chunk in out.chunks_exact_mut(8) {
        chunk.copy_from_slice(&r.double()?.to_le_bytes());
    }
    Ok(out)
}

/// Decodes a model in either framing, without a registry.
pub fn decode_model_computed(bytes: &[u8]) -> Result<ModelComputed, DecodeError> {
    let family = SchemaFamily::ModelComputed;
    let body = wire::current_body(
        family,
        wire::unframe(family, bytes, &crate::process::ProcessLookup)?,
        |_| Ok(()),
    )?;
    let mut r = AvroReader::new(&body);
    let model = ModelComputed {
        matrix_uuid: r.uuid()?,
        ecosystem_uuid: r.uuid()?,
        model_seq: r.long()?,
        algorithm: r.string()?,
        spec_version: r.int()?,
        trigger: r.string()?,
        q_ids: r.array(AvroReader::uuid)?,
        c_ids: r.array(AvroReader::uuid)?,
        d: r.array(AvroReader::double)?,
        w_rows: r.array(AvroReader::int)?,
        w_cols: r.array(AvroReader::int)?,
        w_values: r.array(AvroReader::double)?,
        h_rows: r.array(AvroReader::int)?,
        h_cols: r.array(AvroReader::int)?,
        hyperparameters: ModelHyperparameters {
            lambda_h_l2: r.double()?,
            lambda_nh_l1: r.double()?,
            lambda_d_l2: r.double()?,
            gamma_u: r.double()?,
            holdout_modulus: r.int()?,
            patience: r.int()?,
            max_outer_iterations: r.int()?,
            inner_steps: r.int()?,
        },
        settings_version: r.long()?,
        trained_through: r.array(|r| {
            Ok(TopicPosition {
                topic: r.string()?,
                partition: r.int()?,
                next_offset: r.long()?,
            })
        })?,
        training_observations: r.long()?,
        holdout_observations: r.long()?,
        learners: r.long()?,
        training_set_sha256: sha256(&mut r)?,
        holdout_accuracy: r.optional(AvroReader::double)?,
        holdout_log_loss: r.optional(AvroReader::double)?,
        outer_iterations: r.int()?,
        best_iteration: r.int()?,
        fit_seconds: r.double()?,
        created_at_micros: r.long()?,
    };
    r.finish()?;
    Ok(model)
}

/// A model as a `<prefix>.models` record, keyed by its ecosystem (36-byte uuid, no headers).
pub fn model_computed_record(model: &ModelComputed) -> EncodedRecord {
    EncodedRecord {
        key: aggregate_key(model.ecosystem_uuid),
        value: encode_model_computed(model),
        headers: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(n_questions: usize, holdout: Option<(f64, f64)>) -> ModelComputed {
        let q_ids: Vec<Uuid> = (0..n_questions as u128)
            .map(|i| Uuid::from_u128(0x100 + i))
            .collect();
        let w_cols: Vec<i32> = (0..n_questions as i32).collect();
        ModelComputed {
            matrix_uuid: Uuid::from_u128(1),
            ecosystem_uuid: Uuid::from_u128(2),
            model_seq: 3,
            algorithm: "biglearn_sparfa".into(),
            spec_version: 1,
            trigger: "response_growth".into(),
            c_ids: vec![Uuid::from_u128(0x200), Uuid::from_u128(0x201)],
            d: (0..n_questions).map(|i| i as f64 * -0.25).collect(),
            w_rows: vec![1; n_questions],
            w_values: (0..n_questions).map(|i| 0.5 + i as f64).collect(),
            h_rows: vec![0; n_questions],
            h_cols: w_cols.clone(),
            w_cols,
            q_ids,
            hyperparameters: ModelHyperparameters {
                lambda_h_l2: 0.05,
                lambda_nh_l1: 10.0,
                lambda_d_l2: 0.05,
                gamma_u: 1.0,
                holdout_modulus: 10,
                patience: 20,
                max_outer_iterations: 500,
                inner_steps: 5,
            },
            settings_version: 7,
            trained_through: vec![TopicPosition {
                topic: "t.sparfa-responses".into(),
                partition: 2,
                next_offset: 1234,
            }],
            training_observations: 900,
            holdout_observations: 100,
            learners: 40,
            training_set_sha256: std::array::from_fn(|i| (i * 37 % 256) as u8),
            holdout_accuracy: holdout.map(|(a, _)| a),
            holdout_log_loss: holdout.map(|(_, l)| l),
            outer_iterations: 44,
            best_iteration: 24,
            fit_seconds: 1.5,
            created_at_micros: 1_700_000_000_000_000,
        }
    }

    fn check(model: ModelComputed) {
        let bytes = encode_model_computed(&model);
        assert_eq!(decode_model_computed(&bytes).unwrap(), model);
        // apache-avro reads the bytes and writes exactly the same ones back.
        let value = wire::decode_value(
            SchemaFamily::ModelComputed,
            &bytes,
            &crate::wire::NoSchemaRegistry,
        )
        .expect("apache-avro reads our encoding");
        let again =
            wire::encode_value(SchemaFamily::ModelComputed, value, WireFormat::SingleObject)
                .expect("apache-avro writes it back");
        assert_eq!(again, bytes);
        assert!(decode_model_computed(&bytes[..bytes.len() - 1]).is_err());
        let record = model_computed_record(&model);
        assert_eq!(record.key, model.ecosystem_uuid.to_string().into_bytes());
    }

    #[test]
    fn models_round_trip_byte_for_byte_with_apache_avro() {
        check(model(0, None));
        check(model(3, Some((0.75, 0.5))));
        check(model(300, Some((0.5, 0.69))));
    }
}
