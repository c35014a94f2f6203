"""A study's folder: its layout, which study it holds, resume, saved groups and models, outputs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import tempfile
import zipfile

import numpy as np
import torch

from analysis import FORMAT_VERSION

from .files import file_hash, write_json, write_npz
from .plan import Group, Member, Study, member_from_json, member_json
from .results import Outputs
from .science import UsageError
from .training import GroupResult
MODELS_FORMAT = 2  # saved models: the plain model's parameters by name (1: an older layout)
GROUPS_DIR = "groups"  # one file per finished group, for resuming
MODELS_DIR = "models"  # one file per group with its members' final weights (--save_models=1)
STUDY_FILE = "study.json"  # written first: which study this folder holds
OUTPUT_FILES = ("final_info.json", "runs.json", "curves.npz", "architectures.json", "config.json",
                "provenance.json")


def study_identity(study: Study) -> dict:
    """What makes two studies the same: the config and the code of the science."""
    return {**dataclasses.asdict(study.c), "experiment_sha256": file_hash(study.science.source)}


def identity_hash(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


class RunFolder:
    """The output folder of one study, from the check before any work to the last file:

        study.json        which study the folder holds (written first)
        groups/<g>.npz    each group's curves, saved as soon as it finishes (resume reads them)
        models/<g>.npz    with --save_models=1, each group's final weights
        OUTPUT_FILES      written at the end, final_info.json last: its presence means done
    """

    def __init__(self, path: str, identity: dict | None = None):
        self.path, self.identity = path, identity  # identity: None for a folder only read (--query)
        self.hash = identity_hash(identity) if identity is not None else None

    def file(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    def group_file(self, group: Group, folder: str = GROUPS_DIR) -> str:
        return self.file(folder, group.name + ".npz")

    # --- before any work ---------------------------------------------------------------

    def prepare(self, overwrite: bool) -> bool:
        """Check the folder before any work: True when it holds an unfinished (or finished) run of
        the same study, to resume. Refuses another study's folder or a foreign one unless
        overwrite, and proves the folder is writable."""
        path = self.path
        if os.path.exists(path) and not os.path.isdir(path):
            raise UsageError(f"--out_dir={path} exists and is not a folder; choose another --out_dir")
        resume = False
        if os.path.isdir(path) and os.listdir(path):
            try:
                with open(self.file(STUDY_FILE)) as f:
                    saved = json.load(f)
                same = saved["format_version"] == FORMAT_VERSION and saved["config_hash"] == self.hash
                difference = "" if same else (config_difference(saved["config"], self.identity)
                                              or "an older output format")
            except (OSError, ValueError, KeyError, TypeError):
                same, difference = False, None
            resume = same
            if not same and not overwrite:
                if difference is None:
                    raise UsageError(f"--out_dir={path} is not empty and holds no study of this script; choose "
                                     "a new folder, or pass --overwrite=1 to replace its results")
                raise UsageError(f"--out_dir={path} holds another study ({difference}); choose a new folder, "
                                 "or pass --overwrite=1 to replace it")
        try:
            os.makedirs(path, exist_ok=True)
            with tempfile.TemporaryFile(dir=path):
                pass
        except OSError as e:
            raise UsageError(f"cannot write to --out_dir={path}: {e.strerror or e}") from None
        return resume

    def start(self, resume: bool) -> None:
        """Remove what a killed process left half-written; for a new study, remove another
        study's files (--overwrite=1) and say which study the folder now holds."""
        for folder in (self.path, self.file(GROUPS_DIR), self.file(MODELS_DIR)):
            for name in os.listdir(folder) if os.path.isdir(folder) else []:
                partial = name.startswith(".") and name.endswith(".tmp")  # the real files are intact
                ours = name in OUTPUT_FILES + (STUDY_FILE,) if folder == self.path else name.endswith(".npz")
                if partial or (ours and not resume):
                    os.unlink(os.path.join(folder, name))
        if not resume:
            write_json(self.file(STUDY_FILE), {"format_version": FORMAT_VERSION, "config_hash": self.hash,
                                               "config": self.identity})

    # --- groups, saved as they finish --------------------------------------------------

    def finished_groups(self) -> int:
        folder = self.file(GROUPS_DIR)
        return sum(n.endswith(".npz") for n in os.listdir(folder)) if os.path.isdir(folder) else 0

    def save_group(self, result: GroupResult) -> None:
        meta = {"config_hash": self.hash, "group": result.group.name,
                "members": [member_json(m) for m in result.members], "curves": list(result.curves),
                "wall_time_s": result.wall_time_s, "eval_time_s": result.eval_time_s, "forward": result.forward}
        os.makedirs(self.file(GROUPS_DIR), exist_ok=True)
        write_npz(self.group_file(result.group), steps=result.steps, meta=np.array(json.dumps(meta)),
                  **{f"curve.{name}": values for name, values in result.curves.items()})

    def load_group(self, group: Group, steps: list[int]) -> GroupResult | None:
        """A finished group saved by an earlier, interrupted run of the same study, or None.
        A damaged or foreign file is reported in one line and its group trained again."""
        path = self.group_file(group)
        if not os.path.exists(path):
            return None
        try:
            with np.load(path, allow_pickle=False) as f:
                meta, saved_steps = json.loads(str(f["meta"])), f["steps"]
                curves = {name: f[f"curve.{name}"] for name in meta["curves"]}
            if meta["config_hash"] != self.hash:
                problem = "it belongs to another config"
            elif [member_from_json(m) for m in meta["members"]] != group.members:
                problem = "its runs differ"
            elif list(saved_steps) != steps or any(v.shape != (len(group.members), len(steps))
                                                   for v in curves.values()):
                problem = "its curves have the wrong shape"
            else:
                problem = None
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as e:
            problem = f"it is unreadable ({type(e).__name__})"
        if problem:
            print(f"warning: {os.path.relpath(path)}: {problem}; training {group.name} again", file=sys.stderr,
                  flush=True)
            return None
        return GroupResult(group, saved_steps, curves, meta["wall_time_s"], meta["eval_time_s"],
                           meta.get("forward", ""))

    # --- saved models ------------------------------------------------------------------

    def has_models(self, group: Group) -> bool:
        return os.path.exists(self.group_file(group, MODELS_DIR))

    def save_models(self, group: Group, weights: list) -> None:
        """models/<group>.npz from each chunk's (members, {name: (members, ...) array}): the plain
        model's parameters as plain arrays ("part<k>.<name>") and, as JSON, the architecture and
        the members. Loading runs no code."""
        arrays, parts = {}, []
        for k, (members, params) in enumerate(weights):
            arrays.update({f"part{k}.{name}": value for name, value in params.items()})
            parts.append({"members": [member_json(m) for m in members], "parameters": list(params)})
        meta = {"format_version": MODELS_FORMAT, "group": group.name,
                "architecture": dataclasses.asdict(group.arch), "parts": parts}
        os.makedirs(self.file(MODELS_DIR), exist_ok=True)
        write_npz(self.group_file(group, MODELS_DIR), meta=np.array(json.dumps(meta)), **arrays)

    def member_weights(self, group: Group, member: Member) -> dict[str, torch.Tensor]:
        """One member's parameters (the plain model's state dict) from its group's saved models."""
        path = self.group_file(group, MODELS_DIR)
        if not os.path.exists(path):
            raise UsageError(f"{self.path} has no saved weights for {group.name}; run the study with --save_models=1")
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            if meta.get("format_version") != MODELS_FORMAT:
                raise UsageError(f"{path} was saved by an older experiment.py; train the study again with "
                                 "--save_models=1")
            for k, part in enumerate(meta["parts"]):
                members = [member_from_json(m) for m in part["members"]]
                if member in members:
                    row = members.index(member)
                    return {name: torch.from_numpy(f[f"part{k}.{name}"][row]) for name in part["parameters"]}
        raise UsageError(f"{path} holds no weights for {member.task} seed {member.seed}; the study may have "
                         "been resumed without --save_models=1 for this group")

    # --- the outputs -------------------------------------------------------------------

    def write_outputs(self, outputs: Outputs) -> None:
        """Every output file of a finished study; final_info.json last, so its presence means done."""
        write_npz(self.file("curves.npz"), **outputs.curves)
        for name, content in outputs.json_files.items():
            write_json(self.file(name), content)


def config_difference(saved: dict, now: dict) -> str:
    """The first fields (up to 3) in which two studies, as read from JSON, differ."""
    now = json.loads(json.dumps(now))  # tuples -> lists, as in the saved file
    shown = lambda v: ",".join(map(str, v)) if isinstance(v, list) else str(v)[:12]
    changed = [k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
    return "; ".join(f"{k}: {shown(saved.get(k))} in out_dir, {shown(now.get(k))} now" for k in changed[:3])
