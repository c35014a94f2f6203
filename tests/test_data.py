"""Tasks, splits and batches: every equation checked against plain Python arithmetic."""

import itertools
import math

import pytest
import torch

import experiment as ex
from runner.plan import Architecture, Study, architectures
from runner.results import capacity_buckets, parameter_count
from runner.training import GroupData

SCIENCE = ex.science()


def table_of(task, prime=97, perm_k=5):
    return ex.build_table(task, ex.Config(prime=prime, perm_k=perm_k))


def decode(table, row):
    a_tok, op, b_tok, eq = table.tokens[row].tolist()
    assert (op, eq) == (ex.TOKEN_OP, ex.TOKEN_EQ)
    return table.elements[a_tok - 2], table.elements[b_tok - 2], table.elements[table.answers[row]]


@pytest.mark.parametrize("p", [97, 7])
def test_arithmetic_tables_hold_every_equation_once(p):
    expected = {
        "x_plus_y": {(a, b): (a + b) % p for a in range(p) for b in range(p)},
        "x_minus_y": {(a, b): (a - b) % p for a in range(p) for b in range(p)},
        # c = a / b  <=>  c * b = a (mod p)
        "x_div_y": {(a, b): next(c for c in range(p) if (c * b) % p == a) for a in range(p) for b in range(1, p)},
    }
    for task, equations in expected.items():
        table = table_of(task, p)
        assert len(table.answers) == len(equations) == ex.task_size(task, p, 5)
        seen = {}
        for row in range(len(table.answers)):
            a, b, c = decode(table, row)
            seen[(a, b)] = c
        assert seen == equations
        assert (table.num_classes, table.vocab_size) == (p, p + 2)


@pytest.mark.parametrize("k", [5, 3])
def test_permutation_table_composes(k):
    table = table_of("permutation", perm_k=k)
    n = math.factorial(k)
    assert len(table.answers) == n * n and table.num_classes == n and table.vocab_size == n + 2
    assert sorted(table.elements) == sorted(itertools.permutations(range(k)))
    seen = set()
    for row in range(len(table.answers)):
        a, b, c = decode(table, row)
        assert c == tuple(a[b[i]] for i in range(k))
        seen.add((a, b))
    assert len(seen) == n * n


def test_split_is_disjoint_complete_and_seeded():
    n, c = 9409, ex.Config()
    splits, _ = ex.run_data(n, c, 0)
    train, val = splits["train"], splits["val"]
    assert list(splits) == ["train", "val"] and len(train) == int(n * 0.5) and len(train) + len(val) == n
    assert torch.equal(torch.sort(torch.cat([train, val])).values, torch.arange(n))
    again = ex.run_data(n, c, 0)[0]["train"]
    other = ex.run_data(n, c, 1)[0]["train"]
    assert torch.equal(train, again)
    assert not torch.equal(torch.sort(train).values, torch.sort(other).values)


def test_batches_come_from_the_training_split_with_replacement():
    c = ex.Config(tasks=("x_plus_y", "x_div_y"), prime=11, batch_size=256, seeds=2)
    study = Study.build(SCIENCE, c)
    members = study.groups()[0].members
    data = GroupData(study, members, "cpu")
    for i, mb in enumerate(members):
        table = study.table(mb)
        train = ex.run_data(len(table.answers), c, mb.seed)[0]["train"]
        train_rows = {tuple(table.tokens[r].tolist()) + (int(table.answers[r]),) for r in train.tolist()}
        for step in range(3):
            tokens, answers = data.batch(step)
            drawn = [tuple(t) + (a,) for t, a in zip(tokens[i].tolist(), answers[i].tolist())]
            assert set(drawn) <= train_rows
            assert len(set(drawn)) < len(drawn)  # 256 draws from 55 or 60 equations repeat
    # the same seed gives the same batches on a fresh object
    again = GroupData(study, members, "cpu")
    assert all(torch.equal(x, y) for x, y in zip(again.batch(0), GroupData(study, members, "cpu").batch(0)))


def test_parameter_count_of_the_templates_baseline():
    table = table_of("x_div_y")
    assert parameter_count(SCIENCE, Architecture(2, 128, 4), table, ex.Config()) == 422_625
    assert sum(p.numel() for p in ex.build_model(2, 128, 4, table, 0, ex.Config()).parameters()) == 422_625


@pytest.mark.parametrize("arch", [Architecture(1, 64, 2), Architecture(4, 256, 8)])
@pytest.mark.parametrize("task", ["x_plus_y", "permutation"])
def test_parameter_count_is_the_models(arch, task):
    table = table_of(task)
    model = ex.build_model(arch.layers, arch.d_model, arch.heads, table, 0, ex.Config())
    assert parameter_count(SCIENCE, arch, table, ex.Config()) == sum(p.numel() for p in model.parameters())


def default_buckets() -> dict:
    table = table_of("x_div_y")
    return capacity_buckets({a.name: parameter_count(SCIENCE, a, table, ex.Config())
                                    for a in architectures(ex.Config())})


def test_capacity_buckets_of_the_default_study():
    buckets = default_buckets()
    by_shape = {}
    for name, bucket in buckets.items():
        layers, d, _ = name.split("_")
        by_shape.setdefault(bucket, set()).add(f"{layers[1:]}x{d[1:]}")
    assert by_shape == {"small": {"1x64", "2x64", "4x64", "1x128"}, "medium": {"2x128", "4x128", "1x256"},
                        "large": {"2x256", "4x256"}}
    assert set(capacity_buckets({"L2_D128_H4": 422_625}).values()) == {"all"}
