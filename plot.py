"""Figures, summary.md and summary.json of the study folders experiment.py wrote.

    python plot.py                                           # every run_<n>/ with a final_info.json
    python plot.py --runs=run_0,studies/demo --out=figures   # chosen folders, figures elsewhere
    python plot.py --help

This file says what to draw: the folders (labels) and three lists of figures. How each figure is
drawn is in the package plotting/; the statistics (censored times to events, paired sign tests
with q over a study's comparisons) are in analysis.py; notes.txt says how to read every figure.
A run that never reached a threshold is censored at the budget, never averaged as if it had.
To add a figure, write a function like grok_vs_memorize below and put it in a list.
"""

from __future__ import annotations

import sys

import plotting
from plotting import curves, events, pairs
from plotting.style import arch_handles, arch_look, finish, legend_below, plt, suptitle

# Optional: rename and select runs, as in the AI-Scientist template, e.g.
# labels = {"run_0": "Baseline", "run_1": "Weight decay 1.0"}.
# When it is not empty, only the runs it names are drawn; the others are listed as left out.
labels: dict[str, str] = {}


# ======================================================================================
# A figure of your own: a function of one study folder (or of a study and a task, marked
# @plotting.per_task) that returns (figure, file name), a list of those, or None where it does
# not apply. study.records are the runs (runs.json), study.curves their curves (curves.npz).
# ======================================================================================


def grok_vs_memorize(study: plotting.StudyFolder):
    """{study}_grok_vs_memorize.png: every run's grokking step against its memorization step, one
    colour per architecture; open markers at the budget: runs that never grokked."""
    fig, axes = plt.subplots(1, len(study.tasks), figsize=(4.6 * len(study.tasks), 4.2), squeeze=False)
    for ax, task in zip(axes[0], study.tasks):
        for a in study.archs:
            runs = [r for r in study.chosen(task=task, architecture=a["name"]) if r["memorized"]]
            look = arch_look(a)
            for r in runs:
                ax.plot(r["step_train_acc_99"], r["step_val_acc_99"], look["marker"], color=look["color"], ms=5,
                        mfc=look["color"] if r["grokked"] else "none")
        top = study.budget
        for ratio in (1, 3, 10):  # grokking at 1x, 3x and 10x the memorization step
            ax.plot([0, top / ratio], [0, top], color="gray", lw=0.6, ls=":")
            ax.annotate(f"{ratio}x", (top / ratio, top), fontsize=7, color="gray")
        ax.set(xlim=(0, None), ylim=(0, top * 1.05), xlabel="memorization step (train > 99%)",
               ylabel="grokking step (validation > 99%)", title=plotting.style.TASK_TITLES.get(task, task))
        ax.grid(alpha=0.3)
    bottom = legend_below(fig, arch_handles(study.archs, marker=True))
    suptitle(fig, f"{study.title}: how long after memorization each run grokked (open: never, at the budget)")
    return finish(fig, f"{study.name}_grok_vs_memorize.png", bottom=bottom)


# ======================================================================================
# What to draw. Each entry's file name and contents (notes.txt says how to read them):
# ======================================================================================

ACROSS_FOLDERS = [  # once, over every folder drawn
    curves.over_folders,  # {curve}_{task}.png: every run of every folder and each folder's median (loss, accuracy)
]
PER_FOLDER = [  # once per folder
    events.axes_of_study,  # {study}_axis_{axis}.png: steps to events and instability against each other axis varied
    pairs.paired,  # {study}_paired.png: every paired comparison at every threshold, with p and q
]
PER_SETTING = [  # per folder, once per setting of its other axes ({study}_{setting}_... when it varied some)
    curves.accuracy,  # {study}_accuracy.png: training and validation accuracy of every run (the picture of grokking)
    curves.seeds,  # {study}_seeds_{task}.png: one panel per architecture, one line per seed, with its regimes
    events.survival,  # {study}_survival_{task}.png: Kaplan-Meier time to memorization and grokking, censored marked
    events.regimes,  # {study}_regimes.png: runs that grok, memorize only, fail to fit, diverge
    curves.weight_norm,  # {study}_weight_norm.png: the global weight norm of every run
    curves.capacity,  # {study}_capacity_{bucket}.png: per capacity bucket, deep-narrow to wide-shallow
    events.steps_vs_params,  # {study}_steps_vs_params.png: restricted mean steps against parameter count
    events.heatmap,  # {study}_heatmap_{task}.png: grokking step and fraction grokked over layers x d_model
    pairs.deep_vs_wide,  # {study}_deep_vs_wide.png: deep-narrow minus wide-shallow at matched size, per pair
    events.stability,  # {study}_stability.png: drops after grokking, with training held or not
    curves.progress,  # {study}_progress_{task}.png: Fourier concentration, norms, margin, saturation
    events.fourier,  # {study}_fourier.png: the Fourier circuit's half-rise against grokking; key frequencies
    grok_vs_memorize,  # {study}_grok_vs_memorize.png: grokking step against memorization step, per run
]



def main(argv: list[str] | None = None) -> int:
    return plotting.main(labels, ACROSS_FOLDERS, PER_FOLDER, PER_SETTING, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
