"""What a study costs, and progress with the time left."""

from __future__ import annotations

import math
import sys
import time

import torch

from .plan import Architecture, Group, Study


def forward_flops(arch: Architecture, num_classes: int, equations: int, prefix_rows: int) -> int:
    """Matmul FLOPs (2 per multiply-add) of one forward pass of one member, as the fast forward
    computes it: `equations` rows of positions 2-3 plus `prefix_rows` shared rows of positions
    0-1 in every block; the last block computes keys and values there, and the query, output
    projection and MLP for position 3 only. Attention scores over 4 positions (< 1%) are left out."""
    d, position_rows = arch.d_model, 2 * (equations + prefix_rows)
    full_block = position_rows * 2 * 12 * d * d  # qkv 3d^2, output d^2, MLP 8d^2 multiply-adds
    last_block = position_rows * 2 * 2 * d * d + equations * 2 * 10 * d * d
    return (arch.layers - 1) * full_block + last_block + equations * 2 * d * num_classes


def step_flops(arch: Architecture, table, batch_size: int) -> int:
    """One training step of one member: forward and backward (twice the forward)."""
    return 3 * forward_flops(arch, table.num_classes, batch_size, min(table.num_classes, batch_size))


def group_flops(study: Study, group: Group, evaluations: int) -> float:
    """Training and evaluation FLOPs of a whole group (the fast forward's; the plain model's are
    about twice as many)."""
    total = 0.0
    for mb in group.members:
        t, c = study.table(mb), study.config(mb)
        evaluation = forward_flops(group.arch, t.num_classes, len(t.answers), t.num_classes)
        total += step_flops(group.arch, t, c.batch_size) * c.num_steps + evaluation * evaluations
    return total


# The time a group takes on a 2-core CPU: its matmuls at CPU_FLOPS_ESTIMATE, plus a fixed cost per
# member, step and block (small models spend most of their time outside the matmuls). A rough
# guide: machines differ, and against the committed studies' groups (45 seconds to 1.6 hours, on
# Intel Xeon and AMD EPYC VMs) it gives 0.6 to 1.6 times the measured time of all but one (0.36).
# It weighs each group's share of the progress and warns before a long study; the time guard
# measures instead.
CPU_FLOPS_ESTIMATE = 80e9  # FLOP/s of the fast forward's matmuls
CPU_BLOCK_STEP_FLOPS = 1.6e8  # one member's step through one block besides its matmuls (2 ms), in FLOP at that rate
CPU_WARNING_S = 7200  # a study estimated longer than this (or --time_limit) on a CPU gets a warning before it starts


def study_costs(study: Study, groups: list[Group], evaluations: int, device: torch.device) -> tuple[float, dict]:
    """The FLOPs of training these groups, and what weighs each group's share of the study's time,
    in FLOP: on a CPU its FLOPs and the fixed cost of its member-steps; elsewhere (not measured)
    its FLOPs alone."""
    flops, costs = 0.0, {}
    for g in groups:
        group = group_flops(study, g, evaluations)
        fixed = CPU_BLOCK_STEP_FLOPS * study.c.num_steps * len(g.members) * g.arch.layers if device.type == "cpu" else 0.0
        flops, costs[g.name] = flops + group, group + fixed
    return flops, costs


def cpu_seconds(costs: dict) -> float:
    """The time the groups of these costs (study_costs) take on 2 CPU cores."""
    return sum(costs.values()) / CPU_FLOPS_ESTIMATE


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


PROGRESS_LINE_EVERY_S = 300  # in a log, a progress line at least this often, also inside a long group
TIME_LIMIT_MEASURE_S = (10, 120)  # a time limit is judged from this much training on (s), and no later


class TimeLimitExceeded(Exception):
    """The study's first training steps project it past --time_limit."""

    def __init__(self, projected_s: float, limit_s: float, measured_s: float):
        super().__init__(f"this study would take about {span(projected_s)} (projected from its first "
                         f"{measured_s:.0f} s of training), past the time limit of {span(limit_s)} "
                         f"(--time_limit={limit_s:g}, or TIME_LIMIT_S in experiment.py); cut seeds, num_steps or the "
                         "architectures (layers, dims, heads) in Config, or use a GPU")


class Progress:
    """Progress of the groups still to train, weighted by their cost: a bar on a terminal; where
    stderr is not one (a log, the AI-Scientist harness), one plain line per finished group and
    one every `line_every_s` seconds while a group trains. With a time limit, the time measured on
    the first steps (between TIME_LIMIT_MEASURE_S) projects the whole study, after the `spent_s`
    seconds it took before training; past the limit it stops with TimeLimitExceeded."""

    def __init__(self, costs: dict[str, float], line_every_s: float = PROGRESS_LINE_EVERY_S,
                 time_limit_s: float | None = None, spent_s: float = 0.0):
        self.costs, self.done, self.line_every_s = costs, {name: 0.0 for name in costs}, line_every_s
        self.time_limit_s, self.spent_s = time_limit_s, spent_s
        self.total, self.start = sum(costs.values()) or 1.0, time.perf_counter()
        self.last_line = self.start
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=self.total, unit_scale=True, dynamic_ncols=True, mininterval=0.5,
                            smoothing=0.05, bar_format="{l_bar}{bar}| {elapsed}<{remaining}{postfix}")

    def update(self, group: Group, fraction: float) -> None:
        self.done[group.name] = fraction
        finished = sum(f >= 1 for f in self.done.values())
        share = sum(self.costs[n] * f for n, f in self.done.items()) / self.total
        elapsed = time.perf_counter() - self.start
        if self.time_limit_s and share > 0 and TIME_LIMIT_MEASURE_S[0] <= elapsed <= TIME_LIMIT_MEASURE_S[1]:
            projected = self.spent_s + elapsed / share
            if projected > self.time_limit_s:
                raise TimeLimitExceeded(projected, self.time_limit_s, elapsed)
        if self.bar is not None:
            self.bar.update(share * self.total - self.bar.n)
            running = f"; {group.name} {100 * fraction:.0f}%" if fraction < 1 else ""
            self.bar.set_postfix_str(f"{finished}/{len(self.done)} groups done{running}", refresh=False)
        elif fraction >= 1 or time.perf_counter() - self.last_line >= self.line_every_s:
            self.last_line = time.perf_counter()
            eta = elapsed * (1 - share) / share if share > 0 else float("nan")
            running = f", {group.name} {100 * fraction:.0f}% done" if fraction < 1 else ""
            print(f"progress: {finished}/{len(self.done)} groups ({100 * share:.0f}%{running}), {clock(elapsed)} "
                  f"elapsed, about {clock(eta)} left", file=sys.stderr, flush=True)

    def write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def span(seconds: float) -> str:
    """A duration in words: 50 s, 12 min, 3.4 hours, 9 days."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} hours" if seconds < 2 * 86400 else f"{seconds / 86400:.0f} days"
