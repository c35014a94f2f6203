"""run_0 is what this code computes; notes.txt states its numbers and those of the CPU studies
exactly as their files hold them, and lists every figure."""

import functools
import json
import os
import re

import numpy as np
import pytest

import experiment as ex
import analysis
from plotting.studies import load
from plotting.tables import event_cell
from analysis import mean_stderr
from runner.cli import resolve
from runner.plan import config_from_json
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
            mean, stderr = mean_stderr([r[metric] for r in runs if r["task"] == task])
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
    c, _ = resolve(ex.science(), ["--out_dir=run_0", f"--preset={saved['preset']}"], environ={})
    assert config_from_json(ex.science(), saved["config"]) == c  # the baseline preset still means run_0
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
    """plot.py's lists name each figure's file in a comment; notes.txt describes every one, writing
    R for the study, T the task, C the curve, B the capacity bucket and A the axis."""
    with open(os.path.join(ROOT, "plot.py")) as f:
        names = re.findall(r"# (\{[a-z]+\}_[a-z_{}]+\.png):", f.read())
    assert len(names) >= 15, "no figure names found in plot.py's lists"
    letters = {"study": "R", "curve": "C", "task": "T", "bucket": "B", "axis": "A"}
    for name in names:
        assert re.sub(r"\{([a-z]+)\}", lambda m: letters[m.group(1)], name) in notes, name


def capacity_table(runs: list[dict], architectures: list[dict], budget: int) -> str:
    """A CPU study's table in notes.txt, from its runs with analysis.py, its cells as summary.md
    writes them: per architecture (and setting, where the study varied one) and task the regimes,
    restricted mean memorization, grokking and held-grokking steps (k/n where not all got there)
    and the median grokking step."""
    settings = analysis.settings_of(runs)
    wide = len(settings) > 1
    lines = [f"  {'architecture':<16}{'parameters':>10}  " + (f"{'setting':<15}" if wide else "")
             + f"{'task':<10} {'g/n/m/f/d':<11}{'memorization':>14}{'grokking':>19}{'held':>19}{'median':>7}"]
    for a in architectures:
        for setting in settings:
            for task in dict.fromkeys(r["task"] for r in runs):
                row = analysis.summary_row([r for r in runs if (r["architecture"], r["setting"], r["task"])
                                            == (a["name"], setting, task)], budget)
                cells = [event_cell(row, name) for name in ("memorize", "grok", "grok_held")]
                regimes = "/".join(str(row[analysis.regime_key(g)]) for g in analysis.REGIMES)
                median = "-" if row["median_grok"] is None else f"{row['median_grok']:.0f}"
                shape = f"{a['layers']}x{a['d_model']}, {a['heads']} heads"
                lines.append(f"  {shape:<16}{a['parameter_count']:>10,}  " + (f"{setting:<15}" if wide else "")
                             + f"{task:<10} {regimes:<11}{cells[0]:>14}{cells[1]:>19}{cells[2]:>19}{median:>7}")
    return "\n".join(lines)


# A paired comparison as notes.txt and the README cite it: [family: a vs b, scope, event or measure:
# wins-losses of pairs pairs (ties tied, pairs with a run that never got there censored, or for a
# measure: pairs in which a run has none left out), p = p, q = q; clusters wins-losses of clusters,
# p = p, q = q], e.g. [depth: 1 layer vs 4 layers, all, grok: 30-6 of 36 pairs (0 tied, 7 censored),
# p = 7e-05, q = 0.00051; clusters 12-0 of 12, p = 0.00049, q = 0.0063]. Opening with
# "studies/<name>: " it cites that study's test; with "studies/<name> at these architectures: " the
# test on that study's runs of the citing study's architectures (no q).
NAMES = {key: name for key, (name, _) in analysis.COMPARED.items()}
CITATION = re.compile(r"\[(?:studies/(\w+)( at these architectures)?: )?([a-z -]+): (.+?) vs (.+?), (.+?), "
                      r"(" + "|".join(NAMES.values()) + r"): (\d+)-(\d+) of (\d+) pairs \((\d+) tied, (\d+) "
                      r"(?:censored|left out)\), p = ([\d.e-]+)(?:, q = ([\d.e-]+))?; clusters (\d+)-(\d+) of (\d+), "
                      r"p = ([\d.e-]+)(?:, q = ([\d.e-]+))?\]")
# A paired test of another per-run value (analysis.paired_values), as notes.txt cites it:
# [measure, family: a vs b, scope: wins-losses of pairs pairs (ties tied, left out left out), p = p;
# clusters wins-losses of clusters, p = p]
VALUE_CITATION = re.compile(r"\[(\w+), ([a-z -]+): (.+?) vs (.+?), (.+?): (\d+)-(\d+) of (\d+) pairs "
                            r"\((\d+) tied, (\d+) left out\), p = ([\d.e-]+); clusters (\d+)-(\d+) of (\d+), "
                            r"p = ([\d.e-]+)\]")


# Whether a comparison's difference changes between two settings (analysis.interaction), as
# notes.txt cites it: [interaction, family: a vs b, event, setting vs setting: wins-losses of pairs
# pairs (ties tied, censored censored), p = p; clusters wins-losses of clusters, p = p]
INTERACTION = re.compile(r"\[interaction, ([a-z -]+): (.+?) vs (.+?), (\w+), (\S+) vs (\S+): (\d+)-(\d+) of (\d+) "
                         r"pairs \((\d+) tied, (\d+) censored\), p = ([\d.e-]+); clusters (\d+)-(\d+) of (\d+), "
                         r"p = ([\d.e-]+)\]")


def section(notes: str, heading: str) -> str:
    """The part of notes.txt under a heading ("# ..."), up to the next heading."""
    start = notes.index(f"\n# {heading}\n")
    following = notes.find("\n# ", start + 1)
    return notes[start:following if following >= 0 else len(notes)]


# The CPU studies with their section of notes.txt.
CPU_STUDIES = [("capacity_cpu", "Capacity at CPU scale (studies/capacity_cpu)"),
               ("capacity_cpu_template_opt",
                "Capacity at CPU scale under the template's optimizer (studies/capacity_cpu_template_opt)"),
               ("confounds_cpu", "Capacity or its confounds (studies/confounds_cpu)")]


@functools.cache
def study_files(study: str) -> tuple[list[dict], list[dict], int]:
    """A committed study's runs (with the measures studies made before them get from their curves),
    architectures and budget (num_steps), read as plot.py reads them."""
    folder = load(os.path.join(ROOT, "studies", study))
    return folder.records, folder.architectures, folder.budget


@functools.cache
def comparisons(study: str, architectures_of: str | None = None) -> list[dict]:
    """Every paired comparison of a study, or of its runs of another study's architectures."""
    runs, architectures, budget = study_files(study)
    if architectures_of:
        names = {arch["name"] for arch in study_files(architectures_of)[1]}
        runs = [r for r in runs if r["architecture"] in names]
        architectures = [arch for arch in architectures if arch["name"] in names]
    return analysis.compare_architectures(runs, architectures, budget)


def check_citations(text: str, study: str | None) -> int:
    """Every paired test the text cites, recomputed from the runs by analysis.py: of `study` (None:
    every citation names its study), of another study, of another study's runs of this study's
    architectures, and of per-run values. Returns how many there are."""
    runs, architectures, budget = study_files(study) if study else (None, None, None)
    cited, values, interactions = CITATION.findall(text), VALUE_CITATION.findall(text), INTERACTION.findall(text)
    assert len(cited) + len(values) + len(interactions) == len(re.findall(r"\[[^\]]* pairs \(", text)), \
        "a citation is in none of the forms CITATION, VALUE_CITATION, INTERACTION (every one names its clusters)"
    for (other, subset, family, a, b, scope, event, wins, losses, pairs, ties, apart, p, q,
         cluster_wins, cluster_losses, clusters, cluster_p, cluster_q) in cited:
        assert other or study, "a citation outside a study's section names its study"
        match = [c for c in comparisons(other or study, study if subset else None)
                 if (c["family"], c["a"], c["b"], c["scope"], NAMES[c["event"]]) == (family, a, b, scope, event)]
        assert len(match) == 1, (other, family, a, b, scope, event)
        c = match[0]
        assert (c["wins"], c["losses"], c["pairs"], c["ties"], c["censored"] if c["kind"] == "event" else c["left_out"],
                c["cluster_wins"], c["cluster_losses"], c["clusters"]) == tuple(
            map(int, (wins, losses, pairs, ties, apart, cluster_wins, cluster_losses, clusters))), c
        assert f"{c['p']:.2g}" == p and f"{c['cluster_p']:.2g}" == cluster_p, (c, p, cluster_p)
        if subset:
            assert q == cluster_q == "", "a test on a subset of runs has no q"
        else:
            assert (f"{c['q']:.2g}", f"{c['cluster_q']:.2g}") == (q, cluster_q), (c, q, cluster_q)
    within = dict(analysis.scopes(runs)) if runs else {}
    families = {(f["family"], f["a"], f["b"]): f
                for f in analysis.comparison_families(architectures or [], analysis.settings_of(runs or []))}
    for key, family, a, b, scope, wins, losses, pairs, ties, left_out, p, cluster_wins, cluster_losses, clusters, \
            cluster_p in values:
        f = families[family, a, b]
        c = analysis.paired_values([r for r in runs if within[scope](r)], key, f["is_a"], f["is_b"], f["pair_key"])
        assert (c["wins"], c["losses"], c["pairs"], c["ties"], c["left_out"], f"{c['p']:.2g}", c["cluster_wins"],
                c["cluster_losses"], c["clusters"], f"{c['cluster_p']:.2g}") == (
            *map(int, (wins, losses, pairs, ties, left_out)), p, *map(int, (cluster_wins, cluster_losses, clusters)),
            cluster_p), (key, family, c)
    events = {name: event for event, (name, _, _) in analysis.EVENTS.items()}
    for family, a, b, event, setting_a, setting_b, wins, losses, pairs, ties, censored, p, cluster_wins, \
            cluster_losses, clusters, cluster_p in interactions:
        c = analysis.interaction(runs, events[event], budget, families[family, a, b], setting_a, setting_b)
        assert (c["wins"], c["losses"], c["pairs"], c["ties"], c["censored"], f"{c['p']:.2g}", c["cluster_wins"],
                c["cluster_losses"], c["clusters"], f"{c['cluster_p']:.2g}") == (
            *map(int, (wins, losses, pairs, ties, censored)), p, *map(int, (cluster_wins, cluster_losses, clusters)),
            cluster_p), (family, event, setting_a, setting_b, c)
    return len(cited) + len(values) + len(interactions)


@pytest.mark.parametrize("study, heading", CPU_STUDIES)
def test_a_cpu_study_in_notes_is_what_its_files_hold(notes, study, heading):
    """Every number the study's section of notes.txt gives: the table, the counts of runs, and
    every paired test it cites, recomputed from its runs by analysis.py."""
    text = section(notes, heading)
    runs, architectures, budget = study_files(study)
    assert capacity_table(runs, architectures, budget) in text
    assert f"Grokked: {sum(r['grokked'] for r in runs)} of {len(runs)} runs" in text
    assert f"memorized: {sum(r['memorized'] for r in runs)} of {len(runs)}" in text
    assert f"grokking that holds: {sum(r['grokked_held'] for r in runs)} of {len(runs)}" in text
    assert check_citations(text, study) >= 4, "the reading cites its paired tests"


def test_the_demos_comparisons_in_notes_are_what_its_files_hold(notes):
    assert check_citations(section(notes, "Demo (studies/demo, the quick start)"), "demo") >= 3


def test_the_readmes_findings_are_what_the_studies_hold():
    """The README's table of findings: every test it cites names its study and is recomputed."""
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    findings = readme[readme.index("## Findings"):readme.index("\n## ", readme.index("## Findings") + 1)]
    assert check_citations(findings, None) >= 6


def test_the_demo_numbers_in_notes_are_what_its_files_hold(notes):
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
