//! Temporary timing probe (removed after measuring).
use biglearn_simulator::{generate_offline, WorkloadConfig};
fn rss() -> String { std::fs::read_to_string("/proc/self/status").unwrap_or_default().lines().filter(|l| l.starts_with("VmHWM")).collect() }
#[test]
fn perf() {
    for (courses, students, weeks) in [(50usize, 40usize, 4u32), (100, 40, 4), (200, 40, 4), (400, 40, 4)] {
        let t = std::time::Instant::now();
        let mut bytes = 0usize;
        let mut config = WorkloadConfig::new(courses, students, weeks, 1, 1_503_273_600_000_000);
        config.collect_truth = false;
        let s = generate_offline(&config, |r| { bytes += r.body.as_object().map_or(0, |m| m.len()); });
        println!("{courses}x{students}x{weeks}: {} requests {} events {} responses in {:?} {}", s.requests, s.events, s.responses, t.elapsed(), rss());
    }
}
