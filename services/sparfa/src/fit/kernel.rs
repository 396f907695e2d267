//! The inner loops of the docs/design/sparfa.md §7 block steps (batched logistic residuals, the
//! U-step, the (W, d)-step) and the work queue that runs them on threads.

use std::sync::Mutex;

use super::Hyperparameters;
use crate::observations::{unpack, Observations};

/// Learners per work item of the U-step: small enough to balance two busy cores,
/// large enough that taking an item costs nothing.
const LEARNERS_PER_ITEM: usize = 256;

/// Runs `work(item, scratch)` once for every item, taking items in order from a shared
/// queue on up to `threads` threads (the caller's thread included). An item's result
/// must depend only on the item, never on the thread or on the other items; then the
/// outcome is the same for any thread count.
pub(crate) fn run_queue<T, S>(
    items: Vec<T>,
    threads: usize,
    scratch: impl Fn() -> S + Sync,
    work: impl Fn(T, &mut S) + Sync,
) where
    T: Send,
{
    if threads <= 1 || items.len() <= 1 {
        let mut s = scratch();
        for item in items {
            work(item, &mut s);
        }
        return;
    }
    let workers = threads.min(items.len());
    let queue = Mutex::new(items.into_iter());
    let take = || match queue.lock() {
        Ok(mut q) => q.next(),
        // A poisoned queue means another worker panicked; the scope re-raises it.
        Err(_) => None,
    };
    let run = || {
        let mut s = scratch();
        while let Some(item) = take() {
            work(item, &mut s);
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..workers {
            scope.spawn(run);
        }
        run();
    });
}

/// Whether the hot loops may use 256-bit vectors. Only lane-wise additions and
/// multiplications are vectorised (never fused, never reordered), so results are the
/// same bits either way.
fn wide_vectors() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// e^x for x in [−708, 708] (clamped outside), branch-free so that loops over slices
/// vectorise: x = n·ln 2 + r with |r| ≤ ½ ln 2, e^r by its degree-12 Taylor polynomial
/// (truncation below 2e−16 relative), 2^n built in the exponent bits.
#[inline(always)]
fn exp_clamped(x: f64) -> f64 {
    const LOG2_E: f64 = std::f64::consts::LOG2_E;
    // ln 2 split so that n · LN2_HI is exact for |n| < 2^11 (the fdlibm constants).
    const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
    const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
    // Adding 1.5 · 2^52 rounds to an integer held in the low mantissa bits.
    const SHIFT: f64 = 6_755_399_441_055_744.0;
    let x = if x < -708.0 { -708.0 } else { x };
    let x = if x > 708.0 { 708.0 } else { x };
    let shifted = x * LOG2_E + SHIFT;
    let n = shifted - SHIFT;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.0 / 479_001_600.0;
    p = p * r + 1.0 / 39_916_800.0;
    p = p * r + 1.0 / 3_628_800.0;
    p = p * r + 1.0 / 362_880.0;
    p = p * r + 1.0 / 40_320.0;
    p = p * r + 1.0 / 5_040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    // The low 12 bits of (2^51 + n + 1023) are n + 1023 ∈ [2, 2044]: a normal exponent.
    let scale = f64::from_bits(shifted.to_bits().wrapping_add(1023) << 52);
    p * scale
}

/// Replaces each logit z by its residual σ(z) − y.
#[inline(always)]
pub(super) fn logistic_residuals(z: &mut [f64], y: &[f64]) {
    for (z, y) in z.iter_mut().zip(y) {
        *z = 1.0 / (1.0 + exp_clamped(-*z)) - *y;
    }
}

/// The non-zero entries of each row of a row-major matrix (W by question, U by learner).
#[derive(Default)]
pub(super) struct SparseRows {
    offsets: Vec<usize>,
    concepts: Vec<u32>,
    values: Vec<f64>,
}

impl SparseRows {
    pub(super) fn new() -> Self {
        Self {
            offsets: vec![0],
            concepts: Vec::new(),
            values: Vec::new(),
        }
    }

    /// Rebuilds from `n_rows` consecutive rows of equal length in `values`.
    pub(super) fn rebuild(&mut self, values: &[f64], n_rows: usize) {
        self.offsets.clear();
        self.concepts.clear();
        self.values.clear();
        self.offsets.push(0);
        let k = values.len().checked_div(n_rows).unwrap_or(0);
        if k == 0 {
            self.offsets.resize(n_rows + 1, 0);
            return;
        }
        for row in values.chunks(k) {
            for (c, &w) in row.iter().enumerate() {
                if w != 0.0 {
                    self.concepts.push(c as u32);
                    self.values.push(w);
                }
            }
            self.offsets.push(self.values.len());
        }
    }

    #[inline]
    fn row(&self, r: usize) -> (&[u32], &[f64]) {
        let range = self.offsets[r]..self.offsets[r + 1];
        (&self.concepts[range.clone()], &self.values[range])
    }
}

/// Per-thread buffers of the U-step.
#[derive(Default)]
struct LearnerScratch {
    position: Vec<u32>,
    active: Vec<u32>,
    /// The learner's loadings on its active concepts, entry-major (n × m) and concept-major (m × n).
    by_entry: Vec<f64>,
    by_concept: Vec<f64>,
    /// The same loadings as compressed rows (entry i's non-zeros at `offsets[i]..offsets[i + 1]`),
    /// used instead of the dense local matrix when it would be mostly zeros.
    offsets: Vec<u32>,
    positions: Vec<u32>,
    values: Vec<f64>,
    easiness: Vec<f64>,
    y: Vec<f64>,
    z: Vec<f64>,
    g: Vec<f64>,
    u_active: Vec<f64>,
    /// Per question, for the dense path: logit then residual, response, answered.
    z_all: Vec<f64>,
    y_all: Vec<f64>,
    answered: Vec<bool>,
}

/// The U-step: `inner_steps` gradient steps per learner with L_j = ¼ Σ ‖w_q‖² + γ_U.
///
/// W is fixed during the step, so each learner first copies the loadings of its
/// questions on its active concepts (those some question of the learner loads on) into
/// a dense local matrix, in both orders: the logits then accumulate concept by concept
/// over contiguous entries, and the gradient entry by entry over contiguous concepts,
/// both without dependent chains and each sum still in ascending order. A concept
/// outside the active set has gradient γ_U · u_c, applied as such.
pub(super) fn knowledge_step(
    w: &[f64],
    d: &[f64],
    u: &mut [f64],
    k: usize,
    train: &Observations,
    hp: &Hyperparameters,
    threads: usize,
) {
    knowledge_step_paths(w, d, u, k, train, hp, threads, true, true, wide_vectors());
}

/// [`knowledge_step`], with the dense path and 256-bit vectors allowed or not (the tests
/// compare them).
#[allow(clippy::too_many_arguments)]
fn knowledge_step_paths(
    w: &[f64],
    d: &[f64],
    u: &mut [f64],
    k: usize,
    train: &Observations,
    hp: &Hyperparameters,
    threads: usize,
    allow_dense: bool,
    allow_compressed: bool,
    wide: bool,
) {
    if k == 0 {
        return;
    }
    let mut sparse = SparseRows::new();
    sparse.rebuild(w, d.len());
    let norms: Vec<f64> = w.chunks(k).map(super::squared_norm).collect();
    let n_questions = d.len();
    // With a quarter or more of W non-zero, learners who answered at least half of the
    // questions work on all of W, dense; the choice depends on the data only.
    let dense_w = allow_dense && sparse.values.len() * 4 >= n_questions * k;
    let mut w_by_concept = Vec::new();
    if dense_w {
        w_by_concept.resize(k * n_questions, 0.0);
        for (q, row) in w.chunks_exact(k).enumerate() {
            for (c, &x) in row.iter().enumerate() {
                w_by_concept[c * n_questions + q] = x;
            }
        }
    }
    let items: Vec<(usize, &mut [f64])> = u
        .chunks_mut(LEARNERS_PER_ITEM * k)
        .enumerate()
        .map(|(i, rows)| (i * LEARNERS_PER_ITEM, rows))
        .collect();
    let scratch = || LearnerScratch {
        position: vec![u32::MAX; k],
        ..LearnerScratch::default()
    };
    let context = LearnerContext {
        k,
        d,
        allow_compressed,
        w_by_concept: &w_by_concept,
        dense_from: if dense_w {
            n_questions.div_ceil(2)
        } else {
            usize::MAX
        },
        sparse: &sparse,
        norms: &norms,
        train,
        hp,
    };
    run_queue(items, threads, scratch, |(first, rows), s| {
        #[cfg(target_arch = "x86_64")]
        if wide {
            // SAFETY: `wide` is true only when the CPU reports AVX2.
            unsafe { learner_item_avx2(&context, first, rows, s) };
            return;
        }
        learner_item(&context, first, rows, s);
    });
}

/// What the U-step reads.
struct LearnerContext<'a> {
    k: usize,
    d: &'a [f64],
    /// Whether mostly-zero local loadings may be walked as compressed rows.
    allow_compressed: bool,
    /// W concept-major (K × Q), built only when `dense_from` is finite.
    w_by_concept: &'a [f64],
    /// Learners with at least this many observations take the dense path.
    dense_from: usize,
    sparse: &'a SparseRows,
    norms: &'a [f64],
    train: &'a Observations,
    hp: &'a Hyperparameters,
}

#[inline(always)]
fn learner_item(
    context: &LearnerContext<'_>,
    first: usize,
    rows: &mut [f64],
    s: &mut LearnerScratch,
) {
    let k = context.k;
    // Dense learners are solved LANES at a time: lane l of every vector is learner l's
    // value, so each learner sees exactly the operations of `dense_learner_steps`.
    let mut batch: [Option<(usize, &mut [f64])>; LANES] = Default::default();
    let mut filled = 0;
    for (offset, uj) in rows.chunks_mut(k).enumerate() {
        let j = first + offset;
        let entries = context.train.learner_entries(j);
        if entries.len() >= context.dense_from {
            batch[filled] = Some((j, uj));
            filled += 1;
            if filled == LANES {
                dense_batch_steps(&mut batch, context, s);
                filled = 0;
            }
        } else if !entries.is_empty() {
            learner_steps(entries, uj, context, s);
        }
    }
    if filled > 0 {
        dense_batch_steps(&mut batch[..filled], context, s);
    }
}

/// [`learner_item`] compiled with AVX2: the same operations on wider registers, so
/// the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn learner_item_avx2(
    context: &LearnerContext<'_>,
    first: usize,
    rows: &mut [f64],
    s: &mut LearnerScratch,
) {
    learner_item(context, first, rows, s);
}

#[inline(always)]
fn learner_steps(
    entries: &[u32],
    uj: &mut [f64],
    context: &LearnerContext<'_>,
    s: &mut LearnerScratch,
) {
    let LearnerContext {
        d,
        sparse,
        norms,
        hp,
        ..
    } = *context;
    // Plain slices below: the compiler then keeps them in registers across the loops.
    let LearnerScratch {
        position,
        active,
        by_entry,
        by_concept,
        easiness,
        y,
        z,
        g,
        u_active,
        offsets,
        positions,
        values: csr_values,
        ..
    } = s;
    let n = entries.len();
    active.clear();
    easiness.clear();
    y.clear();
    let mut norm_sum = 0.0;
    for &e in entries {
        let (q, correct) = unpack(e);
        norm_sum += norms[q];
        easiness.push(d[q]);
        y.push(f64::from(u8::from(correct)));
        for &c in sparse.row(q).0 {
            if position[c as usize] == u32::MAX {
                position[c as usize] = 0;
                active.push(c);
            }
        }
    }
    active.sort_unstable();
    let m = active.len();
    for (a, &c) in active.iter().enumerate() {
        position[c as usize] = a as u32;
    }
    let nnz: usize = entries
        .iter()
        .map(|&e| sparse.row(unpack(e).0).0.len())
        .sum();
    // Mostly-zero local loadings (each question on a few of the learner's concepts, as
    // with page hints) are walked as compressed rows: the same non-zero terms in the same
    // order, so the same values, without the multiplications by zero.
    let compressed = context.allow_compressed && nnz * 2 <= n * m;
    u_active.clear();
    u_active.extend(active.iter().map(|&c| uj[c as usize]));
    let lipschitz = hp.gamma_u + 0.25 * norm_sum;
    let gamma = hp.gamma_u;
    z.resize(n, 0.0);
    g.resize(m, 0.0);
    if compressed && m > 0 {
        let values = csr_values;
        offsets.clear();
        positions.clear();
        values.clear();
        offsets.push(0);
        for &e in entries {
            let (concepts, row) = sparse.row(unpack(e).0);
            for (&c, &v) in concepts.iter().zip(row) {
                positions.push(position[c as usize]);
                values.push(v);
            }
            offsets.push(positions.len() as u32);
        }
        for _ in 0..hp.inner_steps {
            for (i, zi) in z.iter_mut().enumerate() {
                let mut acc = easiness[i];
                for t in offsets[i] as usize..offsets[i + 1] as usize {
                    acc += values[t] * u_active[positions[t] as usize];
                }
                *zi = acc;
            }
            logistic_residuals(z, y);
            for (gc, uc) in g.iter_mut().zip(u_active.iter()) {
                *gc = gamma * uc;
            }
            for (i, &r) in z.iter().enumerate() {
                for t in offsets[i] as usize..offsets[i + 1] as usize {
                    g[positions[t] as usize] += r * values[t];
                }
            }
            for (uc, gc) in u_active.iter_mut().zip(g.iter()) {
                *uc -= gc / lipschitz;
            }
        }
    } else if m > 0 {
        by_entry.clear();
        by_entry.resize(n * m, 0.0);
        by_concept.clear();
        by_concept.resize(m * n, 0.0);
        for (i, &e) in entries.iter().enumerate() {
            let (concepts, values) = sparse.row(unpack(e).0);
            for (&c, &v) in concepts.iter().zip(values) {
                let a = position[c as usize] as usize;
                by_entry[i * m + a] = v;
                by_concept[a * n + i] = v;
            }
        }
        for _ in 0..hp.inner_steps {
            z.copy_from_slice(easiness);
            for (column, &ua) in by_concept.chunks_exact(n).zip(u_active.iter()) {
                for (zi, &w) in z.iter_mut().zip(column) {
                    *zi += w * ua;
                }
            }
            logistic_residuals(z, y);
            for (gc, uc) in g.iter_mut().zip(u_active.iter()) {
                *gc = gamma * uc;
            }
            for (row, &r) in by_entry.chunks_exact(m).zip(z.iter()) {
                for (gc, &w) in g.iter_mut().zip(row) {
                    *gc += r * w;
                }
            }
            for (uc, gc) in u_active.iter_mut().zip(g.iter()) {
                *uc -= gc / lipschitz;
            }
        }
    }
    if m < uj.len() {
        // Inactive concepts only feel the ridge.
        for (c, uc) in uj.iter_mut().enumerate() {
            if position[c] == u32::MAX {
                for _ in 0..hp.inner_steps {
                    *uc -= gamma * *uc / lipschitz;
                }
            }
        }
    }
    for (&c, &v) in active.iter().zip(u_active.iter()) {
        uj[c as usize] = v;
        position[c as usize] = u32::MAX;
    }
}

/// A chunk of exactly [`LANES`] values as an array (the chunks come from `chunks_exact`).
#[inline(always)]
fn lanes(x: &[f64]) -> &[f64; LANES] {
    x.try_into().unwrap_or(&[0.0; LANES])
}

#[inline(always)]
fn lanes_mut(x: &mut [f64]) -> &mut [f64; LANES] {
    match x.try_into() {
        Ok(lanes) => lanes,
        Err(_) => unreachable!("chunks_exact gives LANES values"),
    }
}

/// Learners per batch of the dense U-step (one 256-bit vector of f64).
const LANES: usize = 4;

/// The dense U-step of up to [`LANES`] learners who answered most questions, side by
/// side (see `dense_learner_steps`, its plain reference in the tests): every array holds
/// one value per lane, and each lane runs the same operations in the same order as the
/// single-learner version, so the bits are the same. W (concept-major) is read once per
/// step for the whole batch instead of once per learner.
#[inline(always)]
fn dense_batch_steps(
    batch: &mut [Option<(usize, &mut [f64])>],
    context: &LearnerContext<'_>,
    s: &mut LearnerScratch,
) {
    let LearnerContext {
        k,
        d,
        w_by_concept,
        norms,
        train,
        hp,
        ..
    } = *context;
    let n_questions = d.len();
    let LearnerScratch {
        z_all,
        y_all,
        answered,
        g,
        u_active,
        ..
    } = s;
    // Lane-interleaved: value (q, l) at q * LANES + l, (c, l) at c * LANES + l.
    y_all.clear();
    y_all.resize(n_questions * LANES, 0.0);
    answered.clear();
    answered.resize(n_questions * LANES, false);
    u_active.clear();
    u_active.resize(k * LANES, 0.0);
    let mut lipschitz = [1.0; LANES];
    for (l, slot) in batch.iter().enumerate() {
        let Some((j, uj)) = slot else { continue };
        let mut norm_sum = 0.0;
        for &e in train.learner_entries(*j) {
            let (q, y) = unpack(e);
            norm_sum += norms[q];
            y_all[q * LANES + l] = f64::from(u8::from(y));
            answered[q * LANES + l] = true;
        }
        lipschitz[l] = hp.gamma_u + 0.25 * norm_sum;
        for (c, &x) in uj.iter().enumerate() {
            u_active[c * LANES + l] = x;
        }
    }
    let gamma = hp.gamma_u;
    z_all.resize(n_questions * LANES, 0.0);
    g.resize(k * LANES, 0.0);
    for _ in 0..hp.inner_steps {
        for (z, &dq) in z_all.chunks_exact_mut(LANES).zip(d) {
            z.fill(dq);
        }
        // Four concepts per pass: z is read and written a quarter as often, and each
        // lane still adds the concepts in ascending order.
        let mut c = 0;
        while c < k {
            let width = (k - c).min(4);
            let mut u4 = [[0.0; LANES]; 4];
            for (i, ui) in u4.iter_mut().enumerate().take(width) {
                *ui = *lanes(&u_active[(c + i) * LANES..(c + i + 1) * LANES]);
            }
            let columns = &w_by_concept[c * n_questions..(c + width) * n_questions];
            for (q, z) in z_all.chunks_exact_mut(LANES).enumerate() {
                let z = lanes_mut(z);
                for (i, ui) in u4.iter().enumerate().take(width) {
                    let x = columns[i * n_questions + q];
                    for l in 0..LANES {
                        z[l] += x * ui[l];
                    }
                }
            }
            c += width;
        }
        logistic_residuals(z_all, y_all);
        for (r, &a) in z_all.iter_mut().zip(answered.iter()) {
            *r = if a { *r } else { 0.0 };
        }
        // Four concepts per pass, four independent sums; each lane's sum for a concept
        // runs over the questions in ascending order.
        let mut c = 0;
        while c < k {
            let width = (k - c).min(4);
            let mut acc = [[0.0; LANES]; 4];
            for (i, a) in acc.iter_mut().enumerate().take(width) {
                let uc = lanes(&u_active[(c + i) * LANES..(c + i + 1) * LANES]);
                for l in 0..LANES {
                    a[l] = gamma * uc[l];
                }
            }
            let columns = &w_by_concept[c * n_questions..(c + width) * n_questions];
            for (q, r) in z_all.chunks_exact(LANES).enumerate() {
                let r = lanes(r);
                for (i, a) in acc.iter_mut().enumerate().take(width) {
                    let x = columns[i * n_questions + q];
                    for l in 0..LANES {
                        a[l] += r[l] * x;
                    }
                }
            }
            for (i, a) in acc.iter().enumerate().take(width) {
                g[(c + i) * LANES..(c + i + 1) * LANES].copy_from_slice(a);
            }
            c += width;
        }
        for (uc, gc) in u_active.chunks_exact_mut(LANES).zip(g.chunks_exact(LANES)) {
            for l in 0..LANES {
                uc[l] -= gc[l] / lipschitz[l];
            }
        }
    }
    for (l, slot) in batch.iter_mut().enumerate() {
        if let Some((_, uj)) = slot {
            for (c, x) in uj.iter_mut().enumerate() {
                *x = u_active[c * LANES + l];
            }
        }
    }
}

/// The dense U-step of one learner, written plainly: the reference that
/// [`dense_batch_steps`] must match bit for bit. Logits and gradients run over all of
/// W; unanswered questions get a residual of exactly 0, which leaves the sums
/// unchanged, and a concept no answered question loads on gets γ_U · u_c.
#[cfg(test)]
fn dense_learner_steps(entries: &[u32], uj: &mut [f64], context: &LearnerContext<'_>) {
    let LearnerContext {
        d,
        w_by_concept,
        norms,
        hp,
        ..
    } = *context;
    let n_questions = d.len();
    let mut y_all = vec![0.0; n_questions];
    let mut answered = vec![false; n_questions];
    let mut norm_sum = 0.0;
    for &e in entries {
        let (q, y) = unpack(e);
        norm_sum += norms[q];
        y_all[q] = f64::from(u8::from(y));
        answered[q] = true;
    }
    let lipschitz = hp.gamma_u + 0.25 * norm_sum;
    for _ in 0..hp.inner_steps {
        let mut z_all = d.to_vec();
        for (column, &uc) in w_by_concept.chunks_exact(n_questions).zip(uj.iter()) {
            for (z, &x) in z_all.iter_mut().zip(column) {
                *z += x * uc;
            }
        }
        logistic_residuals(&mut z_all, &y_all);
        for (r, &a) in z_all.iter_mut().zip(&answered) {
            *r = if a { *r } else { 0.0 };
        }
        let g: Vec<f64> = w_by_concept
            .chunks_exact(n_questions)
            .zip(uj.iter())
            .map(|(column, &uc)| {
                let mut gc = hp.gamma_u * uc;
                for (&r, &x) in z_all.iter().zip(column) {
                    gc += r * x;
                }
                gc
            })
            .collect();
        for (uc, gc) in uj.iter_mut().zip(&g) {
            *uc -= gc / lipschitz;
        }
    }
}

/// Question blocks of the (W, d)-step and, per learner, where each block's entries start.
pub(super) struct QuestionBlocks {
    /// Block b holds questions `bounds[b]..bounds[b + 1]`.
    bounds: Vec<usize>,
    /// `splits[j * (blocks + 1) + b]`: index in learner j's entries of block b's first.
    splits: Vec<u32>,
}

impl QuestionBlocks {
    /// About `target` blocks of similar observation counts (at least one question each).
    pub(super) fn new(train: &Observations, target: usize) -> Self {
        let n_questions = train.n_questions();
        let total = train.len().max(1);
        let target = target.clamp(1, n_questions.max(1));
        let mut bounds = vec![0];
        let mut seen = 0usize;
        for q in 0..n_questions {
            seen += train.question_entries(q).len();
            let b = bounds.len();
            // Close block b − 1 once it holds its share of the observations.
            if q + 1 < n_questions && b < target && seen * target >= total * b {
                bounds.push(q + 1);
            }
        }
        bounds.push(n_questions);
        let blocks = bounds.len() - 1;
        let mut splits = Vec::with_capacity(train.n_learners() * (blocks + 1));
        for j in 0..train.n_learners() {
            let entries = train.learner_entries(j);
            for &first in &bounds {
                splits.push(entries.partition_point(|&e| unpack(e).0 < first) as u32);
            }
        }
        Self { bounds, splits }
    }

    fn len(&self) -> usize {
        self.bounds.len() - 1
    }

    #[inline]
    fn entries<'a>(&self, train: &'a Observations, j: usize, b: usize) -> &'a [u32] {
        let entries = train.learner_entries(j);
        let at = j * (self.len() + 1) + b;
        &entries[self.splits[at] as usize..self.splits[at + 1] as usize]
    }
}

/// Per-thread buffers of the (W, d)-step.
#[derive(Default)]
struct QuestionScratch {
    /// The block's loadings: non-zero entries per question, and concept-major (K × rows).
    sparse: SparseRows,
    w_by_concept: Vec<f64>,
    /// Gradient of the block's loadings, concept-major (K × rows).
    g: Vec<f64>,
    g_d: Vec<f64>,
    lipschitz: Vec<f64>,
    z: Vec<f64>,
    y: Vec<f64>,
    /// Per question of the block, for learners who answered most: logit then residual,
    /// the response, and whether the learner answered it.
    z_all: Vec<f64>,
    y_all: Vec<f64>,
    answered: Vec<bool>,
}

/// Learner knowledge as seen by the (W, d)-step: ‖u_j‖² and the non-zero entries of u_j.
pub(super) struct SparseKnowledge {
    norms: Vec<f64>,
    rows: SparseRows,
}

impl SparseKnowledge {
    pub(super) fn new(u: &[f64], k: usize, n_learners: usize) -> Self {
        let norms = if k == 0 {
            vec![0.0; n_learners]
        } else {
            u.chunks(k).map(super::squared_norm).collect()
        };
        let mut rows = SparseRows::new();
        rows.rebuild(u, n_learners);
        Self { norms, rows }
    }
}

/// Per-entry penalty weights, question-major (row q, K entries).
pub(super) struct PenaltyRows<'a> {
    pub(super) l2: &'a [f64],
    pub(super) l1: &'a [f64],
    pub(super) max_l2: f64,
}

/// The (W, d)-step: `inner_steps` proximal steps per question with
/// L_q = ¼ Σ (‖u_j‖² + 1) + 2 max ℓ2 + 2 λ_d.
///
/// Threads take question blocks; for each inner step a block passes once over the
/// learners in ascending order, accumulating the gradients of all its questions, so
/// u_j is read once per step and every question's sums still run over its learners in
/// ascending order.
#[allow(clippy::too_many_arguments)]
pub(super) fn question_step(
    w: &mut [f64],
    d: &mut [f64],
    u: &[f64],
    k: usize,
    train: &Observations,
    hp: &Hyperparameters,
    penalties: &PenaltyRows<'_>,
    blocks: &QuestionBlocks,
    threads: usize,
) {
    let dense_from = train.n_questions().div_ceil(2);
    let wide = wide_vectors();
    question_step_paths(
        w, d, u, k, train, hp, penalties, blocks, threads, dense_from, wide,
    );
}

/// [`question_step`] with learners of at least `dense_from` observations on the dense
/// path, and 256-bit vectors allowed or not (the tests compare them).
#[allow(clippy::too_many_arguments)]
fn question_step_paths(
    w: &mut [f64],
    d: &mut [f64],
    u: &[f64],
    k: usize,
    train: &Observations,
    hp: &Hyperparameters,
    penalties: &PenaltyRows<'_>,
    blocks: &QuestionBlocks,
    threads: usize,
    dense_from: usize,
    wide: bool,
) {
    let knowledge = SparseKnowledge::new(u, k, train.n_learners());
    let mut items = Vec::with_capacity(blocks.len());
    let (mut w_rest, mut d_rest) = (w, d);
    for b in 0..blocks.len() {
        let rows = blocks.bounds[b + 1] - blocks.bounds[b];
        let (w_block, w_tail) = std::mem::take(&mut w_rest).split_at_mut(rows * k);
        let (d_block, d_tail) = std::mem::take(&mut d_rest).split_at_mut(rows);
        w_rest = w_tail;
        d_rest = d_tail;
        items.push((b, w_block, d_block));
    }
    let scratch = QuestionScratch::default;
    let context = BlockContext {
        u,
        k,
        knowledge: &knowledge,
        train,
        hp,
        penalties,
        blocks,
        dense_from,
    };
    run_queue(items, threads, scratch, |(b, w_block, d_block), s| {
        #[cfg(target_arch = "x86_64")]
        if wide {
            // SAFETY: `wide` is true only when the CPU reports AVX2.
            unsafe { block_steps_avx2(&context, b, w_block, d_block, s) };
            return;
        }
        block_steps(&context, b, w_block, d_block, s);
    });
}

/// What the (W, d)-step reads.
struct BlockContext<'a> {
    u: &'a [f64],
    k: usize,
    knowledge: &'a SparseKnowledge,
    train: &'a Observations,
    hp: &'a Hyperparameters,
    penalties: &'a PenaltyRows<'a>,
    blocks: &'a QuestionBlocks,
    /// Learners with at least this many observations take the dense path.
    dense_from: usize,
}

/// [`block_steps`] compiled with AVX2: the same operations on wider registers, so the
/// same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn block_steps_avx2(
    context: &BlockContext<'_>,
    b: usize,
    w_block: &mut [f64],
    d_block: &mut [f64],
    s: &mut QuestionScratch,
) {
    block_steps(context, b, w_block, d_block, s);
}

#[inline(always)]
fn block_steps(
    context: &BlockContext<'_>,
    b: usize,
    w_block: &mut [f64],
    d_block: &mut [f64],
    s: &mut QuestionScratch,
) {
    let BlockContext {
        u,
        k,
        knowledge,
        train,
        hp,
        penalties,
        blocks,
        dense_from,
    } = *context;
    let first = blocks.bounds[b];
    let rows = d_block.len();
    let learn = hp.learn_loadings && k > 0;
    s.lipschitz.clear();
    for q in first..first + rows {
        let mut sum = 0.0;
        for &e in train.question_entries(q) {
            let (j, _) = unpack(e);
            sum += if hp.learn_loadings {
                knowledge.norms[j] + 1.0
            } else {
                1.0
            };
        }
        s.lipschitz.push(
            0.25 * sum
                + 2.0 * hp.lambda_d_l2
                + if hp.learn_loadings {
                    2.0 * penalties.max_l2
                } else {
                    0.0
                },
        );
    }
    s.g.clear();
    s.g.resize(k * rows, 0.0);
    s.g_d.clear();
    s.g_d.resize(rows, 0.0);
    s.z_all.resize(rows, 0.0);
    s.y_all.clear();
    s.y_all.resize(rows, 0.0);
    s.answered.clear();
    s.answered.resize(rows, false);
    // Learners who answered at least half of all questions take the dense path. The
    // choice depends on the learner only, never on the blocks, and both paths add the
    // same non-zero terms in the same order.
    for step in 0..hp.inner_steps {
        // W changes only with learned loadings; otherwise one copy serves all steps.
        if step == 0 || learn {
            s.sparse.rebuild(w_block, rows);
            s.w_by_concept.clear();
            s.w_by_concept.resize(k * rows, 0.0);
            for (local, row) in w_block.chunks_exact(k.max(1)).enumerate() {
                for (c, &w) in row.iter().enumerate() {
                    s.w_by_concept[c * rows + local] = w;
                }
            }
        }
        s.g.fill(0.0);
        s.g_d.fill(0.0);
        for j in 0..train.n_learners() {
            let entries = blocks.entries(train, j, b);
            if entries.is_empty() {
                continue;
            }
            let uj = &u[j * k..(j + 1) * k];
            let (concepts, values) = knowledge.rows.row(j);
            let dense = train.learner_entries(j).len() >= dense_from;
            if dense {
                dense_learner(s, entries, first, d_block, uj, concepts, values, learn);
                continue;
            }
            s.z.clear();
            s.y.clear();
            for &e in entries {
                let (q, y) = unpack(e);
                let (w_concepts, w_values) = s.sparse.row(q - first);
                let mut z = d_block[q - first];
                for (&c, &w) in w_concepts.iter().zip(w_values) {
                    z += w * uj[c as usize];
                }
                s.z.push(z);
                s.y.push(f64::from(u8::from(y)));
            }
            logistic_residuals(&mut s.z, &s.y);
            for (&e, &r) in entries.iter().zip(&s.z) {
                s.g_d[unpack(e).0 - first] += r;
            }
            if learn {
                for (&e, &r) in entries.iter().zip(&s.z) {
                    let local = unpack(e).0 - first;
                    for (&c, &v) in concepts.iter().zip(values) {
                        s.g[c as usize * rows + local] += r * v;
                    }
                }
            }
        }
        for local in 0..rows {
            let q = first + local;
            if train.question_entries(q).is_empty() {
                continue;
            }
            let lq = s.lipschitz[local];
            if learn {
                let wq = &mut w_block[local * k..(local + 1) * k];
                let l2 = &penalties.l2[q * k..(q + 1) * k];
                let l1 = &penalties.l1[q * k..(q + 1) * k];
                for c in 0..k {
                    let gc = s.g[c * rows + local] + 2.0 * l2[c] * wq[c];
                    wq[c] = (wq[c] - gc / lq - l1[c] / lq).max(0.0);
                }
            }
            let gd = s.g_d[local] + 2.0 * hp.lambda_d_l2 * d_block[local];
            d_block[local] -= gd / lq;
        }
    }
}

/// One learner's share of a (W, d) inner step over every question of the block: the
/// logits concept by concept, the residuals, and the gradients concept by concept, all
/// over contiguous rows. Unanswered questions get a residual of exactly 0, which leaves
/// their sums unchanged.
/// With mostly-zero block loadings (a few concepts per question, as with page hints) the
/// logits run over each question's non-zero loadings instead: the same non-zero terms in
/// the same (ascending concept) order, so the same values.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn dense_learner(
    s: &mut QuestionScratch,
    entries: &[u32],
    first: usize,
    d_block: &[f64],
    uj: &[f64],
    concepts: &[u32],
    values: &[f64],
    learn: bool,
) {
    let rows = d_block.len();
    let QuestionScratch {
        sparse,
        w_by_concept,
        g,
        g_d,
        z_all,
        y_all,
        answered,
        ..
    } = s;
    for &e in entries {
        let (q, y) = unpack(e);
        y_all[q - first] = f64::from(u8::from(y));
        answered[q - first] = true;
    }
    if sparse.values.len() * 2 <= w_by_concept.len() {
        for (local, z) in z_all.iter_mut().enumerate() {
            let (w_concepts, w_values) = sparse.row(local);
            let mut acc = d_block[local];
            for (&c, &w) in w_concepts.iter().zip(w_values) {
                acc += w * uj[c as usize];
            }
            *z = acc;
        }
    } else {
        z_all.copy_from_slice(d_block);
        for (&c, &v) in concepts.iter().zip(values) {
            let column = &w_by_concept[c as usize * rows..(c as usize + 1) * rows];
            for (z, &w) in z_all.iter_mut().zip(column) {
                *z += w * v;
            }
        }
    }
    logistic_residuals(z_all, y_all);
    for ((r, &a), gd) in z_all.iter_mut().zip(answered.iter()).zip(g_d.iter_mut()) {
        *r = if a { *r } else { 0.0 };
        *gd += *r;
    }
    if learn {
        for (&c, &v) in concepts.iter().zip(values) {
            let column = &mut g[c as usize * rows..(c as usize + 1) * rows];
            for (gc, &r) in column.iter_mut().zip(z_all.iter()) {
                *gc += r * v;
            }
        }
    }
    y_all.fill(0.0);
    answered.fill(false);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observations::Observation;

    fn check(x: f64) {
        let expected = x.exp();
        let actual = exp_clamped(x);
        assert!(
            (actual - expected).abs() <= 4.0 * f64::EPSILON * expected,
            "exp({x}) = {actual}, libm {expected}"
        );
    }

    #[test]
    fn exp_matches_libm_to_a_few_ulps() {
        for i in -7080..=7080 {
            check(f64::from(i) * 0.1);
        }
        for x in [
            0.0,
            -0.0,
            1e-300,
            -1e-17,
            0.346_573_590_279_972_6,
            -0.346_573_6,
        ] {
            check(x);
        }
    }

    #[test]
    fn exp_clamps_outside_its_range() {
        assert_eq!(exp_clamped(-1000.0), exp_clamped(-708.0));
        assert_eq!(exp_clamped(1000.0), exp_clamped(708.0));
        let mut z = [-1000.0, 0.0, 1000.0];
        logistic_residuals(&mut z, &[0.0, 1.0, 1.0]);
        assert!(z[0] >= 0.0 && z[0] < 1e-300);
        assert_eq!(z[1], -0.5);
        assert_eq!(z[2], 0.0);
    }

    /// A deterministic problem: `n` learners × `q` questions, K = `k`, W with about half
    /// of its entries non-zero; learner j answers all but every (j % 4 + 2)-th question,
    /// and learners 0 and 1 answer only a few (the sparse path).
    fn problem(n: usize, q: usize, k: usize) -> (Observations, Vec<f64>, Vec<f64>, Vec<f64>) {
        let mut state: u64 = 99;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let w: Vec<f64> = (0..q * k)
            .map(|_| if next() < 0.5 { next() } else { 0.0 })
            .collect();
        let d: Vec<f64> = (0..q).map(|_| next() - 0.5).collect();
        let u: Vec<f64> = (0..n * k).map(|_| next() * 2.0 - 1.0).collect();
        let mut obs = Vec::new();
        for j in 0..n {
            for qi in 0..q {
                let answered = if j < 2 {
                    qi % 5 == j
                } else {
                    qi % (j % 4 + 2) != 0
                };
                if answered {
                    obs.push(Observation {
                        learner: j,
                        question: qi,
                        correct: next() < 0.6,
                    });
                }
            }
        }
        (Observations::new(n, q, &obs).unwrap(), w, d, u)
    }

    fn bits(x: &[f64]) -> Vec<u64> {
        x.iter().map(|v| v.to_bits()).collect()
    }

    fn close(a: &[f64], b: &[f64]) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-12 * x.abs().max(1.0), "{x} vs {y}");
        }
    }

    #[test]
    fn dense_batches_match_the_plain_dense_step_bit_for_bit() {
        let (k, q) = (5, 24);
        let (train, w, d, u0) = problem(11, q, k);
        let hp = Hyperparameters::spec();
        let mut batched = u0.clone();
        knowledge_step(&w, &d, &mut batched, k, &train, &hp, 1);
        let mut sparse = SparseRows::new();
        sparse.rebuild(&w, q);
        let norms: Vec<f64> = w.chunks(k).map(crate::fit::squared_norm).collect();
        let mut w_by_concept = vec![0.0; k * q];
        for (qi, row) in w.chunks(k).enumerate() {
            for (c, &x) in row.iter().enumerate() {
                w_by_concept[c * q + qi] = x;
            }
        }
        let context = LearnerContext {
            k,
            d: &d,
            allow_compressed: true,
            w_by_concept: &w_by_concept,
            dense_from: q.div_ceil(2),
            sparse: &sparse,
            norms: &norms,
            train: &train,
            hp: &hp,
        };
        let mut dense_learners = 0;
        for j in 0..11 {
            let entries = train.learner_entries(j);
            if entries.len() < context.dense_from {
                continue;
            }
            dense_learners += 1;
            let mut uj = u0[j * k..(j + 1) * k].to_vec();
            dense_learner_steps(entries, &mut uj, &context);
            assert_eq!(bits(&uj), bits(&batched[j * k..(j + 1) * k]), "learner {j}");
        }
        // 9 dense learners: two full batches of four and one partial batch.
        assert_eq!(dense_learners, 9);
    }

    #[test]
    fn dense_and_sparse_paths_give_the_same_steps() {
        let (k, q) = (5, 24);
        let (train, w0, d0, u0) = problem(11, q, k);
        let mut hp = Hyperparameters::spec();
        hp.lambda_nh_l1 = 0.5;
        let (mut u_dense, mut u_sparse) = (u0.clone(), u0.clone());
        knowledge_step_paths(&w0, &d0, &mut u_dense, k, &train, &hp, 1, true, true, false);
        knowledge_step_paths(
            &w0,
            &d0,
            &mut u_sparse,
            k,
            &train,
            &hp,
            1,
            false,
            true,
            false,
        );
        close(&u_dense, &u_sparse);
        let l2 = vec![0.05; q * k];
        let l1 = vec![0.5; q * k];
        let penalties = PenaltyRows {
            l2: &l2,
            l1: &l1,
            max_l2: 0.05,
        };
        let blocks = QuestionBlocks::new(&train, 1);
        let (mut w_dense, mut d_dense) = (w0.clone(), d0.clone());
        let (mut w_sparse, mut d_sparse) = (w0.clone(), d0.clone());
        let all = 0;
        question_step_paths(
            &mut w_dense,
            &mut d_dense,
            &u0,
            k,
            &train,
            &hp,
            &penalties,
            &blocks,
            1,
            all,
            false,
        );
        question_step_paths(
            &mut w_sparse,
            &mut d_sparse,
            &u0,
            k,
            &train,
            &hp,
            &penalties,
            &blocks,
            1,
            usize::MAX,
            false,
        );
        close(&w_dense, &w_sparse);
        close(&d_dense, &d_sparse);
        assert_ne!(bits(&w_dense), bits(&w0), "the step moved W");
    }

    #[test]
    fn compressed_local_loadings_give_the_same_bits_as_dense_ones() {
        // Page-like W: question q loads on concept q % (k − 1) and on the last (general)
        // concept, so each learner's local loadings are mostly zeros.
        let (k, q) = (6, 30);
        let (train, _, d0, u0) = problem(11, q, k);
        let w0: Vec<f64> = (0..q * k)
            .map(|i| {
                let (qi, c) = (i / k, i % k);
                if c == qi % (k - 1) || c == k - 1 {
                    0.5 + 0.01 * (i % 7) as f64
                } else {
                    0.0
                }
            })
            .collect();
        let hp = Hyperparameters::spec();
        let run = |compressed: bool, wide: bool| {
            let mut u = u0.clone();
            knowledge_step_paths(&w0, &d0, &mut u, k, &train, &hp, 1, false, compressed, wide);
            bits(&u)
        };
        let plain = run(false, false);
        assert_ne!(plain, bits(&u0), "the step moved U");
        assert_eq!(run(true, false), plain);
        assert_eq!(run(true, wide_vectors()), plain);
        // The (W, d)-step's dense path takes the same page-like W through its compressed
        // logits: every learner on it gives the bits of every learner on the sparse path.
        let l2 = vec![0.05; q * k];
        let l1 = vec![1.0; q * k];
        let penalties = PenaltyRows {
            l2: &l2,
            l1: &l1,
            max_l2: 0.05,
        };
        let blocks = QuestionBlocks::new(&train, 2);
        let step = |dense_from: usize, wide: bool| {
            let (mut w, mut d) = (w0.clone(), d0.clone());
            question_step_paths(
                &mut w, &mut d, &u0, k, &train, &hp, &penalties, &blocks, 1, dense_from, wide,
            );
            (bits(&w), bits(&d))
        };
        let sparse_path = step(usize::MAX, false);
        assert_ne!(sparse_path.0, bits(&w0), "the step moved W");
        assert_eq!(step(0, false), sparse_path);
        assert_eq!(step(0, wide_vectors()), sparse_path);
    }

    #[test]
    fn wide_vectors_give_the_same_bits_as_narrow_ones() {
        let (k, q) = (5, 24);
        let (train, w0, d0, u0) = problem(11, q, k);
        let hp = Hyperparameters::spec();
        let l2 = vec![0.05; q * k];
        let l1 = vec![1.0; q * k];
        let penalties = PenaltyRows {
            l2: &l2,
            l1: &l1,
            max_l2: 0.05,
        };
        let blocks = QuestionBlocks::new(&train, 2);
        let run = |wide: bool| {
            let (mut w, mut d, mut u) = (w0.clone(), d0.clone(), u0.clone());
            knowledge_step_paths(&w, &d, &mut u, k, &train, &hp, 1, true, true, wide);
            let dense_from = q.div_ceil(2);
            question_step_paths(
                &mut w, &mut d, &u, k, &train, &hp, &penalties, &blocks, 2, dense_from, wide,
            );
            (bits(&w), bits(&d), bits(&u))
        };
        // Without AVX2 both runs take the narrow path and the check is trivially true.
        assert_eq!(run(wide_vectors()), run(false));
    }

    #[test]
    fn question_blocks_and_threads_do_not_change_the_bits() {
        let (k, q) = (5, 24);
        let (train, w0, d0, u0) = problem(11, q, k);
        let hp = Hyperparameters::spec();
        let l2 = vec![0.05; q * k];
        let l1 = vec![10.0; q * k];
        let penalties = PenaltyRows {
            l2: &l2,
            l1: &l1,
            max_l2: 0.05,
        };
        let run = |blocks: usize, threads: usize| {
            let (mut w, mut d, mut u) = (w0.clone(), d0.clone(), u0.clone());
            let blocks = QuestionBlocks::new(&train, blocks);
            knowledge_step(&w, &d, &mut u, k, &train, &hp, threads);
            question_step(
                &mut w, &mut d, &u, k, &train, &hp, &penalties, &blocks, threads,
            );
            (bits(&w), bits(&d), bits(&u))
        };
        let one = run(1, 1);
        for (blocks, threads) in [(2, 2), (5, 3), (24, 7)] {
            assert_eq!(
                run(blocks, threads),
                one,
                "{blocks} blocks, {threads} threads"
            );
        }
    }

    #[test]
    fn queue_runs_every_item_once_for_any_thread_count() {
        for threads in [1, 2, 5] {
            let mut out = vec![0usize; 37];
            let items: Vec<(usize, &mut [usize])> = out.chunks_mut(4).enumerate().collect();
            run_queue(
                items,
                threads,
                || (),
                |(i, chunk), _| {
                    for x in chunk.iter_mut() {
                        *x += i + 1;
                    }
                },
            );
            let expected: Vec<usize> = (0..37).map(|x| x / 4 + 1).collect();
            assert_eq!(out, expected, "{threads} threads");
        }
    }

    #[test]
    fn question_blocks_split_entries_at_block_bounds() {
        let obs: Vec<Observation> = (0..3)
            .flat_map(|j| {
                (0..6)
                    .filter(move |q| (j + q) % 3 != 0)
                    .map(move |q| Observation {
                        learner: j,
                        question: q,
                        correct: q % 2 == 0,
                    })
            })
            .collect();
        let train = Observations::new(3, 6, &obs).unwrap();
        for target in 1..=8 {
            let blocks = QuestionBlocks::new(&train, target);
            assert_eq!(blocks.len(), target.min(6));
            for j in 0..3 {
                let mut joined = Vec::new();
                for b in 0..blocks.len() {
                    let part = blocks.entries(&train, j, b);
                    assert!(part.iter().all(|&e| {
                        let q = unpack(e).0;
                        blocks.bounds[b] <= q && q < blocks.bounds[b + 1]
                    }));
                    joined.extend_from_slice(part);
                }
                assert_eq!(joined, train.learner_entries(j));
            }
        }
    }
}
