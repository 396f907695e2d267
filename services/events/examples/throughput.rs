//! Encode/decode throughput of `record_response` course events, and apache-avro's generic decode for comparison; run with `--release`.

use std::time::Instant;

use biglearn_domain::events::*;
use biglearn_domain::ids::*;
use biglearn_events::{decode_course_event, encode_course_event, SchemaFamily};
use uuid::Uuid;

fn record_response(seq: i64) -> CourseEvent {
    let id = |n: u128| {
        Uuid::from_u128(0x9b1e_0000_0000_4000_8000_0000_0000_0000 | (n << 20) | seq as u128)
    };
    CourseEvent {
        meta: EnvelopeMeta {
            event_uuid: EventUuid(id(1)),
            sequence_number: SequenceNumber(seq),
            accepted_at_micros: 1_700_000_000_000_000 + seq,
            writer_id: "writer-0".to_owned(),
            settings_version: 3,
            metadata_sequence_number: None,
        },
        course_uuid: CourseUuid(id(2)),
        payload: CoursePayload::RecordResponse(RecordResponse {
            response_uuid: ResponseUuid(id(3)),
            course_uuid: CourseUuid(id(2)),
            sequence_number: SequenceNumber(seq),
            ecosystem_uuid: EcosystemUuid(id(4)),
            trial_uuid: TrialUuid(id(5)),
            student_uuid: StudentUuid(id(6)),
            exercise_uuid: ExerciseUuid(id(7)),
            is_correct: seq % 3 != 0,
            is_real_response: true,
            responded_at: Timestamp("2017-08-15T12:34:56.123456Z".to_owned()),
        }),
    }
}

/// The fastest of `n_rounds` timings of `run` over `n_events` events, in seconds per event
/// (the fastest round is the one least disturbed by other processes on the machine).
fn best_of(n_rounds: usize, n_events: usize, mut run: impl FnMut()) -> f64 {
    (0..n_rounds)
        .map(|_| {
            let started = Instant::now();
            run();
            started.elapsed().as_secs_f64() / n_events as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    // A working set that stays in cache, as a replay batch does.
    const N_EVENTS: usize = 4096;
    const N_ROUNDS: usize = 40;
    let events: Vec<CourseEvent> = (0..N_EVENTS as i64).map(record_response).collect();
    let encoded: Vec<Vec<u8>> = events.iter().map(encode_course_event).collect();
    let mut sink = 0usize;

    let encode = best_of(N_ROUNDS, N_EVENTS, || {
        for event in &events {
            sink += encode_course_event(event).len();
        }
    });
    let decode = best_of(N_ROUNDS, N_EVENTS, || {
        for bytes in &encoded {
            let event = decode_course_event(bytes).expect("own encoding decodes");
            sink += usize::from(
                matches!(&event.payload, CoursePayload::RecordResponse(r) if r.is_correct),
            );
        }
    });
    let schema = &SchemaFamily::CourseEvent.current().schema;
    let generic = best_of(4, N_EVENTS, || {
        for bytes in &encoded {
            let mut body = &bytes[10..];
            apache_avro::from_avro_datum(schema, &mut body, None).expect("apache-avro decodes");
            sink += 1;
        }
    });

    println!(
        "record_response events: {N_EVENTS} x {N_ROUNDS} rounds, {} bytes each (checksum {sink})",
        encoded[0].len()
    );
    for (name, secs) in [
        ("encode", encode),
        ("decode", decode),
        ("apache-avro Value decode (body only)", generic),
    ] {
        println!(
            "{name:<38} {:7.0} ns/event {:12.0} events/s",
            secs * 1e9,
            1.0 / secs
        );
    }
}
