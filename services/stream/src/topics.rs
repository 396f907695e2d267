//! Topic names per environment prefix and their fixed layout (docs/design/events.md §6.1).

/// The layout of one topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    /// Fixed forever once created: changing it would move keys between partitions.
    pub partitions: i32,
    /// `cleanup.policy=compact` (derived topics keyed by result or ecosystem).
    pub compacted: bool,
    /// `retention.ms`; `None` keeps records forever.
    pub retention_ms: Option<i64>,
    /// `max.message.bytes`.
    pub max_message_bytes: i64,
}

/// Topic names of one environment, e.g. prefix `prod` gives `prod.course-events`.
///
/// A staging environment reads the system-of-record topics (course events, ecosystem
/// events, settings) under another environment's prefix, its *source prefix*, and writes
/// everything it derives under its own (docs/design/operations.md §5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
    /// Prefix of the system-of-record topics when they belong to another environment.
    source_prefix: Option<String>,
}

impl Topics {
    /// Topics under `prefix`.
    pub fn new(prefix: impl Into<String>) -> Topics {
        Topics {
            prefix: prefix.into(),
            source_prefix: None,
        }
    }

    /// Topics under `prefix`, except the system-of-record topics, read under
    /// `source_prefix` (staging reading production's, or MirrorMaker 2's renamed copies).
    pub fn with_source(prefix: impl Into<String>, source_prefix: impl Into<String>) -> Topics {
        Topics {
            prefix: prefix.into(),
            source_prefix: Some(source_prefix.into()),
        }
    }

    /// The environment prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The prefix of the system-of-record topics: the source prefix, if any, else the
    /// environment prefix.
    pub fn source_prefix(&self) -> &str {
        self.source_prefix.as_deref().unwrap_or(&self.prefix)
    }

    fn name(&self, suffix: &str) -> String {
        format!("{}.{}", self.prefix, suffix)
    }

    fn source_name(&self, suffix: &str) -> String {
        format!("{}.{}", self.source_prefix(), suffix)
    }

    /// `<source prefix>.course-events`, keyed by course uuid (system of record).
    pub fn course_events(&self) -> String {
        self.source_name("course-events")
    }

    /// `<source prefix>.ecosystem-events`, keyed by ecosystem uuid (system of record).
    pub fn ecosystem_events(&self) -> String {
        self.source_name("ecosystem-events")
    }

    /// `<source prefix>.settings`, keyed by setting key (system of record).
    pub fn settings(&self) -> String {
        self.source_name("settings")
    }

    /// The three system-of-record topics, which a staging environment only reads.
    pub fn system_of_record(&self) -> [String; 3] {
        [
            self.course_events(),
            self.ecosystem_events(),
            self.settings(),
        ]
    }

    /// `<prefix>.sparfa-responses`, responses re-keyed by ecosystem.
    pub fn sparfa_responses(&self) -> String {
        self.name("sparfa-responses")
    }

    /// `<prefix>.models`, compacted, keyed by ecosystem.
    pub fn models(&self) -> String {
        self.name("models")
    }

    /// `<prefix>.results`, compacted, keyed by result key.
    pub fn results(&self) -> String {
        self.name("results")
    }

    /// `<prefix>.dlq`, dead letters.
    pub fn dlq(&self) -> String {
        self.name("dlq")
    }

    /// `<prefix>.inbox`, Tutor's requests published to Kafka.
    pub fn inbox(&self) -> String {
        self.name("inbox")
    }

    /// Every topic with its layout. `partitions_scale` divides the production partition
    /// counts for small deployments and tests (1 keeps them).
    pub fn all_specs(&self, partitions_scale: i32) -> Vec<TopicSpec> {
        let scale = partitions_scale.max(1);
        let spec =
            |name: String, partitions: i32, compacted, retention_ms, max_message_bytes| TopicSpec {
                name,
                partitions: (partitions / scale).max(1),
                compacted,
                retention_ms,
                max_message_bytes,
            };
        const MIB: i64 = 1024 * 1024;
        const DAY_MS: i64 = 24 * 3600 * 1000;
        vec![
            spec(self.course_events(), 48, false, None, 8 * MIB),
            spec(self.ecosystem_events(), 6, false, None, 32 * MIB),
            spec(self.settings(), 1, false, None, MIB),
            spec(self.sparfa_responses(), 6, false, None, MIB),
            spec(self.models(), 6, true, None, 32 * MIB),
            spec(self.results(), 48, true, None, 2 * MIB),
            spec(self.dlq(), 3, false, Some(30 * DAY_MS), 40 * MIB),
            spec(self.inbox(), 48, false, Some(7 * DAY_MS), 8 * MIB),
        ]
    }

    /// The layouts of the topics this environment writes: every topic but the system of
    /// record when a source prefix is set (those belong to the source environment).
    pub fn owned_specs(&self, partitions_scale: i32) -> Vec<TopicSpec> {
        let foreign = self
            .source_prefix
            .is_some()
            .then(|| self.system_of_record());
        self.all_specs(partitions_scale)
            .into_iter()
            .filter(|spec| {
                foreign
                    .as_ref()
                    .is_none_or(|foreign| !foreign.contains(&spec.name))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_prefix() {
        let topics = Topics::new("prod");
        assert_eq!(topics.course_events(), "prod.course-events");
        assert_eq!(topics.ecosystem_events(), "prod.ecosystem-events");
        assert_eq!(topics.dlq(), "prod.dlq");
    }

    #[test]
    fn a_source_prefix_moves_only_the_system_of_record() {
        let topics = Topics::with_source("staging", "prod");
        assert_eq!(topics.course_events(), "prod.course-events");
        assert_eq!(topics.ecosystem_events(), "prod.ecosystem-events");
        assert_eq!(topics.settings(), "prod.settings");
        assert_eq!(topics.results(), "staging.results");
        assert_eq!(topics.dlq(), "staging.dlq");
        assert_eq!(topics.models(), "staging.models");
        let owned: Vec<String> = topics.owned_specs(1).into_iter().map(|s| s.name).collect();
        assert_eq!(owned.len(), 5);
        assert!(owned.iter().all(|name| name.starts_with("staging.")));
        assert_eq!(Topics::new("prod").owned_specs(1).len(), 8);
    }

    #[test]
    fn sparfa_responses_are_co_partitioned_with_ecosystem_events() {
        for scale in [1, 2, 6, 100] {
            let specs = Topics::new("t").all_specs(scale);
            let partitions = |name: &str| {
                specs
                    .iter()
                    .find(|spec| spec.name == name)
                    .unwrap()
                    .partitions
            };
            assert_eq!(
                partitions("t.ecosystem-events"),
                partitions("t.sparfa-responses")
            );
        }
    }
}
