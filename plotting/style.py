"""How every figure looks: one colour, line style and marker per architecture, derived from the
architecture itself (so two studies' figures read side by side), titles, axes and legends."""

from __future__ import annotations

import math
import textwrap

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.colors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402

DPI = 110
TASK_TITLES = {"x_div_y": "x / y (mod p)", "x_minus_y": "x - y (mod p)", "x_plus_y": "x + y (mod p)",
               "permutation": "composition in S_k"}
CURVES = {"train_loss": "training loss", "val_loss": "validation loss",
          "train_acc": "training accuracy", "val_acc": "validation accuracy"}
STEP_LABEL = "optimizer step"
REGIME_COLORS = {"groks": "tab:green", "near-grokking": "yellowgreen", "memorizes only": "tab:orange",
                 "fails to fit": "tab:gray", "diverged": "tab:red"}
MEMORIZE, GROK, HELD = "step_train_acc_99", "step_val_acc_99", "step_val_acc_99_held"  # the events most figures time
EVENT_COLORS = {MEMORIZE: "tab:blue", GROK: "tab:red"}

# ======================================================================================
# One look per architecture: hue from the width, shade from the depth, a tint and the line style
# from the heads, the marker from the depth
# ======================================================================================

WIDTH_COLORS = {16: "#8c564b", 32: "#9467bd", 64: "#1f77b4", 128: "#ff7f0e", 256: "#2ca02c", 512: "#d62728"}
DEPTH_MARKERS = {1: "o", 2: "s", 3: "P", 4: "^", 6: "v", 8: "D"}
HEAD_STYLES = {1: (0, (1, 1)), 2: "-", 4: "--", 8: "-.", 16: ":"}


def width_color(d_model: int) -> tuple:
    """The hue of a width: its entry in WIDTH_COLORS, between two entries interpolated on a log
    scale (96 lies between 64 and 128), beyond them the nearest."""
    known = sorted(WIDTH_COLORS)
    x = min(max(math.log2(d_model), math.log2(known[0])), math.log2(known[-1]))
    upper = next(w for w in known if math.log2(w) >= x)
    lower = known[max(known.index(upper) - 1, 0)]
    t = 0.0 if upper == lower else (x - math.log2(lower)) / (math.log2(upper) - math.log2(lower))
    a, b = (np.array(matplotlib.colors.to_rgb(WIDTH_COLORS[w])) for w in (lower, upper))
    return tuple((1 - t) * a + t * b)


def shaded(color: tuple, layers: int) -> tuple:
    """A width's hue at a depth: 1 layer lighter, 2 as is, 4 and more darker (log scale)."""
    t = math.log2(layers) - 1
    rgb = np.array(color)
    rgb = rgb + (1 - rgb) * min(0.4 * -t, 0.6) if t < 0 else rgb * (1 - min(0.25 * t, 0.6))
    return tuple(rgb)


def head_tint(color: tuple, heads: int) -> tuple:
    """A hue turned a little by the head count (4 heads as is; more heads toward red, fewer away
    from it), so that architectures of one shape differ in colour too."""
    hue, saturation, value = matplotlib.colors.rgb_to_hsv(color)
    return tuple(matplotlib.colors.hsv_to_rgb(((hue - 0.06 * math.log2(heads / 4)) % 1, saturation, value)))


def depth_marker(layers: int) -> str:
    return DEPTH_MARKERS.get(layers, "X")


def head_style(heads: int):
    return HEAD_STYLES.get(heads, (0, (3, 1, 1, 1, 1, 1)))


def arch_look(a: dict) -> dict:
    """Line keywords of an architecture (a dict with layers, d_model, heads)."""
    return {"color": head_tint(shaded(width_color(a["d_model"]), a["layers"]), a["heads"]), "ls": head_style(a["heads"]),
            "marker": depth_marker(a["layers"])}


def arch_shape(a: dict) -> str:
    return f"{a['layers']}x{a['d_model']}"


def arch_label(a: dict) -> str:
    return f"{arch_shape(a)}, {a['heads']} heads"


def arch_handles(archs: list[dict], marker: bool = False, solid: bool = False) -> list:
    """Legend entries of architectures: line (and marker) as the figures draw them; solid where a
    figure's line style says something else (training or validation, the event)."""
    handles = []
    for a in archs:
        look = arch_look(a)
        handles.append(plt.Line2D([], [], color=look["color"], ls="-" if solid else look["ls"], lw=2 if solid else 1.5,
                                  marker=look["marker"] if marker else None, ms=5, label=arch_label(a)))
    return handles


def depth_handles(depths: list[int]) -> list:
    return [plt.Line2D([], [], color="black", marker=depth_marker(d), ls="", label=f"{d} layer" + "s" * (d > 1))
            for d in depths]


def width_handles(dims: list[int]) -> list:
    return [plt.Line2D([], [], color=width_color(d), marker="s", ls="", label=f"d_model {d}") for d in dims]


def head_handles(heads: list[int]) -> list:
    return [plt.Line2D([], [], color="gray", ls=head_style(h), label=f"{h} heads") for h in heads]


# ======================================================================================
# Titles, layout, legends
# ======================================================================================


def suptitle(fig, text: str) -> None:
    """A figure title wrapped to the figure's width."""
    chars = max(40, int(fig.get_figwidth() * 11))
    fig.suptitle(textwrap.fill(text, chars), fontsize=10)


def legend_below(fig, handles: list, columns: int = 5) -> float:
    """A legend under the figure; returns the inches it needs (for finish's bottom)."""
    columns = max(1, min(len(handles), columns))
    fig.legend(handles=handles, loc="lower center", ncol=columns, fontsize=8, bbox_to_anchor=(0.5, 0))
    return 0.15 + 0.22 * math.ceil(len(handles) / columns)


def finish(fig, filename: str, bottom: float = 0.0) -> tuple:
    """Lay out a figure, leaving room for its wrapped title and `bottom` inches below (a legend),
    and hand it to the saver as (figure, file name)."""
    title = fig.get_suptitle()
    top = 0.2 * (title.count("\n") + 1) + 0.1 if title else 0.0
    height = fig.get_figheight() + top + bottom  # the axes keep their own height
    fig.set_figheight(height)
    if title:  # the title in the band reserved at the top, whatever the figure's height
        fig.suptitle(title, fontsize=10, y=1 - 0.05 / height, va="top")
    fig.tight_layout(rect=(0, bottom / height, 1, 1))  # it leaves room for the suptitle itself
    return fig, filename


# ======================================================================================
# Axes and lines
# ======================================================================================


def step_axis(ax, log_steps: bool, label: bool = True) -> None:
    """The optimizer-step axis: log-scaled for a log evaluation schedule."""
    if label:
        ax.set_xlabel(STEP_LABEL + (" (log scale)" if log_steps else ""))
    if log_steps:
        ax.set_xscale("log")


def accuracy_axis(ax, label: str | None = "accuracy (fraction correct)") -> None:
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    if label:
        ax.set_ylabel(label)


def draw_runs(ax, steps: np.ndarray, values: np.ndarray, color, style="-", lw: float = 0.8, alpha: float = 0.7,
              label: str | None = None) -> None:
    """One thin line per run (values: (runs, evals)), as one collection (fast with many runs)."""
    segments = [np.column_stack([steps, v]) for v in values]
    ax.add_collection(LineCollection(segments, colors=[color], linestyles=[style], linewidths=lw, alpha=alpha,
                                     label=label))
    ax.autoscale_view()


def nan_median(values: np.ndarray) -> np.ndarray:
    """The median over runs (axis 0) at each evaluation, leaving out non-finite values."""
    with np.errstate(all="ignore"):
        finite = np.where(np.isfinite(values), values, np.nan)
        return np.full(values.shape[1], np.nan) if np.isnan(finite).all() else np.nanmedian(finite, axis=0)


def count_label(n: float) -> str:
    """A parameter count as a tick label: 950, 20K, 1.5M."""
    for size, suffix in ((1e6, "M"), (1e3, "K")):
        if n >= size:
            return f"{n / size:g}{suffix}"
    return f"{n:g}"


def parameter_axis(ax) -> None:
    """The x axis as log-scaled parameter counts (call after plotting), labelled at 1, 2 and 5 x
    10^k; a range too narrow for two of those (the demo's 108K-236K) gets round numbers between."""
    ax.set_xscale("log")
    low, high = ax.get_xlim()
    locator = matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0))
    if sum(low <= t <= high for t in locator.tick_values(low, high)) < 2:
        locator = matplotlib.ticker.MaxNLocator(nbins=6)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: count_label(v)))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("parameters (log scale)")
