"""One parameter store per group and the forwards that read it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .plan import Architecture, Group, Study


def member_models(study: Study, group: Group) -> list:
    """Each member's plain model, initialized as experiment.py says."""
    a = group.arch
    return [study.science.build_model(a.layers, a.d_model, a.heads, study.table(mb), mb.seed, study.config(mb))
            for mb in group.members]


def stack_parameters(models: list, device, dtype) -> dict[str, torch.Tensor]:
    """name -> (members, ...) leaf tensor: the members' parameters under the plain model's names."""
    named = [dict(m.named_parameters()) for m in models]
    return {name: torch.stack([n[name].detach() for n in named]).to(device, dtype).requires_grad_()
            for name in named[0]}


def vmap_forward(model) -> Callable:
    """The plain model over the members: (params, tokens (members, batch, seq)) -> (members, batch, classes)."""
    one = lambda params, tokens: torch.func.functional_call(model, params, (tokens,))
    return torch.func.vmap(one, randomness="different")


def loop_forward(model) -> Callable:
    """The plain model, one member after another (for models vmap cannot run)."""
    def forward(params, tokens):
        return torch.stack([torch.func.functional_call(model, {k: v[i] for k, v in params.items()}, (tokens[i],))
                            for i in range(len(tokens))])
    return forward


def fast_forward(arch: Architecture, device, dtype) -> Callable:
    """The template's Transformer over the members, written by hand with two exact shortcuts that
    follow from the causal mask and the fixed input [a, o, b, =] (o and = the same in every row):
    - only the last position feeds the head, so the last block computes keys and values for
      every position but its query, attention output and MLP for the last position alone;
    - positions 0 and 1 ([a, o]) see only a, so their states are computed once per element
      (the "prefix" rows) rather than once per equation, and equations gather them by a.
    Reads the plain model's parameters by name. Used only where proof.forward_choice proves it equal."""
    element_tokens = {}  # vocabulary size -> every element token (2 .. vocab-1): the prefix rows
    member_rows = {}  # members -> their row numbers (members, 1), for the per-member lookups
    # Additive causal masks: [a, o] among themselves; [b, =] over all four.
    prefix_mask = torch.tensor([[0.0, -math.inf], [0.0, 0.0]], dtype=dtype, device=device)
    suffix_mask = torch.tensor([[0.0, 0.0, 0.0, -math.inf], [0.0] * 4], dtype=dtype, device=device)

    def forward(params: dict, tokens: torch.Tensor) -> torch.Tensor:
        m, b, _ = tokens.shape
        emb, pos = params["token_embeddings.weight"], params["position_embeddings.weight"]  # (m, vocab | 5, d)
        left, right = tokens[..., 0], tokens[..., 2]
        if emb.shape[1] not in element_tokens:
            element_tokens[emb.shape[1]] = torch.arange(2, emb.shape[1], device=tokens.device)
        if m not in member_rows:
            member_rows[m] = torch.arange(m, device=tokens.device)[:, None]
        rows = member_rows[m]
        elements = emb.shape[1] - 2
        if elements < b:  # shared prefix: one row per element, equations gather theirs
            prefix_tokens, prefix_index = element_tokens[emb.shape[1]].expand(m, elements), left - 2
        else:  # fewer equations than elements: one prefix row per equation
            prefix_tokens, prefix_index = left, torch.arange(b, device=tokens.device).expand(m, b)
        embed = lambda tok, p: take(emb, rows, tok) + pos[:, None, p]
        # "o" and "=" are one token per member: embedded once each, broadcast over the rows
        constant = lambda tok, p, n: (take(emb, rows, tok[:, None])[:, 0] + pos[:, p])[:, None].expand(m, n, -1)
        prefix = torch.stack([embed(prefix_tokens, 0), constant(tokens[:, 0, 1], 1, prefix_tokens.shape[1])], 2)
        suffix = torch.stack([embed(right, 2), constant(tokens[:, 0, 3], 3, b)], 2)
        x = torch.cat([prefix, suffix], 1)  # (members, prefix rows + batch, 2 positions, d)
        for layer in range(arch.layers):
            w = {k: params[f"blocks.{layer}.{k}"] for k in BLOCK_PARAMETERS}
            x = fast_block(x, prefix.shape[1], rows, prefix_index, w, arch.heads, prefix_mask, suffix_mask,
                           last=layer == arch.layers - 1)
        x = layer_norm(x, params["norm.weight"], params["norm.bias"])  # (members, batch, d)
        return linear(x, params["head.weight"], params["head.bias"])

    return forward


BLOCK_PARAMETERS = ("self_attn.in_proj_weight", "self_attn.in_proj_bias", "self_attn.out_proj.weight",
                    "self_attn.out_proj.bias", "self_attn_norm.weight", "self_attn_norm.bias", "ffn.0.weight",
                    "ffn.0.bias", "ffn.2.weight", "ffn.2.bias", "ffn_norm.weight", "ffn_norm.bias")


def fast_block(x, r, rows, prefix_index, w, heads, prefix_mask, suffix_mask, last):
    """One decoder block on the prefix rows x[:, :r] (positions 0, 1) and the equation rows
    x[:, r:] (positions 2, 3), each (members, rows, 2, d). Returns the same layout, or for the
    last block the final position of the equation rows only, (members, batch, d)."""
    d = x.shape[-1]
    split = lambda t, n: t.unflatten(-1, (n, heads, d // heads)).unbind(-3)  # n (..., heads, head_dim)
    gather = lambda t: take(t[:, :r], rows, prefix_index)  # prefix rows -> one per equation
    qkv_w, qkv_b = w["self_attn.in_proj_weight"], w["self_attn.in_proj_bias"]  # (m, 3d, d), (m, 3d)
    if last:  # keys and values everywhere, the query of position 3 only
        k, v = split(linear(x, qkv_w[:, d:], qkv_b[:, d:]), 2)
        q, = split(linear(x[:, r:, 1:], qkv_w[:, :d], qkv_b[:, :d]), 1)
        keys, values = (torch.cat([gather(t), t[:, r:]], 2) for t in (k, v))
        attn = attend(q, keys, values, None)  # position 3 sees all four
        x = x[:, r:, 1:]
    else:
        q, k, v = split(linear(x, qkv_w, qkv_b), 3)
        prefix_attn = attend(q[:, :r], k[:, :r], v[:, :r], prefix_mask)
        keys, values = (torch.cat([gather(t), t[:, r:]], 2) for t in (k, v))
        attn = torch.cat([prefix_attn, attend(q[:, r:], keys, values, suffix_mask)], 1)
    a = layer_norm(x + linear(attn, w["self_attn.out_proj.weight"], w["self_attn.out_proj.bias"]),
                   w["self_attn_norm.weight"], w["self_attn_norm.bias"])
    f = linear(F.gelu(linear(a, w["ffn.0.weight"], w["ffn.0.bias"])), w["ffn.2.weight"], w["ffn.2.bias"])
    out = layer_norm(a + f, w["ffn_norm.weight"], w["ffn_norm.bias"])
    return out[:, :, 0] if last else out


def take(table: torch.Tensor, rows: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """table[rows, index], i.e. table[i, index[i]] for every member i: (members, n, ...), rows
    (members, 1) the member numbers, index (members, k) -> (members, k, ...).
    The backward adds up the gradients of repeated rows, and the two ways of indexing differ in
    whether it does so in the same order every time. On a CPU, advanced indexing's backward splits
    the rows between threads, and a run whose rows straddle the split (the middle run of a group of
    9 on 2 threads) gets its sums in an order that changes from one program run to the next; an
    index_select of the flattened table adds in index order on any number of threads (the order
    every other run already got). On CUDA it is the other way round: index_select adds with
    atomics, advanced indexing sorts the indices."""
    if table.device.type != "cpu":
        return table[rows, index]
    m, n = table.shape[:2]
    picked = table.reshape(m * n, *table.shape[2:]).index_select(0, (index + rows * n).flatten())
    return picked.view(*index.shape, *table.shape[2:])


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Per-member nn.Linear: x (members, ..., in), weight (members, out, in), bias (members, out)."""
    flat = torch.baddbmm(bias[:, None], x.reshape(x.shape[0], -1, x.shape[-1]), weight.mT)
    return flat.view(*x.shape[:-1], weight.shape[1])


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask) -> torch.Tensor:
    """Softmax attention over a handful of positions, written out: with 2-4 positions the
    products are too small for matmul kernels. q (m, rows, sq, heads, hd), k and v
    (m, rows, sk, heads, hd), mask (sq, sk) additive or None -> (m, rows, sq, heads*hd)."""
    scores = (q.unsqueeze(3) * k.unsqueeze(2)).sum(-1) * q.shape[-1] ** -0.5  # (m, rows, sq, sk, heads)
    if mask is not None:
        scores = scores + mask[:, :, None]
    weights = scores.softmax(dim=3)
    return (weights.unsqueeze(-1) * v.unsqueeze(2)).sum(3).flatten(-2)


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """LayerNorm over the last dim with a per-member affine: x (members, ..., d), weight (members, d)."""
    shape = (weight.shape[0],) + (1,) * (x.dim() - 2) + (weight.shape[-1],)
    return torch.addcmul(bias.view(shape), F.layer_norm(x, x.shape[-1:], eps=1e-5), weight.view(shape))


def make_forward(name: str, model, arch: Architecture, device, dtype) -> Callable:
    """The forward called `name` ("fast", "vmap" or "loop") over a group's parameter store."""
    if name == "fast":
        return fast_forward(arch, device, dtype)
    return vmap_forward(model) if name == "vmap" else loop_forward(model)


@dataclass(frozen=True)
class ForwardChoice:
    """How a group trains: its forward ("fast", "vmap" or "loop"), why, and whether its runs
    must train one at a time (a training step that couples the runs of a batch)."""

    forward: str
    reason: str
    one_at_a_time: bool = False
    difference: float | None = None  # the fast forward's largest relative difference, where compared

    def describe(self, groups: list[str]) -> str:
        """One line: which groups take this forward, and why."""
        return f"forward of {', '.join(groups)}: {self.forward} ({self.reason}" + (
            f"; largest relative difference {self.difference:.0e}" if self.difference is not None else "") + ")"
