//! Benchmarks printing JSON lines: SPISA eval per seed, per-learner CLUE latency and a large synthetic fit.

use std::path::PathBuf;
use std::time::Instant;

use biglearn_sparfa::fit::sigmoid;
use biglearn_sparfa::observations::{Observation, Observations};
use biglearn_sparfa::select::{fit_selected, hinted_candidates, SelectionInput};
use biglearn_sparfa::{run_eval, EvalOptions, ModelKind, ServingModel};
use ndarray::{Array1, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

fn spisa(dir: &str) {
    let models = vec![
        ModelKind::ItemMean,
        ModelKind::Rasch,
        ModelKind::TwoPl,
        ModelKind::Tagged,
        ModelKind::TaggedSpec,
        ModelKind::Free,
        ModelKind::FreeSpec,
    ];
    for seed in 1..=5 {
        let options = EvalOptions {
            responses: PathBuf::from(format!("{dir}/responses.csv")),
            tags: Some(PathBuf::from(format!("{dir}/tags.csv"))),
            test: None,
            predictions: None,
            concepts: None,
            models: models.clone(),
            seed: seed.to_string(),
            rescore: true,
        };
        match run_eval(&options) {
            Ok(reports) => {
                for r in reports {
                    println!(
                        "{{\"bench\":\"spisa\",\"seed\":{seed},\"report\":{}}}",
                        serde_json::to_string(&r).unwrap_or_default()
                    );
                }
            }
            Err(e) => eprintln!("spisa eval failed: {e}"),
        }
    }
}

fn clue() {
    let (k, q) = (20, 400);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let w = Array2::from_shape_fn((k, q), |(c, qi)| {
        if qi % k == c || rng.random::<f64>() < 0.05 {
            0.5 + rng.random::<f64>()
        } else {
            0.0
        }
    });
    let d = Array1::from_shape_fn(q, |_| rng.random::<f64>() - 0.5);
    let model = ServingModel::new(w.view(), d.view(), 1.0);
    let responses: Vec<(usize, bool)> = (0..200).map(|i| (i * 2, rng.random::<bool>())).collect();
    let targets: Vec<usize> = (0..10).map(|i| i * 2 + 1).collect();
    let runs = 200;
    let started = Instant::now();
    let mut last = None;
    for _ in 0..runs {
        last = Some(model.clue(&[&responses], &targets));
    }
    let per = started.elapsed().as_secs_f64() / f64::from(runs);
    let candidates: Vec<(usize, Option<usize>)> = (0..10_000).map(|e| (e, Some(e % q))).collect();
    let started = Instant::now();
    let ranking = model.rank_exercises(&responses, &candidates);
    let rank_seconds = started.elapsed().as_secs_f64();
    println!(
        "{{\"bench\":\"clue\",\"responses\":200,\"concepts\":{k},\"questions\":{q},\"clue_ms\":{:.4},\"rank_10000_ms\":{:.3},\"most_likely\":{:.4},\"ranked\":{}}}",
        per * 1e3,
        rank_seconds * 1e3,
        last.map_or(0.0, |c| c.most_likely),
        ranking.ranked.len()
    );
}

fn vm_hwm_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn large(n_learners: usize, n_questions: usize, k: usize, select: bool, threads: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut hints = Array2::from_elem((k, n_questions), false);
    let mut w = Array2::zeros((k, n_questions));
    for qi in 0..n_questions {
        let c = qi * k / n_questions;
        hints[(c, qi)] = true;
        w[(c, qi)] = 0.8 + 0.4 * rng.random::<f64>();
    }
    let d: Vec<f64> = (0..n_questions)
        .map(|_| rng.random::<f64>() * 2.0 - 1.0)
        .collect();
    let started = Instant::now();
    let mut observations = Vec::with_capacity(n_learners * n_questions);
    let mut holdout = Vec::new();
    let mut u = vec![0.0; k];
    for j in 0..n_learners {
        for x in u.iter_mut() {
            *x = StandardNormal.sample(&mut rng);
        }
        for qi in 0..n_questions {
            let c = qi * k / n_questions;
            let p = sigmoid(w[(c, qi)] * u[c] + d[qi]);
            let o = Observation {
                learner: j,
                question: qi,
                correct: rng.random::<f64>() < p,
            };
            // A cheap stand-in for the id hash: every 10th pair by a mixed index.
            if (j * 7 + qi * 13) % 10 == 0 {
                holdout.push(o);
            } else {
                observations.push(o);
            }
        }
    }
    let train =
        Observations::new(n_learners, n_questions, &observations).expect("indices in range");
    drop(observations);
    let build_seconds = started.elapsed().as_secs_f64();
    let build_peak_mb = vm_hwm_kb() / 1024;
    // Writing 5 to clear_refs resets VmHWM (Linux), so the peak below is the fit's own.
    let reset_peak = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let candidates = if select {
        hinted_candidates()
    } else {
        hinted_candidates()[..1].to_vec()
    };
    let input = SelectionInput {
        page_hints: hints.view(),
        free_init: None,
        train: &train,
        holdout: &holdout,
        selection_cap: 2_000_000,
        threads,
    };
    let started = Instant::now();
    let selected = fit_selected(&input, &candidates).expect("candidates");
    let fit_seconds = started.elapsed().as_secs_f64();
    println!(
        "{{\"bench\":\"large\",\"learners\":{n_learners},\"questions\":{n_questions},\"concepts\":{k},\"training_observations\":{},\"holdout\":{},\"selection\":{select},\"threads\":{threads},\"candidate\":\"{}\",\"build_seconds\":{build_seconds:.2},\"fit_seconds\":{fit_seconds:.2},\"outer_iterations\":{},\"best_iteration\":{},\"holdout_accuracy\":{:.4},\"loadings_nonzero\":{},\"build_peak_rss_mb\":{build_peak_mb},\"fit_peak_rss_mb\":{}}}",
        train.len(),
        holdout.len(),
        selected.chosen.name,
        selected.fit.stats.outer_iterations,
        selected.fit.stats.best_iteration,
        selected.fit.stats.holdout_accuracy.unwrap_or(f64::NAN),
        selected.fit.loadings.iter().filter(|w| **w != 0.0).count(),
        if reset_peak {
            (vm_hwm_kb() / 1024).to_string()
        } else {
            "null".to_owned()
        }
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let what = args.first().map_or("all", String::as_str);
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/spisa");
    match what {
        "spisa" => spisa(dir),
        "clue" => clue(),
        // `eval DIR [MODELS] [SEED]`: the docs/design/sparfa.md §12 evaluation of DIR/responses.csv
        // and DIR/tags.csv.
        "eval" => {
            let dir = args.get(1).map_or(dir, String::as_str);
            let models = args
                .get(2)
                .map(|m| m.split(',').filter_map(|x| x.parse().ok()).collect())
                .unwrap_or_default();
            let started = Instant::now();
            let options = EvalOptions {
                responses: PathBuf::from(format!("{dir}/responses.csv")),
                tags: Some(PathBuf::from(format!("{dir}/tags.csv"))),
                test: None,
                predictions: None,
                concepts: None,
                models,
                seed: args.get(3).cloned().unwrap_or_else(|| "42".to_owned()),
                rescore: std::env::var_os("NO_RESCORE").is_none(),
            };
            match run_eval(&options) {
                Ok(reports) => {
                    eprint!("{}", biglearn_sparfa::format_table(&reports));
                    for r in reports {
                        println!("{}", serde_json::to_string(&r).unwrap_or_default());
                    }
                    eprintln!("wall {:.3} s", started.elapsed().as_secs_f64());
                }
                Err(e) => eprintln!("eval failed: {e}"),
            }
        }
        "large" => {
            let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100_000);
            let select = args.iter().any(|s| s == "select");
            // `threads=T` (default 2, the target machine's cores); the fit is the same for any T.
            let threads = args
                .iter()
                .find_map(|s| s.strip_prefix("threads=").and_then(|t| t.parse().ok()))
                .unwrap_or(2);
            large(n, 160, 16, select, threads);
        }
        _ => {
            spisa(dir);
            clue();
        }
    }
}
