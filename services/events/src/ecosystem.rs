//! The `EcosystemEvent` envelope: a hand-written codec for the current schema, byte-compatible with apache-avro.

use biglearn_domain::events::*;
use biglearn_domain::ids::*;

use crate::binary::{AvroReader, AvroWriter};
use crate::course::{read_meta_head, read_no_op, write_meta_head, write_no_op};
use crate::error::DecodeError;
use crate::process::ProcessLookup;
use crate::schemas::SchemaFamily;
use crate::wire::{self, SchemaLookup, WireFormat};

/// Encodes an ecosystem event in single-object encoding.
pub fn encode_ecosystem_event(event: &EcosystemEvent) -> Vec<u8> {
    encode_ecosystem_event_as(event, WireFormat::SingleObject)
}

/// Encodes an ecosystem event in the given framing.
pub fn encode_ecosystem_event_as(event: &EcosystemEvent, format: WireFormat) -> Vec<u8> {
    let mut writer = AvroWriter::with_buffer(format.start(SchemaFamily::EcosystemEvent, 1024));
    write_ecosystem_event(&mut writer, event);
    writer.buf
}

/// Decodes an ecosystem event in either framing, without a registry.
pub fn decode_ecosystem_event(bytes: &[u8]) -> Result<EcosystemEvent, DecodeError> {
    decode_ecosystem_event_with(bytes, &ProcessLookup)
}

/// Decodes an ecosystem event in either framing, looking Confluent schema ids up in `lookup`.
pub fn decode_ecosystem_event_with(
    bytes: &[u8],
    lookup: &dyn SchemaLookup,
) -> Result<EcosystemEvent, DecodeError> {
    let family = SchemaFamily::EcosystemEvent;
    let unframed = wire::unframe(family, bytes, lookup)?;
    let body = wire::current_body(family, unframed, |value| {
        match wire::record_string_field(value, "event_type") {
            Some(name) if EcosystemEventType::parse(name).is_none() => {
                Err(DecodeError::UnknownEventType {
                    event_type: name.to_owned(),
                })
            }
            _ => Ok(()),
        }
    })?;
    let mut reader = AvroReader::new(&body);
    let event = read_ecosystem_event(&mut reader)?;
    reader.finish()?;
    Ok(event)
}

fn write_ecosystem_event(w: &mut AvroWriter, event: &EcosystemEvent) {
    let event_type = event.event_type();
    write_meta_head(w, &event.meta, event_type.as_str(), event.ecosystem_uuid.0);
    match &event.payload {
        EcosystemPayload::NoOp(p) => {
            w.index(0);
            write_no_op(w, p);
        }
        EcosystemPayload::CreateEcosystem(p) => {
            w.index(1);
            w.uuid(p.ecosystem_uuid.0);
            w.long(p.sequence_number.0);
            w.optional(p.book.cnx_identity.as_deref(), AvroWriter::string);
            w.array(&p.book.contents, |w, container| {
                w.uuid(container.container_uuid.0);
                w.uuid(container.container_parent_uuid.0);
                w.optional(
                    container.container_cnx_identity.as_deref(),
                    AvroWriter::string,
                );
                w.array(&container.pools, |w, pool| {
                    w.boolean(pool.use_for_clue);
                    w.array(
                        &pool.use_for_personalized_for_assignment_types,
                        |w, name| w.string(name),
                    );
                    w.array(&pool.exercise_uuids, |w, id| w.uuid(id.0));
                });
            });
            w.array(&p.exercises, |w, exercise| {
                w.uuid(exercise.exercise_uuid.0);
                w.uuid(exercise.group_uuid.0);
                w.long(exercise.version);
                w.array(&exercise.los, |w, lo| w.string(lo));
            });
            w.string(&p.imported_at.0);
        }
    }
}

fn read_ecosystem_event(r: &mut AvroReader<'_>) -> Result<EcosystemEvent, DecodeError> {
    let (head, event_type) = read_meta_head(r, EcosystemEventType::parse)?;
    let branch = EcosystemEventType::ALL[r.index(EcosystemEventType::ALL.len())?];
    if branch != event_type {
        return Err(DecodeError::undecodable(format!(
            "payload branch {} does not match event_type {:?}",
            branch.as_str(),
            head.event_type
        )));
    }
    let payload = match event_type {
        EcosystemEventType::NoOp => EcosystemPayload::NoOp(read_no_op(r)?),
        EcosystemEventType::CreateEcosystem => {
            EcosystemPayload::CreateEcosystem(Box::new(CreateEcosystem {
                ecosystem_uuid: EcosystemUuid(r.uuid()?),
                sequence_number: SequenceNumber(r.long()?),
                book: Book {
                    cnx_identity: r.optional(AvroReader::string)?,
                    contents: r.array(|r| {
                        Ok(BookContainer {
                            container_uuid: BookContainerUuid(r.uuid()?),
                            container_parent_uuid: BookContainerUuid(r.uuid()?),
                            container_cnx_identity: r.optional(AvroReader::string)?,
                            pools: r.array(|r| {
                                Ok(Pool {
                                    use_for_clue: r.boolean()?,
                                    use_for_personalized_for_assignment_types: r
                                        .array(AvroReader::string)?,
                                    exercise_uuids: r.array(|r| r.uuid().map(ExerciseUuid))?,
                                })
                            })?,
                        })
                    })?,
                },
                exercises: r.array(|r| {
                    Ok(Exercise {
                        exercise_uuid: ExerciseUuid(r.uuid()?),
                        group_uuid: ExerciseGroupUuid(r.uuid()?),
                        version: r.long()?,
                        los: r.array(AvroReader::string)?,
                    })
                })?,
                imported_at: Timestamp(r.string()?),
            }))
        }
    };
    Ok(EcosystemEvent {
        meta: head.meta,
        ecosystem_uuid: EcosystemUuid(head.aggregate),
        payload,
    })
}
