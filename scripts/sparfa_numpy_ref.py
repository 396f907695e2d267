#!/usr/bin/env python3
"""A plain numpy reference fit of a hinted SPARFA model: the speed yardstick of `biglearn sparfa eval`.

The model and algorithm of docs/design/sparfa.md §4, §6 and §7 with the fixed §4 constants
(λ_H 0.05, λ_1 10, λ_d 0.05, γ_U 1), hints from the tags (K = distinct tags), on the
training part of the §12 split: full-batch block proximal gradient, 5 inner steps per
block with per-block Lipschitz steps, the validation part for early stopping (patience
20, improvement > 1e-6, at most 500 outer iterations), the best iterate kept. Written the
way numpy is fastest at these sizes: the responses as a dense N × Q matrix with a training
mask (unobserved entries get residual 0), so each step is two BLAS products
(U W and R Wᵀ or Uᵀ R) and elementwise work; no Python loop over learners or questions.

Prints one JSON line: {"fit_seconds" (the fit alone: no CSV reading, no split),
"outer_iterations", "best_iteration", "validation_log_likelihood", "auc", "n_train", "K",
"numpy", "blas"}.

Usage: python3 scripts/sparfa_numpy_ref.py --responses R.csv --tags T.csv [--seed 42]
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sparfa_common import auc, read_responses, read_tags, split  # noqa: E402

LAMBDA_H, LAMBDA_1, LAMBDA_D, GAMMA_U = 0.05, 10.0, 0.05, 1.0
INNER, PATIENCE, MAX_OUTER = 5, 20, 500


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def fit(j, q, y, vj, vq, vy, hints, n_learners):
    """Dense masked form: Y and the training mask M are N × Q, so every step is two BLAS
    products and elementwise work (the fastest plain-numpy form for these sizes)."""
    k, n_q = hints.shape
    w = hints.astype(float)
    mask = np.zeros((n_learners, n_q))
    mask[j, q] = 1.0
    ymat = np.zeros((n_learners, n_q))
    ymat[j, q] = y
    n_obs = mask.sum(0)
    s_obs = ymat.sum(0)
    p0 = np.clip((s_obs + 0.5) / (n_obs + 1.0), 0.02, 0.98)
    d = np.log(p0 / (1 - p0))
    u = np.zeros((n_learners, k))
    seen_q = n_obs > 0
    l1 = LAMBDA_1 * (~hints)
    best, best_it, since, it = -np.inf, 0, 0, 0
    kept = (w.copy(), d.copy(), u.copy())
    for it in range(1, MAX_OUTER + 1):
        # U-step: learners are independent blocks; L_j = ¼ Σ_q∈Ω_j ‖w_q‖² + γ_U.
        lip_u = 0.25 * (mask @ (w * w).sum(0)) + GAMMA_U
        for _ in range(INNER):
            r = (sigmoid(u @ w + d) - ymat) * mask
            u -= (r @ w.T + GAMMA_U * u) / lip_u[:, None]
        # (W, d)-step: questions are independent blocks; L_q = ¼ Σ_j∈Ω_q (‖u_j‖² + 1) + 2λ_H + 2λ_d.
        lip_q = 0.25 * (((u * u).sum(1) + 1.0) @ mask) + 2 * LAMBDA_H + 2 * LAMBDA_D
        for _ in range(INNER):
            r = (sigmoid(u @ w + d) - ymat) * mask
            gw = u.T @ r + 2 * LAMBDA_H * hints * w
            gd = r.sum(0) + 2 * LAMBDA_D * d
            w = np.where(seen_q, np.maximum(w - gw / lip_q - l1 / lip_q, 0.0), w)
            d = np.where(seen_q, d - gd / lip_q, d)
        pv = np.clip(sigmoid(d[vq] + (w[:, vq] * u[vj].T).sum(0)), 1e-15, 1 - 1e-15)
        ll = float(np.mean(np.where(vy > 0, np.log(pv), np.log(1 - pv))))
        if ll > best + 1e-6:
            best, best_it, since = ll, it, 0
            kept = (w.copy(), d.copy(), u.copy())
        else:
            since += 1
            if since >= PATIENCE:
                break
    return kept, it, best_it, best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--responses", required=True)
    ap.add_argument("--tags", required=True)
    ap.add_argument("--seed", default="42")
    a = ap.parse_args()
    rows = read_responses(a.responses)
    test, validation, train = split(rows, a.seed)
    students = sorted({r[0] for r in rows})
    tags = read_tags(a.tags)
    items = sorted({r[1] for r in rows} | {i for i, _ in tags})
    tag_names = sorted({t for _, t in tags})
    s_index = {s: i for i, s in enumerate(students)}
    i_index = {s: i for i, s in enumerate(items)}
    t_index = {s: i for i, s in enumerate(tag_names)}
    hints = np.zeros((len(tag_names), len(items)), dtype=bool)
    for i, t in tags:
        hints[t_index[t], i_index[i]] = True

    def arrays(part):
        return (np.array([s_index[r[0]] for r in part], dtype=np.int64),
                np.array([i_index[r[1]] for r in part], dtype=np.int64),
                np.array([float(r[2]) for r in part]))

    j, q, y = arrays(train)
    vj, vq, vy = arrays(validation)
    tj, tq, ty = arrays(test)
    started = time.perf_counter()
    (w, d, u), outer, best_it, best = fit(j, q, y, vj, vq, vy, hints, len(students))
    seconds = time.perf_counter() - started
    p = sigmoid(d[tq] + (w[:, tq] * u[tj].T).sum(0))
    try:
        from threadpoolctl import threadpool_info
        blas = [(x.get("internal_api"), x.get("architecture"), x.get("num_threads")) for x in threadpool_info()]
    except ImportError:
        blas = None
    print(json.dumps({
        "fit_seconds": round(seconds, 4), "outer_iterations": outer, "best_iteration": best_it,
        "validation_log_likelihood": best, "auc": auc(p, ty > 0), "n_train": len(train),
        "K": len(tag_names), "numpy": np.__version__, "blas": blas,
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
    }))


if __name__ == "__main__":
    main()
