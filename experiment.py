"""How Transformer capacity (depth, width, heads) shapes grokking on algorithmic tasks.

One self-contained script: it builds the datasets, trains a small Transformer for every
architecture x task x seed of a study, measures memorization, grokking and stability, and writes
`final_info.json` in the AI-Scientist shape together with curves, config and provenance.

    python experiment.py --out_dir=run_0                      # the full study (GPU work)
    python experiment.py --out_dir=run_0 --preset=baseline    # the template's baseline, 3 seeds
    python experiment.py --out_dir=run_1 --preset=demo        # a few minutes on 2 CPU cores
    python experiment.py --out_dir=tiny --layers=1,2 --dims=64 --heads=4 \\
        --tasks=x_plus_y,permutation --seeds=2 --num_steps=300
    GROKKING_PRESET=smoke python experiment.py --out_dir=run_1  # a preset without extra arguments
    python experiment.py --out_dir=run_2 --preset=batch_size   # batch 64..512 on x/y, 100k steps (GPU)
    python experiment.py --out_dir=run_3 --preset=primes --save_models=1  # p = 97 and 113; keep weights
    python experiment.py --query=run_3 --task=x_plus_y --arch=L2_D128_H4 --seed=0 --prime=113 30+74 5+3
    python experiment.py --out_dir=run_4 --backend=ray --ray_address=auto  # groups as Ray tasks
    python experiment.py --help                                # every option, with its default

Besides layers, dims and heads, prime, train_fraction, batch_size, lr, weight_decay and
warmup_steps take comma-separated lists, each an axis of the grid (final_info keys then name
them: x_div_y/L2_D128_H4/bs64). --eval_schedule=log evaluates at log-spaced steps for long runs;
--test_fraction holds out a test split; --save_models=1 keeps every run's final weights (plain
arrays in out_dir/models), which --query asks: per equation, the answer, its probability, the truth.

The default study: layers {1,2,4} x d_model {64,128,256} x heads {2,4,8} (27 architectures) on
x+y, x-y, x/y (mod 97) and composition in S5, 5 seeds each: 540 runs of 7500 AdamW steps.
All runs of one architecture (tasks x seeds) train together as one batched model whose weights
carry a leading member dimension; each member follows exactly the trajectory it would follow
alone (tests/test_batched.py proves it in float64).

Cost: the default study is about 31 PFLOP (GPU work). On 2 CPU cores the template's baseline
(--preset=baseline, 12 runs) takes 79 min, 36-47 ms per run and step with evaluation on the full
splits every 10 steps, 2.1-2.7x faster than the template's own loop (97 ms); its grokking steps
on the arithmetic tasks lie within 1.5 standard errors of the template's (run_0/, notes.txt).
A finished group is saved at once: the same command resumes an interrupted study.

Sections, in order: config and command line, data, model, training, metrics, outputs, main.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import importlib
import importlib.util
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
import zipfile
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tqdm import tqdm

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
    eval_every: int = 10  # steps between evaluations on the full splits (eval_schedule=linear)
    eval_schedule: str = "linear"  # "linear": every eval_every steps; "log": log-spaced steps
    eval_points_per_decade: int = 20  # evaluations per factor of 10 in steps (eval_schedule=log)
    # The six fields below take one value or a comma-separated list; each list is an axis of the
    # study's grid, like layers, dims and heads (e.g. --batch_size=64,512).
    batch_size: int | tuple[int, ...] = 512  # examples per step, drawn with replacement from the training split
    lr: float | tuple[float, ...] = 1e-3  # AdamW peak learning rate
    weight_decay: float | tuple[float, ...] = 0.5  # AdamW decoupled weight decay, on every parameter
    warmup_steps: int | tuple[int, ...] = 50  # linear learning-rate warm-up from 0, in steps
    train_fraction: float | tuple[float, ...] = 0.5  # fraction of all equations in the training split
    prime: int | tuple[int, ...] = 97  # modulus p of the arithmetic tasks (x_div_y needs a prime)
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.98  # AdamW second-moment decay
    test_fraction: float = 0.0  # fraction of all equations held out as a test split (0: none)
    perm_k: int = 5  # the permutation task composes elements of S_k (k! elements)
    device: str = "auto"  # "auto" (cuda when present), "cpu", "cuda" or "cuda:N"
    max_members: int = 0  # runs trained at once (0: a whole group); larger groups go in chunks
    save_models: int = 0  # 1: save every run's final weights in out_dir/models (see --query)

    def architectures(self) -> list[Architecture]:
        return [Architecture(n, d, h) for n in self.layers for d in self.dims for h in self.heads]

    def axis(self, name: str) -> tuple:
        """The values of a field that holds one value or a list, always as a tuple."""
        value = getattr(self, name)
        return value if isinstance(value, tuple) else (value,)

    def varied_axes(self) -> list[str]:
        """The non-architecture axes given more than one value, in AXES order."""
        return [name for name in AXES if len(self.axis(name)) > 1]

    def settings(self) -> list[Setting]:
        """Every combination of the AXES values (one when none is a list)."""
        return [Setting(*values) for values in itertools.product(*(self.axis(name) for name in AXES))]


@dataclass(frozen=True)
class Setting:
    """The values of the non-architecture axes for one run; its fields are the AXES."""

    prime: int
    train_fraction: float
    batch_size: int
    lr: float
    weight_decay: float
    warmup_steps: int

    def tag(self, axes: list[str], sep: str = "/") -> str:
        """The values of `axes`, e.g. 'p113/bs64' ('' for no axes)."""
        return sep.join(f"{AXIS_TAGS[a]}{format_number(getattr(self, a))}" for a in axes)


# Config fields beyond the architecture that may be axes of the study, with the short tag that
# names a value in keys and file names (bs64, p113, ...).
AXES = tuple(f.name for f in dataclasses.fields(Setting))
AXIS_TAGS = {"prime": "p", "train_fraction": "tf", "batch_size": "bs", "lr": "lr", "weight_decay": "wd",
             "warmup_steps": "wu"}
# Axes that every member of a batched group shares: the batch is one tensor and one optimizer
# updates the group. Runs that differ in prime or train_fraction still train together.
GROUP_AXES = ("batch_size", "lr", "weight_decay", "warmup_steps")


def format_number(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


PRESETS: dict[str, dict] = {
    # The template's baseline: one architecture, all four tasks, 3 seeds. Produces run_0/.
    "baseline": dict(layers=(2,), dims=(128,), heads=(4,), seeds=3),
    # Every code path in well under a minute on 2 CPU cores; for tests, not for science.
    # Small tables (p = 23, S_4) so that the 2-layer model memorizes within the budget.
    "smoke": dict(layers=(1, 2), dims=(32,), heads=(4,), seeds=2, prime=23, perm_k=4, num_steps=300,
                  eval_every=10),
    # A CPU quick start in which memorization and then grokking happen within minutes:
    # a 1- and a 2-layer model on x+y mod 59 with more training data (70%).
    "demo": dict(tasks=("x_plus_y",), layers=(1, 2), dims=(64,), heads=(4,), seeds=2,
                 prime=59, train_fraction=0.7, num_steps=3000, eval_every=20),
    # The batch-size study: the baseline model on x/y with weight decay 1.0 at batch 64 to 512,
    # 100k steps evaluated at log-spaced steps (grokking at 512, not at 64). GPU work.
    "batch_size": dict(tasks=("x_div_y",), layers=(2,), dims=(128,), heads=(4,), seeds=3,
                       batch_size=(64, 128, 256, 512), weight_decay=1.0, num_steps=100_000,
                       eval_schedule="log"),
    # The primes study: x+y and x-y mod 97 and 113, with 1 and 2 layers.
    "primes": dict(tasks=("x_plus_y", "x_minus_y"), layers=(1, 2), dims=(128,), heads=(4,), seeds=3,
                   prime=(97, 113)),
}

# Command-line options that are not part of the study itself.
RUN_OPTIONS = {
    "out_dir": "folder for every output file (required)",
    "preset": "a named set of overrides: " + ", ".join(PRESETS) + " (or env GROKKING_PRESET)",
    "overwrite": "1 to replace the results already in out_dir",
    "backend": "local (default): groups one after another on this machine; ray: each group a Ray "
               "task, on a cluster or on every GPU of this machine (or env GROKKING_BACKEND)",
    "ray_address": "with --backend=ray: auto (a running cluster), HOST:PORT or ray://HOST:PORT; "
                   "default: start a local Ray instance (or env GROKKING_RAY_ADDRESS)",
    "query": "RUN_DIR: ask a run saved with --save_models=1 the equations that follow (30/74 5/3); "
             "pick the run with --task, --arch, --seed and the varied axes (--prime=113 ...)",
}


BACKENDS = ("local", "ray")


class UsageError(Exception):
    """Bad input: reported as one line on stderr with exit code 2, before any work starts."""


# Config annotation -> (type of one value, "one" value, a "list", or an "axis": one value or a list)
FIELD_KINDS = {"int": (int, "one"), "float": (float, "one"), "str": (str, "one"),
               "tuple[str, ...]": (str, "list"), "tuple[int, ...]": (int, "list"),
               "int | tuple[int, ...]": (int, "axis"), "float | tuple[float, ...]": (float, "axis")}


def parse_value(name: str, text: str, item_type, shape: str):
    """Parse one command-line value into a Config field's value; an axis given one value is
    stored as that value, so single-valued studies save plain numbers."""
    items = [s.strip() for s in text.split(",")] if shape != "one" else [text.strip()]
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
            one = {int: "an integer", float: "a number", str: "a word"}[item_type]
            many = "a comma-separated list of " + one.split(" ", 1)[1] + "s"
            what = {"one": one, "list": many, "axis": f"{one} or {many}"}[shape]
            raise UsageError(f"--{name}={text!r}: expected {what}") from None
    if shape == "one" or (shape == "axis" and len(parsed) == 1):
        return parsed[0]
    return tuple(parsed)


def config_field_types() -> dict[str, tuple]:
    """Config field -> (type of one value, shape) as in FIELD_KINDS."""
    return {f.name: FIELD_KINDS[f.type] for f in dataclasses.fields(Config)}


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


def resolve_config(argv: list[str], environ=os.environ) -> tuple[Config, dict]:
    """Command line (+ GROKKING_PRESET) -> (validated Config, run options). Raises UsageError."""
    pairs, positionals = split_arguments(argv)
    if positionals:
        raise UsageError(f"unexpected argument {positionals[0]!r}: options look like --field=value")
    types = config_field_types()
    unknown = [k for k in pairs if k not in types and k not in RUN_OPTIONS]
    if unknown:
        raise UsageError(f"unknown option --{unknown[0]}; known: "
                         + ", ".join(list(RUN_OPTIONS) + list(types)) + " (see --help)")
    preset = pairs.get("preset", environ.get("GROKKING_PRESET", "")).strip() or None
    if preset is not None and preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    overrides = {k: parse_value(k, v, *types[k]) for k, v in pairs.items() if k in types}
    values = {**PRESETS.get(preset, {}), **overrides}
    config = Config(**values)
    validate_config(config)
    if "out_dir" not in pairs or not pairs["out_dir"].strip():
        raise UsageError("--out_dir is required, e.g. --out_dir=run_0")
    overwrite = pairs.get("overwrite", "0")
    if overwrite not in ("0", "1"):
        raise UsageError(f"--overwrite={overwrite!r}: expected 0 or 1")
    backend = pairs.get("backend", environ.get("GROKKING_BACKEND", "")).strip() or "local"
    if backend not in BACKENDS:
        raise UsageError(f"--backend={backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "ray" and importlib.util.find_spec("ray") is None:
        raise UsageError("--backend=ray needs Ray: pip install -r requirements-ray.txt (or use --backend=local)")
    if "ray_address" in pairs and backend != "ray":
        raise UsageError("--ray_address needs --backend=ray")
    ray_address = pairs.get("ray_address", environ.get("GROKKING_RAY_ADDRESS", "")).strip() or None
    options = {"out_dir": pairs["out_dir"], "preset": preset, "overwrite": overwrite == "1",
               "overrides": {k: pairs[k] for k in pairs if k in types}, "backend": backend,
               "ray_address": ray_address if backend == "ray" else None}
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
    for name in AXES:
        need(len(set(c.axis(name))) == len(c.axis(name)), f"--{name} lists a value twice")
    for name in ("seeds", "num_steps", "eval_every", "eval_points_per_decade"):
        need(getattr(c, name) > 0, f"--{name} must be a positive integer, got {getattr(c, name)}")
    need(all(b > 0 for b in c.axis("batch_size")), f"--batch_size must be positive, got {format_value(c.batch_size)}")
    need(c.eval_schedule in ("linear", "log"), f"--eval_schedule={c.eval_schedule!r}: use linear or log")
    need(c.max_members >= 0, f"--max_members must be >= 0 (0: no limit), got {c.max_members}")
    need(c.save_models in (0, 1), f"--save_models={c.save_models}: expected 0 or 1")
    need(all(w >= 0 for w in c.axis("warmup_steps")), f"--warmup_steps must be >= 0, got {format_value(c.warmup_steps)}")
    need(all(v > 0 and math.isfinite(v) for v in c.axis("lr")), f"--lr must be positive, got {format_value(c.lr)}")
    need(all(v >= 0 and math.isfinite(v) for v in c.axis("weight_decay")), "--weight_decay must be >= 0")
    need(0 <= c.beta1 < 1 and 0 <= c.beta2 < 1, "--beta1 and --beta2 must lie in [0, 1)")
    for f in c.axis("train_fraction"):
        need(0 < f < 1, f"--train_fraction must lie strictly between 0 and 1, got {f}")
    need(0 <= c.test_fraction < 1, f"--test_fraction must lie in [0, 1), got {c.test_fraction}")
    for p in c.axis("prime"):
        need(2 <= p <= 2000, f"--prime must lie in 2..2000 (the tables hold p^2 equations), got {p}")
        if "x_div_y" in c.tasks:
            need(is_prime(p), f"--prime={p} is not prime, so x_div_y has no inverse for every "
                              "divisor; use a prime such as 97 or 113, or drop x_div_y from --tasks")
    need(2 <= c.perm_k <= 6, f"--perm_k must lie in 2..6 (S_k has k! elements), got {c.perm_k}")
    for t, p, f in itertools.product(c.tasks, c.axis("prime"), c.axis("train_fraction")):
        n = task_size(t, p, c.perm_k)
        train, test = split_sizes(n, f, c.test_fraction)
        need(train >= 1 and n - train - test >= 1 and (test >= 1 or c.test_fraction == 0),
             f"--train_fraction={f} and --test_fraction={c.test_fraction} leave an empty split "
             f"of the {n} equations of {t}")
    need(re.fullmatch(r"auto|cpu|cuda(:\d+)?", c.device) is not None,
         f"--device={c.device!r}: use auto, cpu, cuda or cuda:N")


def usage() -> str:
    lines = [__doc__.strip(), "", "Options (defaults are the full study):"]
    for name, text in RUN_OPTIONS.items():
        lines.append(f"  --{name:<15} {text}")
    comments, types = field_comments(), config_field_types()
    for f in dataclasses.fields(Config):
        axis = " (a list: an axis of the grid)" if types[f.name][1] == "axis" else ""
        lines.append(f"  --{f.name:<15} {comments.get(f.name, '')}{axis} [default: {format_value(f.default)}]")
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
    return ",".join(map(format_number, v)) if isinstance(v, tuple) else format_number(v)


# ======================================================================================
# Data
# ======================================================================================

INIT_SEED_BASE = 1337  # the template seeds member s's initialization with 1337 + s
DATA_SEED_BASE = 7_000_003  # keeps the split/batch stream apart from the initialization stream
TOKEN_OP, TOKEN_EQ = 0, 1  # vocabulary: "o", "=", then the elements (element e is token e + 2)
SEQ_LEN = 4  # [a, o, b, =]
POSITIONS = 5  # the template's position table has 5 rows (its equations had 5 symbols); kept
#                for identical initialization and parameter count


def task_size(task: str, prime: int, perm_k: int) -> int:
    if task == "permutation":
        return math.factorial(perm_k) ** 2
    return prime * (prime - 1 if task == "x_div_y" else prime)


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


def split_sizes(num_equations: int, train_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(training, test) equation counts; validation holds the rest."""
    return int(num_equations * train_fraction), int(num_equations * test_fraction)


def split_table(num_equations: int, train_fraction: float, generator: torch.Generator,
                test_fraction: float = 0.0):
    """(train, val, test) indices: a seeded shuffle cut at int(n * train_fraction), as the
    template; the optional test split is the shuffle's tail, so without it nothing changes."""
    order = torch.randperm(num_equations, generator=generator)
    cut, test = split_sizes(num_equations, train_fraction, test_fraction)
    return order[:cut], order[cut:num_equations - test], order[num_equations - test:]


@dataclass(frozen=True)
class Member:
    """One run inside a batched group: a task, a seed and the values of the other axes."""

    task: str
    seed: int
    setting: Setting

    @property
    def table_key(self) -> tuple[str, int]:
        return self.task, self.setting.prime


def build_tables(c: Config) -> dict[tuple[str, int], TaskTable]:
    """Every table the study needs, keyed like Member.table_key (S_k is shared by every prime)."""
    tables, built = {}, {}
    for task, prime in itertools.product(c.tasks, c.axis("prime")):
        key = (task, 0 if task == "permutation" else prime)  # S_k does not depend on the prime
        if key not in built:
            built[key] = build_table(task, prime, c.perm_k)
        tables[task, prime] = built[key]
    return tables


class GroupData:
    """The tables, splits and batch streams of every member of a group, on the device.

    Members may have tables of different sizes; tensors are padded to the largest, padded
    equations carry zero weight and evaluation reads each member's own rows only.
    """

    BATCH_CHUNK = 100  # steps of batch indices drawn at a time (the draw is chunk-independent)

    def __init__(self, members: list[Member], tables: dict, c: Config, device):
        self.device = device
        self.batch_size = members[0].setting.batch_size  # the same for the whole group (GROUP_AXES)
        m = len(members)
        sizes = [len(tables[mb.table_key].answers) for mb in members]
        # (members, equations, 3): token a, token b, answer c; one gather draws a whole batch
        equations = torch.zeros(m, max(sizes), 3, dtype=torch.long)
        # Per split (train, val[, test]): 1 on the member's rows of that split, else 0;
        # float64 so that sums are exact counts.
        splits = 3 if c.test_fraction > 0 else 2
        self.split_masks = torch.zeros(splits, m, max(sizes), dtype=torch.float64)
        self.generators, self.train_indices = [], []
        for i, mb in enumerate(members):
            table = tables[mb.table_key]
            n = sizes[i]
            equations[i, :n] = torch.stack([table.tokens[:, 0], table.tokens[:, 2], table.answers], 1)
            gen = data_generator(mb.seed)
            indices = split_table(n, mb.setting.train_fraction, gen, c.test_fraction)
            for split in range(splits):
                self.split_masks[split, i, indices[split]] = 1.0
            self.generators.append(gen)
            self.train_indices.append(indices[0])
        # Runs of consecutive members with equally large tables: evaluated together, unpadded.
        self.eval_blocks, start = [], 0  # [(slice of members, equations per member)]
        for n, run in itertools.groupby(sizes):
            count = len(list(run))
            self.eval_blocks.append((slice(start, start + count), n))
            start += count
        self.split_sizes = self.split_masks.sum(2).t().to(device)  # (members, splits)
        self.split_masks, self.equations = self.split_masks.to(device), equations.to(device)
        self.left, self.right, self.answers = self.equations.unbind(-1)  # views, (members, equations)
        self.member_index = torch.arange(m, device=device)[:, None]  # (members, 1)
        self._chunk, self._chunk_start = None, 0

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """left, right, answers, each (members, batch), for a step (steps come in order)."""
        offset = step - self._chunk_start
        if self._chunk is None or offset >= self._chunk.shape[0]:
            self._chunk, self._chunk_start, offset = self._draw_chunk(), step, 0
        rows = self._chunk[offset]  # (members, batch) equation indices
        return self.equations[self.member_index, rows].unbind(-1)

    def _draw_chunk(self) -> torch.Tensor:
        """(BATCH_CHUNK, members, batch): each member draws from its own generator, on the CPU,
        so the stream is identical on every device; then one copy to the device."""
        draws = [train[torch.randint(len(train), (self.BATCH_CHUNK, self.batch_size), generator=g)]
                 for train, g in zip(self.train_indices, self.generators)]
        chunk = torch.stack(draws, dim=1)
        if torch.device(self.device).type == "cuda":  # pinned: the copy overlaps the training
            chunk = chunk.pin_memory()
        return chunk.to(self.device, non_blocking=True)


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


class StackedBlock(nn.Module):
    """One decoder block's weights for every member: leading dimension = members.
    Weights are stored as (in, out) so that x @ w needs no transpose."""

    # stacked name -> (reference name inside the block, stored transposed)
    REFERENCE_NAMES = {
        "qkv_w": ("self_attn.in_proj_weight", True), "qkv_b": ("self_attn.in_proj_bias", False),
        "out_w": ("self_attn.out_proj.weight", True), "out_b": ("self_attn.out_proj.bias", False),
        "ln1_w": ("self_attn_norm.weight", False), "ln1_b": ("self_attn_norm.bias", False),
        "ff1_w": ("ffn.0.weight", True), "ff1_b": ("ffn.0.bias", False),
        "ff2_w": ("ffn.2.weight", True), "ff2_b": ("ffn.2.bias", False),
        "ln2_w": ("ffn_norm.weight", False), "ln2_b": ("ffn_norm.bias", False),
    }

    def __init__(self, members: int, d: int, dtype):
        super().__init__()
        shapes = {"qkv_w": (d, 3 * d), "qkv_b": (3 * d,), "out_w": (d, d), "out_b": (d,),
                  "ln1_w": (d,), "ln1_b": (d,), "ff1_w": (d, 4 * d), "ff1_b": (4 * d,),
                  "ff2_w": (4 * d, d), "ff2_b": (d,), "ln2_w": (d,), "ln2_b": (d,)}
        for name, shape in shapes.items():
            setattr(self, name, nn.Parameter(torch.zeros(members, *shape, dtype=dtype)))


class BatchedTransformer(nn.Module):
    """Many ReferenceTransformers of one architecture as one model: every weight carries a
    leading member dimension and every matmul is a batched matmul over members.

    Members may have different vocabularies and numbers of classes: the embedding and head are
    padded to the largest, padded entries start at zero and, never receiving a gradient, stay
    zero under AdamW; padded classes are masked out of the logits.

    Two exact shortcuts follow from the causal mask and the fixed input [a, o, b, =]:
    - only the last position feeds the head, so the last block computes keys and values for
      every position but its query, attention output and MLP for the last position alone;
    - positions 0 and 1 ([a, o]) see only a, so their states are computed once per element
      (the "prefix" rows) rather than once per equation, and equations gather them by a.
    """

    # top-level stacked name -> (reference state-dict key, stored transposed);
    # {final} is the final LayerNorm's index in ReferenceTransformer.model, {head} the head's
    REFERENCE_NAMES = {
        "tok_emb": ("token_embeddings.weight", False), "pos_emb": ("position_embeddings.weight", False),
        "lnf_w": ("model.{final}.weight", False), "lnf_b": ("model.{final}.bias", False),
        "head_w": ("model.{head}.weight", True), "head_b": ("model.{head}.bias", False),
    }

    def __init__(self, arch: Architecture, vocab_size: int, num_classes: list[int], dtype=torch.float32):
        """Zero weights for len(num_classes) members; vocab_size and the head are the largest
        member's. Use from_references for initialized members, load_state_dict for saved ones."""
        super().__init__()
        self.arch = arch
        m, d, classes = len(num_classes), arch.d_model, max(num_classes)
        self.tok_emb = nn.Parameter(torch.zeros(m, vocab_size, d, dtype=dtype))  # (members, vocab, d)
        self.pos_emb = nn.Parameter(torch.zeros(m, POSITIONS, d, dtype=dtype))
        self.blocks = nn.ModuleList(StackedBlock(m, d, dtype) for _ in range(arch.layers))
        self.lnf_w = nn.Parameter(torch.zeros(m, d, dtype=dtype))
        self.lnf_b = nn.Parameter(torch.zeros(m, d, dtype=dtype))
        self.head_w = nn.Parameter(torch.zeros(m, d, classes, dtype=dtype))
        self.head_b = nn.Parameter(torch.zeros(m, classes, dtype=dtype))
        # Additive logit mask: 0 for a member's classes, -inf for padding.
        mask = torch.zeros(m, 1, classes, dtype=dtype)
        for i, k in enumerate(num_classes):
            mask[i, :, k:] = -float("inf")
        self.register_buffer("class_mask", mask)
        # Every element token (2 .. vocab-1): the prefix rows of the shared-prefix path.
        self.register_buffer("element_tokens", torch.arange(2, vocab_size))
        # Additive causal masks, kept on the device: [a, o] among themselves; [b, =] over all four.
        self.register_buffer("prefix_mask", torch.tensor([[0.0, -math.inf], [0.0, 0.0]], dtype=dtype))
        self.register_buffer("suffix_mask", torch.tensor([[0.0, 0.0, 0.0, -math.inf], [0.0] * 4], dtype=dtype))

    @classmethod
    def from_references(cls, arch: Architecture, references: list[ReferenceTransformer],
                        num_classes: list[int], dtype=torch.float32) -> BatchedTransformer:
        """The members' initial weights copied from their ReferenceTransformers."""
        model = cls(arch, max(r.token_embeddings.num_embeddings for r in references), num_classes, dtype)
        with torch.no_grad():
            for i, ref in enumerate(references):
                state = ref.state_dict()
                for module, name, key, transpose in model._weights():
                    value = state[key].t() if transpose else state[key]
                    target = getattr(module, name)[i]
                    target[tuple(slice(0, s) for s in value.shape)].copy_(value)
        return model

    def _weights(self):
        """(module, stacked name, ReferenceTransformer state-dict key, stored transposed)."""
        n = self.arch.layers
        for name, (key, transpose) in self.REFERENCE_NAMES.items():
            yield self, name, key.format(final=n, head=n + 1), transpose
        for layer, block in enumerate(self.blocks):
            for name, (key, transpose) in StackedBlock.REFERENCE_NAMES.items():
                yield block, name, f"model.{layer}.{key}", transpose

    @torch.no_grad()
    def member_state(self, i: int, vocab_size: int, num_classes: int) -> dict[str, torch.Tensor]:
        """Member i's weights as a ReferenceTransformer state dict (padding stripped)."""
        unpadded = {"tok_emb": (slice(vocab_size),), "head_w": (slice(None), slice(num_classes)),
                    "head_b": (slice(num_classes),)}
        state = {}
        for module, name, key, transpose in self._weights():
            value = getattr(module, name)[i][unpadded.get(name, ())]
            state[key] = (value.t() if transpose else value).clone()
        return state

    @property
    def members(self) -> int:
        return self.tok_emb.shape[0]

    @torch.no_grad()
    def weight_norms(self) -> torch.Tensor:
        """(members,) global L2 norm of each member's parameters (padding is zero)."""
        return sum(p.pow(2).flatten(1).sum(1) for p in self.parameters()).sqrt()

    def forward(self, left: torch.Tensor, right: torch.Tensor, members: slice = slice(None)) -> torch.Tensor:
        """Logits of [left, o, right, =] at the last position.

        left, right: (members, batch) operand tokens; members: which members of the model these
        rows belong to (a contiguous slice). Returns (members, batch, classes)."""
        m, b = left.shape
        P = {name: p[members] for name, p in self.named_parameters() if "." not in name}
        blocks = [{name: p[members] for name, p in blk.named_parameters()} for blk in self.blocks]
        rows = torch.arange(m, device=left.device)[:, None]  # (members, 1)
        elements = len(self.element_tokens)
        if elements < b:  # shared prefix: one row per element, equations gather theirs
            prefix_tokens, prefix_index = self.element_tokens.expand(m, elements), left - 2
        else:  # fewer equations than elements: one prefix row per equation
            prefix_tokens, prefix_index = left, torch.arange(b, device=left.device).expand(m, b)
        embed = lambda tok, pos: P["tok_emb"][rows, tok] + P["pos_emb"][:, None, pos]
        # "o" and "=" are the same token in every row: one embedding each, broadcast
        constant = lambda token, pos, n: (P["tok_emb"][:, token] + P["pos_emb"][:, pos])[:, None].expand(m, n, -1)
        prefix = torch.stack([embed(prefix_tokens, 0), constant(TOKEN_OP, 1, prefix_tokens.shape[1])], 2)
        suffix = torch.stack([embed(right, 2), constant(TOKEN_EQ, 3, b)], 2)
        x = torch.cat([prefix, suffix], 1)  # (members, prefix rows + batch, 2 positions, d)
        r = prefix.shape[1]
        for layer, w in enumerate(blocks):
            x = self._block(x, r, rows, prefix_index, w, last=layer == len(blocks) - 1)
        x = layer_norm(x, P["lnf_w"], P["lnf_b"])  # (members, batch, d)
        return torch.baddbmm(P["head_b"][:, None], x, P["head_w"]) + self.class_mask[members]

    def _block(self, x, r, rows, prefix_index, w, last):
        """One decoder block on the prefix rows x[:, :r] (positions 0, 1) and the equation rows
        x[:, r:] (positions 2, 3), each (members, rows, 2, d). Returns the same layout, or for
        the last block the final position of the equation rows only, (members, batch, d)."""
        d, h = self.arch.d_model, self.arch.heads
        split = lambda t, n: t.unflatten(-1, (n, h, d // h)).unbind(-3)  # n (..., heads, head_dim)
        gather = lambda t: t[:, :r][rows, prefix_index]  # prefix rows -> one per equation
        if last:  # keys and values everywhere, the query of position 3 only
            k, v = split(linear(x, w["qkv_w"][..., d:], w["qkv_b"][:, d:]), 2)
            q, = split(linear(x[:, r:, 1:], w["qkv_w"][..., :d], w["qkv_b"][:, :d]), 1)
            keys, values = (torch.cat([gather(t), t[:, r:]], 2) for t in (k, v))
            attn = attend(q, keys, values, None)  # position 3 sees all four
            x = x[:, r:, 1:]
        else:
            q, k, v = split(linear(x, w["qkv_w"], w["qkv_b"]), 3)
            prefix_attn = attend(q[:, :r], k[:, :r], v[:, :r], self.prefix_mask)
            keys, values = (torch.cat([gather(t), t[:, r:]], 2) for t in (k, v))
            attn = torch.cat([prefix_attn, attend(q[:, r:], keys, values, self.suffix_mask)], 1)
        a = layer_norm(x + linear(attn, w["out_w"], w["out_b"]), w["ln1_w"], w["ln1_b"])
        f = linear(F.gelu(linear(a, w["ff1_w"], w["ff1_b"])), w["ff2_w"], w["ff2_b"])
        out = layer_norm(a + f, w["ln2_w"], w["ln2_b"])
        return out[:, :, 0] if last else out


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Per-member affine map: x (members, ..., in), weight (members, in, out), bias (members, out)."""
    flat = torch.baddbmm(bias[:, None], x.reshape(x.shape[0], -1, x.shape[-1]), weight)
    return flat.view(*x.shape[:-1], weight.shape[-1])


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


# ======================================================================================
# Training
# ======================================================================================

CURVE_NAMES = ("train_loss", "train_acc", "val_loss", "val_acc", "weight_norm")
TEST_CURVE_NAMES = ("test_loss", "test_acc")  # appended when the study has a test split
EVAL_ACTIVATION_BUDGET = {"cpu": 2 ** 24, "cuda": 2 ** 28}  # floats in the widest eval activation


def curve_names(c: Config) -> tuple[str, ...]:
    return CURVE_NAMES + (TEST_CURVE_NAMES if c.test_fraction > 0 else ())


def evaluation_steps(c: Config) -> list[int]:
    """Steps after which the model is evaluated, always ending with the last step: every
    eval_every steps (linear), or eval_points_per_decade steps per factor of 10 rounded to
    whole steps, duplicates dropped (log: 100k-step runs with a few hundred evaluations)."""
    if c.eval_schedule == "log":
        points = math.ceil(math.log10(c.num_steps) * c.eval_points_per_decade)
        steps = sorted({min(round(10 ** (k / c.eval_points_per_decade)), c.num_steps) for k in range(points + 1)})
    else:
        steps = list(range(c.eval_every, c.num_steps + 1, c.eval_every))
    return steps if steps and steps[-1] == c.num_steps else steps + [c.num_steps]


def lr_factor(step: int, warmup_steps: int) -> float:
    """The template's LambdaLR: step k (from 0) runs at lr * min(k / warmup, 1), so step 0 at 0."""
    return 1.0 if warmup_steps == 0 else min(step / warmup_steps, 1.0)


def make_optimizer(params, c: Config, setting: Setting) -> torch.optim.AdamW:
    """One AdamW over the stacked parameters: every member gets exactly its own update."""
    return torch.optim.AdamW(params, lr=setting.lr, betas=(c.beta1, c.beta2),
                             weight_decay=setting.weight_decay, fused=True)


def member_losses(logits: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
    """(members, batch, classes), (members, batch) -> (members, batch) cross-entropy."""
    return F.cross_entropy(logits.flatten(0, 1), answers.flatten(), reduction="none").view(answers.shape)


@torch.no_grad()
def evaluate(model: BatchedTransformer, data: GroupData) -> torch.Tensor:
    """(members, curves) float64 in curve_names order: loss and accuracy on the full training and
    validation splits, the weight norm, then test loss and accuracy if there is a test split.
    One pass over every equation of each member; the split masks pick the sums, which are
    accumulated in float64 so that accuracies are exact counts / n."""
    d, splits = model.arch.d_model, data.split_masks.shape[0]
    sums = torch.zeros(model.members, splits, 2, device=data.answers.device, dtype=torch.float64)
    for members, n in data.eval_blocks:
        m = members.stop - members.start
        chunk = max(64, EVAL_ACTIVATION_BUDGET[data.answers.device.type] // (m * 2 * 4 * d))
        for start in range(0, n, chunk):
            rows = slice(start, min(start + chunk, n))
            logits = model(data.left[members, rows], data.right[members, rows], members)
            answers = data.answers[members, rows]
            loss = member_losses(logits, answers).double()
            correct = (logits.argmax(-1) == answers).double()
            sums[members] += torch.stack([torch.stack([(loss * mask).sum(1), (correct * mask).sum(1)], 1)
                                          for mask in data.split_masks[:, members, rows]], 1)
    means = (sums / data.split_sizes[:, :, None]).flatten(1)  # (members, splits * 2): loss, acc per split
    return torch.cat([means[:, :4], model.weight_norms().double()[:, None], means[:, 4:]], dim=1)


def forward_flops(arch: Architecture, num_classes: int, equations: int, prefix_rows: int) -> int:
    """Matmul FLOPs (2 per multiply-add) of one forward pass of one member, as BatchedTransformer
    computes it: `equations` rows of positions 2-3 plus `prefix_rows` shared rows of positions
    0-1 in every block; the last block computes keys and values there, and the query, output
    projection and MLP for position 3 only. Attention scores over 4 positions (< 1%) are left out."""
    d, position_rows = arch.d_model, 2 * (equations + prefix_rows)
    full_block = position_rows * 2 * 12 * d * d  # qkv 3d^2, output d^2, MLP 8d^2 multiply-adds
    last_block = position_rows * 2 * 2 * d * d + equations * 2 * 10 * d * d
    return (arch.layers - 1) * full_block + last_block + equations * 2 * d * num_classes


def step_flops(arch: Architecture, table: TaskTable, batch_size: int) -> int:
    """One training step of one member: forward and backward (twice the forward)."""
    prefix = min(table.num_classes, batch_size)
    return 3 * forward_flops(arch, table.num_classes, batch_size, prefix)


@dataclass(frozen=True)
class Group:
    """Runs that train as one batched model: one architecture and one value of each GROUP_AXES."""

    arch: Architecture
    members: list[Member]
    tag: str = ""  # the values of the GROUP_AXES that vary in the study, e.g. "bs64"

    @property
    def name(self) -> str:  # e.g. L2_D128_H4 or L2_D128_H4_bs64: labels and file names
        return self.arch.name + (f"_{self.tag}" if self.tag else "")

    @property
    def setting(self) -> Setting:  # every member's GROUP_AXES values are these
        return self.members[0].setting


def plan_groups(c: Config) -> list[Group]:
    """Architectures x values of the GROUP_AXES; inside a group, members = settings of the other
    axes x tasks x seeds (tasks of different vocabularies and primes are padded together)."""
    varied = [a for a in c.varied_axes() if a in GROUP_AXES]
    members = [Member(t, s, setting) for setting in c.settings() for t in c.tasks for s in range(c.seeds)]
    by_values = {}
    for mb in members:
        by_values.setdefault(tuple(getattr(mb.setting, a) for a in GROUP_AXES), []).append(mb)
    return [Group(arch, part, part[0].setting.tag(varied, "_"))
            for arch in c.architectures() for part in by_values.values()]


def group_flops(group: Group, tables: dict, c: Config) -> float:
    """Training and evaluation FLOPs of a whole group."""
    total = 0.0
    for mb in group.members:
        t = tables[mb.table_key]
        evaluation = forward_flops(group.arch, t.num_classes, len(t.answers), t.num_classes)
        total += step_flops(group.arch, t, mb.setting.batch_size) * c.num_steps + evaluation * len(evaluation_steps(c))
    return total


@dataclass
class GroupResult:
    group: Group
    steps: np.ndarray  # (evals,) the step after which each evaluation ran
    curves: np.ndarray  # (members, evals, curves) in curve_names order
    wall_time_s: float  # training and evaluation of the whole group
    eval_time_s: float  # the part of wall_time_s spent evaluating

    @property
    def arch(self) -> Architecture:
        return self.group.arch

    @property
    def members(self) -> list[Member]:
        return self.group.members


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_group(group: Group, tables: dict, c: Config, device: torch.device, dtype=torch.float32, on_eval=None):
    """Train every member of a group together; returns (GroupResult, model).

    on_eval(steps_done) is called after each evaluation (for progress). The host waits for the
    device only at evaluation points, to time them; curves stay on the device until the end."""
    start = time.perf_counter()
    arch, members, setting = group.arch, group.members, group.setting
    references = [reference_model(arch, tables[mb.table_key], mb.seed) for mb in members]
    model = BatchedTransformer.from_references(arch, references, [tables[mb.table_key].num_classes for mb in members],
                                               dtype=dtype).to(device)
    data = GroupData(members, tables, c, device)
    optimizer = make_optimizer(model.parameters(), c, setting)
    steps = evaluation_steps(c)
    curves = torch.zeros(len(members), len(steps), len(curve_names(c)), device=device, dtype=torch.float64)
    eval_time, next_eval = 0.0, 0
    for step in range(c.num_steps):
        for param_group in optimizer.param_groups:
            param_group["lr"] = setting.lr * lr_factor(step, setting.warmup_steps)
        left, right, answers = data.batch(step)
        loss = member_losses(model(left, right), answers).mean(1).sum()  # members are independent
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
    result = GroupResult(group, np.array(steps), curves.cpu().numpy(), time.perf_counter() - start, eval_time)
    return result, model


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, (torch.cuda.OutOfMemoryError, MemoryError)) or (
        isinstance(error, RuntimeError) and "can't allocate memory" in str(error))


def train_architecture(group: Group, tables: dict, c: Config, device: torch.device,
                       on_progress=None) -> tuple[GroupResult, list]:
    """Every member of a group, in chunks of at most max_members (members are independent, so
    chunking changes no result). When the device runs out of memory the chunk is halved and the
    group starts again. on_progress(fraction of the group done). Returns the result and, with
    save_models, each chunk's (members, trained model)."""
    members = group.members
    chunk = c.max_members or len(members)
    while True:
        try:
            parts, models = [], []
            for start in range(0, len(members), chunk):
                part = dataclasses.replace(group, members=members[start:start + chunk])
                report = None if on_progress is None else (
                    lambda step, start=start, n=len(part.members):
                    on_progress((start + n * step / c.num_steps) / len(members)))
                result, model = train_group(part, tables, c, device, on_eval=report)
                parts.append(result)
                if c.save_models:
                    models.append((part.members, model))
            return GroupResult(group, parts[0].steps, np.concatenate([p.curves for p in parts]),
                               sum(p.wall_time_s for p in parts), sum(p.eval_time_s for p in parts)), models
        except Exception as error:  # noqa: BLE001 - only out-of-memory is handled here
            if not is_out_of_memory(error) or chunk == 1:
                raise
            if chunk == (c.max_members or len(members)):  # one line, at the first split
                print(f"warning: {group.name} does not fit in memory; training it in smaller chunks of "
                      "runs (same results, more time)", file=sys.stderr, flush=True)
            chunk = (chunk + 1) // 2
            if device.type == "cuda":
                torch.cuda.empty_cache()


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


def run_metrics(steps: np.ndarray, curve: np.ndarray, num_steps: int, names=CURVE_NAMES) -> dict:
    """Curves of one run (evals, len(names)), names from curve_names -> its metrics (see notes.txt)."""
    col = {name: curve[:, i] for i, name in enumerate(names)}
    train_acc, val_acc = col["train_acc"], col["val_acc"]
    losses = [col[n] for n in names if n.endswith("loss")]
    diverged = not np.isfinite(losses + [train_acc, val_acc]).all()  # a NaN or infinite loss: the run blew up
    step_train = first_step_above(steps, train_acc, num_steps)
    step_val = first_step_above(steps, val_acc, num_steps)
    grokked = bool((val_acc > THRESHOLD).any())
    metrics = {
        "step_train_acc_99": step_train,
        "step_val_acc_99": step_val,
        "step_val_acc_99_sustained": sustained_step(steps, val_acc, num_steps),
        "diverged": int(diverged),
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
    if "test_acc" in col:
        metrics["step_test_acc_99"] = first_step_above(steps, col["test_acc"], num_steps)
    for name in names:  # null for a run whose last evaluation is not finite
        metrics["final_" + name] = float(col[name][-1]) if np.isfinite(col[name][-1]) else None
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


def git_state() -> dict:
    """The commit of this file's repository and whether experiment.py differs from it."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        git = lambda *a: subprocess.run(["git", "-C", here, *a], capture_output=True, text=True,
                                        timeout=10).stdout.strip()
        commit = git("rev-parse", "HEAD")
        modified = bool(git("status", "--porcelain", "--", os.path.basename(__file__)))
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "source_modified": None}
    return {"git_commit": commit or None, "source_modified": modified if commit else None}


def study_records(results: list[GroupResult], tables: dict, c: Config, buckets: dict[str, str]) -> list[dict]:
    """One record per run (task, architecture, setting, seed) with its metrics, in curve-row order."""
    records, varied = [], c.varied_axes()
    for res in results:
        for i, mb in enumerate(res.members):
            t = tables[mb.table_key]
            records.append({
                "task": mb.task, "architecture": res.arch.name, "layers": res.arch.layers,
                "d_model": res.arch.d_model, "heads": res.arch.heads, "seed": mb.seed,
                "setting": mb.setting.tag(varied), **dataclasses.asdict(mb.setting),
                "bucket": buckets[res.arch.name],
                "parameter_count": parameter_count(res.arch, t.vocab_size, t.num_classes),
                **run_metrics(res.steps, res.curves[i], c.num_steps, curve_names(c)),
                # members train together: each run is charged its share of the group's time
                "wall_time_s": res.wall_time_s / len(res.members),
            })
    return records


METRIC_NAMES = ["step_train_acc_99", "step_val_acc_99", "step_val_acc_99_sustained", "diverged", "memorized",
                "grokked", "grok_delay", "stable_fraction", "min_val_acc_after_grok",
                "val_drops_after_grok", "final_train_loss", "final_val_loss", "final_train_acc",
                "final_val_acc", "final_weight_norm", "parameter_count", "wall_time_s"]
TEST_METRIC_NAMES = ["step_test_acc_99", "final_test_loss", "final_test_acc"]  # with a test split


def record_key(record: dict, plain: bool) -> str:
    """The final_info key of a run: the task alone for a plain study (one architecture, no other
    axis: a drop-in baseline), else task/architecture and the varied axes, e.g. x_div_y/L2_D128_H4/bs64."""
    if plain:
        return record["task"]
    return "/".join(part for part in (record["task"], record["architecture"], record["setting"]) if part)


def final_info(records: list[dict], plain: bool) -> dict:
    """The AI-Scientist final_info.json: one entry per task, architecture and setting (see record_key)."""
    entries: dict[str, list] = {}
    for r in records:
        entries.setdefault(record_key(r, plain), []).append(r)
    names = METRIC_NAMES + (TEST_METRIC_NAMES if "step_test_acc_99" in records[0] else [])
    return {key: aggregate(runs, names) for key, runs in entries.items()}


GROUPS_DIR = "groups"  # one file per finished group, for resuming
MODELS_DIR = "models"  # one file per group with its members' final weights (save_models=1)
STUDY_FILE = "study.json"  # written first: which study this folder holds
EXECUTION_FIELDS = ("device", "max_members", "save_models")  # how a study runs, not what it computes


def study_identity(c: Config) -> dict:
    return {k: v for k, v in dataclasses.asdict(c).items() if k not in EXECUTION_FIELDS}


def config_hash(c: Config) -> str:
    return hashlib.sha256(json.dumps(study_identity(c), sort_keys=True).encode()).hexdigest()[:16]


def config_from_json(saved: dict) -> Config:
    """The Config that config.json or study.json recorded (JSON lists back to tuples)."""
    return Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})


def member_json(mb: Member) -> list:
    return [mb.task, mb.seed, dataclasses.asdict(mb.setting)]


def member_from_json(data: list) -> Member:
    task, seed, setting = data
    return Member(task, seed, Setting(**setting))


def group_path(out_dir: str, group: Group, folder: str = GROUPS_DIR) -> str:
    return os.path.join(out_dir, folder, group.name + ".npz")


def save_group(out_dir: str, result: GroupResult, study_hash: str) -> None:
    meta = {"config_hash": study_hash, "group": result.group.name,
            "members": [member_json(m) for m in result.members],
            "wall_time_s": result.wall_time_s, "eval_time_s": result.eval_time_s}
    os.makedirs(os.path.join(out_dir, GROUPS_DIR), exist_ok=True)
    write_npz(group_path(out_dir, result.group), steps=result.steps, curves=result.curves,
              meta=np.array(json.dumps(meta)))


def load_group(out_dir: str, group: Group, study_hash: str, steps: list[int], curves: int) -> GroupResult | None:
    """A finished group saved by an earlier, interrupted run of the same study, or None.
    A damaged or foreign file is reported in one line and its group trained again."""
    path = group_path(out_dir, group)
    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            meta, saved_steps, saved_curves = json.loads(str(f["meta"])), f["steps"], f["curves"]
        if meta["config_hash"] != study_hash:
            problem = "it belongs to another config"
        elif [member_from_json(m) for m in meta["members"]] != group.members:
            problem = "its runs differ"
        elif list(saved_steps) != steps or saved_curves.shape != (len(group.members), len(steps), curves):
            problem = "its curves have the wrong shape"
        else:
            problem = None
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as e:
        problem = f"it is unreadable ({type(e).__name__})"
    if problem:
        print(f"warning: {os.path.relpath(path)}: {problem}; training {group.name} again",
              file=sys.stderr, flush=True)
        return None
    return GroupResult(group, saved_steps, saved_curves, meta["wall_time_s"], meta["eval_time_s"])


def weight_arrays(model: BatchedTransformer) -> dict[str, np.ndarray]:
    """A model's state as plain arrays on the host, for save_models."""
    return {name: value.cpu().numpy() for name, value in model.state_dict().items()}


def save_models(out_dir: str, group: Group, models: list, tables: dict) -> None:
    """models/<group>.npz from each chunk's (members, weight_arrays): the weights as plain arrays
    ("part<k>.<name>") and, as JSON, what rebuilds the model (architecture, members,
    vocabularies). Loading runs no code."""
    arrays, parts = {}, []
    for k, (members, weights) in enumerate(models):
        arrays.update({f"part{k}.{name}": value for name, value in weights.items()})
        parts.append({"members": [member_json(m) for m in members],
                      "num_classes": [tables[m.table_key].num_classes for m in members],
                      "vocab_size": max(tables[m.table_key].vocab_size for m in members)})
    meta = {"format_version": FORMAT_VERSION, "group": group.name, "architecture": dataclasses.asdict(group.arch),
            "parts": parts}
    os.makedirs(os.path.join(out_dir, MODELS_DIR), exist_ok=True)
    write_npz(group_path(out_dir, group, MODELS_DIR), meta=np.array(json.dumps(meta)), **arrays)


def load_member_model(path: str, member: Member) -> tuple[BatchedTransformer, int]:
    """(model of the chunk that holds `member`, the member's row in it) from a save_models file."""
    with np.load(path, allow_pickle=False) as f:
        meta = json.loads(str(f["meta"]))
        for k, part in enumerate(meta["parts"]):
            members = [member_from_json(m) for m in part["members"]]
            if member in members:
                model = BatchedTransformer(Architecture(**meta["architecture"]), part["vocab_size"],
                                           part["num_classes"])
                prefix = f"part{k}."
                model.load_state_dict({name[len(prefix):]: torch.from_numpy(f[name]) for name in f.files
                                       if name.startswith(prefix)})
                return model, members.index(member)
    raise UsageError(f"{path} holds no weights for {member.task} seed {member.seed}; the study may have "
                     "been resumed without --save_models=1 for this group")


def write_outputs(out_dir: str, results: list[GroupResult], tables: dict, c: Config,
                  options: dict, provenance: dict) -> dict:
    """Every output file of a finished study; final_info.json last, so its presence means done."""
    archs = c.architectures()
    reference_prime = c.axis("prime")[0]  # buckets and parameter counts of the first prime
    buckets = capacity_buckets(archs, reference_prime)
    records = study_records(results, tables, c, buckets)
    curves = np.concatenate([r.curves for r in results])  # (runs, evals, curves)
    write_npz(os.path.join(out_dir, "curves.npz"), step=results[0].steps,
              **{name: curves[..., i] for i, name in enumerate(curve_names(c))})
    write_json(os.path.join(out_dir, "runs.json"), records)
    write_json(os.path.join(out_dir, "architectures.json"), [{
        "name": a.name, "layers": a.layers, "d_model": a.d_model, "heads": a.heads,
        "aspect_ratio": a.d_model / a.layers, "bucket": buckets[a.name],
        "parameter_count": parameter_count(a, reference_prime + 2, reference_prime),
        "parameter_count_by_task": {t: parameter_count(a, tables[t, reference_prime].vocab_size,
                                                       tables[t, reference_prime].num_classes) for t in c.tasks},
    } for a in archs])
    write_json(os.path.join(out_dir, "config.json"), {
        "format_version": FORMAT_VERSION, "preset": options["preset"],
        "overrides": options["overrides"],
        "varied": [f.name for f in dataclasses.fields(Config)
                   if getattr(c, f.name) != f.default],
        "axes": {name: list(c.axis(name)) for name in c.varied_axes()},  # beyond the architecture
        "config": dataclasses.asdict(c),
    })
    write_json(os.path.join(out_dir, "provenance.json"), provenance)
    info = final_info(records, plain=len(archs) == 1 and not c.varied_axes())
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


def config_difference(saved: dict, now: dict) -> str:
    """The first fields (up to 3) in which two configs, as read from JSON, differ."""
    now = json.loads(json.dumps(now))  # tuples -> lists, as in the saved file
    shown = lambda v: ",".join(map(str, v)) if isinstance(v, list) else str(v)
    changed = [k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
    return "; ".join(f"{k}: {shown(saved.get(k))} in out_dir, {shown(now.get(k))} now" for k in changed[:3])


def prepare_out_dir(path: str, overwrite: bool, c: Config) -> bool:
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
            same = saved["format_version"] == FORMAT_VERSION and saved["config_hash"] == config_hash(c)
            difference = "" if same else (config_difference(saved["config"], study_identity(c))
                                          or "an older output format")
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


CPU_FLOPS_ESTIMATE = 50e9  # sustained FLOP/s of this code on a 2-core CPU (measured 20-75), for the warning


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def group_summary(result: GroupResult, c: Config) -> str:
    """One line per finished group: mean memorization/grokking step and grokked count per task
    (and setting, when the group holds several)."""
    parts, diverged, varied = [], 0, c.varied_axes()
    labels = [" ".join(filter(None, (mb.task, mb.setting.tag(varied)))) for mb in result.members]
    for label in dict.fromkeys(labels):
        metrics = [run_metrics(result.steps, result.curves[i], c.num_steps, curve_names(c))
                   for i, other in enumerate(labels) if other == label]
        grok = np.mean([m["step_val_acc_99"] for m in metrics])
        mem = np.mean([m["step_train_acc_99"] for m in metrics])
        parts.append(f"{label} mem {mem:.0f} grok {grok:.0f} ({sum(m['grokked'] for m in metrics)}/{len(metrics)})")
        diverged += sum(m["diverged"] for m in metrics)
    warning = f"  {plural(diverged, 'run')} DIVERGED (NaN/inf loss)" if diverged else ""
    return f"{result.group.name}: " + "; ".join(parts) + f"  [{result.wall_time_s:.0f} s]" + warning


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived: stop where we are; finished groups are already saved."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def raise_interrupted(signum, frame):
    raise Interrupted(signum)


def resume_command(argv: list[str]) -> str:
    preset = os.environ.get("GROKKING_PRESET")
    prefix = f"GROKKING_PRESET={shlex.quote(preset)} " if preset and not any(
        a.startswith("--preset") for a in argv) else ""
    return prefix + shlex.join(["python", sys.argv[0] or "experiment.py"] + argv)


OPERATORS = {"x_plus_y": "+", "x_minus_y": "-", "x_div_y": "/", "permutation": "*"}
QUERY_OPTIONS = ("query", "task", "arch", "seed") + AXES


def parse_element(text: str, table: TaskTable, prime: int, side: str) -> int:
    """An operand as typed (a number mod p, or a permutation such as 10234 or (1,0,2,3,4)) -> its
    element index; out-of-range operands are usage errors."""
    if table.task == "permutation":
        digits = re.sub(r"[\s,()\[\]]", "", text)
        perm = tuple(int(d) for d in digits) if digits.isdigit() else None
        if perm not in table.elements:
            k = len(table.elements[0])
            raise UsageError(f"{text!r} is not a permutation of 0..{k - 1}; write it as {''.join(map(str, range(k)))[::-1]}")
        return table.elements.index(perm)
    if not text.isdigit() or int(text) >= prime:
        raise UsageError(f"operand {text!r} is out of range: the {table.task} operands are 0..{prime - 1}")
    if table.task == "x_div_y" and side == "right" and int(text) == 0:
        raise UsageError("division by 0: x_div_y divides by 1..p-1")
    return int(text)


def parse_equation(text: str, table: TaskTable, prime: int) -> tuple[int, int, int]:
    """'30/74' (an '=' at the end is allowed) -> (a, b, true answer) as element indices."""
    op = OPERATORS[table.task]
    match = re.fullmatch(rf"\s*([^{re.escape(op)}]+?)\s*{re.escape(op)}\s*([^=]+?)\s*=?\s*", text)
    if not match:
        raise UsageError(f"cannot read {text!r} as an equation of {table.task}: write it as a{op}b, e.g. "
                         + ("01234*10234" if table.task == "permutation" else f"30{op}74"))
    a, b = parse_element(match[1], table, prime, "left"), parse_element(match[2], table, prime, "right")
    row = a * len(table.elements) + b if table.task != "x_div_y" else a * (prime - 1) + b - 1
    return a, b, int(table.answers[row])


def choose(name: str, options: list, given: str | None, kind):
    """The value of a query selector: the one given (checked against the study's options), or
    the only option there is."""
    if given is None:
        if len(options) == 1:
            return options[0]
        raise UsageError(f"--{name} is needed: the run has {', '.join(map(format_number, options))}")
    value = parse_value(name, given, kind, "one")
    if value not in options:
        raise UsageError(f"--{name}={given}: the run has {', '.join(map(format_number, options))}")
    return value


def run_query(pairs: dict[str, str], equations: list[str]) -> list[str]:
    """The saved model of one run answers equations: one line per equation with its answer, the
    answer's probability and the true answer."""
    unknown = [k for k in pairs if k not in QUERY_OPTIONS]
    if unknown:
        raise UsageError(f"--{unknown[0]} is not a query option; use " + ", ".join(f"--{k}" for k in QUERY_OPTIONS))
    if not equations:
        raise UsageError("no equation to ask: add some after the options, e.g. 30/74 5/3")
    run_dir = pairs["query"]
    try:
        with open(os.path.join(run_dir, "config.json")) as f:
            c = config_from_json(json.load(f)["config"])
    except (OSError, ValueError, KeyError, TypeError):
        raise UsageError(f"--query={run_dir}: no finished study there (config.json missing or unreadable)") from None
    task = choose("task", list(c.tasks), pairs.get("task"), str)
    arch = {a.name: a for a in c.architectures()}[choose("arch", [a.name for a in c.architectures()],
                                                          pairs.get("arch"), str)]
    seed = choose("seed", list(range(c.seeds)), pairs.get("seed"), int)
    types = config_field_types()
    values = {a: choose(a, list(c.axis(a)), pairs.get(a), types[a][0]) for a in AXES}
    setting = Setting(**values)
    member = Member(task, seed, setting)
    group = next(g for g in plan_groups(c) if g.arch == arch and member in g.members)  # its file's name
    path = group_path(run_dir, group, MODELS_DIR)
    if not os.path.exists(path):
        raise UsageError(f"{run_dir} has no saved weights for {group.name}; run the study with --save_models=1")
    table = build_table(task, setting.prime, c.perm_k)
    asked = [parse_equation(e, table, setting.prime) for e in equations]
    model, row = load_member_model(path, member)
    left = torch.tensor([[a + 2 for a, _, _ in asked]])
    right = torch.tensor([[b + 2 for _, b, _ in asked]])
    with torch.no_grad():
        probs = model(left, right, slice(row, row + 1))[0].softmax(-1)  # (equations, classes)
    show = lambda e: "".join(map(str, table.elements[e])) if task == "permutation" else str(table.elements[e])
    lines = [f"{run_dir}: {task} {arch.name} seed {seed}" + "".join(f" {a}={format_number(values[a])}" for a in c.varied_axes())]
    for text, (_, _, truth), p in zip(equations, asked, probs):
        answer = int(p.argmax())
        lines.append(f"{text.strip().rstrip('=')} = {show(answer)}  (p={float(p[answer]):.4f})  true {show(truth)}  "
                     + ("correct" if answer == truth else "WRONG"))
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(usage())
        return 0
    if any(a == "--query" or a.startswith("--query=") for a in argv):
        try:
            print("\n".join(run_query(*split_arguments(argv))))
            return 0
        except UsageError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    try:
        c, options = resolve_config(argv)
        # With Ray the workers pick their device (the GPU Ray gives a task, if any); the driver only plans.
        device = resolve_device(c.device) if options["backend"] == "local" else torch.device("cpu")
        resume = prepare_out_dir(options["out_dir"], options["overwrite"], c)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out_dir = options["out_dir"]
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, raise_interrupted)
    try:
        return run_study(c, options, device, resume, argv)
    except Interrupted as e:
        done = len(os.listdir(os.path.join(out_dir, GROUPS_DIR))) if os.path.isdir(
            os.path.join(out_dir, GROUPS_DIR)) else 0
        print(f"\ninterrupted by {e}: {plural(done, 'finished group')} kept in {out_dir}/{GROUPS_DIR}; "
              f"resume with: {resume_command(argv)}", file=sys.stderr, flush=True)
        return 128 + e.signum
    except OSError as e:  # a full disk or a folder gone while training
        print(f"error: cannot write to {out_dir}: {e.strerror or e}; finished groups are kept in "
              f"{out_dir}/{GROUPS_DIR}, resume with: {resume_command(argv)}", file=sys.stderr, flush=True)
        return 1


def train_groups_local(groups: list[Group], tables: dict, c: Config, device: torch.device, on_progress):
    """Yield (group, GroupResult, [(members, weight_arrays)] if save_models, where it ran) for
    every group, one after another on this machine; on_progress(group, fraction done)."""
    where = {"host": socket.gethostname(), "device_name": device_name(device)}
    for group in groups:
        result, models = train_architecture(group, tables, c, device,
                                            lambda fraction, group=group: on_progress(group, fraction))
        yield group, result, [(members, weight_arrays(model)) for members, model in models], where


RAY_MAX_RETRIES = 3  # attempts after the first when a worker dies (killed, node lost)


def group_json(group: Group) -> dict:
    return {"arch": dataclasses.asdict(group.arch), "members": [member_json(m) for m in group.members],
            "tag": group.tag}


def group_from_json(data: dict) -> Group:
    return Group(Architecture(**data["arch"]), [member_from_json(m) for m in data["members"]], data["tag"])


def train_group_task(config: dict, group: dict) -> dict:
    """The Ray task: one group, from and to plain data (it may run on another machine). The
    device is resolved here: with --device=auto, the GPU that Ray assigned to the task, if any."""
    c, g = config_from_json(config), group_from_json(group)
    device = resolve_device(c.device)
    configure_backend(device)
    result, models = train_architecture(g, build_tables(c), c, device)
    return {"steps": result.steps, "curves": result.curves, "wall_time_s": result.wall_time_s,
            "eval_time_s": result.eval_time_s,
            "models": [([member_json(m) for m in members], weight_arrays(model)) for members, model in models],
            "where": {"host": socket.gethostname(), "device_name": device_name(device)}}


def train_groups_ray(groups: list[Group], c: Config, address: str | None, on_progress):
    """Like train_groups_local, but every group is a Ray task (one GPU each when the cluster has
    GPUs, else one CPU), yielded as soon as it finishes. A task whose worker dies is retried
    (RAY_MAX_RETRIES). experiment.py travels to the workers as a module (py_modules)."""
    import logging

    import ray
    ray.init(address=address, runtime_env={"py_modules": [os.path.abspath(__file__)]},
             include_dashboard=False, logging_level=logging.ERROR)
    pending = {}  # task -> group, for the tasks still running
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        module = sys.modules.get("experiment") or importlib.import_module("experiment")  # not __main__:
        task = ray.remote(module.train_group_task).options(  # workers import it by name
            num_gpus=1 if gpus else 0, num_cpus=1, max_retries=RAY_MAX_RETRIES)
        config = dataclasses.asdict(c)
        pending.update({task.remote(config, group_json(g)): g for g in groups})
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)  # short waits: Ctrl-C is seen
            for ref in done:
                group, out = pending.pop(ref), ray.get(ref)
                result = GroupResult(group, out["steps"], out["curves"], out["wall_time_s"], out["eval_time_s"])
                models = [([member_from_json(m) for m in members], weights) for members, weights in out["models"]]
                on_progress(group, 1.0)
                yield group, result, models, out["where"]
    finally:  # interrupted or failed: stop the rest, also on a cluster that outlives this driver
        for ref in pending:
            ray.cancel(ref, force=True)
        ray.shutdown()


def run_study(c: Config, options: dict, device: torch.device, resume: bool, argv: list[str]) -> int:
    """Plan, train (or load) every group, write the outputs."""
    out_dir = options["out_dir"]
    configure_backend(device)
    started = datetime.datetime.now(datetime.timezone.utc)
    code = {"source_sha256": source_hash(), **git_state()}  # the code that runs, read before training
    study_hash = config_hash(c)
    remove_partial_files(out_dir)
    if not resume:
        clear_results(out_dir)
        write_json(os.path.join(out_dir, STUDY_FILE), {"format_version": FORMAT_VERSION,
                                                      "config_hash": study_hash, "config": study_identity(c)})
    tables = build_tables(c)
    groups = plan_groups(c)
    saved = {g.name: load_group(out_dir, g, study_hash, evaluation_steps(c), len(curve_names(c))) for g in groups}
    for g in groups:  # a group saved before --save_models=1 was asked for trains again, for its weights
        if c.save_models and saved[g.name] and not os.path.exists(group_path(out_dir, g, MODELS_DIR)):
            saved[g.name] = None
    costs = {g.name: 0.0 if saved[g.name] else group_flops(g, tables, c) for g in groups}
    runs = sum(len(g.members) for g in groups)
    axes = "".join(f" x {len(c.axis(a))} {a}" for a in c.varied_axes())
    where = device_name(device) if options["backend"] == "local" else \
        f"Ray ({options['ray_address'] or 'a local instance'}, groups in parallel)"
    print(f"study: {plural(len(c.architectures()), 'architecture')}{axes} x {plural(len(c.tasks), 'task')} x "
          f"{plural(c.seeds, 'seed')} = {plural(runs, 'run')} of {c.num_steps} steps, as "
          f"{plural(len(groups), 'group')} of {plural(len(groups[0].members), 'member')} "
          f"({len(groups) * c.num_steps:,} batched steps), on {where}; "
          f"{sum(costs.values()) / 1e12:.1f} TFLOP to train", flush=True)
    if any(saved.values()):
        print(f"resuming: {sum(1 for r in saved.values() if r)} of {plural(len(groups), 'group')} "
              f"already finished in {out_dir}/{GROUPS_DIR}", flush=True)
    if options["backend"] == "local" and device.type == "cpu" and sum(costs.values()) / CPU_FLOPS_ESTIMATE > 1800:
        hours = sum(costs.values()) / CPU_FLOPS_ESTIMATE / 3600
        print(f"warning: this study needs roughly {hours:.1f} h on this CPU; use a GPU, or "
              "--preset=demo / --preset=smoke, or fewer --layers/--dims/--heads/--seeds", flush=True)

    todo = [g for g in groups if not saved[g.name]]
    finished = {name: result for name, result in saved.items() if result}
    progress, ran_on = {g.name: 0.0 for g in todo}, {}
    with tqdm(total=sum(costs.values()) or 1, unit="FLOP", unit_scale=True, dynamic_ncols=True,
              mininterval=0.5 if sys.stderr.isatty() else 30, smoothing=0.05,
              bar_format="{l_bar}{bar}| {elapsed}<{remaining}{postfix}") as bar:

        def on_progress(group: Group, fraction: float):
            progress[group.name] = fraction
            bar.update(sum(costs[name] * f for name, f in progress.items()) - bar.n)
            running = f"; {group.name} {100 * fraction:.0f}%" if fraction < 1 else ""
            bar.set_postfix_str(f"{sum(f >= 1 for f in progress.values())}/{len(todo)} groups done{running}",
                                refresh=False)

        if options["backend"] == "ray":
            stream = train_groups_ray(todo, c, options["ray_address"], on_progress)
        else:
            stream = train_groups_local(todo, tables, c, device, on_progress)
        for group, result, models, where in stream:
            if c.save_models:  # before the group file: a saved group always has its weights
                save_models(out_dir, group, models, tables)
            save_group(out_dir, result, study_hash)
            finished[group.name], ran_on[group.name] = result, where
            bar.write(group_summary(result, c))
    results = [finished[g.name] for g in groups]
    finished = datetime.datetime.now(datetime.timezone.utc)
    provenance = {
        "command": [os.path.basename(sys.argv[0])] + argv,
        "started_utc": started.isoformat(timespec="seconds"),
        "finished_utc": finished.isoformat(timespec="seconds"),
        "wall_time_s": (finished - started).total_seconds(),
        "groups": [{"group": r.group.name, "members": len(r.members), "resumed": bool(saved[r.group.name]),
                    "wall_time_s": r.wall_time_s, "eval_time_s": r.eval_time_s, **ran_on.get(r.group.name, {})}
                   for r in results],
        "backend": options["backend"],
        "device": str(device) if options["backend"] == "local" else "per group (Ray workers)",
        "device_name": device_name(device),
        "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
        "platform": platform.platform(), "host": socket.gethostname(),
        **code,
    }
    write_outputs(out_dir, results, tables, c, options, provenance)
    print(f"wrote {out_dir}/final_info.json ({runs} runs) in {provenance['wall_time_s']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
