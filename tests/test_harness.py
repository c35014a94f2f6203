"""The project as an AI-Scientist template: its files, and the harness's own loop on a copy of it.

The loop is driven the way ai_scientist/perform_experiments.py drives it, with the standard
library only: the whole folder copied, the fixed command `python experiment.py --out_dir=run_i`
(the preset chosen in the environment), stderr captured, the run folder deleted on failure and the
model shown only the last 1,500 characters of stderr, or on success the means of final_info.json;
then `python plot.py`, which must leave figures in the folder."""

import json
import os
import shutil
import subprocess
import sys

import pytest

import experiment as ex
import runner
from support import ROOT, clean_environment, edit

MAX_STDERR_OUTPUT = 1500  # what the harness shows its model of a failed run's stderr
TEMPLATE_FILES = ("experiment.py", "plot.py", "notes.txt", "prompt.json", "seed_ideas.json", "latex/template.tex",
                  "run_0/final_info.json")


def run_experiment(folder, run_num: int, env: dict) -> tuple[int, str]:
    """(return code, the harness's next prompt) for one run, as the harness runs it."""
    command = [sys.executable, "experiment.py", f"--out_dir=run_{run_num}"]
    result = subprocess.run(command, cwd=folder, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env=env, timeout=7200)
    if result.returncode != 0:
        shutil.rmtree(os.path.join(folder, f"run_{run_num}"), ignore_errors=True)
        tail = result.stderr if len(result.stderr) <= MAX_STDERR_OUTPUT else "..." + result.stderr[-MAX_STDERR_OUTPUT:]
        return result.returncode, f"Run failed with the following error {tail}"
    with open(os.path.join(folder, f"run_{run_num}", "final_info.json")) as f:
        results = {k: v["means"] for k, v in json.load(f).items()}
    return 0, f"Run {run_num} completed. Here are the results:\n{results}\n"


def run_plotting(folder) -> int:
    return subprocess.run([sys.executable, "plot.py"], cwd=folder, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                          text=True, timeout=600).returncode


@pytest.fixture
def template(tmp_path):
    """The project folder copied as the harness copies a template (tests and benchmarks left out)."""
    folder = tmp_path / "20260101_000000_idea"
    shutil.copytree(ROOT, folder, ignore=shutil.ignore_patterns(".git", "tests", "bench", "studies", "__pycache__",
                                                                ".pytest_cache", "run_[1-9]*", "*.png"))
    return folder


def test_the_template_files_are_there_and_well_formed():
    for name in TEMPLATE_FILES:
        assert os.path.isfile(os.path.join(ROOT, name)), name
    with open(os.path.join(ROOT, "prompt.json")) as f:
        prompt = json.load(f)
    assert set(prompt) == {"system", "task_description"}
    for name in ("experiment.py", "plot.py", "notes.txt", "GROKKING_PRESET"):
        assert name in prompt["task_description"]
    with open(os.path.join(ROOT, "seed_ideas.json")) as f:
        ideas = json.load(f)
    assert ideas[0]["Name"] == "capacity_grokking" and len({i["Name"] for i in ideas}) == len(ideas) >= 3
    for idea in ideas:
        assert set(idea) == {"Name", "Title", "Experiment", "Interestingness", "Feasibility", "Novelty"}
        assert all(isinstance(idea[k], int) and 1 <= idea[k] <= 10 for k in ("Interestingness", "Feasibility", "Novelty"))
    with open(os.path.join(ROOT, "latex", "template.tex")) as f:
        tex = f.read()
    assert "\\documentclass[11pt]{article}" in tex and "\\begin{filecontents}{references.bib}" in tex
    for key in ("power2022grokking", "nanda2023progress", "liu2023omnigrok", "lu2024aiscientist"):
        assert f"{{{key}," in tex
    for section in ("Introduction", "Related Work", "Background", "Method", "Experimental Setup", "Results"):
        assert f"\\section{{{section}}}" in tex


@pytest.mark.slow
def test_the_harness_loop_runs_a_study_fails_cleanly_and_plots(template):
    # a finished run: the results message is the headline means
    code, prompt = run_experiment(template, 1, clean_environment(GROKKING_PRESET="smoke"))
    assert code == 0, prompt
    message = prompt.splitlines()[1]
    assert message.startswith("{'x_div_y/L1_D32_H4': {'step_train_acc_99_mean': ") and len(message) < 5000
    # a bad preset: one line that says what to change, and no run folder left
    code, prompt = run_experiment(template, 2, clean_environment(GROKKING_PRESET="huge"))
    assert code == 2 and not os.path.exists(template / "run_2")
    assert prompt == ("Run failed with the following error error: unknown preset 'huge'; choose one of: "
                      + ", ".join(ex.PRESETS) + "\n") and len(prompt) < 600
    # an edited model that raises at its 100th call: the exception and its line of experiment.py
    edit(template, "        positions = torch.arange(tokens.shape[1], device=tokens.device)\n",
         "        positions = torch.arange(tokens.shape[1], device=tokens.device)\n"
         "        self.calls = getattr(self, 'calls', 0) + 1\n"
         "        if self.calls == 100:\n"
         "            raise RuntimeError('deliberate failure at the 100th forward call')\n")
    code, prompt = run_experiment(template, 3, clean_environment(GROKKING_PRESET="smoke"))
    assert code == 1 and not os.path.exists(template / "run_3")
    assert "RuntimeError: deliberate failure at the 100th forward call" in prompt
    assert "experiment.py line" in prompt and "raise RuntimeError('deliberate failure at the 100th forward call')" in prompt
    assert len(prompt) < MAX_STDERR_OUTPUT + 100
    # plotting: figures in the folder, the baseline and the finished run drawn
    assert run_plotting(template) == 0
    figures = {f for f in os.listdir(template) if f.endswith(".png")}
    assert {"val_acc_x_div_y.png", "train_loss_permutation.png", "run_1_capacity_small.png"} <= figures


def test_the_default_studys_results_message_fits():
    """The message after a run of the full default study (108 keys), with the widest values the
    headline metrics can take, stays under 20,000 characters."""
    c = ex.Config()
    tables = runner.build_tables(ex.science(), c)
    records = [{"task": mb.task, "architecture": g.arch.name, "setting": "", "step_train_acc_99": 1230,
                "step_val_acc_99": 7500, "grokked": 1 if mb.seed < 2 else 0, "final_val_acc": 0.012345678,
                "parameter_count": runner.parameter_count(ex.science(), g.arch, tables[mb.task, mb.setting], c)}
               for g in runner.plan_groups(c, tables) for mb in g.members]
    info = runner.final_info(records, ex.HEADLINE_METRICS, plain=False)
    assert len(info) == 108
    assert len(runner.results_message(info)) <= runner.HARNESS_MESSAGE_LIMIT
