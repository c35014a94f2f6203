"""Where groups train: one after another on this machine, or as Ray tasks."""

from __future__ import annotations

import dataclasses
import importlib
import os
import socket
from dataclasses import dataclass

import torch

import analysis

from .device import configure_backend, device_name, resolve_device
from .files import PACKAGE_DIR
from .forwards import ForwardChoice
from .options import Options
from .plan import Group, Study, config_from_json, group_from_json, group_json, member_from_json, member_json
from .training import GroupResult, train_group


RAY_MAX_RETRIES = 3  # attempts after the first when a worker dies (killed, node lost)


@dataclass
class Finished:
    """A group trained by a backend."""

    result: GroupResult
    weights: list  # with --save_models=1: each chunk's (members, {parameter name: (members, ...) array})
    where: dict  # the host and device it ran on

    @property
    def group(self) -> Group:
        return self.result.group


def train_groups_local(study: Study, groups: list[Group], choices: dict, options: Options, device: torch.device,
                       on_progress):
    """Yield a Finished for every group, one after another on this machine; on_progress(group,
    fraction done)."""
    where = {"host": socket.gethostname(), "device_name": device_name(device)}
    for group in groups:
        result, weights = train_group(study, group, device, choices[group.name], options.max_members,
                                      options.save_models, lambda fraction, group=group: on_progress(group, fraction))
        yield Finished(result, weights, where)


def train_group_task(module: str, config: dict, group: dict, choice: dict, options: dict) -> dict:
    """The Ray task: one group, from and to plain data (it may run on another machine). The worker
    imports the science by module name (it has no other copy of it). The device is resolved here:
    with --device=auto, the GPU that Ray assigned to the task, if any."""
    science = importlib.import_module(module).science()
    study, g, opts = Study.build(science, config_from_json(science, config)), group_from_json(group), Options(**options)
    device = resolve_device(opts.device)
    configure_backend(device)
    result, weights = train_group(study, g, device, ForwardChoice(**choice), opts.max_members, opts.save_models)
    return {"steps": result.steps, "curves": result.curves, "wall_time_s": result.wall_time_s,
            "eval_time_s": result.eval_time_s, "forward": result.forward,
            "weights": [([member_json(m) for m in members], params) for members, params in weights],
            "where": {"host": socket.gethostname(), "device_name": device_name(device)}}


def train_groups_ray(study: Study, groups: list[Group], choices: dict, options: Options, on_progress):
    """Like train_groups_local, but every group is a Ray task (one GPU each when the cluster has
    GPUs, else one CPU), yielded as soon as it finishes. A task whose worker dies is retried
    (RAY_MAX_RETRIES). experiment.py, this package and analysis.py travel to the workers as
    modules (py_modules)."""
    import logging

    import ray
    science = study.science
    ray.init(address=options.ray_address, runtime_env={"py_modules": [PACKAGE_DIR, os.path.abspath(analysis.__file__),
                                                                      os.path.abspath(science.source)]},
             include_dashboard=False, logging_level=logging.ERROR)
    pending = {}  # task -> group, for the tasks still running
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        task = ray.remote(train_group_task).options(num_gpus=1 if gpus else 0, num_cpus=1, max_retries=RAY_MAX_RETRIES)
        module = os.path.splitext(os.path.basename(science.source))[0]
        config, opts = dataclasses.asdict(study.c), dataclasses.asdict(options)
        pending.update({task.remote(module, config, group_json(g), dataclasses.asdict(choices[g.name]), opts): g
                        for g in groups})
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)  # short waits: Ctrl-C is seen
            for ref in done:
                group, out = pending.pop(ref), ray.get(ref)
                result = GroupResult(group, out["steps"], out["curves"], out["wall_time_s"], out["eval_time_s"],
                                     out["forward"])
                weights = [([member_from_json(m) for m in members], params) for members, params in out["weights"]]
                on_progress(group, 1.0)
                yield Finished(result, weights, out["where"])
    finally:  # interrupted or failed: stop the rest, also on a cluster that outlives this driver
        for ref in pending:
            ray.cancel(ref, force=True)
        ray.shutdown()
