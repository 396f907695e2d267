//! One-factor models (Rasch with a common slope, 2PL) fitted by marginal maximum likelihood: Bock–Aitkin EM on a fixed quadrature grid, learners scored by EAP.
//!
//! The model is the docs/design/sparfa.md §2 model with K = 1:
//! P(correct) = σ(a_q θ_j + d_q), a_q ≥ 0, θ_j ~ N(0, 1).
//! Instead of estimating θ_j jointly with (a, d) (the §7 joint fit), θ is integrated out
//! over a grid of [`GRID_POINTS`] points on [−5, 5] weighted by the N(0, 1) density, which
//! keeps (a, d) unbiased when learners answer few questions. After the fit each learner's
//! θ is the posterior mean (EAP) given their training responses (0 without any).
//!
//! Determinism: the E-step computes each learner's posterior independently (learner
//! ranges on a work queue), the expected counts of a question run over its learners in
//! ascending order (question ranges on the queue), and every other sum is sequential.
//! The result is bit-identical for any thread count.

use crate::fit::run_queue;
use crate::observations::{unpack, Observations};

/// Quadrature points on [−5, 5] (spacing 0.5; mirt's default is also 21 points).
pub const GRID_POINTS: usize = 21;
/// Learners per work item of the E-step.
const LEARNERS_PER_ITEM: usize = 512;
/// Questions per work item of the expected counts.
const QUESTIONS_PER_ITEM: usize = 8;
/// Newton steps per question in each M-step (EM needs no exact M-step).
const NEWTON_STEPS: usize = 2;

/// How the slopes a_q are estimated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slopes {
    /// One slope shared by all questions (Rasch with an estimated latent scale).
    Common,
    /// One slope per question (2PL).
    PerQuestion,
}

/// Options of a marginal fit.
#[derive(Clone, Debug, PartialEq)]
pub struct MarginalOptions {
    /// Common or per-question slopes.
    pub slopes: Slopes,
    /// Penalty λ_a · a² on each slope (a weak prior keeping slopes finite).
    pub slope_l2: f64,
    /// Penalty λ_d · d² on each easiness.
    pub easiness_l2: f64,
    /// Stop when no parameter moved more than this in an (accelerated) EM cycle.
    pub tolerance: f64,
    /// Upper bound on EM steps.
    pub max_iterations: usize,
}

impl MarginalOptions {
    /// Defaults: ℓ2 0.05 on a and d (as the §4 λ_d), tolerance 1e−3, at most 300 EM steps.
    pub fn new(slopes: Slopes) -> Self {
        Self {
            slopes,
            slope_l2: 0.05,
            easiness_l2: 0.05,
            tolerance: 1e-3,
            max_iterations: 300,
        }
    }
}

/// A fitted one-factor model.
#[derive(Clone, Debug, PartialEq)]
pub struct MarginalFit {
    /// a_q ≥ 0, per question (all equal for [`Slopes::Common`]).
    pub slopes: Vec<f64>,
    /// d_q, per question.
    pub easiness: Vec<f64>,
    /// EAP θ_j from each learner's training responses (0 for learners without any).
    pub theta: Vec<f64>,
    /// EM steps run.
    pub iterations: usize,
    /// Marginal log-likelihood of the training data at the last E-step.
    pub log_likelihood: f64,
}

impl MarginalFit {
    /// P(correct) of learner j on question q: σ(a_q θ_j + d_q).
    pub fn predict(&self, learner: usize, question: usize) -> f64 {
        crate::fit::sigmoid(self.slopes[question] * self.theta[learner] + self.easiness[question])
    }
}

fn grid() -> ([f64; GRID_POINTS], [f64; GRID_POINTS]) {
    let mut nodes = [0.0; GRID_POINTS];
    let mut log_prior = [0.0; GRID_POINTS];
    let mut total = 0.0;
    for (k, node) in nodes.iter_mut().enumerate() {
        *node = -5.0 + 10.0 * k as f64 / (GRID_POINTS - 1) as f64;
        total += (-0.5 * *node * *node).exp();
    }
    for (lp, &node) in log_prior.iter_mut().zip(&nodes) {
        *lp = -0.5 * node * node - total.ln();
    }
    (nodes, log_prior)
}

/// log σ(z) and log(1 − σ(z)) without overflow.
#[inline]
fn log_sigmoids(z: f64) -> (f64, f64) {
    // log σ(z) = −softplus(−z); log(1 − σ(z)) = −softplus(z).
    (-crate::fit::softplus(-z), -crate::fit::softplus(z))
}

/// Fits a one-factor model by EM. Questions without observations keep a = 1 (or the
/// common slope) and d = 0; learners without observations get θ = 0.
pub fn fit_marginal(
    train: &Observations,
    options: &MarginalOptions,
    threads: usize,
) -> MarginalFit {
    let (n_learners, n_questions) = (train.n_learners(), train.n_questions());
    let (nodes, log_prior) = grid();
    let slopes = vec![1.0; n_questions];
    // Start d from the item means: E σ(θ + d) ≈ σ(d / √(1 + π/8)) for θ ~ N(0, 1).
    let easiness: Vec<f64> = (0..n_questions)
        .map(|q| {
            let (mut s, mut n) = (0.0, 0.0);
            for (_, y) in train.question(q) {
                n += 1.0;
                s += f64::from(u8::from(y));
            }
            let p = ((s + 0.5) / (n + 1.0)).clamp(0.02, 0.98);
            (p / (1.0 - p)).ln() * (1.0 + std::f64::consts::PI / 8.0).sqrt()
        })
        .collect();
    let mut em = Em {
        train,
        options,
        nodes,
        log_prior,
        threads: threads.max(1),
        posterior: vec![0.0; n_learners * GRID_POINTS],
        learner_ll: vec![0.0; n_learners],
        table: vec![0.0; 2 * n_questions * GRID_POINTS],
        counts: vec![0.0; 2 * n_questions * GRID_POINTS],
        evaluations: 0,
    };
    // SQUAREM (Varadhan & Roland 2008): two EM steps, a step along their extrapolation,
    // and one EM step from there, kept only if the likelihood did not fall.
    let mut current: Vec<f64> = slopes.iter().chain(&easiness).copied().collect();
    while em.evaluations < options.max_iterations {
        let (p1, _) = em.step(&current);
        if em.evaluations >= options.max_iterations || max_change(&p1, &current) < options.tolerance
        {
            current = p1;
            break;
        }
        let (p2, ll1) = em.step(&p1);
        let r: Vec<f64> = p1.iter().zip(&current).map(|(a, b)| a - b).collect();
        let v: Vec<f64> = p2
            .iter()
            .zip(&p1)
            .zip(&r)
            .map(|((b, a), r)| b - a - r)
            .collect();
        let (nr, nv) = (norm(&r), norm(&v));
        let mut next = p2.clone();
        if nv > 0.0 {
            let alpha = (-nr / nv).min(-1.0);
            let mut jump: Vec<f64> = current
                .iter()
                .zip(&r)
                .zip(&v)
                .map(|((p, r), v)| p - 2.0 * alpha * r + alpha * alpha * v)
                .collect();
            for a in &mut jump[..n_questions] {
                *a = a.max(0.0);
            }
            let (p3, ll_jump) = em.step(&jump);
            if ll_jump.is_finite() && ll_jump >= ll1 {
                next = p3;
            }
        }
        let moved = max_change(&next, &current);
        current = next;
        if moved < options.tolerance || em.evaluations >= options.max_iterations {
            break;
        }
    }
    let (slopes, easiness) = current.split_at(n_questions);
    let (slopes, easiness) = (slopes.to_vec(), easiness.to_vec());
    // Score the learners under the final parameters.
    let log_likelihood = em.posterior_at(&slopes, &easiness);
    let iterations = em.evaluations;
    let posterior = em.posterior;
    let theta = eap(train, &posterior, &nodes);
    MarginalFit {
        slopes,
        easiness,
        theta,
        iterations,
        log_likelihood,
    }
}

/// The EM map's buffers.
struct Em<'a> {
    train: &'a Observations,
    options: &'a MarginalOptions,
    nodes: [f64; GRID_POINTS],
    log_prior: [f64; GRID_POINTS],
    threads: usize,
    posterior: Vec<f64>,
    learner_ll: Vec<f64>,
    table: Vec<f64>,
    counts: Vec<f64>,
    /// EM steps taken.
    evaluations: usize,
}

impl Em<'_> {
    /// Posteriors at (slopes, easiness); returns the marginal log-likelihood there.
    fn posterior_at(&mut self, slopes: &[f64], easiness: &[f64]) -> f64 {
        fill_table(&mut self.table, slopes, easiness, &self.nodes);
        e_step(
            self.train,
            &self.table,
            &self.log_prior,
            &mut self.posterior,
            &mut self.learner_ll,
            self.threads,
        );
        self.learner_ll.iter().sum()
    }

    /// One EM step from `params` (slopes then easiness): the new parameters and the
    /// marginal log-likelihood at `params`.
    fn step(&mut self, params: &[f64]) -> (Vec<f64>, f64) {
        self.evaluations += 1;
        let n = params.len() / 2;
        let ll = self.posterior_at(&params[..n], &params[n..]);
        expected_counts(self.train, &self.posterior, &mut self.counts, self.threads);
        let (mut slopes, mut easiness) = (params[..n].to_vec(), params[n..].to_vec());
        m_step(
            &self.counts,
            &self.nodes,
            self.options,
            &mut slopes,
            &mut easiness,
        );
        slopes.extend_from_slice(&easiness);
        (slopes, ll)
    }
}

fn max_change(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn norm(x: &[f64]) -> f64 {
    x.iter().map(|v| v * v).sum::<f64>().sqrt()
}

/// EAP θ of every learner of `responses` under fixed slopes and easiness (0 for learners
/// without responses): how a fitted model scores learners from more responses than it
/// was fitted on.
pub fn eap_scores(
    responses: &Observations,
    slopes: &[f64],
    easiness: &[f64],
    threads: usize,
) -> Vec<f64> {
    let (nodes, log_prior) = grid();
    let n_learners = responses.n_learners();
    let mut table = vec![0.0; 2 * slopes.len() * GRID_POINTS];
    fill_table(&mut table, slopes, easiness, &nodes);
    let mut posterior = vec![0.0; n_learners * GRID_POINTS];
    let mut learner_ll = vec![0.0; n_learners];
    e_step(
        responses,
        &table,
        &log_prior,
        &mut posterior,
        &mut learner_ll,
        threads,
    );
    eap(responses, &posterior, &nodes)
}

fn eap(responses: &Observations, posterior: &[f64], nodes: &[f64; GRID_POINTS]) -> Vec<f64> {
    (0..responses.n_learners())
        .map(|j| {
            if responses.learner_entries(j).is_empty() {
                return 0.0;
            }
            let post = &posterior[j * GRID_POINTS..(j + 1) * GRID_POINTS];
            let mut mean = 0.0;
            for (p, node) in post.iter().zip(nodes) {
                mean += p * node;
            }
            mean
        })
        .collect()
}

/// `table[(y · Q + q) · G + k]` = log P(y | θ_k) for question q.
fn fill_table(table: &mut [f64], slopes: &[f64], easiness: &[f64], nodes: &[f64; GRID_POINTS]) {
    let n_questions = slopes.len();
    for q in 0..n_questions {
        for (k, &node) in nodes.iter().enumerate() {
            let (correct, wrong) = log_sigmoids(slopes[q] * node + easiness[q]);
            table[(n_questions + q) * GRID_POINTS + k] = correct;
            table[q * GRID_POINTS + k] = wrong;
        }
    }
}

/// Posterior of every learner on the grid (normalised), and their marginal log-likelihoods.
fn e_step(
    train: &Observations,
    table: &[f64],
    log_prior: &[f64; GRID_POINTS],
    posterior: &mut [f64],
    learner_ll: &mut [f64],
    threads: usize,
) {
    let n_questions = train.n_questions();
    let items: Vec<(usize, &mut [f64], &mut [f64])> = posterior
        .chunks_mut(LEARNERS_PER_ITEM * GRID_POINTS)
        .zip(learner_ll.chunks_mut(LEARNERS_PER_ITEM))
        .enumerate()
        .map(|(i, (post, ll))| (i * LEARNERS_PER_ITEM, post, ll))
        .collect();
    run_queue(
        items,
        threads,
        || (),
        |(first, post, ll), _| {
            for (offset, (row, llj)) in post
                .chunks_exact_mut(GRID_POINTS)
                .zip(ll.iter_mut())
                .enumerate()
            {
                let entries = train.learner_entries(first + offset);
                let row: &mut [f64; GRID_POINTS] = match row.try_into() {
                    Ok(r) => r,
                    Err(_) => unreachable!("rows have GRID_POINTS values"),
                };
                *row = *log_prior;
                for &e in entries {
                    let (q, y) = unpack(e);
                    let at = (usize::from(y) * n_questions + q) * GRID_POINTS;
                    let t: &[f64; GRID_POINTS] = match table[at..at + GRID_POINTS].try_into() {
                        Ok(t) => t,
                        Err(_) => unreachable!("table rows have GRID_POINTS values"),
                    };
                    for k in 0..GRID_POINTS {
                        row[k] += t[k];
                    }
                }
                let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let mut total = 0.0;
                for x in row.iter_mut() {
                    *x = (*x - max).exp();
                    total += *x;
                }
                let inv = 1.0 / total;
                for x in row.iter_mut() {
                    *x *= inv;
                }
                *llj = max + total.ln();
            }
        },
    );
}

/// `counts[(y · Q + q) · G + k]`: expected learners at θ_k among those who answered q with y.
fn expected_counts(train: &Observations, posterior: &[f64], counts: &mut [f64], threads: usize) {
    let n_questions = train.n_questions();
    let (wrong, correct) = counts.split_at_mut(n_questions * GRID_POINTS);
    let items: Vec<(usize, &mut [f64], &mut [f64])> = wrong
        .chunks_mut(QUESTIONS_PER_ITEM * GRID_POINTS)
        .zip(correct.chunks_mut(QUESTIONS_PER_ITEM * GRID_POINTS))
        .enumerate()
        .map(|(i, (w, c))| (i * QUESTIONS_PER_ITEM, w, c))
        .collect();
    run_queue(
        items,
        threads,
        || (),
        |(first, w, c), _| {
            for (offset, (wq, cq)) in w
                .chunks_exact_mut(GRID_POINTS)
                .zip(c.chunks_exact_mut(GRID_POINTS))
                .enumerate()
            {
                let mut acc = [[0.0; GRID_POINTS]; 2];
                for &e in train.question_entries(first + offset) {
                    let (j, y) = unpack(e);
                    let post: &[f64; GRID_POINTS] =
                        match posterior[j * GRID_POINTS..(j + 1) * GRID_POINTS].try_into() {
                            Ok(p) => p,
                            Err(_) => unreachable!("rows have GRID_POINTS values"),
                        };
                    let a = &mut acc[usize::from(y)];
                    for k in 0..GRID_POINTS {
                        a[k] += post[k];
                    }
                }
                wq.copy_from_slice(&acc[0]);
                cq.copy_from_slice(&acc[1]);
            }
        },
    );
}

/// One M-step: Newton steps on each question's expected complete-data log-likelihood
/// (penalised); returns the largest parameter change.
fn m_step(
    counts: &[f64],
    nodes: &[f64; GRID_POINTS],
    options: &MarginalOptions,
    slopes: &mut [f64],
    easiness: &mut [f64],
) -> f64 {
    let n_questions = slopes.len();
    let mut moved: f64 = 0.0;
    let stats = |q: usize, a: f64, d: f64| {
        // Gradient and negative Hessian of the expected log-likelihood in (a, d).
        let wrong = &counts[q * GRID_POINTS..(q + 1) * GRID_POINTS];
        let correct = &counts[(n_questions + q) * GRID_POINTS..(n_questions + q + 1) * GRID_POINTS];
        let (mut ga, mut gd, mut haa, mut had, mut hdd) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for k in 0..GRID_POINTS {
            let n = wrong[k] + correct[k];
            let p = crate::fit::sigmoid(a * nodes[k] + d);
            let r = correct[k] - n * p;
            let v = n * p * (1.0 - p);
            ga += r * nodes[k];
            gd += r;
            haa += v * nodes[k] * nodes[k];
            had += v * nodes[k];
            hdd += v;
        }
        (ga, gd, haa, had, hdd)
    };
    let observed = |q: usize| {
        counts[q * GRID_POINTS..(q + 1) * GRID_POINTS]
            .iter()
            .chain(&counts[(n_questions + q) * GRID_POINTS..(n_questions + q + 1) * GRID_POINTS])
            .any(|&c| c > 0.0)
    };
    let (la, ld) = (2.0 * options.slope_l2, 2.0 * options.easiness_l2);
    match options.slopes {
        Slopes::PerQuestion => {
            for q in 0..n_questions {
                if !observed(q) {
                    continue;
                }
                let (a0, d0) = (slopes[q], easiness[q]);
                let (mut a, mut d) = (a0, d0);
                for _ in 0..NEWTON_STEPS {
                    let (ga, gd, haa, had, hdd) = stats(q, a, d);
                    let (ga, gd) = (ga - la * a, gd - ld * d);
                    let (haa, hdd) = (haa + la, hdd + ld);
                    let det = haa * hdd - had * had;
                    if det <= 0.0 || !det.is_finite() {
                        break;
                    }
                    let step_a = (hdd * ga - had * gd) / det;
                    let step_d = (haa * gd - had * ga) / det;
                    // Damped: at most 1 per step, a kept ≥ 0.
                    let scale = 1.0 / step_a.abs().max(step_d.abs()).max(1.0);
                    a = (a + scale * step_a).max(0.0);
                    d += scale * step_d;
                }
                moved = moved.max((a - a0).abs()).max((d - d0).abs());
                slopes[q] = a;
                easiness[q] = d;
            }
        }
        Slopes::Common => {
            let a = slopes.first().copied().unwrap_or(1.0);
            for (q, dq) in easiness.iter_mut().enumerate() {
                if !observed(q) {
                    continue;
                }
                let d0 = *dq;
                let mut d = d0;
                for _ in 0..NEWTON_STEPS {
                    let (_, gd, _, _, hdd) = stats(q, a, d);
                    let step = (gd - ld * d) / (hdd + ld);
                    d += step.clamp(-1.0, 1.0);
                }
                moved = moved.max((d - d0).abs());
                *dq = d;
            }
            let (mut ga, mut haa) = (-la * a, la);
            for q in (0..n_questions).filter(|&q| observed(q)) {
                let (g, _, h, _, _) = stats(q, a, easiness[q]);
                ga += g;
                haa += h;
            }
            let new_a = if haa > 0.0 {
                (a + (ga / haa).clamp(-1.0, 1.0)).max(0.0)
            } else {
                a
            };
            moved = moved.max((new_a - a).abs());
            slopes.fill(new_a);
        }
    }
    moved
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observations::Observation;

    /// Responses drawn from a known 2PL (a deterministic generator), some entries missing.
    fn data(n: usize, q: usize) -> (Observations, Vec<f64>, Vec<f64>) {
        let mut state: u64 = 7;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let a: Vec<f64> = (0..q).map(|i| 0.5 + 1.5 * i as f64 / q as f64).collect();
        let d: Vec<f64> = (0..q)
            .map(|i| -1.0 + 2.0 * ((i * 7) % q) as f64 / q as f64)
            .collect();
        let mut obs = Vec::new();
        for j in 0..n {
            // θ by inverse-CDF-free approximation: sum of uniforms.
            let theta = (0..12).map(|_| next()).sum::<f64>() - 6.0;
            for qi in 0..q {
                let u = next();
                if next() < 0.2 {
                    continue;
                }
                let p = crate::fit::sigmoid(a[qi] * theta + d[qi]);
                obs.push(Observation {
                    learner: j,
                    question: qi,
                    correct: u < p,
                });
            }
        }
        (Observations::new(n, q, &obs).unwrap(), a, d)
    }

    #[test]
    fn two_pl_recovers_slopes_and_easiness() {
        let (train, a, d) = data(3000, 12);
        let fit = fit_marginal(&train, &MarginalOptions::new(Slopes::PerQuestion), 1);
        assert!(
            fit.iterations > 1 && fit.iterations < 300,
            "{}",
            fit.iterations
        );
        for q in 0..12 {
            assert!(
                (fit.slopes[q] - a[q]).abs() < 0.25,
                "a[{q}] {} vs {}",
                fit.slopes[q],
                a[q]
            );
            assert!(
                (fit.easiness[q] - d[q]).abs() < 0.2,
                "d[{q}] {} vs {}",
                fit.easiness[q],
                d[q]
            );
        }
        // EAP scores increase with the number of correct answers on a full row.
        assert!(fit.theta.iter().all(|t| t.is_finite() && t.abs() < 6.0));
    }

    #[test]
    fn common_slope_is_shared_and_the_fit_improves_the_likelihood() {
        let (train, _, _) = data(800, 10);
        let mut options = MarginalOptions::new(Slopes::Common);
        options.max_iterations = 0;
        let start = fit_marginal(&train, &options, 1);
        options.max_iterations = 300;
        let fit = fit_marginal(&train, &options, 1);
        assert!(fit.slopes.iter().all(|&s| s == fit.slopes[0]));
        assert!(fit.log_likelihood > start.log_likelihood);
    }

    #[test]
    fn the_fit_is_bit_identical_for_any_thread_count() {
        let (train, _, _) = data(1500, 9);
        let options = MarginalOptions::new(Slopes::PerQuestion);
        let one = fit_marginal(&train, &options, 1);
        for threads in [2, 3, 7] {
            assert_eq!(
                fit_marginal(&train, &options, threads),
                one,
                "{threads} threads"
            );
        }
    }
}
