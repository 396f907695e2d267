//! `det_shuffle` (docs/design/scheduler.md §2.4): the deterministic stand-in for every shuffle.

use std::fmt::Display;

use sha2::{Digest, Sha256};

/// Sorts `items` by `SHA-256(seed ‖ "|" ‖ item)` ascending, items rendered with `Display`
/// (uuids: lower-case hyphenated). Equal items keep their relative order.
pub fn det_shuffle<T: Clone + Display>(items: &[T], seed: &str) -> Vec<T> {
    let mut keyed: Vec<([u8; 32], usize)> = items
        .iter()
        .enumerate()
        .map(|(idx, item)| {
            let mut hasher = Sha256::new();
            hasher.update(seed.as_bytes());
            hasher.update(b"|");
            hasher.update(item.to_string().as_bytes());
            (hasher.finalize().into(), idx)
        })
        .collect();
    keyed.sort();
    keyed
        .into_iter()
        .map(|(_, idx)| items[idx].clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(items: &[&str], seed: &str, expected_first: &str) {
        let shuffled = det_shuffle(items, seed);
        assert_eq!(shuffled.first().copied(), Some(expected_first));
        let mut sorted = shuffled.clone();
        sorted.sort();
        let mut original = items.to_vec();
        original.sort();
        assert_eq!(sorted, original, "a permutation");
        assert_eq!(det_shuffle(items, seed), shuffled, "deterministic");
    }

    fn first_by_hash(items: &[&str], seed: &str) -> String {
        items
            .iter()
            .min_by_key(|item| {
                let digest: [u8; 32] = Sha256::digest(format!("{seed}|{item}").as_bytes()).into();
                digest
            })
            .map(|s| s.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn the_first_item_has_the_smallest_seeded_hash() {
        let items = ["a", "b", "c", "d", "e", "f"];
        for seed in ["x", "y", "prior/1", ""] {
            check(&items, seed, &first_by_hash(&items, seed));
        }
    }

    #[test]
    fn different_seeds_give_different_orders() {
        let items: Vec<String> = (0..20).map(|i| i.to_string()).collect();
        assert_ne!(det_shuffle(&items, "one"), det_shuffle(&items, "two"));
        assert!(det_shuffle::<String>(&[], "one").is_empty());
    }
}
