"""Time plot.py on full-size studies (a benchmark, not a test).

    python bench/plot_speed.py --source=run_0 --runs=10 --workdir=/tmp/plot_bench

Builds `--runs` folders shaped like the default study (27 architectures x 4 tasks x 5 seeds =
540 runs of 7500 steps, evaluated every 10 steps) by repeating the real curves of `--source`
(each task's seeds cycled, each architecture's step axis stretched by a factor tied to its size so
that the figures are not all alike), then times `python plot.py` on them. The folders are
synthetic: they exist to measure plot.py, never to be read as results.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import experiment as ex  # noqa: E402
from runner.folder import RunFolder, study_identity  # noqa: E402
from runner.plan import Study  # noqa: E402
from runner.results import parameter_count, study_outputs  # noqa: E402
from runner.training import GroupResult  # noqa: E402


def synthetic_study(source: str, out: str, seed: int) -> None:
    """A default-study folder whose curves repeat the real ones of `source`, written by
    the run folder itself (so the files are exactly what plot.py reads)."""
    with np.load(os.path.join(source, "curves.npz")) as npz:
        curves = {k: npz[k] for k in npz.files}
    with open(os.path.join(source, "runs.json")) as f:
        source_runs = json.load(f)
    science, c = ex.science(), ex.Config()
    study = Study.build(science, c)
    steps = np.array(ex.evaluation_steps(c))
    rng = np.random.default_rng(seed)
    results = []
    for group in study.groups():
        arch, members = group.arch, group.members
        size = parameter_count(science, arch, study.table(members[0]), c)
        # bigger models get a slower clock: steps stretched by 0.6 .. 1.4 over the grid's sizes
        stretch = 0.6 + 0.8 * (np.log(size) - np.log(6e4)) / np.log(60) + rng.normal(0, 0.05)
        index = np.clip((np.arange(len(steps)) * stretch).astype(int), 0, len(curves["step"]) - 1)
        rows = [[i for i, r in enumerate(source_runs) if r["task"] == m.task][m.seed % 3] for m in members]
        stacked = {name: np.stack([curves[name][row][index] for row in rows]) for name in curves if name != "step"}
        results.append(GroupResult(group, steps, stacked, wall_time_s=0.0, eval_time_s=0.0))
    os.makedirs(out, exist_ok=True)
    RunFolder(out, study_identity(study)).write_outputs(study_outputs(study, results, None, {}, {"synthetic": True}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default=os.path.join(ROOT, "run_0"), help="a real run folder")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--workdir", default="/tmp/plot_bench")
    args = parser.parse_args()
    start = time.perf_counter()
    for i in range(args.runs):
        synthetic_study(args.source, os.path.join(args.workdir, f"run_{i}"), seed=i)
    print(f"built {args.runs} synthetic studies of 540 runs in {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    result = subprocess.run([sys.executable, os.path.join(ROOT, "plot.py")], cwd=args.workdir,
                            capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    print(result.stdout.splitlines()[-1] if result.stdout else result.stderr)
    print(f"plot.py on {args.runs} runs of 540: {elapsed:.1f} s (exit code {result.returncode})")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
