//! Serving with W and d fixed: the docs/design/sparfa.md §10.1 per-learner Newton solve, §10.2
//! CLUEs and §10.3 rankings.

use ndarray::{ArrayView1, ArrayView2};

use crate::fit::{sigmoid, softplus};

/// Newton iterations of the per-learner solve.
pub const SOLVE_MAX_ITERATIONS: usize = 25;
/// Step-halvings of the line search.
pub const SOLVE_MAX_HALVINGS: usize = 20;
/// Convergence threshold on max |αΔ|.
pub const SOLVE_TOLERANCE: f64 = 1e-8;
/// Fewer responses than this make a CLUE not real (§10.2).
pub const CLUE_MIN_RESPONSES: usize = 3;
/// Φ⁻¹(0.75): the half-width multiplier of a 50 % interval.
pub const CLUE_Z: f64 = 0.674_489_750_196_081_7;

/// One response in a solve: loadings on the active set (local index, value), d_q and y.
type ResponseTerm = (Vec<(usize, f64)>, f64, bool);

/// A model ready for serving: W in compressed columns (entries with W > 0 only), d and γ_U.
#[derive(Clone, Debug, PartialEq)]
pub struct ServingModel {
    n_concepts: usize,
    col_offsets: Vec<usize>,
    rows: Vec<usize>,
    values: Vec<f64>,
    easiness: Vec<f64>,
    gamma_u: f64,
}

impl ServingModel {
    /// Builds the serving form of W (K × Q), d (Q) and γ_U.
    pub fn new(loadings: ArrayView2<'_, f64>, easiness: ArrayView1<'_, f64>, gamma_u: f64) -> Self {
        let (k, q) = loadings.dim();
        let mut col_offsets = Vec::with_capacity(q + 1);
        let (mut rows, mut values) = (Vec::new(), Vec::new());
        col_offsets.push(0);
        for col in 0..q {
            for row in 0..k {
                let w = loadings[(row, col)];
                if w > 0.0 {
                    rows.push(row);
                    values.push(w);
                }
            }
            col_offsets.push(rows.len());
        }
        Self {
            n_concepts: k,
            col_offsets,
            rows,
            values,
            easiness: easiness.to_vec(),
            gamma_u,
        }
    }

    /// Q.
    pub fn n_questions(&self) -> usize {
        self.easiness.len()
    }

    /// K.
    pub fn n_concepts(&self) -> usize {
        self.n_concepts
    }

    fn column(&self, q: usize) -> (&[usize], &[f64]) {
        let range = self.col_offsets[q]..self.col_offsets[q + 1];
        (&self.rows[range.clone()], &self.values[range])
    }

    /// The §10.1 solve of one learner's knowledge, given responses (question index,
    /// correct) and a target question set. Question indices ≥ Q are ignored.
    pub fn solve(&self, responses: &[(usize, bool)], targets: &[usize]) -> LearnerSolve {
        let q_max = self.n_questions();
        let responses: Vec<(usize, bool)> = responses
            .iter()
            .copied()
            .filter(|(q, _)| *q < q_max)
            .collect();
        let mut active: Vec<usize> = responses
            .iter()
            .map(|(q, _)| *q)
            .chain(targets.iter().copied().filter(|q| *q < q_max))
            .flat_map(|q| self.column(q).0.iter().copied())
            .collect();
        active.sort_unstable();
        active.dedup();
        let m = active.len();
        // Each response's loadings on the active set, as (local index, value).
        let local = |q: usize| -> Vec<(usize, f64)> {
            let (rows, values) = self.column(q);
            rows.iter()
                .zip(values)
                .filter_map(|(r, v)| active.binary_search(r).ok().map(|i| (i, *v)))
                .collect()
        };
        let rows: Vec<ResponseTerm> = responses
            .iter()
            .map(|&(q, y)| (local(q), self.easiness[q], y))
            .collect();
        let gamma = self.gamma_u;
        let z_of = |w: &[(usize, f64)], d: f64, u: &[f64]| -> f64 {
            let mut z = d;
            for &(i, v) in w {
                z += v * u[i];
            }
            z
        };
        let cost = |u: &[f64]| -> f64 {
            let mut j = 0.0;
            for (w, d, y) in &rows {
                let z = z_of(w, *d, u);
                j += softplus(z) - if *y { z } else { 0.0 };
            }
            j + gamma / 2.0 * u.iter().map(|x| x * x).sum::<f64>()
        };
        // Gradient, Fisher information (+ ridge) and J at u, in one pass.
        let fisher = |u: &[f64]| -> (Vec<f64>, Vec<f64>, f64) {
            let mut g: Vec<f64> = u.iter().map(|x| gamma * x).collect();
            let mut info = vec![0.0; m * m];
            for i in 0..m {
                info[i * m + i] = gamma;
            }
            let mut j = gamma / 2.0 * u.iter().map(|x| x * x).sum::<f64>();
            for (w, d, y) in &rows {
                let z = z_of(w, *d, u);
                j += softplus(z) - if *y { z } else { 0.0 };
                let p = sigmoid(z);
                let r = p - f64::from(u8::from(*y));
                let s = p * (1.0 - p);
                for &(a, va) in w {
                    g[a] += r * va;
                    for &(b, vb) in w {
                        info[a * m + b] += s * va * vb;
                    }
                }
            }
            (g, info, j)
        };
        let mut u = vec![0.0; m];
        let mut iterations = 0;
        if m > 0 && !rows.is_empty() {
            for _ in 0..SOLVE_MAX_ITERATIONS {
                iterations += 1;
                let (g, info, j0) = fisher(&u);
                let Some(chol) = cholesky(&info, m) else {
                    break;
                };
                let delta = cholesky_solve(&chol, m, &g);
                let mut alpha = 1.0;
                let mut trial: Vec<f64> = u.iter().zip(&delta).map(|(x, dx)| x - dx).collect();
                let mut halvings = 0;
                while cost(&trial) > j0 && halvings < SOLVE_MAX_HALVINGS {
                    alpha /= 2.0;
                    halvings += 1;
                    for ((t, x), dx) in trial.iter_mut().zip(&u).zip(&delta) {
                        *t = x - alpha * dx;
                    }
                }
                let step = delta
                    .iter()
                    .map(|dx| (alpha * dx).abs())
                    .fold(0.0, f64::max);
                u = trial;
                if step < SOLVE_TOLERANCE {
                    break;
                }
            }
        }
        let (_, info, _) = fisher(&u);
        // γ_U > 0 makes I positive definite; fall back to the ridge alone otherwise.
        let chol = cholesky(&info, m).unwrap_or_else(|| {
            let mut ridge = vec![0.0; m * m];
            for i in 0..m {
                ridge[i * m + i] = gamma.max(1e-12).sqrt();
            }
            ridge
        });
        LearnerSolve {
            active,
            knowledge: u,
            fisher_cholesky: chol,
            iterations,
        }
    }

    /// z = w_q · û + d_q for a solved learner (concepts outside the active set are 0).
    pub fn logit(&self, solve: &LearnerSolve, q: usize) -> f64 {
        let (rows, values) = self.column(q);
        let mut z = self.easiness[q];
        for (r, v) in rows.iter().zip(values) {
            if let Ok(i) = solve.active.binary_search(r) {
                z += v * solve.knowledge[i];
            }
        }
        z
    }

    /// P(correct) for a solved learner.
    pub fn predict(&self, solve: &LearnerSolve, q: usize) -> f64 {
        sigmoid(self.logit(solve, q))
    }

    /// The §10.2 CLUE over learners' responses (question index, correct) for the
    /// target questions. Out-of-range question indices are ignored.
    pub fn clue(&self, learners: &[&[(usize, bool)]], targets: &[usize]) -> Clue {
        let q_max = self.n_questions();
        let mut targets: Vec<usize> = targets.iter().copied().filter(|q| *q < q_max).collect();
        targets.sort_unstable();
        targets.dedup();
        let with_data: Vec<Vec<(usize, bool)>> = learners
            .iter()
            .map(|r| {
                r.iter()
                    .copied()
                    .filter(|(q, _)| *q < q_max)
                    .collect::<Vec<_>>()
            })
            .filter(|r| !r.is_empty())
            .collect();
        let n: usize = with_data.iter().map(Vec::len).sum();
        if targets.is_empty() || n < CLUE_MIN_RESPONSES {
            return Clue::NOT_REAL;
        }
        let (mut p_sum, mut var_sum) = (0.0, 0.0);
        for responses in &with_data {
            let solve = self.solve(responses, &targets);
            let m = solve.active.len();
            let mut gradient = vec![0.0; m];
            let mut p_j = 0.0;
            for &q in &targets {
                let p = self.predict(&solve, q);
                p_j += p;
                let (rows, values) = self.column(q);
                for (r, v) in rows.iter().zip(values) {
                    if let Ok(i) = solve.active.binary_search(r) {
                        gradient[i] += p * (1.0 - p) * v;
                    }
                }
            }
            let t = targets.len() as f64;
            p_sum += p_j / t;
            gradient.iter_mut().for_each(|x| *x /= t);
            // ∇ᵀ I⁻¹ ∇ = ‖L⁻¹ ∇‖² with I = L Lᵀ.
            let y = forward_substitute(&solve.fisher_cholesky, m, &gradient);
            var_sum += y.iter().map(|x| x * x).sum::<f64>();
        }
        let count = with_data.len() as f64;
        let p_bar = p_sum / count;
        let var = var_sum / (count * count);
        let pc = p_bar.clamp(1e-6, 1.0 - 1e-6);
        let l = (pc / (1.0 - pc)).ln();
        let s = var.sqrt() / (pc * (1.0 - pc));
        Clue {
            minimum: sigmoid(l - CLUE_Z * s),
            most_likely: p_bar,
            maximum: sigmoid(l + CLUE_Z * s),
            is_real: true,
        }
    }

    /// The §10.3 ranking: candidates (exercise id, question index or `None` when the
    /// group is not in Q_ids). Known ones are sorted by |p − 0.5| then id; unknown
    /// ones are returned in input order for the caller's deterministic shuffle.
    pub fn rank_exercises<E: Ord + Clone>(
        &self,
        responses: &[(usize, bool)],
        candidates: &[(E, Option<usize>)],
    ) -> Ranking<E> {
        let solve = self.solve(responses, &[]);
        let q_max = self.n_questions();
        let mut ranked = Vec::new();
        let mut unknown = Vec::new();
        for (id, q) in candidates {
            match q {
                Some(q) if *q < q_max => ranked.push((id.clone(), self.predict(&solve, *q))),
                _ => unknown.push(id.clone()),
            }
        }
        ranked.sort_by(|(a, pa), (b, pb)| {
            (pa - 0.5)
                .abs()
                .total_cmp(&(pb - 0.5).abs())
                .then_with(|| a.cmp(b))
        });
        Ranking { ranked, unknown }
    }
}

/// A learner's solved knowledge on the active concepts and the Cholesky factor of I(û).
#[derive(Clone, Debug, PartialEq)]
pub struct LearnerSolve {
    /// Active concept indices A, ascending.
    pub active: Vec<usize>,
    /// û on A.
    pub knowledge: Vec<f64>,
    /// Lower-triangular L with L Lᵀ = I(û), row-major |A| × |A|.
    pub fisher_cholesky: Vec<f64>,
    /// Newton iterations run.
    pub iterations: usize,
}

/// A CLUE: the most likely success and a 50 % interval (§10.2).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Clue {
    /// Lower end of the interval.
    pub minimum: f64,
    /// Mean predicted success.
    pub most_likely: f64,
    /// Upper end of the interval.
    pub maximum: f64,
    /// False when there is too little data.
    pub is_real: bool,
}

impl Clue {
    /// The CLUE returned without enough data: {0, 0.5, 1, not real}.
    pub const NOT_REAL: Clue = Clue {
        minimum: 0.0,
        most_likely: 0.5,
        maximum: 1.0,
        is_real: false,
    };
}

/// A ranking: known exercises with their predicted success, best first, then the
/// unknown exercises in input order (to be shuffled by the caller).
#[derive(Clone, Debug, PartialEq)]
pub struct Ranking<E> {
    /// Known exercises and p_e, by |p_e − 0.5| then id.
    pub ranked: Vec<(E, f64)>,
    /// Exercises whose group is not in the model, in input order.
    pub unknown: Vec<E>,
}

/// Cholesky factor of a symmetric positive-definite m × m matrix (row-major), or `None`.
pub fn cholesky(a: &[f64], m: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; m * m];
    for i in 0..m {
        for j in 0..=i {
            let mut s = a[i * m + j];
            for k in 0..j {
                s -= l[i * m + k] * l[j * m + k];
            }
            if i == j {
                if s <= 0.0 || !s.is_finite() {
                    return None;
                }
                l[i * m + i] = s.sqrt();
            } else {
                l[i * m + j] = s / l[j * m + j];
            }
        }
    }
    Some(l)
}

fn forward_substitute(l: &[f64], m: usize, b: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; m];
    for i in 0..m {
        let mut s = b[i];
        for k in 0..i {
            s -= l[i * m + k] * y[k];
        }
        y[i] = s / l[i * m + i];
    }
    y
}

/// Solves L Lᵀ x = b.
pub fn cholesky_solve(l: &[f64], m: usize, b: &[f64]) -> Vec<f64> {
    let y = forward_substitute(l, m, b);
    let mut x = vec![0.0; m];
    for i in (0..m).rev() {
        let mut s = y[i];
        for k in i + 1..m {
            s -= l[k * m + i] * x[k];
        }
        x[i] = s / l[i * m + i];
    }
    x
}

#[cfg(test)]
mod tests;
