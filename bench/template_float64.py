"""Is the project's training the template's computation? A float64 check (a benchmark, not a test).

    pip install einops        # the template imports it
    python bench/template_float64.py --template=PATH/templates/grokking/experiment.py \\
        [--task=x_div_y] [--seeds=1] [--steps=60]

The original AI-Scientist grokking template (imported from --template, never copied here) draws
its split and batches from an unseeded Python `random`, so its runs cannot be replayed. This
check removes that one difference and compares everything else:

1. The project trains the baseline (2 layers, d_model 128, 4 heads, p = 97, 50% training data,
   batch 512, AdamW lr 1e-3, betas (0.9, 0.98), weight decay 0.5, 50 warm-up steps) in float64
   for --steps steps, evaluating the full training split after every step:
   `python experiment.py --preset=baseline --dtype=float64 --eval_every=1 ...`
2. For every seed, the template's own Transformer, initialized by the template's own code under
   torch.manual_seed(1337 + seed), cast to float64, trained with the template's AdamW and
   LambdaLR warm-up on the project's split and the project's batches (experiment.run_data), its
   training-split loss taken after every step.

It prints, per seed, the largest relative difference of the two training-loss curves; a float64
computation that is the same up to the order of floating-point operations gives ~1e-15 or less.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.dirname(HERE)
sys.path[:0] = [PROJECT, HERE]
import experiment  # noqa: E402  (the project's data: split and batch stream)
from template_seeds import load_template  # noqa: E402


def project_curves(task: str, seeds: int, steps: int) -> dict[int, np.ndarray]:
    """Training-split loss after every step, per seed, from the project's own float64 run."""
    with tempfile.TemporaryDirectory() as out_dir:
        subprocess.run([sys.executable, os.path.join(PROJECT, "experiment.py"), f"--out_dir={out_dir}",
                        "--preset=baseline", f"--tasks={task}", f"--seeds={seeds}", f"--num_steps={steps}",
                        "--eval_every=1", "--dtype=float64"], check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(out_dir, "runs.json")) as f:
            runs = json.load(f)
        curves = np.load(os.path.join(out_dir, "curves.npz"))
        return {r["seed"]: curves["train_loss"][i] for i, r in enumerate(runs)}


def template_curve(template, task: str, seed: int, steps: int) -> np.ndarray:
    """The template's model, optimizer and warm-up, in float64, on the project's data for `seed`."""
    c = experiment.Config(tasks=(task,))
    table = experiment.build_table(task, c)
    splits, draw = experiment.run_data(len(table.answers), c, seed)
    batches = draw(steps)
    train = splits["train"]
    torch.manual_seed(1337 + seed)  # what the template's run() does before it builds its model
    model = template.Transformer(num_layers=2, dim_model=128, num_heads=4, vocab_size=table.vocab_size,
                                 output_size=table.num_classes, seq_len=5).double()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), weight_decay=0.5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=lambda s: min(s / 50, 1))
    criterion = torch.nn.CrossEntropyLoss()
    losses = []
    for step in range(steps):
        optimizer.zero_grad()
        loss = criterion(model(table.tokens[batches[step]])[-1], table.answers[batches[step]])
        loss.backward()
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            losses.append(criterion(model(table.tokens[train])[-1], table.answers[train]).item())
    return np.array(losses)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--template", required=True, help="path to templates/grokking/experiment.py")
    parser.add_argument("--task", default="x_div_y", choices=["x_div_y", "x_minus_y", "x_plus_y"])
    parser.add_argument("--seeds", type=int, default=1, help="compare seeds 0 .. N-1")
    parser.add_argument("--steps", type=int, default=60, help="training steps to compare")
    args = parser.parse_args()

    template = load_template(args.template)
    project = project_curves(args.task, args.seeds, args.steps)
    for seed, curve in sorted(project.items()):
        reference = template_curve(template, args.task, seed, args.steps)
        relative = np.abs(curve - reference) / np.abs(reference)
        print(f"{args.task} seed {seed}: {args.steps} steps in float64, training loss {reference[0]:.4f} -> "
              f"{reference[-1]:.4f}; largest relative difference project vs template {relative.max():.1e} "
              f"(at step {int(relative.argmax()) + 1})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
