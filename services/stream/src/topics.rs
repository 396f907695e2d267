//! Topic names per environment prefix and their fixed layout (spec events.md §6.1).

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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

impl Topics {
    /// Topics under `prefix`.
    pub fn new(prefix: impl Into<String>) -> Topics {
        Topics {
            prefix: prefix.into(),
        }
    }

    /// The environment prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn name(&self, suffix: &str) -> String {
        format!("{}.{}", self.prefix, suffix)
    }

    /// `<prefix>.course-events`, keyed by course uuid (system of record).
    pub fn course_events(&self) -> String {
        self.name("course-events")
    }

    /// `<prefix>.ecosystem-events`, keyed by ecosystem uuid (system of record).
    pub fn ecosystem_events(&self) -> String {
        self.name("ecosystem-events")
    }

    /// `<prefix>.settings`, keyed by setting key (system of record).
    pub fn settings(&self) -> String {
        self.name("settings")
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
