"""The command line as the AI-Scientist harness and a researcher use it."""

import json
import math
import os
import time

import numpy as np
import pytest
import torch

import experiment as ex
from runner.cli import resolve
from runner.folder import GROUPS_DIR, OUTPUT_FILES, STUDY_FILE
from runner.options import Options
from runner.plan import Architecture, Study, architectures
from runner.costs import cpu_seconds, study_costs
from runner.progress import Progress
from support import ROOT, assert_one_error_line, clean_environment, main_in_process, run_script

SCIENCE = ex.science()
TINY = ["--tasks=x_plus_y,permutation", "--layers=1", "--dims=16", "--heads=2", "--seeds=2",
        "--num_steps=20", "--eval_every=10", "--prime=11", "--perm_k=3", "--batch_size=32"]


def run(args, env=None, cwd=ROOT):
    return run_script(args, cwd=cwd, project=ROOT, env=clean_environment(**(env or {})))


BAD_INPUTS = [
    (["--layers=1,2"], "--out_dir is required"),
    (["--colour=red"], "unknown option --colour"),
    (["--num_steps=ten"], "expected an integer"),
    (["--layers=1,x"], "comma-separated list of integers"),
    (["--lr=fast"], "expected a number"),
    (["--dims=64", "--heads=3"], "3 heads do not divide d_model 64"),
    (["--tasks=x_times_y"], "unknown task 'x_times_y'"),
    (["--train_fraction=0"], "strictly between 0 and 1"),
    (["--train_fraction=1.5"], "strictly between 0 and 1"),
    (["--num_steps=0"], "--num_steps must be a positive integer"),
    (["--eval_every=-5"], "--eval_every must be a positive integer"),
    (["--prime=91"], "--prime=91 is not prime"),
    (["--preset=huge"], "unknown preset 'huge'"),
    (["--perm_k=9"], "--perm_k must lie in 2..6"),
    (["--device=tpu"], "use auto, cpu, cuda or cuda:N"),
    (["--device=cuda:x"], "use auto, cpu, cuda or cuda:N"),
    (["--num-steps=5", "--num_steps=6"], "--num_steps is given twice"),
    (["stray"], "unexpected argument 'stray'"),
    (["--seeds"], "--seeds needs a value"),
    (["--seeds=1", "--seeds=2"], "--seeds is given twice"),
    # axes beyond the architecture, and the other study options
    (["--batch_size=0,64"], "--batch_size must be positive"),
    (["--prime=11,11"], "--prime lists a value twice"),
    (["--prime=11,15", "--tasks=x_div_y"], "--prime=15 is not prime"),
    (["--lr=0.001,x"], "expected a number or a comma-separated list of numbers"),
    (["--eval_schedule=cubic"], "use linear or log"),
    (["--train_fraction=0.6", "--test_fraction=0.4"], "leave an empty split"),
    (["--save_models=2"], "expected 0 or 1"),
    (["--dtype=float16"], "--dtype='float16': use float32 or float64"),
    (["--max_members=-1"], "--max_members must be >= 0"),
    (["--forward=fast"], "--forward='fast': choose one of auto, generic"),
    # execution backends
    (["--backend=spark"], "--backend='spark': choose one of local, ray"),
    (["--ray_address=auto"], "--ray_address needs --backend=ray"),
]


# Three kinds of mistake once more through the real script, as its own process: no --out_dir, an
# unknown option, a Config check (all run in this process through the same main(), a subprocess
# costing seconds more: a fresh interpreter importing torch).
REAL_SCRIPT = [(args, message) for args, message in BAD_INPUTS if args[0] in ("--layers=1,2", "--colour=red", "--dims=64")]


def with_out_dir(args, out):
    return args if args == ["--layers=1,2"] else [f"--out_dir={out}", *args]


@pytest.mark.parametrize("args, message", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "run_x"
    code, stdout, stderr = main_in_process(SCIENCE, with_out_dir(args, out))
    assert code == 2 and stdout == ""
    assert_one_error_line(stderr, message)
    assert not out.exists()


@pytest.mark.parametrize("args, message", REAL_SCRIPT, ids=[" ".join(a) for a, _ in REAL_SCRIPT])
def test_bad_input_exits_2_from_the_script_with_one_line(tmp_path, args, message):
    out = tmp_path / "run_x"
    result = run(with_out_dir(args, out))
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert_one_error_line(result.stderr, message)
    assert not out.exists()


@pytest.mark.skipif(ex.torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu_is_refused(tmp_path):
    result = run([f"--out_dir={tmp_path / 'r'}", "--device=cuda"])
    assert result.returncode == 2 and "no CUDA GPU is visible" in result.stderr


def test_existing_results_are_never_overwritten_by_accident(tmp_path):
    out = tmp_path / "run_0"
    out.mkdir()
    (out / "final_info.json").write_text('{"keep": 1}')
    result = run([f"--out_dir={out}", *TINY])
    assert result.returncode == 2 and "not empty" in result.stderr and "--overwrite=1" in result.stderr
    assert (out / "final_info.json").read_text() == '{"keep": 1}'


def test_unwritable_out_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run([f"--out_dir={blocker / 'sub'}", *TINY])
    assert result.returncode == 2 and "cannot write to --out_dir" in result.stderr
    assert blocker.read_text() == "x"


def test_overrides_and_preset_resolution():
    c, options = resolve(SCIENCE, ["--out_dir=x", "--layers=1,2", "--dims=64", "--heads=4",
                                          "--tasks=x_plus_y,permutation", "--seeds=2", "--num_steps=300"], environ={})
    assert (c.layers, c.dims, c.heads, c.tasks, c.seeds, c.num_steps) == (
        (1, 2), (64,), (4,), ("x_plus_y", "permutation"), 2, 300)
    assert c.lr == 1e-3 and options.preset is None and options.forward == "auto" and not options.save_models
    default, _ = resolve(SCIENCE, ["--out_dir=x"], environ={})
    assert default == ex.Config() and len(architectures(default)) * len(default.tasks) * default.seeds == 540
    base, options = resolve(SCIENCE, ["--out_dir", "x"], environ={"GROKKING_PRESET": "baseline"})
    assert options.preset == "baseline" and architectures(base) == [Architecture(2, 128, 4)]
    assert base.seeds == 3 and base.tasks == ex.TASKS
    override, _ = resolve(SCIENCE, ["--out_dir=x", "--preset=baseline", "--seeds=1"],
                                 environ={"GROKKING_PRESET": "smoke"})
    assert override.seeds == 1 and override.dims == (128,)  # --preset beats the variable


def test_help_lists_every_field_with_its_comment_and_every_option():
    result = run(["--help"])
    assert result.returncode == 0
    for field in ex.Config.__dataclass_fields__:
        assert f"--{field}" in result.stdout
    for option in [f.name for f in Options.declared()] + ["query"]:
        assert f"--{option}" in result.stdout
    assert "AdamW peak learning rate (a list: an axis of the grid) [default: 0.001]" in result.stdout


def check_final_info(info, runs, keys):
    assert sorted(info) == sorted(keys)
    for key, entry in info.items():
        assert set(entry) == {"means", "stderrs", "final_info_dict"}
        assert list(entry["final_info_dict"]) == list(ex.HEADLINE_METRICS)
        for metric, values in entry["final_info_dict"].items():
            decimals = ex.HEADLINE_METRICS[metric]
            defined = [v for v in values if v is not None]
            mean = entry["means"][f"{metric}_mean"]
            assert mean == pytest.approx(np.mean(defined), abs=0.5 * 10 ** -decimals) if defined else mean is None
            stderr = entry["stderrs"][f"{metric}_stderr"]
            if len(defined) > 1:
                expected = np.std(defined, ddof=1) / math.sqrt(len(defined))
                assert stderr == pytest.approx(expected, abs=0.5 * 10 ** -decimals)
        task = key.split("/")[0]
        seeds = [r for r in runs if r["task"] == task and (("/" not in key) or r["architecture"] == key.split("/")[1])]
        assert entry["final_info_dict"]["step_val_acc_99"] == [r["step_val_acc_99"] for r in seeds]


def test_single_architecture_study_is_a_drop_in_baseline(tmp_path):
    out = tmp_path / "run_0"
    result = run([f"--out_dir={out}", *TINY])
    assert result.returncode == 0, result.stderr
    info = json.loads((out / "final_info.json").read_text())
    runs = json.loads((out / "runs.json").read_text())
    check_final_info(info, runs, ["x_plus_y", "permutation"])
    assert "study: 1 architecture x 2 tasks x 2 seeds = 4 runs" in result.stdout


@pytest.mark.slow
def test_a_study_end_to_end(smoke_template):
    """The real script run as the harness runs it, only --out_dir on the line, in a template folder
    whose Config is the smoke preset (conftest.py): every output file, its shape and contents."""
    folder, result = smoke_template
    out = folder / "run_0"
    assert sorted(os.listdir(out)) == sorted(OUTPUT_FILES + (STUDY_FILE, GROUPS_DIR))
    config = json.loads((out / "config.json").read_text())
    assert config["preset"] is None and config["config"]["dims"] == [32]
    assert config["config"]["prime"] == 23 and config["config"]["num_steps"] == 300
    assert config["varied"] == [] and "config:" not in result.stdout  # the template's Config is the study
    archs = json.loads((out / "architectures.json").read_text())
    assert [a["name"] for a in archs] == ["L1_D32_H4", "L2_D32_H4"]
    assert [a["bucket"] for a in archs] == ["small", "large"]
    runs = json.loads((out / "runs.json").read_text())
    assert len(runs) == 2 * 4 * 2
    for r in runs:  # the measures of every run, null where they do not apply
        assert {"peak_val_acc", "step_val_acc_99_held", "grokked_held", "train_drops_per_1k_steps",
                "train_below_99_share", "step_fourier_50"} <= set(r)
        assert 0 <= r["peak_val_acc"] <= 1 and r["step_val_acc_99_held"] <= 300
        assert (r["step_fourier_50"] is None) == (r["task"] == "permutation")
        assert (r["train_below_99_share"] is None) == (not r["memorized"] or r["step_train_acc_99"] == 300)
    info = json.loads((out / "final_info.json").read_text())
    check_final_info(info, runs, [f"{t}/{a}" for t in ex.TASKS for a in ("L1_D32_H4", "L2_D32_H4")])
    curves = np.load(out / "curves.npz")
    assert list(curves["step"]) == list(range(10, 301, 10))
    per_split = [f"{s}_{m}" for s in ("train", "val") for m in ("loss", "acc", "margin", "saturated")]
    parts = ["embedding", "block0_attn", "block0_mlp", "block1_attn", "block1_mlp", "head_weight"]
    assert sorted(curves.files) == sorted(["step", *per_split, "weight_norm", *(f"{p}_norm" for p in parts),
                                           "embedding_fourier_top5", "embedding_key_frequencies"])
    for name in curves.files[1:]:  # NaN throughout exactly where a measure does not apply
        one_layer = np.array([r["architecture"] == "L1_D32_H4" for r in runs])
        not_cyclic = np.array([r["task"] == "permutation" for r in runs])
        undefined = one_layer if name.startswith("block1") else not_cyclic if "fourier" in name or "key_freq" in name \
            else np.zeros(len(runs), bool)
        assert curves[name].shape == (len(runs), 30)
        assert np.isnan(curves[name][undefined]).all() and np.isfinite(curves[name][~undefined]).all(), name
    assert (curves["train_loss"][:, -1] < curves["train_loss"][:, 0]).all()  # it learned something
    for r, loss in zip(runs, curves["val_loss"][:, -1]):
        assert r["final_val_loss"] == pytest.approx(loss)
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["torch"] == ex.torch.__version__ and len(provenance["source_sha256"]) == 64
    assert provenance["command"] == ["experiment.py", "--out_dir=run_0"]
    assert len(provenance["runner_sha256"]) == 64
    groups = ["L1_D32_H4_mod23", "L1_D32_H4_S4", "L2_D32_H4_mod23", "L2_D32_H4_S4"]
    assert [g["group"] for g in provenance["groups"]] == groups
    assert {g["forward"] for g in provenance["groups"]} == {"fast"}
    # the forward's check, one summary line per finished group, and (stderr not a terminal) one
    # progress line per group instead of a bar
    assert "forward of all 4 groups: fast (equal to the plain model in float64" in result.stdout
    assert sum(line.startswith("L") and "grok" in line for line in result.stdout.splitlines()) == 4
    progress = result.stderr.strip().splitlines()
    assert len(progress) == 4 and all(line.startswith("progress: ") for line in progress)
    assert progress[-1].startswith("progress: 4/4 groups (100%)")


def test_a_log_gets_progress_lines_inside_a_long_group(monkeypatch, capsys):
    """A one-group study of an hour must not leave a log silent until its end."""
    progress = Progress({"L2_D128_H4": 3.0, "L1_D64_H4": 1.0}, line_every_s=0.0)
    group = type("Group", (), {"name": "L2_D128_H4"})
    progress.update(group, 0.5)
    progress.update(group, 1.0)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("progress: 0/2 groups (38%, L2_D128_H4 50% done), 0:00 elapsed, about ")
    assert lines[1].startswith("progress: 1/2 groups (75%), ")


def cpu_minutes(args: list[str]) -> float:
    """The time the cost model behind progress and the long-study warning gives a study on a CPU."""
    c, _ = resolve(SCIENCE, ["--out_dir=run", *args], environ={})
    study = Study.build(SCIENCE, c)
    evaluations = len(ex.evaluation_steps(c))
    _, costs = study_costs(study, study.groups(), evaluations, torch.device("cpu"))
    return cpu_seconds(costs) / 60


def test_the_cost_model_gives_the_times_the_readme_states():
    """Measured on 2 cores: demo 2.5 min, baseline 67-90 min; the full study days. capacity_cpu took 98 min on an
    Intel Xeon VM, which the model overestimates (134 min): its guess errs on the long side."""
    assert 1.5 < cpu_minutes(["--preset=demo"]) < 3
    assert 110 < cpu_minutes(["--preset=capacity_cpu"]) < 150
    assert 60 < cpu_minutes(["--preset=baseline"]) < 90
    assert cpu_minutes([]) > 2 * 24 * 60


def test_where_each_value_comes_from_is_said_before_training(tmp_path):
    """The demo preset chosen the harness's way (GROKKING_PRESET, only --out_dir and overrides on
    the line): the config line names the fields that differ from Config's defaults and where they
    came from; the preset's lr and weight decay set back to Config's on the command line get a
    second line, saying they are not the preset's (a reader would otherwise assume lr 2e-3)."""
    args = [f"--out_dir={tmp_path / 'run'}", "--layers=1", "--dims=16", "--heads=2", "--num_steps=20",
            "--eval_every=10", "--prime=11", "--batch_size=32", "--lr=0.001", "--weight_decay=0.5", "--device=cpu"]
    code, stdout, _ = main_in_process(SCIENCE, args, GROKKING_PRESET="demo")
    assert code == 0
    assert ("config: Config's defaults but tasks=x_plus_y layers=1 dims=16 heads=2 seeds=2 num_steps=20 prime=11 "
            "train_fraction=0.35 batch_size=32 (from preset demo and the command line)\n") in stdout, stdout
    assert ("config: lr=0.001 weight_decay=0.5 eval_every=10 from the command line: Config's defaults, "
            "not preset demo's\n") in stdout, stdout


def test_a_study_too_long_for_the_cpu_is_announced(tmp_path):
    """Past --time_limit by the cost model: a warning before training. This study trains in far
    less than the 10 s the time guard needs before it judges, so it runs to its end."""
    code, stdout, _ = main_in_process(SCIENCE, [f"--out_dir={tmp_path / 'run'}", *TINY, "--device=cpu",
                                                "--time_limit=0.01"])
    assert code == 0
    assert "warning: this study needs roughly 0 s on 2 CPU cores, past 0 s (--time_limit); use a GPU" in stdout


@pytest.mark.slow
def test_the_default_study_stops_early_when_it_cannot_meet_its_time_limit(tmp_path):
    """The full 540-run study on 2 CPU cores with a 60 s limit: it stops within 180 s, its last
    stderr line names the projected time and the limit, and it exits 3."""
    start = time.perf_counter()
    result = run([f"--out_dir={tmp_path / 'run'}", "--time_limit=60", "--device=cpu"])
    assert result.returncode == 3, result.stderr[-2000:]
    assert time.perf_counter() - start < 180
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: this study would take about ") and "past the time limit of 60 s" in last
    assert "cut seeds, num_steps or the architectures" in last
