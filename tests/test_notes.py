"""notes.txt states run_0's numbers exactly as run_0's files hold them, and lists every figure."""

import json
import os
import re

import pytest

import runner

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
