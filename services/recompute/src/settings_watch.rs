//! Settings act at once (docs/design/scheduler.md S9, docs/design/operations.md O8): a
//! settings version that changes a course's resolved `scheduler.*` or `clue.*` values
//! marks the whole course dirty and raises the course's **settings floor** to that version,
//! so that the course is computed at it without waiting for its next event.
//!
//! A course's effective settings version is the later of its last applied event's
//! `settings_version` and its floor. Floors and the last version looked at are hook rows
//! of the state projection's tree (transient work, outside the state hash): a fresh
//! generation has none, looks at every course once, and so reaches the same effective
//! versions as live processing did — a replay resolves as live processing did.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use biglearn_domain::ids::CourseUuid;
use biglearn_scheduler::SchedulerSettings;
use uuid::Uuid;

use crate::rows::{in_tree, whole_course_key, DirtyMark};

/// `f ‖ course` → the course's settings floor (i64, big-endian).
pub const SETTINGS_FLOOR: u8 = b'f';
/// `v` → the newest settings version the watch has looked at (i64, big-endian).
pub const SETTINGS_SEEN: u8 = b'v';

/// Where the shell reads the scheduler settings.
#[derive(Clone)]
pub struct SettingsSource {
    /// `course`'s settings at the later of its last applied event's `settings_version` (the
    /// newest version when none is applied) and the given floor.
    pub resolve: Arc<dyn Fn(CourseUuid, i64) -> SchedulerSettings + Send + Sync>,
    /// The newest settings version this process has applied (0 before the first).
    pub latest_version: Arc<dyn Fn() -> i64 + Send + Sync>,
}

impl SettingsSource {
    /// The same settings for every course and version (tests, tools without settings).
    pub fn fixed(settings: SchedulerSettings) -> SettingsSource {
        SettingsSource {
            resolve: Arc::new(move |_, _| settings),
            latest_version: Arc::new(|| 0),
        }
    }
}

/// The floors of the tree they were read from, shared by the hook and the loop.
#[derive(Clone, Default)]
pub struct SettingsFloors(Arc<Mutex<Floors>>);

#[derive(Default)]
struct Floors {
    /// The tree the floors belong to (a rebuild switches to a fresh one).
    tree: Option<sled::IVec>,
    seen: i64,
    by_course: HashMap<CourseUuid, i64>,
}

fn floor_key(course: CourseUuid) -> Vec<u8> {
    let mut key = vec![SETTINGS_FLOOR];
    key.extend_from_slice(course.0.as_bytes());
    key
}

fn read_i64(bytes: &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(bytes.try_into().ok()?))
}

/// What one look at the settings found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SettingsLook {
    /// Courses whose resolved settings changed: marked whole-course dirty.
    pub courses: usize,
}

impl SettingsFloors {
    fn lock(&self) -> std::sync::MutexGuard<'_, Floors> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The floor of `course` (0 when none).
    pub fn floor(&self, course: CourseUuid) -> i64 {
        self.lock().by_course.get(&course).copied().unwrap_or(0)
    }

    /// Loads the floors of `tree` unless they are the ones held.
    pub fn follow_tree(&self, tree: &sled::Tree) -> Result<(), sled::Error> {
        let mut floors = self.lock();
        if floors.tree.as_ref() == Some(&tree.name()) {
            return Ok(());
        }
        let mut by_course = HashMap::new();
        for row in tree.scan_prefix(in_tree(&[SETTINGS_FLOOR])) {
            let (key, value) = row?;
            let course = key
                .get(2..18)
                .and_then(|bytes| Uuid::from_slice(bytes).ok());
            if let (Some(course), Some(floor)) = (course, read_i64(&value)) {
                by_course.insert(CourseUuid(course), floor);
            }
        }
        let seen = tree
            .get(in_tree(&[SETTINGS_SEEN]))?
            .and_then(|value| read_i64(&value))
            .unwrap_or(0);
        *floors = Floors {
            tree: Some(tree.name()),
            seen,
            by_course,
        };
        Ok(())
    }

    /// Looks at settings versions newer than the last look: every course of `courses`
    /// whose settings at its effective version differ from those at the newest version
    /// gets that version as its floor and a whole-course mark, in one batch with the
    /// version looked at.
    pub fn look(
        &self,
        tree: &sled::Tree,
        source: &SettingsSource,
        courses: impl FnOnce() -> Result<Vec<CourseUuid>, crate::RecomputeError>,
        mark: DirtyMark,
    ) -> Result<SettingsLook, crate::RecomputeError> {
        self.follow_tree(tree)
            .map_err(|source| crate::RecomputeError::Sled {
                doing: "reading the settings floors",
                source,
            })?;
        let latest = (source.latest_version)();
        let seen = self.lock().seen;
        if latest <= seen {
            return Ok(SettingsLook::default());
        }
        let mut batch = sled::Batch::default();
        let mut raised = Vec::new();
        for course in courses()? {
            let floor = self.floor(course);
            if (source.resolve)(course, floor) != (source.resolve)(course, latest) {
                batch.insert(in_tree(&floor_key(course)), latest.to_be_bytes().to_vec());
                batch.insert(in_tree(&whole_course_key(course)), mark.encode());
                raised.push(course);
            }
        }
        batch.insert(in_tree(&[SETTINGS_SEEN]), latest.to_be_bytes().to_vec());
        tree.apply_batch(batch)
            .map_err(|source| crate::RecomputeError::Sled {
                doing: "writing settings floors",
                source,
            })?;
        let mut floors = self.lock();
        floors.seen = latest;
        for course in &raised {
            floors.by_course.insert(*course, latest);
        }
        Ok(SettingsLook {
            courses: raised.len(),
        })
    }
}
