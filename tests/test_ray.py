"""The Ray backend: the same results as the local one, a killed worker costs only a retry, and
a clear error without Ray."""

import importlib.util
import json
import os
import signal
import time

import numpy as np
import pytest

import experiment as ex
import runner
from runner.cli import resolve
from runner.folder import GROUPS_DIR
from support import clean_environment, final_info_without_times, start_script

SCIENCE = ex.science()
# Two groups (one per depth) that each train for a few seconds on one thread.
STUDY = ["--tasks=x_plus_y,x_minus_y", "--layers=1,2", "--dims=16", "--heads=2", "--seeds=2",
         "--num_steps=300", "--prime=11", "--perm_k=3", "--batch_size=64", "--device=cpu"]


def start(out, *extra):
    """experiment.py on one thread per process (Ray gives each one-CPU task one thread), so that
    the local and the Ray backend compute bit for bit the same."""
    return start_script([f"--out_dir={out}", *STUDY, *extra], env=clean_environment(OMP_NUM_THREADS="1"))


def finish(process):
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err
    return out


def results(out):
    """final_info.json without the timings, and the curves."""
    with np.load(out / "curves.npz") as curves:
        return final_info_without_times(out), {k: curves[k] for k in curves.files}


def assert_same(a, b):
    assert a[0] == b[0]
    assert a[1].keys() == b[1].keys()
    for key in a[1]:
        np.testing.assert_array_equal(a[1][key], b[1][key])


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    pytest.importorskip("ray")  # before training: without Ray the tests that need this skip
    out = tmp_path_factory.mktemp("local") / "run"
    finish(start(out))
    return results(out)


def running_tasks() -> list[int]:
    """Processes of Ray workers while they run train_group_task (Ray renames them so)."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().startswith(b"ray::train_group_task"):
                    pids.append(int(pid))
        except OSError:
            pass
    return pids


@pytest.mark.slow
def test_ray_backend_gives_the_local_results_also_when_a_worker_is_killed(tmp_path, local):
    """One Ray study, one of whose workers is killed while it trains (where /proc shows it): the
    group is retried, and the outputs equal the local backend's bit for bit."""
    out = tmp_path / "run"
    process = start(out, "--backend=ray")
    deadline, killed = time.time() + 120, None
    while os.path.isdir("/proc") and killed is None and time.time() < deadline and process.poll() is None:
        tasks = running_tasks()
        if tasks:
            time.sleep(1.0)  # let it train a little
            os.kill(tasks[0], signal.SIGKILL)
            killed = tasks[0]
        time.sleep(0.05)
    assert killed is not None or not os.path.isdir("/proc"), "no running task was seen"
    assert "on Ray (a local instance" in finish(process)
    assert_same(results(out), local)
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["options"]["backend"] == "ray" and all("host" in g for g in provenance["groups"])
    assert sorted(os.listdir(out / GROUPS_DIR)) == ["L1_D16_H2.npz", "L2_D16_H2.npz"]
    assert all(g["forward"] == "fast" for g in provenance["groups"])


def test_backend_ray_without_ray_is_a_usage_error(tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    out = tmp_path / "run"
    assert runner.main(SCIENCE, [f"--out_dir={out}", "--backend=ray"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install -r requirements-ray.txt" in err[0]
    assert not out.exists()


def test_bad_backend_from_the_environment():
    with pytest.raises(runner.UsageError, match="--backend='dask': choose one of local, ray"):
        resolve(SCIENCE, ["--out_dir=x"], environ={"GROKKING_BACKEND": "dask"})


def test_backend_from_the_environment():
    pytest.importorskip("ray")
    _, options = resolve(SCIENCE, ["--out_dir=x"], environ={"GROKKING_BACKEND": "ray",
                                                                   "GROKKING_RAY_ADDRESS": "10.0.0.1:6379"})
    assert options.backend == "ray" and options.ray_address == "10.0.0.1:6379"
    _, options = resolve(SCIENCE, ["--out_dir=x"], environ={"GROKKING_RAY_ADDRESS": "auto"})
    assert options.backend == "local" and options.ray_address is None
