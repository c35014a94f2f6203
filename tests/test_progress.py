"""Progress measures: the Fourier concentration of the element embeddings, norms by part, the logit
margin and softmax saturation; batched over a group's runs exactly as one run at a time."""

import dataclasses

import numpy as np
import pytest
import torch

import experiment as ex
from runner.forwards import member_models, stack_parameters
from runner.plan import Study

SCIENCE = ex.science()


def embedding_with_frequencies(table, frequencies, d=256, seed=0):
    """Token embeddings (vocab, d) whose element rows, in the task's cyclic order, are built from
    the given frequencies only (random cosines and sines), the other tokens random."""
    order = ex.cyclic_order(table)
    generator = torch.Generator().manual_seed(seed)
    e = torch.randn(table.vocab_size, d, dtype=torch.float64, generator=generator)
    position = torch.arange(len(order), dtype=torch.float64)[:, None] * 2 * torch.pi / len(order)
    rows = sum(torch.cos(f * position) * torch.randn(d, dtype=torch.float64, generator=generator)
               + torch.sin(f * position) * torch.randn(d, dtype=torch.float64, generator=generator) for f in frequencies)
    e[[ex.TOKEN_ELEMENT_0 + k for k in order]] = rows
    return e


@pytest.mark.parametrize("task", ["x_plus_y", "x_minus_y", "x_div_y"])
def test_an_embedding_of_k_frequencies_is_fully_concentrated_and_a_random_one_is_not(task):
    table = ex.build_table(task, ex.Config(prime=59))
    five = embedding_with_frequencies(table, [1, 4, 9, 13, 20])
    three = embedding_with_frequencies(table, [2, 7, 11])
    random = torch.randn(table.vocab_size, 256, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    measures = ex.fourier_measures(torch.stack([five, three, random]), [table] * 3)
    top, keys = measures["embedding_fourier_top5"], measures["embedding_key_frequencies"]
    assert top[0] == pytest.approx(1, abs=1e-12) and top[1] == pytest.approx(1, abs=1e-12)
    assert keys[0] <= 5 and keys[1] <= 3
    frequencies = len(ex.cyclic_order(table)) // 2  # conjugate pairs, the mean left out
    assert ex.FOURIER_TOP / frequencies < top[2] < 1.6 * ex.FOURIER_TOP / frequencies
    assert keys[2] > 0.8 * frequencies


@pytest.mark.parametrize("p", [23, 59, 97])
def test_the_discrete_log_order_is_a_bijection_onto_the_nonzero_elements(p):
    order = ex.cyclic_order(ex.build_table("x_div_y", ex.Config(prime=p)))
    assert sorted(order) == list(range(1, p))
    g = order[1]
    assert all(order[i + 1] == order[i] * g % p for i in range(p - 2))  # consecutive powers of one root


def test_the_permutation_task_has_no_fourier_measure():
    table = ex.build_table("permutation", ex.Config(perm_k=3))
    measures = ex.fourier_measures(torch.randn(1, table.vocab_size, 8), [table])
    assert all(torch.isnan(v).all() for v in measures.values())


def test_margin_and_saturation():
    logits = torch.tensor([[5.0, 1.0, 0.0], [0.0, 2.0, 3.0], [200.0, 0.0, 0.0]])
    m = ex.example_metrics(logits, torch.tensor([0, 1, 0]), ex.Config())
    assert m["margin"].tolist() == [4.0, -1.0, 200.0]
    assert m["saturated"].tolist() == [0.0, 0.0, 1.0]  # exp(-200) is lost in float32: softmax rounds to 1
    assert set(ex.example_metrics(logits, torch.tensor([0, 1, 0]), ex.Config(progress_measures=False))) == {"loss", "acc"}


def test_the_batched_measures_equal_a_loop_over_the_members_in_float64():
    c = ex.Config(tasks=("x_plus_y", "x_div_y", "permutation"), layers=(2,), dims=(16,), heads=(2,), seeds=2,
                  prime=11, perm_k=3, dtype="float64")
    study = Study.build(SCIENCE, c)
    for group in study.groups():
        params = stack_parameters(member_models(study, group), "cpu", torch.float64)
        params = {k: v + 0.1 * torch.randn_like(v) for k, v in params.items()}  # not the initial weights alone
        tables = [study.table(mb) for mb in group.members]
        batched = ex.model_metrics(params, tables, c)
        assert {"weight_norm", "embedding_norm", "block1_attn_norm", "block1_mlp_norm", "head_weight_norm",
                "embedding_fourier_top5", "embedding_key_frequencies"} <= set(batched)
        for i, table in enumerate(tables):
            alone = ex.model_metrics({k: v[i:i + 1] for k, v in params.items()}, [table], c)
            for name, value in alone.items():
                torch.testing.assert_close(batched[name][i:i + 1], value, rtol=1e-12, atol=0, equal_nan=True)
        off = ex.model_metrics(params, tables, dataclasses.replace(c, progress_measures=False))
        assert set(off) == {"weight_norm"}


def test_the_fourier_lead_is_the_grokking_step_minus_the_half_rise():
    steps = np.array([10, 20, 30, 40, 50])
    curves = {"train_loss": np.ones(5), "val_loss": np.ones(5), "train_acc": np.ones(5),
              "val_acc": np.array([0.0, 0.0, 0.0, 1.0, 1.0]), "embedding_fourier_top5": np.array([0.2, 0.3, 0.6, 0.9, 1.0])}
    m = ex.run_metrics(steps, curves, ex.Config(num_steps=50))
    assert m["step_fourier_half"] == 30 and m["fourier_lead"] == 10  # half of 0.2 -> 1.0 is 0.6, at step 30
    assert m["step_fourier_50"] == 30  # the absolute bar: the first share above 0.5
    weak = ex.run_metrics(steps, {**curves, "embedding_fourier_top5": np.array([0.2, 0.26, 0.32, 0.36, 0.4])},
                          ex.Config(num_steps=50))
    assert weak["step_fourier_half"] == 30 and weak["step_fourier_50"] == 50  # half its (weak) rise, never 0.5
    flat = ex.run_metrics(steps, {**curves, "embedding_fourier_top5": np.full(5, np.nan)}, ex.Config(num_steps=50))
    assert flat["step_fourier_half"] is None and flat["fourier_lead"] is None and flat["step_fourier_50"] is None
