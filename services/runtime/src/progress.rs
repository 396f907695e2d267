//! Where a consumer stands: positions, catch-up, counts, and a stall while it retries.

/// Published after every batch, and whenever a stall starts or ends.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsumerProgress {
    /// Next offset per partition, as stored with the projection's state.
    pub positions: Vec<i64>,
    /// High watermarks observed when the consumer started.
    pub start_high_watermarks: Vec<i64>,
    /// Every partition has reached its start high watermark.
    pub caught_up: bool,
    /// Records applied since start.
    pub n_applied: u64,
    /// Re-deliveries dropped since start.
    pub n_duplicates: u64,
    /// Records dead-lettered since start.
    pub n_dead_lettered: u64,
    /// The transient error the consumer is retrying now, if any (shown by `/readyz`).
    pub stalled: Option<String>,
}

/// Whether every position has reached its high watermark.
pub fn is_caught_up(positions: &[i64], high_watermarks: &[i64]) -> bool {
    positions
        .iter()
        .zip(high_watermarks)
        .all(|(position, high)| position >= high)
}
