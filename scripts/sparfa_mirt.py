#!/usr/bin/env python3
"""The IRT reference of `biglearn sparfa eval`: mirt 1.2.0's Rasch, 2PL and tag-structured multidimensional models on the same split.

Fits each model by marginal maximum likelihood (EM) on the non-test part of the docs/design/sparfa.md §12 split
(training + validation: mirt needs no validation set), scores every learner by EAP from
their fitted responses (learners without any get the prior mean), and scores the test
rows: P(correct) = the model's probability at the learner's EAP. Prints one JSON line
per model: {"model", "auc", "accuracy", "log_loss", "fit_seconds", "n_fit", "n_test"}.

The multidimensional model has one factor per tag (an item with several tags loads on
each, an untagged item on all), correlated factors, fitted only when there are at most
--max-factors tags (EM integrates over a grid whose size grows exponentially).

Requires: pip install mirt==1.2.0 (brings numpy and scipy).
Usage: python3 scripts/sparfa_mirt.py --responses R.csv [--tags T.csv] [--seed 42]
           [--models rasch,2pl,multidim] [--fit-on train|train+validation]
"""

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sparfa_common import accuracy, auc, log_loss, read_responses, read_tags, split  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--responses", required=True)
    ap.add_argument("--tags")
    ap.add_argument("--seed", default="42")
    ap.add_argument("--models", default="rasch,2pl,multidim")
    ap.add_argument("--fit-on", default="train+validation", choices=["train", "train+validation"])
    ap.add_argument("--max-factors", type=int, default=5)
    a = ap.parse_args()

    import mirt  # noqa: E402  (imported late: its import time is not the fit's)

    warnings.filterwarnings("ignore")
    rows = read_responses(a.responses)
    test, validation, train = split(rows, a.seed)
    fit_rows = train + validation if a.fit_on == "train+validation" else train
    students = sorted({r[0] for r in rows})
    items = sorted({r[1] for r in rows})
    s_index = {s: i for i, s in enumerate(students)}
    i_index = {s: i for i, s in enumerate(items)}
    data = np.full((len(students), len(items)), -1, dtype=np.int64)
    for s, i, y in fit_rows:
        data[s_index[s], i_index[i]] = int(y)
    # mirt needs every item observed in the fitted data; such items cannot be scored anyway.
    tj = np.array([s_index[r[0]] for r in test])
    ti = np.array([i_index[r[1]] for r in test])
    ty = np.array([r[2] for r in test])

    tags = read_tags(a.tags) if a.tags else []
    tag_names = sorted({t for _, t in tags})
    for name in a.models.split(","):
        name = name.strip()
        started = time.perf_counter()
        kwargs = {"compute_standard_errors": False}
        if name == "rasch":
            kwargs["model"] = "1PL"
        elif name == "2pl":
            kwargs["model"] = "2PL"
        elif name == "multidim":
            if not tag_names:
                print(json.dumps({"model": name, "skipped": "no tags"}))
                continue
            if len(tag_names) > a.max_factors:
                print(json.dumps({"model": name, "skipped": f"{len(tag_names)} tags > --max-factors {a.max_factors}"}))
                continue
            by_tag = {t: set() for t in tag_names}
            tagged = set()
            for item, t in tags:
                if item in i_index:
                    by_tag[t].add(i_index[item] + 1)
                    tagged.add(i_index[item] + 1)
            untagged = {i + 1 for i in range(len(items))} - tagged
            lines = []
            for f, t in enumerate(tag_names):
                members = sorted(by_tag[t] | untagged)
                if members:
                    lines.append(f"F{f + 1} = " + ", ".join(map(str, members)))
            n_f = len(lines)
            if n_f > 1:
                lines.append("COV = " + "*".join(f"F{f + 1}" for f in range(n_f)))
            kwargs["model"] = "2PL"
            kwargs["n_factors"] = n_f
            kwargs["spec"] = mirt.mirt_model("\n".join(lines))
            # A tensor grid of q^K points: few points per factor beyond two factors.
            kwargs["n_quadpts"] = {1: 21, 2: 15, 3: 9}.get(n_f, 5)
        else:
            raise SystemExit(f"unknown model {name}")
        try:
            result = mirt.fit_mirt(data, **kwargs)
            scores = mirt.fscores(result, data, method="EAP", n_quadpts=kwargs.get("n_quadpts"))
            theta = np.asarray(scores.theta).reshape(len(students), -1)
            p = result.model.probability_pairs(theta[tj], ti)
        except Exception as e:  # a model mirt cannot fit is reported, not hidden
            print(json.dumps({"model": name, "error": f"{type(e).__name__}: {e}"}))
            continue
        seconds = time.perf_counter() - started
        print(json.dumps({
            "model": name, "auc": auc(p, ty), "accuracy": accuracy(p, ty),
            "log_loss": log_loss(p, ty), "fit_seconds": round(seconds, 3),
            "n_fit": len(fit_rows), "n_test": len(test),
            "iterations": getattr(result, "n_iterations", None),
        }), flush=True)


if __name__ == "__main__":
    main()
