//! The writer and consumer sides of the fault scenarios, and the scenario runner.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use biglearn_domain::ids::{EventUuid, SequenceNumber};
use biglearn_domain::sequencing::{Incoming, Outcome, SequencerMemory, Slot};
use biglearn_stream::kafka::{KafkaConfig, KafkaStore};
use biglearn_stream::{partition_for_key, OutgoingRecord, StreamStore};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use uuid::Uuid;

pub const BROKERS: i32 = 3;
pub const PARTITIONS: i32 = 12;
pub const COURSES: u32 = 100;
pub const EVENTS_PER_COURSE: i64 = 200;
/// One writer request: this many courses × `SEQS_PER_REQUEST` consecutive events each.
const COURSES_PER_REQUEST: u32 = 25;
const SEQS_PER_REQUEST: i64 = 4;
/// Re-sends of one request before the scenario gives up (each after `RESEND_BACKOFF`).
const MAX_ATTEMPTS: usize = 200;
const RESEND_BACKOFF: Duration = Duration::from_millis(50);
/// Bounds on the fault script's waits and on reading the log back.
/// A bound on how long a scenario may wait for the writer to progress: generous, because
/// the seven scenarios run in parallel on two cores; it only stops a stuck run.
const WAIT_DEADLINE: Duration = Duration::from_secs(180);
const CONSUME_DEADLINE: Duration = Duration::from_secs(90);

pub type Mock = MockCluster<'static, DefaultProducerContext>;

/// One event of the scenario: (course index, sequence_number).
type Event = (u32, i64);

fn course_uuid(course: u32) -> Uuid {
    Uuid::from_u128(0x5eed_0000_0000_4000_8000_0000_0000_0000 | u128::from(course))
}

/// Identical on every re-send, as Tutor's retried event keeps its event_uuid.
fn event_uuid((course, seq): Event) -> EventUuid {
    EventUuid::from(Uuid::from_u128((u128::from(course) << 64) | seq as u128))
}

fn encode((course, seq): Event) -> OutgoingRecord {
    OutgoingRecord {
        key: course_uuid(course).hyphenated().to_string().into_bytes(),
        value: format!("{course}:{seq}").into_bytes(),
        headers: vec![(
            "bl-sequence-number".to_owned(),
            seq.to_string().into_bytes(),
        )],
    }
}

fn decode(value: &[u8]) -> Event {
    let text = std::str::from_utf8(value).expect("utf-8 value");
    let (course, seq) = text.split_once(':').expect("course:seq");
    (course.parse().expect("course"), seq.parse().expect("seq"))
}

/// Progress of the writer, shared with the fault script so faults hit mid-production.
#[derive(Clone)]
pub struct Writer {
    shared: Arc<WriterShared>,
}

struct WriterShared {
    topic: String,
    requests_done: AtomicUsize,
    finished: AtomicBool,
}

impl Writer {
    fn new(topic: String) -> Writer {
        Writer {
            shared: Arc::new(WriterShared {
                topic,
                requests_done: AtomicUsize::new(0),
                finished: AtomicBool::new(false),
            }),
        }
    }

    pub fn topic(&self) -> &str {
        &self.shared.topic
    }

    fn progressed(&self, requests: usize) -> bool {
        self.shared.finished.load(Ordering::SeqCst)
            || self.shared.requests_done.load(Ordering::SeqCst) >= requests
    }

    /// Waits until the writer has completed `requests` requests (or finished).
    pub async fn wait_for_requests(&self, requests: usize) {
        let started = Instant::now();
        while !self.progressed(requests) {
            assert!(
                started.elapsed() < WAIT_DEADLINE,
                "writer stuck below {requests} requests"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits for `duration`, or less if the writer completes `requests` requests first.
    pub async fn wait_for_time_or_requests(&self, duration: Duration, requests: usize) {
        let started = Instant::now();
        while started.elapsed() < duration && !self.progressed(requests) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// What the writer saw.
struct WriteReport {
    /// Every position reported delivered, with the event sent there.
    delivered_at: HashMap<(i32, i64), Event>,
    n_requests: usize,
    n_resent: u64,
    failures: BTreeMap<&'static str, u64>,
    /// The slowest request, from first send to its last delivery report.
    slowest_request: Duration,
}

/// Sends each request's records, awaits every report and re-sends whatever was not
/// delivered, request after request, as the writer serving Tutor's idempotent retries.
async fn write_all(store: Arc<KafkaStore>, writer: Writer) -> WriteReport {
    let mut report = WriteReport {
        delivered_at: HashMap::new(),
        n_requests: 0,
        n_resent: 0,
        failures: BTreeMap::new(),
        slowest_request: Duration::ZERO,
    };
    for round in 0..EVENTS_PER_COURSE / SEQS_PER_REQUEST {
        for first_course in (0..COURSES).step_by(COURSES_PER_REQUEST as usize) {
            let mut unsent: Vec<Event> = (first_course..first_course + COURSES_PER_REQUEST)
                .flat_map(|course| {
                    (0..SEQS_PER_REQUEST).map(move |i| (course, round * SEQS_PER_REQUEST + i))
                })
                .collect();
            let request_started = Instant::now();
            for attempt in 0..MAX_ATTEMPTS {
                if attempt > 0 {
                    report.n_resent += unsent.len() as u64;
                    tokio::time::sleep(RESEND_BACKOFF).await;
                }
                let records = unsent.iter().copied().map(encode).collect();
                let outcomes = store
                    .append(writer.topic(), records)
                    .await
                    .expect("append (store error)");
                let mut retry = Vec::new();
                for (event, outcome) in unsent.iter().copied().zip(outcomes) {
                    match outcome {
                        Ok(delivered) => {
                            let previous = report
                                .delivered_at
                                .insert((delivered.partition, delivered.offset), event);
                            assert_eq!(previous, None, "two deliveries reported at one position");
                        }
                        Err(error) => {
                            *report.failures.entry(error.outcome_label()).or_default() += 1;
                            retry.push(event);
                        }
                    }
                }
                unsent = retry;
                if unsent.is_empty() {
                    break;
                }
            }
            assert!(
                unsent.is_empty(),
                "gave up on {} events after {MAX_ATTEMPTS} attempts",
                unsent.len()
            );
            report.slowest_request = report.slowest_request.max(request_started.elapsed());
            report.n_requests += 1;
            writer.shared.requests_done.fetch_add(1, Ordering::SeqCst);
        }
    }
    writer.shared.finished.store(true, Ordering::SeqCst);
    report
}

/// What reading the log back found.
struct CheckReport {
    n_log_records: i64,
    n_applied: u64,
    n_duplicates: u64,
    n_parked: u64,
}

/// Reads every partition from 0 and sequences per course; asserts exactly-once, in-order
/// application and that each delivered position holds the event reported there.
async fn consume_and_check(store: &KafkaStore, topic: &str, report: &WriteReport) -> CheckReport {
    let highs = store.high_watermarks(topic).await.expect("high watermarks");
    let n_log_records: i64 = highs.iter().sum();
    let start: Vec<(i32, i64)> = (0..PARTITIONS).map(|partition| (partition, 0)).collect();
    let mut reader = store.open_reader(topic, &start).await.expect("open reader");
    let mut sequencer = SequencerMemory::<Event>::with_identities();
    let mut next_expected = vec![0_i64; COURSES as usize];
    let mut unverified = report.delivered_at.clone();
    let mut check = CheckReport {
        n_log_records,
        n_applied: 0,
        n_duplicates: 0,
        n_parked: 0,
    };
    let mut n_read = 0_i64;
    let started = Instant::now();
    while n_read < n_log_records && started.elapsed() < CONSUME_DEADLINE {
        for record in reader
            .poll(10_000, Duration::from_millis(500))
            .await
            .expect("poll")
        {
            n_read += 1;
            let key = record.key.as_deref().expect("key");
            assert_eq!(record.partition, partition_for_key(key, PARTITIONS));
            let event = decode(record.value.as_deref().expect("value"));
            if let Some(sent) = unverified.remove(&(record.partition, record.offset)) {
                assert_eq!(
                    sent, event,
                    "position {}/{}",
                    record.partition, record.offset
                );
            }
            let incoming = Incoming {
                sequence_number: SequenceNumber(event.1),
                slot: Slot::Event {
                    event_uuid: event_uuid(event),
                    event,
                    covers_through: None,
                },
            };
            match sequencer.receive(course_uuid(event.0), incoming, 0) {
                Outcome::Applied(released) => {
                    for sequenced in released {
                        let (course, seq) = sequenced.event;
                        let expected = &mut next_expected[course as usize];
                        assert_eq!(seq, *expected, "course {course} applied out of order");
                        *expected += 1;
                        check.n_applied += 1;
                    }
                }
                Outcome::Parked => check.n_parked += 1,
                Outcome::Duplicate => check.n_duplicates += 1,
                Outcome::Conflict { taken_by } => {
                    panic!("slot conflict at {event:?} (taken by {taken_by:?})")
                }
            }
        }
    }
    assert_eq!(
        n_read, n_log_records,
        "read the whole log within {CONSUME_DEADLINE:?}"
    );
    assert!(
        unverified.is_empty(),
        "{} delivered positions never read",
        unverified.len()
    );
    for (course, next) in next_expected.iter().enumerate() {
        assert_eq!(
            *next, EVENTS_PER_COURSE,
            "course {course} missing events from {next}"
        );
    }
    assert!(
        sequencer.gaps().is_empty(),
        "gaps left: {:?}",
        sequencer.gaps()
    );
    assert_eq!(
        check.n_applied,
        u64::from(COURSES) * EVENTS_PER_COURSE as u64
    );
    assert_eq!(
        n_log_records as u64,
        check.n_applied + check.n_duplicates,
        "every log record is either applied once or absorbed as a duplicate"
    );
    check
}

/// Runs one scenario: a 3-broker MockCluster, the writer producing while `fault` runs
/// against the cluster, then the read-back check. Prints one JSON summary line.
pub fn run_scenario<F, Fut>(label: &str, extra: &[(&str, &str)], fault: F)
where
    F: FnOnce(Rc<Mock>, Writer) -> Fut,
    Fut: Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    // MockCluster is !Send: it stays on this thread, driven from `block_on`.
    let mock = Rc::new(MockCluster::new(BROKERS).expect("mock cluster"));
    let topic = format!("{label}.course-events");
    mock.create_topic(&topic, PARTITIONS, BROKERS)
        .expect("create topic");
    runtime.block_on(async {
        let mut config =
            KafkaConfig::new(mock.bootstrap_servers(), format!("faults-{label}")).single_broker();
        for (key, value) in extra {
            config = config.with(*key, *value);
        }
        let store = Arc::new(KafkaStore::connect(config).await.expect("connect"));
        let writer = Writer::new(topic.clone());
        let started = Instant::now();
        let writing = tokio::spawn(write_all(Arc::clone(&store), writer.clone()));
        fault(Rc::clone(&mock), writer).await;
        let report = writing.await.expect("writer task");
        let produce_s = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let check = consume_and_check(&store, &topic, &report).await;
        let consume_s = started.elapsed().as_secs_f64();
        let failures: Vec<String> = report
            .failures
            .iter()
            .map(|(label, n)| format!("\"{label}\":{n}"))
            .collect();
        println!(
            "{{\"scenario\":\"{label}\",\"events\":{},\"courses\":{COURSES},\"requests\":{},\"log_records\":{},\"duplicates_absorbed\":{},\"parked_out_of_order\":{},\"resent\":{},\"failures\":{{{}}},\"producers_created\":{},\"slowest_request_s\":{:.1},\"produce_s\":{produce_s:.1},\"consume_s\":{consume_s:.1}}}",
            check.n_applied,
            report.n_requests,
            check.n_log_records,
            check.n_duplicates,
            check.n_parked,
            report.n_resent,
            failures.join(","),
            store.producers_created(),
            report.slowest_request.as_secs_f64(),
        );
    });
}
