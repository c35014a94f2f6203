"""How plot.py draws: what to draw is in plot.py, how to draw it is here (numpy, scipy and
matplotlib; never torch). The statistics are in analysis.py, beside this package.

    studies   study folders written by experiment.py, read for drawing (StudyFolder)
    style     one colour, line style and marker per architecture; titles, axes, legends
    curves    figures of curves against the step
    events    figures of times to events (censored at the budget) and of regimes
    pairs     figures of paired comparisons
    tables    summary.md and summary.json
    jobs      the command line, and the figure lists drawn in parallel
"""

from . import curves, events, pairs, style
from .jobs import main, per_task
from .studies import StudyFolder

__all__ = ["StudyFolder", "curves", "events", "main", "pairs", "per_task", "style"]
