//! The logical clock of docs/design/scheduler.md §2.3, as the shell keeps it.
//!
//! Simplification (documented in lib.rs): the clock advances to `wall clock −
//! CLOCK_SAFETY_LAG` while the state consumers are caught up, and holds still while they
//! catch up. The spec's `max(accepted_at)` term is not tracked: the batch hook sees
//! effects, not records, so the clock may trail a just-accepted record by up to the lag.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How far behind the wall clock the logical clock stays while caught up.
pub const CLOCK_SAFETY_LAG: Duration = Duration::from_secs(5);

/// The wall clock in microseconds since the epoch; injected so that tests control time.
pub type WallClock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system wall clock.
pub fn system_wall_clock() -> WallClock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_micros() as i64)
    })
}

/// A monotonic logical time in microseconds, shared by the batch hook and the loop.
#[derive(Clone, Debug, Default)]
pub struct LogicalClock(Arc<AtomicI64>);

impl LogicalClock {
    /// A clock at `start` micros.
    pub fn new(start: i64) -> LogicalClock {
        LogicalClock(Arc::new(AtomicI64::new(start)))
    }

    /// The current logical time.
    pub fn now(&self) -> i64 {
        self.0.load(Ordering::Acquire)
    }

    /// Moves the clock to `at` unless it is already later (it never moves backwards).
    pub fn advance_to(&self, at: i64) -> i64 {
        self.0.fetch_max(at, Ordering::AcqRel).max(at)
    }

    /// The caught-up rule: `wall − CLOCK_SAFETY_LAG`.
    pub fn advance_with_wall(&self, wall_micros: i64) -> i64 {
        self.advance_to(wall_micros - CLOCK_SAFETY_LAG.as_micros() as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_never_moves_backwards() {
        let clock = LogicalClock::new(0);
        assert_eq!(clock.advance_with_wall(10_000_000), 5_000_000);
        assert_eq!(clock.advance_to(1), 5_000_000);
        assert_eq!(clock.now(), 5_000_000);
        assert_eq!(clock.advance_to(6_000_000), 6_000_000);
    }
}
