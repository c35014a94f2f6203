"""The real AI-Scientist harness on a copy of this project (a check to run by hand, not a test).

    python bench/harness.py --ai_scientist=PATH/AI-Scientist          # smoke preset
    python bench/harness.py --ai_scientist=PATH --preset=demo --keep=/tmp/template

Imports `run_experiment` and `run_plotting` from PATH/ai_scientist/perform_experiments.py (the
harness's own code, never copied here; it needs only the standard library) and calls them on a
copy of this folder, as launch_scientist.py copies a template:

1. a finished run (`python experiment.py --out_dir=run_1`, the preset chosen by GROKKING_PRESET,
   as the harness passes no argument): return code, size of the results message it builds;
2. a bad preset: return code, the message its model sees, and that run_2/ is gone;
3. `python plot.py`: return code and the figures left in the folder.

The harness echoes each run's stderr as it goes; a summary follows at the end: one line per step
and the results message of step 1. tests/test_harness.py checks the same loop with the standard
library alone, so that CI needs no copy of the harness.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LEFT_OUT = shutil.ignore_patterns(".git", "run_[1-9]*")  # a template holds no runs but run_0


def load_harness(checkout: str):
    path = os.path.join(checkout, "ai_scientist", "perform_experiments.py")
    if not os.path.isfile(path):
        sys.exit(f"error: {path} not found; --ai_scientist is the root of an AI-Scientist checkout")
    spec = importlib.util.spec_from_file_location("perform_experiments", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ai_scientist", required=True, help="root of a SakanaAI/AI-Scientist checkout")
    parser.add_argument("--preset", default="smoke", help="GROKKING_PRESET for the finished run (default smoke)")
    parser.add_argument("--keep", help="copy the project here and keep it (default: a temporary folder)")
    args = parser.parse_args()
    harness = load_harness(args.ai_scientist)
    parent = args.keep or tempfile.mkdtemp(prefix="harness_")
    folder = os.path.join(parent, "template")
    shutil.copytree(ROOT, folder, ignore=LEFT_OUT)
    preset, summary = os.environ.get("GROKKING_PRESET"), []
    try:
        os.environ["GROKKING_PRESET"] = args.preset
        code, prompt = harness.run_experiment(folder, 1)
        results = prompt.splitlines()[1] if code == 0 else prompt
        summary += [f"run_1 (GROKKING_PRESET={args.preset}): return code {code}; results message {len(results):,} "
                    f"characters; next prompt {len(prompt):,}", f"  {results}"]
        os.environ["GROKKING_PRESET"] = "no_such_preset"
        code, prompt = harness.run_experiment(folder, 2)
        left = "left" if os.path.exists(os.path.join(folder, "run_2")) else "removed"
        summary += [f"run_2 (a bad preset): return code {code}; run_2/ {left}; the model sees {len(prompt)} "
                    f"characters:", f"  {prompt.strip()}"]
        code, prompt = harness.run_plotting(folder)
        figures = sorted(f for f in os.listdir(folder) if f.endswith(".png"))
        summary.append(f"plot.py: return code {code}{'; ' + prompt[-300:] if code else ''}; {len(figures)} figures, "
                       "e.g. " + ", ".join(figures[:4]))
    finally:
        if preset is None:
            os.environ.pop("GROKKING_PRESET", None)
        else:
            os.environ["GROKKING_PRESET"] = preset
        if not args.keep:
            shutil.rmtree(parent, ignore_errors=True)
    print("\n".join(["", "harness check:"] + summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
