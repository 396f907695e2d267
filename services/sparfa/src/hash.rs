//! Stable hashes: `hash64` for holdout and subsampling, SHA-256 keys for the evaluation split.

use sha2::{Digest, Sha256};

/// The project's stable 64-bit hash: the first 8 bytes of SHA-256 of the
/// '|'-joined parts, read as a big-endian `u64`.
///
/// `hash64(&["E", "j", "q"])` hashes the bytes `E|j|q`, which is the spec's
/// `hash64(E ‖ "|" ‖ j ‖ "|" ‖ q)`.
pub fn hash64(parts: &[&str]) -> u64 {
    let digest = sha256_joined(parts);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// SHA-256 of the parts joined by '|'.
pub fn sha256_joined(parts: &[&str]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hasher.update(b"|");
        }
        hasher.update(part.as_bytes());
    }
    hasher.finalize().into()
}

/// Whether observation (learner, question) of ecosystem E is in the docs/design/sparfa.md §6
/// holdout: `hash64(E|learner|question) mod modulus == 0`.
pub fn is_holdout(ecosystem: &str, learner: &str, question: &str, modulus: u64) -> bool {
    hash64(&[ecosystem, learner, question]) % modulus.max(1) == 0
}

/// The §5 learner subsampling: keep learner j iff
/// `hash64(E|j) mod 1000 < ⌊1000 · cap / n_observations⌋`; everyone is kept when
/// `n_observations <= cap`.
pub fn keep_learner(ecosystem: &str, learner: &str, n_observations: u64, cap: u64) -> bool {
    if n_observations <= cap {
        return true;
    }
    let threshold = (1000u128 * u128::from(cap) / u128::from(n_observations)) as u64;
    hash64(&[ecosystem, learner]) % 1000 < threshold
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(parts: &[&str], expected_hex_prefix: &str) {
        let digest = sha256_joined(parts);
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, expected_hex_prefix);
        assert_eq!(
            hash64(parts),
            u64::from_str_radix(expected_hex_prefix, 16).unwrap()
        );
    }

    #[test]
    fn hash64_is_sha256_prefix_big_endian() {
        // SHA-256("abc") = ba7816bf8f01cfea...
        check(&["abc"], "ba7816bf8f01cfea");
        // Joining inserts '|': "a|bc" differs from "ab|c".
        assert_ne!(hash64(&["a", "bc"]), hash64(&["ab", "c"]));
        assert_eq!(hash64(&["a", "bc"]), hash64(&["a|bc"]));
    }

    #[test]
    fn holdout_selection_is_stable_and_about_ten_percent() {
        let mut n_holdout = 0;
        for j in 0..100 {
            for q in 0..100 {
                let (learner, question) = (format!("s{j}"), format!("q{q}"));
                let first = is_holdout("eco", &learner, &question, 10);
                assert_eq!(first, is_holdout("eco", &learner, &question, 10));
                n_holdout += usize::from(first);
            }
        }
        assert!((800..1200).contains(&n_holdout), "holdout size {n_holdout}");
    }

    #[test]
    fn subsampling_keeps_everyone_under_the_cap_and_about_the_ratio_over_it() {
        assert!((0..100).all(|j| keep_learner("eco", &format!("s{j}"), 10, 10)));
        let kept = (0..10_000)
            .filter(|j| keep_learner("eco", &format!("s{j}"), 400, 100))
            .count();
        assert!((2300..2700).contains(&kept), "kept {kept}");
    }
}
