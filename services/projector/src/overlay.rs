//! A write overlay over one sled tree: reads see the batch's own writes, and the whole
//! batch (state and stream positions) commits as one atomic `sled::Batch` — or, while the
//! projection replays, into its [`WriteBack`], which reaches sled at checkpoints.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use sled::IVec;

/// When a replaying projection writes its memory back to sled: after this many records
/// or this long, whichever comes first; state and positions always go together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointPolicy {
    pub records: usize,
    pub interval: Duration,
}

impl Default for CheckpointPolicy {
    /// 100,000 records or 2 s: a crash costs at most that much replay, and memory holds
    /// at most the rows of that many records (≈ 100 MB for responses).
    fn default() -> Self {
        CheckpointPolicy {
            records: 100_000,
            interval: Duration::from_secs(2),
        }
    }
}

struct Pending {
    rows: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    records: usize,
    since: Instant,
}

/// Rows a projection has applied in memory but not yet written to sled. Active only while
/// the projection replays (catching up at start, rebuilding): then every batch lands here,
/// a row rewritten by many events reaches sled once per checkpoint, and a checkpoint
/// writes rows and positions as one `sled::Batch`. Inactive, batches commit to sled
/// directly (read-your-writes for the writer and the readers, which read sled).
///
/// A crash loses what was not checkpointed; the projection resumes from the positions of
/// the last checkpoint and re-applies, which is idempotent.
///
/// Several consumers may replay into one projection (one per topic): it stays active
/// until the last of them has called [`WriteBack::end`].
#[derive(Clone, Default)]
pub struct WriteBack {
    pending: Arc<RwLock<Option<Pending>>>,
    policy: Arc<RwLock<CheckpointPolicy>>,
    replayers: Arc<parking_lot::Mutex<usize>>,
}

impl WriteBack {
    /// Starts keeping writes in memory, checkpointing by `policy`.
    pub fn begin(&self, policy: CheckpointPolicy) {
        *self.replayers.lock() += 1;
        *self.policy.write() = policy;
        let mut pending = self.pending.write();
        if pending.is_none() {
            *pending = Some(Pending {
                rows: BTreeMap::new(),
                records: 0,
                since: Instant::now(),
            });
        }
    }

    /// Whether writes are kept in memory now.
    pub fn is_active(&self) -> bool {
        self.pending.read().is_some()
    }

    /// Rows waiting for the next checkpoint.
    pub fn len(&self) -> usize {
        self.pending
            .read()
            .as_ref()
            .map_or(0, |pending| pending.rows.len())
    }

    /// Whether no row waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `Some(row)` if the key has a pending write (`Some(None)`: removed).
    fn lookup(&self, key: &[u8]) -> Option<Option<Vec<u8>>> {
        self.pending.read().as_ref()?.rows.get(key).cloned()
    }

    /// Pending writes with `start <= key <= end`, in key order.
    fn range(&self, start: &[u8], end: &[u8]) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        if start > end {
            return Vec::new();
        }
        match self.pending.read().as_ref() {
            Some(pending) => pending
                .rows
                .range(start.to_vec()..=end.to_vec())
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
            None => Vec::new(),
        }
    }

    /// Takes `writes` of `records` records if active; gives them back otherwise.
    fn absorb(
        &self,
        writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
        records: usize,
    ) -> Option<BTreeMap<Vec<u8>, Option<Vec<u8>>>> {
        let mut guard = self.pending.write();
        let Some(pending) = guard.as_mut() else {
            return Some(writes);
        };
        if pending.rows.is_empty() {
            pending.rows = writes;
        } else {
            pending.rows.extend(writes);
        }
        pending.records += records;
        None
    }

    /// Whether the policy asks for a checkpoint now.
    pub fn is_due(&self) -> bool {
        let policy = *self.policy.read();
        self.pending.read().as_ref().is_some_and(|pending| {
            pending.records >= policy.records || pending.since.elapsed() >= policy.interval
        })
    }

    /// Writes every pending row to `tree` in one atomic batch; stays active.
    pub fn checkpoint(&self, tree: &sled::Tree) -> Result<(), sled::Error> {
        let mut guard = self.pending.write();
        if let Some(pending) = guard.as_mut() {
            let rows = std::mem::take(&mut pending.rows);
            pending.records = 0;
            pending.since = Instant::now();
            // Held during the write: a reader never sees a row in neither place.
            write_rows(tree, rows)?;
        }
        Ok(())
    }

    /// Checkpoints; the last replayer to end goes back to committing every batch to sled.
    pub fn end(&self, tree: &sled::Tree) -> Result<(), sled::Error> {
        {
            let mut replayers = self.replayers.lock();
            *replayers = replayers.saturating_sub(1);
            if *replayers > 0 {
                return self.checkpoint(tree);
            }
        }
        let mut guard = self.pending.write();
        if let Some(pending) = guard.take() {
            if let Err(error) = write_rows(tree, pending.rows.clone()) {
                *guard = Some(pending);
                return Err(error);
            }
        }
        Ok(())
    }
}

fn write_rows(
    tree: &sled::Tree,
    rows: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
) -> Result<(), sled::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut batch = sled::Batch::default();
    for (key, value) in rows {
        match value {
            Some(value) => batch.insert(key, value),
            None => batch.remove(key),
        }
    }
    tree.apply_batch(batch)
}

/// Rows of a prefix scan: `(key, value)` in key order.
pub type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// One `(key, value)` row.
pub type Row = (Vec<u8>, Vec<u8>);

/// Pending writes to one tree, readable before they commit.
pub struct Overlay<'t> {
    tree: &'t sled::Tree,
    /// The projection's write-back, read beneath this batch's writes.
    base: Option<&'t WriteBack>,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'t> Overlay<'t> {
    /// An empty overlay over `tree`.
    pub fn new(tree: &'t sled::Tree) -> Overlay<'t> {
        Overlay {
            tree,
            base: None,
            writes: BTreeMap::new(),
        }
    }

    /// An empty overlay over `tree` and the rows `base` has not written to it yet.
    pub fn over(tree: &'t sled::Tree, base: &'t WriteBack) -> Overlay<'t> {
        Overlay {
            tree,
            base: Some(base),
            writes: BTreeMap::new(),
        }
    }

    /// `Some(row)` if this batch or the write-back has the key.
    fn pending(&self, key: &[u8]) -> Option<Option<Vec<u8>>> {
        match self.writes.get(key) {
            Some(pending) => Some(pending.clone()),
            None => self.base.and_then(|base| base.lookup(key)),
        }
    }

    /// The value of `key` as the batch would leave it.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, sled::Error> {
        match self.pending(key) {
            Some(pending) => Ok(pending),
            None => Ok(self.tree.get(key)?.map(|value: IVec| value.to_vec())),
        }
    }

    /// Whether `key` exists as the batch would leave it.
    pub fn contains(&self, key: &[u8]) -> Result<bool, sled::Error> {
        match self.pending(key) {
            Some(pending) => Ok(pending.is_some()),
            None => self.tree.contains_key(key),
        }
    }

    /// Every `(key, value)` under `prefix`, in key order, as the batch would leave them.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<Rows, sled::Error> {
        let mut rows = BTreeMap::new();
        for row in self.tree.scan_prefix(prefix) {
            let (key, value) = row?;
            rows.insert(key.to_vec(), value.to_vec());
        }
        let layered = self.base_rows_with_prefix(prefix).into_iter().chain(
            self.writes
                .range(prefix.to_vec()..)
                .take_while(|(key, _)| key.starts_with(prefix))
                .map(|(key, value)| (key.clone(), value.clone())),
        );
        for (key, value) in layered {
            match value {
                Some(value) => rows.insert(key, value),
                None => rows.remove(&key),
            };
        }
        Ok(rows.into_iter().collect())
    }

    fn base_rows_with_prefix(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let Some(base) = self.base else {
            return Vec::new();
        };
        let guard = base.pending.read();
        let Some(pending) = guard.as_ref() else {
            return Vec::new();
        };
        pending
            .rows
            .range(prefix.to_vec()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()
    }

    /// Every `(key, value)` with `start <= key <= end`, in key order, as the batch would
    /// leave them.
    pub fn range(&self, start: &[u8], end: &[u8]) -> Result<Rows, sled::Error> {
        let mut rows = BTreeMap::new();
        for row in self.tree.range(start..=end) {
            let (key, value) = row?;
            rows.insert(key.to_vec(), value.to_vec());
        }
        let base = self
            .base
            .map(|base| base.range(start, end))
            .unwrap_or_default();
        let layered = base.into_iter().chain(
            self.writes
                .range(start.to_vec()..=end.to_vec())
                .map(|(key, value)| (key.clone(), value.clone())),
        );
        for (key, value) in layered {
            match value {
                Some(value) => rows.insert(key, value),
                None => rows.remove(&key),
            };
        }
        Ok(rows.into_iter().collect())
    }

    /// This batch's writes over the write-back's, for `start <= key <= end`.
    fn upper(&self, start: &[u8], end: &[u8]) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
        let mut upper: BTreeMap<Vec<u8>, Option<Vec<u8>>> = self
            .base
            .map(|base| base.range(start, end))
            .unwrap_or_default()
            .into_iter()
            .collect();
        if start <= end {
            for (key, value) in self.writes.range(start.to_vec()..=end.to_vec()) {
                upper.insert(key.clone(), value.clone());
            }
        }
        upper
    }

    /// The first `(key, value)` with `start <= key <= end`, as the batch would leave it.
    pub fn first_in(&self, start: &[u8], end: &[u8]) -> Result<Option<Row>, sled::Error> {
        let upper = self.upper(start, end);
        // The tree's first key that no pending write deletes.
        let mut from_tree = None;
        for row in self.tree.range(start..=end) {
            let (key, value) = row?;
            match upper.get(key.as_ref()) {
                Some(None) => continue,
                Some(Some(written)) => from_tree = Some((key.to_vec(), written.clone())),
                None => from_tree = Some((key.to_vec(), value.to_vec())),
            }
            break;
        }
        let from_upper = upper
            .iter()
            .find_map(|(key, value)| value.as_ref().map(|value| (key.clone(), value.clone())));
        Ok(match (from_tree, from_upper) {
            (Some(tree), Some(upper)) => Some(if upper.0 <= tree.0 { upper } else { tree }),
            (tree, upper) => tree.or(upper),
        })
    }

    /// The last `(key, value)` with `start <= key <= end`, as the batch would leave it.
    pub fn last_in(&self, start: &[u8], end: &[u8]) -> Result<Option<Row>, sled::Error> {
        let upper = self.upper(start, end);
        // The tree's last key that no pending write deletes.
        let mut from_tree = None;
        for row in self.tree.range(start..=end).rev() {
            let (key, value) = row?;
            match upper.get(key.as_ref()) {
                Some(None) => continue,
                Some(Some(written)) => from_tree = Some((key.to_vec(), written.clone())),
                None => from_tree = Some((key.to_vec(), value.to_vec())),
            }
            break;
        }
        let from_upper = upper
            .iter()
            .rev()
            .find_map(|(key, value)| value.as_ref().map(|value| (key.clone(), value.clone())));
        Ok(match (from_tree, from_upper) {
            (Some(tree), Some(upper)) => Some(if upper.0 >= tree.0 { upper } else { tree }),
            (tree, upper) => tree.or(upper),
        })
    }

    /// How many writes the batch holds.
    pub fn len(&self) -> usize {
        self.writes.len()
    }

    /// Sets `key`.
    pub fn insert(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert(key, Some(value));
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: Vec<u8>) {
        self.writes.insert(key, None);
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Commits every write atomically: to the write-back while it is active (`records`
    /// counts toward its checkpoint), else to sled.
    pub fn commit(self) -> Result<(), sled::Error> {
        self.commit_records(0)
    }

    /// [`Overlay::commit`] of a batch of `records` records.
    pub fn commit_records(self, records: usize) -> Result<(), sled::Error> {
        let writes = match self.base {
            Some(base) => match base.absorb(self.writes, records) {
                None => {
                    if base.is_due() {
                        base.checkpoint(self.tree)?;
                    }
                    return Ok(());
                }
                Some(writes) => writes,
            },
            None => self.writes,
        };
        write_rows(self.tree, writes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_see_pending_writes_and_commit_is_atomic() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        tree.insert(b"a", b"1".to_vec()).unwrap();
        let mut overlay = Overlay::new(&tree);
        assert_eq!(overlay.get(b"a").unwrap(), Some(b"1".to_vec()));
        overlay.insert(b"b".to_vec(), b"2".to_vec());
        overlay.remove(b"a".to_vec());
        assert_eq!(overlay.get(b"b").unwrap(), Some(b"2".to_vec()));
        assert!(!overlay.contains(b"a").unwrap());
        assert!(
            tree.contains_key(b"a").unwrap(),
            "nothing is visible before commit"
        );
        overlay.insert(b"c".to_vec(), b"3".to_vec());
        let scanned: Vec<Vec<u8>> = overlay
            .scan_prefix(b"")
            .unwrap()
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        assert_eq!(scanned, vec![b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(
            overlay.range(b"a", b"b").unwrap(),
            vec![(b"b".to_vec(), b"2".to_vec())]
        );
        assert_eq!(
            overlay.last_in(b"a", b"bz").unwrap(),
            Some((b"b".to_vec(), b"2".to_vec()))
        );
        assert_eq!(overlay.last_in(b"a", b"a").unwrap(), None, "a is removed");
        assert_eq!(
            overlay.first_in(b"a", b"z").unwrap(),
            Some((b"b".to_vec(), b"2".to_vec()))
        );
        assert_eq!(
            overlay.first_in(b"bb", b"z").unwrap().unwrap().0,
            b"c".to_vec()
        );
        assert_eq!(
            overlay.last_in(b"", b"z").unwrap(),
            Some((b"c".to_vec(), b"3".to_vec()))
        );
        overlay.commit().unwrap();
        assert!(!tree.contains_key(b"a").unwrap());
        assert_eq!(tree.get(b"b").unwrap().unwrap().to_vec(), b"2".to_vec());
    }

    #[test]
    fn a_write_back_is_read_beneath_a_batch_and_reaches_sled_at_checkpoints() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        tree.insert(b"a1", b"sled".to_vec()).unwrap();
        tree.insert(b"a5", b"sled".to_vec()).unwrap();
        let write_back = WriteBack::default();
        write_back.begin(CheckpointPolicy {
            records: 3,
            interval: Duration::from_secs(3600),
        });

        let mut first = Overlay::over(&tree, &write_back);
        first.insert(b"a3".to_vec(), b"wb".to_vec());
        first.remove(b"a1".to_vec());
        first.commit_records(1).unwrap();
        assert!(tree.contains_key(b"a1").unwrap(), "kept in memory");
        assert!(!tree.contains_key(b"a3").unwrap());
        assert_eq!(write_back.len(), 2);

        // A later batch reads the write-back beneath its own writes.
        let mut second = Overlay::over(&tree, &write_back);
        assert_eq!(second.get(b"a3").unwrap(), Some(b"wb".to_vec()));
        assert_eq!(second.get(b"a1").unwrap(), None, "removed in memory");
        assert_eq!(
            second.first_in(b"a0", b"a9").unwrap().unwrap().0,
            b"a3".to_vec(),
            "a1 is removed beneath, a3 is first"
        );
        assert_eq!(
            second.last_in(b"a0", b"a4").unwrap().unwrap().0,
            b"a3".to_vec()
        );
        second.insert(b"a2".to_vec(), b"batch".to_vec());
        let keys: Vec<Vec<u8>> = second
            .scan_prefix(b"a")
            .unwrap()
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        assert_eq!(keys, vec![b"a2".to_vec(), b"a3".to_vec(), b"a5".to_vec()]);
        assert_eq!(
            second.range(b"a2", b"a3").unwrap(),
            vec![
                (b"a2".to_vec(), b"batch".to_vec()),
                (b"a3".to_vec(), b"wb".to_vec())
            ]
        );
        second.commit_records(1).unwrap();
        assert!(!write_back.is_due(), "2 of 3 records");
        let mut third = Overlay::over(&tree, &write_back);
        third.insert(b"p".to_vec(), b"position".to_vec());
        third.commit_records(1).unwrap();
        // The third record makes the checkpoint due: the commit wrote everything back.
        assert!(write_back.is_empty() && write_back.is_active());
        assert_eq!(tree.get(b"a3").unwrap().unwrap().to_vec(), b"wb".to_vec());
        assert_eq!(
            tree.get(b"p").unwrap().unwrap().to_vec(),
            b"position".to_vec()
        );
        assert!(
            !tree.contains_key(b"a1").unwrap(),
            "removals reach sled too"
        );
    }

    #[test]
    fn a_write_back_stays_active_until_its_last_replayer_ends() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        let write_back = WriteBack::default();
        write_back.begin(CheckpointPolicy::default());
        write_back.begin(CheckpointPolicy::default());
        let mut batch = Overlay::over(&tree, &write_back);
        batch.insert(b"k".to_vec(), b"v".to_vec());
        batch.commit_records(1).unwrap();
        write_back.end(&tree).unwrap();
        assert!(write_back.is_active(), "one replayer is left");
        assert!(tree.contains_key(b"k").unwrap(), "an end checkpoints");
        write_back.end(&tree).unwrap();
        assert!(!write_back.is_active());
        let mut direct = Overlay::over(&tree, &write_back);
        direct.insert(b"d".to_vec(), b"v".to_vec());
        direct.commit_records(1).unwrap();
        assert!(
            tree.contains_key(b"d").unwrap(),
            "inactive: straight to sled"
        );
    }
}
