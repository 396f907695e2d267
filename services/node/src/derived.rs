//! The runtime of derived state: every consumer that turns the log into state (event-log
//! and state projections, the scheduler's loop, the response router and the SPARFA
//! consumer, the results and model followers) runs on its own threads, at a lower CPU
//! priority than the threads that answer HTTP.
//!
//! Why: a projection applies a batch of thousands of records as one synchronous sled
//! batch. On the threads that also answer requests, every request queued behind such a
//! batch waits for it (a write's own append takes about a millisecond; its answer took
//! 40 ms). Apart, the request path never waits behind derived work, and under a burst the
//! derived state lags a little behind the log (visible in `biglearn_consumer_lag_*` and
//! `/readyz`) instead of the writes slowing down; it catches up as soon as the burst ends.

use tokio::runtime::{Handle, Runtime};

/// The environment variable that sets the niceness (0..=19) of the derived-state
/// threads; 0 runs them at the priority of the request path.
pub const DERIVED_NICE_ENV: &str = "BIGLEARN_DERIVED_NICE";

/// The default niceness: the request path gets about three quarters of a contended CPU,
/// the derived state the rest (Linux CFS weights 1024 vs 335).
pub const DEFAULT_DERIVED_NICE: i32 = 5;

/// The niceness of `BIGLEARN_DERIVED_NICE`, or the default.
pub fn nice_from_env() -> anyhow::Result<i32> {
    match std::env::var(DERIVED_NICE_ENV) {
        Ok(text) if !text.trim().is_empty() => parse_nice(&text),
        _ => Ok(DEFAULT_DERIVED_NICE),
    }
}

fn parse_nice(text: &str) -> anyhow::Result<i32> {
    match text.trim().parse::<i32>() {
        Ok(nice) if (0..=19).contains(&nice) => Ok(nice),
        _ => Err(anyhow::anyhow!(
            "{DERIVED_NICE_ENV}={text:?} is not a niceness from 0 (the request path's priority) to 19 (the lowest)"
        )),
    }
}

/// A multi-thread runtime whose threads (workers and blocking pool) run `nice` steps below
/// the thread that starts it (at most at 19).
pub struct DerivedRuntime {
    runtime: Option<Runtime>,
    handle: Handle,
}

impl DerivedRuntime {
    /// One worker per core: derived work may use every core the request path leaves idle.
    pub fn start(nice: i32) -> std::io::Result<DerivedRuntime> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        // Absolute, computed once: a blocking thread spawned from a derived thread
        // inherits its niceness and must not be lowered again.
        let target = (own_priority() + nice).min(19);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("biglearn-derived")
            .on_thread_start(move || set_priority(target))
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        Ok(DerivedRuntime {
            runtime: Some(runtime),
            handle,
        })
    }

    /// Where derived components are spawned.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for DerivedRuntime {
    // Dropped from async code at the end of a run (every component stopped by then): a
    // blocking shutdown is not allowed there.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The calling thread's niceness (0 where it cannot be read).
fn own_priority() -> i32 {
    #[cfg(target_os = "linux")]
    {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap_or(0)
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// Sets the calling thread's niceness (on Linux, niceness is per thread).
fn set_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    if let Err(error) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice) {
        tracing::debug!(%error, nice, "A derived-state thread keeps its priority.");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_threads_run_at_the_lower_priority_and_blocking_ones_too() {
        let own = own_priority();
        let derived = DerivedRuntime::start(7).unwrap();
        let (worker, blocking) = derived.handle().block_on(async {
            tokio::spawn(async {
                let worker = own_priority();
                // Spawned from a derived thread: lowered once, not twice.
                let blocking = tokio::task::spawn_blocking(own_priority).await.unwrap();
                (worker, blocking)
            })
            .await
            .unwrap()
        });
        assert_eq!(worker, (own + 7).min(19));
        assert_eq!(blocking, (own + 7).min(19));
        assert_eq!(
            own_priority(),
            own,
            "the starting thread keeps its priority"
        );
    }

    #[test]
    fn the_niceness_is_checked() {
        assert_eq!(parse_nice("0").unwrap(), 0);
        assert_eq!(parse_nice(" 19 ").unwrap(), 19);
        for wrong in ["20", "-1", "x", "5.5"] {
            let error = parse_nice(wrong).unwrap_err().to_string();
            assert!(error.contains(DERIVED_NICE_ENV), "{error}");
        }
    }
}
