"""The x / y baseline's grokking step here and in the template, from the committed files.

    python bench/baseline_comparison.py [--study=studies/baseline_seeds]

Reads the project's seeds (STUDY/runs.json, made by `python experiment.py
--out_dir=studies/baseline_seeds --preset=baseline --tasks=x_div_y --seeds=10`) and the template's
own seeded runs (STUDY/template_seeds.json, made by bench/template_seeds.py), adds the template's
published baselines, and prints mean ± standard error (sample std, ddof=1, / sqrt(n)) for each
and the difference in combined standard errors; then how much of a difference the template's own
evaluation (validation accuracy estimated from 8 random batches) would make on the study's curves.

The published baselines: the run_0/final_info.json of the AI-Scientist's grokking example papers
gives the three seeds 3910, 4220, 4470; a second publication gives only a mean of 4353 over three
seeds with the template's "stderr" of 164, which the template computes as np.std(v) / len(v)
(ddof=0, divided by n, not sqrt(n)). From those two numbers the three seeds' sum of squared
deviations is n * (164 * n)^2, enough to pool all six exactly (mean and sample variance).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import experiment as ex  # noqa: E402  (the grokking threshold)

PUBLISHED_SEEDS = [3910, 4220, 4470]
PUBLISHED_SUMMARY = {"n": 3, "mean": 4353.0, "template_stderr": 164.0}
TEMPLATE_EVAL_EXAMPLES = 8 * 512  # the template estimates validation accuracy from 8 batches of 512


def summary(values: list[float]) -> tuple[int, float, float]:
    """n, mean and standard error (ddof=1)."""
    n = len(values)
    mean = sum(values) / n
    return n, mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def pooled(values: list[float], n2: int, mean2: float, squares2: float) -> tuple[int, float, float]:
    """n, mean and standard error of `values` together with a group known by n, mean and sum of
    squared deviations."""
    n1 = len(values)
    mean1 = sum(values) / n1
    n = n1 + n2
    mean = (n1 * mean1 + n2 * mean2) / n
    squares = (sum((v - mean1) ** 2 for v in values) + squares2
               + n1 * (mean1 - mean) ** 2 + n2 * (mean2 - mean) ** 2)
    return n, mean, math.sqrt(squares / (n - 1) / n)


def estimator_shift(study: str, draws: int = 1000) -> tuple[float, float]:
    """How much earlier the template's way of evaluating would report grokking on this study's own
    curves: at each evaluation it counts correct answers among 4096 validation equations drawn
    with replacement (a binomial draw from the full-split accuracy), so its first estimate above
    the threshold can come before the full split's. Mean and largest shift over the runs, in steps."""
    with open(os.path.join(study, "runs.json")) as f:
        grokking = [r["step_val_acc_99"] for r in json.load(f)]  # the full split's, in curve-row order
    curves = np.load(os.path.join(study, "curves.npz"))
    steps, accuracy = curves["step"], np.clip(curves["val_acc"], 0.0, 1.0)  # (evals,), (runs, evals)
    rng = np.random.default_rng(0)
    shifts = []
    for exact, run in zip(grokking, accuracy):
        estimate = rng.binomial(TEMPLATE_EVAL_EXAMPLES, run, size=(draws, len(run))) / TEMPLATE_EVAL_EXAMPLES
        above = estimate > ex.THRESHOLD
        first = np.where(above.any(1), steps[np.argmax(above, 1)], steps[-1])
        shifts.append(float(exact - first.mean()))
    return float(np.mean(shifts)), float(np.max(shifts))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", default="studies/baseline_seeds")
    args = parser.parse_args()
    with open(os.path.join(args.study, "runs.json")) as f:
        project = {r["seed"]: r["step_val_acc_99"] for r in json.load(f) if r["task"] == "x_div_y"}
    with open(os.path.join(args.study, "template_seeds.json")) as f:
        template = {r["seed"]: r["step_val_acc_99"] for r in json.load(f)["runs"]}

    n2, m2 = PUBLISHED_SUMMARY["n"], PUBLISHED_SUMMARY["mean"]
    squares2 = n2 * (PUBLISHED_SUMMARY["template_stderr"] * n2) ** 2
    rows = {
        "project (this study)": summary(list(project.values())),
        "template, run here (seeded)": summary(list(template.values())),
        "template, published (six seeds)": pooled(PUBLISHED_SEEDS, n2, m2, squares2),
        "template, pooled (published + run here)": pooled(PUBLISHED_SEEDS + list(template.values()), n2, m2, squares2),
    }
    print("per seed, project:  " + ", ".join(f"{s}: {v}" for s, v in sorted(project.items())))
    print("per seed, template: " + ", ".join(f"{s}: {v}" for s, v in sorted(template.items())))
    _, mean, stderr = rows["project (this study)"]
    for name, (n, m, se) in rows.items():
        gap = "" if name.startswith("project") else f"   difference {(mean - m) / math.hypot(stderr, se):+.2f} combined s.e."
        print(f"{name:<42} n = {n:2d}   {m:7.1f} ± {se:5.1f}{gap}")
    mean_shift, largest = estimator_shift(args.study)
    print(f"the template's evaluation (8 random batches) on this study's curves would report grokking "
          f"{mean_shift:.0f} steps earlier on average (at most {largest:.0f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
