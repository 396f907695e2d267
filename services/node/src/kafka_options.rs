//! Kafka client options shared by every command that opens Kafka: `--kafka-property`, the stable `client.id`, the schema registry.

use std::path::PathBuf;

use anyhow::Context;
use biglearn_events::{InMemorySchemaLookup, RegistryView, SchemaFamily};
use biglearn_stream::kafka::context::StatsObserver;
use biglearn_stream::kafka::properties::{self, Redacted};
use biglearn_stream::kafka::registry::{
    value_subject, RegistryConfig, RegistryError, SchemaRegistryClient, SubjectVersion,
};
use biglearn_stream::kafka::KafkaConfig;
use biglearn_telemetry::Metrics;

/// The command-line flags (flattened into `up`, `serve`, `publish`, `rebuild`, `staging run`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct KafkaClientArgs {
    /// A librdkafka property for every Kafka client, KEY=VALUE; repeatable. A value
    /// `@PATH` is read from that file (secrets: `sasl.password=@/run/secrets/kafka`).
    /// E.g. `security.protocol=SASL_SSL`, `sasl.mechanism=SCRAM-SHA-512`,
    /// `sasl.username=biglearn`, `ssl.ca.location=/etc/kafka/ca.pem`, `client.id=…`.
    /// In the environment: `KEY=VALUE;KEY=VALUE`.
    #[arg(
        long = "kafka-property",
        env = "BIGLEARN_KAFKA_PROPERTIES",
        value_delimiter = ';',
        value_parser = parse_property
    )]
    pub kafka_properties: Vec<(String, String)>,
    /// Confluent Schema Registry base URL: registers the schemas at start (subjects
    /// `<topic>-value`, BACKWARD_TRANSITIVE) and writes Confluent framing.
    #[arg(long, env = "BIGLEARN_SCHEMA_REGISTRY")]
    pub schema_registry: Option<String>,
    /// Schema registry basic-auth user (with --schema-registry-password-file).
    #[arg(
        long,
        env = "BIGLEARN_SCHEMA_REGISTRY_USER",
        requires = "schema_registry_password_file"
    )]
    pub schema_registry_user: Option<String>,
    /// File holding the schema registry basic-auth password.
    #[arg(
        long,
        env = "BIGLEARN_SCHEMA_REGISTRY_PASSWORD_FILE",
        requires = "schema_registry_user"
    )]
    pub schema_registry_password_file: Option<PathBuf>,
}

fn parse_property(text: &str) -> Result<(String, String), String> {
    properties::parse_property(text).map_err(|error| error.to_string())
}

/// Kafka client settings of a process, resolved (files read).
#[derive(Clone, Default)]
pub struct KafkaOptions {
    /// librdkafka properties applied last to every client.
    pub properties: Vec<(String, String)>,
    /// `client.id` stem: clients are `<client_id>-producer`, `-reader`, … (a
    /// `client.id` property overrides it for every client). Empty: the writer id.
    pub client_id: String,
    /// The schema registry, if any.
    pub registry: Option<RegistryConfig>,
    /// Receives librdkafka statistics (set by `run` to update the metrics).
    pub stats: StatsObserver,
}

impl std::fmt::Debug for KafkaOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaOptions")
            .field("properties", &Redacted(&self.properties))
            .field("client_id", &self.client_id)
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl KafkaOptions {
    /// Resolves `args` for a process of `role` (`up`, `writer-reader`, `publish`, …).
    pub fn from_args(args: &KafkaClientArgs, role: &str) -> anyhow::Result<KafkaOptions> {
        let properties =
            properties::resolve_properties(&args.kafka_properties).context("--kafka-property")?;
        let registry = match &args.schema_registry {
            None => None,
            Some(url) => {
                let mut config = RegistryConfig::new(url.clone());
                if let (Some(user), Some(path)) = (
                    &args.schema_registry_user,
                    &args.schema_registry_password_file,
                ) {
                    let password = properties::resolve_value(
                        "schema registry password",
                        &format!("@{}", path.display()),
                    )
                    .context("--schema-registry-password-file")?;
                    config = config.with_basic_auth(user.clone(), password);
                }
                Some(config)
            }
        };
        Ok(KafkaOptions {
            properties,
            client_id: stable_client_id(role),
            registry,
            stats: StatsObserver::default(),
        })
    }

    /// The Kafka configuration for `bootstrap_servers` with these options; `fallback_id`
    /// is the client id stem when none is set.
    pub fn kafka_config(&self, bootstrap_servers: &str, fallback_id: &str) -> KafkaConfig {
        let client_id = if self.client_id.is_empty() {
            fallback_id
        } else {
            &self.client_id
        };
        let mut config = KafkaConfig::new(bootstrap_servers.to_owned(), client_id.to_owned())
            .with_stats(self.stats.clone());
        config.extra.extend(self.properties.iter().cloned());
        config
    }
}

/// Updates the `biglearn_kafka_*` metrics from every client's statistics reports.
pub fn metrics_observer(metrics: Metrics) -> StatsObserver {
    StatsObserver::new(move |stats| {
        let rtt = stats
            .brokers
            .iter()
            .filter_map(|broker| broker.rtt_seconds)
            .reduce(f64::max);
        let errors = stats
            .brokers
            .iter()
            .map(|broker| broker.new_request_errors)
            .sum();
        let queue = (stats.role == "producer").then_some((stats.queue_messages, stats.queue_bytes));
        metrics.kafka_statistics(stats.role, rtt, errors, queue);
        for lag in &stats.lags {
            metrics.kafka_consumer_lag(stats.role, &lag.topic, lag.partition, lag.messages);
        }
    })
}

/// A topic whose value schemas the registry holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryTopic {
    pub topic: String,
    pub family: SchemaFamily,
    /// Whether this process registers the schemas (it owns the topic) or only reads the
    /// registered versions (staging's source topics).
    pub register: bool,
}

/// Registers every released schema version of each owned topic under `<topic>-value`
/// (oldest first, compatibility BACKWARD_TRANSITIVE) and reads back every version
/// registered under each subject (also other producers'), so that Confluent-framed values
/// of any of them decode.
pub async fn register_schemas(
    registry: &RegistryConfig,
    topics: &[RegistryTopic],
) -> anyhow::Result<RegistryView> {
    let client = SchemaRegistryClient::new(registry.clone())?;
    let mut lookup = InMemorySchemaLookup::new();
    let mut current_ids = std::collections::HashMap::new();
    for RegistryTopic {
        topic,
        family,
        register,
    } in topics
    {
        let subject = value_subject(topic);
        if !register {
            match client.versions(&subject).await {
                Ok(versions) => insert_parsed(&mut lookup, &subject, versions),
                Err(RegistryError::NotFound { .. }) => {
                    tracing::warn!(subject = %subject, "No schema registered for a source topic yet.")
                }
                Err(error) => {
                    return Err(anyhow::Error::new(error)
                        .context(format!("reading the versions of {subject}")))
                }
            }
            continue;
        }
        client
            .set_compatibility(&subject, "BACKWARD_TRANSITIVE")
            .await
            .with_context(|| format!("setting the compatibility of {subject}"))?;
        let mut id = None;
        for version in family.versions() {
            let registered = client
                .register(&subject, version.json)
                .await
                .with_context(|| {
                    format!(
                        "registering {} v{} under {subject}",
                        family.full_name(),
                        version.version
                    )
                })?;
            lookup.insert(registered, version.schema.clone());
            id = Some(registered);
        }
        if let Some(id) = id {
            current_ids.insert(*family, id);
        }
        let versions = client
            .versions(&subject)
            .await
            .with_context(|| format!("reading the versions of {subject}"))?;
        insert_parsed(&mut lookup, &subject, versions);
        tracing::info!(subject = %subject, schema_id = ?current_ids.get(family), "Schema registered.");
    }
    Ok(RegistryView {
        current_ids,
        lookup: std::sync::Arc::new(lookup),
    })
}

fn insert_parsed(lookup: &mut InMemorySchemaLookup, subject: &str, versions: Vec<SubjectVersion>) {
    for version in versions {
        match biglearn_events::apache_avro::Schema::parse_str(&version.schema) {
            Ok(schema) => lookup.insert(version.id, schema),
            Err(error) => tracing::warn!(
                subject = %subject,
                schema_id = version.id,
                %error,
                "A schema registered under this subject is not Avro this build can parse; its records will be dead-lettered."
            ),
        }
    }
}

/// `biglearn-<role>-<host>`: the same at every start of the same process on the same
/// host, so broker quotas and per-client monitoring can name it.
pub fn stable_client_id(role: &str) -> String {
    format!("biglearn-{role}-{}", host_name())
}

/// The host name (`/proc/sys/kernel/hostname`, else `$HOSTNAME`), reduced to
/// `[A-Za-z0-9._-]`.
fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let cleaned: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "localhost".to_owned()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        kafka: KafkaClientArgs,
    }

    #[test]
    fn properties_repeat_and_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("password");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let cli = Cli::try_parse_from([
            "x".to_owned(),
            "--kafka-property".to_owned(),
            "security.protocol=SASL_SSL".to_owned(),
            "--kafka-property".to_owned(),
            format!("sasl.password=@{}", secret.display()),
        ])
        .unwrap();
        let options = KafkaOptions::from_args(&cli.kafka, "up").unwrap();
        assert_eq!(
            options.properties,
            vec![
                ("security.protocol".to_owned(), "SASL_SSL".to_owned()),
                ("sasl.password".to_owned(), "s3cret".to_owned()),
            ]
        );
        let config = options.kafka_config("127.0.0.1:9092", "unused");
        assert!(config.client_id.starts_with("biglearn-up-"));
        assert!(config
            .extra
            .contains(&("sasl.password".to_owned(), "s3cret".to_owned())));
        let printed = format!("{options:?} {config:?}");
        assert!(!printed.contains("s3cret"), "{printed}");
    }

    #[test]
    fn a_malformed_property_is_refused_by_the_parser() {
        let error =
            Cli::try_parse_from(["x", "--kafka-property", "security.protocol"]).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("expected KEY=VALUE (a librdkafka property), got \"security.protocol\""),
            "{error}"
        );
    }

    #[test]
    fn a_missing_secret_file_names_the_property_and_the_path() {
        let cli = Cli::try_parse_from(["x", "--kafka-property", "sasl.password=@/nonexistent/pw"])
            .unwrap();
        let error = KafkaOptions::from_args(&cli.kafka, "up").unwrap_err();
        let text = format!("{error:#}");
        assert!(
            text.contains("cannot read the value of sasl.password from /nonexistent/pw"),
            "{text}"
        );
    }

    #[test]
    fn registry_basic_auth_reads_the_password_file() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("registry");
        std::fs::write(&secret, "pw\n").unwrap();
        let cli = Cli::try_parse_from([
            "x".to_owned(),
            "--schema-registry".to_owned(),
            "http://127.0.0.1:8081/".to_owned(),
            "--schema-registry-user".to_owned(),
            "biglearn".to_owned(),
            "--schema-registry-password-file".to_owned(),
            secret.display().to_string(),
        ])
        .unwrap();
        let options = KafkaOptions::from_args(&cli.kafka, "up").unwrap();
        let registry = options.registry.unwrap();
        assert_eq!(registry.url, "http://127.0.0.1:8081");
        assert_eq!(
            registry.basic_auth,
            Some(("biglearn".to_owned(), "pw".to_owned()))
        );
        // A user without a password file is refused.
        assert!(Cli::try_parse_from([
            "x",
            "--schema-registry",
            "http://127.0.0.1:8081",
            "--schema-registry-user",
            "biglearn",
        ])
        .is_err());
    }

    #[test]
    fn the_client_id_is_stable() {
        assert_eq!(stable_client_id("up"), stable_client_id("up"));
        let id = stable_client_id("writer-reader");
        assert!(id.starts_with("biglearn-writer-reader-"), "{id}");
        assert!(id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')));
    }
}
