//! Recovery on synthetic data from a known sparse W: support precision/recall and held-out AUC vs the true model.

use biglearn_sparfa::eval::auc;
use biglearn_sparfa::fit::sigmoid;
use biglearn_sparfa::observations::{Observation, Observations};
use biglearn_sparfa::select::{fit_selected, hinted_candidates, SelectionInput};
use biglearn_sparfa::ServingModel;
use ndarray::{Array1, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

const LEARNERS: usize = 1500;
const QUESTIONS: usize = 60;
const CONCEPTS: usize = 4;

#[test]
fn fit_recovers_the_support_of_w_and_predicts_like_the_true_model() {
    let mut rng = ChaCha8Rng::seed_from_u64(2024);
    // True model: question q is hinted to concept q mod K with a loading in [0.8, 1.6];
    // every fifth question also loads (unhinted) on the next concept.
    let mut hints = Array2::from_elem((CONCEPTS, QUESTIONS), false);
    let mut w = Array2::<f64>::zeros((CONCEPTS, QUESTIONS));
    for q in 0..QUESTIONS {
        let c = q % CONCEPTS;
        hints[(c, q)] = true;
        w[(c, q)] = 0.8 + 0.8 * rng.random::<f64>();
        if q % 5 == 0 {
            w[((c + 1) % CONCEPTS, q)] = 1.2 + 0.4 * rng.random::<f64>();
        }
    }
    let d: Vec<f64> = (0..QUESTIONS)
        .map(|_| rng.random::<f64>() * 2.0 - 1.0)
        .collect();
    let u: Vec<[f64; CONCEPTS]> = (0..LEARNERS)
        .map(|_| std::array::from_fn(|_| StandardNormal.sample(&mut rng)))
        .collect();
    let true_p = |j: usize, q: usize| {
        sigmoid(d[q] + (0..CONCEPTS).map(|c| w[(c, q)] * u[j][c]).sum::<f64>())
    };
    // 80 % of entries observed; every observation's fate is drawn in a fixed order.
    let (mut train, mut holdout, mut test) = (Vec::new(), Vec::new(), Vec::new());
    for j in 0..LEARNERS {
        for q in 0..QUESTIONS {
            let (observed, part, y) = (
                rng.random::<f64>(),
                rng.random::<f64>(),
                rng.random::<f64>(),
            );
            if observed >= 0.8 {
                continue;
            }
            let o = Observation {
                learner: j,
                question: q,
                correct: y < true_p(j, q),
            };
            match part {
                p if p < 0.2 => test.push(o),
                p if p < 0.3 => holdout.push(o),
                _ => train.push(o),
            }
        }
    }
    let train = Observations::new(LEARNERS, QUESTIONS, &train).expect("indices in range");
    let selected = fit_selected(
        &SelectionInput {
            page_hints: hints.view(),
            free_init: None,
            train: &train,
            holdout: &holdout,
            selection_cap: 0,
            threads: 2,
        },
        &hinted_candidates(),
    )
    .expect("candidates");
    let fitted = &selected.fit;
    // Support on the page rows (extra general rows are not part of the true W).
    let (mut tp, mut fp, mut fn_) = (0usize, 0usize, 0usize);
    for c in 0..CONCEPTS {
        for q in 0..QUESTIONS {
            match (w[(c, q)] > 0.0, fitted.loadings[(c, q)] > 0.05) {
                (true, true) => tp += 1,
                (false, true) => fp += 1,
                (true, false) => fn_ += 1,
                (false, false) => {}
            }
        }
    }
    let precision = tp as f64 / (tp + fp).max(1) as f64;
    let recall = tp as f64 / (tp + fn_).max(1) as f64;
    // Predictions are served as in docs/design/sparfa.md §10: W and d fixed, each learner solved by
    // Newton.
    let served = ServingModel::new(
        fitted.loadings.view(),
        fitted.easiness.view(),
        selected.chosen.hyperparameters.gamma_u,
    );
    let fitted_solves: Vec<_> = (0..LEARNERS)
        .map(|j| served.solve(&train.learner(j).collect::<Vec<_>>(), &[]))
        .collect();
    let fitted_auc = auc(&test
        .iter()
        .map(|o| {
            (
                served.predict(&fitted_solves[o.learner], o.question),
                o.correct,
            )
        })
        .collect::<Vec<_>>())
    .expect("both classes");
    let fit_u_auc = auc(&test
        .iter()
        .map(|o| (fitted.predict(o.learner, o.question), o.correct))
        .collect::<Vec<_>>())
    .expect("both classes");
    // No model can know the true U: the reference is the true (W, d) with each learner's
    // knowledge solved from the same training responses (§10.1); the oracle with the
    // true U is reported for context.
    let true_model = ServingModel::new(w.view(), Array1::from(d.clone()).view(), 1.0);
    let solves: Vec<_> = (0..LEARNERS)
        .map(|j| true_model.solve(&train.learner(j).collect::<Vec<_>>(), &[]))
        .collect();
    let true_auc = auc(&test
        .iter()
        .map(|o| {
            (
                true_model.predict(&solves[o.learner], o.question),
                o.correct,
            )
        })
        .collect::<Vec<_>>())
    .expect("both classes");
    let oracle_auc = auc(&test
        .iter()
        .map(|o| (true_p(o.learner, o.question), o.correct))
        .collect::<Vec<_>>())
    .expect("both classes");
    println!(
        "candidate {} support precision {precision:.3} recall {recall:.3} (tp {tp} fp {fp} fn {fn_}); \
         test AUC fitted {fitted_auc:.4} (with the fit's own U {fit_u_auc:.4}), true (W, d) {true_auc:.4}, oracle with true U {oracle_auc:.4}",
        selected.chosen.name
    );
    println!("fit {:?}; selection {:?}", fitted.stats, selected.scores);
    assert!(precision >= 0.9, "precision {precision}");
    assert!(recall >= 0.9, "recall {recall}");
    assert!(
        (true_auc - fitted_auc).abs() <= 0.01,
        "fitted AUC {fitted_auc} vs true {true_auc}"
    );
}
