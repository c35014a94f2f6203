"""The study loop: plan, announce, train, report."""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import socket
import sys

import numpy as np
import torch

from .backends import Finished, train_groups_local, train_groups_ray
from .costs import CPU_WARNING_S, cpu_seconds, study_costs
from .device import configure_backend, device_name
from .files import MACHINERY_FILES, file_hash, git_state
from .folder import GROUPS_DIR, RunFolder
from .options import Options
from .plan import Group, Study, architectures, axis_values, changed_fields, format_value, varied_axes
from .progress import Progress
from .proof import choose_forwards
from .results import HARNESS_MESSAGE_LIMIT, group_summary, results_message, study_outputs
from .text import plural, span
from .training import GroupResult


def run_study(study: Study, folder: RunFolder, options: Options, device: torch.device, resume: bool,
              argv: list[str]) -> int:
    """Every group trained, or loaded from an earlier, interrupted run of the same study; then
    every output file."""
    configure_backend(device)
    started = datetime.datetime.now(datetime.timezone.utc)
    code = code_state(study)  # read before training: the code that trains
    folder.start(resume)
    groups = study.groups()
    saved = load_finished(study, folder, groups, options)
    todo = [g for g in groups if g.name not in saved]
    costs = announce(study, folder, options, device, groups, todo)
    choices = choose_forwards(study, todo, options.forward)
    spent = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()  # planning and checks
    trained = train(study, folder, todo, choices, options, device, Progress(costs, time_limit_s=options.time_limit,
                                                                            spent_s=spent))
    results = [saved[g.name] if g.name in saved else trained[g.name].result for g in groups]
    ended = datetime.datetime.now(datetime.timezone.utc)
    provenance = {
        "command": [os.path.basename(sys.argv[0])] + argv,
        "started_utc": started.isoformat(timespec="seconds"), "finished_utc": ended.isoformat(timespec="seconds"),
        "wall_time_s": (ended - started).total_seconds(),
        "groups": [{"group": r.group.name, "members": len(r.members), "resumed": r.group.name in saved,
                    "forward": r.forward, "wall_time_s": r.wall_time_s, "eval_time_s": r.eval_time_s,
                    **({"forward_reason": choices[r.group.name].reason, **trained[r.group.name].where}
                       if r.group.name in trained else {})} for r in results],
        "options": {k: v for k, v in dataclasses.asdict(options).items() if k not in ("out_dir", "overrides")},
        "device": str(device) if options.backend == "local" else "per group (Ray workers)",
        "device_name": device_name(device), **code,
    }
    outputs = study_outputs(study, results, options.preset, options.overrides, provenance)
    folder.write_outputs(outputs)
    message = len(results_message(outputs.json_files["final_info.json"]))
    print(f"wrote {folder.path}/final_info.json ({plural(len(study_runs(groups)), 'run')}) in "
          f"{provenance['wall_time_s']:.0f} s", flush=True)
    if message > HARNESS_MESSAGE_LIMIT:
        print(f"warning: the means in final_info.json take {message:,} characters, all of which the AI-Scientist "
              "harness sends to its model after a run; report fewer HEADLINE_METRICS or train a smaller grid", flush=True)
    return 0


def study_runs(groups: list[Group]) -> list:
    return [m for g in groups for m in g.members]


def code_state(study: Study) -> dict:
    """What code and software train the study: hashes of experiment.py and of the machinery, the
    git commit, the versions."""
    return {"torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "host": socket.gethostname(),
            "source_sha256": file_hash(study.science.source), "runner_sha256": file_hash(*MACHINERY_FILES),
            **git_state([study.science.source, *MACHINERY_FILES])}


def load_finished(study: Study, folder: RunFolder, groups: list[Group], options: Options) -> dict[str, GroupResult]:
    """The groups an earlier run of this study finished, by name. One saved before --save_models=1
    was asked for trains again, for its weights."""
    steps = study.science.evaluation_steps(study.c)
    saved = {g.name: folder.load_group(g, steps) for g in groups}
    return {g.name: saved[g.name] for g in groups
            if saved[g.name] is not None and (folder.has_models(g) or not options.save_models)}


def announce(study: Study, folder: RunFolder, options: Options, device: torch.device, groups: list[Group],
             todo: list[Group]) -> dict[str, float]:
    """Say what the study is, where its values come from, what is resumed and, on a CPU, when it
    is too long; returns each group's cost (for progress)."""
    c = study.c
    flops, costs = study_costs(study, todo, len(study.science.evaluation_steps(c)), device)
    work = "nothing left to train" if not todo else (
        f"about {flops / 1e12:.1f} TFLOP {'left ' if len(todo) < len(groups) else ''}to train")
    zipped = [a for a in varied_axes(c) if a in getattr(c, "zip_axes", ())]
    varied = "".join(f" x {len(axis_values(c, a))} {a}" for a in varied_axes(c) if a not in zipped) + (
        f" x {len(axis_values(c, zipped[0]))} ({', '.join(zipped)})" if zipped else "")
    where = device_name(device) if options.backend == "local" else \
        f"Ray ({options.ray_address or 'a local instance'}, groups in parallel)"
    print(f"study: {plural(len(architectures(c)), 'architecture')}{varied} x {plural(len(c.tasks), 'task')} x "
          f"{plural(c.seeds, 'seed')} = {plural(len(study_runs(groups)), 'run')} of {c.num_steps} steps, as "
          f"{plural(len(groups), 'group')} ({len(groups) * c.num_steps:,} batched steps), on {where}; {work}",
          flush=True)
    changed = changed_fields(c)
    if changed:  # says where each value comes from: an edited default a preset overrides shows here
        sources = [f"preset {options.preset}"] * bool(options.preset) + ["the command line"] * bool(options.overrides)
        print("config: Config's defaults but " + " ".join(f"{n}={format_value(getattr(c, n))}" for n in changed)
              + f" (from {' and '.join(sources)})", flush=True)
    restored = [n for n in study.science.presets.get(options.preset, {}) if n in options.overrides and n not in changed]
    if restored:  # else the line above would let a reader assume the preset's values for these
        print(f"config: {' '.join(f'{n}={format_value(getattr(c, n))}' for n in restored)} from the command line: "
              f"Config's defaults, not preset {options.preset}'s", flush=True)
    if len(todo) < len(groups):
        print(f"resuming: {len(groups) - len(todo)} of {plural(len(groups), 'group')} already finished in "
              f"{folder.path}/{GROUPS_DIR}", flush=True)
    seconds, limit = cpu_seconds(costs), options.time_limit or CPU_WARNING_S
    if options.backend == "local" and device.type == "cpu" and seconds > limit:
        print(f"warning: this study needs roughly {span(seconds)} on 2 CPU cores, past {span(limit)} "
              f"({'--time_limit' if options.time_limit else 'the AI-Scientist harness stops a run after 2 hours'}); use a "
              "GPU, or --preset=demo / --preset=smoke, or fewer --layers/--dims/--heads/--seeds", flush=True)
    return costs


def train(study: Study, folder: RunFolder, todo: list[Group], choices: dict, options: Options, device: torch.device,
          progress: Progress) -> dict[str, Finished]:
    """Train the groups still to do on the chosen backend, each saved as soon as it finishes."""
    trained = {}
    try:
        if options.backend == "ray":
            stream = train_groups_ray(study, todo, choices, options, progress.update)
        else:
            stream = train_groups_local(study, todo, choices, options, device, progress.update)
        for done in stream:
            if options.save_models:  # before the group file: a saved group always has its weights
                folder.save_models(done.group, done.weights)
            folder.save_group(done.result)
            trained[done.group.name] = done
            progress.write(group_summary(study, done.result))
    finally:
        progress.close()
    return trained
