//! Staging on production data (docs/design/operations.md §5): `biglearn staging run` (readers and
//! projector over production's topics, read-only), `staging verify`, and `results diff`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use biglearn_staging::{
    compare_parts, first_sequence_difference, Pseudonymizer, ResultsDiff, SourceConfig,
    StateDigest, Verdict,
};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use biglearn_node::staging::lag_records;
pub use biglearn_node::staging::StagingBackend;

use crate::run::{Backend, Role, RunConfig};

/// `biglearn staging …`
#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum StagingCommand {
    /// Run a staging deployment: readers, projector and scheduler over production's
    /// course-events, ecosystem-events and settings topics, read-only, with staging's own
    /// sled state and topics. Write endpoints answer 503. Catches up from its stored
    /// positions (or from the beginning, with a progress bar); /readyz is false until then.
    Run(StagingRunArgs),
    /// Compare staging's state hash with production's once both have applied the same
    /// per-aggregate sequence numbers (pseudonymisation off); exit status 1 if different.
    Verify(VerifyArgs),
    /// Benchmark: a production and a staging process on one Kafka cluster, production
    /// under a paced response load; prints staging's lag and production's own as JSON.
    BenchLag(biglearn_bench::staging_lag::StagingLagArgs),
}

/// `biglearn results …`
#[derive(Subcommand, Debug)]
pub enum ResultsCommand {
    /// Compare the results two deployments serve, by result key (exit status 1 if any
    /// key differs), e.g. `--left http://prod:3000 --right http://staging:3000`.
    Diff(DiffArgs),
}

#[derive(Args, Debug)]
pub struct StagingRunArgs {
    /// Directory of staging's own state (never production's).
    #[arg(
        long,
        default_value = "./biglearn-staging-data",
        env = "BIGLEARN_DATA_DIR"
    )]
    data_dir: PathBuf,
    /// Staging's own observer token (what `staging verify` uses to read staging's digest);
    /// default: `<data-dir>/observer-token`, generated once.
    #[arg(long, env = "BIGLEARN_OBSERVER_TOKEN", hide_env_values = true)]
    observer_token: Option<String>,
    /// Address of the HTTP listener (read API, admin, /readyz, /metrics).
    #[arg(long, default_value = "127.0.0.1:3100", env = "BIGLEARN_LISTEN")]
    listen: SocketAddr,
    /// The source (production) cluster, HOST:PORT[,…]; only consumers connect to it.
    #[arg(long, env = "BIGLEARN_STAGING_SOURCE_KAFKA")]
    source_kafka: String,
    /// Topic prefix of the source's system-of-record topics.
    #[arg(long, default_value = "prod", env = "BIGLEARN_STAGING_SOURCE_PREFIX")]
    source_prefix: String,
    /// librdkafka properties for the source clients, KEY=VALUE (credentials of the
    /// read-only principal, e.g. sasl.username=staging-reader); repeatable.
    #[arg(long = "source-property", value_parser = parse_property)]
    source_properties: Vec<(String, String)>,
    /// Staging's own cluster for results, models, sparfa-responses and dlq (omit for
    /// the embedded log under --data-dir).
    #[arg(long, env = "BIGLEARN_KAFKA")]
    kafka: Option<String>,
    /// Staging's cluster has a single broker (replication factor 1).
    #[arg(long, requires = "kafka")]
    single_broker: bool,
    /// Staging's own topic prefix (must differ from --source-prefix).
    #[arg(long, default_value = "staging", env = "BIGLEARN_TOPIC_PREFIX")]
    topic_prefix: String,
    /// Replace every student_uuid by uuid_v8(HMAC-SHA256(key, uuid)[0..16]) at decode
    /// time, with the key in this file (≥ 32 bytes, e.g. `head -c 32 /dev/urandom`).
    /// Changing the key needs a fresh --data-dir.
    #[arg(long, env = "BIGLEARN_PSEUDONYMIZE_KEY_FILE")]
    pseudonymize_key_file: Option<PathBuf>,
    /// Roles: reader and/or projector (the writer is refused; sparfa needs --own-sparfa).
    #[arg(long, value_delimiter = ',', default_value = "reader,projector")]
    role: Vec<Role>,
    /// Fit staging's own SPARFA models on its own cluster (`<prefix>.models`, adds the
    /// sparfa role) instead of following production's `<source prefix>.models` read-only.
    #[arg(long)]
    own_sparfa: bool,
    /// Feature flags of the staging environment.
    #[arg(long, default_value = "", env = "BIGLEARN_FEATURE_FLAGS")]
    feature_flags: String,
    /// No progress bar while catching up (logs only).
    #[arg(long)]
    no_progress: bool,
    /// Properties, client id and registry of staging's own cluster (--kafka).
    #[command(flatten)]
    kafka_client: crate::kafka_options::KafkaClientArgs,
}

fn parse_property(text: &str) -> Result<(String, String), String> {
    biglearn_stream::kafka::properties::parse_property(text).map_err(|error| error.to_string())
}

/// Reads a pseudonymisation key file.
pub fn read_key_file(path: &std::path::Path) -> anyhow::Result<Pseudonymizer> {
    let key = std::fs::read(path)
        .with_context(|| format!("cannot read the pseudonymisation key {}", path.display()))?;
    Pseudonymizer::new(key).with_context(|| format!("key file {}", path.display()))
}

fn staging_run_config(args: &StagingRunArgs) -> anyhow::Result<RunConfig> {
    std::fs::create_dir_all(&args.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            args.data_dir.display()
        )
    })?;
    let tokens = crate::tokens::resolve(&args.data_dir)?;
    let (observer_token, _) =
        crate::tokens::resolve_observer(&args.data_dir, args.observer_token.as_deref(), &tokens)?;
    let target = match &args.kafka {
        Some(servers) => Backend::Kafka {
            bootstrap_servers: servers.clone(),
            single_broker: args.single_broker,
        },
        None => Backend::Embedded,
    };
    let mut source = SourceConfig::new(args.source_kafka.clone(), args.topic_prefix.clone());
    // `@file` values (the read-only principal's password) are read here.
    for (key, value) in
        biglearn_stream::kafka::properties::resolve_properties(&args.source_properties)
            .context("--source-property")?
    {
        source = source.with_extra(key, value);
    }
    let pseudonymizer = args
        .pseudonymize_key_file
        .as_deref()
        .map(read_key_file)
        .transpose()?;
    Ok(RunConfig {
        data_dir: args.data_dir.clone(),
        listen: args.listen,
        backend: Backend::Staging(Box::new(StagingBackend {
            source,
            source_prefix: args.source_prefix.clone(),
            target,
            pseudonymizer,
            own_sparfa: args.own_sparfa,
        })),
        topic_prefix: args.topic_prefix.clone(),
        roles: {
            let mut roles = args.role.clone();
            if args.own_sparfa && !roles.contains(&Role::Sparfa) {
                roles.push(Role::Sparfa);
            }
            roles
        },
        api_token: tokens.api,
        admin_token: tokens.admin,
        observer_token: Some(observer_token),
        // Staging's own clients (and their assign-only group ids) start with `staging.`.
        writer_id: format!("staging.biglearn-{}", uuid::Uuid::new_v4().simple()),
        flags: biglearn_settings::FeatureFlags::parse(&args.feature_flags)
            .map_err(|error| anyhow::anyhow!("--feature-flags: {error}"))?,
        http: Default::default(),
        kafka: {
            let mut kafka =
                crate::kafka_options::KafkaOptions::from_args(&args.kafka_client, "staging")?;
            // Staging's own clients keep the `staging.` prefix its ACLs match on.
            kafka.client_id = format!("staging.{}", kafka.client_id);
            kafka
        },
    })
}

/// Runs `biglearn staging …`.
pub async fn run_staging(command: StagingCommand) -> anyhow::Result<()> {
    match command {
        StagingCommand::Run(args) => {
            let config = staging_run_config(&args)?;
            let show_progress = !args.no_progress;
            let api_token = config.admin_token.clone();
            crate::run::run_with(config, crate::run::termination_signal(), move |addr| {
                if show_progress {
                    tokio::spawn(show_catch_up(addr, api_token));
                }
            })
            .await
        }
        StagingCommand::BenchLag(args) => biglearn_bench::staging_lag::run_staging_lag(args).await,
        StagingCommand::Verify(args) => {
            let report = verify(&args.options()).await?;
            println!("{}", report.text);
            if report.verdict != Verdict::Equal {
                anyhow::bail!("staging differs from production (see above)");
            }
            Ok(())
        }
    }
}

/// Runs `biglearn results …`.
pub async fn run_results(command: ResultsCommand) -> anyhow::Result<()> {
    match command {
        ResultsCommand::Diff(args) => {
            let left = Endpoint::new(&args.left, args.left_token.as_deref(), &args.actor)?;
            let right = Endpoint::new(&args.right, args.right_token.as_deref(), &args.actor)?;
            let diff = results_diff(&left, &right).await?;
            println!("{}", describe_diff(&diff, args.show));
            if !diff.is_equal() {
                anyhow::bail!("the served results differ (see above)");
            }
            Ok(())
        }
    }
}

/// Shows catch-up progress from the process's own /metrics and /readyz: the records
/// still to apply over every consumer, until ready.
async fn show_catch_up(addr: SocketAddr, _admin_token: String) {
    let client = reqwest::Client::new();
    let base = format!("http://{addr}");
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "catching up {bar:40} {pos}/{len} records ({per_sec}, eta {eta}) {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut total: u64 = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let ready = client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .map(|response| response.status().is_success())
            .unwrap_or(false);
        let remaining = match client.get(format!("{base}/metrics")).send().await {
            Ok(response) => response
                .text()
                .await
                .map(|text| lag_records(&text))
                .unwrap_or(0),
            Err(_) => 0,
        };
        total = total.max(remaining);
        bar.set_length(total);
        bar.set_position(total - remaining);
        if ready {
            bar.finish_with_message("caught up; /readyz is 200");
            return;
        }
    }
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Base URL of a production process with the state projection (projector role).
    #[arg(long)]
    production: String,
    /// Base URL of the staging process.
    #[arg(long)]
    staging: String,
    /// Production's observer token (read-only admin endpoints, docs/design/api.md D14); staging
    /// never holds production's admin token.
    #[arg(
        long = "production-observer-token",
        env = "BIGLEARN_PRODUCTION_OBSERVER_TOKEN",
        hide_env_values = true
    )]
    production_token: String,
    /// Staging's observer token.
    #[arg(
        long = "staging-observer-token",
        env = "BIGLEARN_STAGING_OBSERVER_TOKEN",
        hide_env_values = true
    )]
    staging_token: String,
    /// Give up waiting for both to apply the same sequence numbers after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout_seconds: u64,
    /// Once the inputs match, how long a difference may take to settle (results are
    /// computed after the events are applied) before it is reported.
    #[arg(long, default_value_t = 30)]
    settle_seconds: u64,
    /// Who is acting (admin audit trail).
    #[arg(long, env = "USER", default_value = "operator")]
    actor: String,
}

impl VerifyArgs {
    fn options(&self) -> VerifyOptions {
        VerifyOptions {
            production: self.production.clone(),
            production_token: self.production_token.clone(),
            staging: self.staging.clone(),
            staging_token: self.staging_token.clone(),
            actor: self.actor.clone(),
            timeout: Duration::from_secs(self.timeout_seconds),
            settle: Duration::from_secs(self.settle_seconds),
            poll_interval: Duration::from_millis(500),
        }
    }
}

/// What `staging verify` compares and how long it waits.
#[derive(Clone, Debug)]
pub struct VerifyOptions {
    pub production: String,
    /// Production's observer token.
    pub production_token: String,
    pub staging: String,
    /// Staging's observer token.
    pub staging_token: String,
    pub actor: String,
    /// Bound on waiting for equal inputs.
    pub timeout: Duration,
    /// Bound on waiting for a difference under equal inputs to go away.
    pub settle: Duration,
    pub poll_interval: Duration,
}

/// The outcome of `staging verify`.
#[derive(Clone, Debug)]
pub struct VerifyReport {
    pub verdict: Verdict,
    pub production: StateDigest,
    pub staging: StateDigest,
    /// Polls made.
    pub n_polls: u32,
    /// Human-readable summary.
    pub text: String,
}

/// The read-only admin endpoints of one deployment, reached with its observer token
/// (docs/design/api.md D14): nothing here can write.
struct Endpoint {
    base: String,
    token: String,
    actor: String,
    client: reqwest::Client,
}

impl Endpoint {
    fn new(base: &str, token: Option<&str>, actor: &str) -> anyhow::Result<Endpoint> {
        let token = token
            .map(str::to_owned)
            .or_else(|| std::env::var("BIGLEARN_OBSERVER_TOKEN").ok())
            .filter(|token| !token.is_empty())
            .context(
                "no observer token: pass --left-observer-token/--right-observer-token or set BIGLEARN_OBSERVER_TOKEN",
            )?;
        Ok(Endpoint {
            base: base.trim_end_matches('/').to_owned(),
            token,
            actor: actor.to_owned(),
            client: reqwest::Client::new(),
        })
    }

    async fn call(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let response = self
            .client
            .post(&url)
            .header("Biglearn-Observer-Token", &self.token)
            .header("Biglearn-Actor", &self.actor)
            .json(&body)
            .timeout(Duration::from_secs(120))
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            anyhow::bail!("{url} answered {status}: {answer}");
        }
        Ok(answer)
    }

    async fn digest(&self, list_sequences: bool) -> anyhow::Result<StateDigest> {
        let answer = self
            .call(
                "/admin/state_digest",
                json!({"list_sequences": list_sequences}),
            )
            .await?;
        StateDigest::from_json(&answer).with_context(|| format!("{}/admin/state_digest", self.base))
    }
}

/// Polls both deployments (bounded) until they have applied the same per-aggregate
/// sequence numbers and settings version, then compares the state digests part by part.
/// A difference under equal inputs is re-checked until `settle` passes (results are
/// computed after the events they depend on).
pub async fn verify(options: &VerifyOptions) -> anyhow::Result<VerifyReport> {
    let production = Endpoint::new(
        &options.production,
        Some(&options.production_token),
        &options.actor,
    )?;
    let staging = Endpoint::new(
        &options.staging,
        Some(&options.staging_token),
        &options.actor,
    )?;
    let started = tokio::time::Instant::now();
    let mut settled_since: Option<tokio::time::Instant> = None;
    let mut n_polls = 0;
    loop {
        n_polls += 1;
        let (ours, theirs) = tokio::try_join!(production.digest(false), staging.digest(false))?;
        let elapsed = started.elapsed();
        if ours.same_input(&theirs) {
            let verdict = compare_parts(&ours, &theirs);
            let since = *settled_since.get_or_insert_with(tokio::time::Instant::now);
            if verdict == Verdict::Equal || since.elapsed() >= options.settle {
                let text = describe_verdict(&verdict, &ours, &theirs);
                return Ok(VerifyReport {
                    verdict,
                    production: ours,
                    staging: theirs,
                    n_polls,
                    text,
                });
            }
        } else {
            settled_since = None;
            if elapsed >= options.timeout {
                let (ours, theirs) =
                    tokio::try_join!(production.digest(true), staging.digest(true))?;
                let first = first_sequence_difference(
                    ours.sequences.as_deref().unwrap_or_default(),
                    theirs.sequences.as_deref().unwrap_or_default(),
                );
                let verdict = Verdict::InputsDiffer {
                    production: ours.sequences_digest.clone(),
                    staging: theirs.sequences_digest.clone(),
                    first_aggregate: first,
                };
                let text = describe_verdict(&verdict, &ours, &theirs);
                return Ok(VerifyReport {
                    verdict,
                    production: ours,
                    staging: theirs,
                    n_polls,
                    text,
                });
            }
        }
        tokio::time::sleep(options.poll_interval).await;
    }
}

fn describe_verdict(verdict: &Verdict, production: &StateDigest, staging: &StateDigest) -> String {
    let applied = format!(
        "production applied {} events over {} aggregates (settings v{:?}); staging {} over {} (settings v{:?})",
        production.n_applied,
        production.n_aggregates,
        production.settings_version,
        staging.n_applied,
        staging.n_aggregates,
        staging.settings_version
    );
    match verdict {
        Verdict::Equal => format!(
            "EQUAL: same sequence numbers applied, same digest of every part ({}).\n{applied}",
            production
                .parts
                .iter()
                .map(|(part, digest)| format!("{part}={}", &digest[..digest.len().min(12)]))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Verdict::Different {
            part,
            production: ours,
            staging: theirs,
        } => format!(
            "DIFFERENT: part {part} differs (production {}, staging {}) with the same sequence numbers applied.\n{applied}\nFor results, `biglearn results diff` names the keys.",
            ours.as_deref().unwrap_or("absent"),
            theirs.as_deref().unwrap_or("absent"),
        ),
        Verdict::InputsDiffer {
            first_aggregate, ..
        } => {
            let first = match first_aggregate {
                Some(difference) => format!(
                    "first differing aggregate: {} {} (production next_seq {:?}, staging {:?})",
                    difference.stream, difference.aggregate, difference.production, difference.staging
                ),
                None => "the settings versions differ".to_owned(),
            };
            format!("NOT COMPARED: the two never applied the same sequence numbers within the timeout; {first}.\n{applied}\nIs staging still catching up, or is an aggregate blocked on a gap (`biglearn gap list`)?")
        }
    }
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// Base URL of the first deployment (e.g. production).
    #[arg(long)]
    left: String,
    /// Base URL of the second deployment (e.g. staging).
    #[arg(long)]
    right: String,
    /// Observer token of --left (default: $BIGLEARN_OBSERVER_TOKEN).
    #[arg(
        long = "left-observer-token",
        env = "BIGLEARN_LEFT_OBSERVER_TOKEN",
        hide_env_values = true
    )]
    left_token: Option<String>,
    /// Observer token of --right (default: $BIGLEARN_OBSERVER_TOKEN).
    #[arg(
        long = "right-observer-token",
        env = "BIGLEARN_RIGHT_OBSERVER_TOKEN",
        hide_env_values = true
    )]
    right_token: Option<String>,
    /// Print at most this many keys per kind of difference.
    #[arg(long, default_value_t = 20)]
    show: usize,
    /// Who is acting (admin audit trail).
    #[arg(long, env = "USER", default_value = "operator")]
    actor: String,
}

/// Every result a deployment serves, by key (content only), paged through
/// `/admin/results/list`.
async fn all_results(endpoint: &Endpoint) -> anyhow::Result<BTreeMap<String, Value>> {
    let mut results = BTreeMap::new();
    let mut after: Option<String> = None;
    // Bounded by the number of results: every page moves `after` strictly forward.
    loop {
        let mut body = json!({"limit": 1000});
        if let Some(after) = &after {
            body["after_key"] = json!(after);
        }
        let page = endpoint.call("/admin/results/list", body).await?;
        let rows = page["results"]
            .as_array()
            .context("/admin/results/list answered without results")?;
        for row in rows {
            let key = row["key"]
                .as_str()
                .context("a result without a key")?
                .to_owned();
            results.insert(key, row["content"].clone());
        }
        match page["next_after_key"].as_str() {
            Some(next) if Some(next) != after.as_deref() => after = Some(next.to_owned()),
            _ => return Ok(results),
        }
    }
}

async fn results_diff(left: &Endpoint, right: &Endpoint) -> anyhow::Result<ResultsDiff> {
    let (ours, theirs) = tokio::try_join!(all_results(left), all_results(right))?;
    Ok(biglearn_staging::diff_results(&ours, &theirs))
}

/// Compares the results served by two deployments by result key.
pub async fn diff_served_results(
    left: &str,
    left_token: &str,
    right: &str,
    right_token: &str,
) -> anyhow::Result<ResultsDiff> {
    let left = Endpoint::new(left, Some(left_token), "results-diff")?;
    let right = Endpoint::new(right, Some(right_token), "results-diff")?;
    results_diff(&left, &right).await
}

fn describe_diff(diff: &ResultsDiff, show: usize) -> String {
    let mut text = format!(
        "{} results left, {} right: {} equal, {} differ, {} only left, {} only right",
        diff.n_left,
        diff.n_right,
        diff.n_equal,
        diff.different.len(),
        diff.only_left.len(),
        diff.only_right.len()
    );
    for (label, keys) in [
        ("differ", &diff.different),
        ("only left", &diff.only_left),
        ("only right", &diff.only_right),
    ] {
        for key in keys.iter().take(show) {
            text.push_str(&format!("\n  {label}: {key}"));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_are_key_value() {
        assert_eq!(
            parse_property("sasl.username = reader"),
            Ok(("sasl.username".to_owned(), "reader".to_owned()))
        );
        assert!(parse_property("novalue").is_err());
        assert!(parse_property("=x").is_err());
    }
}
