//! Pseudonymised student ids: every `student_uuid` of the course events replaced at
//! decode time, before any consumer stores it (docs/design/operations.md §5).

use std::time::Duration;

use async_trait::async_trait;
use biglearn_domain::events::{CourseEvent, CoursePayload};
use biglearn_domain::ids::StudentUuid;
use biglearn_events::{
    decode_course_event, encode_course_event, ENCODING_SINGLE_OBJECT, HEADER_ENCODING,
};
use biglearn_stream::{
    ConsumedRecord, Delivered, DeliveryError, OutgoingRecord, SharedStreamStore, StreamError,
    StreamReader, StreamStore, TopicSpec,
};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

/// The keyed, deterministic, irreversible mapping `pseudo(u) =
/// uuid_v8(HMAC-SHA256(key, u)[0..16])`, the HMAC taken over the 16 bytes of `u`.
#[derive(Clone)]
pub struct Pseudonymizer {
    /// The keyed HMAC state, cloned per id (cheaper than re-keying).
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is the only secret of staging: never printed.
        f.write_str("Pseudonymizer(<key>)")
    }
}

/// Why a key cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error(
        "the pseudonymisation key has {0} bytes; use at least 32 (e.g. `head -c 32 /dev/urandom`)"
    )]
    TooShort(usize),
    #[error("the pseudonymisation key is not usable as an HMAC-SHA256 key")]
    Unusable,
}

impl Pseudonymizer {
    /// A pseudonymizer with `key` (at least 32 bytes, as HMAC-SHA256's block strength).
    pub fn new(key: Vec<u8>) -> Result<Pseudonymizer, KeyError> {
        if key.len() < 32 {
            return Err(KeyError::TooShort(key.len()));
        }
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).map_err(|_| KeyError::Unusable)?;
        Ok(Pseudonymizer { mac })
    }

    /// `pseudo(u)`.
    pub fn pseudo(&self, student: Uuid) -> Uuid {
        let mut mac = self.mac.clone();
        mac.update(student.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        Uuid::new_v8(bytes)
    }

    fn student(&self, student: &mut StudentUuid) {
        student.0 = self.pseudo(student.0);
    }

    /// Replaces every student uuid of `event`: roster students, assignments, responses.
    pub fn course_event(&self, event: &mut CourseEvent) {
        match &mut event.payload {
            CoursePayload::UpdateRoster(roster) => {
                for student in &mut roster.students {
                    self.student(&mut student.student_uuid);
                }
            }
            CoursePayload::CreateUpdateAssignment(assignment) => {
                self.student(&mut assignment.student_uuid)
            }
            CoursePayload::RecordResponse(response) => self.student(&mut response.student_uuid),
            CoursePayload::NoOp(_)
            | CoursePayload::CreateCourse(_)
            | CoursePayload::PrepareCourseEcosystem(_)
            | CoursePayload::UpdateCourseEcosystem(_)
            | CoursePayload::UpdateCourseActiveDates(_)
            | CoursePayload::UpdateGloballyExcludedExercises(_)
            | CoursePayload::UpdateCourseExcludedExercises(_) => {}
        }
    }

    /// One course-event record with its student ids replaced. A value this build cannot
    /// decode loses its value (the consumer then parks its slot as opaque and dead-letters
    /// it without content): passing it on would store real student ids in staging.
    pub fn record(&self, mut record: ConsumedRecord) -> ConsumedRecord {
        let Some(value) = record.value.take() else {
            return record;
        };
        if let Ok(mut event) = decode_course_event(&value) {
            self.course_event(&mut event);
            record.value = Some(encode_course_event(&event));
            for (name, header) in &mut record.headers {
                if name == HEADER_ENCODING {
                    *header = ENCODING_SINGLE_OBJECT.as_bytes().to_vec();
                }
            }
        }
        record
    }
}

/// A store whose readers of `course_events_topic` hand out pseudonymised records.
pub struct PseudonymizingStore {
    inner: SharedStreamStore,
    course_events_topic: String,
    pseudonymizer: Pseudonymizer,
}

impl PseudonymizingStore {
    /// Wraps `inner`; only readers of `course_events_topic` are changed.
    pub fn new(
        inner: SharedStreamStore,
        course_events_topic: String,
        pseudonymizer: Pseudonymizer,
    ) -> PseudonymizingStore {
        PseudonymizingStore {
            inner,
            course_events_topic,
            pseudonymizer,
        }
    }
}

#[async_trait]
impl StreamStore for PseudonymizingStore {
    fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }

    async fn ensure_topics(&self, specs: &[TopicSpec]) -> Result<(), StreamError> {
        self.inner.ensure_topics(specs).await
    }

    async fn partition_count(&self, topic: &str) -> Result<i32, StreamError> {
        self.inner.partition_count(topic).await
    }

    async fn append(
        &self,
        topic: &str,
        records: Vec<OutgoingRecord>,
    ) -> Result<Vec<Result<Delivered, DeliveryError>>, StreamError> {
        self.inner.append(topic, records).await
    }

    async fn high_watermarks(&self, topic: &str) -> Result<Vec<i64>, StreamError> {
        self.inner.high_watermarks(topic).await
    }

    async fn open_reader(
        &self,
        topic: &str,
        start: &[(i32, i64)],
    ) -> Result<Box<dyn StreamReader>, StreamError> {
        let reader = self.inner.open_reader(topic, start).await?;
        if topic != self.course_events_topic {
            return Ok(reader);
        }
        Ok(Box::new(PseudonymizingReader {
            inner: reader,
            pseudonymizer: self.pseudonymizer.clone(),
        }))
    }
}

struct PseudonymizingReader {
    inner: Box<dyn StreamReader>,
    pseudonymizer: Pseudonymizer,
}

#[async_trait]
impl StreamReader for PseudonymizingReader {
    async fn poll(
        &mut self,
        max_records: usize,
        timeout: Duration,
    ) -> Result<Vec<ConsumedRecord>, StreamError> {
        let batch = self.inner.poll(max_records, timeout).await?;
        Ok(batch
            .into_iter()
            .map(|record| self.pseudonymizer.record(record))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use biglearn_domain::events::{EnvelopeMeta, RecordResponse, Timestamp};
    use biglearn_domain::ids::*;

    use super::*;

    fn pseudonymizer(byte: u8) -> Pseudonymizer {
        Pseudonymizer::new(vec![byte; 32]).unwrap()
    }

    fn check(key_byte: u8, student: &str, expected: &str) {
        let student = Uuid::parse_str(student).unwrap();
        assert_eq!(
            pseudonymizer(key_byte).pseudo(student).to_string(),
            expected
        );
    }

    #[test]
    fn pseudo_is_a_keyed_version_8_uuid() {
        // Computed independently: HMAC-SHA256(key = 32 × 0x07, 16 bytes of the uuid),
        // first 16 bytes, version nibble 8, variant bits 10.
        check(
            7,
            "00000000-0000-0000-0000-000000000001",
            &expected_by_hand(7, "00000000-0000-0000-0000-000000000001"),
        );
        let student = Uuid::new_v4();
        let once = pseudonymizer(7).pseudo(student);
        assert_eq!(once, pseudonymizer(7).pseudo(student), "deterministic");
        assert_ne!(once, pseudonymizer(8).pseudo(student), "keyed");
        assert_ne!(once, student);
        assert_eq!(once.get_version_num(), 8);
        assert_eq!(once.get_variant(), uuid::Variant::RFC4122);
    }

    /// The same construction spelled out with the `hmac` primitives, byte by byte.
    fn expected_by_hand(key_byte: u8, student: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&[key_byte; 32]).unwrap();
        mac.update(Uuid::parse_str(student).unwrap().as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        bytes[6] = (bytes[6] & 0x0f) | 0x80;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        Uuid::from_bytes(bytes).to_string()
    }

    #[test]
    fn short_keys_are_refused() {
        assert_eq!(
            Pseudonymizer::new(vec![1; 16]).unwrap_err(),
            KeyError::TooShort(16)
        );
    }

    fn response_event(student: Uuid) -> CourseEvent {
        let course = CourseUuid(Uuid::new_v4());
        CourseEvent {
            meta: EnvelopeMeta {
                event_uuid: EventUuid(Uuid::new_v4()),
                sequence_number: SequenceNumber(3),
                accepted_at_micros: 1_700_000_000_000_000,
                writer_id: "w".into(),
                settings_version: 1,
                metadata_sequence_number: None,
            },
            course_uuid: course,
            payload: CoursePayload::RecordResponse(RecordResponse {
                response_uuid: ResponseUuid(Uuid::new_v4()),
                course_uuid: course,
                sequence_number: SequenceNumber(3),
                ecosystem_uuid: EcosystemUuid(Uuid::new_v4()),
                trial_uuid: TrialUuid(Uuid::new_v4()),
                student_uuid: StudentUuid(student),
                exercise_uuid: ExerciseUuid(Uuid::new_v4()),
                is_correct: true,
                is_real_response: true,
                responded_at: Timestamp("2023-11-14T22:13:20.000000Z".into()),
            }),
        }
    }

    #[test]
    fn a_record_keeps_everything_but_the_student() {
        let student = Uuid::new_v4();
        let event = response_event(student);
        let encoded = biglearn_events::course_event_record(&event);
        let record = ConsumedRecord {
            topic: "prod.course-events".into(),
            partition: 1,
            offset: 9,
            key: Some(encoded.key.clone()),
            value: Some(encoded.value.clone()),
            headers: encoded.headers.clone(),
            timestamp_ms: Some(5),
        };
        let changed = pseudonymizer(3).record(record.clone());
        assert_eq!(changed.key, record.key);
        assert_eq!(changed.headers, record.headers);
        assert_eq!((changed.partition, changed.offset), (1, 9));
        let decoded = decode_course_event(changed.value.as_deref().unwrap()).unwrap();
        let mut expected = event.clone();
        if let CoursePayload::RecordResponse(response) = &mut expected.payload {
            response.student_uuid = StudentUuid(pseudonymizer(3).pseudo(student));
        }
        assert_eq!(decoded, expected);

        let garbage = ConsumedRecord {
            value: Some(b"not avro".to_vec()),
            ..record
        };
        assert_eq!(pseudonymizer(3).record(garbage).value, None);
    }
}
