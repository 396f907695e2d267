//! Exactly-once effect under crashes (issue: projectors): a `biglearn serve --role
//! projector` replaying a history of more than 200,000 events is killed with SIGKILL at
//! least 20 times at random points of the replay, restarted each time, and finally left to
//! catch up; its state hash must equal that of a clean, uninterrupted replay of the same
//! log. On both backends.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use biglearn::offline::generate_into_store;
use biglearn_simulator::WorkloadConfig;
use biglearn_stream::embedded::EmbeddedStore;
use biglearn_stream::kafka::{KafkaConfig, KafkaStore};
use biglearn_stream::SharedStreamStore;
use biglearn_testkit::{listening_address, unique_topic_prefix, TestBroker};

const KILLS: usize = 20;
/// 70 courses × 40 students × 6 weeks: about 200,000 course events.
fn workload() -> WorkloadConfig {
    // 2026-01-05, fixed: the same log on every run.
    WorkloadConfig::new(70, 40, 6, 7, 1_767_571_200_000_000)
}

#[derive(Clone)]
enum Backend {
    Embedded,
    Kafka { bootstrap: String, prefix: String },
}

fn biglearn_up(data_dir: &Path, backend: &Backend) -> (Child, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_biglearn"));
    command
        .args([
            "serve",
            "--role",
            "projector",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data_dir)
        .env("BIGLEARN_API_TOKEN", "crash-test-api-token-0123456789")
        .env("BIGLEARN_ADMIN_TOKEN", "crash-test-admin-token-0123456789")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Backend::Kafka { bootstrap, prefix } = backend {
        command.args([
            "--kafka",
            bootstrap,
            "--single-broker",
            "--topic-prefix",
            prefix,
        ]);
    }
    let mut child = command.spawn().expect("biglearn starts");
    let base = listening_address(&mut child);
    (child, base)
}

fn is_ready(base: &str) -> bool {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        match reqwest::Client::new()
            .get(format!("{base}/readyz"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
        {
            Ok(response) => response.status().as_u16() == 200,
            Err(_) => false,
        }
    })
}

fn wait_ready(base: &str) -> Duration {
    let started = Instant::now();
    while !is_ready(base) {
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "/readyz did not turn 200"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    started.elapsed()
}

fn stop_cleanly(mut child: Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let exit = child.wait().expect("biglearn exits");
    assert_eq!(exit.code(), Some(0), "SIGTERM ends biglearn cleanly");
}

/// The `state` part of `biglearn state-hash --parts`: the projection this test replays.
/// (Results are computed once a process has caught up, so a SIGTERM right after readiness
/// may land mid-computation; they are compared elsewhere.)
fn state_hash(data_dir: &Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_biglearn"))
        .args(["state-hash", "--parts", "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("state-hash runs");
    assert!(
        output.status.success(),
        "state-hash failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("utf-8");
    text.lines()
        .find(|line| line.starts_with("state "))
        .unwrap_or_else(|| panic!("no state part in {text}"))
        .to_owned()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A small xorshift: the kill points are random but reproducible from the seed.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn crash_loop_equals_clean_replay(backend: Backend, clean_dir: PathBuf, crash_dir: PathBuf) {
    // The clean replay: once, uninterrupted.
    let (child, base) = biglearn_up(&clean_dir, &backend);
    let replay_time = wait_ready(&base);
    stop_cleanly(child);
    let clean = state_hash(&clean_dir);
    eprintln!("clean replay ready after {replay_time:?}: {clean}");

    // The crash loop: SIGKILL at random points while the replay is still running.
    let mut random = 0x9E37_79B9_7F4A_7C15u64;
    // Kill points spread over the first part of each run: 20 runs then cover about a third
    // of the replay, so every kill lands mid-replay with room to spare.
    let window_ms = (replay_time.as_millis() as u64 / 30).max(150);
    let mut kills_mid_replay = 0;
    for attempt in 0.. {
        assert!(
            attempt < 3 * KILLS,
            "the replay finished before {KILLS} kills landed in it"
        );
        if kills_mid_replay == KILLS {
            break;
        }
        let (mut child, base) = biglearn_up(&crash_dir, &backend);
        let delay = 50 + next_random(&mut random) % window_ms;
        std::thread::sleep(Duration::from_millis(delay));
        let ready = is_ready(&base);
        child.kill().expect("SIGKILL is delivered");
        child.wait().expect("the killed process is reaped");
        if !ready {
            kills_mid_replay += 1;
        }
    }
    let (child, base) = biglearn_up(&crash_dir, &backend);
    wait_ready(&base);
    stop_cleanly(child);
    let crashed = state_hash(&crash_dir);
    assert_eq!(
        crashed, clean,
        "{KILLS} crashes must leave the state of a clean replay"
    );
    assert!(
        clean.starts_with("state "),
        "the hash covers the state projection: {clean}"
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn embedded_crash_loop_leaves_the_state_of_a_clean_replay() {
    let root = tempfile::tempdir().unwrap();
    let source = root.path().join("source");
    let report = runtime().block_on(async {
        let log_dir = source.join("log");
        let store: SharedStreamStore = Arc::new(EmbeddedStore::open(&log_dir).unwrap());
        generate_into_store(
            workload(),
            store,
            "biglearn",
            biglearn::run::partitions_scale(&biglearn::run::Backend::Embedded),
        )
        .await
        .unwrap()
    });
    assert!(
        report.course_events + report.ecosystem_events >= 200_000,
        "the history is large enough: {report:?}"
    );
    let clean = root.path().join("clean");
    let crash = root.path().join("crash");
    copy_dir(&source, &clean);
    copy_dir(&source, &crash);
    crash_loop_equals_clean_replay(Backend::Embedded, clean, crash);
}

#[test]
fn kafka_crash_loop_leaves_the_state_of_a_clean_replay() {
    let broker = TestBroker::start();
    let prefix = unique_topic_prefix("crash");
    let report = runtime().block_on(async {
        let store: SharedStreamStore = Arc::new(
            KafkaStore::connect(KafkaConfig::new(broker.bootstrap(), "crash-test").single_broker())
                .await
                .unwrap(),
        );
        generate_into_store(workload(), store, &prefix, 1)
            .await
            .unwrap()
    });
    assert!(
        report.course_events + report.ecosystem_events >= 200_000,
        "{report:?}"
    );
    let root = tempfile::tempdir().unwrap();
    crash_loop_equals_clean_replay(
        Backend::Kafka {
            bootstrap: broker.bootstrap().to_owned(),
            prefix,
        },
        root.path().join("clean"),
        root.path().join("crash"),
    );
}
