"""--make_template: a folder for the AI-Scientist harness whose experiment.py is the study it runs."""

from __future__ import annotations

import os
import re
import shutil

from .science import Science, UsageError

# What the harness needs beside experiment.py (launch_scientist.py copies the folder for each idea).
TEMPLATE_FILES = ("plot.py", "plotting", "analysis.py", "runner", "notes.txt", "prompt.json", "seed_ideas.json", "latex",
                  "requirements.txt")
HARNESS_TIME_LIMIT_S = 7200  # perform_experiments.py kills a run after 2 hours


def make_template(science: Science, pairs: dict[str, str]) -> str:
    """Write the folder --make_template names (new or empty): the project's files, and experiment.py
    with Config's defaults set to --preset's values (none: the full study), TEMPLATE_OF to its name
    and TIME_LIMIT_S to the harness's limit. Returns the line that says what to run next."""
    folder, preset = pairs.get("make_template", "").strip(), pairs.get("preset", "").strip()
    unknown = [k for k in pairs if k not in ("make_template", "preset")]
    if unknown:
        raise UsageError(f"--make_template takes only --preset, not --{unknown[0]}; set other values in the "
                         "template's Config")
    if not folder:
        raise UsageError("--make_template needs a folder: --make_template=DIR [--preset=NAME]")
    if preset and preset not in science.presets:
        raise UsageError(f"unknown preset {preset!r}; choose one of: {', '.join(science.presets)}")
    if science.template_of:
        raise UsageError("this experiment.py is already a template's; make templates from the project's own")
    if os.path.exists(folder) and (not os.path.isdir(folder) or os.listdir(folder)):
        raise UsageError(f"--make_template={folder} exists and is not an empty folder; choose a new one")
    root = os.path.dirname(os.path.abspath(science.source))
    with open(science.source) as f:
        source = template_source(f.read(), science.presets.get(preset, {}), preset or "none: the full study")
    os.makedirs(folder, exist_ok=True)
    for name in TEMPLATE_FILES:
        path = os.path.join(root, name)
        if os.path.isdir(path):
            shutil.copytree(path, os.path.join(folder, name), ignore=shutil.ignore_patterns("__pycache__"))
        elif os.path.exists(path):
            shutil.copy(path, os.path.join(folder, name))
    with open(os.path.join(folder, "experiment.py"), "w") as f:
        f.write(source)
    return (f"wrote {folder}: experiment.py's Config is {f'preset {preset}' if preset else 'the full study'}; make "
            f"its baseline with: cd {folder} && "
            "python experiment.py --out_dir=run_0 && python plot.py")


def template_source(source: str, overrides: dict, preset: str) -> str:
    """experiment.py's text with the Config defaults of the fields the preset names set to its
    values, TEMPLATE_OF = preset and TIME_LIMIT_S = HARNESS_TIME_LIMIT_S."""
    body = re.search(r"^class Config:\n(.*?)\n\n\n", source, re.S | re.M)
    lines = body[1].split("\n")
    for name, value in overrides.items():
        pattern = re.compile(rf"^(    {name}: [^=]+= )(.+?)(  # .*)?$")
        index = next(i for i, line in enumerate(lines) if pattern.match(line))
        lines[index] = pattern.sub(lambda m: m[1] + literal(value) + (m[3] or ""), lines[index])
    source = source[:body.start(1)] + "\n".join(lines) + source[body.end(1):]
    for name, value in (("TEMPLATE_OF", literal(preset)), ("TIME_LIMIT_S", str(HARNESS_TIME_LIMIT_S))):
        source, count = re.subn(rf"^({name}: [^=]+= )None(  # .*)$", rf"\g<1>{value}\g<2>", source, flags=re.M)
        if count != 1:
            raise ValueError(f"experiment.py has no line '{name}: ... = None  # ...' to set")
    return source


def literal(value) -> str:
    """A value as experiment.py writes it: strings in double quotes, tuples with their commas."""
    if isinstance(value, tuple):
        return "(" + ", ".join(map(literal, value)) + ("," if len(value) == 1 else "") + ")"
    return f'"{value}"' if isinstance(value, str) else repr(value)
