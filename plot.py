"""Figures and summary tables of every run_*/ folder written by experiment.py.

    python plot.py                              # every run_<n>/ with a final_info.json
    python plot.py --runs=run_0,studies/demo --out=figures   # chosen run folders, figures elsewhere
    python plot.py --help

Figures (PNG, written to --out, default the current folder; notes.txt says how to read them):
  {train_loss,val_loss,train_acc,val_acc}_{task}.png   every run's mean curve, stderr band
  {run}_accuracy.png                training and validation accuracy of each architecture per task:
                                    the picture of grokking (runs of up to 8 architectures)
  {run}_capacity_{bucket}.png       accuracy trajectories inside a capacity bucket, deep-narrow
                                    to wide-shallow, with mean memorization/grokking markers
  {run}_steps_vs_params.png         steps to memorization and grokking against parameter count
  {run}_heatmap_{task}.png          mean grokking step and fraction grokked over layers x d_model
  {run}_deep_vs_wide.png            grokking-step difference at matched capacity, bootstrap 95% CI
  {run}_stability.png               fraction of evaluations that stay > 99% after grokking
  {run}_axis_{axis}.png             steps to memorization and grokking against a varied
                                    non-architecture axis (batch_size, prime, lr, ...)
Figures 2-6 are drawn for runs that hold more than one architecture; when a run also varied
other axes, once per setting, named {run}_{setting} (e.g. run_2_bs64_capacity_small.png).
Figure 1 draws one line per run and setting.
Table: summary.md (also printed), ready to paste into notes.txt.
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

from runner import mean_stderr  # noqa: E402  (the one mean / standard-error definition, shared with experiment.py)

# Optional: rename and select runs, as in the AI-Scientist template, e.g.
# labels = {"run_0": "Baseline", "run_1": "Weight decay 1.0"}.
# When it is not empty, only the runs it names are drawn; the others are listed as left out.
labels: dict[str, str] = {}

FORMAT_VERSION = 1  # the experiment.py output format this script reads
TASK_TITLES = {"x_div_y": "x / y (mod p)", "x_minus_y": "x - y (mod p)", "x_plus_y": "x + y (mod p)",
               "permutation": "composition in S_k"}
CURVES = {"train_loss": "training loss", "val_loss": "validation loss",
          "train_acc": "training accuracy", "val_acc": "validation accuracy"}
STEP_LABEL = "optimizer step"
MATCH_RATIO = 1.1  # two architectures of different depth are "matched" within 10% parameters
BOOTSTRAP_SAMPLES = 10_000
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
    def tasks(self) -> list[str]:
        return list(dict.fromkeys(r["task"] for r in self.records))

    def rows(self, **match) -> list[int]:
        """Indices of the records whose fields equal `match`."""
        return [i for i, r in enumerate(self.records) if all(r[k] == v for k, v in match.items())]


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
# Statistics
# ======================================================================================


def grokking_summary(records: list[dict], budget: int) -> dict:
    """Memorization and grokking of the seeds of one architecture, with censoring: the grokking
    step is averaged over the seeds that grokked only; the others are counted, not averaged.
    Means and standard errors are floats, NaN where undefined (no seed; one seed for stderr)."""
    grok = [r["step_val_acc_99"] for r in records if r["grokked"]]
    mem = [r["step_train_acc_99"] for r in records if r["memorized"]]
    stable = [r["stable_fraction"] for r in records if r.get("stable_fraction") is not None]
    summary = {"n": len(records), "grokked": len(grok), "memorized": len(mem), "budget": budget}
    for key, values in (("grok", grok), ("mem", mem), ("stable", stable)):
        summary[key] = tuple(float(v) for v in mean_stderr(values))
    return summary


def paired_bootstrap(deep: dict[int, float], wide: dict[int, float], seed: int = 0):
    """Mean difference deep - wide over the seeds both have (a seed fixes the data split and
    the batches, so the pairs share their data) and its bootstrap 95% interval."""
    seeds = sorted(set(deep) & set(wide))
    diffs = np.array([deep[s] - wide[s] for s in seeds], dtype=float)
    if len(diffs) == 0:
        return None
    rng = np.random.default_rng(seed)
    resampled = diffs[rng.integers(0, len(diffs), (BOOTSTRAP_SAMPLES, len(diffs)))].mean(axis=1)
    low, high = np.percentile(resampled, [2.5, 97.5])
    return diffs.mean(), low, high, len(diffs)


def matched_pairs(architectures: list[dict]) -> list[tuple[dict, dict]]:
    """(deep-narrow, wide-shallow) pairs with the same heads, more layers on the narrower side,
    and parameter counts within MATCH_RATIO of each other."""
    pairs = []
    for deep in architectures:
        for wide in architectures:
            if (deep["heads"] == wide["heads"] and deep["layers"] > wide["layers"]
                    and deep["d_model"] < wide["d_model"]
                    and max(deep["parameter_count"], wide["parameter_count"])
                    <= MATCH_RATIO * min(deep["parameter_count"], wide["parameter_count"])):
                pairs.append((deep, wide))
    return pairs


def arch_shape(a: dict) -> str:
    return f"{a['layers']}x{a['d_model']}"


# ======================================================================================
# Figures
# ======================================================================================


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


def step_axis(ax, run: Run) -> None:
    """Label the optimizer-step axis; log-scaled for a log evaluation schedule."""
    ax.set_xlabel(STEP_LABEL + (" (log scale)" if run.log_steps else ""))
    if run.log_steps:
        ax.set_xscale("log")


def figure_curve(runs: list[Run], task: str, curve: str):
    """Figure 1: for one task and curve, every run's mean over its seeds (and architectures),
    one line per value of the axes the run varied."""
    colors, title = plt.get_cmap("tab10"), CURVES[curve]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    lines = [(run, setting) for run in runs for setting in run.settings if run.rows(task=task, setting=setting)]
    for i, (run, setting) in enumerate(lines):
        rows = run.rows(task=task, setting=setting)
        archs = len({run.records[r]["architecture"] for r in rows})
        mean, stderr = mean_stderr(run.curves[curve][rows])
        label = textwrap.shorten(run.label, 90 - 12 * bool(setting) - 30 * (archs > 1)) + (
            f" [{setting}]" if setting else "") + (f" (mean of {archs} architectures)" if archs > 1 else "")
        ax.plot(run.curves["step"], mean, color=colors(i % 10), label=label, lw=1.3)
        ax.fill_between(run.curves["step"], mean - stderr, mean + stderr, color=colors(i % 10),
                        alpha=0.2, lw=0)
        step_axis(ax, run)
    if curve.endswith("loss"):
        ax.set_yscale("log")
        ax.set_ylabel("cross-entropy loss (nats, log scale)")
    else:
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("accuracy (fraction correct)")
    ax.set_title(f"{title.capitalize()}: {TASK_TITLES.get(task, task)}\n(mean ± s.e. over seeds)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return finish(fig, f"{curve}_{task}.png")


def aspect_colors(archs: list[dict]):
    """Sequential colours from deep-narrow (dark) to wide-shallow (light) by d_model / layers."""
    ratios = sorted({a["aspect_ratio"] for a in archs})
    cmap = plt.get_cmap("viridis")
    position = {r: (i / max(len(ratios) - 1, 1)) * 0.9 for i, r in enumerate(ratios)}
    return lambda a: cmap(position[a["aspect_ratio"]])


HEAD_STYLES = ["-", "--", ":", "-."]
ACCURACY_FIGURE_ARCHITECTURES = 8  # runs with more architectures are read in the capacity figures


def figure_accuracy(run: Run):
    """Figure 1b: the picture of grokking, per task: training (dashed) and validation (solid)
    accuracy of every architecture of the run, mean over seeds, with mean memorization and
    grokking steps marked."""
    budget = run.config["num_steps"]
    archs = sorted(run.architectures, key=lambda a: (a["parameter_count"], a["heads"]))
    colors = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, len(run.tasks), figsize=(max(6.5, 5.2 * len(run.tasks)), 4.2), squeeze=False)
    for ax, task in zip(axes[0], run.tasks):
        for i, a in enumerate(archs):
            rows = run.rows(task=task, architecture=a["name"])
            s = grokking_summary([run.records[r] for r in rows], budget)
            label = f"{arch_shape(a)}, {a['heads']} heads ({a['parameter_count'] / 1e3:.0f}K)"
            for curve, style, key in (("train_acc", "--", "mem"), ("val_acc", "-", "grok")):
                ax.plot(run.curves["step"], mean_stderr(run.curves[curve][rows])[0], color=colors(i % 10), ls=style,
                        lw=1.4, label=label if curve == "val_acc" else None)
                if np.isfinite(s[key][0]):
                    ax.plot(s[key][0], 0.99, marker="o", color=colors(i % 10), ms=5, mec="black", mew=0.5)
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("accuracy (fraction correct)")
        ax.set_title(TASK_TITLES.get(task, task))
        step_axis(ax, run)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")  # where the curves leave room: grokking leaves the middle empty
    suptitle(fig, f"{run.label}: training (dashed) and validation (solid) accuracy, mean over seeds; dots: mean "
                  "memorization and grokking steps over the seeds that reached 99%")
    return finish(fig, f"{run.name}_accuracy.png")


def figure_capacity(run: Run, bucket: str):
    """Figure 2: in one capacity bucket, train and validation accuracy of every architecture."""
    budget = run.config["num_steps"]
    heads = sorted({a["heads"] for a in run.architectures})
    archs = sorted((a for a in run.architectures if a["bucket"] == bucket),
                   key=lambda a: (a["aspect_ratio"], a["heads"]))
    color = aspect_colors(archs)
    fig, axes = plt.subplots(len(run.tasks), 2, figsize=(12, 3.2 * len(run.tasks)), squeeze=False)
    for row, task in enumerate(run.tasks):
        for col, (curve, marker_key) in enumerate((("train_acc", "mem"), ("val_acc", "grok"))):
            ax = axes[row, col]
            for a in archs:
                rows = run.rows(task=task, architecture=a["name"])
                mean, _ = mean_stderr(run.curves[curve][rows])
                style = HEAD_STYLES[heads.index(a["heads"]) % len(HEAD_STYLES)]
                ax.plot(run.curves["step"], mean, color=color(a), ls=style, lw=1.2,
                        label=f"{arch_shape(a)}, {a['heads']} heads")
                step = grokking_summary([run.records[r] for r in rows], budget)[marker_key][0]
                if np.isfinite(step):
                    ax.plot(step, 0.99, marker="o", color=color(a), ms=5, mec="black", mew=0.5)
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
            ax.set_title(f"{TASK_TITLES.get(task, task)}: {CURVES[curve]}", fontsize=10)
            ax.set_ylabel("accuracy (fraction)")
            if row == len(run.tasks) - 1:
                step_axis(ax, run)
            elif run.log_steps:
                ax.set_xscale("log")
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 6), fontsize=8,
               bbox_to_anchor=(0.5, 0.0))
    suptitle(fig, f"{run.label}: {bucket} capacity bucket. Colour: deep-narrow (dark) to "
                  "wide-shallow (light); line style: heads; dots: mean memorization (left) and "
                  "grokking (right) step over the seeds that reached 99%")
    return finish(fig, f"{run.name}_capacity_{bucket}.png", bottom=0.1 + 0.22 * math.ceil(len(names) / 6))


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
    """Figure 3: memorization and grokking step against parameter count; censored seeds open."""
    budget = run.config["num_steps"]
    depths = sorted({a["layers"] for a in run.architectures})
    fig, axes = plt.subplots(1, len(run.tasks), figsize=(max(9.0, 4.6 * len(run.tasks)), 4.2), squeeze=False, sharey=True)
    for ax, task in zip(axes[0], run.tasks):
        for a in run.architectures:
            rows = run.rows(task=task, architecture=a["name"])
            records = [run.records[r] for r in rows]
            s = grokking_summary(records, budget)
            x = records[0]["parameter_count"] * (1 + 0.04 * (a["heads"] - 4) / 4)  # spread heads
            marker = DEPTH_MARKERS[depths.index(a["layers"]) % len(DEPTH_MARKERS)]
            for key, color, count in (("mem", "tab:blue", s["memorized"]), ("grok", "tab:red", s["grokked"])):
                if count:
                    ax.errorbar(x, s[key][0], yerr=np.nan_to_num(s[key][1]), fmt=marker, color=color, ms=5, capsize=2)
                if count < s["n"]:  # censored seeds: never reached within the budget
                    ax.plot(x, budget, marker=marker, mfc="none", color=color, ms=7)
        parameter_axis(ax)
        ax.set_ylim(0, budget * 1.05)
        ax.axhline(budget, color="gray", lw=0.8, ls="--")
        ax.set_title(TASK_TITLES.get(task, task))
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel(STEP_LABEL)
    legend = [plt.Line2D([], [], color="tab:blue", marker="o", ls="", label="memorization (train > 99%)"),
              plt.Line2D([], [], color="tab:red", marker="o", ls="", label="grokking (validation > 99%)"),
              plt.Line2D([], [], color="gray", marker="o", mfc="none", ls="", label="some seeds never: open at budget"),
              plt.Line2D([], [], color="gray", ls="--", label=f"budget ({budget} steps)")]
    legend += [plt.Line2D([], [], color="black", marker=DEPTH_MARKERS[i % 6], ls="", label=f"{d} layer" + ("s" if d > 1 else ""))
               for i, d in enumerate(depths)]
    # Two rows, filled column by column: the long labels pair up, and a one-task figure holds them.
    fig.legend(handles=legend, fontsize=8, loc="lower center", ncol=math.ceil(len(legend) / 2), bbox_to_anchor=(0.5, 0))
    suptitle(fig, f"{run.label}: steps to memorization and grokking vs size (mean ± s.e. over the "
                  "seeds that reached 99%; open markers: seeds that never did)")
    return finish(fig, f"{run.name}_steps_vs_params.png", bottom=0.1 + 0.25 * 2)


def figure_heatmap(run: Run, task: str):
    """Figure 4: for one task, mean grokking step and fraction grokked over layers x d_model."""
    budget = run.config["num_steps"]
    layers = sorted({a["layers"] for a in run.architectures})
    dims = sorted({a["d_model"] for a in run.architectures})
    heads = sorted({a["heads"] for a in run.architectures})
    fig, axes = plt.subplots(2, len(heads), figsize=(3.6 * len(heads) + 1, 6.4), squeeze=False)
    for col, h in enumerate(heads):
        step = np.full((len(layers), len(dims)), np.nan)
        fraction = np.full_like(step, np.nan)
        for a in run.architectures:
            if a["heads"] != h:
                continue
            s = grokking_summary([run.records[r] for r in run.rows(task=task, architecture=a["name"])], budget)
            i, j = layers.index(a["layers"]), dims.index(a["d_model"])
            fraction[i, j] = s["grokked"] / s["n"]
            step[i, j] = s["grok"][0]
        for row, (values, title, cmap, vmin, vmax) in enumerate((
                (step, "mean grokking step", "magma_r", 0, budget),
                (fraction, "fraction of seeds grokked", "Greens", 0, 1))):
            ax = axes[row, col]
            image = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, origin="lower", aspect="auto")
            for (i, j), v in np.ndenumerate(values):
                text = "never" if np.isnan(v) else (f"{v:.0f}" if row == 0 else f"{v:.2f}")
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="black" if np.isnan(v) or (v - vmin) / (vmax - vmin) < 0.6 else "white")
            ax.set_xticks(range(len(dims)), [str(d) for d in dims])
            ax.set_yticks(range(len(layers)), [str(n) for n in layers])
            ax.set_xlabel("d_model")
            ax.set_ylabel("layers")
            ax.set_title(f"{h} heads: {title}", fontsize=9)
            fig.colorbar(image, ax=ax, shrink=0.8)
    suptitle(fig, f"{run.label}: {TASK_TITLES.get(task, task)} (grokking step averaged over the "
                  "seeds that grokked; 'never': no seed did)")
    return finish(fig, f"{run.name}_heatmap_{task}.png")


def deep_vs_wide(run: Run) -> list[dict]:
    """Per matched pair, task and head count: grokking step difference deep - wide with its
    paired bootstrap interval; seeds that never grokked count at the budget (a lower bound)."""
    results = []
    for deep, wide in matched_pairs(run.architectures):
        for task in run.tasks:
            steps = [{run.records[r]["seed"]: run.records[r]["step_val_acc_99"]
                      for r in run.rows(task=task, architecture=a["name"])} for a in (deep, wide)]
            result = paired_bootstrap(*steps)
            if result is not None:
                mean, low, high, n = result
                results.append({"deep": deep, "wide": wide, "task": task, "heads": deep["heads"],
                                "diff": mean, "low": low, "high": high, "n": n})
    return results


def figure_deep_vs_wide(run: Run, comparisons: list[dict]):
    """Figure 5: grokking step difference at matched capacity, one panel per pair."""
    pair_of = lambda c: (arch_shape(c["deep"]), arch_shape(c["wide"]))  # one panel per pair of shapes
    pairs = list(dict.fromkeys(pair_of(c) for c in comparisons))
    if not pairs:
        return None
    heads = sorted({c["heads"] for c in comparisons})
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.5 * len(pairs), 4.2), squeeze=False, sharey=True)
    colors = plt.get_cmap("tab10")
    for ax, pair in zip(axes[0], pairs):
        chosen = [c for c in comparisons if pair_of(c) == pair]
        for c in chosen:
            x = run.tasks.index(c["task"]) + 0.15 * (heads.index(c["heads"]) - (len(heads) - 1) / 2)
            ax.errorbar(x, c["diff"], yerr=[[c["diff"] - c["low"]], [c["high"] - c["diff"]]], fmt="o",
                        color=colors(heads.index(c["heads"])), capsize=3,
                        label=f"{c['heads']} heads" if c["task"] == run.tasks[0] else None)
        ax.axhline(0, color="gray", lw=0.8)
        ax.set_xticks(range(len(run.tasks)), [TASK_TITLES.get(t, t) for t in run.tasks], rotation=15, fontsize=8)
        d, w = chosen[0]["deep"], chosen[0]["wide"]
        ax.set_title(f"{arch_shape(d)} ({d['parameter_count'] / 1e3:.0f}K) minus "
                     f"{arch_shape(w)} ({w['parameter_count'] / 1e3:.0f}K)", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0, 0].set_ylabel("grokking step difference, deep - wide\n(> 0: the wide-shallow model groks first)")
    suptitle(fig, f"{run.label}: deep-narrow vs wide-shallow at matched capacity (paired bootstrap "
                  "95% interval over seeds; seeds that never grokked count at the budget)")
    return finish(fig, f"{run.name}_deep_vs_wide.png")


def figure_stability(run: Run):
    """Figure 6: fraction of post-grokking evaluations that stay above 99%, per architecture."""
    budget = run.config["num_steps"]
    archs = sorted(run.architectures, key=lambda a: (a["parameter_count"], a["heads"]))
    fig, axes = plt.subplots(len(run.tasks), 1, figsize=(max(6, 0.42 * len(archs) + 2), 2.6 * len(run.tasks)),
                             squeeze=False, sharex=True)
    color = aspect_colors(archs)
    for ax, task in zip(axes[:, 0], run.tasks):
        for x, a in enumerate(archs):
            s = grokking_summary([run.records[r] for r in run.rows(task=task, architecture=a["name"])], budget)
            mean, stderr = s["stable"]
            if np.isfinite(mean):
                ax.bar(x, mean, yerr=np.nan_to_num(stderr), color=color(a), capsize=2)
            ax.text(x, 1.03, f"{s['grokked']}/{s['n']}", ha="center", va="bottom", fontsize=7)
        ax.set_xlim(-0.6, len(archs) - 0.4)  # every architecture's slot, with bars or not
        ax.set_ylim(0, 1.15)
        ax.set_ylabel("fraction > 99%")
        ax.set_title(f"{TASK_TITLES.get(task, task)} (text: seeds grokked)", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    axes[-1, 0].set_xticks(range(len(archs)), [f"{arch_shape(a)}h{a['heads']}" for a in archs], rotation=90, fontsize=8)
    axes[-1, 0].set_xlabel("architecture (layers x d_model, heads), by parameter count")
    suptitle(fig, f"{run.label}: stability after grokking (fraction of the evaluations after the first "
                  "> 99% that stay > 99%; mean ± s.e. over grokked seeds)")
    return finish(fig, f"{run.name}_stability.png")


def figure_axis(run: Run, axis: str):
    """Figure 7: steps to memorization and grokking against one non-architecture axis (batch
    size, prime, ...), one line per architecture and value of the other varied axes."""
    budget = run.config["num_steps"]
    values = sorted(run.axes[axis])
    others = lambda r: ", ".join(f"{a}={r[a]}" for a in run.axes if a != axis)  # the other varied axes
    lines = list(dict.fromkeys((r["architecture"], others(r)) for r in run.records))
    colors = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, len(run.tasks), figsize=(max(7.0, 4.6 * len(run.tasks)), 4.2), squeeze=False, sharey=True)
    for ax, task in zip(axes[0], run.tasks):
        for i, (arch, rest) in enumerate(lines):
            records = [run.records[r] for r in run.rows(task=task, architecture=arch) if others(run.records[r]) == rest]
            by_value = [grokking_summary([r for r in records if r[axis] == v], budget) for v in values]
            for key, style in (("grok", "-"), ("mem", "--")):
                means = [s[key][0] for s in by_value]
                errors = [np.nan_to_num(s[key][1]) for s in by_value]
                ax.errorbar(values, means, yerr=errors, color=colors(i % 10), ls=style, marker="o", ms=4, capsize=2,
                            label=", ".join(filter(None, (arch, rest))) if key == "grok" else None)
                censored = [v for v, s in zip(values, by_value) if s["grokked" if key == "grok" else "memorized"] < s["n"]]
                ax.plot(censored, [budget] * len(censored), ls="", marker="o", mfc="none", color=colors(i % 10), ms=7)
        if min(values) > 0 and max(values) / min(values) >= 4:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xticks(values, [f"{v:g}" for v in values])
        ax.axhline(budget, color="gray", lw=0.8, ls=":")
        ax.set_ylim(0, budget * 1.05)
        ax.set_xlabel(axis)
        ax.set_title(TASK_TITLES.get(task, task))
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel(STEP_LABEL)
    axes[0, 0].legend(fontsize=8)
    suptitle(fig, f"{run.label}: steps to grokking (solid) and memorization (dashed) against {axis} "
                  "(mean ± s.e. over the seeds that reached 99%; open markers at the budget: seeds that never did)")
    return finish(fig, f"{run.name}_axis_{axis}.png")


# ======================================================================================
# Tables
# ======================================================================================


def fmt(mean: float, stderr: float, digits: int = 0) -> str:
    """'mean ± stderr', the mean alone for one seed, '-' for none."""
    if not np.isfinite(mean):
        return "-"
    return f"{mean:.{digits}f} ± {stderr:.{digits}f}" if np.isfinite(stderr) else f"{mean:.{digits}f}"


def summary_table(runs: list[Run], comparisons: dict[str, list[dict]]) -> str:
    lines = ["# Summary", "",
             "Steps are means ± standard errors over the seeds that reached 99% (k/n of them); "
             "stability is the fraction of evaluations after grokking that stay above 99%.", ""]
    for run in runs:
        budget = run.config["num_steps"]
        lines += [f"## {run.label}", "",
                  "| task | architecture | parameters | bucket | memorization step | grokking step "
                  "| grokked | stability |", "|---|---|---|---|---|---|---|---|"]
        for task in run.tasks:
            for a in sorted(run.architectures, key=lambda a: (a["parameter_count"], a["heads"])):
                records = [run.records[r] for r in run.rows(task=task, architecture=a["name"])]
                s = grokking_summary(records, budget)
                lines.append(f"| {task} | {a['name']} | {records[0]['parameter_count']:,} | {a['bucket']} "
                             f"| {fmt(*s['mem'])} ({s['memorized']}/{s['n']}) | {fmt(*s['grok'])} "
                             f"| {s['grokked']}/{s['n']} | {fmt(*s['stable'], digits=3)} |")
        if comparisons.get(run.name):
            lines += ["", "Deep-narrow vs wide-shallow at matched capacity (grokking step of the deep "
                      "model minus the wide one; paired bootstrap 95% interval; never-grokked seeds "
                      "count at the budget):", "",
                      "| bucket | deep | wide | task | heads | difference | 95% interval |",
                      "|---|---|---|---|---|---|---|"]
            for c in comparisons[run.name]:
                lines.append(f"| {c['deep']['bucket']} | {arch_shape(c['deep'])} | {arch_shape(c['wide'])} "
                             f"| {c['task']} | {c['heads']} | {c['diff']:+.0f} | [{c['low']:+.0f}, {c['high']:+.0f}] |")
        lines.append("")
    return "\n".join(lines)


# ======================================================================================
# Main
# ======================================================================================


def figure_jobs(runs: list[Run], views: list[Run], comparisons: dict[str, list[dict]]) -> list:
    """Every figure to draw, as a call that returns (figure, file name) or None. Figures 2-6
    are drawn per view (per setting of the other axes), figure 7 per varied axis."""
    tasks = list(dict.fromkeys(t for run in runs for t in run.tasks))
    jobs = [functools.partial(figure_curve, runs, task, curve) for task in tasks for curve in CURVES]
    jobs += [functools.partial(figure_axis, run, axis) for run in runs for axis in run.axes]
    jobs += [functools.partial(figure_accuracy, run) for run in views
             if len(run.architectures) <= ACCURACY_FIGURE_ARCHITECTURES]
    for run in views:
        if len(run.architectures) < 2:  # figures 2-6 compare architectures
            continue
        jobs += [functools.partial(figure_capacity, run, bucket)
                 for bucket in dict.fromkeys(a["bucket"] for a in run.architectures)]
        jobs.append(functools.partial(figure_steps_vs_params, run))
        jobs += [functools.partial(figure_heatmap, run, task) for task in run.tasks]
        jobs.append(functools.partial(figure_deep_vs_wide, run, comparisons[run.name]))
        jobs.append(functools.partial(figure_stability, run))
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
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if parsed is None:
        print(__doc__.strip())
        return 0
    only, out = parsed
    runs = discover_runs(".", only)
    if not runs:
        print("no run to draw: run experiment.py --out_dir=run_0 first")
        return 0
    os.makedirs(out, exist_ok=True)
    views = [view for run in runs for view in setting_views(run)]
    comparisons = {view.name: deep_vs_wide(view) for view in views if len(view.architectures) > 1}
    written = draw_all(figure_jobs(runs, views, comparisons), out)
    table = summary_table(views, comparisons)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(table + "\n")
    print(table)
    print(f"wrote {len(written)} figures and summary.md to {os.path.abspath(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
