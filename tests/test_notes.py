"""run_0 is what this code computes; notes.txt states its numbers and those of the CPU studies
exactly as their files hold them, and lists every figure."""

import json
import os
import re

import numpy as np
import pytest

import experiment as ex
import runner
from support import run_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_0 = os.path.join(ROOT, "run_0")
COLUMNS = [("step_train_acc_99", "memorization step", 0), ("step_val_acc_99", "grokking step", 0),
           ("grokked", "grokked", 2), ("final_train_acc", "final train acc", 3),
           ("final_val_acc", "final val acc", 3), ("final_val_loss", "final val loss", 3)]


def run0_table(runs: list[dict]) -> str:
    """The Run 0 table of notes.txt: per task, mean ± standard error over seeds, from runs.json
    with the one mean / standard-error definition the outputs use."""
    lines = [f"{'task':<12}" + "".join(f"{title:>20}" for _, title, _ in COLUMNS)]
    for task in dict.fromkeys(r["task"] for r in runs):
        cells = []
        for metric, _, digits in COLUMNS:
            mean, stderr = runner.mean_stderr([r[metric] for r in runs if r["task"] == task])
            cells.append(f"{mean:.{digits}f} ± {stderr:.{digits}f}")
        lines.append(f"{task:<12}" + "".join(f"{cell:>20}" for cell in cells))
    return "\n".join(lines)


@pytest.mark.slow
def test_run0_is_what_this_code_computes(tmp_path):
    """run_0's command, shortened to 50 steps of x / y, trains its first 50 steps again: same
    config, same curves (bit for bit on the CPU that made run_0; another CPU model may round
    float32 differently, hence the tolerances, far below what a change of code path gives)."""
    with open(os.path.join(RUN_0, "config.json")) as f:
        saved = json.load(f)
    c, _ = runner.resolve(ex.science(), ["--out_dir=run_0", f"--preset={saved['preset']}"], environ={})
    assert runner.config_from_json(ex.science(), saved["config"]) == c  # the baseline preset still means run_0
    out = tmp_path / "run"
    result = run_script([f"--out_dir={out}", f"--preset={saved['preset']}", "--tasks=x_div_y", "--num_steps=50"])
    assert result.returncode == 0, result.stderr
    assert "forward of L2_D128_H4: fast" in result.stdout  # run_0's path (provenance.json)
    with open(os.path.join(RUN_0, "runs.json")) as f:
        rows = [i for i, r in enumerate(json.load(f)) if r["task"] == "x_div_y"]
    again, run0 = np.load(out / "curves.npz"), np.load(os.path.join(RUN_0, "curves.npz"))
    assert list(again["step"]) == list(run0["step"][:5])
    for name in ("train_loss", "val_loss", "weight_norm"):
        np.testing.assert_allclose(again[name], run0[name][rows, :5], rtol=1e-4, err_msg=name)
    for name in ("train_acc", "val_acc"):
        np.testing.assert_allclose(again[name], run0[name][rows, :5], rtol=0, atol=2e-3, err_msg=name)


@pytest.fixture(scope="module")
def notes():
    with open(os.path.join(ROOT, "notes.txt")) as f:
        return f.read()


def test_run0_numbers_match_its_files(notes):
    with open(os.path.join(RUN_0, "runs.json")) as f:
        table = run0_table(json.load(f))
    assert table in notes
    with open(os.path.join(RUN_0, "config.json")) as f:
        config = json.load(f)
    assert config["preset"] == "baseline" and config["overrides"] == {}
    assert "python experiment.py --out_dir=run_0 --preset=baseline" in notes
    with open(os.path.join(RUN_0, "provenance.json")) as f:
        provenance = json.load(f)
    assert f"{provenance['wall_time_s'] / 60:.0f} min" in notes


def test_every_figure_of_plot_py_is_described(notes):
    with open(os.path.join(ROOT, "plot.py")) as f:
        source = f.read()
    names = set(re.findall(r'f"(\{[a-z.]+\}_[a-z_{}.]+\.png)"', source))
    assert names, "no figure names found in plot.py"
    described = {"{curve}_{task}.png": "train_loss_T.png", "{run.name}_capacity_{bucket}.png": "R_capacity_B.png",
                 "{run.name}_steps_vs_params.png": "R_steps_vs_params.png",
                 "{run.name}_heatmap_{task}.png": "R_heatmap_T.png",
                 "{run.name}_deep_vs_wide.png": "R_deep_vs_wide.png", "{run.name}_stability.png": "R_stability.png",
                 "{run.name}_axis_{axis}.png": "R_axis_A.png", "{run.name}_accuracy.png": "R_accuracy.png"}
    assert names == set(described)
    for pattern in described.values():
        assert pattern in notes


def test_the_cpu_studies_numbers_match_their_files(notes):
    """The demo's and capacity_cpu's numbers in notes.txt are those of studies/demo and
    studies/capacity_cpu."""
    with open(os.path.join(ROOT, "studies", "capacity_cpu", "runs.json")) as f:
        runs = json.load(f)
    assert f"Grokked: {sum(r['grokked'] for r in runs)} of {len(runs)} runs" in notes
    rows = re.findall(r"^ +(\d)x64, (\d) heads +(.*)$", notes, flags=re.M)
    assert len(rows) == 6
    for layers, heads, cells in rows:
        expected = []
        for task in ("x_div_y", "x_minus_y"):
            for step, reached in (("step_train_acc_99", "memorized"), ("step_val_acc_99", "grokked")):
                values = [r[step] for r in runs if (r["layers"], r["d_model"], r["heads"], r["task"], r[reached])
                          == (int(layers), 64, int(heads), task, 1)]
                mean, stderr = runner.mean_stderr(values)
                expected.append(f"{mean:.0f} ± {stderr:.0f}" if len(values) == 3 else f"{mean:.0f} ({len(values)}/3)")
        assert re.findall(r"\d+ ± \d+|\d+ \(\d/3\)", cells) == expected, (layers, heads)
    folder = os.path.join(ROOT, "studies", "demo")
    with open(os.path.join(folder, "runs.json")) as f:
        demo = json.load(f)
    curves = np.load(os.path.join(folder, "curves.npz"))
    stated = re.findall(r"(\d)x(\d+) seed (\d): M (\d+), val acc ([\d.]+)(?: at 2M)?, G (\d+)", notes)
    assert len(stated) == len(demo) == 4
    for layers, d_model, seed, m, accuracy, g in stated:
        i = next(i for i, r in enumerate(demo) if (r["layers"], r["d_model"], r["seed"]) == (int(layers), int(d_model), int(seed)))
        at_2m = curves["val_acc"][i, list(curves["step"]).index(2 * int(m))]
        assert (demo[i]["step_train_acc_99"], f"{at_2m:.3f}", demo[i]["step_val_acc_99"]) == (int(m), accuracy, int(g))
