"""The float64 check that picks each group's forward, and the line that says which."""

from __future__ import annotations

import dataclasses
import re
from typing import Callable

import torch

from .forwards import ForwardChoice, fast_forward, loop_forward, make_forward, member_models, stack_parameters, vmap_forward
from .plan import Group, Study
from .science import Science
from .training import GroupData


PROOF_TOLERANCE = 1e-9  # float64 relative difference under which two computations count as equal
PROOF_STEPS = 3  # training steps of the independence check (step 0 of a warm-up has lr 0)
PROOF_SMALL_BATCH = 8  # rows of the small check batch (the fast forward's per-equation path)
# The large check batch takes the first (elements + PROOF_SMALL_BATCH) rows of a training batch:
# more equations than elements, so the fast forward takes its shared-prefix path, as in training,
# at a fraction of a full batch's cost (a float64 check of every group of the default study).


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


def forward_choice(study: Study, group: Group, requested: str = "auto") -> ForwardChoice:
    """A group's forward, picked by a float64 check on the CPU, on two members' initial weights and
    their first training batch:
    1. vmap must run the plain model, else the loop forward trains the members one by one;
    2. one batched training step (experiment.py's) must equal each run's step alone, else the
       runs train one at a time (an edit coupled them, e.g. a gradient clip over all members).
       The model is in eval mode for this: random layers (dropout) would make the runs differ
       from themselves, and only the step and the optimizer can couple runs (each member's
       forward sees its own parameters alone);
    3. the fast forward must give the plain model's logits and gradients (for a random cotangent,
       so for any loss) to PROOF_TOLERANCE, on a batch of more equations than elements and on a
       small one (its two paths);
       the plain model's training forward must draw no random numbers and change nothing in the
       module (a counter, a buffer): the fast forward would skip both.
    A genuine error of the plain model (it fails in the loop too) is raised, not hidden."""
    members = group.members[:2]
    models = member_models(study, dataclasses.replace(group, members=members))
    params = stack_parameters(models, "cpu", torch.float64)
    model = models[0].double()
    data = GroupData(study, members, "cpu")
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
    expected = (small[0].shape[1], study.table(members[0]).num_classes)
    if tuple(logits.shape[1:]) != expected:  # the loss, the evaluation and --query all read (batch, classes)
        raise ValueError(f"the model maps tokens of shape {tuple(small[0].shape[1:])} to logits of shape "
                         f"{tuple(logits.shape[1:])}; it must return (batch, classes) = {expected}")
    model.eval()
    independent = steps_are_independent(study.science, study.config(members[0]), reference, params, *small)
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
    problem, worst = fast_preconditions(study, group, vocab), None
    if problem is None and random:
        problem = "the plain model draws random numbers in training (e.g. dropout), which the fast forward does not"
    if problem is None and not same_state(before, module_state(model)):
        problem = "the plain model's forward changes the module's own state, which only the plain model does"
    if problem is None:
        fast, large = fast_forward(group.arch, "cpu", torch.float64), tokens[:, :vocab - 2 + PROOF_SMALL_BATCH]
        try:
            worst = max(max(forward_difference(fast, reference, params, batch)) for batch in (large, small[0]))
        except Exception as error:  # noqa: BLE001 - a parameter it expects is gone, a shape changed, ...
            problem = f"it does not apply ({first_sentence(error)})"
        else:
            if worst > PROOF_TOLERANCE:
                problem = "it differs from the plain model"
    if problem:
        return ForwardChoice("vmap", f"the fast forward is not used: {problem}", difference=worst)
    return ForwardChoice("fast", "equal to the plain model in float64", difference=worst)


def fast_preconditions(study: Study, group: Group, vocab: int) -> str | None:
    """Why the fast forward's shortcuts cannot hold for this group's data, or None."""
    for mb in group.members:
        t = study.table(mb).tokens
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


def choose_forwards(study: Study, groups: list[Group], requested: str) -> dict[str, ForwardChoice]:
    """Check every group's forward before training (each group: the model may read the group's
    own config values), and say in one line per kind of decision which groups take which forward,
    and why."""
    choices = {g.name: forward_choice(study, g, requested) for g in groups}
    kinds = {}
    for name, ch in choices.items():
        kinds.setdefault((ch.forward, ch.reason, ch.one_at_a_time), []).append(name)
    for names in kinds.values():
        worst = [choices[n].difference for n in names if choices[n].difference is not None]
        decision = dataclasses.replace(choices[names[0]], difference=max(worst) if worst else None)
        print(decision.describe([f"all {len(names)} groups"] if len(names) == len(choices) > 1 else names), flush=True)
    return choices
