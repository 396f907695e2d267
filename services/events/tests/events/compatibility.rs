//! Schema evolution: every version reads every earlier one (BACKWARD_TRANSITIVE) and keeps its fields and branches; broken changes are rejected.

use std::collections::HashMap;

use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::Schema;
use biglearn_events::SchemaFamily;
use serde_json::{json, Value as Json};

/// Record name → field names, and union → branch names, over a whole schema.
#[derive(Default)]
struct Shape {
    record_fields: HashMap<String, Vec<String>>,
    union_branches: HashMap<String, Vec<String>>,
}

fn collect_shape(schema: &Json, at: &str, shape: &mut Shape) {
    match schema {
        Json::Array(branches) => {
            let names = branches
                .iter()
                .map(|branch| match branch {
                    Json::String(name) => name.clone(),
                    other => other["name"]
                        .as_str()
                        .or(other["type"].as_str())
                        .unwrap_or("?")
                        .to_owned(),
                })
                .collect();
            shape.union_branches.insert(at.to_owned(), names);
            for branch in branches {
                collect_shape(branch, at, shape);
            }
        }
        Json::Object(object) => match object.get("type").and_then(Json::as_str) {
            Some("record") => {
                let name = object["name"].as_str().unwrap_or_default().to_owned();
                let fields = object["fields"].as_array().cloned().unwrap_or_default();
                let names = fields
                    .iter()
                    .map(|f| f["name"].as_str().unwrap_or_default().to_owned())
                    .collect();
                shape.record_fields.insert(name.clone(), names);
                for field in &fields {
                    let path = format!("{name}.{}", field["name"].as_str().unwrap_or_default());
                    collect_shape(&field["type"], &path, shape);
                }
            }
            Some("array") => collect_shape(&object["items"], at, shape),
            Some("map") => collect_shape(&object["values"], at, shape),
            _ => {
                if let Some(inner @ (Json::Object(_) | Json::Array(_))) = object.get("type") {
                    collect_shape(inner, at, shape);
                }
            }
        },
        _ => {}
    }
}

/// The change rules of docs/design/events.md §4.3 that go beyond Avro resolution: no field is
/// removed, renamed or reordered (new fields may go anywhere), and union branches are only
/// appended.
fn check_only_appends(older: &str, newer: &str) -> Result<(), String> {
    let (mut old_shape, mut new_shape) = (Shape::default(), Shape::default());
    collect_shape(&serde_json::from_str(older).unwrap(), "", &mut old_shape);
    collect_shape(&serde_json::from_str(newer).unwrap(), "", &mut new_shape);
    for (name, old_fields) in &old_shape.record_fields {
        let new_fields = new_shape
            .record_fields
            .get(name)
            .ok_or(format!("record {name} removed"))?;
        let mut remaining = new_fields.iter();
        if !old_fields.iter().all(|old| remaining.any(|new| new == old)) {
            return Err(format!(
                "record {name}: fields {old_fields:?} became {new_fields:?}"
            ));
        }
    }
    for (at, old_branches) in &old_shape.union_branches {
        let new_branches = new_shape
            .union_branches
            .get(at)
            .ok_or(format!("union at {at} removed"))?;
        if !new_branches.starts_with(old_branches) {
            return Err(format!(
                "union at {at}: {old_branches:?} became {new_branches:?}"
            ));
        }
    }
    Ok(())
}

/// BACKWARD_TRANSITIVE plus the append-only rules, for a list of versions oldest first.
fn check_evolution(versions: &[&str]) -> Result<(), String> {
    let parsed: Vec<Schema> = versions
        .iter()
        .map(|json| Schema::parse_str(json).map_err(|error| error.to_string()))
        .collect::<Result<_, _>>()?;
    for (new_idx, reader) in parsed.iter().enumerate() {
        for (old_idx, writer) in parsed[..new_idx].iter().enumerate() {
            SchemaCompatibility::can_read(writer, reader).map_err(|error| {
                format!("v{} cannot read v{}: {error}", new_idx + 1, old_idx + 1)
            })?;
            check_only_appends(versions[old_idx], versions[new_idx])?;
        }
    }
    Ok(())
}

#[test]
fn every_version_reads_every_earlier_one() {
    for family in SchemaFamily::ALL {
        let versions: Vec<&str> = family
            .versions()
            .iter()
            .map(|embedded| embedded.json)
            .collect();
        assert_eq!(check_evolution(&versions), Ok(()), "{}", family.folder());
    }
}

fn mutated(change: impl FnOnce(&mut Vec<Json>)) -> String {
    let mut schema: Json = serde_json::from_str(SchemaFamily::CourseEvent.current().json).unwrap();
    change(schema["fields"].as_array_mut().unwrap());
    schema.to_string()
}

fn payload_branches(fields: &mut [Json]) -> &mut Vec<Json> {
    fields.last_mut().unwrap()["type"].as_array_mut().unwrap()
}

#[test]
fn the_evolution_check_accepts_allowed_changes_and_rejects_broken_ones() {
    let current = SchemaFamily::CourseEvent.current().json;
    let check = |newer: String| check_evolution(&[current, &newer]);

    // Allowed: a field with a default; a payload record appended as the last branch.
    assert_eq!(
        check(mutated(|fields| fields.insert(
            8,
            json!({"name": "region", "type": "string", "default": "us"})
        ))),
        Ok(())
    );
    assert_eq!(
        check(mutated(|fields| {
            payload_branches(fields)
            .push(json!({"type": "record", "name": "GradeEssay", "fields": [{"name": "score", "type": "double"}]}))
        })),
        Ok(())
    );

    // Broken: a type change, a new field without a default, a removed branch,
    // a removed field, reordered branches.
    let broken = [
        (
            "type changed",
            mutated(|fields| fields[3]["type"] = json!("string")),
        ),
        (
            "field without default",
            mutated(|fields| fields.insert(8, json!({"name": "region", "type": "string"}))),
        ),
        (
            "branch removed",
            mutated(|fields| {
                payload_branches(fields).pop();
            }),
        ),
        (
            "field removed",
            mutated(|fields| {
                fields.remove(5);
            }),
        ),
        (
            "branches reordered",
            mutated(|fields| payload_branches(fields).swap(0, 1)),
        ),
    ];
    for (what, newer) in broken {
        assert!(check(newer).is_err(), "{what} must be rejected");
    }
    // The Avro check alone already rejects the first three.
    let current_schema = &SchemaFamily::CourseEvent.current().schema;
    let avro_rejects = |newer: String| {
        SchemaCompatibility::can_read(current_schema, &Schema::parse_str(&newer).unwrap()).is_err()
    };
    assert!(avro_rejects(mutated(
        |fields| fields[3]["type"] = json!("string")
    )));
    assert!(avro_rejects(mutated(
        |fields| fields.insert(8, json!({"name": "region", "type": "string"}))
    )));
    assert!(avro_rejects(mutated(|fields| {
        payload_branches(fields).pop();
    })));
}

/// The single-object frame of `current_bytes` (a no_op event written with the current
/// schema, `through_sequence_number` null) as a v1 writer would have written it: the v2 body
/// without the trailing null branch (0) of `through_sequence_number`, under v1's fingerprint.
fn as_v1_frame(family: SchemaFamily, current_bytes: &[u8]) -> Vec<u8> {
    let v1 = &family.versions()[0];
    assert_ne!(v1.fingerprint, family.current().fingerprint);
    assert_eq!(current_bytes.last(), Some(&0));
    let mut v1_bytes = current_bytes[..2].to_vec();
    v1_bytes.extend_from_slice(&v1.fingerprint.to_le_bytes());
    v1_bytes.extend_from_slice(&current_bytes[10..current_bytes.len() - 1]);
    // apache-avro agrees that this is a whole, valid v1 body.
    let mut body = &v1_bytes[10..];
    apache_avro::from_avro_datum(&v1.schema, &mut body, None).unwrap();
    assert!(body.is_empty());
    v1_bytes
}

/// A `no_op` written by a v1 writer (before range fills, docs/design/api.md D13) reads as a
/// one-slot no_op.
#[test]
fn a_no_op_written_with_v1_reads_as_a_one_slot_no_op() {
    use crate::fixtures::{course_events, ecosystem_events, Optionals};
    use biglearn_domain::events::{CoursePayload, EcosystemPayload};
    use biglearn_events::{
        decode_course_event, decode_ecosystem_event, encode_course_event, encode_ecosystem_event,
    };

    for optionals in [Optionals::Present, Optionals::Absent] {
        let mut course = course_events(optionals)
            .into_iter()
            .find(|event| matches!(event.payload, CoursePayload::NoOp(_)))
            .unwrap();
        if let CoursePayload::NoOp(no_op) = &mut course.payload {
            no_op.through_sequence_number = None;
        }
        let v1_bytes = as_v1_frame(SchemaFamily::CourseEvent, &encode_course_event(&course));
        assert_eq!(decode_course_event(&v1_bytes), Ok(course));

        let mut ecosystem = ecosystem_events(optionals)
            .into_iter()
            .find(|event| matches!(event.payload, EcosystemPayload::NoOp(_)))
            .unwrap();
        if let EcosystemPayload::NoOp(no_op) = &mut ecosystem.payload {
            no_op.through_sequence_number = None;
        }
        let v1_bytes = as_v1_frame(
            SchemaFamily::EcosystemEvent,
            &encode_ecosystem_event(&ecosystem),
        );
        assert_eq!(decode_ecosystem_event(&v1_bytes), Ok(ecosystem));
    }
}
