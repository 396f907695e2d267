"""Shared helpers of the SPARFA reference scripts: the `biglearn sparfa eval` split (docs/design/sparfa.md §12) and the scores."""

import csv
import hashlib

import numpy as np
from scipy.stats import rankdata


def read_responses(path):
    """Rows (student, item, correct) of a `student_id,item_id,correct` CSV; the first row of a pair wins."""
    seen, rows = set(), []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            key = (r["student_id"], r["item_id"])
            if key in seen:
                continue
            seen.add(key)
            rows.append((key[0], key[1], r["correct"].strip().lower() in ("1", "true")))
    return rows


def read_tags(path):
    """(item, tag) pairs of an `item_id,tag` CSV."""
    with open(path, newline="") as f:
        return [(r["item_id"], r["tag"]) for r in csv.DictReader(f)]


def split(rows, seed):
    """(test, validation, train): rows ordered by SHA-256(seed|student|item), then 20 % / 10 % / 70 %."""
    keyed = sorted(
        rows,
        key=lambda r: (hashlib.sha256(f"{seed}|{r[0]}|{r[1]}".encode()).digest(), r[0], r[1]),
    )
    n = len(keyed)
    n_test, n_val = n // 5, n // 10
    return keyed[:n_test], keyed[n_test:n_test + n_val], keyed[n_test + n_val:]


def auc(p, y):
    """Rank-based (Mann-Whitney) AUC, ties given their average rank."""
    p = np.asarray(p, dtype=float)
    y = np.asarray(y, dtype=bool)
    ranks = rankdata(p)  # average ranks for ties
    n_pos = y.sum()
    n_neg = len(y) - n_pos
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_loss(p, y):
    p = np.clip(np.asarray(p, dtype=float), 1e-15, 1 - 1e-15)
    y = np.asarray(y, dtype=bool)
    return float(-np.mean(np.where(y, np.log(p), np.log(1 - p))))


def accuracy(p, y):
    return float(np.mean((np.asarray(p) >= 0.5) == np.asarray(y, dtype=bool)))
