//! The embedded backend: checksummed, fsynced segment files on local disk, with group commit.
//!
//! Layout under the store directory:
//! `LOCK` (held while a process has the store open), and per topic `<topic>/topic.meta`
//! (partition count and limits) and `<topic>/partition-NNNN/<base offset>.log` segments.
//! A single writer thread takes queued appends, writes them, fsyncs each touched segment
//! once, then advances the readers' high watermark and acknowledges: concurrent appends
//! share one fsync, and readers never see a record a crash could still lose.

mod frame;
mod partition;
mod reader;
mod writer;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use tokio::sync::{oneshot, watch};

use crate::group::{GroupMembership, SoleMembership};
use crate::record::{Delivered, DeliveryError, OutgoingRecord};
use crate::topics::TopicSpec;
use crate::{StreamError, StreamReader, StreamStore};
use partition::Partition;
use reader::EmbeddedReader;
use writer::{run_writer, AppendRequest, WriterStats};

/// Segment size at which the log rolls to a new file.
pub const DEFAULT_SEGMENT_BYTES: u64 = 128 * 1024 * 1024;
/// Largest accepted segment size: index positions are 32-bit.
pub const MAX_SEGMENT_BYTES: u64 = 1 << 30;
const META_FILE: &str = "topic.meta";
const LOCK_FILE: &str = "LOCK";

/// Settings of an embedded store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// Roll to a new segment file once a segment reaches this many bytes
    /// (clamped to 4 KiB ..= [`MAX_SEGMENT_BYTES`]).
    pub segment_bytes: u64,
}

/// Persisted layout of a topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TopicMeta {
    pub partitions: i32,
    pub max_message_bytes: i64,
}

/// An open topic: its partitions and the signal readers wait on.
pub(crate) struct Topic {
    pub name: String,
    pub meta: TopicMeta,
    pub partitions: Vec<Arc<Partition>>,
    /// Bumped after every commit that made records of this topic durable.
    pub changes: watch::Sender<u64>,
}

/// The embedded stream store. Cheap to share behind an `Arc`; dropping the last handle
/// lets the writer finish what is queued and closes the files.
pub struct EmbeddedStore {
    dir: PathBuf,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    /// Serialises topic creation.
    creating: Mutex<()>,
    queue: Option<mpsc::Sender<AppendRequest>>,
    writer_thread: Option<JoinHandle<()>>,
    stats: Arc<WriterStats>,
    /// Held (with an exclusive advisory lock) while the store is open.
    _lock: File,
}

impl EmbeddedStore {
    /// Opens (creating if needed) the log under `dir` with default options, recovering
    /// every partition: checksums are verified and a torn tail is truncated.
    pub fn open(dir: &Path) -> Result<EmbeddedStore, StreamError> {
        EmbeddedStore::open_with(
            dir,
            EmbeddedOptions {
                segment_bytes: DEFAULT_SEGMENT_BYTES,
            },
        )
    }

    /// Opens the log under `dir` with explicit options.
    pub fn open_with(dir: &Path, options: EmbeddedOptions) -> Result<EmbeddedStore, StreamError> {
        fs::create_dir_all(dir).map_err(|source| io_error(dir, source))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| io_error(&lock_path, source))?;
        fs4::FileExt::try_lock(&lock).map_err(|error| match error {
            fs4::TryLockError::WouldBlock => io_error(
                &lock_path,
                std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    "another process has this log open",
                ),
            ),
            fs4::TryLockError::Error(source) => io_error(&lock_path, source),
        })?;
        let mut topics = HashMap::new();
        for entry in fs::read_dir(dir).map_err(|source| io_error(dir, source))? {
            let entry = entry.map_err(|source| io_error(dir, source))?;
            let topic_dir = entry.path();
            let meta_path = topic_dir.join(META_FILE);
            if !meta_path.is_file() {
                continue;
            }
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let meta = read_meta(&meta_path)?;
            let topic = open_topic(&name, &topic_dir, meta)?;
            topics.insert(name, Arc::new(topic));
        }
        let segment_bytes = options.segment_bytes.clamp(4096, MAX_SEGMENT_BYTES);
        let stats = Arc::new(WriterStats::default());
        let (queue, receiver) = mpsc::channel();
        let writer_stats = Arc::clone(&stats);
        let writer_thread = std::thread::Builder::new()
            .name("biglearn-log-writer".to_owned())
            .spawn(move || run_writer(receiver, segment_bytes, writer_stats))
            .map_err(|source| io_error(dir, source))?;
        tracing::info!(dir = %dir.display(), n_topics = topics.len(), "Opened the embedded log.");
        Ok(EmbeddedStore {
            dir: dir.to_owned(),
            topics: RwLock::new(topics),
            creating: Mutex::new(()),
            queue: Some(queue),
            writer_thread: Some(writer_thread),
            stats,
            _lock: lock,
        })
    }

    /// The directory the log lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Segment-file fsyncs so far (group commit makes this far smaller than the
    /// number of appends under concurrency).
    pub fn fsync_count(&self) -> u64 {
        self.stats.fsyncs.load(Ordering::Relaxed)
    }

    /// Group commits so far (each one drained every append queued at its start).
    pub fn commit_count(&self) -> u64 {
        self.stats.commits.load(Ordering::Relaxed)
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>, StreamError> {
        self.topics
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| StreamError::UnknownTopic {
                topic: name.to_owned(),
            })
    }

    fn create_topic(&self, spec: &TopicSpec) -> Result<(), StreamError> {
        validate_topic_name(&self.dir, &spec.name)?;
        let meta = TopicMeta {
            partitions: spec.partitions.max(1),
            max_message_bytes: spec.max_message_bytes,
        };
        let topic_dir = self.dir.join(&spec.name);
        fs::create_dir_all(&topic_dir).map_err(|source| io_error(&topic_dir, source))?;
        // Partitions first, metadata last: a topic with metadata is complete.
        let topic = open_topic(&spec.name, &topic_dir, meta.clone())?;
        sync_dir(&topic_dir)?;
        write_meta(&topic_dir, &meta)?;
        sync_dir(&self.dir)?;
        tracing::info!(topic = %spec.name, partitions = meta.partitions, "Created a topic in the embedded log.");
        self.topics
            .write()
            .insert(spec.name.clone(), Arc::new(topic));
        Ok(())
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // Closing the queue ends the writer once it has committed what was queued.
        drop(self.queue.take());
        if let Some(writer_thread) = self.writer_thread.take() {
            if writer_thread.join().is_err() {
                tracing::error!("The embedded log writer thread panicked.");
            }
        }
    }
}

#[async_trait]
impl StreamStore for EmbeddedStore {
    fn backend_name(&self) -> &'static str {
        "embedded"
    }

    async fn ensure_topics(&self, specs: &[TopicSpec]) -> Result<(), StreamError> {
        let _creating = self.creating.lock();
        for spec in specs {
            let existing = self
                .topics
                .read()
                .get(&spec.name)
                .map(|topic| topic.meta.clone());
            match existing {
                Some(meta) => {
                    if meta.partitions != spec.partitions.max(1) {
                        tracing::warn!(topic = %spec.name, existing = meta.partitions, requested = spec.partitions, "A topic keeps the partition count it was created with.");
                    }
                }
                None => self.create_topic(spec)?,
            }
        }
        Ok(())
    }

    async fn partition_count(&self, topic: &str) -> Result<i32, StreamError> {
        Ok(self.topic(topic)?.meta.partitions)
    }

    async fn append(
        &self,
        topic: &str,
        records: Vec<OutgoingRecord>,
    ) -> Result<Vec<Result<Delivered, DeliveryError>>, StreamError> {
        let topic = self.topic(topic)?;
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let n_records = records.len();
        let (reply, outcome) = oneshot::channel();
        let request = AppendRequest {
            topic,
            records,
            timestamp_ms: now_ms(),
            reply,
        };
        let queued = self
            .queue
            .as_ref()
            .map(|queue| queue.send(request).is_ok())
            .unwrap_or(false);
        if !queued {
            return Ok(vec![
                Err(DeliveryError::Definite(
                    "the embedded log writer has stopped".to_owned()
                ));
                n_records
            ]);
        }
        match outcome.await {
            Ok(outcomes) => Ok(outcomes),
            Err(_) => Ok(vec![
                Err(DeliveryError::Uncertain(
                    "the embedded log writer stopped during the append".to_owned()
                ));
                n_records
            ]),
        }
    }

    async fn high_watermarks(&self, topic: &str) -> Result<Vec<i64>, StreamError> {
        Ok(self
            .topic(topic)?
            .partitions
            .iter()
            .map(|partition| partition.high_watermark())
            .collect())
    }

    async fn open_reader(
        &self,
        topic: &str,
        start: &[(i32, i64)],
    ) -> Result<Box<dyn StreamReader>, StreamError> {
        Ok(Box::new(EmbeddedReader::new(self.topic(topic)?, start)?))
    }

    /// A single process owns the embedded log, so the membership owns every partition
    /// of `topics` at generation 1, forever; `group_id` names nothing here.
    async fn join_group(
        &self,
        _group_id: &str,
        topics: &[String],
    ) -> Result<Box<dyn GroupMembership>, StreamError> {
        let counts = topics
            .iter()
            .map(|name| Ok((name.clone(), self.topic(name)?.meta.partitions)))
            .collect::<Result<Vec<_>, StreamError>>()?;
        Ok(Box::new(SoleMembership::owning_all(&counts)))
    }
}

pub(crate) fn open_topic(
    name: &str,
    topic_dir: &Path,
    meta: TopicMeta,
) -> Result<Topic, StreamError> {
    let partitions = (0..meta.partitions)
        .map(|partition| {
            let dir = topic_dir.join(format!("partition-{partition:04}"));
            Partition::open(name, partition, dir).map(Arc::new)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (changes, _) = watch::channel(0);
    Ok(Topic {
        name: name.to_owned(),
        meta,
        partitions,
        changes,
    })
}

/// Kafka's rule for topic names, which also keeps them safe as directory names.
fn validate_topic_name(dir: &Path, name: &str) -> Result<(), StreamError> {
    let legal = !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'));
    if legal {
        Ok(())
    } else {
        Err(io_error(
            dir,
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("illegal topic name {name:?}: use 1-249 of [A-Za-z0-9._-]"),
            ),
        ))
    }
}

fn write_meta(topic_dir: &Path, meta: &TopicMeta) -> Result<(), StreamError> {
    let path = topic_dir.join(META_FILE);
    let temporary = topic_dir.join(format!("{META_FILE}.tmp"));
    let text = format!(
        "partitions={}\nmax_message_bytes={}\n",
        meta.partitions, meta.max_message_bytes
    );
    let mut file = File::create(&temporary).map_err(|source| io_error(&temporary, source))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|source| io_error(&temporary, source))?;
    fs::rename(&temporary, &path).map_err(|source| io_error(&path, source))?;
    sync_dir(topic_dir)
}

fn read_meta(path: &Path) -> Result<TopicMeta, StreamError> {
    let text = fs::read_to_string(path).map_err(|source| io_error(path, source))?;
    parse_meta(&text).ok_or_else(|| StreamError::Corrupt {
        path: path.display().to_string(),
        position: 0,
        detail: format!("unreadable topic metadata {text:?}"),
    })
}

fn parse_meta(text: &str) -> Option<TopicMeta> {
    let mut partitions = None;
    let mut max_message_bytes = None;
    for line in text.lines() {
        match line.split_once('=')? {
            ("partitions", value) => partitions = value.parse::<i32>().ok().filter(|n| *n > 0),
            ("max_message_bytes", value) => max_message_bytes = value.parse::<i64>().ok(),
            _ => {}
        }
    }
    Some(TopicMeta {
        partitions: partitions?,
        max_message_bytes: max_message_bytes?,
    })
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}

pub(crate) fn io_error(path: &Path, source: std::io::Error) -> StreamError {
    StreamError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Makes a directory's entries (created or renamed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StreamError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|source| io_error(dir, source))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Option<(i32, i64)>) {
        let parsed = parse_meta(text).map(|meta| (meta.partitions, meta.max_message_bytes));
        assert_eq!(parsed, expected, "{text:?}");
    }

    #[test]
    fn topic_metadata_parses_or_is_rejected() {
        check(
            "partitions=48\nmax_message_bytes=8388608\n",
            Some((48, 8_388_608)),
        );
        check("max_message_bytes=1\npartitions=1", Some((1, 1)));
        check("partitions=0\nmax_message_bytes=1\n", None);
        check("partitions=3\n", None);
        check("garbage", None);
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        let dir = Path::new("/nonexistent");
        for name in ["prod.course-events", "a_b", "x"] {
            assert!(validate_topic_name(dir, name).is_ok(), "{name}");
        }
        for name in ["", ".", "..", "a/b", "a b", &"x".repeat(250)] {
            assert!(validate_topic_name(dir, name).is_err(), "{name}");
        }
    }
}
