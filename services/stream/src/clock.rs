//! The wall clock, read in one place: records are stamped with it (accepted at,
//! observed at) and consumers measure lag against it. Pure code takes "now" as a
//! parameter instead (`biglearn-domain`, `biglearn-scheduler`).

/// Microseconds since the Unix epoch; 0 if the system clock is before the epoch.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_micros() as i64)
        .unwrap_or(0)
}
