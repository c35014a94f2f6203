"""The command line of plot.py and the drawing of its figure lists, in parallel.

A figure is a function of a study folder (or of all of them, for the lists drawn across folders)
that returns (matplotlib figure, file name), a list of those, or None where it does not apply.
Marked @per_task, it takes the task as a second argument and is drawn once per task."""

from __future__ import annotations

import functools
import multiprocessing
import os
import sys
from typing import Callable

import matplotlib.pyplot as plt

from .studies import StudyFolder, UsageError, discover, setting_views
from .style import DPI
from .tables import write_tables


def per_task(figure: Callable) -> Callable:
    """Mark a figure function that takes (study, task): it is drawn for every task of the study."""
    figure.per_task = True
    return figure


def expand(figure: Callable, target, tasks: list[str]) -> list[Callable]:
    """The calls that draw `figure` on `target` (a study, or the list of all studies)."""
    if getattr(figure, "per_task", False):
        return [functools.partial(figure, target, task) for task in tasks]
    return [functools.partial(figure, target)]


def figure_jobs(studies: list[StudyFolder], across: list, per_folder: list, per_setting: list) -> list[Callable]:
    """Every figure to draw as a call: the `across` list over all folders together, `per_folder`
    for each folder, `per_setting` for each folder's view of each setting of its other axes."""
    tasks = list(dict.fromkeys(t for s in studies for t in s.tasks))
    jobs = [job for figure in across for job in expand(figure, studies, tasks)]
    jobs += [job for s in studies for figure in per_folder for job in expand(figure, s, s.tasks)]
    views = [view for s in studies for view in setting_views(s)]
    jobs += [job for v in views for figure in per_setting for job in expand(figure, v, v.tasks)]
    return jobs


_JOBS: list = []  # the jobs of draw_all, inherited by its forked workers


def _draw(index: int, out: str) -> list[str]:
    drawn = _JOBS[index]()
    paths = []
    for fig, filename in [] if drawn is None else drawn if isinstance(drawn, list) else [drawn]:
        paths.append(os.path.join(out, filename))
        fig.savefig(paths[-1], dpi=DPI)
        plt.close(fig)
    return paths


def draw_all(jobs: list[Callable], out: str) -> list[str]:
    """Draw the figures, in parallel on every core where processes can be forked (rendering is
    most of plot.py's time); the workers inherit the studies instead of receiving copies."""
    global _JOBS
    _JOBS = jobs
    workers = min(len(jobs), len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            paths = pool.starmap(_draw, [(i, out) for i in range(len(jobs))], chunksize=1)
    else:
        paths = [_draw(i, out) for i in range(len(jobs))]
    return [p for batch in paths for p in batch]


def parse_args(argv: list[str]) -> tuple[list[str] | None, str] | None:
    """(--runs folders or None for every run_<n>/, --out folder); None for --help."""
    only, out = None, "."
    for arg in argv:
        key, _, value = arg.partition("=")
        if key in ("-h", "--help"):
            return None
        if key == "--runs" and value:
            only = [v.strip().rstrip("/") for v in value.split(",") if v.strip()]
        elif key == "--out" and value:
            out = value
        else:
            raise UsageError(f"unknown argument {arg!r}; use --runs=run_0,run_3 and --out=DIR (see --help)")
    missing = [name for name in only or [] if not os.path.isdir(name)]
    if missing:
        raise UsageError(f"--runs names {missing[0]!r}, which is not a folder; give run folders written by "
                         "experiment.py, e.g. --runs=run_0,studies/demo")
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out={out!r} is a file; give a folder for the figures")
    return only, out


def main(labels: dict[str, str], across: list, per_folder: list, per_setting: list, doc: str,
         argv: list[str] | None = None) -> int:
    """plot.py: the folders to draw, their figures (the three lists) and tables."""
    try:
        parsed = parse_args(sys.argv[1:] if argv is None else argv)
        if parsed is None:
            print(doc.strip())
            return 0
        only, out = parsed
        studies = discover(".", only, labels)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not studies:
        print("no run to draw: run experiment.py --out_dir=run_0 first")
        return 0
    os.makedirs(out, exist_ok=True)
    table = write_tables(studies, out)  # computes every study's summary before the workers fork
    written = draw_all(figure_jobs(studies, across, per_folder, per_setting), out)
    print(table)
    print(f"wrote {len(written)} figures, summary.md and summary.json to {os.path.abspath(out)}")
    return 0
