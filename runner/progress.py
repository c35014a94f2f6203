"""Progress with the time left, and the time guard that stops a study its machine cannot finish."""

from __future__ import annotations

import sys
import time

from .plan import Group
from .text import clock, span


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
