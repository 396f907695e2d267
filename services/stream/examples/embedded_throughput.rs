//! Measures the embedded log: concurrent appenders write small records keyed by 100 courses, then one reader reads them all back; prints one JSON line.
//!
//! `cargo run -p biglearn-stream --example embedded_throughput --release -- [records] [appenders] [records_per_append] [dir]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use biglearn_stream::embedded::EmbeddedStore;
use biglearn_stream::{OutgoingRecord, StreamStore, Topics};

const N_COURSES: usize = 100;
const VALUE_BYTES: usize = 300;

fn course_uuid(course_idx: usize) -> String {
    format!("00000000-0000-4000-8000-{course_idx:012x}")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |idx: usize, default: usize| -> Result<usize, Box<dyn std::error::Error>> {
        Ok(args
            .get(idx)
            .map(|text| text.parse())
            .transpose()?
            .unwrap_or(default))
    };
    let n_records = arg(0, 1_000_000)?;
    let n_appenders = arg(1, 64)?.max(1);
    let records_per_append = arg(2, 10)?.max(1);
    let temporary = tempfile::tempdir()?;
    let dir = args
        .get(3)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| temporary.path().to_owned());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let store = Arc::new(EmbeddedStore::open(&dir)?);
        let topics = Topics::new("bench");
        store.ensure_topics(&topics.all_specs(1)).await?;
        let topic = topics.course_events();

        let started = Instant::now();
        let mut appenders = Vec::new();
        for appender_idx in 0..n_appenders {
            let store = Arc::clone(&store);
            let topic = topic.clone();
            let n_mine = n_records / n_appenders + usize::from(appender_idx < n_records % n_appenders);
            appenders.push(tokio::spawn(async move {
                let mut written = 0usize;
                let mut n_failed = 0usize;
                while written < n_mine {
                    let n_batch = records_per_append.min(n_mine - written);
                    let records = (0..n_batch)
                        .map(|record_idx| {
                            let course_idx = (appender_idx * 7 + written + record_idx) % N_COURSES;
                            OutgoingRecord {
                                key: course_uuid(course_idx).into_bytes(),
                                value: vec![b'r'; VALUE_BYTES],
                                headers: vec![("bl-event-type".to_owned(), b"record_responses".to_vec())],
                            }
                        })
                        .collect();
                    let outcomes = store.append(&topic, records).await?;
                    n_failed += outcomes.iter().filter(|outcome| outcome.is_err()).count();
                    written += n_batch;
                }
                Ok::<usize, biglearn_stream::StreamError>(n_failed)
            }));
        }
        let mut n_failed = 0;
        for appender in appenders {
            n_failed += appender.await??;
        }
        let append_seconds = started.elapsed().as_secs_f64();

        let high_watermarks = store.high_watermarks(&topic).await?;
        let start: Vec<(i32, i64)> = (0..high_watermarks.len() as i32).map(|partition| (partition, 0)).collect();
        let n_durable: i64 = high_watermarks.iter().sum();
        let started = Instant::now();
        let mut reader = store.open_reader(&topic, &start).await?;
        let mut n_read = 0i64;
        let mut n_bytes = 0usize;
        while n_read < n_durable {
            let batch = reader.poll(10_000, Duration::from_secs(5)).await?;
            if batch.is_empty() {
                break;
            }
            n_read += batch.len() as i64;
            n_bytes += batch.iter().map(|record| record.value.as_ref().map_or(0, Vec::len)).sum::<usize>();
        }
        let read_seconds = started.elapsed().as_secs_f64();
        println!(
            "{{\"records\":{n_records},\"appenders\":{n_appenders},\"records_per_append\":{records_per_append},\"value_bytes\":{VALUE_BYTES},\"partitions\":{},\"failed\":{n_failed},\"append_seconds\":{append_seconds:.3},\"appended_per_second\":{:.0},\"fsyncs\":{},\"group_commits\":{},\"read\":{n_read},\"read_value_bytes\":{n_bytes},\"read_seconds\":{read_seconds:.3},\"read_per_second\":{:.0}}}",
            high_watermarks.len(),
            n_records as f64 / append_seconds,
            store.fsync_count(),
            store.commit_count(),
            n_read as f64 / read_seconds,
        );
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}
