//! The group-commit writer thread: drains queued appends, writes them, syncs each touched file once, then acknowledges.

use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::frame::{encode_frame, frame_len, FRAME_HEADER_BYTES, MAX_BODY_BYTES};
use super::partition::{IndexEntry, Partition, PartitionWriter, INDEX_INTERVAL_BYTES};
use super::Topic;
use crate::partitioner::partition_for_key;
use crate::record::{Delivered, DeliveryError, OutgoingRecord};
use crate::volume::DiskFaults;

/// Queued appends beyond which a commit stops draining the queue, to bound latency.
const MAX_REQUESTS_PER_COMMIT: usize = 4096;
/// Encoded bytes beyond which a commit stops draining the queue, to bound memory.
const MAX_BYTES_PER_COMMIT: usize = 64 << 20;
/// Files synced by one thread; more touched files are synced in parallel.
const FILES_PER_SYNC_THREAD: usize = 4;

/// One call to `append`, waiting for its outcomes.
pub(crate) struct AppendRequest {
    pub topic: Arc<Topic>,
    pub records: Vec<OutgoingRecord>,
    pub timestamp_ms: i64,
    pub reply: oneshot::Sender<Vec<Result<Delivered, DeliveryError>>>,
}

/// Counters a test or metric can read.
#[derive(Default)]
pub(crate) struct WriterStats {
    pub fsyncs: AtomicU64,
    pub commits: AtomicU64,
}

/// Runs until every sender of `queue` is dropped, committing what was queued first.
pub(crate) fn run_writer(
    queue: Receiver<AppendRequest>,
    segment_bytes: u64,
    stats: Arc<WriterStats>,
) {
    while let Ok(first) = queue.recv() {
        let mut n_bytes = first.records.iter().map(frame_len).sum::<usize>();
        let mut batch = vec![first];
        while batch.len() < MAX_REQUESTS_PER_COMMIT && n_bytes < MAX_BYTES_PER_COMMIT {
            match queue.try_recv() {
                Ok(request) => {
                    n_bytes += request.records.iter().map(frame_len).sum::<usize>();
                    batch.push(request);
                }
                Err(_) => break,
            }
        }
        commit(batch, segment_bytes, &stats);
    }
}

/// Where a record stands during a commit.
enum Slot {
    Assigned { partition_idx: usize, offset: i64 },
    Done(Result<Delivered, DeliveryError>),
}

/// A partition whose write or fsync failed during a commit, after recovery.
struct Failure {
    reason: String,
    /// Records below this offset were covered by an fsync: they are durable.
    durable_next: i64,
    /// Whether the file was cut back to its durable end (the failed records are then
    /// definitely not in the log) or is still in doubt.
    recovered: bool,
}

fn commit(batch: Vec<AppendRequest>, segment_bytes: u64, stats: &WriterStats) {
    let mut touched: Vec<Arc<Partition>> = Vec::new();
    let mut slots: Vec<Vec<Slot>> = Vec::with_capacity(batch.len());
    for request in &batch {
        let n_partitions = request.topic.partitions.len() as i32;
        let mut request_slots = Vec::with_capacity(request.records.len());
        for record in &request.records {
            let partition_idx = partition_for_key(&record.key, n_partitions) as usize;
            let partition = &request.topic.partitions[partition_idx];
            let mut writer = partition.writer.lock();
            if !writer.in_commit && writer.poisoned.is_some() {
                // An earlier commit could not cut the file back: try again (space may
                // have returned), so that appends resume by themselves.
                retry_recovery(partition, &mut writer);
            }
            let outcome = assign(
                partition,
                &mut writer,
                record,
                request,
                segment_bytes,
                stats,
            );
            // A partition that failed in this commit is recovered at its end too.
            if (outcome.is_ok() || writer.poisoned.is_some()) && !writer.in_commit {
                writer.in_commit = true;
                touched.push(Arc::clone(partition));
            }
            let slot = match outcome {
                Ok(offset) => Slot::Assigned {
                    partition_idx,
                    offset,
                },
                Err(error) => Slot::Done(Err(error)),
            };
            request_slots.push(slot);
        }
        slots.push(request_slots);
    }

    write_and_sync(&touched, stats);

    let mut failures: Vec<(*const Partition, Failure)> = Vec::new();
    for partition in &touched {
        let mut writer = partition.writer.lock();
        writer.in_commit = false;
        match writer.poisoned.take() {
            None => partition.publish_high_watermark(writer.next_offset),
            Some(reason) => {
                let recovered = match recover(&mut writer) {
                    Ok(()) => {
                        tracing::warn!(topic = %partition.topic, partition = partition.partition, %reason, "A log write failed; the partition was cut back to its durable end and accepts appends again.");
                        true
                    }
                    Err(recovery) => {
                        tracing::error!(topic = %partition.topic, partition = partition.partition, %reason, %recovery, "A log write failed and the file could not be cut back; appends are refused until that succeeds.");
                        writer.poisoned = Some(format!("{reason}; then {recovery}"));
                        false
                    }
                };
                partition.publish_high_watermark(writer.synced_next_offset);
                failures.push((
                    Arc::as_ptr(partition),
                    Failure {
                        reason,
                        durable_next: writer.synced_next_offset,
                        recovered,
                    },
                ));
            }
        }
    }
    let mut notified: Vec<*const Topic> = Vec::new();
    for request in &batch {
        let topic_ptr = Arc::as_ptr(&request.topic);
        if !notified.contains(&topic_ptr) {
            notified.push(topic_ptr);
            request.topic.changes.send_modify(|version| *version += 1);
        }
    }
    stats.commits.fetch_add(1, Ordering::Relaxed);

    for (request, request_slots) in batch.into_iter().zip(slots) {
        let outcomes = request_slots
            .into_iter()
            .map(|slot| match slot {
                Slot::Done(outcome) => outcome,
                Slot::Assigned {
                    partition_idx,
                    offset,
                } => {
                    let partition = &request.topic.partitions[partition_idx];
                    let failure = failures
                        .iter()
                        .find(|(failed, _)| std::ptr::eq(*failed, Arc::as_ptr(partition)))
                        .map(|(_, failure)| failure);
                    match failure {
                        Some(failure) if offset >= failure.durable_next => {
                            let detail = format!(
                                "write or fsync of {}/{} failed: {}",
                                partition.topic, partition.partition, failure.reason
                            );
                            if failure.recovered {
                                Err(DeliveryError::Definite(format!(
                                    "{detail}; the record is not in the log"
                                )))
                            } else {
                                Err(DeliveryError::Uncertain(detail))
                            }
                        }
                        _ => Ok(Delivered {
                            partition: partition.partition,
                            offset,
                        }),
                    }
                }
            })
            .collect();
        // The caller may have stopped waiting; the records are in the log regardless.
        let _ = request.reply.send(outcomes);
    }
}

/// Cuts the active segment back to its durable end and forgets what was written past it,
/// so that appends go on from there: nothing past that end was acknowledged or shown to
/// readers. The cut is synced before anyone is told the records are not in the log.
fn recover(writer: &mut PartitionWriter) -> Result<(), String> {
    writer
        .active
        .file
        .set_len(writer.synced_len)
        .and_then(|()| writer.active.file.sync_all())
        .map_err(|error| {
            format!(
                "cutting {} back to {} bytes failed: {error}",
                writer.active.path.display(),
                writer.synced_len
            )
        })?;
    writer.pending.clear();
    writer.segment_len = writer.synced_len;
    writer.next_offset = writer.synced_next_offset;
    writer.unsynced = false;
    let synced_len = writer.synced_len;
    let mut index = writer.active.index.write();
    index.retain(|entry| u64::from(entry.position) < synced_len);
    let last_indexed_position = index.last().map(|entry| u64::from(entry.position));
    drop(index);
    writer.last_indexed_position = last_indexed_position;
    Ok(())
}

/// Recovery of a partition an earlier commit left in doubt.
fn retry_recovery(partition: &Partition, writer: &mut PartitionWriter) {
    if recover(writer).is_ok() {
        tracing::info!(topic = %partition.topic, partition = partition.partition, "The log partition was cut back to its durable end; appends resume.");
        writer.poisoned = None;
    }
}

/// Encodes one record into its partition's pending bytes and gives it an offset, rolling
/// the segment first when it is full.
fn assign(
    partition: &Partition,
    writer: &mut PartitionWriter,
    record: &OutgoingRecord,
    request: &AppendRequest,
    segment_bytes: u64,
    stats: &WriterStats,
) -> Result<i64, DeliveryError> {
    if let Some(reason) = &writer.poisoned {
        return Err(DeliveryError::Definite(format!(
            "partition {}/{} refuses appends after an I/O error ({reason}); retry later",
            partition.topic, partition.partition
        )));
    }
    let n_bytes = frame_len(record);
    let limit = usize::try_from(request.topic.meta.max_message_bytes)
        .unwrap_or(usize::MAX)
        .min(MAX_BODY_BYTES);
    if n_bytes - FRAME_HEADER_BYTES > limit {
        return Err(DeliveryError::Definite(format!(
            "record of {n_bytes} bytes exceeds the {limit}-byte limit of topic {}",
            partition.topic
        )));
    }
    if writer.segment_len > 0 && writer.segment_len + n_bytes as u64 > segment_bytes {
        let rolled = flush_pending(writer, stats)
            .and_then(|()| partition.roll(writer).map_err(|error| error.to_string()));
        if let Err(reason) = rolled {
            tracing::error!(topic = %partition.topic, partition = partition.partition, %reason, "Rolling a log segment failed.");
            let error = DeliveryError::Definite(format!(
                "the log segment of {}/{} could not be rolled: {reason}",
                partition.topic, partition.partition
            ));
            writer.poisoned = Some(reason);
            return Err(error);
        }
    }
    let position = writer.segment_len;
    if writer
        .last_indexed_position
        .is_none_or(|last| position - last >= INDEX_INTERVAL_BYTES)
    {
        writer.active.index.write().push(IndexEntry {
            relative_offset: (writer.next_offset - writer.active.base_offset) as u32,
            position: position as u32,
        });
        writer.last_indexed_position = Some(position);
    }
    let offset = writer.next_offset;
    encode_frame(&mut writer.pending, offset, request.timestamp_ms, record);
    writer.segment_len += n_bytes as u64;
    writer.next_offset += 1;
    writer.unsynced = true;
    Ok(offset)
}

/// Writes the pending bytes of a partition and syncs its active segment (before a roll).
fn flush_pending(writer: &mut PartitionWriter, stats: &WriterStats) -> Result<(), String> {
    write_pending(writer)?;
    if writer.unsynced {
        writer
            .active
            .file
            .sync_data()
            .map_err(|error| format!("fsync of {}: {error}", writer.active.path.display()))?;
        stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        writer.unsynced = false;
        writer.synced_len = writer.segment_len;
        writer.synced_next_offset = writer.next_offset;
    }
    Ok(())
}

fn write_pending(writer: &mut PartitionWriter) -> Result<(), String> {
    if writer.pending.is_empty() {
        return Ok(());
    }
    let start = writer.segment_len - writer.pending.len() as u64;
    let written = if writer.injected_no_space() {
        // As a full disk does: part of the bytes land, then ENOSPC.
        let half = writer.pending.len() / 2;
        writer
            .active
            .file
            .write_all_at(&writer.pending[..half], start)
            .and(Err(DiskFaults::no_space()))
    } else {
        writer.active.file.write_all_at(&writer.pending, start)
    };
    written.map_err(|error| format!("write to {}: {error}", writer.active.path.display()))?;
    writer.pending.clear();
    Ok(())
}

/// Writes every touched partition's pending bytes, then syncs their files, in parallel
/// when there are many. A failure poisons that partition only.
fn write_and_sync(touched: &[Arc<Partition>], stats: &WriterStats) {
    let sync_group = |group: &[Arc<Partition>]| {
        for partition in group {
            let mut writer = partition.writer.lock();
            if writer.poisoned.is_some() {
                continue;
            }
            if let Err(reason) = flush_pending(&mut writer, stats) {
                tracing::error!(topic = %partition.topic, partition = partition.partition, %reason, "Writing the log failed; the partition stops accepting appends.");
                writer.poisoned = Some(reason);
            }
        }
    };
    if touched.len() <= FILES_PER_SYNC_THREAD {
        sync_group(touched);
    } else {
        std::thread::scope(|scope| {
            for group in touched.chunks(FILES_PER_SYNC_THREAD) {
                scope.spawn(|| sync_group(group));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::embedded::reader::EmbeddedReader;
    use crate::embedded::{open_topic, TopicMeta};
    use crate::StreamReader;

    fn request(topic: &Arc<Topic>, value: &str) -> AppendRequest {
        let (reply, _outcome) = oneshot::channel();
        AppendRequest {
            topic: Arc::clone(topic),
            records: vec![OutgoingRecord {
                key: b"course".to_vec(),
                value: value.as_bytes().to_vec(),
                headers: Vec::new(),
            }],
            timestamp_ms: 0,
            reply,
        }
    }

    #[tokio::test]
    async fn written_but_unsynced_records_stay_invisible_to_readers() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let meta = TopicMeta {
            partitions: 1,
            max_message_bytes: 1 << 20,
        };
        let topic = Arc::new(open_topic("t", dir.path(), meta).expect("creating a topic"));
        let partition = Arc::clone(&topic.partitions[0]);
        let stats = WriterStats::default();
        let first = request(&topic, "first");
        {
            let mut writer = partition.writer.lock();
            let offset = assign(
                &partition,
                &mut writer,
                &first.records[0],
                &first,
                1 << 20,
                &stats,
            );
            assert_eq!(offset, Ok(0));
            // In the file (and the page cache), but not synced: as if the process died now.
            write_pending(&mut writer).expect("writing");
            assert!(writer.active.file.metadata().expect("metadata").len() > 0);
        }
        let mut reader = EmbeddedReader::new(Arc::clone(&topic), &[(0, 0)]).expect("a reader");
        let seen = reader.poll(10, Duration::ZERO).await.expect("polling");
        assert!(seen.is_empty(), "an unsynced record was visible");
        assert_eq!(partition.high_watermark(), 0);
        assert_eq!(stats.fsyncs.load(Ordering::Relaxed), 0);

        // The next commit syncs the file once and publishes both records.
        commit(vec![request(&topic, "second")], 1 << 20, &stats);
        assert_eq!(stats.fsyncs.load(Ordering::Relaxed), 1);
        assert_eq!(partition.high_watermark(), 2);
        let seen = reader.poll(10, Duration::ZERO).await.expect("polling");
        let values: Vec<_> = seen.iter().map(|record| record.value.clone()).collect();
        assert_eq!(
            values,
            vec![Some(b"first".to_vec()), Some(b"second".to_vec())]
        );
    }
}
