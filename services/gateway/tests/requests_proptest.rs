//! Property tests over the recorded requests and mutations of them: `parse_request` never
//! panics and every rejection is 1..=100 well-formed pointer errors; and the one-pass
//! reading of a body's bytes (`parse_request_in_one_pass`) accepts exactly the bodies the
//! two-step reading (`parse_json_body`, then `parse_request`) accepts, building the same
//! typed request, so `parse_request_body` answers every body as the two steps do.

use std::path::PathBuf;

use biglearn_gateway::requests::{
    candidates, parse_json_body, parse_request, parse_request_body, parse_request_in_one_pass,
    BodyRefusal, Endpoint, Request, MAX_ERRORS, SCHEMA_MISMATCH_MESSAGE,
};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Map, Number, Value};

fn recorded_examples() -> Vec<(Endpoint, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/biglearn-api");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|path| {
            let recording: Value =
                serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
            let endpoint = Endpoint::from_path(recording["endpoint"].as_str().unwrap()).unwrap();
            (endpoint, recording["request"].clone())
        })
        .collect()
}

#[derive(Clone, Debug)]
enum Mutation {
    Delete(Index),
    Insert(Index, String, Value),
    Replace(Index, Value),
    Nest(Index, usize),
    UpperCase(Index),
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|x| Number::from_f64(x).map_or(Value::Null, Value::Number)),
        prop_oneof![
            Just(1e300),
            Just(1.0),
            Just(-0.5),
            Just(0.5),
            Just(2147483648.0)
        ]
        .prop_map(|x| Value::Number(Number::from_f64(x).unwrap())),
        any::<String>().prop_map(Value::String),
        "[0-9a-fA-F-]{30,40}".prop_map(Value::String),
        "[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,8})?[Zz+]?"
            .prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((any::<String>(), inner), 0..6)
                .prop_map(|members| Value::Object(members.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z_~/]{1,12}",
        prop::sample::select(vec![
            "sequence_number",
            "course_uuid",
            "spy_info",
            "exercise_uuid",
            "exercise_group_uuid",
            "algorithm_name",
            "event_types",
            "max_num_exercises",
        ])
        .prop_map(str::to_owned),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<Index>().prop_map(Mutation::Delete),
        (any::<Index>(), key(), json_value())
            .prop_map(|(at, key, value)| Mutation::Insert(at, key, value)),
        (any::<Index>(), json_value()).prop_map(|(at, value)| Mutation::Replace(at, value)),
        (any::<Index>(), 1..120usize).prop_map(|(at, depth)| Mutation::Nest(at, depth)),
        any::<Index>().prop_map(Mutation::UpperCase),
    ]
}

/// Every node's location as a list of steps (object key or array index).
#[derive(Clone, Debug)]
enum Step {
    Key(String),
    Idx(usize),
}

fn all_locations(value: &Value, prefix: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    out.push(prefix.clone());
    match value {
        Value::Object(map) => {
            for (key, member) in map {
                prefix.push(Step::Key(key.clone()));
                all_locations(member, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) => {
            for (idx, item) in items.iter().enumerate() {
                prefix.push(Step::Idx(idx));
                all_locations(item, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn node_mut<'v>(mut value: &'v mut Value, steps: &[Step]) -> &'v mut Value {
    for step in steps {
        value = match (step, value) {
            (Step::Key(key), Value::Object(map)) => map.get_mut(key).unwrap(),
            (Step::Idx(idx), Value::Array(items)) => &mut items[*idx],
            _ => unreachable!("locations come from the same value"),
        };
    }
    value
}

fn apply(body: &mut Value, mutation: &Mutation) {
    let mut locations = Vec::new();
    all_locations(body, &mut Vec::new(), &mut locations);
    let pick = |at: &Index| locations[at.index(locations.len())].clone();
    match mutation {
        Mutation::Delete(at) => {
            let steps = pick(at);
            if let Some((last, parent)) = steps.split_last() {
                match (last, node_mut(body, parent)) {
                    (Step::Key(key), Value::Object(map)) => {
                        map.shift_remove(key);
                    }
                    (Step::Idx(idx), Value::Array(items)) => {
                        items.remove(*idx);
                    }
                    _ => {}
                }
            }
        }
        Mutation::Insert(at, key, value) => match node_mut(body, &pick(at)) {
            Value::Object(map) => {
                map.insert(key.clone(), value.clone());
            }
            Value::Array(items) => items.push(value.clone()),
            other => *other = Value::Object([(key.clone(), value.clone())].into_iter().collect()),
        },
        Mutation::Replace(at, value) => *node_mut(body, &pick(at)) = value.clone(),
        Mutation::Nest(at, depth) => {
            let node = node_mut(body, &pick(at));
            let mut nested = node.take();
            for _ in 0..*depth {
                nested = Value::Array(vec![nested]);
            }
            *node = nested;
        }
        Mutation::UpperCase(at) => {
            if let Value::String(text) = node_mut(body, &pick(at)) {
                *text = text.to_uppercase();
            }
        }
    }
}

/// A recorded body after fewer than `max_mutations` random mutations, sent to its own
/// endpoint or, half the time, to any endpoint.
fn mutated_request(max_mutations: usize) -> impl Strategy<Value = (Endpoint, Value)> {
    (
        any::<Index>(),
        any::<Index>(),
        any::<bool>(),
        prop::collection::vec(mutation(), 0..max_mutations),
    )
        .prop_map(
            |(example_idx, other_endpoint, use_other_endpoint, mutations)| {
                let examples = recorded_examples();
                let (mut endpoint, mut body) = examples[example_idx.index(examples.len())].clone();
                if use_other_endpoint {
                    endpoint = Endpoint::ALL[other_endpoint.index(Endpoint::ALL.len())];
                }
                for mutation in &mutations {
                    apply(&mut body, mutation);
                }
                (endpoint, body)
            },
        )
}

/// `""` or `/`-separated tokens in which `~` is always followed by `0` or `1`.
fn is_well_formed_pointer(pointer: &str) -> bool {
    if pointer.is_empty() {
        return true;
    }
    if !pointer.starts_with('/') {
        return false;
    }
    let bytes = pointer.as_bytes();
    bytes
        .iter()
        .enumerate()
        .all(|(idx, byte)| *byte != b'~' || matches!(bytes.get(idx + 1), Some(b'0' | b'1')))
}

fn parent_pointer(pointer: &str) -> &str {
    pointer.rsplit_once('/').map_or("", |(parent, _)| parent)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn mutated_requests_never_panic_and_fail_with_pointer_errors(
        (endpoint, body) in mutated_request(5),
    ) {
        let first = parse_request(endpoint, &body);
        let second = parse_request(endpoint, &body);
        prop_assert_eq!(&first, &second, "validation is deterministic");
        match first {
            Ok(request) => {
                prop_assert_eq!(request.endpoint(), endpoint);
                if let Request::Write(write) = &request {
                    for candidate in candidates(write) {
                        prop_assert!(body.pointer(&candidate.item_path).is_some());
                    }
                }
            }
            Err(errors) => {
                prop_assert!(!errors.0.is_empty() && errors.0.len() <= MAX_ERRORS);
                for error in &errors.0 {
                    prop_assert!(is_well_formed_pointer(&error.path), "{:?}", error);
                    prop_assert!(!error.message.is_empty());
                    prop_assert!(!error.message.starts_with(SCHEMA_MISMATCH_MESSAGE), "{:?}", error);
                    let resolves = body.pointer(&error.path).is_some();
                    let missing_member_of_object = error.message == "required field is missing"
                        && body.pointer(parent_pointer(&error.path)).is_some_and(Value::is_object);
                    prop_assert!(resolves || missing_member_of_object, "{:?}", error);
                }
            }
        }
    }
}

#[test]
fn unmutated_examples_parse_for_their_own_endpoint_only() {
    // Each recorded body fits its own endpoint; a body sent to another endpoint is
    // rejected with pointer errors (the bodies share no top-level shape).
    for (own, body) in recorded_examples() {
        for endpoint in Endpoint::ALL {
            let result = parse_request(*endpoint, &body);
            let same_schema = *endpoint == own
                || matches!(
                    (own, *endpoint),
                    (
                        Endpoint::UpdateGloballyExcludedExercises,
                        Endpoint::UpdateCourseExcludedExercises
                    ) | (
                        Endpoint::UpdateCourseExcludedExercises,
                        Endpoint::UpdateGloballyExcludedExercises
                    )
                );
            assert_eq!(
                result.is_ok(),
                same_schema,
                "{own:?} body sent to {endpoint:?}"
            );
        }
    }
}

/// Holds the one-pass reading of `bytes` to the two-step one: the same answer, and a body
/// the two steps accept is never read twice.
fn assert_one_pass_agrees(endpoint: Endpoint, bytes: &[u8]) {
    let two_steps = parse_json_body(bytes)
        .map_err(BodyRefusal::Json)
        .and_then(|body| parse_request(endpoint, &body).map_err(BodyRefusal::Invalid));
    let one_pass = parse_request_in_one_pass(endpoint, bytes);
    let text = String::from_utf8_lossy(bytes);
    match (&two_steps, &one_pass) {
        (Ok(expected), Some(got)) => assert_eq!(got, expected, "{endpoint:?} {text}"),
        (Ok(_), None) => panic!("a valid body was not read in one pass: {endpoint:?} {text}"),
        (Err(refusal), Some(got)) => {
            panic!(
                "one pass accepted {got:?}, the two steps refuse {refusal:?}: {endpoint:?} {text}"
            )
        }
        (Err(_), None) => {}
    }
    assert_eq!(
        parse_request_body(endpoint, bytes),
        two_steps,
        "{endpoint:?} {text}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn one_pass_and_two_steps_agree_on_mutated_requests(
        (endpoint, body) in mutated_request(3),
    ) {
        assert_one_pass_agrees(endpoint, body.to_string().as_bytes());
    }
}

/// Values at the edges of the schema's rules (types, ranges, lengths, formats).
fn near_misses() -> Vec<Value> {
    let uuid = "9ba7f072-ebd5-4adf-ad18-7a181715089c";
    [
        r#"null"#,
        r#"true"#,
        r#"0"#,
        r#"1"#,
        r#"-1"#,
        r#"1.0"#,
        r#"0.5"#,
        r#"1e3"#,
        r#"2147483647"#,
        r#"2147483648"#,
        r#"18446744073709551615"#,
        r#""""#,
        r#""x""#,
        r#"{}"#,
        r#"[]"#,
        r#""2017-06-27T23:26:48.9861001Z""#,
        r#""2017-02-29T00:00:00Z""#,
        r#""9BA7F072-EBD5-4ADF-AD18-7A181715089C""#,
        r#""9ba7f072ebd54adfad187a181715089c""#,
        r#""9ba7f072-ebd5-4adf-ad18-7a181715089c@0""#,
        r#""9ba7f072-ebd5-4adf-ad18-7a181715089c@1.2""#,
        r#""homework""#,
        r#""local_query""#,
    ]
    .iter()
    .map(|text| serde_json::from_str(text).unwrap())
    .chain([
        Value::String("é".repeat(101)),
        Value::String(format!("{uuid} ")),
        Value::Array(vec![Value::String(uuid.into())]),
    ])
    .collect()
}

/// The JSON text of `value` with the first member of the object at `at` written twice.
fn text_with_repeated_member(value: &Value, at: &[Step]) -> Option<String> {
    fn write(value: &Value, at: Option<&[Step]>, out: &mut String) -> bool {
        match value {
            Value::Object(map) => {
                out.push('{');
                let mut repeated = false;
                let mut members: Vec<(&String, &Value)> = map.iter().collect();
                if at.is_some_and(<[Step]>::is_empty) {
                    if let Some(first) = members.first().copied() {
                        members.push(first);
                        repeated = true;
                    }
                }
                for (n, (key, member)) in members.into_iter().enumerate() {
                    if n > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(key).unwrap());
                    out.push(':');
                    let inner = match at {
                        Some([Step::Key(step), rest @ ..]) if step == key => Some(rest),
                        _ => None,
                    };
                    repeated |= write(member, inner, out);
                }
                out.push('}');
                repeated
            }
            Value::Array(items) => {
                out.push('[');
                let mut repeated = false;
                for (idx, item) in items.iter().enumerate() {
                    if idx > 0 {
                        out.push(',');
                    }
                    let inner = match at {
                        Some([Step::Idx(step), rest @ ..]) if *step == idx => Some(rest),
                        _ => None,
                    };
                    repeated |= write(item, inner, out);
                }
                out.push(']');
                repeated
            }
            scalar => {
                out.push_str(&scalar.to_string());
                false
            }
        }
    }
    let mut out = String::new();
    write(value, Some(at), &mut out).then_some(out)
}

#[test]
fn one_pass_and_two_steps_agree_at_every_location_of_every_recording() {
    // Every location of every recording: each value replaced by each near miss, the member
    // removed, an unknown member added, and every object with a member written twice.
    let near_misses = near_misses();
    let mut n_bodies = 0;
    for (endpoint, body) in recorded_examples() {
        assert_one_pass_agrees(endpoint, body.to_string().as_bytes());
        let mut locations = Vec::new();
        all_locations(&body, &mut Vec::new(), &mut locations);
        for at in &locations {
            for replacement in &near_misses {
                let mut mutated = body.clone();
                *node_mut(&mut mutated, at) = replacement.clone();
                assert_one_pass_agrees(endpoint, mutated.to_string().as_bytes());
                n_bodies += 1;
            }
            let mut mutated = body.clone();
            if let Value::Object(map) = node_mut(&mut mutated, at) {
                map.insert("unknown_member".into(), Value::Bool(true));
                assert_one_pass_agrees(endpoint, mutated.to_string().as_bytes());
            }
            let mut mutated = body.clone();
            if let Some((Step::Key(key), parent)) = at.split_last() {
                if let Value::Object(map) = node_mut(&mut mutated, parent) {
                    map.shift_remove(key);
                }
                assert_one_pass_agrees(endpoint, mutated.to_string().as_bytes());
            }
            if let Some(text) = text_with_repeated_member(&body, at) {
                assert_one_pass_agrees(endpoint, text.as_bytes());
                n_bodies += 1;
            }
            n_bodies += 1;
        }
    }
    assert!(n_bodies > 1000, "{n_bodies} bodies");
}

#[test]
fn one_pass_refuses_what_is_not_one_json_document() {
    let (endpoint, body) = recorded_examples()
        .into_iter()
        .find(|(endpoint, _)| *endpoint == Endpoint::RecordResponses)
        .expect("a recorded record_responses");
    let text = body.to_string();
    for bytes in [
        format!("{text} {{}}"),
        format!("{text}x"),
        text[..text.len() - 1].to_owned(),
        String::new(),
        "[]".to_owned(),
    ] {
        assert!(parse_request_in_one_pass(endpoint, bytes.as_bytes()).is_none());
        assert_one_pass_agrees(endpoint, bytes.as_bytes());
    }
    assert!(parse_request_in_one_pass(endpoint, format!(" {text}\n").as_bytes()).is_some());
}
