"""What several test files share: running the real scripts, copies of the project to edit, and the
plain training loop of one run that the batched training is proven against."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import torch

import runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROJECT_FILES = ("experiment.py", "plot.py", "plotting", "analysis.py", "runner")


def clean_environment(**extra) -> dict:
    """This process's environment without the project's own variables, plus `extra`."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GROKKING_")}
    environ.update(extra)
    return environ


def command(args: list[str], script: str = "experiment.py", project: str = ROOT) -> list[str]:
    """A script of the project (or of a copy of it in `project`) as a user types it."""
    return [sys.executable, os.path.join(project, script), *args]


def run_script(args: list[str], cwd: str = ROOT, script: str = "experiment.py", project: str | None = None,
               env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """A script run to its end in `cwd`: the project's (`project`), by default the one in `cwd`;
    in this process's environment without the project's own variables, unless `env` is given."""
    return subprocess.run(command(args, script, project or cwd), capture_output=True, text=True, cwd=cwd,
                          env=env or clean_environment(), timeout=timeout)


def start_script(args: list[str], cwd: str = ROOT, env: dict | None = None) -> subprocess.Popen:
    """experiment.py started in `cwd` (the project's own), to signal or to wait for."""
    return subprocess.Popen(command(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                            env=env or clean_environment())


def main_in_process(science, argv: list[str], **environ) -> tuple[int, str, str]:
    """experiment.py's command line in this process, without the cost of a new one: the main() the
    script calls, in this process's environment without the project's own variables (plus
    `environ`), its signal handlers put back afterwards. Returns (exit code, stdout, stderr)."""
    saved_environ = dict(os.environ)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    out, err = io.StringIO(), io.StringIO()
    try:
        os.environ.clear()
        os.environ.update(clean_environment(**environ))
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = runner.main(science, argv)
    finally:
        os.environ.clear()
        os.environ.update(saved_environ)
        for s, handler in handlers.items():
            signal.signal(s, handler)
    return code, out.getvalue(), err.getvalue()


def assert_one_error_line(stderr: str, message: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], stderr


def copy_project(folder) -> str:
    """The project's code copied into `folder` (as the AI-Scientist harness copies a template)."""
    os.makedirs(folder, exist_ok=True)
    for name in PROJECT_FILES:
        if os.path.isdir(os.path.join(ROOT, name)):
            shutil.copytree(os.path.join(ROOT, name), os.path.join(folder, name),
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(os.path.join(ROOT, name), os.path.join(folder, name))
    return str(folder)


def edit(folder, old: str, new: str, name: str = "experiment.py") -> None:
    """A text substitution in a copied file; the text must be there exactly once."""
    path = os.path.join(folder, name)
    with open(path) as f:
        source = f.read()
    assert source.count(old) == 1, f"{old!r} occurs {source.count(old)} times in {name}"
    with open(path, "w") as f:
        f.write(source.replace(old, new))


def load_experiment(folder, name: str):
    """A copied (and maybe edited) experiment.py as a module of its own name."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(folder, "experiment.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def final_info_without_times(out_dir) -> dict:
    """final_info.json of a finished study without the wall times (all that may differ between
    two runs of one study)."""
    with open(os.path.join(out_dir, "final_info.json")) as f:
        info = json.load(f)
    for entry in info.values():
        for part in entry.values():
            for key in [k for k in part if k.startswith("wall_time_s")]:
                del part[key]
    return info


def outputs(out_dir) -> tuple[list[dict], dict[str, np.ndarray]]:
    """runs.json and curves.npz of a finished study."""
    with open(os.path.join(out_dir, "runs.json")) as f:
        runs = json.load(f)
    with np.load(os.path.join(out_dir, "curves.npz")) as npz:
        return runs, {k: npz[k] for k in npz.files}


def train_alone(ex, c, layers: int, d_model: int, heads: int, task: str, seed: int, after_backward=None):
    """One run, trained the plain way in float64: the module's model, data and loss, the
    template's AdamW and LambdaLR warm-up, full-split evaluation at the module's evaluation steps.
    `c` is the run's config (every axis one value). Returns (curves name -> (evals,), model)."""
    table = ex.build_table(task, c)
    model = ex.build_model(layers, d_model, heads, table, seed, c).double()
    splits, draw = ex.run_data(len(table.answers), c, seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=c.lr, betas=(c.beta1, c.beta2),
                                  weight_decay=c.weight_decay, foreach=False)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(s / c.warmup_steps, 1))
    evaluations, curves = ex.evaluation_steps(c), {}
    for step in range(c.num_steps):
        rows = draw(1)[0]
        loss = ex.loss_fn(model(table.tokens[rows]), table.answers[rows])
        optimizer.zero_grad()
        loss.backward()
        if after_backward is not None:
            after_backward(model)
        optimizer.step()
        scheduler.step()
        if step + 1 in evaluations:
            model.eval()
            with torch.no_grad():
                per_example = ex.example_metrics(model(table.tokens), table.answers, c)
                for split, indices in splits.items():
                    for name, values in per_example.items():
                        curves.setdefault(f"{split}_{name}", []).append(float(values[indices].double().mean()))
                weights = {k: v.detach()[None] for k, v in model.named_parameters()}  # one member
                for name, value in ex.model_metrics(weights, [table], c).items():
                    curves.setdefault(name, []).append(float(value[0]))
            model.train()
    return {k: np.array(v) for k, v in curves.items()}, model
