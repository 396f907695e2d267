//! Operator commands that call the writer's admin endpoints over HTTP.

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

/// How to reach the writer's admin endpoints.
#[derive(Args, Debug)]
pub struct AdminTarget {
    /// Base URL of the writer.
    #[arg(long, default_value = "http://127.0.0.1:3000", env = "BIGLEARN_TARGET")]
    target: String,
    /// The admin token (default: $BIGLEARN_ADMIN_TOKEN, else `<data-dir>/admin-token`).
    #[arg(long, env = "BIGLEARN_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// The observer token, enough for the read-only commands (`gap list`, `dlq list`,
    /// `settings get|list|audit`), which prefer it (default: $BIGLEARN_OBSERVER_TOKEN, else
    /// the admin token, else `<data-dir>/observer-token`).
    #[arg(long, env = "BIGLEARN_OBSERVER_TOKEN", hide_env_values = true)]
    observer_token: Option<String>,
    /// Data directory whose `admin-token` file to use when no token is given.
    #[arg(long, default_value = "./biglearn-data", env = "BIGLEARN_DATA_DIR")]
    data_dir: std::path::PathBuf,
    /// Who is acting, recorded in the audit trail (and the settings audit log).
    #[arg(long, env = "USER", default_value = "operator")]
    actor: String,
}

/// `biglearn gap …`
#[derive(Subcommand, Debug)]
pub enum GapCommand {
    /// List open sequence gaps, oldest first.
    List {
        #[command(flatten)]
        target: AdminTarget,
        /// `course` or `ecosystem`.
        #[arg(long, default_value = "course")]
        stream: String,
        /// At most this many gaps.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Fill a missing sequence number with an audited no_op (idempotent); with `--to`, every
    /// missing number of `--seq ..= --to`, however many, with one no_op per missing run.
    Fill {
        #[command(flatten)]
        target: AdminTarget,
        /// The course whose sequence has the gap.
        #[arg(
            long,
            conflicts_with = "ecosystem",
            required_unless_present = "ecosystem"
        )]
        course: Option<String>,
        /// The ecosystem whose sequence has the gap.
        #[arg(long)]
        ecosystem: Option<String>,
        /// The missing sequence number (with `--to`: the first of the range).
        #[arg(long)]
        seq: i64,
        /// Fill every missing sequence number from `--seq` up to and including this one.
        #[arg(long)]
        to: Option<i64>,
        /// Why (a ticket reference), recorded with the no_op.
        #[arg(long)]
        reason: String,
    },
}

/// `biglearn dlq …`
#[derive(Subcommand, Debug)]
pub enum DlqCommand {
    /// List dead letters: source position, component, reason and detail.
    List {
        #[command(flatten)]
        target: AdminTarget,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Only dead letters after this offset (in every partition of the DLQ topic).
        #[arg(long)]
        after_offset: Option<i64>,
    },
    /// Re-append dead letters' original records to their source topics, once the cause is
    /// fixed (an upgraded build, a repaired producer). Replaying twice is harmless.
    Replay {
        #[command(flatten)]
        target: AdminTarget,
        /// The DLQ partition of the dead letters (from `dlq list`).
        #[arg(long)]
        partition: i32,
        /// Their offsets (from `dlq list`), comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        offsets: Vec<i64>,
        /// Why (a ticket reference), recorded in the log.
        #[arg(long)]
        reason: String,
    },
}

/// Runs a `dlq` subcommand.
pub async fn run_dlq(command: DlqCommand) -> anyhow::Result<()> {
    match command {
        DlqCommand::List {
            target,
            limit,
            after_offset,
        } => {
            let mut body = json!({"limit": limit});
            if let Some(after) = after_offset {
                body["after_offset"] = json!(after);
            }
            let answer = call(&target, "/admin/dlq/list", body).await?;
            let letters = answer["dead_letters"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if letters.is_empty() {
                println!("no dead letters");
            }
            for letter in letters {
                println!(
                    "{}:{}  {}  from {}[{}]@{}  by {}  at {}  {}",
                    letter["partition"],
                    letter["offset"],
                    letter["reason"].as_str().unwrap_or("?"),
                    letter["source_topic"].as_str().unwrap_or("?"),
                    letter["source_partition"],
                    letter["source_offset"],
                    letter["component"].as_str().unwrap_or("?"),
                    letter["observed_at"].as_str().unwrap_or("?"),
                    letter["detail"].as_str().unwrap_or(""),
                );
            }
            Ok(())
        }
        DlqCommand::Replay {
            target,
            partition,
            offsets,
            reason,
        } => {
            let answer = call(
                &target,
                "/admin/dlq/replay",
                json!({"partition": partition, "offsets": offsets, "reason": reason}),
            )
            .await?;
            for replayed in answer["replayed"].as_array().cloned().unwrap_or_default() {
                println!(
                    "replayed {partition}:{} to {}",
                    replayed["offset"],
                    replayed["source_topic"].as_str().unwrap_or("?")
                );
            }
            Ok(())
        }
    }
}

/// The admin endpoints that also accept the observer token (docs/design/api.md §7, D14).
pub const READ_ONLY_PATHS: [&str; 8] = [
    "/admin/list_sequence_gaps",
    "/admin/dlq/list",
    "/admin/state_digest",
    "/admin/results/list",
    "/admin/rebuild_status",
    "/admin/settings/get",
    "/admin/settings/list",
    "/admin/settings/audit",
];

fn token_file(target: &AdminTarget, name: &str) -> Option<String> {
    std::fs::read_to_string(target.data_dir.join(name))
        .ok()
        .map(|text| text.trim().to_owned())
        .filter(|token| !token.is_empty())
}

/// The header and token for `path`: a read-only path prefers the observer token (so that
/// a host holding only it can read), every other path needs the admin token.
fn credential(target: &AdminTarget, path: &str) -> anyhow::Result<(&'static str, String)> {
    let given = |token: &Option<String>| token.clone().filter(|token| !token.is_empty());
    let admin = || given(&target.admin_token).or_else(|| token_file(target, "admin-token"));
    if READ_ONLY_PATHS.contains(&path) {
        let found = given(&target.observer_token)
            .map(|token| ("Biglearn-Observer-Token", token))
            .or_else(|| given(&target.admin_token).map(|token| ("Biglearn-Admin-Token", token)))
            .or_else(|| {
                token_file(target, "observer-token").map(|token| ("Biglearn-Observer-Token", token))
            })
            .or_else(|| admin().map(|token| ("Biglearn-Admin-Token", token)));
        return found.with_context(|| {
            format!(
                "no observer or admin token: set BIGLEARN_OBSERVER_TOKEN or pass --observer-token (none found in {})",
                target.data_dir.display()
            )
        });
    }
    let token = admin().with_context(|| {
        format!(
            "no admin token: set BIGLEARN_ADMIN_TOKEN or pass --admin-token (none found in {}); an observer token does not open {path}",
            target.data_dir.display()
        )
    })?;
    Ok(("Biglearn-Admin-Token", token))
}

/// POSTs `body` to the admin endpoint `path`; a non-2xx answer is an error naming it.
pub(crate) async fn call(target: &AdminTarget, path: &str, body: Value) -> anyhow::Result<Value> {
    let (header, token) = credential(target, path)?;
    let url = format!("{}{path}", target.target.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .post(&url)
        .header(header, token)
        .header("Biglearn-Actor", &target.actor)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}; is the writer running?"))?;
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        anyhow::bail!("{url} answered {status}: {answer}");
    }
    Ok(answer)
}

/// Runs a `gap` subcommand.
pub async fn run_gap(command: GapCommand) -> anyhow::Result<()> {
    match command {
        GapCommand::List {
            target,
            stream,
            limit,
        } => {
            let answer = call(
                &target,
                "/admin/list_sequence_gaps",
                json!({"stream": stream, "limit": limit}),
            )
            .await?;
            let gaps = answer["gaps"].as_array().cloned().unwrap_or_default();
            if gaps.is_empty() {
                println!("no open {stream} gaps");
            }
            for gap in gaps {
                println!(
                    "{}  first missing {}  missing {}  highest {}  blocked since {}",
                    gap["aggregate_uuid"].as_str().unwrap_or("?"),
                    gap["first_missing"],
                    gap["missing_count"],
                    gap["highest_received"],
                    gap["blocked_since"].as_str().unwrap_or("?"),
                );
            }
            Ok(())
        }
        GapCommand::Fill {
            target,
            course,
            ecosystem,
            seq,
            to,
            reason,
        } => {
            let (stream, aggregate) = match (course, ecosystem) {
                (Some(course), _) => ("course", course),
                (None, Some(ecosystem)) => ("ecosystem", ecosystem),
                (None, None) => anyhow::bail!("pass --course or --ecosystem"),
            };
            let mut body = json!({"stream": stream, "aggregate_uuid": aggregate, "sequence_number": seq, "reason": reason});
            if let Some(to) = to {
                body["sequence_number_to"] = json!(to);
            }
            let answer = call(&target, "/admin/fill_sequence_gap", body).await?;
            let range = match to {
                Some(to) => format!("sequence_numbers {seq}..={to}"),
                None => format!("sequence_number {seq}"),
            };
            println!(
                "{stream} {aggregate} {range}: {} ({} filled)",
                answer["status"].as_str().unwrap_or("?"),
                answer["filled_count"]
            );
            Ok(())
        }
    }
}
