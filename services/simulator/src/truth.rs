//! The ground-truth SPARFA model the simulated students follow, and how far served CLUEs are from it.

use serde::Serialize;

use crate::content::Content;

/// The ground truth written by `--truth-out`: W, d per book (questions = exercise groups,
/// concepts = pages) and every student's knowledge U at the start and at the end.
#[derive(Clone, Debug, Serialize)]
pub struct GroundTruth {
    pub seed: u64,
    pub link: &'static str,
    pub books: Vec<BookTruth>,
    pub students: Vec<StudentTruth>,
}

/// One book: its two ecosystem versions, its concepts and its questions.
#[derive(Clone, Debug, Serialize)]
pub struct BookTruth {
    pub ecosystem_uuids: Vec<String>,
    /// Page container uuids per concept index, one list per ecosystem version.
    pub concept_page_uuids: Vec<Vec<String>>,
    pub questions: Vec<QuestionTruth>,
}

/// One exercise group: `P(correct) = σ(Σ_c W_cq U_c + d_q)`.
#[derive(Clone, Debug, Serialize)]
pub struct QuestionTruth {
    pub group_uuid: String,
    pub exercise_uuids: Vec<String>,
    /// d_q (easiness: larger is easier).
    pub d: f64,
    /// Non-zero W entries of this column: (concept index, loading ≥ 0).
    pub w: Vec<(u32, f64)>,
}

/// One student's knowledge vector U (one value per concept of the course's book).
#[derive(Clone, Debug, Serialize)]
pub struct StudentTruth {
    pub student_uuid: String,
    pub course_uuid: String,
    pub book: usize,
    pub learning_rate: f64,
    pub initial_knowledge: Vec<f64>,
    pub final_knowledge: Vec<f64>,
}

impl GroundTruth {
    pub(crate) fn books_of(content: &Content) -> Vec<BookTruth> {
        content
            .books
            .iter()
            .enumerate()
            .map(|(book_idx, book)| BookTruth {
                ecosystem_uuids: book.versions.iter().map(|v| v.uuid.to_string()).collect(),
                concept_page_uuids: book
                    .versions
                    .iter()
                    .map(|v| v.page_uuids.iter().map(|u| u.to_string()).collect())
                    .collect(),
                questions: content
                    .groups
                    .iter()
                    .enumerate()
                    .filter(|(_, group)| group.book as usize == book_idx)
                    .map(|(group_idx, group)| QuestionTruth {
                        group_uuid: group.uuid.to_string(),
                        exercise_uuids: content.versions_of_group[group_idx]
                            .iter()
                            .map(|&e| content.exercises[e as usize].uuid.to_string())
                            .collect(),
                        d: group.easiness,
                        w: group.loadings.clone(),
                    })
                    .collect(),
            })
            .collect()
    }
}

/// Distance between served, real CLUEs and the truth, split by semester half.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ClueReport {
    pub ready_first_half: u64,
    pub mean_abs_error_first_half: Option<f64>,
    pub ready_second_half: u64,
    pub mean_abs_error_second_half: Option<f64>,
    /// `Some(false)` when both halves have enough samples and the second is clearly worse.
    pub moved_toward_truth: Option<bool>,
}

/// Minimum samples per half before the drift check judges.
const MIN_SAMPLES_PER_HALF: u64 = 20;
/// How much worse the second half may be before the check fails (noise allowance).
const DRIFT_TOLERANCE: f64 = 0.05;

/// Running sums of |most_likely − truth| per week.
#[derive(Clone, Debug, Default)]
pub(crate) struct ClueStats {
    per_week: Vec<(u64, f64)>,
}

impl ClueStats {
    pub(crate) fn record(&mut self, week: u32, abs_error: f64) {
        let week = week as usize;
        if self.per_week.len() <= week {
            self.per_week.resize(week + 1, (0, 0.0));
        }
        self.per_week[week].0 += 1;
        self.per_week[week].1 += abs_error;
    }

    pub(crate) fn report(&self, weeks: u32) -> ClueReport {
        let half = (weeks as usize).div_ceil(2);
        let sum = |range: std::ops::Range<usize>| {
            self.per_week
                .iter()
                .enumerate()
                .filter(|(week, _)| range.contains(week))
                .fold((0u64, 0.0f64), |acc, (_, &(n, e))| (acc.0 + n, acc.1 + e))
        };
        let (n_first, e_first) = sum(0..half);
        let (n_second, e_second) = sum(half..usize::MAX);
        let mean = |n: u64, e: f64| (n > 0).then(|| e / n as f64);
        let first = mean(n_first, e_first);
        let second = mean(n_second, e_second);
        let moved_toward_truth = match (first, second) {
            (Some(a), Some(b))
                if n_first >= MIN_SAMPLES_PER_HALF && n_second >= MIN_SAMPLES_PER_HALF =>
            {
                Some(b <= a + DRIFT_TOLERANCE)
            }
            _ => None,
        };
        ClueReport {
            ready_first_half: n_first,
            mean_abs_error_first_half: first,
            ready_second_half: n_second,
            mean_abs_error_second_half: second,
            moved_toward_truth,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(samples: &[(u32, f64, u64)], weeks: u32, expected: Option<bool>) {
        let mut stats = ClueStats::default();
        for &(week, error, n) in samples {
            for _ in 0..n {
                stats.record(week, error);
            }
        }
        assert_eq!(stats.report(weeks).moved_toward_truth, expected);
    }

    #[test]
    fn drift_check_needs_samples_and_judges_halves() {
        check(&[(0, 0.3, 30), (3, 0.1, 30)], 4, Some(true));
        check(&[(0, 0.1, 30), (3, 0.3, 30)], 4, Some(false));
        check(&[(0, 0.1, 30), (3, 0.13, 30)], 4, Some(true));
        check(&[(0, 0.1, 5), (3, 0.3, 30)], 4, None);
        check(&[], 4, None);
    }
}
