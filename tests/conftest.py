"""What the test files share: the project on the import path, and the one smoke study the suite
trains for all the tests that read a finished study of the real script."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from support import clean_environment, run_script  # noqa: E402


@pytest.fixture(scope="session")
def smoke_template(tmp_path_factory):
    """A template folder for the AI-Scientist harness made by the README's command with the smoke
    preset written into Config, and its run_0 made as the harness makes it: the bare command
    `python experiment.py --out_dir=run_0`, no preset anywhere. Returns (folder, the finished run
    as a CompletedProcess with its stdout and stderr). Tests that change the folder copy it."""
    folder = tmp_path_factory.mktemp("templates") / "grokking_capacity"
    made = run_script([f"--make_template={folder}", "--preset=smoke"])
    assert made.returncode == 0, made.stderr
    result = subprocess.run([sys.executable, "experiment.py", "--out_dir=run_0"], cwd=folder, capture_output=True,
                            text=True, env=clean_environment(), timeout=600)
    assert result.returncode == 0, result.stderr
    return folder, result
