"""The batched model is the template's model, many times over: same initialization, same
trajectory. Each member of a batched group is trained a second time on its own, with the
template's torch.nn modules, optimizer and scheduler, on the same batches, in float64."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

import experiment as ex

# Mixed tasks so that vocabularies and class counts differ inside the group (padding is exercised).
CONFIG = ex.Config(tasks=("x_plus_y", "x_div_y", "permutation"), layers=(2,), dims=(16,), heads=(2,),
                   seeds=2, num_steps=40, eval_every=10, batch_size=64, warmup_steps=5,
                   prime=11, perm_k=3, device="cpu")


def train_alone(arch, member, table, c):
    """The template's training loop for one model, fed the member's own batch stream."""
    model = ex.reference_model(arch, table, member.seed).double()
    optimizer = torch.optim.AdamW(model.parameters(), lr=c.lr, betas=(c.beta1, c.beta2),
                                  weight_decay=c.weight_decay, foreach=False)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(s / c.warmup_steps, 1))
    data = ex.GroupData([member], {member.table_key: table}, c, "cpu")
    train, val, _ = ex.split_table(len(table.answers), c.train_fraction, ex.data_generator(member.seed))
    curve = []
    for step in range(c.num_steps):
        left, right, answers = data.batch(step)
        optimizer.zero_grad()
        tokens = torch.stack([left[0], torch.full_like(left[0], ex.TOKEN_OP), right[0],
                              torch.full_like(left[0], ex.TOKEN_EQ)], -1)  # [a, o, b, =]
        loss = F.cross_entropy(model(tokens), answers[0])
        loss.backward()
        optimizer.step()
        scheduler.step()
        if (step + 1) % c.eval_every == 0:
            with torch.no_grad():
                logits = model(table.tokens)
                losses = F.cross_entropy(logits, table.answers, reduction="none")
                correct = (logits.argmax(-1) == table.answers).double()
                norm = torch.sqrt(sum(p.pow(2).sum() for p in model.parameters()))
                curve.append([losses[train].mean(), correct[train].mean(),
                              losses[val].mean(), correct[val].mean(), norm])
    return model, torch.tensor(curve, dtype=torch.float64)


# batch 64 > 11 elements: the shared-prefix path; batch 8: one prefix row per equation.
@pytest.fixture(scope="module", params=[64, 8], ids=["shared-prefix", "prefix-per-equation"])
def trained(request):
    c = dataclasses.replace(CONFIG, batch_size=request.param)
    tables = ex.build_tables(c)
    group, = ex.plan_groups(c)
    result, model = ex.train_group(group, tables, c, torch.device("cpu"), dtype=torch.float64)
    return group.arch, group.members, tables, result, model, c


def test_initialization_is_the_templates(trained):
    arch, members, tables, _, _, _ = trained
    fresh = ex.BatchedTransformer.from_references(
        arch, [ex.reference_model(arch, tables[m.table_key], m.seed) for m in members],
        [tables[m.table_key].num_classes for m in members])
    for i, m in enumerate(members):
        ref = ex.reference_model(arch, tables[m.table_key], m.seed)
        state = fresh.member_state(i, tables[m.table_key].vocab_size, tables[m.table_key].num_classes)
        assert state.keys() == ref.state_dict().keys()
        for key, value in ref.state_dict().items():
            assert torch.equal(state[key], value), key
    # different seeds start from different weights
    assert not torch.equal(fresh.tok_emb[0], fresh.tok_emb[1])


def test_forward_matches_reference_at_initialization(trained):
    arch, members, tables, _, _, _ = trained
    refs = [ex.reference_model(arch, tables[m.table_key], m.seed).double() for m in members]
    batched = ex.BatchedTransformer.from_references(arch, refs, [tables[m.table_key].num_classes for m in members],
                                                    dtype=torch.float64)
    tokens = torch.stack([tables[m.table_key].tokens[:30] for m in members])
    logits = batched(tokens[..., 0], tokens[..., 2])
    for i, (m, ref) in enumerate(zip(members, refs)):
        k = tables[m.table_key].num_classes
        torch.testing.assert_close(logits[i, :, :k], ref(tokens[i]), rtol=0, atol=1e-12)
        assert torch.isneginf(logits[i, :, k:]).all()  # padded classes can never be predicted


def test_each_member_follows_its_own_trajectory(trained):
    arch, members, tables, result, model, c = trained
    for i, m in enumerate(members):
        table = tables[m.table_key]
        alone, curve = train_alone(arch, m, table, c)
        state = model.member_state(i, table.vocab_size, table.num_classes)
        for key, value in alone.state_dict().items():
            torch.testing.assert_close(state[key], value, rtol=0, atol=1e-10, msg=f"{m} {key}")
        torch.testing.assert_close(torch.from_numpy(result.curves[i]), curve, rtol=0, atol=1e-10,
                                   msg=f"{m} curves")
    # training moved the weights and the losses: the comparison is not vacuous
    assert result.curves[0, -1, 0] < result.curves[0, 0, 0]


def test_padding_stays_zero(trained):
    _, members, tables, _, model, _ = trained
    for i, m in enumerate(members):
        t = tables[m.table_key]
        assert torch.count_nonzero(model.tok_emb[i, t.vocab_size:]) == 0
        assert torch.count_nonzero(model.head_w[i, :, t.num_classes:]) == 0
        assert torch.count_nonzero(model.head_b[i, t.num_classes:]) == 0


def test_batch_stream_does_not_depend_on_chunking(monkeypatch):
    table = ex.build_table("x_plus_y", 11, 3)
    c = dataclasses.replace(CONFIG, tasks=("x_plus_y",))
    member = ex.Member("x_plus_y", 3, c.settings()[0])
    reference = ex.GroupData([member], {member.table_key: table}, c, "cpu")
    first = [reference.batch(s)[1] for s in range(7)]
    monkeypatch.setattr(ex.GroupData, "BATCH_CHUNK", 3)
    chunked = ex.GroupData([member], {member.table_key: table}, c, "cpu")
    assert all(torch.equal(a, chunked.batch(s)[1]) for s, a in enumerate(first))
