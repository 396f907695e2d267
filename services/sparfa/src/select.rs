//! Hyper-parameter selection (§4 Decision): fit a fixed list of candidates and keep the best holdout log-likelihood.

use ndarray::{s, Array2, ArrayView2};
use serde::{Deserialize, Serialize};

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::fit::{fit, Fit, FitProblem, Hyperparameters, MIN_OBSERVATIONS_FOR_EARLY_STOPPING};
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

/// One configuration tried by the selection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// A short stable name, recorded with the model.
    pub name: String,
    /// Penalties; `extra_concepts` general rows (hinted on every question) follow the page rows.
    pub hyperparameters: Hyperparameters,
    /// Treatment of the page rows.
    pub pages: PageRows,
}

fn candidate(name: &str, pages: PageRows, f: impl FnOnce(&mut Hyperparameters)) -> Candidate {
    let mut hyperparameters = Hyperparameters::spec();
    f(&mut hyperparameters);
    Candidate {
        name: name.to_owned(),
        hyperparameters,
        pages,
    }
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

/// The candidates for a hinted model. The first, chosen when the holdout is too small
/// to compare, is the §4 constants. Then the pages plus one general concept (hinted on
/// every question, so the model contains a 2PL) with strong shrinkage (ℓ2 8 on page
/// loadings, 2 on the general one, γ_U = 10), and the strong 2PL and Rasch fall-backs.
/// ℓ1 stays 10 on non-hinted entries: loadings may leave the hints when the data demand it.
pub fn hinted_candidates() -> Vec<Candidate> {
    vec![
        hinted_spec_candidate(),
        candidate("hinted+general-strong", PageRows::Hinted, |h| {
            h.extra_concepts = 1;
            h.lambda_h_l2 = 8.0;
            h.lambda_extra_l2 = 2.0;
            h.gamma_u = 10.0;
        }),
        two_pl_strong_candidate(),
        rasch_candidate(),
    ]
}

/// The §12 `free` configuration: ℓ1 = 1 and ℓ2 = 0.05 on every entry.
pub fn free_candidate() -> Candidate {
    candidate("free", PageRows::Free, |h| {
        h.lambda_nh_l1 = 1.0;
        h.lambda_nh_l2 = 0.05;
    })
}

/// The candidates for a model without hints: the §12 `free` configuration, the same
/// with one general concept, and the strong 2PL and Rasch fall-backs.
pub fn free_candidates() -> Vec<Candidate> {
    let mut with_general = free_candidate();
    with_general.name = "free+general".to_owned();
    with_general.hyperparameters.extra_concepts = 1;
    vec![
        free_candidate(),
        with_general,
        two_pl_strong_candidate(),
        rasch_candidate(),
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

fn fit_candidate(
    c: &Candidate,
    input: &SelectionInput<'_>,
    threads: usize,
    train: &Observations,
    holdout: &[Observation],
) -> (Fit, Array2<bool>) {
    let (hints, init) = candidate_layout(c, input.page_hints, input.free_init);
    let problem = FitProblem {
        hints: hints.view(),
        initial_loadings: Some(init.view()),
        train,
        holdout,
    };
    (fit(&problem, &c.hyperparameters, threads), hints)
}

/// Fits every candidate and keeps the best mean holdout log-likelihood (ties: the
/// earlier candidate). Without early stopping (small holdout) the first candidate wins.
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
    // Candidates are independent fits; with several threads they run side by side,
    // each on one thread, and are compared in candidate order afterwards.
    // Without early stopping the candidates cannot be compared: only the first is fitted.
    let candidates = if sel_holdout.len() < MIN_OBSERVATIONS_FOR_EARLY_STOPPING
        || sel_train.len() < MIN_OBSERVATIONS_FOR_EARLY_STOPPING
    {
        &candidates[..candidates.len().min(1)]
    } else {
        candidates
    };
    // Candidates are independent fits; with several threads they run side by side, each
    // on one thread, taken from a shared queue, and are compared in candidate order.
    let fits: Vec<(Fit, Array2<bool>)> = if input.threads > 1 && candidates.len() > 1 {
        let next = AtomicUsize::new(0);
        let mut slots: Vec<Option<(Fit, Array2<bool>)>> = vec![None; candidates.len()];
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..input.threads.min(candidates.len()))
                .map(|_| {
                    let next = &next;
                    scope.spawn(move || {
                        let mut done = Vec::new();
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(c) = candidates.get(i) else {
                                return done;
                            };
                            done.push((i, fit_candidate(c, input, 1, sel_train, sel_holdout)));
                        }
                    })
                })
                .collect();
            for handle in handles {
                // A worker only fails if fitting panics; its candidates then stay empty.
                for (i, result) in handle.join().unwrap_or_default() {
                    slots[i] = Some(result);
                }
            }
        });
        slots.into_iter().collect::<Option<Vec<_>>>()?
    } else {
        candidates
            .iter()
            .map(|c| fit_candidate(c, input, input.threads, sel_train, sel_holdout))
            .collect()
    };
    let mut scores = Vec::with_capacity(candidates.len());
    let mut best: Option<(usize, f64, Fit, Array2<bool>)> = None;
    for (i, (c, (f, hints))) in candidates.iter().zip(fits).enumerate() {
        scores.push(CandidateScore {
            name: c.name.clone(),
            holdout_log_likelihood: f.stats.holdout_log_likelihood,
            outer_iterations: f.stats.outer_iterations,
        });
        let ll = f.stats.holdout_log_likelihood.unwrap_or(f64::NEG_INFINITY);
        if best.as_ref().is_none_or(|(_, b, _, _)| ll > *b) {
            best = Some((i, ll, f, hints));
        }
    }
    let (index, _, mut f, mut hints) = best?;
    let chosen = candidates[index].clone();
    if stride > 1 {
        (f, hints) = fit_candidate(&chosen, input, input.threads, train, input.holdout);
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
