"""Does a demo run show grokking? The quick start's criterion, read from a finished run's files.

    python bench/demo_criterion.py                    # studies/demo
    python bench/demo_criterion.py run_1              # a run of `python experiment.py --out_dir=run_1 --preset=demo`

For every run (task, architecture, seed) of the folder: M, the memorization step (training
accuracy > 99%); validation accuracy at the first evaluation at or after step 2M; G, the grokking
step (validation accuracy > 99%). The demo shows grokking when in every run validation accuracy at
2M is at most 0.5 and G >= 3M. Prints one line per run, the study's wall time, and exits 1 when a
run misses the criterion.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import experiment as ex  # noqa: E402  (the 99% threshold)

MAX_VAL_ACC_AT_2M = 0.5
MIN_GROK_OVER_MEMORIZATION = 3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default="studies/demo", help="a finished run folder of experiment.py")
    folder = parser.parse_args().folder
    with open(os.path.join(folder, "runs.json")) as f:
        runs = json.load(f)
    with np.load(os.path.join(folder, "curves.npz")) as npz:
        steps, val_acc = npz["step"], npz["val_acc"]
    with open(os.path.join(folder, "provenance.json")) as f:
        provenance = json.load(f)
    failures = 0
    for i, run in enumerate(runs):
        m, g = run["step_train_acc_99"], run["step_val_acc_99"]
        at_2m = float(val_acc[i, min(np.searchsorted(steps, 2 * m), len(steps) - 1)])
        ok = run["memorized"] and run["grokked"] and at_2m <= MAX_VAL_ACC_AT_2M and g >= MIN_GROK_OVER_MEMORIZATION * m
        failures += not ok
        print(f"{run['task']} {run['architecture']} seed {run['seed']}: M {m}, validation accuracy at 2M "
              f"{at_2m:.3f}, G {g} (G/M {g / m:.1f}): {'grokking' if ok else 'MISSES the criterion'}")
    print(f"{len(runs) - failures} of {len(runs)} runs meet it (accuracy > {ex.THRESHOLD}; at 2M <= "
          f"{MAX_VAL_ACC_AT_2M}; G >= {MIN_GROK_OVER_MEMORIZATION}M); the study took {provenance['wall_time_s']:.0f} s "
          f"on {provenance['device_name']}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
