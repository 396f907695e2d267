//! `ResultRecord` (docs/design/scheduler.md §12): one computed or pushed result with its version,
//! on `<prefix>.results`, keyed by its result key.

use uuid::Uuid;

use crate::binary::{AvroReader, AvroWriter};
use crate::error::DecodeError;
use crate::record::EncodedRecord;
use crate::schemas::SchemaFamily;
use crate::wire::{self, WireFormat};

/// What a result is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResultKind {
    StudentClue,
    TeacherClue,
    AssignmentPes,
    AssignmentSpes,
    PracticeWorstAreas,
}

impl ResultKind {
    /// In schema symbol order.
    pub const ALL: [ResultKind; 5] = [
        ResultKind::StudentClue,
        ResultKind::TeacherClue,
        ResultKind::AssignmentPes,
        ResultKind::AssignmentSpes,
        ResultKind::PracticeWorstAreas,
    ];

    /// The snake_case name, which starts every result key.
    pub fn as_str(self) -> &'static str {
        match self {
            ResultKind::StudentClue => "student_clue",
            ResultKind::TeacherClue => "teacher_clue",
            ResultKind::AssignmentPes => "assignment_pes",
            ResultKind::AssignmentSpes => "assignment_spes",
            ResultKind::PracticeWorstAreas => "practice_worst_areas",
        }
    }

    /// The kind named `name` (`as_str`), if any.
    pub fn parse(name: &str) -> Option<ResultKind> {
        ResultKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }

    /// How many uuids name a result of this kind: (student, book container), (course
    /// container, book container), (assignment) or (student).
    fn n_ids(self) -> usize {
        match self {
            ResultKind::StudentClue | ResultKind::TeacherClue => 2,
            ResultKind::AssignmentPes
            | ResultKind::AssignmentSpes
            | ResultKind::PracticeWorstAreas => 1,
        }
    }

    fn index(self) -> usize {
        ResultKind::ALL
            .iter()
            .position(|kind| *kind == self)
            .unwrap_or_default()
    }
}

/// Which result (docs/design/scheduler.md §12): its kind, the uuids it is about, and its
/// algorithm. Its text, `<kind>|<uuid>[|<uuid>]|<algorithm_name>`, is the Kafka key on
/// `<prefix>.results` and the key results are stored and read under; this module is the
/// one place that text is written ([`ResultKey::text`], [`ResultRecord::key`]) and read
/// ([`ResultKey::parse`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ResultKey {
    kind: ResultKind,
    /// The subject (student, course container or assignment), then the book container of
    /// a CLUE.
    ids: (Uuid, Option<Uuid>),
    /// Lower case: names are case-insensitive (docs/design/api.md §5.1).
    algorithm_name: String,
}

impl ResultKey {
    /// A student's CLUE on a book container.
    pub fn student_clue(student: Uuid, book_container: Uuid, algorithm_name: &str) -> Self {
        ResultKey::of(
            ResultKind::StudentClue,
            (student, Some(book_container)),
            algorithm_name,
        )
    }

    /// A course container's (teacher) CLUE on a book container.
    pub fn teacher_clue(
        course_container: Uuid,
        book_container: Uuid,
        algorithm_name: &str,
    ) -> Self {
        let ids = (course_container, Some(book_container));
        ResultKey::of(ResultKind::TeacherClue, ids, algorithm_name)
    }

    /// An assignment's PEs or SPEs (`kind` is one of the two).
    pub fn assignment(kind: ResultKind, assignment: Uuid, algorithm_name: &str) -> Self {
        debug_assert_eq!(kind.n_ids(), 1, "{kind:?} is not about an assignment");
        ResultKey::of(kind, (assignment, None), algorithm_name)
    }

    /// A student's practice-worst-areas exercises.
    pub fn practice_worst_areas(student: Uuid, algorithm_name: &str) -> Self {
        ResultKey::of(
            ResultKind::PracticeWorstAreas,
            (student, None),
            algorithm_name,
        )
    }

    fn of(kind: ResultKind, ids: (Uuid, Option<Uuid>), algorithm_name: &str) -> Self {
        ResultKey {
            kind,
            ids,
            algorithm_name: algorithm_name.to_lowercase(),
        }
    }

    /// Reads a key's text back; `None` for text that is not a result key.
    pub fn parse(text: &str) -> Option<ResultKey> {
        let mut parts = text.split('|');
        let kind = ResultKind::parse(parts.next()?)?;
        let first: Uuid = parts.next()?.parse().ok()?;
        let second = match kind.n_ids() {
            2 => Some(parts.next()?.parse().ok()?),
            _ => None,
        };
        let algorithm_name = parts.next()?;
        let is_lower_case = algorithm_name
            .chars()
            .all(|c| c.to_lowercase().eq(std::iter::once(c)));
        let is_whole = parts.next().is_none() && is_lower_case;
        is_whole.then(|| ResultKey {
            kind,
            ids: (first, second),
            algorithm_name: algorithm_name.to_owned(),
        })
    }

    /// The key's text.
    pub fn text(&self) -> String {
        key_text(self.kind, self.ids, &self.algorithm_name)
    }

    /// The text every key of `kind` about `subject` starts with, whatever the rest:
    /// `<kind>|<subject>|`.
    pub fn subject_prefix(kind: ResultKind, subject: Uuid) -> String {
        format!("{}|{}|", kind.as_str(), subject)
    }

    /// What the result is.
    pub fn kind(&self) -> ResultKind {
        self.kind
    }

    /// The student, course container or assignment the result is about.
    pub fn subject(&self) -> Uuid {
        self.ids.0
    }

    /// The book container of a CLUE; `None` for other kinds.
    pub fn book_container(&self) -> Option<Uuid> {
        self.ids.1
    }

    /// The algorithm's name, lower case.
    pub fn algorithm_name(&self) -> &str {
        &self.algorithm_name
    }
}

/// A result's version `(input_seq, model_seq, computed_at)` (docs/design/scheduler.md §12),
/// compared lexicographically: a result never replaces one of a higher version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResultVersion {
    pub input_seq: i64,
    pub model_seq: i64,
    pub computed_at_micros: i64,
}

impl ResultVersion {
    /// The version a record carries.
    pub fn of(record: &ResultRecord) -> ResultVersion {
        ResultVersion {
            input_seq: record.input_seq,
            model_seq: record.model_seq,
            computed_at_micros: record.computed_at_micros,
        }
    }
}

/// A CLUE as results carry it.
#[derive(Clone, Debug, PartialEq)]
pub struct ResultClueData {
    pub minimum: f64,
    pub most_likely: f64,
    pub maximum: f64,
    pub is_real: bool,
    pub ecosystem_uuid: Option<Uuid>,
}

/// One result with its version `(input_seq, model_seq, computed_at)`.
///
/// A record with neither `exercise_uuids` nor `clue_data` is a **withdrawal**
/// (docs/design/scheduler.md §12, S9): the key's result is no longer served (reads answer `*_unready`),
/// and its version still orders it against the key's other records. Every served result has
/// one of the two, so schema v1 carries withdrawals without a new field.
#[derive(Clone, Debug, PartialEq)]
pub struct ResultRecord {
    pub kind: ResultKind,
    pub student_uuid: Option<Uuid>,
    pub course_container_uuid: Option<Uuid>,
    pub book_container_uuid: Option<Uuid>,
    pub assignment_uuid: Option<Uuid>,
    /// Lower case.
    pub algorithm_name: String,
    pub calculation_uuid: Uuid,
    pub ecosystem_matrix_uuid: Option<Uuid>,
    pub exercise_uuids: Option<Vec<Uuid>>,
    pub clue_data: Option<ResultClueData>,
    pub spy_info_json: String,
    pub input_seq: i64,
    pub model_seq: i64,
    pub computed_at_micros: i64,
    pub course_uuid: Option<Uuid>,
    /// `scheduler` or `http`.
    pub producer: String,
}

impl ResultRecord {
    /// Whether this record withdraws its key's result instead of carrying one.
    pub fn is_withdrawal(&self) -> bool {
        self.exercise_uuids.is_none() && self.clue_data.is_none()
    }

    /// The withdrawal of `served` at version `(input_seq, served.model_seq, computed_at)`:
    /// the same key and model sequence, no content, so it replaces `served` and a result
    /// computed later replaces it.
    pub fn withdrawal_of(served: &ResultRecord, input_seq: i64, computed_at_micros: i64) -> Self {
        ResultRecord {
            calculation_uuid: Uuid::nil(),
            ecosystem_matrix_uuid: None,
            exercise_uuids: None,
            clue_data: None,
            spy_info_json: "{}".into(),
            input_seq: input_seq.max(served.input_seq),
            computed_at_micros: computed_at_micros.max(served.computed_at_micros),
            ..served.clone()
        }
    }

    /// Which result this is. Its fields hold the uuids its kind is about: a record whose
    /// kind's uuids are missing (never produced here) gets nil ones.
    pub fn result_key(&self) -> ResultKey {
        ResultKey {
            kind: self.kind,
            ids: self.key_ids(),
            algorithm_name: self.algorithm_name.clone(),
        }
    }

    /// The text of [`ResultRecord::result_key`] (the Kafka key), written without building
    /// the key first: every published and stored result asks for it.
    pub fn key(&self) -> String {
        key_text(self.kind, self.key_ids(), &self.algorithm_name)
    }

    fn key_ids(&self) -> (Uuid, Option<Uuid>) {
        let id = |id: Option<Uuid>| id.unwrap_or_default();
        match self.kind {
            ResultKind::StudentClue => (id(self.student_uuid), self.book_container_uuid),
            ResultKind::TeacherClue => (id(self.course_container_uuid), self.book_container_uuid),
            ResultKind::AssignmentPes | ResultKind::AssignmentSpes => {
                (id(self.assignment_uuid), None)
            }
            ResultKind::PracticeWorstAreas => (id(self.student_uuid), None),
        }
    }
}

/// `<kind>|<uuid>[|<uuid>]|<algorithm_name>`: the one writer of a result key's text.
fn key_text(kind: ResultKind, ids: (Uuid, Option<Uuid>), algorithm_name: &str) -> String {
    let mut text = String::with_capacity(kind.as_str().len() + 2 * 37 + 1 + algorithm_name.len());
    text.push_str(kind.as_str());
    for id in [Some(ids.0), ids.1].into_iter().flatten() {
        text.push('|');
        text.push_str(id.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
    }
    text.push('|');
    text.push_str(algorithm_name);
    text
}

/// Encodes a result in single-object encoding.
pub fn encode_result_record(record: &ResultRecord) -> Vec<u8> {
    let hint =
        256 + record.spy_info_json.len() + 37 * record.exercise_uuids.as_ref().map_or(0, Vec::len);
    let buf = WireFormat::SingleObject.start(SchemaFamily::ResultRecord, hint);
    let mut w = AvroWriter::with_buffer(buf);
    w.index(record.kind.index());
    for id in [
        record.student_uuid,
        record.course_container_uuid,
        record.book_container_uuid,
        record.assignment_uuid,
    ] {
        w.optional(id.as_ref(), |w, id| w.uuid(*id));
    }
    w.string(&record.algorithm_name);
    w.uuid(record.calculation_uuid);
    w.optional(record.ecosystem_matrix_uuid.as_ref(), |w, id| w.uuid(*id));
    w.optional(record.exercise_uuids.as_ref(), |w, ids| {
        w.array(ids, |w, id| w.uuid(*id));
    });
    w.optional(record.clue_data.as_ref(), |w, clue| {
        w.double(clue.minimum);
        w.double(clue.most_likely);
        w.double(clue.maximum);
        w.boolean(clue.is_real);
        w.optional(clue.ecosystem_uuid.as_ref(), |w, id| w.uuid(*id));
    });
    w.string(&record.spy_info_json);
    w.long(record.input_seq);
    w.long(record.model_seq);
    w.long(record.computed_at_micros);
    w.optional(record.course_uuid.as_ref(), |w, id| w.uuid(*id));
    w.string(&record.producer);
    w.buf
}

/// Decodes a result in either framing, without a registry.
pub fn decode_result_record(bytes: &[u8]) -> Result<ResultRecord, DecodeError> {
    let family = SchemaFamily::ResultRecord;
    let body = wire::current_body(
        family,
        wire::unframe(family, bytes, &crate::process::ProcessLookup)?,
        |_| Ok(()),
    )?;
    let mut r = AvroReader::new(&body);
    let kind = ResultKind::ALL[r.index(ResultKind::ALL.len())?];
    let student_uuid = r.optional(AvroReader::uuid)?;
    let course_container_uuid = r.optional(AvroReader::uuid)?;
    let book_container_uuid = r.optional(AvroReader::uuid)?;
    let assignment_uuid = r.optional(AvroReader::uuid)?;
    let record = ResultRecord {
        kind,
        student_uuid,
        course_container_uuid,
        book_container_uuid,
        assignment_uuid,
        algorithm_name: r.string()?,
        calculation_uuid: r.uuid()?,
        ecosystem_matrix_uuid: r.optional(AvroReader::uuid)?,
        exercise_uuids: r.optional(|r| r.array(AvroReader::uuid))?,
        clue_data: r.optional(|r| {
            Ok(ResultClueData {
                minimum: r.double()?,
                most_likely: r.double()?,
                maximum: r.double()?,
                is_real: r.boolean()?,
                ecosystem_uuid: r.optional(AvroReader::uuid)?,
            })
        })?,
        spy_info_json: r.string()?,
        input_seq: r.long()?,
        model_seq: r.long()?,
        computed_at_micros: r.long()?,
        course_uuid: r.optional(AvroReader::uuid)?,
        producer: r.string()?,
    };
    r.finish()?;
    Ok(record)
}

/// SHA-256 over what a reader sees of a result, excluding the version and the calculation
/// uuid (both change with every computation even when the answer does not). The scheduler
/// skips publishing a record whose hash equals the stored one's; the event log's results
/// digest hashes it per key. Its bytes must not change: published hashes are stored.
pub fn result_content_hash(record: &ResultRecord) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(record.key().as_bytes());
    hasher.update(b"\n");
    if let Some(matrix) = record.ecosystem_matrix_uuid {
        hasher.update(matrix.as_bytes());
    }
    hasher.update(b"\n");
    if let Some(exercises) = &record.exercise_uuids {
        hasher.update((exercises.len() as u64).to_be_bytes());
        for exercise in exercises {
            hasher.update(exercise.as_bytes());
        }
    }
    hasher.update(b"\n");
    if let Some(clue) = &record.clue_data {
        for value in [clue.minimum, clue.most_likely, clue.maximum] {
            hasher.update(value.to_bits().to_be_bytes());
        }
        hasher.update([u8::from(clue.is_real)]);
        if let Some(ecosystem) = clue.ecosystem_uuid {
            hasher.update(ecosystem.as_bytes());
        }
    }
    hasher.update(b"\n");
    hasher.update(record.spy_info_json.as_bytes());
    hasher.finalize().into()
}

/// A result as a `<prefix>.results` record, keyed by its result key.
pub fn result_record(record: &ResultRecord) -> EncodedRecord {
    EncodedRecord {
        key: record.key().into_bytes(),
        value: encode_result_record(record),
        headers: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uuid(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn check(record: ResultRecord, expected_key: &str) {
        assert_eq!(record.key(), expected_key);
        let bytes = encode_result_record(&record);
        assert_eq!(decode_result_record(&bytes).unwrap(), record);
        // apache-avro reads the same bytes with the embedded schema.
        wire::decode_value(
            SchemaFamily::ResultRecord,
            &bytes,
            &crate::wire::NoSchemaRegistry,
        )
        .expect("apache-avro reads our encoding");
        assert!(decode_result_record(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn result_keys_read_back_what_they_write() {
        let keys = [
            ResultKey::student_clue(uuid(1), uuid(2), "Local_Query"),
            ResultKey::teacher_clue(uuid(3), uuid(4), "biglearn_sparfa"),
            ResultKey::assignment(ResultKind::AssignmentPes, uuid(5), "x"),
            ResultKey::assignment(ResultKind::AssignmentSpes, uuid(5), "x"),
            ResultKey::practice_worst_areas(uuid(6), "tesr"),
        ];
        for key in &keys {
            assert_eq!(ResultKey::parse(&key.text()).as_ref(), Some(key));
            let prefix = ResultKey::subject_prefix(key.kind(), key.subject());
            assert!(key.text().starts_with(&prefix), "{}", key.text());
        }
        assert_eq!(
            keys[0].text(),
            "student_clue|00000000-0000-0000-0000-000000000001|00000000-0000-0000-0000-000000000002|local_query"
        );
        for text in [
            "",
            "student_clue",
            "student_clue|00000000-0000-0000-0000-000000000001|local_query",
            "assignment_pes|00000000-0000-0000-0000-000000000005|x|y",
            "assignment_pes|00000000-0000-0000-0000-000000000005|X",
            "no_such_kind|00000000-0000-0000-0000-000000000005|x",
            "practice_worst_areas|not-a-uuid|x",
        ] {
            assert_eq!(ResultKey::parse(text), None, "{text}");
        }
    }

    #[test]
    fn results_round_trip_with_their_keys() {
        check(
            ResultRecord {
                kind: ResultKind::AssignmentPes,
                student_uuid: None,
                course_container_uuid: None,
                book_container_uuid: None,
                assignment_uuid: Some(uuid(7)),
                algorithm_name: "local_query".into(),
                calculation_uuid: uuid(8),
                ecosystem_matrix_uuid: Some(uuid(9)),
                exercise_uuids: Some(vec![uuid(1), uuid(2)]),
                clue_data: None,
                spy_info_json: "{\"k\":1}".into(),
                input_seq: 10,
                model_seq: -1,
                computed_at_micros: 1_500_000_000_000_000,
                course_uuid: Some(uuid(3)),
                producer: "scheduler".into(),
            },
            "assignment_pes|00000000-0000-0000-0000-000000000007|local_query",
        );
        check(
            ResultRecord {
                kind: ResultKind::TeacherClue,
                student_uuid: None,
                course_container_uuid: Some(uuid(4)),
                book_container_uuid: Some(uuid(5)),
                assignment_uuid: None,
                algorithm_name: "ftp".into(),
                calculation_uuid: uuid(8),
                ecosystem_matrix_uuid: None,
                exercise_uuids: None,
                clue_data: Some(ResultClueData {
                    minimum: 0.25,
                    most_likely: 0.5,
                    maximum: 0.75,
                    is_real: true,
                    ecosystem_uuid: None,
                }),
                spy_info_json: "{}".into(),
                input_seq: 0,
                model_seq: 0,
                computed_at_micros: 42,
                course_uuid: None,
                producer: "http".into(),
            },
            "teacher_clue|00000000-0000-0000-0000-000000000004|00000000-0000-0000-0000-000000000005|ftp",
        );
    }

    #[test]
    fn a_withdrawal_keeps_the_key_and_orders_after_what_it_withdraws() {
        let served = ResultRecord {
            kind: ResultKind::AssignmentPes,
            student_uuid: None,
            course_container_uuid: None,
            book_container_uuid: None,
            assignment_uuid: Some(uuid(7)),
            algorithm_name: "biglearn_sparfa".into(),
            calculation_uuid: uuid(8),
            ecosystem_matrix_uuid: Some(uuid(9)),
            exercise_uuids: Some(vec![uuid(1)]),
            clue_data: None,
            spy_info_json: "{}".into(),
            input_seq: 10,
            model_seq: 3,
            computed_at_micros: 500,
            course_uuid: Some(uuid(3)),
            producer: "scheduler".into(),
        };
        assert!(!served.is_withdrawal());
        // The clock may read earlier than the stored result's (another process): never lower.
        let withdrawal = ResultRecord::withdrawal_of(&served, 10, 400);
        assert!(withdrawal.is_withdrawal());
        assert_eq!(withdrawal.key(), served.key());
        assert_eq!(
            (
                withdrawal.input_seq,
                withdrawal.model_seq,
                withdrawal.computed_at_micros
            ),
            (10, 3, 500)
        );
        check(withdrawal, &served.key());
    }
}
