//! The docs/design/sparfa.md §4 objective and the §7 block proximal-gradient fit with the §6
//! holdout stopping rule.

use ndarray::{Array1, Array2, ArrayView2};
use serde::{Deserialize, Serialize};

use crate::observations::{Observation, Observations};

/// Inner proximal-gradient steps per block (§7).
pub const INNER_STEPS: usize = 5;
/// Outer iterations without improvement before stopping (§6).
pub const PATIENCE: usize = 20;
/// Upper bound on outer iterations (§6).
pub const MAX_OUTER_ITERATIONS: usize = 500;
/// Outer iterations when the holdout or training set is too small to stop early (§6).
pub const ITERATIONS_WITHOUT_EARLY_STOPPING: usize = 20;
/// Below this many holdout or training observations there is no early stopping (§6).
pub const MIN_OBSERVATIONS_FOR_EARLY_STOPPING: usize = 50;
/// Question blocks of the (W, d)-step per worker thread (more blocks balance busy cores).
const QUESTION_BLOCKS_PER_THREAD: usize = 2;
/// Questions per block of the (W, d)-step at least: every block passes over all
/// learners, so with few questions per block that pass costs more than the sums.
const MIN_QUESTIONS_PER_BLOCK: usize = 16;
/// A holdout log-likelihood improvement must exceed this (§6).
pub const MIN_IMPROVEMENT: f64 = 1e-6;
/// Probabilities are clipped to [ε, 1 − ε] in log-likelihoods (§6).
pub const PROBABILITY_CLIP: f64 = 1e-15;

/// The penalties and stopping constants of one fit, recorded with the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hyperparameters {
    /// λ_H: ℓ2 on hinted loadings.
    pub lambda_h_l2: f64,
    /// λ_1: ℓ1 on non-hinted loadings.
    pub lambda_nh_l1: f64,
    /// ℓ2 on non-hinted loadings (0 in §4; 0.05 in the `free` model of §12).
    pub lambda_nh_l2: f64,
    /// λ_d: ℓ2 on easiness.
    pub lambda_d_l2: f64,
    /// γ_U: ridge on learner knowledge.
    pub gamma_u: f64,
    /// Concepts beyond the pages (rows after the page concepts), hinted on every question.
    pub extra_concepts: usize,
    /// ℓ2 on the loadings of the extra concepts (they are hinted everywhere, so no ℓ1).
    pub lambda_extra_l2: f64,
    /// False for a Rasch fit: W stays at its initial value and only d is learned.
    pub learn_loadings: bool,
    /// Holdout modulus of §6 (10).
    pub holdout_modulus: u64,
    /// Patience of §6 (20).
    pub patience: usize,
    /// Maximum outer iterations (500).
    pub max_outer_iterations: usize,
    /// Inner steps per block (5).
    pub inner_steps: usize,
}

impl Hyperparameters {
    /// The §4 constants: λ_H = 0.05, λ_1 = 10, λ_d = 0.05, γ_U = 1, no extra concepts.
    pub fn spec() -> Self {
        Self {
            lambda_h_l2: 0.05,
            lambda_nh_l1: 10.0,
            lambda_nh_l2: 0.0,
            lambda_d_l2: 0.05,
            gamma_u: 1.0,
            extra_concepts: 0,
            lambda_extra_l2: 0.05,
            learn_loadings: true,
            holdout_modulus: 10,
            patience: PATIENCE,
            max_outer_iterations: MAX_OUTER_ITERATIONS,
            inner_steps: INNER_STEPS,
        }
    }
}

/// What one fit sees: hints, an optional initial W, the training set and the holdout.
#[derive(Clone, Debug)]
pub struct FitProblem<'a> {
    /// H, K × Q: whether concept c is a hint of question q.
    pub hints: ArrayView2<'a, bool>,
    /// W⁰, K × Q; `None` means H as 0/1 values (§7).
    pub initial_loadings: Option<ArrayView2<'a, f64>>,
    /// Ω_train.
    pub train: &'a Observations,
    /// The holdout (validation) observations, indexed like `train`.
    pub holdout: &'a [Observation],
}

/// Holdout statistics and iteration counts of a fit (§6).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FitStats {
    /// |Ω_train|.
    pub training_observations: usize,
    /// Holdout size.
    pub holdout_observations: usize,
    /// Learners with at least one training observation.
    pub learners: usize,
    /// Outer iterations run.
    pub outer_iterations: usize,
    /// The iteration whose (W, d) was kept (1-based; 0 when none ran).
    pub best_iteration: usize,
    /// Mean holdout log-likelihood of the kept iterate; `None` without early stopping.
    pub holdout_log_likelihood: Option<f64>,
    /// Holdout accuracy at threshold 0.5; `None` without early stopping.
    pub holdout_accuracy: Option<f64>,
    /// Holdout log-loss (= −log-likelihood); `None` without early stopping.
    pub holdout_log_loss: Option<f64>,
}

/// A fitted (W, d) with the learner knowledge U of the kept iterate.
#[derive(Clone, Debug, PartialEq)]
pub struct Fit {
    /// W, K × Q, non-negative.
    pub loadings: Array2<f64>,
    /// d, length Q (larger is easier).
    pub easiness: Array1<f64>,
    /// U of the kept iterate, N × K (row j is u_j); zero rows for learners without data.
    pub knowledge: Array2<f64>,
    /// Holdout statistics.
    pub stats: FitStats,
}

impl Fit {
    /// P(correct) of learner j on question q under the kept iterate.
    pub fn predict(&self, learner: usize, question: usize) -> f64 {
        let z = self.easiness[question]
            + self
                .loadings
                .column(question)
                .iter()
                .zip(self.knowledge.row(learner))
                .map(|(w, u)| w * u)
                .sum::<f64>();
        sigmoid(z)
    }
}

/// The logistic function.
#[inline]
pub fn sigmoid(z: f64) -> f64 {
    // Branch-free: exp(−z) overflows to +∞ for very negative z, giving exactly 0.
    1.0 / (1.0 + (-z).exp())
}

/// log(1 + e^z), computed without overflow.
#[inline]
pub fn softplus(z: f64) -> f64 {
    if z > 0.0 {
        z + (-z).exp().ln_1p()
    } else {
        z.exp().ln_1p()
    }
}

/// The log-likelihood of one response with p clipped to [1e−15, 1 − 1e−15].
#[inline]
pub fn clipped_log_likelihood(p: f64, correct: bool) -> f64 {
    let p = p.clamp(PROBABILITY_CLIP, 1.0 - PROBABILITY_CLIP);
    if correct {
        p.ln()
    } else {
        (1.0 - p).ln()
    }
}

/// Per-entry penalty weights, stored question-major (row q, K entries).
struct Penalties {
    l2: Vec<f64>,
    l1: Vec<f64>,
    max_l2: f64,
}

impl Penalties {
    fn new(hints: ArrayView2<'_, bool>, hp: &Hyperparameters) -> Self {
        let (k, q) = hints.dim();
        let first_extra = k.saturating_sub(hp.extra_concepts);
        let mut l2 = vec![0.0; k * q];
        let mut l1 = vec![0.0; k * q];
        for qi in 0..q {
            for c in 0..k {
                let hinted = hints[(c, qi)];
                l2[qi * k + c] = match (c >= first_extra, hinted) {
                    (true, _) => hp.lambda_extra_l2,
                    (false, true) => hp.lambda_h_l2,
                    (false, false) => hp.lambda_nh_l2,
                };
                l1[qi * k + c] = if hinted { 0.0 } else { hp.lambda_nh_l1 };
            }
        }
        let max_l2 = l2.iter().copied().fold(0.0, f64::max);
        Self { l2, l1, max_l2 }
    }
}

/// The §4 objective J(W, d, U), with W as K × Q and U as N × K; sums in ascending order.
pub fn objective(
    problem: &FitProblem<'_>,
    hp: &Hyperparameters,
    loadings: ArrayView2<'_, f64>,
    easiness: &Array1<f64>,
    knowledge: ArrayView2<'_, f64>,
) -> f64 {
    let mut nll = 0.0;
    for o in problem.train.iter() {
        let z = easiness[o.question] + loadings.column(o.question).dot(&knowledge.row(o.learner));
        nll += softplus(z) - if o.correct { z } else { 0.0 };
    }
    let penalties = Penalties::new(problem.hints, hp);
    let (k, q) = loadings.dim();
    let mut penalty = 0.0;
    for qi in 0..q {
        for c in 0..k {
            let w = loadings[(c, qi)];
            penalty += penalties.l2[qi * k + c] * w * w + penalties.l1[qi * k + c] * w.abs();
        }
    }
    let d_penalty: f64 = easiness.iter().map(|d| hp.lambda_d_l2 * d * d).sum();
    let u_penalty: f64 = knowledge.iter().map(|u| u * u).sum::<f64>() * hp.gamma_u / 2.0;
    nll + penalty + d_penalty + u_penalty
}

/// The §7 initial easiness: logit(clip((s_q + 0.5) / (n_q + 1), 0.02, 0.98)).
pub fn initial_easiness(train: &Observations) -> Array1<f64> {
    Array1::from_iter((0..train.n_questions()).map(|q| {
        let (mut s, mut n) = (0.0, 0.0);
        for (_, correct) in train.question(q) {
            n += 1.0;
            s += f64::from(u8::from(correct));
        }
        let p = ((s + 0.5) / (n + 1.0)).clamp(0.02, 0.98);
        (p / (1.0 - p)).ln()
    }))
}

/// Mutable fitting state; W is stored question-major (Q × K) so that w_q is contiguous.
struct State {
    k: usize,
    w: Vec<f64>,
    d: Vec<f64>,
    u: Vec<f64>,
}

/// Fits the model: the zero-data model if Ω is empty, else outer iterations until the
/// §6 stopping rule, keeping the best holdout iterate.
///
/// `threads` (≥ 1) workers take learner ranges and question blocks from a queue; each
/// learner's and question's update is computed by one worker with its sums in ascending
/// order, so the result does not depend on `threads`.
pub fn fit(problem: &FitProblem<'_>, hp: &Hyperparameters, threads: usize) -> Fit {
    fit_from(problem, hp, threads, None)
}

/// A warm start within one fit (§8 allows it between candidates): d⁰ and U⁰ (N × K)
/// instead of §7's; W⁰ comes from the problem.
#[derive(Clone, Debug)]
pub struct WarmStart {
    /// d⁰, length Q.
    pub easiness: Array1<f64>,
    /// U⁰, N × K.
    pub knowledge: Array2<f64>,
}

/// [`fit`], starting from `start` when given.
pub fn fit_from(
    problem: &FitProblem<'_>,
    hp: &Hyperparameters,
    threads: usize,
    start: Option<&WarmStart>,
) -> Fit {
    fit_against(problem, hp, threads, start, None)
}

/// A fit racing a [`Rival`] runs at least this many outer iterations.
pub const RACE_MIN_ITERATIONS: usize = 3;
/// The factor on the extrapolated remaining gain before a racing fit is stopped.
pub const RACE_SAFETY: f64 = 2.0;
/// The largest per-iteration decay ratio used in the extrapolation (a slower decay counts
/// as this one: at most 1 / (1 − 0.95) = 20 more iterations at the current gain).
const RACE_MAX_RATIO: f64 = 0.95;

/// How many standard errors (of the mean per-observation holdout log-likelihood
/// difference) a joint candidate must beat the best marginal one by to be chosen: its
/// holdout score is optimistic (its best iterate is picked on that holdout) and it has
/// far more parameters, so it must be clearly better — a one-sided test at about 2 %.
pub const MARGIN_STANDARD_ERRORS: f64 = 2.0;

/// A model the fit must beat on the holdout by [`MARGIN_STANDARD_ERRORS`] to be chosen
/// (the selection's rule, see `select::choose`): its clipped log-likelihood per holdout
/// observation, in the holdout's sorted order. A fit racing it stops early once it
/// cannot plausibly get there: after at least [`RACE_MIN_ITERATIONS`] iterations, when
/// the current iterate is short of the margin (mean per-observation difference minus
/// [`MARGIN_STANDARD_ERRORS`] standard errors) by more than [`RACE_SAFETY`] times the
/// gain still to come if the best holdout log-likelihood's last gains keep shrinking
/// geometrically (Δ ρ / (1 − ρ), ρ the ratio of the last two gains, at most
/// [`RACE_MAX_RATIO`]; nothing once it stopped improving). The full-batch fit's holdout
/// curve is smooth, so the ratio is a fair guide; the factor covers slow tails.
#[derive(Clone, Copy, Debug)]
pub struct Rival<'a> {
    /// Per-observation log-likelihood terms in sorted-holdout order.
    pub terms: &'a [f64],
}

impl Rival<'_> {
    /// mean(d) − [`MARGIN_STANDARD_ERRORS`] · SE(d) of d = ours − rival's per observation
    /// (positive: ahead by the selection's margin).
    fn margin(&self, ours: &[(f64, bool)]) -> f64 {
        let n = ours.len().min(self.terms.len());
        if n < 2 {
            return f64::INFINITY;
        }
        let mut sum = 0.0;
        for (&(a, _), &b) in ours.iter().zip(self.terms) {
            sum += a - b;
        }
        let mean = sum / n as f64;
        let mut squares = 0.0;
        for (&(a, _), &b) in ours.iter().zip(self.terms) {
            let x = a - b - mean;
            squares += x * x;
        }
        mean - MARGIN_STANDARD_ERRORS * (squares / (n as f64 - 1.0) / n as f64).sqrt()
    }
}

/// Whether a fit whose best holdout log-likelihood after each iteration is `best_after`
/// (at least 3 values) and whose current margin over its rival is `margin` should stop
/// racing (see [`Rival`]).
fn race_lost(best_after: &[f64], margin: f64) -> bool {
    let [.., a, b, c] = best_after else {
        return false;
    };
    if margin >= 0.0 {
        return false;
    }
    let (last, previous) = (c - b, b - a);
    let remaining = if last <= 0.0 {
        0.0
    } else {
        let ratio = if previous > 0.0 {
            (last / previous).min(RACE_MAX_RATIO)
        } else {
            RACE_MAX_RATIO
        };
        last * ratio / (1.0 - ratio)
    };
    RACE_SAFETY * remaining < -margin
}

/// [`fit_from`], racing `rival` when given (see [`Rival`]).
pub fn fit_against(
    problem: &FitProblem<'_>,
    hp: &Hyperparameters,
    threads: usize,
    start: Option<&WarmStart>,
    rival: Option<&Rival<'_>>,
) -> Fit {
    let (k, n_questions) = problem.hints.dim();
    let train = problem.train;
    let n_learners = train.n_learners();
    let learners = (0..n_learners)
        .filter(|&j| !train.learner_entries(j).is_empty())
        .count();
    let mut stats = FitStats {
        training_observations: train.len(),
        holdout_observations: problem.holdout.len(),
        learners,
        outer_iterations: 0,
        best_iteration: 0,
        holdout_log_likelihood: None,
        holdout_accuracy: None,
        holdout_log_loss: None,
    };
    if train.is_empty() {
        return Fit {
            loadings: problem.hints.mapv(|h| if h { 1.0 } else { 0.0 }),
            easiness: Array1::zeros(n_questions),
            knowledge: Array2::zeros((n_learners, k)),
            stats,
        };
    }
    let initial = match problem.initial_loadings {
        Some(w0) => w0.to_owned(),
        None => problem.hints.mapv(|h| if h { 1.0 } else { 0.0 }),
    };
    let mut state = State {
        k,
        w: initial.t().iter().copied().collect(),
        d: match start {
            Some(s) if s.easiness.len() == n_questions => s.easiness.to_vec(),
            _ => initial_easiness(train).to_vec(),
        },
        u: match start {
            Some(s) if s.knowledge.dim() == (n_learners, k) => {
                s.knowledge.iter().copied().collect()
            }
            _ => vec![0.0; n_learners * k],
        },
    };
    let penalties = Penalties::new(problem.hints, hp);
    let mut holdout = problem.holdout.to_vec();
    holdout.sort();
    let early_stopping = holdout.len() >= MIN_OBSERVATIONS_FOR_EARLY_STOPPING
        && train.len() >= MIN_OBSERVATIONS_FOR_EARLY_STOPPING;
    let max_iterations = if early_stopping {
        hp.max_outer_iterations
    } else {
        ITERATIONS_WITHOUT_EARLY_STOPPING
    };
    let threads = threads.max(1);
    // Blocks only spread work over threads: each question's sums are the same in any block.
    let blocks = kernel::QuestionBlocks::new(
        train,
        if threads > 1 {
            (QUESTION_BLOCKS_PER_THREAD * threads).min(n_questions / MIN_QUESTIONS_PER_BLOCK)
        } else {
            1
        },
    );
    let mut terms = Vec::new();
    let mut best: Option<(f64, f64)> = None;
    let mut kept = State {
        k,
        w: Vec::new(),
        d: Vec::new(),
        u: Vec::new(),
    };
    let mut since_best = 0;
    // The best holdout log-likelihood after each iteration (for the pace against a rival).
    let mut best_after: Vec<f64> = Vec::new();
    for iteration in 1..=max_iterations {
        update_knowledge(&mut state, train, hp, threads);
        update_questions(&mut state, train, hp, &penalties, &blocks, threads);
        stats.outer_iterations = iteration;
        if !early_stopping {
            continue;
        }
        let (ll, accuracy) = holdout_scores(&state, &holdout, &mut terms, threads);
        if best.is_none_or(|(b, _)| ll > b + MIN_IMPROVEMENT) {
            best = Some((ll, accuracy));
            kept.w.clone_from(&state.w);
            kept.d.clone_from(&state.d);
            kept.u.clone_from(&state.u);
            stats.best_iteration = iteration;
            since_best = 0;
        } else {
            since_best += 1;
            if since_best >= hp.patience {
                break;
            }
        }
        if let (Some(rival), Some((b, _))) = (rival, best) {
            best_after.push(b);
            if iteration >= RACE_MIN_ITERATIONS && race_lost(&best_after, rival.margin(&terms)) {
                break;
            }
        }
    }
    let kept = match best {
        Some((ll, accuracy)) => {
            stats.holdout_log_likelihood = Some(ll);
            stats.holdout_log_loss = Some(-ll);
            stats.holdout_accuracy = Some(accuracy);
            kept
        }
        None => {
            stats.best_iteration = stats.outer_iterations;
            state
        }
    };
    let loadings = Array2::from_shape_vec((n_questions, k), kept.w)
        .map(|w| w.reversed_axes().as_standard_layout().to_owned())
        .unwrap_or_else(|_| Array2::zeros((k, n_questions)));
    Fit {
        loadings,
        easiness: Array1::from(kept.d),
        knowledge: Array2::from_shape_vec((n_learners, k), kept.u)
            .unwrap_or_else(|_| Array2::zeros((n_learners, k))),
        stats,
    }
}

/// Re-estimates the knowledge of every learner of `responses` with the fit's (W, d)
/// fixed: `rounds` §7 U-steps starting from the fit's U (learners without responses only
/// feel the ridge). Deterministic for any `threads`.
pub fn rescore_knowledge(
    fitted: &Fit,
    hp: &Hyperparameters,
    responses: &Observations,
    rounds: usize,
    threads: usize,
) -> Array2<f64> {
    let (k, _) = fitted.loadings.dim();
    let n = responses.n_learners();
    let w: Vec<f64> = fitted.loadings.t().iter().copied().collect();
    let d = fitted.easiness.to_vec();
    let mut u: Vec<f64> = fitted.knowledge.iter().copied().collect();
    u.resize(n * k, 0.0);
    for _ in 0..rounds {
        kernel::knowledge_step(&w, &d, &mut u, k, responses, hp, threads.max(1));
    }
    Array2::from_shape_vec((n, k), u).unwrap_or_else(|_| Array2::zeros((n, k)))
}

/// The U-step (§7): see [`kernel::knowledge_step`].
fn update_knowledge(state: &mut State, train: &Observations, hp: &Hyperparameters, threads: usize) {
    kernel::knowledge_step(
        &state.w,
        &state.d,
        &mut state.u,
        state.k,
        train,
        hp,
        threads,
    );
}

/// The (W, d)-step (§7): see [`kernel::question_step`].
fn update_questions(
    state: &mut State,
    train: &Observations,
    hp: &Hyperparameters,
    penalties: &Penalties,
    blocks: &kernel::QuestionBlocks,
    threads: usize,
) {
    let rows = kernel::PenaltyRows {
        l2: &penalties.l2,
        l1: &penalties.l1,
        max_l2: penalties.max_l2,
    };
    kernel::question_step(
        &mut state.w,
        &mut state.d,
        &state.u,
        state.k,
        train,
        hp,
        &rows,
        blocks,
        threads,
    );
}

/// Mean clipped log-likelihood and accuracy over the holdout, summed in its sorted order.
///
/// The per-observation terms are computed on up to `threads` threads into one buffer;
/// the sums then run sequentially, so the result does not depend on `threads`.
fn holdout_scores(
    state: &State,
    holdout: &[Observation],
    terms: &mut Vec<(f64, bool)>,
    threads: usize,
) -> (f64, f64) {
    let k = state.k;
    terms.clear();
    terms.resize(holdout.len(), (0.0, false));
    let items: Vec<HoldoutItem<'_>> = holdout
        .chunks(HOLDOUT_PER_ITEM)
        .zip(terms.chunks_mut(HOLDOUT_PER_ITEM))
        .collect();
    kernel::run_queue(
        items,
        threads,
        || (),
        |(observations, out), _| {
            for (o, t) in observations.iter().zip(out) {
                let w = &state.w[o.question * k..(o.question + 1) * k];
                let u = &state.u[o.learner * k..(o.learner + 1) * k];
                let p = sigmoid(state.d[o.question] + dot(w, u));
                *t = (
                    clipped_log_likelihood(p, o.correct),
                    (p >= 0.5) == o.correct,
                );
            }
        },
    );
    let (mut ll, mut hits) = (0.0, 0usize);
    for &(term, hit) in terms.iter() {
        ll += term;
        hits += usize::from(hit);
    }
    let n = holdout.len() as f64;
    (ll / n, hits as f64 / n)
}

/// A work item of the holdout scoring: observations and their (log-likelihood, hit) slots.
type HoldoutItem<'a> = (&'a [Observation], &'a mut [(f64, bool)]);

/// Holdout observations per work item of the scoring.
const HOLDOUT_PER_ITEM: usize = 16_384;

#[inline]
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut s = 0.0;
    for (x, y) in a.iter().zip(b) {
        s += x * y;
    }
    s
}

/// ‖x‖², summed in ascending order.
#[inline]
fn squared_norm(x: &[f64]) -> f64 {
    dot(x, x)
}

mod kernel;
pub(crate) use kernel::run_queue;

#[cfg(test)]
mod tests;
