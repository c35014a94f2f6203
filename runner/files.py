"""Files that are whole or absent (atomic writes), plain JSON, and the hashes and commit that
say which code made them."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import subprocess
import tempfile

import numpy as np

import analysis


def write_atomic(path: str, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename: a file is whole or absent."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def json_ready(obj):
    """JSON's own types: NumPy numbers and arrays as Python numbers and lists, tuples as lists,
    NaN and infinities (which JSON lacks) as null."""
    if isinstance(obj, dict):
        return {key: json_ready(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [json_ready(value) for value in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: str, obj) -> None:
    write_atomic(path, (json.dumps(json_ready(obj), indent=1, allow_nan=False) + "\n").encode())


def write_npz(path: str, **arrays) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    write_atomic(path, buffer.getvalue())


def file_hash(*paths: str) -> str:
    """SHA-256 of the files' contents, in the order given."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
# The machinery's code: this package's modules and the statistics module it shares with plot.py.
MACHINERY_FILES = sorted(os.path.join(PACKAGE_DIR, n) for n in os.listdir(PACKAGE_DIR) if n.endswith(".py")) + [
    os.path.abspath(analysis.__file__)]


def git_state(paths: list[str]) -> dict:
    """The commit of the files' repository and whether any of them differs from it."""
    here = os.path.dirname(os.path.abspath(paths[0]))
    try:
        git = lambda *a: subprocess.run(["git", "-C", here, *a], capture_output=True, text=True,
                                        timeout=10).stdout.strip()
        commit = git("rev-parse", "HEAD")
        modified = bool(git("status", "--porcelain", "--", *map(os.path.abspath, paths)))
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "source_modified": None}
    return {"git_commit": commit or None, "source_modified": modified if commit else None}
