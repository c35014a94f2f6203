"""--query: a saved run answers equations."""

from __future__ import annotations

import json
import os
import re

import torch

from .folder import RunFolder
from .plan import (Member, Study, architectures, axes, axis_values, config_from_json, field_types, format_number,
                   parse_value, varied_axes)
from .science import Science, UsageError


QUERY_SELECTORS = ("query", "task", "arch", "seed")


def element_text(element) -> str:
    """An element as printed and as typed: a number, or a permutation as its digits (10234)."""
    return "".join(map(str, element)) if isinstance(element, tuple) else str(element)


def parse_equation(text: str, table) -> int:
    """'30/74' (an '=' at the end is allowed; a permutation may be typed (1,0,2)) -> the row of that
    equation in the task's table, read with the table's own operator and elements."""
    op, names = table.operator, [element_text(e) for e in table.elements]
    match = re.fullmatch(rf"\s*([^{re.escape(op)}]+?)\s*{re.escape(op)}\s*([^=]+?)\s*=?\s*", text)
    if not match:
        a, b = (names[int(i)] for i in table.operands[-1])
        raise UsageError(f"cannot read {text!r} as an equation of {table.task}: write it as a{op}b, e.g. {a}{op}{b}")
    index = {name: i for i, name in enumerate(names)}
    operands = []
    for typed in match[1], match[2]:
        name = re.sub(r"[\s,()\[\]]", "", typed)
        if name not in index:
            raise UsageError(f"operand {typed!r} is not an element of {table.task} ({names[0]} .. {names[-1]})")
        operands.append(index[name])
    rows = torch.nonzero((table.operands[:, 0] == operands[0]) & (table.operands[:, 1] == operands[1])).flatten()
    if len(rows) == 0:
        raise UsageError(f"{match[1]}{op}{match[2]} is not an equation of {table.task} (e.g. a division by 0)")
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
    member, study = Member(task, seed, setting), Study.build(science, c)
    group = next(g for g in study.groups() if g.arch == arch and member in g.members)  # its file's name
    weights = RunFolder(run_dir).member_weights(group, member)
    table = study.table(member)
    rows = [parse_equation(e, table) for e in equations]
    model = science.build_model(arch.layers, arch.d_model, arch.heads, table, seed, study.config(member))
    model.load_state_dict(weights, strict=False)
    with torch.no_grad():
        probs = model.eval()(table.tokens[rows]).softmax(-1)  # (equations, classes)
    show = lambda e: element_text(table.elements[e])
    varied = "".join(f" {a}={format_number(v)}" for a, v in setting if a in varied_axes(c))
    lines = [f"{run_dir}: {task} {arch.name} seed {seed}{varied}"]
    for text, row, p in zip(equations, rows, probs):
        answer, truth = int(p.argmax()), int(table.answers[row])
        lines.append(f"{text.strip().rstrip('=')} = {show(answer)}  (p={float(p[answer]):.4f})  true {show(truth)}  "
                     + ("correct" if answer == truth else "WRONG"))
    return lines
