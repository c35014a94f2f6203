"""Figures of paired comparisons: runs that share a task, seed and setting differ only in the
architecture, so architectures are compared pair by pair."""

from __future__ import annotations

import textwrap

import numpy as np

import analysis

from .studies import StudyFolder
from .style import GROK, TASK_TITLES, arch_look, arch_shape, finish, plt, suptitle

PAIRED_COLUMNS = 4  # events (and measures) per row of the paired figure


def paired(study: StudyFolder):
    """Every comparison of a study (all its runs pooled, and per setting), at every threshold: the
    share of pairs in which a got there first (blue), the same step or both never (gray), b first
    (orange), with the sign test's p and its q (adjusted for the study's many comparisons)."""
    summary = study.summary
    events = [e for e in analysis.COMPARED if any(c["event"] == e for c in summary["comparisons"])]
    chosen = [c for c in summary["comparisons"] if c["scope"] == "all" or c["scope"].startswith("setting")]
    keys = list(dict.fromkeys((c["family"], c["a"], c["b"], c["scope"]) for c in chosen))
    if not keys:
        return None
    found = {(c["family"], c["a"], c["b"], c["scope"], c["event"]): c for c in chosen}
    columns = min(len(events), PAIRED_COLUMNS)
    rows = -(-len(events) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.0 * columns + 3.5, rows * (0.42 * len(keys) + 1.2)),
                             squeeze=False, sharey=True)
    for ax in axes.flat[len(events):]:
        ax.set_visible(False)
    for ax, event in zip(axes.flat, events):
        for y, key in enumerate(keys):
            c = found.get((*key, event))
            if c is None or not c["pairs"]:
                continue
            left = 0.0
            for count, color in ((c["wins"], "tab:blue"), (c["ties"], "lightgray"), (c["losses"], "tab:orange")):
                ax.barh(y, count / c["pairs"], left=left, color=color)
                left += count / c["pairs"]
            ax.text(1.02, y, f"p={c['p']:.2g} q={c['q']:.2g}\nclusters {c['cluster_wins']}-{c['cluster_losses']}: "
                             f"q={c['cluster_q']:.2g}" + (" *" if c["cluster_q"] < analysis.SIGNIFICANCE else ""),
                    va="center", fontsize=6.5)
        ax.set_xlim(0, 2.0)
        ax.set_xticks([0, 0.5, 1])
        ax.axvline(0.5, color="black", lw=0.5)
        ax.set_title("\n".join(textwrap.wrap(analysis.COMPARED[event][1], 28)), fontsize=8)
        ax.set_xlabel("share of pairs", fontsize=8)
    scope = lambda s: "" if s == "all" else f" [{s.split(' ', 1)[1]}]"  # noqa: E731
    for ax in axes[:, 0]:
        ax.set_yticks(range(len(keys)), [f"{f}:\n{a} vs {b}{scope(s)}" for f, a, b, s in keys], fontsize=7)
        ax.tick_params(labelleft=True)
    axes[0, 0].invert_yaxis()
    suptitle(fig, f"{study.title}: paired comparisons (same task, seed, setting and other dimensions). Blue: the "
                  "first named got there first (a measure: was smaller); gray: same or both never; orange: the second "
                  "first. p: exact two-sided sign test over the pairs that differ; q: p adjusted for all of the "
                  "study's comparisons (Benjamini-Hochberg); clusters: each task and seed (one split and batch stream) "
                  f"counted once, wins-losses and q of the sign-flip test; * cluster q < {analysis.SIGNIFICANCE}")
    return finish(fig, f"{study.name}_paired.png")


def deep_vs_wide(study: StudyFolder):
    """Per matched pair of shapes: the grokking-step difference deep - wide of every pair of runs
    (same task, seed, heads), open where either never grokked (a bound), and the sign test."""
    matched = analysis.matched_pairs(study.architectures)
    if not matched:
        return None
    heads = study.values("heads")
    groups = [(task, h) for task in study.tasks for h in heads]  # one column of points each
    fig, axes = plt.subplots(1, len(matched), figsize=(max(5.5, 0.9 * len(groups) + 2) * len(matched), 4.2),
                             squeeze=False, sharey=True)
    for ax, (deep, wide) in zip(axes[0], matched):
        is_shape = lambda shape: lambda r: (r["layers"], r["d_model"]) == (shape["layers"], shape["d_model"])  # noqa: E731
        key = lambda r: (r["task"], r["setting"], r["seed"], r["heads"])  # noqa: E731
        found = analysis.pair_differences(study.records, GROK, study.budget, is_shape(deep), is_shape(wide), key)
        for (task, _, seed, h), difference, censored in found:
            color = arch_look({**deep, "heads": h})["color"]
            ax.plot(groups.index((task, h)) + 0.04 * (seed % 5 - 2), difference, "o", color=color,
                    mfc="none" if censored else color, ms=5)
        test = analysis.sign_test(np.array([d for _, d, _ in found]))
        ax.axhline(0, color="gray", lw=0.8)
        ax.set_xticks(range(len(groups)), [f"{TASK_TITLES.get(t, t)}\n{h} heads" for t, h in groups], fontsize=7)
        ax.set_title(f"{arch_shape(deep)} ({deep['parameter_count'] / 1e3:.0f}K) minus {arch_shape(wide)} "
                     f"({wide['parameter_count'] / 1e3:.0f}K)\ndeep first in {test['wins']}, wide first in "
                     f"{test['losses']}, ties {test['ties']} of {test['pairs']} pairs; sign test p={test['p']:.2g}",
                     fontsize=9)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(handles=[plt.Line2D([], [], color="gray", marker="o", mfc="none", ls="",
                                          label="open: one never grokked (a bound)")], fontsize=8)
    axes[0, 0].set_ylabel("grokking step, deep - wide\n(> 0: the wide-shallow run groks first)")
    suptitle(fig, f"{study.title}: deep-narrow vs wide-shallow at matched size, one point per pair of runs that "
                  f"share task, seed and heads (never = the budget, {study.budget})")
    return finish(fig, f"{study.name}_deep_vs_wide.png")
