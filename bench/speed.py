"""Speed of experiment.py's batched training on the machine at hand (a benchmark, not a test).

    python bench/speed.py                                  # baseline architecture, 20 runs, both forwards
    python bench/speed.py --template=PATH/templates/grokking/experiment.py   # and the template, same run
    python bench/speed.py --shapes --forwards=fast         # the 9 layers x d_model shapes
    python bench/speed.py --layers=4 --dims=256 --heads=8 --members=20 --json=out.json

Measures, in one process:
- the machine's fp32 matmul peak: the best of several large square matmuls (FLOP = 2 n^3);
- per architecture and forward ("fast": the hand-written forward; "vmap": the plain model of
  experiment.py under torch.func, what an edited model trains with): the median time of a
  training step of a group of --members runs of x / y, x - y and x + y (experiment.py's
  train_step: forward, backward, AdamW; the device synchronized around it) and of one evaluation
  on the full training and validation splits;
- model FLOP/s (runner.step_flops / forward_flops: matmul FLOPs of the fast forward's
  computation) and its fraction of the peak;
- per run and step: the training step alone, and end to end with the full-split evaluation
  every eval_every steps;
- with --template: the AI-Scientist grokking template (imported from that path, never copied
  here) timed the same way: its own train() over its DataLoader (10 steps) for the step alone, plus
  its evaluate() (8 validation batches per 10 steps) end to end, and the ratios template / ours.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import experiment as ex  # noqa: E402
import runner  # noqa: E402

ARITHMETIC = ("x_div_y", "x_minus_y", "x_plus_y")  # one domain (mod p): one group


def timed(fn, device, repeats: int) -> float:
    """Median seconds of fn() over `repeats` calls, the device synchronized around each."""
    times = []
    for _ in range(repeats):
        runner.synchronize(device)
        start = time.perf_counter()
        fn()
        runner.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak(device, n: int) -> float:
    """fp32 FLOP/s of an n x n matmul (TF32 on CUDA, as experiment.py trains)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    return 2 * n ** 3 / timed(lambda: a @ b, device, 10)


def bench_group(science, arch: runner.Architecture, members: int, forward: str, device, steps: int) -> dict:
    c = ex.Config(tasks=ARITHMETIC, layers=(arch.layers,), dims=(arch.d_model,), heads=(arch.heads,),
                  seeds=-(-members // len(ARITHMETIC)))
    tables = runner.build_tables(science, c)
    group, = runner.plan_groups(c, tables)
    group = runner.Group(arch, group.members[:members])
    models = runner.member_models(science, group, tables)
    params = runner.stack_parameters(models, device, torch.float32)
    model = models[0].to(device)
    fwd = runner.make_forward(forward, model, arch, device, torch.float32)
    data = runner.GroupData(group.members, tables, c, science, device)
    optimizer, schedule = science.make_optimizer(params, c)
    counter = iter(range(10 ** 9))

    def train_step():
        science.train_step(lambda tokens: fwd(params, tokens), optimizer, schedule, *data.batch(next(counter)))

    for _ in range(3):  # warm-up: allocator, kernels, batch chunk
        train_step()
    step_s = timed(train_step, device, steps)
    evaluate = lambda: runner.evaluate(science, fwd, params, data, arch.d_model)
    evaluate()
    eval_s = timed(evaluate, device, 3)
    member_tables = [tables[m.task, m.setting] for m in group.members]
    train_flops = sum(runner.step_flops(arch, t, c.batch_size) for t in member_tables)
    eval_flops = sum(runner.forward_flops(arch, t.num_classes, len(t.answers), t.num_classes) for t in member_tables)
    return {"architecture": arch.name, "forward": forward, "members": members,
            "parameters": runner.parameter_count(science, arch, member_tables[0]),
            "step_ms": 1e3 * step_s, "eval_ms": 1e3 * eval_s,
            "train_gflops": train_flops / step_s / 1e9, "eval_gflops": eval_flops / eval_s / 1e9,
            "step_ms_per_run": 1e3 * step_s / members,
            "end_to_end_ms_per_run_step": 1e3 * (step_s + eval_s / c.eval_every) / members}


def bench_template(path: str, steps: int) -> dict:
    """The template's own loop on x / y: ms per step of its train() (its DataLoader included),
    and per step with its evaluate() every 10 steps."""
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
    epoch = lambda: template.train(model, train_loader, optimizer, scheduler, "cpu", 10)
    evaluate = lambda: template.evaluate(model, val_loader, "cpu", 8)
    epoch()
    evaluate()
    train_s = timed(epoch, torch.device("cpu"), max(3, steps // 10)) / 10
    eval_s = timed(evaluate, torch.device("cpu"), 3)
    return {"step_ms": 1e3 * train_s, "end_to_end_ms_per_step": 1e3 * (train_s + eval_s / 10)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--dims", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--members", type=int, default=20, help="runs in the group")
    parser.add_argument("--forwards", default="fast,vmap", help="comma-separated: fast, vmap, loop")
    parser.add_argument("--shapes", action="store_true", help="every layers {1,2,4} x d_model {64,128,256}")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per architecture")
    parser.add_argument("--peak_n", type=int, default=4096, help="size of the peak-measuring matmul")
    parser.add_argument("--template", help="path to the AI-Scientist templates/grokking/experiment.py (needs einops)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()

    device = runner.resolve_device(args.device)
    runner.configure_backend(device)
    science = ex.science()
    peak = matmul_peak(device, args.peak_n)
    archs = ([runner.Architecture(n, d, args.heads) for n in (1, 2, 4) for d in (64, 128, 256)] if args.shapes
             else [runner.Architecture(args.layers, args.dims, args.heads)])
    print(f"device: {runner.device_name(device)}; fp32 matmul peak ({args.peak_n}^3): {peak / 1e9:.0f} GFLOP/s")
    template = bench_template(args.template, args.steps) if args.template else None
    if template:
        print(f"template (2 x 128 x 4, x / y): {template['step_ms']:.1f} ms per step, "
              f"{template['end_to_end_ms_per_step']:.1f} ms per step with its evaluation")
    print(f"{'architecture':<12} {'forward':>7} {'runs':>4} {'params':>9} {'step ms':>8} {'eval ms':>8} "
          f"{'GFLOP/s':>8} {'% peak':>6} {'ms/run-step':>11} {'end to end':>10} {'vs template':>16}")
    rows = []
    for arch in archs:
        for forward in args.forwards.split(","):
            r = bench_group(science, arch, args.members, forward, device, args.steps)
            r["train_fraction_of_peak"] = r["train_gflops"] * 1e9 / peak
            if template and (arch.layers, arch.d_model, arch.heads) == (2, 128, 4):  # the template's own model
                r["speedup_step_vs_template"] = template["step_ms"] / r["step_ms_per_run"]
                r["speedup_end_to_end_vs_template"] = template["end_to_end_ms_per_step"] / r["end_to_end_ms_per_run_step"]
            rows.append(r)
            ratio = (f"{r['speedup_step_vs_template']:.2f}x / {r['speedup_end_to_end_vs_template']:.2f}x"
                     if "speedup_step_vs_template" in r else "-")
            print(f"{r['architecture']:<12} {forward:>7} {r['members']:>4} {r['parameters']:>9,} {r['step_ms']:>8.1f} "
                  f"{r['eval_ms']:>8.1f} {r['train_gflops']:>8.1f} {100 * r['train_fraction_of_peak']:>5.0f}% "
                  f"{r['step_ms_per_run']:>11.2f} {r['end_to_end_ms_per_run_step']:>10.2f} {ratio:>16}", flush=True)
    if template:
        print("vs template: its time per step over ours per run and step, training step alone / end to end")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": runner.device_name(device), "torch": torch.__version__,
                       "matmul_peak_gflops": peak / 1e9, "template": template, "results": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
