"""Grokking steps of the original AI-Scientist grokking template, reproducibly (a benchmark, not a test).

    pip install einops        # the template imports it
    python bench/template_seeds.py --template=PATH/templates/grokking/experiment.py \\
        --task=x_div_y --seeds=0,1,2,3,4 --out=studies/baseline_seeds/template_seeds.json

The template (never copied here: it is imported from --template) draws its split and its batches
from Python's `random`, which it never seeds, so its published baselines cannot be rerun. Here each
run first calls random.seed(seed); the template itself then calls torch.manual_seed(1337 + seed),
so a run is reproducible on the same torch version and thread count. For every seed this runs the
template's own run() (its data, model, AdamW, warm-up, 7500 steps and its evaluation on 8 random
validation batches every 10 steps) and records its grokking step (first evaluation with validation
accuracy > 0.99, 7500 when never), final metrics and validation-accuracy curve. The JSON file is
rewritten after every finished seed, so an interrupted run keeps what it finished, and a rerun with
the same template and task keeps the seeds already in it and runs only the others.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import io
import json
import os
import random
import sys
import tempfile
import time

import torch


def load_template(path: str):
    """The template as a module. It parses sys.argv when imported, so it sees only its own name."""
    spec = importlib.util.spec_from_file_location("grokking_template", path)
    module = importlib.util.module_from_spec(spec)
    argv, sys.argv = sys.argv, [path]
    try:
        spec.loader.exec_module(module)
    finally:
        sys.argv = argv
    return module


def run_seed(template, task: str, seed: int) -> dict:
    random.seed(seed)  # the template's split and batches
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out_dir, contextlib.redirect_stdout(io.StringIO()):
        final, _, val_log = template.run(out_dir, task, seed)  # torch.manual_seed(1337 + seed) inside
    return {"seed": seed, "python_random_seed": seed, "torch_seed": 1337 + seed,
            **{k: float(v) if k != "step_val_acc_99" else int(v) for k, v in final.items()},
            "grokked": int(any(v["val_accuracy"] > 0.99 for v in val_log)),
            "wall_time_s": time.perf_counter() - start, "threads": torch.get_num_threads(),
            "val_acc_curve": {"step": [v["step"] for v in val_log], "val_acc": [v["val_accuracy"] for v in val_log]}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--template", required=True, help="path to templates/grokking/experiment.py")
    parser.add_argument("--task", default="x_div_y", choices=["x_div_y", "x_minus_y", "x_plus_y", "permutation"])
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds")
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args()

    with open(args.template, "rb") as f:
        template_hash = hashlib.sha256(f.read()).hexdigest()
    template = load_template(args.template)
    seeds = [int(s) for s in args.seeds.split(",")]
    result = {"template": os.path.abspath(args.template), "template_sha256": template_hash, "task": args.task,
              "torch": torch.__version__, "commands": [], "runs": []}
    if os.path.exists(args.out):
        with open(args.out) as f:
            earlier = json.load(f)
        if (earlier["template_sha256"], earlier["task"]) != (template_hash, args.task):
            sys.exit(f"error: {args.out} holds another template or task; choose another --out")
        result.update(earlier)
    result["commands"].append([os.path.basename(sys.argv[0])] + sys.argv[1:])
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    done = {r["seed"] for r in result["runs"]}
    for seed in (s for s in seeds if s not in done):
        run = run_seed(template, args.task, seed)
        result["runs"] = sorted(result["runs"] + [run], key=lambda r: r["seed"])
        steps = [r["step_val_acc_99"] for r in result["runs"]]
        result["step_val_acc_99"] = steps
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(result, f, indent=1)
        os.replace(tmp, args.out)
        print(f"seed {seed}: grokking step {run['step_val_acc_99']}, final val acc {run['final_val_acc']:.4f} "
              f"({run['wall_time_s']:.0f} s)", flush=True)
    print(f"{args.task}: grokking steps {[r['step_val_acc_99'] for r in result['runs']]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
