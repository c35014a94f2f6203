"""Study folders written by experiment.py, read for drawing: which to draw, and each as a
StudyFolder (its runs, curves and architectures), or one view per setting of its other axes."""

from __future__ import annotations

import functools
import json
import os
import re
import zipfile
from dataclasses import dataclass

import numpy as np

import analysis



class UsageError(Exception):
    """Bad input: one line on stderr and exit code 2, before any figure is written."""


class BadFolder(Exception):
    """A study folder that cannot be drawn; the message says why."""


@dataclass
class StudyFolder:
    """One study folder (a run_<n>/ of the AI-Scientist harness, or a committed study): its runs,
    each one task x architecture x seed (x setting), and their curves."""

    name: str  # file-name prefix of its figures, e.g. run_3 or capacity_cpu
    title: str  # how figure titles name it: plot.py's label, else the folder name
    config: dict  # the resolved config (config.json["config"])
    records: list[dict]  # runs.json: one dict per run
    curves: dict[str, np.ndarray]  # curve name -> (runs, evals); "step" -> (evals,)
    architectures: list[dict]  # architectures.json
    axes: dict[str, list]  # the non-architecture axes it varied, e.g. {"batch_size": [64, 512]}

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
    def steps(self) -> np.ndarray:
        return self.curves["step"]

    @property
    def tasks(self) -> list[str]:
        return list(dict.fromkeys(r["task"] for r in self.records))

    @property
    def archs(self) -> list[dict]:
        """The architectures from the smallest to the largest (fewer heads first)."""
        return sorted(self.architectures, key=analysis.architecture_order)

    @functools.cached_property
    def summary(self) -> dict:
        """analysis.summarize: a row per task, setting and architecture, and every paired comparison."""
        return analysis.summarize(self.records, self.architectures, self.budget, self.name)

    def values(self, key: str) -> list:
        """The values an architecture field takes here (layers, d_model, heads), sorted."""
        return sorted({a[key] for a in self.architectures})

    def rows(self, **match) -> list[int]:
        """Indices of the runs whose fields equal `match` (rows of the curves)."""
        return [i for i, r in enumerate(self.records) if all(r[k] == v for k, v in match.items())]

    def chosen(self, **match) -> list[dict]:
        return [self.records[i] for i in self.rows(**match)]


def load(folder: str, title: str | None = None) -> StudyFolder:
    name = os.path.basename(os.path.normpath(folder))
    try:
        with open(os.path.join(folder, "final_info.json")) as f:
            json.load(f)
        with open(os.path.join(folder, "config.json")) as f:
            config_file = json.load(f)
        if config_file.get("format_version") != analysis.FORMAT_VERSION:
            raise BadFolder(f"format version {config_file.get('format_version')} is not {analysis.FORMAT_VERSION}")
        with open(os.path.join(folder, "runs.json")) as f:
            records = json.load(f)
        with open(os.path.join(folder, "architectures.json")) as f:
            architectures = json.load(f)
        with np.load(os.path.join(folder, "curves.npz")) as npz:
            curves = {key: npz[key] for key in npz.files}
    except FileNotFoundError as e:
        raise BadFolder(f"{os.path.basename(e.filename)} is missing (an unfinished run?)") from None
    except (json.JSONDecodeError, UnicodeDecodeError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise BadFolder(f"unreadable file: {e}") from None
    if not records or any(curves.get(k) is None or len(curves[k]) != len(records)
                          for k in ("train_loss", "val_loss", "train_acc", "val_acc")):
        raise BadFolder("runs.json and curves.npz disagree")
    for r in records:  # runs written before studies had axes beyond the architecture
        r.setdefault("setting", "")
    analysis.add_curve_measures(records, curves, config_file["config"]["num_steps"])  # studies made before them
    return StudyFolder(name, title or name, config_file["config"], records, curves, architectures,
                       config_file.get("axes") or {})


def setting_views(study: StudyFolder) -> list[StudyFolder]:
    """The study itself, or when it varied other axes one view per setting (e.g. per batch size),
    so that the architecture figures compare architectures under equal conditions."""
    if len(study.settings) < 2:
        return [study]
    views = []
    for setting in study.settings:
        rows = study.rows(setting=setting)
        views.append(StudyFolder(f"{study.name}_{setting.replace('/', '_')}", f"{study.title} [{setting}]",
                                 study.config, [study.records[r] for r in rows],
                                 {k: v if k == "step" else v[rows] for k, v in study.curves.items()},
                                 study.architectures, study.axes))
    return views


def run_number(folder: str) -> int:
    return int(re.fullmatch(r"run_(\d+)", folder).group(1))


def discover(root: str, only: list[str] | None, labels: dict[str, str]) -> list[StudyFolder]:
    """The folders to draw: `only`, else every run_<n>/ in root in numeric order; with labels,
    only those it names, titled by it. A folder that cannot be drawn is skipped and named."""
    names = only or sorted((d for d in os.listdir(root) if re.fullmatch(r"run_\d+", d)
                            and os.path.isdir(os.path.join(root, d))), key=run_number)
    if labels and not only and not set(labels) & set(names):
        raise UsageError(f"plot.py's labels name {', '.join(labels)}, none of which is a run folder here; "
                         f"the run folders are: {', '.join(names) or 'none'}")
    studies = []
    for name in names:
        folder = os.path.join(root, name)
        if labels and name not in labels:
            print(f"note: {name} left out (not in plot.py's labels)")
            continue
        if not os.path.isfile(os.path.join(folder, "final_info.json")):
            print(f"warning: {name} skipped: no final_info.json (unfinished, failed or not a run)")
            continue
        try:
            studies.append(load(folder, labels.get(name)))
        except BadFolder as e:
            print(f"warning: {name} skipped: {e}")
    return studies
