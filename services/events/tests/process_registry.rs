//! With a registry view installed, record builders write Confluent framing and default decoders read both framings (own binary: the view is process-wide).

#[allow(dead_code)]
#[path = "events/fixtures.rs"]
mod fixtures;

use std::collections::HashMap;
use std::sync::Arc;

use biglearn_events::*;

fn header<'r>(record: &'r EncodedRecord, name: &str) -> &'r str {
    let (_, value) = record
        .headers
        .iter()
        .find(|(key, _)| key == name)
        .expect("header present");
    std::str::from_utf8(value).unwrap()
}

#[test]
fn an_installed_registry_view_switches_writers_to_confluent_and_readers_to_both() {
    let event = fixtures::record_response(5);
    let single = course_event_record(&event);
    assert_eq!(single.value[..2], SINGLE_OBJECT_MAGIC);

    let mut lookup = InMemorySchemaLookup::new();
    lookup.insert(21, SchemaFamily::CourseEvent.current().schema.clone());
    install_registry_view(Some(RegistryView {
        current_ids: HashMap::from([(SchemaFamily::CourseEvent, 21)]),
        lookup: Arc::new(lookup),
    }));
    let confluent = course_event_record(&event);
    assert_eq!(confluent.value[..5], [CONFLUENT_MAGIC, 0, 0, 0, 21]);
    assert_eq!(header(&confluent, HEADER_ENCODING), ENCODING_CONFLUENT);
    // Both framings decode through the default decoder.
    assert_eq!(decode_course_event(&confluent.value), Ok(event.clone()));
    assert_eq!(decode_course_event(&single.value), Ok(event.clone()));
    // An id the registry did not give is still undecodable (dead-lettered by consumers).
    let mut unknown = confluent.value.clone();
    unknown[4] = 99;
    assert!(matches!(
        decode_course_event(&unknown),
        Err(DecodeError::Undecodable { .. })
    ));
    // Families without a registered id keep single-object framing.
    assert_eq!(
        process_format(SchemaFamily::EcosystemEvent),
        WireFormat::SingleObject
    );

    install_registry_view(None);
    assert_eq!(course_event_record(&event).value[..2], SINGLE_OBJECT_MAGIC);
    assert!(matches!(
        decode_course_event(&confluent.value),
        Err(DecodeError::Undecodable { .. })
    ));
}
