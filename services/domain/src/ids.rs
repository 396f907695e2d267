//! Identifier newtypes, so that a course uuid can never be passed where a student uuid is meant.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// The fixed namespace of every UUIDv5 in Biglearn (docs/design/events.md §2.3).
pub const NS_BIGLEARN: Uuid = Uuid::from_bytes([
    0x6c, 0x1a, 0x3f, 0x0e, 0x6a, 0x0b, 0x5b, 0x8e, 0x9c, 0x61, 0x3b, 0x1e, 0x0d, 0x9a, 0x4f, 0x27,
]);

/// `UUIDv5(NS_BIGLEARN, name)`.
pub fn uuid_v5(name: &str) -> Uuid {
    Uuid::new_v5(&NS_BIGLEARN, name.as_bytes())
}

/// Parses a hyphenated uuid of any version or case (docs/design/api.md §1.5).
///
/// Only the canonical `8-4-4-4-12` form is accepted; `uuid::Uuid::parse_str`
/// alone would also take braced, URN and simple forms.
pub fn parse_hyphenated_uuid(text: &str) -> Option<Uuid> {
    let bytes = text.as_bytes();
    if bytes.len() != 36 {
        return None;
    }
    for (idx, byte) in bytes.iter().enumerate() {
        let is_dash_position = matches!(idx, 8 | 13 | 18 | 23);
        if is_dash_position != (*byte == b'-') {
            return None;
        }
        if !is_dash_position && !byte.is_ascii_hexdigit() {
            return None;
        }
    }
    Uuid::parse_str(text).ok()
}

/// Declares a uuid newtype that serializes as the lower-case hyphenated string.
macro_rules! uuid_newtype {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub Uuid);

        impl $name {
            /// The raw uuid.
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.hyphenated())
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl FromStr for $name {
            type Err = InvalidUuid;
            fn from_str(text: &str) -> Result<Self, InvalidUuid> {
                parse_hyphenated_uuid(text).map(Self).ok_or_else(|| InvalidUuid(text.to_owned()))
            }
        }

        // Text formats (JSON) see the hyphenated string of the API; binary formats (the
        // sled rows) the 16 raw bytes, which decode without parsing hex.
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                if serializer.is_human_readable() {
                    let mut buf = Uuid::encode_buffer();
                    serializer.serialize_str(self.0.hyphenated().encode_lower(&mut buf))
                } else {
                    serializer.serialize_bytes(self.0.as_bytes())
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                if deserializer.is_human_readable() {
                    deserializer.deserialize_str(UuidText).map(Self)
                } else {
                    deserializer.deserialize_bytes(UuidBytes).map(Self)
                }
            }
        }
    )*};
}

/// Reads a hyphenated uuid from a text format, from the borrowed text (no `String`).
struct UuidText;

impl<'de> serde::de::Visitor<'de> for UuidText {
    type Value = Uuid;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a hyphenated uuid")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Uuid, E> {
        parse_hyphenated_uuid(text).ok_or_else(|| E::custom(InvalidUuid(text.to_owned())))
    }
}

/// Reads the 16 raw bytes of a uuid from a binary format.
struct UuidBytes;

impl<'de> serde::de::Visitor<'de> for UuidBytes {
    type Value = Uuid;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("16 bytes of a uuid")
    }

    fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Uuid, E> {
        Uuid::from_slice(bytes).map_err(E::custom)
    }
}

/// A string that is not a hyphenated uuid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a hyphenated uuid: {0:?}")]
pub struct InvalidUuid(pub String);

uuid_newtype! {
    /// A Tutor course: the aggregate of the course stream.
    CourseUuid;
    /// An ecosystem (one book version with its exercises): the aggregate of the ecosystem stream.
    EcosystemUuid;
    /// The identity of one event (unique per stream kind).
    EventUuid;
    /// A course-specific learner.
    StudentUuid;
    /// A node of a course's roster tree (a period or section).
    CourseContainerUuid;
    /// A node of a book's table of contents, qualified by ecosystem wherever it is looked up.
    BookContainerUuid;
    /// One version of a question.
    ExerciseUuid;
    /// All versions of one question.
    ExerciseGroupUuid;
    /// One task for one student.
    AssignmentUuid;
    /// One placement of one exercise in one assignment.
    TrialUuid;
    /// One answer to a trial.
    ResponseUuid;
    /// A `prepare_course_ecosystem` identity.
    PreparationUuid;
    /// Tutor's idempotency key of one request item.
    RequestUuid;
    /// The identity of one computed result.
    CalculationUuid;
    /// The identity of one SPARFA model (`ecosystem_matrix_uuid`).
    MatrixUuid;
}

/// A per-aggregate position assigned by Tutor, starting at 0.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct SequenceNumber(pub i64);

impl SequenceNumber {
    /// The sequence number of `create_course` and `create_ecosystem`.
    pub const ZERO: SequenceNumber = SequenceNumber(0);

    /// The next sequence number.
    pub fn next(self) -> SequenceNumber {
        SequenceNumber(self.0 + 1)
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_any_case_and_normalises_to_lower_case() {
        let course: CourseUuid = "581DF776-A323-44BD-8CB1-346CD664B974".parse().unwrap();
        assert_eq!(course.to_string(), "581df776-a323-44bd-8cb1-346cd664b974");
        assert_eq!(
            serde_json::to_string(&course).unwrap(),
            "\"581df776-a323-44bd-8cb1-346cd664b974\""
        );
    }

    #[test]
    fn rejects_non_hyphenated_forms() {
        for text in [
            "581df776a32344bd8cb1346cd664b974",
            "{581df776-a323-44bd-8cb1-346cd664b974}",
            "581df776-a323-44bd-8cb1-346cd664b97",
            "581df776-a323-44bd-8cb1-346cd664b97g",
            "581df776-a323-44bd-8cb1x346cd664b974",
        ] {
            assert!(text.parse::<CourseUuid>().is_err(), "{text}");
        }
        assert!("00000000-0000-0000-0000-000000000000"
            .parse::<CourseUuid>()
            .is_ok());
    }

    #[test]
    fn json_text_reads_back_borrowed_escaped_and_refused() {
        let lower: CourseUuid =
            serde_json::from_str("\"581DF776-A323-44BD-8CB1-346CD664B974\"").unwrap();
        assert_eq!(lower.to_string(), "581df776-a323-44bd-8cb1-346cd664b974");
        // An escape makes serde_json hand over a copied, not a borrowed, string.
        let escaped: CourseUuid =
            serde_json::from_str("\"\\u0035\\u00381df776-a323-44bd-8cb1-346cd664b974\"").unwrap();
        assert_eq!(escaped, lower);
        let from_value: CourseUuid =
            serde_json::from_value(serde_json::json!("581df776-a323-44bd-8cb1-346cd664b974"))
                .unwrap();
        assert_eq!(from_value, lower);
        let refused = serde_json::from_str::<CourseUuid>("\"581df776\"").unwrap_err();
        assert!(
            refused.to_string().contains("not a hyphenated uuid"),
            "{refused}"
        );
        assert!(serde_json::from_str::<CourseUuid>("7").is_err());
    }

    #[test]
    fn uuid_v5_uses_the_biglearn_namespace() {
        assert_eq!(
            NS_BIGLEARN.to_string(),
            "6c1a3f0e-6a0b-5b8e-9c61-3b1e0d9a4f27"
        );
        let first = uuid_v5("no_op/course/x/1");
        assert_eq!(first, uuid_v5("no_op/course/x/1"));
        assert_ne!(first, uuid_v5("no_op/course/x/2"));
        assert_eq!(first.get_version_num(), 5);
    }
}
