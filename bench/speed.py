"""Speed of experiment.py's batched training on the machine at hand (a benchmark, not a test).

    python bench/speed.py                                  # baseline architecture, 20 runs, both forwards
    python bench/speed.py --template=PATH/templates/grokking/experiment.py   # and the template, same run
    python bench/speed.py --shapes --forwards=fast         # the 9 layers x d_model shapes
    python bench/speed.py --layers=4 --dims=256 --heads=8 --members=20 --json=out.json

Measures, in one process:
- the machine's fp32 matmul peak: the median of several large square matmuls (FLOP = 2 n^3);
- per architecture and forward ("fast": the hand-written forward; "vmap": the plain model of
  experiment.py under torch.func, what an edited model trains with): the median time of a
  training step of a group of --members runs of x / y, x - y and x + y (experiment.py's
  train_step: forward, backward, AdamW; the device synchronized around it) and of one evaluation
  on the full training and validation splits;
- model FLOP/s (step_flops / forward_flops: matmul FLOPs of the fast forward's
  computation) and its fraction of the peak;
- per run and step: the training step alone, and end to end with the full-split evaluation
  every eval_every steps (--progress_measures=both: with experiment.py's progress measures and
  without, to see what they cost);
- with --template: the AI-Scientist grokking template (imported from that path, never copied
  here) timed the same way: its own train() over its DataLoader (10 steps) for the step alone, plus
  its evaluate() (8 validation batches per 10 steps) end to end, and the ratios template / ours.

Everything is set up first, then timed in --rounds rounds, each contender in turn: on a shared or
throttled machine a slow spell then slows every contender alike, and the medians and ratios
hold (one contender after another, the ratio moved by 1.5x between two runs on a 2-core VM).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import experiment as ex  # noqa: E402
from runner.device import configure_backend, device_name, resolve_device  # noqa: E402
from runner.forwards import make_forward, member_models, stack_parameters  # noqa: E402
from runner.plan import Architecture, Group, Study  # noqa: E402
from runner.costs import forward_flops, step_flops  # noqa: E402
from runner.results import parameter_count  # noqa: E402
from runner.training import GroupData, evaluate, synchronize  # noqa: E402

ARITHMETIC = ("x_div_y", "x_minus_y", "x_plus_y")  # one domain (mod p): one group


def timed(fn, device, repeats: int) -> list[float]:
    """Seconds of each of `repeats` calls of fn(), the device synchronized around each."""
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def matmul_peak(device, n: int) -> float:
    """fp32 FLOP/s of an n x n matmul (TF32 on CUDA, as experiment.py trains)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    return 2 * n ** 3 / statistics.median(timed(lambda: a @ b, device, 10))


@dataclass
class Contender:
    """Something to time: one training step (of `runs` runs at once) and one evaluation."""

    runs: int
    train_step: Callable
    evaluate: Callable
    steps_per_call: int = 1  # training steps one call of train_step makes
    eval_every: int = 10  # training steps per evaluation
    info: dict = field(default_factory=dict)  # what is reported besides the times
    step_s: list = field(default_factory=list)  # per training step, every timed call
    eval_s: list = field(default_factory=list)

    def measure(self, device, calls: int) -> None:
        self.step_s += [t / self.steps_per_call for t in timed(self.train_step, device, calls)]
        self.eval_s += timed(self.evaluate, device, 1)

    def median_s(self) -> tuple[float, float]:
        """Median seconds of a training step (of all runs) and of an evaluation."""
        return statistics.median(self.step_s), statistics.median(self.eval_s)

    def per_run_step(self, with_eval: bool) -> float:
        """Median seconds per run and training step, with the evaluation's share or without."""
        step, evaluation = self.median_s()
        return (step + (evaluation / self.eval_every if with_eval else 0.0)) / self.runs


def group_contender(science, arch: Architecture, members: int, forward: str, device, progress: bool = True) -> Contender:
    """A group of `members` runs of x / y, x - y and x + y, training with experiment.py's train_step
    and evaluating its curves (with the progress measures, or without)."""
    c = ex.Config(tasks=ARITHMETIC, layers=(arch.layers,), dims=(arch.d_model,), heads=(arch.heads,),
                  seeds=-(-members // len(ARITHMETIC)), progress_measures=progress)
    study = Study.build(science, c)
    group, = study.groups()
    group = Group(arch, group.members[:members])
    models = member_models(study, group)
    params = stack_parameters(models, device, torch.float32)
    model = models[0].to(device)
    fwd = make_forward(forward, model, arch, device, torch.float32)
    data = GroupData(study, group.members, device)
    optimizer, schedule = science.make_optimizer(params, c)
    counter = iter(range(10 ** 9))

    def train_step():
        science.train_step(lambda tokens: fwd(params, tokens), optimizer, schedule, *data.batch(next(counter)))

    member_tables = [study.table(m) for m in group.members]
    info = {"architecture": arch.name, "forward": forward + ("" if progress else " -pm"), "members": members,
            "parameters": parameter_count(science, arch, member_tables[0], c),
            "train_flops": sum(step_flops(arch, t, c.batch_size) for t in member_tables),
            "eval_flops": sum(forward_flops(arch, t.num_classes, len(t.answers), t.num_classes)
                              for t in member_tables)}
    return Contender(members, train_step,
                     lambda: evaluate(study, fwd, params, data, arch.d_model), eval_every=c.eval_every,
                     info=info)


def template_contender(path: str) -> Contender:
    """The template's own loop on x / y: its train() over its DataLoader (10 steps a call) and its
    evaluate() on 8 validation batches, every 10 steps as it does."""
    spec = importlib.util.spec_from_file_location("grokking_template", path)
    template = importlib.util.module_from_spec(spec)
    argv, sys.argv = sys.argv, [path]  # it parses the command line when imported
    try:
        spec.loader.exec_module(template)
    finally:
        sys.argv = argv
    torch.manual_seed(1337)
    train_loader, val_loader, n_vocab, n_output = template.get_data("x_div_y", 97, 0.5, 512)
    model = template.Transformer(2, 128, 4, n_vocab, n_output, 5)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), weight_decay=0.5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(s / 50, 1))
    return Contender(1, lambda: template.train(model, train_loader, optimizer, scheduler, "cpu", 10),
                     lambda: template.evaluate(model, val_loader, "cpu", 8), steps_per_call=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--dims", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--members", type=int, default=20, help="runs in the group")
    parser.add_argument("--forwards", default="fast,vmap", help="comma-separated: fast, vmap, loop")
    parser.add_argument("--shapes", action="store_true", help="every layers {1,2,4} x d_model {64,128,256}")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per contender and round")
    parser.add_argument("--rounds", type=int, default=4, help="rounds in which every contender is timed in turn")
    parser.add_argument("--peak_n", type=int, default=4096, help="size of the peak-measuring matmul")
    parser.add_argument("--template", help="path to the AI-Scientist templates/grokking/experiment.py (needs einops)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--progress_measures", default="on", choices=("on", "off", "both"),
                        help="evaluate with experiment.py's progress measures, without (forward shown as '-pm'), or both")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()

    device = resolve_device(args.device)
    configure_backend(device)
    science = ex.science()
    peak = matmul_peak(device, args.peak_n)
    print(f"device: {device_name(device)}; fp32 matmul peak ({args.peak_n}^3): {peak / 1e9:.0f} GFLOP/s")
    archs = ([Architecture(n, d, args.heads) for n in (1, 2, 4) for d in (64, 128, 256)] if args.shapes
             else [Architecture(args.layers, args.dims, args.heads)])
    progress = {"on": [True], "off": [False], "both": [True, False]}[args.progress_measures]
    contenders = [group_contender(science, arch, args.members, forward, device, measures)
                  for arch in archs for forward in args.forwards.split(",") for measures in progress]
    template = template_contender(args.template) if args.template else None
    everyone = contenders + ([template] if template else [])
    for contender in everyone:  # warm-up: allocator, kernels, the first batch chunk
        for _ in range(2):
            contender.train_step()
        contender.evaluate()
    for _ in range(args.rounds):  # in turn, so that a machine that slows down slows down everyone
        for contender in everyone:
            contender.measure(device, max(1, args.steps // contender.steps_per_call))
    if template:
        print(f"template (2 x 128 x 4, x / y): {1e3 * template.per_run_step(False):.1f} ms per step, "
              f"{1e3 * template.per_run_step(True):.1f} ms per step with its evaluation")
    print(f"{'architecture':<12} {'forward':>7} {'runs':>4} {'params':>9} {'step ms':>8} {'eval ms':>8} "
          f"{'GFLOP/s':>8} {'% peak':>6} {'ms/run-step':>11} {'end to end':>10} {'vs template':>16}")
    rows = []
    for contender in contenders:
        step_s, eval_s = contender.median_s()
        r = {**contender.info, "step_ms": 1e3 * step_s, "eval_ms": 1e3 * eval_s,
             "train_gflops": contender.info["train_flops"] / step_s / 1e9,
             "eval_gflops": contender.info["eval_flops"] / eval_s / 1e9,
             "step_ms_per_run": 1e3 * contender.per_run_step(False),
             "end_to_end_ms_per_run_step": 1e3 * contender.per_run_step(True),
             "step_ms_spread": [1e3 * min(contender.step_s), 1e3 * max(contender.step_s)]}
        r["train_fraction_of_peak"] = r["train_gflops"] * 1e9 / peak
        if template and r["architecture"] == "L2_D128_H4":  # the template's own model
            r["speedup_step_vs_template"] = template.per_run_step(False) / contender.per_run_step(False)
            r["speedup_end_to_end_vs_template"] = template.per_run_step(True) / contender.per_run_step(True)
        rows.append(r)
        ratio = (f"{r['speedup_step_vs_template']:.2f}x / {r['speedup_end_to_end_vs_template']:.2f}x"
                 if "speedup_step_vs_template" in r else "-")
        print(f"{r['architecture']:<12} {r['forward']:>7} {r['members']:>4} {r['parameters']:>9,} {r['step_ms']:>8.1f} "
              f"{r['eval_ms']:>8.1f} {r['train_gflops']:>8.1f} {100 * r['train_fraction_of_peak']:>5.0f}% "
              f"{r['step_ms_per_run']:>11.2f} {r['end_to_end_ms_per_run_step']:>10.2f} {ratio:>16}", flush=True)
    if template:
        print("vs template: its time per step over ours per run and step, training step alone / end to end "
              f"(medians over {args.rounds} interleaved rounds)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device_name(device), "torch": torch.__version__,
                       "matmul_peak_gflops": peak / 1e9, "rounds": args.rounds,
                       "template": template and {"step_ms": 1e3 * template.per_run_step(False),
                                                 "end_to_end_ms_per_step": 1e3 * template.per_run_step(True)},
                       "results": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
