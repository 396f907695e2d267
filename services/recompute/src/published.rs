//! What has been published: results as the read API serves them (the event log's results,
//! read back as records for the scheduler core) and the versions and content hashes the
//! shell published (docs/design/scheduler.md §12).

use biglearn_domain::state::StateError;
use biglearn_events::{ResultKey, ResultKind, ResultRecord, ResultVersion};
use biglearn_projector::event_log::EventLog;
use biglearn_scheduler::{content_hash, PublishedView};
use uuid::Uuid;

/// The event log's stored results as a [`PublishedView`]: what the read API serves,
/// including results pushed over HTTP.
#[derive(Clone)]
pub struct EventLogPublished {
    pub log: EventLog,
}

fn storage(error: impl std::fmt::Display) -> StateError {
    StateError(error.to_string())
}

impl PublishedView for EventLogPublished {
    fn result(&self, key: &str) -> Result<Option<ResultRecord>, StateError> {
        self.log.result(key).map_err(storage)
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
            .map(|(_, record)| record)
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

    /// What was published under `key`; falls back to the event log's stored result (the
    /// whole record, so its hash is the one it was published with; a result converted from
    /// an older build's JSON row lacks a CLUE's spy_info: then it is published once more,
    /// which is harmless).
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
    use biglearn_projector::event_log::ResultRow;

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
        let rows: Vec<ResultRow> = records.iter().map(ResultRow::of).collect();
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
}
