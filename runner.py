"""The machinery behind experiment.py: everything a researcher does not change to do research.

experiment.py holds the science and hands it over as a `Science` (below); this module never
imports it (run as __main__, a second import would execute it twice, with two copies of every
class). What lives here:

- Command line: every Config field is an option, read according to its type; presets; bad input
  is one line on stderr and exit code 2, before any work starts.
- Planning: a group is one architecture x one domain (tasks sharing a vocabulary, e.g. mod97 or
  S5) x one value of every axis but train_fraction. Its members (tasks x seeds x training
  fractions) train at once.
- One parameter store per group: each parameter of the plain model, stacked along a leading
  member dimension and keyed by the plain model's own name. The optimizer steps it; saved models
  are it. Three forwards read it: "vmap" (the plain model over the members with torch.func),
  "loop" (one member after another, for a model vmap cannot run) and "fast" (hand-written for the
  template's architecture, used only where a float64 check at start proves it equal to the plain
  model). The same check proves that one batched training step equals each run's step alone.
- Training and full-split evaluation loops, chunking on out-of-memory, divergence.
- Outputs: atomic files, provenance, resume, saved models and --query, the Ray backend.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import importlib
import importlib.util
import inspect
import io
import itertools
import json
import math
import os
import platform
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import types
import typing
import zipfile
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

FORMAT_VERSION = 1  # bumped when the layout of the output files changes
MODELS_FORMAT = 2  # saved models: the plain model's parameters by name (1: an older layout)


@dataclass(frozen=True)
class Science:
    """What experiment.py hands to the machinery. A "run config" is the Config with every axis
    set to one value: the config of one run."""

    config: type  # the Config dataclass: its fields are the command line
    presets: dict  # name -> dict of Config overrides
    validate: Callable  # (config) -> None; raises ValueError with a one-line message
    build_table: Callable  # (task, run config) -> table: tokens (n, seq), answers (n,), num_classes, vocab_size, elements, domain
    run_data: Callable  # (num equations, run config, seed) -> ({split: indices}, draw(steps) -> (steps, batch) indices)
    build_model: Callable  # (layers, d_model, heads, table, seed, run config) -> nn.Module, tokens (batch, seq) -> logits (batch, classes)
    make_optimizer: Callable  # ({name: (members, ...)}, run config) -> (optimizer, schedule)
    train_step: Callable  # (forward, optimizer, schedule, tokens, answers) -> None
    evaluation_steps: Callable  # (config) -> increasing steps after which runs are evaluated (0: before training)
    example_metrics: Callable  # one run's (logits, answers) -> {name: (rows,)}, averaged per split
    model_metrics: Callable  # ({name: (members, ...)}) -> {curve name: (members,)}
    run_metrics: Callable  # (steps, {curve: (evals,)}, num_steps) -> {metric: value}
    headline_metrics: dict  # metric -> decimals: what final_info.json reports
    source: str  # path of experiment.py: hashed into provenance, shipped to Ray workers


class UsageError(Exception):
    """Bad input: reported as one line on stderr with exit code 2, before any work starts."""


# ======================================================================================
# Config fields: types, axes, architectures
# ======================================================================================

ARCH_FIELDS = ("layers", "dims", "heads")
MEMBER_AXES = ("train_fraction",)  # the only axis whose values may differ inside a group (data only)
AXIS_TAGS = {"prime": "p", "train_fraction": "tf", "batch_size": "bs", "lr": "lr", "weight_decay": "wd",
             "warmup_steps": "wu"}  # short names in keys and file names (bs64, p113); others: the field name
SCALARS = (int, float, str, bool)


def field_types(config_class: type) -> dict[str, tuple[type, str]]:
    """Config field -> (type of one value, "one" | "list" | "axis"), read from the annotations:
    X, tuple[X, ...] (a list) or X | tuple[X, ...] (an axis: one value or a list)."""
    kinds = {}
    for name, hint in typing.get_type_hints(config_class).items():
        args = typing.get_args(hint)
        if hint in SCALARS:
            kinds[name] = (hint, "one")
        elif typing.get_origin(hint) is tuple and len(args) == 2 and args[1] is Ellipsis and args[0] in SCALARS:
            kinds[name] = (args[0], "list")
        elif (typing.get_origin(hint) in (types.UnionType, typing.Union) and len(args) == 2
              and args[0] in SCALARS and args[1] == tuple[args[0], ...]):
            kinds[name] = (args[0], "axis")
        else:
            raise UsageError(f"Config.{name} has type {hint}, which the command line cannot read; use int, float, "
                             "str, bool, tuple[T, ...] or T | tuple[T, ...]")
    return kinds


def axes(c) -> list[str]:
    """Fields that take one value or a list: the study's axes besides the architecture."""
    return [name for name, (_, shape) in field_types(type(c)).items() if shape == "axis"]


def axis_values(c, name: str) -> tuple:
    value = getattr(c, name)
    return value if isinstance(value, tuple) else (value,)


def varied_axes(c) -> list[str]:
    return [name for name in axes(c) if len(axis_values(c, name)) > 1]


def settings(c) -> list[tuple]:
    """Every combination of the axes' values, each a tuple of (axis, value) pairs."""
    names = axes(c)
    return [tuple(zip(names, combo)) for combo in itertools.product(*(axis_values(c, n) for n in names))]


def format_number(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def format_value(v) -> str:
    return ",".join(map(format_number, v)) if isinstance(v, tuple) else format_number(v)


def setting_tag(setting: tuple, names: list[str], sep: str = "/") -> str:
    """The values of the axes `names` in a setting, e.g. 'p113/bs64' ('' for none)."""
    return sep.join(f"{AXIS_TAGS.get(n, n)}{format_number(v)}" for n, v in setting if n in names)


@dataclass(frozen=True)
class Architecture:
    layers: int
    d_model: int
    heads: int

    @property
    def name(self) -> str:
        return f"L{self.layers}_D{self.d_model}_H{self.heads}"


def architectures(c) -> list[Architecture]:
    return [Architecture(n, d, h) for n in c.layers for d in c.dims for h in c.heads]


@dataclass(frozen=True)
class Member:
    """One run inside a batched group: a task, a seed and the value of every axis."""

    task: str
    seed: int
    setting: tuple  # ((axis, value), ...) in axes(c) order


def run_config(c, member: Member):
    """The member's config: every axis set to the member's value."""
    return dataclasses.replace(c, **dict(member.setting))


@dataclass(frozen=True)
class Group:
    """Runs that train as one batched model: one architecture, one domain, shared batch shape and
    optimizer settings."""

    arch: Architecture
    members: list[Member]
    tag: str = ""  # what tells the group apart besides the architecture, e.g. "S5" or "bs64"

    @property
    def name(self) -> str:  # e.g. L2_D128_H4, L2_D128_H4_S5, L2_D128_H4_bs64: labels and file names
        return self.arch.name + (f"_{self.tag}" if self.tag else "")


def build_tables(science: Science, c) -> dict:
    """(task, setting) -> the task's table for that setting."""
    return {(t, s): science.build_table(t, run_config(c, Member(t, 0, s))) for s in settings(c) for t in c.tasks}


def plan_groups(c, tables: dict) -> list[Group]:
    """Architectures x (domain, values of the group-level axes); inside a group, members =
    values of the member axes x tasks x seeds."""
    varied = [a for a in varied_axes(c) if a not in MEMBER_AXES]
    parts: dict[tuple, list[Member]] = {}
    for setting in settings(c):
        shared = tuple((n, v) for n, v in setting if n not in MEMBER_AXES)
        for task in c.tasks:
            domain = tables[task, setting].domain
            parts.setdefault((shared, domain), []).extend(Member(task, s, setting) for s in range(c.seeds))
    groups = []
    for arch in architectures(c):
        for (shared, domain), members in parts.items():
            several = sum(1 for s, _ in parts if s == shared) > 1  # name the domain only when needed
            tag = "_".join(filter(None, [domain if several else "", setting_tag(shared, varied, "_")]))
            groups.append(Group(arch, members, tag))
    return groups


# ======================================================================================
# Command line
# ======================================================================================

PRESET_ENV, BACKEND_ENV, RAY_ADDRESS_ENV = "GROKKING_PRESET", "GROKKING_BACKEND", "GROKKING_RAY_ADDRESS"
BACKENDS = ("local", "ray")
FORWARDS = ("auto", "generic")

# Options that are not part of the study: how and where it runs. name -> help text.
RUN_OPTIONS = {
    "out_dir": "folder for every output file (required)",
    "preset": "a named set of overrides (see below; or env GROKKING_PRESET)",
    "overwrite": "1 to replace the results already in out_dir",
    "device": '"auto" (cuda when present), "cpu", "cuda" or "cuda:N"',
    "max_members": "runs trained at once (0: a whole group); larger groups go in chunks",
    "save_models": "1: save every run's final weights in out_dir/models (see --query)",
    "forward": "auto: the fast forward where a check at start proves it equal to the plain model, else "
               "the plain model; generic: always the plain model",
    "backend": "local (default): groups one after another on this machine; ray: each group a Ray task, on a "
               "cluster or on every GPU of this machine (or env GROKKING_BACKEND)",
    "ray_address": "with --backend=ray: auto (a running cluster), HOST:PORT or ray://HOST:PORT; default: "
                   "start a local Ray instance (or env GROKKING_RAY_ADDRESS)",
    "query": "RUN_DIR: ask a run saved with --save_models=1 the equations that follow (30/74 5/3); pick the "
             "run with --task, --arch, --seed and the varied axes (--prime=113 ...)",
}


@dataclass(frozen=True)
class Options:
    """How a study runs (never part of what it computes)."""

    out_dir: str
    preset: str | None = None
    overrides: dict = dataclasses.field(default_factory=dict)  # the Config fields given on the command line
    overwrite: bool = False
    device: str = "auto"
    max_members: int = 0
    save_models: bool = False
    forward: str = "auto"
    backend: str = "local"
    ray_address: str | None = None


def parse_value(name: str, text: str, item_type: type, shape: str):
    """One command-line value -> a Config field's value; an axis given one value is stored as that
    value, so single-valued studies save plain numbers."""
    items = [s.strip() for s in text.split(",")] if shape != "one" else [text.strip()]
    parsed = [convert(item, item_type) for item in items]
    if None in parsed:
        one, many = {int: ("an integer", "integers"), float: ("a number", "numbers"), str: ("a word", "words"),
                     bool: ("0 or 1", "0s and 1s")}[item_type]
        many = "a comma-separated list of " + many
        raise UsageError(f"--{name}={text!r}: expected {dict(one=one, list=many, axis=f'{one} or {many}')[shape]}")
    if shape == "one" or (shape == "axis" and len(parsed) == 1):
        return parsed[0]
    return tuple(parsed)


def convert(item: str, item_type: type):
    """One value as typed -> the type, or None when it is not one."""
    if item_type is bool:
        return {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}.get(item.lower())
    if item_type is str:
        return item or None
    try:
        return item_type(item)
    except ValueError:
        return None


def split_arguments(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """`--key=value` or `--key value` pairs into a dict, and the other arguments (positionals)."""
    pairs, positionals, i = {}, [], 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--") or arg == "--":
            positionals.append(arg)
            i += 1
            continue
        key, eq, value = arg[2:].partition("=")
        key = key.replace("-", "_")
        if not eq:
            if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                raise UsageError(f"--{key} needs a value, e.g. --{key}=VALUE")
            value, i = argv[i + 1], i + 1
        if key in pairs:
            raise UsageError(f"--{key} is given twice")
        pairs[key] = value
        i += 1
    return pairs, positionals


def choice(name: str, text: str, allowed: tuple) -> str:
    if text not in allowed:
        raise UsageError(f"--{name}={text!r}: choose one of {', '.join(allowed)}")
    return text


def flag(name: str, text: str) -> bool:
    if text not in ("0", "1"):
        raise UsageError(f"--{name}={text}: expected 0 or 1")
    return text == "1"


def resolve(science: Science, argv: list[str], environ=os.environ):
    """Command line (+ environment) -> (validated Config, Options). Raises UsageError."""
    pairs, positionals = split_arguments(argv)
    if positionals:
        raise UsageError(f"unexpected argument {positionals[0]!r}: options look like --field=value")
    types_ = field_types(science.config)
    unknown = [k for k in pairs if k not in types_ and k not in RUN_OPTIONS]
    if unknown:
        raise UsageError(f"unknown option --{unknown[0]}; known: " + ", ".join(list(RUN_OPTIONS) + list(types_))
                         + " (see --help)")
    preset = pairs.get("preset", environ.get(PRESET_ENV, "")).strip() or None
    if preset is not None and preset not in science.presets:
        raise UsageError(f"unknown preset {preset!r}; choose one of: {', '.join(science.presets)}")
    overrides = {k: parse_value(k, v, *types_[k]) for k, v in pairs.items() if k in types_}
    c = science.config(**{**science.presets.get(preset, {}), **overrides})
    for name, (_, shape) in types_.items():
        value = getattr(c, name)
        if shape != "one" and isinstance(value, tuple) and len(set(value)) != len(value):
            raise UsageError(f"--{name} lists a value twice")
    try:
        science.validate(c)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if not pairs.get("out_dir", "").strip():
        raise UsageError("--out_dir is required, e.g. --out_dir=run_0")
    max_members = parse_value("max_members", pairs.get("max_members", "0"), int, "one")
    if max_members < 0:
        raise UsageError(f"--max_members must be >= 0 (0: no limit), got {max_members}")
    device = pairs.get("device", "auto")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise UsageError(f"--device={device!r}: use auto, cpu, cuda or cuda:N")
    backend = choice("backend", pairs.get("backend", environ.get(BACKEND_ENV, "")).strip() or "local", BACKENDS)
    if backend == "ray" and importlib.util.find_spec("ray") is None:
        raise UsageError("--backend=ray needs Ray: pip install -r requirements-ray.txt (or use --backend=local)")
    if "ray_address" in pairs and backend != "ray":
        raise UsageError("--ray_address needs --backend=ray")
    ray_address = pairs.get("ray_address", environ.get(RAY_ADDRESS_ENV, "")).strip() or None
    options = Options(out_dir=pairs["out_dir"], preset=preset, overrides={k: pairs[k] for k in pairs if k in types_},
                      overwrite=flag("overwrite", pairs.get("overwrite", "0")), device=device, max_members=max_members,
                      save_models=flag("save_models", pairs.get("save_models", "0")),
                      forward=choice("forward", pairs.get("forward", "auto"), FORWARDS), backend=backend,
                      ray_address=ray_address if backend == "ray" else None)
    return c, options


def changed_fields(c) -> list[str]:
    """The Config fields whose value differs from their default (set by a preset or an option)."""
    return [f.name for f in dataclasses.fields(c) if getattr(c, f.name) != f.default]


def field_comments(config_class: type) -> dict[str, str]:
    """The one-line comment beside each Config field in experiment.py (shown by --help)."""
    comments = {}
    for line in inspect.getsource(config_class).splitlines():
        code, sep, comment = line.partition("#")
        match = re.fullmatch(r"\s*(\w+)\s*:.*=.*", code)
        if sep and match:
            comments[match[1]] = comment.strip()
    return comments


def usage(science: Science, docstring: str) -> str:
    lines = [docstring.strip(), "", "Options of the study (defaults: the full study):"]
    comments, types_ = field_comments(science.config), field_types(science.config)
    for f in dataclasses.fields(science.config):
        axis = " (a list: an axis of the grid)" if types_[f.name][1] == "axis" else ""
        lines.append(f"  --{f.name:<22} {comments.get(f.name, '')}{axis} [default: {format_value(f.default)}]")
    lines.append("How and where it runs:")
    lines += [f"  --{name:<22} {text}" for name, text in RUN_OPTIONS.items()]
    lines.append("Presets:")
    for name, values in science.presets.items():
        lines.append(f"  {name}: " + " ".join(f"--{k}={format_value(v)}" for k, v in values.items()))
    return "\n".join(lines)


# ======================================================================================
# Data of a group, on the device
# ======================================================================================


class GroupData:
    """The tables, splits and batch streams of every member of a group, on the device.

    Members may have tables of different sizes (x / y has p(p-1) equations, x + y p^2); tensors
    are padded to the largest, and evaluation reads each member's own rows only."""

    BATCH_CHUNK = 100  # steps of batch indices drawn at a time (the draw is chunk-independent)

    def __init__(self, members: list[Member], tables: dict, c, science: Science, device):
        self.device = torch.device(device)
        member_tables = [tables[mb.task, mb.setting] for mb in members]
        sizes = [len(t.answers) for t in member_tables]
        m, seq = len(members), member_tables[0].tokens.shape[1]
        # (members, equations, seq + 1): the tokens, then the answer; one gather draws a whole batch
        equations = torch.zeros(m, max(sizes), seq + 1, dtype=torch.long)
        self.draws, masks = [], []
        for i, (mb, table) in enumerate(zip(members, member_tables)):
            equations[i, :sizes[i]] = torch.cat([table.tokens, table.answers[:, None]], 1)
            splits, draw = science.run_data(sizes[i], run_config(c, mb), mb.seed)
            self.split_names = list(splits)
            mask = torch.zeros(len(splits), max(sizes), dtype=torch.float64)  # float64: sums are exact counts
            for s, indices in enumerate(splits.values()):
                mask[s, indices] = 1.0
            masks.append(mask)
            self.draws.append(draw)
        self.split_masks = torch.stack(masks, 1).to(self.device)  # (splits, members, equations)
        self.split_sizes = self.split_masks.sum(2)  # (splits, members)
        self.equations = equations.to(self.device)
        self.tokens, self.answers = self.equations[..., :seq], self.equations[..., seq]
        # Runs of consecutive members with equally large tables: evaluated together, unpadded.
        self.eval_blocks, start = [], 0  # [(slice of members, equations per member)]
        for n, run in itertools.groupby(sizes):
            count = len(list(run))
            self.eval_blocks.append((slice(start, start + count), n))
            start += count
        self.member_index = torch.arange(m, device=self.device)[:, None]  # (members, 1)
        self._chunk, self._chunk_start = None, 0

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (members, batch, seq) and answers (members, batch) for a step (steps come in order)."""
        offset = step - self._chunk_start
        if self._chunk is None or offset >= self._chunk.shape[0]:
            self._chunk, self._chunk_start, offset = self._draw_chunk(), step, 0
        rows = self.equations[self.member_index, self._chunk[offset]]  # (members, batch, seq + 1)
        return rows[..., :-1], rows[..., -1]

    def _draw_chunk(self) -> torch.Tensor:
        """(BATCH_CHUNK, members, batch): each member draws from its own generator, on the CPU,
        so the stream is identical on every device; then one copy to the device."""
        chunk = torch.stack([draw(self.BATCH_CHUNK) for draw in self.draws], dim=1)
        if self.device.type == "cuda":  # pinned: the copy overlaps the training
            chunk = chunk.pin_memory()
        return chunk.to(self.device, non_blocking=True)


# ======================================================================================
# One parameter store, three forwards, and the check that picks one
# ======================================================================================


def member_models(science: Science, group: Group, tables: dict, c) -> list:
    """Each member's plain model, initialized as experiment.py says."""
    a = group.arch
    return [science.build_model(a.layers, a.d_model, a.heads, tables[mb.task, mb.setting], mb.seed, run_config(c, mb))
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
    Reads the plain model's parameters by name. Used only where check_forward proves it equal."""
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


PROOF_TOLERANCE = 1e-9  # float64 relative difference under which two computations count as equal
PROOF_STEPS = 3  # training steps of the independence check (step 0 of a warm-up has lr 0)
PROOF_SMALL_BATCH = 8  # rows of the small check batch (the fast forward's per-equation path)


def relative_difference(a: dict, b: dict) -> float:
    """max |a - b| / max |b| over every entry of two dicts of tensors (missing gradients count as 0)."""
    diff = max((float((a[k] - b[k]).abs().max()) for k in b), default=0.0)
    scale = max((float(b[k].abs().max()) for k in b), default=0.0)
    return diff / scale if scale > 0 else diff


def first_sentence(error: BaseException) -> str:
    """The error's type and the start of its message: whole sentences up to about 40 characters
    (some messages open with a bare prefix such as "vmap:"), at most 160."""
    text, sentence = " ".join(str(error).split()), ""
    for part in re.split(r"(?<=[.;])\s", text):
        sentence = f"{sentence} {part}".strip()
        if len(sentence) >= 40:
            break
    return f"{type(error).__name__}: {sentence[:160]}"


def module_state(model) -> dict:
    """Everything a forward could change in the plain model besides its parameters: every
    submodule's attributes (by identity; containers by value) and buffers (by value)."""
    state = {}
    for prefix, module in model.named_modules():
        for key, value in vars(module).items():
            if key not in ("_parameters", "_buffers", "_modules"):
                state[prefix, key] = (id(value), repr(value) if isinstance(value, (list, dict, set)) else None)
        for key, buffer in module.named_buffers(recurse=False):
            state[prefix, key] = buffer.detach().clone()
    return state


def same_state(before: dict, after: dict) -> bool:
    return before.keys() == after.keys() and all(
        torch.equal(v, after[k]) if isinstance(v, torch.Tensor) else v == after[k] for k, v in before.items())


def check_forward(science: Science, group: Group, tables: dict, c, requested: str = "auto") -> ForwardChoice:
    """Pick a group's forward from a float64 check on the CPU, on two members' initial weights and
    their first training batch:
    1. vmap must run the plain model, else the loop forward trains the members one by one;
    2. one batched training step (experiment.py's) must equal each run's step alone, else the
       runs train one at a time (an edit coupled them, e.g. a gradient clip over all members).
       The model is in eval mode for this: random layers (dropout) would make the runs differ
       from themselves, and only the step and the optimizer can couple runs (each member's
       forward sees its own parameters alone);
    3. the fast forward must give the plain model's logits and gradients (for a random cotangent,
       so for any loss) to PROOF_TOLERANCE, on the full batch and on a small one (its two paths);
       the plain model's training forward must draw no random numbers and change nothing in the
       module (a counter, a buffer): the fast forward would skip both.
    A genuine error of the plain model (it fails in the loop too) is raised, not hidden."""
    members = group.members[:2]
    models = member_models(science, dataclasses.replace(group, members=members), tables, c)
    params = stack_parameters(models, "cpu", torch.float64)
    model = models[0].double()
    data = GroupData(members, tables, c, science, "cpu")
    tokens, answers = data.batch(0)
    small = (tokens[:, :PROOF_SMALL_BATCH], answers[:, :PROOF_SMALL_BATCH])
    before = module_state(model)
    forward, reason = "vmap", ""
    try:
        vmap_forward(model)(params, small[0])
    except Exception as error:  # noqa: BLE001 - vmap's limits show as many error types
        loop_forward(model)(params, small[0])  # raises if the model itself is broken
        forward, reason = "loop", (f"vmap cannot run the plain model ({first_sentence(error)}); the loop forward "
                                   "runs its members one after another")
    reference = make_forward(forward, model, group.arch, "cpu", torch.float64)
    with torch.no_grad():
        logits = reference(params, small[0])
        random = not torch.equal(logits, reference(params, small[0]))
    expected = (small[0].shape[1], tables[members[0].task, members[0].setting].num_classes)
    if tuple(logits.shape[1:]) != expected:  # the loss, the evaluation and --query all read (batch, classes)
        raise ValueError(f"the model maps tokens of shape {tuple(small[0].shape[1:])} to logits of shape "
                         f"{tuple(logits.shape[1:])}; it must return (batch, classes) = {expected}")
    model.eval()
    independent = steps_are_independent(science, run_config(c, members[0]), reference, params, *small)
    model.train()
    if not independent:
        return ForwardChoice(forward, (reason + "; " if reason else "") + "one batched training step differs from "
                             "the runs' own steps: the step couples runs (e.g. a clip over all members' gradients), "
                             "so they train one at a time", True)
    if forward == "loop":
        return ForwardChoice(forward, reason)
    if requested == "generic":
        return ForwardChoice("vmap", "--forward=generic")
    vocab = params["token_embeddings.weight"].shape[1] if "token_embeddings.weight" in params else 0
    problem, worst = fast_preconditions(group, tables, vocab), None
    if problem is None and random:
        problem = "the plain model draws random numbers in training (e.g. dropout), which the fast forward does not"
    if problem is None and not same_state(before, module_state(model)):
        problem = "the plain model's forward changes the module's own state, which only the plain model does"
    if problem is None:
        fast = fast_forward(group.arch, "cpu", torch.float64)
        try:
            worst = max(max(forward_difference(fast, reference, params, batch)) for batch in (tokens, small[0]))
        except Exception as error:  # noqa: BLE001 - a parameter it expects is gone, a shape changed, ...
            problem = f"it does not apply ({first_sentence(error)})"
        else:
            if worst > PROOF_TOLERANCE:
                problem = "it differs from the plain model"
    if problem:
        return ForwardChoice("vmap", f"the fast forward is not used: {problem}", difference=worst)
    return ForwardChoice("fast", "equal to the plain model in float64", difference=worst)


def fast_preconditions(group: Group, tables: dict, vocab: int) -> str | None:
    """Why the fast forward's shortcuts cannot hold for this group's data, or None."""
    for mb in group.members:
        t = tables[mb.task, mb.setting].tokens
        if t.shape[1] != 4 or not (t[:, 1] == t[0, 1]).all() or not (t[:, 3] == t[0, 3]).all():
            return f"the equations of {mb.task} are not [a, o, b, =] with one o and one ="
        if not ((t[:, 0] >= 2) & (t[:, 0] < vocab)).all():
            return f"the operands of {mb.task} are not the element tokens 2 .. vocab-1"
    return None


def forward_difference(fast: Callable, reference: Callable, params: dict, tokens) -> tuple[float, float]:
    """Relative differences of the logits and of the gradients (for a random cotangent)."""
    names = list(params)
    outputs = {}
    for label, forward in (("fast", fast), ("reference", reference)):
        logits = forward(params, tokens)
        cotangent = torch.randn(logits.shape, dtype=logits.dtype, generator=torch.Generator().manual_seed(0))
        grads = torch.autograd.grad((logits * cotangent).sum(), [params[n] for n in names], allow_unused=True)
        outputs[label] = logits.detach(), {n: torch.zeros_like(params[n]) if g is None else g
                                           for n, g in zip(names, grads)}
    (fast_logits, fast_grads), (ref_logits, ref_grads) = outputs["fast"], outputs["reference"]
    return (relative_difference({"": fast_logits}, {"": ref_logits}), relative_difference(fast_grads, ref_grads))


def steps_are_independent(science: Science, c, forward: Callable, params: dict, tokens, answers) -> bool:
    """Whether PROOF_STEPS training steps of all members at once move each member's parameters as
    the same steps of that member alone do."""
    def updates(start: dict, tokens, answers) -> dict:
        p = {k: v.detach().clone().requires_grad_() for k, v in start.items()}
        optimizer, schedule = science.make_optimizer(p, c)
        for _ in range(PROOF_STEPS):
            science.train_step(lambda t: forward(p, t), optimizer, schedule, tokens, answers)
        return {k: (p[k] - start[k]).detach() for k in p}

    together = updates(params, tokens, answers)
    for i in range(len(tokens)):
        alone = updates({k: v[i:i + 1] for k, v in params.items()}, tokens[i:i + 1], answers[i:i + 1])
        if relative_difference({k: v[i:i + 1] for k, v in together.items()}, alone) > PROOF_TOLERANCE:
            return False
    return True


# ======================================================================================
# Training and evaluation
# ======================================================================================

EVAL_ACTIVATION_BUDGET = {"cpu": 2 ** 24, "cuda": 2 ** 28}  # floats in the widest eval activation


@dataclass
class GroupResult:
    group: Group
    steps: np.ndarray  # (evals,) the step after which each evaluation ran
    curves: dict  # curve name -> (members, evals) float64
    wall_time_s: float  # training and evaluation of the whole group
    eval_time_s: float  # the part of wall_time_s spent evaluating
    forward: str = ""  # the forward it trained with

    @property
    def arch(self) -> Architecture:
        return self.group.arch

    @property
    def members(self) -> list[Member]:
        return self.group.members


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def curve_name(split: str, example_metric: str) -> str:
    """The name of the curve of an example metric averaged over a split, e.g. val_acc."""
    return f"{split}_{example_metric}"


@torch.no_grad()
def evaluate(science: Science, forward: Callable, params: dict, data: GroupData, d_model: int) -> dict:
    """Curves of every member at this point: each example metric averaged over each full split
    (<split>_<name>), then the model metrics. One pass over every equation of each member; the
    split masks pick the sums, accumulated in float64 so that accuracies are exact counts / n."""
    sums = {}  # (split, example metric) -> (members,)
    for members, n in data.eval_blocks:
        part = {k: v[members] for k, v in params.items()}
        m = members.stop - members.start
        chunk = max(64, EVAL_ACTIVATION_BUDGET[data.device.type] // (m * 2 * 4 * d_model))
        for start in range(0, n, chunk):
            rows = slice(start, min(start + chunk, n))
            per_example = torch.vmap(science.example_metrics)(forward(part, data.tokens[members, rows]),
                                                              data.answers[members, rows])
            for name, values in per_example.items():
                for split, mask in zip(data.split_names, data.split_masks[:, members, rows]):
                    total = sums.setdefault((split, name), data.split_sizes.new_zeros(data.split_sizes.shape[1]))
                    total[members] += (values.double() * mask).sum(1)
    names = list(dict.fromkeys(name for _, name in sums))
    curves = {curve_name(split, name): sums[split, name] / data.split_sizes[s]
              for s, split in enumerate(data.split_names) for name in names}
    return {**curves, **{k: v.double() for k, v in science.model_metrics(params).items()}}


def train_group(science: Science, group: Group, tables: dict, c, device: torch.device, choice: ForwardChoice,
                on_eval=None) -> tuple[GroupResult, dict]:
    """Train every member of a group together; returns (GroupResult, final parameters).

    on_eval(steps_done) is called after each evaluation (for progress). The host waits for the
    device only at evaluation points, to time them; curves stay on the device until the end."""
    start = time.perf_counter()
    # A model that draws random numbers (dropout) draws the same ones in every run of this group:
    # results repeat, and a resumed study matches an uninterrupted one.
    torch.manual_seed(zlib.crc32(repr((group.name, group.members)).encode()))
    dtype = getattr(torch, c.dtype)
    models = member_models(science, group, tables, c)
    params = stack_parameters(models, device, dtype)
    model = models[0].to(device, dtype)  # the plain module the generic forwards call (for its buffers)
    del models
    forward = make_forward(choice.forward, model, group.arch, device, dtype)
    data = GroupData(group.members, tables, c, science, device)
    optimizer, schedule = science.make_optimizer(params, run_config(c, group.members[0]))
    steps = science.evaluation_steps(c)
    curves, eval_time, next_eval = {}, 0.0, 0
    step_forward = lambda tokens: forward(params, tokens)
    for step in range(c.num_steps + 1):  # `step` steps done: evaluate if due, then take the next one
        if step > 0:
            tokens, answers = data.batch(step - 1)
            science.train_step(step_forward, optimizer, schedule, tokens, answers)
        if step == steps[next_eval]:  # the last is num_steps (check_evaluation_steps)
            synchronize(device)
            eval_start = time.perf_counter()
            model.eval()
            for name, value in evaluate(science, forward, params, data, group.arch.d_model).items():
                curves.setdefault(name, torch.zeros(len(group.members), len(steps), dtype=torch.float64,
                                                    device=device))[:, next_eval] = value
            model.train()
            synchronize(device)
            eval_time += time.perf_counter() - eval_start
            next_eval += 1
            if on_eval is not None:
                on_eval(step)
    result = GroupResult(group, np.array(steps), {k: v.cpu().numpy() for k, v in curves.items()},
                         time.perf_counter() - start, eval_time, choice.forward)
    return result, params


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, (torch.cuda.OutOfMemoryError, MemoryError)) or (
        isinstance(error, RuntimeError) and "can't allocate memory" in str(error))


def train_architecture(science: Science, group: Group, tables: dict, c, device: torch.device, choice: ForwardChoice,
                       max_members: int = 0, save_models: bool = False, on_progress=None) -> tuple[GroupResult, list]:
    """Every member of a group, in chunks of at most max_members (members are independent, so
    chunking changes no result; a coupling training step trains them one at a time). When the
    device runs out of memory the chunk is halved and the group starts again. on_progress(fraction
    of the group done). Returns the result and, with save_models, each chunk's (members, weights)."""
    members = group.members
    first = 1 if choice.one_at_a_time else (max_members or len(members))
    chunk = first
    while True:
        try:
            parts, weights = [], []
            for start in range(0, len(members), chunk):
                part = dataclasses.replace(group, members=members[start:start + chunk])
                report = None if on_progress is None else (
                    lambda step, start=start, n=len(part.members):
                    on_progress((start + n * step / c.num_steps) / len(members)))
                result, params = train_group(science, part, tables, c, device, choice, on_eval=report)
                parts.append(result)
                if save_models:
                    weights.append((part.members, {k: v.detach().cpu().numpy() for k, v in params.items()}))
            curves = {name: np.concatenate([p.curves[name] for p in parts]) for name in parts[0].curves}
            return GroupResult(group, parts[0].steps, curves, sum(p.wall_time_s for p in parts),
                               sum(p.eval_time_s for p in parts), choice.forward), weights
        except Exception as error:  # noqa: BLE001 - only out-of-memory is handled here
            if not is_out_of_memory(error) or chunk == 1:
                raise
            if chunk == first:  # one line, at the first split
                print(f"warning: {group.name} does not fit in memory; training it in smaller chunks of "
                      "runs (same results, more time)", file=sys.stderr, flush=True)
            chunk = (chunk + 1) // 2
            if device.type == "cuda":
                torch.cuda.empty_cache()


def forward_flops(arch: Architecture, num_classes: int, equations: int, prefix_rows: int) -> int:
    """Matmul FLOPs (2 per multiply-add) of one forward pass of one member, as the fast forward
    computes it: `equations` rows of positions 2-3 plus `prefix_rows` shared rows of positions
    0-1 in every block; the last block computes keys and values there, and the query, output
    projection and MLP for position 3 only. Attention scores over 4 positions (< 1%) are left out."""
    d, position_rows = arch.d_model, 2 * (equations + prefix_rows)
    full_block = position_rows * 2 * 12 * d * d  # qkv 3d^2, output d^2, MLP 8d^2 multiply-adds
    last_block = position_rows * 2 * 2 * d * d + equations * 2 * 10 * d * d
    return (arch.layers - 1) * full_block + last_block + equations * 2 * d * num_classes


def step_flops(arch: Architecture, table, batch_size: int) -> int:
    """One training step of one member: forward and backward (twice the forward)."""
    return 3 * forward_flops(arch, table.num_classes, batch_size, min(table.num_classes, batch_size))


def group_flops(group: Group, tables: dict, c, evaluations: int) -> float:
    """Training and evaluation FLOPs of a whole group (the fast forward's; the plain model's are
    about twice as many)."""
    total = 0.0
    for mb in group.members:
        t = tables[mb.task, mb.setting]
        evaluation = forward_flops(group.arch, t.num_classes, len(t.answers), t.num_classes)
        total += step_flops(group.arch, t, run_config(c, mb).batch_size) * c.num_steps + evaluation * evaluations
    return total


# ======================================================================================
# Results: records, means and standard errors, final_info.json
# ======================================================================================

BUCKETS = ("small", "medium", "large")


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


def parameter_count(science: Science, arch: Architecture, table, c) -> int:
    """Exact, from the plain model itself (built on the meta device: no memory, no time); c: the run config."""
    with torch.device("meta"):
        model = science.build_model(arch.layers, arch.d_model, arch.heads, table, 0, c)
    return sum(p.numel() for p in model.parameters())


def capacity_buckets(counts: dict[str, int]) -> dict[str, str]:
    """Three equal-width bins of log10(parameter count) over the study's range. A study of one
    size has the single bucket 'all'."""
    logs = {name: math.log10(n) for name, n in counts.items()}
    low, high = min(logs.values()), max(logs.values())
    if high - low < 1e-12:
        return {name: "all" for name in logs}
    width = (high - low) / len(BUCKETS)
    return {name: BUCKETS[min(int((v - low) / width), len(BUCKETS) - 1)] for name, v in logs.items()}


def study_records(science: Science, results: list[GroupResult], tables: dict, c, buckets: dict) -> list[dict]:
    """One record per run (task, architecture, setting, seed) with its metrics, in curve-row order."""
    records, varied = [], varied_axes(c)
    for res in results:
        for i, mb in enumerate(res.members):
            curves = {name: values[i] for name, values in res.curves.items()}
            records.append({
                "task": mb.task, "architecture": res.arch.name, "layers": res.arch.layers,
                "d_model": res.arch.d_model, "heads": res.arch.heads, "seed": mb.seed,
                "setting": setting_tag(mb.setting, varied), **dict(mb.setting), "bucket": buckets[res.arch.name],
                "parameter_count": parameter_count(science, res.arch, tables[mb.task, mb.setting], run_config(c, mb)),
                **science.run_metrics(res.steps, curves, c.num_steps),
                # members train together: each run is charged its share of the group's time
                "wall_time_s": res.wall_time_s / len(res.members),
            })
    return records


def record_key(record: dict, plain: bool) -> str:
    """The final_info key of a run: the task alone for a plain study (one architecture, no other
    axis: a drop-in baseline), else task/architecture and the varied axes, e.g. x_div_y/L2_D128_H4/bs64."""
    if plain:
        return record["task"]
    return "/".join(part for part in (record["task"], record["architecture"], record["setting"]) if part)


def rounded(value, decimals: int):
    value = float(value)
    if not math.isfinite(value):
        return None
    return int(round(value)) if decimals == 0 else round(float(value), decimals)


def final_info(records: list[dict], headline: dict, plain: bool) -> dict:
    """The AI-Scientist final_info.json: per key (task, architecture, setting) the headline
    metrics' means and standard errors over seeds, rounded, and their per-seed values."""
    entries: dict[str, list] = {}
    for r in records:
        entries.setdefault(record_key(r, plain), []).append(r)
    info = {}
    for key, runs in entries.items():
        per_seed = {name: [r[name] for r in runs] for name in headline}
        stats = {name: mean_stderr(values) for name, values in per_seed.items()}
        info[key] = {"means": {f"{n}_mean": rounded(m, headline[n]) for n, (m, _) in stats.items()},
                     "stderrs": {f"{n}_stderr": rounded(s, headline[n]) for n, (_, s) in stats.items()},
                     "final_info_dict": per_seed}
    return info


HARNESS_MESSAGE_LIMIT = 20_000  # characters of results message the AI-Scientist harness sends comfortably


def results_message(info: dict) -> str:
    """What the AI-Scientist harness sends its model after a run: str() of the means."""
    return str({key: value["means"] for key, value in info.items()})


def curve_names(science: Science, c) -> list[str]:
    """The curves evaluate() records, named as it names them (<split>_<example metric>, then the
    model metrics), found by calling experiment.py's own functions on the first run of the study."""
    member = Member(c.tasks[0], 0, settings(c)[0])
    config = run_config(c, member)
    table = science.build_table(member.task, config)
    splits, _ = science.run_data(len(table.answers), config, 0)
    examples = science.example_metrics(table.tokens.new_zeros(2, table.num_classes, dtype=torch.float32),
                                       table.answers[:2])
    a = architectures(c)[0]
    model = science.build_model(a.layers, a.d_model, a.heads, table, 0, config)
    weights = science.model_metrics({k: v.detach()[None] for k, v in model.named_parameters()})
    return [curve_name(split, name) for split in splits for name in examples] + list(weights)


def check_evaluation_steps(science: Science, c) -> None:
    """The evaluation steps must rise strictly from 0 or later to num_steps, whole numbers."""
    steps = science.evaluation_steps(c)
    if not (len(steps) and all(isinstance(s, (int, np.integer)) for s in steps) and steps[-1] == c.num_steps
            and steps[0] >= 0 and all(a < b for a, b in zip(steps, steps[1:]))):
        shown = ", ".join(map(str, steps[:4])) + (", ..., " + str(steps[-1]) if len(steps) > 4 else "")
        raise UsageError(f"evaluation_steps gives [{shown}]; it must give whole steps in increasing order, from 0 "
                         f"(before training) or later, ending with num_steps ({c.num_steps})")


def check_headline(science: Science, c) -> None:
    """Every headline metric must be a key of the records, checked before any training: run_metrics
    applied to stand-in curves of every name the study will record."""
    steps = np.array(science.evaluation_steps(c)[:3])
    curves = {name: np.zeros(len(steps)) for name in curve_names(science, c)}
    metrics = science.run_metrics(steps, curves, c.num_steps)
    known = set(metrics) | {"parameter_count", "wall_time_s"}
    missing = [name for name in science.headline_metrics if name not in known]
    if missing:
        raise UsageError(f"HEADLINE_METRICS names {missing[0]!r}, which run_metrics does not return for this "
                         f"study; choose from {', '.join(sorted(known))}")
    for name in science.headline_metrics:  # averaged over seeds: a number, or None where undefined
        if not (metrics.get(name) is None or isinstance(metrics[name], (int, float, np.number, np.bool_))):
            raise UsageError(f"HEADLINE_METRICS names {name!r}, whose value is {type(metrics[name]).__name__}, "
                             "not a number; final_info.json averages it over seeds")


# ======================================================================================
# Files: atomic writes, the study's folder, provenance, saved models and queries
# ======================================================================================

GROUPS_DIR = "groups"  # one file per finished group, for resuming
MODELS_DIR = "models"  # one file per group with its members' final weights (--save_models=1)
STUDY_FILE = "study.json"  # written first: which study this folder holds
OUTPUT_FILES = ("final_info.json", "runs.json", "curves.npz", "architectures.json", "config.json",
                "provenance.json")


def write_atomic(path: str, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename: a file is whole or absent."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def plain(obj):
    """JSON's own types: NumPy numbers and arrays as Python numbers and lists, tuples as lists,
    NaN and infinities (which JSON lacks) as null."""
    if isinstance(obj, dict):
        return {key: plain(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [plain(value) for value in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: str, obj) -> None:
    write_atomic(path, (json.dumps(plain(obj), indent=1, allow_nan=False) + "\n").encode())


def write_npz(path: str, **arrays) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    write_atomic(path, buffer.getvalue())


def file_hash(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def study_identity(science: Science, c) -> dict:
    """What makes two studies the same: the config and the code of the science."""
    return {**dataclasses.asdict(c), "experiment_sha256": file_hash(science.source)}


def config_hash(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def config_from_json(science: Science, saved: dict):
    """The Config that config.json or study.json recorded (JSON lists back to tuples; fields it
    does not know are left out, fields it lacks take their defaults)."""
    fields = {f.name for f in dataclasses.fields(science.config)}
    return science.config(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in fields})


def member_json(mb: Member) -> list:
    return [mb.task, mb.seed, dict(mb.setting)]


def member_from_json(data: list) -> Member:
    task, seed, setting = data
    return Member(task, seed, tuple(setting.items()))


def group_json(group: Group) -> dict:
    return {"arch": dataclasses.asdict(group.arch), "members": [member_json(m) for m in group.members],
            "tag": group.tag}


def group_from_json(data: dict) -> Group:
    return Group(Architecture(**data["arch"]), [member_from_json(m) for m in data["members"]], data["tag"])


def group_path(out_dir: str, group: Group, folder: str = GROUPS_DIR) -> str:
    return os.path.join(out_dir, folder, group.name + ".npz")


def save_group(out_dir: str, result: GroupResult, study_hash: str) -> None:
    meta = {"config_hash": study_hash, "group": result.group.name, "members": [member_json(m) for m in result.members],
            "curves": list(result.curves), "wall_time_s": result.wall_time_s, "eval_time_s": result.eval_time_s,
            "forward": result.forward}
    os.makedirs(os.path.join(out_dir, GROUPS_DIR), exist_ok=True)
    write_npz(group_path(out_dir, result.group), steps=result.steps, meta=np.array(json.dumps(meta)),
              **{f"curve.{name}": values for name, values in result.curves.items()})


def load_group(out_dir: str, group: Group, study_hash: str, steps: list[int]) -> GroupResult | None:
    """A finished group saved by an earlier, interrupted run of the same study, or None.
    A damaged or foreign file is reported in one line and its group trained again."""
    path = group_path(out_dir, group)
    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            meta, saved_steps = json.loads(str(f["meta"])), f["steps"]
            curves = {name: f[f"curve.{name}"] for name in meta["curves"]}
        if meta["config_hash"] != study_hash:
            problem = "it belongs to another config"
        elif [member_from_json(m) for m in meta["members"]] != group.members:
            problem = "its runs differ"
        elif list(saved_steps) != steps or any(v.shape != (len(group.members), len(steps)) for v in curves.values()):
            problem = "its curves have the wrong shape"
        else:
            problem = None
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as e:
        problem = f"it is unreadable ({type(e).__name__})"
    if problem:
        print(f"warning: {os.path.relpath(path)}: {problem}; training {group.name} again", file=sys.stderr, flush=True)
        return None
    return GroupResult(group, saved_steps, curves, meta["wall_time_s"], meta["eval_time_s"], meta.get("forward", ""))


def save_models(out_dir: str, group: Group, weights: list) -> None:
    """models/<group>.npz from each chunk's (members, {name: (members, ...) array}): the plain
    model's parameters as plain arrays ("part<k>.<name>") and, as JSON, the architecture and the
    members. Loading runs no code."""
    arrays, parts = {}, []
    for k, (members, params) in enumerate(weights):
        arrays.update({f"part{k}.{name}": value for name, value in params.items()})
        parts.append({"members": [member_json(m) for m in members], "parameters": list(params)})
    meta = {"format_version": MODELS_FORMAT, "group": group.name, "architecture": dataclasses.asdict(group.arch),
            "parts": parts}
    os.makedirs(os.path.join(out_dir, MODELS_DIR), exist_ok=True)
    write_npz(group_path(out_dir, group, MODELS_DIR), meta=np.array(json.dumps(meta)), **arrays)


def load_member_weights(path: str, member: Member) -> dict[str, torch.Tensor]:
    """One member's parameters (the plain model's state dict) from a save_models file."""
    with np.load(path, allow_pickle=False) as f:
        meta = json.loads(str(f["meta"]))
        if meta.get("format_version") != MODELS_FORMAT:
            raise UsageError(f"{path} was saved by an older experiment.py; train the study again with --save_models=1")
        for k, part in enumerate(meta["parts"]):
            members = [member_from_json(m) for m in part["members"]]
            if member in members:
                row = members.index(member)
                return {name: torch.from_numpy(f[f"part{k}.{name}"][row]) for name in part["parameters"]}
    raise UsageError(f"{path} holds no weights for {member.task} seed {member.seed}; the study may have "
                     "been resumed without --save_models=1 for this group")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model} ({torch.get_num_threads()} threads)"


def git_state(paths: list[str]) -> dict:
    """The commit of the files' repository and whether any of them differs from it."""
    here = os.path.dirname(os.path.abspath(paths[0]))
    try:
        git = lambda *a: subprocess.run(["git", "-C", here, *a], capture_output=True, text=True,
                                        timeout=10).stdout.strip()
        commit = git("rev-parse", "HEAD")
        modified = bool(git("status", "--porcelain", "--", *map(os.path.abspath, paths)))
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "source_modified": None}
    return {"git_commit": commit or None, "source_modified": modified if commit else None}


def write_outputs(science: Science, out_dir: str, results: list[GroupResult], tables: dict, c, options: Options,
                  provenance: dict) -> dict:
    """Every output file of a finished study; final_info.json last, so its presence means done."""
    archs = architectures(c)
    setting = settings(c)[0]  # buckets and architecture sizes: counted on the first task and setting
    first_run = run_config(c, Member(c.tasks[0], 0, setting))
    counts = {a.name: parameter_count(science, a, tables[c.tasks[0], setting], first_run) for a in archs}
    buckets = capacity_buckets(counts)
    records = study_records(science, results, tables, c, buckets)
    names = list(results[0].curves)
    write_npz(os.path.join(out_dir, "curves.npz"), step=results[0].steps,
              **{name: np.concatenate([r.curves[name] for r in results]) for name in names})
    write_json(os.path.join(out_dir, "runs.json"), records)
    write_json(os.path.join(out_dir, "architectures.json"), [{
        "name": a.name, "layers": a.layers, "d_model": a.d_model, "heads": a.heads,
        "aspect_ratio": a.d_model / a.layers, "bucket": buckets[a.name], "parameter_count": counts[a.name],
        "parameter_count_by_task": {t: parameter_count(science, a, tables[t, setting], first_run) for t in c.tasks},
    } for a in archs])
    write_json(os.path.join(out_dir, "config.json"), {
        "format_version": FORMAT_VERSION, "preset": options.preset, "overrides": options.overrides,
        "varied": changed_fields(c),
        "axes": {name: list(axis_values(c, name)) for name in varied_axes(c)},  # beyond the architecture
        "config": dataclasses.asdict(c),
    })
    write_json(os.path.join(out_dir, "provenance.json"), provenance)
    info = final_info(records, science.headline_metrics, plain=len(archs) == 1 and not varied_axes(c))
    write_json(os.path.join(out_dir, "final_info.json"), info)
    return info


OPERATORS = {"x_plus_y": "+", "x_minus_y": "-", "x_div_y": "/", "permutation": "*"}
QUERY_SELECTORS = ("query", "task", "arch", "seed")


def parse_element(text: str, table, side: str) -> int:
    """An operand as typed (a number mod p, or a permutation such as 10234 or (1,0,2,3,4)) -> its
    element index; out-of-range operands are usage errors."""
    if table.task == "permutation":
        digits = re.sub(r"[\s,()\[\]]", "", text)
        perm = tuple(int(d) for d in digits) if digits.isdigit() else None
        if perm not in table.elements:
            k = len(table.elements[0])
            raise UsageError(f"{text!r} is not a permutation of 0..{k - 1}; write it as {''.join(map(str, range(k)))[::-1]}")
        return table.elements.index(perm)
    prime = len(table.elements)
    if not text.isdigit() or int(text) >= prime:
        raise UsageError(f"operand {text!r} is out of range: the {table.task} operands are 0..{prime - 1}")
    if table.task == "x_div_y" and side == "right" and int(text) == 0:
        raise UsageError("division by 0: x_div_y divides by 1..p-1")
    return int(text)


def parse_equation(text: str, table) -> int:
    """'30/74' (an '=' at the end is allowed) -> the row of that equation in the task's table."""
    op = OPERATORS.get(table.task)
    if op is None:
        raise UsageError(f"--query does not know how to write equations of {table.task}")
    match = re.fullmatch(rf"\s*([^{re.escape(op)}]+?)\s*{re.escape(op)}\s*([^=]+?)\s*=?\s*", text)
    if not match:
        raise UsageError(f"cannot read {text!r} as an equation of {table.task}: write it as a{op}b, e.g. "
                         + ("01234*10234" if table.task == "permutation" else f"30{op}74"))
    a, b = parse_element(match[1], table, "left"), parse_element(match[2], table, "right")
    rows = torch.nonzero((table.tokens[:, 0] == a + 2) & (table.tokens[:, 2] == b + 2)).flatten()
    return int(rows[0])


def pick(name: str, options: list, given: str | None, kind: type):
    """The value of a query selector: the one given (checked against the study's), or the only one."""
    if given is None:
        if len(options) == 1:
            return options[0]
        raise UsageError(f"--{name} is needed: the run has {', '.join(map(format_number, options))}")
    value = parse_value(name, given, kind, "one")
    if value not in options:
        raise UsageError(f"--{name}={given}: the run has {', '.join(map(format_number, options))}")
    return value


def run_query(science: Science, pairs: dict[str, str], equations: list[str]) -> list[str]:
    """The saved model of one run answers equations: one line per equation with its answer, the
    answer's probability and the true answer."""
    run_dir = pairs["query"]
    try:
        with open(os.path.join(run_dir, "config.json")) as f:
            c = config_from_json(science, json.load(f)["config"])
    except (OSError, ValueError, KeyError, TypeError):
        raise UsageError(f"--query={run_dir}: no finished study there (config.json missing or unreadable)") from None
    types_ = field_types(science.config)
    unknown = [k for k in pairs if k not in QUERY_SELECTORS and k not in axes(c)]
    if unknown:
        raise UsageError(f"--{unknown[0]} is not a query option; use "
                         + ", ".join(f"--{k}" for k in QUERY_SELECTORS + tuple(axes(c))))
    if not equations:
        raise UsageError("no equation to ask: add some after the options, e.g. 30/74 5/3")
    task = pick("task", list(c.tasks), pairs.get("task"), str)
    arch = {a.name: a for a in architectures(c)}[pick("arch", [a.name for a in architectures(c)], pairs.get("arch"), str)]
    seed = pick("seed", list(range(c.seeds)), pairs.get("seed"), int)
    setting = tuple((a, pick(a, list(axis_values(c, a)), pairs.get(a), types_[a][0])) for a in axes(c))
    member = Member(task, seed, setting)
    tables = build_tables(science, c)
    group = next(g for g in plan_groups(c, tables) if g.arch == arch and member in g.members)  # its file's name
    path = group_path(run_dir, group, MODELS_DIR)
    if not os.path.exists(path):
        raise UsageError(f"{run_dir} has no saved weights for {group.name}; run the study with --save_models=1")
    table = tables[task, setting]
    rows = [parse_equation(e, table) for e in equations]
    model = science.build_model(arch.layers, arch.d_model, arch.heads, table, seed, run_config(c, member))
    model.load_state_dict(load_member_weights(path, member), strict=False)
    with torch.no_grad():
        probs = model.eval()(table.tokens[rows]).softmax(-1)  # (equations, classes)
    show = lambda e: "".join(map(str, table.elements[e])) if task == "permutation" else str(table.elements[e])
    varied = "".join(f" {a}={format_number(v)}" for a, v in setting if a in varied_axes(c))
    lines = [f"{run_dir}: {task} {arch.name} seed {seed}{varied}"]
    for text, row, p in zip(equations, rows, probs):
        answer, truth = int(p.argmax()), int(table.answers[row])
        lines.append(f"{text.strip().rstrip('=')} = {show(answer)}  (p={float(p[answer]):.4f})  true {show(truth)}  "
                     + ("correct" if answer == truth else "WRONG"))
    return lines


# ======================================================================================
# Backends: groups one after another here, or as Ray tasks
# ======================================================================================

RAY_MAX_RETRIES = 3  # attempts after the first when a worker dies (killed, node lost)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device={name} but no CUDA GPU is visible; use --device=cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device={name} but only {torch.cuda.device_count()} GPU(s) are visible")
    return device


def configure_backend(device: torch.device) -> None:
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 matmuls: the template's fp32 at tensor-core speed
        torch.backends.cudnn.allow_tf32 = True
    else:
        if "OMP_NUM_THREADS" not in os.environ:  # an explicit thread count wins
            torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                  else os.cpu_count() or 1)
        keep_freed_memory()


def keep_freed_memory() -> None:
    """Make glibc reuse freed activation buffers instead of returning them to the OS.

    Every training step allocates the same tens of MB of activations. By default glibc maps
    each large block afresh and unmaps it on free, so every elementwise op pays page faults on
    new memory: measured 5x slower on a 2-core machine. Serving them from a heap that is never
    trimmed removes that cost. No effect (and no error) where glibc is not the allocator."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4  # from glibc's malloc.h
    libc.mallopt(M_MMAP_MAX, 0)  # no per-block mmap: large blocks come from the heap
    libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)  # keep up to 1 GiB of freed heap
    libc.mallopt(M_TOP_PAD, 1 << 28)  # grow the heap in 256 MiB steps


def train_groups_local(science: Science, groups: list[Group], choices: dict, tables: dict, c, options: Options,
                       device: torch.device, on_progress):
    """Yield (group, GroupResult, weights if save_models, where it ran) for every group, one after
    another on this machine; on_progress(group, fraction done)."""
    where = {"host": socket.gethostname(), "device_name": device_name(device)}
    for group in groups:
        result, weights = train_architecture(science, group, tables, c, device, choices[group.name],
                                             options.max_members, options.save_models,
                                             lambda fraction, group=group: on_progress(group, fraction))
        yield group, result, weights, where


def train_group_task(module: str, config: dict, group: dict, choice: dict, options: dict) -> dict:
    """The Ray task: one group, from and to plain data (it may run on another machine). The worker
    imports the science by module name (it has no other copy of it). The device is resolved here:
    with --device=auto, the GPU that Ray assigned to the task, if any."""
    science = importlib.import_module(module).science()
    c, g, opts = config_from_json(science, config), group_from_json(group), Options(**options)
    device = resolve_device(opts.device)
    configure_backend(device)
    result, weights = train_architecture(science, g, build_tables(science, c), c, device, ForwardChoice(**choice),
                                         opts.max_members, opts.save_models)
    return {"steps": result.steps, "curves": result.curves, "wall_time_s": result.wall_time_s,
            "eval_time_s": result.eval_time_s, "forward": result.forward,
            "weights": [([member_json(m) for m in members], params) for members, params in weights],
            "where": {"host": socket.gethostname(), "device_name": device_name(device)}}


def train_groups_ray(science: Science, groups: list[Group], choices: dict, c, options: Options, on_progress):
    """Like train_groups_local, but every group is a Ray task (one GPU each when the cluster has
    GPUs, else one CPU), yielded as soon as it finishes. A task whose worker dies is retried
    (RAY_MAX_RETRIES). experiment.py and this file travel to the workers as modules (py_modules)."""
    import logging

    import ray
    ray.init(address=options.ray_address, runtime_env={"py_modules": [os.path.abspath(__file__),
                                                                      os.path.abspath(science.source)]},
             include_dashboard=False, logging_level=logging.ERROR)
    pending = {}  # task -> group, for the tasks still running
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        task = ray.remote(train_group_task).options(num_gpus=1 if gpus else 0, num_cpus=1, max_retries=RAY_MAX_RETRIES)
        module = os.path.splitext(os.path.basename(science.source))[0]
        config, opts = dataclasses.asdict(c), dataclasses.asdict(options)
        pending.update({task.remote(module, config, group_json(g), dataclasses.asdict(choices[g.name]), opts): g
                        for g in groups})
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)  # short waits: Ctrl-C is seen
            for ref in done:
                group, out = pending.pop(ref), ray.get(ref)
                result = GroupResult(group, out["steps"], out["curves"], out["wall_time_s"], out["eval_time_s"],
                                     out["forward"])
                weights = [([member_from_json(m) for m in members], params) for members, params in out["weights"]]
                on_progress(group, 1.0)
                yield group, result, weights, out["where"]
    finally:  # interrupted or failed: stop the rest, also on a cluster that outlives this driver
        for ref in pending:
            ray.cancel(ref, force=True)
        ray.shutdown()


# ======================================================================================
# Main: the output folder, progress, interruptions and errors
# ======================================================================================

# The time a group takes on a 2-core CPU, as fitted to the committed studies' group times (within
# 12% for groups of 30 seconds to 50 minutes): its matmuls at CPU_FLOPS_ESTIMATE, plus a fixed cost
# per member, step and block (small models spend most of their time outside the matmuls).
CPU_FLOPS_ESTIMATE = 80e9  # FLOP/s of the fast forward's matmuls
CPU_BLOCK_STEP_FLOPS = 1.6e8  # one member's step through one block besides its matmuls (2 ms), in FLOP at that rate
CPU_WARNING_S = 7200  # a study estimated longer than this on a CPU gets a warning before it starts


def study_costs(groups: list[Group], tables: dict, c, evaluations: int, device: torch.device) -> tuple[float, dict]:
    """The FLOPs of training these groups, and what weighs each group's share of the study's time,
    in FLOP: on a CPU its FLOPs and the fixed cost of its member-steps; elsewhere (not measured)
    its FLOPs alone."""
    flops, costs = 0.0, {}
    for g in groups:
        group = group_flops(g, tables, c, evaluations)
        fixed = CPU_BLOCK_STEP_FLOPS * c.num_steps * len(g.members) * g.arch.layers if device.type == "cpu" else 0.0
        flops, costs[g.name] = flops + group, group + fixed
    return flops, costs


def cpu_seconds(costs: dict) -> float:
    """The time the groups of these costs (study_costs) take on 2 CPU cores."""
    return sum(costs.values()) / CPU_FLOPS_ESTIMATE


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def config_difference(saved: dict, now: dict) -> str:
    """The first fields (up to 3) in which two studies, as read from JSON, differ."""
    now = json.loads(json.dumps(now))  # tuples -> lists, as in the saved file
    shown = lambda v: ",".join(map(str, v)) if isinstance(v, list) else str(v)[:12]
    changed = [k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
    return "; ".join(f"{k}: {shown(saved.get(k))} in out_dir, {shown(now.get(k))} now" for k in changed[:3])


def prepare_out_dir(path: str, overwrite: bool, identity: dict) -> bool:
    """Check out_dir before any work: True when it holds an unfinished (or finished) run of the
    same study, to resume. Refuses another study's folder or a foreign one unless overwrite,
    and proves the folder is writable."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"--out_dir={path} exists and is not a folder; choose another --out_dir")
    resume = False
    if os.path.isdir(path) and os.listdir(path):
        try:
            with open(os.path.join(path, STUDY_FILE)) as f:
                saved = json.load(f)
            same = saved["format_version"] == FORMAT_VERSION and saved["config_hash"] == config_hash(identity)
            difference = "" if same else (config_difference(saved["config"], identity) or "an older output format")
        except (OSError, ValueError, KeyError, TypeError):
            same, difference = False, None
        resume = same
        if not same and not overwrite:
            if difference is None:
                raise UsageError(f"--out_dir={path} is not empty and holds no study of this script; choose "
                                 "a new folder, or pass --overwrite=1 to replace its results")
            raise UsageError(f"--out_dir={path} holds another study ({difference}); choose a new folder, "
                             "or pass --overwrite=1 to replace it")
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise UsageError(f"cannot write to --out_dir={path}: {e.strerror or e}") from None
    return resume


def remove_partial_files(path: str) -> None:
    """Temporary files left by a process killed while writing (the real files are intact)."""
    for folder in (path, os.path.join(path, GROUPS_DIR), os.path.join(path, MODELS_DIR)):
        if os.path.isdir(folder):
            for name in os.listdir(folder):
                if name.startswith(".") and name.endswith(".tmp"):
                    os.unlink(os.path.join(folder, name))


def clear_results(path: str) -> None:
    """--overwrite=1 on another study: remove this script's files, so nothing stale is mixed in."""
    for name in OUTPUT_FILES + (STUDY_FILE,):
        if os.path.exists(os.path.join(path, name)):
            os.unlink(os.path.join(path, name))
    for folder in (os.path.join(path, GROUPS_DIR), os.path.join(path, MODELS_DIR)):
        if os.path.isdir(folder):
            for name in os.listdir(folder):
                if name.endswith(".npz"):
                    os.unlink(os.path.join(folder, name))


def group_summary(science: Science, result: GroupResult, c) -> str:
    """One line per finished group: mean memorization/grokking step and grokked count per task
    (and setting, when the group holds several)."""
    parts, diverged, varied = [], 0, varied_axes(c)
    labels = [" ".join(filter(None, (mb.task, setting_tag(mb.setting, varied)))) for mb in result.members]
    for label in dict.fromkeys(labels):
        metrics = [science.run_metrics(result.steps, {k: v[i] for k, v in result.curves.items()}, c.num_steps)
                   for i, other in enumerate(labels) if other == label]
        grok = np.mean([m["step_val_acc_99"] for m in metrics])
        mem = np.mean([m["step_train_acc_99"] for m in metrics])
        parts.append(f"{label} mem {mem:.0f} grok {grok:.0f} ({sum(m['grokked'] for m in metrics)}/{len(metrics)})")
        diverged += sum(m["diverged"] for m in metrics)
    warning = f"  {plural(diverged, 'run')} DIVERGED (NaN/inf loss)" if diverged else ""
    return f"{result.group.name}: " + "; ".join(parts) + f"  [{result.wall_time_s:.0f} s]" + warning


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived: stop where we are; finished groups are already saved. Not an
    Exception (as KeyboardInterrupt is not), so that no `except Exception` on the way, such as the
    forward check's, takes it for an error of the code it guards and carries on."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def raise_interrupted(signum, frame):
    raise Interrupted(signum)


def resume_command(argv: list[str]) -> str:
    preset = os.environ.get(PRESET_ENV)
    prefix = f"{PRESET_ENV}={shlex.quote(preset)} " if preset and not any(a.startswith("--preset") for a in argv) else ""
    return prefix + shlex.join(["python", sys.argv[0] or "experiment.py"] + argv)


def error_location(error: BaseException, source: str) -> str:
    """Where in experiment.py an exception came from: its innermost frame in that file."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if os.path.abspath(f.filename) == os.path.abspath(source)]
    if not frames:
        return ""
    f = frames[-1]
    return f" (at {os.path.basename(source)} line {f.lineno}, in {f.name}: {(f.line or '').strip()[:120]})"


PROGRESS_LINE_EVERY_S = 300  # in a log, a progress line at least this often, also inside a long group


class Progress:
    """Progress of the groups still to train, weighted by their cost: a bar on a terminal; where
    stderr is not one (a log, the AI-Scientist harness), one plain line per finished group and
    one every PROGRESS_LINE_EVERY_S seconds while a group trains."""

    def __init__(self, costs: dict[str, float]):
        self.costs, self.done = costs, {name: 0.0 for name in costs}
        self.total, self.start = sum(costs.values()) or 1.0, time.perf_counter()
        self.last_line = self.start
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=self.total, unit_scale=True, dynamic_ncols=True, mininterval=0.5,
                            smoothing=0.05, bar_format="{l_bar}{bar}| {elapsed}<{remaining}{postfix}")

    def update(self, group: Group, fraction: float) -> None:
        self.done[group.name] = fraction
        finished = sum(f >= 1 for f in self.done.values())
        if self.bar is not None:
            self.bar.update(sum(self.costs[n] * f for n, f in self.done.items()) - self.bar.n)
            running = f"; {group.name} {100 * fraction:.0f}%" if fraction < 1 else ""
            self.bar.set_postfix_str(f"{finished}/{len(self.done)} groups done{running}", refresh=False)
        elif fraction >= 1 or time.perf_counter() - self.last_line >= PROGRESS_LINE_EVERY_S:
            share = sum(self.costs[n] * f for n, f in self.done.items()) / self.total
            self.last_line = time.perf_counter()
            elapsed = self.last_line - self.start
            eta = elapsed * (1 - share) / share if share > 0 else float("nan")
            running = f", {group.name} {100 * fraction:.0f}% done" if fraction < 1 else ""
            print(f"progress: {finished}/{len(self.done)} groups ({100 * share:.0f}%{running}), {clock(elapsed)} "
                  f"elapsed, about {clock(eta)} left", file=sys.stderr, flush=True)

    def write(self, line: str) -> None:
        (self.bar.write if self.bar is not None else print)(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def main(science: Science, argv: list[str] | None = None) -> int:
    """The command line of experiment.py."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        if any(a in ("-h", "--help") for a in argv):
            print(usage(science, sys.modules[science.config.__module__].__doc__ or ""))
            return 0
        if any(a == "--query" or a.startswith("--query=") for a in argv):
            print("\n".join(run_query(science, *split_arguments(argv))))
            return 0
        c, options = resolve(science, argv)
        check_evaluation_steps(science, c)
        check_headline(science, c)
        # With Ray the workers pick their device (the GPU Ray gives a task, if any); the driver only plans.
        device = resolve_device(options.device) if options.backend == "local" else torch.device("cpu")
        resume = prepare_out_dir(options.out_dir, options.overwrite, study_identity(science, c))
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, raise_interrupted)
    out_dir = options.out_dir
    try:
        return run_study(science, c, options, device, resume, argv)
    except Interrupted as e:
        done = len(os.listdir(os.path.join(out_dir, GROUPS_DIR))) if os.path.isdir(os.path.join(out_dir, GROUPS_DIR)) else 0
        print(f"\ninterrupted by {e}: {plural(done, 'finished group')} kept in {out_dir}/{GROUPS_DIR}; "
              f"resume with: {resume_command(argv)}", file=sys.stderr, flush=True)
        return 128 + e.signum
    except OSError as e:  # a full disk or a folder gone while training
        print(f"error: cannot write to {out_dir}: {e.strerror or e}; finished groups are kept in "
              f"{out_dir}/{GROUPS_DIR}, resume with: {resume_command(argv)}", file=sys.stderr, flush=True)
        return 1
    except Exception as e:  # noqa: BLE001 - most often an error in an edited experiment.py
        traceback.print_exc()
        message = " ".join(str(e).split())[:400]
        print(f"error: {type(e).__name__}: {message}{error_location(e, science.source)}", file=sys.stderr, flush=True)
        return 1


def run_study(science: Science, c, options: Options, device: torch.device, resume: bool, argv: list[str]) -> int:
    """Plan, check the forwards, train (or load) every group, write the outputs."""
    out_dir = options.out_dir
    configure_backend(device)
    started = datetime.datetime.now(datetime.timezone.utc)
    sources = [science.source, __file__]
    code = {"source_sha256": file_hash(science.source), "runner_sha256": file_hash(__file__), **git_state(sources)}
    identity = study_identity(science, c)
    study_hash = config_hash(identity)
    remove_partial_files(out_dir)
    if not resume:
        clear_results(out_dir)
        write_json(os.path.join(out_dir, STUDY_FILE), {"format_version": FORMAT_VERSION, "config_hash": study_hash,
                                                      "config": identity})
    tables = build_tables(science, c)
    groups = plan_groups(c, tables)
    steps = science.evaluation_steps(c)
    saved = {g.name: load_group(out_dir, g, study_hash, steps) for g in groups}
    for g in groups:  # a group saved before --save_models=1 was asked for trains again, for its weights
        if options.save_models and saved[g.name] and not os.path.exists(group_path(out_dir, g, MODELS_DIR)):
            saved[g.name] = None
    todo = [g for g in groups if not saved[g.name]]
    flops, costs = study_costs(todo, tables, c, len(steps), device)
    work = "nothing left to train" if not todo else (
        f"about {flops / 1e12:.1f} TFLOP {'left ' if len(todo) < len(groups) else ''}to train")
    runs = sum(len(g.members) for g in groups)
    varied = "".join(f" x {len(axis_values(c, a))} {a}" for a in varied_axes(c))
    where = device_name(device) if options.backend == "local" else \
        f"Ray ({options.ray_address or 'a local instance'}, groups in parallel)"
    print(f"study: {plural(len(architectures(c)), 'architecture')}{varied} x {plural(len(c.tasks), 'task')} x "
          f"{plural(c.seeds, 'seed')} = {plural(runs, 'run')} of {c.num_steps} steps, as "
          f"{plural(len(groups), 'group')} ({len(groups) * c.num_steps:,} batched steps), on {where}; {work}",
          flush=True)
    changed = changed_fields(c)
    if changed:  # says where each value comes from: an edited default a preset overrides shows here
        sources = [f"preset {options.preset}"] * bool(options.preset) + ["the command line"] * bool(options.overrides)
        print("config: Config's defaults but " + " ".join(f"{n}={format_value(getattr(c, n))}" for n in changed)
              + f" (from {' and '.join(sources)})", flush=True)
    if len(todo) < len(groups):
        print(f"resuming: {len(groups) - len(todo)} of {plural(len(groups), 'group')} already finished in "
              f"{out_dir}/{GROUPS_DIR}", flush=True)
    seconds = cpu_seconds(costs)
    if options.backend == "local" and device.type == "cpu" and seconds > CPU_WARNING_S:
        span = f"{seconds / 3600:.1f} hours" if seconds < 2 * 86400 else f"{seconds / 86400:.0f} days"
        print(f"warning: this study needs roughly {span} on 2 CPU cores (the AI-Scientist harness stops a run "
              "after 2 hours); use a GPU, or --preset=demo / --preset=smoke, or fewer --layers/--dims/--heads/--seeds",
              flush=True)
    choices = choose_forwards(science, todo, tables, c, options.forward)
    progress, ran_on, finished = Progress(costs), {}, {name: r for name, r in saved.items() if r}
    try:
        if options.backend == "ray":
            stream = train_groups_ray(science, todo, choices, c, options, progress.update)
        else:
            stream = train_groups_local(science, todo, choices, tables, c, options, device, progress.update)
        for group, result, weights, where in stream:
            if options.save_models:  # before the group file: a saved group always has its weights
                save_models(out_dir, group, weights)
            save_group(out_dir, result, study_hash)
            finished[group.name], ran_on[group.name] = result, where
            progress.write(group_summary(science, result, c))
    finally:
        progress.close()
    results = [finished[g.name] for g in groups]
    ended = datetime.datetime.now(datetime.timezone.utc)
    provenance = {
        "command": [os.path.basename(sys.argv[0])] + argv,
        "started_utc": started.isoformat(timespec="seconds"), "finished_utc": ended.isoformat(timespec="seconds"),
        "wall_time_s": (ended - started).total_seconds(),
        "groups": [{"group": r.group.name, "members": len(r.members), "resumed": bool(saved[r.group.name]),
                    "forward": r.forward, **({"forward_reason": choices[r.group.name].reason} if r.group.name in choices else {}),
                    "wall_time_s": r.wall_time_s, "eval_time_s": r.eval_time_s, **ran_on.get(r.group.name, {})}
                   for r in results],
        "options": {k: v for k, v in dataclasses.asdict(options).items() if k not in ("out_dir", "overrides")},
        "device": str(device) if options.backend == "local" else "per group (Ray workers)",
        "device_name": device_name(device),
        "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
        "platform": platform.platform(), "host": socket.gethostname(),
        **code,
    }
    message = len(results_message(write_outputs(science, out_dir, results, tables, c, options, provenance)))
    print(f"wrote {out_dir}/final_info.json ({runs} runs) in {provenance['wall_time_s']:.0f} s", flush=True)
    if message > HARNESS_MESSAGE_LIMIT:
        print(f"warning: the means in final_info.json take {message:,} characters, all of which the AI-Scientist "
              "harness sends to its model after a run; report fewer HEADLINE_METRICS or train a smaller grid", flush=True)
    return 0


def choose_forwards(science: Science, groups: list[Group], tables: dict, c, requested: str) -> dict[str, ForwardChoice]:
    """Check every group's forward before training (each group: the model may read the group's
    own config values), and say in one line per kind of decision which groups take which forward,
    and why."""
    choices = {g.name: check_forward(science, g, tables, c, requested) for g in groups}
    kinds = {}
    for name, ch in choices.items():
        kinds.setdefault((ch.forward, ch.reason, ch.one_at_a_time), []).append(name)
    for names in kinds.values():
        worst = [choices[n].difference for n in names if choices[n].difference is not None]
        decision = dataclasses.replace(choices[names[0]], difference=max(worst) if worst else None)
        print(decision.describe([f"all {len(names)} groups"] if len(names) == len(choices) > 1 else names), flush=True)
    return choices
