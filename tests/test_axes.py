"""Studies beyond the architecture: hyperparameter axes, the log evaluation schedule, the test
split, saved models and the query command."""

import dataclasses
import json
import os

import numpy as np
import pytest
import torch

import experiment as ex
from runner.cli import resolve
from runner.folder import GROUPS_DIR, MODELS_DIR, RunFolder
from runner.forwards import ForwardChoice
from runner.plan import Architecture, Study, architectures, settings, varied_axes
from runner.science import UsageError
from runner.training import train_group
from support import assert_one_error_line, main_in_process, run_script

SCIENCE = ex.science()
AXES_STUDY = ["--tasks=x_plus_y,x_div_y", "--layers=1", "--dims=16", "--heads=2", "--seeds=2",
              "--num_steps=20", "--eval_every=10", "--prime=7,11", "--batch_size=16,32"]


def config(*args) -> ex.Config:
    return resolve(SCIENCE, ["--out_dir=x", *args], environ={})[0]


def groups_of(c) -> list:
    return Study.build(SCIENCE, c).groups()


# ----- axes and groups -----

def test_a_list_makes_an_axis_and_one_value_stays_a_number():
    c = config(*AXES_STUDY, "--lr=0.001")
    assert c.prime == (7, 11) and c.batch_size == (16, 32) and c.lr == 0.001
    assert varied_axes(c) == ["prime", "batch_size"]
    assert len(settings(c)) == 4


def test_groups_share_the_architecture_the_vocabulary_and_the_optimizer_settings():
    c = dataclasses.replace(config(*AXES_STUDY, "--weight_decay=0.5,1", "--train_fraction=0.4,0.6"), layers=(1, 2))
    groups = groups_of(c)
    # prime (the vocabulary), batch size and weight decay split groups; train_fraction does not
    assert [g.name for g in groups] == [f"L{n}_D16_H2_p{p}_bs{b}_wd{w}" for n in (1, 2) for p in (7, 11)
                                        for b in (16, 32) for w in (0.5, 1)]
    for g in groups:
        assert len(g.members) == 2 * 2 * 2  # train fractions x tasks x seeds
        assert len({tuple(v for k, v in m.setting if k != "train_fraction") for m in g.members}) == 1
        assert {dict(m.setting)["train_fraction"] for m in g.members} == {0.4, 0.6}
    # every architecture sees every run: tasks x seeds x settings (2 x 2 x 2 x 2)
    for arch in architectures(c):
        assert len({(m.task, m.seed, m.setting) for g in groups if g.arch == arch for m in g.members}) == 2 * 2 * 16
    # tasks of two domains in one setting: the group names say which
    both = config("--tasks=x_plus_y,permutation", "--layers=1", "--dims=16", "--heads=2", "--prime=7", "--perm_k=3")
    assert [g.name for g in groups_of(both)] == ["L1_D16_H2_mod7", "L1_D16_H2_S3"]


def test_zipped_axes_pair_up_instead_of_crossing():
    """Two optimizer settings (lr 1e-3 with weight decay 0.5, lr 2e-3 with 1), not four."""
    c = config(*[a for a in AXES_STUDY if not a.startswith("--prime")], "--prime=7", "--lr=1e-3,2e-3", "--weight_decay=0.5,1", "--zip_axes=lr,weight_decay")
    assert [dict(s)["lr"] for s in settings(c)] == [1e-3, 2e-3, 1e-3, 2e-3]
    assert {(dict(s)["lr"], dict(s)["weight_decay"]) for s in settings(c)} == {(1e-3, 0.5), (2e-3, 1.0)}
    assert [g.name for g in groups_of(dataclasses.replace(c, layers=(1,)))] == [
        f"L1_D16_H2_bs{b}_lr{lr}_wd{w}" for b in (16, 32) for lr, w in (("0.001", "0.5"), ("0.002", "1"))]
    for bad, message in ((["--zip_axes=lr,weight_decay", "--lr=1e-3,2e-3"], "need one length: lr has 2, weight_decay has 1"),
                         (["--zip_axes=lr,seeds"], "--zip_axes names seeds, not a list"),
                         (["--zip_axes=dims,heads", "--dims=64,128", "--heads=2,4,4"], "need one length: dims has 2, heads has 3"),
                         (["--zip_axes=dims,heads", "--dims=64,96", "--heads=4,64"], "64 heads do not divide d_model 96")):
        with pytest.raises(UsageError, match=message):
            config(*bad)


def test_zipped_architecture_lists_build_only_their_pairs():
    """Heads at equal width (64x2, 64x4) and at equal head size (64x2, 128x4) without 128x2;
    architecture lists and axes zip separately, each needing one length among themselves."""
    c = config("--layers=1,4", "--dims=64,64,128", "--heads=2,4,4", "--lr=1e-3,2e-3", "--weight_decay=0.5,1",
               "--zip_axes=dims,heads,lr,weight_decay")
    assert [a.name for a in architectures(c)] == [f"L{n}_D{d}_H{h}" for n in (1, 4) for d, h in ((64, 2), (64, 4), (128, 4))]
    assert len(settings(c)) == 2
    listed = config("--layers=1,4,1", "--dims=64,64,128", "--heads=2,4,4", "--zip_axes=layers,dims,heads")
    assert [a.name for a in architectures(listed)] == ["L1_D64_H2", "L4_D64_H4", "L1_D128_H4"]  # one by one
    with pytest.raises(UsageError, match="makes the same architecture twice"):
        config("--dims=64,64", "--heads=4,4", "--zip_axes=dims,heads")
    with pytest.raises(UsageError, match="--dims lists a value twice"):  # only a zipped list may repeat
        config("--dims=64,64", "--heads=2,4")


def test_axes_study_end_to_end(tmp_path):
    out = tmp_path / "run_1"
    result = run_script([f"--out_dir={out}", *AXES_STUDY])
    assert result.returncode == 0, result.stderr
    assert "study: 1 architecture x 2 prime x 2 batch_size x 2 tasks x 2 seeds = 16 runs" in result.stdout
    assert "as 4 groups (80 batched steps)" in result.stdout
    info = json.loads((out / "final_info.json").read_text())
    assert sorted(info) == sorted(f"{t}/L1_D16_H2/p{p}/bs{b}" for t in ("x_plus_y", "x_div_y")
                                  for p in (7, 11) for b in (16, 32))
    runs = json.loads((out / "runs.json").read_text())
    for key, entry in info.items():
        task, _, prime, batch = key.split("/")
        mine = [r for r in runs if r["task"] == task and r["setting"] == f"{prime}/{batch}"]
        assert len(mine) == 2 and {r["prime"] for r in mine} == {int(prime[1:])}
        assert entry["final_info_dict"]["step_val_acc_99"] == [r["step_val_acc_99"] for r in mine]
        assert entry["final_info_dict"]["parameter_count"] == [r["parameter_count"] for r in mine]
        # the parameter count follows the prime's vocabulary
        assert len(set(entry["final_info_dict"]["parameter_count"])) == 1
    saved = json.loads((out / "config.json").read_text())
    assert saved["axes"] == {"prime": [7, 11], "batch_size": [16, 32]}
    assert saved["config"]["prime"] == [7, 11] and saved["config"]["lr"] == 0.001
    assert sorted(os.listdir(out / GROUPS_DIR)) == [f"L1_D16_H2_p{p}_bs{b}.npz" for p in (11, 7) for b in (16, 32)]
    # the same command again resumes every group
    again = run_script([f"--out_dir={out}", *AXES_STUDY])
    assert again.returncode == 0 and "resuming: 4 of 4 groups" in again.stdout


def test_presets_reproduce_the_common_studies():
    bs = config("--preset=batch_size")
    assert bs.batch_size == (64, 128, 256, 512) and bs.weight_decay == 1.0 and bs.tasks == ("x_div_y",)
    assert architectures(bs) == [Architecture(2, 128, 4)] and bs.seeds == 3
    assert [g.name for g in groups_of(bs)] == [f"L2_D128_H4_bs{b}" for b in (64, 128, 256, 512)]
    primes = config("--preset=primes")
    assert primes.prime == (97, 113) and primes.tasks == ("x_plus_y", "x_minus_y")
    assert primes.layers == (1, 2)
    assert [g.name for g in groups_of(primes)] == [f"L{n}_D128_H4_p{p}" for n in (1, 2) for p in (97, 113)]
    assert all(len(g.members) == 6 for g in groups_of(primes))  # tasks x seeds


# ----- data -----

@pytest.mark.parametrize("task, size", [("x_plus_y", 12769), ("x_minus_y", 12769), ("x_div_y", 12656)])
def test_prime_113_tables_are_complete_and_correct(task, size):
    table = ex.build_table(task, ex.Config(prime=113))
    assert len(table.answers) == size == ex.task_size(task, 113, 5)
    a, b = table.tokens[:, 0].numpy() - 2, table.tokens[:, 2].numpy() - 2
    c = table.answers.numpy()
    if task == "x_plus_y":
        assert ((a + b) % 113 == c).all()
    elif task == "x_minus_y":
        assert ((a - b) % 113 == c).all()
    else:
        assert (b > 0).all() and ((c * b) % 113 == a).all()
    assert len(set(zip(a.tolist(), b.tolist()))) == size


def test_test_split_is_held_out_and_reported(tmp_path):
    n = 1000
    splits, _ = ex.run_data(n, ex.Config(test_fraction=0.2), 0)
    train, val, test = splits["train"], splits["val"], splits["test"]
    assert (len(train), len(val), len(test)) == (500, 300, 200)
    assert torch.equal(torch.sort(torch.cat([train, val, test])).values, torch.arange(n))
    # the training split is the same with or without a test split
    assert torch.equal(train, ex.run_data(n, ex.Config(), 0)[0]["train"])
    out = tmp_path / "run_t"
    result = run_script([f"--out_dir={out}", "--tasks=x_plus_y", "--layers=1", "--dims=16", "--heads=2",
                  "--seeds=2", "--num_steps=20", "--prime=11", "--test_fraction=0.2"])
    assert result.returncode == 0, result.stderr
    runs = json.loads((out / "runs.json").read_text())
    assert all({"step_test_acc_99", "final_test_loss", "final_test_acc"} <= set(r) for r in runs)
    curves = np.load(out / "curves.npz")
    assert curves["test_acc"].shape == curves["val_acc"].shape and np.isfinite(curves["test_loss"]).all()


# ----- evaluation schedule -----

def test_log_schedule_steps():
    c = ex.Config(num_steps=100_000, eval_schedule="log", eval_points_per_decade=10)
    steps = ex.evaluation_steps(c)
    assert steps[0] == 1 and steps[-1] == 100_000 and steps == sorted(set(steps))
    assert 10 in steps and 100 in steps and 1000 in steps and 10_000 in steps
    assert 40 < len(steps) <= 51  # about 10 per decade, small steps merged
    ratios = np.diff(np.log10(steps[20:]))
    assert np.allclose(ratios, 0.1, atol=0.01)
    short = ex.evaluation_steps(dataclasses.replace(c, num_steps=300))
    assert short[-1] == 300 and max(short) == 300
    # metrics are first evaluated steps
    curves = {name: np.zeros(len(steps)) for name in ("train_loss", "train_acc", "val_loss", "val_acc")}
    curves["val_acc"][steps.index(1259):] = 1.0
    assert ex.run_metrics(np.array(steps), curves, c)["step_val_acc_99"] == 1259


# ----- saved models and queries -----

TINY = ex.Config(tasks=("x_div_y", "x_plus_y"), layers=(1,), dims=(16,), heads=(2,), seeds=2, num_steps=30,
                 eval_every=10, prime=11, batch_size=32)


def test_saved_weights_are_exactly_the_trained_ones(tmp_path):
    study = Study.build(SCIENCE, TINY)
    group, = study.groups()
    choice = ForwardChoice("fast", "test")
    _, weights = train_group(study, group, torch.device("cpu"), choice, save_models=True)
    (members, trained), = weights
    assert members == group.members
    folder = RunFolder(str(tmp_path))
    folder.save_models(group, weights)
    path = tmp_path / MODELS_DIR / "L1_D16_H2.npz"
    with np.load(path, allow_pickle=False) as f:
        assert all(f[k].dtype != object for k in f.files)
    for i, member in enumerate(group.members):
        loaded = folder.member_weights(group, member)
        assert loaded.keys() == trained.keys()
        assert all(np.array_equal(loaded[name].numpy(), trained[name][i]) for name in trained)
        table = study.table(member)
        model = ex.build_model(1, 16, 2, table, member.seed, study.config(member))
        assert not torch.equal(model.head.weight, loaded["head.weight"])  # it trained
        model.load_state_dict(loaded)
        expected = torch.func.functional_call(model, {k: torch.from_numpy(v[i]) for k, v in trained.items()},
                                              (table.tokens,))
        assert torch.equal(model(table.tokens), expected)


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("q") / "run_q"
    args = [f"--out_dir={out}", "--tasks=x_div_y,permutation", "--layers=1", "--dims=16", "--heads=2",
            "--seeds=2", "--num_steps=30", "--prime=11", "--perm_k=3", "--batch_size=32", "--save_models=1"]
    result = run_script(args)
    assert result.returncode == 0, result.stderr
    return out


def test_query_prints_answer_probability_and_truth(saved_run):
    result = run_script([f"--query={saved_run}", "--task=x_div_y", "--seed=1", "3/4", "10/1="])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == f"{saved_run}: x_div_y L1_D16_H2 seed 1"
    # 3/4 mod 11 = 3 * 3 = 9 (4 * 3 = 12 = 1 mod 11); 10/1 = 10
    assert lines[1].startswith("3/4 = ") and "true 9" in lines[1]
    assert lines[2].startswith("10/1 = ") and "true 10" in lines[2]
    p = float(lines[1].split("(p=")[1].split(")")[0])
    assert 0 < p <= 1
    perm = run_script([f"--query={saved_run}", "--task=permutation", "--seed=0", "102*021"])
    # (102 o 021)[i] = a[b[i]]: a=(1,0,2), b=(0,2,1) -> (1,2,0)
    assert perm.returncode == 0 and "true 120" in perm.stdout, perm.stderr


QUERY_ERRORS = [
    (["--task=x_div_y", "--seed=0", "3/0"], "3/0 is not an equation of x_div_y"),
    (["--task=x_div_y", "--seed=0", "12/3"], "operand '12' is not an element of x_div_y (0 .. 10)"),
    (["--task=x_div_y", "--seed=0", "3+4"], "cannot read '3+4'"),
    (["--task=x_div_y", "--seed=7", "3/4"], "--seed=7: the run has 0, 1"),
    (["--task=x_plus_y", "--seed=0", "3/4"], "--task=x_plus_y: the run has x_div_y, permutation"),
    (["--seed=0", "3/4"], "--task is needed"),
    (["--task=permutation", "--seed=0", "112*021"], "operand '112' is not an element of permutation (012 .. 210)"),
    (["--task=x_div_y", "--seed=0"], "no equation to ask"),
    (["--task=x_div_y", "--seed=0", "--colour=red", "3/4"], "--colour is not a query option"),
]


@pytest.mark.parametrize("args, message", QUERY_ERRORS, ids=[" ".join(a) for a, _ in QUERY_ERRORS])
def test_bad_queries_are_one_line(saved_run, args, message):
    code, stdout, stderr = main_in_process(SCIENCE, [f"--query={saved_run}", *args])
    assert code == 2 and stdout == ""
    assert_one_error_line(stderr, message)


def test_a_bad_query_exits_2_from_the_script_with_one_line(saved_run):
    result = run_script([f"--query={saved_run}", "--task=x_div_y", "--seed=0", "3/0"])
    assert result.returncode == 2 and result.stdout == ""
    assert_one_error_line(result.stderr, "3/0 is not an equation of x_div_y")


def test_query_of_a_missing_run_or_unsaved_models(tmp_path, saved_run):
    result = run_script([f"--query={tmp_path / 'nothing'}", "1/2"])
    assert result.returncode == 2 and "no finished study there" in result.stderr
    unsaved = tmp_path / "run_u"
    assert run_script([f"--out_dir={unsaved}", "--tasks=x_plus_y", "--layers=1", "--dims=16", "--heads=2",
                "--seeds=1", "--num_steps=10", "--prime=11"]).returncode == 0
    result = run_script([f"--query={unsaved}", "1+2"])
    assert result.returncode == 2 and "--save_models=1" in result.stderr
