"""What a study costs: the FLOPs of its groups, and their time on a 2-core CPU."""

from __future__ import annotations

import torch

from .plan import Architecture, Group, Study


def forward_flops(arch: Architecture, num_classes: int, equations: int, prefix_rows: int) -> int:
    """Matmul FLOPs (2 per multiply-add) of one forward pass of one member, as the fast forward
    computes it: `equations` rows of positions 2-3 plus `prefix_rows` shared rows of positions
    0-1 in every block; the last block computes keys and values there, and the query, output
    projection and MLP for position 3 only. Attention scores over 4 positions (< 1%) are left out."""
    d, position_rows = arch.d_model, 2 * (equations + prefix_rows)
    full_block = position_rows * 2 * 12 * d * d  # qkv 3d^2, output d^2, MLP 8d^2 multiply-adds
    last_block = position_rows * 2 * 2 * d * d + equations * 2 * 10 * d * d
    return (arch.layers - 1) * full_block + last_block + equations * 2 * d * num_classes


def step_flops(arch: Architecture, table, batch_size: int) -> int:
    """One training step of one member: forward and backward (twice the forward)."""
    return 3 * forward_flops(arch, table.num_classes, batch_size, min(table.num_classes, batch_size))


def group_flops(study: Study, group: Group, evaluations: int) -> float:
    """Training and evaluation FLOPs of a whole group (the fast forward's; the plain model's are
    about twice as many)."""
    total = 0.0
    for mb in group.members:
        t, c = study.table(mb), study.config(mb)
        evaluation = forward_flops(group.arch, t.num_classes, len(t.answers), t.num_classes)
        total += step_flops(group.arch, t, c.batch_size) * c.num_steps + evaluation * evaluations
    return total


# The time a group takes on a 2-core CPU: its matmuls at CPU_FLOPS_ESTIMATE, plus a fixed cost per
# member, step and block (small models spend most of their time outside the matmuls). A rough
# guide: machines differ, and against the committed studies' groups (45 seconds to 1.6 hours, on
# Intel Xeon and AMD EPYC VMs) it gives 0.6 to 1.6 times the measured time of all but one (0.36).
# It weighs each group's share of the progress and warns before a long study; the time guard
# measures instead.
CPU_FLOPS_ESTIMATE = 80e9  # FLOP/s of the fast forward's matmuls
CPU_BLOCK_STEP_FLOPS = 1.6e8  # one member's step through one block besides its matmuls (2 ms), in FLOP at that rate
CPU_WARNING_S = 7200  # a study estimated longer than this (or --time_limit) on a CPU gets a warning before it starts


def study_costs(study: Study, groups: list[Group], evaluations: int, device: torch.device) -> tuple[float, dict]:
    """The FLOPs of training these groups, and what weighs each group's share of the study's time,
    in FLOP: on a CPU its FLOPs and the fixed cost of its member-steps; elsewhere (not measured)
    its FLOPs alone."""
    flops, costs = 0.0, {}
    for g in groups:
        group = group_flops(study, g, evaluations)
        fixed = CPU_BLOCK_STEP_FLOPS * study.c.num_steps * len(g.members) * g.arch.layers if device.type == "cpu" else 0.0
        flops, costs[g.name] = flops + group, group + fixed
    return flops, costs


def cpu_seconds(costs: dict) -> float:
    """The time the groups of these costs (study_costs) take on 2 CPU cores."""
    return sum(costs.values()) / CPU_FLOPS_ESTIMATE
