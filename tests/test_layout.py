"""The machinery's rooms: small modules, imports that run one way, nothing that imports the science."""

import ast
import glob
import os

from support import ROOT

MODULES = sorted(glob.glob(os.path.join(ROOT, "runner", "*.py")))


def imports(path: str) -> tuple[set[str], set[str]]:
    """(modules of the package it imports, top-level modules it imports)."""
    inside, outside = set(), set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom):
            (inside if node.level else outside).add(node.module or "")
        elif isinstance(node, ast.Import):
            outside.update(alias.name.split(".")[0] for alias in node.names)
    return inside, outside


def test_machinery_modules_are_small_and_import_without_cycles():
    graph = {}
    for path in MODULES:
        name = os.path.basename(path)[:-3]
        with open(path) as f:
            assert len(f.readlines()) <= 400, f"runner/{name}.py has grown past 400 lines: split it by job"
        inside, outside = imports(path)
        assert "experiment" not in outside, f"runner/{name}.py imports experiment.py"
        graph[name] = inside

    def reaches(start: str, goal: str, seen=()) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, (*seen, n))) for n in graph.get(start, ()))

    cycles = [name for name in graph if reaches(name, name)]
    assert not cycles, f"import cycle through {cycles}"


def test_plotting_and_statistics_import_no_torch():
    for name in ("plot.py", "analysis.py"):
        assert "torch" not in imports(os.path.join(ROOT, name))[1] and "runner" not in imports(os.path.join(ROOT, name))[1]
