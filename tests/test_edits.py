"""A change a researcher makes to experiment.py is the change that trains. Each test copies the
project, edits experiment.py by a text substitution, runs its command line and checks what ran:
results that differ from the unedited run and equal each run trained alone with the edited code.
One edit runs as a process of its own (python experiment.py in the copy); the others run the
edited file's main() in this process, which is the same command line without a new process."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

import experiment as ex
from runner.plan import config_from_json
from support import ROOT, copy_project, edit, load_experiment, main_in_process, outputs, run_script, train_alone

# The smoke preset, short, on batches of 64 and in float64: exact comparisons in seconds.
SHORT = ["--preset=smoke", "--num_steps=30", "--batch_size=64", "--dtype=float64"]


def run_module(module, folder, *args, out: str = "run"):
    """The edited file's command line (its main()) with --out_dir=<folder>/<out> and args."""
    code, stdout, stderr = main_in_process(module.science(), [f"--out_dir={folder}/{out}", *args])
    return SimpleNamespace(returncode=code, stdout=stdout, stderr=stderr)


@pytest.fixture(scope="module")
def unedited(tmp_path_factory):
    folder = tmp_path_factory.mktemp("unedited")
    result = run_module(ex, folder, *SHORT)
    assert result.returncode == 0, result.stderr
    assert "forward of all 4 groups: fast (equal to the plain model in float64" in result.stdout
    return outputs(f"{folder}/run")


def edited_copy(tmp_path, name: str, *substitutions):
    """(folder, module): the project copied, experiment.py edited, and loaded as experiment_<name>."""
    folder = copy_project(tmp_path / name)
    for old, new in substitutions:
        edit(folder, old, new)
    return folder, load_experiment(folder, f"experiment_{name}")


def run_edited(tmp_path, name: str, *substitutions, args=SHORT):
    """An edited copy trained; (folder, the run's result, the edited module)."""
    folder, module = edited_copy(tmp_path, name, *substitutions)
    result = run_module(module, folder, *args)
    assert result.returncode == 0, result.stderr
    return folder, result, module


def assert_each_run_trained_alone(folder, ex, after_backward=None) -> None:
    """The curves of the first and the last run of every group (the two ends of its stacked
    parameters) equal the plain training loop of the edited code (module ex) for that run alone."""
    runs, curves = outputs(f"{folder}/run")
    with open(f"{folder}/run/config.json") as f:
        c = config_from_json(ex.science(), json.load(f)["config"])
    group = lambda r: (r["architecture"], r["task"] == "permutation")  # noqa: E731  (a group: one vocabulary)
    ends = {i for rows in ([i for i, r in enumerate(runs) if group(r) == g] for g in dict.fromkeys(map(group, runs)))
            for i in (rows[0], rows[-1])}
    for i, r in ((i, r) for i, r in enumerate(runs) if i in ends):
        alone, _ = train_alone(ex, c, r["layers"], r["d_model"], r["heads"], r["task"], r["seed"], after_backward)
        for name, values in alone.items():
            np.testing.assert_allclose(curves[name][i], values, rtol=0, atol=1e-10, err_msg=f"{r['task']} {name}")


def assert_differs(edited, unedited) -> None:
    assert not np.allclose(edited[1]["train_loss"], unedited[1]["train_loss"], rtol=0, atol=1e-6)


def test_an_edited_model_trains_as_edited(tmp_path, unedited):
    folder, module = edited_copy(tmp_path, "relu", ("nn.GELU()", "nn.ReLU()"))
    result = run_script(["--out_dir=run", *SHORT], cwd=folder)  # the real script, in the copy
    assert result.returncode == 0, result.stderr
    assert "forward of all 4 groups: vmap (the fast forward is not used: it differs from the plain model" in result.stdout
    assert_differs(outputs(f"{folder}/run"), unedited)
    assert_each_run_trained_alone(folder, module)


def test_an_edited_loss_trains_as_edited(tmp_path, unedited):
    folder, result, module = run_edited(tmp_path, "smoothing", ("return F.cross_entropy(logits, answers)\n",
                                                        "return F.cross_entropy(logits, answers, label_smoothing=0.1)\n"))
    assert "fast (equal to the plain model" in result.stdout  # the forward is unchanged; the loss is shared
    assert_differs(outputs(f"{folder}/run"), unedited)
    assert_each_run_trained_alone(folder, module)


def test_a_model_vmap_cannot_run_trains_member_by_member(tmp_path, unedited):
    folder, result, _ = run_edited(tmp_path, "item", (
        "        return self.head(self.norm(self.blocks(x))[:, -1])",
        "        if x.abs().max().item() > 1e9:  # data-dependent Python: vmap cannot run it\n"
        "            raise ValueError('exploded')\n"
        "        return self.head(self.norm(self.blocks(x))[:, -1])"))
    assert "forward of all 4 groups: loop (vmap cannot run the plain model (RuntimeError" in result.stdout
    np.testing.assert_allclose(outputs(f"{folder}/run")[1]["val_loss"], unedited[1]["val_loss"], rtol=0, atol=1e-12)


def test_a_model_with_dropout_trains_batched_and_repeats(tmp_path, unedited):
    dropout = ("nn.GELU(), nn.Linear(4 * d_model, d_model))", "nn.GELU(), nn.Linear(4 * d_model, d_model), nn.Dropout(0.2))")
    first, result, _ = run_edited(tmp_path, "dropout", dropout)
    assert ("forward of all 4 groups: vmap (the fast forward is not used: the plain model draws random numbers in "
            "training (e.g. dropout)") in result.stdout
    assert "one at a time" not in result.stdout  # random draws are not mistaken for coupled runs
    second, _, _ = run_edited(tmp_path, "dropout_again", dropout)
    curves, again = outputs(f"{first}/run")[1], outputs(f"{second}/run")[1]
    for name, values in curves.items():
        np.testing.assert_array_equal(values, again[name], err_msg=name)  # the same draws every time
    assert_differs((None, curves), unedited)


def test_a_step_that_couples_runs_trains_them_one_at_a_time(tmp_path, unedited):
    import torch
    clip = "    torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g['params']], 0.05)\n"
    folder, result, module = run_edited(tmp_path, "clip", ("    losses.sum().backward()  # runs share no parameter: each gets the gradient of its own loss\n",
                                                   "    losses.sum().backward()\n" + clip))
    assert "the step couples runs" in result.stdout and "so they train one at a time" in result.stdout
    assert_differs(outputs(f"{folder}/run"), unedited)
    assert_each_run_trained_alone(folder, module, lambda m: torch.nn.utils.clip_grad_norm_(m.parameters(), 0.05))


def test_new_config_fields_and_metrics_need_no_other_change(tmp_path):
    folder, result, module = run_edited(
        tmp_path, "fields",
        ('    dtype: str = "float32"', '    dtype: str = "float32"\n    decay_biases: bool = True  # weight decay on biases too'),
        ("    optimizer = torch.optim.AdamW(params.values(),",
         "    params = params if c.decay_biases else {k: v for k, v in params.items() if not k.endswith('bias')}\n"
         "    optimizer = torch.optim.AdamW(params.values(),"),
        ('        "grok_delay": step_val - step_train,', '        "grok_delay": step_val - step_train,\n'
                                                         '        "peak_val_acc": float(val_acc.max()),\n'
                                                         '        "peak_step": steps[val_acc.argmax()],\n'
                                                         '        "undefined": np.nan,'),
        ('            "acc": (logits.argmax(-1) == answers).to(logits.dtype)}',
         '            "acc": (logits.argmax(-1) == answers).to(logits.dtype),\n'
         '            "log_p": -F.cross_entropy(logits, answers, reduction="none")}'),
        ('"final_val_acc": 4,', '"final_val_acc": 4, "peak_val_acc": 4, "final_val_log_p": 3, "final_weight_norm": 1,'),
        args=[*SHORT, "--decay_biases=0"])
    runs, curves = outputs(f"{folder}/run")
    assert all(0 <= r["peak_val_acc"] <= 1 for r in runs)
    # NumPy numbers are saved as JSON numbers, NaN (which JSON lacks) as null
    assert all(type(r["peak_step"]) is int and r["undefined"] is None for r in runs)
    # a new example metric is a curve per split, and its final value a metric like any other
    np.testing.assert_allclose(curves["val_log_p"], -curves["val_loss"], rtol=1e-12)
    assert {"train_log_p", "val_log_p"} <= set(curves)
    with open(f"{folder}/run/final_info.json") as f:
        info = json.load(f)
    for entry in info.values():
        assert {"peak_val_acc_mean", "final_val_log_p_mean", "final_weight_norm_mean"} <= set(entry["means"])
    with open(f"{folder}/run/config.json") as f:
        assert json.load(f)["config"]["decay_biases"] is False
    help_text = main_in_process(module.science(), ["--help"])[1]
    assert "--decay_biases" in help_text and "weight decay on biases too" in help_text
    bad = run_module(module, folder, "--decay_biases=maybe", out="other")
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --decay_biases='maybe': expected 0 or 1"


def test_a_config_axis_the_model_reads_is_swept_in_one_study(tmp_path, unedited):
    folder, result, _ = run_edited(
        tmp_path, "dropout_axis",
        ('    dtype: str = "float32"', '    dtype: str = "float32"\n    dropout: float | tuple[float, ...] = 0.0  # after each MLP'),
        ("        return Transformer(layers, d_model, heads, table.vocab_size, table.num_classes)\n",
         "        model = Transformer(layers, d_model, heads, table.vocab_size, table.num_classes)\n"
         "        for block in model.blocks:\n"
         "            block.ffn.append(nn.Dropout(c.dropout))\n"
         "        return model\n"),
        args=[*SHORT, "--layers=1", "--tasks=x_plus_y", "--dropout=0,0.3"])
    assert "forward of L1_D32_H4_dropout0: fast (equal to the plain model" in result.stdout
    assert "forward of L1_D32_H4_dropout0.3: vmap (the fast forward is not used: the plain model draws random" in result.stdout
    runs, curves = outputs(f"{folder}/run")
    assert [(r["dropout"], r["setting"]) for r in runs] == [(0.0, "dropout0")] * 2 + [(0.3, "dropout0.3")] * 2
    plain_runs, plain_curves = unedited
    for i, r in enumerate(runs):
        j = next(j for j, p in enumerate(plain_runs) if (p["task"], p["architecture"], p["seed"]) == (r["task"], r["architecture"], r["seed"]))
        same = np.allclose(curves["train_loss"][i], plain_curves["train_loss"][j], rtol=0, atol=1e-12)
        assert same == (r["dropout"] == 0.0), r  # dropout 0 is the unedited model; 0.3 is not


def test_an_evaluation_before_training_is_step_0(tmp_path, unedited):
    steps_line = "    return steps if steps and steps[-1] == c.num_steps else steps + [c.num_steps]\n"
    folder, _, _ = run_edited(tmp_path, "step0", (steps_line, "    steps = [0] + steps\n" + steps_line))
    runs, curves = outputs(f"{folder}/run")
    plain_curves = unedited[1]
    assert list(curves["step"]) == [0] + list(plain_curves["step"])
    for name, values in plain_curves.items():  # evaluating first changes nothing that follows
        if name != "step":
            np.testing.assert_array_equal(curves[name][:, 1:], values, err_msg=name)
    assert (curves["train_acc"][:, 0] < 0.5).all()  # the untrained models
    edit(folder, "    steps = [0] + steps\n", "    steps = [5, 0] + steps\n")
    result = run_module(load_experiment(folder, "experiment_step5"), folder, *SHORT, out="other")
    assert result.returncode == 2 and result.stderr.startswith(
        "error: evaluation_steps gives [5, 0, 10, 20, ..., 30]; it must give whole steps in increasing order")


def test_a_model_with_the_wrong_output_shape_is_named_before_training(tmp_path):
    folder, module = edited_copy(tmp_path, "shape", ("self.head(self.norm(self.blocks(x))[:, -1])",
                                                     "self.head(self.norm(self.blocks(x)))"))
    result = run_module(module, folder, *SHORT)
    assert result.returncode == 1 and "forward of" not in result.stdout  # stopped before any training
    assert result.stderr.strip().splitlines()[-1] == (
        "error: ValueError: the model maps tokens of shape (8, 4) to logits of shape (8, 4, 23); it must return "
        "(batch, classes) = (8, 23)")


def test_a_headline_metric_nobody_computes_is_refused_before_training(tmp_path):
    folder, module = edited_copy(tmp_path, "typo", ('"final_val_acc": 4,', '"final_val_accuracy": 4,'))
    result = run_module(module, folder, *SHORT)
    assert result.returncode == 2
    assert result.stderr.startswith("error: HEADLINE_METRICS names 'final_val_accuracy', which run_metrics does not return")
    edit(folder, '"final_val_accuracy": 4,', '"final_val_acc": 4, "phase": 0,')
    edit(folder, '        "grok_delay": step_val - step_train,', '        "grok_delay": step_val - step_train,\n'
                                                                   '        "phase": "memorized" if step_train < num_steps else "not yet",')
    result = run_module(load_experiment(folder, "experiment_phase"), folder, *SHORT)
    assert result.returncode == 2 and result.stderr == (
        "error: HEADLINE_METRICS names 'phase', whose value is str, not a number; final_info.json averages it over seeds\n")


def test_float64_fast_and_generic_runs_give_the_same_curves(tmp_path, unedited):
    folder, result, _ = run_edited(tmp_path, "generic", args=[*SHORT, "--forward=generic"])
    assert "forward of all 4 groups: vmap (--forward=generic)" in result.stdout
    generic = outputs(f"{folder}/run")[1]
    for name, values in unedited[1].items():
        np.testing.assert_allclose(generic[name], values, rtol=0, atol=1e-12, err_msg=name)


PER_RUN_CLIP = """\
    losses.sum().backward()
    grads = [p.grad for group in optimizer.param_groups for p in group["params"]]  # each (members, ...)
    norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads]).norm(dim=0)  # (members,): each run's own norm
    scale = (1.0 / (norms + 1e-6)).clamp(max=1.0)  # clip each run's gradient to norm 1
    for g in grads:
        g.mul_(scale.view(-1, *[1] * (g.dim() - 1)))
"""


def test_the_readmes_per_run_gradient_clip_keeps_runs_independent(tmp_path, unedited):
    import torch
    with open(f"{ROOT}/docs/changing.md") as f:
        assert PER_RUN_CLIP in f.read()  # the snippet the how-to shows is the one tested here
    folder, result, module = run_edited(tmp_path, "per_run_clip", (
        "    losses.sum().backward()  # runs share no parameter: each gets the gradient of its own loss\n", PER_RUN_CLIP))
    assert "forward of all 4 groups: fast" in result.stdout and "one at a time" not in result.stdout
    assert_differs(outputs(f"{folder}/run"), unedited)
    assert_each_run_trained_alone(folder, module, lambda m: torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0))


def test_renamed_metrics_need_no_change_in_the_machinery(tmp_path):
    """The machinery names no metric: a copy of experiment.py that calls `grokked` `generalized`
    (in run_metrics and HEADLINE_METRICS) runs the short smoke study to its end, and the group lines
    and final_info.json speak of `generalized`."""
    folder, module = edited_copy(tmp_path, "renamed", ('        "grokked": int(grokked),', '        "generalized": int(grokked),'),
                                 ('"grokked": 3,', '"generalized": 3,'))
    result = run_module(module, folder, *SHORT)
    assert result.returncode == 0, result.stderr
    groups = [line for line in result.stdout.splitlines() if line.startswith("L")]
    assert len(groups) == 4 and all("generalized 0.000" in line and "grokked" not in line for line in groups)
    with open(f"{folder}/run/final_info.json") as f:
        info = json.load(f)
    assert all("generalized_mean" in entry["means"] and "grokked_mean" not in entry["means"] for entry in info.values())
