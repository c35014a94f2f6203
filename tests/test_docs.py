"""The markdown files hold together: every relative link resolves to a file or folder of the
project (and an anchor to a heading of its file)."""

import glob
import os
import re

import pytest

from support import ROOT

MARKDOWN = sorted({os.path.relpath(p, ROOT) for pattern in ("*.md", "docs/*.md", "studies/*/README.md")
                   for p in glob.glob(os.path.join(ROOT, pattern))})
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchor(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces as dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_front_door_and_the_how_tos_are_there():
    assert {"README.md", "docs/options.md", "docs/changing.md", "docs/ai_scientist.md", "docs/ray.md",
            "docs/outputs.md", "docs/figures.md", "docs/benchmarks.md"} <= set(MARKDOWN)
    for study in os.listdir(os.path.join(ROOT, "studies")):
        assert f"studies/{study}/README.md" in MARKDOWN, f"studies/{study} has no README.md"
    with open(os.path.join(ROOT, "README.md")) as f:
        assert len(f.readlines()) <= 150


@pytest.mark.parametrize("name", MARKDOWN)
def test_every_relative_link_resolves(name):
    with open(os.path.join(ROOT, name)) as f:
        text = f.read()
    for target in LINK.findall(text):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, fragment = target.partition("#")
        resolved = os.path.normpath(os.path.join(ROOT, os.path.dirname(name), path)) if path else os.path.join(ROOT, name)
        assert os.path.exists(resolved), f"{name}: the link {target} leads nowhere"
        if fragment and resolved.endswith(".md"):
            with open(resolved) as f:
                headings = [anchor(h) for h in re.findall(r"^#+ (.+)$", f.read(), flags=re.M)]
            assert fragment in headings, f"{name}: the link {target} names no heading of {path or name}"
