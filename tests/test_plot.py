"""plot.py on real run folders made by experiment.py, next to broken ones."""

import json
import os
import shutil
import subprocess
import sys

import matplotlib.image
import pytest

import analysis

from support import ROOT, assert_one_error_line, run_script

# Four architectures, two of them a matched deep-narrow / wide-shallow pair (4x16 ~ 1x32).
STUDY = ["--tasks=x_plus_y,permutation", "--layers=1,4", "--dims=16,32", "--heads=2", "--seeds=2",
         "--num_steps=60", "--eval_every=10", "--prime=23", "--perm_k=3", "--batch_size=64"]
BASELINE = ["--tasks=x_plus_y,permutation", "--layers=1", "--dims=16", "--heads=2", "--seeds=2",
            "--num_steps=30", "--prime=23", "--perm_k=3", "--batch_size=64"]
TASKS = ["x_plus_y", "permutation"]
# One architecture under two (lr, weight decay) settings, zipped: figures per setting and per axis.
SETTINGS = ["--tasks=x_plus_y", "--layers=1", "--dims=16", "--heads=2", "--seeds=2", "--num_steps=30", "--prime=23",
            "--batch_size=64", "--lr=0.001,0.003", "--weight_decay=0.5,1", "--zip_axes=lr,weight_decay"]


def script(name, *args, cwd):
    return run_script(list(args), cwd=cwd, script=name, project=ROOT)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    for name, args in (("run_0", BASELINE), ("run_1", STUDY), ("run_4", SETTINGS)):
        result = script("experiment.py", f"--out_dir={name}", *args, cwd=root)
        assert result.returncode == 0, result.stderr
    (root / "run_2").mkdir()  # empty: a run that never started
    shutil.copytree(root / "run_0", root / "run_3")
    (root / "run_3" / "final_info.json").write_text("{not json")  # corrupt
    shutil.copytree(root / "run_0", root / "run_10")
    (root / "run_10" / "curves.npz").write_bytes(b"PK\x03\x04 truncated")  # killed mid-write
    (root / "run_11").mkdir()
    (root / "run_11" / "final_info.json").write_text('{"x_div_y": {"means": {}}}')  # a template-style run
    return root


def expected_figures():
    figures = [f"{curve}_{task}.png" for curve in ("train_loss", "val_loss", "train_acc", "val_acc") for task in TASKS]
    figures += [f"run_1_capacity_{b}.png" for b in ("small", "medium", "large")]
    figures += [f"run_1_{kind}_{t}.png" for kind in ("heatmap", "seeds", "survival") for t in TASKS]
    figures += [f"run_1_{kind}.png" for kind in ("steps_vs_params", "deep_vs_wide", "stability", "regimes",
                                                 "weight_norm", "paired")]
    figures += ["run_0_accuracy.png", "run_1_accuracy.png"]  # the grokking picture of each run
    figures += [f"{run}_progress_{t}.png" for run in ("run_0", "run_1") for t in TASKS]  # so are these two
    figures += ["run_1_fourier.png"]  # run_0's 30 steps do not raise the Fourier share
    figures += ["run_0_grok_vs_memorize.png", "run_1_grok_vs_memorize.png"]  # plot.py's own example
    return figures


def assert_not_blank(path):
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 200 and image.shape[1] > 200
    assert image[..., :3].std() > 0.05, f"{path} looks blank"


def test_plot_draws_every_figure_and_skips_bad_folders(runs):
    result = script("plot.py", cwd=runs)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning:")]
    assert [w.split()[1] for w in warnings] == ["run_2", "run_3", "run_10", "run_11"]  # numeric order
    assert "no final_info.json" in warnings[0] and "unreadable" in warnings[1]
    pngs = sorted(f for f in os.listdir(runs) if f.endswith(".png"))
    assert [f for f in pngs if not f.startswith("run_4")] == sorted(expected_figures())  # run_0: no comparison
    # run_4 varied lr and weight decay together: one axis figure (not one per zipped axis), the
    # settings compared in the paired figure, and the figures of one architecture per setting
    assert {"run_4_axis_lr.png", "run_4_paired.png", "run_4_lr0.001_wd0.5_accuracy.png",
            "run_4_lr0.003_wd1_accuracy.png"} <= set(pngs) and "run_4_axis_weight_decay.png" not in pngs
    for png in pngs:
        assert_not_blank(runs / png)
    summary = (runs / "summary.md").read_text()
    assert summary.strip() in result.stdout
    sections = {s.split("\n")[0]: s for s in summary.split("\n## ")[1:]}  # titled by the folder
    assert sorted(sections) == ["run_0", "run_1", "run_4"]
    for arch in ("L1_D16_H2", "L4_D16_H2", "L1_D32_H2", "L4_D32_H2"):
        for task in TASKS:
            assert sum(line.startswith(f"| {task} | - | {arch} |") for line in sections["run_1"].splitlines()) == 1
    assert "| deep-narrow vs wide-shallow: 4x16 vs 1x32 | all |" in sections["run_1"]
    with open(runs / "summary.json") as f:
        summary = json.load(f)
    assert {(r["run"], r["task"], r["setting"], r["architecture"]) for r in summary["rows"]} == {
        ("run_0", t, "", "L1_D16_H2") for t in TASKS} | {("run_1", t, "", a) for t in TASKS for a in (
            "L1_D16_H2", "L4_D16_H2", "L1_D32_H2", "L4_D32_H2")} | {
        ("run_4", "x_plus_y", s, "L1_D16_H2") for s in ("lr0.001/wd0.5", "lr0.003/wd1")}
    for row in summary["rows"]:
        assert row["n"] == 2 and sum(row[analysis.regime_key(g)] for g in analysis.REGIMES) == 2
        assert 0 < row["restricted_mean_grok"] <= 60 and row["grok_reached"] <= 2
    families = {(c["run"], c["family"]) for c in summary["comparisons"]}
    assert families == {("run_1", "depth"), ("run_1", "width"), ("run_1", "deep-narrow vs wide-shallow"),
                        ("run_4", "setting")}
    for c in summary["comparisons"]:
        assert c["pairs"] == c["wins"] + c["losses"] + c["ties"] > 0 and 0 <= c["p"] <= 1 and 0 <= c["cluster_p"] <= 1
        assert c["clusters"] == c["cluster_wins"] + c["cluster_losses"] + c["cluster_ties"] <= 4  # (task, seed)


def test_runs_and_out_options(runs, tmp_path):
    result = script("plot.py", "--runs=run_0", f"--out={tmp_path}", cwd=runs)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(tmp_path)) == sorted(
        [f"{c}_{t}.png" for c in ("train_loss", "val_loss", "train_acc", "val_acc") for t in TASKS]
        + ["run_0_accuracy.png", "run_0_grok_vs_memorize.png", *(f"run_0_progress_{t}.png" for t in TASKS),
           "summary.md", "summary.json"])
    assert "warning" not in result.stdout
    help_ = script("plot.py", "--help", cwd=runs)
    assert help_.returncode == 0 and "--runs=" in help_.stdout and "summary.md" in help_.stdout
    # Bad input: exit code 2, one line that says what to change, nothing written.
    for args, message in [(["--colour=red"], "unknown argument '--colour=red'"),
                          (["--runs=run_0,nowhere", f"--out={tmp_path}/new"], "--runs names 'nowhere'"),
                          ([f"--out={tmp_path}/summary.md"], "is a file")]:
        bad = script("plot.py", *args, cwd=runs)
        assert bad.returncode == 2, bad.stderr
        assert_one_error_line(bad.stderr, message)
        assert not os.path.exists(f"{tmp_path}/new")


def test_labels_rename_and_select(runs, monkeypatch, capsys, tmp_path):
    from plotting.studies import discover
    monkeypatch.chdir(runs)
    selected = discover(".", None, {"run_1": "capacity grid"})
    assert [(s.name, s.title) for s in selected] == [("run_1", "capacity grid")]
    assert "note: run_0 left out" in capsys.readouterr().out


def test_labels_that_name_no_run_are_an_error(runs, monkeypatch, capsys):
    """The AI-Scientist harness checks only plot.py's exit code: labels naming no existing run
    must not pass as success with no figures."""
    sys.path.insert(0, ROOT)
    import plot
    monkeypatch.setattr(plot, "labels", {"run_9": "x"})
    monkeypatch.chdir(runs)
    assert plot.main([]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "run_9" in err[0] and "run_0, run_1, run_2, run_3, run_4, run_10, run_11" in err[0]


def test_final_info_and_the_figures_share_one_mean_and_standard_error():
    import analysis
    from runner import results
    assert results.mean_stderr is analysis.mean_stderr  # tested in test_metrics.py


@pytest.mark.parametrize("counts, expected", [((108_155, 235_931), None),  # the demo: within a factor of 2.2
                                              ((14_487, 207_611), ["20K", "50K", "100K", "200K"]),
                                              ((54_979, 3_187_713), ["50K", "100K", "200K", "500K", "1M", "2M"])])
def test_the_parameter_axis_is_labelled_in_counts(counts, expected):
    from plotting import style
    fig, ax = style.plt.subplots()
    ax.plot(counts, [1, 2], "o")
    style.parameter_axis(ax)
    fig.canvas.draw()
    low, high = ax.get_xlim()
    labels = [t.get_text() for t, x in zip(ax.get_xticklabels(), ax.get_xticks()) if low <= x <= high]
    style.plt.close(fig)
    if expected is None:
        assert len(labels) >= 3 and all(label.endswith("K") for label in labels)
    else:
        assert labels == expected


def test_plot_draws_a_committed_study_where_torch_cannot_be_imported(tmp_path):
    """plot.py and the statistics it reads need numpy, scipy and matplotlib, never torch. (An
    import finder refuses torch, as where it is not installed; sys.modules["torch"] = None would
    also trip scipy, whose array-API helpers look torch up in sys.modules.)"""
    code = ("import importlib.abc, runpy, sys\n"
            "class NoTorch(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name.split('.')[0] == 'torch':\n"
            "            raise ModuleNotFoundError(\"No module named 'torch'\")\n"
            "sys.meta_path.insert(0, NoTorch())\n"
            f"sys.argv = ['plot.py', '--runs=studies/demo', '--out={tmp_path}']\n"
            "try:\n"
            "    runpy.run_path('plot.py', run_name='__main__')\n"
            "except SystemExit as end:\n"  # plot.py ends with sys.exit(main())
            "    assert end.code == 0, end.code\n"
            "assert 'torch' not in sys.modules\n"
            "print('drawn without torch')\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and result.stdout.endswith("drawn without torch\n"), result.stderr
    assert os.path.exists(tmp_path / "demo_accuracy.png") and os.path.exists(tmp_path / "summary.md")


@pytest.mark.parametrize("study", sorted(os.listdir(os.path.join(ROOT, "figures"))))
def test_the_committed_figures_tables_are_what_plot_py_computes(study):
    """figures/<study>/summary.json is what plot.py writes for studies/<study> today (the tables
    alone, without drawing): the committed figures belong to this code."""
    from plotting.studies import load
    from plotting.tables import summary_json
    with open(os.path.join(ROOT, "figures", study, "summary.json")) as f:
        committed = json.load(f)
    fresh = json.loads(json.dumps(summary_json([load(os.path.join(ROOT, "studies", study))])))
    assert json.dumps(fresh, sort_keys=True) == json.dumps(committed, sort_keys=True)
