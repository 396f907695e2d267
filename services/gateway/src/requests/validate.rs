//! The error-collecting JSON walker: declarative schemas checked over `serde_json::Value`.
//!
//! A [`Schema`] is a static tree. [`validate`] walks a request body against it in
//! document order (object members in the order they were sent, then missing required
//! members in schema order) and collects at most [`MAX_ERRORS`] errors, each with an
//! RFC 6901 pointer into the body. Nothing here allocates per field except the errors.

use serde::Serialize;
use serde_json::{Map, Value};

/// At most this many errors are reported for one request (docs/design/api.md §1.3).
pub const MAX_ERRORS: usize = 100;

/// `spy_info` objects may be at most this large once serialised (docs/design/api.md §1.6).
pub const MAX_SPY_INFO_BYTES: usize = 64 * 1024;

/// The largest `non_negative_integer` (docs/design/api.md §1.6).
pub const MAX_NON_NEGATIVE_INTEGER: i64 = 2_147_483_647;

/// One validation error: where in the request body, and what is wrong there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// RFC 6901 JSON pointer into the request body; `""` is the whole body. For a missing
    /// required field it points at the member that should exist.
    pub path: String,
    /// Human-readable text.
    pub message: String,
}

/// Every validation error of one request, in document order, at most [`MAX_ERRORS`].
/// Never empty when returned as an `Err`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("request body is invalid ({} errors, first at {:?})", .0.len(), .0.first().map(|e| e.path.as_str()).unwrap_or(""))]
pub struct ValidationErrors(pub Vec<FieldError>);

impl ValidationErrors {
    /// One error at `path`.
    pub fn single(path: impl Into<String>, message: impl Into<String>) -> ValidationErrors {
        ValidationErrors(vec![FieldError {
            path: path.into(),
            message: message.into(),
        }])
    }
}

/// A semantic rule over one value that already passed its schema: `Some(message)` fails.
pub(crate) type ValueCheck = fn(&Value) -> Option<String>;

/// A semantic rule over one object whose members were checked: each failure names the
/// member it points at (`None` = the object itself) and a message.
pub(crate) type ObjectCheck = fn(&Map<String, Value>) -> Vec<(Option<&'static str>, String)>;

/// The shape of one JSON value.
pub(crate) enum Schema {
    /// An object with exactly these members (`additionalProperties: false`).
    Object(ObjectSchema),
    /// An array of `items`, with `min_items..=max_items` elements.
    Array {
        items: &'static Schema,
        min_items: usize,
        max_items: usize,
    },
    /// `true` or `false`.
    Bool,
    /// An integer written without fraction or exponent, in `min..=max`.
    Integer { min: i64, max: i64 },
    /// `number_between_0_and_1`.
    UnitNumber,
    /// A string of `min_chars..=max_chars` Unicode scalar values.
    Str { min_chars: usize, max_chars: usize },
    /// A hyphenated uuid of any case (§1.5).
    Uuid,
    /// A UTC datetime (§1.6).
    Datetime,
    /// `<uuid>` or `<uuid>@<version>` (§1.6).
    CnxIdentity,
    /// One of these strings.
    Enum(&'static [&'static str]),
    /// A free-form object of at most [`MAX_SPY_INFO_BYTES`] serialised.
    SpyInfo,
    /// A boolean, number or string of at most 1000 characters (setting values).
    Scalar,
    /// `schema`, then `check` if the schema held.
    Checked {
        schema: &'static Schema,
        check: ValueCheck,
    },
}

/// An object schema: its members, and an optional rule over the whole object.
pub(crate) struct ObjectSchema {
    pub fields: &'static [Field],
    pub check: Option<ObjectCheck>,
}

/// One member of an object schema.
pub(crate) struct Field {
    pub name: &'static str,
    pub schema: &'static Schema,
    pub required: bool,
}

/// A required member.
pub(crate) const fn req(name: &'static str, schema: &'static Schema) -> Field {
    Field {
        name,
        schema,
        required: true,
    }
}

/// An optional member.
pub(crate) const fn opt(name: &'static str, schema: &'static Schema) -> Field {
    Field {
        name,
        schema,
        required: false,
    }
}

/// An object with these members and no object-level rule.
pub(crate) const fn object(fields: &'static [Field]) -> Schema {
    Schema::Object(ObjectSchema {
        fields,
        check: None,
    })
}

/// An array of `items` with `min..=max` elements.
pub(crate) const fn array(items: &'static Schema, min_items: usize, max_items: usize) -> Schema {
    Schema::Array {
        items,
        min_items,
        max_items,
    }
}

// Standard types of docs/design/api.md §1.6.
pub(crate) static UUID: Schema = Schema::Uuid;
pub(crate) static DATETIME: Schema = Schema::Datetime;
pub(crate) static BOOL: Schema = Schema::Bool;
pub(crate) static CNX_IDENTITY: Schema = Schema::CnxIdentity;
pub(crate) static SPY_INFO: Schema = Schema::SpyInfo;
pub(crate) static NON_NEGATIVE_INTEGER: Schema = Schema::Integer {
    min: 0,
    max: MAX_NON_NEGATIVE_INTEGER,
};
/// A course event's `sequence_number`: ≥ 1, since 0 is reserved for `create_course`.
pub(crate) static COURSE_SEQUENCE_NUMBER: Schema = Schema::Checked {
    schema: &NON_NEGATIVE_INTEGER,
    check: check_course_sequence_number,
};
/// `algorithm_name` on reads: 1..100 characters.
pub(crate) static ALGORITHM_NAME: Schema = Schema::Str {
    min_chars: 1,
    max_chars: 100,
};
/// An array of uuids.
pub(crate) static UUIDS_0_500: Schema = array(&UUID, 0, 500);
pub(crate) static UUIDS_0_1000: Schema = array(&UUID, 0, 1000);
/// `max_num_exercises` of the fetch endpoints.
pub(crate) static MAX_NUM_EXERCISES: Schema = Schema::Integer { min: 0, max: 1000 };
/// `max_num_*` limits and admin `limit`.
pub(crate) static LIMIT_1_1000: Schema = Schema::Integer { min: 1, max: 1000 };

/// `clue_data` (§1.6).
pub(crate) static CLUE_DATA: Schema = object(&[
    req("minimum", &Schema::UnitNumber),
    req("most_likely", &Schema::UnitNumber),
    req("maximum", &Schema::UnitNumber),
    req("is_real", &BOOL),
    opt("ecosystem_uuid", &UUID),
]);

/// `exercise_exclusion` (§1.6): exactly one of the two keys.
pub(crate) static EXERCISE_EXCLUSION: Schema = Schema::Object(ObjectSchema {
    fields: &[
        opt("exercise_uuid", &UUID),
        opt("exercise_group_uuid", &UUID),
    ],
    check: Some(check_exactly_one_exclusion_key),
});

fn check_course_sequence_number(value: &Value) -> Option<String> {
    (value.as_i64() == Some(0))
        .then(|| "sequence_number must be at least 1 (0 is reserved for create_course)".to_owned())
}

fn check_exactly_one_exclusion_key(
    map: &Map<String, Value>,
) -> Vec<(Option<&'static str>, String)> {
    let n_keys = ["exercise_uuid", "exercise_group_uuid"]
        .iter()
        .filter(|key| map.contains_key(**key))
        .count();
    match n_keys {
        1 => Vec::new(),
        0 => vec![(
            None,
            "exactly one of exercise_uuid or exercise_group_uuid is required".to_owned(),
        )],
        _ => vec![(
            None,
            "exactly one of exercise_uuid or exercise_group_uuid is allowed, not both".to_owned(),
        )],
    }
}

/// Checks `body` against `schema`; `Err` holds 1..=[`MAX_ERRORS`] errors in document order.
pub(crate) fn validate(schema: &Schema, body: &Value) -> Result<(), ValidationErrors> {
    let mut walker = Walker {
        path: String::new(),
        errors: Vec::new(),
    };
    walker.check(schema, body);
    if walker.errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(walker.errors))
    }
}

/// Appends one RFC 6901 reference token (`~` → `~0`, `/` → `~1`) to a pointer.
pub fn push_pointer_token(pointer: &mut String, token: &str) {
    pointer.push('/');
    for ch in token.chars() {
        match ch {
            '~' => pointer.push_str("~0"),
            '/' => pointer.push_str("~1"),
            other => pointer.push(other),
        }
    }
}

/// The walk state: the pointer of the value being checked and the errors so far.
struct Walker {
    path: String,
    errors: Vec<FieldError>,
}

impl Walker {
    fn is_full(&self) -> bool {
        self.errors.len() >= MAX_ERRORS
    }

    fn error(&mut self, message: impl Into<String>) {
        if !self.is_full() {
            self.errors.push(FieldError {
                path: self.path.clone(),
                message: message.into(),
            });
        }
    }

    fn error_at_member(&mut self, member: &str, message: impl Into<String>) {
        let len = self.path.len();
        push_pointer_token(&mut self.path, member);
        self.error(message);
        self.path.truncate(len);
    }

    fn check(&mut self, schema: &Schema, value: &Value) {
        if self.is_full() {
            return;
        }
        match schema {
            Schema::Object(object_schema) => self.check_object(object_schema, value),
            Schema::Array {
                items,
                min_items,
                max_items,
            } => self.check_array(items, *min_items, *max_items, value),
            Schema::Bool => {
                if !value.is_boolean() {
                    self.error("expected boolean");
                }
            }
            Schema::Integer { min, max } => self.check_integer(*min, *max, value),
            Schema::UnitNumber => match value.as_f64() {
                Some(number) if (0.0..=1.0).contains(&number) => {}
                Some(_) => self.error("must be between 0 and 1"),
                None => self.error("expected number"),
            },
            Schema::Str {
                min_chars,
                max_chars,
            } => {
                if let Some(text) = self.expect_string(value) {
                    self.check_length(text, *min_chars, *max_chars);
                }
            }
            Schema::Uuid => {
                if let Some(text) = self.expect_string(value) {
                    if biglearn_domain::ids::parse_hyphenated_uuid(text).is_none() {
                        self.error("expected a hyphenated uuid (8-4-4-4-12 hex digits)");
                    }
                }
            }
            Schema::Datetime => {
                if let Some(text) = self.expect_string(value) {
                    if let Err(error) = biglearn_domain::time::parse_datetime(text) {
                        self.error(error.to_string());
                    }
                }
            }
            Schema::CnxIdentity => {
                if let Some(text) = self.expect_string(value) {
                    if !is_cnx_identity(text) {
                        self.error("expected a cnx_identity: <uuid> or <uuid>@<version>");
                    }
                }
            }
            Schema::Enum(names) => {
                if let Some(text) = self.expect_string(value) {
                    if !names.contains(&text) {
                        self.error(format!("expected one of: {}", names.join(", ")));
                    }
                }
            }
            Schema::SpyInfo => {
                if !value.is_object() {
                    self.error("expected object");
                } else if serialised_len(value) > MAX_SPY_INFO_BYTES {
                    self.error(format!(
                        "spy_info exceeds {MAX_SPY_INFO_BYTES} bytes when serialised"
                    ));
                }
            }
            Schema::Scalar => match value {
                Value::Bool(_) | Value::Number(_) => {}
                Value::String(text) => self.check_length(text, 0, 1000),
                _ => self.error("expected boolean, number or string"),
            },
            Schema::Checked { schema, check } => {
                let n_errors = self.errors.len();
                self.check(schema, value);
                if self.errors.len() == n_errors {
                    if let Some(message) = check(value) {
                        self.error(message);
                    }
                }
            }
        }
    }

    fn check_object(&mut self, schema: &ObjectSchema, value: &Value) {
        let Value::Object(map) = value else {
            self.error("expected object");
            return;
        };
        // Members in the order they were sent, so errors come out in document order.
        for (key, member) in map {
            if self.is_full() {
                return;
            }
            let len = self.path.len();
            push_pointer_token(&mut self.path, key);
            match schema.fields.iter().find(|field| field.name == key) {
                Some(field) => self.check(field.schema, member),
                None => self.error("unknown field"),
            }
            self.path.truncate(len);
        }
        for field in schema.fields {
            if field.required && !map.contains_key(field.name) {
                self.error_at_member(field.name, "required field is missing");
            }
        }
        if let Some(check) = schema.check {
            for (member, message) in check(map) {
                match member {
                    Some(member) => self.error_at_member(member, message),
                    None => self.error(message),
                }
            }
        }
    }

    fn check_array(&mut self, items: &Schema, min_items: usize, max_items: usize, value: &Value) {
        let Value::Array(elements) = value else {
            self.error("expected array");
            return;
        };
        if !(min_items..=max_items).contains(&elements.len()) {
            self.error(format!(
                "must have between {min_items} and {max_items} items (has {})",
                elements.len()
            ));
        }
        for (idx, element) in elements.iter().enumerate() {
            if self.is_full() {
                return;
            }
            let len = self.path.len();
            push_pointer_token(&mut self.path, &idx.to_string());
            self.check(items, element);
            self.path.truncate(len);
        }
    }

    fn check_integer(&mut self, min: i64, max: i64, value: &Value) {
        let Value::Number(number) = value else {
            self.error("expected integer");
            return;
        };
        // serde_json keeps a number written with '.' or an exponent as f64, even 1.0 or 1e3.
        let in_range = if let Some(integer) = number.as_i64() {
            (min..=max).contains(&integer)
        } else if number.is_u64() {
            false
        } else {
            self.error("expected integer, written without fraction or exponent");
            return;
        };
        if !in_range {
            self.error(format!("must be between {min} and {max}"));
        }
    }

    fn expect_string<'v>(&mut self, value: &'v Value) -> Option<&'v str> {
        let text = value.as_str();
        if text.is_none() {
            self.error("expected string");
        }
        text
    }

    fn check_length(&mut self, text: &str, min_chars: usize, max_chars: usize) {
        // Count at most max_chars + 1 characters: a huge string costs no more than a short one.
        let n_chars = text.chars().take(max_chars + 1).count();
        if !(min_chars..=max_chars).contains(&n_chars) {
            self.error(format!(
                "length must be between {min_chars} and {max_chars} characters"
            ));
        }
    }
}

/// `^<uuid>(@[1-9][0-9]*(\.[1-9][0-9]*)?)?$` with a case-insensitive uuid part.
pub(crate) fn is_cnx_identity(text: &str) -> bool {
    let (uuid_part, version) = match text.split_once('@') {
        Some((uuid_part, version)) => (uuid_part, Some(version)),
        None => (text, None),
    };
    if biglearn_domain::ids::parse_hyphenated_uuid(uuid_part).is_none() {
        return false;
    }
    let is_version_number = |part: &str| {
        part.bytes()
            .next()
            .is_some_and(|first| (b'1'..=b'9').contains(&first))
            && part.bytes().all(|byte| byte.is_ascii_digit())
    };
    match version {
        None => true,
        Some(version) => match version.split_once('.') {
            Some((major, minor)) => is_version_number(major) && is_version_number(minor),
            None => is_version_number(version),
        },
    }
}

/// The length of the compact serialisation, without building the string.
fn serialised_len(value: &Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    match serde_json::to_writer(&mut counter, value) {
        Ok(()) => counter.0,
        // Serialising a Value cannot fail; if it ever did, treat it as too large.
        Err(_) => usize::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(schema: &Schema, input: Value, expected: &[(&str, &str)]) {
        let got = match validate(schema, &input) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.0,
        };
        let got: Vec<(&str, &str)> = got
            .iter()
            .map(|error| (error.path.as_str(), error.message.as_str()))
            .collect();
        assert_eq!(got, expected, "input: {input}");
    }

    static SAMPLE: Schema = object(&[
        req("n", &NON_NEGATIVE_INTEGER),
        opt(
            "name",
            &Schema::Str {
                min_chars: 1,
                max_chars: 3,
            },
        ),
        opt("list", &UUIDS_0_500),
    ]);

    #[test]
    fn integers_reject_fractions_exponents_and_out_of_range_values() {
        let fraction = "expected integer, written without fraction or exponent";
        let range = "must be between 0 and 2147483647";
        check(&SAMPLE, json!({"n": 7}), &[]);
        check(&SAMPLE, json!({"n": 1.0}), &[("/n", fraction)]);
        let exponent: Value = serde_json::from_str(r#"{"n": 1e3}"#).unwrap();
        check(&SAMPLE, exponent, &[("/n", fraction)]);
        check(&SAMPLE, json!({"n": -1}), &[("/n", range)]);
        check(&SAMPLE, json!({"n": 2_147_483_648u64}), &[("/n", range)]);
        check(&SAMPLE, json!({"n": u64::MAX}), &[("/n", range)]);
        check(&SAMPLE, json!({"n": "1"}), &[("/n", "expected integer")]);
    }

    #[test]
    fn string_lengths_count_characters_not_bytes() {
        check(&SAMPLE, json!({"n": 0, "name": "ééé"}), &[]);
        check(
            &SAMPLE,
            json!({"n": 0, "name": "éééé"}),
            &[("/name", "length must be between 1 and 3 characters")],
        );
    }

    #[test]
    fn pointers_escape_tilde_and_slash_and_follow_document_order() {
        check(
            &SAMPLE,
            json!({"a/b": 1, "list": ["x"], "c~d": 2}),
            &[
                ("/a~1b", "unknown field"),
                (
                    "/list/0",
                    "expected a hyphenated uuid (8-4-4-4-12 hex digits)",
                ),
                ("/c~0d", "unknown field"),
                ("/n", "required field is missing"),
            ],
        );
    }

    #[test]
    fn cnx_identities_follow_the_fixed_pattern() {
        let uuid = "9ba7f072-ebd5-4adf-ad18-7a181715089c";
        for (suffix, expected) in [
            ("", true),
            ("@4", true),
            ("@100", true),
            ("@1.10", true),
            ("@0", false),
            ("@04", false),
            ("@1.0", false),
            ("@", false),
            ("@1.", false),
            ("@1.2.3", false),
            ("@x", false),
        ] {
            assert_eq!(
                is_cnx_identity(&format!("{uuid}{suffix}")),
                expected,
                "{suffix}"
            );
        }
        assert!(is_cnx_identity("9BA7F072-EBD5-4ADF-AD18-7A181715089C@4"));
        assert!(!is_cnx_identity("not-a-uuid@4"));
    }

    #[test]
    fn datetimes_follow_the_regex_of_section_1_6() {
        let message =
            "expected a UTC datetime YYYY-MM-DDTHH:MM:SS[.ffffff]Z (at most 6 fractional digits)";
        let valid = [
            "2017-06-27T23:26:48.986100Z",
            "2017-06-27t23:26:48z",
            "2017-06-27T23:59:60Z",
            "0000-01-31T00:00:00.1Z",
            "2016-02-29T19:00:00Z",
        ];
        let invalid = [
            "2017-06-27T23:26:48.9861001Z",
            "2017-06-27T23:26:48+00:00",
            "2017-06-27T23:26:48",
            "2017-06-00T23:26:48Z",
            "2017-06-32T23:26:48Z",
            "2017-00-27T23:26:48Z",
            "2017-06-27T24:26:48Z",
            "2017-06-27T23:60:48Z",
            "2017-06-27T23:26:61Z",
            "2017-06-27 23:26:48Z",
            "2017-06-27T23:26:48.Z",
            "17-06-27T23:26:48Z",
            "2017-6-27T23:26:48Z",
            "2017-06-27T23:26:48ZZ",
            "２017-06-27T23:26:48Z",
        ];
        for text in valid {
            check(&DATETIME, json!(text), &[]);
        }
        for text in invalid {
            check(&DATETIME, json!(text), &[("", message)]);
        }
        for (text, message) in [
            (
                "2017-02-31T19:00:00Z",
                "2017-02-31 is not a calendar date (that month has fewer days)",
            ),
            (
                "2017-02-29T00:00:00Z",
                "2017-02-29 is not a calendar date (that month has fewer days)",
            ),
        ] {
            check(&DATETIME, json!(text), &[("", message)]);
        }
    }

    #[test]
    fn errors_are_capped_at_one_hundred() {
        let many: Vec<Value> = (0..150).map(|_| json!("bad")).collect();
        let errors = validate(&UUIDS_0_500, &Value::Array(many)).unwrap_err();
        assert_eq!(errors.0.len(), MAX_ERRORS);
        assert_eq!(errors.0[99].path, "/99");
    }
}
