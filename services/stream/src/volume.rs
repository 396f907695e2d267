//! Free space on the volume of the data directory (statvfs), the reserve below which new
//! writes are refused, and disk-fault injection at the embedded log's exact I/O points.
//!
//! A full disk must never reach sled (whose first failed write poisons the whole database
//! until the process restarts) nor leave a half-written log: the writer refuses Tutor's
//! writes while the volume's free space is below the reserve, so the derived state of
//! what was accepted still has room. [`DiskFaults`] lets a test make the log's writes
//! fail with `ENOSPC` (after a partial write, as a real full disk does) or make the
//! volume look full, without a small filesystem.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

/// Largest default reserve: 256 MiB is room for sled to apply what was accepted, for the
/// results and models computed from it, and for sled's own segment rewrites.
pub const MAX_DEFAULT_RESERVE_BYTES: u64 = 256 << 20;

/// `ENOSPC`.
const NO_SPACE: i32 = 28;

/// The default reserve of a volume of `total_bytes`: 5 % of it, at most 256 MiB.
pub fn default_reserve_bytes(total_bytes: u64) -> u64 {
    (total_bytes / 20).min(MAX_DEFAULT_RESERVE_BYTES)
}

/// One look at the volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpaceReport {
    /// Bytes an unprivileged process may still write (`f_bavail × f_frsize`).
    pub available_bytes: u64,
    /// The volume's size (`f_blocks × f_frsize`).
    pub total_bytes: u64,
    /// New writes are refused while `available_bytes` is below this.
    pub reserve_bytes: u64,
}

impl SpaceReport {
    /// Whether new writes must be refused.
    pub fn is_short(&self) -> bool {
        self.available_bytes < self.reserve_bytes
    }
}

/// The volume holding a directory, with its reserve.
#[derive(Clone, Debug)]
pub struct VolumeSpace {
    dir: PathBuf,
    reserve_bytes: Option<u64>,
    faults: Option<Arc<DiskFaults>>,
}

/// Why the volume refuses new writes.
#[derive(Debug, thiserror::Error)]
pub enum SpaceError {
    #[error("the data volume of {dir} has {available} bytes free, below the reserve of {reserve} bytes kept for the state of accepted writes; free space on that volume (writes resume by themselves)")]
    Short {
        dir: String,
        available: u64,
        reserve: u64,
    },
    #[error("cannot read the free space of the data volume of {dir}: {source}")]
    Probe {
        dir: String,
        #[source]
        source: io::Error,
    },
}

impl VolumeSpace {
    /// The volume of `dir`; `reserve_bytes` overrides [`default_reserve_bytes`].
    pub fn new(dir: &Path, reserve_bytes: Option<u64>) -> VolumeSpace {
        VolumeSpace {
            dir: dir.to_owned(),
            reserve_bytes,
            faults: DiskFaults::for_path(dir),
        }
    }

    /// The directory whose volume this is.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads the volume's free space now.
    pub fn probe(&self) -> Result<SpaceReport, SpaceError> {
        let stat = rustix::fs::statvfs(&self.dir).map_err(|errno| SpaceError::Probe {
            dir: self.dir.display().to_string(),
            source: io::Error::from(errno),
        })?;
        let total_bytes = stat.f_blocks.saturating_mul(stat.f_frsize);
        let mut available_bytes = stat.f_bavail.saturating_mul(stat.f_frsize);
        if self
            .faults
            .as_ref()
            .is_some_and(|faults| faults.volume_full.load(Ordering::SeqCst))
        {
            available_bytes = 0;
        }
        Ok(SpaceReport {
            available_bytes,
            total_bytes,
            reserve_bytes: self
                .reserve_bytes
                .unwrap_or_else(|| default_reserve_bytes(total_bytes)),
        })
    }

    /// `Ok` with the report when new writes may go ahead, else why not.
    pub fn check(&self) -> Result<SpaceReport, SpaceError> {
        let report = self.probe()?;
        if report.is_short() {
            return Err(SpaceError::Short {
                dir: self.dir.display().to_string(),
                available: report.available_bytes,
                reserve: report.reserve_bytes,
            });
        }
        Ok(report)
    }
}

/// Injected disk faults for every path under one root (tests): the embedded log's writes
/// fail with `ENOSPC`, or the volume reports no free space. Dropping the last handle
/// ends the injection.
#[derive(Debug, Default)]
pub struct DiskFaults {
    fail_writes: AtomicBool,
    volume_full: AtomicBool,
}

type Registry = Mutex<Vec<(PathBuf, Weak<DiskFaults>)>>;

fn registry() -> &'static Registry {
    static REGISTRY: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

impl DiskFaults {
    /// Starts injecting faults (none switched on yet) under `root`, for stores and
    /// volumes opened after this call.
    pub fn inject(root: &Path) -> Arc<DiskFaults> {
        let faults = Arc::new(DiskFaults::default());
        let mut registry = registry().lock();
        registry.retain(|(_, faults)| faults.strong_count() > 0);
        registry.push((root.to_owned(), Arc::downgrade(&faults)));
        faults
    }

    /// The faults injected under an ancestor of `path`, if any.
    pub(crate) fn for_path(path: &Path) -> Option<Arc<DiskFaults>> {
        registry()
            .lock()
            .iter()
            .filter(|(root, _)| path.starts_with(root))
            .find_map(|(_, faults)| faults.upgrade())
    }

    /// Makes the log's writes fail with `ENOSPC` (after writing half of their bytes).
    pub fn set_fail_writes(&self, on: bool) {
        self.fail_writes.store(on, Ordering::SeqCst);
    }

    /// Makes the volume report no free space.
    pub fn set_volume_full(&self, on: bool) {
        self.volume_full.store(on, Ordering::SeqCst);
    }

    /// Whether writes fail now.
    pub(crate) fn writes_fail(&self) -> bool {
        self.fail_writes.load(Ordering::SeqCst)
    }

    /// The error a full disk gives.
    pub(crate) fn no_space() -> io::Error {
        io::Error::from_raw_os_error(NO_SPACE)
    }
}

/// Whether an I/O error means the volume (or a quota) is full.
pub fn is_no_space(error: &io::Error) -> bool {
    // ENOSPC, EDQUOT.
    matches!(error.raw_os_error(), Some(28) | Some(122))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_reserve_is_five_percent_capped() {
        assert_eq!(default_reserve_bytes(48 << 20), (48 << 20) / 20);
        assert_eq!(default_reserve_bytes(100 << 30), MAX_DEFAULT_RESERVE_BYTES);
    }

    #[test]
    fn a_volume_reports_space_and_injected_fullness() {
        let dir = tempfile::tempdir().unwrap();
        let space = VolumeSpace::new(dir.path(), Some(1));
        let report = space
            .check()
            .expect("a fresh temporary directory has space");
        assert!(report.total_bytes >= report.available_bytes);
        assert!(report.available_bytes > 0);

        let faults = DiskFaults::inject(dir.path());
        std::fs::create_dir(dir.path().join("log")).unwrap();
        let space = VolumeSpace::new(&dir.path().join("log"), Some(1));
        faults.set_volume_full(true);
        let refused = space.check().expect_err("an injected full volume refuses");
        assert!(refused.to_string().contains("0 bytes free"), "{refused}");
        faults.set_volume_full(false);
        assert!(space.check().is_ok());
        assert!(is_no_space(&DiskFaults::no_space()));
    }
}
