//! Results in the event-log tree, typed: one row per result key, holding the version and
//! the `ResultRecord` exactly as `<prefix>.results` carries it (single-object Avro). The
//! results consumer stores the bytes it consumed, never re-encoded; readers decode the
//! record; only the read API renders Tutor's JSON, when it answers.
//!
//! Invariant: a lower version never replaces a higher one (docs/design/scheduler.md §12, D11).
//! The version is kept in front of the record so that this check reads 24 bytes and decodes
//! nothing.

use biglearn_events::{
    decode_result_record, encode_result_record, result_content_hash, ResultClueData, ResultKey,
    ResultKind, ResultRecord, ResultVersion,
};
use serde_json::Value;
use uuid::Uuid;

use super::{corrupt, position_key, EventLog};
use crate::ProjectionError;

/// `T ‖ result key text` → `input_seq ‖ model_seq ‖ computed_at (i64 BE) ‖ encoded record`.
const TAG_RESULT: u8 = b'T';
/// Rows of builds before typed results: `S ‖ key` → `version ‖ the content JSON`. Converted
/// to typed rows when the tree is opened ([`convert_json_results`]).
const TAG_JSON_RESULT: u8 = b'S';

/// A result to store: its key's text, its version and the encoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultRow {
    pub key: String,
    pub version: ResultVersion,
    /// `encode_result_record` of the record: for a consumed record, its value as consumed.
    pub encoded: Vec<u8>,
}

impl ResultRow {
    /// The row of `record`, encoding it.
    pub fn of(record: &ResultRecord) -> ResultRow {
        ResultRow {
            key: record.key(),
            version: ResultVersion::of(record),
            encoded: encode_result_record(record),
        }
    }

    /// The row of a consumed `<prefix>.results` value: decoded once to check it and to read
    /// its key and version; the bytes are kept as they are.
    pub fn decode(encoded: &[u8]) -> Result<ResultRow, biglearn_events::DecodeError> {
        let record = decode_result_record(encoded)?;
        Ok(ResultRow {
            key: record.key(),
            version: ResultVersion::of(&record),
            encoded: encoded.to_vec(),
        })
    }
}

fn row_key(tag: u8, key: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(key.len() + 1);
    bytes.push(tag);
    bytes.extend_from_slice(key.as_bytes());
    bytes
}

fn row_value(version: ResultVersion, encoded: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(24 + encoded.len());
    value.extend_from_slice(&version.input_seq.to_be_bytes());
    value.extend_from_slice(&version.model_seq.to_be_bytes());
    value.extend_from_slice(&version.computed_at_micros.to_be_bytes());
    value.extend_from_slice(encoded);
    value
}

fn row_version(value: &[u8]) -> Option<ResultVersion> {
    let field = |idx: usize| -> Option<i64> {
        Some(i64::from_be_bytes(
            value.get(idx * 8..idx * 8 + 8)?.try_into().ok()?,
        ))
    };
    Some(ResultVersion {
        input_seq: field(0)?,
        model_seq: field(1)?,
        computed_at_micros: field(2)?,
    })
}

fn row_record(value: &[u8]) -> Result<ResultRecord, ProjectionError> {
    value
        .get(24..)
        .and_then(|encoded| decode_result_record(encoded).ok())
        .ok_or_else(|| corrupt("result"))
}

fn key_text(key: &[u8]) -> Result<String, ProjectionError> {
    std::str::from_utf8(key.get(1..).unwrap_or_default())
        .map(str::to_owned)
        .map_err(|_| corrupt("result key"))
}

impl EventLog {
    /// Stores results, each unless a higher version is stored (D11), together with
    /// stream positions, in one batch. Returns, per result, whether it was stored;
    /// `false` means it was stale and dropped.
    pub fn apply_results(
        &self,
        results: &[ResultRow],
        positions: &[(&str, i32, i64)],
    ) -> Result<Vec<bool>, ProjectionError> {
        let _guard = self.apply_lock.lock();
        let mut overlay = self.view();
        let mut stored = Vec::with_capacity(results.len());
        for result in results {
            let slot = row_key(TAG_RESULT, &result.key);
            if let Some(existing) = overlay.get(&slot)? {
                let stored_version = row_version(&existing).ok_or_else(|| corrupt("result"))?;
                if result.version < stored_version {
                    stored.push(false);
                    continue;
                }
            }
            overlay.insert(slot, row_value(result.version, &result.encoded));
            stored.push(true);
        }
        for (topic, partition, next_offset) in positions {
            overlay.insert(
                position_key(topic, *partition),
                next_offset.to_be_bytes().to_vec(),
            );
        }
        overlay.commit()?;
        Ok(stored)
    }

    /// Digest of the stored results by their content: per key, `result_content_hash`, which
    /// leaves out the version (input_seq, model_seq, computed_at) and the calculation uuid:
    /// they name *when* a result was computed rather than what it says. `None` when no
    /// result is stored.
    pub fn results_digest(&self) -> Result<Option<String>, ProjectionError> {
        use sha2::Digest;
        let mut hasher = sha2::Sha256::new();
        let mut any = false;
        for row in self.rows_with_prefix(&[TAG_RESULT])? {
            let (key, value) = row?;
            hasher.update((key.len() as u64).to_be_bytes());
            hasher.update(&key);
            hasher.update(result_content_hash(&row_record(&value)?));
            any = true;
        }
        Ok(any.then(|| hex::encode(hasher.finalize())))
    }

    /// The stored result under `key` (the text of a `ResultKey`).
    pub fn result(&self, key: &str) -> Result<Option<ResultRecord>, ProjectionError> {
        match self.view().get(&row_key(TAG_RESULT, key))? {
            Some(value) => Ok(Some(row_record(&value)?)),
            None => Ok(None),
        }
    }

    /// Every stored result whose key starts with `prefix`, in key order, with its key's
    /// text (the scheduler reads a subject's results back, docs/design/scheduler.md §3.4).
    pub fn results_with_prefix(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, ResultRecord)>, ProjectionError> {
        let mut rows = Vec::new();
        for entry in self.rows_with_prefix(&row_key(TAG_RESULT, prefix))? {
            let (key, value) = entry?;
            rows.push((key_text(&key)?, row_record(&value)?));
        }
        Ok(rows)
    }
}

/// Converts the JSON result rows of an older build in `tree` into typed rows, in one batch;
/// returns how many it converted. A row that reads as no result (a key or content that is
/// not a result's) is dropped with a warning: results are derived data, computed again.
pub(super) fn convert_json_results(tree: &sled::Tree) -> Result<usize, ProjectionError> {
    let mut batch = sled::Batch::default();
    let mut n_converted = 0;
    for row in tree.scan_prefix([TAG_JSON_RESULT]) {
        let (key, value) = row?;
        let text = key_text(&key)?;
        let record = row_version(&value).and_then(|version| {
            let json = std::str::from_utf8(value.get(24..)?).ok()?;
            record_from_json(&text, version, json)
        });
        match record {
            Some(record) => {
                batch.insert(
                    row_key(TAG_RESULT, &text),
                    row_value(ResultVersion::of(&record), &encode_result_record(&record)),
                );
                n_converted += 1;
            }
            None => {
                tracing::warn!(key = %text, "A stored result of an older build could not be read; it is dropped and will be computed again.")
            }
        }
        batch.remove(key);
    }
    if n_converted > 0 {
        tracing::info!(
            n_converted,
            "Converted the stored results of an older build to typed rows."
        );
    }
    tree.apply_batch(batch)?;
    Ok(n_converted)
}

fn uuid_field(content: &Value, field: &str) -> Option<Uuid> {
    content.get(field)?.as_str()?.parse().ok()
}

/// The record an older build's JSON row stood for. That JSON kept what the read API
/// serves; what it did not keep (a CLUE's spy_info, the course, the producer) stays empty.
fn record_from_json(key: &str, version: ResultVersion, json: &str) -> Option<ResultRecord> {
    let key = ResultKey::parse(key)?;
    let kind = key.kind();
    let content: Value = serde_json::from_str(json).ok()?;
    let mut record = ResultRecord {
        kind,
        student_uuid: None,
        course_container_uuid: None,
        book_container_uuid: None,
        assignment_uuid: None,
        algorithm_name: key.algorithm_name().to_owned(),
        calculation_uuid: uuid_field(&content, "calculation_uuid").unwrap_or_default(),
        ecosystem_matrix_uuid: uuid_field(&content, "ecosystem_matrix_uuid"),
        exercise_uuids: None,
        clue_data: None,
        spy_info_json: "{}".into(),
        input_seq: version.input_seq,
        model_seq: version.model_seq,
        computed_at_micros: version.computed_at_micros,
        course_uuid: None,
        producer: String::new(),
    };
    match kind {
        ResultKind::StudentClue => {
            record.student_uuid = Some(key.subject());
            record.book_container_uuid = key.book_container();
        }
        ResultKind::TeacherClue => {
            record.course_container_uuid = Some(key.subject());
            record.book_container_uuid = key.book_container();
        }
        ResultKind::AssignmentPes | ResultKind::AssignmentSpes => {
            record.assignment_uuid = Some(key.subject());
        }
        ResultKind::PracticeWorstAreas => record.student_uuid = Some(key.subject()),
    }
    if content.get("withdrawn") == Some(&Value::Bool(true)) {
        // Neither exercises nor a CLUE: `ResultRecord::is_withdrawal`.
        return Some(record);
    }
    match kind {
        ResultKind::StudentClue | ResultKind::TeacherClue => {
            let clue = content.get("clue_data")?;
            record.clue_data = Some(ResultClueData {
                minimum: clue.get("minimum")?.as_f64()?,
                most_likely: clue.get("most_likely")?.as_f64()?,
                maximum: clue.get("maximum")?.as_f64()?,
                is_real: clue.get("is_real")?.as_bool()?,
                ecosystem_uuid: uuid_field(clue, "ecosystem_uuid"),
            });
        }
        _ => {
            record.exercise_uuids = Some(
                content
                    .get("exercise_uuids")?
                    .as_array()?
                    .iter()
                    .map(|id| id.as_str()?.parse().ok())
                    .collect::<Option<_>>()?,
            );
            if let Some(spy) = content.get("spy_info") {
                record.spy_info_json = spy.to_string();
            }
        }
    }
    Some(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (sled::Db, EventLog) {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let log = EventLog::open(&db, "event_log").unwrap();
        (db, log)
    }

    fn pes(assignment: u128, algorithm: &str, version: (i64, i64, i64)) -> ResultRecord {
        ResultRecord {
            kind: ResultKind::AssignmentPes,
            student_uuid: None,
            course_container_uuid: None,
            book_container_uuid: None,
            assignment_uuid: Some(Uuid::from_u128(assignment)),
            algorithm_name: algorithm.into(),
            calculation_uuid: Uuid::from_u128(9),
            ecosystem_matrix_uuid: Some(Uuid::from_u128(10)),
            exercise_uuids: Some(vec![Uuid::from_u128(6), Uuid::from_u128(7)]),
            clue_data: None,
            spy_info_json: r#"{"assignment_type":"reading"}"#.into(),
            input_seq: version.0,
            model_seq: version.1,
            computed_at_micros: version.2,
            course_uuid: Some(Uuid::from_u128(1)),
            producer: "scheduler".into(),
        }
    }

    #[test]
    fn a_stored_record_reads_back_whole_and_a_lower_version_is_dropped() {
        let (_db, log) = open();
        let newer = pes(5, "local_query", (4, -1, 77));
        let older = ResultRecord {
            exercise_uuids: Some(vec![]),
            ..pes(5, "local_query", (3, -1, 99))
        };
        let stored = log
            .apply_results(
                &[ResultRow::of(&newer), ResultRow::of(&older)],
                &[("p.results", 2, 11)],
            )
            .unwrap();
        assert_eq!(stored, vec![true, false]);
        assert_eq!(log.result(&newer.key()).unwrap(), Some(newer.clone()));
        assert_eq!(log.position("p.results", 2).unwrap(), Some(11));
        assert_eq!(
            log.result("assignment_pes|nothing|local_query").unwrap(),
            None
        );
        // The same version again replaces (D11: ≥), so a re-delivery is harmless.
        assert_eq!(
            log.apply_results(&[ResultRow::of(&newer)], &[]).unwrap(),
            vec![true]
        );
    }

    #[test]
    fn a_consumed_value_is_stored_as_consumed() {
        let (_db, log) = open();
        let record = pes(5, "local_query", (4, -1, 77));
        let encoded = encode_result_record(&record);
        let row = ResultRow::decode(&encoded).unwrap();
        assert_eq!(row, ResultRow::of(&record));
        assert!(ResultRow::decode(&encoded[..encoded.len() - 3]).is_err());
        log.apply_results(&[row], &[]).unwrap();
        let raw = log
            .tree
            .get(row_key(TAG_RESULT, &record.key()))
            .unwrap()
            .unwrap();
        assert_eq!(&raw[24..], &encoded[..]);
    }

    #[test]
    fn results_about_a_subject_come_in_key_order_and_the_digest_ignores_when() {
        let (_db, log) = open();
        let records = [
            pes(5, "local_query", (1, -1, 1)),
            pes(5, "biglearn_sparfa", (1, 0, 1)),
            pes(50, "local_query", (1, -1, 1)),
        ];
        let rows: Vec<ResultRow> = records.iter().map(ResultRow::of).collect();
        log.apply_results(&rows, &[]).unwrap();
        let prefix = ResultKey::subject_prefix(ResultKind::AssignmentPes, Uuid::from_u128(5));
        let keys: Vec<String> = log
            .results_with_prefix(&prefix)
            .unwrap()
            .into_iter()
            .map(|(key, record)| {
                assert_eq!(key, record.key());
                key
            })
            .collect();
        assert_eq!(keys, vec![records[1].key(), records[0].key()]);

        let digest = log.results_digest().unwrap().expect("results are stored");
        // Recomputed later with a new calculation uuid, same answer: same digest.
        let again = ResultRecord {
            calculation_uuid: Uuid::from_u128(99),
            ..pes(5, "local_query", (2, -1, 5))
        };
        log.apply_results(&[ResultRow::of(&again)], &[]).unwrap();
        assert_eq!(log.results_digest().unwrap(), Some(digest.clone()));
        let changed = ResultRecord {
            exercise_uuids: Some(vec![Uuid::from_u128(7)]),
            ..pes(5, "local_query", (3, -1, 5))
        };
        log.apply_results(&[ResultRow::of(&changed)], &[]).unwrap();
        assert_ne!(log.results_digest().unwrap(), Some(digest));
    }

    #[test]
    fn json_rows_of_an_older_build_become_typed_rows_when_the_tree_opens() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("event_log").unwrap();
        let student = Uuid::from_u128(2);
        let book = Uuid::from_u128(3);
        let clue_key = ResultKey::student_clue(student, book, "local_query").text();
        let pes_key = pes(5, "local_query", (0, 0, 0)).key();
        let withdrawn_key = pes(6, "biglearn_sparfa", (0, 0, 0)).key();
        let json_row = |version: ResultVersion, json: &str| {
            let mut value = row_value(version, &[]);
            value.extend_from_slice(json.as_bytes());
            value
        };
        let version = ResultVersion {
            input_seq: 4,
            model_seq: -1,
            computed_at_micros: 77,
        };
        let rows = [
            (
                clue_key.clone(),
                json_row(
                    version,
                    &format!(
                        r#"{{"calculation_uuid":"{}","clue_data":{{"minimum":0.25,"most_likely":0.5,"maximum":0.75,"is_real":true,"ecosystem_uuid":"{}"}}}}"#,
                        Uuid::from_u128(9),
                        Uuid::from_u128(4)
                    ),
                ),
            ),
            (
                pes_key.clone(),
                json_row(
                    version,
                    &format!(
                        r#"{{"calculation_uuid":"{}","ecosystem_matrix_uuid":"{}","exercise_uuids":["{}","{}"],"spy_info":{{"assignment_type":"reading"}}}}"#,
                        Uuid::from_u128(9),
                        Uuid::from_u128(10),
                        Uuid::from_u128(6),
                        Uuid::from_u128(7)
                    ),
                ),
            ),
            (
                withdrawn_key.clone(),
                json_row(version, r#"{"withdrawn":true}"#),
            ),
            ("nonsense|x|local_query".to_owned(), json_row(version, "{}")),
        ];
        for (key, value) in rows {
            tree.insert(row_key(TAG_JSON_RESULT, &key), value).unwrap();
        }

        let log = EventLog::open(&db, "event_log").unwrap();
        assert_eq!(tree.scan_prefix([TAG_JSON_RESULT]).count(), 0);
        let clue = log.result(&clue_key).unwrap().expect("the CLUE converted");
        assert_eq!(ResultVersion::of(&clue), version);
        assert_eq!(clue.student_uuid, Some(student));
        assert_eq!(clue.book_container_uuid, Some(book));
        assert_eq!(
            clue.clue_data,
            Some(ResultClueData {
                minimum: 0.25,
                most_likely: 0.5,
                maximum: 0.75,
                is_real: true,
                ecosystem_uuid: Some(Uuid::from_u128(4)),
            })
        );
        let converted = log.result(&pes_key).unwrap().expect("the PEs converted");
        assert_eq!(
            result_content_hash(&converted),
            result_content_hash(&pes(5, "local_query", (4, -1, 77))),
            "what a reader sees survives the conversion"
        );
        assert!(log
            .result(&withdrawn_key)
            .unwrap()
            .expect("the withdrawal converted")
            .is_withdrawal());
        assert_eq!(log.results_with_prefix("").unwrap().len(), 3);
        // Opening again converts nothing more.
        assert_eq!(convert_json_results(&tree).unwrap(), 0);
    }
}
