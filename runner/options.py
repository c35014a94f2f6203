"""How a study runs (never part of what it computes): the run options, each declared once."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from dataclasses import dataclass

from .science import UsageError

PRESET_ENV, BACKEND_ENV, RAY_ADDRESS_ENV = "GROKKING_PRESET", "GROKKING_BACKEND", "GROKKING_RAY_ADDRESS"


def text(name: str, value: str) -> str | None:
    return value.strip() or None


def flag(name: str, value: str) -> bool:
    if value not in ("0", "1"):
        raise UsageError(f"--{name}={value}: expected 0 or 1")
    return value == "1"


def count(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise UsageError(f"--{name}={value!r}: expected an integer") from None
    if number < 0:
        raise UsageError(f"--{name} must be >= 0 (0: no limit), got {number}")
    return number


def seconds(name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise UsageError(f"--{name}={value!r}: expected a number of seconds") from None
    if not number > 0:
        raise UsageError(f"--{name} must be a positive number of seconds, got {value}")
    return number


def device_spec(name: str, value: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
        raise UsageError(f"--{name}={value!r}: use auto, cpu, cuda or cuda:N")
    return value


def one_of(*allowed: str):
    def parse(name: str, value: str) -> str:
        if value.strip() not in allowed:
            raise UsageError(f"--{name}={value!r}: choose one of {', '.join(allowed)}")
        return value.strip()
    return parse


def option(default, help: str, parse=text, env: str | None = None, required: bool = False):
    """A run option's one declaration: its default, its help, how its text is read and checked
    (parse(name, text) -> value, or UsageError), and the environment variable that sets it when
    the command line does not (the AI-Scientist harness passes only --out_dir)."""
    return dataclasses.field(default=default, metadata={"help": help, "parse": parse, "env": env,
                                                        "required": required})


@dataclass(frozen=True)
class Options:
    """How and where a study runs: each field but `overrides` is an option --name=value."""

    out_dir: str = option("", "folder for every output file (required)", required=True)
    preset: str | None = option(None, "a named set of overrides (see below)", env=PRESET_ENV)
    overwrite: bool = option(False, "1 to replace the results already in out_dir", flag)
    device: str = option("auto", '"auto" (cuda when present), "cpu", "cuda" or "cuda:N"', device_spec)
    max_members: int = option(0, "runs trained at once (0: a whole group); larger groups go in chunks", count)
    save_models: bool = option(False, "1: save every run's final weights in out_dir/models (see --query)", flag)
    forward: str = option("auto", "auto: the fast forward where a check at start proves it equal to the plain "
                          "model, else the plain model; generic: always the plain model", one_of("auto", "generic"))
    backend: str = option("local", "local: groups one after another on this machine; ray: each group a Ray task, "
                          "on a cluster or on every GPU of this machine", one_of("local", "ray"), env=BACKEND_ENV)
    ray_address: str | None = option(None, "with --backend=ray: auto (a running cluster), HOST:PORT or "
                                     "ray://HOST:PORT; default: start a local Ray instance", env=RAY_ADDRESS_ENV)
    time_limit: float | None = option(None, "seconds: stop (exit 3) within about two minutes of training when the "
                                      "first steps project the study past them (default: TIME_LIMIT_S in "
                                      "experiment.py)", seconds)
    overrides: dict = dataclasses.field(default_factory=dict)  # the Config fields the command line gave, as typed

    @staticmethod
    def declared() -> list[dataclasses.Field]:
        return [f for f in dataclasses.fields(Options) if "help" in f.metadata]

    @classmethod
    def parse(cls, pairs: dict[str, str], environ, overrides: dict) -> Options:
        """The run options of a command line (--name=value pairs) and the environment."""
        values = {f.name: cls.read(f, pairs, environ) for f in cls.declared()}
        backend = values["backend"]
        if backend == "ray" and importlib.util.find_spec("ray") is None:
            raise UsageError("--backend=ray needs Ray: pip install -r requirements-ray.txt (or use --backend=local)")
        if "ray_address" in pairs and backend != "ray":
            raise UsageError("--ray_address needs --backend=ray")
        if backend != "ray":
            values["ray_address"] = None
        return cls(**values, overrides=overrides)

    @staticmethod
    def read(f: dataclasses.Field | str, pairs: dict[str, str], environ):
        """One option's value: from the command line, else its environment variable, else its default."""
        f = next(d for d in Options.declared() if d.name == f) if isinstance(f, str) else f
        given = pairs.get(f.name)
        if given is None and f.metadata["env"]:
            given = environ.get(f.metadata["env"])
        if given is None or not given.strip():
            if f.metadata["required"]:
                raise UsageError(f"--{f.name} is required, e.g. --{f.name}=run_0")
            return f.default
        return f.metadata["parse"](f.name, given)

    @classmethod
    def help_lines(cls) -> list[str]:
        """One line per option for --help."""
        env = lambda f: f" (or env {f.metadata['env']})" if f.metadata["env"] else ""
        return [f"  --{f.name:<22} {f.metadata['help']}{env(f)}" for f in cls.declared()]
