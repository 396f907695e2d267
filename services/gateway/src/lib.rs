//! The Tutor-facing HTTP API, compatible with biglearn-api: validation, the single
//! writer, and the reads Tutor and external readers make.
//!
//! Invariants:
//! - Only this crate knows Tutor's JSON field names and HTTP status rules.
//! - Nothing of a request is acted on before the whole request has validated (400), and
//!   nothing of it is written when any slot conflicts (422).
//! - A write is answered 200 only after every record of the request has a successful
//!   delivery report; after an uncertain outcome the writer refuses writes until its
//!   index has been re-read from the log.
//! - Authentication runs before any other check; tokens compare in constant time.
//!
//! Does not: compute results (the scheduler does), or decide stream order (consumers do).
//!
//! Modules, in reading order:
//! - [`requests`]: request validation (schemas of docs/design/api.md, pointer errors) and
//!   conversion of write requests to candidate events.
//! - [`writer`]: identity and slot checks under per-aggregate locks, stamping, appending.
//! - [`http`]: the axum router, authentication, limits, the write deadline and the error
//!   shape.
//! - [`server`]: the listener: connection cap, header, idle and body deadlines.
//! - [`handlers`]: the top-level dispatch of a validated request to its family's module.
//! - [`error`]: `HandlerError`, why a validated request was not answered with 200.
//! - [`writes`]: Tutor's writes sent to the writer, and their answers.
//! - [`reads`]: result reads with their statuses.
//! - [`stream_reads`]: event-stream reads (metadata, course and ecosystem events).
//! - [`pushes`]: results pushed by external algorithms (the `update_*` endpoints).
//! - [`admin`]: the admin endpoints' dispatch and the sequence-gap answers.
//! - [`inbox`]: Tutor's requests published to Kafka, applied with the HTTP rules.
//! - [`operations`]: rebuilds of the derived state and the dead-letter topic.
//! - [`settings_admin`]: settings appends and the `/admin/settings/*` answers (the
//!   follower they validate against is `biglearn-settings-follower`).

pub mod admin;
pub mod error;
pub mod handlers;
pub mod http;
pub mod inbox;
pub mod operations;
pub mod pushes;
pub mod reads;
pub mod requests;
pub mod server;
pub mod settings_admin;
pub mod stream_reads;
pub mod writer;
pub mod writes;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use biglearn_projector::consumer::ConsumerProgress;
use biglearn_projector::event_log::EventLog;
use biglearn_telemetry::Metrics;
use tokio::sync::watch;

pub use writer::{Writer, WriterConfig};

/// The secrets of the two roles; several per role allow rotation without downtime.
#[derive(Clone, Debug)]
pub struct Tokens {
    /// Accepted in `Biglearn-Api-Token`.
    pub api: Vec<String>,
    /// Accepted in `Biglearn-Admin-Token`.
    pub admin: Vec<String>,
    /// Accepted in `Biglearn-Observer-Token` by the read-only admin endpoints only
    /// (docs/design/api.md D14); empty: no observer is accepted.
    pub observer: Vec<String>,
}

/// Whether the process may take traffic: every consumer caught up, writer index in sync.
#[derive(Clone, Default)]
pub struct Readiness {
    consumers: Vec<(String, watch::Receiver<ConsumerProgress>)>,
    writer: Option<Arc<Writer>>,
}

impl Readiness {
    /// Readiness over these consumers and, if present, the writer.
    pub fn new(
        consumers: Vec<(String, watch::Receiver<ConsumerProgress>)>,
        writer: Option<Arc<Writer>>,
    ) -> Readiness {
        Readiness { consumers, writer }
    }

    /// `(ready, detail)`: the detail names what is not ready.
    pub fn check(&self) -> (bool, String) {
        for (name, progress) in &self.consumers {
            let progress = progress.borrow();
            // A stall is named even once caught up: what is served may be falling behind.
            if let Some(stall) = &progress.stalled {
                return (false, format!("{name} is stalled, {stall}"));
            }
            if !progress.caught_up {
                return (false, format!("{name} is catching up with the log"));
            }
        }
        if let Some(writer) = &self.writer {
            if writer.is_resyncing() {
                return (
                    false,
                    "the writer's index is catching up with the log".into(),
                );
            }
        }
        (true, "caught up".into())
    }
}

/// Everything a request handler needs.
pub struct GatewayState {
    /// Present when this process holds the writer role.
    pub writer: Option<Arc<Writer>>,
    /// The event-log projection (reads, and the writer's index).
    pub log: EventLog,
    pub tokens: Tokens,
    pub metrics: Metrics,
    pub readiness: Readiness,
    /// The stream store, for result pushes.
    pub store: biglearn_stream::SharedStreamStore,
    /// Topic names of this environment.
    pub topics: biglearn_stream::Topics,
    /// This environment's feature flags.
    pub flags: biglearn_settings::FeatureFlags,
    /// The state projection and its rebuilds (absent in processes that keep none).
    pub projections: Option<Arc<biglearn_projector::service::ProjectionService>>,
    /// The settings history, kept by this process's settings follower.
    pub settings: Arc<biglearn_settings_follower::Settings>,
}

/// Clears the writer's resync flag once the event-log consumers have read both event
/// topics up to their current high watermarks: at start, and after an uncertain delivery
/// (docs/design/api.md §3.5 step 4).
pub async fn resync_when_caught_up(
    writer: Arc<Writer>,
    store: biglearn_stream::SharedStreamStore,
    topics: Vec<(String, watch::Receiver<ConsumerProgress>)>,
) {
    let flag = writer.resync_flag();
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        if !flag.load(Ordering::SeqCst) {
            continue;
        }
        let mut all_caught_up = true;
        for (topic, progress) in &topics {
            let high = match store.high_watermarks(topic).await {
                Ok(high) => high,
                Err(error) => {
                    tracing::warn!(%error, %topic, "Resync waits: high watermarks unavailable.");
                    all_caught_up = false;
                    break;
                }
            };
            let positions = progress.borrow().positions.clone();
            // A consumer that has not opened its partitions yet knows no position.
            if positions.len() < high.len()
                || positions
                    .iter()
                    .zip(&high)
                    .any(|(position, high)| position < high)
            {
                all_caught_up = false;
                break;
            }
        }
        if all_caught_up {
            // The index in memory is loaded off the async threads before writes resume.
            let loading = writer.clone();
            match tokio::task::spawn_blocking(move || loading.load_index()).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::error!(%error, "The writer's index could not be loaded; writes stay refused.");
                    continue;
                }
                Err(error) => {
                    tracing::error!(%error, "Loading the writer's index failed; writes stay refused.");
                    continue;
                }
            }
            flag.store(false, Ordering::SeqCst);
            tracing::info!("The writer's index is resynchronised with the log; writes resume.");
        }
    }
}
