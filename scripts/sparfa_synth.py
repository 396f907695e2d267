#!/usr/bin/env python3
"""Synthetic response matrices from the simulator's ground-truth SPARFA model, for `biglearn sparfa eval`.

The generative model is the one `services/simulator` draws its students' answers from
(`content.rs` and `course.rs`), with the same distributions:

* concepts are pages; every page has ten questions loading on it with W ~ U(0.6, 1.6),
  and a quarter of the questions of every page but the first also load on a random earlier
  page with W ~ U(0.2, 0.7);
* easiness d ~ N(0.4, 0.9);
* a learner's knowledge is u_c = base + spread_c, base ~ N(0, 0.8), spread_c ~ N(0, 0.5);
* P(correct) = sigmoid(sum_c W_cq u_c + d_q).

(The simulator also lets students learn during a semester; a response matrix here is a
snapshot, so knowledge is fixed.)

Writes `responses.csv` (student_id,item_id,correct) and `tags.csv` (item_id,tag: the
question's own page). With --wrong-hints F, a fraction F of the questions is tagged with
a different, random page instead (hints partly wrong). --observed F keeps each entry
with probability F (missing at random). Deterministic for a given --seed.

Usage: python3 scripts/sparfa_synth.py OUT_DIR --learners N --pages K
           [--questions-per-page 10] [--observed 1.0] [--wrong-hints 0.0] [--seed 1]
"""

import argparse
import os

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--learners", type=int, required=True)
    ap.add_argument("--pages", type=int, required=True)
    ap.add_argument("--questions-per-page", type=int, default=10)
    ap.add_argument("--observed", type=float, default=1.0)
    ap.add_argument("--wrong-hints", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()

    rng = np.random.default_rng(a.seed)
    k, per = a.pages, a.questions_per_page
    q = k * per
    page = np.repeat(np.arange(k), per)
    w = np.zeros((k, q))
    w[page, np.arange(q)] = rng.uniform(0.6, 1.6, q)
    for i in range(q):
        c = page[i]
        if c > 0 and rng.random() < 0.25:
            w[rng.integers(0, c), i] = rng.uniform(0.2, 0.7)
    d = rng.normal(0.4, 0.9, q)
    base = rng.normal(0.0, 0.8, (a.learners, 1))
    u = base + rng.normal(0.0, 0.5, (a.learners, k))
    p = 1.0 / (1.0 + np.exp(-(u @ w + d)))
    y = rng.random(p.shape) < p
    observed = rng.random(p.shape) < a.observed

    tags = page.copy()
    if k > 1 and a.wrong_hints > 0:
        wrong = rng.random(q) < a.wrong_hints
        shift = rng.integers(1, k, q)
        tags[wrong] = (page[wrong] + shift[wrong]) % k

    os.makedirs(a.out_dir, exist_ok=True)
    width = len(str(a.learners))
    with open(os.path.join(a.out_dir, "responses.csv"), "w") as f:
        f.write("student_id,item_id,correct\n")
        for j in range(a.learners):
            for i in np.flatnonzero(observed[j]):
                f.write(f"s{j:0{width}d},q{i:04d},{int(y[j, i])}\n")
    with open(os.path.join(a.out_dir, "tags.csv"), "w") as f:
        f.write("item_id,tag\n")
        for i in range(q):
            f.write(f"q{i:04d},page{tags[i]:03d}\n")


if __name__ == "__main__":
    main()
