"""Figures of curves against the step: every run drawn, thin, with medians where many overlap."""

from __future__ import annotations

import math
import textwrap

import numpy as np

import analysis

from .jobs import per_task
from .studies import StudyFolder
from .style import (CURVES, GROK, MEMORIZE, STEP_LABEL, TASK_TITLES, accuracy_axis, arch_handles, arch_label,
                    arch_look, arch_shape, draw_runs, finish, head_handles, legend_below, nan_median, plt, step_axis,
                    suptitle)

ACCURACY_FIGURE_ARCHITECTURES = 8  # studies with more architectures are read in the seeds figures


@per_task
def over_folders(studies: list[StudyFolder], task: str):
    """{curve}_{task}.png per curve: every run of every folder (thin) and the median over a
    folder's runs at each step (thick), one colour per folder and setting."""
    figures = []
    for curve, title in CURVES.items():
        colors = plt.get_cmap("tab10")
        fig, ax = plt.subplots(figsize=(7, 4.5))
        lines = [(s, setting) for s in studies for setting in s.settings if s.rows(task=task, setting=setting)]
        for i, (study, setting) in enumerate(lines):
            values = study.curves[curve][study.rows(task=task, setting=setting)]
            draw_runs(ax, study.steps, values, colors(i % 10), lw=0.5, alpha=0.25)
            label = textwrap.shorten(study.title, 60) + (f" [{setting}]" if setting else "")
            ax.plot(study.steps, nan_median(values), color=colors(i % 10), lw=1.8, label=f"{label} ({len(values)} runs)")
            step_axis(ax, study.log_steps)
        if curve.endswith("loss"):
            ax.set_yscale("log")
            ax.set_ylabel("cross-entropy loss (nats, log scale)")
            ax.grid(alpha=0.3)
        else:
            accuracy_axis(ax)
        ax.set_title(f"{title.capitalize()}: {TASK_TITLES.get(task, task)}\n(thin: every run; thick: the median over "
                     "a folder's runs at each step)")
        ax.legend(fontsize=8)
        figures.append(finish(fig, f"{curve}_{task}.png"))
    return figures


def accuracy(study: StudyFolder):
    """The picture of grokking, per task: training (dashed) and validation (solid) accuracy of
    every run, one colour per architecture. Studies of many architectures: see seeds."""
    archs = study.archs
    if len(archs) > ACCURACY_FIGURE_ARCHITECTURES:
        return None
    fig, axes = plt.subplots(1, len(study.tasks), figsize=(max(6.5, 5.2 * len(study.tasks)), 4.2), squeeze=False)
    for ax, task in zip(axes[0], study.tasks):
        for a in archs:
            rows = study.rows(task=task, architecture=a["name"])
            for curve, style in (("train_acc", "--"), ("val_acc", "-")):
                draw_runs(ax, study.steps, study.curves[curve][rows], arch_look(a)["color"], style, lw=1.1)
        accuracy_axis(ax)
        ax.set_title(TASK_TITLES.get(task, task))
        step_axis(ax, study.log_steps)
    bottom = legend_below(fig, arch_handles(archs, solid=True))
    suptitle(fig, f"{study.title}: training (dashed) and validation (solid) accuracy, one line per run "
                  "(architecture x seed)")
    return finish(fig, f"{study.name}_accuracy.png", bottom=bottom)


@per_task
def seeds(study: StudyFolder, task: str):
    """One panel per architecture: every seed's training (dashed) and validation (solid) accuracy,
    with the architecture's regime counts."""
    archs = study.archs
    if len(archs) < 2:
        return None
    columns = min(len(archs), 6)
    rows_ = math.ceil(len(archs) / columns)
    fig, axes = plt.subplots(rows_, columns, figsize=(2.6 * columns + 0.6, 2.0 * rows_ + 0.4), squeeze=False,
                             sharex=True, sharey=True)
    for ax, a in zip(axes.flat, archs):
        rows = study.rows(task=task, architecture=a["name"])
        draw_runs(ax, study.steps, study.curves["train_acc"][rows], "tab:blue", "--", lw=0.9)
        draw_runs(ax, study.steps, study.curves["val_acc"][rows], "tab:red", lw=0.9)
        regimes = [analysis.regime(study.records[r]) for r in rows]
        counts = ", ".join(f"{regimes.count(g)} {g}" for g in analysis.REGIMES if g in regimes)
        ax.set_title(f"{arch_label(a)}\n{counts}", fontsize=7.5)
        accuracy_axis(ax, label=None)
        step_axis(ax, study.log_steps, label=False)
    for ax in axes.flat[len(archs):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel(STEP_LABEL, fontsize=8)
    suptitle(fig, f"{study.title}: {TASK_TITLES.get(task, task)}, every seed of every architecture: training "
                  "(blue, dashed) and validation (red) accuracy")
    return finish(fig, f"{study.name}_seeds_{task}.png")


def weight_norm(study: StudyFolder):
    """The global L2 norm of the weights of every run, per task, one colour per architecture."""
    archs = study.archs
    if len(archs) < 2:
        return None
    fig, axes = plt.subplots(1, len(study.tasks), figsize=(max(6.5, 5.2 * len(study.tasks)), 4.2), squeeze=False)
    for ax, task in zip(axes[0], study.tasks):
        for a in archs:
            look = arch_look(a)
            draw_runs(ax, study.steps, study.curves["weight_norm"][study.rows(task=task, architecture=a["name"])],
                      look["color"], look["ls"], lw=1.0)
        ax.set_title(TASK_TITLES.get(task, task))
        ax.set_ylabel("L2 norm of all weights")
        ax.grid(alpha=0.3)
        step_axis(ax, study.log_steps)
    bottom = legend_below(fig, arch_handles(archs))
    suptitle(fig, f"{study.title}: weight norm, one line per run")
    return finish(fig, f"{study.name}_weight_norm.png", bottom=bottom)


def capacity(study: StudyFolder):
    """{study}_capacity_{bucket}.png per capacity bucket: one panel per shape (columns, deep-narrow
    to wide-shallow) and task (rows), with every run's validation accuracy (thin) and the median
    of each architecture (thick; line style by heads)."""
    if len(study.architectures) < 2:
        return None
    figures = []
    for bucket in dict.fromkeys(a["bucket"] for a in study.architectures):
        archs = sorted((a for a in study.architectures if a["bucket"] == bucket),
                       key=lambda a: (a["aspect_ratio"], a["heads"]))
        shapes = list(dict.fromkeys(arch_shape(a) for a in archs))
        fig, axes = plt.subplots(len(study.tasks), len(shapes), figsize=(max(6.5, 3.0 * len(shapes) + 0.8),
                                                                         2.4 * len(study.tasks)),
                                 squeeze=False, sharex=True, sharey=True)
        for row, task in enumerate(study.tasks):
            for col, shape in enumerate(shapes):
                ax = axes[row, col]
                for a in (a for a in archs if arch_shape(a) == shape):
                    look, values = arch_look(a), study.curves["val_acc"][study.rows(task=task, architecture=a["name"])]
                    draw_runs(ax, study.steps, values, look["color"], look["ls"], lw=0.6, alpha=0.35)
                    ax.plot(study.steps, nan_median(values), color=look["color"], ls=look["ls"], lw=2.0)
                accuracy_axis(ax, label="validation accuracy" if col == 0 else None)
                ax.set_title(f"{shape}: {TASK_TITLES.get(task, task)}", fontsize=9)
                step_axis(ax, study.log_steps, label=row == len(study.tasks) - 1)
        bottom = legend_below(fig, arch_handles(archs), columns=6)
        suptitle(fig, f"{study.title}: the {bucket} capacity bucket, deep-narrow (left) to wide-shallow (right): "
                      "validation accuracy of every run (thin) and each architecture's median (thick)")
        figures.append(finish(fig, f"{study.name}_capacity_{bucket}.png", bottom=bottom))
    return figures


PROGRESS_MEASURES = {"embedding_fourier_top5": "Fourier concentration of\nthe embeddings (top 5)",
                     "head_weight_norm": "head weight norm", "train_margin": "training logit margin",
                     "train_saturated": "training answers with\nsoftmax saturated in float32"}


@per_task
def progress(study: StudyFolder, task: str):
    """What changes inside before grokking: each progress measure (rows; those that vary over the
    task's runs) against the step for every run of each shape (columns; line style by heads), with
    each run's memorization (circle) and grokking (star) marked. None without the measures."""
    task_rows = study.rows(task=task)
    measures = [m for m in PROGRESS_MEASURES if m in study.curves
                and np.isfinite(study.curves[m][task_rows]).any() and np.nanmax(study.curves[m][task_rows])
                > np.nanmin(study.curves[m][task_rows])]
    if not measures:
        return None
    shapes = list(dict.fromkeys(arch_shape(a) for a in study.archs))
    fig, axes = plt.subplots(len(measures), len(shapes), figsize=(2.7 * len(shapes) + 1.2, 1.9 * len(measures) + 0.6),
                             squeeze=False, sharex=True, sharey="row")
    steps = study.steps
    for col, shape in enumerate(shapes):
        for a in (a for a in study.archs if arch_shape(a) == shape):
            look = arch_look(a)
            for i in study.rows(task=task, architecture=a["name"]):
                r = study.records[i]
                for row, measure in enumerate(measures):
                    values = study.curves[measure][i]
                    axes[row, col].plot(steps, values, color=look["color"], ls=look["ls"], lw=0.8, alpha=0.8)
                    for event, marker in ((MEMORIZE, "o"), (GROK, "*")):
                        if r.get(analysis.EVENTS[event][2]):
                            k = int(np.searchsorted(steps, r[event]))
                            axes[row, col].plot(steps[k], values[k], marker, color=look["color"],
                                                ms=4 if marker == "o" else 7, mec="black", mew=0.4)
        axes[0, col].set_title(shape, fontsize=9)
        axes[-1, col].set_xlabel(STEP_LABEL, fontsize=8)
    for row, measure in enumerate(measures):
        axes[row, 0].set_ylabel(PROGRESS_MEASURES[measure], fontsize=8)
        for ax in axes[row]:
            ax.grid(alpha=0.3)
            step_axis(ax, study.log_steps, label=False)
    handles = head_handles(study.values("heads")) + [
        plt.Line2D([], [], marker="o", color="gray", ls="", label="memorization"),
        plt.Line2D([], [], marker="*", color="gray", ls="", ms=8, label="grokking")]
    bottom = legend_below(fig, handles, columns=len(handles))
    suptitle(fig, f"{study.title}: {TASK_TITLES.get(task, task)}, progress measures of every run, one column per "
                  "shape (layers x d_model; colour: the architecture)")
    return finish(fig, f"{study.name}_progress_{task}.png", bottom=bottom)
