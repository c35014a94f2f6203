"""Faults a long study meets: kill -9, Ctrl-C, SIGTERM, NaN, out-of-memory, damaged files."""

import dataclasses
import json
import os
import shutil
import signal
import time

import numpy as np
import pytest
import torch

import experiment as ex
import runner
from runner.folder import GROUPS_DIR, RunFolder
from runner.forwards import ForwardChoice
from runner.plan import Study
from runner.proof import PROOF_SMALL_BATCH
from runner.results import final_info, group_summary, study_records
from runner.training import train_group
from support import final_info_without_times, main_in_process, run_script, start_script

SCIENCE = ex.science()
# Three groups of a few seconds each: the first is saved well before the last ends.
STUDY = ["--tasks=x_plus_y,x_minus_y", "--layers=1,2,3", "--dims=16", "--heads=2", "--seeds=2",
         "--num_steps=150", "--eval_every=10", "--prime=23", "--perm_k=3", "--batch_size=64"]


def study_args(*extra):
    """The study's options; `extra` options replace the study's own of the same name."""
    options = dict(arg.split("=", 1) for arg in STUDY + list(extra))
    return [f"{k}={v}" for k, v in options.items()]


def run(out_dir, *extra):
    return run_script([f"--out_dir={out_dir}", *study_args(*extra)])


def interrupt_after_first_group(out_dir, signum):
    """Start the study, deliver `signum` as soon as the first group file exists."""
    process = start_script([f"--out_dir={out_dir}", *study_args()])
    groups = os.path.join(out_dir, GROUPS_DIR)
    deadline = time.time() + 300
    while not (os.path.isdir(groups) and any(f.endswith(".npz") for f in os.listdir(groups))):
        assert process.poll() is None and time.time() < deadline, "the study ended before its first group"
        time.sleep(0.02)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    return process.returncode, stdout, stderr


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "run"
    result = run(out)
    assert result.returncode == 0, result.stderr
    return out


# Resumed after kill -9 and after Ctrl-C, a study gives the uninterrupted study's results (so the
# same command twice does too). SIGTERM shares Ctrl-C's handler: its exit code and message suffice.
@pytest.mark.parametrize("signum, code, resume", [(signal.SIGKILL, -9, True), (signal.SIGINT, 130, True),
                                                  (signal.SIGTERM, 143, False)])
def test_interrupted_study_resumes_to_the_same_results(uninterrupted, tmp_path, signum, code, resume):
    out = tmp_path / "run"
    returncode, _, stderr = interrupt_after_first_group(out, signum)
    assert returncode == code, stderr
    assert not os.path.exists(out / "final_info.json")
    saved = sorted(os.listdir(out / GROUPS_DIR))
    assert "L1_D16_H2.npz" in saved and "L3_D16_H2.npz" not in saved
    for name in saved:  # every group file on disk is whole
        if name.endswith(".npz"):
            with np.load(out / GROUPS_DIR / name) as f:
                assert f["curve.train_loss"].shape[0] == 4
    if signum != signal.SIGKILL:
        assert "resume with:" in stderr and f"--out_dir={out}" in stderr
        assert "Traceback" not in stderr
    if not resume:
        return
    result = run(out)
    assert result.returncode == 0, result.stderr
    assert "resuming: 1 of 3 groups" in result.stdout or "resuming: 2 of 3 groups" in result.stdout
    assert final_info_without_times(out) == final_info_without_times(uninterrupted)
    assert not [n for n in os.listdir(out) + os.listdir(out / GROUPS_DIR) if n.endswith(".tmp")]


def test_a_signal_during_the_forward_check_stops_the_study(tmp_path):
    """Ctrl-C while the fast forward is being checked: the study stops there (the check's own
    error handling once took the interruption for a forward that does not apply, and trained on).
    The plain model's first call on the large check batch with gradients is the fast forward's comparison."""
    def interrupting_model(*args):
        def hook(module, inputs):
            if inputs[0].shape[0] > PROOF_SMALL_BATCH and torch.is_grad_enabled() and not sent:
                sent.append(True)
                os.kill(os.getpid(), signal.SIGINT)  # delivered to the handler main() installs, as from a terminal
        model = ex.build_model(*args)
        model.register_forward_pre_hook(hook)
        return model

    sent, science = [], dataclasses.replace(SCIENCE, build_model=interrupting_model)
    code, stdout, stderr = main_in_process(science, [f"--out_dir={tmp_path / 'run'}", *STUDY])
    assert code == 130, stderr
    assert "interrupted by SIGINT: 0 finished groups kept" in stderr and "resume with:" in stderr
    assert "forward of" not in stdout and not os.path.exists(tmp_path / "run" / "final_info.json")


def finished_copy(uninterrupted, tmp_path):
    """A finished study's folder, copied (a copy is what any finished out_dir is to the script)."""
    shutil.copytree(uninterrupted, tmp_path / "run")
    return tmp_path / "run"


def test_another_config_is_refused_and_overwrite_replaces(uninterrupted, tmp_path):
    out = finished_copy(uninterrupted, tmp_path)
    before = (out / "final_info.json").read_bytes()
    result = run(out, "--seeds=3")
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: --out_dir={out} holds another study (seeds: 2 in out_dir, 3 now); "
                                     "choose a new folder, or pass --overwrite=1 to replace it")
    assert (out / "final_info.json").read_bytes() == before
    replaced = run(out, "--seeds=1", "--overwrite=1")
    assert replaced.returncode == 0, replaced.stderr
    assert len(json.loads((out / "runs.json").read_text())) == 3 * 2 * 1
    # the same study again: everything is resumed, nothing retrained, outputs unchanged
    again = run(out, "--seeds=1")
    assert again.returncode == 0 and "resuming: 3 of 3 groups" in again.stdout


def test_damaged_group_file_is_trained_again(uninterrupted, tmp_path):
    out = finished_copy(uninterrupted, tmp_path)
    (out / GROUPS_DIR / "L2_D16_H2.npz").write_bytes(b"PK\x03\x04 damaged")
    (out / "final_info.json").unlink()
    result = run(out)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "L2_D16_H2.npz: it is unreadable" in warnings[0] and "training L2_D16_H2 again" in warnings[0]
    assert "resuming: 2 of 3 groups" in result.stdout
    assert final_info_without_times(out) == final_info_without_times(uninterrupted)


# In-process: faults inside one group.
CONFIG = ex.Config(tasks=("x_plus_y", "x_minus_y"), layers=(2,), dims=(16,), heads=(2,), seeds=3, num_steps=40,
                   eval_every=10, batch_size=64, prime=23)
CPU, FAST = torch.device("cpu"), ForwardChoice("fast", "test")


@pytest.fixture(scope="module")
def study():
    return Study.build(SCIENCE, CONFIG)


@pytest.fixture(scope="module")
def group(study):
    group, = study.groups()
    return group


@pytest.fixture(scope="module")
def clean(study, group):
    return train_group(study, group, CPU, FAST)[0]


def test_a_nan_member_diverges_alone(study, group, clean):
    def poisoned(layers, d_model, heads, table, seed, c):
        model = ex.build_model(layers, d_model, heads, table, seed, c)
        if table.task == "x_minus_y" and seed == 1:
            with torch.no_grad():
                model.blocks[0].ffn[0].weight[0, 0] = float("nan")
        return model

    poisoned_study = dataclasses.replace(study, science=dataclasses.replace(SCIENCE, build_model=poisoned))
    result = train_group(poisoned_study, group, CPU, FAST)[0]
    bad = [(m.task, m.seed) for m in group.members].index(("x_minus_y", 1))
    for i in range(len(group.members)):
        m = ex.run_metrics(result.steps, {k: v[i] for k, v in result.curves.items()}, CONFIG)
        if i == bad:
            assert m["diverged"] == 1 and m["final_train_loss"] is None and m["grokked"] == 0
        else:
            assert m["diverged"] == 0
            for name, values in result.curves.items():  # untouched, bitwise
                np.testing.assert_array_equal(values[i], clean.curves[name][i])
    records = study_records(study, [result], {group.arch.name: "all"})
    assert [r["diverged"] for r in records if r["task"] == "x_minus_y"] == [0, 1, 0]
    assert [r["final_val_loss"] is None for r in records if r["task"] == "x_minus_y"] == [False, True, False]
    info = final_info(records, ex.HEADLINE_METRICS, plain=True)
    assert info["x_minus_y"]["final_info_dict"]["grokked"] == [0, 0, 0]
    assert "1 run DIVERGED" in group_summary(study, result)


def test_chunked_group_gives_the_same_results(study, group, clean):
    chunked = train_group(study, group, CPU, FAST, max_members=4)[0]
    for name, values in clean.curves.items():
        np.testing.assert_allclose(chunked.curves[name], values, rtol=0, atol=1e-6)


def test_out_of_memory_splits_the_group(study, group, clean, capsys):
    sizes = []

    def small_memory(params, c):  # each chunk makes its optimizer once, before its first step
        sizes.append(len(next(iter(params.values()))))
        if sizes[-1] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return ex.make_optimizer(params, c)

    small = dataclasses.replace(study, science=dataclasses.replace(SCIENCE, make_optimizer=small_memory))
    result = train_group(small, group, CPU, FAST)[0]
    assert sizes == [6, 3, 2, 2, 2]
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == 1 and "does not fit in memory" in warnings[0]
    for name, values in clean.curves.items():
        np.testing.assert_allclose(result.curves[name], values, rtol=0, atol=1e-6)


def test_full_disk_is_one_line_and_keeps_finished_groups(tmp_path, monkeypatch, capsys):
    original, calls = RunFolder.save_group, []

    def disk_fills_up(folder, result):
        calls.append(result.arch.name)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        original(folder, result)

    monkeypatch.setattr(RunFolder, "save_group", disk_fills_up)
    monkeypatch.delenv("GROKKING_PRESET", raising=False)
    out = tmp_path / "run"
    code = runner.main(SCIENCE, [f"--out_dir={out}", *study_args("--num_steps=20")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith(f"error: cannot write to {out}: No space left on device; finished groups are kept")
    assert "resume with: python" in err[-1]
    assert os.listdir(out / GROUPS_DIR) == ["L1_D16_H2.npz"]
