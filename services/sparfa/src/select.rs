//! Hyper-parameter selection (docs/design/sparfa.md §4 Decision): fit a fixed list of candidates
//! and keep the best holdout log-likelihood.

use ndarray::{s, Array2, ArrayView2};
use serde::{Deserialize, Serialize};

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::fit::{
    clipped_log_likelihood, fit_against, Fit, FitProblem, FitStats, Hyperparameters, Rival,
    WarmStart, MARGIN_STANDARD_ERRORS, MIN_OBSERVATIONS_FOR_EARLY_STOPPING,
};
use crate::irt::{fit_marginal, MarginalOptions, Slopes};
use crate::observations::{Observation, Observations};

/// How a candidate treats the page (or free) concept rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PageRows {
    /// Rows hinted by H, initialised to H (§7).
    Hinted,
    /// Rows unused: no hints, W⁰ = 0, so they stay exactly 0 (a saddle of the objective).
    Off,
    /// Rows without hints, initialised from the caller's W⁰ (the `free` model).
    Free,
}

/// How a candidate's parameters are estimated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Estimator {
    /// The §7 joint fit of (W, d) and U with §6 early stopping.
    #[default]
    Joint,
    /// One general concept only, θ integrated out (marginal likelihood, [`crate::irt`]):
    /// a 2PL with learned loadings, a common-slope Rasch without. Learners are scored by EAP.
    Marginal,
}

/// One configuration tried by the selection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// A short stable name, recorded with the model.
    pub name: String,
    /// Penalties; `extra_concepts` general rows (hinted on every question) follow the page rows.
    pub hyperparameters: Hyperparameters,
    /// Treatment of the page rows.
    pub pages: PageRows,
    /// Joint (§7) or marginal estimation.
    #[serde(default)]
    pub estimator: Estimator,
    /// A joint candidate with extra concepts that starts from the marginal 2PL fitted
    /// before it (when the list has one): its general row and knowledge from the 2PL
    /// (scaled to γ_U), d from the 2PL, page knowledge 0, so it starts at the 2PL's
    /// predictions and learns the page structure from there.
    #[serde(default)]
    pub warm_from_two_pl: bool,
    /// Fitted only when the holdout is too small to compare candidates (then the first
    /// candidate is the model); skipped by a real comparison.
    #[serde(default)]
    pub fallback_only: bool,
}

fn candidate(name: &str, pages: PageRows, f: impl FnOnce(&mut Hyperparameters)) -> Candidate {
    let mut hyperparameters = Hyperparameters::spec();
    f(&mut hyperparameters);
    Candidate {
        name: name.to_owned(),
        hyperparameters,
        pages,
        estimator: Estimator::Joint,
        warm_from_two_pl: false,
        fallback_only: false,
    }
}

/// Patience of a candidate started from the 2PL: it starts near its optimum, so its
/// holdout curve is smooth; 5 iterations without improvement end it (§6's 20 is for a
/// cold start).
pub const WARM_PATIENCE: usize = 5;

fn warm(mut c: Candidate) -> Candidate {
    c.warm_from_two_pl = true;
    c.hyperparameters.patience = WARM_PATIENCE;
    c
}

/// A 2PL by marginal likelihood: one general concept, ℓ2 0.05 on its loadings and on d.
pub fn two_pl_marginal_candidate() -> Candidate {
    let mut c = candidate("2pl-marginal", PageRows::Off, |h| h.extra_concepts = 1);
    c.estimator = Estimator::Marginal;
    c
}

/// A Rasch model with a common slope (the latent scale) by marginal likelihood.
pub fn rasch_marginal_candidate() -> Candidate {
    let mut c = candidate("rasch-marginal", PageRows::Off, |h| {
        h.extra_concepts = 1;
        h.learn_loadings = false;
    });
    c.estimator = Estimator::Marginal;
    c
}

/// A one-factor 2PL: no page rows, one general row with ℓ2 0.05 (§12 `2pl`).
pub fn two_pl_candidate() -> Candidate {
    candidate("2pl", PageRows::Off, |h| h.extra_concepts = 1)
}

/// A Rasch model: one general row fixed to 1, only d learned (§12 `rasch`).
pub fn rasch_candidate() -> Candidate {
    candidate("rasch", PageRows::Off, |h| {
        h.extra_concepts = 1;
        h.learn_loadings = false;
    })
}

/// The §4 constants on the page hints, nothing else (§12 `tagged` with fixed constants).
pub fn hinted_spec_candidate() -> Candidate {
    candidate("hinted", PageRows::Hinted, |_| {})
}

/// A regularised 2PL: one general row with ℓ2 0.5 and γ_U = 10.
pub fn two_pl_strong_candidate() -> Candidate {
    candidate("2pl-strong", PageRows::Off, |h| {
        h.extra_concepts = 1;
        h.lambda_extra_l2 = 0.5;
        h.gamma_u = 10.0;
    })
}

/// Patience of the joint candidates of [`hinted_candidates`]: their full-batch holdout
/// curves are smooth (one rise, then a steady decline: every shape of BENCHMARKS.md's
/// issue 20 table), so 2 iterations without improvement end them (§6's 20; 5 before,
/// which kept the same best iterate and ran 3 more iterations).
pub const SMOOTH_PATIENCE: usize = 2;

/// The pages plus one general concept with strong shrinkage, cold-started as in §7.
pub fn hinted_general_strong_candidate() -> Candidate {
    candidate("hinted+general-strong", PageRows::Hinted, |h| {
        h.extra_concepts = 1;
        h.lambda_h_l2 = 8.0;
        h.lambda_extra_l2 = 2.0;
        h.gamma_u = 10.0;
        h.patience = SMOOTH_PATIENCE;
    })
}

/// [`hinted_general_strong_candidate`] started from the marginal 2PL (not in the default
/// lists: on data without a general factor it stays closer to the 2PL than it should).
pub fn hinted_warm_candidate() -> Candidate {
    let mut c = warm(hinted_general_strong_candidate());
    c.name = "hinted+general-from-2pl".to_owned();
    c
}

/// The candidates for a hinted model. The first, chosen when the holdout is too small
/// to compare, is the §4 constants (with [`SMOOTH_PATIENCE`]: it peaks within a few
/// iterations). Then the pages plus one general concept (hinted on
/// every question, so the model contains a 2PL) with strong shrinkage (ℓ2 8 on page
/// loadings, 2 on the general one, γ_U = 10), and the one-factor 2PL and Rasch models
/// by marginal likelihood (they stay accurate when learners answer few questions).
/// The joint candidate must beat the marginal ones by two standard errors ([`choose`]).
/// ℓ1 stays 10 on non-hinted entries: loadings may leave the hints when the data demand it.
pub fn hinted_candidates() -> Vec<Candidate> {
    let mut spec = hinted_spec_candidate();
    spec.hyperparameters.patience = SMOOTH_PATIENCE;
    vec![
        spec,
        two_pl_marginal_candidate(),
        rasch_marginal_candidate(),
        hinted_general_strong_candidate(),
    ]
}

/// The §12 `free` configuration: ℓ1 = 1 and ℓ2 = 0.05 on every entry.
pub fn free_candidate() -> Candidate {
    candidate("free", PageRows::Free, |h| {
        h.lambda_nh_l1 = 1.0;
        h.lambda_nh_l2 = 0.05;
    })
}

/// The candidates for a model without hints: the §12 `free` configuration (a fall-back
/// when the holdout is too small to compare), the marginal 2PL and Rasch models, and the
/// free concepts plus one general concept.
pub fn free_candidates() -> Vec<Candidate> {
    let mut with_general = free_candidate();
    with_general.name = "free+general".to_owned();
    with_general.hyperparameters.extra_concepts = 1;
    let mut spec = free_candidate();
    spec.fallback_only = true;
    vec![
        spec,
        two_pl_marginal_candidate(),
        rasch_marginal_candidate(),
        with_general,
    ]
}

/// The score of one candidate on the holdout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CandidateScore {
    /// The candidate's name.
    pub name: String,
    /// Mean holdout log-likelihood; `None` when the holdout is too small.
    pub holdout_log_likelihood: Option<f64>,
    /// Outer iterations the candidate ran.
    pub outer_iterations: usize,
}

/// A fitted model with everything needed to serve and record it.
#[derive(Clone, Debug, PartialEq)]
pub struct SelectedFit {
    /// The fit of the chosen candidate on the full training set.
    pub fit: Fit,
    /// H of the fit, K_total × Q (page rows, then extra rows).
    pub hints: Array2<bool>,
    /// The chosen candidate.
    pub chosen: Candidate,
    /// Every candidate's score, in candidate order.
    pub scores: Vec<CandidateScore>,
    /// Whether the selection ran on a learner subsample (see [`SelectionInput::selection_cap`]).
    pub selected_on_subsample: bool,
}

/// The data of a selection.
#[derive(Clone, Debug)]
pub struct SelectionInput<'a> {
    /// Page hints, K × Q (all false for a free model).
    pub page_hints: ArrayView2<'a, bool>,
    /// W⁰ of the page rows for [`PageRows::Free`] candidates (K × Q).
    pub free_init: Option<ArrayView2<'a, f64>>,
    /// Ω_train.
    pub train: &'a Observations,
    /// The holdout used for early stopping and selection.
    pub holdout: &'a [Observation],
    /// Above this many training observations, candidates are compared on every s-th
    /// learner (s = ⌈|Ω| / cap⌉) and only the winner is fitted on all data. A single
    /// candidate is never fitted on a subsample.
    pub selection_cap: usize,
    /// Worker threads per fit (the result does not depend on it).
    pub threads: usize,
}

/// Hints and W⁰ of a candidate: the page rows, then `extra_concepts` rows hinted on every question.
pub fn candidate_layout(
    c: &Candidate,
    page_hints: ArrayView2<'_, bool>,
    free_init: Option<ArrayView2<'_, f64>>,
) -> (Array2<bool>, Array2<f64>) {
    let (k, q) = page_hints.dim();
    let extra = c.hyperparameters.extra_concepts;
    let mut hints = Array2::from_elem((k + extra, q), false);
    let mut init = Array2::zeros((k + extra, q));
    match c.pages {
        PageRows::Hinted => {
            hints.slice_mut(s![..k, ..]).assign(&page_hints);
            init.slice_mut(s![..k, ..])
                .assign(&page_hints.mapv(|h| if h { 1.0 } else { 0.0 }));
        }
        PageRows::Off => {}
        PageRows::Free => {
            if let Some(w0) = free_init {
                init.slice_mut(s![..k, ..]).assign(&w0);
            }
        }
    }
    hints.slice_mut(s![k.., ..]).fill(true);
    init.slice_mut(s![k.., ..]).fill(1.0);
    (hints, init)
}

/// Runs `f(item, threads)` for every item: side by side on one thread each when there
/// are several items and threads (taken from a shared queue), else one after the other
/// with all threads. Results come back in item order.
fn side_by_side<R: Send>(
    items: &[usize],
    threads: usize,
    f: impl Fn(usize, usize) -> R + Sync,
) -> Vec<(usize, R)> {
    if threads <= 1 || items.len() <= 1 {
        let mut done: Vec<(usize, R)> = items.iter().map(|&i| (i, f(i, threads.max(1)))).collect();
        done.sort_by_key(|(i, _)| *i);
        return done;
    }
    let next = AtomicUsize::new(0);
    let mut done: Vec<(usize, R)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads.min(items.len()))
            .map(|_| {
                let (next, f) = (&next, &f);
                scope.spawn(move || {
                    let mut done = Vec::new();
                    while let Some(&i) = items.get(next.fetch_add(1, Ordering::Relaxed)) {
                        done.push((i, f(i, 1)));
                    }
                    done
                })
            })
            .collect();
        // A worker only fails if fitting panics; its items are then missing.
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    done.sort_by_key(|(i, _)| *i);
    done
}

fn fit_candidate(
    c: &Candidate,
    input: &SelectionInput<'_>,
    threads: usize,
    train: &Observations,
    holdout: &[Observation],
    two_pl: Option<&Fit>,
    rival: Option<&Rival<'_>>,
) -> (Fit, Array2<bool>) {
    let (hints, mut init) = candidate_layout(c, input.page_hints, input.free_init);
    if c.estimator == Estimator::Marginal {
        return (
            fit_marginal_candidate(c, &hints, threads, train, holdout),
            hints,
        );
    }
    let extra = c.hyperparameters.extra_concepts;
    let k = hints.nrows();
    // The 2PL's general row and scores, rescaled to the ridge γ_U: u = θ / √γ, w = a √γ.
    let warm = match two_pl {
        Some(two_pl) if extra > 0 && two_pl.loadings.nrows() > 0 => {
            let scale = c.hyperparameters.gamma_u.max(f64::MIN_POSITIVE).sqrt();
            let general = two_pl.loadings.nrows() - 1;
            init.row_mut(k - 1)
                .assign(&two_pl.loadings.row(general).mapv(|a| a * scale));
            let mut knowledge = Array2::zeros((train.n_learners(), k));
            knowledge
                .column_mut(k - 1)
                .assign(&two_pl.knowledge.column(general).mapv(|t| t / scale));
            Some(WarmStart {
                easiness: two_pl.easiness.clone(),
                knowledge,
            })
        }
        _ => None,
    };
    let problem = FitProblem {
        hints: hints.view(),
        initial_loadings: Some(init.view()),
        train,
        holdout,
    };
    (
        fit_against(&problem, &c.hyperparameters, threads, warm.as_ref(), rival),
        hints,
    )
}

/// A [`Estimator::Marginal`] candidate as a [`Fit`]: the slopes on the last (general)
/// row of W, EAP scores as that row's knowledge, holdout statistics as in §6.
fn fit_marginal_candidate(
    c: &Candidate,
    hints: &Array2<bool>,
    threads: usize,
    train: &Observations,
    holdout: &[Observation],
) -> Fit {
    let hp = &c.hyperparameters;
    let mut options = MarginalOptions::new(if hp.learn_loadings {
        Slopes::PerQuestion
    } else {
        Slopes::Common
    });
    options.slope_l2 = hp.lambda_extra_l2;
    options.easiness_l2 = hp.lambda_d_l2;
    let m = fit_marginal(train, &options, threads);
    let (k, n_questions) = hints.dim();
    let n_learners = train.n_learners();
    let mut loadings = Array2::zeros((k, n_questions));
    let mut knowledge = Array2::zeros((n_learners, k));
    if k > 0 {
        loadings
            .row_mut(k - 1)
            .assign(&ndarray::ArrayView1::from(&m.slopes));
        knowledge
            .column_mut(k - 1)
            .assign(&ndarray::ArrayView1::from(&m.theta));
    }
    let learners = (0..n_learners)
        .filter(|&j| train.learner(j).next().is_some())
        .count();
    let mut stats = FitStats {
        training_observations: train.len(),
        holdout_observations: holdout.len(),
        learners,
        outer_iterations: m.iterations,
        best_iteration: m.iterations,
        holdout_log_likelihood: None,
        holdout_accuracy: None,
        holdout_log_loss: None,
    };
    if holdout.len() >= MIN_OBSERVATIONS_FOR_EARLY_STOPPING
        && train.len() >= MIN_OBSERVATIONS_FOR_EARLY_STOPPING
    {
        let mut sorted = holdout.to_vec();
        sorted.sort();
        let (mut ll, mut hits) = (0.0, 0usize);
        for o in &sorted {
            let p = m.predict(o.learner, o.question);
            ll += clipped_log_likelihood(p, o.correct);
            hits += usize::from((p >= 0.5) == o.correct);
        }
        let n = sorted.len() as f64;
        stats.holdout_log_likelihood = Some(ll / n);
        stats.holdout_log_loss = Some(-ll / n);
        stats.holdout_accuracy = Some(hits as f64 / n);
    }
    Fit {
        loadings,
        easiness: m.easiness.into(),
        knowledge,
        stats,
    }
}

/// The chosen candidate. The best mean holdout log-likelihood, except that a joint
/// candidate must beat every marginal one by more than [`MARGIN_STANDARD_ERRORS`]
/// standard errors (of the per-observation difference): joint candidates pick their best
/// iterate on the holdout (early stopping), so their holdout score is optimistic, while
/// the marginal ones never see the holdout. Otherwise the best marginal candidate within
/// that margin is chosen.
/// Ties go to the earlier candidate. Without holdout scores, the first candidate.
fn choose(
    candidates: &[Candidate],
    fits: &[(Fit, Array2<bool>)],
    holdout: &[Observation],
) -> usize {
    let score = |i: usize| {
        fits[i]
            .0
            .stats
            .holdout_log_likelihood
            .unwrap_or(f64::NEG_INFINITY)
    };
    let mut best = 0;
    for i in 1..fits.len() {
        if score(i) > score(best) {
            best = i;
        }
    }
    if !score(best).is_finite()
        || holdout.len() < 2
        || candidates[best].estimator == Estimator::Marginal
    {
        return best;
    }
    let mut sorted = holdout.to_vec();
    sorted.sort();
    let terms = |i: usize| -> Vec<f64> {
        let f = &fits[i].0;
        sorted
            .iter()
            .map(|o| clipped_log_likelihood(f.predict(o.learner, o.question), o.correct))
            .collect()
    };
    // The best marginal candidate (the earlier on ties).
    let mut marginal: Option<usize> = None;
    for (i, c) in candidates.iter().enumerate().take(fits.len()) {
        if c.estimator == Estimator::Marginal && marginal.is_none_or(|m| score(i) > score(m)) {
            marginal = Some(i);
        }
    }
    let Some(m) = marginal else {
        return best;
    };
    let n = sorted.len() as f64;
    let diff: Vec<f64> = terms(best)
        .iter()
        .zip(terms(m))
        .map(|(b, a)| b - a)
        .collect();
    let mean = diff.iter().sum::<f64>() / n;
    let variance = diff.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0);
    if mean <= MARGIN_STANDARD_ERRORS * (variance / n).sqrt() {
        m
    } else {
        best
    }
}

/// Fits every candidate and keeps one by holdout log-likelihood (see [`choose`]).
/// Without early stopping (small holdout) the first candidate wins.
/// Returns `None` only when `candidates` is empty.
pub fn fit_selected(input: &SelectionInput<'_>, candidates: &[Candidate]) -> Option<SelectedFit> {
    let train = input.train;
    // A single candidate needs no comparison: it is fitted once, on all data.
    let stride =
        if candidates.len() > 1 && input.selection_cap > 0 && train.len() > input.selection_cap {
            train.len().div_ceil(input.selection_cap)
        } else {
            1
        };
    let subsample;
    let sub_holdout: Vec<Observation>;
    let (sel_train, sel_holdout) = if stride > 1 {
        let kept: Vec<Observation> = train.iter().filter(|o| o.learner % stride == 0).collect();
        subsample = Observations::new(train.n_learners(), train.n_questions(), &kept).ok()?;
        sub_holdout = input
            .holdout
            .iter()
            .filter(|o| o.learner % stride == 0)
            .copied()
            .collect();
        (&subsample, sub_holdout.as_slice())
    } else {
        (train, input.holdout)
    };
    // Without early stopping the candidates cannot be compared: only the first is fitted.
    // With a real comparison, fall-back-only candidates are skipped.
    let compared: Vec<Candidate>;
    let candidates = if sel_holdout.len() < MIN_OBSERVATIONS_FOR_EARLY_STOPPING
        || sel_train.len() < MIN_OBSERVATIONS_FOR_EARLY_STOPPING
    {
        &candidates[..candidates.len().min(1)]
    } else if candidates.iter().any(|c| !c.fallback_only) {
        compared = candidates
            .iter()
            .filter(|c| !c.fallback_only)
            .cloned()
            .collect();
        &compared
    } else {
        candidates
    };
    // Marginal candidates first, side by side on one thread each, then joint ones (a
    // joint candidate may start from the marginal 2PL and races the best marginal one);
    // all are compared in candidate order afterwards.
    let mut slots: Vec<Option<(Fit, Array2<bool>)>> = vec![None; candidates.len()];
    let (marginal, joint): (Vec<usize>, Vec<usize>) =
        (0..candidates.len()).partition(|&i| candidates[i].estimator == Estimator::Marginal);
    for (i, result) in side_by_side(&marginal, input.threads, |i, threads| {
        fit_candidate(
            &candidates[i],
            input,
            threads,
            sel_train,
            sel_holdout,
            None,
            None,
        )
    }) {
        slots[i] = Some(result);
    }
    let two_pl = marginal
        .iter()
        .find(|&&i| candidates[i].hyperparameters.learn_loadings)
        .and_then(|&i| slots[i].as_ref().map(|(f, _)| f.clone()));
    // The joint candidates race the best marginal one: a joint fit that cannot clear the
    // selection's margin stops early (see [`Rival`]).
    let mut best_marginal: Option<usize> = None;
    for &i in &marginal {
        let score = |i: usize| {
            slots[i]
                .as_ref()
                .and_then(|(f, _)| f.stats.holdout_log_likelihood)
                .unwrap_or(f64::NEG_INFINITY)
        };
        if score(i).is_finite() && best_marginal.is_none_or(|m| score(i) > score(m)) {
            best_marginal = Some(i);
        }
    }
    let rival_terms: Option<Vec<f64>> = best_marginal.and_then(|m| {
        let (f, _) = slots[m].as_ref()?;
        let mut sorted = sel_holdout.to_vec();
        sorted.sort();
        Some(
            sorted
                .iter()
                .map(|o| clipped_log_likelihood(f.predict(o.learner, o.question), o.correct))
                .collect(),
        )
    });
    let rival = rival_terms.as_deref().map(|terms| Rival { terms });
    // Joint fits end at very different iterations once they race, so they run one after
    // the other, each on every thread (side by side, one would idle a thread).
    for &i in &joint {
        let warm = two_pl.as_ref().filter(|_| candidates[i].warm_from_two_pl);
        slots[i] = Some(fit_candidate(
            &candidates[i],
            input,
            input.threads,
            sel_train,
            sel_holdout,
            warm,
            rival.as_ref(),
        ));
    }
    let fits: Vec<(Fit, Array2<bool>)> = slots.into_iter().collect::<Option<Vec<_>>>()?;
    let scores: Vec<CandidateScore> = candidates
        .iter()
        .zip(&fits)
        .map(|(c, (f, _))| CandidateScore {
            name: c.name.clone(),
            holdout_log_likelihood: f.stats.holdout_log_likelihood,
            outer_iterations: f.stats.outer_iterations,
        })
        .collect();
    let index = choose(candidates, &fits, sel_holdout);
    let (mut f, mut hints) = fits.into_iter().nth(index)?;
    let chosen = candidates[index].clone();
    if stride > 1 {
        let warm = if chosen.warm_from_two_pl {
            candidates
                .iter()
                .find(|c| c.estimator == Estimator::Marginal && c.hyperparameters.learn_loadings)
                .map(|c| fit_candidate(c, input, input.threads, train, input.holdout, None, None).0)
        } else {
            None
        };
        (f, hints) = fit_candidate(
            &chosen,
            input,
            input.threads,
            train,
            input.holdout,
            warm.as_ref(),
            None,
        );
    }
    Some(SelectedFit {
        fit: f,
        hints,
        chosen,
        scores,
        selected_on_subsample: stride > 1,
    })
}

/// Drops the unused loadings of a selected fit: W entries exactly 0 are not stored.
pub fn loadings_coo(loadings: ArrayView2<'_, f64>) -> Vec<(usize, usize, f64)> {
    let (k, q) = loadings.dim();
    let mut coo = Vec::new();
    for col in 0..q {
        for row in 0..k {
            let w = loadings[(row, col)];
            if w > 0.0 {
                coo.push((row, col, w));
            }
        }
    }
    coo
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Learners with a general ability and a page-specific one; question q on page q mod 3.
    fn data(n: usize, q: usize) -> (Array2<bool>, Observations, Vec<Observation>) {
        let hints = Array2::from_shape_fn((3, q), |(c, qi)| qi % 3 == c);
        let mut state: u64 = 4242;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let (mut train, mut holdout) = (Vec::new(), Vec::new());
        for j in 0..n {
            let general = next() * 3.0 - 1.5;
            let pages = [next() - 0.5, next() - 0.5, next() - 0.5];
            for qi in 0..q {
                if next() < 0.3 {
                    continue;
                }
                let p =
                    crate::fit::sigmoid(general + 1.5 * pages[qi % 3] + 0.3 - qi as f64 / q as f64);
                let o = Observation {
                    learner: j,
                    question: qi,
                    correct: next() < p,
                };
                if (j + qi) % 7 == 0 {
                    holdout.push(o);
                } else {
                    train.push(o);
                }
            }
        }
        (hints, Observations::new(n, q, &train).unwrap(), holdout)
    }

    #[test]
    fn side_by_side_returns_every_item_in_order() {
        for threads in [1, 2, 3] {
            let got = side_by_side(&[4, 1, 7], threads, |i, t| (i * 10, t));
            let items: Vec<usize> = got.iter().map(|(i, _)| *i).collect();
            assert_eq!(items, vec![1, 4, 7], "{threads} threads");
            assert!(got.iter().all(|(i, (v, t))| *v == i * 10 && *t >= 1));
        }
    }

    #[test]
    fn selection_with_marginal_and_warm_candidates_is_identical_for_any_thread_count() {
        let (hints, train, holdout) = data(300, 18);
        let run = |threads: usize| {
            fit_selected(
                &SelectionInput {
                    page_hints: hints.view(),
                    free_init: None,
                    train: &train,
                    holdout: &holdout,
                    selection_cap: 0,
                    threads,
                },
                &hinted_candidates(),
            )
            .expect("candidates")
        };
        let one = run(1);
        assert_eq!(one.scores.len(), hinted_candidates().len());
        assert!(one
            .scores
            .iter()
            .all(|s| s.holdout_log_likelihood.is_some()));
        for threads in [2, 3] {
            assert_eq!(run(threads), one, "{threads} threads");
        }
    }

    #[test]
    fn a_warm_start_begins_at_the_two_pl_predictions() {
        let (hints, train, holdout) = data(200, 12);
        let input = SelectionInput {
            page_hints: hints.view(),
            free_init: None,
            train: &train,
            holdout: &holdout,
            selection_cap: 0,
            threads: 1,
        };
        let (two_pl, _) = fit_candidate(
            &two_pl_marginal_candidate(),
            &input,
            1,
            &train,
            &holdout,
            None,
            None,
        );
        let mut warm = hinted_warm_candidate();
        // Zero iterations cannot be asked for; one outer iteration must stay close to the 2PL.
        warm.hyperparameters.max_outer_iterations = 1;
        warm.hyperparameters.patience = 1;
        let (fit, _) = fit_candidate(&warm, &input, 1, &train, &holdout, Some(&two_pl), None);
        let (cold, _) = fit_candidate(&warm, &input, 1, &train, &holdout, None, None);
        let gap = |f: &Fit| {
            (0..train.n_learners())
                .flat_map(|j| (0..12).map(move |q| (j, q)))
                .map(|(j, q)| (f.predict(j, q) - two_pl.predict(j, q)).abs())
                .sum::<f64>()
        };
        assert!(
            gap(&fit) < gap(&cold),
            "warm {} cold {}",
            gap(&fit),
            gap(&cold)
        );
    }
}
