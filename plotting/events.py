"""Figures of times to events and of what became of each run: a run that never got there is
censored at the budget, never averaged as if it had."""

from __future__ import annotations

import matplotlib.ticker
import numpy as np

import analysis

from .jobs import per_task
from .studies import StudyFolder
from .style import (EVENT_COLORS, GROK, HELD, MEMORIZE, REGIME_COLORS, STEP_LABEL, TASK_TITLES, arch_handles,
                    arch_label, arch_look, depth_handles, depth_marker, finish, legend_below, parameter_axis, plt,
                    step_axis, suptitle, width_color, width_handles)

RESTRICTED = "restricted mean up to the budget (never = the budget) ± s.e.; k/n: runs that got there"


def event_summary(records: list[dict], event: str, budget: int) -> dict | None:
    """analysis.time_to_event of these runs, with n; None when they do not record the event."""
    steps, reached = analysis.event_times(records, event, budget)
    return {"n": len(steps), **analysis.time_to_event(steps, reached, budget)} if len(steps) else None


def reached_text(s: dict) -> str:
    """'k/n' when not every run got there, else ''."""
    return f"{s['reached']}/{s['n']}" if s["reached"] < s["n"] else ""


@per_task
def survival(study: StudyFolder, task: str):
    """Kaplan-Meier estimates of the fraction of runs that memorized and grokked by each step, one
    curve per architecture; a run that never did is censored at the budget, marked there (+)
    with the number censored."""
    archs = study.archs
    if len(archs) < 2:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, event in zip(axes, (MEMORIZE, GROK)):
        censored = []
        for a in archs:
            steps, reached = analysis.event_times(study.chosen(task=task, architecture=a["name"]), event, study.budget)
            x, y = analysis.reached_curve(steps, reached, study.budget)
            look = arch_look(a)
            ax.step(x, y, where="post", color=look["color"], ls=look["ls"], lw=1.3)
            if (~reached).any():
                ax.plot(study.budget, y[-1], "+", color=look["color"], ms=10, mew=2, clip_on=False)
                censored.append(f"{arch_label(a)}: {(~reached).sum()}")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlim(0, study.budget)
        ax.grid(alpha=0.3)
        note = "censored (+): " + "; ".join(censored) if censored else "no run censored"
        ax.set_title(f"{analysis.EVENTS[event][1]}\n{note}", fontsize=9)
        step_axis(ax, study.log_steps)
    axes[0].set_ylabel("fraction of runs that got there")
    bottom = legend_below(fig, arch_handles(archs))
    suptitle(fig, f"{study.title}: {TASK_TITLES.get(task, task)}, time to memorization and to grokking "
                  f"(Kaplan-Meier; a run that never got there is censored at the budget, {study.budget} steps)")
    return finish(fig, f"{study.name}_survival_{task}.png", bottom=bottom)


def regimes(study: StudyFolder):
    """Per task and architecture, how many runs grok, nearly grok, memorize only, fail to fit or
    diverge (analysis.regime)."""
    archs = study.archs
    if len(archs) < 2:
        return None
    fig, axes = plt.subplots(1, len(study.tasks), figsize=(4.2 * len(study.tasks) + 1.5, 0.32 * len(archs) + 1.4),
                             squeeze=False, sharey=True)
    for ax, task in zip(axes[0], study.tasks):
        left = np.zeros(len(archs))
        for regime, color in REGIME_COLORS.items():
            counts = np.array([sum(analysis.regime(r) == regime for r in study.chosen(task=task, architecture=a["name"]))
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
    bottom = legend_below(fig, handles, columns=len(handles))
    suptitle(fig, f"{study.title}: what became of each run (groks: validation > 99%; near-grokking: training > 99%, "
                  f"validation past {analysis.NEAR_GROKKING:.0%} but never 99%; memorizes only: training > 99%, "
                  "validation never past 90%; fails to fit: training never > 99%; diverged: a NaN or infinite loss)")
    return finish(fig, f"{study.name}_regimes.png", bottom=bottom)


def steps_vs_params(study: StudyFolder):
    """Restricted mean steps to memorization and grokking against parameter count (marker: depth;
    open with k/n where not every run got there)."""
    if len(study.architectures) < 2:
        return None
    fig, axes = plt.subplots(1, len(study.tasks), figsize=(max(9.0, 4.6 * len(study.tasks)), 4.2), squeeze=False,
                             sharey=True)
    for ax, task in zip(axes[0], study.tasks):
        for a in study.architectures:
            records = study.chosen(task=task, architecture=a["name"])
            x = records[0]["parameter_count"] * (1 + 0.04 * (a["heads"] - 4) / 4)  # spread heads
            for event, color in EVENT_COLORS.items():
                s = event_summary(records, event, study.budget)
                full = s["reached"] == s["n"]
                ax.errorbar(x, s["restricted_mean"], yerr=np.nan_to_num(s["restricted_mean_stderr"]),
                            fmt=depth_marker(a["layers"]), color=color, mfc=color if full else "none", ms=5, capsize=2)
                if not full:  # memorization's count below the point, grokking's above
                    ax.annotate(reached_text(s), (x, s["restricted_mean"]), textcoords="offset points",
                                xytext=(4, 3 if event == GROK else -9), fontsize=6, color=color)
        parameter_axis(ax)
        ax.set_ylim(0, study.budget * 1.08)
        ax.axhline(study.budget, color="gray", lw=0.8, ls="--")
        ax.set_title(TASK_TITLES.get(task, task))
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel(STEP_LABEL)
    handles = [plt.Line2D([], [], color=EVENT_COLORS[MEMORIZE], marker="o", ls="", label="memorization (train > 99%)"),
               plt.Line2D([], [], color=EVENT_COLORS[GROK], marker="o", ls="", label="grokking (validation > 99%)"),
               plt.Line2D([], [], color="gray", marker="o", mfc="none", ls="", label="open, k/n: not every run got there"),
               plt.Line2D([], [], color="gray", ls="--", label=f"budget ({study.budget} steps)")]
    bottom = legend_below(fig, handles + depth_handles(study.values("layers")), columns=4)
    suptitle(fig, f"{study.title}: steps to memorization and grokking vs size ({RESTRICTED})")
    return finish(fig, f"{study.name}_steps_vs_params.png", bottom=bottom)


@per_task
def heatmap(study: StudyFolder, task: str):
    """For one task, the restricted mean grokking step (with k/n) and the fraction of runs that
    grokked over layers x d_model, one column per head count."""
    if len(study.architectures) < 2:
        return None
    layers, dims, heads = study.values("layers"), study.values("d_model"), study.values("heads")
    fig, axes = plt.subplots(2, len(heads), figsize=(3.6 * len(heads) + 1, 6.4), squeeze=False)
    for col, h in enumerate(heads):
        step = np.full((len(layers), len(dims)), np.nan)
        fraction, counts = np.full_like(step, np.nan), {}
        for a in study.architectures:
            if a["heads"] == h:
                s = event_summary(study.chosen(task=task, architecture=a["name"]), GROK, study.budget)
                i, j = layers.index(a["layers"]), dims.index(a["d_model"])
                step[i, j], fraction[i, j], counts[i, j] = s["restricted_mean"], s["reached"] / s["n"], reached_text(s)
        for row, (values, title, cmap, vmax) in enumerate((
                (step, "restricted mean grokking step (k/n)", "magma_r", study.budget),
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
    suptitle(fig, f"{study.title}: {TASK_TITLES.get(task, task)}, grokking by depth and width (a run that never "
                  f"grokked counts at the budget, {study.budget}; blank: not trained)")
    return finish(fig, f"{study.name}_heatmap_{task}.png")


OTHER_AXES_MARKERS = "osD^v"  # in the axis figure, one per value of the axes not drawn
AXIS_EVENTS = ((GROK, "-", "grokking, first crossing"), (HELD, ":", "grokking that holds"),
               (MEMORIZE, "--", "memorization"))


def axes_of_study(study: StudyFolder):
    """{study}_axis_{axis}.png per non-architecture axis the study varied (lr, batch size, prime,
    ...; of axes zipped together, the first): top, restricted mean steps to memorization, grokking
    and grokking that holds against it; bottom, the median share of evaluations after
    memorization with training accuracy <= 99% (instability). One line per architecture (its
    colour) and value of the other varied axes (its marker)."""
    figures, zipped = [], [a for a in study.config.get("zip_axes", []) if a in study.axes]
    for axis in study.axes:
        if axis in zipped[1:]:
            continue  # drawn with the first axis it is zipped with
        paired = [a for a in zipped if a != axis] if axis in zipped else []
        values = sorted(study.axes[axis])
        others = lambda r: ", ".join(f"{a}={r[a]}" for a in study.axes if a != axis and a not in paired)  # noqa: E731
        lines = list(dict.fromkeys((r["architecture"], others(r)) for r in study.records))
        rests = list(dict.fromkeys(rest for _, rest in lines))
        archs = {a["name"]: a for a in study.architectures}
        unstable = any(r.get("train_below_99_share") is not None for r in study.records)
        fig, axes = plt.subplots(1 + unstable, len(study.tasks), figsize=(max(7.0, 4.6 * len(study.tasks)),
                                                                          4.2 + 2.6 * unstable),
                                 squeeze=False, sharex=True, sharey="row")
        for col, task in enumerate(study.tasks):
            ax = axes[0, col]
            for arch, rest in lines:
                records = [r for r in study.chosen(task=task, architecture=arch) if others(r) == rest]
                color = arch_look(archs[arch])["color"]
                marker = OTHER_AXES_MARKERS[rests.index(rest) % len(OTHER_AXES_MARKERS)]
                for event, style, _ in AXIS_EVENTS:
                    s = [event_summary([r for r in records if r[axis] == v], event, study.budget) for v in values]
                    if None in s:
                        continue
                    ax.errorbar(values, [x["restricted_mean"] for x in s],
                                yerr=[np.nan_to_num(x["restricted_mean_stderr"]) for x in s], color=color,
                                ls=style, marker=marker, ms=4, capsize=2)
                    for v, x in zip(values, s):
                        if reached_text(x):
                            ax.annotate(reached_text(x), (v, x["restricted_mean"]), textcoords="offset points",
                                        xytext=(4, 3), fontsize=6, color=color)
                if unstable:
                    shares = [[r["train_below_99_share"] for r in records if r[axis] == v
                               and r.get("train_below_99_share") is not None] for v in values]
                    axes[1, col].plot(values, [np.median(x) if x else np.nan for x in shares], color=color,
                                      marker=marker, ms=4)
            ax.axhline(study.budget, color="gray", lw=0.8, ls=":")
            ax.set_ylim(0, study.budget * 1.08)
            ax.set_title(TASK_TITLES.get(task, task))
            for ax in axes[:, col]:
                if min(values) > 0 and max(values) / min(values) >= 4:
                    ax.set_xscale("log")
                    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
                ax.set_xticks(values, [f"{v:g}" for v in values])
                ax.grid(alpha=0.3)
            axes[-1, col].set_xlabel(axis + (f" (with {', '.join(paired)} paired)" if paired else ""))
        axes[0, 0].set_ylabel(STEP_LABEL)
        if unstable:
            axes[1, 0].set_ylabel("median share of evaluations\nafter memorization with\ntraining accuracy <= 99%")
        handles = arch_handles([archs[a] for a in dict.fromkeys(arch for arch, _ in lines)], solid=True)
        handles += [plt.Line2D([], [], color="gray", ls=style, label=label) for _, style, label in AXIS_EVENTS]
        handles += [plt.Line2D([], [], color="gray", marker=OTHER_AXES_MARKERS[i % len(OTHER_AXES_MARKERS)], ls="",
                               label=rest) for i, rest in enumerate(rests) if rest]
        bottom = legend_below(fig, handles, columns=4)
        suptitle(fig, f"{study.title}: against {axis}, steps to grokking (first crossing and held) and memorization "
                      f"({RESTRICTED})" + ("; below, instability after memorization" if unstable else ""))
        figures.append(finish(fig, f"{study.name}_axis_{axis}.png", bottom=bottom))
    return figures


def stability(study: StudyFolder):
    """Per architecture, the drops of validation accuracy to 99% or below after grokking, per run
    that grokked: with training accuracy still above 99% (generalization lost) and with it at or
    below 99% too (optimization unstable). None for runs that do not record the two kinds."""
    archs = study.archs
    if len(archs) < 2 or not any("val_only_drops_after_grok" in r for r in study.records):
        return None
    fig, axes = plt.subplots(len(study.tasks), 1, figsize=(max(6, 0.42 * len(archs) + 2), 2.6 * len(study.tasks)),
                             squeeze=False, sharex=True)
    for ax, task in zip(axes[:, 0], study.tasks):
        for x, a in enumerate(archs):
            records = [r for r in study.chosen(task=task, architecture=a["name"])
                       if r.get("val_only_drops_after_grok") is not None]
            if records:
                val_only = np.mean([r["val_only_drops_after_grok"] for r in records])
                joint = np.mean([r["joint_drops_after_grok"] for r in records])
                ax.bar(x, val_only, color="tab:purple")
                ax.bar(x, joint, bottom=val_only, color="tab:gray")
            grokked = sum(r["grokked"] for r in study.chosen(task=task, architecture=a["name"]))
            ax.text(x, 0, f"{grokked}", ha="center", va="bottom", fontsize=7)
        ax.set_xlim(-0.6, len(archs) - 0.4)
        ax.set_ylabel("drops per run")
        ax.set_title(f"{TASK_TITLES.get(task, task)} (number at the base: runs that grokked)", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    handles = [plt.Rectangle((0, 0), 1, 1, color="tab:purple", label="validation drops, training held (generalization lost)"),
               plt.Rectangle((0, 0), 1, 1, color="tab:gray", label="both drop (optimization unstable)")]
    axes[0, 0].legend(handles=handles, fontsize=7)
    axes[-1, 0].set_xticks(range(len(archs)), [f"{a['layers']}x{a['d_model']}h{a['heads']}" for a in archs],
                           rotation=90, fontsize=8)
    axes[-1, 0].set_xlabel("architecture (layers x d_model, heads), by parameter count")
    suptitle(fig, f"{study.title}: after grokking, how often validation accuracy falls to 99% or below, and whether "
                  "training accuracy falls with it (mean over the runs that grokked)")
    return finish(fig, f"{study.name}_stability.png")


def fourier(study: StudyFolder):
    """Left: for every run that grokked, the step at which its Fourier concentration made half its
    rise against its grokking step (below the diagonal: the circuit came first). Right: the key
    frequencies at the end against d_model. Marker: depth; colour: width. None without the measure."""
    records = [r for r in study.records if r.get("step_fourier_half") is not None]
    if not records:
        return None
    dims = sorted({r["d_model"] for r in records})
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4))
    grokked = [r for r in records if r["grokked"]]
    for r in grokked:
        left.plot(r["step_val_acc_99"], r["step_fourier_half"], depth_marker(r["layers"]), color=width_color(r["d_model"]),
                  ms=5, alpha=0.8)
    left.plot([0, study.budget], [0, study.budget], color="gray", lw=0.8)
    leads = [r["fourier_lead"] for r in grokked]
    left.set_title(f"{sum(lead > 0 for lead in leads)} of {len(leads)} grokked runs: half the rise before grokking; "
                   f"median lead {np.median(leads) if leads else float('nan'):.0f} steps", fontsize=9)
    left.set_xlabel("grokking step (validation > 99%)")
    left.set_ylabel("step of half the Fourier concentration's rise")
    depths = sorted({r["layers"] for r in records})
    for r in records:
        jitter = 0.06 * (depths.index(r["layers"]) - (len(depths) - 1) / 2) + 0.02 * (r["seed"] % 5 - 2)
        color = width_color(r["d_model"])
        right.plot(dims.index(r["d_model"]) + jitter, r["final_embedding_key_frequencies"], depth_marker(r["layers"]),
                   color=color, mfc=color if r["grokked"] else "none", ms=5, alpha=0.8)
    right.set_xticks(range(len(dims)), [str(d) for d in dims])
    right.set_xlim(-0.5, len(dims) - 0.5)
    right.set_xlabel("d_model (open: never grokked)")
    right.set_ylabel("key frequencies at the end\n(fewest holding 90% of the power)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    handles = depth_handles(depths) + width_handles(dims)
    bottom = legend_below(fig, handles, columns=len(handles))
    suptitle(fig, f"{study.title}: the Fourier circuit of the element embeddings (Nanda et al. 2023), every run "
                  "of the modular tasks")
    return finish(fig, f"{study.name}_fourier.png", bottom=bottom)
