//! librdkafka client properties from the operator: `KEY=VALUE` parsing, `@file` secrets, redaction.
//!
//! A value that starts with `@` names a file whose content (trailing newline removed) is
//! the value, so passwords and keys stay out of the command line and the environment
//! (`sasl.password=@/run/secrets/kafka-password`). `@@` starts a literal `@`.

use std::fmt;
use std::path::Path;

/// Why a property could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PropertyError {
    /// Not `KEY=VALUE`.
    #[error("expected KEY=VALUE (a librdkafka property), got {text:?}")]
    NotKeyValue { text: String },
    /// The key is empty or contains whitespace.
    #[error("invalid librdkafka property name {key:?} (no spaces, not empty)")]
    BadKey { key: String },
    /// `KEY=@path` and the file cannot be read.
    #[error("cannot read the value of {key} from {path}: {reason}")]
    File {
        key: String,
        path: String,
        reason: String,
    },
    /// `KEY=@path` and the file is empty.
    #[error("the value of {key} read from {path} is empty")]
    EmptyFile { key: String, path: String },
}

/// Parses one `KEY=VALUE` (the value kept as written; see [`resolve_value`]).
pub fn parse_property(text: &str) -> Result<(String, String), PropertyError> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| PropertyError::NotKeyValue {
            text: text.to_owned(),
        })?;
    let key = key.trim();
    if key.is_empty() || key.chars().any(char::is_whitespace) {
        return Err(PropertyError::BadKey {
            key: key.to_owned(),
        });
    }
    Ok((key.to_owned(), value.trim().to_owned()))
}

/// Parses `KEY=VALUE;KEY=VALUE…` (the form of `BIGLEARN_KAFKA_PROPERTIES`); empty
/// entries are skipped.
pub fn parse_property_list(text: &str) -> Result<Vec<(String, String)>, PropertyError> {
    text.split(';')
        .filter(|entry| !entry.trim().is_empty())
        .map(parse_property)
        .collect()
}

/// The value to give librdkafka: `@path` → the file's content without its trailing
/// newline; `@@x` → `@x`; anything else as is.
pub fn resolve_value(key: &str, value: &str) -> Result<String, PropertyError> {
    if let Some(literal) = value.strip_prefix("@@") {
        return Ok(format!("@{literal}"));
    }
    let Some(path) = value.strip_prefix('@') else {
        return Ok(value.to_owned());
    };
    let file_error = |reason: String| PropertyError::File {
        key: key.to_owned(),
        path: path.to_owned(),
        reason,
    };
    let bytes = std::fs::read(Path::new(path)).map_err(|error| file_error(error.to_string()))?;
    let text = String::from_utf8(bytes).map_err(|_| file_error("not UTF-8 text".to_owned()))?;
    let text = text.trim_end_matches(['\n', '\r']);
    if text.is_empty() {
        return Err(PropertyError::EmptyFile {
            key: key.to_owned(),
            path: path.to_owned(),
        });
    }
    Ok(text.to_owned())
}

/// Resolves every `@file` value of `properties`, keeping their order.
pub fn resolve_properties(
    properties: &[(String, String)],
) -> Result<Vec<(String, String)>, PropertyError> {
    properties
        .iter()
        .map(|(key, value)| Ok((key.clone(), resolve_value(key, value)?)))
        .collect()
}

/// Whether a property's value is a secret (never printed).
pub fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "jaas",
        "key.pem",
        "token",
        "oauthbearer.config",
    ]
    .iter()
    .any(|marker| key.contains(marker))
}

/// Properties printed with their secret values replaced by `***`.
pub struct Redacted<'a>(pub &'a [(String, String)]);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(key, value)| {
                if is_secret(key) {
                    (key.as_str(), "***")
                } else {
                    (key.as_str(), value.as_str())
                }
            }))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_pairs_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse_property("security.protocol=SASL_SSL").unwrap(),
            ("security.protocol".to_owned(), "SASL_SSL".to_owned())
        );
        // The value may itself contain '='.
        assert_eq!(
            parse_property("sasl.oauthbearer.config=principal=admin").unwrap(),
            (
                "sasl.oauthbearer.config".to_owned(),
                "principal=admin".to_owned()
            )
        );
        let error = parse_property("security.protocol").unwrap_err();
        assert_eq!(
            error.to_string(),
            "expected KEY=VALUE (a librdkafka property), got \"security.protocol\""
        );
        assert!(matches!(
            parse_property("=SSL"),
            Err(PropertyError::BadKey { .. })
        ));
        assert!(matches!(
            parse_property("sasl mechanism=PLAIN"),
            Err(PropertyError::BadKey { .. })
        ));
    }

    #[test]
    fn the_environment_form_is_semicolon_separated() {
        let parsed = parse_property_list(
            "security.protocol=SASL_SSL; sasl.mechanism=SCRAM-SHA-512;;debug=broker,protocol",
        )
        .unwrap();
        assert_eq!(
            parsed,
            vec![
                ("security.protocol".to_owned(), "SASL_SSL".to_owned()),
                ("sasl.mechanism".to_owned(), "SCRAM-SHA-512".to_owned()),
                ("debug".to_owned(), "broker,protocol".to_owned()),
            ]
        );
        assert!(parse_property_list("a=b;nonsense").is_err());
        assert_eq!(parse_property_list("").unwrap(), vec![]);
    }

    #[test]
    fn secrets_are_read_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("password");
        std::fs::write(&path, "s3cret\n").unwrap();
        let value = format!("@{}", path.display());
        assert_eq!(resolve_value("sasl.password", &value).unwrap(), "s3cret");
        assert_eq!(resolve_value("sasl.username", "@@home").unwrap(), "@home");
        assert_eq!(resolve_value("sasl.username", "alice").unwrap(), "alice");

        let missing = format!("@{}", dir.path().join("absent").display());
        let error = resolve_value("sasl.password", &missing).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("cannot read the value of sasl.password from /"),
            "{error}"
        );
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(
            resolve_value("sasl.password", &value),
            Err(PropertyError::EmptyFile { .. })
        ));
    }

    #[test]
    fn secrets_are_not_printed() {
        let properties = vec![
            ("sasl.username".to_owned(), "alice".to_owned()),
            ("sasl.password".to_owned(), "s3cret".to_owned()),
            ("ssl.key.password".to_owned(), "k3y".to_owned()),
        ];
        let printed = format!("{:?}", Redacted(&properties));
        assert!(printed.contains("alice"));
        assert!(
            !printed.contains("s3cret") && !printed.contains("k3y"),
            "{printed}"
        );
    }
}
