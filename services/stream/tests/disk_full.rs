//! The embedded log on a full disk: a failed write or segment roll is a definite failure,
//! the partition is cut back to its durable end, appends resume by themselves once space
//! returns, and a reopen finds exactly the acknowledged records. Once with ENOSPC
//! injected at the log's I/O points (always), once on a really full tmpfs (when this
//! process may mount one).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use biglearn_stream::embedded::{EmbeddedOptions, EmbeddedStore};
use biglearn_stream::volume::{DiskFaults, VolumeSpace};
use biglearn_stream::{DeliveryError, OutgoingRecord, StreamStore, TopicSpec};

const TOPIC: &str = "full.course-events";

fn spec() -> TopicSpec {
    TopicSpec {
        name: TOPIC.to_owned(),
        partitions: 1,
        compacted: false,
        retention_ms: None,
        max_message_bytes: 8 * 1024 * 1024,
    }
}

fn record(value: &str, padding: usize) -> OutgoingRecord {
    OutgoingRecord {
        key: b"course".to_vec(),
        value: format!("{value}{}", "x".repeat(padding)).into_bytes(),
        headers: Vec::new(),
    }
}

/// Appends one record: `Ok(offset)` or the delivery error.
async fn append(store: &EmbeddedStore, value: &str, padding: usize) -> Result<i64, DeliveryError> {
    let mut outcomes = store
        .append(TOPIC, vec![record(value, padding)])
        .await
        .expect("the topic exists");
    outcomes.remove(0).map(|delivered| delivered.offset)
}

/// The values of every durable record, in order, after opening `dir` afresh.
async fn reopen_values(dir: &Path) -> Vec<String> {
    let store = EmbeddedStore::open_with(dir, options()).expect("the log reopens, uncorrupted");
    let high = store.high_watermarks(TOPIC).await.unwrap()[0];
    let mut reader = store.open_reader(TOPIC, &[(0, 0)]).await.unwrap();
    let mut values = Vec::new();
    for _ in 0..1000 {
        if values.len() as i64 >= high {
            break;
        }
        for record in reader
            .poll(1000, std::time::Duration::from_millis(100))
            .await
            .unwrap()
        {
            let value = String::from_utf8(record.value.unwrap()).unwrap();
            values.push(value.trim_end_matches('x').to_owned());
        }
    }
    values
}

fn options() -> EmbeddedOptions {
    // Small segments, so that rolls happen (and fail) too.
    EmbeddedOptions {
        segment_bytes: 4096,
    }
}

#[tokio::test]
async fn injected_no_space_fails_definitely_and_appends_resume_where_they_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let faults = DiskFaults::inject(dir.path());
    let mut acknowledged = Vec::new();
    {
        let store = EmbeddedStore::open_with(dir.path(), options()).unwrap();
        store.ensure_topics(&[spec()]).await.unwrap();
        for idx in 0..30 {
            let value = format!("before {idx}");
            assert_eq!(append(&store, &value, 100).await, Ok(idx));
            acknowledged.push(value);
        }
        faults.set_fail_writes(true);
        // Writes (half-written, then ENOSPC) and segment rolls fail alike.
        for idx in 0..40 {
            match append(&store, &format!("refused {idx}"), 100).await {
                Err(DeliveryError::Definite(detail)) => {
                    assert!(detail.contains("No space left on device"), "{detail}")
                }
                other => panic!("a failed write must be a definite failure: {other:?}"),
            }
        }
        assert_eq!(store.high_watermarks(TOPIC).await.unwrap(), vec![30]);
        faults.set_fail_writes(false);
        // The next record takes the next offset: no hole, no stray bytes before it.
        for idx in 0..30 {
            let value = format!("after {idx}");
            assert_eq!(append(&store, &value, 100).await, Ok(30 + idx));
            acknowledged.push(value);
        }
    }
    assert_eq!(reopen_values(dir.path()).await, acknowledged);
}

/// A small tmpfs mounted for one test, unmounted at the end.
struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount_tmpfs(path: &Path) -> Result<Tmpfs, String> {
    std::fs::create_dir_all(path).map_err(|error| error.to_string())?;
    let output = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(path)
        .output()
        .map_err(|error| error.to_string())?;
    if output.status.success() {
        Ok(Tmpfs(path.to_owned()))
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

#[tokio::test]
async fn a_really_full_tmpfs_fails_appends_definitely_and_they_resume_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path().join("volume");
    let mount = match mount_tmpfs(&volume) {
        Ok(mount) => mount,
        Err(error) => {
            // Not silent: the same failure, injected at the same I/O points.
            eprintln!("cannot mount a tmpfs here ({error}); running on injected ENOSPC");
            let faults = DiskFaults::inject(dir.path());
            let store = EmbeddedStore::open_with(dir.path(), options()).unwrap();
            store.ensure_topics(&[spec()]).await.unwrap();
            faults.set_fail_writes(true);
            assert!(matches!(
                append(&store, "refused", 100).await,
                Err(DeliveryError::Definite(_))
            ));
            faults.set_fail_writes(false);
            assert_eq!(append(&store, "accepted", 100).await, Ok(0));
            return;
        }
    };
    let log_dir = volume.join("log");
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    {
        let store = EmbeddedStore::open_with(&log_dir, options()).unwrap();
        store.ensure_topics(&[spec()]).await.unwrap();
        // Bounded: 2 MiB of 1 KiB records fill it well before 4000.
        for idx in 0..4000 {
            let value = format!("record {idx}");
            match append(&store, &value, 1000).await {
                Ok(offset) => {
                    assert_eq!(offset, acknowledged.len() as i64);
                    acknowledged.push(value);
                }
                Err(DeliveryError::Definite(detail)) => {
                    assert!(detail.contains("No space left on device"), "{detail}");
                    refused += 1;
                    if refused == 3 {
                        break;
                    }
                }
                Err(other) => panic!("a full disk must be a definite failure: {other:?}"),
            }
        }
        assert_eq!(refused, 3, "the 2 MiB volume filled up");
        let space = VolumeSpace::new(&volume, Some(0)).probe().unwrap();
        assert!(space.available_bytes < 1100, "{space:?}");

        // Space returns (the volume grows): the next append goes through at the next
        // offset, with nothing reopened.
        let freed = acknowledged.len();
        let status = Command::new("mount")
            .args(["-o", "remount,size=4m"])
            .arg(&volume)
            .status()
            .unwrap();
        assert!(status.success());
        for idx in 0..5 {
            let value = format!("after {idx}");
            assert_eq!(append(&store, &value, 1000).await, Ok((freed + idx) as i64));
            acknowledged.push(value);
        }
    }
    assert_eq!(reopen_values(&log_dir).await, acknowledged);
    // The log's files are private whatever the umask.
    for entry in walk(&log_dir) {
        let mode = std::fs::metadata(&entry).unwrap().permissions().mode() & 0o777;
        let expected = if entry.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode, expected, "{}", entry.display());
    }
    drop(mount);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_owned()];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
