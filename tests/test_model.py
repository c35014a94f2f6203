"""The model that trains is the plain model of experiment.py: initialized as the template's torch.nn
modules, trained batched exactly as each run would train alone, and the fast forward equal to it."""

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

import experiment as ex
from runner.forwards import ForwardChoice, fast_forward, member_models, stack_parameters
from runner.plan import Study, run_config
from runner.proof import forward_choice
from runner.training import GroupData, train_chunk
from support import train_alone

SCIENCE = ex.science()
CPU = torch.device("cpu")
# Two tasks of one domain (mod 11) with tables of different sizes (121 and 110 equations) and the
# permutation task (S_3): two groups per architecture.
CONFIG = ex.Config(tasks=("x_plus_y", "x_div_y", "permutation"), layers=(2,), dims=(16,), heads=(2,), seeds=2,
                   num_steps=40, eval_every=10, batch_size=64, warmup_steps=5, prime=11, perm_k=3, dtype="float64")


class TemplateBlock(nn.Module):
    """The template's decoder block, built from the torch.nn modules it uses: the yardstick."""

    def __init__(self, d, h):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, h)
        self.self_attn_norm = nn.LayerNorm(d)
        self.ffn = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.ffn_norm = nn.LayerNorm(d)

    def forward(self, x):  # (seq, batch, d)
        mask = torch.full((len(x), len(x)), -float("inf"), dtype=x.dtype).triu(1)
        x = self.self_attn_norm(x + self.self_attn(x, x, x, attn_mask=mask, need_weights=False)[0])
        return self.ffn_norm(x + self.ffn(x))


class TemplateTransformer(nn.Module):
    def __init__(self, layers, d, h, vocab, classes):
        super().__init__()
        self.token_embeddings = nn.Embedding(vocab, d)
        self.position_embeddings = nn.Embedding(5, d)
        self.model = nn.Sequential(*[TemplateBlock(d, h) for _ in range(layers)], nn.LayerNorm(d), nn.Linear(d, classes))

    def forward(self, tokens):
        x = self.token_embeddings(tokens) + self.position_embeddings(torch.arange(tokens.shape[1]))
        return self.model(x.transpose(0, 1))[-1]


def template_name(name: str, layers: int) -> str:
    """Our parameter name -> the template's (blocks.i -> model.i, norm -> model.L, head -> model.L+1)."""
    if name.startswith("norm."):
        return f"model.{layers}." + name.removeprefix("norm.")
    if name.startswith("head."):
        return f"model.{layers + 1}." + name.removeprefix("head.")
    return name.replace("blocks.", "model.")


@pytest.mark.parametrize("layers, d, h", [(2, 16, 2), (1, 32, 4)])
@pytest.mark.parametrize("task", ["x_div_y", "permutation"])
def test_initialization_and_forward_are_the_templates(layers, d, h, task):
    c = dataclasses.replace(CONFIG, prime=11, perm_k=3)
    table = ex.build_table(task, c)
    for seed in (0, 1):
        ours = ex.build_model(layers, d, h, table, seed, c)
        torch.manual_seed(ex.INIT_SEED_BASE + seed)
        template = TemplateTransformer(layers, d, h, table.vocab_size, table.num_classes)
        theirs = dict(template.named_parameters())
        assert len(theirs) == len(dict(ours.named_parameters()))
        for name, value in ours.named_parameters():
            assert torch.equal(value, theirs[template_name(name, layers)]), name
        torch.testing.assert_close(ours.double()(table.tokens), template.double()(table.tokens), rtol=0, atol=1e-12)
    assert not torch.equal(ex.build_model(layers, d, h, table, 0, c).head.weight, ex.build_model(layers, d, h, table, 1, c).head.weight)


def train(c, forward: str):
    study = Study.build(SCIENCE, c)
    return {g.name: (g, *train_chunk(study, g, CPU, ForwardChoice(forward, "test"))) for g in study.groups()}


@pytest.fixture(scope="module")
def vmap_trained():
    return train(CONFIG, "vmap")


def test_each_member_of_a_group_trains_as_it_would_alone(vmap_trained):
    assert sorted(vmap_trained) == ["L2_D16_H2_S3", "L2_D16_H2_mod11"]
    for group, result, params in vmap_trained.values():
        for i, mb in enumerate(group.members):
            curves, model = train_alone(ex, run_config(CONFIG, mb), 2, 16, 2, mb.task, mb.seed)
            assert list(result.curves) == list(curves)
            for name in curves:
                np.testing.assert_allclose(result.curves[name][i], curves[name], rtol=0, atol=1e-10, err_msg=f"{mb} {name}")
            for name, value in model.named_parameters():
                torch.testing.assert_close(params[name][i].detach(), value.detach(), rtol=0, atol=1e-10)
        assert result.curves["train_loss"][0, -1] < result.curves["train_loss"][0, 0]  # it learned: not vacuous


@pytest.mark.parametrize("batch_size", [64, 8], ids=["shared-prefix", "prefix-per-equation"])
def test_fast_forward_trains_as_the_plain_model(vmap_trained, batch_size):
    c = dataclasses.replace(CONFIG, batch_size=batch_size)
    reference = vmap_trained if batch_size == 64 else train(c, "vmap")
    for name, (group, result, params) in train(c, "fast").items():
        for curve, values in result.curves.items():
            np.testing.assert_allclose(values, reference[name][1].curves[curve], rtol=0, atol=1e-12)


def test_loop_forward_equals_vmap(vmap_trained):
    c = dataclasses.replace(CONFIG, num_steps=20)
    for name, (group, result, _) in train(c, "loop").items():
        for curve, values in result.curves.items():
            np.testing.assert_allclose(values, vmap_trained[name][1].curves[curve][:, :2], rtol=0, atol=1e-12)


def test_the_check_picks_the_fast_forward_for_the_template_model():
    study = Study.build(SCIENCE, CONFIG)
    for group in study.groups():
        choice = forward_choice(study, group)
        assert choice.forward == "fast" and choice.difference < 1e-12 and not choice.one_at_a_time
        assert forward_choice(study, group, "generic").forward == "vmap"


def test_batch_stream_does_not_depend_on_chunking(monkeypatch):
    c = dataclasses.replace(CONFIG, tasks=("x_plus_y",))
    study = Study.build(SCIENCE, c)
    members = study.groups()[0].members
    reference = GroupData(study, members, CPU)
    first = [reference.batch(s)[0] for s in range(7)]
    monkeypatch.setattr(GroupData, "BATCH_CHUNK", 3)
    chunked = GroupData(study, members, CPU)
    assert all(torch.equal(a, chunked.batch(s)[0]) for s, a in enumerate(first))


def test_a_members_float32_gradient_does_not_depend_on_its_group():
    """float32, as studies train: in a group of 9 runs, each run's gradient is bit for bit the one
    it gets alone. The embedding and prefix lookups add their gradients up in one order on any
    number of threads (on 2, the middle run's rows straddle the threads' split of the lookups).
    The matrix products' weight gradients are bit for bit only on one thread: on more, the CPU's
    batched matmul may split one member's sum between threads differently from nine members'
    (seen on an Intel Xeon with 2 threads, not on an AMD EPYC)."""
    c = ex.Config(tasks=("x_plus_y", "x_minus_y", "x_div_y"), layers=(2,), dims=(64,), heads=(4,), seeds=3, prime=97)
    study = Study.build(SCIENCE, c)
    group = study.groups()[0]
    params = stack_parameters(member_models(study, group), CPU, torch.float32)
    tokens, answers = GroupData(study, group.members, CPU).batch(0)
    forward = fast_forward(group.arch, CPU, torch.float32)

    def gradients(members: slice) -> dict:
        part = {name: value[members] for name, value in params.items()}
        losses = torch.vmap(ex.loss_fn)(forward(part, tokens[members]), answers[members])
        return dict(zip(part, torch.autograd.grad(losses.sum(), list(part.values()))))

    def assert_alone_equals_together(names):
        together = gradients(slice(None))
        for i in range(9):
            alone = gradients(slice(i, i + 1))
            for name in names:
                assert torch.equal(together[name][i:i + 1], alone[name]), f"run {i} ({group.members[i]}): {name}"

    assert len(group.members) == 9
    assert_alone_equals_together(["token_embeddings.weight", "position_embeddings.weight"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert_alone_equals_together(list(params))
    finally:
        torch.set_num_threads(threads)
