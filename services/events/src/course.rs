//! The `CourseEvent` envelope: a hand-written codec for the current schema, byte-compatible with apache-avro.

use biglearn_domain::events::*;
use biglearn_domain::ids::*;

use crate::binary::{AvroReader, AvroWriter};
use crate::error::DecodeError;
use crate::process::ProcessLookup;
use crate::schemas::SchemaFamily;
use crate::wire::{self, SchemaLookup, WireFormat};

/// Encodes a course event in single-object encoding.
pub fn encode_course_event(event: &CourseEvent) -> Vec<u8> {
    encode_course_event_as(event, WireFormat::SingleObject)
}

/// Encodes a course event in the given framing.
pub fn encode_course_event_as(event: &CourseEvent, format: WireFormat) -> Vec<u8> {
    let mut writer = AvroWriter::with_buffer(format.start(SchemaFamily::CourseEvent, 256));
    write_course_event(&mut writer, event);
    writer.buf
}

/// Decodes a course event in either framing; Confluent values need a registry (the
/// process's, [`crate::process`], or [`decode_course_event_with`]), so without one they
/// are [`DecodeError::Undecodable`].
pub fn decode_course_event(bytes: &[u8]) -> Result<CourseEvent, DecodeError> {
    decode_course_event_with(bytes, &ProcessLookup)
}

/// Decodes a course event in either framing, looking Confluent schema ids up in `lookup`.
pub fn decode_course_event_with(
    bytes: &[u8],
    lookup: &dyn SchemaLookup,
) -> Result<CourseEvent, DecodeError> {
    let family = SchemaFamily::CourseEvent;
    let unframed = wire::unframe(family, bytes, lookup)?;
    let body = wire::current_body(family, unframed, |value| {
        match wire::record_string_field(value, "event_type") {
            Some(name) if CourseEventType::parse(name).is_none() => {
                Err(DecodeError::UnknownEventType {
                    event_type: name.to_owned(),
                })
            }
            _ => Ok(()),
        }
    })?;
    let mut reader = AvroReader::new(&body);
    let event = read_course_event(&mut reader)?;
    reader.finish()?;
    Ok(event)
}

pub(crate) fn write_no_op(w: &mut AvroWriter, no_op: &NoOp) {
    w.index(match no_op.reason {
        NoOpReason::PreparationUnknown => 0,
        NoOpReason::AdminFill => 1,
        NoOpReason::Imported => 2,
    });
    w.optional(no_op.actor.as_deref(), AvroWriter::string);
    w.optional(no_op.detail_json.as_deref(), AvroWriter::string);
    w.optional(
        no_op.through_sequence_number.map(|seq| seq.0).as_ref(),
        |w, seq| w.long(*seq),
    );
}

pub(crate) fn read_no_op(r: &mut AvroReader<'_>) -> Result<NoOp, DecodeError> {
    let reason = match r.index(3)? {
        0 => NoOpReason::PreparationUnknown,
        1 => NoOpReason::AdminFill,
        _ => NoOpReason::Imported,
    };
    Ok(NoOp {
        reason,
        actor: r.optional(AvroReader::string)?,
        detail_json: r.optional(AvroReader::string)?,
        through_sequence_number: r.optional(AvroReader::long)?.map(SequenceNumber),
    })
}

/// The envelope fields before the payload, shared by both streams.
pub(crate) fn write_meta_head(
    w: &mut AvroWriter,
    meta: &EnvelopeMeta,
    event_type: &str,
    aggregate: uuid::Uuid,
) {
    w.uuid(meta.event_uuid.0);
    w.string(event_type);
    w.uuid(aggregate);
    w.long(meta.sequence_number.0);
    w.long(meta.accepted_at_micros);
    w.string(&meta.writer_id);
    w.long(meta.settings_version);
    w.optional(meta.metadata_sequence_number.as_ref(), |w, n| w.long(*n));
}

fn timestamp(r: &mut AvroReader<'_>) -> Result<Timestamp, DecodeError> {
    r.string().map(Timestamp)
}

fn optional_timestamp(r: &mut AvroReader<'_>) -> Result<Option<Timestamp>, DecodeError> {
    r.optional(timestamp)
}

fn write_exclusions(w: &mut AvroWriter, payload: &UpdateExcludedExercises) {
    w.uuid(payload.request_uuid.0);
    w.uuid(payload.course_uuid.0);
    w.long(payload.sequence_number.0);
    w.array(&payload.exclusions, |w, exclusion| {
        w.optional(exclusion.exercise_uuid.as_ref(), |w, id| w.uuid(id.0));
        w.optional(exclusion.exercise_group_uuid.as_ref(), |w, id| w.uuid(id.0));
    });
    w.string(&payload.updated_at.0);
}

fn read_exclusions(r: &mut AvroReader<'_>) -> Result<UpdateExcludedExercises, DecodeError> {
    Ok(UpdateExcludedExercises {
        request_uuid: RequestUuid(r.uuid()?),
        course_uuid: CourseUuid(r.uuid()?),
        sequence_number: SequenceNumber(r.long()?),
        exclusions: r.array(|r| {
            Ok(ExerciseExclusion {
                exercise_uuid: r.optional(|r| r.uuid().map(ExerciseUuid))?,
                exercise_group_uuid: r.optional(|r| r.uuid().map(ExerciseGroupUuid))?,
            })
        })?,
        updated_at: timestamp(r)?,
    })
}

fn write_calculation_ref(w: &mut AvroWriter, calculation: &CalculationRef) {
    w.optional(calculation.calculation_uuid.as_ref(), |w, id| w.uuid(id.0));
    w.optional(calculation.ecosystem_matrix_uuid.as_ref(), |w, id| {
        w.uuid(id.0)
    });
}

fn read_calculation_ref(r: &mut AvroReader<'_>) -> Result<CalculationRef, DecodeError> {
    Ok(CalculationRef {
        calculation_uuid: r.optional(|r| r.uuid().map(CalculationUuid))?,
        ecosystem_matrix_uuid: r.optional(|r| r.uuid().map(MatrixUuid))?,
    })
}

fn write_course_event(w: &mut AvroWriter, event: &CourseEvent) {
    let event_type = event.event_type();
    write_meta_head(w, &event.meta, event_type.as_str(), event.course_uuid.0);
    // Union branches follow CourseEventType::ALL, the catalogue order.
    let branch = CourseEventType::ALL
        .iter()
        .position(|t| *t == event_type)
        .unwrap_or_default();
    w.index(branch);
    match &event.payload {
        CoursePayload::NoOp(p) => write_no_op(w, p),
        CoursePayload::CreateCourse(p) => {
            w.uuid(p.course_uuid.0);
            w.long(p.sequence_number.0);
            w.uuid(p.ecosystem_uuid.0);
            w.boolean(p.is_real_course);
            w.string(&p.starts_at.0);
            w.string(&p.ends_at.0);
            w.string(&p.created_at.0);
        }
        CoursePayload::PrepareCourseEcosystem(p) => {
            w.uuid(p.preparation_uuid.0);
            w.uuid(p.course_uuid.0);
            w.long(p.sequence_number.0);
            w.uuid(p.ecosystem_uuid.0);
            let map = &p.ecosystem_map;
            w.uuid(map.from_ecosystem_uuid.0);
            w.uuid(map.to_ecosystem_uuid.0);
            w.array(&map.book_container_mappings, |w, m| {
                w.uuid(m.from_book_container_uuid.0);
                w.uuid(m.to_book_container_uuid.0);
            });
            w.array(&map.exercise_mappings, |w, m| {
                w.uuid(m.from_exercise_uuid.0);
                w.uuid(m.to_book_container_uuid.0);
            });
            w.string(&p.prepared_at.0);
        }
        CoursePayload::UpdateCourseEcosystem(p) => {
            w.uuid(p.request_uuid.0);
            w.uuid(p.course_uuid.0);
            w.long(p.sequence_number.0);
            w.uuid(p.preparation_uuid.0);
            w.string(&p.updated_at.0);
        }
        CoursePayload::UpdateRoster(p) => {
            w.uuid(p.request_uuid.0);
            w.uuid(p.course_uuid.0);
            w.long(p.sequence_number.0);
            w.array(&p.course_containers, |w, c| {
                w.uuid(c.container_uuid.0);
                w.uuid(c.parent_container_uuid.0);
                w.string(&c.created_at.0);
                w.optional(c.archived_at.as_ref(), |w, t| w.string(&t.0));
            });
            w.array(&p.students, |w, s| {
                w.uuid(s.student_uuid.0);
                w.uuid(s.container_uuid.0);
                w.string(&s.enrolled_at.0);
                w.string(&s.last_course_container_change_at.0);
                w.optional(s.dropped_at.as_ref(), |w, t| w.string(&t.0));
            });
        }
        CoursePayload::UpdateCourseActiveDates(p) => {
            w.uuid(p.request_uuid.0);
            w.uuid(p.course_uuid.0);
            w.long(p.sequence_number.0);
            w.string(&p.starts_at.0);
            w.string(&p.ends_at.0);
            w.string(&p.updated_at.0);
        }
        CoursePayload::UpdateGloballyExcludedExercises(p)
        | CoursePayload::UpdateCourseExcludedExercises(p) => write_exclusions(w, p),
        CoursePayload::CreateUpdateAssignment(p) => {
            w.uuid(p.request_uuid.0);
            w.uuid(p.course_uuid.0);
            w.long(p.sequence_number.0);
            w.uuid(p.assignment_uuid.0);
            w.boolean(p.is_deleted);
            w.uuid(p.ecosystem_uuid.0);
            w.uuid(p.student_uuid.0);
            w.string(&p.assignment_type);
            w.optional(p.exclusion_info.as_ref(), |w, info| {
                w.optional(info.opens_at.as_ref(), |w, t| w.string(&t.0));
                w.optional(info.due_at.as_ref(), |w, t| w.string(&t.0));
                w.optional(info.feedback_at.as_ref(), |w, t| w.string(&t.0));
            });
            w.optional(p.pes.as_ref(), write_calculation_ref);
            w.optional(p.spes.as_ref(), write_calculation_ref);
            w.array(&p.assigned_book_container_uuids, |w, id| w.uuid(id.0));
            w.optional(p.goal_num_tutor_assigned_spes.as_ref(), |w, n| w.long(*n));
            w.boolean(p.spes_are_assigned);
            w.optional(p.goal_num_tutor_assigned_pes.as_ref(), |w, n| w.long(*n));
            w.boolean(p.pes_are_assigned);
            w.array(&p.assigned_exercises, |w, e| {
                w.uuid(e.trial_uuid.0);
                w.uuid(e.exercise_uuid.0);
                w.boolean(e.is_spe);
                w.boolean(e.is_pe);
            });
            w.string(&p.created_at.0);
            w.string(&p.updated_at.0);
        }
        CoursePayload::RecordResponse(p) => {
            w.uuid(p.response_uuid.0);
            w.uuid(p.course_uuid.0);
            w.long(p.sequence_number.0);
            w.uuid(p.ecosystem_uuid.0);
            w.uuid(p.trial_uuid.0);
            w.uuid(p.student_uuid.0);
            w.uuid(p.exercise_uuid.0);
            w.boolean(p.is_correct);
            w.boolean(p.is_real_response);
            w.string(&p.responded_at.0);
        }
    }
}

/// The envelope fields before `event_type`'s payload, shared by both streams.
pub(crate) struct MetaHead<'a> {
    pub(crate) meta: EnvelopeMeta,
    pub(crate) event_type: &'a str,
    pub(crate) aggregate: uuid::Uuid,
}

/// Reads the envelope head; `parse_type` rejects unknown event types before the rest is read.
pub(crate) fn read_meta_head<'a, T>(
    r: &mut AvroReader<'a>,
    parse_type: impl FnOnce(&str) -> Option<T>,
) -> Result<(MetaHead<'a>, T), DecodeError> {
    let event_uuid = EventUuid(r.uuid()?);
    let event_type = r.str()?;
    let Some(parsed) = parse_type(event_type) else {
        return Err(DecodeError::UnknownEventType {
            event_type: event_type.to_owned(),
        });
    };
    let aggregate = r.uuid()?;
    let meta = EnvelopeMeta {
        event_uuid,
        sequence_number: SequenceNumber(r.long()?),
        accepted_at_micros: r.long()?,
        writer_id: r.string()?,
        settings_version: r.long()?,
        metadata_sequence_number: r.optional(AvroReader::long)?,
    };
    Ok((
        MetaHead {
            meta,
            event_type,
            aggregate,
        },
        parsed,
    ))
}

fn read_course_event(r: &mut AvroReader<'_>) -> Result<CourseEvent, DecodeError> {
    let (head, event_type) = read_meta_head(r, CourseEventType::parse)?;
    let branch = CourseEventType::ALL[r.index(CourseEventType::ALL.len())?];
    if branch != event_type {
        return Err(DecodeError::undecodable(format!(
            "payload branch {} does not match event_type {:?}",
            branch.as_str(),
            head.event_type
        )));
    }
    let payload = match event_type {
        CourseEventType::NoOp => CoursePayload::NoOp(read_no_op(r)?),
        CourseEventType::CreateCourse => CoursePayload::CreateCourse(CreateCourse {
            course_uuid: CourseUuid(r.uuid()?),
            sequence_number: SequenceNumber(r.long()?),
            ecosystem_uuid: EcosystemUuid(r.uuid()?),
            is_real_course: r.boolean()?,
            starts_at: timestamp(r)?,
            ends_at: timestamp(r)?,
            created_at: timestamp(r)?,
        }),
        CourseEventType::PrepareCourseEcosystem => {
            CoursePayload::PrepareCourseEcosystem(PrepareCourseEcosystem {
                preparation_uuid: PreparationUuid(r.uuid()?),
                course_uuid: CourseUuid(r.uuid()?),
                sequence_number: SequenceNumber(r.long()?),
                ecosystem_uuid: EcosystemUuid(r.uuid()?),
                ecosystem_map: EcosystemMap {
                    from_ecosystem_uuid: EcosystemUuid(r.uuid()?),
                    to_ecosystem_uuid: EcosystemUuid(r.uuid()?),
                    book_container_mappings: r.array(|r| {
                        Ok(BookContainerMapping {
                            from_book_container_uuid: BookContainerUuid(r.uuid()?),
                            to_book_container_uuid: BookContainerUuid(r.uuid()?),
                        })
                    })?,
                    exercise_mappings: r.array(|r| {
                        Ok(ExerciseMapping {
                            from_exercise_uuid: ExerciseUuid(r.uuid()?),
                            to_book_container_uuid: BookContainerUuid(r.uuid()?),
                        })
                    })?,
                },
                prepared_at: timestamp(r)?,
            })
        }
        CourseEventType::UpdateCourseEcosystem => {
            CoursePayload::UpdateCourseEcosystem(UpdateCourseEcosystem {
                request_uuid: RequestUuid(r.uuid()?),
                course_uuid: CourseUuid(r.uuid()?),
                sequence_number: SequenceNumber(r.long()?),
                preparation_uuid: PreparationUuid(r.uuid()?),
                updated_at: timestamp(r)?,
            })
        }
        CourseEventType::UpdateRoster => CoursePayload::UpdateRoster(UpdateRoster {
            request_uuid: RequestUuid(r.uuid()?),
            course_uuid: CourseUuid(r.uuid()?),
            sequence_number: SequenceNumber(r.long()?),
            course_containers: r.array(|r| {
                Ok(RosterCourseContainer {
                    container_uuid: CourseContainerUuid(r.uuid()?),
                    parent_container_uuid: CourseContainerUuid(r.uuid()?),
                    created_at: timestamp(r)?,
                    archived_at: optional_timestamp(r)?,
                })
            })?,
            students: r.array(|r| {
                Ok(RosterStudent {
                    student_uuid: StudentUuid(r.uuid()?),
                    container_uuid: CourseContainerUuid(r.uuid()?),
                    enrolled_at: timestamp(r)?,
                    last_course_container_change_at: timestamp(r)?,
                    dropped_at: optional_timestamp(r)?,
                })
            })?,
        }),
        CourseEventType::UpdateCourseActiveDates => {
            CoursePayload::UpdateCourseActiveDates(UpdateCourseActiveDates {
                request_uuid: RequestUuid(r.uuid()?),
                course_uuid: CourseUuid(r.uuid()?),
                sequence_number: SequenceNumber(r.long()?),
                starts_at: timestamp(r)?,
                ends_at: timestamp(r)?,
                updated_at: timestamp(r)?,
            })
        }
        CourseEventType::UpdateGloballyExcludedExercises => {
            CoursePayload::UpdateGloballyExcludedExercises(read_exclusions(r)?)
        }
        CourseEventType::UpdateCourseExcludedExercises => {
            CoursePayload::UpdateCourseExcludedExercises(read_exclusions(r)?)
        }
        CourseEventType::CreateUpdateAssignment => {
            CoursePayload::CreateUpdateAssignment(CreateUpdateAssignment {
                request_uuid: RequestUuid(r.uuid()?),
                course_uuid: CourseUuid(r.uuid()?),
                sequence_number: SequenceNumber(r.long()?),
                assignment_uuid: AssignmentUuid(r.uuid()?),
                is_deleted: r.boolean()?,
                ecosystem_uuid: EcosystemUuid(r.uuid()?),
                student_uuid: StudentUuid(r.uuid()?),
                assignment_type: r.string()?,
                exclusion_info: r.optional(|r| {
                    Ok(ExclusionInfo {
                        opens_at: optional_timestamp(r)?,
                        due_at: optional_timestamp(r)?,
                        feedback_at: optional_timestamp(r)?,
                    })
                })?,
                pes: r.optional(read_calculation_ref)?,
                spes: r.optional(read_calculation_ref)?,
                assigned_book_container_uuids: r.array(|r| r.uuid().map(BookContainerUuid))?,
                goal_num_tutor_assigned_spes: r.optional(AvroReader::long)?,
                spes_are_assigned: r.boolean()?,
                goal_num_tutor_assigned_pes: r.optional(AvroReader::long)?,
                pes_are_assigned: r.boolean()?,
                assigned_exercises: r.array(|r| {
                    Ok(AssignedExercise {
                        trial_uuid: TrialUuid(r.uuid()?),
                        exercise_uuid: ExerciseUuid(r.uuid()?),
                        is_spe: r.boolean()?,
                        is_pe: r.boolean()?,
                    })
                })?,
                created_at: timestamp(r)?,
                updated_at: timestamp(r)?,
            })
        }
        CourseEventType::RecordResponse => CoursePayload::RecordResponse(RecordResponse {
            response_uuid: ResponseUuid(r.uuid()?),
            course_uuid: CourseUuid(r.uuid()?),
            sequence_number: SequenceNumber(r.long()?),
            ecosystem_uuid: EcosystemUuid(r.uuid()?),
            trial_uuid: TrialUuid(r.uuid()?),
            student_uuid: StudentUuid(r.uuid()?),
            exercise_uuid: ExerciseUuid(r.uuid()?),
            is_correct: r.boolean()?,
            is_real_response: r.boolean()?,
            responded_at: timestamp(r)?,
        }),
    };
    Ok(CourseEvent {
        meta: head.meta,
        course_uuid: CourseUuid(head.aggregate),
        payload,
    })
}
