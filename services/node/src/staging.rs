//! A node's staging backend (docs/design/operations.md §5): production's system-of-record
//! topics read-only from the source cluster, everything derived on staging's own store.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::Context;
use biglearn_staging::{KafkaSource, PseudonymizingStore, SplitStore};
use biglearn_stream::{SharedStreamStore, StreamStore, Topics};

pub use crate::config::StagingBackend;
use crate::config::{Backend, Role, RunConfig};

/// Opens staging's own store (boxed: opening a backend is what calls this).
pub type OpenTarget<'a> =
    Pin<Box<dyn Future<Output = anyhow::Result<SharedStreamStore>> + Send + 'a>>;

/// The topic names of `config`: under a staging backend the system-of-record topics are
/// the source's.
pub fn topics_of(config: &RunConfig) -> Topics {
    match &config.backend {
        Backend::Staging(staging) => {
            Topics::with_source(config.topic_prefix.clone(), staging.source_prefix.clone())
        }
        _ => Topics::new(config.topic_prefix.clone()),
    }
}

/// The models topic a process follows (docs/design/operations.md O7): its own `<prefix>.models`,
/// except under a staging backend without `--own-sparfa`, which follows production's
/// `<source prefix>.models` read-only, so that its `biglearn_sparfa` results are computed
/// from the very models production serves.
pub fn models_topic_of(config: &RunConfig) -> String {
    match &config.backend {
        Backend::Staging(staging) if !staging.own_sparfa => {
            Topics::new(staging.source_prefix.clone()).models()
        }
        _ => topics_of(config).models(),
    }
}

/// Opens the split store of a staging process: the read-only source for the three
/// system-of-record topics (pseudonymising course events if asked), `target` (the opened
/// `staging.target`, opened once the checks pass and the source is reached) for the rest.
pub async fn open_split_store(
    config: &RunConfig,
    staging: &StagingBackend,
    open_target: OpenTarget<'_>,
) -> anyhow::Result<SharedStreamStore> {
    if config.roles.contains(&Role::Writer) {
        anyhow::bail!(
            "staging runs no writer: it reads production's topics and never writes to them; use --role reader,projector"
        );
    }
    if config.roles.contains(&Role::Sparfa) && !staging.own_sparfa {
        anyhow::bail!(
            "staging follows production's models by default and fits none itself; to fit its own models on staging's cluster, pass --own-sparfa"
        );
    }
    if matches!(staging.target, Backend::Staging(_)) {
        anyhow::bail!("a staging store cannot itself be the target of a staging store");
    }
    if staging.source_prefix == config.topic_prefix {
        anyhow::bail!(
            "staging's topic prefix must differ from the source prefix {:?}, or its results would mix with production's",
            staging.source_prefix
        );
    }
    let source = KafkaSource::connect(staging.source.clone())
        .await
        .with_context(|| {
            format!(
                "cannot reach the source cluster at {}; check --source-kafka and the read-only credentials",
                staging.source.bootstrap_servers
            )
        })?;
    let topics = topics_of(config);
    let models_topic = models_topic_of(config);
    if !staging.own_sparfa {
        source.partition_count(&models_topic).await.with_context(|| {
            format!(
                "production's models topic {models_topic} is not readable on the source cluster; grant the read-only principal Read on it, or run staging with --own-sparfa"
            )
        })?;
    }
    let mut source: SharedStreamStore = Arc::new(source);
    if let Some(pseudonymizer) = &staging.pseudonymizer {
        source = Arc::new(PseudonymizingStore::new(
            source,
            topics.course_events(),
            pseudonymizer.clone(),
        ));
    }
    let target = open_target.await?;
    tracing::info!(
        source = %staging.source.bootstrap_servers,
        source_prefix = %staging.source_prefix,
        prefix = %config.topic_prefix,
        pseudonymized = staging.pseudonymizer.is_some(),
        models = %models_topic,
        "Staging: reading the system-of-record topics read-only from the source cluster."
    );
    let mut split = SplitStore::new(source, target, &topics);
    if !staging.own_sparfa {
        // ModelComputed holds no learner id (U is never stored, docs/design/sparfa.md §2), so
        // pseudonymisation leaves production's models as they are.
        split = split.with_source_topic(models_topic);
    }
    Ok(Arc::new(split))
}

/// The sum of `biglearn_consumer_lag_records` over every series of a /metrics text.
pub fn lag_records(metrics_text: &str) -> u64 {
    metrics_text
        .lines()
        .filter(|line| line.starts_with("biglearn_consumer_lag_records"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|value| value.max(0.0) as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use biglearn_staging::SourceConfig;

    #[test]
    fn lag_is_summed_over_series() {
        let text = "# HELP biglearn_consumer_lag_records x\n\
            biglearn_consumer_lag_records{component=\"state\",topic=\"prod.course-events\"} 40\n\
            biglearn_consumer_lag_records{component=\"state\",topic=\"prod.ecosystem-events\"} 2\n\
            biglearn_consumer_lag_max_records{component=\"state\",topic=\"t\"} 9\n";
        assert_eq!(lag_records(text), 42);
    }

    fn staging_config(own_sparfa: bool, roles: Vec<Role>) -> RunConfig {
        RunConfig {
            data_dir: std::env::temp_dir(),
            listen: "127.0.0.1:0".parse().unwrap(),
            backend: Backend::Staging(Box::new(StagingBackend {
                // Nothing listens there: the checks below come before any connection.
                source: SourceConfig::new("127.0.0.1:1", "staging"),
                source_prefix: "prod".into(),
                target: Backend::Embedded,
                pseudonymizer: None,
                own_sparfa,
            })),
            topic_prefix: "staging".into(),
            roles,
            api_token: "a".into(),
            admin_token: "b".into(),
            observer_token: None,
            writer_id: "staging.test".into(),
            flags: Default::default(),
            http: Default::default(),
            kafka: Default::default(),
        }
    }

    #[test]
    fn staging_follows_production_models_unless_it_fits_its_own() {
        let follows = staging_config(false, vec![Role::Reader, Role::Scheduler]);
        assert_eq!(models_topic_of(&follows), "prod.models");
        let own = staging_config(true, vec![Role::Reader, Role::Scheduler, Role::Sparfa]);
        assert_eq!(models_topic_of(&own), "staging.models");
        let mut production = follows.clone();
        production.backend = Backend::Embedded;
        assert_eq!(models_topic_of(&production), "staging.models");
    }

    #[tokio::test]
    async fn the_sparfa_role_without_own_sparfa_is_refused_before_connecting() {
        let config = staging_config(false, vec![Role::Reader, Role::Sparfa]);
        let Backend::Staging(staging) = &config.backend else {
            unreachable!()
        };
        let error = open_split_store(
            &config,
            staging,
            Box::pin(async { unreachable!("opened after the checks") }),
        )
        .await
        .err()
        .expect("refused")
        .to_string();
        assert!(error.contains("--own-sparfa"), "{error}");
    }
}
