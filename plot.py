"""Figures, summary.md and summary.json of every run_*/ folder written by experiment.py.

    python plot.py                              # every run_<n>/ with a final_info.json
    python plot.py --runs=run_0,studies/demo --out=figures   # chosen run folders, figures elsewhere
    python plot.py --help

A run that never reaches a threshold within its budget is censored there, never averaged as if it
had: steps are restricted means up to the budget (never = the budget) with k/n beside them, the
time to an event is drawn as a Kaplan-Meier curve, and architectures are compared by pairs of runs
that share a seed (an exact sign test, its p adjusted for the study's many tests as q). The
statistics are in analysis.py; notes.txt says how to read every figure.

Figures (PNG, written to --out, default the current folder):
  {train_loss,val_loss,train_acc,val_acc}_{task}.png   every run (thin) and the median (thick) of
                                    each run folder and setting
  {run}_accuracy.png                the picture of grokking: training and validation accuracy of
                                    every run, coloured by architecture (runs of up to 8 architectures)
  {run}_seeds_{task}.png            one panel per architecture, one line per seed (training dashed,
                                    validation solid), with each run's regime
  {run}_survival_{task}.png         Kaplan-Meier: the fraction of runs that memorized and grokked by
                                    each step, one curve per architecture
  {run}_regimes.png                 per architecture: runs that grok, memorize only, fail to fit, diverge
  {run}_weight_norm.png             the global weight norm of every run, coloured by architecture
  {run}_capacity_{bucket}.png       every run's accuracy inside a capacity bucket, deep-narrow to
                                    wide-shallow
  {run}_steps_vs_params.png         restricted mean steps to memorization and grokking against size
  {run}_heatmap_{task}.png          restricted mean grokking step (k/n) and fraction grokked over
                                    layers x d_model
  {run}_paired.png                  every architecture comparison at every threshold: pairs won and
                                    lost, sign-test p and q
  {run}_deep_vs_wide.png            the paired differences of deep-narrow and wide-shallow runs at
                                    matched size, one point per pair
  {run}_stability.png               drops of validation accuracy after grokking: with training
                                    accuracy held (generalization lost) or not (optimization unstable)
  {run}_axis_{axis}.png             restricted mean steps against a varied non-architecture axis
  {run}_progress_{task}.png         progress measures (Fourier concentration, head weight norm,
                                    logit margin, softmax saturation) of every run, with each run's
                                    memorization and grokking marked
  {run}_fourier.png                 the Fourier concentration's half-rise step against the grokking
                                    step, and the key frequencies at the end against width and depth
The {run}_ figures but accuracy, progress and fourier need more than one architecture; when a run also varied other axes, they are drawn once per setting, named
{run}_{setting} (e.g. run_2_bs64_survival_x_div_y.png).
Tables: summary.md (also printed) and summary.json (the same numbers as plain data).
"""

from __future__ import annotations

import functools
import json
import math
import multiprocessing
import os
import re
import sys
import textwrap
import zipfile
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402

import analysis  # noqa: E402  (statistics, numpy and scipy only)

# Optional: rename and select runs, as in the AI-Scientist template, e.g.
# labels = {"run_0": "Baseline", "run_1": "Weight decay 1.0"}.
# When it is not empty, only the runs it names are drawn; the others are listed as left out.
labels: dict[str, str] = {}

FORMAT_VERSION = 1  # the experiment.py output format this script reads
TASK_TITLES = {"x_div_y": "x / y (mod p)", "x_minus_y": "x - y (mod p)", "x_plus_y": "x + y (mod p)",
               "permutation": "composition in S_k"}
CURVES = {"train_loss": "training loss", "val_loss": "validation loss",
          "train_acc": "training accuracy", "val_acc": "validation accuracy"}
MEMORIZE, GROK = "step_train_acc_99", "step_val_acc_99"  # the events most figures time
REGIME_COLORS = {"groks": "tab:green", "memorizes only": "tab:orange", "fails to fit": "tab:gray",
                 "diverged": "tab:red"}
STEP_LABEL = "optimizer step"
RESTRICTED = "restricted mean up to the budget (never = the budget) ± s.e.; k/n: runs that got there"
DPI = 110


# ======================================================================================
# Reading runs
# ======================================================================================


@dataclass
class Run:
    name: str  # folder name, e.g. run_3
    label: str  # legend text
    config: dict  # the resolved config (config.json["config"])
    records: list[dict]  # runs.json: one dict per (task, architecture, seed)
    curves: dict[str, np.ndarray]  # curve name -> (records, evals); "step" -> (evals,)
    architectures: list[dict]  # architectures.json
    axes: dict[str, list]  # the non-architecture axes the study varied (config.json), e.g. {"batch_size": [64, 512]}

    @property
    def settings(self) -> list[str]:
        """The values of the varied axes, one string per combination ('' when none varies)."""
        return list(dict.fromkeys(r["setting"] for r in self.records))

    @property
    def log_steps(self) -> bool:
        return self.config.get("eval_schedule") == "log"

    @property
    def budget(self) -> int:
        return self.config["num_steps"]

    @property
    def tasks(self) -> list[str]:
        return list(dict.fromkeys(r["task"] for r in self.records))

    @property
    def archs(self) -> list[dict]:
        """The architectures from the smallest to the largest (fewer heads first)."""
        return sorted(self.architectures, key=lambda a: (a["parameter_count"], a["heads"]))

    def rows(self, **match) -> list[int]:
        """Indices of the records whose fields equal `match`."""
        return [i for i, r in enumerate(self.records) if all(r[k] == v for k, v in match.items())]

    def chosen(self, **match) -> list[dict]:
        return [self.records[i] for i in self.rows(**match)]


class BadRun(Exception):
    """A run folder that cannot be drawn; the message says why."""


def run_label(config_file: dict) -> str:
    """A legend label from what the run saved: its preset and the options it overrode."""
    preset, overrides = config_file.get("preset"), config_file.get("overrides") or {}
    parts = ([preset] if preset else []) + [f"{k}={v}" for k, v in overrides.items()]
    return ", ".join(parts) if parts else "full study"


def load_run(folder: str) -> Run:
    name = os.path.basename(os.path.normpath(folder))
    try:
        with open(os.path.join(folder, "final_info.json")) as f:
            json.load(f)
        with open(os.path.join(folder, "config.json")) as f:
            config_file = json.load(f)
        if config_file.get("format_version") != FORMAT_VERSION:
            raise BadRun(f"format version {config_file.get('format_version')} is not {FORMAT_VERSION}")
        with open(os.path.join(folder, "runs.json")) as f:
            records = json.load(f)
        with open(os.path.join(folder, "architectures.json")) as f:
            architectures = json.load(f)
        with np.load(os.path.join(folder, "curves.npz")) as npz:
            curves = {key: npz[key] for key in npz.files}
    except FileNotFoundError as e:
        raise BadRun(f"{os.path.basename(e.filename)} is missing (an unfinished run?)") from None
    except (json.JSONDecodeError, UnicodeDecodeError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise BadRun(f"unreadable file: {e}") from None
    if not records or any(curves.get(k) is None or len(curves[k]) != len(records) for k in CURVES):
        raise BadRun("runs.json and curves.npz disagree")
    for r in records:  # runs written before studies had axes beyond the architecture
        r.setdefault("setting", "")
    return Run(name, run_label(config_file), config_file["config"], records, curves, architectures,
               config_file.get("axes") or {})


def setting_views(run: Run) -> list[Run]:
    """The run itself, or when it varied other axes one view per setting (e.g. per batch size),
    so that the architecture figures compare architectures under equal conditions."""
    if len(run.settings) < 2:
        return [run]
    views = []
    for setting in run.settings:
        rows = run.rows(setting=setting)
        views.append(Run(f"{run.name}_{setting.replace('/', '_')}", f"{run.label} [{setting}]", run.config,
                         [run.records[r] for r in rows],
                         {k: v if k == "step" else v[rows] for k, v in run.curves.items()},
                         run.architectures, run.axes))
    return views


def run_number(folder: str) -> int:
    return int(re.fullmatch(r"run_(\d+)", folder).group(1))


def discover_runs(root: str, only: list[str] | None) -> list[Run]:
    """Every run_<n>/ with a final_info.json, in numeric order; bad ones are skipped, named."""
    names = only or sorted((d for d in os.listdir(root) if re.fullmatch(r"run_\d+", d)
                            and os.path.isdir(os.path.join(root, d))), key=run_number)
    if labels and not only and not set(labels) & set(names):
        raise UsageError(f"plot.py's labels name {', '.join(labels)}, none of which is a run folder here; "
                         f"the run folders are: {', '.join(names) or 'none'}")
    runs = []
    for name in names:
        folder = os.path.join(root, name)
        if labels and name not in labels:
            print(f"note: {name} left out (not in plot.py's labels)")
            continue
        if not os.path.isfile(os.path.join(folder, "final_info.json")):
            print(f"warning: {name} skipped: no final_info.json (unfinished, failed or not a run)")
            continue
        try:
            run = load_run(folder)
        except BadRun as e:
            print(f"warning: {name} skipped: {e}")
            continue
        run.label = labels.get(name, f"{name}: {run.label}")
        runs.append(run)
    return runs


# ======================================================================================
# What the figures share
# ======================================================================================


def arch_shape(a: dict) -> str:
    return f"{a['layers']}x{a['d_model']}"


def arch_label(a: dict) -> str:
    return f"{arch_shape(a)}, {a['heads']} heads"


def event_summary(records: list[dict], event: str, budget: int) -> dict | None:
    """analysis.time_to_event of these runs, with n; None when they do not record the event."""
    steps, reached = analysis.event_times(records, event, budget)
    return {"n": len(steps), **analysis.time_to_event(steps, reached, budget)} if len(steps) else None


def reached_text(s: dict) -> str:
    """'k/n' when not every run got there, else ''."""
    return f"{s['reached']}/{s['n']}" if s["reached"] < s["n"] else ""


def suptitle(fig, text: str) -> None:
    """A figure title wrapped to the figure's width (run labels can be long)."""
    chars = max(40, int(fig.get_figwidth() * 11))
    fig.suptitle(textwrap.fill(text, chars), fontsize=10)


def finish(fig, filename: str, bottom: float = 0.0) -> tuple:
    """Lay out a figure, leaving room for its wrapped title and `bottom` inches below (for a
    figure legend), and hand it to the saver."""
    title = fig.get_suptitle()
    top = 0.22 * (title.count("\n") + 1) if title else 0.0
    height = fig.get_figheight() + top + bottom  # the axes keep their own height
    fig.set_figheight(height)
    fig.tight_layout(rect=(0, bottom / height, 1, 1))  # tight_layout places the suptitle itself
    return fig, filename


def step_axis(ax, run: Run, label: bool = True) -> None:
    """The optimizer-step axis: log-scaled for a log evaluation schedule."""
    if label:
        ax.set_xlabel(STEP_LABEL + (" (log scale)" if run.log_steps else ""))
    if run.log_steps:
        ax.set_xscale("log")


def draw_runs(ax, steps: np.ndarray, values: np.ndarray, color, style: str = "-", lw: float = 0.8,
              alpha: float = 0.7, label: str | None = None) -> None:
    """One thin line per run (values: (runs, evals)), as one collection (fast with many runs)."""
    segments = [np.column_stack([steps, v]) for v in values]
    ax.add_collection(LineCollection(segments, colors=[color], linestyles=style, linewidths=lw, alpha=alpha,
                                     label=label))
    ax.autoscale_view()


def accuracy_axis(ax) -> None:
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)


def arch_styles(archs: list[dict]) -> dict[str, dict]:
    """How each architecture is drawn: a colour per shape (layers x d_model, tab10 up to 10 shapes,
    else viridis from small to large) and a line style per head count."""
    shapes = list(dict.fromkeys(arch_shape(a) for a in archs))
    heads = sorted({a["heads"] for a in archs})
    color = (lambda i: plt.get_cmap("tab10")(i)) if len(shapes) <= 10 else (
        lambda i: plt.get_cmap("viridis")(0.9 * i / (len(shapes) - 1)))
    return {a["name"]: {"color": color(shapes.index(arch_shape(a))),
                        "ls": HEAD_STYLES[heads.index(a["heads"]) % len(HEAD_STYLES)]} for a in archs}


def aspect_colors(archs: list[dict]):
    """Sequential colours from deep-narrow (dark) to wide-shallow (light) by d_model / layers."""
    ratios = sorted({a["aspect_ratio"] for a in archs})
    cmap = plt.get_cmap("viridis")
    position = {r: (i / max(len(ratios) - 1, 1)) * 0.9 for i, r in enumerate(ratios)}
    return lambda a: cmap(position[a["aspect_ratio"]])


HEAD_STYLES = ["-", "--", ":", "-."]
ACCURACY_FIGURE_ARCHITECTURES = 8  # runs with more architectures are read in the seeds figures


def arch_legend(fig, archs: list[dict], styles: dict, extra: list | None = None) -> float:
    """A legend of architectures under the figure; returns the inches it needs."""
    handles = [plt.Line2D([], [], **styles[a["name"]], label=arch_label(a)) for a in archs] + (extra or [])
    columns = min(len(handles), 5)
    fig.legend(handles=handles, loc="lower center", ncol=columns, fontsize=8, bbox_to_anchor=(0.5, 0))
    return 0.15 + 0.22 * math.ceil(len(handles) / columns)


# ======================================================================================
# Figures of curves: every run drawn
# ======================================================================================


def figure_curve(runs: list[Run], task: str, curve: str):
    """For one task and curve: every run of every folder (thin) and the median over a folder's
    runs at each step (thick), one colour per run folder and setting."""
    colors, title = plt.get_cmap("tab10"), CURVES[curve]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    lines = [(run, setting) for run in runs for setting in run.settings if run.rows(task=task, setting=setting)]
    for i, (run, setting) in enumerate(lines):
        values = run.curves[curve][run.rows(task=task, setting=setting)]
        draw_runs(ax, run.curves["step"], values, colors(i % 10), lw=0.5, alpha=0.25)
        label = textwrap.shorten(run.label, 80 - 12 * bool(setting)) + (f" [{setting}]" if setting else "")
        with np.errstate(all="ignore"):
            median = np.nanmedian(np.where(np.isfinite(values), values, np.nan), axis=0)
        ax.plot(run.curves["step"], median, color=colors(i % 10), lw=1.8, label=f"{label} ({len(values)} runs)")
        step_axis(ax, run)
    if curve.endswith("loss"):
        ax.set_yscale("log")
        ax.set_ylabel("cross-entropy loss (nats, log scale)")
    else:
        accuracy_axis(ax)
        ax.set_ylabel("accuracy (fraction correct)")
    ax.set_title(f"{title.capitalize()}: {TASK_TITLES.get(task, task)}\n(thin: every run; thick: the median over "
                 "a folder's runs at each step)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return finish(fig, f"{curve}_{task}.png")


def figure_accuracy(run: Run):
    """The picture of grokking, per task: training (dashed) and validation (solid) accuracy of
    every run, one colour per architecture."""
    archs = run.archs
    colors = {a["name"]: {"color": plt.get_cmap("tab10")(i % 10), "ls": "-"} for i, a in enumerate(archs)}
    fig, axes = plt.subplots(1, len(run.tasks), figsize=(max(6.5, 5.2 * len(run.tasks)), 4.2), squeeze=False)
    for ax, task in zip(axes[0], run.tasks):
        for a in archs:
            rows = run.rows(task=task, architecture=a["name"])
            for curve, style in (("train_acc", "--"), ("val_acc", "-")):
                draw_runs(ax, run.curves["step"], run.curves[curve][rows], colors[a["name"]]["color"], style, lw=1.1)
        accuracy_axis(ax)
        ax.set_ylabel("accuracy (fraction correct)")
        ax.set_title(TASK_TITLES.get(task, task))
        step_axis(ax, run)
    bottom = arch_legend(fig, archs, colors)
    suptitle(fig, f"{run.label}: training (dashed) and validation (solid) accuracy, one line per run "
                  "(architecture x seed)")
    return finish(fig, f"{run.name}_accuracy.png", bottom=bottom)


def figure_seeds(run: Run, task: str):
    """One panel per architecture: every seed's training (dashed) and validation (solid) accuracy,
    with the architecture's regime counts."""
    archs = run.archs
    columns = min(len(archs), 6)
    rows_ = math.ceil(len(archs) / columns)
    fig, axes = plt.subplots(rows_, columns, figsize=(2.6 * columns + 0.6, 2.0 * rows_ + 0.4), squeeze=False,
                             sharex=True, sharey=True)
    for ax, a in zip(axes.flat, archs):
        rows = run.rows(task=task, architecture=a["name"])
        draw_runs(ax, run.curves["step"], run.curves["train_acc"][rows], "tab:blue", "--", lw=0.9)
        draw_runs(ax, run.curves["step"], run.curves["val_acc"][rows], "tab:red", lw=0.9)
        regimes = [analysis.regime(run.records[r]) for r in rows]
        counts = ", ".join(f"{regimes.count(g)} {g}" for g in analysis.REGIMES if g in regimes)
        ax.set_title(f"{arch_label(a)}\n{counts}", fontsize=7.5)
        accuracy_axis(ax)
        step_axis(ax, run, label=False)
    for ax in axes.flat[len(archs):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel(STEP_LABEL, fontsize=8)
    suptitle(fig, f"{run.label}: {TASK_TITLES.get(task, task)}, every seed of every architecture: training "
                  "(blue, dashed) and validation (red) accuracy")
    return finish(fig, f"{run.name}_seeds_{task}.png")


def figure_survival(run: Run, task: str):
    """Kaplan-Meier estimates of the fraction of runs that memorized and grokked by each step, one
    curve per architecture; runs that never did are censored at the budget."""
    archs, styles = run.archs, arch_styles(run.archs)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, event in zip(axes, (MEMORIZE, GROK)):
        for a in archs:
            records = run.chosen(task=task, architecture=a["name"])
            steps, reached = analysis.event_times(records, event, run.budget)
            x, y = analysis.reached_curve(steps, reached, run.budget)
            ax.step(x, y, where="post", **styles[a["name"]], lw=1.3)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlim(0, run.budget)
        ax.grid(alpha=0.3)
        ax.set_title(analysis.EVENTS[event][1], fontsize=10)
        step_axis(ax, run)
    axes[0].set_ylabel("fraction of runs that got there")
    bottom = arch_legend(fig, archs, styles)
    suptitle(fig, f"{run.label}: {TASK_TITLES.get(task, task)}, time to memorization and to grokking "
                  f"(Kaplan-Meier; runs that never got there are censored at the budget, {run.budget} steps)")
    return finish(fig, f"{run.name}_survival_{task}.png", bottom=bottom)


def figure_regimes(run: Run):
    """Per task and architecture, how many runs grok, memorize only, fail to fit or diverge."""
    archs = run.archs
    fig, axes = plt.subplots(1, len(run.tasks), figsize=(4.2 * len(run.tasks) + 1.5, 0.32 * len(archs) + 1.4),
                             squeeze=False, sharey=True)
    for ax, task in zip(axes[0], run.tasks):
        left = np.zeros(len(archs))
        for regime, color in REGIME_COLORS.items():
            counts = np.array([sum(analysis.regime(r) == regime for r in run.chosen(task=task, architecture=a["name"]))
                               for a in archs])
            ax.barh(range(len(archs)), counts, left=left, color=color, label=regime)
            for y, (x, n) in enumerate(zip(left, counts)):
                if n:
                    ax.text(x + n / 2, y, str(n), ha="center", va="center", fontsize=7)
            left += counts
        ax.set_yticks(range(len(archs)), [arch_label(a) for a in archs], fontsize=8)
        ax.set_xlabel("runs")
        ax.set_title(TASK_TITLES.get(task, task), fontsize=10)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c, label=g) for g, c in REGIME_COLORS.items()]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, bbox_to_anchor=(0.5, 0))
    suptitle(fig, f"{run.label}: what became of each run (groks: validation > 99%; memorizes only: training > 99%, "
                  "validation never; fails to fit: neither; diverged: a NaN or infinite loss)")
    return finish(fig, f"{run.name}_regimes.png", bottom=0.4)


def figure_weight_norm(run: Run):
    """The global L2 norm of the weights of every run, per task, one colour per architecture."""
    archs, styles = run.archs, arch_styles(run.archs)
    fig, axes = plt.subplots(1, len(run.tasks), figsize=(max(6.5, 5.2 * len(run.tasks)), 4.2), squeeze=False)
    for ax, task in zip(axes[0], run.tasks):
        for a in archs:
            rows = run.rows(task=task, architecture=a["name"])
            draw_runs(ax, run.curves["step"], run.curves["weight_norm"][rows], styles[a["name"]]["color"],
                      styles[a["name"]]["ls"], lw=1.0)
        ax.set_title(TASK_TITLES.get(task, task))
        ax.set_ylabel("L2 norm of all weights")
        ax.grid(alpha=0.3)
        step_axis(ax, run)
    bottom = arch_legend(fig, archs, styles)
    suptitle(fig, f"{run.label}: weight norm, one line per run")
    return finish(fig, f"{run.name}_weight_norm.png", bottom=bottom)


def figure_capacity(run: Run, bucket: str):
    """In one capacity bucket, training and validation accuracy of every run, deep-narrow (dark)
    to wide-shallow (light), line style by heads."""
    heads = sorted({a["heads"] for a in run.architectures})
    archs = sorted((a for a in run.architectures if a["bucket"] == bucket), key=lambda a: (a["aspect_ratio"], a["heads"]))
    color = aspect_colors(archs)
    fig, axes = plt.subplots(len(run.tasks), 2, figsize=(12, 3.2 * len(run.tasks)), squeeze=False)
    for row, task in enumerate(run.tasks):
        for col, curve in enumerate(("train_acc", "val_acc")):
            ax = axes[row, col]
            for a in archs:
                rows = run.rows(task=task, architecture=a["name"])
                draw_runs(ax, run.curves["step"], run.curves[curve][rows], color(a),
                          HEAD_STYLES[heads.index(a["heads"]) % len(HEAD_STYLES)], lw=1.0)
            accuracy_axis(ax)
            ax.set_title(f"{TASK_TITLES.get(task, task)}: {CURVES[curve]}", fontsize=10)
            ax.set_ylabel("accuracy (fraction)")
            step_axis(ax, run, label=row == len(run.tasks) - 1)
    handles = [plt.Line2D([], [], color=color(a), ls=HEAD_STYLES[heads.index(a["heads"]) % 4], label=arch_label(a))
               for a in archs]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, bbox_to_anchor=(0.5, 0.0))
    suptitle(fig, f"{run.label}: {bucket} capacity bucket, one line per run. Colour: deep-narrow (dark) to "
                  "wide-shallow (light); line style: heads")
    return finish(fig, f"{run.name}_capacity_{bucket}.png", bottom=0.1 + 0.22 * math.ceil(len(handles) / 6))


PROGRESS_MEASURES = {"embedding_fourier_top5": "Fourier concentration of\nthe embeddings (top 5)",
                     "head_weight_norm": "head weight norm", "train_margin": "training logit margin",
                     "train_saturated": "training answers with\nsoftmax saturated in float32"}


def figure_progress(run: Run, task: str):
    """What changes inside before grokking: each progress measure (rows) against the step for
    every run of each shape (columns; line style by heads), with each run's memorization (circle)
    and grokking (star) marked on it. None when the runs do not record the measures."""
    rows = [m for m in PROGRESS_MEASURES if m in run.curves
            and np.isfinite(run.curves[m][run.rows(task=task)]).any()]
    if not rows:
        return None
    shapes = list(dict.fromkeys(arch_shape(a) for a in run.archs))
    heads = sorted({a["heads"] for a in run.archs})
    colors = plt.get_cmap("tab10")
    fig, axes = plt.subplots(len(rows), len(shapes), figsize=(2.7 * len(shapes) + 1.2, 1.9 * len(rows) + 0.6),
                             squeeze=False, sharex=True, sharey="row")
    steps = run.curves["step"]
    for col, shape in enumerate(shapes):
        for a in (a for a in run.archs if arch_shape(a) == shape):
            color, style = colors(heads.index(a["heads"]) % 10), HEAD_STYLES[heads.index(a["heads"]) % 4]
            for i in run.rows(task=task, architecture=a["name"]):
                r = run.records[i]
                for row, measure in enumerate(rows):
                    values = run.curves[measure][i]
                    axes[row, col].plot(steps, values, color=color, ls=style, lw=0.8, alpha=0.8)
                    for event, marker in ((MEMORIZE, "o"), (GROK, "*")):
                        flag = analysis.EVENTS[event][2]
                        if r.get(flag):
                            k = int(np.searchsorted(steps, r[event]))
                            axes[row, col].plot(steps[k], values[k], marker, color=color, ms=4 if marker == "o" else 7,
                                                mec="black", mew=0.4)
        axes[0, col].set_title(shape, fontsize=9)
        axes[-1, col].set_xlabel(STEP_LABEL, fontsize=8)
    for row, measure in enumerate(rows):
        axes[row, 0].set_ylabel(PROGRESS_MEASURES[measure], fontsize=8)
        for ax in axes[row]:
            ax.grid(alpha=0.3)
            if run.log_steps:
                ax.set_xscale("log")
    handles = [plt.Line2D([], [], color=colors(i % 10), ls=HEAD_STYLES[i % 4], label=f"{h} heads") for i, h in enumerate(heads)]
    handles += [plt.Line2D([], [], marker="o", color="gray", ls="", label="memorization"),
                plt.Line2D([], [], marker="*", color="gray", ls="", ms=8, label="grokking")]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, bbox_to_anchor=(0.5, 0))
    suptitle(fig, f"{run.label}: {TASK_TITLES.get(task, task)}, progress measures of every run, one column per "
                  "shape (layers x d_model)")
    return finish(fig, f"{run.name}_progress_{task}.png", bottom=0.4)


def figure_fourier(run: Run):
    """Left: for every run that grokked, the step at which its Fourier concentration made half its
    rise against its grokking step (below the diagonal: the circuit came first). Right: the key
    frequencies at the end against d_model, by depth. None without the measure."""
    records = [r for r in run.records if r.get("step_fourier_half") is not None]
    if not records:
        return None
    depths = sorted({r["layers"] for r in records})
    dims = sorted({r["d_model"] for r in records})
    colors = plt.get_cmap("tab10")
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4))
    grokked = [r for r in records if r["grokked"]]
    for r in grokked:
        left.plot(r["step_val_acc_99"], r["step_fourier_half"], DEPTH_MARKERS[depths.index(r["layers"]) % 6],
                  color=colors(dims.index(r["d_model"]) % 10), ms=5, alpha=0.8)
    left.plot([0, run.budget], [0, run.budget], color="gray", lw=0.8)
    leads = [r["fourier_lead"] for r in grokked]
    left.set_title(f"{sum(lead > 0 for lead in leads)} of {len(leads)} grokked runs: half the rise before grokking; "
                   f"median lead {np.median(leads) if leads else float('nan'):.0f} steps", fontsize=9)
    left.set_xlabel("grokking step (validation > 99%)")
    left.set_ylabel("step of half the Fourier concentration's rise")
    for r in records:
        jitter = 0.06 * (depths.index(r["layers"]) - (len(depths) - 1) / 2) + 0.02 * (r["seed"] % 5 - 2)
        right.plot(dims.index(r["d_model"]) + jitter, r["final_embedding_key_frequencies"],
                   DEPTH_MARKERS[depths.index(r["layers"]) % 6], color=colors(dims.index(r["d_model"]) % 10),
                   mfc="none" if not r["grokked"] else colors(dims.index(r["d_model"]) % 10), ms=5, alpha=0.8)
    right.set_xticks(range(len(dims)), [str(d) for d in dims])
    right.set_xlim(-0.5, len(dims) - 0.5)
    right.set_xlabel("d_model (markers: depth; open: never grokked)")
    right.set_ylabel("key frequencies at the end\n(fewest holding 90% of the power)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color="black", marker=DEPTH_MARKERS[i % 6], ls="", label=f"{d} layer" + "s" * (d > 1))
               for i, d in enumerate(depths)]
    handles += [plt.Line2D([], [], color=colors(i % 10), marker="s", ls="", label=f"d_model {d}") for i, d in enumerate(dims)]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, bbox_to_anchor=(0.5, 0))
    suptitle(fig, f"{run.label}: the Fourier circuit of the element embeddings (Nanda et al. 2023), every run "
                  "of the modular tasks")
    return finish(fig, f"{run.name}_fourier.png", bottom=0.4)


# ======================================================================================
# Figures of times to events: censored at the budget
# ======================================================================================

DEPTH_MARKERS = ["o", "s", "^", "D", "v", "P"]


def count_label(n: float) -> str:
    """A parameter count as a tick label: 950, 20K, 1.5M."""
    for size, suffix in ((1e6, "M"), (1e3, "K")):
        if n >= size:
            return f"{n / size:g}{suffix}"
    return f"{n:g}"


def parameter_axis(ax) -> None:
    """The x axis as log-scaled parameter counts (call after plotting), labelled at 1, 2 and 5 x
    10^k; a range too narrow for two of those (the demo's 108K-236K) gets round numbers between."""
    ax.set_xscale("log")
    low, high = ax.get_xlim()
    locator = matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0))
    if sum(low <= t <= high for t in locator.tick_values(low, high)) < 2:
        locator = matplotlib.ticker.MaxNLocator(nbins=6)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: count_label(v)))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("parameters (log scale)")


def figure_steps_vs_params(run: Run):
    """Restricted mean steps to memorization and grokking against parameter count; open markers
    and k/n where not every run got there."""
    depths = sorted({a["layers"] for a in run.architectures})
    fig, axes = plt.subplots(1, len(run.tasks), figsize=(max(9.0, 4.6 * len(run.tasks)), 4.2), squeeze=False, sharey=True)
    for ax, task in zip(axes[0], run.tasks):
        for a in run.architectures:
            records = run.chosen(task=task, architecture=a["name"])
            x = records[0]["parameter_count"] * (1 + 0.04 * (a["heads"] - 4) / 4)  # spread heads
            marker = DEPTH_MARKERS[depths.index(a["layers"]) % len(DEPTH_MARKERS)]
            for event, color in ((MEMORIZE, "tab:blue"), (GROK, "tab:red")):
                s = event_summary(records, event, run.budget)
                full = s["reached"] == s["n"]
                ax.errorbar(x, s["restricted_mean"], yerr=np.nan_to_num(s["restricted_mean_stderr"]), fmt=marker,
                            color=color, mfc=color if full else "none", ms=5, capsize=2)
                if not full:  # memorization's count below the point, grokking's above
                    ax.annotate(reached_text(s), (x, s["restricted_mean"]), textcoords="offset points",
                                xytext=(4, 3 if event == GROK else -9), fontsize=6, color=color)
        parameter_axis(ax)
        ax.set_ylim(0, run.budget * 1.08)
        ax.axhline(run.budget, color="gray", lw=0.8, ls="--")
        ax.set_title(TASK_TITLES.get(task, task))
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel(STEP_LABEL)
    legend = [plt.Line2D([], [], color="tab:blue", marker="o", ls="", label="memorization (train > 99%)"),
              plt.Line2D([], [], color="tab:red", marker="o", ls="", label="grokking (validation > 99%)"),
              plt.Line2D([], [], color="gray", marker="o", mfc="none", ls="", label="open, k/n: not every run got there"),
              plt.Line2D([], [], color="gray", ls="--", label=f"budget ({run.budget} steps)")]
    legend += [plt.Line2D([], [], color="black", marker=DEPTH_MARKERS[i % 6], ls="", label=f"{d} layer" + ("s" if d > 1 else ""))
               for i, d in enumerate(depths)]
    # Two rows, filled column by column: the long labels pair up, and a one-task figure holds them.
    fig.legend(handles=legend, fontsize=8, loc="lower center", ncol=math.ceil(len(legend) / 2), bbox_to_anchor=(0.5, 0))
    suptitle(fig, f"{run.label}: steps to memorization and grokking vs size ({RESTRICTED})")
    return finish(fig, f"{run.name}_steps_vs_params.png", bottom=0.1 + 0.25 * 2)


def figure_heatmap(run: Run, task: str):
    """For one task, the restricted mean grokking step (with k/n) and the fraction of runs that
    grokked over layers x d_model, one column per head count."""
    layers = sorted({a["layers"] for a in run.architectures})
    dims = sorted({a["d_model"] for a in run.architectures})
    heads = sorted({a["heads"] for a in run.architectures})
    fig, axes = plt.subplots(2, len(heads), figsize=(3.6 * len(heads) + 1, 6.4), squeeze=False)
    for col, h in enumerate(heads):
        step = np.full((len(layers), len(dims)), np.nan)
        fraction, counts = np.full_like(step, np.nan), {}
        for a in run.architectures:
            if a["heads"] == h:
                s = event_summary(run.chosen(task=task, architecture=a["name"]), GROK, run.budget)
                i, j = layers.index(a["layers"]), dims.index(a["d_model"])
                step[i, j], fraction[i, j], counts[i, j] = s["restricted_mean"], s["reached"] / s["n"], reached_text(s)
        for row, (values, title, cmap, vmax) in enumerate((
                (step, "restricted mean grokking step (k/n)", "magma_r", run.budget),
                (fraction, "fraction of runs grokked", "Greens", 1))):
            ax = axes[row, col]
            image = ax.imshow(values, cmap=cmap, vmin=0, vmax=vmax, origin="lower", aspect="auto")
            for (i, j), v in np.ndenumerate(values):
                text = "" if np.isnan(v) else (f"{v:.0f}\n{counts[i, j]}".strip() if row == 0 else f"{v:.2f}")
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="black" if np.isnan(v) or v / vmax < 0.6 else "white")
            ax.set_xticks(range(len(dims)), [str(d) for d in dims])
            ax.set_yticks(range(len(layers)), [str(n) for n in layers])
            ax.set_xlabel("d_model")
            ax.set_ylabel("layers")
            ax.set_title(f"{h} heads: {title}", fontsize=9)
            fig.colorbar(image, ax=ax, shrink=0.8)
    suptitle(fig, f"{run.label}: {TASK_TITLES.get(task, task)} (never-grokked runs count at the budget, "
                  f"{run.budget})")
    return finish(fig, f"{run.name}_heatmap_{task}.png")


def figure_axis(run: Run, axis: str):
    """Restricted mean steps to memorization and grokking against one non-architecture axis (batch
    size, prime, ...), one line per architecture and value of the other varied axes."""
    values = sorted(run.axes[axis])
    others = lambda r: ", ".join(f"{a}={r[a]}" for a in run.axes if a != axis)  # the other varied axes
    lines = list(dict.fromkeys((r["architecture"], others(r)) for r in run.records))
    colors = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, len(run.tasks), figsize=(max(7.0, 4.6 * len(run.tasks)), 4.2), squeeze=False, sharey=True)
    for ax, task in zip(axes[0], run.tasks):
        for i, (arch, rest) in enumerate(lines):
            records = [r for r in run.chosen(task=task, architecture=arch) if others(r) == rest]
            for event, style in ((GROK, "-"), (MEMORIZE, "--")):
                s = [event_summary([r for r in records if r[axis] == v], event, run.budget) for v in values]
                ax.errorbar(values, [x["restricted_mean"] for x in s], yerr=[np.nan_to_num(x["restricted_mean_stderr"])
                                                                           for x in s],
                            color=colors(i % 10), ls=style, marker="o", ms=4, capsize=2,
                            label=", ".join(filter(None, (arch, rest))) if event == GROK else None)
                for v, x in zip(values, s):
                    if reached_text(x):
                        ax.annotate(reached_text(x), (v, x["restricted_mean"]), textcoords="offset points",
                                    xytext=(4, 3), fontsize=6, color=colors(i % 10))
        if min(values) > 0 and max(values) / min(values) >= 4:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xticks(values, [f"{v:g}" for v in values])
        ax.axhline(run.budget, color="gray", lw=0.8, ls=":")
        ax.set_ylim(0, run.budget * 1.08)
        ax.set_xlabel(axis)
        ax.set_title(TASK_TITLES.get(task, task))
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel(STEP_LABEL)
    axes[0, 0].legend(fontsize=8)
    suptitle(fig, f"{run.label}: steps to grokking (solid) and memorization (dashed) against {axis} ({RESTRICTED})")
    return finish(fig, f"{run.name}_axis_{axis}.png")


# ======================================================================================
# Figures of comparisons: pairs of runs that share a seed
# ======================================================================================


def figure_paired(run: Run, summary: dict):
    """Every comparison of a run folder's grid (all its runs pooled, and per setting), at every
    threshold: the
    share of pairs in which a got there first (blue), the same step or both never (gray), b first
    (orange), with the sign test's p and its q (adjusted for the study's many comparisons)."""
    events = [e for e in analysis.EVENTS if any(c["event"] == e for c in summary["comparisons"])]
    chosen = [c for c in summary["comparisons"] if c["scope"] == "all" or c["scope"].startswith("setting")]
    keys = list(dict.fromkeys((c["family"], c["a"], c["b"], c["scope"]) for c in chosen))
    if not keys:
        return None
    found = {(c["family"], c["a"], c["b"], c["scope"], c["event"]): c for c in chosen}
    fig, axes = plt.subplots(1, len(events), figsize=(3.3 * len(events) + 3.5, 0.36 * len(keys) + 1.6),
                             squeeze=False, sharey=True)
    for ax, event in zip(axes[0], events):
        for y, key in enumerate(keys):
            c = found.get((*key, event))
            if c is None:
                continue
            left = 0.0
            for count, color in ((c["wins"], "tab:blue"), (c["ties"], "lightgray"), (c["losses"], "tab:orange")):
                ax.barh(y, count / c["pairs"], left=left, color=color)
                left += count / c["pairs"]
            ax.text(1.02, y, f"p={c['p']:.2g} q={c['q']:.2g}" + (" *" if c["q"] < analysis.SIGNIFICANCE else ""),
                    va="center", fontsize=7)
        ax.set_xlim(0, 1.75)
        ax.set_xticks([0, 0.5, 1])
        ax.axvline(0.5, color="black", lw=0.5)
        ax.set_title(analysis.EVENTS[event][1], fontsize=9)
        ax.set_xlabel("share of pairs", fontsize=8)
    scope = lambda s: "" if s == "all" else f" [{s.split(' ', 1)[1]}]"
    axes[0, 0].set_yticks(range(len(keys)), [f"{f}:\n{a} vs {b}{scope(s)}" for f, a, b, s in keys], fontsize=7)
    axes[0, 0].invert_yaxis()
    suptitle(fig, f"{run.label}: paired comparisons (same task, seed, setting and other dimensions). Blue: the first "
                  "named got there first; gray: same step or both never; orange: the second first. p: exact "
                  "two-sided sign test over the pairs that differ; q: p adjusted for all of the study's comparisons "
                  f"(Benjamini-Hochberg); * q < {analysis.SIGNIFICANCE}")
    return finish(fig, f"{run.name}_paired.png")


def figure_deep_vs_wide(run: Run):
    """Per matched pair of shapes: the grokking-step difference deep - wide of every pair of runs
    (same task, seed, heads), open where either never grokked (a bound), and the sign test."""
    pairs = analysis.matched_pairs(run.architectures)
    if not pairs:
        return None
    heads = sorted({a["heads"] for a in run.architectures})
    colors = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.5 * len(pairs), 4.2), squeeze=False, sharey=True)
    for ax, (deep, wide) in zip(axes[0], pairs):
        is_shape = lambda shape: lambda r: (r["layers"], r["d_model"]) == (shape["layers"], shape["d_model"])
        key = lambda r: (r["task"], r["setting"], r["seed"], r["heads"])
        found = analysis.pair_differences(run.records, GROK, run.budget, is_shape(deep), is_shape(wide), key)
        for (task, _, seed, h), difference, censored in found:
            x = run.tasks.index(task) + 0.2 * (heads.index(h) - (len(heads) - 1) / 2) + 0.03 * (seed % 5 - 2)
            ax.plot(x, difference, "o", color=colors(heads.index(h) % 10), mfc="none" if censored else colors(heads.index(h) % 10), ms=5)
        test = analysis.sign_test(np.array([d for _, d, _ in found]))
        ax.axhline(0, color="gray", lw=0.8)
        ax.set_xticks(range(len(run.tasks)), [TASK_TITLES.get(t, t) for t in run.tasks], rotation=15, fontsize=8)
        ax.set_title(f"{arch_shape(deep)} ({deep['parameter_count'] / 1e3:.0f}K) minus {arch_shape(wide)} "
                     f"({wide['parameter_count'] / 1e3:.0f}K)\ndeep first in {test['wins']}, wide first in "
                     f"{test['losses']}, ties {test['ties']} of {test['pairs']} pairs; sign test p={test['p']:.2g}",
                     fontsize=9)
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color=colors(i % 10), marker="o", ls="", label=f"{h} heads") for i, h in enumerate(heads)]
    handles.append(plt.Line2D([], [], color="gray", marker="o", mfc="none", ls="", label="open: one never grokked"))
    axes[0, 0].legend(handles=handles, fontsize=8)
    axes[0, 0].set_ylabel("grokking step, deep - wide\n(> 0: the wide-shallow run groks first)")
    suptitle(fig, f"{run.label}: deep-narrow vs wide-shallow at matched size, one point per pair of runs that "
                  f"share task, seed and heads (never = the budget, {run.budget})")
    return finish(fig, f"{run.name}_deep_vs_wide.png")


def figure_stability(run: Run):
    """Per architecture, the drops of validation accuracy to 99% or below after grokking, per run
    that grokked: with training accuracy still above 99% (generalization lost) and with it at or
    below 99% too (optimization unstable). None for runs that do not record the two kinds."""
    archs = run.archs
    if not any("val_only_drops_after_grok" in r for r in run.records):
        return None
    fig, axes = plt.subplots(len(run.tasks), 1, figsize=(max(6, 0.42 * len(archs) + 2), 2.6 * len(run.tasks)),
                             squeeze=False, sharex=True)
    for ax, task in zip(axes[:, 0], run.tasks):
        for x, a in enumerate(archs):
            records = [r for r in run.chosen(task=task, architecture=a["name"])
                       if r.get("val_only_drops_after_grok") is not None]
            if records:
                val_only = np.mean([r["val_only_drops_after_grok"] for r in records])
                joint = np.mean([r["joint_drops_after_grok"] for r in records])
                ax.bar(x, val_only, color="tab:purple")
                ax.bar(x, joint, bottom=val_only, color="tab:gray")
            grokked = sum(r["grokked"] for r in run.chosen(task=task, architecture=a["name"]))
            ax.text(x, 0, f"{grokked}", ha="center", va="bottom", fontsize=7)
        ax.set_xlim(-0.6, len(archs) - 0.4)
        ax.set_ylabel("drops per run")
        ax.set_title(f"{TASK_TITLES.get(task, task)} (number at the base: runs that grokked)", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    handles = [plt.Rectangle((0, 0), 1, 1, color="tab:purple", label="validation drops, training held (generalization lost)"),
               plt.Rectangle((0, 0), 1, 1, color="tab:gray", label="both drop (optimization unstable)")]
    axes[0, 0].legend(handles=handles, fontsize=7)
    axes[-1, 0].set_xticks(range(len(archs)), [f"{arch_shape(a)}h{a['heads']}" for a in archs], rotation=90, fontsize=8)
    axes[-1, 0].set_xlabel("architecture (layers x d_model, heads), by parameter count")
    suptitle(fig, f"{run.label}: after grokking, how often validation accuracy falls to 99% or below, and whether "
                  "training accuracy falls with it (mean over the runs that grokked)")
    return finish(fig, f"{run.name}_stability.png")


# ======================================================================================
# Tables: summary.md and summary.json
# ======================================================================================


def fmt(mean: float, stderr: float) -> str:
    """'mean ± stderr', the mean alone for one run, '-' for none."""
    if mean is None or not np.isfinite(mean):
        return "-"
    return f"{mean:.0f} ± {stderr:.0f}" if np.isfinite(stderr) else f"{mean:.0f}"


def event_cell(row: dict, name: str) -> str:
    """A row's restricted mean for an event with k/n when not every run got there."""
    if f"restricted_mean_{name}" not in row:
        return "-"
    k = row[f"{name}_reached"]
    return fmt(row[f"restricted_mean_{name}"], row[f"restricted_mean_{name}_stderr"]) + (
        f" ({k}/{row['n']})" if k < row["n"] else "")


def comparison_cell(c: dict | None) -> str:
    if c is None:
        return "-"
    cell = f"{c['wins']}-{c['losses']} ({c['ties']} tied, {c['censored']} censored), p={c['p']:.2g}, q={c['q']:.2g}"
    return f"**{cell}**" if c["q"] < analysis.SIGNIFICANCE else cell


def summary_table(runs: list[Run], summaries: dict[str, dict]) -> str:
    lines = ["# Summary", "",
             "Steps are restricted means up to the budget (a run that never got there counts at the budget) ± "
             "standard error, with k/n where not every run got there; median: the step by which half the runs had "
             "grokked. Regimes: groks / memorizes only / fails to fit / diverged. Drops after grokking, per run that "
             "grokked: validation alone (generalization lost) / with training (optimization unstable).", ""]
    for run in runs:
        summary = summaries[run.name]
        lines += [f"## {run.label}", "",
                  "| task | setting | architecture | parameters | bucket | regimes | memorization step | grokking step "
                  "| median grokking step | drops val-only / joint |", "|---|---|---|---|---|---|---|---|---|---|"]
        for row in summary["rows"]:
            regimes = "/".join(str(row[g.replace(" ", "_")]) for g in analysis.REGIMES)
            median = row.get("median_grok")
            drops = (f"{row['val_only_drops_after_grok']:.1f} / {row['joint_drops_after_grok']:.1f}"
                     if "joint_drops_after_grok" in row else "-")
            lines.append(f"| {row['task']} | {row['setting'] or '-'} | {row['architecture']} | {row['parameter_count']:,} | {row['bucket']} "
                         f"| {regimes} | {event_cell(row, 'memorize')} | {event_cell(row, 'grok')} "
                         f"| {'-' if median is None else f'{median:.0f}'} | {drops} |")
        comparisons = summary["comparisons"]
        if comparisons:
            events = [e for e in analysis.EVENTS if any(c["event"] == e for c in comparisons)]
            lines += ["", "Paired comparisons (pairs share task, seed, setting and the other dimensions): "
                      "a-b = pairs in which the first named got there first - the second; censored: pairs with a "
                      "run that never got there (counted at the budget); p: exact two-sided sign test; q: p adjusted "
                      "for all of this study's comparisons (Benjamini-Hochberg), **bold** at q < "
                      f"{analysis.SIGNIFICANCE}; threshold-sensitive: the direction or the significance is not the "
                      "same at 50%, 90% and 99% validation accuracy.", "",
                      "| comparison | runs | " + " | ".join(analysis.EVENTS[e][1] for e in events)
                      + " | threshold-sensitive |", "|---|---|" + "---|" * (len(events) + 1)]
            found = {(c["family"], c["a"], c["b"], c["scope"], c["event"]): c for c in comparisons}
            for key in dict.fromkeys((c["family"], c["a"], c["b"], c["scope"]) for c in comparisons):
                cells = [comparison_cell(found.get((*key, e))) for e in events]
                sensitive = any(found.get((*key, e), {}).get("threshold_sensitive") for e in events)
                lines.append(f"| {key[0]}: {key[1]} vs {key[2]} | {key[3]} | " + " | ".join(cells)
                             + f" | {'yes' if sensitive else ''} |")
        lines.append("")
    return "\n".join(lines)


# ======================================================================================
# Main
# ======================================================================================


def figure_jobs(runs: list[Run], views: list[Run], summaries: dict[str, dict]) -> list:
    """Every figure to draw, as a call that returns (figure, file name) or None: the curve
    figures over every run folder, the axis and paired figures per run folder, the rest per view
    (per setting of the other axes)."""
    tasks = list(dict.fromkeys(t for run in runs for t in run.tasks))
    jobs = [functools.partial(figure_curve, runs, task, curve) for task in tasks for curve in CURVES]
    jobs += [functools.partial(figure_axis, run, axis) for run in runs for axis in run.axes]
    jobs += [functools.partial(figure_paired, run, summaries[run.name]) for run in runs if len(run.architectures) > 1]
    for run in views:
        if len(run.architectures) <= ACCURACY_FIGURE_ARCHITECTURES:
            jobs.append(functools.partial(figure_accuracy, run))
        jobs += [functools.partial(figure_progress, run, task) for task in run.tasks]
        jobs.append(functools.partial(figure_fourier, run))
        if len(run.architectures) < 2:  # the rest compare architectures
            continue
        jobs += [functools.partial(figure, run, task) for task in run.tasks
                 for figure in (figure_seeds, figure_survival, figure_heatmap)]
        jobs += [functools.partial(figure_capacity, run, bucket)
                 for bucket in dict.fromkeys(a["bucket"] for a in run.architectures)]
        jobs += [functools.partial(figure, run) for figure in (figure_regimes, figure_weight_norm,
                                                               figure_steps_vs_params, figure_deep_vs_wide,
                                                               figure_stability)]
    return jobs


_JOBS: list = []  # the jobs of draw_all, inherited by its forked workers


def _draw(index: int, out: str) -> str | None:
    drawn = _JOBS[index]()
    if drawn is None:
        return None
    fig, filename = drawn
    path = os.path.join(out, filename)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def draw_all(jobs: list, out: str) -> list[str]:
    """Draw the figures, in parallel on every core where processes can be forked (rendering is
    most of plot.py's time); the workers inherit the runs instead of receiving copies."""
    global _JOBS
    _JOBS = jobs
    workers = min(len(jobs), len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            paths = pool.starmap(_draw, [(i, out) for i in range(len(jobs))], chunksize=1)
    else:
        paths = [_draw(i, out) for i in range(len(jobs))]
    return [p for p in paths if p]


class UsageError(Exception):
    """Bad input: one line on stderr and exit code 2, before any figure is written."""


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


def main(argv: list[str] | None = None) -> int:
    try:
        parsed = parse_args(sys.argv[1:] if argv is None else argv)
        if parsed is None:
            print(__doc__.strip())
            return 0
        only, out = parsed
        runs = discover_runs(".", only)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not runs:
        print("no run to draw: run experiment.py --out_dir=run_0 first")
        return 0
    os.makedirs(out, exist_ok=True)
    views = [view for run in runs for view in setting_views(run)]
    summaries = {run.name: analysis.summarize(run.records, run.architectures, run.budget, run.name) for run in runs}
    written = draw_all(figure_jobs(runs, views, summaries), out)
    table = summary_table(runs, summaries)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(out, "summary.json"), "w") as f:  # every study's rows and comparisons, one list each
        json.dump({key: [entry for s in summaries.values() for entry in s[key]] for key in ("rows", "comparisons")},
                  f, indent=1)
    print(table)
    print(f"wrote {len(written)} figures, summary.md and summary.json to {os.path.abspath(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
