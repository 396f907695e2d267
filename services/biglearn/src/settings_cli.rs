//! `biglearn settings …`: the `/admin/settings/*` endpoints from the command line.

use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

/// How to reach the writer's admin endpoints (the options of `biglearn gap`), and how
/// to print the answer.
#[derive(Args, Debug)]
pub struct SettingsTarget {
    #[command(flatten)]
    admin: crate::admin::AdminTarget,
    /// Print the endpoint's JSON answer instead of text.
    #[arg(long)]
    json: bool,
}

/// `biglearn settings …`. Values are JSON (`3`, `0.5`, `true`, `"text"`); a value that
/// is not JSON is sent as a string, and the writer checks it against the key's type.
#[derive(Subcommand, Debug)]
pub enum SettingsCommand {
    /// Define a new setting key.
    Define {
        #[command(flatten)]
        target: SettingsTarget,
        #[arg(long)]
        key: String,
        #[arg(long, value_parser = ["bool", "int", "float", "string"])]
        value_type: String,
        /// `course` keys take per-course overrides; `global` keys do not.
        #[arg(long, value_parser = ["global", "course"])]
        scope: String,
        #[arg(long)]
        default: String,
        /// What every course resolves to while the kill switch is engaged.
        #[arg(long)]
        kill_value: Option<String>,
        #[arg(long)]
        description: String,
        #[arg(long)]
        reason: String,
    },
    /// Change a global default, stating what happens to overrides and to existing courses.
    ChangeDefault {
        #[command(flatten)]
        target: SettingsTarget,
        #[arg(long)]
        key: String,
        #[arg(long)]
        value: String,
        /// `keep`: existing overrides keep winning; `reset`: they stop applying.
        #[arg(long, value_parser = ["keep", "reset"])]
        overrides: String,
        /// `all`: every course; `new_courses`: existing courses are pinned at their value.
        #[arg(long, value_parser = ["all", "new_courses"])]
        applies_to: String,
        #[arg(long)]
        reason: String,
    },
    /// Override a course-scoped setting for one course.
    SetOverride {
        #[command(flatten)]
        target: SettingsTarget,
        #[arg(long)]
        key: String,
        #[arg(long)]
        course: String,
        #[arg(long)]
        value: String,
        #[arg(long)]
        reason: String,
    },
    /// Remove a course's override.
    ClearOverride {
        #[command(flatten)]
        target: SettingsTarget,
        #[arg(long)]
        key: String,
        #[arg(long)]
        course: String,
        #[arg(long)]
        reason: String,
    },
    /// Engage (`--engaged true`) or release (`--engaged false`) a key's kill switch.
    KillSwitch {
        #[command(flatten)]
        target: SettingsTarget,
        #[arg(long)]
        key: String,
        #[arg(long, action = clap::ArgAction::Set)]
        engaged: bool,
        #[arg(long)]
        reason: String,
    },
    /// A key's effective value (for a course, as of a version) and why it has it.
    Get {
        #[command(flatten)]
        target: SettingsTarget,
        #[arg(long)]
        key: String,
        #[arg(long)]
        course: Option<String>,
        #[arg(long)]
        as_of_version: Option<i64>,
    },
    /// Every defined key with its effective value (for a course, if given).
    List {
        #[command(flatten)]
        target: SettingsTarget,
        #[arg(long)]
        course: Option<String>,
    },
    /// The audit log, oldest first; the filters combine.
    Audit {
        #[command(flatten)]
        target: SettingsTarget,
        #[arg(long)]
        key: Option<String>,
        #[arg(long)]
        course: Option<String>,
        /// Only changes made by this actor.
        #[arg(long)]
        by: Option<String>,
        /// From this datetime (e.g. 2026-01-31T00:00:00Z).
        #[arg(long)]
        from: Option<String>,
        /// Up to this datetime.
        #[arg(long)]
        to: Option<String>,
        /// Only versions above this one.
        #[arg(long)]
        after_version: Option<i64>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

/// A command-line value as JSON; text that is not JSON is a string.
fn json_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// `body` with the optional fields that are set.
fn with_optional(mut body: Value, optional: &[(&str, Option<Value>)]) -> Value {
    if let Value::Object(fields) = &mut body {
        for (name, value) in optional {
            if let Some(value) = value {
                fields.insert((*name).to_owned(), value.clone());
            }
        }
    }
    body
}

/// One event of a `because` chain or the audit log, on one line.
fn event_line(event: &Value) -> String {
    const ENVELOPE: [&str; 7] = [
        "settings_version",
        "change_id",
        "key",
        "type",
        "actor",
        "reason",
        "occurred_at",
    ];
    let details: Vec<String> = event
        .as_object()
        .map(Map::iter)
        .into_iter()
        .flatten()
        .filter(|(name, _)| !ENVELOPE.contains(&name.as_str()))
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    format!(
        "v{} {} {} {} {} by {}: {}",
        event["settings_version"],
        event["occurred_at"].as_str().unwrap_or("?"),
        event["key"].as_str().unwrap_or("?"),
        event["type"].as_str().unwrap_or("?"),
        details.join(" "),
        event["actor"].as_str().unwrap_or("?"),
        event["reason"].as_str().unwrap_or("?"),
    )
}

/// Runs a `settings` subcommand.
pub async fn run_settings(command: SettingsCommand) -> anyhow::Result<()> {
    let (target, path, body) = match command {
        SettingsCommand::Define {
            target,
            key,
            value_type,
            scope,
            default,
            kill_value,
            description,
            reason,
        } => {
            let body = json!({
                "key": key, "value_type": value_type, "scope": scope,
                "default": json_value(&default), "description": description, "reason": reason,
            });
            let kill_value = kill_value.as_deref().map(json_value);
            (
                target,
                "/admin/settings/define",
                with_optional(body, &[("kill_value", kill_value)]),
            )
        }
        SettingsCommand::ChangeDefault {
            target,
            key,
            value,
            overrides,
            applies_to,
            reason,
        } => (
            target,
            "/admin/settings/change_default",
            json!({
                "key": key, "value": json_value(&value), "overrides": overrides,
                "applies_to": applies_to, "reason": reason,
            }),
        ),
        SettingsCommand::SetOverride {
            target,
            key,
            course,
            value,
            reason,
        } => (
            target,
            "/admin/settings/set_course_override",
            json!({"key": key, "course_uuid": course, "value": json_value(&value), "reason": reason}),
        ),
        SettingsCommand::ClearOverride {
            target,
            key,
            course,
            reason,
        } => (
            target,
            "/admin/settings/clear_course_override",
            json!({"key": key, "course_uuid": course, "reason": reason}),
        ),
        SettingsCommand::KillSwitch {
            target,
            key,
            engaged,
            reason,
        } => (
            target,
            "/admin/settings/kill_switch",
            json!({"key": key, "engaged": engaged, "reason": reason}),
        ),
        SettingsCommand::Get {
            target,
            key,
            course,
            as_of_version,
        } => (
            target,
            "/admin/settings/get",
            with_optional(
                json!({ "key": key }),
                &[
                    ("course_uuid", course.map(Value::String)),
                    ("as_of_version", as_of_version.map(Value::from)),
                ],
            ),
        ),
        SettingsCommand::List { target, course } => (
            target,
            "/admin/settings/list",
            with_optional(json!({}), &[("course_uuid", course.map(Value::String))]),
        ),
        SettingsCommand::Audit {
            target,
            key,
            course,
            by,
            from,
            to,
            after_version,
            limit,
        } => (
            target,
            "/admin/settings/audit",
            with_optional(
                json!({ "limit": limit }),
                &[
                    ("key", key.map(Value::String)),
                    ("course_uuid", course.map(Value::String)),
                    ("actor", by.map(Value::String)),
                    ("from", from.map(Value::String)),
                    ("to", to.map(Value::String)),
                    ("after_version", after_version.map(Value::from)),
                ],
            ),
        ),
    };
    let answer = crate::admin::call(&target.admin, path, body.clone()).await?;
    if target.json {
        println!("{answer}");
        return Ok(());
    }
    match path {
        "/admin/settings/get" => {
            println!(
                "{} = {}  (source: {}, settings version {})",
                body["key"].as_str().unwrap_or("?"),
                answer["value"],
                answer["source"].as_str().unwrap_or("?"),
                answer["settings_version"],
            );
            println!("because:");
            for event in answer["because"].as_array().into_iter().flatten() {
                println!("  {}", event_line(event));
            }
        }
        "/admin/settings/list" => {
            for setting in answer["settings"].as_array().into_iter().flatten() {
                println!(
                    "{} = {}  ({}, {} {}, default {})",
                    setting["key"].as_str().unwrap_or("?"),
                    setting["value"],
                    setting["source"].as_str().unwrap_or("?"),
                    setting["scope"].as_str().unwrap_or("?"),
                    setting["value_type"].as_str().unwrap_or("?"),
                    setting["default"],
                );
            }
        }
        "/admin/settings/audit" => {
            let events = answer["events"].as_array().cloned().unwrap_or_default();
            if events.is_empty() {
                println!("no settings events match");
            }
            for event in &events {
                println!("{}", event_line(event));
            }
        }
        _ => println!(
            "recorded as settings version {}",
            answer["settings_version"]
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Value) {
        assert_eq!(json_value(text), expected, "{text}");
    }

    #[test]
    fn command_line_values_are_json_or_else_strings() {
        check("3", json!(3));
        check("0.5", json!(0.5));
        check("true", json!(true));
        check("\"3\"", json!("3"));
        check("local_query", json!("local_query"));
    }

    #[test]
    fn events_print_their_version_type_details_and_actor() {
        let event = json!({
            "settings_version": 9, "change_id": "c", "key": "k.x", "type": "course_override_set",
            "actor": "ops", "reason": "TICKET-1", "occurred_at": "2026-01-01T00:00:00.000000Z",
            "course_uuid": "u", "value": 5,
        });
        assert_eq!(
            event_line(&event),
            "v9 2026-01-01T00:00:00.000000Z k.x course_override_set course_uuid=\"u\" value=5 by ops: TICKET-1"
        );
    }
}
