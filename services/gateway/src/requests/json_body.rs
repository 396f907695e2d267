//! A request body from bytes to JSON, refusing what `serde_json::Value` would quietly
//! accept: an object holding the same key twice. serde_json keeps the last one, so
//! `{"responses":[],"responses":[item]}` would validate as one response and write it,
//! while another parser (or a human reading the log of the request) sees none. The
//! error names the JSON pointer of the repeated key, like every other 400.

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Why a body is not a JSON document this API accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonBodyError {
    /// Not JSON at all (serde_json's message, with line and column).
    Syntax(String),
    /// An object has `key` twice; `pointer` is the RFC 6901 pointer of the repeated key.
    DuplicateKey { pointer: String, key: String },
}

impl fmt::Display for JsonBodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonBodyError::Syntax(message) => write!(f, "the body is not valid JSON: {message}"),
            JsonBodyError::DuplicateKey { key, .. } => write!(
                f,
                "the key {key:?} appears more than once in the same object; send it once"
            ),
        }
    }
}

impl JsonBodyError {
    /// The pointer the error is about (`""`: the whole body).
    pub fn pointer(&self) -> &str {
        match self {
            JsonBodyError::Syntax(_) => "",
            JsonBodyError::DuplicateKey { pointer, .. } => pointer,
        }
    }
}

/// Parses `bytes` as one JSON document with no repeated object key.
pub fn parse_json_body(bytes: &[u8]) -> Result<Value, JsonBodyError> {
    let mut found = None;
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let parsed = StrictSeed {
        path: None,
        found: &mut found,
    }
    .deserialize(&mut deserializer)
    .and_then(|value| deserializer.end().map(|()| value));
    match (parsed, found) {
        (_, Some(duplicate)) => Err(duplicate),
        (Ok(value), None) => Ok(value),
        (Err(error), None) => Err(JsonBodyError::Syntax(error.to_string())),
    }
}

/// Reads one JSON value from `deserializer`, refusing an object that holds a key twice
/// (an error without a pointer: callers that need it parse the whole body again).
pub(super) fn deserialize_strict_value<'de, D: de::Deserializer<'de>>(
    deserializer: D,
) -> Result<Value, D::Error> {
    let mut found = None;
    StrictSeed {
        path: None,
        found: &mut found,
    }
    .deserialize(deserializer)
}

/// One step of the path from the root to the value being parsed, on the stack: the
/// pointer is only spelled out when a duplicate is found, so a valid body costs no
/// pointer strings.
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

struct Path<'a> {
    parent: Option<&'a Path<'a>>,
    step: Step<'a>,
}

fn pointer_of(path: Option<&Path<'_>>, last_key: &str) -> String {
    let mut steps = Vec::new();
    let mut at = path;
    while let Some(node) = at {
        steps.push(&node.step);
        at = node.parent;
    }
    let mut pointer = String::new();
    for step in steps.into_iter().rev() {
        match step {
            Step::Key(key) => super::validate::push_pointer_token(&mut pointer, key),
            Step::Index(index) => {
                super::validate::push_pointer_token(&mut pointer, &index.to_string())
            }
        }
    }
    super::validate::push_pointer_token(&mut pointer, last_key);
    pointer
}

/// Builds a `Value` like serde_json's own visitor, checking each object for repeated keys.
/// The first duplicate is kept in `found` (serde's error type cannot carry it) and the
/// parse is stopped with a placeholder error.
struct StrictSeed<'p, 'f> {
    path: Option<&'p Path<'p>>,
    found: &'f mut Option<JsonBodyError>,
}

impl<'de> DeserializeSeed<'de> for StrictSeed<'_, '_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictSeed<'_, '_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        // JSON text cannot spell a non-finite number, so this always holds a number.
        Ok(Number::from_f64(value).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        loop {
            let path = Path {
                parent: self.path,
                step: Step::Index(items.len()),
            };
            let seed = StrictSeed {
                path: Some(&path),
                found: &mut *self.found,
            };
            match seq.next_element_seed(seed)? {
                Some(item) => items.push(item),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                *self.found = Some(JsonBodyError::DuplicateKey {
                    pointer: pointer_of(self.path, &key),
                    key,
                });
                return Err(de::Error::custom("duplicate key"));
            }
            let path = Path {
                parent: self.path,
                step: Step::Key(&key),
            };
            let value = map.next_value_seed(StrictSeed {
                path: Some(&path),
                found: &mut *self.found,
            })?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_valid_body_parses_as_serde_json_does() {
        let text =
            r#"{"b":[1,-2,3.5,"x",null,true,{"c":{}}],"a":{"d":[]},"e":18446744073709551615}"#;
        assert_eq!(
            parse_json_body(text.as_bytes()).unwrap(),
            serde_json::from_str::<Value>(text).unwrap()
        );
        // Key order is kept (the workspace's serde_json preserves it).
        let keys: Vec<String> = parse_json_body(text.as_bytes())
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(keys, ["b", "a", "e"]);
    }

    #[test]
    fn a_repeated_key_is_named_by_its_pointer() {
        let error = parse_json_body(br#"{"responses":[],"responses":[{"x":1}]}"#).unwrap_err();
        assert_eq!(
            error,
            JsonBodyError::DuplicateKey {
                pointer: "/responses".into(),
                key: "responses".into()
            }
        );
        let error =
            parse_json_body(br#"{"responses":[{"a":1},{"a/b":1,"c~":2,"a/b":3}]}"#).unwrap_err();
        assert_eq!(error.pointer(), "/responses/1/a~1b");
        assert!(error.to_string().contains("\"a/b\""), "{error}");
    }

    #[test]
    fn the_same_key_in_different_objects_is_fine() {
        let value = parse_json_body(br#"{"a":{"x":1},"b":{"x":2},"c":[{"x":3},{"x":4}]}"#);
        assert_eq!(
            value.unwrap(),
            json!({"a":{"x":1},"b":{"x":2},"c":[{"x":3},{"x":4}]})
        );
    }

    #[test]
    fn not_json_is_a_syntax_error_and_trailing_bytes_too() {
        for text in ["", "{", r#"{"a":1} x"#, "[1,]", r#"{"a" 1}"#] {
            match parse_json_body(text.as_bytes()) {
                Err(JsonBodyError::Syntax(_)) => {}
                other => panic!("{text:?}: {other:?}"),
            }
        }
        assert_eq!(parse_json_body(b" [1] \n").unwrap(), json!([1]));
    }

    #[test]
    fn a_duplicate_after_a_syntax_error_is_not_reported_and_vice_versa() {
        // The first problem in document order wins.
        assert!(matches!(
            parse_json_body(br#"{"a":1,"a":2,"b":}"#),
            Err(JsonBodyError::DuplicateKey { .. })
        ));
        assert!(matches!(
            parse_json_body(br#"{"b":,"a":1,"a":2}"#),
            Err(JsonBodyError::Syntax(_))
        ));
    }
}
