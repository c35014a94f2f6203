"""Per-run records, final_info.json, and the checks of the science's outputs before training."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from analysis import FORMAT_VERSION, mean_stderr

from .plan import (Architecture, Member, Study, architectures, axis_values, changed_fields, settings, setting_tag,
                   varied_axes)
from .science import Science, UsageError
from .text import plural
from .training import GroupResult, curve_name


BUCKETS = ("small", "medium", "large")


def parameter_count(science: Science, arch: Architecture, table, c) -> int:
    """Exact, from the plain model itself (built on the meta device: no memory, no time); c: the run config."""
    with torch.device("meta"):
        model = science.build_model(arch.layers, arch.d_model, arch.heads, table, 0, c)
    return sum(p.numel() for p in model.parameters())


def capacity_buckets(counts: dict[str, int]) -> dict[str, str]:
    """Three equal-width bins of log10(parameter count) over the study's range. A study of one
    size has the single bucket 'all'."""
    logs = {name: math.log10(n) for name, n in counts.items()}
    low, high = min(logs.values()), max(logs.values())
    if high - low < 1e-12:
        return {name: "all" for name in logs}
    width = (high - low) / len(BUCKETS)
    return {name: BUCKETS[min(int((v - low) / width), len(BUCKETS) - 1)] for name, v in logs.items()}


@dataclass
class Outputs:
    """What a finished study writes (RunFolder.write_outputs), all of it built before a file is written."""

    curves: dict[str, np.ndarray]  # curves.npz: "step" and each curve, (runs, evals), rows in runs.json order
    json_files: dict[str, object]  # file name -> content, in writing order: final_info.json last


def study_outputs(study: Study, results: list[GroupResult], preset: str | None, overrides: dict,
                  provenance: dict) -> Outputs:
    """runs.json, curves.npz, architectures.json, config.json, provenance.json and final_info.json
    of a finished study. Capacity buckets and architecture sizes are counted on the first run."""
    science, c = study.science, study.c
    archs = architectures(c)
    first = Member(c.tasks[0], 0, settings(c)[0])
    counts = {a.name: parameter_count(science, a, study.table(first), study.config(first)) for a in archs}
    buckets = capacity_buckets(counts)
    records = study_records(study, results, buckets)
    # Groups may record different curves (a 1-layer model has no block1_attn_norm): NaN where a group has none.
    names = dict.fromkeys(name for r in results for name in r.curves)
    missing = lambda r: np.full((len(r.members), len(r.steps)), np.nan)  # noqa: E731
    curves = {"step": results[0].steps,
              **{name: np.concatenate([r.curves.get(name, missing(r)) for r in results]) for name in names}}
    by_task = lambda a: {t: parameter_count(science, a, study.tables[t, first.setting], study.config(first))  # noqa: E731
                         for t in c.tasks}
    return Outputs(curves, {
        "runs.json": records,
        "architectures.json": [{"name": a.name, "layers": a.layers, "d_model": a.d_model, "heads": a.heads,
                                "aspect_ratio": a.d_model / a.layers, "bucket": buckets[a.name],
                                "parameter_count": counts[a.name], "parameter_count_by_task": by_task(a)} for a in archs],
        "config.json": {"format_version": FORMAT_VERSION, "preset": preset, "overrides": overrides,
                        "varied": changed_fields(c),
                        "axes": {name: list(axis_values(c, name)) for name in varied_axes(c)},  # beyond the architecture
                        "config": dataclasses.asdict(c)},
        "provenance.json": provenance,
        "final_info.json": final_info(records, science.headline_metrics, plain=len(archs) == 1 and not varied_axes(c)),
    })


def study_records(study: Study, results: list[GroupResult], buckets: dict) -> list[dict]:
    """One record per run (task, architecture, setting, seed) with its metrics, in curve-row order."""
    records, varied = [], varied_axes(study.c)
    for res in results:
        for i, mb in enumerate(res.members):
            curves = {name: values[i] for name, values in res.curves.items()}
            records.append({
                "task": mb.task, "architecture": res.arch.name, "layers": res.arch.layers,
                "d_model": res.arch.d_model, "heads": res.arch.heads, "seed": mb.seed,
                "setting": setting_tag(mb.setting, varied), **dict(mb.setting), "bucket": buckets[res.arch.name],
                "parameter_count": parameter_count(study.science, res.arch, study.table(mb), study.config(mb)),
                **study.science.run_metrics(res.steps, curves, study.config(mb)),
                # members train together: each run is charged its share of the group's time
                "wall_time_s": res.wall_time_s / len(res.members),
            })
    return records


def record_key(record: dict, plain: bool) -> str:
    """The final_info key of a run: the task alone for a plain study (one architecture, no other
    axis: a drop-in baseline), else task/architecture and the varied axes, e.g. x_div_y/L2_D128_H4/bs64."""
    if plain:
        return record["task"]
    return "/".join(part for part in (record["task"], record["architecture"], record["setting"]) if part)


def rounded(value, decimals: int):
    value = float(value)
    if not math.isfinite(value):
        return None
    return int(round(value)) if decimals == 0 else round(float(value), decimals)


def final_info(records: list[dict], headline: dict, plain: bool) -> dict:
    """The AI-Scientist final_info.json: per key (task, architecture, setting) the headline
    metrics' means and standard errors over seeds, rounded, and their per-seed values."""
    entries: dict[str, list] = {}
    for r in records:
        entries.setdefault(record_key(r, plain), []).append(r)
    info = {}
    for key, runs in entries.items():
        per_seed = {name: [r[name] for r in runs] for name in headline}
        stats = {name: mean_stderr(values) for name, values in per_seed.items()}
        info[key] = {"means": {f"{n}_mean": rounded(m, headline[n]) for n, (m, _) in stats.items()},
                     "stderrs": {f"{n}_stderr": rounded(s, headline[n]) for n, (_, s) in stats.items()},
                     "final_info_dict": per_seed}
    return info


HARNESS_MESSAGE_LIMIT = 20_000  # characters of results message the AI-Scientist harness sends comfortably


def results_message(info: dict) -> str:
    """What the AI-Scientist harness sends its model after a run: str() of the means."""
    return str({key: value["means"] for key, value in info.items()})


def curve_names(study: Study) -> list[str]:
    """The curves evaluate() records, named as it names them (<split>_<example metric>, then the
    model metrics), found by calling experiment.py's own functions on the first run of the study."""
    science, member = study.science, Member(study.c.tasks[0], 0, settings(study.c)[0])
    table, config = study.table(member), study.config(member)
    splits, _ = science.run_data(len(table.answers), config, 0)
    examples = science.example_metrics(table.tokens.new_zeros(2, table.num_classes, dtype=torch.float32),
                                       table.answers[:2], study.c)
    a = architectures(study.c)[0]
    model = science.build_model(a.layers, a.d_model, a.heads, table, 0, config)
    weights = science.model_metrics({k: v.detach()[None] for k, v in model.named_parameters()}, [table], study.c)
    return [curve_name(split, name) for split in splits for name in examples] + list(weights)


def check_evaluation_steps(study: Study) -> None:
    """The evaluation steps must rise strictly from 0 or later to num_steps, whole numbers."""
    c = study.c
    steps = study.science.evaluation_steps(c)
    if not (len(steps) and all(isinstance(s, (int, np.integer)) for s in steps) and steps[-1] == c.num_steps
            and steps[0] >= 0 and all(a < b for a, b in zip(steps, steps[1:]))):
        shown = ", ".join(map(str, steps[:4])) + (", ..., " + str(steps[-1]) if len(steps) > 4 else "")
        raise UsageError(f"evaluation_steps gives [{shown}]; it must give whole steps in increasing order, from 0 "
                         f"(before training) or later, ending with num_steps ({c.num_steps})")


def check_headline(study: Study) -> None:
    """Every headline metric must be a key of the records, checked before any training: run_metrics
    applied to stand-in curves of every name the study will record."""
    science, c = study.science, study.c
    steps = np.array(science.evaluation_steps(c)[:3])
    curves = {name: np.zeros(len(steps)) for name in curve_names(study)}
    metrics = science.run_metrics(steps, curves, study.config(Member(c.tasks[0], 0, settings(c)[0])))
    known = set(metrics) | {"parameter_count", "wall_time_s"}
    missing = [name for name in science.headline_metrics if name not in known]
    if missing:
        raise UsageError(f"HEADLINE_METRICS names {missing[0]!r}, which run_metrics does not return for this "
                         f"study; choose from {', '.join(sorted(known))}")
    for name in science.headline_metrics:  # averaged over seeds: a number, or None where undefined
        if not (metrics.get(name) is None or isinstance(metrics[name], (int, float, np.number, np.bool_))):
            raise UsageError(f"HEADLINE_METRICS names {name!r}, whose value is {type(metrics[name]).__name__}, "
                             "not a number; final_info.json averages it over seeds")


def group_summary(study: Study, result: GroupResult) -> str:
    """One line per finished group: per task (and setting, when the group holds several) the mean
    over its runs of each headline metric that run_metrics returns, and the runs whose curves hold
    NaN or infinity (diverged). A curve non-finite throughout for every run of a task is a measure
    that does not apply to it (the Fourier share of S_k, block 1 of a 1-layer model), not a
    divergence."""
    science, c = study.science, study.c
    parts, varied = [], varied_axes(c)
    labels = [" ".join(filter(None, (mb.task, setting_tag(mb.setting, varied)))) for mb in result.members]
    for label in dict.fromkeys(labels):
        metrics = [science.run_metrics(result.steps, {k: v[i] for k, v in result.curves.items()},
                                       study.config(result.members[i])) for i, other in enumerate(labels) if other == label]
        means = [f"{name} {format_mean([m[name] for m in metrics], decimals)}"
                 for name, decimals in science.headline_metrics.items() if name in metrics[0]]
        parts.append(f"{label} " + ", ".join(means) + f" ({plural(len(metrics), 'run')})")
    tasks = np.array([mb.task for mb in result.members])
    diverged = sum(any(not np.isfinite(v[i]).all() and np.isfinite(v[tasks == task]).any()
                       for v in result.curves.values()) for i, task in enumerate(tasks))
    warning = f"  {plural(diverged, 'run')} DIVERGED (NaN/inf in its curves)" if diverged else ""
    return f"{result.group.name}: " + "; ".join(parts) + f"  [{result.wall_time_s:.0f} s]" + warning


def format_mean(values: list, decimals: int) -> str:
    mean = rounded(mean_stderr(values)[0], decimals)
    return "-" if mean is None else f"{mean:.{decimals}f}"
