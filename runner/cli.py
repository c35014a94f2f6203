"""The command line of experiment.py."""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
import shlex
import signal
import sys
import traceback

import torch

from .device import resolve_device
from .folder import GROUPS_DIR, RunFolder, study_identity
from .options import PRESET_ENV, Options
from .plan import Study, check_zip_axes, field_types, format_value, parse_value
from .progress import TimeLimitExceeded
from .query import run_query
from .results import check_evaluation_steps, check_headline
from .science import Science, UsageError
from .study import run_study
from .template import make_template
from .text import plural


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


QUERY_HELP = ("RUN_DIR: ask a run saved with --save_models=1 the equations that follow (30/74 5/3); pick the run "
              "with --task, --arch, --seed and the varied axes (--prime=113 ...)")


TEMPLATE_HELP = ("DIR [--preset=NAME]: a folder for the AI-Scientist harness whose experiment.py has the preset "
                 "written into Config's defaults (the file is the study that runs; presets are refused there) and "
                 "TIME_LIMIT_S = 7200")


def resolve(science: Science, argv: list[str], environ=os.environ):
    """Command line (+ environment) -> (validated Config, Options). Raises UsageError."""
    pairs, positionals = split_arguments(argv)
    if positionals:
        raise UsageError(f"unexpected argument {positionals[0]!r}: options look like --field=value")
    types_ = field_types(science.config)
    run_options = [f.name for f in Options.declared()]
    unknown = [k for k in pairs if k not in types_ and k not in run_options]
    if unknown:
        raise UsageError(f"unknown option --{unknown[0]}; known: " + ", ".join(run_options + list(types_))
                         + " (see --help)")
    preset = Options.read("preset", pairs, environ)
    if preset is not None and science.template_of:
        raise UsageError(f"this folder's experiment.py is the study (Config's defaults are preset {science.template_of}), "
                         f"so presets are refused here (got {preset}); edit Config in experiment.py instead")
    if preset is not None and preset not in science.presets:
        raise UsageError(f"unknown preset {preset!r}; choose one of: {', '.join(science.presets)}")
    overrides = {k: parse_value(k, v, *types_[k]) for k, v in pairs.items() if k in types_}
    c = science.config(**{**science.presets.get(preset, {}), **overrides})
    for name, (_, shape) in types_.items():  # a zipped list may repeat a value: its pairs must differ
        value = getattr(c, name)
        if (shape != "one" and isinstance(value, tuple) and len(set(value)) != len(value)
                and name not in getattr(c, "zip_axes", ())):
            raise UsageError(f"--{name} lists a value twice")
    check_zip_axes(c)
    try:
        science.validate(c)
    except ValueError as e:
        raise UsageError(str(e)) from None
    options = Options.parse(pairs, environ, overrides={k: pairs[k] for k in pairs if k in types_})
    if options.time_limit is None and science.time_limit_s:
        options = dataclasses.replace(options, time_limit=float(science.time_limit_s))
    return c, options


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
    lines += Options.help_lines() + [f"  --{'query':<22} {QUERY_HELP}", f"  --{'make_template':<22} {TEMPLATE_HELP}"]
    lines.append("Presets:")
    for name, values in science.presets.items():
        lines.append(f"  {name}: " + " ".join(f"--{k}={format_value(v)}" for k, v in values.items()))
    return "\n".join(lines)


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


def main(science: Science, argv: list[str] | None = None) -> int:
    """The command line of experiment.py."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        if any(a in ("-h", "--help") for a in argv):
            print(usage(science, sys.modules[science.config.__module__].__doc__ or ""))
            return 0
        if any(a == "--make_template" or a.startswith("--make_template=") for a in argv):
            pairs, positionals = split_arguments(argv)
            if positionals:
                raise UsageError(f"unexpected argument {positionals[0]!r}: options look like --field=value")
            print(make_template(science, pairs))
            return 0
        if any(a == "--query" or a.startswith("--query=") for a in argv):
            print("\n".join(run_query(science, *split_arguments(argv))))
            return 0
        c, options = resolve(science, argv)
        study = Study.build(science, c)
        check_evaluation_steps(study)
        check_headline(study)
        # With Ray the workers pick their device (the GPU Ray gives a task, if any); the driver only plans.
        device = resolve_device(options.device) if options.backend == "local" else torch.device("cpu")
        folder = RunFolder(options.out_dir, study_identity(study))
        resume = folder.prepare(options.overwrite)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, raise_interrupted)
    out_dir = options.out_dir
    try:
        return run_study(study, folder, options, device, resume, argv)
    except Interrupted as e:
        print(f"\ninterrupted by {e}: {plural(folder.finished_groups(), 'finished group')} kept in {out_dir}/{GROUPS_DIR}; "
              f"resume with: {resume_command(argv)}", file=sys.stderr, flush=True)
        return 128 + e.signum
    except TimeLimitExceeded as e:  # finished groups are saved: the same command resumes
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 3
    except OSError as e:  # a full disk or a folder gone while training
        print(f"error: cannot write to {out_dir}: {e.strerror or e}; finished groups are kept in "
              f"{out_dir}/{GROUPS_DIR}, resume with: {resume_command(argv)}", file=sys.stderr, flush=True)
        return 1
    except Exception as e:  # noqa: BLE001 - most often an error in an edited experiment.py
        traceback.print_exc()
        message = " ".join(str(e).split())[:400]
        print(f"error: {type(e).__name__}: {message}{error_location(e, science.source)}", file=sys.stderr, flush=True)
        return 1
