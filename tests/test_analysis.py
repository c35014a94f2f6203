"""The statistics plot.py reads studies with: censoring at the budget, regimes, paired tests."""

import itertools

import numpy as np
import pytest
from scipy import stats

import analysis

BUDGET = 3000


def record(task="x_div_y", layers=1, d_model=64, heads=2, seed=0, setting="", grok=None, memorize=500,
           val_50=None, val_90=None, **extra):
    """A runs.json record; grok/memorize None: never within the budget."""
    never = lambda step: BUDGET if step is None else step
    return {"task": task, "layers": layers, "d_model": d_model, "heads": heads, "seed": seed, "setting": setting,
            "architecture": f"L{layers}_D{d_model}_H{heads}", "parameter_count": 1000 * layers * d_model,
            "step_train_acc_99": never(memorize), "memorized": int(memorize is not None),
            "step_val_acc_99": never(grok), "grokked": int(grok is not None), "diverged": 0,
            "step_val_acc_50": never(val_50 if val_50 is not None else grok),
            "step_val_acc_90": never(val_90 if val_90 is not None else grok), **extra}


def test_the_restricted_mean_is_the_area_under_scipys_kaplan_meier_curve():
    """Censoring only at the budget: the area under the Kaplan-Meier curve up to the budget is the
    mean of min(step, budget), never-grokked runs counted at the budget (the committed 72-run
    study's x - y 4x64 with 4 heads: 3000, 3000, 1550 -> 2517, not the 1550 of the one that grokked)."""
    steps, reached = np.array([3000.0, 3000.0, 1550.0]), np.array([False, False, True])
    summary = analysis.time_to_event(steps, reached, BUDGET)
    assert summary["restricted_mean"] == pytest.approx(2516.67, abs=0.01) and summary["reached"] == 1
    assert summary["median"] is None  # fewer than half got there
    rng = np.random.default_rng(0)
    for _ in range(5):
        steps = rng.integers(100, 4000, 9).astype(float)
        reached = steps < BUDGET
        steps = np.minimum(steps, BUDGET)
        fit = stats.ecdf(stats.CensoredData(uncensored=steps[reached], right=steps[~reached])).sf
        x = np.concatenate([[0.0], fit.quantiles, [BUDGET]])
        y = np.concatenate([[1.0], fit.probabilities])
        area = float(np.sum(np.diff(np.minimum(x, BUDGET)) * y))
        assert analysis.time_to_event(steps, reached, BUDGET)["restricted_mean"] == pytest.approx(area)


def test_the_median_and_the_reached_curve():
    steps, reached = np.array([100.0, 200, 300, 3000]), np.array([True, True, True, False])
    assert analysis.time_to_event(steps, reached, BUDGET)["median"] == 200
    x, fraction = analysis.reached_curve(steps, reached, BUDGET)
    assert fraction[0] == 0 and fraction[-1] == pytest.approx(0.75) and x[-1] == BUDGET


def test_regimes():
    assert analysis.regime(record(grok=900)) == "groks"
    assert analysis.regime(record(grok=None, peak_val_acc=0.5)) == "memorizes only"
    assert analysis.regime(record(grok=None, peak_val_acc=0.95)) == "near-grokking"  # past 90%, never 99%
    assert analysis.regime(record(grok=None, peak_val_acc=0.9)) == "memorizes only"  # "past" is strictly above
    assert analysis.regime(record(grok=None)) == "memorizes only"  # a study made before the peak was recorded
    assert analysis.regime(record(grok=None, memorize=None, peak_val_acc=0.95)) == "fails to fit"
    assert analysis.regime(record(grok=None, diverged=1)) == "diverged"


def test_the_cluster_test_counts_each_task_and_seed_once():
    """Four clusters (task, seed) of five pairs each, a first in all 20: the pair-level sign test
    says p = 2 * 0.5^20, but the clusters are four observations: the sign-flip test of their scores
    (+5 each) finds the observed sum 20 in 2 of the 2^4 sign patterns (all +, all -): p = 1/8."""
    clusters = [(task, seed) for task in ("x_div_y", "x_minus_y") for seed in (0, 1) for _ in range(5)]
    differences = -np.ones(20)
    assert analysis.sign_test(differences)["p"] == pytest.approx(2 * 0.5 ** 20)
    c = analysis.cluster_test(clusters, differences)
    assert (c["clusters"], c["cluster_wins"], c["cluster_losses"], c["cluster_ties"]) == (4, 4, 0, 0)
    assert c["cluster_p"] == pytest.approx(1 / 8)
    # One pair per cluster: the cluster test is the sign test. 11-1 of 12: |2B - 12| >= 10 for B in
    # {0, 1, 11, 12}: (1 + 12 + 12 + 1) / 4096 of the sign patterns.
    single = [(f"task{k}", 0) for k in range(12)]
    differences = np.array([-1.0] * 11 + [1.0])
    assert analysis.cluster_test(single, differences)["cluster_p"] == pytest.approx(26 / 4096)
    assert analysis.sign_test(differences)["p"] == pytest.approx(26 / 4096)
    # Clusters whose pairs cancel are ties, and with no cluster left the test has nothing to say.
    tied = analysis.cluster_test([("t", 0), ("t", 0)], np.array([-3.0, 2.0]))
    assert (tied["cluster_ties"], tied["cluster_p"]) == (1, 1.0)
    assert analysis.cluster_test([("t", 0), ("t", 1)], np.array([-3.0, 0.0]))["cluster_p"] == 1.0  # one cluster decides


def test_the_sign_flip_p_is_scipys_exact_permutation_test():
    """sign_flip_p builds the null distribution of the sum score by score; scipy enumerates the 2^n
    sign patterns: the same p wherever scipy's test is exact."""
    rng = np.random.default_rng(0)
    for n in (2, 5, 9, 12):
        scores = rng.integers(-3, 4, n)
        scores = scores[scores != 0]
        if len(scores) < 2:
            continue
        exact = stats.permutation_test((scores.astype(float),), lambda x, axis: np.sum(x, axis=axis),
                                       permutation_type="samples", n_resamples=2 ** n, alternative="two-sided").pvalue
        assert analysis.sign_flip_p(scores) == pytest.approx(min(exact, 1.0), abs=1e-12), scores


def test_settings_are_compared_one_architecture_at_a_time_and_their_interaction_with_depth():
    """Two settings of lr: at lr2 the 1-layer run groks 500 steps before the 4-layer one in every
    (task, seed), at lr8 100 steps after it; the 4-layer runs grok at 1500 under both."""
    records = []
    for task, seed in itertools.product(("x_div_y", "x_minus_y"), range(3)):
        for setting, one_layer in (("lr2", 1000), ("lr8", 1600)):
            records.append(record(task=task, seed=seed, layers=1, setting=setting, grok=one_layer))
            records.append(record(task=task, seed=seed, layers=4, setting=setting, grok=1500))
    comparisons = analysis.compare_architectures(records, architectures(records), BUDGET)
    by = {(c["family"], c["scope"]): c for c in comparisons if c["event"] == "step_val_acc_99"}
    assert (by["depth", "setting lr2"]["wins"], by["depth", "setting lr8"]["losses"]) == (6, 6)
    one_layer = by["setting", "architecture L1_D64_H2"]  # lr2 first, every pair
    assert (one_layer["a"], one_layer["b"], one_layer["wins"], one_layer["clusters"]) == ("lr2", "lr8", 6, 6)
    assert by["setting", "architecture L4_D64_H2"]["ties"] == 6
    depth = next(f for f in analysis.comparison_families(architectures(records)) if f["family"] == "depth")
    change = analysis.interaction(records, "step_val_acc_99", BUDGET, depth, "lr2", "lr8")
    assert (change["pairs"], change["wins"], change["median_difference"]) == (6, 6, -600)  # -500 - (+100)
    assert (change["clusters"], change["cluster_wins"], change["cluster_p"]) == (6, 6, pytest.approx(1 / 32))


def test_pooled_pairs_of_one_split_count_as_one_cluster():
    """Depth at three widths: the three pairs of a (task, seed) share split and batches. 1 layer
    first in all 3 pairs of 4 seeds, in none of 2 others: pairs 12-6 (p = 0.24), clusters 4-2."""
    records = []
    for seed, d_model in itertools.product(range(6), (32, 64, 128)):
        first = seed < 4
        records.append(record(layers=1, d_model=d_model, seed=seed, grok=1000 if first else 1500))
        records.append(record(layers=4, d_model=d_model, seed=seed, grok=1500 if first else 1000))
    c = next(c for c in analysis.compare_architectures(records, architectures(records), BUDGET)
             if (c["family"], c["event"], c["scope"]) == ("depth", "step_val_acc_99", "all"))
    assert (c["pairs"], c["wins"], c["losses"]) == (18, 12, 6)
    assert (c["clusters"], c["cluster_wins"], c["cluster_losses"]) == (6, 4, 2)
    assert c["p"] == pytest.approx(stats.binomtest(12, 18).pvalue)
    assert c["cluster_p"] == pytest.approx(44 / 64)  # sums of +-3 over 6 clusters with |sum| >= 6: 1 - 20/64
    assert c["cluster_q"] >= c["cluster_p"]


def test_the_sign_test_counts_ties_apart():
    result = analysis.sign_test(np.array([-5.0, -3, -1, -2, -7, -9, 0, 0]))
    assert (result["pairs"], result["wins"], result["losses"], result["ties"]) == (8, 6, 0, 2)
    assert result["p"] == pytest.approx(1 / 32)  # 6 of 6: 2 * 0.5^6
    assert analysis.sign_test(np.array([0.0, 0.0]))["p"] == 1.0


def test_depth_is_compared_by_pairs_that_share_seed_task_and_width():
    records = [record(layers=n, seed=s, task=t, grok=1000 + 100 * n + s)
               for n, s, t in itertools.product((1, 4), range(6), ("x_div_y", "x_minus_y"))]
    records.append(record(layers=1, seed=99, grok=10))  # no 4-layer partner: not a pair
    comparisons = analysis.compare_architectures(records, architectures(records), BUDGET)
    pooled = next(c for c in comparisons if c["family"] == "depth" and c["scope"] == "all"
                  and c["event"] == "step_val_acc_99")
    assert (pooled["a"], pooled["b"], pooled["pairs"], pooled["wins"], pooled["losses"]) == ("1 layer", "4 layers", 12, 12, 0)
    assert pooled["p"] == pytest.approx(2 * 0.5 ** 12)
    per_task = [c for c in comparisons if c["scope"] == "task x_minus_y" and c["event"] == "step_val_acc_99"]
    assert per_task[0]["pairs"] == 6 and per_task[0]["p"] == pytest.approx(1 / 32)


def test_a_comparison_counts_the_pairs_with_a_run_that_never_got_there():
    """4 layers never groks with seeds 0 and 1, 1 layer never with seed 1: 2 of the 4 pairs hold a
    censored run (their difference is a bound), and seed 1's pair, both never, is a tie."""
    grok = {(1, 0): 900, (1, 1): None, (1, 2): 800, (1, 3): 700, (4, 0): None, (4, 1): None, (4, 2): 1200, (4, 3): 600}
    records = [record(layers=n, seed=s, grok=step) for (n, s), step in grok.items()]
    c = next(c for c in analysis.compare_architectures(records, architectures(records), BUDGET)
             if c["event"] == "step_val_acc_99")
    assert (c["pairs"], c["wins"], c["losses"], c["ties"], c["censored"]) == (4, 2, 1, 1, 2)
    memorize = next(c for c in analysis.compare_architectures(records, architectures(records), BUDGET)
                    if c["event"] == "step_train_acc_99")
    assert memorize["censored"] == 0


def test_a_per_run_value_is_compared_by_pairs_and_runs_without_it_are_left_out():
    """fourier_lead by depth: seed 3's 4-layer run never grokked (no lead), so its pair is left
    out; of the other three, 1 layer has the shorter lead in two, and seed 2's pair ties."""
    lead = {(1, 0): 100, (1, 1): -50, (1, 2): 200, (1, 3): 0, (4, 0): 400, (4, 1): 300, (4, 2): 200, (4, 3): None}
    records = [record(layers=n, seed=s, fourier_lead=value) for (n, s), value in lead.items()]
    depth = next(f for f in analysis.comparison_families(architectures(records)) if f["family"] == "depth")
    c = analysis.paired_values(records, "fourier_lead", depth["is_a"], depth["is_b"], depth["pair_key"])
    assert (c["pairs"], c["wins"], c["losses"], c["ties"], c["left_out"]) == (3, 2, 0, 1, 1)
    assert c["p"] == pytest.approx(0.5) and c["median_difference"] == -300


def test_a_measure_no_pair_has_is_not_compared():
    """No run memorized, so none has an instability measure: no comparison of it (the smoke study's
    short runs; a comparison of no pairs once broke the paired figure)."""
    records = [record(layers=n, seed=s, grok=None, memorize=None, train_below_99_share=None,
                      train_drops_per_1k_steps=None) for n in (1, 4) for s in range(3)]
    events = {c["event"] for c in analysis.compare_architectures(records, architectures(records), BUDGET)}
    assert "step_val_acc_99" in events and not events & set(analysis.MEASURES)


def test_a_comparison_that_turns_with_the_threshold_is_marked():
    """The deep model reaches 50% first in every pair but 99% last: threshold-sensitive."""
    records = []
    for seed in range(6):
        records.append(record(layers=1, seed=seed, grok=1000, val_50=800, val_90=900))
        records.append(record(layers=4, seed=seed, grok=1500, val_50=300, val_90=950))
    comparisons = analysis.compare_architectures(records, architectures(records), BUDGET)
    grokking = {c["event"]: c for c in comparisons if c["family"] == "depth" and c["event"] != "step_train_acc_99"}
    assert grokking["step_val_acc_99"]["wins"] == 6 and grokking["step_val_acc_50"]["losses"] == 6
    assert all(c["threshold_sensitive"] for c in grokking.values())
    steady = [record(layers=n, seed=s, grok=1000 * n, val_50=500 * n, val_90=700 * n) for n in (1, 4) for s in range(6)]
    assert not any(c.get("threshold_sensitive") for c in analysis.compare_architectures(steady, architectures(steady),
                                                                                        BUDGET))


def test_q_adjusts_every_comparison_of_a_study_for_the_others():
    """Benjamini-Hochberg: sorted p 0.01, 0.03, 0.04, 0.2 of four tests give q 0.04, 0.0533,
    0.0533, 0.2. In a study, a p of 1/32 (6 of 6 pairs) that is one of many tests of nothing is
    no longer significant once adjusted."""
    assert analysis.false_discovery_rate([0.04, 0.01, 0.2, 0.03]) == pytest.approx([0.16 / 3, 0.04, 0.2, 0.16 / 3])
    assert analysis.false_discovery_rate([]) == []
    records = []
    for seed in range(6):  # 1 layer first at 99% in every pair; at 50% and 90%, and in memorization, all tied
        records.append(record(layers=1, seed=seed, grok=1000, val_50=500, val_90=800))
        records.append(record(layers=4, seed=seed, grok=1500, val_50=500, val_90=800))
    for d, seed in itertools.product((32, 128), range(6)):  # width: all tied, 4 tests of nothing, p = 1
        records.append(record(d_model=d, seed=seed, grok=1000, val_50=500, val_90=800))
    comparisons = analysis.compare_architectures(records, architectures(records), BUDGET)
    for c in comparisons:
        assert c["p"] <= c["q"] <= 1
    grok = next(c for c in comparisons if (c["family"], c["event"]) == ("depth", "step_val_acc_99"))
    assert grok["p"] == pytest.approx(1 / 32) and grok["q"] == pytest.approx(len(comparisons) / 32)
    assert grok["q"] > analysis.SIGNIFICANCE


def test_heads_are_compared_at_equal_width_and_at_equal_head_size():
    records = [record(d_model=d, heads=h, seed=s, grok=1000 + h * 10 + d) for d, h in ((32, 2), (64, 2), (64, 4))
               for s in range(3)]
    families = {(c["family"], c["a"], c["b"]) for c in analysis.compare_architectures(records, architectures(records),
                                                                                       BUDGET)}
    assert ("heads at equal width", "2 heads", "4 heads") in families  # 64x2 vs 64x4
    assert ("heads at equal head size", "2 heads", "4 heads") in families  # 32x2 vs 64x4, 16 per head
    assert ("width", "d_model 32", "d_model 64") in families


def test_matched_pairs_are_deep_narrow_against_wide_shallow_within_ten_percent():
    archs = [{"name": f"L{n}_D{d}_H{h}", "layers": n, "d_model": d, "heads": h, "parameter_count": p}
             for n, d, p in ((4, 64, 213_025), (1, 128, 224_353), (2, 128, 422_625), (1, 256, 841_825),
                             (4, 128, 819_169)) for h in (4, 8)]
    pairs = [(a["layers"], a["d_model"], b["layers"], b["d_model"]) for a, b in analysis.matched_pairs(archs)]
    assert pairs == [(4, 64, 1, 128), (4, 128, 1, 256)]


def architectures(records):
    seen = {r["architecture"]: r for r in records}
    return [{"name": n, "layers": r["layers"], "d_model": r["d_model"], "heads": r["heads"],
             "parameter_count": r["parameter_count"], "bucket": "all"} for n, r in seen.items()]
