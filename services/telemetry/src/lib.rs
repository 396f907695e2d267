//! Biglearn's Prometheus metrics: the single list of metric names, types and labels
//! (docs/design/operations.md §7.1), registered in one explicit registry per process.
//!
//! Invariants:
//! - Every metric name of the system is declared here, once, in [`Metrics::new`].
//! - Label values come from small fixed sets (`endpoint`, `stream`, `topic`,
//!   `component`, `reason`, `outcome`, …). No course, student, assignment or ecosystem
//!   uuid, and no error message, is ever a label value.
//! - Components update metrics only through the named-event methods of [`Metrics`]
//!   (one per happening), never by reaching into the families.
//!
//! Does not: serve HTTP (the gateway renders [`Metrics::render`] at `/metrics`).
//!
//! Modules: this file only, with the inline [`known_labels`] (label values whose series
//! exist from registration on). Each registry also serves the standard `process_*` metrics
//! (Linux).

use std::time::Duration;

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Buckets of `biglearn_http_request_duration_seconds` (0.2 s is the slow-request line).
pub const HTTP_DURATION_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Buckets of `biglearn_sparfa_fit_seconds`: fits take seconds to many minutes, and 600 s
/// is the "fit > 10 min" alert line (docs/design/operations.md §7.3).
pub const SPARFA_FIT_BUCKETS: [f64; 13] = [
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// Label values known before anything happens. Their series are created at
/// registration, so that every family renders from the first scrape and `increase()`
/// sees the first occurrence (a counter series that appears at 1 shows no increase, so
/// an alert on the first dead letter or the first `preparation_unknown` would never fire).
pub mod known_labels {
    /// The two streams that carry Tutor's events.
    pub const STREAMS: [&str; 2] = ["course", "ecosystem"];
    /// Every course event type (docs/design/api.md §1.6), from the domain's catalogue.
    pub const COURSE_EVENT_TYPES: [&str; 10] = biglearn_domain::events::CourseEventType::NAMES;
    /// Every ecosystem event type.
    pub const ECOSYSTEM_EVENT_TYPES: [&str; 2] = biglearn_domain::events::EcosystemEventType::NAMES;
    /// (stream, reason) of the `no_op`s the writer can write.
    pub const NO_OP_REASONS: [(&str, &str); 5] = [
        ("course", "preparation_unknown"),
        ("course", "admin_fill"),
        ("course", "imported"),
        ("ecosystem", "admin_fill"),
        ("ecosystem", "imported"),
    ];
    /// Outcomes of an undelivered record.
    pub const PRODUCER_OUTCOMES: [&str; 3] = ["definite", "uncertain", "fatal"];
    /// Consumer components that run in every process today.
    pub const CONSUMER_COMPONENTS: [&str; 2] = ["event_log", "projector"];
    /// Projections that can be rebuilt (`biglearn_projector::service::STATE`). A process
    /// starts with none rebuilding: rebuilds are started by an operator.
    pub const PROJECTIONS: [&str; 1] = ["state"];
    /// Why a record became a dead letter (the Avro `DeadLetterReason` symbols).
    pub const DEAD_LETTER_REASONS: [&str; 4] = [
        "undecodable",
        "unknown_type",
        "slot_conflict",
        "invalid_payload",
    ];
    /// Result kinds (the `ResultKind` names).
    pub const RESULT_KINDS: [&str; 5] = [
        "student_clue",
        "teacher_clue",
        "assignment_pes",
        "assignment_spes",
        "practice_worst_areas",
    ];
    /// Built-in algorithms, and `external` for results pushed by other algorithms.
    pub const ALGORITHMS: [&str; 3] = ["local_query", "biglearn_sparfa", "external"];
    /// Outcomes of a SPARFA fit.
    pub const SPARFA_FIT_OUTCOMES: [&str; 2] = ["ok", "failed"];
    /// Why a SPARFA fit ran (docs/design/sparfa.md, model event `trigger`).
    pub const SPARFA_TRIGGERS: [&str; 3] = ["initial", "response_growth", "manual"];
    /// (endpoint, status) of every read answer (docs/design/api.md §4).
    pub const READ_RESULTS: [(&str, &str); 13] = [
        ("/fetch_assignment_pes", "assignment_ready"),
        ("/fetch_assignment_pes", "assignment_unready"),
        ("/fetch_assignment_pes", "assignment_unknown"),
        ("/fetch_assignment_spes", "assignment_ready"),
        ("/fetch_assignment_spes", "assignment_unready"),
        ("/fetch_assignment_spes", "assignment_unknown"),
        ("/fetch_practice_worst_areas_exercises", "student_ready"),
        ("/fetch_practice_worst_areas_exercises", "student_unready"),
        ("/fetch_practice_worst_areas_exercises", "student_unknown"),
        ("/fetch_student_clues", "clue_ready"),
        ("/fetch_student_clues", "clue_unready"),
        ("/fetch_teacher_clues", "clue_ready"),
        ("/fetch_teacher_clues", "clue_unready"),
    ];
}

/// Every metric family of the process.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    http_requests_total: IntCounterVec,
    http_request_duration_seconds: HistogramVec,
    events_written_total: IntCounterVec,
    write_conflicts_total: IntCounterVec,
    identity_payload_mismatch_total: IntCounterVec,
    noop_events_total: IntCounterVec,
    produce_delivery_seconds: HistogramVec,
    producer_errors_total: IntCounterVec,
    writer_resyncs_total: IntCounter,
    write_deadline_exceeded_total: IntCounter,
    sequence_gap_open: IntGaugeVec,
    sequence_gap_oldest_age_seconds: GaugeVec,
    pending_events: IntGaugeVec,
    consumer_lag_records: IntGaugeVec,
    consumer_lag_max_records: IntGaugeVec,
    consumer_lag_seconds: GaugeVec,
    consumer_retries_total: IntCounterVec,
    consumer_stalled: IntGaugeVec,
    event_age_seconds: HistogramVec,
    events_applied_total: IntCounterVec,
    duplicates_dropped_total: IntCounterVec,
    apply_batch_seconds: HistogramVec,
    dlq_records_total: IntCounterVec,
    kafka_broker_rtt_seconds: GaugeVec,
    kafka_request_errors_total: IntCounterVec,
    kafka_producer_queue_messages: IntGaugeVec,
    kafka_producer_queue_bytes: IntGaugeVec,
    kafka_consumer_lag_messages: IntGaugeVec,
    projection_rebuilding: IntGaugeVec,
    projection_rebuild_progress_ratio: GaugeVec,
    sled_size_bytes: IntGaugeVec,
    log_size_bytes: IntGaugeVec,
    data_volume_available_bytes: IntGaugeVec,
    data_volume_size_bytes: IntGaugeVec,
    data_volume_reserve_bytes: IntGaugeVec,
    recompute_seconds: HistogramVec,
    dirty_targets: IntGaugeVec,
    results_published_total: IntCounterVec,
    results_stale_dropped_total: IntCounterVec,
    response_to_clue_seconds: Histogram,
    read_results_total: IntCounterVec,
    sparfa_fit_seconds: HistogramVec,
    sparfa_fits_total: IntCounterVec,
    sparfa_holdout_accuracy: Histogram,
    sparfa_holdout_log_loss: Histogram,
    sparfa_fit_queue: IntGauge,
    scheduler_partitions_owned: IntGauge,
    sparfa_ecosystems_unready: IntGauge,
    sparfa_responses_waiting: IntGauge,
    sparfa_model_age_seconds: Gauge,
    unknown_preparation_blocks: IntCounter,
    settings_version: IntGaugeVec,
    build_info: IntGaugeVec,
    up: Gauge,
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels)
        .expect("metric definitions are static and valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric is registered once");
    metric
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let metric = IntGaugeVec::new(Opts::new(name, help), labels)
        .expect("metric definitions are static and valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric is registered once");
    metric
}

fn float_gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let metric = GaugeVec::new(Opts::new(name, help), labels)
        .expect("metric definitions are static and valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric is registered once");
    metric
}

fn histogram_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let metric = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("metric definitions are static and valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric is registered once");
    metric
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let metric = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("metric definitions are static and valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric is registered once");
    metric
}

fn latency_buckets() -> Vec<f64> {
    vec![
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        60.0, 300.0,
    ]
}

/// The standard `process_*` metrics of this process (CPU seconds, resident and virtual
/// memory, open and maximum file descriptors, start time, threads), read from /proc at each
/// scrape. Linux only: elsewhere the prometheus crate has no process collector.
fn register_process_metrics(registry: &Registry) {
    #[cfg(target_os = "linux")]
    registry
        .register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("the process collector is registered once per registry");
    #[cfg(not(target_os = "linux"))]
    let _ = registry;
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A fresh registry with every Biglearn metric registered.
    pub fn new(version: &str) -> Metrics {
        let registry = Registry::new();
        let r = &registry;
        let metrics = Metrics {
            http_requests_total: counter_vec(
                r,
                "biglearn_http_requests_total",
                "HTTP requests by final status.",
                &["endpoint", "status"],
            ),
            http_request_duration_seconds: histogram_vec(
                r,
                "biglearn_http_request_duration_seconds",
                "HTTP request duration.",
                &["endpoint"],
                HTTP_DURATION_BUCKETS.to_vec(),
            ),
            events_written_total: counter_vec(
                r,
                "biglearn_events_written_total",
                "Events appended by the writer.",
                &["stream", "event_type"],
            ),
            write_conflicts_total: counter_vec(
                r,
                "biglearn_write_conflicts_total",
                "422 slot conflicts.",
                &["stream"],
            ),
            identity_payload_mismatch_total: counter_vec(
                r,
                "biglearn_identity_payload_mismatch_total",
                "Re-sent identities with a different payload.",
                &["stream"],
            ),
            noop_events_total: counter_vec(
                r,
                "biglearn_noop_events_total",
                "no_op events written.",
                &["stream", "reason"],
            ),
            produce_delivery_seconds: histogram_vec(
                r,
                "biglearn_produce_delivery_seconds",
                "Produce to delivery report.",
                &["topic"],
                latency_buckets(),
            ),
            producer_errors_total: counter_vec(
                r,
                "biglearn_producer_errors_total",
                "Delivery failures by outcome.",
                &["outcome"],
            ),
            writer_resyncs_total: {
                let metric = IntCounter::new(
                    "biglearn_writer_resyncs_total",
                    "Writer index resynchronisations.",
                )
                .expect("static");
                r.register(Box::new(metric.clone()))
                    .expect("registered once");
                metric
            },
            write_deadline_exceeded_total: {
                let metric = IntCounter::new(
                    "biglearn_write_deadline_exceeded_total",
                    "Writes answered 503 at the write deadline while still in flight.",
                )
                .expect("static");
                r.register(Box::new(metric.clone()))
                    .expect("registered once");
                metric
            },
            sequence_gap_open: gauge_vec(
                r,
                "biglearn_sequence_gap_open",
                "Aggregates currently blocked by a sequence gap.",
                &["component", "stream"],
            ),
            sequence_gap_oldest_age_seconds: float_gauge_vec(
                r,
                "biglearn_sequence_gap_oldest_age_seconds",
                "Age of the oldest open sequence gap.",
                &["component", "stream"],
            ),
            pending_events: gauge_vec(
                r,
                "biglearn_pending_events",
                "Events buffered behind gaps.",
                &["component", "stream"],
            ),
            consumer_lag_records: gauge_vec(
                r,
                "biglearn_consumer_lag_records",
                "Sum over partitions of high watermark minus stored position.",
                &["component", "topic"],
            ),
            consumer_lag_max_records: gauge_vec(
                r,
                "biglearn_consumer_lag_max_records",
                "Worst partition's lag in records.",
                &["component", "topic"],
            ),
            consumer_retries_total: counter_vec(
                r,
                "biglearn_consumer_retries_total",
                "Transient stream errors a consumer waited out and retried.",
                &["component"],
            ),
            consumer_stalled: gauge_vec(
                r,
                "biglearn_consumer_stalled",
                "1 while a consumer is retrying a transient error, else 0.",
                &["component"],
            ),
            consumer_lag_seconds: float_gauge_vec(
                r,
                "biglearn_consumer_lag_seconds",
                "Age of the oldest unapplied record (0 when caught up).",
                &["component", "topic"],
            ),
            event_age_seconds: histogram_vec(
                r,
                "biglearn_event_age_seconds",
                "Event age at apply time.",
                &["component"],
                latency_buckets(),
            ),
            events_applied_total: counter_vec(
                r,
                "biglearn_events_applied_total",
                "Events applied to a projection, in sequence order.",
                &["component", "event_type"],
            ),
            duplicates_dropped_total: counter_vec(
                r,
                "biglearn_duplicates_dropped_total",
                "Re-delivered records dropped by a projection (same slot, same identity).",
                &["component", "stream"],
            ),
            apply_batch_seconds: histogram_vec(
                r,
                "biglearn_apply_batch_seconds",
                "Time to decode, apply and commit one consumed batch.",
                &["component"],
                latency_buckets(),
            ),
            dlq_records_total: counter_vec(
                r,
                "biglearn_dlq_records_total",
                "Dead letters written.",
                &["component", "reason"],
            ),
            // From librdkafka's statistics (statistics.interval.ms); `component` is the
            // Kafka client's role: producer, reader, metadata, admin, group.
            kafka_broker_rtt_seconds: float_gauge_vec(
                r,
                "biglearn_kafka_broker_rtt_seconds",
                "Average request round trip to the slowest broker in the last statistics window.",
                &["component"],
            ),
            kafka_request_errors_total: counter_vec(
                r,
                "biglearn_kafka_request_errors_total",
                "Kafka request transmit and receive errors and request timeouts.",
                &["component"],
            ),
            kafka_producer_queue_messages: gauge_vec(
                r,
                "biglearn_kafka_producer_queue_messages",
                "Messages waiting in librdkafka's producer queues.",
                &["component"],
            ),
            kafka_producer_queue_bytes: gauge_vec(
                r,
                "biglearn_kafka_producer_queue_bytes",
                "Bytes waiting in librdkafka's producer queues.",
                &["component"],
            ),
            kafka_consumer_lag_messages: gauge_vec(
                r,
                "biglearn_kafka_consumer_lag_messages",
                "Messages between a Kafka reader's position and the end of its partition, as librdkafka sees it.",
                &["component", "topic", "partition"],
            ),
            projection_rebuilding: gauge_vec(
                r,
                "biglearn_projection_rebuilding",
                "1 while a projection rebuilds.",
                &["projection"],
            ),
            projection_rebuild_progress_ratio: float_gauge_vec(
                r,
                "biglearn_projection_rebuild_progress_ratio",
                "Applied / high watermark at rebuild start.",
                &["projection"],
            ),
            sled_size_bytes: gauge_vec(
                r,
                "biglearn_sled_size_bytes",
                "On-disk size of sled state.",
                &["component"],
            ),
            // Unlabelled, but created by their first report: a placeholder 0 would read as
            // an empty log or a full volume.
            log_size_bytes: gauge_vec(
                r,
                "biglearn_log_size_bytes",
                "On-disk size of the embedded log's files (0 on Kafka).",
                &[],
            ),
            data_volume_available_bytes: gauge_vec(
                r,
                "biglearn_data_volume_available_bytes",
                "Free bytes of the data directory's volume (statvfs f_bavail).",
                &[],
            ),
            data_volume_size_bytes: gauge_vec(
                r,
                "biglearn_data_volume_size_bytes",
                "Size of the data directory's volume.",
                &[],
            ),
            data_volume_reserve_bytes: gauge_vec(
                r,
                "biglearn_data_volume_reserve_bytes",
                "Free bytes below which writes are refused (503).",
                &[],
            ),
            recompute_seconds: histogram_vec(
                r,
                "biglearn_recompute_seconds",
                "Result computations.",
                &["kind"],
                latency_buckets(),
            ),
            dirty_targets: gauge_vec(r, "biglearn_dirty_targets", "Recompute backlog.", &["kind"]),
            results_published_total: counter_vec(
                r,
                "biglearn_results_published_total",
                "Results published.",
                &["kind", "algorithm"],
            ),
            results_stale_dropped_total: counter_vec(
                r,
                "biglearn_results_stale_dropped_total",
                "Older result versions discarded.",
                &["kind"],
            ),
            response_to_clue_seconds: histogram(
                r,
                "biglearn_response_to_clue_seconds",
                "From a response's batch dirtying a student CLUE to that CLUE's publication.",
                latency_buckets(),
            ),
            read_results_total: counter_vec(
                r,
                "biglearn_read_results_total",
                "Read answers by status.",
                &["endpoint", "status"],
            ),
            sparfa_fit_seconds: histogram_vec(
                r,
                "biglearn_sparfa_fit_seconds",
                "SPARFA fit duration.",
                &["trigger"],
                SPARFA_FIT_BUCKETS.to_vec(),
            ),
            sparfa_fits_total: counter_vec(
                r,
                "biglearn_sparfa_fits_total",
                "SPARFA fits by outcome.",
                &["outcome"],
            ),
            sparfa_holdout_accuracy: histogram(
                r,
                "biglearn_sparfa_holdout_accuracy",
                "Holdout accuracy per fit.",
                (0..=18).map(|i| 0.5 + 0.025 * f64::from(i)).collect(),
            ),
            sparfa_holdout_log_loss: histogram(
                r,
                "biglearn_sparfa_holdout_log_loss",
                "Holdout log-loss per fit.",
                vec![0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.8, 1.0],
            ),
            sparfa_fit_queue: {
                let metric = IntGauge::new("biglearn_sparfa_fit_queue", "Queued SPARFA fits.")
                    .expect("static");
                r.register(Box::new(metric.clone()))
                    .expect("registered once");
                metric
            },
            scheduler_partitions_owned: {
                let metric = IntGauge::new(
                    "biglearn_scheduler_partitions_owned",
                    "Course-event partitions whose courses this scheduler process computes (a member of <prefix>.scheduler); 0 for a single scheduler, which computes every course.",
                )
                .expect("static");
                r.register(Box::new(metric.clone()))
                    .expect("registered once");
                metric
            },
            sparfa_ecosystems_unready: {
                let metric = IntGauge::new(
                    "biglearn_sparfa_ecosystems_unready",
                    "Ecosystems with no model.",
                )
                .expect("static");
                r.register(Box::new(metric.clone()))
                    .expect("registered once");
                metric
            },
            sparfa_responses_waiting: {
                let metric = IntGauge::new(
                    "biglearn_sparfa_responses_waiting",
                    "First responses of owned ecosystems received since their last fit's snapshot.",
                )
                .expect("static");
                r.register(Box::new(metric.clone()))
                    .expect("registered once");
                metric
            },
            sparfa_model_age_seconds: {
                let metric = Gauge::new(
                    "biglearn_sparfa_model_age_seconds",
                    "Largest age of an owned ecosystem's latest model, in event time: its newest response's accepted_at minus the model's created_at.",
                )
                .expect("static");
                r.register(Box::new(metric.clone()))
                    .expect("registered once");
                metric
            },
            unknown_preparation_blocks: {
                let metric = IntCounter::new(
                    "biglearn_unknown_preparation_blocks_total",
                    "Courses blocked at an update with an unknown preparation (invariant breach).",
                )
                .expect("static");
                r.register(Box::new(metric.clone()))
                    .expect("registered once");
                metric
            },
            settings_version: gauge_vec(
                r,
                "biglearn_settings_version",
                "Settings version applied.",
                &["component"],
            ),
            build_info: gauge_vec(
                r,
                "biglearn_build_info",
                "Build information (value 1).",
                &["version"],
            ),
            up: {
                let metric =
                    Gauge::new("biglearn_up", "1 while the process runs.").expect("static");
                r.register(Box::new(metric.clone()))
                    .expect("registered once");
                metric
            },
            registry,
        };
        metrics.build_info.with_label_values(&[version]).set(1);
        metrics.up.set(1.0);
        register_process_metrics(&metrics.registry);
        metrics.create_known_series();
        metrics
    }

    /// Creates the series of [`known_labels`]: counters and histograms at zero
    /// occurrences, and "not rebuilding" for every projection (true at start). Other
    /// gauges are not created here: a placeholder 0 for a gap, a lag or a backlog that no
    /// component measures would read as "all clear"; each appears with its component's
    /// first report.
    fn create_known_series(&self) {
        use known_labels::*;
        for stream in STREAMS {
            self.write_conflicts_total.with_label_values(&[stream]);
            self.identity_payload_mismatch_total
                .with_label_values(&[stream]);
        }
        for event_type in COURSE_EVENT_TYPES {
            self.events_written_total
                .with_label_values(&["course", event_type]);
        }
        for event_type in ECOSYSTEM_EVENT_TYPES {
            self.events_written_total
                .with_label_values(&["ecosystem", event_type]);
        }
        for (stream, reason) in NO_OP_REASONS {
            self.noop_events_total.with_label_values(&[stream, reason]);
        }
        for outcome in PRODUCER_OUTCOMES {
            self.producer_errors_total.with_label_values(&[outcome]);
        }
        for component in CONSUMER_COMPONENTS {
            for reason in DEAD_LETTER_REASONS {
                self.dlq_records_total
                    .with_label_values(&[component, reason]);
            }
            self.event_age_seconds.with_label_values(&[component]);
            self.apply_batch_seconds.with_label_values(&[component]);
            for stream in STREAMS {
                self.duplicates_dropped_total
                    .with_label_values(&[component, stream]);
            }
        }
        for projection in PROJECTIONS {
            self.rebuild_progress(projection, None);
        }
        for kind in RESULT_KINDS {
            self.recompute_seconds.with_label_values(&[kind]);
            self.results_stale_dropped_total.with_label_values(&[kind]);
            for algorithm in ALGORITHMS {
                self.results_published_total
                    .with_label_values(&[kind, algorithm]);
            }
        }
        for (endpoint, status) in READ_RESULTS {
            self.read_results_total
                .with_label_values(&[endpoint, status]);
        }
        for outcome in SPARFA_FIT_OUTCOMES {
            self.sparfa_fits_total.with_label_values(&[outcome]);
        }
        for trigger in SPARFA_TRIGGERS {
            self.sparfa_fit_seconds.with_label_values(&[trigger]);
        }
    }

    /// The Prometheus text format (0.0.4) of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(error) = encoder.encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(%error, "Metrics could not be encoded.");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }

    /// An HTTP request finished.
    pub fn http_request_finished(&self, endpoint: &str, status: u16, elapsed: Duration) {
        self.http_requests_total
            .with_label_values(&[endpoint, &status.to_string()])
            .inc();
        self.http_request_duration_seconds
            .with_label_values(&[endpoint])
            .observe(elapsed.as_secs_f64());
    }

    /// The writer appended an event.
    pub fn event_written(&self, stream: &str, event_type: &str) {
        self.events_written_total
            .with_label_values(&[stream, event_type])
            .inc();
    }

    /// A write was refused because a slot was taken (422).
    pub fn write_conflict(&self, stream: &str) {
        self.write_conflicts_total
            .with_label_values(&[stream])
            .inc();
    }

    /// A re-sent identity carried a different payload (first write wins).
    pub fn identity_payload_mismatch(&self, stream: &str) {
        self.identity_payload_mismatch_total
            .with_label_values(&[stream])
            .inc();
    }

    /// A `no_op` was written.
    pub fn no_op_written(&self, stream: &str, reason: &str) {
        self.noop_events_total
            .with_label_values(&[stream, reason])
            .inc();
    }

    /// Records of one request were delivered after `elapsed`.
    pub fn produce_delivered(&self, topic: &str, elapsed: Duration) {
        self.produce_delivery_seconds
            .with_label_values(&[topic])
            .observe(elapsed.as_secs_f64());
    }

    /// A record was not delivered (`definite`, `uncertain` or `fatal`).
    pub fn producer_error(&self, outcome: &str) {
        self.producer_errors_total
            .with_label_values(&[outcome])
            .inc();
    }

    /// The writer started resynchronising its index.
    pub fn writer_resync(&self) {
        self.writer_resyncs_total.inc();
    }

    /// A write was answered 503 at the write deadline; it goes on in the background.
    pub fn write_deadline_passed(&self) {
        self.write_deadline_exceeded_total.inc();
    }

    /// Current gap state of a component's stream.
    pub fn gaps_observed(
        &self,
        component: &str,
        stream: &str,
        n_open: i64,
        oldest_age: Duration,
        n_pending: i64,
    ) {
        self.sequence_gap_open
            .with_label_values(&[component, stream])
            .set(n_open);
        self.sequence_gap_oldest_age_seconds
            .with_label_values(&[component, stream])
            .set(oldest_age.as_secs_f64());
        self.pending_events
            .with_label_values(&[component, stream])
            .set(n_pending);
    }

    /// A consumer met a transient error and will retry.
    pub fn consumer_retried(&self, component: &str) {
        self.consumer_retries_total
            .with_label_values(&[component])
            .inc();
    }

    /// A consumer started (`true`) or stopped (`false`) waiting out a transient error.
    pub fn consumer_stalled(&self, component: &str, stalled: bool) {
        self.consumer_stalled
            .with_label_values(&[component])
            .set(i64::from(stalled));
        // The retry counter is rendered from the first report on, at 0.
        let _ = self.consumer_retries_total.with_label_values(&[component]);
    }

    /// A consumer's lag after a batch.
    pub fn consumer_lag_observed(
        &self,
        component: &str,
        topic: &str,
        total_records: i64,
        max_records: i64,
        seconds: f64,
    ) {
        self.consumer_lag_records
            .with_label_values(&[component, topic])
            .set(total_records);
        self.consumer_lag_max_records
            .with_label_values(&[component, topic])
            .set(max_records);
        self.consumer_lag_seconds
            .with_label_values(&[component, topic])
            .set(seconds);
    }

    /// An event was applied `age` after the writer accepted it.
    pub fn event_applied(&self, component: &str, age: Duration) {
        self.event_age_seconds
            .with_label_values(&[component])
            .observe(age.as_secs_f64());
    }

    /// Events were applied at these ages (one label lookup for the whole batch).
    pub fn events_aged(&self, component: &str, ages: &[Duration]) {
        let histogram = self.event_age_seconds.with_label_values(&[component]);
        for age in ages {
            histogram.observe(age.as_secs_f64());
        }
    }

    /// `count` events of `event_type` were applied by a projection.
    pub fn events_applied(&self, component: &str, event_type: &str, count: u64) {
        self.events_applied_total
            .with_label_values(&[component, event_type])
            .inc_by(count);
    }

    /// A re-delivered record was dropped.
    pub fn duplicate_dropped(&self, component: &str, stream: &str) {
        self.duplicates_dropped_total
            .with_label_values(&[component, stream])
            .inc();
    }

    /// One consumed batch was applied and committed in `elapsed`.
    pub fn apply_batch_finished(&self, component: &str, elapsed: Duration) {
        self.apply_batch_seconds
            .with_label_values(&[component])
            .observe(elapsed.as_secs_f64());
    }

    /// A record went to the dead-letter topic.
    pub fn dead_lettered(&self, component: &str, reason: &str) {
        self.dlq_records_total
            .with_label_values(&[component, reason])
            .inc();
    }

    /// A Kafka client of `component` reported its statistics: the slowest broker's
    /// round trip, the request errors since its previous report, and (producers) its queue.
    pub fn kafka_statistics(
        &self,
        component: &str,
        rtt_seconds: Option<f64>,
        new_request_errors: u64,
        producer_queue: Option<(u64, u64)>,
    ) {
        if let Some(seconds) = rtt_seconds {
            self.kafka_broker_rtt_seconds
                .with_label_values(&[component])
                .set(seconds);
        }
        self.kafka_request_errors_total
            .with_label_values(&[component])
            .inc_by(new_request_errors);
        if let Some((messages, bytes)) = producer_queue {
            self.kafka_producer_queue_messages
                .with_label_values(&[component])
                .set(messages as i64);
            self.kafka_producer_queue_bytes
                .with_label_values(&[component])
                .set(bytes as i64);
        }
    }

    /// A Kafka client of `component` reported the lag of one partition it reads.
    pub fn kafka_consumer_lag(&self, component: &str, topic: &str, partition: i32, messages: i64) {
        self.kafka_consumer_lag_messages
            .with_label_values(&[component, topic, &partition.to_string()])
            .set(messages);
    }

    /// Rebuild progress of a projection (`None` when not rebuilding).
    pub fn rebuild_progress(&self, projection: &str, ratio: Option<f64>) {
        self.projection_rebuilding
            .with_label_values(&[projection])
            .set(i64::from(ratio.is_some()));
        self.projection_rebuild_progress_ratio
            .with_label_values(&[projection])
            .set(ratio.unwrap_or(1.0));
    }

    /// On-disk size of a component's sled state.
    pub fn sled_size(&self, component: &str, bytes: u64) {
        self.sled_size_bytes
            .with_label_values(&[component])
            .set(bytes as i64);
    }

    /// On-disk size of the embedded log (all topics).
    pub fn log_size(&self, bytes: u64) {
        self.log_size_bytes
            .with_label_values(&[] as &[&str])
            .set(bytes as i64);
    }

    /// How many course-event partitions this scheduler process owns in `<prefix>.scheduler`.
    pub fn scheduler_partitions_owned(&self, partitions: usize) {
        self.scheduler_partitions_owned
            .set(i64::try_from(partitions).unwrap_or(i64::MAX));
    }

    /// Free space, size and write reserve of the data directory's volume.
    pub fn data_volume(&self, available: u64, total: u64, reserve: u64) {
        let no_labels: &[&str] = &[];
        self.data_volume_available_bytes
            .with_label_values(no_labels)
            .set(available as i64);
        self.data_volume_size_bytes
            .with_label_values(no_labels)
            .set(total as i64);
        self.data_volume_reserve_bytes
            .with_label_values(no_labels)
            .set(reserve as i64);
    }

    /// A result computation of `kind` took `elapsed`.
    pub fn recomputed(&self, kind: &str, elapsed: Duration) {
        self.recompute_seconds
            .with_label_values(&[kind])
            .observe(elapsed.as_secs_f64());
    }

    /// Recompute backlog of `kind`.
    pub fn dirty_targets_observed(&self, kind: &str, n_dirty: i64) {
        self.dirty_targets.with_label_values(&[kind]).set(n_dirty);
    }

    /// A result was published.
    pub fn result_published(&self, kind: &str, algorithm: &str) {
        self.results_published_total
            .with_label_values(&[kind, algorithm])
            .inc();
    }

    /// A student CLUE was published `elapsed` after a response made it dirty.
    pub fn clue_published_after(&self, elapsed: Duration) {
        self.response_to_clue_seconds.observe(elapsed.as_secs_f64());
    }

    /// A result older than the stored one was discarded.
    pub fn stale_result_dropped(&self, kind: &str) {
        self.results_stale_dropped_total
            .with_label_values(&[kind])
            .inc();
    }

    /// A read endpoint answered one item with `status` (`assignment_unready`, …).
    pub fn read_result(&self, endpoint: &str, status: &str) {
        self.read_results_total
            .with_label_values(&[endpoint, status])
            .inc();
    }

    /// A SPARFA fit ended.
    pub fn sparfa_fit_finished(
        &self,
        trigger: &str,
        ok: bool,
        elapsed: Duration,
        holdout: Option<(f64, f64)>,
    ) {
        self.sparfa_fits_total
            .with_label_values(&[if ok { "ok" } else { "failed" }])
            .inc();
        self.sparfa_fit_seconds
            .with_label_values(&[trigger])
            .observe(elapsed.as_secs_f64());
        if let Some((accuracy, log_loss)) = holdout {
            self.sparfa_holdout_accuracy.observe(accuracy);
            self.sparfa_holdout_log_loss.observe(log_loss);
        }
    }

    /// SPARFA queue and readiness.
    pub fn sparfa_state(&self, n_queued: i64, n_unready: i64) {
        self.sparfa_fit_queue.set(n_queued);
        self.sparfa_ecosystems_unready.set(n_unready);
    }

    /// SPARFA staleness: responses not yet in a snapshot, and the oldest model's age.
    pub fn sparfa_staleness(&self, responses_waiting: i64, model_age: Duration) {
        self.sparfa_responses_waiting.set(responses_waiting);
        self.sparfa_model_age_seconds.set(model_age.as_secs_f64());
    }

    /// A course waits at an update whose preparation is unknown.
    pub fn unknown_preparation_block(&self) {
        self.unknown_preparation_blocks.inc();
    }

    /// A component applied settings up to `version`.
    pub fn settings_version_applied(&self, component: &str, version: i64) {
        self.settings_version
            .with_label_values(&[component])
            .set(version);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_after_use() {
        let metrics = Metrics::new("test");
        metrics.http_request_finished("/ping", 200, Duration::from_millis(3));
        metrics.event_written("course", "record_response");
        let text = metrics.render();
        assert!(text.contains("biglearn_http_requests_total{endpoint=\"/ping\",status=\"200\"} 1"));
        assert!(text.contains(
            "biglearn_http_request_duration_seconds_bucket{endpoint=\"/ping\",le=\"0.2\"} 1"
        ));
        assert!(text.contains(
            "biglearn_events_written_total{event_type=\"record_response\",stream=\"course\"} 1"
        ));
        assert!(text.contains("biglearn_build_info{version=\"test\"} 1"));
    }

    /// The counters and histograms of docs/design/operations.md §7.1 whose label values are all
    /// known before anything happens, and the unlabelled gauges. The others appear with
    /// their first report: the HTTP families (labelled by endpoint),
    /// `biglearn_produce_delivery_seconds` (by topic) and every labelled gauge.
    const FAMILIES_RENDERED_FROM_START: [&str; 28] = [
        "biglearn_events_written_total",
        "biglearn_write_conflicts_total",
        "biglearn_identity_payload_mismatch_total",
        "biglearn_noop_events_total",
        "biglearn_producer_errors_total",
        "biglearn_writer_resyncs_total",
        "biglearn_write_deadline_exceeded_total",
        "biglearn_event_age_seconds",
        "biglearn_dlq_records_total",
        "biglearn_recompute_seconds",
        "biglearn_projection_rebuilding",
        "biglearn_projection_rebuild_progress_ratio",
        "biglearn_results_published_total",
        "biglearn_results_stale_dropped_total",
        "biglearn_read_results_total",
        "biglearn_sparfa_fit_seconds",
        "biglearn_sparfa_fits_total",
        "biglearn_sparfa_holdout_accuracy",
        "biglearn_sparfa_holdout_log_loss",
        "biglearn_sparfa_fit_queue",
        "biglearn_sparfa_ecosystems_unready",
        "biglearn_sparfa_responses_waiting",
        "biglearn_sparfa_model_age_seconds",
        "biglearn_unknown_preparation_blocks_total",
        "biglearn_build_info",
        "biglearn_up",
        // Histograms render per label set: these two have fixed sets too.
        "biglearn_recompute_seconds_bucket",
        "biglearn_sparfa_fit_seconds_count",
    ];

    /// Names of the sample lines of a rendering (without labels or value).
    fn sample_names(text: &str) -> std::collections::BTreeSet<String> {
        text.lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .filter_map(|line| line.split(['{', ' ']).next())
            .map(str::to_owned)
            .collect()
    }

    fn check_rendered(family: &str, names: &std::collections::BTreeSet<String>) {
        let rendered = names.contains(family)
            || ["_bucket", "_sum", "_count"]
                .iter()
                .any(|suffix| names.contains(&format!("{family}{suffix}")));
        assert!(rendered, "{family} is not rendered by a fresh registry");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn every_registry_serves_the_process_metrics() {
        let text = Metrics::new("test").render();
        for family in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_start_time_seconds",
        ] {
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{family} is not rendered"
            );
        }
        let resident = text
            .lines()
            .find_map(|line| line.strip_prefix("process_resident_memory_bytes "))
            .and_then(|value| value.parse::<f64>().ok())
            .expect("a resident memory sample");
        assert!(resident > 0.0, "resident memory {resident}");
    }

    #[test]
    fn counters_and_only_counters_end_in_total() {
        let text = Metrics::new("test").render();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (family, kind) = rest.split_once(' ').unwrap();
                assert_eq!(kind == "counter", family.ends_with("_total"), "{line}");
            }
        }
    }

    #[test]
    fn families_with_known_labels_render_before_anything_happens() {
        let names = sample_names(&Metrics::new("test").render());
        for family in FAMILIES_RENDERED_FROM_START {
            check_rendered(family, &names);
        }
    }

    #[test]
    fn first_occurrences_count_from_an_existing_zero() {
        let metrics = Metrics::new("test");
        let before = metrics.render();
        let line = "biglearn_noop_events_total{reason=\"preparation_unknown\",stream=\"course\"}";
        assert!(before.contains(&format!("{line} 0")), "{before}");
        metrics.no_op_written("course", "preparation_unknown");
        assert!(metrics.render().contains(&format!("{line} 1")));
        let dead_letter =
            "biglearn_dlq_records_total{component=\"event_log\",reason=\"undecodable\"} 0";
        assert!(before.contains(dead_letter), "{before}");
        let uncertain = "biglearn_producer_errors_total{outcome=\"uncertain\"} 0";
        assert!(before.contains(uncertain), "{before}");
    }

    #[test]
    fn disk_gauges_appear_with_their_first_report() {
        let metrics = Metrics::new("test");
        let before = sample_names(&metrics.render());
        for gauge in [
            "biglearn_log_size_bytes",
            "biglearn_data_volume_available_bytes",
        ] {
            assert!(!before.contains(gauge), "{gauge} has a placeholder series");
        }
        metrics.log_size(4096);
        metrics.data_volume(10, 100, 5);
        let text = metrics.render();
        for line in [
            "biglearn_log_size_bytes 4096",
            "biglearn_data_volume_available_bytes 10",
            "biglearn_data_volume_size_bytes 100",
            "biglearn_data_volume_reserve_bytes 5",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in {text}");
        }
    }

    #[test]
    fn kafka_statistics_become_biglearn_kafka_metrics() {
        let metrics = Metrics::new("test");
        assert!(!metrics.render().contains("biglearn_kafka_"));
        metrics.kafka_statistics("producer", Some(0.0025), 2, Some((3, 300)));
        metrics.kafka_statistics("producer", None, 1, Some((0, 0)));
        metrics.kafka_consumer_lag("reader", "biglearn.course-events", 4, 17);
        let text = metrics.render();
        for line in [
            "biglearn_kafka_broker_rtt_seconds{component=\"producer\"} 0.0025",
            "biglearn_kafka_request_errors_total{component=\"producer\"} 3",
            "biglearn_kafka_producer_queue_messages{component=\"producer\"} 0",
            "biglearn_kafka_producer_queue_bytes{component=\"producer\"} 0",
            "biglearn_kafka_consumer_lag_messages{component=\"reader\",partition=\"4\",topic=\"biglearn.course-events\"} 17",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }

    #[test]
    fn labelled_gauges_wait_for_their_component() {
        let metrics = Metrics::new("test");
        let before = sample_names(&metrics.render());
        for gauge in [
            "biglearn_sequence_gap_open",
            "biglearn_consumer_lag_seconds",
            "biglearn_dirty_targets",
        ] {
            assert!(!before.contains(gauge), "{gauge} has a placeholder series");
        }
        metrics.gaps_observed("projector", "course", 2, Duration::from_secs(90), 7);
        let text = metrics.render();
        assert!(text.contains(
            "biglearn_sequence_gap_oldest_age_seconds{component=\"projector\",stream=\"course\"} 90"
        ));
        assert!(
            text.contains("biglearn_pending_events{component=\"projector\",stream=\"course\"} 7")
        );
    }
}
