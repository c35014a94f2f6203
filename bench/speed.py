"""Speed of experiment.py's batched training on the machine at hand (a benchmark, not a test).

    python bench/speed.py                                  # baseline architecture, 20 members
    python bench/speed.py --shapes                         # the 9 layers x d_model shapes
    python bench/speed.py --layers=4 --dims=256 --heads=8 --members=20 --json=out.json

Measures, in one process:
- the machine's fp32 matmul peak: the best of several large square matmuls (FLOP = 2 n^3);
- per architecture and member count: the median time of a training step (forward, backward,
  AdamW; the device is synchronized around the timed region) and of one evaluation on the full
  training and validation splits;
- model FLOP/s from experiment.step_flops / forward_flops: matmul FLOPs (2 per multiply-add) of
  the computation the model really performs (last-position and shared-prefix shortcuts
  included; the 4-position attention scores, under 1%, left out), and its fraction of the peak;
- the cost per model and step of a whole run, evaluation every eval_every steps included, beside
  the template's measured 0.097 s per step on the 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import experiment as ex  # noqa: E402

TEMPLATE_CPU_STEP_S = 0.097  # the template's own loop (data, training, evaluation) on 2 CPU cores


def timed(fn, device, repeats: int) -> float:
    """Median seconds of fn() over `repeats` calls, the device synchronized around each."""
    times = []
    for _ in range(repeats):
        ex.synchronize(device)
        start = time.perf_counter()
        fn()
        ex.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak(device, n: int) -> float:
    """fp32 FLOP/s of an n x n matmul (TF32 on CUDA, as experiment.py trains)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    return 2 * n ** 3 / timed(lambda: a @ b, device, 10)


def bench_architecture(arch: ex.Architecture, members: int, c: ex.Config, device, steps: int) -> dict:
    tables, setting = ex.build_tables(c), c.settings()[0]
    member_list = [ex.Member(c.tasks[i % len(c.tasks)], i // len(c.tasks), setting) for i in range(members)]
    member_list.sort(key=lambda m: c.tasks.index(m.task))  # task-major, as experiment.py orders them
    references = [ex.reference_model(arch, tables[m.table_key], m.seed) for m in member_list]
    model = ex.BatchedTransformer.from_references(
        arch, references, [tables[m.table_key].num_classes for m in member_list]).to(device)
    data = ex.GroupData(member_list, tables, c, device)
    optimizer = ex.make_optimizer(model.parameters(), c, setting)
    counter = iter(range(10 ** 9))

    def train_step():
        left, right, answers = data.batch(next(counter))
        loss = ex.member_losses(model(left, right), answers).mean(1).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):  # warm-up: allocator, kernels, batch chunk
        train_step()
    step_s = timed(train_step, device, steps)
    ex.evaluate(model, data)
    eval_s = timed(lambda: ex.evaluate(model, data), device, 3)
    train_flops = sum(ex.step_flops(arch, tables[m.table_key], setting.batch_size) for m in member_list)
    eval_flops = sum(ex.forward_flops(arch, tables[m.table_key].num_classes, len(tables[m.table_key].answers),
                                      tables[m.table_key].num_classes) for m in member_list)
    per_model_step = (step_s + eval_s / c.eval_every) / members
    return {"architecture": arch.name, "members": members,
            "parameters": ex.parameter_count(arch, c.prime + 2, c.prime),
            "step_ms": 1e3 * step_s, "eval_ms": 1e3 * eval_s,
            "train_gflops": train_flops / step_s / 1e9, "eval_gflops": eval_flops / eval_s / 1e9,
            "per_model_step_ms": 1e3 * per_model_step,
            "run_s_per_model": per_model_step * c.num_steps}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--dims", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--members", type=int, default=20, help="runs in the group (tasks x seeds)")
    parser.add_argument("--shapes", action="store_true", help="every layers {1,2,4} x d_model {64,128,256}")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per architecture")
    parser.add_argument("--peak_n", type=int, default=4096, help="size of the peak-measuring matmul")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()

    device = ex.resolve_device(args.device)
    ex.configure_backend(device)
    c = ex.Config()
    peak = matmul_peak(device, args.peak_n)
    archs = ([ex.Architecture(n, d, args.heads) for n in (1, 2, 4) for d in (64, 128, 256)] if args.shapes
             else [ex.Architecture(args.layers, args.dims, args.heads)])
    print(f"device: {ex.device_name(device)}; fp32 matmul peak ({args.peak_n}^3): {peak / 1e9:.0f} GFLOP/s")
    header = (f"{'architecture':<12} {'members':>7} {'params':>9} {'step ms':>8} {'eval ms':>8} "
              f"{'train GFLOP/s':>13} {'% peak':>6} {'eval GFLOP/s':>12} {'ms/model-step':>13} {'vs template':>11}")
    print(header)
    rows = []
    for arch in archs:
        r = bench_architecture(arch, args.members, c, device, args.steps)
        r["train_fraction_of_peak"] = r["train_gflops"] * 1e9 / peak
        # the template's 0.097 s/step was measured for its own 2 x 128 x 4 model only
        same_model = (arch.layers, arch.d_model, arch.heads) == (2, 128, 4)
        r["speedup_vs_template_cpu"] = TEMPLATE_CPU_STEP_S * 1e3 / r["per_model_step_ms"] if same_model else None
        rows.append(r)
        print(f"{r['architecture']:<12} {r['members']:>7} {r['parameters']:>9,} {r['step_ms']:>8.1f} "
              f"{r['eval_ms']:>8.1f} {r['train_gflops']:>13.1f} {100 * r['train_fraction_of_peak']:>5.0f}% "
              f"{r['eval_gflops']:>12.1f} {r['per_model_step_ms']:>13.2f} "
              + (f"{r['speedup_vs_template_cpu']:>10.2f}x" if r["speedup_vs_template_cpu"] else f"{'-':>11}"),
              flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": ex.device_name(device), "torch": torch.__version__,
                       "matmul_peak_gflops": peak / 1e9, "results": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
