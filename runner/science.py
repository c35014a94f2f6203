"""The contract: what experiment.py hands to the machinery, and the one error the user sees."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


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
    example_metrics: Callable  # one run's (logits, answers, config) -> {name: (rows,)}, averaged per split
    model_metrics: Callable  # ({name: (members, ...)}, [each member's table], config) -> {curve name: (members,)}
    run_metrics: Callable  # (steps, {curve: (evals,)}, run config) -> {metric: value}
    headline_metrics: dict  # metric -> decimals: what final_info.json reports
    source: str  # path of experiment.py: hashed into provenance, shipped to Ray workers
    template_of: str | None = None  # in a template folder: the preset Config's defaults were made from
    time_limit_s: float | None = None  # the default of --time_limit (seconds; None: no limit)


class UsageError(Exception):
    """Bad input: reported as one line on stderr with exit code 2, before any work starts."""
