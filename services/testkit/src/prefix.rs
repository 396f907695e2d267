//! Topic prefixes unique per test, so tests can share one broker.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static NEXT: AtomicU64 = AtomicU64::new(0);

/// `t<pid>-<millis>-<n>-<label>`: unique across concurrent test processes and reruns
/// against a long-lived broker. `label` is reduced to `[a-z0-9-]`.
pub fn unique_topic_prefix(label: &str) -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis())
        .unwrap_or_default();
    let label: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!(
        "t{}-{millis}-{}-{label}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_unique_and_topic_safe() {
        let first = unique_topic_prefix("Conformance: append_and_read");
        let second = unique_topic_prefix("Conformance: append_and_read");
        assert_ne!(first, second);
        assert!(first.ends_with("-conformance--append-and-read"), "{first}");
        assert!(first
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
    }
}
