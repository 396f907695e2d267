//! Malformed input, unknown writers and unknown event types are errors, never panics; older and newer writers resolve.

use apache_avro::types::Value;
use apache_avro::Schema;
use biglearn_events::*;
use serde_json::Value as Json;

use crate::fixtures::{course_events, ecosystem_events, record_response, Optionals};

fn check_undecodable(bytes: &[u8]) {
    let course = decode_course_event(bytes);
    assert!(
        matches!(course, Err(DecodeError::Undecodable { .. })),
        "{bytes:02x?}: {course:?}"
    );
    let ecosystem = decode_ecosystem_event(bytes);
    assert!(
        matches!(ecosystem, Err(DecodeError::Undecodable { .. })),
        "{ecosystem:?}"
    );
    assert!(matches!(
        decode_dead_letter(bytes),
        Err(DecodeError::Undecodable { .. })
    ));
}

#[test]
fn garbage_is_undecodable() {
    check_undecodable(b"");
    check_undecodable(b"{\"event_type\":\"record_response\"}");
    check_undecodable(&[0xc3]);
    check_undecodable(&[0xc3, 0x01, 1, 2, 3]);
    check_undecodable(&[0x00, 0, 0]);
    check_undecodable(&[0xff; 64]);
    // A released fingerprint of another family.
    let mut wrong_family = SINGLE_OBJECT_MAGIC.to_vec();
    wrong_family.extend_from_slice(
        &SchemaFamily::ModelComputed
            .current()
            .fingerprint
            .to_le_bytes(),
    );
    wrong_family.extend_from_slice(&[0; 40]);
    check_undecodable(&wrong_family);
}

#[test]
fn an_unknown_fingerprint_is_undecodable() {
    let mut bytes = encode_course_event(&record_response(3));
    bytes[2] ^= 0x55;
    let error = decode_course_event(&bytes).unwrap_err();
    assert!(
        matches!(&error, DecodeError::Undecodable { detail } if detail.contains("fingerprint")),
        "{error}"
    );
}

#[test]
fn every_truncation_and_trailing_byte_is_undecodable() {
    let mut samples: Vec<Vec<u8>> = Vec::new();
    for optionals in [Optionals::Present, Optionals::Absent] {
        samples.extend(course_events(optionals).iter().map(encode_course_event));
    }
    for bytes in &samples {
        for len in 0..bytes.len() {
            let truncated = decode_course_event(&bytes[..len]);
            assert!(
                matches!(truncated, Err(DecodeError::Undecodable { .. })),
                "len {len}: {truncated:?}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            decode_course_event(&longer),
            Err(DecodeError::Undecodable { .. })
        ));
    }
    for event in ecosystem_events(Optionals::Present) {
        let bytes = encode_ecosystem_event(&event);
        for len in 0..bytes.len() {
            assert!(decode_ecosystem_event(&bytes[..len]).is_err());
        }
    }
}

#[test]
fn corrupted_bytes_never_panic() {
    // A fixed linear congruential generator: deterministic and bounded.
    let mut state: u64 = 0x2017_0815;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    let samples: Vec<Vec<u8>> = course_events(Optionals::Present)
        .iter()
        .map(encode_course_event)
        .collect();
    let mut n_errors = 0;
    for round in 0..20_000 {
        let mut bytes = samples[round % samples.len()].clone();
        for _ in 0..1 + next() % 3 {
            let pos = 10 + next() % (bytes.len() - 10);
            bytes[pos] = next() as u8;
        }
        if decode_course_event(&bytes).is_err() {
            n_errors += 1;
        }
    }
    assert!(
        n_errors > 1_000,
        "corruption is mostly detected ({n_errors})"
    );
}

/// The reference value of an event, with `event_type` replaced.
fn with_event_type(bytes: &[u8], event_type: &str) -> Value {
    let schema = &SchemaFamily::CourseEvent.current().schema;
    let mut body = &bytes[10..];
    let Value::Record(mut fields) = apache_avro::from_avro_datum(schema, &mut body, None).unwrap()
    else {
        panic!("not a record")
    };
    fields[1].1 = Value::String(event_type.to_owned());
    Value::Record(fields)
}

#[test]
fn an_unknown_event_type_is_reported_as_such() {
    let bytes = encode_course_event(&record_response(5));
    let value = with_event_type(&bytes, "grade_essay");
    let relabelled =
        encode_value(SchemaFamily::CourseEvent, value, WireFormat::SingleObject).unwrap();
    assert_eq!(
        decode_course_event(&relabelled),
        Err(DecodeError::UnknownEventType {
            event_type: "grade_essay".to_owned()
        })
    );
    // A known type whose payload branch is another one is not an event.
    let value = with_event_type(&bytes, "no_op");
    let mismatched =
        encode_value(SchemaFamily::CourseEvent, value, WireFormat::SingleObject).unwrap();
    assert!(matches!(
        decode_course_event(&mismatched),
        Err(DecodeError::Undecodable { .. })
    ));
    // An ecosystem type on the course stream is unknown there.
    let value = with_event_type(&bytes, "create_ecosystem");
    let foreign = encode_value(SchemaFamily::CourseEvent, value, WireFormat::SingleObject).unwrap();
    assert!(matches!(
        decode_course_event(&foreign),
        Err(DecodeError::UnknownEventType { .. })
    ));
}

fn course_schema_json() -> Json {
    serde_json::from_str(SchemaFamily::CourseEvent.current().json).unwrap()
}

fn fields_mut(schema: &mut Json) -> &mut Vec<Json> {
    schema["fields"].as_array_mut().unwrap()
}

#[test]
fn a_newer_writer_resolves_or_reports_its_unknown_event_type() {
    // A future version: one more envelope field with a default, one more payload branch.
    let mut newer = course_schema_json();
    fields_mut(&mut newer).insert(
        7,
        serde_json::json!({"name": "region", "type": "string", "default": "us"}),
    );
    let payload = fields_mut(&mut newer).last_mut().unwrap();
    payload["type"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "type": "record", "name": "GradeEssay", "fields": [{"name": "score", "type": "double"}]
        }));
    let newer = Schema::parse_str(&newer.to_string()).unwrap();
    let mut lookup = InMemorySchemaLookup::new();
    lookup.insert(41, newer.clone());

    let event = record_response(6);
    let Value::Record(mut fields) =
        with_event_type(&encode_course_event(&event), "record_response")
    else {
        panic!()
    };
    fields.insert(7, ("region".to_owned(), Value::String("eu".to_owned())));
    let confluent = |fields: Vec<(String, Value)>| {
        let mut bytes = vec![0, 0, 0, 0, 41];
        bytes.extend(apache_avro::to_avro_datum(&newer, Value::Record(fields)).unwrap());
        bytes
    };
    assert_eq!(
        decode_course_event_with(&confluent(fields.clone()), &lookup),
        Ok(event)
    );

    let last = fields.len() - 1;
    fields[1].1 = Value::String("grade_essay".to_owned());
    fields[last].1 = Value::Union(
        10,
        Box::new(Value::Record(vec![(
            "score".to_owned(),
            Value::Double(0.5),
        )])),
    );
    assert_eq!(
        decode_course_event_with(&confluent(fields), &lookup),
        Err(DecodeError::UnknownEventType {
            event_type: "grade_essay".to_owned()
        })
    );
}

#[test]
fn an_older_writer_resolves_with_defaults() {
    // A hypothetical earlier version without metadata_sequence_number.
    let mut older = course_schema_json();
    fields_mut(&mut older).retain(|field| field["name"] != "metadata_sequence_number");
    let older = Schema::parse_str(&older.to_string()).unwrap();
    let mut lookup = InMemorySchemaLookup::new();
    lookup.insert(40, older.clone());

    let mut event = course_events(Optionals::Present).remove(1);
    let Value::Record(mut fields) = with_event_type(&encode_course_event(&event), "create_course")
    else {
        panic!()
    };
    fields.retain(|(name, _)| name != "metadata_sequence_number");
    let mut bytes = vec![0, 0, 0, 0, 40];
    bytes.extend(apache_avro::to_avro_datum(&older, Value::Record(fields)).unwrap());
    event.meta.metadata_sequence_number = None;
    assert_eq!(decode_course_event_with(&bytes, &lookup), Ok(event));
}
