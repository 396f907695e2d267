//! `biglearn publish`: puts Tutor requests (JSON lines) on `<prefix>.inbox`, where the
//! writer applies them with the HTTP rules (docs/design/events.md §6.4).

use std::io::BufRead;
use std::path::Path;

use anyhow::Context;
use biglearn_gateway::inbox::inbox_key;
use biglearn_stream::{OutgoingRecord, Topics};
use serde_json::Value;

use crate::run::{open_store, RunConfig};

/// Publishes every line of `file` (`{"endpoint": "/record_responses", "request": {...},
/// "request_id": "..."}`; a missing `request_id` gets a random one) and reports how many.
pub async fn publish(config: &RunConfig, file: &Path) -> anyhow::Result<usize> {
    let reader = std::io::BufReader::new(
        std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?,
    );
    let mut records = Vec::new();
    for (idx, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {}", file.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let mut envelope: Value = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not a JSON object", file.display(), idx + 1))?;
        let Some(object) = envelope.as_object_mut() else {
            anyhow::bail!("{}:{}: not a JSON object", file.display(), idx + 1);
        };
        if !object.contains_key("endpoint") || !object.contains_key("request") {
            anyhow::bail!(
                "{}:{}: each line needs \"endpoint\" and \"request\"",
                file.display(),
                idx + 1
            );
        }
        object
            .entry("request_id")
            .or_insert_with(|| Value::String(uuid::Uuid::new_v4().to_string()));
        let key = inbox_key(&envelope["request"]);
        records.push(OutgoingRecord {
            key,
            value: envelope.to_string().into_bytes(),
            headers: Vec::new(),
        });
    }
    let n_records = records.len();
    let store = open_store(config).await?;
    let topic = Topics::new(config.topic_prefix.clone()).inbox();
    let outcomes = store.append(&topic, records).await?;
    let n_failed = outcomes.iter().filter(|outcome| outcome.is_err()).count();
    if n_failed > 0 {
        anyhow::bail!("{n_failed} of {n_records} requests were not delivered to {topic}; publish the file again (requests are idempotent)");
    }
    Ok(n_records)
}
