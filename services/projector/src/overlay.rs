//! A write overlay over one sled tree: reads see the batch's own writes, and the whole
//! batch (state and stream positions) commits as one atomic `sled::Batch`.

use std::collections::BTreeMap;

use sled::IVec;

/// Rows of a prefix scan: `(key, value)` in key order.
pub type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// One `(key, value)` row.
pub type Row = (Vec<u8>, Vec<u8>);

/// Pending writes to one tree, readable before they commit.
pub struct Overlay<'t> {
    tree: &'t sled::Tree,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'t> Overlay<'t> {
    /// An empty overlay over `tree`.
    pub fn new(tree: &'t sled::Tree) -> Overlay<'t> {
        Overlay {
            tree,
            writes: BTreeMap::new(),
        }
    }

    /// The value of `key` as the batch would leave it.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, sled::Error> {
        match self.writes.get(key) {
            Some(pending) => Ok(pending.clone()),
            None => Ok(self.tree.get(key)?.map(|value: IVec| value.to_vec())),
        }
    }

    /// Whether `key` exists as the batch would leave it.
    pub fn contains(&self, key: &[u8]) -> Result<bool, sled::Error> {
        match self.writes.get(key) {
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
        for (key, value) in self
            .writes
            .range(prefix.to_vec()..)
            .take_while(|(key, _)| key.starts_with(prefix))
        {
            match value {
                Some(value) => rows.insert(key.clone(), value.clone()),
                None => rows.remove(key),
            };
        }
        Ok(rows.into_iter().collect())
    }

    /// Every `(key, value)` with `start <= key <= end`, in key order, as the batch would
    /// leave them.
    pub fn range(&self, start: &[u8], end: &[u8]) -> Result<Rows, sled::Error> {
        let mut rows = BTreeMap::new();
        for row in self.tree.range(start..=end) {
            let (key, value) = row?;
            rows.insert(key.to_vec(), value.to_vec());
        }
        for (key, value) in self.writes.range(start.to_vec()..=end.to_vec()) {
            match value {
                Some(value) => rows.insert(key.clone(), value.clone()),
                None => rows.remove(key),
            };
        }
        Ok(rows.into_iter().collect())
    }

    /// The first `(key, value)` with `start <= key <= end`, as the batch would leave it.
    pub fn first_in(&self, start: &[u8], end: &[u8]) -> Result<Option<Row>, sled::Error> {
        // The tree's first key that the batch does not delete.
        let mut from_tree = None;
        for row in self.tree.range(start..=end) {
            let (key, value) = row?;
            match self.writes.get(key.as_ref()) {
                Some(None) => continue,
                Some(Some(written)) => from_tree = Some((key.to_vec(), written.clone())),
                None => from_tree = Some((key.to_vec(), value.to_vec())),
            }
            break;
        }
        let from_writes = self
            .writes
            .range(start.to_vec()..=end.to_vec())
            .find_map(|(key, value)| value.as_ref().map(|value| (key.clone(), value.clone())));
        Ok(match (from_tree, from_writes) {
            (Some(tree), Some(writes)) => Some(if writes.0 <= tree.0 { writes } else { tree }),
            (tree, writes) => tree.or(writes),
        })
    }

    /// The last `(key, value)` with `start <= key <= end`, as the batch would leave it.
    pub fn last_in(&self, start: &[u8], end: &[u8]) -> Result<Option<Row>, sled::Error> {
        // The tree's last key that the batch does not delete.
        let mut from_tree = None;
        for row in self.tree.range(start..=end).rev() {
            let (key, value) = row?;
            match self.writes.get(key.as_ref()) {
                Some(None) => continue,
                Some(Some(written)) => from_tree = Some((key.to_vec(), written.clone())),
                None => from_tree = Some((key.to_vec(), value.to_vec())),
            }
            break;
        }
        let from_writes = self
            .writes
            .range(start.to_vec()..=end.to_vec())
            .rev()
            .find_map(|(key, value)| value.as_ref().map(|value| (key.clone(), value.clone())));
        Ok(match (from_tree, from_writes) {
            (Some(tree), Some(writes)) => Some(if writes.0 >= tree.0 { writes } else { tree }),
            (tree, writes) => tree.or(writes),
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

    /// Commits every write atomically.
    pub fn commit(self) -> Result<(), sled::Error> {
        if self.writes.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for (key, value) in self.writes {
            match value {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
        self.tree.apply_batch(batch)
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
}
