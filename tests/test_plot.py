"""plot.py on real run folders made by experiment.py, next to broken ones."""

import os
import shutil
import subprocess
import sys

import matplotlib.image
import pytest

from support import ROOT, assert_one_error_line

# Four architectures, two of them a matched deep-narrow / wide-shallow pair (4x16 ~ 1x32).
STUDY = ["--tasks=x_plus_y,permutation", "--layers=1,4", "--dims=16,32", "--heads=2", "--seeds=2",
         "--num_steps=60", "--eval_every=10", "--prime=23", "--perm_k=3", "--batch_size=64"]
BASELINE = ["--tasks=x_plus_y,permutation", "--layers=1", "--dims=16", "--heads=2", "--seeds=2",
            "--num_steps=30", "--prime=23", "--perm_k=3", "--batch_size=64"]
TASKS = ["x_plus_y", "permutation"]


def script(name, *args, cwd):
    return subprocess.run([sys.executable, os.path.join(ROOT, name), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    for name, args in (("run_0", BASELINE), ("run_1", STUDY)):
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
    figures += [f"run_1_heatmap_{t}.png" for t in TASKS]
    figures += ["run_1_steps_vs_params.png", "run_1_deep_vs_wide.png", "run_1_stability.png"]
    figures += ["run_0_accuracy.png", "run_1_accuracy.png"]  # the grokking picture of each run
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
    assert pngs == sorted(expected_figures())  # nothing of the one-architecture run_0 beyond figures 1 and 1b
    for png in pngs:
        assert_not_blank(runs / png)
    summary = (runs / "summary.md").read_text()
    assert summary.strip() in result.stdout
    sections = {s.split(":")[0]: s for s in summary.split("\n## ")[1:]}
    assert sorted(sections) == ["run_0", "run_1"]
    for arch in ("L1_D16_H2", "L4_D16_H2", "L1_D32_H2", "L4_D32_H2"):
        for task in TASKS:
            assert sum(line.startswith(f"| {task} | {arch} |") for line in sections["run_1"].splitlines()) == 1
    assert "| 4x16 | 1x32 | x_plus_y | 2 |" in sections["run_1"]


def test_runs_and_out_options(runs, tmp_path):
    result = script("plot.py", "--runs=run_0", f"--out={tmp_path}", cwd=runs)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(tmp_path)) == sorted(
        [f"{c}_{t}.png" for c in ("train_loss", "val_loss", "train_acc", "val_acc") for t in TASKS]
        + ["run_0_accuracy.png", "summary.md"])
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
    sys.path.insert(0, ROOT)
    import plot
    monkeypatch.setattr(plot, "labels", {"run_1": "capacity grid"})
    monkeypatch.chdir(runs)
    selected = plot.discover_runs(".", None)
    assert [(r.name, r.label) for r in selected] == [("run_1", "capacity grid")]
    assert "note: run_0 left out" in capsys.readouterr().out


def test_bootstrap_and_matching():
    sys.path.insert(0, ROOT)
    import plot
    mean, low, high, n = plot.paired_bootstrap({0: 100, 1: 200, 2: 300}, {0: 50, 1: 150, 2: 250, 3: 9})
    assert (mean, low, high, n) == (50, 50, 50, 3)  # identical differences: a zero-width interval
    mean, low, high, _ = plot.paired_bootstrap({0: 0, 1: 100}, {0: 0, 1: 0})
    assert mean == 50 and low == 0 and high == 100
    archs = [{"name": f"L{n}_D{d}_H4", "layers": n, "d_model": d, "heads": 4, "parameter_count": p}
             for n, d, p in ((4, 64, 213_025), (1, 128, 224_353), (2, 128, 422_625), (1, 256, 841_825),
                             (4, 128, 819_169))]
    pairs = [(a["name"], b["name"]) for a, b in plot.matched_pairs(archs)]
    assert pairs == [("L4_D64_H4", "L1_D128_H4"), ("L4_D128_H4", "L1_D256_H4")]


def test_figures_and_outputs_share_one_mean_and_standard_error():
    sys.path.insert(0, ROOT)
    import plot
    import runner
    assert plot.mean_stderr is runner.mean_stderr  # tested in test_metrics.py


@pytest.mark.parametrize("counts, expected", [((108_155, 235_931), None),  # the demo: within a factor of 2.2
                                              ((14_487, 207_611), ["20K", "50K", "100K", "200K"]),
                                              ((54_979, 3_187_713), ["50K", "100K", "200K", "500K", "1M", "2M"])])
def test_the_parameter_axis_is_labelled_in_counts(counts, expected):
    import plot
    fig, ax = plot.plt.subplots()
    ax.plot(counts, [1, 2], "o")
    plot.parameter_axis(ax)
    fig.canvas.draw()
    low, high = ax.get_xlim()
    labels = [t.get_text() for t, x in zip(ax.get_xticklabels(), ax.get_xticks()) if low <= x <= high]
    plot.plt.close(fig)
    if expected is None:
        assert len(labels) >= 3 and all(label.endswith("K") for label in labels)
    else:
        assert labels == expected
