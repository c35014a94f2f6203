"""The project as an AI-Scientist template: its files, and the harness's own loop on a copy of it.

The loop is driven the way ai_scientist/perform_experiments.py drives it, with the standard
library only: a template folder made by --make_template, copied whole, the fixed command
`python experiment.py --out_dir=run_i` with no preset anywhere, stderr captured, the run folder deleted on failure and the
model shown only the last 1,500 characters of stderr, or on success the means of final_info.json;
then `python plot.py`, which must leave figures in the folder."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import pytest

import experiment as ex
from runner.plan import Study
from runner.results import HARNESS_MESSAGE_LIMIT, final_info, parameter_count, results_message
from support import ROOT, clean_environment, edit, run_script

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


def test_the_template_files_are_there_and_well_formed():
    for name in TEMPLATE_FILES:
        assert os.path.isfile(os.path.join(ROOT, name)), name
    with open(os.path.join(ROOT, "prompt.json")) as f:
        prompt = json.load(f)
    assert set(prompt) == {"system", "task_description"}
    for name in ("experiment.py", "plot.py", "notes.txt", "Config", "TIME_LIMIT_S"):
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


@pytest.fixture
def template(smoke_template, tmp_path):
    """The smoke template with its run_0 (conftest.py), copied as launch_scientist.py copies it for
    an idea, notes.txt replaced as the harness replaces it."""
    folder = tmp_path / "20260101_000000_idea"
    shutil.copytree(smoke_template[0], folder)
    (folder / "notes.txt").write_text("# Title: an idea\n# Experiment description: a description\n## Run 0: Baseline\n")
    return folder


def test_the_template_folder_holds_the_study_it_runs(template):
    """run_0 is the bare command's study; presets are refused there; the definitions a write-up
    needs survive notes.txt's replacement (experiment.py's docstring)."""
    with open(template / "run_0" / "config.json") as f:
        saved = json.load(f)
    assert saved["preset"] is None and saved["overrides"] == {}
    assert saved["config"] == {**dataclasses.asdict(ex.Config(**ex.PRESETS["smoke"])), "tasks": list(ex.TASKS),
                               "layers": [1, 2], "dims": [32], "heads": [4], "zip_axes": []}
    for environ, args in ((clean_environment(GROKKING_PRESET="demo"), []), (clean_environment(), ["--preset=demo"])):
        result = run_script(["--out_dir=run_9", *args], cwd=str(template), env=environ)
        assert result.returncode == 2 and not os.path.exists(template / "run_9")
        assert result.stderr.startswith("error: this folder's experiment.py is the study") and result.stderr.count("\n") == 1
    with open(template / "experiment.py") as f:
        docstring = f.read().split('"""')[1]
    for definition in ("censored at the budget", "step_val_acc_99", "regimes", "Capacity buckets", "sign test"):
        assert definition.lower() in docstring.lower()


@pytest.mark.slow
def test_the_harness_loop_runs_an_edited_study_stops_one_too_long_and_plots(template):
    # a run that projects past its time limit stops early; the guard's line is in what the model sees
    edit(template, "TIME_LIMIT_S: float | None = 7200  #", "TIME_LIMIT_S: float | None = 5  #")
    code, prompt = run_experiment(template, 1, clean_environment())
    assert code == 3 and not os.path.exists(template / "run_1")
    assert prompt.rstrip().endswith("or use a GPU") and "past the time limit of 5 s" in prompt
    edit(template, "TIME_LIMIT_S: float | None = 5  #", "TIME_LIMIT_S: float | None = 7200  #")
    # the coder edits Config: the run trains the edit, and its results' keys say so
    edit(template, "    layers: tuple[int, ...] = (1, 2)  #", "    layers: tuple[int, ...] = (1,)  #")
    code, prompt = run_experiment(template, 1, clean_environment())
    assert code == 0, prompt
    # (one architecture now: its results are keyed by task alone, as the template's baseline is)
    baseline, edited = ({k: v["means"] for k, v in json.loads((template / run / "final_info.json").read_text()).items()}
                        for run in ("run_0", "run_1"))
    assert set(baseline) == {f"{task}/L{n}_D32_H4" for task in ex.TASKS for n in (1, 2)} and set(edited) == set(ex.TASKS)
    assert edited["x_div_y"]["parameter_count_mean"] == baseline["x_div_y/L1_D32_H4"]["parameter_count_mean"]
    assert prompt.splitlines()[1] == str(edited)
    # an edited model that raises at its 100th call: the exception and its line of experiment.py
    edit(template, "        positions = torch.arange(tokens.shape[1], device=tokens.device)\n",
         "        positions = torch.arange(tokens.shape[1], device=tokens.device)\n"
         "        self.calls = getattr(self, 'calls', 0) + 1\n"
         "        if self.calls == 100:\n"
         "            raise RuntimeError('deliberate failure at the 100th forward call')\n")
    code, prompt = run_experiment(template, 2, clean_environment())
    assert code == 1 and not os.path.exists(template / "run_2")
    assert "RuntimeError: deliberate failure at the 100th forward call" in prompt
    assert "experiment.py line" in prompt and "raise RuntimeError('deliberate failure at the 100th forward call')" in prompt
    assert len(prompt) < MAX_STDERR_OUTPUT + 100
    # plotting: figures in the folder, the baseline and the finished run drawn; labels naming no run fail
    assert run_plotting(template) == 0
    figures = {f for f in os.listdir(template) if f.endswith(".png")}
    assert {"val_acc_x_div_y.png", "train_loss_permutation.png", "run_1_accuracy.png", "run_0_capacity_small.png",
            "run_0_survival_x_div_y.png"} <= figures
    edit(template, "labels: dict[str, str] = {}", 'labels: dict[str, str] = {"run_9": "x"}', name="plot.py")
    assert run_plotting(template) != 0


def test_the_default_studys_results_message_fits():
    """The message after a run of the full default study (108 keys), with the widest values the
    headline metrics can take, stays under 20,000 characters."""
    c = ex.Config()
    study = Study.build(ex.science(), c)
    records = [{"task": mb.task, "architecture": g.arch.name, "setting": "", "step_train_acc_99": 1230,
                "step_val_acc_99": 7500, "grokked": 1 if mb.seed < 2 else 0, "final_val_acc": 0.012345678,
                "parameter_count": parameter_count(ex.science(), g.arch, study.table(mb), c)}
               for g in study.groups() for mb in g.members]
    info = final_info(records, ex.HEADLINE_METRICS, plain=False)
    assert len(info) == 108
    assert len(results_message(info)) <= HARNESS_MESSAGE_LIMIT


LATEX_SEQUENCE = (["pdflatex", "-interaction=nonstopmode", "template.tex"], ["bibtex", "template"],
                  ["pdflatex", "-interaction=nonstopmode", "template.tex"],
                  ["pdflatex", "-interaction=nonstopmode", "template.tex"])  # perform_writeup.compile_latex's
METHOD = r"""We train every run for the same budget and count a run that never grokks as censored
\citep{power2022grokking}, as in Algorithm~\ref{alg:study}.
\begin{algorithm}[t]
\caption{One study}\label{alg:study}
\begin{algorithmic}[1]
\For{each architecture $a$ and seed $s$}
  \State train $a$ on the split of seed $s$ for $T$ steps; $t_s \gets$ first step above $0.99$
\EndFor
\end{algorithmic}
\end{algorithm}
"""


@pytest.mark.skipif(shutil.which("pdflatex") is None or shutil.which("chktex") is None,
                    reason="needs texlive-latex-base, -recommended, -extra and chktex (.ci/run installs them)")
def test_the_latex_template_compiles_with_plot_figures_and_a_written_method(template):
    """The harness's write-up: pdflatex, bibtex, pdflatex twice in latex/, figures in the folder
    above (plot.py's, from the template's run_0), a Method with an algorithm and a citation; its
    chktex filter (-q -n2 -n24 -n13 -n1) must stay silent."""
    assert run_plotting(template) == 0
    edit(template, "METHOD HERE\n", METHOD, name="latex/template.tex")
    latex = template / "latex"
    for command in LATEX_SEQUENCE:
        subprocess.run(command, cwd=latex, capture_output=True, text=True, timeout=120)
    assert (latex / "template.pdf").stat().st_size > 50_000
    log = (latex / "template.log").read_text(errors="replace")
    assert "Citation `power2022grokking' undefined" not in log and "File `train_acc_x_div_y.png' not found" not in log
    check = subprocess.run(["chktex", "template.tex", "-q", "-n2", "-n24", "-n13", "-n1"], cwd=latex,
                           capture_output=True, text=True, timeout=60)
    assert check.stdout.strip() == "", check.stdout
