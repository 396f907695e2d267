//! One topic-partition on disk: its segment files, sparse offset index, recovery at open, and the durable high watermark.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use super::frame::{parse_frame, Frame};
use super::{create_private_dir, io_error, sync_dir};
use crate::volume::DiskFaults;
use crate::StreamError;

/// One index entry every this many bytes of a segment: small enough that a reader
/// opening at an arbitrary offset parses little, large enough that the index stays tiny
/// (8 bytes per 8 KiB of log).
pub(crate) const INDEX_INTERVAL_BYTES: u64 = 8 * 1024;
const SEGMENT_SUFFIX: &str = ".log";
const SCAN_CHUNK_BYTES: usize = 1 << 20;

/// A sparse index entry: a record's offset relative to the segment base, and its byte position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub relative_offset: u32,
    pub position: u32,
}

/// One segment file, named by the offset of its first record.
pub(crate) struct Segment {
    pub base_offset: i64,
    pub path: PathBuf,
    /// Opened read-write; readers use positional reads, the writer positional writes.
    pub file: File,
    pub index: RwLock<Vec<IndexEntry>>,
}

impl Segment {
    /// The indexed record at or before `offset`: where a reader starts parsing.
    pub(crate) fn seek(&self, offset: i64) -> (i64, u64) {
        let index = self.index.read();
        let relative = (offset - self.base_offset).clamp(0, i64::from(u32::MAX)) as u32;
        let entry_idx = index.partition_point(|entry| entry.relative_offset <= relative);
        match entry_idx.checked_sub(1).map(|idx| index[idx]) {
            Some(entry) => (
                self.base_offset + i64::from(entry.relative_offset),
                u64::from(entry.position),
            ),
            None => (self.base_offset, 0),
        }
    }
}

/// The writer thread's state of a partition. Only the writer thread locks it.
pub(crate) struct PartitionWriter {
    /// The offset the next appended record gets.
    pub next_offset: i64,
    /// The segment being appended to (the last one).
    pub active: Arc<Segment>,
    /// Bytes in the active segment, written or pending.
    pub segment_len: u64,
    /// Encoded frames not yet written; they start at `segment_len - pending.len()`.
    pub pending: Vec<u8>,
    /// Position of the last index entry of the active segment.
    pub last_indexed_position: Option<u64>,
    /// Set after an I/O error: the file may hold a partial write, so nothing more is
    /// appended until the store is reopened and recovery truncates it.
    pub poisoned: Option<String>,
    /// Bytes written since the last fsync of the active segment.
    pub unsynced: bool,
    /// Whether the current group commit touched this partition.
    pub in_commit: bool,
    /// Length of the active segment covered by its last fsync (or found at open): after
    /// a failed write or fsync the file is cut back to it and appends go on from there.
    pub synced_len: u64,
    /// The offset following the last record covered by an fsync.
    pub synced_next_offset: i64,
    /// Injected disk faults (tests).
    pub faults: Option<Arc<DiskFaults>>,
}

impl PartitionWriter {
    /// Whether an injected fault makes writes fail now.
    pub(crate) fn injected_no_space(&self) -> bool {
        self.faults
            .as_ref()
            .is_some_and(|faults| faults.writes_fail())
    }
}

/// A topic-partition: segments for readers, writer state for the writer thread.
pub(crate) struct Partition {
    pub topic: String,
    pub partition: i32,
    pub dir: PathBuf,
    /// The next offset after the last record covered by an fsync: readers see only below it.
    durable_next: AtomicI64,
    segments: RwLock<Vec<Arc<Segment>>>,
    pub writer: Mutex<PartitionWriter>,
}

impl Partition {
    /// The next offset after the last durable record.
    pub(crate) fn high_watermark(&self) -> i64 {
        self.durable_next.load(Ordering::Acquire)
    }

    pub(crate) fn publish_high_watermark(&self, next_offset: i64) {
        self.durable_next.store(next_offset, Ordering::Release);
    }

    /// The segment holding `offset` (the last one whose base is at or below it).
    pub(crate) fn segment_for(&self, offset: i64) -> Arc<Segment> {
        let segments = self.segments.read();
        let segment_idx = segments
            .partition_point(|segment| segment.base_offset <= offset)
            .saturating_sub(1);
        Arc::clone(&segments[segment_idx])
    }

    /// The segment that starts exactly at `offset`, if any.
    pub(crate) fn segment_starting_at(&self, offset: i64) -> Option<Arc<Segment>> {
        let segments = self.segments.read();
        segments
            .binary_search_by_key(&offset, |segment| segment.base_offset)
            .ok()
            .map(|segment_idx| Arc::clone(&segments[segment_idx]))
    }

    /// Creates a new, empty segment at the writer's next offset and makes it active.
    /// The caller has written and synced the previous segment.
    pub(crate) fn roll(&self, writer: &mut PartitionWriter) -> Result<(), StreamError> {
        if writer.injected_no_space() {
            return Err(io_error(&self.dir, DiskFaults::no_space()));
        }
        let segment = Arc::new(create_segment(&self.dir, writer.next_offset)?);
        self.segments.write().push(Arc::clone(&segment));
        writer.active = segment;
        writer.segment_len = 0;
        writer.last_indexed_position = None;
        writer.unsynced = false;
        writer.synced_len = 0;
        writer.synced_next_offset = writer.next_offset;
        Ok(())
    }

    /// Creates the directory and first segment of a new partition.
    pub(crate) fn create(
        topic: &str,
        partition: i32,
        dir: PathBuf,
    ) -> Result<Partition, StreamError> {
        create_private_dir(&dir)?;
        let segment = create_segment(&dir, 0)?;
        Ok(Partition::with_segments(
            topic,
            partition,
            dir,
            Vec::new(),
            segment,
            0,
            0,
        ))
    }

    /// Opens an existing partition: scans every segment, checks checksums and offset
    /// continuity, rebuilds the sparse index, and truncates a torn tail of the last segment.
    pub(crate) fn open(
        topic: &str,
        partition: i32,
        dir: PathBuf,
    ) -> Result<Partition, StreamError> {
        if !dir.exists() {
            return Partition::create(topic, partition, dir);
        }
        let mut base_offsets = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|source| io_error(&dir, source))? {
            let entry = entry.map_err(|source| io_error(&dir, source))?;
            let name = entry.file_name();
            let Some(base) = name
                .to_str()
                .and_then(|name| name.strip_suffix(SEGMENT_SUFFIX))
                .and_then(|stem| stem.parse::<i64>().ok())
            else {
                continue;
            };
            base_offsets.push(base);
        }
        base_offsets.sort_unstable();
        if base_offsets.is_empty() {
            let segment = create_segment(&dir, 0)?;
            return Ok(Partition::with_segments(
                topic,
                partition,
                dir,
                Vec::new(),
                segment,
                0,
                0,
            ));
        }
        let n_segments = base_offsets.len();
        let mut segments = Vec::with_capacity(n_segments);
        let mut next_offset = base_offsets[0];
        let mut last_len = 0;
        for (segment_idx, base_offset) in base_offsets.into_iter().enumerate() {
            let path = segment_path(&dir, base_offset);
            if base_offset != next_offset {
                return Err(StreamError::Corrupt {
                    path: path.display().to_string(),
                    position: 0,
                    detail: format!("segment starts at offset {base_offset}, but the previous one ends at {next_offset}"),
                });
            }
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|source| io_error(&path, source))?;
            let is_last = segment_idx + 1 == n_segments;
            let scan = scan_segment(&file, &path, base_offset, is_last)?;
            next_offset = scan.next_offset;
            last_len = scan.valid_len;
            segments.push(Segment {
                base_offset,
                path,
                file,
                index: RwLock::new(scan.index),
            });
        }
        let Some(active) = segments.pop() else {
            return Err(StreamError::Corrupt {
                path: dir.display().to_string(),
                position: 0,
                detail: "no segment found after listing some".to_owned(),
            });
        };
        Ok(Partition::with_segments(
            topic,
            partition,
            dir,
            segments,
            active,
            next_offset,
            last_len,
        ))
    }

    fn with_segments(
        topic: &str,
        partition: i32,
        dir: PathBuf,
        sealed: Vec<Segment>,
        active: Segment,
        next_offset: i64,
        active_len: u64,
    ) -> Partition {
        let active = Arc::new(active);
        let mut segments: Vec<Arc<Segment>> = sealed.into_iter().map(Arc::new).collect();
        segments.push(Arc::clone(&active));
        let last_indexed_position = active
            .index
            .read()
            .last()
            .map(|entry| u64::from(entry.position));
        let faults = DiskFaults::for_path(&dir);
        Partition {
            topic: topic.to_owned(),
            partition,
            dir,
            durable_next: AtomicI64::new(next_offset),
            segments: RwLock::new(segments),
            writer: Mutex::new(PartitionWriter {
                next_offset,
                active,
                segment_len: active_len,
                pending: Vec::new(),
                last_indexed_position,
                poisoned: None,
                unsynced: false,
                in_commit: false,
                synced_len: active_len,
                synced_next_offset: next_offset,
                faults,
            }),
        }
    }
}

fn segment_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{base_offset:020}{SEGMENT_SUFFIX}"))
}

/// Creates an empty segment file and makes its directory entry durable.
fn create_segment(dir: &Path, base_offset: i64) -> Result<Segment, StreamError> {
    let path = segment_path(dir, base_offset);
    let file = OpenOptions::new()
        .mode(0o600)
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|source| io_error(&path, source))?;
    if let Err(error) = sync_dir(dir) {
        // Not yet a segment of the partition: leave no file a later roll would trip on.
        let _ = fs::remove_file(&path);
        return Err(error);
    }
    Ok(Segment {
        base_offset,
        path,
        file,
        index: RwLock::new(Vec::new()),
    })
}

struct SegmentScan {
    next_offset: i64,
    valid_len: u64,
    index: Vec<IndexEntry>,
}

/// Walks every frame of a segment. A bad or incomplete frame in the last segment is a
/// torn tail (written, never synced, so never acknowledged): the file is cut there.
/// In an earlier segment, which was synced before the next one was created, it is corruption.
fn scan_segment(
    file: &File,
    path: &Path,
    base_offset: i64,
    is_last: bool,
) -> Result<SegmentScan, StreamError> {
    let file_len = file
        .metadata()
        .map_err(|source| io_error(path, source))?
        .len();
    let mut buf = vec![0u8; SCAN_CHUNK_BYTES];
    let mut buf_start = 0usize;
    let mut buf_end = 0usize;
    let mut buf_file_position = 0u64; // file position of buf[0]
    let mut position = 0u64; // file position of the next frame
    let mut next_offset = base_offset;
    let mut index = Vec::new();
    let mut last_indexed: Option<u64> = None;
    let problem = loop {
        if position >= file_len {
            break None;
        }
        match parse_frame(&buf[buf_start..buf_end]) {
            Frame::Complete { frame_len, record } => {
                if record.offset != next_offset {
                    break Some(format!(
                        "record holds offset {}, expected {next_offset}",
                        record.offset
                    ));
                }
                if last_indexed.is_none_or(|last| position - last >= INDEX_INTERVAL_BYTES) {
                    index.push(IndexEntry {
                        relative_offset: (next_offset - base_offset) as u32,
                        position: position as u32,
                    });
                    last_indexed = Some(position);
                }
                next_offset += 1;
                position += frame_len as u64;
                buf_start += frame_len;
            }
            Frame::Incomplete { frame_len } => {
                if position + frame_len as u64 > file_len {
                    break Some(format!(
                        "the file ends inside a record ({} of {frame_len} bytes present)",
                        file_len - position
                    ));
                }
                buf.copy_within(buf_start..buf_end, 0);
                buf_end -= buf_start;
                buf_file_position += buf_start as u64;
                buf_start = 0;
                if buf.len() < frame_len {
                    buf.resize(frame_len, 0);
                }
                let n_read = file
                    .read_at(&mut buf[buf_end..], buf_file_position + buf_end as u64)
                    .map_err(|source| io_error(path, source))?;
                if n_read == 0 {
                    break Some("unexpected end of file".to_owned());
                }
                buf_end += n_read;
            }
            Frame::Invalid(detail) => break Some(detail),
        }
    };
    if let Some(detail) = problem {
        if !is_last {
            return Err(StreamError::Corrupt {
                path: path.display().to_string(),
                position,
                detail,
            });
        }
        tracing::warn!(
            path = %path.display(),
            position,
            dropped_bytes = file_len - position,
            detail = %detail,
            "Truncating a torn tail of the log: these bytes were never acknowledged."
        );
        file.set_len(position)
            .map_err(|source| io_error(path, source))?;
        file.sync_all().map_err(|source| io_error(path, source))?;
    }
    Ok(SegmentScan {
        next_offset,
        valid_len: position,
        index,
    })
}
