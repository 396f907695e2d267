//! `biglearn`: the command line of the system; see the library crate for the wiring.
//!
//! Invariants: parsing and dispatch only; every subcommand calls into the library.
//!
//! Does not: implement any rule of the domain.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

// Replays and ingest allocate and free many small records; mimalloc makes that markedly
// cheaper than glibc's allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use biglearn::run::{self, Backend, Role, RunConfig};
use biglearn::{admin, tokens};

/// Biglearn: personalized exercises, spaced practice and CLUEs for OpenStax Tutor,
/// event-sourced on an append-only stream store.
#[derive(Parser, Debug)]
#[command(name = "biglearn", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as `text` (coloured only on a terminal) or `json` (one object per line).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "BIGLEARN_LOG_FORMAT"
    )]
    log_format: biglearn::logging::LogFormat,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run every service in one process (embedded log by default; --kafka for Kafka).
    Up(UpArgs),
    /// Run chosen roles, for multi-process deployments.
    Serve(ServeArgs),
    /// List or fill sequence gaps (calls the writer's admin endpoints).
    #[command(subcommand)]
    Gap(admin::GapCommand),
    /// List or replay dead letters (calls the writer's admin endpoints).
    #[command(subcommand)]
    Dlq(admin::DlqCommand),
    /// Print the digest of the derived state (process stopped): equal logs, equal digests.
    StateHash(StateHashArgs),
    /// Replay the streams into fresh derived state and switch to it (blue/green).
    Rebuild(RebuildArgs),
    /// Feature toggles: define, change, override, kill, explain and audit settings.
    #[command(subcommand)]
    Settings(biglearn::settings_cli::SettingsCommand),
    /// Publish Tutor requests (JSON lines) to the inbox topic for the writer to apply.
    Publish(PublishArgs),
    /// Drive a running Biglearn with a realistic, seeded Tutor workload and check its answers.
    Simulate(biglearn::simulate::SimulateArgs),
    /// SPARFA model tools (offline evaluation on a response matrix).
    #[command(subcommand)]
    Sparfa(biglearn::sparfa::SparfaCommand),
    /// Benchmarks that print one JSON line each (see BENCHMARKS.md).
    #[command(subcommand)]
    Bench(biglearn_bench::BenchCommand),
    /// Staging on production's topics, read-only (docs/staging.md): run, verify.
    #[command(subcommand)]
    Staging(biglearn::staging::StagingCommand),
    /// Served results: diff two deployments by result key.
    #[command(subcommand)]
    Results(biglearn::staging::ResultsCommand),
}

#[derive(Args, Debug)]
struct PublishArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// JSON lines: {"endpoint": "/record_responses", "request": {...}, "request_id": "..."}.
    #[arg(long)]
    file: PathBuf,
}

#[derive(Args, Debug, Clone)]
struct StoreArgs {
    /// Directory of the local state (sled projections; and the log on the embedded store).
    #[arg(long, default_value = "./biglearn-data", env = "BIGLEARN_DATA_DIR")]
    data_dir: PathBuf,
    /// Address of the HTTP listener (API, admin, /ping, /readyz, /metrics).
    #[arg(long, default_value = "127.0.0.1:3000", env = "BIGLEARN_LISTEN")]
    listen: SocketAddr,
    /// Use Kafka at HOST:PORT[,HOST:PORT…] instead of the embedded log.
    #[arg(long, env = "BIGLEARN_KAFKA")]
    kafka: Option<String>,
    /// Create topics with replication factor 1 (a single development or test broker).
    #[arg(long, requires = "kafka")]
    single_broker: bool,
    /// Feature flags of this environment, e.g. `online_rebuild=off,kafka_inbox=on`
    /// (`biglearn settings list` shows them; unknown names are refused).
    #[arg(long, default_value = "", env = "BIGLEARN_FEATURE_FLAGS")]
    feature_flags: String,
    /// Topic prefix of this environment, e.g. `prod` or `staging`.
    #[arg(long, default_value = "biglearn", env = "BIGLEARN_TOPIC_PREFIX")]
    topic_prefix: String,
    /// The observer token, accepted by the read-only admin endpoints only (dashboards,
    /// staging); default: `<data-dir>/observer-token`, generated once.
    #[arg(long, env = "BIGLEARN_OBSERVER_TOKEN", hide_env_values = true)]
    observer_token: Option<String>,
    #[command(flatten)]
    kafka_client: biglearn::kafka_options::KafkaClientArgs,
}

#[derive(Args, Debug)]
struct StateHashArgs {
    /// Directory of the stopped process's state.
    #[arg(long, default_value = "./biglearn-data", env = "BIGLEARN_DATA_DIR")]
    data_dir: PathBuf,
    /// Also print the digest of each part (projection, results, models).
    #[arg(long)]
    parts: bool,
}

#[derive(Args, Debug)]
struct RebuildArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Ask the running process at --target to rebuild (POST /admin/rebuild) instead; it
    /// keeps serving from the current state until the switch.
    #[arg(long)]
    online: bool,
    /// Base URL of the running process (with --online).
    #[arg(long, default_value = "http://127.0.0.1:3000", env = "BIGLEARN_TARGET")]
    target: String,
    /// Who is acting, recorded in the log (with --online).
    #[arg(long, env = "USER", default_value = "operator")]
    actor: String,
    /// Write the replayed state to sled every this many records (or every 2 s): fewer
    /// means less memory and less replay after a crash, more means fewer writes.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    checkpoint_records: u64,
}

#[derive(Args, Debug)]
struct UpArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    http: HttpArgs,
}

/// Limits of the HTTP listener against slow and idle clients (docs/operations.md).
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "HTTP limits")]
struct HttpArgs {
    /// Seconds a client gets to send a request's headers (counted from when the connection
    /// is ready for a request).
    #[arg(long, default_value_t = 20, env = "BIGLEARN_HTTP_HEADER_TIMEOUT_SECS")]
    http_header_timeout_secs: u64,
    /// Seconds an idle keep-alive connection is kept open.
    #[arg(long, default_value_t = 15, env = "BIGLEARN_HTTP_IDLE_TIMEOUT_SECS")]
    http_idle_timeout_secs: u64,
    /// Seconds any request body gets before the minimum upload rate applies.
    #[arg(long, default_value_t = 10, env = "BIGLEARN_HTTP_BODY_GRACE_SECS")]
    http_body_grace_secs: u64,
    /// Slowest accepted request body upload, in bytes per second after the grace period.
    #[arg(long, default_value_t = 16384, env = "BIGLEARN_HTTP_BODY_MIN_RATE")]
    http_body_min_rate: u64,
    /// Connections served at once; more are answered 503 with Retry-After. Lowered at start
    /// when it does not fit the open-file limit.
    #[arg(long, default_value_t = 1024, env = "BIGLEARN_HTTP_MAX_CONNECTIONS")]
    http_max_connections: usize,
    /// Seconds a write may take to become durable before it is answered 503 (it goes on;
    /// Tutor's retry of the same body answers 200 once it has landed). Keep it below the
    /// client's own timeout (Tutor: 60 s).
    #[arg(long, default_value_t = 55, env = "BIGLEARN_WRITE_DEADLINE_SECS")]
    write_deadline_secs: u64,
}

impl HttpArgs {
    fn limits(&self) -> biglearn_gateway::server::HttpLimits {
        biglearn_gateway::server::HttpLimits {
            header_read_timeout: std::time::Duration::from_secs(self.http_header_timeout_secs),
            keep_alive_idle_timeout: std::time::Duration::from_secs(self.http_idle_timeout_secs),
            body_grace: std::time::Duration::from_secs(self.http_body_grace_secs),
            body_min_bytes_per_second: self.http_body_min_rate,
            max_connections: self.http_max_connections,
            write_deadline: std::time::Duration::from_secs(self.write_deadline_secs),
        }
    }
}

#[derive(Args, Debug)]
struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Roles to run, comma-separated: writer, reader, scheduler, sparfa (`projector` is accepted for scheduler).
    #[arg(long, value_delimiter = ',', required = true)]
    role: Vec<Role>,
    #[command(flatten)]
    http: HttpArgs,
}

fn run_config(store: &StoreArgs, roles: Vec<Role>, name: &str) -> anyhow::Result<RunConfig> {
    std::fs::create_dir_all(&store.data_dir).map_err(|error| {
        anyhow::anyhow!(
            "cannot create the data directory {}: {error}",
            store.data_dir.display()
        )
    })?;
    let tokens = tokens::resolve(&store.data_dir)?;
    if let Some(path) = &tokens.stored_in {
        println!(
            "API and admin tokens not set in the environment; using the ones stored under {} (mode 0600)",
            path.parent().unwrap_or(path).display()
        );
    }
    let (observer_token, observer_file) =
        tokens::resolve_observer(&store.data_dir, store.observer_token.as_deref(), &tokens)?;
    if let Some(path) = observer_file {
        println!(
            "Observer token (read-only admin endpoints) not set; using {} (mode 0600)",
            path.display()
        );
    }
    let backend = match &store.kafka {
        Some(servers) => Backend::Kafka {
            bootstrap_servers: servers.clone(),
            single_broker: store.single_broker,
        },
        None => Backend::Embedded,
    };
    Ok(RunConfig {
        data_dir: store.data_dir.clone(),
        listen: store.listen,
        backend,
        topic_prefix: store.topic_prefix.clone(),
        roles,
        api_token: tokens.api,
        admin_token: tokens.admin,
        observer_token: Some(observer_token),
        writer_id: format!("biglearn-{}", uuid::Uuid::new_v4().simple()),
        flags: biglearn_settings::FeatureFlags::parse(&store.feature_flags)
            .map_err(|error| anyhow::anyhow!("--feature-flags: {error}"))?,
        http: Default::default(),
        kafka: biglearn::kafka_options::KafkaOptions::from_args(&store.kafka_client, name)?,
    })
}

/// The role part of the stable Kafka `client.id`: `writer-reader`, ….
fn roles_name(roles: &[Role]) -> String {
    roles
        .iter()
        .map(|role| format!("{role:?}").to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join("-")
}

async fn run_command(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Up(args) => {
            let config = RunConfig {
                http: args.http.limits(),
                ..run_config(
                    &args.store,
                    vec![Role::Writer, Role::Reader, Role::Scheduler, Role::Sparfa],
                    "up",
                )?
            };
            run::run(config, run::termination_signal()).await
        }
        Command::Serve(args) => {
            let name = roles_name(&args.role);
            let config = RunConfig {
                http: args.http.limits(),
                ..run_config(&args.store, args.role, &name)?
            };
            run::run(config, run::termination_signal()).await
        }
        Command::Gap(command) => admin::run_gap(command).await,
        Command::Dlq(command) => admin::run_dlq(command).await,
        Command::StateHash(args) => biglearn::rebuild::print_state_hash(&args.data_dir, args.parts),
        Command::Rebuild(args) => {
            if args.online {
                biglearn::rebuild::rebuild_online(&args.target, args.store.data_dir, &args.actor)
                    .await
            } else {
                let config = run_config(&args.store, vec![], "rebuild")?;
                biglearn::rebuild::rebuild_offline_with(
                    config,
                    biglearn_projector::overlay::CheckpointPolicy {
                        records: args.checkpoint_records as usize,
                        ..Default::default()
                    },
                )
                .await
            }
        }
        Command::Settings(command) => biglearn::settings_cli::run_settings(command).await,
        Command::Bench(command) => biglearn_bench::run_bench(command).await,
        Command::Simulate(args) => biglearn::simulate::run_simulate(args).await,
        Command::Sparfa(command) => biglearn::sparfa::run_sparfa(command),
        Command::Staging(command) => biglearn::staging::run_staging(command).await,
        Command::Results(command) => biglearn::staging::run_results(command).await,
        Command::Publish(args) => {
            let config = run_config(&args.store, Vec::new(), "publish")?;
            let n_published = biglearn::publish::publish(&config, &args.file).await?;
            println!("published {n_published} requests to the inbox");
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    // Everything this process creates (the log, sled's files, tokens) is its owner's
    // alone, whatever umask it was started with.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let cli = Cli::parse();
    biglearn::logging::init(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_command(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
