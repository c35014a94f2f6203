"""The real AI-Scientist harness on a template folder of this project (a check to run by hand, not a test).

    python bench/harness.py --ai_scientist=PATH/AI-Scientist          # smoke preset
    python bench/harness.py --ai_scientist=PATH --preset=demo --keep=/tmp/harness

Imports `run_experiment` and `run_plotting` from PATH/ai_scientist/perform_experiments.py (the
harness's own code, never copied here; it needs only the standard library), makes a template
folder with `python experiment.py --make_template=DIR --preset=NAME` and its baseline with the bare
`python experiment.py --out_dir=run_0`, copies it as launch_scientist.py copies a template for an
idea, and calls the harness on the copy:

1. a finished run (`python experiment.py --out_dir=run_1`, no argument, no environment): return
   code, size of the results message it builds;
2. a run past its time limit (TIME_LIMIT_S set to 5 s in the copy's experiment.py): return code,
   the message its model sees, and that run_2/ is gone;
3. a preset in the environment (refused in a template): return code and message;
4. `python plot.py`: return code and the figures left in the folder.

The harness echoes each run's stderr as it goes; a summary follows at the end. tests/test_harness.py
checks the same loop with the standard library alone, so that CI needs no copy of the harness.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_harness(checkout: str):
    path = os.path.join(checkout, "ai_scientist", "perform_experiments.py")
    if not os.path.isfile(path):
        sys.exit(f"error: {path} not found; --ai_scientist is the root of an AI-Scientist checkout")
    spec = importlib.util.spec_from_file_location("perform_experiments", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def set_time_limit(folder: str, seconds: str) -> None:
    path = os.path.join(folder, "experiment.py")
    with open(path) as f:
        source = f.read()
    with open(path, "w") as f:
        f.write(source.replace("TIME_LIMIT_S: float | None = 7200", f"TIME_LIMIT_S: float | None = {seconds}"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ai_scientist", required=True, help="root of a SakanaAI/AI-Scientist checkout")
    parser.add_argument("--preset", default="smoke", help="the preset the template is made from (default smoke)")
    parser.add_argument("--keep", help="make the folders here and keep them (default: a temporary folder)")
    args = parser.parse_args()
    harness = load_harness(args.ai_scientist)
    parent = args.keep or tempfile.mkdtemp(prefix="harness_")
    template, folder = os.path.join(parent, "template"), os.path.join(parent, "idea")
    environ, summary = dict(os.environ), []
    try:
        os.environ.pop("GROKKING_PRESET", None)
        subprocess.run([sys.executable, os.path.join(ROOT, "experiment.py"), f"--make_template={template}",
                        f"--preset={args.preset}"], check=True)
        subprocess.run([sys.executable, "experiment.py", "--out_dir=run_0"], cwd=template, check=True)
        shutil.copytree(template, folder)
        code, prompt = harness.run_experiment(folder, 1)
        results = prompt.splitlines()[1] if code == 0 else prompt
        summary += [f"run_1 (the template's Config, preset {args.preset}): return code {code}; results message "
                    f"{len(results):,} characters", f"  {results}"]
        set_time_limit(folder, "5")
        code, prompt = harness.run_experiment(folder, 2)
        left = "left" if os.path.exists(os.path.join(folder, "run_2")) else "removed"
        summary += [f"run_2 (TIME_LIMIT_S = 5): return code {code}; run_2/ {left}; the model sees the last line:",
                    f"  {prompt.strip().splitlines()[-1]}"]
        set_time_limit(folder, "7200")
        os.environ["GROKKING_PRESET"] = "demo"
        code, prompt = harness.run_experiment(folder, 3)
        summary += [f"run_3 (GROKKING_PRESET=demo): return code {code}; the model sees:", f"  {prompt.strip()}"]
        os.environ.pop("GROKKING_PRESET")
        code, prompt = harness.run_plotting(folder)
        figures = sorted(f for f in os.listdir(folder) if f.endswith(".png"))
        summary.append(f"plot.py: return code {code}{'; ' + prompt[-300:] if code else ''}; {len(figures)} figures, "
                       "e.g. " + ", ".join(figures[:4]))
    finally:
        os.environ.clear()
        os.environ.update(environ)
        if not args.keep:
            shutil.rmtree(parent, ignore_errors=True)
    print("\n".join(["", "harness check:"] + summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
