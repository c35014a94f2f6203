"""How Transformer capacity (depth, width, heads) shapes grokking on algorithmic tasks.

One self-contained script: it builds the datasets, trains a small Transformer for every
architecture x task x seed of a study, measures memorization, grokking and stability, and writes
`final_info.json` in the AI-Scientist shape together with curves, config and provenance.

    python experiment.py --out_dir=run_0                      # the full study (GPU work)
    python experiment.py --out_dir=run_0 --preset=baseline    # the template's baseline, 3 seeds
    python experiment.py --out_dir=demo --preset=demo         # a few minutes on 2 CPU cores
    python experiment.py --out_dir=tiny --layers=1,2 --dims=64 --heads=4 \\
        --tasks=x_plus_y,permutation --seeds=2 --num_steps=300
    GROKKING_PRESET=smoke python experiment.py --out_dir=run_1  # a preset without extra arguments
    python experiment.py --help                                # every option, with its default

The default study: layers {1,2,4} x d_model {64,128,256} x heads {2,4,8} (27 architectures) on
x+y, x-y, x/y (mod 97) and composition in S5, 5 seeds each: 540 runs of 7500 AdamW steps.
All runs of one architecture (tasks x seeds) train together as one batched model whose weights
carry a leading member dimension; each member follows exactly the trajectory it would follow
alone (tests/test_batched.py proves it in float64).

Sections, in order: config and command line, data, model, training, metrics, outputs, main.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import io
import itertools
import json
import math
import os
import platform
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

try:  # tqdm draws the progress bar; the study runs without it, with plain progress lines
    from tqdm import tqdm
except ImportError:  # pragma: no cover - tqdm is in requirements.txt
    tqdm = None

FORMAT_VERSION = 1  # bumped when the layout of the output files changes

# ======================================================================================
# Config and command line
# ======================================================================================

TASKS = ("x_div_y", "x_minus_y", "x_plus_y", "permutation")


@dataclass(frozen=True)
class Config:
    """The full description of a study. Every field can be set as --field=value."""

    tasks: tuple[str, ...] = TASKS  # tasks to train on (any of TASKS)
    layers: tuple[int, ...] = (1, 2, 4)  # numbers of decoder blocks to try
    dims: tuple[int, ...] = (64, 128, 256)  # d_model values to try
    heads: tuple[int, ...] = (2, 4, 8)  # numbers of attention heads to try (must divide d_model)
    seeds: int = 5  # runs per task and architecture; seeds 0 .. seeds-1
    num_steps: int = 7500  # optimizer steps per run
    eval_every: int = 10  # steps between evaluations on the full train and validation splits
    batch_size: int = 512  # examples per step, drawn with replacement from the training split
    lr: float = 1e-3  # AdamW peak learning rate
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.98  # AdamW second-moment decay
    weight_decay: float = 0.5  # AdamW decoupled weight decay, on every parameter
    warmup_steps: int = 50  # linear learning-rate warm-up from 0, in steps
    train_fraction: float = 0.5  # fraction of all equations in the training split
    prime: int = 97  # modulus p of the arithmetic tasks (x_div_y needs a prime)
    perm_k: int = 5  # the permutation task composes elements of S_k (k! elements)
    device: str = "auto"  # "auto" (cuda when present), "cpu", "cuda" or "cuda:N"

    def architectures(self) -> list[Architecture]:
        return [Architecture(n, d, h) for n in self.layers for d in self.dims for h in self.heads]


PRESETS: dict[str, dict] = {
    # The template's baseline: one architecture, all four tasks, 3 seeds. Produces run_0/.
    "baseline": dict(layers=(2,), dims=(128,), heads=(4,), seeds=3),
    # Every code path in well under a minute on 2 CPU cores; for tests, not for science.
    "smoke": dict(layers=(1, 2), dims=(32,), heads=(4,), seeds=2, num_steps=200, eval_every=20),
    # A CPU quick start in which memorization and then grokking happen within minutes:
    # a shallow-wide and a deep-narrow model on x+y mod 59 with more training data.
    "demo": dict(tasks=("x_plus_y",), layers=(1, 2), dims=(64, 32), heads=(4,), seeds=2,
                 prime=59, train_fraction=0.6, num_steps=2000, eval_every=20),
}

# Command-line options that are not part of the study itself.
RUN_OPTIONS = {
    "out_dir": "folder for every output file (required)",
    "preset": "a named set of overrides: " + ", ".join(PRESETS) + " (or env GROKKING_PRESET)",
    "overwrite": "1 to replace the results already in out_dir",
}


class UsageError(Exception):
    """Bad input: reported as one line on stderr with exit code 2, before any work starts."""


def parse_value(name: str, text: str, kind):
    """Parse one command-line value into the type of Config field `name`."""
    is_list = getattr(kind, "__origin__", None) is tuple
    item_type = kind.__args__[0] if is_list else kind
    items = [s.strip() for s in text.split(",")] if is_list else [text.strip()]
    parsed = []
    for item in items:
        try:
            if item_type is int:
                parsed.append(int(item))
            elif item_type is float:
                parsed.append(float(item))
            else:
                if not item:
                    raise ValueError
                parsed.append(item)
        except ValueError:
            expected = {int: "an integer", float: "a number", str: "a word"}[item_type]
            what = "a comma-separated list of " + expected.split(" ", 1)[1] + "s" if is_list else expected
            raise UsageError(f"--{name}={text!r}: expected {what}") from None
    return tuple(parsed) if is_list else parsed[0]


def config_field_types() -> dict:
    hints = {"tuple[str, ...]": tuple[str, ...], "tuple[int, ...]": tuple[int, ...],
             "int": int, "float": float, "str": str}
    return {f.name: hints[f.type] for f in dataclasses.fields(Config)}


def split_arguments(argv: list[str]) -> dict[str, str]:
    """`--key=value` or `--key value` pairs into a dict; anything else is a usage error."""
    pairs, i = {}, 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--") or arg == "--":
            raise UsageError(f"unexpected argument {arg!r}: options look like --field=value")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                raise UsageError(f"--{key} needs a value, e.g. --{key}=VALUE")
            value, i = argv[i + 1], i + 1
        if key in pairs:
            raise UsageError(f"--{key} is given twice")
        pairs[key.replace("-", "_")] = value
        i += 1
    return pairs


def resolve_config(argv: list[str], environ=os.environ) -> tuple[Config, dict]:
    """Command line (+ GROKKING_PRESET) -> (validated Config, run options). Raises UsageError."""
    pairs = split_arguments(argv)
    types = config_field_types()
    unknown = [k for k in pairs if k not in types and k not in RUN_OPTIONS]
    if unknown:
        raise UsageError(f"unknown option --{unknown[0]}; known: "
                         + ", ".join(list(RUN_OPTIONS) + list(types)) + " (see --help)")
    preset = pairs.get("preset", environ.get("GROKKING_PRESET", "")).strip() or None
    if preset is not None and preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    overrides = {k: parse_value(k, v, types[k]) for k, v in pairs.items() if k in types}
    values = {**PRESETS.get(preset, {}), **overrides}
    config = Config(**values)
    validate_config(config)
    if "out_dir" not in pairs or not pairs["out_dir"].strip():
        raise UsageError("--out_dir is required, e.g. --out_dir=run_0")
    overwrite = pairs.get("overwrite", "0")
    if overwrite not in ("0", "1"):
        raise UsageError(f"--overwrite={overwrite!r}: expected 0 or 1")
    options = {"out_dir": pairs["out_dir"], "preset": preset, "overwrite": overwrite == "1",
               "overrides": {k: pairs[k] for k in pairs if k in types}}
    return config, options


def is_prime(n: int) -> bool:
    return n >= 2 and all(n % f for f in range(2, math.isqrt(n) + 1))


def validate_config(c: Config) -> None:
    """Reject impossible studies with one line that says how to fix them."""
    def need(ok: bool, message: str):
        if not ok:
            raise UsageError(message)

    need(len(c.tasks) > 0, "--tasks is empty; choose from " + ",".join(TASKS))
    for t in c.tasks:
        need(t in TASKS, f"unknown task {t!r}; choose from {','.join(TASKS)}")
    need(len(set(c.tasks)) == len(c.tasks), "--tasks lists a task twice")
    for name in ("layers", "dims", "heads"):
        values = getattr(c, name)
        need(len(values) > 0 and all(v > 0 for v in values), f"--{name} needs positive integers")
        need(len(set(values)) == len(values), f"--{name} lists a value twice")
    for d in c.dims:
        for h in c.heads:
            need(d % h == 0, f"{h} heads do not divide d_model {d}; pick --heads that divide every --dims value")
    for name in ("seeds", "num_steps", "eval_every", "batch_size"):
        need(getattr(c, name) > 0, f"--{name} must be a positive integer, got {getattr(c, name)}")
    need(c.warmup_steps >= 0, f"--warmup_steps must be >= 0, got {c.warmup_steps}")
    need(c.lr > 0 and math.isfinite(c.lr), f"--lr must be a positive number, got {c.lr}")
    need(c.weight_decay >= 0 and math.isfinite(c.weight_decay), "--weight_decay must be >= 0")
    need(0 <= c.beta1 < 1 and 0 <= c.beta2 < 1, "--beta1 and --beta2 must lie in [0, 1)")
    need(0 < c.train_fraction < 1, f"--train_fraction must lie strictly between 0 and 1, got {c.train_fraction}")
    need(2 <= c.prime <= 2000, f"--prime must lie in 2..2000 (the tables hold p^2 equations), got {c.prime}")
    if "x_div_y" in c.tasks:
        need(is_prime(c.prime), f"--prime={c.prime} is not prime, so x_div_y has no inverse for every "
                                "divisor; use a prime such as 97 or 113, or drop x_div_y from --tasks")
    need(2 <= c.perm_k <= 6, f"--perm_k must lie in 2..6 (S_k has k! elements), got {c.perm_k}")
    for t in c.tasks:
        n = task_size(t, c)
        need(1 <= int(n * c.train_fraction) < n,
             f"--train_fraction={c.train_fraction} leaves an empty split of the {n} equations of {t}")
    need(c.device == "auto" or c.device == "cpu" or c.device.split(":")[0] == "cuda",
         f"--device={c.device!r}: use auto, cpu, cuda or cuda:N")


def usage() -> str:
    lines = [__doc__.strip(), "", "Options (defaults are the full study):"]
    for name, text in RUN_OPTIONS.items():
        lines.append(f"  --{name:<15} {text}")
    comments = field_comments()
    for f in dataclasses.fields(Config):
        default = f.default
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        lines.append(f"  --{f.name:<15} {comments.get(f.name, '')} [default: {shown}]")
    for name, values in PRESETS.items():
        lines.append(f"  preset {name}: " + " ".join(f"--{k}={format_value(v)}" for k, v in values.items()))
    return "\n".join(lines)


def field_comments() -> dict[str, str]:
    """The one-line comment beside each Config field, read from this file (shown by --help)."""
    comments = {}
    with open(__file__, encoding="utf-8") as f:
        source = f.read()
    body = source.split("class Config:", 1)[1].split("def architectures", 1)[0]
    for line in body.splitlines():
        name, sep, comment = line.partition("#")
        if sep and ":" in name:
            comments[name.split(":")[0].strip()] = comment.strip()
    return comments


def format_value(v) -> str:
    return ",".join(map(str, v)) if isinstance(v, tuple) else str(v)


# ======================================================================================
# Data
# ======================================================================================

INIT_SEED_BASE = 1337  # the template seeds member s's initialization with 1337 + s
DATA_SEED_BASE = 7_000_003  # keeps the split/batch stream apart from the initialization stream
TOKEN_OP, TOKEN_EQ = 0, 1  # vocabulary: "o", "=", then the elements (element e is token e + 2)
SEQ_LEN = 4  # [a, o, b, =]
POSITIONS = 5  # the template's position table has 5 rows (its equations had 5 symbols); kept
#                for identical initialization and parameter count


def task_size(task: str, c: Config) -> int:
    if task == "permutation":
        return math.factorial(c.perm_k) ** 2
    return c.prime * (c.prime - 1 if task == "x_div_y" else c.prime)


@dataclass
class TaskTable:
    """Every equation of one task: tokens [a, o, b, =] and the answer c (an element index)."""

    task: str
    tokens: torch.Tensor  # (equations, 4) long
    answers: torch.Tensor  # (equations,) long, in 0 .. num_classes-1
    num_classes: int  # elements, i.e. possible answers
    vocab_size: int  # num_classes + 2 ("o" and "=")
    elements: list  # element index -> printable element (int, or tuple for permutations)


def build_table(task: str, prime: int, perm_k: int) -> TaskTable:
    """The complete table of a task, in the template's order (a major, b minor)."""
    if task == "permutation":
        perms = list(itertools.permutations(range(perm_k)))  # lexicographic order
        p_arr = np.array(perms)  # (n, k)
        n = len(perms)
        # composed[a, b, i] = a[b[i]]
        composed = p_arr[np.arange(n)[:, None, None], p_arr[None, :, :]]
        code = lambda arr: (arr * perm_k ** np.arange(perm_k)).sum(-1)  # base-k number
        lookup = np.full(perm_k ** perm_k, -1)
        lookup[code(p_arr)] = np.arange(n)
        answers = lookup[code(composed)].reshape(-1)
        a, b = np.divmod(np.arange(n * n), n)
        elements = perms
    else:
        bs = np.arange(1 if task == "x_div_y" else 0, prime)
        a = np.repeat(np.arange(prime), len(bs))
        b = np.tile(bs, prime)
        if task == "x_plus_y":
            answers = (a + b) % prime
        elif task == "x_minus_y":
            answers = (a - b) % prime
        else:  # a * b^(p-2) mod p: a times the inverse of b (Fermat)
            inverse = np.array([0] + [pow(int(v), prime - 2, prime) for v in range(1, prime)])
            answers = (a * inverse[b]) % prime
        n = prime
        elements = list(range(prime))
    tokens = np.stack([a + 2, np.full_like(a, TOKEN_OP), b + 2, np.full_like(a, TOKEN_EQ)], axis=1)
    return TaskTable(task, torch.as_tensor(tokens, dtype=torch.long),
                     torch.as_tensor(answers, dtype=torch.long), n, n + 2, elements)


def data_generator(seed: int) -> torch.Generator:
    """The run's own RNG for its split and its batches: the same on every machine."""
    return torch.Generator().manual_seed(DATA_SEED_BASE + seed)


def split_table(num_equations: int, train_fraction: float, generator: torch.Generator):
    """(train_indices, val_indices): a seeded shuffle cut at int(n * fraction), as the template."""
    order = torch.randperm(num_equations, generator=generator)
    cut = int(num_equations * train_fraction)
    return order[:cut], order[cut:]


@dataclass(frozen=True)
class Member:
    """One run inside a batched group: a task and a seed."""

    task: str
    seed: int


class GroupData:
    """The tables, splits and batch streams of every member of a group, on the device.

    Members may have tables of different sizes; tensors are padded to the largest and padded
    equations carry zero weight in every average.
    """

    BATCH_CHUNK = 100  # steps of batch indices drawn at a time (the draw is chunk-independent)

    def __init__(self, members: list[Member], tables: dict[str, TaskTable], c: Config, device,
                 dtype=torch.float32):
        self.members, self.batch_size, self.device = members, c.batch_size, device
        m = len(members)
        n_max = max(tables[mb.task].tokens.shape[0] for mb in members)
        self.tokens = torch.zeros(m, n_max, SEQ_LEN, dtype=torch.long)  # (members, eq, 4)
        self.answers = torch.zeros(m, n_max, dtype=torch.long)  # (members, eq)
        self.train_weight = torch.zeros(m, n_max, dtype=dtype)  # 1/n_train on training equations
        self.val_weight = torch.zeros(m, n_max, dtype=dtype)  # 1/n_val on validation equations
        self.generators, self.train_indices = [], []
        for i, mb in enumerate(members):
            table = tables[mb.task]
            n = table.tokens.shape[0]
            self.tokens[i, :n], self.answers[i, :n] = table.tokens, table.answers
            gen = data_generator(mb.seed)
            train, val = split_table(n, c.train_fraction, gen)
            self.train_weight[i, train] = 1.0 / len(train)
            self.val_weight[i, val] = 1.0 / len(val)
            self.generators.append(gen)
            self.train_indices.append(train)
        self.tokens, self.answers = self.tokens.to(device), self.answers.to(device)
        self.train_weight, self.val_weight = self.train_weight.to(device), self.val_weight.to(device)
        self.member_index = torch.arange(m, device=device)[:, None]  # (members, 1)
        self._chunk, self._chunk_start = None, 0

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens (members, batch, 4) and answers (members, batch) for a step (steps in order)."""
        offset = step - self._chunk_start
        if self._chunk is None or offset >= self._chunk.shape[0]:
            self._chunk, self._chunk_start, offset = self._draw_chunk(), step, 0
        rows = self._chunk[offset]  # (members, batch) equation indices
        return self.tokens[self.member_index, rows], self.answers[self.member_index, rows]

    def _draw_chunk(self) -> torch.Tensor:
        """(BATCH_CHUNK, members, batch): each member draws from its own generator, on the CPU,
        so the stream is identical on every device; then one copy to the device."""
        draws = [train[torch.randint(len(train), (self.BATCH_CHUNK, self.batch_size), generator=g)]
                 for train, g in zip(self.train_indices, self.generators)]
        return torch.stack(draws, dim=1).to(self.device, non_blocking=True)


# ======================================================================================
# Model
# ======================================================================================


@dataclass(frozen=True)
class Architecture:
    layers: int
    d_model: int
    heads: int

    @property
    def name(self) -> str:
        return f"L{self.layers}_D{self.d_model}_H{self.heads}"


class DecoderBlock(nn.Module):
    """The template's block: post-LayerNorm causal self-attention, then a 4x GELU MLP."""

    def __init__(self, d_model: int, heads: int):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, heads)
        self.self_attn_norm = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))
        self.ffn_norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (seq, batch, d_model)
        causal = torch.full((len(x), len(x)), -float("inf"), device=x.device, dtype=x.dtype).triu(1)
        a = self.self_attn_norm(x + self.self_attn(x, x, x, attn_mask=causal, need_weights=False)[0])
        return self.ffn_norm(a + self.ffn(a))


class ReferenceTransformer(nn.Module):
    """One model, written with the torch.nn modules of the template. It defines the
    initialization of every member and is the yardstick the batched model is tested against."""

    def __init__(self, arch: Architecture, vocab_size: int, num_classes: int):
        super().__init__()
        self.token_embeddings = nn.Embedding(vocab_size, arch.d_model)
        self.position_embeddings = nn.Embedding(POSITIONS, arch.d_model)
        self.model = nn.Sequential(
            *[DecoderBlock(arch.d_model, arch.heads) for _ in range(arch.layers)],
            nn.LayerNorm(arch.d_model),
            nn.Linear(arch.d_model, num_classes),
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (batch, seq) -> (batch, classes)
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.token_embeddings(tokens) + self.position_embeddings(positions)
        return self.model(x.transpose(0, 1))[-1]  # the template reads the last position


def reference_model(arch: Architecture, table: TaskTable, seed: int) -> ReferenceTransformer:
    """The member's model as the template would initialize it under torch.manual_seed(1337 + s)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(INIT_SEED_BASE + seed)
        return ReferenceTransformer(arch, table.vocab_size, table.num_classes)


def parameter_count(arch: Architecture, vocab_size: int, num_classes: int) -> int:
    d, layer = arch.d_model, 12 * arch.d_model ** 2 + 13 * arch.d_model
    return vocab_size * d + POSITIONS * d + arch.layers * layer + 2 * d + d * num_classes + num_classes


class BatchedTransformer(nn.Module):
    """Many ReferenceTransformers of one architecture as one model: every weight carries a
    leading member dimension and every matmul is a batched matmul over members.

    Members may have different vocabularies and numbers of classes: the embedding and head are
    padded to the largest, padded entries start at zero and, never receiving a gradient, stay
    zero under AdamW; padded classes are masked out of the logits.
    Only the last position feeds the head, so the last block computes its query, attention
    output and MLP for that position alone.
    """

    def __init__(self, arch: Architecture, references: list[ReferenceTransformer],
                 num_classes: list[int], dtype=torch.float32):
        super().__init__()
        self.arch = arch
        m, n, d = len(references), arch.layers, arch.d_model
        vocab = max(r.token_embeddings.num_embeddings for r in references)
        classes = max(num_classes)

        def zeros(*shape):
            return nn.Parameter(torch.zeros(*shape, dtype=dtype))

        # Weights are stored as (in, out) so that x @ w needs no transpose.
        self.tok_emb = zeros(m, vocab, d)  # (members, vocab, d)
        self.pos_emb = zeros(m, POSITIONS, d)
        self.qkv_w, self.qkv_b = zeros(m, n, d, 3 * d), zeros(m, n, 3 * d)  # (members, layers, ...)
        self.out_w, self.out_b = zeros(m, n, d, d), zeros(m, n, d)
        self.ln1_w, self.ln1_b = zeros(m, n, d), zeros(m, n, d)
        self.ff1_w, self.ff1_b = zeros(m, n, d, 4 * d), zeros(m, n, 4 * d)
        self.ff2_w, self.ff2_b = zeros(m, n, 4 * d, d), zeros(m, n, d)
        self.ln2_w, self.ln2_b = zeros(m, n, d), zeros(m, n, d)
        self.lnf_w, self.lnf_b = zeros(m, d), zeros(m, d)
        self.head_w, self.head_b = zeros(m, d, classes), zeros(m, classes)
        # Additive logit mask: 0 for a member's classes, -inf for padding.
        mask = torch.full((m, 1, classes), -float("inf"), dtype=dtype)
        for i, k in enumerate(num_classes):
            mask[i, :, :k] = 0
        self.register_buffer("class_mask", mask)
        with torch.no_grad():
            for i, ref in enumerate(references):
                for name, value in reference_to_stacked(ref).items():
                    target = getattr(self, name)[i]
                    target[tuple(slice(0, s) for s in value.shape)].copy_(value)

    @property
    def members(self) -> int:
        return self.tok_emb.shape[0]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (members, batch, seq) -> logits (members, batch, classes) at the last position."""
        m, b, s = tokens.shape
        d, h = self.arch.d_model, self.arch.heads
        x = self.tok_emb[torch.arange(m, device=tokens.device)[:, None, None], tokens]
        x = x + self.pos_emb[:, None, :s]  # (members, batch, seq, d)
        for layer in range(self.arch.layers):
            last = layer == self.arch.layers - 1
            x = self._block(x.reshape(m, b * s, d), layer, b, s, last)
        x = layer_norm(x, self.lnf_w, self.lnf_b)  # (members, batch, d)
        logits = torch.baddbmm(self.head_b[:, None], x, self.head_w)
        return logits + self.class_mask

    def _block(self, x: torch.Tensor, layer: int, b: int, s: int, last: bool) -> torch.Tensor:
        """x (members, batch*seq, d) -> (members, batch, seq, d), or (members, batch, d) if last."""
        m, d, h = x.shape[0], self.arch.d_model, self.arch.heads
        dh = d // h
        w, bias = self.qkv_w[:, layer], self.qkv_b[:, layer, None]
        if last:  # keys and values of every position, the query of the last one only
            kv = torch.baddbmm(bias[..., d:], x, w[..., d:]).view(m, b, s, 2, h, dh)
            x_last = x.view(m, b, s, d)[:, :, -1]  # (members, batch, d)
            q = torch.baddbmm(bias[..., :d], x_last, w[..., :d]).view(m * b, 1, h, dh).transpose(1, 2)
            k, v = (kv[:, :, :, i].reshape(m * b, s, h, dh).transpose(1, 2) for i in range(2))
            attn = F.scaled_dot_product_attention(q, k, v)  # the last position sees all
            residual, rows = x_last, b
        else:
            qkv = torch.baddbmm(bias, x, w).view(m * b, s, 3, h, dh)
            q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))  # (m*b, h, s, dh)
            attn = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            residual, rows = x.view(m, b, s, d), b * s
        attn = attn.transpose(1, 2).reshape(m, rows, d)
        attn = torch.baddbmm(self.out_b[:, layer, None], attn, self.out_w[:, layer])
        a = layer_norm(residual.reshape(m, rows, d) + attn, self.ln1_w[:, layer], self.ln1_b[:, layer])
        f = F.gelu(torch.baddbmm(self.ff1_b[:, layer, None], a, self.ff1_w[:, layer]))
        f = torch.baddbmm(self.ff2_b[:, layer, None], f, self.ff2_w[:, layer])
        out = layer_norm(a + f, self.ln2_w[:, layer], self.ln2_b[:, layer])
        return out if last else out.view(m, b, s, d)

    @torch.no_grad()
    def weight_norms(self) -> torch.Tensor:
        """(members,) global L2 norm of each member's parameters (padding is zero)."""
        squares = sum(p.pow(2).flatten(1).sum(1) for p in self.parameters())
        return squares.sqrt()

    @torch.no_grad()
    def member_state(self, i: int, vocab_size: int, num_classes: int) -> dict[str, torch.Tensor]:
        """Member i's weights as a ReferenceTransformer state dict (padding stripped)."""
        state = {}
        stacked = {name: getattr(self, name)[i] for name in STACKED_NAMES}
        stacked["tok_emb"] = stacked["tok_emb"][:vocab_size]
        stacked["head_w"], stacked["head_b"] = stacked["head_w"][:, :num_classes], stacked["head_b"][:num_classes]
        for name, (ref_name, per_layer, transpose) in STACKED_TO_REFERENCE.items():
            for layer in range(self.arch.layers if per_layer else 1):
                value = stacked[name][layer] if per_layer else stacked[name]
                key = reference_key(ref_name, self.arch.layers, layer)
                state[key] = (value.t() if transpose else value).clone()
        return state


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """LayerNorm over the last dim with a per-member affine: x (members, ..., d), weight (members, d)."""
    shape = (weight.shape[0],) + (1,) * (x.dim() - 2) + (weight.shape[-1],)
    return torch.addcmul(bias.view(shape), F.layer_norm(x, x.shape[-1:], eps=1e-5), weight.view(shape))


# Stacked tensor -> (reference state-dict key, has a layer dimension, stored transposed).
STACKED_TO_REFERENCE = {
    "tok_emb": ("token_embeddings.weight", False, False),
    "pos_emb": ("position_embeddings.weight", False, False),
    "qkv_w": ("model.{layer}.self_attn.in_proj_weight", True, True),
    "qkv_b": ("model.{layer}.self_attn.in_proj_bias", True, False),
    "out_w": ("model.{layer}.self_attn.out_proj.weight", True, True),
    "out_b": ("model.{layer}.self_attn.out_proj.bias", True, False),
    "ln1_w": ("model.{layer}.self_attn_norm.weight", True, False),
    "ln1_b": ("model.{layer}.self_attn_norm.bias", True, False),
    "ff1_w": ("model.{layer}.ffn.0.weight", True, True),
    "ff1_b": ("model.{layer}.ffn.0.bias", True, False),
    "ff2_w": ("model.{layer}.ffn.2.weight", True, True),
    "ff2_b": ("model.{layer}.ffn.2.bias", True, False),
    "ln2_w": ("model.{layer}.ffn_norm.weight", True, False),
    "ln2_b": ("model.{layer}.ffn_norm.bias", True, False),
    "lnf_w": ("model.{final}.weight", False, False),
    "lnf_b": ("model.{final}.bias", False, False),
    "head_w": ("model.{head}.weight", False, True),
    "head_b": ("model.{head}.bias", False, False),
}
STACKED_NAMES = tuple(STACKED_TO_REFERENCE)


def reference_key(template: str, layers: int, layer: int = 0) -> str:
    """In the reference, model.0 .. model.{layers-1} are blocks, then the final LayerNorm, the head."""
    return template.format(layer=layer, final=layers, head=layers + 1)


def reference_to_stacked(ref: ReferenceTransformer) -> dict[str, torch.Tensor]:
    """A reference model's weights in the stacked layout of one member (layers stacked)."""
    state, n = ref.state_dict(), len(ref.model) - 2
    out = {}
    for name, (key, per_layer, transpose) in STACKED_TO_REFERENCE.items():
        def get(layer):
            value = state[reference_key(key, n, layer)]
            return value.t() if transpose else value
        out[name] = torch.stack([get(layer) for layer in range(n)]) if per_layer else get(0)
    return out


# ======================================================================================
# Training
# ======================================================================================

CURVE_NAMES = ("train_loss", "train_acc", "val_loss", "val_acc", "weight_norm")
EVAL_ACTIVATION_BUDGET = {"cpu": 2 ** 22, "cuda": 2 ** 27}  # floats in the widest eval activation


def evaluation_steps(c: Config) -> list[int]:
    """Steps after which the model is evaluated: every eval_every steps, and the last step."""
    steps = list(range(c.eval_every, c.num_steps + 1, c.eval_every))
    return steps if steps and steps[-1] == c.num_steps else steps + [c.num_steps]


def lr_factor(step: int, warmup_steps: int) -> float:
    """The template's LambdaLR: step k (from 0) runs at lr * min(k / warmup, 1), so step 0 at 0."""
    return 1.0 if warmup_steps == 0 else min(step / warmup_steps, 1.0)


def make_optimizer(params, c: Config, device: torch.device) -> torch.optim.AdamW:
    """One AdamW over the stacked parameters: every member gets exactly its own update."""
    return torch.optim.AdamW(params, lr=c.lr, betas=(c.beta1, c.beta2), weight_decay=c.weight_decay,
                             fused=True)


def member_losses(logits: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
    """(members, batch, classes), (members, batch) -> (members, batch) cross-entropy."""
    return F.cross_entropy(logits.flatten(0, 1), answers.flatten(), reduction="none").view(answers.shape)


@torch.no_grad()
def evaluate(model: BatchedTransformer, data: GroupData) -> torch.Tensor:
    """(members, len(CURVE_NAMES)): loss and accuracy on the full training and validation splits,
    and the weight norm. One pass over every equation; the split weights pick the averages."""
    m, n = data.answers.shape
    d = model.arch.d_model
    chunk = max(16, EVAL_ACTIVATION_BUDGET[data.tokens.device.type] // (m * SEQ_LEN * 4 * d))
    sums = torch.zeros(m, 4, device=data.tokens.device, dtype=model.tok_emb.dtype)
    for start in range(0, n, chunk):
        rows = slice(start, start + chunk)
        logits = model(data.tokens[:, rows])
        answers = data.answers[:, rows]
        loss = member_losses(logits, answers)
        correct = (logits.argmax(-1) == answers).to(loss.dtype)
        tw, vw = data.train_weight[:, rows], data.val_weight[:, rows]
        sums += torch.stack([(loss * tw).sum(1), (correct * tw).sum(1),
                             (loss * vw).sum(1), (correct * vw).sum(1)], dim=1)
    return torch.cat([sums, model.weight_norms()[:, None]], dim=1)


def forward_flops(arch: Architecture, num_classes: int, seq: int = SEQ_LEN) -> int:
    """Multiply-add FLOPs (2 per MAC) of one equation's forward pass with the last-position
    shortcut: every block but the last runs on all positions; the last computes keys and values
    for all positions and the rest for the last position; attention scores and mixing included."""
    d = arch.d_model
    full_block = seq * (2 * 12 * d * d + 2 * 2 * seq * d)  # qkv, out, mlp; scores and mixing
    last_block = seq * 2 * 2 * d * d + 2 * 10 * d * d + 2 * 2 * seq * d
    return (arch.layers - 1) * full_block + last_block + 2 * d * num_classes


def group_flops(arch: Architecture, members: list[Member], tables: dict[str, TaskTable], c: Config) -> float:
    """Training (forward + backward = 3x forward) and evaluation FLOPs of a whole group."""
    total = 0.0
    for mb in members:
        t = tables[mb.task]
        f = forward_flops(arch, t.num_classes)
        total += 3 * f * c.batch_size * c.num_steps + f * len(t.answers) * len(evaluation_steps(c))
    return total


@dataclass
class GroupResult:
    arch: Architecture
    members: list[Member]
    steps: np.ndarray  # (evals,) the step after which each evaluation ran
    curves: np.ndarray  # (members, evals, len(CURVE_NAMES))
    wall_time_s: float  # training and evaluation of the whole group
    eval_time_s: float  # the part of wall_time_s spent evaluating


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_group(arch: Architecture, members: list[Member], tables: dict[str, TaskTable], c: Config,
                device: torch.device, dtype=torch.float32, on_eval=None):
    """Train every member of one architecture together; returns (GroupResult, model).

    on_eval(steps_done) is called after each evaluation (for progress). The host waits for the
    device only at evaluation points, to time them; curves stay on the device until the end."""
    start = time.perf_counter()
    references = [reference_model(arch, tables[mb.task], mb.seed) for mb in members]
    model = BatchedTransformer(arch, references, [tables[mb.task].num_classes for mb in members],
                               dtype=dtype).to(device)
    data = GroupData(members, tables, c, device, dtype)
    optimizer = make_optimizer(model.parameters(), c, device)
    steps = evaluation_steps(c)
    curves = torch.zeros(len(members), len(steps), len(CURVE_NAMES), device=device, dtype=dtype)
    eval_time, next_eval = 0.0, 0
    for step in range(c.num_steps):
        for group in optimizer.param_groups:
            group["lr"] = c.lr * lr_factor(step, c.warmup_steps)
        tokens, answers = data.batch(step)
        loss = member_losses(model(tokens), answers).mean(1).sum()  # members are independent
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step + 1 == steps[next_eval]:
            synchronize(device)
            eval_start = time.perf_counter()
            curves[:, next_eval] = evaluate(model, data)
            synchronize(device)
            eval_time += time.perf_counter() - eval_start
            next_eval += 1
            if on_eval is not None:
                on_eval(step + 1)
    result = GroupResult(arch, members, np.array(steps), curves.double().cpu().numpy(),
                         time.perf_counter() - start, eval_time)
    return result, model


# ======================================================================================
# Metrics
# ======================================================================================

THRESHOLD = 0.99  # "reached" means accuracy strictly above 99%


def first_step_above(steps: np.ndarray, accuracy: np.ndarray, num_steps: int) -> int:
    """First evaluated step with accuracy > 0.99, or num_steps when never (the template's rule)."""
    above = np.flatnonzero(accuracy > THRESHOLD)
    return int(steps[above[0]]) if len(above) else num_steps


def sustained_step(steps: np.ndarray, accuracy: np.ndarray, num_steps: int) -> int:
    """First evaluated step from which accuracy stays > 0.99 at every later evaluation."""
    below = np.flatnonzero(accuracy <= THRESHOLD)
    start = below[-1] + 1 if len(below) else 0
    return int(steps[start]) if start < len(steps) else num_steps


def run_metrics(steps: np.ndarray, curve: np.ndarray, num_steps: int) -> dict:
    """Curves of one run (evals, len(CURVE_NAMES)) -> its metrics (see notes.txt)."""
    col = {name: curve[:, i] for i, name in enumerate(CURVE_NAMES)}
    train_acc, val_acc = col["train_acc"], col["val_acc"]
    step_train = first_step_above(steps, train_acc, num_steps)
    step_val = first_step_above(steps, val_acc, num_steps)
    grokked = bool((val_acc > THRESHOLD).any())
    metrics = {
        "step_train_acc_99": step_train,
        "step_val_acc_99": step_val,
        "step_val_acc_99_sustained": sustained_step(steps, val_acc, num_steps),
        "memorized": int((train_acc > THRESHOLD).any()),
        "grokked": int(grokked),
        "grok_delay": step_val - step_train,
        # Stability: over the evaluations after the grokking one; undefined (None) without them.
        "stable_fraction": None,
        "min_val_acc_after_grok": None,
        "val_drops_after_grok": None,
    }
    if grokked:
        after = val_acc[np.flatnonzero(val_acc > THRESHOLD)[0] + 1:]
        above = np.concatenate([[True], after > THRESHOLD])  # the grokking evaluation is above
        metrics["val_drops_after_grok"] = int((above[:-1] & ~above[1:]).sum())
        if len(after):
            metrics["stable_fraction"] = float((after > THRESHOLD).mean())
            metrics["min_val_acc_after_grok"] = float(after.min())
    for name in CURVE_NAMES:
        metrics["final_" + name] = float(col[name][-1])
    return metrics


def mean_and_stderr(values: list) -> tuple:
    """Mean and standard error (sample std, ddof=1, / sqrt(n)) over the defined values."""
    defined = np.array([v for v in values if v is not None], dtype=float)
    if len(defined) == 0:
        return None, None
    stderr = float(defined.std(ddof=1) / math.sqrt(len(defined))) if len(defined) > 1 else None
    return float(defined.mean()), stderr


def aggregate(runs: list[dict], metric_names: list[str]) -> dict:
    """Per-seed metric dicts of one (task, architecture) -> the AI-Scientist final_info entry."""
    per_seed = {name: [r[name] for r in runs] for name in metric_names}
    stats = {name: mean_and_stderr(values) for name, values in per_seed.items()}
    return {
        "means": {f"{name}_mean": mean for name, (mean, _) in stats.items()},
        "stderrs": {f"{name}_stderr": stderr for name, (_, stderr) in stats.items()},
        "final_info_dict": per_seed,
    }


# ======================================================================================
# Outputs
# ======================================================================================

BUCKETS = ("small", "medium", "large")


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


def write_json(path: str, obj) -> None:
    write_atomic(path, (json.dumps(obj, indent=1, allow_nan=False) + "\n").encode())


def write_npz(path: str, **arrays) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    write_atomic(path, buffer.getvalue())


def capacity_buckets(archs: list[Architecture], prime: int) -> dict[str, str]:
    """Three equal-width bins of log10(parameter count) over the study's range, counted on an
    arithmetic task (vocabulary p + 2, p classes). A study of one size has the single bucket 'all'."""
    logs = {a.name: math.log10(parameter_count(a, prime + 2, prime)) for a in archs}
    low, high = min(logs.values()), max(logs.values())
    if high - low < 1e-12:
        return {name: "all" for name in logs}
    width = (high - low) / len(BUCKETS)
    return {name: BUCKETS[min(int((v - low) / width), len(BUCKETS) - 1)] for name, v in logs.items()}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model} ({torch.get_num_threads()} threads)"


def source_hash() -> str:
    with open(__file__, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def result_key(task: str, arch: Architecture, single_architecture: bool) -> str:
    """final_info.json key: the task alone when the study has one architecture (a drop-in
    AI-Scientist baseline), else task/architecture."""
    return task if single_architecture else f"{task}/{arch.name}"


def study_records(results: list[GroupResult], tables: dict[str, TaskTable], c: Config,
                  buckets: dict[str, str]) -> list[dict]:
    """One record per run (task, architecture, seed) with its metrics, in curve-row order."""
    records = []
    for res in results:
        for i, mb in enumerate(res.members):
            t = tables[mb.task]
            records.append({
                "task": mb.task, "architecture": res.arch.name, "layers": res.arch.layers,
                "d_model": res.arch.d_model, "heads": res.arch.heads, "seed": mb.seed,
                "bucket": buckets[res.arch.name],
                "parameter_count": parameter_count(res.arch, t.vocab_size, t.num_classes),
                **run_metrics(res.steps, res.curves[i], c.num_steps),
                # members train together: each run is charged its share of the group's time
                "wall_time_s": res.wall_time_s / len(res.members),
            })
    return records


METRIC_NAMES = ["step_train_acc_99", "step_val_acc_99", "step_val_acc_99_sustained", "memorized",
                "grokked", "grok_delay", "stable_fraction", "min_val_acc_after_grok",
                "val_drops_after_grok", "final_train_loss", "final_val_loss", "final_train_acc",
                "final_val_acc", "final_weight_norm", "parameter_count", "wall_time_s"]


def final_info(records: list[dict], single_architecture: bool) -> dict:
    entries: dict[tuple, list] = {}
    for r in records:
        entries.setdefault((r["task"], r["architecture"]), []).append(r)
    return {(task if single_architecture else f"{task}/{arch}"): aggregate(runs, METRIC_NAMES)
            for (task, arch), runs in entries.items()}


def write_outputs(out_dir: str, results: list[GroupResult], tables: dict[str, TaskTable], c: Config,
                  options: dict, provenance: dict) -> dict:
    """Every output file of a finished study; final_info.json last, so its presence means done."""
    archs = [r.arch for r in results]
    buckets = capacity_buckets(archs, c.prime)
    records = study_records(results, tables, c, buckets)
    curves = np.concatenate([r.curves for r in results])  # (runs, evals, curves)
    write_npz(os.path.join(out_dir, "curves.npz"), step=results[0].steps,
              **{name: curves[..., i] for i, name in enumerate(CURVE_NAMES)})
    write_json(os.path.join(out_dir, "runs.json"), records)
    write_json(os.path.join(out_dir, "architectures.json"), [{
        "name": a.name, "layers": a.layers, "d_model": a.d_model, "heads": a.heads,
        "aspect_ratio": a.d_model / a.layers, "bucket": buckets[a.name],
        "parameter_count": parameter_count(a, c.prime + 2, c.prime),
        "parameter_count_by_task": {t: parameter_count(a, tables[t].vocab_size, tables[t].num_classes)
                                    for t in c.tasks},
    } for a in archs])
    write_json(os.path.join(out_dir, "config.json"), {
        "format_version": FORMAT_VERSION, "preset": options["preset"],
        "overrides": options["overrides"],
        "varied": [f.name for f in dataclasses.fields(Config)
                   if getattr(c, f.name) != f.default],
        "config": dataclasses.asdict(c),
    })
    write_json(os.path.join(out_dir, "provenance.json"), provenance)
    info = final_info(records, single_architecture=len(archs) == 1)
    write_json(os.path.join(out_dir, "final_info.json"), info)
    return info


# ======================================================================================
# Main
# ======================================================================================


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


OUTPUT_FILES = ("final_info.json", "runs.json", "curves.npz", "architectures.json", "config.json",
                "provenance.json")


def prepare_out_dir(path: str, overwrite: bool) -> None:
    """Refuse to mix with earlier results, and prove the folder is writable before training."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"--out_dir={path} exists and is not a folder; choose another --out_dir")
    if os.path.isdir(path) and os.listdir(path) and not overwrite:
        raise UsageError(f"--out_dir={path} is not empty; choose a new folder, or pass --overwrite=1 "
                         "to replace its results")
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise UsageError(f"cannot write to --out_dir={path}: {e.strerror or e}") from None


def configure_backend(device: torch.device) -> None:
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 matmuls: the template's fp32 at tensor-core speed
        torch.backends.cudnn.allow_tf32 = True
    else:
        torch.set_num_threads(os.cpu_count() or 1)


CPU_FLOPS_ESTIMATE = 40e9  # sustained FLOP/s of this code on a 2-core CPU, for the time estimate


def group_summary(result: GroupResult, c: Config) -> str:
    """One line per finished group: mean memorization/grokking step and grokked count per task."""
    parts = []
    for task in dict.fromkeys(mb.task for mb in result.members):
        rows = [i for i, mb in enumerate(result.members) if mb.task == task]
        metrics = [run_metrics(result.steps, result.curves[i], c.num_steps) for i in rows]
        grok = np.mean([m["step_val_acc_99"] for m in metrics])
        mem = np.mean([m["step_train_acc_99"] for m in metrics])
        parts.append(f"{task} mem {mem:.0f} grok {grok:.0f} ({sum(m['grokked'] for m in metrics)}/{len(rows)})")
    return f"{result.arch.name}: " + "; ".join(parts) + f"  [{result.wall_time_s:.0f} s]"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(usage())
        return 0
    try:
        c, options = resolve_config(argv)
        device = resolve_device(c.device)
        prepare_out_dir(options["out_dir"], options["overwrite"])
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    configure_backend(device)
    started = datetime.datetime.now(datetime.timezone.utc)
    tables = {t: build_table(t, c.prime, c.perm_k) for t in c.tasks}
    archs = c.architectures()
    members = [Member(t, s) for t in c.tasks for s in range(c.seeds)]
    costs = [group_flops(a, members, tables, c) for a in archs]
    runs = len(archs) * len(members)
    print(f"study: {len(archs)} architectures x {len(c.tasks)} tasks x {c.seeds} seeds = {runs} runs "
          f"of {c.num_steps} steps, as {len(archs)} groups of {len(members)} members, on "
          f"{device_name(device)}; {sum(costs) / 1e12:.1f} TFLOP", flush=True)
    if device.type == "cpu" and sum(costs) / CPU_FLOPS_ESTIMATE > 1800:
        hours = sum(costs) / CPU_FLOPS_ESTIMATE / 3600
        print(f"warning: this study needs roughly {hours:.1f} h on this CPU; use a GPU, or "
              "--preset=demo / --preset=smoke, or fewer --layers/--dims/--heads/--seeds", flush=True)

    interactive = sys.stderr.isatty()
    bar = tqdm(total=sum(costs), unit="FLOP", unit_scale=True, dynamic_ncols=True,
               mininterval=0.5 if interactive else 30, smoothing=0.05,
               bar_format="{l_bar}{bar}| {elapsed}<{remaining}{postfix}")
    results = []
    for g, (arch, cost) in enumerate(zip(archs, costs)):
        done_before = bar.n

        def on_eval(step, arch=arch, g=g, cost=cost, done_before=done_before):
            bar.update(done_before + cost * step / c.num_steps - bar.n)
            bar.set_postfix_str(f"group {g + 1}/{len(archs)} {arch.name} step {step}/{c.num_steps}",
                                refresh=False)

        result, _ = train_group(arch, members, tables, c, device, on_eval=on_eval)
        results.append(result)
        bar.write(group_summary(result, c))
    bar.close()
    finished = datetime.datetime.now(datetime.timezone.utc)
    provenance = {
        "command": [os.path.basename(sys.argv[0])] + argv,
        "started_utc": started.isoformat(timespec="seconds"),
        "finished_utc": finished.isoformat(timespec="seconds"),
        "wall_time_s": (finished - started).total_seconds(),
        "groups": [{"architecture": r.arch.name, "members": len(r.members),
                    "wall_time_s": r.wall_time_s, "eval_time_s": r.eval_time_s} for r in results],
        "device": str(device), "device_name": device_name(device),
        "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
        "platform": platform.platform(), "host": socket.gethostname(),
        "source_sha256": source_hash(),
    }
    write_outputs(options["out_dir"], results, tables, c, options, provenance)
    print(f"wrote {options['out_dir']}/final_info.json ({runs} runs) in "
          f"{provenance['wall_time_s']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
