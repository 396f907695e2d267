//! Every event type round-trips in both framings; records carry the routing headers.

use biglearn_domain::events::{CourseEventType, EcosystemEventType};
use biglearn_events::*;

use crate::fixtures::{course_events, ecosystem_events, Optionals};

const BOTH: [Optionals; 2] = [Optionals::Present, Optionals::Absent];

fn confluent_lookup() -> InMemorySchemaLookup {
    let mut lookup = InMemorySchemaLookup::new();
    lookup.insert(7, SchemaFamily::CourseEvent.current().schema.clone());
    lookup.insert(8, SchemaFamily::EcosystemEvent.current().schema.clone());
    lookup
}

#[test]
fn every_course_event_type_round_trips() {
    for optionals in BOTH {
        let events = course_events(optionals);
        let types: Vec<_> = events.iter().map(|event| event.event_type()).collect();
        assert_eq!(types, CourseEventType::ALL, "fixtures cover the catalogue");
        for event in &events {
            let bytes = encode_course_event(event);
            assert_eq!(bytes[..2], SINGLE_OBJECT_MAGIC);
            assert_eq!(decode_course_event(&bytes).as_ref(), Ok(event));
        }
    }
}

#[test]
fn every_ecosystem_event_type_round_trips() {
    for optionals in BOTH {
        let events = ecosystem_events(optionals);
        let mut types: Vec<_> = events.iter().map(|event| event.event_type()).collect();
        types.sort();
        assert_eq!(types, EcosystemEventType::ALL);
        for event in &events {
            let bytes = encode_ecosystem_event(event);
            assert_eq!(decode_ecosystem_event(&bytes).as_ref(), Ok(event));
        }
    }
}

#[test]
fn confluent_framing_decodes_through_a_schema_lookup() {
    let lookup = confluent_lookup();
    for optionals in BOTH {
        for event in course_events(optionals) {
            let bytes = encode_course_event_as(&event, WireFormat::Confluent { schema_id: 7 });
            assert_eq!(bytes[..5], [0, 0, 0, 0, 7]);
            assert_eq!(decode_course_event_with(&bytes, &lookup), Ok(event.clone()));
            // The same body under the other framing is the same event.
            let single = encode_course_event(&event);
            assert_eq!(bytes[5..], single[10..]);
            // Without a registry the schema id is unknown.
            assert!(matches!(
                decode_course_event(&bytes),
                Err(DecodeError::Undecodable { .. })
            ));
        }
        for event in ecosystem_events(optionals) {
            let bytes = encode_ecosystem_event_as(&event, WireFormat::Confluent { schema_id: 8 });
            assert_eq!(decode_ecosystem_event_with(&bytes, &lookup), Ok(event));
        }
    }
    // An id registered for another schema does not decode as a course event.
    let event = &course_events(Optionals::Absent)[0];
    let wrong = encode_course_event_as(event, WireFormat::Confluent { schema_id: 8 });
    assert!(matches!(
        decode_course_event_with(&wrong, &lookup),
        Err(DecodeError::Undecodable { .. })
    ));
}

fn header<'a>(record: &'a EncodedRecord, name: &str) -> &'a str {
    let values: Vec<_> = record
        .headers
        .iter()
        .filter(|(key, _)| key == name)
        .map(|(_, value)| std::str::from_utf8(value).unwrap())
        .collect();
    assert_eq!(values.len(), 1, "{name}");
    values[0]
}

#[test]
fn records_carry_the_key_and_routing_headers() {
    for event in course_events(Optionals::Present) {
        let record = course_event_record(&event);
        let course = event.course_uuid.to_string();
        assert_eq!(record.key, course.as_bytes());
        assert_eq!(record.key.len(), 36);
        assert_eq!(record.value, encode_course_event(&event));
        assert_eq!(
            header(&record, HEADER_EVENT_TYPE),
            event.event_type().as_str()
        );
        assert_eq!(
            header(&record, HEADER_EVENT_UUID),
            event.meta.event_uuid.to_string()
        );
        assert_eq!(header(&record, HEADER_AGGREGATE_UUID), course);
        assert_eq!(
            header(&record, HEADER_SEQUENCE_NUMBER),
            event.meta.sequence_number.0.to_string()
        );
        assert_eq!(header(&record, HEADER_ENCODING), ENCODING_SINGLE_OBJECT);
        let routing = routing_headers(&record.headers).unwrap();
        assert_eq!(
            routing,
            RoutingHeaders {
                event_type: event.event_type().as_str().to_owned(),
                event_uuid: event.meta.event_uuid.0,
                aggregate_uuid: event.course_uuid.0,
                sequence_number: event.meta.sequence_number.0,
            }
        );
    }
    for event in ecosystem_events(Optionals::Absent) {
        let record = ecosystem_event_record_as(&event, WireFormat::Confluent { schema_id: 3 });
        assert_eq!(record.key, event.ecosystem_uuid.to_string().as_bytes());
        assert_eq!(header(&record, HEADER_ENCODING), ENCODING_CONFLUENT);
        let routing = routing_headers(&record.headers).unwrap();
        assert_eq!(routing.aggregate_uuid, event.ecosystem_uuid.0);
        assert_eq!(routing.event_type, event.event_type().as_str());
    }
}

fn check_routing(headers: &[(&str, &str)], expected: Option<(&str, i64)>) {
    let owned: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(key, value)| (key.to_string(), value.as_bytes().to_vec()))
        .collect();
    let routing = routing_headers(&owned);
    assert_eq!(
        routing
            .as_ref()
            .map(|r| (r.event_type.as_str(), r.sequence_number)),
        expected,
        "{headers:?}"
    );
}

#[test]
fn routing_headers_need_all_four_fields() {
    let event_uuid = "581DF776-A323-44BD-8CB1-346CD664B974";
    let aggregate = "6c1a3f0e-6a0b-5b8e-9c61-3b1e0d9a4f27";
    let full = [
        (HEADER_EVENT_TYPE, "grade_essay"),
        (HEADER_EVENT_UUID, event_uuid),
        (HEADER_AGGREGATE_UUID, aggregate),
        (HEADER_SEQUENCE_NUMBER, "12"),
    ];
    // A type unknown to this build still routes: that is what opaque entries need.
    check_routing(&full, Some(("grade_essay", 12)));
    for missing in 0..full.len() {
        let mut partial = full.to_vec();
        partial.remove(missing);
        check_routing(&partial, None);
    }
    check_routing(
        &[full[0], full[1], full[2], (HEADER_SEQUENCE_NUMBER, "12x")],
        None,
    );
    check_routing(
        &[full[0], (HEADER_EVENT_UUID, "not-a-uuid"), full[2], full[3]],
        None,
    );
    check_routing(&[(HEADER_EVENT_TYPE, ""), full[1], full[2], full[3]], None);
}

#[test]
fn dead_letters_round_trip() {
    for reason in DeadLetterReason::ALL {
        for with_originals in [true, false] {
            let dead_letter = DeadLetter {
                source_topic: "prod.course-events".to_owned(),
                source_partition: 17,
                source_offset: 123_456_789,
                consumer_group_or_component: "prod.scheduler".to_owned(),
                reason,
                detail: format!("{} détail", reason.as_str()),
                original_key: with_originals.then(|| b"key".to_vec()),
                original_value: with_originals.then(|| vec![0xc3, 0x01, 0xff, 0x00]),
                original_headers: if with_originals {
                    vec![
                        ("bl-event-type".to_owned(), b"x".to_vec()),
                        ("bl-event-type".to_owned(), Vec::new()),
                    ]
                } else {
                    Vec::new()
                },
                observed_at_micros: -5,
            };
            let bytes = encode_dead_letter(&dead_letter);
            assert_eq!(decode_dead_letter(&bytes).as_ref(), Ok(&dead_letter));
            let record = dead_letter_record(&dead_letter);
            assert_eq!(record.value, bytes);
            assert_eq!(
                Some(record.key),
                dead_letter.original_key.or(Some(Vec::new()))
            );
        }
    }
    assert_eq!(
        DecodeError::UnknownEventType {
            event_type: "x".into()
        }
        .dead_letter_reason(),
        DeadLetterReason::UnknownType
    );
}
