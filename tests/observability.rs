//! Observability and deployment (issue 10): every metric a dashboard or an alert uses is
//! served by a running node after a simulated load; the rule files, the scrape
//! configuration, the dashboards and the compose file are valid and wired to each other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use biglearn_simulator::{SimulateConfig, WorkloadConfig};
use biglearn_suite::{Node, TestBackend, API_TOKEN};
use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;

const WEEK_MICROS: i64 = 7 * 24 * 3600 * 1_000_000;
const NOW_MICROS: i64 = 1_760_000_000_000_000;

/// The six dashboards of docs/design/operations.md §7.2, by file name.
const DASHBOARDS: [&str; 6] = [
    "ingest",
    "gaps",
    "consumers",
    "results",
    "sparfa",
    "staging",
];

/// Labels a process may export (docs/design/operations.md §7), plus `version` of
/// `biglearn_build_info`, `le` of histograms and the target labels Prometheus adds (`job`,
/// `instance`, and `env` from prometheus.yml).
const ALLOWED_LABELS: [&str; 18] = [
    "component",
    "endpoint",
    "status",
    "stream",
    "topic",
    "partition",
    "event_type",
    "kind",
    "algorithm",
    "reason",
    "outcome",
    "trigger",
    "projection",
    "version",
    "le",
    "job",
    "instance",
    "env",
];

/// How every alert's `runbook_url` starts: the base URL of prometheus.yml's external label
/// `runbook_base_url` (infra/README.md, "Runbook links"), then a path in this repository.
const RUNBOOK_BASE: &str = "{{ $externalLabels.runbook_base_url }}/";

/// One alert per situation of docs/design/operations.md §7.3 (some situations have two).
const REQUIRED_ALERTS: [(&str, &str); 21] = [
    ("BiglearnSequenceGap", "warn"),
    ("BiglearnSequenceGapStallingCourses", "page"),
    ("BiglearnConsumerLag", "page"),
    ("BiglearnConsumerStalled", "warn"),
    ("BiglearnStagingBehindProduction", "warn"),
    ("BiglearnDeadLetters", "warn"),
    ("BiglearnProducerErrors", "page"),
    ("BiglearnWriterResyncs", "page"),
    ("BiglearnSlowRequests", "warn"),
    ("BiglearnServerErrors", "page"),
    ("BiglearnUnreadyAssignmentPes", "warn"),
    ("BiglearnSparfaFitFailures", "warn"),
    ("BiglearnSparfaFitSlow", "warn"),
    ("BiglearnSparfaHoldoutAccuracyLow", "warn"),
    ("BiglearnSparfaEcosystemsUnready", "warn"),
    ("BiglearnPreparationUnknownNoOps", "warn"),
    ("BiglearnUnknownPreparationBlock", "warn"),
    ("BiglearnRebuildStalled", "warn"),
    ("BiglearnSledGrowth", "warn"),
    ("BiglearnSledVolumeFull", "warn"),
    ("BiglearnDataVolumeFull", "page"),
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

fn yaml(path: &Path) -> Yaml {
    serde_yaml_ng::from_str(&read(path))
        .unwrap_or_else(|error| panic!("{} is not valid YAML: {error}", path.display()))
}

fn dashboard(name: &str) -> Json {
    let path = repo().join(format!("infra/grafana/dashboards/{name}.json"));
    serde_json::from_str(&read(&path))
        .unwrap_or_else(|error| panic!("{} is not valid JSON: {error}", path.display()))
}

// ---------------------------------------------------------------------------------------
// PromQL references: a small lexer that finds metric names and label names.

/// PromQL aggregation operators (they may be followed by `by (…)` before their argument).
const AGGREGATIONS: [&str; 12] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];

/// PromQL functions these files may call; anything else followed by `(` is an error.
const FUNCTIONS: [&str; 30] = [
    "abs",
    "absent",
    "absent_over_time",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "count_over_time",
    "delta",
    "deriv",
    "floor",
    "histogram_quantile",
    "idelta",
    "increase",
    "irate",
    "label_replace",
    "last_over_time",
    "max_over_time",
    "min_over_time",
    "predict_linear",
    "rate",
    "resets",
    "round",
    "scalar",
    "sort",
    "sort_desc",
    "sum_over_time",
    "vector",
];

/// Keywords followed by a parenthesised label list.
const LABEL_LIST_KEYWORDS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Other keywords and literals.
const KEYWORDS: [&str; 8] = [
    "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan",
];

/// What one expression refers to.
#[derive(Debug, Default, PartialEq, Eq)]
struct PromqlRefs {
    metrics: BTreeSet<String>,
    labels: BTreeSet<String>,
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Index just past the string literal that starts at `start` (quote at `start`).
fn skip_string(chars: &[char], start: usize) -> Result<usize, String> {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if quote != '`' => i += 2,
            c if c == quote => return Ok(i + 1),
            _ => i += 1,
        }
    }
    Err(format!("unterminated string literal at {start}"))
}

fn ident_at(chars: &[char], start: usize) -> (String, usize) {
    let mut end = start;
    while end < chars.len() && is_ident_char(chars[end]) {
        end += 1;
    }
    (chars[start..end].iter().collect(), end)
}

fn next_non_space(chars: &[char], mut i: usize) -> Option<(usize, char)> {
    while i < chars.len() && chars[i].is_whitespace() {
        i += 1;
    }
    chars.get(i).map(|c| (i, *c))
}

/// Label names of a `{…}` matcher list or a `(…)` label list starting at `open`; returns
/// them and the index after the closing delimiter.
fn label_group(chars: &[char], open: usize, close: char) -> Result<(Vec<String>, usize), String> {
    let mut labels = Vec::new();
    let mut i = open + 1;
    while i < chars.len() {
        let c = chars[i];
        if c == close {
            return Ok((labels, i + 1));
        }
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(chars, i)?;
        } else if is_ident_start(c) {
            let (ident, end) = ident_at(chars, i);
            labels.push(ident);
            i = end;
        } else if "(){}[]".contains(c) {
            return Err(format!("unexpected {c:?} in a label list at {i}"));
        } else {
            i += 1;
        }
    }
    Err(format!("unclosed label list opened at {open}"))
}

/// The metric and label names of `expr`, or why it is not a well-formed expression
/// (unbalanced delimiters, an unterminated string, an unknown function).
fn promql_refs(expr: &str) -> Result<PromqlRefs, String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut refs = PromqlRefs::default();
    let mut depth = 0i32;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i)?;
        } else if c == '{' {
            let (labels, end) = label_group(&chars, i, '}')?;
            refs.labels.extend(labels);
            i = end;
        } else if c == '[' {
            // A range or subquery: durations and Grafana's $__rate_interval.
            let close = chars[i..]
                .iter()
                .position(|c| *c == ']')
                .ok_or_else(|| format!("unclosed range opened at {i}"))?;
            i += close + 1;
        } else if c == '(' {
            depth += 1;
            i += 1;
        } else if c == ')' {
            depth -= 1;
            if depth < 0 {
                return Err(format!("unbalanced ')' at {i}"));
            }
            i += 1;
        } else if c == '}' || c == ']' {
            return Err(format!("unbalanced {c:?} at {i}"));
        } else if c.is_ascii_digit() || c == '.' {
            // A number or a duration (`0.2`, `1e3`, `1d`).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c == '$' {
            let (_, end) = ident_at(&chars, i + 1);
            i = end.max(i + 1);
        } else if is_ident_start(c) {
            let (ident, end) = ident_at(&chars, i);
            i = end;
            let next = next_non_space(&chars, i);
            let lower = ident.to_ascii_lowercase();
            if LABEL_LIST_KEYWORDS.contains(&lower.as_str()) {
                if let Some((open, '(')) = next {
                    let (labels, end) = label_group(&chars, open, ')')?;
                    refs.labels.extend(labels);
                    i = end;
                }
            } else if KEYWORDS.contains(&lower.as_str()) || AGGREGATIONS.contains(&lower.as_str()) {
            } else if matches!(next, Some((_, '('))) {
                if !FUNCTIONS.contains(&ident.as_str()) {
                    return Err(format!("unknown function {ident}"));
                }
            } else {
                refs.metrics.insert(ident);
            }
        } else {
            i += 1;
        }
    }
    if depth != 0 {
        return Err(format!("{depth} unclosed '('"));
    }
    Ok(refs)
}

#[test]
fn the_promql_lexer_finds_metrics_and_labels() {
    fn check(expr: &str, metrics: &[&str], labels: &[&str]) {
        let refs = promql_refs(expr).unwrap_or_else(|error| panic!("{expr}: {error}"));
        let expected = PromqlRefs {
            metrics: metrics.iter().map(|m| m.to_string()).collect(),
            labels: labels.iter().map(|l| l.to_string()).collect(),
        };
        assert_eq!(refs, expected, "{expr}");
    }
    check(
        r#"sum by (env, outcome) (increase(biglearn_producer_errors_total{outcome!="definite"}[5m])) > 0"#,
        &["biglearn_producer_errors_total"],
        &["env", "outcome"],
    );
    check(
        r#"1 - sum(rate(a_bucket{env="x",le="0.2"}[$__rate_interval])) / sum(rate(a_count[5m]))"#,
        &["a_bucket", "a_count"],
        &["env", "le"],
    );
    check(
        "max by (env) (x) == 1 and on (env, instance) (y offset 10m) == 1",
        &["x", "y"],
        &["env", "instance"],
    );
    check(
        r#"histogram_quantile(0.5, sum by (le) (increase(h_bucket{s=~"a(b"}[6h]))) < 0.6"#,
        &["h_bucket"],
        &["le", "s"],
    );
}

#[test]
fn the_promql_lexer_rejects_malformed_expressions() {
    fn check(expr: &str, error_contains: &str) {
        match promql_refs(expr) {
            Ok(refs) => panic!("{expr} was accepted: {refs:?}"),
            Err(error) => assert!(error.contains(error_contains), "{expr}: {error}"),
        }
    }
    check("sum(rate(x[5m])", "unclosed '('");
    check("rate(x[5m]))", "unbalanced ')'");
    check(r#"x{a="b}"#, "unterminated string");
    check("x{a=\"b\"", "unclosed label list");
    check("rate(x[5m)", "unclosed range");
    check("ratee(x[5m])", "unknown function ratee");
}

// ---------------------------------------------------------------------------------------
// Where the expressions are.

/// Every panel of a dashboard, including those inside collapsed rows.
fn panels(dashboard: &Json) -> Vec<&Json> {
    fn walk<'a>(list: &'a Json, out: &mut Vec<&'a Json>) {
        for panel in list.as_array().into_iter().flatten() {
            out.push(panel);
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// (where, expr) of every PromQL expression: dashboard targets and alert rules.
fn all_expressions() -> Vec<(String, String)> {
    let mut exprs = Vec::new();
    for name in DASHBOARDS {
        let dashboard = dashboard(name);
        for panel in panels(&dashboard) {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name}: a target without expr: {target}"));
                exprs.push((
                    format!("{name}.json / {}", panel["title"].as_str().unwrap_or("?")),
                    expr.to_owned(),
                ));
            }
        }
    }
    for rule in alert_rules() {
        let name = rule["alert"].as_str().unwrap_or("?").to_owned();
        let expr = rule["expr"].as_str().unwrap_or_default().to_owned();
        exprs.push((format!("alerts.yml / {name}"), expr));
    }
    exprs
}

fn alert_rules() -> Vec<Yaml> {
    let rules = yaml(&repo().join("infra/prometheus/alerts.yml"));
    let groups = rules["groups"]
        .as_sequence()
        .expect("alerts.yml has groups");
    groups
        .iter()
        .flat_map(|group| group["rules"].as_sequence().cloned().unwrap_or_default())
        .collect()
}

/// Metric names of docs/design/operations.md §7.1 (`biglearn_kafka_*` is a pattern, left
/// out).
fn spec_metrics() -> BTreeSet<String> {
    let text = read(&repo().join("docs/design/operations.md"));
    let section = text
        .split("### 7.1 Metrics")
        .nth(1)
        .and_then(|rest| rest.split("\n### ").next())
        .expect("operations.md has a §7.1 metrics table");
    section
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .filter(|name| !name.ends_with('*'))
        .map(str::to_owned)
        .collect()
}

// ---------------------------------------------------------------------------------------
// A running node's /metrics.

/// Family name → type, from the `# TYPE` lines of a scrape.
fn families(scrape: &str) -> BTreeMap<String, String> {
    scrape
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| {
            let mut parts = rest.split_whitespace();
            Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
        })
        .collect()
}

/// Whether a metric name used in PromQL is served: a family, or a histogram's
/// `_bucket`/`_sum`/`_count` series.
fn is_served(metric: &str, families: &BTreeMap<String, String>) -> bool {
    families.contains_key(metric)
        || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            metric
                .strip_suffix(suffix)
                .and_then(|base| families.get(base))
                .is_some_and(|kind| kind == "histogram")
        })
}

fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Label values of every sample line.
fn label_values(scrape: &str) -> Vec<String> {
    scrape
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let open = line.find('{')?;
            let close = line.rfind('}')?;
            Some(line[open + 1..close].to_owned())
        })
        .flat_map(|labels| {
            labels
                .split("\",")
                .filter_map(|pair| {
                    pair.split_once('=')
                        .map(|(_, v)| v.trim_matches('"').to_owned())
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_in_the_dashboards_and_alerts_is_served_after_a_simulated_load() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), TestBackend::Embedded).await;
    let mut workload = WorkloadConfig::new(2, 5, 2, 11, NOW_MICROS - WEEK_MICROS);
    workload.cutoff_micros = Some(NOW_MICROS);
    let summary = biglearn_simulator::run_simulation(SimulateConfig {
        workload,
        target: node.base(),
        token: API_TOKEN.into(),
        concurrency: 8,
        rate: None,
        faults: Vec::new(),
        truth_out: None,
        request_timeout: Duration::from_secs(60),
        slow_delay: Duration::from_millis(50),
    })
    .await
    .unwrap();
    assert!(summary.is_success(), "{}", summary.to_table());
    assert!(summary.events_sent > 50, "{}", summary.to_table());
    let scrape = node
        .client()
        .get(format!("{}/metrics", node.base()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    node.stop().await.unwrap();

    let families = families(&scrape);
    follows_the_metric_conventions(&scrape, &families);
    let mut missing = Vec::new();
    let mut used = BTreeSet::new();
    for (place, expr) in all_expressions() {
        let refs = promql_refs(&expr).unwrap_or_else(|error| panic!("{place}: {error}: {expr}"));
        for metric in refs.metrics {
            if !is_served(&metric, &families) {
                missing.push(format!("{metric} (used by {place})"));
            }
            used.insert(metric);
        }
        for label in refs.labels {
            assert!(
                ALLOWED_LABELS.contains(&label.as_str()),
                "{place} uses the label {label:?}, which operations.md §7 does not allow"
            );
        }
    }
    assert!(
        missing.is_empty(),
        "metrics used by dashboards or alerts but absent from /metrics after the load:\n{}",
        missing.join("\n")
    );

    // Every §7.1 metric is on some dashboard or alert (and so, by the check above, served).
    let family_of = |metric: &str| -> String {
        ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| metric.strip_suffix(suffix))
            .filter(|base| families.get(*base).is_some_and(|kind| kind == "histogram"))
            .unwrap_or(metric)
            .to_owned()
    };
    let used_families: BTreeSet<String> = used.iter().map(|metric| family_of(metric)).collect();
    let spec_metrics = spec_metrics();
    assert!(spec_metrics.len() >= 30, "read §7.1: {spec_metrics:?}");
    let unused: Vec<String> = spec_metrics
        .into_iter()
        .filter(|metric| !used_families.contains(metric))
        .collect();
    assert!(
        unused.is_empty(),
        "§7.1 metrics on no dashboard and in no alert: {unused:?}"
    );

    // No unbounded label values: never a uuid.
    let uuids: Vec<String> = label_values(&scrape)
        .into_iter()
        .filter(|value| is_uuid(value))
        .collect();
    assert!(uuids.is_empty(), "uuid label values in /metrics: {uuids:?}");
    assert!(
        scrape
            .lines()
            .any(|line| line.starts_with("biglearn_build_info{version=") && line.ends_with(" 1")),
        "no biglearn_build_info"
    );
}

/// The naming conventions of docs/design/operations.md §7 and Prometheus's: counters end in
/// `_total` and nothing else does, the standard process metrics are there, and promtool's
/// linter (`promtool check metrics`, when installed) finds nothing.
fn follows_the_metric_conventions(scrape: &str, families: &BTreeMap<String, String>) {
    for (family, kind) in families {
        assert_eq!(
            kind == "counter",
            family.ends_with("_total"),
            "{family} is a {kind}: counters, and only counters, end in _total"
        );
        assert!(
            family.starts_with("biglearn_") || family.starts_with("process_"),
            "{family}: not a biglearn_ or process_ metric"
        );
    }
    if cfg!(target_os = "linux") {
        for family in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
            "process_threads",
        ] {
            assert!(families.contains_key(family), "no {family} in /metrics");
        }
    }
    let Some(promtool) = promtool() else {
        eprintln!(
            "promtool not found (PATH or .test-broker/bin; scripts/install-promtool.sh installs \
             it): checked the metric names with the structural checks only"
        );
        return;
    };
    let (clean, text) = promtool_check_metrics(&promtool, scrape);
    assert!(
        clean && text.trim().is_empty(),
        "promtool check metrics over a loaded node's /metrics:\n{text}"
    );
}

/// Whether `promtool check metrics` passes `exposition`, and what it said.
fn promtool_check_metrics(promtool: &Path, exposition: &str) -> (bool, String) {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), exposition.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn promtool_check_metrics_rejects_a_counter_without_total() {
    // The check above would catch a regression: promtool flags what it is meant to flag.
    let Some(promtool) = promtool() else {
        eprintln!("promtool not found: scripts/install-promtool.sh installs it");
        return;
    };
    let bad = "# HELP biglearn_blocks Blocks.\n# TYPE biglearn_blocks counter\nbiglearn_blocks 1\n";
    let (clean, text) = promtool_check_metrics(&promtool, bad);
    assert!(!clean, "{text}");
    assert!(text.contains("should have \"_total\" suffix"), "{text}");
}

#[test]
fn the_known_label_values_match_the_domain() {
    use biglearn_telemetry::known_labels;
    let course_types: Vec<&str> = biglearn_domain::events::CourseEventType::ALL
        .iter()
        .map(|t| t.as_str())
        .collect();
    assert_eq!(course_types, known_labels::COURSE_EVENT_TYPES);
    let ecosystem_types: Vec<&str> = biglearn_domain::events::EcosystemEventType::ALL
        .iter()
        .map(|t| t.as_str())
        .collect();
    assert_eq!(ecosystem_types, known_labels::ECOSYSTEM_EVENT_TYPES);
    let reasons: Vec<&str> = biglearn_events::DeadLetterReason::ALL
        .iter()
        .map(|r| r.as_str())
        .collect();
    assert_eq!(reasons, known_labels::DEAD_LETTER_REASONS);
    let kinds: Vec<&str> = biglearn_events::ResultKind::ALL
        .iter()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(kinds, known_labels::RESULT_KINDS);
    assert_eq!(
        known_labels::PROJECTIONS,
        [biglearn_projector::service::STATE]
    );
}

// ---------------------------------------------------------------------------------------
// Dashboards and data sources.

const PRODUCTION_DATASOURCE: &str = "prometheus";
const STAGING_DATASOURCE: &str = "prometheus-staging";
const MIXED_DATASOURCE: &str = "-- Mixed --";

/// The template variables a dashboard's queries select with: a data source variable, and
/// the `env` and `instance` variables whose values come from that data source.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Selection {
    datasource: String,
    env: String,
    instance: String,
}

impl Selection {
    /// The matchers every selector of a query on this data source carries.
    fn matchers(&self) -> String {
        format!("env=\"${}\",instance=~\"${}\"", self.env, self.instance)
    }
}

/// The template variables of a dashboard by name.
fn variables(dashboard: &Json) -> BTreeMap<String, Json> {
    dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|variable| {
            let name = variable["name"].as_str().expect("a named variable");
            (name.to_owned(), variable.clone())
        })
        .collect()
}

/// The selections a dashboard declares, checked: `<prefix>datasource` is a Prometheus data
/// source variable defaulting to `default_source`, `<prefix>env` lists the `env` values of
/// that data source (default `default_env`), `<prefix>instance` lists its instances in that
/// env (multi-valued, "All" by default).
fn selection(
    name: &str,
    variables: &BTreeMap<String, Json>,
    prefix: &str,
    default_source: &str,
    default_env: &str,
) -> Selection {
    let selection = Selection {
        datasource: format!("{prefix}datasource"),
        env: format!("{prefix}env"),
        instance: format!("{prefix}instance"),
    };
    let variable = |var: &str| -> &Json {
        variables
            .get(var)
            .unwrap_or_else(|| panic!("{name}: no template variable {var}"))
    };
    let source = variable(&selection.datasource);
    assert_eq!(source["type"], "datasource", "{name}: {source}");
    assert_eq!(source["query"], "prometheus", "{name}: {source}");
    assert_eq!(
        source["current"]["value"], default_source,
        "{name}: {source}"
    );
    let source_ref = format!("${{{}}}", selection.datasource);
    let env = variable(&selection.env);
    assert_eq!(env["type"], "query", "{name}: {env}");
    assert_eq!(
        env["datasource"]["uid"],
        source_ref.as_str(),
        "{name}: {env}"
    );
    assert_eq!(
        env["query"]["query"], "label_values(biglearn_build_info, env)",
        "{name}: {env}"
    );
    assert_eq!(env["current"]["value"], default_env, "{name}: {env}");
    let instance = variable(&selection.instance);
    assert_eq!(instance["type"], "query", "{name}: {instance}");
    assert_eq!(
        instance["datasource"]["uid"],
        source_ref.as_str(),
        "{name}: {instance}"
    );
    assert_eq!(
        instance["query"]["query"].as_str(),
        Some(
            format!(
                "label_values(biglearn_build_info{{env=\"${}\"}}, instance)",
                selection.env
            )
            .as_str()
        ),
        "{name}: {instance}"
    );
    assert_eq!(instance["multi"], true, "{name}: {instance}");
    assert_eq!(instance["includeAll"], true, "{name}: {instance}");
    assert_eq!(instance["allValue"], ".+", "{name}: {instance}");
    selection
}

/// Every metric reference of `expr` with its `{…}` matchers (empty when it has none).
fn selectors(expr: &str) -> Vec<(String, String)> {
    let refs = promql_refs(expr).unwrap_or_else(|error| panic!("{error}: {expr}"));
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i).unwrap();
        } else if c == '[' {
            i += chars[i..].iter().position(|c| *c == ']').unwrap() + 1;
        } else if c == '{' {
            i = label_group(&chars, i, '}').unwrap().1;
        } else if is_ident_start(c)
            && (i == 0 || (!is_ident_char(chars[i - 1]) && chars[i - 1] != '$'))
        {
            let (ident, end) = ident_at(&chars, i);
            i = end;
            if refs.metrics.contains(&ident) {
                let matchers = if chars.get(end) == Some(&'{') {
                    let close = label_group(&chars, end, '}').unwrap().1;
                    i = close;
                    chars[end + 1..close - 1].iter().collect()
                } else {
                    String::new()
                };
                out.push((ident, matchers));
            }
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn the_selector_finder_pairs_metrics_with_their_matchers() {
    assert_eq!(
        selectors(r#"sum by (le) (rate(a_bucket{env="$env",le="0.2"}[$__rate_interval])) / b"#),
        [
            ("a_bucket".to_owned(), r#"env="$env",le="0.2""#.to_owned()),
            ("b".to_owned(), String::new())
        ]
    );
}

#[test]
fn dashboards_are_provisioned_and_select_by_datasource_env_and_instance() {
    let provisioned = yaml(&repo().join("infra/grafana/provisioning/datasources/biglearn.yml"));
    let uids: BTreeSet<&str> = provisioned["datasources"]
        .as_sequence()
        .expect("datasources")
        .iter()
        .filter_map(|source| source["uid"].as_str())
        .collect();
    assert_eq!(
        uids,
        BTreeSet::from([PRODUCTION_DATASOURCE, STAGING_DATASOURCE])
    );
    let providers = yaml(&repo().join("infra/grafana/provisioning/dashboards/biglearn.yml"));
    let dashboards_path = providers["providers"][0]["options"]["path"]
        .as_str()
        .expect("a dashboards path");
    let compose = yaml(&repo().join("docker-compose.yml"));
    assert!(
        mounts(&compose["services"]["grafana"]).contains(&(
            "./infra/grafana/dashboards".to_owned(),
            dashboards_path.to_owned()
        )),
        "grafana does not mount infra/grafana/dashboards at {dashboards_path}"
    );

    let mut uids = BTreeSet::new();
    for name in DASHBOARDS {
        let dashboard = dashboard(name);
        assert!(uids.insert(dashboard["uid"].as_str().unwrap().to_owned()));
        let variables = variables(&dashboard);
        // The staging dashboard shows staging, and production beside it where it compares.
        let mut selections = if name == "staging" {
            vec![
                selection(name, &variables, "", STAGING_DATASOURCE, "staging"),
                selection(
                    name,
                    &variables,
                    "production_",
                    PRODUCTION_DATASOURCE,
                    "production",
                ),
            ]
        } else {
            vec![selection(
                name,
                &variables,
                "",
                PRODUCTION_DATASOURCE,
                "production",
            )]
        };
        assert_eq!(
            variables.len(),
            3 * selections.len(),
            "{name}: unexpected variables {:?}",
            variables.keys()
        );
        for link in dashboard["links"].as_array().into_iter().flatten() {
            assert_eq!(link["includeVars"], true, "{name}: {link}");
        }
        let mut n_targets = 0;
        let mut used = BTreeSet::new();
        for panel in panels(&dashboard) {
            let title = panel["title"].as_str().unwrap_or("?");
            let panel_source = panel["datasource"]["uid"].as_str();
            for target in panel["targets"].as_array().into_iter().flatten() {
                n_targets += 1;
                let source = target["datasource"]["uid"].as_str().unwrap_or_default();
                let expr = target["expr"].as_str().unwrap_or_default();
                assert!(
                    panel_source == Some(source) || panel_source == Some(MIXED_DATASOURCE),
                    "{name} / {title}: target and panel data sources differ"
                );
                let selection = selections
                    .iter()
                    .find(|selection| source == format!("${{{}}}", selection.datasource))
                    .unwrap_or_else(|| {
                        panic!("{name} / {title}: data source {source:?} is no variable")
                    });
                used.insert(selection.datasource.clone());
                for literal in ["env=\"production\"", "env=\"staging\"", "env=~", "env!"] {
                    assert!(
                        !expr.contains(literal),
                        "{name} / {title}: {literal} in {expr}: select with the variables"
                    );
                }
                let found = selectors(expr);
                assert!(!found.is_empty(), "{name} / {title}: no metric in {expr}");
                for (metric, matchers) in found {
                    assert!(
                        matchers.starts_with(&selection.matchers()),
                        "{name} / {title}: {metric} is not selected by {} ({expr})",
                        selection.matchers()
                    );
                }
            }
        }
        assert!(n_targets >= 6, "{name} has only {n_targets} queries");
        selections.retain(|selection| !used.contains(&selection.datasource));
        assert!(selections.is_empty(), "{name}: unused {selections:?}");
    }
}

/// (source, target) of a compose service's volume mounts.
fn mounts(service: &Yaml) -> Vec<(String, String)> {
    service["volumes"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|volume| volume.as_str())
        .filter_map(|volume| {
            let mut parts = volume.split(':');
            Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Alert rules and the scrape configuration.

#[test]
fn alert_rules_cover_operations_7_3_and_tell_the_operator_what_to_do() {
    let rules = alert_rules();
    let mut seen = BTreeMap::new();
    for rule in &rules {
        let name = rule["alert"].as_str().expect("every rule is an alert");
        for field in ["expr", "for"] {
            assert!(
                rule[field].as_str().is_some_and(|value| !value.is_empty()),
                "{name} has no {field}"
            );
        }
        let severity = rule["labels"]["severity"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no severity label"));
        assert!(["warn", "page"].contains(&severity), "{name}: {severity}");
        for annotation in ["summary", "description"] {
            assert!(
                rule["annotations"][annotation]
                    .as_str()
                    .is_some_and(|text| text.len() > 20),
                "{name} has no {annotation}"
            );
        }
        if let Some(runbook) = rule["annotations"]["runbook_url"].as_str() {
            // Links are absolute: the configurable base, then a file of this repository.
            let path = runbook.strip_prefix(RUNBOOK_BASE).unwrap_or_else(|| {
                panic!("{name}: runbook_url {runbook:?} does not start with {RUNBOOK_BASE}")
            });
            let (file, anchor) = path.split_once('#').expect("a runbook anchor");
            let heading = read(&repo().join(file))
                .lines()
                .filter_map(|line| line.strip_prefix("## "))
                .map(|title| title.to_lowercase().replace(' ', "-"))
                .any(|slug| slug == anchor);
            assert!(heading, "{name}: {runbook} names no section of {file}");
        }
        assert!(seen.insert(name.to_owned(), severity.to_owned()).is_none());
    }
    let required: BTreeMap<String, String> = REQUIRED_ALERTS
        .iter()
        .map(|(name, severity)| (name.to_string(), severity.to_string()))
        .collect();
    assert_eq!(seen, required);

    // The base comes from prometheus.yml's external label, which never reaches an
    // Alertmanager as a label; the unit tests render one link with a base.
    let config = yaml(&repo().join("infra/prometheus/prometheus.yml"));
    assert_eq!(
        config["global"]["external_labels"]["runbook_base_url"].as_str(),
        Some("${BIGLEARN_RUNBOOK_BASE_URL}")
    );
    let relabel = &config["alerting"]["alert_relabel_configs"][0];
    assert_eq!(relabel["action"].as_str(), Some("labeldrop"));
    assert_eq!(relabel["regex"].as_str(), Some("runbook_base_url"));
    let compose = yaml(&repo().join("docker-compose.yml"));
    let prometheus = &compose["services"]["prometheus"];
    assert!(
        prometheus["command"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|arg| arg.as_str() == Some("--enable-feature=expand-external-labels")),
        "compose's Prometheus does not expand ${{BIGLEARN_RUNBOOK_BASE_URL}}"
    );
    assert!(prometheus["environment"]["BIGLEARN_RUNBOOK_BASE_URL"]
        .as_str()
        .is_some_and(|value| value.starts_with("${BIGLEARN_RUNBOOK_BASE_URL:-https://")));
    let unit_tests: Yaml = yaml(&repo().join("infra/prometheus/tests/alerts_test.yml"));
    let rendered: Vec<String> = unit_tests["tests"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|test| {
            let base = test["external_labels"]["runbook_base_url"].as_str()?;
            let alerts = test["alert_rule_test"].as_sequence()?;
            Some(
                alerts
                    .iter()
                    .flat_map(|alert| {
                        alert["exp_alerts"]
                            .as_sequence()
                            .cloned()
                            .unwrap_or_default()
                    })
                    .filter_map(|alert| {
                        alert["exp_annotations"]["runbook_url"]
                            .as_str()
                            .filter(|url| url.starts_with(&format!("{base}/docs/")))
                            .map(str::to_owned)
                    })
                    .collect::<Vec<_>>(),
            )
        })
        .flatten()
        .collect();
    assert!(
        !rendered.is_empty(),
        "alerts_test.yml renders no runbook link from the runbook_base_url external label"
    );

    // Every alert is exercised by the promtool unit tests.
    let tests = read(&repo().join("infra/prometheus/tests/alerts_test.yml"));
    for (name, _) in REQUIRED_ALERTS {
        assert!(
            tests.contains(&format!("alertname=\"{name}\"")),
            "alerts_test.yml never expects {name} to fire"
        );
    }
}

#[test]
fn the_scrape_configuration_targets_the_compose_services() {
    let config = yaml(&repo().join("infra/prometheus/prometheus.yml"));
    let compose = yaml(&repo().join("docker-compose.yml"));
    let rule_files: Vec<&str> = config["rule_files"]
        .as_sequence()
        .expect("rule_files")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(rule_files, ["alerts.yml"]);
    let mut envs = BTreeSet::new();
    for job in config["scrape_configs"]
        .as_sequence()
        .expect("scrape_configs")
    {
        let job_name = job["job_name"].as_str().expect("job_name");
        if !job_name.starts_with("biglearn") {
            continue;
        }
        for static_config in job["static_configs"].as_sequence().expect("static_configs") {
            let env = static_config["labels"]["env"]
                .as_str()
                .unwrap_or_else(|| panic!("{job_name}: targets without an env label"));
            envs.insert(env.to_owned());
            for target in static_config["targets"].as_sequence().expect("targets") {
                let target = target.as_str().expect("a target");
                let (host, port) = target.split_once(':').expect("host:port");
                let service = &compose["services"][host];
                let command: Vec<&str> = service["command"]
                    .as_sequence()
                    .unwrap_or_else(|| panic!("{target} is no compose service with a command"))
                    .iter()
                    .filter_map(Yaml::as_str)
                    .collect();
                let listen = command
                    .windows(2)
                    .find(|pair| pair[0] == "--listen")
                    .map(|pair| pair[1])
                    .expect("--listen");
                assert_eq!(listen, format!("0.0.0.0:{port}"), "{target}");
            }
        }
    }
    assert_eq!(
        envs,
        BTreeSet::from(["production".to_owned(), "staging".to_owned()])
    );
}

/// promtool from PATH or from `.test-broker/bin` (scripts/install-promtool.sh).
fn promtool() -> Option<PathBuf> {
    let installed = repo().join(".test-broker/bin/promtool");
    let candidates = [PathBuf::from("promtool"), installed];
    candidates.into_iter().find(|candidate| {
        Command::new(candidate)
            .arg("--version")
            .output()
            .is_ok_and(|output| output.status.success())
    })
}

fn run_ok(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("{command:?} did not run: {error}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{command:?} failed:\n{text}");
    text
}

#[test]
fn rule_files_scrape_configuration_and_dashboard_queries_are_valid() {
    // Structural checks always run; promtool, when present, parses every expression
    // with Prometheus's own parser and runs the alert unit tests.
    for (place, expr) in all_expressions() {
        promql_refs(&expr).unwrap_or_else(|error| panic!("{place}: {error}: {expr}"));
    }
    let Some(promtool) = promtool() else {
        eprintln!(
            "promtool not found (PATH or .test-broker/bin; scripts/install-promtool.sh installs \
             it): checked the rule files and dashboards with the structural PromQL checks only"
        );
        return;
    };
    let prometheus = repo().join("infra/prometheus");
    let config = run_ok(
        Command::new(&promtool)
            .arg("check")
            .arg("config")
            .arg(prometheus.join("prometheus.yml")),
    );
    assert!(config.contains("SUCCESS"), "{config}");
    let rules = run_ok(
        Command::new(&promtool)
            .arg("check")
            .arg("rules")
            .arg(prometheus.join("alerts.yml")),
    );
    assert!(
        rules.contains(&format!("SUCCESS: {} rules found", REQUIRED_ALERTS.len())),
        "{rules}"
    );
    let tests = run_ok(
        Command::new(&promtool)
            .arg("test")
            .arg("rules")
            .arg(prometheus.join("tests/alerts_test.yml")),
    );
    assert!(tests.contains("SUCCESS"), "{tests}");

    // Dashboard queries, as recording rules (Grafana's interval variable as 5m).
    let dir = tempfile::tempdir().unwrap();
    let mut file = String::from("groups:\n  - name: dashboards\n    rules:\n");
    let mut n_queries = 0;
    for (place, expr) in all_expressions() {
        if place.starts_with("alerts.yml") {
            continue;
        }
        n_queries += 1;
        let expr = expr.replace("$__rate_interval", "5m");
        file.push_str(&format!(
            "      - record: dashboard:query_{n_queries}\n        expr: {}\n",
            serde_json::to_string(&expr).unwrap()
        ));
    }
    let path = dir.path().join("dashboards.yml");
    std::fs::write(&path, file).unwrap();
    let checked = run_ok(Command::new(&promtool).arg("check").arg("rules").arg(&path));
    assert!(
        checked.contains(&format!("SUCCESS: {n_queries} rules found")),
        "{checked}"
    );
}

// ---------------------------------------------------------------------------------------
// docker compose and the Dockerfile.

/// The compose client: the `docker compose` plugin, else the standalone
/// `docker-compose`, as program and leading arguments.
fn compose_client() -> Option<(&'static str, &'static [&'static str])> {
    let candidates: [(&'static str, &'static [&'static str]); 2] =
        [("docker", &["compose"]), ("docker-compose", &[])];
    candidates.into_iter().find(|(program, args)| {
        Command::new(program)
            .args(*args)
            .arg("version")
            .output()
            .is_ok_and(|output| output.status.success())
    })
}

#[test]
fn the_compose_file_runs_kafka_biglearn_prometheus_grafana_and_staging() {
    if let Some((program, args)) = compose_client() {
        let config = [
            "-f",
            "docker-compose.yml",
            "--profile",
            "staging",
            "config",
            "--quiet",
        ];
        run_ok(
            Command::new(program)
                .current_dir(repo())
                .args(args)
                .args(config),
        );
    } else {
        eprintln!(
            "neither `docker compose` nor `docker-compose` is available: checked \
             docker-compose.yml structurally only"
        );
    }
    let compose = yaml(&repo().join("docker-compose.yml"));
    let services = &compose["services"];
    for name in [
        "kafka",
        "biglearn",
        "biglearn-staging",
        "prometheus",
        "grafana",
    ] {
        assert!(services[name].is_mapping(), "no service {name}");
    }

    let kafka = &services["kafka"]["environment"];
    assert_eq!(
        kafka["KAFKA_PROCESS_ROLES"].as_str(),
        Some("broker,controller")
    );
    check_kafka_keeps_its_data_and_listens_for_the_host(&services["kafka"]);

    // Every service says when it is healthy (depends_on conditions and `docker compose ps`).
    for (name, service) in services.as_mapping().unwrap() {
        let test: Vec<&str> = service["healthcheck"]["test"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{name:?} has no healthcheck"))
            .iter()
            .filter_map(Yaml::as_str)
            .collect();
        assert!(
            test.len() >= 2 && ["CMD", "CMD-SHELL"].contains(&test[0]),
            "{name:?}: healthcheck test {test:?}"
        );
    }

    // One image: biglearn builds it, staging runs it by name and never pulls it.
    let image = services["biglearn"]["image"]
        .as_str()
        .expect("biglearn names the image it builds");
    assert_eq!(services["biglearn"]["build"].as_str(), Some("."));
    let built: Vec<&str> = services
        .as_mapping()
        .unwrap()
        .iter()
        .filter(|(_, service)| !service["build"].is_null())
        .filter_map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(built, ["biglearn"], "only biglearn builds an image");
    let staging = &services["biglearn-staging"];
    assert_eq!(staging["image"].as_str(), Some(image));
    assert_eq!(staging["pull_policy"].as_str(), Some("never"));
    let profiles: Vec<&str> = staging["profiles"]
        .as_sequence()
        .expect("staging has profiles")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(profiles, ["staging"]);
    for (name, service) in services.as_mapping().unwrap() {
        if name.as_str() != Some("biglearn-staging") {
            assert!(
                service["profiles"].is_null(),
                "{name:?} runs only in a profile"
            );
        }
    }
    let data_volume = |service: &Yaml| {
        mounts(service)
            .into_iter()
            .find(|(_, target)| target == "/var/lib/biglearn/data")
            .map(|(source, _)| source)
            .expect("a data volume")
    };
    assert_ne!(
        data_volume(&services["biglearn"]),
        data_volume(staging),
        "staging must keep its own sled state"
    );
    let staging_command: Vec<&str> = staging["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    // `staging run` refuses the writer role and reads production's topics read-only.
    assert!(
        staging_command.starts_with(&["staging", "run"])
            && !staging_command
                .windows(2)
                .any(|pair| pair[0] == "--role" && pair[1].contains("writer")),
        "staging must not run a writer against production's topics: {staging_command:?}"
    );

    let prometheus = &services["prometheus"];
    assert!(mounts(prometheus).contains(&(
        "./infra/prometheus".to_owned(),
        "/etc/prometheus".to_owned()
    )));
    assert!(prometheus["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|arg| arg.as_str() == Some("--config.file=/etc/prometheus/prometheus.yml")));
    let grafana = &services["grafana"];
    assert!(mounts(grafana).contains(&(
        "./infra/grafana/provisioning".to_owned(),
        "/etc/grafana/provisioning".to_owned()
    )));
    assert_eq!(grafana["ports"][0].as_str(), Some("3000:3000"));
    assert_eq!(
        grafana["environment"]["GF_AUTH_ANONYMOUS_ENABLED"].as_str(),
        Some("true")
    );
    assert_eq!(
        grafana["environment"]["GF_AUTH_ANONYMOUS_ORG_ROLE"].as_str(),
        Some("Viewer")
    );
    for (source, _) in mounts(prometheus).into_iter().chain(mounts(grafana)) {
        if source.starts_with("./") {
            assert!(repo().join(&source).is_dir(), "{source} does not exist");
        }
    }

    let dockerfile = read(&repo().join("Dockerfile"));
    let stages = dockerfile
        .lines()
        .filter(|line| line.starts_with("FROM "))
        .count();
    assert!(stages >= 2, "the Dockerfile is not multi-stage");
    assert!(dockerfile.contains("COPY --from=build"));
    assert!(
        dockerfile.contains("--mount=type=cache"),
        "the build stage caches nothing"
    );
    // A stripped binary in the image, without changing the workspace's release profile.
    assert!(
        dockerfile.contains("CARGO_PROFILE_RELEASE_STRIP=true"),
        "the image's binary is not stripped"
    );
}

/// An environment value of a compose service.
fn env_value<'a>(service: &'a Yaml, key: &str) -> &'a str {
    service["environment"][key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key}"))
}

/// `NAME://host:port` entries of a Kafka listener list, by name.
fn listeners(list: &str) -> BTreeMap<String, (String, u16)> {
    list.split(',')
        .map(|entry| {
            let (name, address) = entry.split_once("://").expect("NAME://host:port");
            let (host, port) = address.rsplit_once(':').expect("host:port");
            (
                name.to_owned(),
                (host.to_owned(), port.parse().expect("a port number")),
            )
        })
        .collect()
}

/// Kafka writes its log dirs on the mounted `kafka-data` volume, and an EXTERNAL listener is
/// published on the host and advertised as `localhost` for host tools.
fn check_kafka_keeps_its_data_and_listens_for_the_host(kafka: &Yaml) {
    let (_, data_dir) = mounts(kafka)
        .into_iter()
        .find(|(source, _)| source == "kafka-data")
        .expect("kafka mounts the kafka-data volume");
    let log_dirs = env_value(kafka, "KAFKA_LOG_DIRS");
    for dir in log_dirs.split(',') {
        assert!(
            Path::new(dir).starts_with(&data_dir),
            "KAFKA_LOG_DIRS {dir} is not on the kafka-data volume ({data_dir})"
        );
    }
    assert!(
        kafka["environment"]["KAFKA_METADATA_LOG_DIR"].is_null(),
        "the KRaft metadata log must stay in the log dirs"
    );

    let bound = listeners(env_value(kafka, "KAFKA_LISTENERS"));
    let advertised = listeners(env_value(kafka, "KAFKA_ADVERTISED_LISTENERS"));
    let protocols: BTreeMap<&str, &str> = env_value(kafka, "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP")
        .split(',')
        .filter_map(|pair| pair.split_once(':'))
        .collect();
    for name in bound.keys() {
        assert!(
            protocols.contains_key(name.as_str()),
            "listener {name} has no security protocol"
        );
    }
    assert_eq!(
        env_value(kafka, "KAFKA_INTER_BROKER_LISTENER_NAME"),
        "PLAINTEXT"
    );
    assert_eq!(advertised["PLAINTEXT"], ("kafka".to_owned(), 9092));
    let (_, external_port) = bound.get("EXTERNAL").expect("an EXTERNAL listener");
    let (external_host, advertised_port) =
        advertised.get("EXTERNAL").expect("EXTERNAL is advertised");
    assert_eq!(external_host, "localhost", "host tools reach localhost");
    let published: Vec<&str> = kafka["ports"]
        .as_sequence()
        .expect("kafka publishes ports")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert!(
        published.contains(&format!("127.0.0.1:{advertised_port}:{external_port}").as_str()),
        "EXTERNAL (:{external_port}) is not published on the host's loopback at \
         {advertised_port}: {published:?}"
    );
}
