"""Metric extraction on hand-made curves, and the AI-Scientist aggregation."""

import math

import numpy as np
import pytest

import experiment as ex

STEPS = np.array([10, 20, 30, 40, 50])


def curve(train_acc, val_acc):
    c = np.zeros((len(STEPS), len(ex.CURVE_NAMES)))
    c[:, ex.CURVE_NAMES.index("train_acc")] = train_acc
    c[:, ex.CURVE_NAMES.index("val_acc")] = val_acc
    c[:, ex.CURVE_NAMES.index("train_loss")] = [5, 4, 3, 2, 1]
    c[:, ex.CURVE_NAMES.index("val_loss")] = [6, 5, 4, 3, 2]
    c[:, ex.CURVE_NAMES.index("weight_norm")] = [9, 8, 7, 6, 5]
    return c


def test_never_reached():
    m = ex.run_metrics(STEPS, curve([0.5] * 5, [0.1] * 5), num_steps=60)
    assert m["step_train_acc_99"] == m["step_val_acc_99"] == m["step_val_acc_99_sustained"] == 60
    assert (m["memorized"], m["grokked"], m["grok_delay"]) == (0, 0, 0)
    assert m["stable_fraction"] is None and m["min_val_acc_after_grok"] is None
    assert m["val_drops_after_grok"] is None
    assert (m["final_train_loss"], m["final_val_loss"], m["final_weight_norm"]) == (1, 2, 5)
    assert (m["final_train_acc"], m["final_val_acc"]) == (0.5, 0.1)


def test_reached_then_lost_then_regained():
    m = ex.run_metrics(STEPS, curve([0.2, 1, 1, 1, 1], [0.1, 0.995, 0.98, 0.995, 0.999]), num_steps=50)
    assert m["step_train_acc_99"] == 20 and m["step_val_acc_99"] == 20 and m["grok_delay"] == 0
    assert m["step_val_acc_99_sustained"] == 40
    assert m["stable_fraction"] == pytest.approx(2 / 3)
    assert m["min_val_acc_after_grok"] == 0.98
    assert m["val_drops_after_grok"] == 1


def test_reached_at_the_first_evaluation_and_kept():
    m = ex.run_metrics(STEPS, curve([1] * 5, [1] * 5), num_steps=50)
    assert m["step_train_acc_99"] == m["step_val_acc_99"] == m["step_val_acc_99_sustained"] == 10
    assert (m["stable_fraction"], m["min_val_acc_after_grok"], m["val_drops_after_grok"]) == (1.0, 1.0, 0)


def test_threshold_is_strict_and_grokking_at_the_last_evaluation_has_no_stability():
    m = ex.run_metrics(STEPS, curve([0.99, 0.99, 0.991, 1, 1], [0.99] * 4 + [1]), num_steps=50)
    assert m["step_train_acc_99"] == 30  # 0.99 itself is not "above 99%"
    assert m["step_val_acc_99"] == 50 and m["grokked"] == 1 and m["grok_delay"] == 20
    assert m["stable_fraction"] is None and m["val_drops_after_grok"] == 0


def test_lost_at_the_end_is_not_sustained():
    m = ex.run_metrics(STEPS, curve([1] * 5, [1, 1, 1, 1, 0.5]), num_steps=50)
    assert m["step_val_acc_99"] == 10 and m["step_val_acc_99_sustained"] == 50
    assert m["val_drops_after_grok"] == 1


def test_stderr_is_sample_std_over_sqrt_n():
    mean, stderr = ex.mean_and_stderr([3910, 4220, 4470])
    assert mean == pytest.approx(4200)
    assert stderr == pytest.approx(np.std([3910, 4220, 4470], ddof=1) / math.sqrt(3))
    assert ex.mean_and_stderr([None, 2.0, 4.0]) == (3.0, pytest.approx(1.0))
    assert ex.mean_and_stderr([5.0]) == (5.0, None)
    assert ex.mean_and_stderr([None, None]) == (None, None)


def test_aggregate_has_the_ai_scientist_shape():
    runs = [{"step_val_acc_99": 100, "grokked": 1}, {"step_val_acc_99": 300, "grokked": 0}]
    entry = ex.aggregate(runs, ["step_val_acc_99", "grokked"])
    assert entry["means"] == {"step_val_acc_99_mean": 200.0, "grokked_mean": 0.5}
    assert entry["stderrs"]["step_val_acc_99_stderr"] == pytest.approx(100.0)
    assert entry["final_info_dict"] == {"step_val_acc_99": [100, 300], "grokked": [1, 0]}
