//! Temporary experiment: SPISA test scores of individual candidates.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use biglearn_sparfa::eval::{parse_responses, parse_tags, score, split};
use biglearn_sparfa::observations::{Observation, Observations};
use biglearn_sparfa::select::{fit_selected, Candidate, PageRows, SelectionInput};
use biglearn_sparfa::Hyperparameters;
use ndarray::Array2;

fn main() {
    let dir = "/work/shared/datasets/spisa";
    let rp = Path::new(dir).join("responses.csv");
    let tp = Path::new(dir).join("tags.csv");
    let responses = parse_responses(&std::fs::read_to_string(&rp).unwrap(), &rp).unwrap();
    let tags = parse_tags(&std::fs::read_to_string(&tp).unwrap(), &tp).unwrap();
    let students: BTreeMap<String, usize> = responses.iter().map(|r| r.student.clone()).collect::<BTreeSet<_>>().into_iter().enumerate().map(|(i, s)| (s, i)).collect();
    let items: BTreeMap<String, usize> = responses.iter().map(|r| r.item.clone()).collect::<BTreeSet<_>>().into_iter().enumerate().map(|(i, s)| (s, i)).collect();
    let tagset: BTreeMap<String, usize> = tags.iter().map(|t| t.1.clone()).collect::<BTreeSet<_>>().into_iter().enumerate().map(|(i, s)| (s, i)).collect();
    let mut hints = Array2::from_elem((tagset.len(), items.len()), false);
    for (i, t) in &tags { hints[(tagset[t], items[i])] = true; }
    let mut grid = Vec::new();
    for (name, pages, extra, lh, lx, g) in [
        ("hg-weak", PageRows::Hinted, 1, 0.05, 0.05, 1.0),
        ("hg-8-2-10", PageRows::Hinted, 1, 8.0, 2.0, 10.0),
        ("hg-8-2-3", PageRows::Hinted, 1, 8.0, 2.0, 3.0),
        ("hg-32-2-3", PageRows::Hinted, 1, 32.0, 2.0, 3.0),
        ("hg-32-1-10", PageRows::Hinted, 1, 32.0, 1.0, 10.0),
        ("2pl-2-3", PageRows::Off, 1, 0.0, 2.0, 3.0),
        ("2pl-2-10", PageRows::Off, 1, 0.0, 2.0, 10.0),
        ("2pl-1-10", PageRows::Off, 1, 0.0, 1.0, 10.0),
        ("2pl-0.5-10", PageRows::Off, 1, 0.0, 0.5, 10.0),
    ] {
        let mut h = Hyperparameters::spec();
        h.extra_concepts = extra; h.lambda_h_l2 = lh; h.lambda_extra_l2 = lx; h.gamma_u = g;
        grid.push(Candidate { name: name.to_owned(), hyperparameters: h, pages });
    }
    let mut sums: Vec<(f64, f64, f64)> = vec![(0.0, 0.0, 0.0); grid.len()];
    for seed in 1..=5 {
        let (test, val, train) = split(&responses, &seed.to_string(), true);
        let obs = |rows: &[biglearn_sparfa::eval::ResponseRow]| -> Vec<Observation> { rows.iter().map(|r| Observation { learner: students[&r.student], question: items[&r.item], correct: r.correct }).collect() };
        let train = Observations::new(students.len(), items.len(), &obs(&train)).unwrap();
        let val = obs(&val);
        let test = obs(&test);
        for (i, c) in grid.iter().enumerate() {
            let input = SelectionInput { page_hints: hints.view(), free_init: None, train: &train, holdout: &val, selection_cap: 0, threads: 1 };
            let t = std::time::Instant::now(); let s = fit_selected(&input, std::slice::from_ref(c)).unwrap(); if seed <= 2 { let e = t.elapsed().as_secs_f64(); println!("{} {:.3}s {} it {:.1} ns/eval", c.name, e, s.fit.stats.outer_iterations, e * 1e9 / (s.fit.stats.outer_iterations as f64 * 10.0 * train.len() as f64)); }
            let scored: Vec<(f64, bool)> = test.iter().map(|o| (s.fit.predict(o.learner, o.question), o.correct)).collect();
            let (acc, auc, _) = score(&scored);
            sums[i].0 += auc.unwrap() / 5.0; sums[i].1 += acc / 5.0; sums[i].2 += s.fit.stats.holdout_log_likelihood.unwrap() / 5.0;
        }
    }
    for (c, s) in grid.iter().zip(&sums) { println!("{:40} auc {:.4} acc {:.4} val_ll {:.5}", c.name, s.0, s.1, s.2); }
}
