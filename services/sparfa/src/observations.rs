//! Training observations stored twice, per learner and per question (CSR-like), never as a dense Q × N matrix.

use crate::SparfaError;

/// One observed first response: learner index, question index and correctness.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Observation {
    /// Index into the caller's ascending learner ids.
    pub learner: usize,
    /// Index into the caller's ascending question (exercise group) ids.
    pub question: usize,
    /// Whether the response was correct (y = 1).
    pub correct: bool,
}

/// Bit 31 of a packed entry holds y; the low 31 bits hold the other index.
const CORRECT_BIT: u32 = 1 << 31;
const INDEX_MASK: u32 = CORRECT_BIT - 1;

/// Compressed rows: `entries[offsets[r]..offsets[r + 1]]` are row r's packed entries,
/// sorted by the other index ascending.
#[derive(Clone, Debug, PartialEq, Eq)]
struct CompressedRows {
    offsets: Vec<usize>,
    entries: Vec<u32>,
}

impl CompressedRows {
    fn row(&self, r: usize) -> &[u32] {
        &self.entries[self.offsets[r]..self.offsets[r + 1]]
    }

    /// Counting sort of `(row, packed)` pairs; keeps the input order within a row.
    fn from_pairs(n_rows: usize, pairs: impl Iterator<Item = (usize, u32)> + Clone) -> Self {
        let mut offsets = vec![0usize; n_rows + 1];
        for (row, _) in pairs.clone() {
            offsets[row + 1] += 1;
        }
        for r in 0..n_rows {
            offsets[r + 1] += offsets[r];
        }
        let mut next = offsets.clone();
        let mut entries = vec![0u32; offsets[n_rows]];
        for (row, packed) in pairs {
            entries[next[row]] = packed;
            next[row] += 1;
        }
        Self { offsets, entries }
    }

    fn iter(&self) -> impl Iterator<Item = (usize, u32)> + Clone + '_ {
        (0..self.offsets.len() - 1).flat_map(move |r| self.row(r).iter().map(move |&e| (r, e)))
    }
}

/// Unpacks an entry into (other index, correct).
#[inline]
pub(crate) fn unpack(entry: u32) -> (usize, bool) {
    ((entry & INDEX_MASK) as usize, entry & CORRECT_BIT != 0)
}

fn pack(index: usize, correct: bool) -> u32 {
    // Indices are checked to fit in 31 bits by `Observations::new`.
    index as u32 | if correct { CORRECT_BIT } else { 0 }
}

/// The observations Ω of one fit, indexed both ways, each row ascending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observations {
    n_learners: usize,
    n_questions: usize,
    by_learner: CompressedRows,
    by_question: CompressedRows,
}

impl Observations {
    /// Indexes the observations. A repeated (learner, question) pair is kept as given
    /// (first-response selection is the caller's job).
    pub fn new(
        n_learners: usize,
        n_questions: usize,
        observations: &[Observation],
    ) -> Result<Self, SparfaError> {
        let limit = INDEX_MASK as usize;
        if n_learners > limit || n_questions > limit {
            return Err(SparfaError::TooLarge {
                n_learners,
                n_questions,
            });
        }
        if let Some(bad) = observations
            .iter()
            .find(|o| o.learner >= n_learners || o.question >= n_questions)
        {
            return Err(SparfaError::IndexOutOfRange {
                learner: bad.learner,
                question: bad.question,
                n_learners,
                n_questions,
            });
        }
        // Three counting passes give rows sorted by the other index, in O(|Ω|).
        let by_q_unsorted = CompressedRows::from_pairs(
            n_questions,
            observations
                .iter()
                .map(|o| (o.question, pack(o.learner, o.correct))),
        );
        let by_learner = CompressedRows::from_pairs(
            n_learners,
            by_q_unsorted.iter().map(|(q, e)| {
                let (j, y) = unpack(e);
                (j, pack(q, y))
            }),
        );
        drop(by_q_unsorted);
        let by_question = CompressedRows::from_pairs(
            n_questions,
            by_learner.iter().map(|(j, e)| {
                let (q, y) = unpack(e);
                (q, pack(j, y))
            }),
        );
        Ok(Self {
            n_learners,
            n_questions,
            by_learner,
            by_question,
        })
    }

    /// Number of learners N (rows of U).
    pub fn n_learners(&self) -> usize {
        self.n_learners
    }

    /// Number of questions Q.
    pub fn n_questions(&self) -> usize {
        self.n_questions
    }

    /// |Ω|.
    pub fn len(&self) -> usize {
        self.by_learner.entries.len()
    }

    /// Whether Ω is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Learner j's observations as packed entries (question, y), question ascending.
    pub(crate) fn learner_entries(&self, j: usize) -> &[u32] {
        self.by_learner.row(j)
    }

    /// Question q's observations as packed entries (learner, y), learner ascending.
    pub(crate) fn question_entries(&self, q: usize) -> &[u32] {
        self.by_question.row(q)
    }

    /// Learner j's observations as (question, correct), question ascending.
    pub fn learner(&self, j: usize) -> impl Iterator<Item = (usize, bool)> + '_ {
        self.learner_entries(j).iter().map(|&e| unpack(e))
    }

    /// Question q's observations as (learner, correct), learner ascending.
    pub fn question(&self, q: usize) -> impl Iterator<Item = (usize, bool)> + '_ {
        self.question_entries(q).iter().map(|&e| unpack(e))
    }

    /// All observations, ordered by (learner, question).
    pub fn iter(&self) -> impl Iterator<Item = Observation> + '_ {
        (0..self.n_learners).flat_map(move |j| {
            self.learner(j).map(move |(question, correct)| Observation {
                learner: j,
                question,
                correct,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(learner: usize, question: usize, correct: bool) -> Observation {
        Observation {
            learner,
            question,
            correct,
        }
    }

    fn check(input: &[Observation], expected_learner_rows: &[&[(usize, bool)]]) {
        let o = Observations::new(expected_learner_rows.len(), 3, input).unwrap();
        for (j, row) in expected_learner_rows.iter().enumerate() {
            assert_eq!(o.learner(j).collect::<Vec<_>>(), row.to_vec());
        }
        let mut sorted = input.to_vec();
        sorted.sort();
        assert_eq!(o.iter().collect::<Vec<_>>(), sorted);
        for q in 0..3 {
            let by_q: Vec<_> = o.question(q).collect();
            let expected: Vec<_> = sorted
                .iter()
                .filter(|x| x.question == q)
                .map(|x| (x.learner, x.correct))
                .collect();
            assert_eq!(by_q, expected);
        }
    }

    #[test]
    fn rows_are_sorted_both_ways() {
        check(
            &[
                obs(1, 2, true),
                obs(0, 1, false),
                obs(1, 0, false),
                obs(0, 0, true),
            ],
            &[&[(0, true), (1, false)], &[(0, false), (2, true)]],
        );
        check(&[], &[&[], &[]]);
    }

    #[test]
    fn out_of_range_index_is_an_error() {
        let err = Observations::new(1, 1, &[obs(0, 1, true)]).unwrap_err();
        assert!(matches!(
            err,
            SparfaError::IndexOutOfRange { question: 1, .. }
        ));
    }
}
