//! What a node runs: its roles, its stream store backend and everything else it is
//! configured with.

use std::net::SocketAddr;
use std::path::PathBuf;

use biglearn_staging::{Pseudonymizer, SourceConfig};

use crate::kafka_options::KafkaOptions;

/// A role of docs/design/README.md §4.2 that this binary can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// All write and admin endpoints (exactly one per deployment).
    Writer,
    /// The read endpoints: statuses and events from the event-log index, results from
    /// `<prefix>.results`. A process that only reads keeps no state projection (its
    /// `/admin/state_digest`, rebuild and state-hash answer 503).
    Reader,
    /// The scheduler: computes and publishes results from the state projection. Any
    /// number of processes run it: they share the courses through the consumer group
    /// `<prefix>.scheduler` over the course-event partitions, and each computes only the
    /// courses of the partitions it owns (`up` runs it alone, owning all). Alone, it keeps
    /// no event-log index and `/readyz` means "the state has caught up with the log".
    /// `projector` is the same role under its former name.
    #[value(alias = "projector")]
    Scheduler,
    /// A response router and a SPARFA consumer (any number: they share the course-event
    /// partitions and the ecosystems through consumer groups): fits models and publishes
    /// them to `<prefix>.models`.
    Sparfa,
}

pub use biglearn_settings::FeatureFlags;

/// Where the stream store lives.
#[derive(Clone, Debug)]
pub enum Backend {
    /// The embedded log under `<data-dir>/log`.
    Embedded,
    /// A Kafka cluster.
    Kafka {
        bootstrap_servers: String,
        /// Use replication factor 1 (a single test broker).
        single_broker: bool,
    },
    /// Staging: production's system-of-record topics read-only, the rest on its own
    /// store (docs/design/operations.md §5; `crate::staging`).
    Staging(Box<StagingBackend>),
}

/// Everything a running process needs to know.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub backend: Backend,
    pub topic_prefix: String,
    pub roles: Vec<Role>,
    pub api_token: String,
    pub admin_token: String,
    /// Accepted by the read-only admin endpoints only (docs/design/api.md D14); `None`: none.
    pub observer_token: Option<String>,
    pub writer_id: String,
    /// Per-environment feature flags (static; docs/design/operations.md §6.1).
    pub flags: biglearn_settings::FeatureFlags,
    /// Deadlines and the connection cap of the HTTP listener.
    pub http: biglearn_gateway::server::HttpLimits,
    /// Kafka client properties, client id and schema registry (`--kafka-property`, …).
    pub kafka: KafkaOptions,
}

/// Where a staging process reads from and writes to.
#[derive(Clone, Debug)]
pub struct StagingBackend {
    /// The source (production) cluster, reached read-only.
    pub source: SourceConfig,
    /// Prefix of the system-of-record topics there (`prod`, or MirrorMaker 2's alias).
    pub source_prefix: String,
    /// Staging's own store for everything it derives (never the source cluster's
    /// producer: with the same cluster, a store of its own under staging's prefix).
    pub target: Backend,
    /// Replace every `student_uuid` at decode time (`staging.pseudonymize_students`).
    pub pseudonymizer: Option<Pseudonymizer>,
    /// `--own-sparfa`: fit models on staging's own cluster (`<prefix>.models`, with the
    /// SPARFA role) instead of following production's `<source prefix>.models` read-only
    /// (the default, docs/design/operations.md O7).
    pub own_sparfa: bool,
}

/// Partitions spread load over brokers; on one disk they only multiply the files a group
/// commit must fsync (each ~2 ms), so the embedded log uses 1/12 of them (course events:
/// 4). Per-key order is the same either way, and counts are fixed once a topic exists.
pub fn partitions_scale(backend: &Backend) -> i32 {
    match backend {
        Backend::Embedded => 12,
        Backend::Kafka { .. } => 1,
        Backend::Staging(staging) => partitions_scale(&staging.target),
    }
}
