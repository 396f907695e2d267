//! The hand-written codecs against apache-avro (same bytes, same values), and `Value` round trips of the schemas without Rust types.

use apache_avro::schema::Schema;
use apache_avro::types::Value;
use biglearn_domain::events::{CourseEventType, EcosystemEventType, EnvelopeMeta};
use biglearn_events::*;
use serde_json::{json, Map, Value as Json};

use crate::fixtures::{course_events, ecosystem_events, id, Optionals};

/// Reads `body` with apache-avro, checks it consumes every byte and re-encodes identically.
fn reference_value(family: SchemaFamily, body: &[u8]) -> Value {
    let schema = &family.current().schema;
    let mut remaining = body;
    let value = apache_avro::from_avro_datum(schema, &mut remaining, None).unwrap();
    assert!(
        remaining.is_empty(),
        "apache-avro left {} bytes",
        remaining.len()
    );
    let reencoded = apache_avro::to_avro_datum(schema, value.clone()).unwrap();
    assert_eq!(reencoded, body, "apache-avro writes the same bytes");
    value
}

/// A value as JSON, with `null` record fields omitted (as `to_event_data` does).
fn to_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Boolean(b) => json!(b),
        Value::Int(n) => json!(n),
        Value::Long(n) | Value::TimestampMicros(n) => json!(n),
        Value::Double(x) => json!(x),
        Value::String(text) | Value::Enum(_, text) => json!(text),
        Value::Uuid(uuid) => json!(uuid.to_string()),
        Value::Bytes(bytes) | Value::Fixed(_, bytes) => json!(bytes),
        Value::Union(_, inner) => to_json(inner),
        Value::Array(items) => Json::Array(items.iter().map(to_json).collect()),
        Value::Record(fields) => Json::Object(
            fields
                .iter()
                .filter(|(_, field)| !to_json(field).is_null())
                .map(|(name, field)| (name.clone(), to_json(field)))
                .collect::<Map<_, _>>(),
        ),
        other => panic!("unexpected value {other:?}"),
    }
}

fn envelope_json(
    meta: &EnvelopeMeta,
    event_type: &str,
    aggregate_field: &str,
    aggregate: String,
    payload: Json,
) -> Json {
    let mut object = json!({
        "event_uuid": meta.event_uuid.to_string(),
        "event_type": event_type,
        aggregate_field: aggregate,
        "sequence_number": meta.sequence_number.0,
        "accepted_at": meta.accepted_at_micros,
        "writer_id": meta.writer_id,
        "settings_version": meta.settings_version,
        "payload": payload,
    });
    if let Some(n) = meta.metadata_sequence_number {
        object["metadata_sequence_number"] = json!(n);
    }
    object
}

fn union_branch(value: &Value) -> usize {
    let Value::Record(fields) = value else {
        panic!("not a record")
    };
    match &fields.last().unwrap().1 {
        Value::Union(idx, _) => *idx as usize,
        other => panic!("payload is not a union: {other:?}"),
    }
}

#[test]
fn course_bytes_are_what_apache_avro_reads_and_writes() {
    for optionals in [Optionals::Present, Optionals::Absent] {
        for event in course_events(optionals) {
            let bytes = encode_course_event(&event);
            let value = reference_value(SchemaFamily::CourseEvent, &bytes[10..]);
            let event_type = event.event_type();
            let expected = envelope_json(
                &event.meta,
                event_type.as_str(),
                "course_uuid",
                event.course_uuid.to_string(),
                event.payload.to_event_data(),
            );
            assert_eq!(to_json(&value), expected, "{}", event_type.as_str());
            let branch = CourseEventType::ALL
                .iter()
                .position(|t| *t == event_type)
                .unwrap();
            assert_eq!(union_branch(&value), branch);
        }
    }
}

#[test]
fn ecosystem_bytes_are_what_apache_avro_reads_and_writes() {
    for optionals in [Optionals::Present, Optionals::Absent] {
        for event in ecosystem_events(optionals) {
            let bytes = encode_ecosystem_event(&event);
            let value = reference_value(SchemaFamily::EcosystemEvent, &bytes[10..]);
            let event_type = event.event_type();
            let expected = envelope_json(
                &event.meta,
                event_type.as_str(),
                "ecosystem_uuid",
                event.ecosystem_uuid.to_string(),
                event.payload.to_event_data(),
            );
            assert_eq!(to_json(&value), expected, "{}", event_type.as_str());
            let branch = EcosystemEventType::ALL
                .iter()
                .position(|t| *t == event_type)
                .unwrap();
            assert_eq!(union_branch(&value), branch);
        }
    }
}

fn pascal_case(snake: &str) -> String {
    snake
        .split('_')
        .map(|word| word[..1].to_uppercase() + &word[1..])
        .collect()
}

fn payload_branch_names(family: SchemaFamily) -> Vec<String> {
    let Schema::Record(record) = &family.current().schema else {
        panic!()
    };
    let payload = record
        .fields
        .iter()
        .find(|field| field.name == "payload")
        .unwrap();
    let Schema::Union(union) = &payload.schema else {
        panic!()
    };
    union
        .variants()
        .iter()
        .map(|variant| match variant {
            Schema::Record(record) => record.name.name.clone(),
            other => panic!("payload branch is not a record: {other:?}"),
        })
        .collect()
}

#[test]
fn payload_unions_follow_the_catalogue_order() {
    let course: Vec<_> = CourseEventType::ALL
        .iter()
        .map(|t| pascal_case(t.as_str()))
        .collect();
    assert_eq!(payload_branch_names(SchemaFamily::CourseEvent), course);
    let ecosystem: Vec<_> = EcosystemEventType::ALL
        .iter()
        .map(|t| pascal_case(t.as_str()))
        .collect();
    assert_eq!(
        payload_branch_names(SchemaFamily::EcosystemEvent),
        ecosystem
    );
}

#[test]
fn dead_letter_bytes_are_what_apache_avro_reads_and_writes() {
    let dead_letter = DeadLetter {
        source_topic: "prod.inbox".to_owned(),
        source_partition: 2,
        source_offset: 9,
        consumer_group_or_component: "writer".to_owned(),
        reason: DeadLetterReason::SlotConflict,
        detail: "two events at slot 4".to_owned(),
        original_key: Some(b"k".to_vec()),
        original_value: None,
        original_headers: vec![("h".to_owned(), vec![1, 2])],
        observed_at_micros: 1_700_000_000_000_000,
    };
    let bytes = encode_dead_letter(&dead_letter);
    let value = reference_value(SchemaFamily::DeadLetter, &bytes[10..]);
    assert_eq!(
        to_json(&value),
        json!({
            "source_topic": "prod.inbox", "source_partition": 2, "source_offset": 9,
            "consumer_group_or_component": "writer", "reason": "slot_conflict",
            "detail": "two events at slot 4", "original_key": [107],
            "original_headers": [{"key": "h", "value": [1, 2]}],
            "observed_at": 1_700_000_000_000_000i64
        })
    );
}

fn uuid(n: u128) -> Value {
    Value::Uuid(id(n))
}

fn record(fields: Vec<(&str, Value)>) -> Value {
    Value::Record(
        fields
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect(),
    )
}

fn string(text: &str) -> Value {
    Value::String(text.to_owned())
}

fn check_generic_round_trip(family: SchemaFamily, value: Value) {
    let bytes = encode_value(family, value.clone(), WireFormat::SingleObject).unwrap();
    assert_eq!(bytes[2..10], family.current().fingerprint.to_le_bytes());
    assert_eq!(
        decode_value(family, &bytes, &NoSchemaRegistry).unwrap(),
        value
    );
    let mut lookup = InMemorySchemaLookup::new();
    lookup.insert(1, family.current().schema.clone());
    let confluent = encode_value(
        family,
        value.clone(),
        WireFormat::Confluent { schema_id: 1 },
    )
    .unwrap();
    assert_eq!(decode_value(family, &confluent, &lookup).unwrap(), value);
}

fn settings_event(version: i64, body_idx: u32, body: Value) -> Value {
    record(vec![
        ("settings_version", Value::Long(version)),
        ("change_id", uuid(900)),
        (
            "key",
            string("scheduler.default_num_pes_per_book_container"),
        ),
        ("actor", string("ops@example.org")),
        ("reason", string("term start")),
        ("occurred_at", Value::TimestampMicros(1_700_000_000_000_000)),
        ("body", Value::Union(body_idx, Box::new(body))),
    ])
}

#[test]
fn settings_events_round_trip_every_body() {
    let bodies = [
        record(vec![
            ("value_type", Value::Enum(1, "int".into())),
            ("scope", Value::Enum(1, "course".into())),
            ("default", string("3")),
            ("kill_value", Value::Union(1, Box::new(string("0")))),
            ("description", string("PEs per book container")),
        ]),
        record(vec![
            ("value", string("4")),
            ("overrides", Value::Enum(1, "reset".into())),
            ("applies_to", Value::Enum(1, "new_courses".into())),
            ("existing_course_cutoff", Value::Long(-1)),
        ]),
        record(vec![("course_uuid", uuid(1)), ("value", string("3"))]),
        record(vec![("course_uuid", uuid(1)), ("value", string("5"))]),
        record(vec![("course_uuid", uuid(1))]),
        record(vec![("engaged", Value::Boolean(true))]),
    ];
    for (idx, body) in bodies.into_iter().enumerate() {
        check_generic_round_trip(
            SchemaFamily::SettingsEvent,
            settings_event(idx as i64 + 1, idx as u32, body),
        );
    }
    // kill_value absent.
    let defined = record(vec![
        ("value_type", Value::Enum(0, "bool".into())),
        ("scope", Value::Enum(0, "global".into())),
        ("default", string("true")),
        ("kill_value", Value::Union(0, Box::new(Value::Null))),
        ("description", string("retrain")),
    ]);
    check_generic_round_trip(SchemaFamily::SettingsEvent, settings_event(9, 0, defined));
}

fn model(accuracy: Value) -> Value {
    let ints = |items: &[i32]| Value::Array(items.iter().map(|n| Value::Int(*n)).collect());
    let doubles = |items: &[f64]| Value::Array(items.iter().map(|x| Value::Double(*x)).collect());
    record(vec![
        ("matrix_uuid", uuid(500)),
        ("ecosystem_uuid", uuid(2)),
        ("model_seq", Value::Long(3)),
        ("algorithm", string("biglearn_sparfa")),
        ("spec_version", Value::Int(1)),
        ("trigger", string("response_growth")),
        ("Q_ids", Value::Array(vec![uuid(61), uuid(62)])),
        ("C_ids", Value::Array(vec![uuid(71)])),
        ("d", doubles(&[0.5, -1.25])),
        ("W_rows", ints(&[0, 0])),
        ("W_cols", ints(&[0, 1])),
        ("W_values", doubles(&[1.5, 0.25])),
        ("H_rows", ints(&[0])),
        ("H_cols", ints(&[1])),
        (
            "hyperparameters",
            record(vec![
                ("lambda_h_l2", Value::Double(1e-3)),
                ("lambda_nh_l1", Value::Double(0.1)),
                ("lambda_d_l2", Value::Double(1e-2)),
                ("gamma_u", Value::Double(1.0)),
                ("holdout_modulus", Value::Int(10)),
                ("patience", Value::Int(20)),
                ("max_outer_iterations", Value::Int(500)),
                ("inner_steps", Value::Int(5)),
            ]),
        ),
        ("settings_version", Value::Long(7)),
        (
            "trained_through",
            Value::Array(vec![record(vec![
                ("topic", string("prod.sparfa-responses")),
                ("partition", Value::Int(3)),
                ("next_offset", Value::Long(1234)),
            ])]),
        ),
        ("training_observations", Value::Long(1000)),
        ("holdout_observations", Value::Long(100)),
        ("learners", Value::Long(40)),
        ("training_set_sha256", Value::Fixed(32, (0..32).collect())),
        ("holdout_accuracy", accuracy.clone()),
        ("holdout_log_loss", accuracy),
        ("outer_iterations", Value::Int(37)),
        ("best_iteration", Value::Int(17)),
        ("fit_seconds", Value::Double(0.75)),
        ("created_at", Value::TimestampMicros(1_700_000_000_000_000)),
    ])
}

#[test]
fn model_computed_round_trips() {
    check_generic_round_trip(
        SchemaFamily::ModelComputed,
        model(Value::Union(1, Box::new(Value::Double(0.7)))),
    );
    check_generic_round_trip(
        SchemaFamily::ModelComputed,
        model(Value::Union(0, Box::new(Value::Null))),
    );
}

fn result(kind: (u32, &str), optionals: bool) -> Value {
    let opt = |value: Value| {
        if optionals {
            Value::Union(1, Box::new(value))
        } else {
            Value::Union(0, Box::new(Value::Null))
        }
    };
    record(vec![
        ("kind", Value::Enum(kind.0, kind.1.to_owned())),
        ("student_uuid", opt(uuid(4))),
        ("course_container_uuid", opt(uuid(41))),
        ("book_container_uuid", opt(uuid(71))),
        ("assignment_uuid", opt(uuid(81))),
        ("algorithm_name", string("student_driven_biglearn_sparfa")),
        ("calculation_uuid", uuid(600)),
        ("ecosystem_matrix_uuid", opt(uuid(500))),
        ("exercise_uuids", opt(Value::Array(vec![uuid(5), uuid(6)]))),
        (
            "clue_data",
            opt(record(vec![
                ("minimum", Value::Double(0.1)),
                ("most_likely", Value::Double(0.5)),
                ("maximum", Value::Double(0.9)),
                ("is_real", Value::Boolean(true)),
                ("ecosystem_uuid", Value::Union(1, Box::new(uuid(2)))),
            ])),
        ),
        ("spy_info_json", string("{}")),
        (
            "version",
            record(vec![
                ("input_seq", Value::Long(12)),
                ("model_seq", Value::Long(-1)),
                ("computed_at", Value::TimestampMicros(1_700_000_000_000_001)),
            ]),
        ),
        ("course_uuid", opt(uuid(1))),
        ("producer", string("scheduler")),
    ])
}

#[test]
fn result_records_round_trip() {
    let kinds = [
        "student_clue",
        "teacher_clue",
        "assignment_pes",
        "assignment_spes",
        "practice_worst_areas",
    ];
    for (idx, kind) in kinds.into_iter().enumerate() {
        for optionals in [true, false] {
            check_generic_round_trip(
                SchemaFamily::ResultRecord,
                result((idx as u32, kind), optionals),
            );
        }
    }
}

#[test]
fn generic_encoding_rejects_a_value_that_does_not_fit() {
    let error = encode_value(
        SchemaFamily::ResultRecord,
        string("nope"),
        WireFormat::SingleObject,
    );
    assert!(error.is_err());
}
