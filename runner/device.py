"""The device a study trains on: which one, its name, and its settings for training."""

from __future__ import annotations

import os
import platform

import torch

from .science import UsageError


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model} ({torch.get_num_threads()} threads)"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device={name} but no CUDA GPU is visible; use --device=cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device={name} but only {torch.cuda.device_count()} GPU(s) are visible")
    return device


def configure_backend(device: torch.device) -> None:
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 matmuls: the template's fp32 at tensor-core speed
        torch.backends.cudnn.allow_tf32 = True
    else:
        if "OMP_NUM_THREADS" not in os.environ:  # an explicit thread count wins
            torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                  else os.cpu_count() or 1)
        keep_freed_memory()


def keep_freed_memory() -> None:
    """Make glibc reuse freed activation buffers instead of returning them to the OS.

    Every training step allocates the same tens of MB of activations. By default glibc maps
    each large block afresh and unmaps it on free, so every elementwise op pays page faults on
    new memory: measured 5x slower on a 2-core machine. Serving them from a heap that is never
    trimmed removes that cost. No effect (and no error) where glibc is not the allocator."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4  # from glibc's malloc.h
    libc.mallopt(M_MMAP_MAX, 0)  # no per-block mmap: large blocks come from the heap
    libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)  # keep up to 1 GiB of freed heap
    libc.mallopt(M_TOP_PAD, 1 << 28)  # grow the heap in 256 MiB steps
