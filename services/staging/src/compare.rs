//! Pure comparisons of two deployments: state digests once both applied the same
//! per-aggregate sequence numbers (`staging verify`), served results by result key
//! (`results diff`).

use std::collections::BTreeMap;

use serde_json::Value;

/// What `/admin/state_digest` answers, from one consistent read of a process's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateDigest {
    /// `(part, digest)` in the process's order (`state`, then `results`, …).
    pub parts: Vec<(String, String)>,
    /// Digest of every aggregate's applied prefix `(stream, aggregate, next_seq)`.
    pub sequences_digest: String,
    /// Aggregates with at least one event applied.
    pub n_aggregates: u64,
    /// Sum over aggregates of the applied sequence numbers (progress, for the operator).
    pub n_applied: u64,
    /// The settings version the process has applied.
    pub settings_version: Option<i64>,
    /// `(stream, aggregate, next_seq)` when asked for (`list_sequences`).
    pub sequences: Option<Vec<(String, String, i64)>>,
}

/// A malformed answer of a state-digest or results endpoint.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unexpected answer: {detail}")]
pub struct AnswerError {
    pub detail: String,
}

fn missing(field: &str) -> AnswerError {
    AnswerError {
        detail: format!("field {field} is missing or has the wrong type"),
    }
}

impl StateDigest {
    /// Reads the JSON of `/admin/state_digest`.
    pub fn from_json(answer: &Value) -> Result<StateDigest, AnswerError> {
        let parts = answer["parts"]
            .as_array()
            .ok_or_else(|| missing("parts"))?
            .iter()
            .map(|part| {
                Some((
                    part["part"].as_str()?.to_owned(),
                    part["digest"].as_str()?.to_owned(),
                ))
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| missing("parts[].part/digest"))?;
        let sequences = &answer["sequences"];
        let list = match sequences["list"].as_array() {
            None => None,
            Some(rows) => Some(
                rows.iter()
                    .map(|row| {
                        Some((
                            row["stream"].as_str()?.to_owned(),
                            row["aggregate_uuid"].as_str()?.to_owned(),
                            row["next_sequence_number"].as_i64()?,
                        ))
                    })
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| missing("sequences.list[]"))?,
            ),
        };
        Ok(StateDigest {
            parts,
            sequences_digest: sequences["digest"]
                .as_str()
                .ok_or_else(|| missing("sequences.digest"))?
                .to_owned(),
            n_aggregates: sequences["n_aggregates"]
                .as_u64()
                .ok_or_else(|| missing("sequences.n_aggregates"))?,
            n_applied: sequences["n_applied"]
                .as_u64()
                .ok_or_else(|| missing("sequences.n_applied"))?,
            settings_version: answer["settings_version"].as_i64(),
            sequences: list,
        })
    }

    /// Whether both processes have applied exactly the same events (and settings).
    pub fn same_input(&self, other: &StateDigest) -> bool {
        self.sequences_digest == other.sequences_digest
            && self.settings_version == other.settings_version
    }
}

/// The outcome of comparing two state digests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Same input, same digest of every part.
    Equal,
    /// Same input, and `part` differs (or exists on one side only: `None`).
    Different {
        part: String,
        production: Option<String>,
        staging: Option<String>,
    },
    /// The two never applied the same sequence numbers within the polling bound.
    InputsDiffer {
        production: String,
        staging: String,
        first_aggregate: Option<SequenceDifference>,
    },
}

/// The first aggregate whose applied prefix differs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SequenceDifference {
    pub stream: String,
    pub aggregate: String,
    /// `next_seq` on each side (`None`: nothing applied there).
    pub production: Option<i64>,
    pub staging: Option<i64>,
}

/// Compares two digests of the same input, part by part in production's order.
pub fn compare_parts(production: &StateDigest, staging: &StateDigest) -> Verdict {
    let staging_parts: BTreeMap<&str, &str> = staging
        .parts
        .iter()
        .map(|(part, digest)| (part.as_str(), digest.as_str()))
        .collect();
    let production_parts: BTreeMap<&str, &str> = production
        .parts
        .iter()
        .map(|(part, digest)| (part.as_str(), digest.as_str()))
        .collect();
    for (part, digest) in &production.parts {
        let theirs = staging_parts.get(part.as_str()).copied();
        if theirs != Some(digest.as_str()) {
            return Verdict::Different {
                part: part.clone(),
                production: Some(digest.clone()),
                staging: theirs.map(str::to_owned),
            };
        }
    }
    if let Some((part, digest)) = staging
        .parts
        .iter()
        .find(|(part, _)| !production_parts.contains_key(part.as_str()))
    {
        return Verdict::Different {
            part: part.clone(),
            production: None,
            staging: Some(digest.clone()),
        };
    }
    Verdict::Equal
}

/// The first aggregate (in stream, uuid order) whose applied prefix differs.
pub fn first_sequence_difference(
    production: &[(String, String, i64)],
    staging: &[(String, String, i64)],
) -> Option<SequenceDifference> {
    let index = |rows: &[(String, String, i64)]| -> BTreeMap<(String, String), i64> {
        rows.iter()
            .map(|(stream, aggregate, next)| ((stream.clone(), aggregate.clone()), *next))
            .collect()
    };
    let (left, right) = (index(production), index(staging));
    let mut keys: Vec<&(String, String)> = left.keys().chain(right.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter().find_map(|key| {
        let (ours, theirs) = (left.get(key).copied(), right.get(key).copied());
        (ours != theirs).then(|| SequenceDifference {
            stream: key.0.clone(),
            aggregate: key.1.clone(),
            production: ours,
            staging: theirs,
        })
    })
}

/// One served result: key and content without what names *when* it was computed
/// (`calculation_uuid`), as the state hash's results part treats it.
pub fn normalized_content(content: &Value) -> Value {
    let mut content = content.clone();
    if let Some(object) = content.as_object_mut() {
        object.remove("calculation_uuid");
    }
    content
}

/// The difference of two result sets by result key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResultsDiff {
    pub n_left: usize,
    pub n_right: usize,
    pub n_equal: usize,
    pub only_left: Vec<String>,
    pub only_right: Vec<String>,
    /// Keys present on both sides with different content.
    pub different: Vec<String>,
}

impl ResultsDiff {
    /// No key differs.
    pub fn is_equal(&self) -> bool {
        self.only_left.is_empty() && self.only_right.is_empty() && self.different.is_empty()
    }
}

/// Compares results by key; contents are compared after [`normalized_content`].
pub fn diff_results(
    left: &BTreeMap<String, Value>,
    right: &BTreeMap<String, Value>,
) -> ResultsDiff {
    let mut diff = ResultsDiff {
        n_left: left.len(),
        n_right: right.len(),
        ..ResultsDiff::default()
    };
    for (key, content) in left {
        match right.get(key) {
            None => diff.only_left.push(key.clone()),
            Some(theirs) if normalized_content(theirs) == normalized_content(content) => {
                diff.n_equal += 1
            }
            Some(_) => diff.different.push(key.clone()),
        }
    }
    diff.only_right = right
        .keys()
        .filter(|key| !left.contains_key(*key))
        .cloned()
        .collect();
    diff
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn digest(parts: &[(&str, &str)], sequences: &str) -> StateDigest {
        StateDigest {
            parts: parts
                .iter()
                .map(|(part, digest)| (part.to_string(), digest.to_string()))
                .collect(),
            sequences_digest: sequences.into(),
            n_aggregates: 1,
            n_applied: 1,
            settings_version: Some(1),
            sequences: None,
        }
    }

    fn check(production: &[(&str, &str)], staging: &[(&str, &str)], expected: Verdict) {
        assert_eq!(
            compare_parts(&digest(production, "s"), &digest(staging, "s")),
            expected
        );
    }

    #[test]
    fn parts_compare_in_order_and_name_the_first_difference() {
        check(
            &[("state", "a"), ("results", "b")],
            &[("state", "a"), ("results", "b")],
            Verdict::Equal,
        );
        check(
            &[("state", "a"), ("results", "b")],
            &[("state", "x"), ("results", "y")],
            Verdict::Different {
                part: "state".into(),
                production: Some("a".into()),
                staging: Some("x".into()),
            },
        );
        check(
            &[("state", "a"), ("results", "b")],
            &[("state", "a")],
            Verdict::Different {
                part: "results".into(),
                production: Some("b".into()),
                staging: None,
            },
        );
        check(
            &[("state", "a")],
            &[("state", "a"), ("models", "m")],
            Verdict::Different {
                part: "models".into(),
                production: None,
                staging: Some("m".into()),
            },
        );
    }

    #[test]
    fn same_input_needs_equal_sequences_and_settings() {
        let one = digest(&[], "s");
        let mut other = digest(&[], "s");
        assert!(one.same_input(&other));
        other.settings_version = Some(2);
        assert!(!one.same_input(&other));
        assert!(!one.same_input(&digest(&[], "t")));
    }

    #[test]
    fn the_first_differing_aggregate_is_found_in_order() {
        let row =
            |stream: &str, aggregate: &str, next| (stream.to_owned(), aggregate.to_owned(), next);
        let production = vec![
            row("course", "a", 3),
            row("course", "b", 5),
            row("course", "c", 2),
        ];
        let staging = vec![row("course", "a", 3), row("course", "c", 1)];
        assert_eq!(
            first_sequence_difference(&production, &staging),
            Some(SequenceDifference {
                stream: "course".into(),
                aggregate: "b".into(),
                production: Some(5),
                staging: None,
            })
        );
        assert_eq!(first_sequence_difference(&production, &production), None);
    }

    #[test]
    fn a_digest_answer_parses() {
        let answer = json!({
            "parts": [{"part": "state", "digest": "ab"}],
            "sequences": {"digest": "cd", "n_aggregates": 2, "n_applied": 7,
                "list": [{"stream": "course", "aggregate_uuid": "u", "next_sequence_number": 4}]},
            "settings_version": 3,
        });
        let parsed = StateDigest::from_json(&answer).unwrap();
        assert_eq!(parsed.parts, vec![("state".to_owned(), "ab".to_owned())]);
        assert_eq!(parsed.sequences_digest, "cd");
        assert_eq!((parsed.n_aggregates, parsed.n_applied), (2, 7));
        assert_eq!(parsed.settings_version, Some(3));
        assert_eq!(
            parsed.sequences,
            Some(vec![("course".to_owned(), "u".to_owned(), 4)])
        );
        assert!(StateDigest::from_json(&json!({"parts": 1})).is_err());
    }

    #[test]
    fn results_diff_by_key_ignores_calculation_uuids() {
        let left: BTreeMap<String, Value> = [
            ("a".to_owned(), json!({"x": 1, "calculation_uuid": "c1"})),
            ("b".to_owned(), json!({"x": 2})),
            ("c".to_owned(), json!({"x": 3})),
        ]
        .into();
        let right: BTreeMap<String, Value> = [
            ("a".to_owned(), json!({"x": 1, "calculation_uuid": "c2"})),
            ("b".to_owned(), json!({"x": 9})),
            ("d".to_owned(), json!({"x": 4})),
        ]
        .into();
        let diff = diff_results(&left, &right);
        assert_eq!(
            diff,
            ResultsDiff {
                n_left: 3,
                n_right: 3,
                n_equal: 1,
                only_left: vec!["c".into()],
                only_right: vec!["d".into()],
                different: vec!["b".into()],
            }
        );
        assert!(!diff.is_equal());
        assert!(diff_results(&left, &left).is_equal());
    }
}
