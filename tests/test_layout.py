"""The rooms of the house: small modules, imports that run one way, nothing that imports the
science, plotting without torch, and a plot.py short enough to edit."""

import ast
import glob
import os

import pytest

from support import ROOT

PACKAGES = ("runner", "plotting")


def imports(path: str) -> tuple[set[str], set[str]]:
    """(modules of the package it imports, top-level modules it imports)."""
    inside, outside = set(), set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom):
            (inside if node.level else outside).add(node.module or "")
        elif isinstance(node, ast.Import):
            outside.update(alias.name.split(".")[0] for alias in node.names)
    return inside, outside


@pytest.mark.parametrize("package", PACKAGES)
def test_modules_are_small_and_import_without_cycles(package):
    graph = {}
    for path in sorted(glob.glob(os.path.join(ROOT, package, "*.py"))):
        name = os.path.basename(path)[:-3]
        with open(path) as f:
            assert len(f.readlines()) <= 400, f"{package}/{name}.py has grown past 400 lines: split it by job"
        inside, outside = imports(path)
        assert "experiment" not in outside, f"{package}/{name}.py imports experiment.py"
        graph[name] = inside

    def reaches(start: str, goal: str, seen=()) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, (*seen, n))) for n in graph.get(start, ()))

    cycles = [name for name in graph if reaches(name, name)]
    assert not cycles, f"import cycle through {cycles}"


def test_plotting_and_statistics_import_no_torch():
    paths = ["plot.py", "analysis.py", *glob.glob(os.path.join(ROOT, "plotting", "*.py"))]
    for path in paths:
        outside = imports(os.path.join(ROOT, path))[1]
        assert not {"torch", "runner", "experiment"} & outside, path


def test_plot_py_is_the_short_list_of_what_to_draw():
    """The harness's model keeps experiment.py and plot.py in its context: together at most 50 KB,
    plot.py at most about 200 lines."""
    with open(os.path.join(ROOT, "plot.py")) as f:
        assert len(f.readlines()) <= 200
    assert os.path.getsize(os.path.join(ROOT, "experiment.py")) + os.path.getsize(os.path.join(ROOT, "plot.py")) <= 50_000
