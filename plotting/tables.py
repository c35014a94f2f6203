"""summary.md (also printed) and summary.json (the same numbers as plain data) of the studies drawn."""

from __future__ import annotations

import json
import os

import numpy as np

import analysis

from .studies import StudyFolder


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
    """Pairs: wins-losses (ties, censored or left-out pairs), p, q; then clusters: wins-losses of N,
    p, q. Bold where the cluster-level q is below SIGNIFICANCE, the claim's test."""
    if c is None:
        return "-"
    apart = f"{c['censored']} censored" if c["kind"] == "event" else f"{c['left_out']} left out"
    cell = (f"{c['wins']}-{c['losses']} ({c['ties']} tied, {apart}), p={c['p']:.2g}, q={c['q']:.2g}; clusters "
            f"{c['cluster_wins']}-{c['cluster_losses']} of {c['clusters']}, p={c['cluster_p']:.2g}, q={c['cluster_q']:.2g}")
    return f"**{cell}**" if c["cluster_q"] < analysis.SIGNIFICANCE else cell


def mean_cell(row: dict, key: str, digits: int) -> str:
    """A row's mean of a per-run value, '-' where there is none."""
    return f"{row[key]:.{digits}f}" if np.isfinite(row.get(key, np.nan)) else "-"


HEADER = ("Steps are restricted means up to the budget (a run that never got there counts at the budget) ± standard "
          "error, with k/n where not every run got there; median: the step by which half the runs had grokked; held: "
          "grokking that holds (validation > 99% at hold_evals evaluations in a row). Regimes: groks / near-grokking "
          "(memorized, validation past 90% but never 99%) / memorizes only / fails to fit / diverged. Peak: the "
          "highest validation accuracy (mean). Drops after grokking, per run that grokked: validation alone "
          "(generalization lost) / with training (optimization unstable). Train drops: training-accuracy drops to "
          "<= 99% per 1,000 steps after memorization (mean).")
COMPARISONS = ("Paired comparisons (pairs share task, seed, setting and the other dimensions): a-b = pairs in which the "
               "first named got there first (for a measure: had the smaller value) - the second; censored: pairs with "
               "a run that never got there (counted at the budget); left out: pairs in which a run has no value; p: "
               "exact two-sided sign test; q: p adjusted for all of this study's comparisons (Benjamini-Hochberg). "
               "Clusters: the pairs of one task and seed share a split and batches, so each such cluster counts once "
               "(wins-losses of its pairs), tested by an exact sign-flip permutation test; **bold** at cluster q < "
               f"{analysis.SIGNIFICANCE}. threshold-sensitive: the pair-level direction or significance is not the "
               "same at 50%, 90% and 99% validation accuracy.")


def study_section(study: StudyFolder) -> list[str]:
    summary = study.summary
    lines = [f"## {study.title}", "",
             "| task | setting | architecture | parameters | bucket | regimes | memorization step | grokking step "
             "| held | median grokking step | peak | drops val-only / joint | train drops |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in summary["rows"]:
        regimes = "/".join(str(row[analysis.regime_key(g)]) for g in analysis.REGIMES)
        median = row.get("median_grok")
        drops = (f"{row['val_only_drops_after_grok']:.1f} / {row['joint_drops_after_grok']:.1f}"
                 if "joint_drops_after_grok" in row else "-")
        lines.append(f"| {row['task']} | {row['setting'] or '-'} | {row['architecture']} | {row['parameter_count']:,} "
                     f"| {row['bucket']} | {regimes} | {event_cell(row, 'memorize')} | {event_cell(row, 'grok')} "
                     f"| {event_cell(row, 'grok_held')} | {'-' if median is None else f'{median:.0f}'} "
                     f"| {mean_cell(row, 'peak_val_acc', 3)} | {drops} | {mean_cell(row, 'train_drops_per_1k_steps', 2)} |")
    comparisons = summary["comparisons"]
    if comparisons:
        events = [e for e in analysis.COMPARED if any(c["event"] == e for c in comparisons)]
        lines += ["", COMPARISONS, "",
                  "| comparison | runs | " + " | ".join(analysis.COMPARED[e][1] for e in events)
                  + " | threshold-sensitive |",
                  "|---|---|" + "---|" * (len(events) + 1)]
        found = {(c["family"], c["a"], c["b"], c["scope"], c["event"]): c for c in comparisons}
        for key in dict.fromkeys((c["family"], c["a"], c["b"], c["scope"]) for c in comparisons):
            cells = [comparison_cell(found.get((*key, e))) for e in events]
            sensitive = any(found.get((*key, e), {}).get("threshold_sensitive") for e in events)
            lines.append(f"| {key[0]}: {key[1]} vs {key[2]} | {key[3]} | " + " | ".join(cells)
                         + f" | {'yes' if sensitive else ''} |")
    return lines + [""]


def summary_markdown(studies: list[StudyFolder]) -> str:
    return "\n".join(["# Summary", "", HEADER, ""] + [line for s in studies for line in study_section(s)])


def summary_json(studies: list[StudyFolder]) -> dict:
    """Every study's rows and comparisons, one list each (each entry names its study, "run")."""
    return {key: [entry for s in studies for entry in s.summary[key]] for key in ("rows", "comparisons")}


def write_tables(studies: list[StudyFolder], out: str) -> str:
    """summary.md and summary.json in `out`; returns the markdown."""
    table = summary_markdown(studies)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary_json(studies), f, indent=1)
    return table
