"""Metric extraction on hand-made curves, and the AI-Scientist aggregation."""

import math

import numpy as np
import pytest

import experiment as ex
from analysis import mean_stderr
from runner.results import final_info

STEPS = np.array([10, 20, 30, 40, 50])


def curve(train_acc, val_acc):
    return {"train_loss": np.array([5., 4, 3, 2, 1]), "train_acc": np.array(train_acc, dtype=float),
            "val_loss": np.array([6., 5, 4, 3, 2]), "val_acc": np.array(val_acc, dtype=float),
            "weight_norm": np.array([9., 8, 7, 6, 5])}


def test_never_reached():
    m = ex.run_metrics(STEPS, curve([0.5] * 5, [0.1] * 5), ex.Config(num_steps=60))
    assert m["step_train_acc_99"] == m["step_val_acc_99"] == m["step_val_acc_99_sustained"] == 60
    assert (m["memorized"], m["grokked"], m["grok_delay"]) == (0, 0, 0)
    assert m["stable_fraction"] is None and m["min_val_acc_after_grok"] is None
    assert m["val_drops_after_grok"] is None
    assert (m["final_train_loss"], m["final_val_loss"], m["final_weight_norm"]) == (1, 2, 5)
    assert (m["final_train_acc"], m["final_val_acc"]) == (0.5, 0.1)


def test_reached_then_lost_then_regained():
    m = ex.run_metrics(STEPS, curve([0.2, 1, 1, 1, 1], [0.1, 0.995, 0.98, 0.995, 0.999]), ex.Config(num_steps=50))
    assert m["step_train_acc_99"] == 20 and m["step_val_acc_99"] == 20 and m["grok_delay"] == 0
    assert m["step_val_acc_99_sustained"] == 40
    assert m["stable_fraction"] == pytest.approx(2 / 3)
    assert m["min_val_acc_after_grok"] == 0.98
    assert m["val_drops_after_grok"] == 1


def test_reached_at_the_first_evaluation_and_kept():
    m = ex.run_metrics(STEPS, curve([1] * 5, [1] * 5), ex.Config(num_steps=50))
    assert m["step_train_acc_99"] == m["step_val_acc_99"] == m["step_val_acc_99_sustained"] == 10
    assert (m["stable_fraction"], m["min_val_acc_after_grok"], m["val_drops_after_grok"]) == (1.0, 1.0, 0)


def test_threshold_is_strict_and_grokking_at_the_last_evaluation_has_no_stability():
    m = ex.run_metrics(STEPS, curve([0.99, 0.99, 0.991, 1, 1], [0.99] * 4 + [1]), ex.Config(num_steps=50))
    assert m["step_train_acc_99"] == 30  # 0.99 itself is not "above 99%"
    assert m["step_val_acc_99"] == 50 and m["grokked"] == 1 and m["grok_delay"] == 20
    assert m["stable_fraction"] is None and m["val_drops_after_grok"] == 0


def test_lost_at_the_end_is_not_sustained():
    m = ex.run_metrics(STEPS, curve([1] * 5, [1, 1, 1, 1, 0.5]), ex.Config(num_steps=50))
    assert m["step_val_acc_99"] == 10 and m["step_val_acc_99_sustained"] == 50
    assert m["val_drops_after_grok"] == 1


def test_earlier_thresholds_and_the_two_kinds_of_drops_after_grokking():
    steps = np.array([10, 20, 30, 40, 50, 60])
    curves = {"train_loss": np.ones(6), "val_loss": np.ones(6), "weight_norm": np.ones(6),
              "train_acc": np.array([0.3, 1, 1, 0.5, 1, 1]), "val_acc": np.array([0.1, 0.6, 0.995, 0.5, 0.999, 0.98])}
    m = ex.run_metrics(steps, curves, ex.Config(num_steps=60))
    assert (m["step_train_acc_50"], m["step_train_acc_90"], m["step_train_acc_99"]) == (20, 20, 20)
    assert (m["step_val_acc_50"], m["step_val_acc_90"], m["step_val_acc_99"]) == (20, 30, 30)
    # after grokking at 30: at 40 both accuracies fall (optimization), at 60 validation alone does
    assert m["val_drops_after_grok"] == 2 and m["joint_drops_after_grok"] == 1 and m["val_only_drops_after_grok"] == 1
    never = ex.run_metrics(STEPS, curve([0.4] * 5, [0.1] * 5), ex.Config(num_steps=60))
    assert never["step_val_acc_50"] == never["step_train_acc_50"] == 60  # the budget when never, as at 99%
    assert never["val_only_drops_after_grok"] is None and never["joint_drops_after_grok"] is None


def test_stderr_is_sample_std_over_sqrt_n():
    mean, stderr = mean_stderr([3910, 4220, 4470])
    assert mean == pytest.approx(4200)
    assert stderr == pytest.approx(np.std([3910, 4220, 4470], ddof=1) / math.sqrt(3))
    assert tuple(map(float, mean_stderr([None, 2.0, 4.0]))) == (3.0, pytest.approx(1.0))
    mean, stderr = mean_stderr([5.0])  # one value: no standard error
    assert mean == 5.0 and np.isnan(stderr)
    assert all(np.isnan(v) for v in mean_stderr([None, None]))  # no value: no mean
    # along an axis, as plot.py averages curves over seeds: a diverged (NaN) run is left out
    mean, stderr = mean_stderr([[1.0, 2.0], [3.0, 4.0], [float("nan"), 6.0]])
    assert list(mean) == [2.0, 4.0]
    assert stderr[0] == pytest.approx(np.std([1, 3], ddof=1) / np.sqrt(2))
    assert stderr[1] == pytest.approx(np.std([2, 4, 6], ddof=1) / np.sqrt(3))


def test_final_info_has_the_ai_scientist_shape_with_rounded_headline_metrics():
    runs = [{"task": "x_div_y", "step_val_acc_99": 4940, "grokked": 1, "final_val_acc": 0.99123456, "other": 1},
            {"task": "x_div_y", "step_val_acc_99": 4691, "grokked": 0, "final_val_acc": None, "other": 2}]
    info = final_info(runs, {"step_val_acc_99": 0, "grokked": 3, "final_val_acc": 4}, plain=True)
    assert list(info) == ["x_div_y"]
    assert info["x_div_y"]["means"] == {"step_val_acc_99_mean": 4816, "grokked_mean": 0.5, "final_val_acc_mean": 0.9912}
    assert info["x_div_y"]["stderrs"] == {"step_val_acc_99_stderr": 124, "grokked_stderr": 0.5,
                                          "final_val_acc_stderr": None}
    assert info["x_div_y"]["final_info_dict"] == {"step_val_acc_99": [4940, 4691], "grokked": [1, 0],
                                                  "final_val_acc": [0.99123456, None]}
    assert isinstance(info["x_div_y"]["means"]["step_val_acc_99_mean"], int)


def test_grokking_that_holds_the_peak_and_instability_after_memorization():
    steps = np.arange(10, 130, 10)  # 12 evaluations
    train = np.array([0.2, 1, 1, 0.9, 1, 0.95, 0.97, 1, 1, 1, 1, 1])
    val = np.array([0.0, 0.2, 0.995, 0.5, 0.93, 0.995, 0.999, 0.999, 1, 1, 0.98, 1])
    m = ex.run_metrics(steps, {**curve(train[:5], val[:5]), "train_acc": train, "val_acc": val,
                               "train_loss": np.ones(12), "val_loss": np.ones(12), "weight_norm": np.ones(12)},
                       ex.Config(num_steps=120, hold_evals=3))
    assert m["step_val_acc_99"] == 30  # the first crossing is a spike: it lasts one evaluation
    assert m["step_val_acc_99_held"] == 60 and m["grokked_held"] == 1  # 60, 70, 80 (and 90, 100) above
    assert m["peak_val_acc"] == 1.0
    # memorized at 20; after it 10 evaluations, 3 at or below 99% (40, 60, 70) in 2 falls (at 40 and 60),
    # over the 100 steps from memorization to the budget
    assert m["train_below_99_share"] == pytest.approx(0.3) and m["train_drops_per_1k_steps"] == pytest.approx(20)
    assert m["step_fourier_50"] is None  # no Fourier curve: the measure does not apply
    longer = ex.run_metrics(steps, {**curve(train[:5], val[:5]), "train_acc": train, "val_acc": val,
                                    "train_loss": np.ones(12), "val_loss": np.ones(12), "weight_norm": np.ones(12)},
                            ex.Config(num_steps=120, hold_evals=6))
    assert longer["step_val_acc_99_held"] == 120 and longer["grokked_held"] == 0  # 5 in a row at most: censored


def test_a_run_that_never_memorized_has_no_instability_and_holds_nothing():
    m = ex.run_metrics(STEPS, curve([0.5] * 5, [0.1, 0.3, 0.2, 0.1, 0.1]), ex.Config(num_steps=60, hold_evals=1))
    assert m["peak_val_acc"] == 0.3 and m["step_val_acc_99_held"] == 60 and m["grokked_held"] == 0
    assert m["train_drops_per_1k_steps"] is None and m["train_below_99_share"] is None
    last = ex.run_metrics(STEPS, curve([0.5] * 4 + [1], [0.1] * 4 + [1]), ex.Config(num_steps=50, hold_evals=1))
    assert last["train_below_99_share"] is None  # memorized at the last evaluation: nothing after it
    assert last["step_val_acc_99_held"] == 50 and last["grokked_held"] == 1  # one evaluation is the whole window
