//! Unit tests of `learner_solve`: Cholesky, the Newton solve, CLUE intervals and ranking order.

use super::*;
use ndarray::{array, Array1, Array2};

/// Three questions on two concepts: q0 on c0, q1 on c1, q2 on both; q3 on nothing.
fn model() -> ServingModel {
    let w: Array2<f64> = array![[1.0, 0.0, 0.7, 0.0], [0.0, 1.2, 0.5, 0.0]];
    let d: Array1<f64> = array![0.2, -0.3, 0.0, 0.5];
    ServingModel::new(w.view(), d.view(), 1.0)
}

fn check_close(actual: &[f64], expected: &[f64], tol: f64) {
    assert_eq!(actual.len(), expected.len());
    for (a, e) in actual.iter().zip(expected) {
        assert!((a - e).abs() <= tol, "{actual:?} != {expected:?}");
    }
}

#[test]
fn cholesky_solves_a_positive_definite_system() {
    let a = [4.0, 2.0, 0.4, 2.0, 5.0, 1.0, 0.4, 1.0, 3.0];
    let l = cholesky(&a, 3).unwrap();
    let x = cholesky_solve(&l, 3, &[1.0, 2.0, 3.0]);
    let ax: Vec<f64> = (0..3)
        .map(|i| (0..3).map(|j| a[i * 3 + j] * x[j]).sum())
        .collect();
    check_close(&ax, &[1.0, 2.0, 3.0], 1e-12);
    assert!(cholesky(&[1.0, 2.0, 2.0, 1.0], 2).is_none());
}

#[test]
fn solve_reaches_a_zero_gradient_on_the_active_concepts() {
    let m = model();
    let responses = [(0, true), (0, false), (2, true), (3, true), (2, true)];
    let s = m.solve(&responses, &[]);
    // q0 and q2 load on both concepts; q3 has no loading and adds none.
    assert_eq!(s.active, vec![0, 1]);
    let mut g: Vec<f64> = s.knowledge.iter().map(|u| m.gamma_u * u).collect();
    for &(q, y) in &responses {
        let r = m.predict(&s, q) - f64::from(u8::from(y));
        let (rows, values) = m.column(q);
        for (r_idx, v) in rows.iter().zip(values) {
            g[*r_idx] += r * v;
        }
    }
    check_close(&g, &[0.0, 0.0], 1e-8);
}

#[test]
fn targets_only_widen_the_active_set_with_zeros() {
    let m = model();
    let without = m.solve(&[(0, true), (0, true)], &[]);
    let with = m.solve(&[(0, true), (0, true)], &[1]);
    assert_eq!(without.active, vec![0]);
    assert_eq!(with.active, vec![0, 1]);
    assert_eq!(with.knowledge[1], 0.0);
    assert!((with.knowledge[0] - without.knowledge[0]).abs() < 1e-12);
    assert_eq!(m.predict(&with, 1), m.predict(&without, 1));
    // No responses: u = 0 and p = σ(d).
    let empty = m.solve(&[], &[0, 1]);
    assert!(empty.knowledge.iter().all(|u| *u == 0.0));
    assert_eq!(m.predict(&empty, 3), crate::fit::sigmoid(0.5));
}

#[test]
fn clue_is_not_real_without_enough_data() {
    let m = model();
    let two: &[(usize, bool)] = &[(0, true), (1, true)];
    assert_eq!(m.clue(&[two], &[2]), Clue::NOT_REAL);
    let three: &[(usize, bool)] = &[(0, true), (1, true), (2, false)];
    assert_eq!(m.clue(&[three], &[]), Clue::NOT_REAL);
    assert_eq!(m.clue(&[three], &[99]), Clue::NOT_REAL);
    // Responses spread over learners count together (a teacher CLUE).
    let a: &[(usize, bool)] = &[(0, true), (1, true)];
    let b: &[(usize, bool)] = &[(2, false)];
    assert!(m.clue(&[a, b, &[]], &[2]).is_real);
}

fn responses(n: usize, correct_every: usize) -> Vec<(usize, bool)> {
    (0..n).map(|i| (i % 3, i % correct_every != 0)).collect()
}

#[test]
fn clue_interval_is_inside_the_unit_interval_asymmetric_and_narrows_with_data() {
    let m = model();
    let small = responses(6, 4);
    let large = responses(120, 4);
    let narrow = m.clue(&[&large], &[0, 1, 2]);
    let wide = m.clue(&[&small], &[0, 1, 2]);
    for c in [narrow, wide] {
        assert!(c.is_real);
        assert!(0.0 < c.minimum && c.minimum < c.most_likely, "{c:?}");
        assert!(c.most_likely < c.maximum && c.maximum < 1.0, "{c:?}");
        let (below, above) = (c.most_likely - c.minimum, c.maximum - c.most_likely);
        assert!((below - above).abs() > 1e-6, "symmetric interval {c:?}");
    }
    assert!(narrow.maximum - narrow.minimum < wide.maximum - wide.minimum);
    // The interval is 50 %: the half-width on the logit scale uses Φ⁻¹(0.75).
    let logit = |p: f64| (p / (1.0 - p)).ln();
    let ml = narrow.most_likely;
    let half_low = logit(ml) - logit(narrow.minimum);
    let half_high = logit(narrow.maximum) - logit(ml);
    assert!((half_low - half_high).abs() < 1e-9);
}

#[test]
fn ranking_puts_predictions_nearest_one_half_first_then_ids() {
    let w: Array2<f64> = array![[0.0, 0.0, 0.0, 0.0]];
    let d: Array1<f64> = array![0.1, -0.1, 2.0, -0.4];
    let m = ServingModel::new(w.view(), d.view(), 1.0);
    let candidates = [
        ("e-d", Some(3)),
        ("e-b", Some(1)),
        ("e-x", None),
        ("e-a", Some(0)),
        ("e-c", Some(2)),
        ("e-y", Some(99)),
        ("e-a2", Some(0)),
    ];
    let r = m.rank_exercises(&[], &candidates);
    let order: Vec<&str> = r.ranked.iter().map(|(e, _)| *e).collect();
    // |p − 0.5| ties between q0 and q1 (±0.1) break by id; e-a2 shares q0.
    assert_eq!(order, vec!["e-a", "e-a2", "e-b", "e-d", "e-c"]);
    assert_eq!(r.unknown, vec!["e-x", "e-y"]);
}
