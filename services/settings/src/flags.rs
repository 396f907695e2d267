//! Per-environment feature flags (docs/design/operations.md §6.1): static configuration of one
//! deployment, set at start (`--feature-flags`), never events, never per course.
//!
//! Flags separate deploying a build from releasing what it can do: a deployment turns a
//! capability off without a new build. Toggles (the settings events) are the long-lived,
//! per-course, audited kind; a flag is removed once its capability is simply on everywhere.

use std::collections::BTreeMap;

/// One known flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlagDefinition {
    pub name: &'static str,
    pub default: bool,
    pub description: &'static str,
}

/// Every flag this build knows; anything else is refused at start.
pub const FLAGS: &[FlagDefinition] = &[
    FlagDefinition {
        name: "online_rebuild",
        default: true,
        description: "POST /admin/rebuild may rebuild the state projection of a running process",
    },
    FlagDefinition {
        name: "kafka_inbox",
        default: true,
        description: "the writer applies Tutor requests published to <prefix>.inbox",
    },
];

/// A flag specification that cannot be used; the process refuses to start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagError {
    #[error("unknown feature flag `{0}`; known flags: {known}", known = known_names())]
    Unknown(String),
    #[error("feature flag `{name}`: `{value}` is not on or off")]
    BadValue { name: String, value: String },
}

fn known_names() -> String {
    FLAGS
        .iter()
        .map(|flag| flag.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The flags of this deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeatureFlags {
    enabled: BTreeMap<&'static str, bool>,
}

impl Default for FeatureFlags {
    fn default() -> Self {
        FeatureFlags {
            enabled: FLAGS.iter().map(|flag| (flag.name, flag.default)).collect(),
        }
    }
}

impl FeatureFlags {
    /// Parses `name=on|off` pairs separated by commas (`+name` and `-name` also work);
    /// unnamed flags keep their defaults. An empty text gives the defaults.
    pub fn parse(spec: &str) -> Result<FeatureFlags, FlagError> {
        let mut flags = FeatureFlags::default();
        for item in spec
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
        {
            let (name, value) = if let Some(name) = item.strip_prefix('+') {
                (name, "on")
            } else if let Some(name) = item.strip_prefix('-') {
                (name, "off")
            } else {
                item.split_once('=').unwrap_or((item, "on"))
            };
            let name = name.trim();
            let known = FLAGS
                .iter()
                .find(|flag| flag.name == name)
                .ok_or_else(|| FlagError::Unknown(name.to_owned()))?;
            let on = match value.trim() {
                "on" | "true" | "1" => true,
                "off" | "false" | "0" => false,
                other => {
                    return Err(FlagError::BadValue {
                        name: name.to_owned(),
                        value: other.to_owned(),
                    })
                }
            };
            flags.enabled.insert(known.name, on);
        }
        Ok(flags)
    }

    /// Whether `name` is on; a name this build does not know is off.
    pub fn is_enabled(&self, name: &str) -> bool {
        self.enabled.get(name).copied().unwrap_or(false)
    }

    /// Every flag with its state and description, in name order.
    pub fn describe(&self) -> Vec<(FlagDefinition, bool)> {
        let mut all: Vec<(FlagDefinition, bool)> = FLAGS
            .iter()
            .map(|flag| (*flag, self.is_enabled(flag.name)))
            .collect();
        all.sort_by_key(|(flag, _)| flag.name);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_with_defaults_and_refuse_what_they_do_not_know() {
        let check = |spec: &str, online_rebuild: bool, kafka_inbox: bool| {
            let flags = FeatureFlags::parse(spec).unwrap();
            assert_eq!(
                (
                    flags.is_enabled("online_rebuild"),
                    flags.is_enabled("kafka_inbox")
                ),
                (online_rebuild, kafka_inbox),
                "{spec}"
            );
        };
        check("", true, true);
        check("online_rebuild=off", false, true);
        check("-online_rebuild, -kafka_inbox", false, false);
        check("kafka_inbox=false,+online_rebuild", true, false);
        check("online_rebuild", true, true);
        assert_eq!(
            FeatureFlags::parse("rebuild=off"),
            Err(FlagError::Unknown("rebuild".into()))
        );
        assert!(FeatureFlags::parse("online_rebuild=maybe")
            .unwrap_err()
            .to_string()
            .contains("not on or off"));
        assert!(FlagError::Unknown("x".into())
            .to_string()
            .contains("online_rebuild"));
        assert!(!FeatureFlags::default().is_enabled("not_a_flag"));
        assert_eq!(FeatureFlags::default().describe().len(), FLAGS.len());
    }
}
