"""How Transformer capacity (depth, width, heads) shapes grokking on algorithmic tasks.

This file is the science, top to bottom: the study's config and presets, the four tasks, the model
(one plain nn.Module for one run), the loss, optimizer and training step, and the metrics. What
you read here is what trains: edit any of it and run it. The machinery (command line, output
folder and resume, training many runs as one batched model, the evaluation loop, outputs, saved
models, Ray) is in the package runner/, which never imports this file.

    python experiment.py --out_dir=run_0                      # the full study (GPU work)
    python experiment.py --out_dir=run_0 --preset=baseline    # the template's baseline, 3 seeds
    python experiment.py --out_dir=run_1 --preset=demo        # a few minutes on 2 CPU cores
    GROKKING_PRESET=smoke python experiment.py --out_dir=run_1  # a preset without extra arguments
    python experiment.py --out_dir=tiny --layers=1,2 --dims=64 --heads=4 --tasks=x_plus_y --seeds=2 --num_steps=300
    python experiment.py --out_dir=run_2 --preset=confounds_cpu  # depth x lr, width vs head size (100 min, CPU)
    python experiment.py --out_dir=run_2 --preset=batch_size  # batch 64..512 on x/y, 100k steps (GPU)
    python experiment.py --query=run_3 --task=x_plus_y --arch=L2_D128_H4 --seed=0 30+74 5+3
    python experiment.py --help                                # every option, with its default
    python experiment.py --make_template=DIR --preset=capacity_cpu  # a folder for the AI-Scientist harness

The default study: layers {1,2,4} x d_model {64,128,256} x heads {2,4,8} (27 architectures) on
x+y, x-y, x/y (mod 97) and composition in S5, 5 seeds each: 540 runs of 7500 AdamW steps, about
31 PFLOP (GPU work; days on 2 CPU cores). The template's baseline (--preset=baseline, 12 runs)
takes 70-90 min on 2 CPU cores. Its x/y grokking step over seeds 0-9 is 4352 +- 144, the
template's own over 11 seeds 4313 +- 107 (studies/baseline_seeds/, notes.txt).

How it trains: all runs of one architecture and vocabulary (tasks x seeds) train at once. Their
parameters are the plain model's parameters below, stacked along a leading member dimension and
stepped by one optimizer; the plain model runs over the members with torch.func.vmap. A
hand-written forward of the template's architecture (about 2x faster) is used only when a float64
check at start proves it equal to the plain model, so an edited model trains as edited.

Reading the results (the definitions a write-up needs; notes.txt has them at length):
- A run is one task x architecture x seed (x setting). Runs with one seed share the split and the
  batches across architectures, so architectures are compared by pairs of runs (exact sign test:
  pairs, wins, losses, ties, p; q is p adjusted for all of a study's comparisons together,
  Benjamini-Hochberg), never by means of unpaired runs alone. The pairs of one task and seed form
  a cluster (one split, one batch stream): a pooled comparison is also tested per cluster (an
  exact sign-flip test of each cluster's wins - losses), and a claim needs its cluster q < 0.05.
- Evaluation is on the full training and validation splits every eval_every steps. "Reached"
  means accuracy strictly above 0.99: step_train_acc_99 (memorization), step_val_acc_99
  (grokking); also at 0.5 and 0.9 (step_val_acc_50, step_val_acc_90, ...). A run that never
  reaches a threshold is censored at the budget: its step is num_steps, and grokked = 0.
  plot.py reports restricted means up to the budget with k/n, medians, Kaplan-Meier curves.
- Grokking that holds: step_val_acc_99_held, the first step from which validation accuracy stays
  > 99% at hold_evals (10) evaluations in a row (censored at the budget when none; grokked_held).
- Regimes: groks (validation > 99%), near-grokking (memorized; peak_val_acc, the highest validation
  accuracy, > 90% but never 99%), memorizes only, fails to fit (training never > 99%), diverged.
- Drops after grokking: val_only_drops_after_grok (training accuracy held: generalization lost),
  joint_drops_after_grok (training accuracy fell too: optimization unstable). Instability after
  memorization: train_drops_per_1k_steps (falls of training accuracy to <= 99% per 1,000 steps)
  and train_below_99_share (share of the later evaluations at or below 99%); null if never memorized.
- Capacity buckets: three equal-width bins of log10(parameter count); deep-narrow vs
  wide-shallow pairs match in parameter count within 10% (4 x d against 1 x 2d).
- Progress measures: embedding_fourier_top5 (share of the element embeddings' power in their 5
  strongest DFT frequencies over the cyclic group), norms by part, the training logit margin, the
  share of training answers whose float32 softmax saturates; fourier_lead = grokking step minus
  the step at which the Fourier share made half its rise; step_fourier_50, the first step at which
  it passes 0.5 (null for S5).

Sections: config and presets, data, model, loss/optimizer/training step, metrics, main.
"""

from __future__ import annotations

import itertools
import math
import re
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import analysis
import runner

# ======================================================================================
# Config and presets
# ======================================================================================

TASKS = ("x_div_y", "x_minus_y", "x_plus_y", "permutation")


@dataclass(frozen=True)
class Config:
    """The full description of a study. Every field is a command-line option (--field=value, lists
    comma-separated); a field typed `X | tuple[X, ...]` takes a list that becomes an axis of the
    grid, like layers x dims x heads (e.g. --batch_size=64,512)."""

    tasks: tuple[str, ...] = TASKS  # tasks to train on (any of TASKS)
    layers: tuple[int, ...] = (1, 2, 4)  # numbers of decoder blocks to try
    dims: tuple[int, ...] = (64, 128, 256)  # d_model values to try
    heads: tuple[int, ...] = (2, 4, 8)  # numbers of attention heads to try (must divide d_model)
    seeds: int = 5  # runs per task and architecture; seeds 0 .. seeds-1
    num_steps: int = 7500  # optimizer steps per run
    eval_every: int = 10  # steps between evaluations on the full splits (eval_schedule=linear)
    eval_schedule: str = "linear"  # "linear": every eval_every steps; "log": log-spaced steps
    eval_points_per_decade: int = 20  # evaluations per factor of 10 in steps (eval_schedule=log)
    hold_evals: int = 10  # grokking that holds: validation accuracy > 99% at this many evaluations in a row
    prime: int | tuple[int, ...] = 97  # modulus p of the arithmetic tasks (x_div_y needs a prime)
    train_fraction: float | tuple[float, ...] = 0.5  # fraction of all equations in the training split
    batch_size: int | tuple[int, ...] = 512  # examples per step, drawn with replacement from the training split
    lr: float | tuple[float, ...] = 1e-3  # AdamW peak learning rate
    weight_decay: float | tuple[float, ...] = 0.5  # AdamW decoupled weight decay, on every parameter
    warmup_steps: int | tuple[int, ...] = 50  # linear learning-rate warm-up from 0, in steps
    zip_axes: tuple[str, ...] = ()  # lists that pair up value by value instead of crossing (lr,weight_decay; dims,heads)
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.98  # AdamW second-moment decay
    test_fraction: float = 0.0  # fraction of all equations held out as a test split (0: none)
    perm_k: int = 5  # the permutation task composes elements of S_k (k! elements)
    dtype: str = "float32"  # "float32", or "float64" for exactness checks (on a CPU)
    progress_measures: bool = True  # Fourier concentration, norms by part, logit margin, softmax saturation


PRESETS: dict[str, dict] = {
    # The template's baseline: one architecture, all four tasks, 3 seeds. Produces run_0/.
    "baseline": dict(layers=(2,), dims=(128,), heads=(4,), seeds=3),
    # Every code path in well under a minute on 2 CPU cores; for tests, not for science.
    # Small tables (p = 23, S_4) so that the 2-layer model memorizes within the budget.
    "smoke": dict(layers=(1, 2), dims=(32,), heads=(4,), seeds=2, prime=23, perm_k=4, num_steps=300),
    # A CPU quick start (under 3 minutes on 2 cores) that shows grokking: validation accuracy near
    # chance long after the training set is memorized, then a jump. x+y mod 59 with 35% of the
    # equations for training; twice the template's learning rate, weight decay 1: both halve the
    # time scale. A narrower and a wider 2-layer model: the wider memorizes sooner; both grok alike
    # (at steps 1700-1940 with seeds 0 and 1, so 2200 steps show the jump and what follows).
    "demo": dict(tasks=("x_plus_y",), layers=(2,), dims=(64, 96), heads=(4,), seeds=2, prime=59,
                 train_fraction=0.35, lr=2e-3, weight_decay=1.0, num_steps=2200, eval_every=20),
    # The study's question at CPU scale (98 min on 2 cores): depth 1/2/4 x (d_model, heads)
    # in (64, 2), (64, 4), (128, 4) (zipped), so heads vary at equal width (64x2 vs 64x4) and at
    # equal head size (64x2 vs 128x4, 32 each), width at equal heads (64x4 vs 128x4), and 4x64 (208K
    # parameters) vs 1x128 (215K) is a matched deep-narrow / wide-shallow pair; x/y and x-y
    # mod 59 with 50% of the equations for training, 6 seeds (paired tests per cell), lr 2e-3 and
    # weight decay 1. Pilots chose it (notes.txt): at the template's lr 1e-3 / weight decay 0.5 only
    # 2 of 12 runs grok within 5000 steps here (8 of 24 with 70% training data), so that setting
    # would need more than twice the budget; with 70% training data one-layer width-64 models fail
    # to fit at lr 2e-3 (8 of 12 runs); d_model 32 fails to fit at one layer under both settings.
    "capacity_cpu": dict(tasks=("x_div_y", "x_minus_y"), layers=(1, 2, 4), dims=(64, 64, 128), heads=(2, 4, 4),
                         zip_axes=("dims", "heads"), seeds=6, prime=59, lr=2e-3, weight_decay=1.0, num_steps=3500,
                         eval_every=50),
    # Capacity or its confounds (about 2 hours on 2 cores): depth at one learning-rate scale or
    # several, and width against head size. Depth: 1 and 4 layers at 64 x 2 heads under three
    # (lr, weight decay) with one product, 2e-3 (the weight-decay time scale, and so the budget,
    # stays put) from capacity_cpu's (2e-3, 1) up to (8e-3, 0.25); pilots (notes.txt) found no
    # setting below: at (1e-3, 2) and (5e-4, 4) neither depth memorizes in 4000 steps. Heads: 1
    # layer with 16-dimensional heads at width 128 (128 x 8) beside 128 x 4, 64 x 4 and 64 x 2
    # (32, 16 and 32 dimensions), at every setting. x/y and x-y mod 59, 50% training data, 6 seeds.
    "confounds_cpu": dict(tasks=("x_div_y", "x_minus_y"), layers=(1, 4, 1, 1, 1), dims=(64, 64, 64, 128, 128),
                          heads=(2, 2, 4, 4, 8), lr=(2e-3, 4e-3, 8e-3), weight_decay=(1.0, 0.5, 0.25),
                          zip_axes=("layers", "dims", "heads", "lr", "weight_decay"), seeds=6, prime=59,
                          num_steps=4000, eval_every=50),
    # The batch-size study: the baseline model on x/y with weight decay 1.0 at batch 64 to 512,
    # 100k steps evaluated at log-spaced steps (grokking at 512, not at 64). GPU work.
    "batch_size": dict(tasks=("x_div_y",), layers=(2,), dims=(128,), heads=(4,), seeds=3,
                       batch_size=(64, 128, 256, 512), weight_decay=1.0, num_steps=100_000,
                       eval_schedule="log"),
    # The primes study: x+y and x-y mod 97 and 113, with 1 and 2 layers.
    "primes": dict(tasks=("x_plus_y", "x_minus_y"), layers=(1, 2), dims=(128,), heads=(4,), seeds=3,
                   prime=(97, 113)),
}
# How presets and Config's defaults combine: a preset replaces the defaults of the fields it names,
# the command line (--field=value) then replaces any field. A folder made by
# `python experiment.py --make_template=DIR --preset=NAME` instead has the preset written into
# Config's defaults above, so that this file is the study that runs, and refuses presets.
TEMPLATE_OF: str | None = None  # the preset this file's Config defaults were made from (a template folder)
TIME_LIMIT_S: float | None = None  # stop (exit 3) when the first steps project the study past it; None: no limit


def is_prime(n: int) -> bool:
    return n >= 2 and all(n % f for f in range(2, math.isqrt(n) + 1))


def validate(c: Config) -> None:
    """Reject an impossible study with one line that says how to fix it (ValueError)."""
    def need(ok: bool, message: str):
        if not ok:
            raise ValueError(message)

    need(len(c.tasks) > 0, "--tasks is empty; choose from " + ",".join(TASKS))
    for t in c.tasks:
        need(t in TASKS, f"unknown task {t!r}; choose from {','.join(TASKS)}")
    for name in ("layers", "dims", "heads"):
        need(len(getattr(c, name)) > 0 and all(v > 0 for v in getattr(c, name)), f"--{name} needs positive integers")
    for name in ("seeds", "num_steps", "eval_every", "eval_points_per_decade", "hold_evals"):
        need(getattr(c, name) > 0, f"--{name} must be a positive integer, got {getattr(c, name)}")
    for a in runner.architectures(c):  # the (d_model, heads) the study builds: crossed, or paired by zip_axes
        need(a.d_model % a.heads == 0, f"{a.heads} heads do not divide d_model {a.d_model}; pick --heads that "
             "divide every --dims value (or pair them with --zip_axes=dims,heads)")
    need(all(b > 0 for b in runner.axis_values(c, "batch_size")), "--batch_size must be positive")
    need(c.eval_schedule in ("linear", "log"), f"--eval_schedule={c.eval_schedule!r}: use linear or log")
    need(all(w >= 0 for w in runner.axis_values(c, "warmup_steps")), "--warmup_steps must be >= 0")
    need(all(v > 0 and math.isfinite(v) for v in runner.axis_values(c, "lr")), "--lr must be positive")
    need(all(v >= 0 and math.isfinite(v) for v in runner.axis_values(c, "weight_decay")), "--weight_decay must be >= 0")
    need(0 <= c.beta1 < 1 and 0 <= c.beta2 < 1, "--beta1 and --beta2 must lie in [0, 1)")
    for f in runner.axis_values(c, "train_fraction"):
        need(0 < f < 1, f"--train_fraction must lie strictly between 0 and 1, got {f}")
    need(0 <= c.test_fraction < 1, f"--test_fraction must lie in [0, 1), got {c.test_fraction}")
    for p in runner.axis_values(c, "prime"):
        need(2 <= p <= 2000, f"--prime must lie in 2..2000 (the tables hold p^2 equations), got {p}")
        need(is_prime(p) or "x_div_y" not in c.tasks, f"--prime={p} is not prime, so x_div_y has no inverse for "
             "every divisor; use a prime such as 97 or 113, or drop x_div_y from --tasks")
    need(2 <= c.perm_k <= 6, f"--perm_k must lie in 2..6 (S_k has k! elements), got {c.perm_k}")
    for t, p, f in itertools.product(c.tasks, runner.axis_values(c, "prime"), runner.axis_values(c, "train_fraction")):
        n = task_size(t, p, c.perm_k)
        train, test = int(n * f), int(n * c.test_fraction)
        need(train >= 1 and n - train - test >= 1 and (test >= 1 or c.test_fraction == 0),
             f"--train_fraction={f} and --test_fraction={c.test_fraction} leave an empty split of the {n} "
             f"equations of {t}")
    need(c.dtype in ("float32", "float64"), f"--dtype={c.dtype!r}: use float32 or float64")


# ======================================================================================
# Data: every equation of a task as one table; a run's split and batches from its own seed
# ======================================================================================

OPERATORS = {"x_plus_y": "+", "x_minus_y": "-", "x_div_y": "/", "permutation": "*"}  # task -> o in "a o b"
TOKEN_OP, TOKEN_EQ, TOKEN_ELEMENT_0 = 0, 1, 2  # vocabulary: "o", "=", then the elements (element e is token e + 2)
POSITIONS = 5  # rows of the position table: the template's (its equations had 5 symbols), kept
#                for identical initialization and parameter count
DATA_SEED_BASE = 7_000_003  # keeps a run's split/batch stream apart from its initialization


@dataclass
class TaskTable:
    """Every equation of one task: tokens [a, o, b, =] and the answer c (an element index)."""

    task: str
    tokens: torch.Tensor  # (equations, 4) long
    answers: torch.Tensor  # (equations,) long, in 0 .. num_classes-1
    operands: torch.Tensor  # (equations, 2) long: a and b as element indices
    num_classes: int  # elements, i.e. possible answers
    vocab_size: int  # num_classes + 2 ("o" and "=")
    elements: list  # element index -> printable element (int, or tuple for permutations)
    domain: str  # the elements' set, e.g. "mod97" or "S5": tasks of one domain share a vocabulary
    operator: str  # how an equation is written, a<operator>b (--query reads equations so)


def task_size(task: str, prime: int, perm_k: int) -> int:
    if task == "permutation":
        return math.factorial(perm_k) ** 2
    return prime * (prime - 1 if task == "x_div_y" else prime)


def build_table(task: str, c: Config) -> TaskTable:
    """The complete table of a task for a run's config, in the template's order (a major, b minor)."""
    if task == "permutation":
        k = c.perm_k
        perms = np.array(list(itertools.permutations(range(k))))  # (n, k), lexicographic order
        n = len(perms)
        composed = perms[np.arange(n)[:, None, None], perms[None, :, :]]  # composed[a, b, i] = a[b[i]]
        code = lambda arr: (arr * k ** np.arange(k)).sum(-1)  # a permutation as a base-k number
        lookup = np.full(k ** k, -1)
        lookup[code(perms)] = np.arange(n)
        answers = lookup[code(composed)].reshape(-1)
        a, b = np.divmod(np.arange(n * n), n)
        elements, domain = [tuple(map(int, p)) for p in perms], f"S{k}"
    else:
        p = c.prime
        bs = np.arange(1 if task == "x_div_y" else 0, p)
        a, b = np.repeat(np.arange(p), len(bs)), np.tile(bs, p)
        if task == "x_plus_y":
            answers = (a + b) % p
        elif task == "x_minus_y":
            answers = (a - b) % p
        else:  # a * b^(p-2) mod p: a times the inverse of b (Fermat)
            inverse = np.array([0] + [pow(int(v), p - 2, p) for v in range(1, p)])
            answers = (a * inverse[b]) % p
        n, elements, domain = p, list(range(p)), f"mod{p}"
    tokens = np.stack([a + TOKEN_ELEMENT_0, np.full_like(a, TOKEN_OP), b + TOKEN_ELEMENT_0, np.full_like(a, TOKEN_EQ)], 1)
    as_long = lambda array: torch.as_tensor(array, dtype=torch.long)
    return TaskTable(task, as_long(tokens), as_long(answers), as_long(np.stack([a, b], 1)), n, n + 2, elements,
                     domain, OPERATORS[task])


def run_data(num_equations: int, c: Config, seed: int):
    """A run's splits and its stream of training batches, both from the run's own generator (seeded
    by the seed alone: every architecture sees the same data, so comparisons are paired).

    Returns ({"train", "val"[, "test"]: equation indices}, draw), where draw(steps) gives the next
    (steps, batch_size) training indices, drawn uniformly with replacement as the template does."""
    generator = torch.Generator().manual_seed(DATA_SEED_BASE + seed)
    order = torch.randperm(num_equations, generator=generator)  # the template: shuffle, then cut
    train_end = int(num_equations * c.train_fraction)
    test_start = num_equations - int(num_equations * c.test_fraction)  # the test split is the tail
    splits = {"train": order[:train_end], "val": order[train_end:test_start]}
    if c.test_fraction > 0:
        splits["test"] = order[test_start:]

    def draw(steps: int) -> torch.Tensor:
        return splits["train"][torch.randint(train_end, (steps, c.batch_size), generator=generator)]

    return splits, draw


# ======================================================================================
# Model: the template's Transformer for one run, attention written out
# ======================================================================================

INIT_SEED_BASE = 1337  # the template initializes run s under torch.manual_seed(1337 + s)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which each position sees itself and the positions before it.
    Parameters, names and initialization are nn.MultiheadAttention's (the template's module)."""

    def __init__(self, d_model: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d_model, d_model))  # query, key, value
        self.in_proj_bias = nn.Parameter(torch.empty(3 * d_model))
        self.out_proj = nn.Linear(d_model, d_model)
        nn.init.xavier_uniform_(self.in_proj_weight)  # after out_proj, as nn.MultiheadAttention does
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch, seq, d_model)
        batch, seq, d = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).split(d, dim=-1)
        q, k, v = (t.view(batch, seq, self.heads, d // self.heads).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-2, -1) / math.sqrt(d // self.heads)  # (batch, heads, seq, seq)
        future = torch.ones(seq, seq, dtype=torch.bool, device=x.device).triu(1)
        weights = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
        return self.out_proj((weights @ v).transpose(1, 2).reshape(batch, seq, d))


class DecoderBlock(nn.Module):
    """The template's block: post-LayerNorm causal self-attention, then a 4x GELU MLP."""

    def __init__(self, d_model: int, heads: int):
        super().__init__()
        self.self_attn = CausalSelfAttention(d_model, heads)
        self.self_attn_norm = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))
        self.ffn_norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch, seq, d_model)
        x = self.self_attn_norm(x + self.self_attn(x))
        return self.ffn_norm(x + self.ffn(x))


class Transformer(nn.Module):
    """The template's decoder-only Transformer: tokens (batch, 4) -> logits (batch, classes)."""

    def __init__(self, layers: int, d_model: int, heads: int, vocab_size: int, num_classes: int):
        super().__init__()
        self.token_embeddings = nn.Embedding(vocab_size, d_model)
        self.position_embeddings = nn.Embedding(POSITIONS, d_model)
        self.blocks = nn.Sequential(*[DecoderBlock(d_model, heads) for _ in range(layers)])
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.token_embeddings(tokens) + self.position_embeddings(positions)  # (batch, seq, d_model)
        return self.head(self.norm(self.blocks(x))[:, -1])  # the answer is read at "="


def build_model(layers: int, d_model: int, heads: int, table: TaskTable, seed: int, c: Config) -> Transformer:
    """Run `seed`'s model, initialized as the template does: the global seed 1337 + seed, set just
    before the model is built (the caller's random state is left untouched). c is the run's config
    (every axis at this run's value), for a model that reads a field of its own, e.g. a dropout
    rate: declared as an axis, `dropout: float | tuple[float, ...] = 0.0`, it is swept like lr."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(INIT_SEED_BASE + seed)
        return Transformer(layers, d_model, heads, table.vocab_size, table.num_classes)


# ======================================================================================
# Loss, optimizer and training step
# ======================================================================================


def loss_fn(logits: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
    """The training objective of one run: (batch, classes), (batch,) -> scalar."""
    return F.cross_entropy(logits, answers)


def make_optimizer(params: dict[str, torch.Tensor], c: Config):
    """AdamW over a group's parameters (name -> (members, ...) tensor) with the template's linear
    warm-up. Its update is elementwise, so every run gets exactly the update it would get alone;
    param groups by name work as usual (e.g. no decay on "bias"); returns (optimizer, schedule)."""
    optimizer = torch.optim.AdamW(params.values(), lr=c.lr, betas=(c.beta1, c.beta2),
                                  weight_decay=c.weight_decay, fused=True)
    warmup = lambda step: min(step / c.warmup_steps, 1.0) if c.warmup_steps else 1.0  # step 0 at lr 0
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, warmup)


def train_step(forward, optimizer, schedule, tokens: torch.Tensor, answers: torch.Tensor) -> None:
    """One optimizer step of every run of a group. forward: tokens (members, batch, 4) -> logits
    (members, batch, classes), over the parameters the optimizer holds; answers (members, batch)."""
    losses = torch.vmap(loss_fn)(forward(tokens), answers)  # (members,)
    optimizer.zero_grad(set_to_none=True)
    losses.sum().backward()  # runs share no parameter: each gets the gradient of its own loss
    optimizer.step()
    schedule.step()


# ======================================================================================
# Metrics: curves on the full splits, then one dict of metrics per run
# ======================================================================================

THRESHOLD = 0.99  # "reached" means accuracy strictly above 99% (memorization, grokking)
EARLIER_THRESHOLDS = (0.5, 0.9)  # also timed, so that a conclusion can be checked at more than one


def evaluation_steps(c: Config) -> list[int]:
    """Steps after which a run is evaluated, increasing and ending with the last step (a step 0
    would evaluate the untrained models): every eval_every steps (linear), or eval_points_per_decade
    steps per factor of 10 rounded to whole steps, duplicates dropped (log: 100k-step runs with a
    few hundred evaluations)."""
    if c.eval_schedule == "log":
        points = math.ceil(math.log10(c.num_steps) * c.eval_points_per_decade)
        steps = sorted({min(round(10 ** (k / c.eval_points_per_decade)), c.num_steps) for k in range(points + 1)})
    else:
        steps = list(range(c.eval_every, c.num_steps + 1, c.eval_every))
    return steps if steps and steps[-1] == c.num_steps else steps + [c.num_steps]


def example_metrics(logits: torch.Tensor, answers: torch.Tensor, c: Config) -> dict[str, torch.Tensor]:
    """Per equation of one run, (rows, classes), (rows,) -> name: (rows,). Averaged over each split,
    they are the curves <split>_<name>: train_loss, train_acc, val_loss, val_acc (test_...), and
    with c.progress_measures train_margin, train_saturated, val_...:
    - margin: the correct logit minus the largest other one (> 0: answered right);
    - saturated: 1 where the float32 softmax of the correct class rounds to exactly 1, the softmax
      collapse that stops float32 gradients (Prieto et al. 2025)."""
    metrics = {"loss": F.cross_entropy(logits, answers, reduction="none"),
               "acc": (logits.argmax(-1) == answers).to(logits.dtype)}
    if c.progress_measures:
        correct = logits.gather(-1, answers[:, None])[:, 0]
        others = logits.scatter(-1, answers[:, None], float("-inf")).amax(-1)
        metrics["margin"] = correct - others
        metrics["saturated"] = (logits.float().softmax(-1).gather(-1, answers[:, None])[:, 0] == 1).to(logits.dtype)
    return metrics


FOURIER_TOP = 5  # embedding_fourier_top5: the share of the embeddings' power in this many frequencies
KEY_FREQUENCY_POWER = 0.9  # embedding_key_frequencies: the fewest frequencies that hold this share
FOURIER_BAR = 0.5  # step_fourier_50: the top-5 share passes this (it starts near 0.2, a random embedding's)


def model_metrics(params: dict[str, torch.Tensor], tables: list[TaskTable], c: Config) -> dict[str, torch.Tensor]:
    """Curves of the weights themselves, name -> (members,), from the stacked parameters
    (name -> (members, ...)) and each member's task table: the global L2 norm (tied to grokking
    in the literature), and with c.progress_measures the norms by part and the Fourier measures."""
    squares = {name: p.detach().double().pow(2).flatten(1).sum(1) for name, p in params.items()}
    curves = {"weight_norm": sum(squares.values()).sqrt()}
    if c.progress_measures:
        for name, square in squares.items():  # <part>_norm over the parameters of each part
            part = parameter_part(name)
            if part:
                curves[f"{part}_norm"] = curves.get(f"{part}_norm", 0) + square
        curves = {k: v.sqrt() if k != "weight_norm" else v for k, v in curves.items()}
        curves.update(fourier_measures(params["token_embeddings.weight"].detach(), tables))
    return curves


def parameter_part(name: str) -> str | None:
    """The part of the model a parameter belongs to: embedding, block<i>_attn, block<i>_mlp or
    head_weight (the LayerNorms and the head's bias belong to none)."""
    block = re.match(r"blocks\.(\d+)\.(self_attn|ffn)\.", name)
    if block:
        return f"block{block[1]}_" + ("attn" if block[2] == "self_attn" else "mlp")
    return {"token_embeddings.weight": "embedding", "position_embeddings.weight": "embedding",
            "head.weight": "head_weight"}.get(name)


def fourier_measures(embeddings: torch.Tensor, tables: list[TaskTable]) -> dict[str, torch.Tensor]:
    """How much of the element embeddings (members, vocab, d) lies in a few frequencies of the
    DFT over the elements, as in the Fourier circuit of Nanda et al. 2023: the elements of x+y and
    x-y in order (the cyclic group Z_p), those of x/y by their discrete logarithm to a primitive
    root (the nonzero elements form a cyclic group too). A frequency and its conjugate count as
    one; the mean (frequency 0) is left out. NaN for the permutation task (S_k is not cyclic).
    embedding_fourier_top5: the share of the power in the FOURIER_TOP strongest frequencies;
    embedding_key_frequencies: the fewest frequencies that hold KEY_FREQUENCY_POWER of it."""
    members = len(tables)
    top = embeddings.new_full((members,), float("nan"), dtype=torch.float64)
    keys = top.clone()
    orders = [cyclic_order(t) for t in tables]
    for order in {o for o in orders if o is not None}:  # members with one order: one batched DFT
        rows = [i for i, o in enumerate(orders) if o == order]
        e = embeddings[rows][:, [TOKEN_ELEMENT_0 + k for k in order]].double()  # (rows, n, d)
        power = torch.fft.fft(e, dim=1).abs().pow(2).sum(-1)  # (rows, n)
        n = len(order)
        pairs = torch.stack([power[:, k] + power[:, n - k] * (k != n - k) for k in range(1, n // 2 + 1)], 1)
        ranked = pairs.sort(dim=1, descending=True).values / pairs.sum(1, keepdim=True)
        top[rows] = ranked[:, :FOURIER_TOP].sum(1)
        keys[rows] = (ranked.cumsum(1) < KEY_FREQUENCY_POWER).sum(1).double() + 1
    return {f"embedding_fourier_top{FOURIER_TOP}": top, "embedding_key_frequencies": keys}


def cyclic_order(table: TaskTable) -> tuple[int, ...] | None:
    """The elements of a task in the order of its cyclic group: 0 .. p-1 for x+y and x-y, g^0,
    g^1, .., g^(p-2) for x/y (g a primitive root); None for the permutation task."""
    if table.task == "permutation":
        return None
    p = table.num_classes
    if table.task != "x_div_y":
        return tuple(range(p))
    g = primitive_root(p)
    return tuple(pow(g, i, p) for i in range(p - 1))


def primitive_root(p: int) -> int:
    """The smallest g whose powers run through every nonzero element mod the prime p."""
    factors = {f for f in range(2, p) if (p - 1) % f == 0 and is_prime(f)}
    return next(g for g in range(2, p) if all(pow(g, (p - 1) // f, p) != 1 for f in factors)) if p > 2 else 1


def first_step_above(steps: np.ndarray, accuracy: np.ndarray, num_steps: int, threshold: float = THRESHOLD) -> int:
    """First evaluated step with accuracy > threshold, or num_steps when never (the template's rule)."""
    above = np.flatnonzero(accuracy > threshold)
    return int(steps[above[0]]) if len(above) else num_steps


def sustained_step(steps: np.ndarray, accuracy: np.ndarray, num_steps: int) -> int:
    """First evaluated step from which accuracy stays > 0.99 at every later evaluation."""
    below = np.flatnonzero(accuracy <= THRESHOLD)
    start = below[-1] + 1 if len(below) else 0
    return int(steps[start]) if start < len(steps) else num_steps


def run_metrics(steps: np.ndarray, curves: dict[str, np.ndarray], c: Config) -> dict:
    """One run's curves (name -> (evals,)) and config -> its metrics (defined in notes.txt). Every
    key returned is saved in runs.json; HEADLINE_METRICS also go to final_info.json."""
    num_steps = c.num_steps
    train_acc, val_acc = curves["train_acc"], curves["val_acc"]
    losses = [v for name, v in curves.items() if name.endswith("loss")]
    step_train = first_step_above(steps, train_acc, num_steps)
    step_val = first_step_above(steps, val_acc, num_steps)
    grokked = bool((val_acc > THRESHOLD).any())
    metrics = {
        "step_train_acc_99": step_train,
        "step_val_acc_99": step_val,
        **{f"step_{split}_acc_{round(100 * t)}": first_step_above(steps, curves[f"{split}_acc"], num_steps, t)
           for split in ("train", "val") for t in EARLIER_THRESHOLDS},
        "step_val_acc_99_sustained": sustained_step(steps, val_acc, num_steps),
        "diverged": int(not np.isfinite(losses + [train_acc, val_acc]).all()),  # a NaN/inf loss: it blew up
        "memorized": int((train_acc > THRESHOLD).any()),
        "grokked": int(grokked),
        "grok_delay": step_val - step_train,
        # Stability: over the evaluations after the grokking one; undefined (None) without them.
        "stable_fraction": None,
        "min_val_acc_after_grok": None,
        "val_drops_after_grok": None,  # validation accuracy falls to <= 99%: the two kinds below
        "val_only_drops_after_grok": None,  # ... while training accuracy stays > 99%: generalization lost
        "joint_drops_after_grok": None,  # ... and training accuracy is <= 99% too: optimization unstable
    }
    if grokked:
        first = np.flatnonzero(val_acc > THRESHOLD)[0]
        after = val_acc[first + 1:]
        above = val_acc[first:] > THRESHOLD  # the grokking evaluation is above
        drops = np.flatnonzero(above[:-1] & ~above[1:]) + first + 1  # evaluations where it fell
        joint = int((train_acc[drops] <= THRESHOLD).sum())
        metrics.update(val_drops_after_grok=len(drops), val_only_drops_after_grok=len(drops) - joint,
                       joint_drops_after_grok=joint)
        if len(after):
            metrics["stable_fraction"] = float((after > THRESHOLD).mean())
            metrics["min_val_acc_after_grok"] = float(after.min())
    # The peak, grokking that holds (c.hold_evals evaluations in a row), training instability after
    # memorization, the step the Fourier share passes FOURIER_BAR: analysis.py, which also computes
    # them from the curves of studies made before they were recorded.
    metrics.update(analysis.curve_measures(steps, curves, num_steps, THRESHOLD, c.hold_evals, FOURIER_BAR))
    fourier = curves.get(f"embedding_fourier_top{FOURIER_TOP}")
    if fourier is not None:  # when the Fourier circuit forms: half its rise, and how long before grokking
        rises = np.isfinite(fourier).all() and fourier[-1] > fourier[0]
        half = np.flatnonzero(fourier >= (fourier[0] + fourier[-1]) / 2)[0] if rises else None
        metrics["step_fourier_half"] = int(steps[half]) if rises else None
        metrics["fourier_lead"] = step_val - int(steps[half]) if rises and grokked else None
    if "test_acc" in curves:
        metrics["step_test_acc_99"] = first_step_above(steps, curves["test_acc"], num_steps)
    for name, curve in curves.items():  # null for a run whose last evaluation is not finite
        metrics["final_" + name] = float(curve[-1]) if np.isfinite(curve[-1]) else None
    return metrics


# The metrics final_info.json reports per task and architecture (mean and standard error over
# seeds), with the decimals kept: what the AI-Scientist harness shows its model after each run.
# Every metric, per run, is in runs.json.
HEADLINE_METRICS = {"step_train_acc_99": 0, "step_val_acc_99": 0, "grokked": 3, "final_val_acc": 4,
                    "parameter_count": 0}


# ======================================================================================
# Main: hand the science above to the machinery
# ======================================================================================


def science() -> runner.Science:
    return runner.Science(
        config=Config, presets=PRESETS, validate=validate, build_table=build_table, run_data=run_data,
        build_model=build_model, make_optimizer=make_optimizer, train_step=train_step,
        evaluation_steps=evaluation_steps, example_metrics=example_metrics, model_metrics=model_metrics,
        run_metrics=run_metrics, headline_metrics=HEADLINE_METRICS, source=__file__, template_of=TEMPLATE_OF,
        time_limit_s=TIME_LIMIT_S)


if __name__ == "__main__":
    sys.exit(runner.main(science()))
