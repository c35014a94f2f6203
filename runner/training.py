"""Training and full-split evaluation of a group's runs, on the device."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import sys
import time
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .forwards import ForwardChoice, make_forward, member_models, stack_parameters
from .plan import Architecture, Group, Member, Study


class GroupData:
    """The tables, splits and batch streams of every member of a group, on the device.

    Members may have tables of different sizes (x / y has p(p-1) equations, x + y p^2); tensors
    are padded to the largest, and evaluation reads each member's own rows only."""

    BATCH_CHUNK = 100  # steps of batch indices drawn at a time (the draw is chunk-independent)

    def __init__(self, study: Study, members: list[Member], device):
        self.device = torch.device(device)
        self.tables = member_tables = [study.table(mb) for mb in members]
        sizes = [len(t.answers) for t in member_tables]
        m, seq = len(members), member_tables[0].tokens.shape[1]
        # (members, equations, seq + 1): the tokens, then the answer; one gather draws a whole batch
        equations = torch.zeros(m, max(sizes), seq + 1, dtype=torch.long)
        self.draws, masks = [], []
        for i, (mb, table) in enumerate(zip(members, member_tables)):
            equations[i, :sizes[i]] = torch.cat([table.tokens, table.answers[:, None]], 1)
            splits, draw = study.science.run_data(sizes[i], study.config(mb), mb.seed)
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
def evaluate(study: Study, forward: Callable, params: dict, data: GroupData, d_model: int) -> dict:
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
            per_example = torch.vmap(functools.partial(study.science.example_metrics, c=study.c))(
                forward(part, data.tokens[members, rows]), data.answers[members, rows])
            for name, values in per_example.items():
                for split, mask in zip(data.split_names, data.split_masks[:, members, rows]):
                    total = sums.setdefault((split, name), data.split_sizes.new_zeros(data.split_sizes.shape[1]))
                    total[members] += (values.double() * mask).sum(1)
    names = list(dict.fromkeys(name for _, name in sums))
    curves = {curve_name(split, name): sums[split, name] / data.split_sizes[s]
              for s, split in enumerate(data.split_names) for name in names}
    weights = study.science.model_metrics(params, data.tables, study.c)
    return {**curves, **{k: v.double() for k, v in weights.items()}}


def train_chunk(study: Study, group: Group, device: torch.device, choice: ForwardChoice,
                on_eval=None) -> tuple[GroupResult, dict]:
    """Train every member of a group (or of a chunk of one) together; returns (GroupResult, final
    parameters).

    on_eval(steps_done) is called after each evaluation (for progress). The host waits for the
    device only at evaluation points, to time them; curves stay on the device until the end."""
    start = time.perf_counter()
    # A model that draws random numbers (dropout) draws the same ones in every run of this group:
    # results repeat, and a resumed study matches an uninterrupted one.
    torch.manual_seed(zlib.crc32(repr((group.name, group.members)).encode()))
    science, c = study.science, study.c
    dtype = getattr(torch, c.dtype)
    models = member_models(study, group)
    params = stack_parameters(models, device, dtype)
    model = models[0].to(device, dtype)  # the plain module the generic forwards call (for its buffers)
    del models
    forward = make_forward(choice.forward, model, group.arch, device, dtype)
    data = GroupData(study, group.members, device)
    optimizer, schedule = science.make_optimizer(params, study.config(group.members[0]))
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
            for name, value in evaluate(study, forward, params, data, group.arch.d_model).items():
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


def train_group(study: Study, group: Group, device: torch.device, choice: ForwardChoice, max_members: int = 0,
                save_models: bool = False, on_progress=None) -> tuple[GroupResult, list]:
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
                    on_progress((start + n * step / study.c.num_steps) / len(members)))
                result, params = train_chunk(study, part, device, choice, on_eval=report)
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
