//! Wiring of the long-running roles: open the stream store and sled, start the
//! consumers, the writer and the HTTP listener, and shut everything down in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use biglearn_domain::events::StreamKind;
use biglearn_gateway::{GatewayState, Readiness, Tokens, Writer, WriterConfig};
use biglearn_projector::consumer::{ConsumerProgress, EventLogConsumerConfig};
use biglearn_projector::event_log::EventLog;
use biglearn_stream::embedded::EmbeddedStore;
use biglearn_stream::kafka::KafkaStore;
use biglearn_stream::volume::{SpaceError, SpaceReport, VolumeSpace};
use biglearn_stream::SharedStreamStore;
use biglearn_telemetry::Metrics;
use tokio::sync::watch;

pub use crate::config::{partitions_scale, Backend, FeatureFlags, Role, RunConfig};
use biglearn_events::SchemaFamily;
use biglearn_stream::Topics;

use crate::kafka_options::RegistryTopic;

/// Lowers the connection cap below the process's open-file limit when it does not fit
/// (the log, sled and Kafka need descriptors too), so that the cap, not `accept`, is what
/// refuses connections.
fn fit_connections_to_open_file_limit(
    http: biglearn_gateway::server::HttpLimits,
) -> biglearn_gateway::server::HttpLimits {
    const RESERVED_FILES: usize = 256;
    let Some(soft_limit) = open_file_soft_limit() else {
        return http;
    };
    let fits = soft_limit.saturating_sub(RESERVED_FILES).max(16);
    if http.max_connections <= fits {
        return http;
    }
    tracing::warn!(
        configured = http.max_connections,
        used = fits,
        open_file_limit = soft_limit,
        "The HTTP connection cap does not fit the open-file limit; using a lower cap (raise `ulimit -n` to serve more connections)."
    );
    biglearn_gateway::server::HttpLimits {
        max_connections: fits,
        ..http
    }
}

/// The soft limit on open files (Linux `/proc/self/limits`), if it can be read.
fn open_file_soft_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// How much to divide the production partition counts by when creating topics.
///
/// Opens the configured stream store and creates missing topics.
pub async fn open_store(config: &RunConfig) -> anyhow::Result<SharedStreamStore> {
    let store = open_backend(&config.backend, config).await?;
    let topics = crate::staging::topics_of(config);
    store
        .ensure_topics(&topics.all_specs(partitions_scale(&config.backend)))
        .await
        .context("cannot create the topics")?;
    if let Some(registry) = &config.kafka.registry {
        if matches!(config.backend, Backend::Embedded) {
            anyhow::bail!(
                "--schema-registry needs Kafka (--kafka): the embedded log has no registry"
            );
        }
        let subjects = registry_topics(&topics, &config.backend);
        let view = crate::kafka_options::register_schemas(registry, &subjects).await?;
        biglearn_events::install_registry_view(Some(view));
    }
    Ok(store)
}

/// Opens `backend` (for `config`'s data directory and client id) without creating topics.
fn open_backend<'a>(backend: &'a Backend, config: &'a RunConfig) -> crate::staging::OpenTarget<'a> {
    // Boxed with its type spelled out: a staging backend opens its target through here.
    Box::pin(async move {
        let store: SharedStreamStore = match backend {
            Backend::Embedded => {
                let dir = config.data_dir.join("log");
                // Opening checks every segment: blocking I/O, kept off the async workers.
                let open_dir = dir.clone();
                let store = tokio::task::spawn_blocking(move || EmbeddedStore::open(&open_dir))
                    .await
                    .context("the task opening the embedded log failed")?
                    .with_context(|| {
                        format!("cannot open the embedded log at {}", dir.display())
                    })?;
                Arc::new(store)
            }
            Backend::Kafka {
                bootstrap_servers,
                single_broker,
            } => {
                let mut kafka = config
                    .kafka
                    .kafka_config(bootstrap_servers, &config.writer_id);
                if *single_broker {
                    kafka = kafka.single_broker();
                }
                Arc::new(KafkaStore::connect(kafka).await.with_context(|| {
                    format!("cannot reach Kafka at {bootstrap_servers}; check --kafka and that the brokers are up")
                })?)
            }
            Backend::Staging(staging) => {
                let target = open_backend(&staging.target, config);
                crate::staging::open_split_store(config, staging, target).await?
            }
        };
        Ok(store)
    })
}

/// The Avro topics of a process with their schema family: it registers the ones it
/// writes and only reads the versions of the others (staging's source topics).
pub fn registry_topics(topics: &Topics, backend: &Backend) -> Vec<RegistryTopic> {
    let all = [
        (topics.course_events(), SchemaFamily::CourseEvent),
        (topics.ecosystem_events(), SchemaFamily::EcosystemEvent),
        (topics.settings(), SchemaFamily::SettingsEvent),
        (topics.sparfa_responses(), SchemaFamily::CourseEvent),
        (topics.models(), SchemaFamily::ModelComputed),
        (topics.results(), SchemaFamily::ResultRecord),
        (topics.dlq(), SchemaFamily::DeadLetter),
    ];
    let foreign: Vec<String> = match backend {
        Backend::Staging(_) => topics.system_of_record().to_vec(),
        _ => Vec::new(),
    };
    all.into_iter()
        .map(|(topic, family)| RegistryTopic {
            register: !foreign.contains(&topic),
            topic,
            family,
        })
        .collect()
}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn termination_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::warn!(%error, "SIGTERM cannot be watched; only SIGINT stops the process.");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

/// How long a clean stop spends applying what the topics hold at that moment.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);

/// A component's task, awaited at shutdown under the name of what it reads.
type ComponentTask = tokio::task::JoinHandle<Result<(), biglearn_projector::ProjectionError>>;

/// The runtime a component of the node runs on.
#[derive(Clone, Copy, Debug)]
enum RunsOn {
    /// The derived-state runtime (`crate::derived`), below the request path in priority.
    DerivedState,
    /// The main runtime, beside HTTP: what the request path waits on (the settings
    /// follower whose version the writer stamps, the inbox's writes).
    BesideRequests,
}

/// Spawns a component of the node (a consumer, a SPARFA member, the inbox, the recompute
/// loop): a fatal error stops the process (transient ones are retried inside it).
fn spawn_component<E: std::fmt::Display>(
    runtime: &tokio::runtime::Handle,
    name: &str,
    component: impl std::future::Future<Output = Result<(), E>> + Send + 'static,
    failed_tx: &tokio::sync::mpsc::Sender<String>,
) -> ComponentTask {
    let failed_tx = failed_tx.clone();
    let name = name.to_owned();
    runtime.spawn(async move {
        component.await.map_err(|error| {
            let detail = format!("{name} failed: {error}");
            let _ = failed_tx.try_send(detail.clone());
            biglearn_projector::ProjectionError::Consumer { detail }
        })
    })
}

/// One group membership shared by the successive runs of a supervised component: the
/// membership outlives a restart, so a transient error never costs a rebalance.
struct SharedMembership(Arc<dyn biglearn_stream::GroupMembership>);

#[async_trait::async_trait]
impl biglearn_stream::GroupMembership for SharedMembership {
    fn current(&self) -> biglearn_stream::Assignment {
        self.0.current()
    }

    async fn changed(
        &self,
        seen_generation: u64,
        timeout: Duration,
    ) -> Result<Option<biglearn_stream::Assignment>, biglearn_stream::StreamError> {
        self.0.changed(seen_generation, timeout).await
    }
}

/// The settings history of the process, set once its follower exists: components built
/// before it (the scheduler's settings source, the SPARFA consumer's) resolve through it,
/// and until it is set the initial values of docs/design/operations.md §6.5 apply.
type SettingsCell = Arc<std::sync::OnceLock<Arc<biglearn_settings_follower::Settings>>>;

/// The state projection, once opened. Weak: the projection holds the scheduler's hook,
/// which holds closures reading this cell, and a strong reference would keep sled (and its
/// directory lock) alive after shutdown.
type ProjectionCell =
    Arc<std::sync::OnceLock<std::sync::Weak<biglearn_projector::service::ProjectionService>>>;

/// One process being assembled: what its roles share, and what has been started so far.
/// [`run_with`] adds the roles one by one, serves HTTP, then stops everything in order.
struct Node {
    config: RunConfig,
    space: VolumeSpace,
    metrics: Metrics,
    store: SharedStreamStore,
    topics: Topics,
    db: sled::Db,
    /// The event-log index: the writer's index, and what reads and statuses answer from.
    log: EventLog,
    stop_tx: watch::Sender<bool>,
    stop_rx: watch::Receiver<bool>,
    /// A component that fails fatally reports here and the whole process stops (non-zero
    /// exit), so that a supervisor restarts it rather than serving from a projection that
    /// no longer advances.
    failed_tx: tokio::sync::mpsc::Sender<String>,
    failed_rx: tokio::sync::mpsc::Receiver<String>,
    /// Components awaited at shutdown, under the name of what they read.
    components: Vec<(String, ComponentTask)>,
    /// The progress of each followed topic, for readiness and the writer's index.
    progresses: Vec<(String, watch::Receiver<ConsumerProgress>)>,
    /// Where the consumers of derived state run, below the request path's priority.
    /// Last: dropped after everything that its tasks may still hold.
    derived: crate::derived::DerivedRuntime,
}

impl Node {
    /// Opens the data directory, the stream store and sled. Refuses to start on a full
    /// volume before anything under the data directory is opened: opening would write
    /// (sled's configuration and snapshots, the log's torn-tail cuts), and a write failing
    /// half-way is how state gets corrupted.
    async fn open(mut config: RunConfig) -> anyhow::Result<Node> {
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!(
                "cannot create the data directory {}",
                config.data_dir.display()
            )
        })?;
        let space = VolumeSpace::new(&config.data_dir, reserve_override()?);
        let report = check_space_to_start(&space)?;
        make_private(&config.data_dir)?;
        let metrics = Metrics::new(env!("CARGO_PKG_VERSION"));
        if let Some(report) = report {
            metrics.data_volume(
                report.available_bytes,
                report.total_bytes,
                report.reserve_bytes,
            );
        }
        config.kafka.stats = crate::kafka_options::metrics_observer(metrics.clone());
        let store = open_store(&config).await?;
        let topics = crate::staging::topics_of(&config);
        let state_dir = config.data_dir.join("state");
        let db = sled::Config::new()
            .path(&state_dir)
            .open()
            .map_err(|error| sled_open_error(&state_dir, error))?;
        let log = EventLog::open(
            &db,
            &biglearn_projector::service::Generations::open(&db)?
                .active_tree(biglearn_projector::service::EVENT_LOG)?,
        )?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let (failed_tx, failed_rx) = tokio::sync::mpsc::channel::<String>(4);
        let derived = crate::derived::DerivedRuntime::start(crate::derived::nice_from_env()?)
            .context("cannot start the runtime of the derived-state consumers")?;
        Ok(Node {
            config,
            space,
            metrics,
            store,
            topics,
            db,
            log,
            stop_tx,
            stop_rx,
            failed_tx,
            failed_rx,
            components: Vec::new(),
            progresses: Vec::new(),
            derived,
        })
    }

    /// The event-log index serves the API and the writer; a process that only computes
    /// (projector, SPARFA) skips it.
    fn keeps_event_log(&self) -> bool {
        self.config
            .roles
            .iter()
            .any(|role| !matches!(role, Role::Scheduler | Role::Sparfa))
    }

    /// A process that only answers reads keeps no state projection: it serves results from
    /// `<prefix>.results` and statuses from the event log (docs/design/scheduler.md §1).
    fn keeps_state_projection(&self) -> bool {
        self.config.roles != [Role::Reader]
    }

    /// Only processes with the scheduler role compute results (several share the courses
    /// through `<prefix>.scheduler`, [`Node::scheduler_ownership`]).
    fn computes_results(&self) -> bool {
        self.config.roles.contains(&Role::Scheduler)
    }

    /// Starts `component` on the runtime `runs_on` names, awaited at shutdown under `reads`.
    fn start(
        &mut self,
        runs_on: RunsOn,
        reads: String,
        name: &str,
        component: impl std::future::Future<Output = Result<(), impl std::fmt::Display>>
            + Send
            + 'static,
    ) {
        let runtime = match runs_on {
            RunsOn::DerivedState => self.derived.handle().clone(),
            RunsOn::BesideRequests => tokio::runtime::Handle::current(),
        };
        let task = spawn_component(&runtime, name, component, &self.failed_tx);
        self.components.push((reads, task));
    }

    /// The scheduler's shell (docs/design/scheduler.md §4): its hook dirties targets in every
    /// state batch, its loop computes and publishes results. Settings resolve at the version
    /// stamped in the course's last applied event (kept by the state projection), raised to
    /// the course's settings floor (S9).
    fn scheduler_shell(
        &self,
        models: &Arc<biglearn_sparfa_consumer::ModelStore>,
        settings: &SettingsCell,
        projection: &ProjectionCell,
    ) -> anyhow::Result<biglearn_recompute::Shell> {
        let (cell, latest, projection) = (settings.clone(), settings.clone(), projection.clone());
        let settings = biglearn_recompute::SettingsSource {
            resolve: Arc::new(move |course, floor| match cell.get() {
                Some(settings) => {
                    let history = settings.history();
                    let version = projection
                        .get()
                        .and_then(std::sync::Weak::upgrade)
                        .and_then(|service| service.current().settings_version(course.0).ok())
                        .flatten()
                        .unwrap_or_else(|| history.last_version());
                    biglearn_recompute::scheduler_settings::resolve_at(
                        &history,
                        course,
                        version.max(floor),
                    )
                }
                None => biglearn_scheduler::SchedulerSettings::INITIAL,
            }),
            latest_version: Arc::new(move || {
                latest.get().map_or(0, |settings| settings.last_version())
            }),
        };
        biglearn_recompute::build(biglearn_recompute::ShellInputs {
            models: models.clone(),
            db: self.db.clone(),
            log: self.log.clone(),
            store: self.store.clone(),
            results_topic: self.topics.results(),
            metrics: self.metrics.clone(),
            settings,
        })
        .context("cannot open the scheduler's state")
    }

    /// Starts the model store's follower of `models_topic`. With `log` (a process that
    /// answers writes or statuses), every ecosystem the store holds is marked ready in the
    /// event-log index now, and every new one as its first model arrives (D10); the marks
    /// are derived state, rebuilt from the topic like the store. Returns the follower's
    /// progress (caught up once it has read the high watermarks seen at start).
    fn follow_models(
        &mut self,
        models: &Arc<biglearn_sparfa_consumer::ModelStore>,
        log: Option<EventLog>,
        models_topic: &str,
    ) -> anyhow::Result<watch::Receiver<ConsumerProgress>> {
        if let Some(log) = log {
            let marked = log
                .mark_models_materialized(&models.ecosystems())
                .context("cannot mark the ecosystems with a model as ready")?;
            if marked > 0 {
                tracing::info!(marked, "Ecosystems with a stored model marked ready.");
            }
            models.on_new_model(Arc::new(move |ecosystem, _model_seq| {
                if let Err(error) = log.mark_model_materialized(ecosystem) {
                    tracing::error!(%error, ecosystem = %ecosystem.0, "Cannot mark an ecosystem ready; it is marked at the next start.");
                }
            }));
        }
        let (progress_tx, progress_rx) = watch::channel(ConsumerProgress::default());
        let consumer = biglearn_sparfa_consumer::run_model_store(
            models.clone(),
            self.store.clone(),
            models_topic.to_owned(),
            progress_tx,
            self.stop_rx.clone(),
        );
        self.start(
            RunsOn::DerivedState,
            models_topic.to_owned(),
            "the model store",
            consumer,
        );
        Ok(progress_rx)
    }

    /// One consumer per event topic feeds the event-log projection (first: the writer
    /// waits for it) and, in a process that keeps it, the state projection: each record is
    /// decoded once.
    fn start_event_consumers(
        &mut self,
        projections: Option<&Arc<biglearn_projector::service::ProjectionService>>,
    ) {
        for (stream, topic) in [
            (StreamKind::Course, self.topics.course_events()),
            (StreamKind::Ecosystem, self.topics.ecosystem_events()),
        ] {
            let (progress_tx, progress_rx) = watch::channel(ConsumerProgress::default());
            self.progresses.push((topic.clone(), progress_rx));
            let event_log = biglearn_projector::consumer::EventLogProjection::new(
                self.log.clone(),
                self.store.clone(),
                EventLogConsumerConfig {
                    checkpoint: Default::default(),
                    write_dead_letters: true,
                    component: "event_log".into(),
                    stream,
                    topic: topic.clone(),
                    dlq_topic: self.topics.dlq(),
                    max_batch: 2000,
                    poll_timeout: Duration::from_millis(100),
                    metrics: self.metrics.clone(),
                },
            );
            let mut consumer = biglearn_runtime::TopicConsumer::new(
                topic.clone(),
                "event_log",
                biglearn_projector::decoded::decoder(stream),
            )
            .feed("event_log", Arc::new(event_log), progress_tx);
            if let Some(projections) = projections {
                let (state, state_progress) = projections.live(stream);
                consumer = consumer.feed("projector", state, state_progress);
            }
            let consumer = consumer
                .options(biglearn_runtime::RunOptions {
                    max_batch: 2000,
                    drain_on_shutdown: Some(SHUTDOWN_DRAIN),
                    ..biglearn_runtime::RunOptions::default()
                })
                .metrics(self.metrics.clone())
                .run(self.store.clone(), self.stop_rx.clone());
            self.start(
                RunsOn::DerivedState,
                topic.clone(),
                &format!("the consumer of {topic}"),
                consumer,
            );
        }
    }

    /// The recompute loop. Nothing is computed before the models are caught up too: a
    /// catch-up computed with stale models would publish results of models superseded
    /// long ago.
    async fn start_recompute(
        &mut self,
        shell: biglearn_recompute::Shell,
        projections: &Arc<biglearn_projector::service::ProjectionService>,
        models_progress: Option<watch::Receiver<ConsumerProgress>>,
    ) -> anyhow::Result<()> {
        let ownership = self.scheduler_ownership().await?;
        let source = projections.clone();
        let recompute = shell.into_loop(
            Arc::new(move || source.current()),
            projections
                .progress()
                .into_iter()
                .map(|(_, progress)| progress)
                .chain(models_progress)
                .collect(),
        );
        if let Some(ownership) = ownership {
            recompute.set_ownership(ownership);
        }
        let stop = self.stop_rx.clone();
        let recompute = async move {
            biglearn_recompute::run_recompute(recompute, stop).await;
            Ok::<(), std::convert::Infallible>(())
        };
        self.start(
            RunsOn::DerivedState,
            "the recompute loop".to_owned(),
            "the recompute loop",
            recompute,
        );
        Ok(())
    }

    /// On Kafka, scheduler processes share the courses through the consumer group
    /// `<prefix>.scheduler` over the course-event partitions (docs/design/scheduler.md §1):
    /// each computes the courses of the partitions it owns. On the embedded log (one
    /// process) and in staging (one scheduler of its own) the one scheduler owns every course.
    async fn scheduler_ownership(
        &self,
    ) -> anyhow::Result<Option<biglearn_recompute::OwnershipSource>> {
        if !matches!(self.config.backend, Backend::Kafka { .. }) {
            return Ok(None);
        }
        let topic = self.topics.course_events();
        let group = scheduler_group_id(&self.topics);
        let partitions = self
            .store
            .partition_count(&topic)
            .await
            .with_context(|| format!("cannot read the partitions of {topic}"))?;
        let membership: Arc<dyn biglearn_stream::GroupMembership> = Arc::from(
            self.store
                .join_group(&group, std::slice::from_ref(&topic))
                .await
                .with_context(|| format!("cannot join the schedulers' group {group}"))?,
        );
        Ok(Some(Arc::new(move || {
            let assignment = membership.current();
            let owned: std::collections::BTreeSet<i32> =
                assignment.partitions_of(&topic).into_iter().collect();
            biglearn_recompute::OwnedCourses::Partitions {
                generation: assignment.generation,
                owned,
                partitions,
            }
        })))
    }

    /// The SPARFA role: the response router and the SPARFA consumer, each in its consumer
    /// group, each restarted after transient errors on one membership that outlives the
    /// restart.
    async fn start_sparfa(&mut self, settings: &SettingsCell) -> anyhow::Result<()> {
        let (store, topics, metrics) = (
            self.store.clone(),
            self.topics.clone(),
            self.metrics.clone(),
        );
        let router_membership: Arc<dyn biglearn_stream::GroupMembership> = Arc::from(
            store
                .join_group(
                    &biglearn_sparfa_consumer::router_group_id(&topics),
                    &[topics.course_events()],
                )
                .await
                .context("cannot join the response routers' group")?,
        );
        let router = {
            let (db, store, topics, run_stop) = (
                self.db.clone(),
                store.clone(),
                topics.clone(),
                self.stop_rx.clone(),
            );
            biglearn_runtime::supervise(
                "sparfa_router",
                move || {
                    biglearn_sparfa_consumer::run_response_router(
                        db.clone(),
                        store.clone(),
                        Box::new(SharedMembership(router_membership.clone())),
                        biglearn_sparfa_consumer::RouterConfig::new(topics.clone()),
                        run_stop.clone(),
                    )
                },
                biglearn_sparfa_consumer::SparfaConsumerError::is_transient,
                Some(metrics.clone()),
                self.stop_rx.clone(),
            )
        };
        self.start(
            RunsOn::DerivedState,
            topics.sparfa_responses(),
            "the response router",
            router,
        );

        let membership: Arc<dyn biglearn_stream::GroupMembership> = Arc::from(
            store
                .join_group(
                    &biglearn_sparfa_consumer::group_id(&topics),
                    &biglearn_sparfa_consumer::group_topics(&topics),
                )
                .await
                .context("cannot join the SPARFA consumer group")?,
        );
        let settings = settings.clone();
        let sparfa_settings: biglearn_sparfa_consumer::SparfaSettingsSource =
            Arc::new(move || match settings.get() {
                Some(settings) => {
                    biglearn_sparfa_consumer::SparfaSettings::resolve(&settings.history())
                }
                None => biglearn_sparfa_consumer::SparfaSettings::INITIAL,
            });
        let consumer = {
            let (store, topics, metrics_for_fits, run_stop) = (
                store.clone(),
                topics.clone(),
                metrics.clone(),
                self.stop_rx.clone(),
            );
            biglearn_runtime::supervise(
                "sparfa",
                move || {
                    biglearn_sparfa_consumer::run_sparfa_consumer(
                        store.clone(),
                        Box::new(SharedMembership(membership.clone())),
                        biglearn_sparfa_consumer::SparfaConsumerConfig::new(
                            topics.clone(),
                            metrics_for_fits.clone(),
                        ),
                        sparfa_settings.clone(),
                        run_stop.clone(),
                    )
                },
                biglearn_sparfa_consumer::SparfaConsumerError::is_transient,
                Some(metrics),
                self.stop_rx.clone(),
            )
        };
        self.start(
            RunsOn::DerivedState,
            biglearn_sparfa_consumer::group_id(&topics),
            "the SPARFA consumer",
            consumer,
        );
        Ok(())
    }

    /// The results consumer, with its own stop: it is stopped last, after the recompute
    /// loop's last publication, and drained, so that a clean stop leaves no published
    /// result unstored.
    fn start_results_consumer(&mut self) -> (watch::Sender<bool>, ComponentTask) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (progress_tx, progress_rx) = watch::channel(ConsumerProgress::default());
        self.progresses.push((self.topics.results(), progress_rx));
        let consumer = biglearn_runtime::TopicConsumer::new(
            self.topics.results(),
            "results",
            biglearn_projector::results::decode_result,
        )
        .feed(
            "results",
            Arc::new(biglearn_projector::results::ResultsProjection::new(
                self.log.clone(),
            )),
            progress_tx,
        )
        .options(biglearn_runtime::RunOptions {
            drain_on_shutdown: Some(SHUTDOWN_DRAIN),
            ..biglearn_runtime::RunOptions::default()
        })
        .metrics(self.metrics.clone())
        .run(self.store.clone(), stop_rx);
        let task = spawn_component(
            self.derived.handle(),
            "the results consumer",
            consumer,
            &self.failed_tx,
        );
        (stop_tx, task)
    }

    /// Every process follows the settings topic; readiness waits for it. Returns once the
    /// follower has caught up, so that a writer started after it stamps the latest
    /// settings version.
    async fn follow_settings(
        &mut self,
        cell: &SettingsCell,
    ) -> anyhow::Result<Arc<biglearn_settings_follower::Settings>> {
        let settings = biglearn_settings_follower::Settings::new(self.topics.settings());
        let _ = cell.set(settings.clone());
        self.progresses
            .push((self.topics.settings(), settings.progress()));
        let follower = biglearn_settings_follower::run_settings_follower(
            settings.clone(),
            self.store.clone(),
            self.metrics.clone(),
            self.stop_rx.clone(),
        );
        self.start(
            RunsOn::BesideRequests,
            self.topics.settings(),
            "the settings follower",
            follower,
        );
        tokio::select! {
            _ = settings.caught_up() => Ok(settings),
            Some(reason) = self.failed_rx.recv() => anyhow::bail!("{reason}"),
        }
    }

    /// The writer role: the single writer over the event-log index, its resync after an
    /// uncertain outcome (returned: it holds the store and sled until ended), the inbox
    /// consumer when enabled, and the initial settings on an empty settings topic.
    async fn start_writer(
        &mut self,
        settings: &Arc<biglearn_settings_follower::Settings>,
    ) -> anyhow::Result<(Arc<Writer>, tokio::task::JoinHandle<()>)> {
        let event_topics = [self.topics.course_events(), self.topics.ecosystem_events()];
        let indexed_by = self
            .progresses
            .iter()
            .filter(|(topic, _)| event_topics.contains(topic))
            .cloned()
            .collect();
        let writer = Arc::new(Writer::new(
            self.store.clone(),
            self.log.clone(),
            WriterConfig {
                writer_id: self.config.writer_id.clone(),
                topics: self.topics.clone(),
            },
            self.metrics.clone(),
            indexed_by,
        ));
        writer.guard_space(self.space.clone());
        settings.attach_writer(writer.clone());
        let resync = tokio::spawn(biglearn_gateway::resync_when_caught_up(
            writer.clone(),
            self.store.clone(),
            self.progresses.clone(),
        ));
        if self.config.flags.is_enabled("kafka_inbox") {
            let inbox = biglearn_gateway::inbox::run_inbox_consumer(
                writer.clone(),
                self.log.clone(),
                self.store.clone(),
                self.topics.inbox(),
                self.topics.dlq(),
                self.stop_rx.clone(),
            );
            self.start(
                RunsOn::BesideRequests,
                self.topics.inbox(),
                "the inbox consumer",
                inbox,
            );
        } else {
            tracing::info!("The inbox is off in this environment (feature flag kafka_inbox).");
        }
        let settings_writer = biglearn_gateway::settings_admin::SettingsWriter {
            settings: settings.clone(),
            store: self.store.clone(),
            writer: writer.clone(),
            log: self.log.clone(),
        };
        settings_writer
            .append(
                biglearn_gateway::settings_admin::SettingsChange::Bootstrap,
                biglearn_settings::catalog::BOOTSTRAP_ACTOR,
                "initial settings (spec operations.md §6.5)",
            )
            .await
            .context("cannot define the initial settings on the settings topic")?;
        Ok((writer, resync))
    }

    /// Reports the sizes of sled and the log and the data volume's free space every 10 s.
    fn report_sizes(&self) -> tokio::task::JoinHandle<()> {
        let metrics = self.metrics.clone();
        let db = self.db.clone();
        let log_dir = self.config.data_dir.join("log");
        // One sled database holds every projection of the process: reported once, under
        // the component whose state dominates it.
        let component = sled_component(&self.config.roles);
        let space = self.space.clone();
        tokio::spawn(async move {
            loop {
                if let Ok(bytes) = db.size_on_disk() {
                    metrics.sled_size(component, bytes);
                }
                let log_dir = log_dir.clone();
                if let Ok(bytes) = tokio::task::spawn_blocking(move || dir_size(&log_dir)).await {
                    metrics.log_size(bytes);
                }
                match space.probe() {
                    Ok(report) => metrics.data_volume(
                        report.available_bytes,
                        report.total_bytes,
                        report.reserve_bytes,
                    ),
                    Err(error) => {
                        tracing::warn!(%error, "The data volume's free space is unknown.")
                    }
                }
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        })
    }
}

/// Runs the configured roles until `shutdown` resolves, then stops in order: the HTTP
/// listener drains, consumers finish their batch in flight, sled is flushed.
pub async fn run(
    config: RunConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_with(config, shutdown, |_| {}).await
}

/// [`run`], telling `on_listening` the bound address (tests listen on port 0).
pub async fn run_with(
    config: RunConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    on_listening: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let mut node = Node::open(config).await?;
    let (keeps_event_log, computes_results, keeps_state) = (
        node.keeps_event_log(),
        node.computes_results(),
        node.keeps_state_projection(),
    );
    let settings_cell = SettingsCell::default();
    let projection_cell = ProjectionCell::default();
    // The latest SPARFA models, read from `<prefix>.models`: served to the scheduler, and
    // what makes an ecosystem ready (D10).
    let models = Arc::new(
        biglearn_sparfa_consumer::ModelStore::open(&node.db)
            .context("cannot open the model store")?,
    );
    let scheduler = if computes_results {
        Some(node.scheduler_shell(&models, &settings_cell, &projection_cell)?)
    } else {
        None
    };

    // The state projection (courses, rosters, assignments, responses, content).
    let projections = biglearn_projector::service::ProjectionService::open(
        node.db.clone(),
        node.store.clone(),
        node.topics.clone(),
        node.metrics.clone(),
        node.failed_tx.clone(),
        scheduler
            .as_ref()
            .map(|shell| shell.hook.clone() as Arc<dyn biglearn_projector::state::BatchHook>),
    )?;
    let _ = projection_cell.set(Arc::downgrade(&projections));
    if let Some(shell) = &scheduler {
        // An ecosystem's first model dirties its courses (docs/design/scheduler.md §4). Weak:
        // the recompute hook holds the model store (as the scheduler's `ModelView`), so a
        // strong reference here would be a cycle keeping sled open after shutdown.
        let projection = Arc::downgrade(&projections);
        let hook = Arc::downgrade(&shell.hook);
        models.on_new_model(Arc::new(move |ecosystem, model_seq| {
            let (Some(service), Some(hook)) = (projection.upgrade(), hook.upgrade()) else {
                return;
            };
            if let Err(error) = hook.model_arrived(service.current().tree(), ecosystem, model_seq) {
                tracing::error!(%error, ecosystem = %ecosystem.0, "Cannot mark the courses of a new model dirty; they are recomputed on their next event.");
            }
        }));
    }
    // D10 (docs/design/api.md §2.6, §4.5): "ready" means the ecosystem has a materialized
    // model. Every process that answers writes or statuses, or computes results, follows
    // `<prefix>.models` (a staging process: production's, unless `--own-sparfa`). Started
    // after the hooks above are registered, so that no model passes them by.
    let models_topic = crate::staging::models_topic_of(&node.config);
    let models_progress = if keeps_event_log || computes_results {
        let log = keeps_event_log.then(|| node.log.clone());
        Some(node.follow_models(&models, log, &models_topic)?)
    } else {
        None
    };
    if keeps_event_log {
        node.start_event_consumers(keeps_state.then_some(&projections));
    } else {
        projections.start().await;
    }
    if let Some(shell) = scheduler {
        node.start_recompute(shell, &projections, models_progress.clone())
            .await?;
    }
    if node.config.roles.contains(&Role::Sparfa) {
        node.start_sparfa(&settings_cell).await?;
    }
    let (results_stop, results_task) = node.start_results_consumer();
    let settings = node.follow_settings(&settings_cell).await?;
    let (writer, resync_task) = if node.config.roles.contains(&Role::Writer) {
        let (writer, resync) = node.start_writer(&settings).await?;
        (Some(writer), Some(resync))
    } else {
        (None, None)
    };

    let state = Arc::new(GatewayState {
        writer: writer.clone(),
        log: node.log.clone(),
        tokens: Tokens {
            api: vec![node.config.api_token.clone()],
            admin: vec![node.config.admin_token.clone()],
            observer: node.config.observer_token.iter().cloned().collect(),
        },
        metrics: node.metrics.clone(),
        readiness: Readiness::new(
            node.progresses
                .iter()
                .cloned()
                .chain(
                    keeps_state
                        .then(|| projections.progress())
                        .into_iter()
                        .flatten(),
                )
                .chain(models_progress.map(|progress| (models_topic.clone(), progress)))
                .collect(),
            writer,
        ),
        store: node.store.clone(),
        topics: node.topics.clone(),
        projections: keeps_state.then(|| projections.clone()),
        flags: node.config.flags.clone(),
        settings,
    });
    let app = biglearn_gateway::http::router(state);
    let listen = node.config.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!("cannot listen on {listen}; is another process using that port?")
        })?;
    let local_addr = listener.local_addr()?;
    tracing::info!(listen = %local_addr, backend = node.store.backend_name(), prefix = %node.config.topic_prefix, "Biglearn is serving.");
    println!("biglearn listening on http://{local_addr}");
    on_listening(local_addr);
    let size_reports = node.report_sizes();

    let Node {
        config,
        db,
        stop_tx,
        mut failed_rx,
        components,
        ..
    } = node;
    let failure = Arc::new(parking_lot::Mutex::new(None::<String>));
    let stop_serving = {
        let failure = failure.clone();
        async move {
            tokio::select! {
                _ = shutdown => {}
                Some(reason) = failed_rx.recv() => {
                    tracing::error!(%reason, "Stopping because a component failed.");
                    *failure.lock() = Some(reason);
                }
            }
        }
    };
    let http = fit_connections_to_open_file_limit(config.http);
    biglearn_gateway::server::serve(listener, app, http, stop_serving)
        .await
        .context("the HTTP server failed")?;

    tracing::info!("Shutting down: finishing the batches in flight.");
    size_reports.abort();
    let _ = size_reports.await;
    if let Some(task) = resync_task {
        task.abort();
        let _ = task.await;
    }
    stop_tx.send_replace(true);
    projections.stop().await;
    for (topic, task) in components {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(%error, %topic, "A consumer stopped with an error."),
            Err(error) => tracing::error!(%error, %topic, "A consumer task panicked."),
        }
    }
    // Every other consumer and the recompute loop have stopped: nothing is published any
    // more, so the results consumer drains a final topic.
    results_stop.send_replace(true);
    match results_task.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::error!(%error, "The results consumer stopped with an error."),
        Err(error) => tracing::error!(%error, "The results consumer task panicked."),
    }
    db.flush_async().await.context("cannot flush the state")?;
    if let Some(reason) = failure.lock().take() {
        anyhow::bail!("{reason}; the state is a rebuildable cache: fix the cause and restart");
    }
    tracing::info!("Biglearn stopped cleanly.");
    Ok(())
}

/// The consumer group scheduler processes share the courses through.
pub fn scheduler_group_id(topics: &Topics) -> String {
    format!("{}.scheduler", topics.prefix())
}

/// `BIGLEARN_MIN_FREE_BYTES`: the data volume's free space below which writes are refused
/// and a start is refused (default: 5 % of the volume, at most 256 MiB).
pub const MIN_FREE_BYTES_ENV: &str = "BIGLEARN_MIN_FREE_BYTES";

fn reserve_override() -> anyhow::Result<Option<u64>> {
    match std::env::var(MIN_FREE_BYTES_ENV) {
        Ok(text) if !text.trim().is_empty() => {
            text.trim().parse::<u64>().map(Some).map_err(|_| {
                anyhow::anyhow!("{MIN_FREE_BYTES_ENV}={text:?} is not a number of bytes")
            })
        }
        _ => Ok(None),
    }
}

/// Refuses to start on a volume below its reserve, before anything is opened.
fn check_space_to_start(space: &VolumeSpace) -> anyhow::Result<Option<SpaceReport>> {
    match space.check() {
        Ok(report) => Ok(Some(report)),
        Err(error @ SpaceError::Short { .. }) => Err(anyhow::anyhow!(
            "not starting: {error}. Nothing under {} was opened or changed; start again once space is free",
            space.dir().display()
        )),
        Err(error) => {
            tracing::warn!(%error, "The data volume's free space is unknown; starting anyway.");
            Ok(None)
        }
    }
}

/// Explains why sled would not open: only a held lock means another process.
fn sled_open_error(state_dir: &std::path::Path, error: sled::Error) -> anyhow::Error {
    let dir = state_dir.display();
    match &error {
        sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => anyhow::anyhow!(
            "cannot open the state directory {dir}: another process holds its lock ({error}); if another biglearn process uses it, stop that one first"
        ),
        sled::Error::Io(io) if biglearn_stream::volume::is_no_space(io) => anyhow::anyhow!(
            "cannot open the state directory {dir}: its volume is full ({error}); free space and start again"
        ),
        sled::Error::Corruption { .. } => anyhow::anyhow!(
            "the state directory {dir} is corrupt ({error}); it is a rebuildable cache: stop biglearn, move {dir} aside and start again (it is rebuilt from the log)"
        ),
        _ => anyhow::anyhow!("cannot open the state directory {dir}: {error}"),
    }
}

/// The `component` label of the process's one sled database.
fn sled_component(roles: &[Role]) -> &'static str {
    if roles.contains(&Role::Scheduler) {
        "projector"
    } else if roles
        .iter()
        .any(|role| matches!(role, Role::Writer | Role::Reader))
    {
        "event_log"
    } else {
        "sparfa"
    }
}

/// Bytes of the files under `dir` (0 when it does not exist).
fn dir_size(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_size(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Makes the data directory private whatever the umask it was created under: the
/// directory and every directory in it 0700, every file 0600 at most (they hold students'
/// responses and the tokens). Symbolic links are left alone.
pub fn make_private(data_dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fn walk(dir: &std::path::Path) -> anyhow::Result<()> {
        set_mode(dir, 0o700)?;
        for entry in
            std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?
        {
            let path = entry
                .with_context(|| format!("cannot list {}", dir.display()))?
                .path();
            let meta = std::fs::symlink_metadata(&path)
                .with_context(|| format!("cannot read the mode of {}", path.display()))?;
            if meta.is_dir() {
                walk(&path)?;
            } else if meta.is_file() && meta.permissions().mode() & 0o077 != 0 {
                set_mode(&path, meta.permissions().mode() & 0o700)?;
            }
        }
        Ok(())
    }
    fn set_mode(path: &std::path::Path, mode: u32) -> anyhow::Result<()> {
        let current = std::fs::symlink_metadata(path)
            .with_context(|| format!("cannot read the mode of {}", path.display()))?
            .permissions()
            .mode()
            & 0o7777;
        if current != mode {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).with_context(
                || format!("cannot make {} private (chmod {mode:o})", path.display()),
            )?;
        }
        Ok(())
    }
    walk(data_dir)
}
