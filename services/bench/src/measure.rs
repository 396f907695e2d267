//! What the benchmarks share: latency percentiles, the API token, /metrics scrapes.

use std::path::Path;

use anyhow::Context;

/// Latency percentiles in milliseconds (nearest rank).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LatencySummary {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

pub fn summarize(mut micros: Vec<u64>) -> LatencySummary {
    micros.sort_unstable();
    let at = |quantile: f64| -> f64 {
        if micros.is_empty() {
            return 0.0;
        }
        let rank = (quantile * micros.len() as f64).ceil() as usize;
        micros[rank.clamp(1, micros.len()) - 1] as f64 / 1000.0
    };
    LatencySummary {
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: at(1.0),
    }
}

/// Rounds to microseconds for the JSON line.
pub fn ms3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// `--token`, else the `api-token` file that `biglearn up` keeps in `data_dir`.
pub fn api_token(token: Option<&str>, data_dir: &Path) -> anyhow::Result<String> {
    match token {
        Some(token) => Ok(token.to_owned()),
        None => {
            let path = data_dir.join("api-token");
            std::fs::read_to_string(&path)
                .map(|text| text.trim().to_owned())
                .with_context(|| {
                    format!(
                        "no API token: set BIGLEARN_API_TOKEN or pass --token (none found in {})",
                        path.display()
                    )
                })
        }
    }
}

/// The /metrics text of the node at `base` (`http://host:port`).
pub async fn scrape(client: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .context("GET /metrics failed")?
        .text()
        .await
        .context("reading /metrics failed")
}
