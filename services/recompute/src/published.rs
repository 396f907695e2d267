//! What has been published: results as the read API serves them (the event log's results,
//! read back as records for the scheduler core) and the versions and content hashes the
//! shell published (docs/design/scheduler.md §12).

use biglearn_domain::state::StateError;
use biglearn_events::{ResultClueData, ResultKey, ResultKind, ResultRecord, ResultVersion};
use biglearn_projector::event_log::EventLog;
use biglearn_scheduler::{content_hash, PublishedView};
use serde_json::Value;
use uuid::Uuid;

/// The event log's stored results as a [`PublishedView`]: what the read API serves,
/// including results pushed over HTTP.
#[derive(Clone)]
pub struct EventLogPublished {
    pub log: EventLog,
}

fn uuid_field(content: &Value, field: &str) -> Option<Uuid> {
    content.get(field)?.as_str()?.parse().ok()
}

/// Rebuilds a record from a stored result (`results::stored_content`); `None` for a key
/// or content that is not a result's. Fields the store does not keep (the CLUE's
/// spy_info, course_uuid, producer) are left empty.
pub fn record_from_stored(
    key: &str,
    version: ResultVersion,
    content_json: &str,
) -> Option<ResultRecord> {
    let key = ResultKey::parse(key)?;
    let kind = key.kind();
    let content: Value = serde_json::from_str(content_json).ok()?;
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
    if biglearn_projector::results::is_withdrawn(&content) {
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

fn storage(error: impl std::fmt::Display) -> StateError {
    StateError(error.to_string())
}

impl PublishedView for EventLogPublished {
    fn result(&self, key: &str) -> Result<Option<ResultRecord>, StateError> {
        Ok(self
            .log
            .result(key)
            .map_err(storage)?
            .and_then(|(version, content)| record_from_stored(key, version, &content)))
    }

    fn results_about(
        &self,
        kind: ResultKind,
        subject: Uuid,
    ) -> Result<Vec<ResultRecord>, StateError> {
        Ok(self
            .log
            .results_with_prefix(&ResultKey::subject_prefix(kind, subject))
            .map_err(storage)?
            .into_iter()
            .filter_map(|(key, version, content)| record_from_stored(&key, version, &content))
            .collect())
    }
}

/// The last published version and content hash per result key, in their own sled tree
/// (`recompute_published`), written once a record's delivery is confirmed.
#[derive(Clone)]
pub struct PublishedVersions {
    tree: sled::Tree,
}

/// The tree name of [`PublishedVersions`].
pub const PUBLISHED_TREE: &str = "recompute_published";

impl PublishedVersions {
    pub fn open(db: &sled::Db) -> Result<PublishedVersions, sled::Error> {
        Ok(PublishedVersions {
            tree: db.open_tree(PUBLISHED_TREE)?,
        })
    }

    /// What was published under `key`; falls back to the event log's stored result (whose
    /// hash may differ for CLUEs, whose spy_info the log does not keep: then the result is
    /// published once more, which is harmless).
    pub fn stored(
        &self,
        key: &str,
        published: &EventLogPublished,
    ) -> Result<Option<(ResultVersion, [u8; 32])>, StateError> {
        if let Some(bytes) = self.tree.get(key.as_bytes()).map_err(storage)? {
            if let Some(entry) = decode_entry(&bytes) {
                return Ok(Some(entry));
            }
        }
        Ok(published
            .result(key)?
            .map(|record| (ResultVersion::of(&record), content_hash(&record))))
    }

    /// Records delivered results.
    pub fn record(&self, records: &[&ResultRecord]) -> Result<(), sled::Error> {
        let mut batch = sled::Batch::default();
        for record in records {
            let version = ResultVersion::of(record);
            let mut value = Vec::with_capacity(56);
            for field in [
                version.input_seq,
                version.model_seq,
                version.computed_at_micros,
            ] {
                value.extend_from_slice(&field.to_be_bytes());
            }
            value.extend_from_slice(&content_hash(record));
            batch.insert(record.key().into_bytes(), value);
        }
        self.tree.apply_batch(batch)
    }
}

fn decode_entry(bytes: &[u8]) -> Option<(ResultVersion, [u8; 32])> {
    let field = |idx: usize| -> Option<i64> {
        Some(i64::from_be_bytes(
            bytes.get(idx * 8..idx * 8 + 8)?.try_into().ok()?,
        ))
    };
    Some((
        ResultVersion {
            input_seq: field(0)?,
            model_seq: field(1)?,
            computed_at_micros: field(2)?,
        },
        bytes.get(24..56)?.try_into().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use biglearn_projector::results::{stored_content, version_of};

    fn check(record: ResultRecord) {
        let stored = stored_content(&record).to_string();
        let back = record_from_stored(&record.key(), version_of(&record), &stored)
            .expect("a stored result reads back");
        assert_eq!(back.key(), record.key());
        assert_eq!(back.exercise_uuids, record.exercise_uuids);
        assert_eq!(back.clue_data, record.clue_data);
        assert_eq!(back.ecosystem_matrix_uuid, record.ecosystem_matrix_uuid);
        assert_eq!(ResultVersion::of(&back), ResultVersion::of(&record));
        if record.clue_data.is_none() {
            assert_eq!(content_hash(&back), content_hash(&record));
        }
    }

    fn base(kind: ResultKind) -> ResultRecord {
        ResultRecord {
            kind,
            student_uuid: None,
            course_container_uuid: None,
            book_container_uuid: None,
            assignment_uuid: None,
            algorithm_name: "local_query".into(),
            calculation_uuid: Uuid::from_u128(9),
            ecosystem_matrix_uuid: None,
            exercise_uuids: None,
            clue_data: None,
            spy_info_json: "{}".into(),
            input_seq: 4,
            model_seq: -1,
            computed_at_micros: 77,
            course_uuid: Some(Uuid::from_u128(1)),
            producer: "scheduler".into(),
        }
    }

    #[test]
    fn results_about_a_subject_come_from_the_event_log() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let db = sled::Config::new()
            .path(dir.path())
            .open()
            .expect("sled opens");
        let log = EventLog::open(&db, "event_log").expect("the log opens");
        let assignment = Uuid::from_u128(5);
        let pes = |subject: Uuid, algorithm: &str| ResultRecord {
            assignment_uuid: Some(subject),
            algorithm_name: algorithm.into(),
            exercise_uuids: Some(vec![Uuid::from_u128(6)]),
            ..base(ResultKind::AssignmentPes)
        };
        let records = [
            pes(assignment, "local_query"),
            pes(assignment, "biglearn_sparfa"),
            pes(Uuid::from_u128(50), "local_query"),
            ResultRecord {
                assignment_uuid: Some(assignment),
                exercise_uuids: Some(vec![]),
                ..base(ResultKind::AssignmentSpes)
            },
        ];
        let rows: Vec<_> = records
            .iter()
            .map(|r| (r.key(), version_of(r), stored_content(r).to_string()))
            .collect();
        log.apply_results(&rows, &[]).expect("results are stored");
        let published = EventLogPublished { log };
        let about = published
            .results_about(ResultKind::AssignmentPes, assignment)
            .expect("a scan");
        let keys: Vec<String> = about.iter().map(ResultRecord::key).collect();
        assert_eq!(
            keys,
            vec![
                format!("assignment_pes|{assignment}|biglearn_sparfa"),
                format!("assignment_pes|{assignment}|local_query"),
            ]
        );
        assert_eq!(
            published
                .result(&records[0].key())
                .expect("a read")
                .and_then(|r| r.exercise_uuids),
            Some(vec![Uuid::from_u128(6)])
        );
    }

    #[test]
    fn stored_results_read_back_as_records() {
        check(ResultRecord {
            student_uuid: Some(Uuid::from_u128(2)),
            book_container_uuid: Some(Uuid::from_u128(3)),
            clue_data: Some(ResultClueData {
                minimum: 0.25,
                most_likely: 0.5,
                maximum: 0.75,
                is_real: true,
                ecosystem_uuid: Some(Uuid::from_u128(4)),
            }),
            ..base(ResultKind::StudentClue)
        });
        check(ResultRecord {
            assignment_uuid: Some(Uuid::from_u128(5)),
            algorithm_name: "student_driven_biglearn_sparfa".into(),
            ecosystem_matrix_uuid: Some(Uuid::nil()),
            exercise_uuids: Some(vec![Uuid::from_u128(6), Uuid::from_u128(7)]),
            spy_info_json:
                r#"{"assignment_type":"reading","exercise_algorithm_name":"biglearn_sparfa"}"#
                    .into(),
            ..base(ResultKind::AssignmentSpes)
        });
        check(ResultRecord {
            student_uuid: Some(Uuid::from_u128(8)),
            exercise_uuids: Some(vec![]),
            ..base(ResultKind::PracticeWorstAreas)
        });
        assert_eq!(
            record_from_stored(
                "nonsense|x|local_query",
                version_of(&base(ResultKind::StudentClue)),
                "{}"
            ),
            None
        );
    }
}
