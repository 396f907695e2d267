//! Readers of the embedded log: buffered positional reads up to the durable high watermark.

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use super::frame::{parse_frame, Frame};
use super::partition::{Partition, Segment};
use super::{io_error, Topic};
use crate::record::ConsumedRecord;
use crate::{StreamError, StreamReader};

/// Bytes read from a segment at a time (grown for larger records).
const READ_CHUNK_BYTES: usize = 256 * 1024;

/// Reads one partition forward.
struct Cursor {
    partition: Arc<Partition>,
    segment: Arc<Segment>,
    /// Offset of the next frame in the buffer or file.
    next_offset: i64,
    /// Records below this offset are parsed but not returned (the start lands on an
    /// index entry at or before the requested offset).
    skip_below: i64,
    buf: Vec<u8>,
    buf_start: usize,
    buf_end: usize,
    /// File position of `buf[buf_end]`: where the next read starts.
    file_position: u64,
}

impl Cursor {
    fn new(partition: Arc<Partition>, offset: i64) -> Cursor {
        let segment = partition.segment_for(offset);
        let (next_offset, position) = segment.seek(offset);
        Cursor {
            partition,
            segment,
            next_offset,
            skip_below: offset,
            buf: Vec::new(),
            buf_start: 0,
            buf_end: 0,
            file_position: position,
        }
    }

    /// Appends up to `max_records` durable records to `out`.
    fn read_into(
        &mut self,
        out: &mut Vec<ConsumedRecord>,
        max_records: usize,
    ) -> Result<(), StreamError> {
        let high_watermark = self.partition.high_watermark();
        let limit = out.len() + max_records;
        while out.len() < limit && self.next_offset < high_watermark {
            match parse_frame(&self.buf[self.buf_start..self.buf_end]) {
                Frame::Complete { frame_len, record } => {
                    if record.offset != self.next_offset {
                        return Err(self.corrupt(format!(
                            "record holds offset {}, expected {}",
                            record.offset, self.next_offset
                        )));
                    }
                    if record.offset >= self.skip_below {
                        out.push(
                            record.to_consumed(&self.partition.topic, self.partition.partition),
                        );
                    }
                    self.buf_start += frame_len;
                    self.next_offset += 1;
                }
                Frame::Incomplete { frame_len } => self.fill(frame_len)?,
                Frame::Invalid(detail) => return Err(self.corrupt(detail)),
            }
        }
        Ok(())
    }

    /// Reads more of the segment so that at least `frame_len` bytes are buffered, moving
    /// to the next segment at the end of this one. Bytes past the durable end may be
    /// read; they are only parsed once the high watermark covers them, and segments are
    /// append-only, so buffered bytes never go stale.
    fn fill(&mut self, frame_len: usize) -> Result<(), StreamError> {
        self.buf.copy_within(self.buf_start..self.buf_end, 0);
        self.buf_end -= self.buf_start;
        self.buf_start = 0;
        let wanted = frame_len.max(READ_CHUNK_BYTES);
        if self.buf.len() < wanted {
            self.buf.resize(wanted, 0);
        }
        let n_read = self
            .segment
            .file
            .read_at(&mut self.buf[self.buf_end..], self.file_position)
            .map_err(|source| io_error(&self.segment.path, source))?;
        if n_read > 0 {
            self.buf_end += n_read;
            self.file_position += n_read as u64;
            return Ok(());
        }
        if self.buf_end > 0 {
            return Err(self.corrupt(format!(
                "the segment ends inside durable record {}",
                self.next_offset
            )));
        }
        match self.partition.segment_starting_at(self.next_offset) {
            Some(segment) if !Arc::ptr_eq(&segment, &self.segment) => {
                self.segment = segment;
                self.file_position = 0;
                Ok(())
            }
            _ => Err(self.corrupt(format!(
                "durable record {} is in no segment",
                self.next_offset
            ))),
        }
    }

    fn corrupt(&self, detail: String) -> StreamError {
        let buffered = (self.buf_end - self.buf_start) as u64;
        StreamError::Corrupt {
            path: self.segment.path.display().to_string(),
            position: self.file_position.saturating_sub(buffered),
            detail,
        }
    }
}

/// A reader of some partitions of one topic.
pub(crate) struct EmbeddedReader {
    /// Keeps the change signal alive while the reader waits on it.
    topic: Arc<Topic>,
    changes: watch::Receiver<u64>,
    /// `None` only while a read runs on the blocking pool.
    cursors: Option<Vec<Cursor>>,
    /// The cursor that reads first in the next poll, so that no partition starves.
    first_cursor: usize,
}

impl EmbeddedReader {
    pub(crate) fn new(
        topic: Arc<Topic>,
        start: &[(i32, i64)],
    ) -> Result<EmbeddedReader, StreamError> {
        let mut cursors: Vec<Cursor> = Vec::with_capacity(start.len());
        for &(partition, offset) in start {
            let Some(log_partition) = usize::try_from(partition)
                .ok()
                .and_then(|partition_idx| topic.partitions.get(partition_idx))
            else {
                return Err(StreamError::UnknownPartition {
                    topic: topic.name.clone(),
                    partition,
                    partitions: topic.partitions.len() as i32,
                });
            };
            let high_watermark = log_partition.high_watermark();
            if !(0..=high_watermark).contains(&offset) {
                return Err(StreamError::OffsetOutOfRange {
                    topic: topic.name.clone(),
                    partition,
                    offset,
                    low: 0,
                    high: high_watermark,
                });
            }
            // A partition named twice is read once, from the last offset given.
            cursors.retain(|cursor| cursor.partition.partition != partition);
            cursors.push(Cursor::new(Arc::clone(log_partition), offset));
        }
        let changes = topic.changes.subscribe();
        Ok(EmbeddedReader {
            topic,
            changes,
            cursors: Some(cursors),
            first_cursor: 0,
        })
    }

    /// Reads what is durable now, on the blocking pool (segment reads are file I/O).
    async fn read_available(
        &mut self,
        max_records: usize,
    ) -> Result<Vec<ConsumedRecord>, StreamError> {
        let Some(mut cursors) = self.cursors.take() else {
            return Ok(Vec::new());
        };
        let first_cursor = self.first_cursor;
        let topic_name = self.topic.name.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let mut out = Vec::with_capacity(max_records.min(4096));
            let n_cursors = cursors.len();
            let mut result = Ok(());
            for step in 0..n_cursors {
                let cursor = &mut cursors[(first_cursor + step) % n_cursors];
                let remaining = max_records - out.len();
                result = cursor.read_into(&mut out, remaining);
                if result.is_err() || out.len() >= max_records {
                    break;
                }
            }
            (cursors, result.map(|()| out))
        })
        .await;
        match joined {
            Ok((cursors, result)) => {
                self.first_cursor = (first_cursor + 1) % cursors.len().max(1);
                self.cursors = Some(cursors);
                result
            }
            Err(join_error) => Err(StreamError::Io {
                path: topic_name,
                source: std::io::Error::other(format!("the log read task failed: {join_error}")),
            }),
        }
    }
}

#[async_trait]
impl StreamReader for EmbeddedReader {
    async fn poll(
        &mut self,
        max_records: usize,
        timeout: Duration,
    ) -> Result<Vec<ConsumedRecord>, StreamError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let max_records = max_records.max(1);
        loop {
            // Mark the current version seen before reading, so that a commit landing
            // during the read wakes the wait below.
            self.changes.borrow_and_update();
            let records = self.read_available(max_records).await?;
            if !records.is_empty() {
                return Ok(records);
            }
            match tokio::time::timeout_at(deadline, self.changes.changed()).await {
                Ok(Ok(())) => continue,
                // The sender lives in `self.topic`, so it cannot be dropped; wait out the
                // timeout rather than spin if it ever is.
                Ok(Err(_)) => {
                    tokio::time::sleep_until(deadline).await;
                    return Ok(Vec::new());
                }
                Err(_elapsed) => return Ok(Vec::new()),
            }
        }
    }
}
