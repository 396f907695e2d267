#!/usr/bin/env python3
"""Issue 20's table: `biglearn sparfa eval` against mirt 1.2.0 (held-out AUC) and a numpy SPARFA fit (wall time), per dataset shape.

For each dataset (SPISA from the repository's test data, and synthetic matrices from the
simulator's ground truth written by scripts/sparfa_synth.py), in one run:

1. `biglearn sparfa eval --responses R --tags T --seed S` (the default model), timed from
   process start to exit by this driver, once as it is (up to 2 threads) and once under
   `taskset -c 0` (one thread), the faster counted; --repeat runs, the median is reported;
2. scripts/sparfa_numpy_ref.py on the same split (its fit alone), with
   OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset for that command only, once with
   OpenBLAS's default threads and once with OPENBLAS_NUM_THREADS=1, the faster counted;
   --repeat runs, the median is reported;
3. scripts/sparfa_mirt.py (Rasch, 2PL, tag-structured multidimensional; the best AUC).

Prints a Markdown table and writes every raw JSON line to OUT/results.jsonl.
Requires: pip install mirt==1.2.0 (numpy, scipy come with it).

Usage: python3 scripts/sparfa_bench.py --biglearn target/release/biglearn --out /tmp/sparfa-bench
           [--seed 42] [--repeat 3] [--only spisa,few-items,...] [--skip-mirt]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# name: (description, sparfa_synth.py arguments)
SHAPES = {
    "few-items": ("12 items × 5,000 learners, 2 pages, hints right",
                  ["--learners", "5000", "--pages", "2", "--questions-per-page", "6", "--seed", "1"]),
    "many-items": ("400 items × 150 learners, 60 % observed, 40 pages, hints right",
                   ["--learners", "150", "--pages", "40", "--questions-per-page", "10", "--observed", "0.6", "--seed", "2"]),
    "q160-n5000": ("160 items × 5,000 learners, 16 pages, hints right",
                   ["--learners", "5000", "--pages", "16", "--questions-per-page", "10", "--seed", "3"]),
    "wrong-hints": ("80 items × 2,000 learners, 8 pages, 30 % of hints wrong",
                    ["--learners", "2000", "--pages", "8", "--questions-per-page", "10", "--wrong-hints", "0.3", "--seed", "4"]),
    "sparse-wrong": ("160 items × 3,000 learners, 30 % observed, 16 pages, 30 % of hints wrong",
                     ["--learners", "3000", "--pages", "16", "--questions-per-page", "10", "--observed", "0.3", "--wrong-hints", "0.3", "--seed", "5"]),
}


def json_lines(text):
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--biglearn", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", default="42")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only")
    ap.add_argument("--skip-mirt", action="store_true")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    datasets = {"spisa": ("SPISA: 45 items × 1,075 learners, 5 topic tags",
                          os.path.join(REPO, "services/sparfa/tests/data/spisa"))}
    for name, (desc, args) in SHAPES.items():
        datasets[name] = (desc, os.path.join(a.out, name))
    only = set(a.only.split(",")) if a.only else set(datasets)
    raw = open(os.path.join(a.out, "results.jsonl"), "a")
    numpy_env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    rows = []
    for name, (desc, path) in datasets.items():
        if name not in only:
            continue
        if name in SHAPES and not os.path.exists(os.path.join(path, "responses.csv")):
            subprocess.run([sys.executable, os.path.join(HERE, "sparfa_synth.py"), path] + SHAPES[name][1], check=True)
        files = ["--responses", os.path.join(path, "responses.csv"), "--tags", os.path.join(path, "tags.csv"), "--seed", a.seed]
        eval_seconds, numpy_seconds, report, numpy_report = [], [], None, None
        eval_variants = []
        for _ in range(a.repeat):
            # Both thread settings, as for numpy below: eval's default (up to 2 threads)
            # and one thread (`taskset -c 0`: the process may use one CPU, so
            # available_parallelism is 1); on a busy 2-core machine one is often faster.
            # The results are bit-identical; the faster run is counted.
            fastest_eval = None
            for prefix in ([], ["taskset", "-c", "0"]):
                started = time.perf_counter()
                done = subprocess.run(prefix + [a.biglearn, "sparfa", "eval"] + files,
                                      capture_output=True, text=True, check=True)
                seconds = time.perf_counter() - started
                if fastest_eval is None or seconds < fastest_eval[0]:
                    fastest_eval = (seconds, "1 thread" if prefix else "default")
                report = json_lines(done.stdout)[0]
            eval_seconds.append(fastest_eval[0])
            eval_variants.append(fastest_eval[1])
            # Both BLAS thread settings (OpenBLAS's default and one thread: on a busy 2-core
            # machine one thread is often faster); the faster one is the reference.
            fastest = None
            for blas_threads in (None, "1"):
                env = dict(numpy_env)
                if blas_threads:
                    env["OPENBLAS_NUM_THREADS"] = blas_threads
                done = subprocess.run([sys.executable, os.path.join(HERE, "sparfa_numpy_ref.py")] + files,
                                      capture_output=True, text=True, check=True, env=env)
                r = json_lines(done.stdout)[0]
                if fastest is None or r["fit_seconds"] < fastest["fit_seconds"]:
                    fastest = r
            numpy_report = fastest
            numpy_seconds.append(fastest["fit_seconds"])
        mirt = []
        if not a.skip_mirt:
            done = subprocess.run([sys.executable, os.path.join(HERE, "sparfa_mirt.py")] + files,
                                  capture_output=True, text=True)
            mirt = [m for m in json_lines(done.stdout) if "auc" in m]
        best = max(mirt, key=lambda m: m["auc"]) if mirt else None
        record = {"dataset": name, "eval": report, "eval_seconds": eval_seconds,
                  "eval_variants": eval_variants, "numpy": numpy_report,
                  "numpy_seconds": numpy_seconds, "mirt": mirt, "load": os.getloadavg()}
        raw.write(json.dumps(record) + "\n")
        raw.flush()
        e, n = statistics.median(eval_seconds), statistics.median(numpy_seconds)
        rows.append((name, desc, report, best, e, n))
        print(f"# {name}: eval {e:.3f}s numpy {n:.3f}s auc {report['auc']:.4f} "
              f"mirt {best['model'] + ' ' + format(best['auc'], '.4f') if best else '-'} "
              f"({report.get('candidate')})", file=sys.stderr, flush=True)
    print("| dataset | shape | mirt best (model) | biglearn AUC (candidate) | AUC − mirt | eval s | numpy s | numpy / eval |")
    print("|---|---|---|---|---|---|---|---|")
    for name, desc, report, best, e, n in rows:
        mirt_cell = f"{best['auc']:.4f} ({best['model']})" if best else "–"
        delta = f"{report['auc'] - best['auc']:+.4f}" if best else "–"
        print(f"| {name} | {desc} | {mirt_cell} | {report['auc']:.4f} ({report.get('candidate')}) | {delta} "
              f"| {e:.3f} | {n:.3f} | {n / e:.1f} |")


if __name__ == "__main__":
    main()
