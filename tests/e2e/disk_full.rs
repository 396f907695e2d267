//! A full data volume (issue 18, item 2): writes answer 503 with `Retry-After` at once while
//! reads, `/ping` and `/metrics` go on; writes resume by themselves when space returns;
//! nothing acknowledged is lost; a start on a full volume is refused without touching the
//! state. Once on a really full tmpfs (when this process may mount one), and always with
//! faults injected at the embedded log's I/O points and in the volume's statvfs.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use biglearn::run::{Backend, Role, RunConfig};
use biglearn_stream::volume::DiskFaults;
use biglearn_suite::{
    create_course, create_ecosystem, new_uuid, record_responses, response_item, sequence_numbers,
    Node, TestBackend, ADMIN_TOKEN, ALL_COURSE_EVENT_TYPES, API_TOKEN,
};
use serde_json::Value;

/// The node's course and the sequence numbers it acknowledged.
struct Course {
    id: String,
    acknowledged: Vec<i64>,
}

async fn create(node: &Node) -> Course {
    let ecosystem = new_uuid();
    let course = new_uuid();
    let (status, body) = node
        .post("/create_ecosystem", &create_ecosystem(&ecosystem))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = node
        .post("/create_course", &create_course(&course, &ecosystem))
        .await;
    assert_eq!(status, 200, "{body}");
    Course {
        id: course,
        acknowledged: vec![0],
    }
}

/// A `record_responses` body for `seqs` of `course`.
fn batch(course: &str, seqs: std::ops::RangeInclusive<i64>) -> Value {
    record_responses(
        seqs.map(|seq| response_item(course, seq, &new_uuid()))
            .collect(),
    )
}

/// Sends `body` and expects 200; records its sequence numbers as acknowledged.
async fn write_ok(node: &Node, acknowledged: &mut Vec<i64>, body: &Value) {
    let (status, answer) = node.post("/record_responses", body).await;
    assert_eq!(status, 200, "{answer}");
    for item in body["responses"].as_array().expect("responses") {
        acknowledged.push(item["sequence_number"].as_i64().expect("a number"));
    }
}

/// Sends `body` and expects a 503 with `Retry-After` and the project's error body whose
/// message contains `because`; returns the message.
async fn write_refused(node: &Node, body: &Value, because: &str) -> String {
    let reply = node
        .raw(
            reqwest::Method::POST,
            "/record_responses",
            &[
                ("Biglearn-Api-Token", API_TOKEN),
                ("Content-Type", "application/json"),
            ],
            body.to_string().into_bytes(),
        )
        .await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(
        reply.header("retry-after"),
        Some("5"),
        "{:?}",
        reply.headers
    );
    let errors = reply.body["errors"].as_array().expect("an errors array");
    assert_eq!(errors.len(), 1, "{}", reply.body);
    assert_eq!(errors[0]["path"], "");
    let message = errors[0]["message"].as_str().expect("a message").to_owned();
    assert!(
        message.contains(because),
        "the 503 says why ({because}): {message}"
    );
    // Not the writer's indexing deadline: the refusal came at once.
    assert!(!message.contains("not yet indexed"), "{message}");
    message
}

/// Reads, `/ping` and `/metrics` answer while writes are refused.
async fn reads_go_on(node: &Node, course: &Course) {
    assert_eq!(counted_back(node, course).await, course.acknowledged);
    for path in ["/ping", "/metrics"] {
        let status = node
            .client()
            .get(format!("{}{path}", node.base()))
            .send()
            .await
            .expect("the node answers")
            .status();
        assert_eq!(status.as_u16(), 200, "{path}");
    }
}

/// The course's sequence numbers, read back through `fetch_course_events`.
async fn counted_back(node: &Node, course: &Course) -> Vec<i64> {
    let answer = node
        .course_events(&course.id, 0, &ALL_COURSE_EVENT_TYPES, 1000)
        .await;
    assert_eq!(answer["is_gap"], false, "{answer}");
    sequence_numbers(&answer)
}

/// Every file under `dir` with its bytes: equal digests, untouched state.
fn digest(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).expect("a readable directory") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.insert(path.clone(), std::fs::read(&path).expect("a readable file"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, &mut out);
    out
}

/// Starts a node on `data_dir` directly, expecting the start to fail; returns its error.
async fn start_fails(data_dir: &Path) -> String {
    let config = RunConfig {
        data_dir: data_dir.to_owned(),
        listen: "127.0.0.1:0".parse().expect("an address"),
        backend: Backend::Embedded,
        topic_prefix: "test".into(),
        roles: vec![Role::Writer, Role::Reader, Role::Scheduler],
        api_token: API_TOKEN.into(),
        admin_token: ADMIN_TOKEN.into(),
        observer_token: None,
        writer_id: "test-writer".into(),
        flags: Default::default(),
        http: Default::default(),
        kafka: Default::default(),
    };
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        biglearn::run::run(config, std::future::pending()),
    )
    .await
    .expect("a refused start ends by itself");
    format!("{:#}", outcome.expect_err("the start is refused"))
}

fn check_refused_start(error: &str) {
    assert!(error.contains("not starting"), "{error}");
    assert!(error.contains("bytes free"), "{error}");
    assert!(
        !error.contains("another biglearn process"),
        "no lock is held, so no 'another process' hint: {error}"
    );
}

#[tokio::test]
async fn injected_disk_faults_answer_503_at_once_keep_reads_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let faults = DiskFaults::inject(dir.path());
    let node = Node::start(dir.path(), TestBackend::Embedded).await;
    let mut course = create(&node).await;
    write_ok(&node, &mut course.acknowledged, &batch(&course.id, 1..=5)).await;

    // The log's writes fail with ENOSPC after a partial write: 503, and the partition is
    // cut back to its durable end.
    faults.set_fail_writes(true);
    let refused = batch(&course.id, 6..=10);
    write_refused(&node, &refused, "No space left on device").await;
    write_refused(&node, &refused, "No space left on device").await;
    reads_go_on(&node, &course).await;
    // A failure that leaves nothing in doubt needs no resynchronisation: still ready.
    let ready = node
        .client()
        .get(format!("{}/readyz", node.base()))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(ready.as_u16(), 200);

    // Space returns: the same body is accepted, with nothing else to do.
    faults.set_fail_writes(false);
    write_ok(&node, &mut course.acknowledged, &refused).await;
    write_ok(&node, &mut course.acknowledged, &batch(&course.id, 11..=12)).await;
    assert_eq!(counted_back(&node, &course).await, course.acknowledged);

    // The volume below its reserve: refused before anything is appended.
    faults.set_volume_full(true);
    let refused = batch(&course.id, 13..=14);
    write_refused(&node, &refused, "below the reserve").await;
    reads_go_on(&node, &course).await;
    faults.set_volume_full(false);
    write_ok(&node, &mut course.acknowledged, &refused).await;
    node.stop().await.expect("a clean stop");

    // A start on a full volume is refused and changes nothing.
    let before = digest(dir.path());
    faults.set_volume_full(true);
    check_refused_start(&start_fails(dir.path()).await);
    assert!(
        before == digest(dir.path()),
        "a refused start changed the state"
    );
    faults.set_volume_full(false);

    // Everything acknowledged is still there after a restart; the log is sound.
    let node = Node::start(dir.path(), TestBackend::Embedded).await;
    assert_eq!(counted_back(&node, &course).await, course.acknowledged);
    write_ok(&node, &mut course.acknowledged, &batch(&course.id, 15..=15)).await;
    assert_eq!(counted_back(&node, &course).await, course.acknowledged);
    node.stop().await.expect("a clean stop");
}

/// A small tmpfs mounted for one test, unmounted at the end.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|error| error.to_string())?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|error| error.to_string())?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).into_owned());
        }
        Ok(Tmpfs {
            path: path.to_owned(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Fills the volume of `dir` until it answers ENOSPC; returns the ballast file.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("ballast");
    let mut file = std::fs::File::create(&path).expect("a ballast file");
    for chunk in [1 << 20, 4096, 1] {
        let bytes = vec![0xa5u8; chunk];
        // Bounded: the volume is 64 MiB.
        for _ in 0..(128 << 20) / chunk {
            match file.write_all(&bytes) {
                Ok(()) => {}
                Err(error) if error.raw_os_error() == Some(28) => break,
                Err(error) => panic!("filling the volume: {error}"),
            }
        }
    }
    let _ = file.sync_all();
    let free = biglearn_stream::volume::VolumeSpace::new(dir, Some(0))
        .probe()
        .expect("statvfs");
    assert_eq!(free.available_bytes, 0, "the volume is really full");
    path
}

/// Waits (bounded) until the node has nothing left to derive, so that a full volume
/// finds no pending sled write.
async fn wait_idle(node: &Node) {
    for _ in 0..300 {
        let metrics = node.metrics_text().await;
        let busy = metrics.lines().any(|line| {
            (line.starts_with("biglearn_dirty_targets")
                || line.starts_with("biglearn_consumer_lag_records"))
                && !line.ends_with(" 0")
        });
        if !busy {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // sled flushes every 500 ms.
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

#[tokio::test]
async fn a_really_full_tmpfs_refuses_writes_keeps_reads_and_resumes_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let mount = match Tmpfs::mount(&dir.path().join("volume"), "64m") {
        Ok(mount) => mount,
        Err(error) => {
            // Not silent: say so, and run the same scenario on injected faults instead.
            eprintln!(
                "cannot mount a tmpfs here ({error}); the full-disk scenario runs on injected faults only"
            );
            let faults = DiskFaults::inject(dir.path());
            let node = Node::start(dir.path(), TestBackend::Embedded).await;
            let mut course = create(&node).await;
            write_ok(&node, &mut course.acknowledged, &batch(&course.id, 1..=3)).await;
            faults.set_volume_full(true);
            write_refused(&node, &batch(&course.id, 4..=6), "below the reserve").await;
            reads_go_on(&node, &course).await;
            node.stop().await.unwrap();
            return;
        }
    };
    let data_dir = mount.path.join("data");
    let node = Node::start(&data_dir, TestBackend::Embedded).await;
    let mut course = create(&node).await;
    write_ok(&node, &mut course.acknowledged, &batch(&course.id, 1..=20)).await;
    write_ok(&node, &mut course.acknowledged, &batch(&course.id, 21..=40)).await;
    wait_idle(&node).await;

    // Really full: the filesystem itself answers ENOSPC.
    let ballast = fill(&mount.path);
    let refused = batch(&course.id, 41..=60);
    write_refused(&node, &refused, "bytes free").await;
    write_refused(&node, &refused, "bytes free").await;
    reads_go_on(&node, &course).await;

    // Space returns: writes resume by themselves.
    std::fs::remove_file(&ballast).unwrap();
    write_ok(&node, &mut course.acknowledged, &refused).await;
    write_ok(&node, &mut course.acknowledged, &batch(&course.id, 61..=70)).await;
    assert_eq!(counted_back(&node, &course).await, course.acknowledged);
    node.stop().await.expect("a clean stop");

    // A start on the full volume fails cleanly and leaves the state byte for byte.
    let ballast = fill(&mount.path);
    let before = digest(&data_dir);
    check_refused_start(&start_fails(&data_dir).await);
    check_refused_start(&start_fails(&data_dir).await);
    assert!(
        before == digest(&data_dir),
        "a refused start changed the state"
    );
    std::fs::remove_file(&ballast).unwrap();

    let node = Node::start(&data_dir, TestBackend::Embedded).await;
    assert_eq!(counted_back(&node, &course).await, course.acknowledged);
    node.stop().await.expect("a clean stop");
    drop(mount);
}
