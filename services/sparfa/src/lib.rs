//! SPARFA for Biglearn (docs/design/sparfa.md): fits per-ecosystem models (W, d) from first
//! responses and answers per-learner questions (solve, CLUE, ranking) from them.
//!
//! Invariants:
//! - Pure: no clock, no I/O and no randomness outside `eval` (which reads the files it
//!   is given, times fits and seeds the `free` model's ChaCha8 generator with 0).
//! - The same input gives a bit-identical model for any thread count: learners and
//!   questions are independent blocks, each computed by one worker taken from a queue,
//!   and every sum runs sequentially in ascending order. The hot loops run with AVX2
//!   when the CPU has it; they only add and multiply lane by lane (never fused), so the
//!   bits are the same without it.
//! - Observations are stored per learner and per question; no dense Q × N matrix exists.
//! - `hash64` is the first 8 bytes of SHA-256 of the '|'-joined parts, big-endian.
//! - Ids are the caller's: this crate works with indices into ascending id lists and
//!   does not depend on the domain crate.
//!
//! Decisions (beyond the spec's):
//! - σ inside the fitting loops uses this crate's branch-free e^x (ln 2 range reduction,
//!   degree-12 Taylor polynomial, argument clamped to ±708; within 4 ulp of libm), so
//!   that it vectorises; holdout scores, predictions and serving use libm.
//! - Learners who answered at least half of the questions take a dense path over all
//!   questions (in the U-step only when a quarter of W is non-zero, over all concepts);
//!   unanswered questions get a residual of exactly 0, so it adds the sparse path's
//!   terms plus exact zeros. The choice depends on the data, never on the threads.
//! - Hyper-parameter selection compares candidates on a learner subsample above
//!   `selection_cap` observations; a single candidate is fitted once, on all data.
//!
//! Does not: read topics or sled, pick first responses per (student, group), or shuffle
//! unknown exercises (the caller applies its `det_shuffle`).
//!
//! Modules, in reading order:
//! - [`hash`]: `hash64`, the §6 holdout test and the §5 learner subsampling.
//! - [`observations`]: the training set Ω in CSR form, both ways.
//! - [`fit`]: the §4 objective and the §7 block proximal-gradient fit with §6 stopping
//!   (its private `kernel` holds the inner loops and the work queue).
//! - [`irt`]: one-factor models (Rasch, 2PL) by marginal maximum likelihood (EM).
//! - [`select`]: hyper-parameter selection by holdout log-likelihood (§4 Decision).
//! - [`learner_solve`]: the §10 per-learner Newton solve, CLUE and exercise ranking.
//! - [`eval`]: the §12 offline evaluation protocol.

pub mod eval;
pub mod fit;
pub mod hash;
pub mod irt;
pub mod learner_solve;
pub mod observations;
pub mod select;

pub use eval::{format_table, run_eval, EvalError, EvalOptions, ModelKind, ModelReport};
pub use fit::{fit, Fit, FitProblem, FitStats, Hyperparameters};
pub use hash::{hash64, is_holdout, keep_learner};
pub use learner_solve::{Clue, LearnerSolve, Ranking, ServingModel};
pub use observations::{Observation, Observations};
pub use select::{fit_selected, Candidate, CandidateScore, SelectedFit, SelectionInput};

/// Errors of the fitting code.
#[derive(Debug, thiserror::Error)]
pub enum SparfaError {
    /// An observation refers to a learner or question outside the index.
    #[error("observation (learner {learner}, question {question}) is outside {n_learners} learners × {n_questions} questions")]
    IndexOutOfRange {
        /// Learner index.
        learner: usize,
        /// Question index.
        question: usize,
        /// Number of learners.
        n_learners: usize,
        /// Number of questions.
        n_questions: usize,
    },
    /// More than 2³¹ − 1 learners or questions.
    #[error("{n_learners} learners × {n_questions} questions exceed the 2^31 - 1 index limit")]
    TooLarge {
        /// Number of learners.
        n_learners: usize,
        /// Number of questions.
        n_questions: usize,
    },
}
