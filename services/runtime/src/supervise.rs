//! [`supervise`]: the runtime's retry discipline for components that own their loop
//! (consumer-group members that fit models or route responses).

use std::fmt::Display;
use std::future::Future;

use biglearn_telemetry::Metrics;
use tokio::sync::watch;

use crate::Backoff;

/// Runs the component that `start` builds until it ends cleanly or with an error that
/// `is_transient` calls fatal; after a transient error the component is built again
/// (it resumes from the positions it stored) after a capped backoff. A run that lasted
/// longer than a minute resets the backoff. Ends with Ok on shutdown.
pub async fn supervise<E, Fut>(
    component: &str,
    mut start: impl FnMut() -> Fut,
    is_transient: impl Fn(&E) -> bool,
    metrics: Option<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), E>
where
    E: Display,
    Fut: Future<Output = Result<(), E>>,
{
    let mut backoff = Backoff::default();
    loop {
        let started = std::time::Instant::now();
        let error = match start().await {
            Ok(()) => return Ok(()),
            Err(error) if is_transient(&error) => error,
            Err(error) => {
                tracing::error!(component, %error, "Component failed.");
                return Err(error);
            }
        };
        if *shutdown.borrow() {
            return Ok(());
        }
        if started.elapsed() > std::time::Duration::from_secs(60) {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        tracing::warn!(component, %error, retry_in_ms = delay.as_millis() as u64, "Component stopped by a transient error; restarting it.");
        if let Some(metrics) = &metrics {
            metrics.consumer_retried(component);
            metrics.consumer_stalled(component, true);
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => return Ok(()),
        }
        if let Some(metrics) = &metrics {
            metrics.consumer_stalled(component, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn a_transient_failure_restarts_the_component_and_a_fatal_one_ends_it() {
        let (_stop, shutdown) = watch::channel(false);
        let runs = Arc::new(AtomicU32::new(0));
        let counter = runs.clone();
        let outcome = supervise(
            "test",
            move || {
                let run = counter.fetch_add(1, Ordering::SeqCst);
                async move {
                    match run {
                        0 | 1 => Err("timed out".to_owned()),
                        _ => Err("fenced".to_owned()),
                    }
                }
            },
            |error: &String| error.contains("timed out"),
            None,
            shutdown,
        )
        .await;
        assert_eq!(outcome, Err("fenced".to_owned()));
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_during_the_backoff_ends_cleanly() {
        let (stop, shutdown) = watch::channel(false);
        let outcome = supervise(
            "test",
            move || {
                stop.send_replace(true);
                async { Err::<(), _>("timed out".to_owned()) }
            },
            |_: &String| true,
            None,
            shutdown,
        )
        .await;
        assert_eq!(outcome, Ok(()));
    }
}
