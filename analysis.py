"""The statistics plot.py reads studies with, and the mean and standard error final_info.json uses:
numpy and scipy only (plot.py runs where torch is not installed).

A run's memorization and grokking are events in time. A run that never reaches a threshold within
its budget (num_steps) is censored there: not fast, not slow, not missing. Every run of a study
has the same budget and is followed to its end, so censoring happens only at the budget; then
- the Kaplan-Meier estimate (scipy.stats.ecdf on CensoredData) is the empirical distribution of
  the steps, with the runs that never got there at "beyond the budget";
- the restricted mean time to the event up to the budget, the area under that curve, is the plain
  mean of min(step, budget), and its standard error the usual one (sample std / sqrt(n));
- the median is the step by which half the runs got there, or none when fewer than half did.
Runs with the same seed share their split and their batches across architectures, so two
architectures are compared by pairs (same task, seed, setting and other dimensions) with an exact
two-sided sign test: wins, losses, ties (both never, or the same step) and p. A study makes many
such tests, so each also gets q, its p adjusted for all of them (Benjamini-Hochberg), and
significance means q < SIGNIFICANCE.
"""

from __future__ import annotations

import itertools
import warnings
from typing import Callable

import numpy as np
from scipy import stats

# Events a run's record times (runs.json): key -> (short name in summary.json, what it means, the
# 0/1 field that says whether the run got there; without one, it got there when its step is below
# the budget).
EVENTS = {
    "step_train_acc_99": ("memorize", "memorization (train > 99%)", "memorized"),
    "step_val_acc_50": ("val_50", "validation > 50%", None),
    "step_val_acc_90": ("val_90", "validation > 90%", None),
    "step_val_acc_99": ("grok", "grokking (validation > 99%)", "grokked"),
    "step_val_acc_99_held": ("grok_held", "grokking that holds (validation > 99%, hold_evals in a row)", "grokked_held"),
    "step_fourier_50": ("fourier_50", "Fourier share of the embeddings > 0.5", None),
}
GROKKING_THRESHOLDS = ("step_val_acc_50", "step_val_acc_90", "step_val_acc_99")
# Per-run values compared by pairs like the events (the smaller value "wins"): key -> (short name, meaning).
MEASURES = {
    "train_drops_per_1k_steps": ("drops_per_1k", "training-accuracy drops to <= 99% per 1,000 steps after memorization"),
    "train_below_99_share": ("below_99_share", "share of evaluations after memorization with training accuracy <= 99%"),
}
COMPARED = {key: (name, label) for key, (name, label, *_) in {**EVENTS, **MEASURES}.items()}  # every event and
#                                                     measure compared by pairs -> (short name, meaning)
REGIMES = ("groks", "near-grokking", "memorizes only", "fails to fit", "diverged")
NEAR_GROKKING = 0.9  # a run that memorized and whose validation accuracy passed this, but never 99%
FORMAT_VERSION = 1  # the layout of a study folder's files: runner/ writes it, plotting/ reads it
SIGNIFICANCE = 0.05  # a paired comparison is significant when its q (p adjusted for the study's tests) is below this


def mean_stderr(values, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error (sample std, ddof=1, / sqrt(n)) along `axis` over the finite values
    (None counts as missing): NaN where none is finite (mean) or fewer than two are (stderr).
    The one definition that experiment.py's outputs and plot.py's figures use."""
    values = np.asarray([np.nan if v is None else v for v in values] if isinstance(values, list) else values,
                        dtype=float)
    finite = np.isfinite(values)
    n = finite.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(finite, values, 0.0).sum(axis=axis) / n
        squares = (np.where(finite, values - np.expand_dims(mean, axis), 0.0) ** 2).sum(axis=axis)
        stderr = np.where(n > 1, np.sqrt(squares / np.maximum(n - 1, 1) / np.maximum(n, 1)), np.nan)
    return mean, stderr


# ======================================================================================
# One run's curves: grokking that holds, the peak, instability after memorization
# ======================================================================================
# experiment.py's run_metrics records these per run; plot.py computes them from the saved curves
# of a study made before they were recorded, with the values they were added with:
MEASURES_AS_ADDED = dict(threshold=0.99, hold_evals=10, fourier_bar=0.5)  # experiment.py's THRESHOLD,
#                                                   Config.hold_evals and FOURIER_BAR at the time


def add_curve_measures(records: list[dict], curves: dict[str, np.ndarray], budget: int) -> None:
    """Give the runs of a study made before curve_measures' keys were recorded those keys, computed
    from their saved curves (name -> (runs, evals), "step" -> (evals,)) with MEASURES_AS_ADDED; a
    run that has them keeps its own."""
    for i, record in enumerate(records):
        if "peak_val_acc" not in record:
            row = {name: values[i] for name, values in curves.items() if name != "step"}
            for key, value in curve_measures(curves["step"], row, budget, **MEASURES_AS_ADDED).items():
                record.setdefault(key, value)


def held_index(accuracy: np.ndarray, threshold: float, window: int) -> int | None:
    """The first evaluation from which accuracy stays > threshold at `window` consecutive
    evaluations (that one included), or None: a crossing too close to the end to show `window`
    evaluations is censored, not counted."""
    above = np.asarray(accuracy) > threshold
    if not 1 <= window <= len(above):
        return None
    held = np.flatnonzero(np.lib.stride_tricks.sliding_window_view(above, window).all(axis=1))
    return int(held[0]) if len(held) else None


def curve_measures(steps: np.ndarray, curves: dict[str, np.ndarray], budget: int, threshold: float,
                   hold_evals: int, fourier_bar: float) -> dict:
    """Per run, from its curves (name -> (evals,)):
    - peak_val_acc: the highest validation accuracy at any evaluation (None when none is finite);
    - step_val_acc_99_held, grokked_held: grokking that holds: the step of held_index with
      hold_evals (the budget when none), and whether there is one;
    - after memorization (the first evaluation with training accuracy > threshold), over the
      evaluations that follow it: train_drops_per_1k_steps, the falls of training accuracy to
      <= threshold per 1,000 steps, and train_below_99_share, the share of those evaluations with
      training accuracy <= threshold (None for both when the run never memorized or memorized
      at its last evaluation): how unstable optimization is once the training set is fitted;
    - step_fourier_50 (for fourier_bar 0.5): the first step at which the embeddings' top-5
      Fourier share exceeds fourier_bar (an absolute bar, beside the relative half-rise), the
      budget when never, None where the measure does not apply (the permutation task, or no such
      curve)."""
    tag = round(100 * threshold)
    train, val = np.asarray(curves["train_acc"]), np.asarray(curves["val_acc"])
    finite = val[np.isfinite(val)]
    held = held_index(val, threshold, hold_evals)
    measures = {"peak_val_acc": float(finite.max()) if len(finite) else None,
                f"step_val_acc_{tag}_held": budget if held is None else int(steps[held]),
                "grokked_held": int(held is not None),
                "train_drops_per_1k_steps": None, f"train_below_{tag}_share": None}
    fitted = np.flatnonzero(train > threshold)
    if len(fitted) and fitted[0] + 1 < len(train):
        first = fitted[0]
        above = train[first:] > threshold  # the memorization evaluation is above
        falls = int((above[:-1] & ~above[1:]).sum())
        measures["train_drops_per_1k_steps"] = 1000 * falls / (budget - int(steps[first]))
        measures[f"train_below_{tag}_share"] = float((~above[1:]).mean())
    fourier = curves.get("embedding_fourier_top5")
    name = f"step_fourier_{round(100 * fourier_bar)}"
    measures[name] = None
    if fourier is not None and np.isfinite(fourier).all():
        passed = np.flatnonzero(np.asarray(fourier) > fourier_bar)
        measures[name] = int(steps[passed[0]]) if len(passed) else budget
    return measures


# ======================================================================================
# One run: regime and event times
# ======================================================================================


def regime(record: dict) -> str:
    """What became of a run: it diverged (a NaN or infinite loss), grokked (validation > 99%),
    nearly grokked (memorized, validation passed NEAR_GROKKING at its peak but never 99%),
    memorized only (training > 99%, validation never past NEAR_GROKKING), or failed to fit
    (training never > 99%, whatever its validation accuracy)."""
    if record.get("diverged"):
        return "diverged"
    if record["grokked"]:
        return "groks"
    if not record["memorized"]:
        return "fails to fit"
    return "near-grokking" if (record.get("peak_val_acc") or 0) > NEAR_GROKKING else "memorizes only"


def regime_key(name: str) -> str:
    """A regime's key in summary rows: near-grokking -> near_grokking, memorizes only -> memorizes_only."""
    return name.replace(" ", "_").replace("-", "_")


def event_time(record: dict, event: str, budget: int) -> tuple[float, bool] | None:
    """(step, reached) of one run for an event, the step capped at the budget; None when the
    record does not have the event (a study made before it was recorded)."""
    value = record.get(event)
    if value is None:
        return None
    flag = EVENTS[event][2]
    reached = bool(record[flag]) if flag in record else value < budget
    return float(min(value, budget)), reached


def event_times(records: list[dict], event: str, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """(steps, reached) of the runs that have the event."""
    pairs = [t for t in (event_time(r, event, budget) for r in records) if t is not None]
    return np.array([p[0] for p in pairs], dtype=float), np.array([p[1] for p in pairs], dtype=bool)


# ======================================================================================
# Several runs of one architecture: time to event, censored at the budget
# ======================================================================================


def reached_curve(steps: np.ndarray, reached: np.ndarray, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """The Kaplan-Meier estimate of the fraction of runs that reached the event by each step,
    as a step function from 0 to the budget: (steps, fraction)."""
    if len(steps) == 0:
        return np.array([0.0, budget]), np.array([np.nan, np.nan])
    fit = stats.ecdf(stats.CensoredData(uncensored=steps[reached], right=steps[~reached])).sf
    x = np.concatenate([[0.0], fit.quantiles, [budget]])
    y = 1 - np.concatenate([[1.0], fit.probabilities, [fit.probabilities[-1]]])
    return x, y


def time_to_event(steps: np.ndarray, reached: np.ndarray, budget: int) -> dict:
    """How many reached the event, the restricted mean time up to the budget with its standard
    error, and the median: the first step at which the Kaplan-Meier curve says half the runs
    got there (None when fewer than half did)."""
    mean, stderr = mean_stderr(np.minimum(steps, budget))
    median = None
    if reached.any():
        fit = stats.ecdf(stats.CensoredData(uncensored=steps[reached], right=steps[~reached])).sf
        half = np.flatnonzero(fit.probabilities <= 0.5)
        median = float(fit.quantiles[half[0]]) if len(half) else None
    return {"reached": int(reached.sum()), "restricted_mean": float(mean), "restricted_mean_stderr": float(stderr),
            "median": median}


def summary_row(records: list[dict], budget: int) -> dict:
    """The runs of one task and architecture (and setting): how many, regime counts, for every
    event recorded <name>_reached, restricted_mean_<name> (with _stderr) and median_<name>, the
    mean drops after grokking, and the mean (with _stderr) of peak_val_acc and of each measure in
    MEASURES."""
    row = {"n": len(records), **{regime_key(name): sum(regime(r) == name for r in records) for name in REGIMES}}
    for event, (name, _, _) in EVENTS.items():
        steps, reached = event_times(records, event, budget)
        if len(steps):
            t = time_to_event(steps, reached, budget)
            row.update({f"{name}_reached": t["reached"], f"restricted_mean_{name}": t["restricted_mean"],
                        f"restricted_mean_{name}_stderr": t["restricted_mean_stderr"], f"median_{name}": t["median"]})
    drops = [(r["val_only_drops_after_grok"], r["joint_drops_after_grok"]) for r in records
             if r.get("val_only_drops_after_grok") is not None]
    if drops:
        row["val_only_drops_after_grok"], row["joint_drops_after_grok"] = (float(np.mean(d)) for d in zip(*drops))
    for key in ("peak_val_acc", *MEASURES):  # mean and standard error over the runs that have a value
        if any(r.get(key) is not None for r in records):
            mean, stderr = mean_stderr([r.get(key) for r in records])
            row[key], row[f"{key}_stderr"] = float(mean), float(stderr)
    return row


# ======================================================================================
# Two architectures: paired comparisons
# ======================================================================================


def sign_test(differences: np.ndarray) -> dict:
    """Exact two-sided sign test of paired differences a - b (negative: a got there first);
    ties (0: the same step, or both never) are counted and left out of the test."""
    wins, losses = int((differences < 0).sum()), int((differences > 0).sum())
    p = stats.binomtest(wins, wins + losses, 0.5).pvalue if wins + losses else 1.0
    return {"pairs": len(differences), "wins": wins, "losses": losses, "ties": len(differences) - wins - losses,
            "p": float(p), "median_difference": float(np.median(differences)) if len(differences) else None}


def cluster(record: dict) -> tuple:
    """The cluster a run's pairs belong to: its task and seed. The seed alone fixes a run's split and
    batch stream, so every pair of one task and seed shares them, across widths, heads and settings
    (a cluster is one observation, not as many as it holds pairs)."""
    return record["task"], record["seed"]


def cluster_test(clusters: list[tuple], differences: np.ndarray) -> dict:
    """The paired comparison counted per cluster: each cluster's score is its pairs' wins - losses
    (a win: a's difference < 0); clusters with a positive score are cluster_wins, negative
    cluster_losses, zero cluster_ties; cluster_p is the exact two-sided sign-flip test of the sum
    of the scores (sign_flip_p)."""
    scores: dict[tuple, int] = {}
    for c, d in zip(clusters, differences):
        scores[c] = scores.get(c, 0) + int(d < 0) - int(d > 0)
    values = np.array(list(scores.values()), dtype=int)
    return {"clusters": len(values), "cluster_wins": int((values > 0).sum()), "cluster_losses": int((values < 0).sum()),
            "cluster_ties": int((values == 0).sum()), "cluster_p": sign_flip_p(values)}


def sign_flip_p(scores: np.ndarray) -> float:
    """Two-sided p of the sum of integer scores when, under no difference, each score is as likely
    negated: the share of the 2^n sign patterns whose sum is at least as far from 0 as the one
    observed. Exact for any n: the distribution of the sum is built score by score (a convolution
    of two-point distributions), where enumerating the patterns, as scipy.stats.permutation_test
    does (the test checks the two agree), takes 2^n steps (a 540-run study has 20 clusters)."""
    scores = np.asarray(scores, dtype=int)
    total = int(np.abs(scores).sum())
    distribution = np.zeros(2 * total + 1)  # index: sum + total
    distribution[total] = 1.0
    for score in np.abs(scores):  # the support stays within +-total: no wrap-around
        distribution = 0.5 * (np.roll(distribution, score) + np.roll(distribution, -score))
    sums = np.arange(-total, total + 1)
    return float(min(distribution[np.abs(sums) >= abs(int(scores.sum()))].sum(), 1.0))


def pair_differences(records: list[dict], event: str, budget: int, is_a: Callable, is_b: Callable,
                     pair_key: Callable) -> list[tuple]:
    """(pair key, step of a - step of b, whether either never got there) for every pair of runs,
    one of a and one of b, with equal pair_key(record). A run that never got there counts at the
    budget, so a difference with it is a bound."""
    a, b = pair_sides(records, lambda r: event_time(r, event, budget), is_a, is_b, pair_key)
    keys = sorted((k for k in set(a) & set(b) if a[k] is not None and b[k] is not None), key=repr)
    return [(k, a[k][0] - b[k][0], not (a[k][1] and b[k][1])) for k in keys]


def pair_sides(records: list[dict], value: Callable, is_a: Callable, is_b: Callable, pair_key: Callable) -> tuple[dict, dict]:
    """value(record) of a's runs and of b's runs, each keyed by pair_key(record)."""
    sides = ({}, {})
    for r in records:
        for side, belongs in zip(sides, (is_a, is_b)):
            if belongs(r):
                side[pair_key(r)] = value(r)
    return sides


def paired(records: list[dict], event: str, budget: int, is_a: Callable, is_b: Callable,
           pair_key: Callable) -> dict | None:
    """Sign test of a against b for one event over the pairs pair_differences finds, and, for
    reference, the unpaired log-rank test of the two sides' runs, and the number of pairs
    with a run that never got there (its difference is a bound); None without a pair."""
    pairs = pair_differences(records, event, budget, is_a, is_b, pair_key)
    if not pairs:
        return None
    differences = np.array([d for _, d, _ in pairs])
    result = sign_test(differences)
    result["censored"] = sum(bound for _, _, bound in pairs)  # pairs with a run that never got there
    result.update(cluster_test(pair_clusters(records, pair_key, [k for k, _, _ in pairs]), differences))
    a, b = (event_times([r for r in records if belongs(r)], event, budget) for belongs in (is_a, is_b))
    try:  # unpaired, for reference: does the whole distribution differ?
        with warnings.catch_warnings():  # no event on either side: p is NaN, reported as None
            warnings.simplefilter("ignore", RuntimeWarning)
            result["logrank_p"] = float(stats.logrank(stats.CensoredData(uncensored=a[0][a[1]], right=a[0][~a[1]]),
                                                      stats.CensoredData(uncensored=b[0][b[1]], right=b[0][~b[1]])).pvalue)
    except (ValueError, ZeroDivisionError, FloatingPointError):
        result["logrank_p"] = None
    if result["logrank_p"] is not None and not np.isfinite(result["logrank_p"]):
        result["logrank_p"] = None
    return result


def paired_values(records: list[dict], key: str, is_a: Callable, is_b: Callable, pair_key: Callable) -> dict | None:
    """Sign test of a per-run value that is not a time to an event (e.g. fourier_lead) of a
    against b, over the pairs in which both runs have it ("wins": a's value is the smaller);
    left_out counts the pairs in which a run has none (a lead of a run that never grokked);
    None without a pair."""
    a, b = pair_sides(records, lambda r: r.get(key), is_a, is_b, pair_key)
    keys = set(a) & set(b)
    both = sorted((k for k in keys if a[k] is not None and b[k] is not None), key=repr)
    if not keys:
        return None
    differences = np.array([a[k] - b[k] for k in both], dtype=float)
    return {**sign_test(differences), "left_out": len(keys) - len(both),
            **cluster_test(pair_clusters(records, pair_key, both), differences)}


def interaction(records: list[dict], event: str, budget: int, family: dict, setting_a: str, setting_b: str) -> dict:
    """Whether a comparison's difference changes between two settings of the other axes: for each
    pair of the family (a run of a and one of b) at setting_a and the same pair (task, seed, other
    dimensions) at setting_b, the change (step of a - step of b at setting_a) - (the same at
    setting_b), steps capped at the budget. "wins": a is further ahead (or less behind) at
    setting_a; the sign test over these pairs, the cluster test over their (task, seed), and the
    pairs holding a run that never got there (censored: the change is then a bound)."""
    key = lambda r: family["pair_key"]({**r, "setting": ""})  # noqa: E731  (the pair, whatever its setting)
    found = {setting: {k: (d, bound) for k, d, bound in pair_differences(
        [r for r in records if r["setting"] == setting], event, budget, family["is_a"], family["is_b"], key)}
        for setting in (setting_a, setting_b)}
    clusters = {key(r): cluster(r) for r in records}
    both = sorted(set(found[setting_a]) & set(found[setting_b]), key=repr)
    changes = np.array([found[setting_a][k][0] - found[setting_b][k][0] for k in both])
    censored = sum(found[setting_a][k][1] or found[setting_b][k][1] for k in both)
    return {**sign_test(changes), "censored": censored, **cluster_test([clusters[k] for k in both], changes)}


def pair_clusters(records: list[dict], pair_key: Callable, keys: list) -> list[tuple]:
    """The cluster of each pair (by its key): the cluster its runs share."""
    of = {pair_key(r): cluster(r) for r in records}
    return [of[k] for k in keys]


def comparison_families(architectures: list[dict], settings: list[str] = ()) -> list[dict]:
    """The comparisons a grid holds, each as (family, a, b, is_a, is_b, pair_key): depth at equal
    width and heads; width at equal depth and heads; heads at equal width; heads at equal head size
    (width grows with heads); deep-narrow against wide-shallow at matched parameter count (within
    MATCH_RATIO, equal heads); and, where a study varied other axes (lr, weight decay, ...), each
    two of its settings, one architecture at a time."""
    values = lambda key: sorted({a[key] for a in architectures})
    common = lambda r: (r["task"], r["setting"], r["seed"])
    families = []
    for x, y in itertools.combinations(values("layers"), 2):
        families.append(("depth", f"{x} layer{'s' * (x > 1)}", f"{y} layers", lambda r, x=x: r["layers"] == x,
                         lambda r, y=y: r["layers"] == y, lambda r: (*common(r), r["d_model"], r["heads"])))
    for x, y in itertools.combinations(values("d_model"), 2):
        families.append(("width", f"d_model {x}", f"d_model {y}", lambda r, x=x: r["d_model"] == x,
                         lambda r, y=y: r["d_model"] == y, lambda r: (*common(r), r["layers"], r["heads"])))
    for x, y in itertools.combinations(values("heads"), 2):
        families.append(("heads at equal width", f"{x} heads", f"{y} heads", lambda r, x=x: r["heads"] == x,
                         lambda r, y=y: r["heads"] == y, lambda r: (*common(r), r["layers"], r["d_model"])))
        sizes = {a["d_model"] // a["heads"] for a in architectures if a["heads"] == x} & {
            a["d_model"] // a["heads"] for a in architectures if a["heads"] == y}
        if sizes:
            families.append(("heads at equal head size", f"{x} heads", f"{y} heads",
                             lambda r, x=x: r["heads"] == x, lambda r, y=y: r["heads"] == y,
                             lambda r: (*common(r), r["layers"], r["d_model"] // r["heads"])))
    for deep, wide in matched_pairs(architectures):
        shape = lambda a: f"{a['layers']}x{a['d_model']}"
        families.append(("deep-narrow vs wide-shallow", shape(deep), shape(wide),
                         lambda r, d=deep: (r["layers"], r["d_model"]) == (d["layers"], d["d_model"]),
                         lambda r, w=wide: (r["layers"], r["d_model"]) == (w["layers"], w["d_model"]),
                         lambda r: (*common(r), r["heads"])))
    for x, y in itertools.combinations(settings, 2):
        families.append(("setting", x, y, lambda r, x=x: r["setting"] == x, lambda r, y=y: r["setting"] == y,
                         lambda r: (r["task"], r["seed"], r["architecture"])))
    names = ("family", "a", "b", "is_a", "is_b", "pair_key")
    return [dict(zip(names, f)) for f in families]


MATCH_RATIO = 1.1  # two architectures of different depth are "matched" within 10% parameters


def matched_pairs(architectures: list[dict]) -> list[tuple[dict, dict]]:
    """(deep-narrow, wide-shallow) shapes with more layers on the narrower side and parameter
    counts within MATCH_RATIO of each other (one per shape pair; heads do not change the count)."""
    shapes = {(a["layers"], a["d_model"]): a for a in architectures}.values()
    return [(deep, wide) for deep in shapes for wide in shapes
            if deep["layers"] > wide["layers"] and deep["d_model"] < wide["d_model"]
            and max(deep["parameter_count"], wide["parameter_count"])
            <= MATCH_RATIO * min(deep["parameter_count"], wide["parameter_count"])]


def scopes(records: list[dict]) -> list[tuple[str, Callable]]:
    """All runs pooled, then each task and each setting of the other varied axes alone, and where
    settings vary among several architectures, each architecture alone (for the settings family)."""
    tasks = list(dict.fromkeys(r["task"] for r in records))
    settings = settings_of(records)
    archs = list(dict.fromkeys(r["architecture"] for r in records))
    out = [("all", lambda r: True)]
    if len(tasks) > 1:
        out += [(f"task {t}", lambda r, t=t: r["task"] == t) for t in tasks]
    if len(settings) > 1:
        out += [(f"setting {s}", lambda r, s=s: r["setting"] == s) for s in settings]
        if len(archs) > 1:
            out += [(f"architecture {a}", lambda r, a=a: r["architecture"] == a) for a in archs]
    return out


def settings_of(records: list[dict]) -> list[str]:
    """The settings of the other varied axes, in the order of the runs."""
    return list(dict.fromkeys(r["setting"] for r in records))


def compare_architectures(records: list[dict], architectures: list[dict], budget: int) -> list[dict]:
    """Every comparison of the grid, in every scope: at every event the records have (kind
    "event") and of every per-run measure in MEASURES they have (kind "value"); each with its
    pair-level sign test and its cluster-level test, q and cluster_q (their p adjusted for all of
    the study's comparisons, false_discovery_rate), and the grokking comparisons marked
    threshold_sensitive when their direction (which side wins more pairs) or their significance
    (q < SIGNIFICANCE) is not the same at every threshold."""
    out, by_thresholds = [], []
    settings = settings_of(records)
    for family in comparison_families(architectures, settings if len(settings) > 1 else ()):
        for scope, within in scopes(records):
            chosen = [r for r in records if within(r)]
            found = {}
            for event in EVENTS:
                result = paired(chosen, event, budget, family["is_a"], family["is_b"], family["pair_key"])
                if result is not None:
                    found[event] = {"family": family["family"], "a": family["a"], "b": family["b"], "scope": scope,
                                    "kind": "event", "event": event, "event_label": EVENTS[event][1], **result}
            for key, (_, label) in MEASURES.items():
                result = paired_values(chosen, key, family["is_a"], family["is_b"], family["pair_key"])
                if result is not None and result["pairs"]:  # pairs in which both runs have a value
                    found[key] = {"family": family["family"], "a": family["a"], "b": family["b"], "scope": scope,
                                  "kind": "value", "event": key, "event_label": label, **result}
            out += found.values()
            by_thresholds.append([found[e] for e in GROKKING_THRESHOLDS if e in found])
    for p_name, q_name in (("p", "q"), ("cluster_p", "cluster_q")):
        for c, q in zip(out, false_discovery_rate([c[p_name] for c in out])):
            c[q_name] = q
    for thresholds in by_thresholds:
        verdicts = {(np.sign(c["wins"] - c["losses"]), c["q"] < SIGNIFICANCE) for c in thresholds}
        for c in thresholds:
            c["threshold_sensitive"] = len(thresholds) > 1 and len(verdicts) > 1
    return out


def false_discovery_rate(p_values: list[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (q) of a study's comparisons, taken together: a study
    of a 3 x 3 grid makes some 80 sign tests, so about 4 would reach p < 0.05 by chance alone;
    those with q < 0.05 keep the expected share of false findings among them below 5%."""
    return [float(q) for q in stats.false_discovery_control(p_values)] if p_values else []


def architecture_order(a: dict) -> tuple:
    """The order architectures are listed in: from the smallest to the largest, fewer heads first."""
    return a["parameter_count"], a["heads"]


def summarize(records: list[dict], architectures: list[dict], budget: int, name: str = "") -> dict:
    """summary.json's content for one study: a row per task, setting and architecture, and every
    paired comparison; each entry names the study ("run")."""
    rows = []
    for task, setting in dict.fromkeys((r["task"], r["setting"]) for r in records):
        for a in sorted(architectures, key=architecture_order):
            chosen = [r for r in records if (r["task"], r["setting"], r["architecture"]) == (task, setting, a["name"])]
            if chosen:
                rows.append({"run": name, "task": task, "setting": setting, "architecture": a["name"],
                             "layers": a["layers"], "d_model": a["d_model"], "heads": a["heads"],
                             "parameter_count": chosen[0]["parameter_count"], "bucket": a["bucket"],
                             **summary_row(chosen, budget)})
    comparisons = [{"run": name, **c} for c in compare_architectures(records, architectures, budget)]
    return {"budget": budget, "rows": rows, "comparisons": comparisons}
