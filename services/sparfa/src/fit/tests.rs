//! Unit tests of `fit`: objective pieces, descent, stationarity, stopping and determinism.

use super::*;
use ndarray::Array2;

fn check(actual: f64, expected: f64) {
    assert!(
        (actual - expected).abs() <= 1e-12 * expected.abs().max(1.0),
        "{actual} != {expected}"
    );
}

/// A small deterministic problem: `n` learners × `q` questions, `k` concepts, question
/// q hinted to concept q mod k; outcomes from a fixed pseudo-random rule.
fn problem_data(n: usize, q: usize, k: usize) -> (Array2<bool>, Vec<Observation>) {
    let hints = Array2::from_shape_fn((k, q), |(c, qi)| qi % k == c);
    let mut state: u64 = 12345;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let ability: Vec<f64> = (0..n).map(|_| next() * 3.0 - 1.5).collect();
    let mut observations = Vec::new();
    for (j, a) in ability.iter().enumerate() {
        for qi in 0..q {
            if next() < 0.8 {
                let p = sigmoid(a + (qi as f64 / q as f64) - 0.5);
                observations.push(Observation {
                    learner: j,
                    question: qi,
                    correct: next() < p,
                });
            }
        }
    }
    (hints, observations)
}

#[test]
fn link_pieces_match_their_definitions() {
    check(sigmoid(0.0), 0.5);
    check(sigmoid(2.0), 1.0 / (1.0 + (-2.0f64).exp()));
    check(softplus(0.0), 2f64.ln());
    check(softplus(800.0), 800.0);
    check(softplus(-3.0), (1.0 + (-3.0f64).exp()).ln());
    check(clipped_log_likelihood(0.25, true), 0.25f64.ln());
    check(clipped_log_likelihood(0.25, false), 0.75f64.ln());
    check(clipped_log_likelihood(0.0, true), PROBABILITY_CLIP.ln());
}

#[test]
fn initial_easiness_is_the_clipped_smoothed_logit() {
    let obs = [(0, true), (1, true), (2, false)].map(|(j, correct)| Observation {
        learner: j,
        question: 0,
        correct,
    });
    let train = Observations::new(3, 2, &obs).unwrap();
    let d = initial_easiness(&train);
    // (2 + 0.5) / (3 + 1) = 0.625; the unanswered question gets 0.5 → 0.
    check(d[0], (0.625f64 / 0.375).ln());
    check(d[1], 0.0);
}

#[test]
fn each_block_step_lowers_the_objective() {
    let (hints, observations) = problem_data(60, 12, 3);
    let train = Observations::new(60, 12, &observations).unwrap();
    let problem = FitProblem {
        hints: hints.view(),
        initial_loadings: None,
        train: &train,
        holdout: &[],
    };
    let mut hp = Hyperparameters::spec();
    hp.lambda_nh_l1 = 0.5; // weak enough that non-hinted loadings move
    let penalties = Penalties::new(hints.view(), &hp);
    let blocks = kernel::QuestionBlocks::new(&train, 1);
    let mut state = State {
        k: 3,
        w: hints
            .t()
            .iter()
            .map(|h| if *h { 1.0 } else { 0.0 })
            .collect(),
        d: initial_easiness(&train).to_vec(),
        u: vec![0.0; 60 * 3],
    };
    let j_of = |s: &State| {
        let w = Array2::from_shape_vec((12, 3), s.w.clone())
            .unwrap()
            .reversed_axes();
        let u = Array2::from_shape_vec((60, 3), s.u.clone()).unwrap();
        objective(
            &problem,
            &hp,
            w.view(),
            &Array1::from(s.d.clone()),
            u.view(),
        )
    };
    let mut last = j_of(&state);
    for _ in 0..30 {
        update_knowledge(&mut state, &train, &hp, 1);
        let after_u = j_of(&state);
        assert!(
            after_u <= last + 1e-9,
            "U-step raised J: {last} → {after_u}"
        );
        update_questions(&mut state, &train, &hp, &penalties, &blocks, 1);
        let after_w = j_of(&state);
        assert!(
            after_w <= after_u + 1e-9,
            "(W,d)-step raised J: {after_u} → {after_w}"
        );
        last = after_w;
    }
    assert!(state.w.iter().any(|w| *w > 0.0));
}

#[test]
fn converged_fit_is_stationary_for_the_objective() {
    // After many iterations, the numerical derivative of J in u and d is ~0 and the
    // W entries satisfy the prox optimality conditions: this checks the gradients.
    let (hints, observations) = problem_data(40, 10, 2);
    let train = Observations::new(40, 10, &observations).unwrap();
    let problem = FitProblem {
        hints: hints.view(),
        initial_loadings: None,
        train: &train,
        holdout: &[],
    };
    let mut hp = Hyperparameters::spec();
    hp.lambda_nh_l1 = 2.0;
    let penalties = Penalties::new(hints.view(), &hp);
    let blocks = kernel::QuestionBlocks::new(&train, 1);
    let mut state = State {
        k: 2,
        w: hints
            .t()
            .iter()
            .map(|h| if *h { 1.0 } else { 0.0 })
            .collect(),
        d: initial_easiness(&train).to_vec(),
        u: vec![0.0; 40 * 2],
    };
    for _ in 0..3000 {
        update_knowledge(&mut state, &train, &hp, 1);
        update_questions(&mut state, &train, &hp, &penalties, &blocks, 1);
    }
    let j_at = |s: &State| {
        let w = Array2::from_shape_vec((10, 2), s.w.clone())
            .unwrap()
            .reversed_axes();
        let u = Array2::from_shape_vec((40, 2), s.u.clone()).unwrap();
        objective(
            &problem,
            &hp,
            w.view(),
            &Array1::from(s.d.clone()),
            u.view(),
        )
    };
    let h = 1e-5;
    let derivative = |f: &dyn Fn(&mut State, f64)| {
        let mut plus = State {
            k: 2,
            w: state.w.clone(),
            d: state.d.clone(),
            u: state.u.clone(),
        };
        let mut minus = State {
            k: 2,
            w: state.w.clone(),
            d: state.d.clone(),
            u: state.u.clone(),
        };
        f(&mut plus, h);
        f(&mut minus, -h);
        (j_at(&plus) - j_at(&minus)) / (2.0 * h)
    };
    for i in [0, 7, 33, 79] {
        let g = derivative(&|s: &mut State, e| s.u[i] += e);
        assert!(g.abs() < 1e-4, "dJ/du[{i}] = {g}");
    }
    for q in [0, 5, 9] {
        let g = derivative(&|s: &mut State, e| s.d[q] += e);
        assert!(g.abs() < 1e-4, "dJ/dd[{q}] = {g}");
    }
    for q in 0..10 {
        for c in 0..2 {
            let w = state.w[q * 2 + c];
            if w > 1e-6 {
                let g = derivative(&|s: &mut State, e| s.w[q * 2 + c] += e);
                assert!(g.abs() < 1e-3, "dJ/dw[{c},{q}] = {g} at w = {w}");
            }
        }
    }
}

fn fit_bytes(f: &Fit) -> Vec<u64> {
    f.loadings
        .iter()
        .chain(f.easiness.iter())
        .chain(f.knowledge.iter())
        .map(|x| x.to_bits())
        .collect()
}

fn split_holdout(observations: &[Observation]) -> (Vec<Observation>, Vec<Observation>) {
    observations.iter().partition(|o| {
        !crate::hash::is_holdout("eco", &o.learner.to_string(), &o.question.to_string(), 10)
    })
}

#[test]
fn fits_are_bit_identical_across_runs_and_thread_counts() {
    let (hints, observations) = problem_data(300, 30, 3);
    let (train, holdout) = split_holdout(&observations);
    let train = Observations::new(300, 30, &train).unwrap();
    let problem = FitProblem {
        hints: hints.view(),
        initial_loadings: None,
        train: &train,
        holdout: &holdout,
    };
    let mut hp = Hyperparameters::spec();
    hp.lambda_nh_l1 = 1.0;
    let one = fit(&problem, &hp, 1);
    assert!(one.stats.holdout_log_likelihood.is_some());
    assert_eq!(fit_bytes(&one), fit_bytes(&fit(&problem, &hp, 1)));
    for threads in [2, 3, 7] {
        let other = fit(&problem, &hp, threads);
        assert_eq!(fit_bytes(&one), fit_bytes(&other), "{threads} threads");
        assert_eq!(one.stats, other.stats);
    }
}

#[test]
fn zero_data_model_is_the_hints() {
    let hints = Array2::from_shape_fn((2, 3), |(c, q)| c == q % 2);
    let train = Observations::new(4, 3, &[]).unwrap();
    let f = fit(
        &FitProblem {
            hints: hints.view(),
            initial_loadings: None,
            train: &train,
            holdout: &[],
        },
        &Hyperparameters::spec(),
        1,
    );
    assert_eq!(f.loadings, hints.mapv(|h| if h { 1.0 } else { 0.0 }));
    assert!(f.easiness.iter().all(|d| *d == 0.0));
    assert_eq!(f.stats.outer_iterations, 0);
    assert_eq!(f.stats.holdout_accuracy, None);
}

#[test]
fn stopping_rule_follows_section_six() {
    let (hints, observations) = problem_data(200, 20, 2);
    let (train, holdout) = split_holdout(&observations);
    let train = Observations::new(200, 20, &train).unwrap();
    let hp = Hyperparameters::spec();
    let run = |holdout: &[Observation]| {
        fit(
            &FitProblem {
                hints: hints.view(),
                initial_loadings: None,
                train: &train,
                holdout,
            },
            &hp,
            1,
        )
    };
    // Small holdout: exactly 20 iterations, null statistics.
    let small = run(&holdout[..49]);
    assert_eq!(
        small.stats.outer_iterations,
        ITERATIONS_WITHOUT_EARLY_STOPPING
    );
    assert_eq!(small.stats.holdout_log_loss, None);
    // Enough holdout: stops `patience` iterations after the best one (or at the cap).
    assert!(holdout.len() >= 50);
    let full = run(&holdout);
    let s = &full.stats;
    assert!(
        s.outer_iterations == s.best_iteration + PATIENCE
            || s.outer_iterations == MAX_OUTER_ITERATIONS,
        "{s:?}"
    );
    let ll = s.holdout_log_likelihood.unwrap();
    assert!((s.holdout_log_loss.unwrap() + ll).abs() < 1e-15);
    // The kept iterate is the best one: its holdout score matches the statistic.
    let recomputed: f64 = holdout
        .iter()
        .map(|o| clipped_log_likelihood(full.predict(o.learner, o.question), o.correct))
        .sum::<f64>()
        / holdout.len() as f64;
    assert!((recomputed - ll).abs() < 1e-12);
}

#[test]
fn blocks_without_observations_are_unchanged() {
    let (hints, observations) = problem_data(50, 6, 2);
    // Drop every observation of question 5 and of learner 0.
    let kept: Vec<Observation> = observations
        .into_iter()
        .filter(|o| o.question != 5 && o.learner != 0)
        .collect();
    let train = Observations::new(50, 6, &kept).unwrap();
    let f = fit(
        &FitProblem {
            hints: hints.view(),
            initial_loadings: None,
            train: &train,
            holdout: &[],
        },
        &Hyperparameters::spec(),
        2,
    );
    assert_eq!(f.easiness[5], 0.0); // logit(0.5 / 1)
    assert_eq!(f.loadings.column(5).to_vec(), vec![0.0, 1.0]);
    assert!(f.knowledge.row(0).iter().all(|u| *u == 0.0));
}

#[test]
fn race_is_lost_only_behind_the_margin_with_too_little_gain_to_come() {
    // Ahead of the margin: never lost, whatever the curve does.
    assert!(!race_lost(&[-0.6, -0.6, -0.6], 0.001));
    // Fewer than three values: no extrapolation yet.
    assert!(!race_lost(&[-0.6, -0.59], -1.0));
    // Stopped improving and behind: lost.
    assert!(race_lost(&[-0.6, -0.59, -0.59], -1e-9));
    // Gains 0.004 then 0.002 (ratio ½): 0.002 still to come, twice that is 0.004.
    assert!(!race_lost(&[-0.606, -0.602, -0.600], -0.0039));
    assert!(race_lost(&[-0.606, -0.602, -0.600], -0.0041));
    // A steady climb counts as at most 1 / (1 − RACE_MAX_RATIO) more steps of its gain.
    let allowance = RACE_SAFETY * 0.001 * RACE_MAX_RATIO / (1.0 - RACE_MAX_RATIO);
    assert!(!race_lost(&[-0.602, -0.601, -0.600], -(allowance - 1e-6)));
    assert!(race_lost(&[-0.602, -0.601, -0.600], -(allowance + 1e-6)));
}

#[test]
fn a_fit_racing_a_far_better_rival_stops_early_and_a_far_worse_one_changes_nothing() {
    let (hints, observations) = problem_data(300, 30, 3);
    let (train, mut holdout) = split_holdout(&observations);
    holdout.sort();
    let train = Observations::new(300, 30, &train).unwrap();
    let problem = FitProblem {
        hints: hints.view(),
        initial_loadings: None,
        train: &train,
        holdout: &holdout,
    };
    let hp = Hyperparameters::spec();
    let free = fit(&problem, &hp, 1);
    assert!(
        free.stats.outer_iterations > RACE_MIN_ITERATIONS,
        "{:?}",
        free.stats
    );
    // A rival that predicts every holdout response perfectly cannot be caught.
    let perfect = vec![0.0; holdout.len()];
    let raced = fit_against(&problem, &hp, 1, None, Some(&Rival { terms: &perfect }));
    assert_eq!(raced.stats.outer_iterations, RACE_MIN_ITERATIONS);
    // A rival far behind never stops the fit: the same fit, bit for bit.
    let hopeless = vec![PROBABILITY_CLIP.ln(); holdout.len()];
    let ahead = fit_against(&problem, &hp, 2, None, Some(&Rival { terms: &hopeless }));
    assert_eq!(fit_bytes(&ahead), fit_bytes(&free));
    assert_eq!(ahead.stats, free.stats);
}
