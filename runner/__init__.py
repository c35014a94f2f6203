"""The machinery behind experiment.py: everything a researcher does not change to do research.

experiment.py holds the science and hands it over as a `Science`; nothing here imports it (run
as __main__, a second import would execute it twice, with two copies of every class). The modules
follow a study's way from the command line to a finished folder:

    science    the contract: what experiment.py hands over (Science), and UsageError
    plan       Config field types and axes, architectures, runs (members) and groups; no torch
    options    how a study runs: the run options, each declared once
    forwards   one parameter store per group, and the forwards that read it
    training   a group's data on the device, training and full-split evaluation
    proof      the float64 check that picks each group's forward
    costs      what a study costs: FLOPs, and the time on a 2-core CPU
    text       counts and durations in words
    progress   progress with the time left, and the time guard
    results    per-run records, final_info.json and every other output, built; the checks of the
               science's outputs
    files      atomic writes, plain JSON, the hashes and git commit of the code
    folder     the study's folder: identity, resume, saved groups and models, writing the outputs
    device     the device: which one, its name, its settings for training
    backends   where groups train: here, one after another, or as Ray tasks
    query      a saved run answers equations
    template   --make_template: a folder for the AI-Scientist harness
    study      the study loop: plan, announce, train, report
    cli        the command line: main()
"""

from .cli import main
from .plan import architectures, axis_values
from .science import Science, UsageError

__all__ = ["Science", "UsageError", "architectures", "axis_values", "main"]
