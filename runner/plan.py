"""The plan of a study: Config field types and axes, architectures, runs (members) and groups."""

from __future__ import annotations

import dataclasses
import itertools
import types
import typing
from dataclasses import dataclass

from .science import Science, UsageError


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


def combinations(c, names: list[str]) -> list[dict]:
    """Every combination of the values of the fields `names`: those named in the config's
    zip_axes (if it has one) go together value by value, the others cross."""
    zipped = [n for n in getattr(c, "zip_axes", ()) if n in names]
    crossed = [n for n in names if n not in zipped]
    pairs = list(zip(*(axis_values(c, n) for n in zipped))) if zipped else [()]
    return [dict(zip(crossed, free)) | dict(zip(zipped, pair))
            for free in itertools.product(*(axis_values(c, n) for n in crossed)) for pair in pairs]


def settings(c) -> list[tuple]:
    """Every combination of the axes' values, each a tuple of (axis, value) pairs in axes(c)
    order. Axes named in zip_axes go together value by value (lr and weight_decay as pairs: two
    settings, not four); the others cross."""
    names = axes(c)
    return [tuple((n, combo[n]) for n in names) for combo in combinations(c, names)]


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


ARCHITECTURE_LISTS = ("layers", "dims", "heads")  # crossed into the architectures, unless zipped


def architectures(c) -> list[Architecture]:
    """layers x dims x heads, in that order; lists named in zip_axes pair up value by value
    (dims=64,64,128 heads=2,4,4 zipped: three widths-and-heads at every depth)."""
    return [Architecture(a["layers"], a["dims"], a["heads"]) for a in combinations(c, list(ARCHITECTURE_LISTS))]


def check_zip_axes(c) -> None:
    """zip_axes names architecture lists or axes; the lists it pairs have one length (architecture
    lists among themselves, axes among themselves); no two pairs are the same. UsageError if not."""
    zipped = getattr(c, "zip_axes", ())
    lists = ARCHITECTURE_LISTS + tuple(axes(c))
    wrong = [n for n in zipped if n not in lists]
    if wrong:
        raise UsageError(f"--zip_axes names {','.join(wrong)}, not a list; choose from {','.join(lists)}")
    for kind in (ARCHITECTURE_LISTS, axes(c)):
        lengths = {n: len(axis_values(c, n)) for n in zipped if n in kind}
        if len(set(lengths.values())) > 1:
            raise UsageError("--zip_axes pairs lists value by value, so they need one length: "
                             + ", ".join(f"{n} has {k}" for n, k in lengths.items()))
    for name, made in (("architecture", [a.name for a in architectures(c)]), ("setting", settings(c))):
        if len(set(made)) < len(made):
            raise UsageError(f"--zip_axes={','.join(zipped)} makes the same {name} twice; each position of the "
                             "zipped lists must differ in at least one of them")


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


@dataclass
class Study:
    """What the machinery carries from planning to reporting: the science, the study's Config
    (its axes as lists) and every task's table, built once."""

    science: Science
    c: object  # the study's Config
    tables: dict  # (task, setting) -> the task's table for that setting

    @classmethod
    def build(cls, science: Science, c) -> Study:
        tables = {(t, s): science.build_table(t, run_config(c, Member(t, 0, s))) for s in settings(c) for t in c.tasks}
        return cls(science, c, tables)

    def config(self, member: Member):
        """The run config of a member: every axis at the member's value."""
        return run_config(self.c, member)

    def table(self, member: Member):
        return self.tables[member.task, member.setting]

    def groups(self) -> list[Group]:
        """Architectures x (domain, values of the group-level axes); inside a group, members =
        values of the member axes x tasks x seeds."""
        c = self.c
        varied = [a for a in varied_axes(c) if a not in MEMBER_AXES]
        parts: dict[tuple, list[Member]] = {}
        for setting in settings(c):
            shared = tuple((n, v) for n, v in setting if n not in MEMBER_AXES)
            for task in c.tasks:
                domain = self.tables[task, setting].domain
                parts.setdefault((shared, domain), []).extend(Member(task, s, setting) for s in range(c.seeds))
        groups = []
        for arch in architectures(c):
            for (shared, domain), members in parts.items():
                several = sum(1 for s, _ in parts if s == shared) > 1  # name the domain only when needed
                tag = "_".join(filter(None, [domain if several else "", setting_tag(shared, varied, "_")]))
                groups.append(Group(arch, members, tag))
        return groups


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


def changed_fields(c) -> list[str]:
    """The Config fields whose value differs from their default (set by a preset or an option)."""
    return [f.name for f in dataclasses.fields(c) if getattr(c, f.name) != f.default]


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
