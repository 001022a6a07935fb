"""The learning rule's per-task pieces, apart so each has its own tests: the normalised advantage
A'(a, t) and the baselines b(t) it divides by (`MNMS.update` puts the whole rule together)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def normalised_advantages(
    rewards: torch.Tensor, baselines: torch.Tensor, floor: float
) -> torch.Tensor:
    """MNMS's per-task normalised advantage A'(a, t) = (R(a, t) - b(t)) / |b(t)|: tasks with
    different reward scales give gradients of similar size. `baselines` holds b(t) of each
    child's task; its size is floored at `floor` so it never divides by ~0. (The paper's
    rewards are accuracies, b(t) > 0; the size keeps the scale for a negative objective too,
    such as a loss negated to be maximised.)"""
    return (rewards - baselines) / baselines.abs().clamp_min(floor)


def seeded_baselines(
    baselines: dict[str, float], tasks: Sequence[str], rewards: Sequence[float]
) -> dict[str, float]:
    """`baselines` plus a b(t) for each task seen for the first time: the mean of its rewards
    in this batch (so a new task's first advantages are centred, not all positive)."""
    out = dict(baselines)
    for task in dict.fromkeys(tasks):
        if task not in out:
            out[task] = float(
                np.mean([r for t, r in zip(tasks, rewards, strict=True) if t == task])
            )
    return out


def updated_baselines(
    baselines: dict[str, float], tasks: Sequence[str], rewards: Sequence[float], decay: float
) -> dict[str, float]:
    """b(t) <- decay * b(t) + (1 - decay) * R for each child in order (new tasks seeded first)."""
    out = seeded_baselines(baselines, tasks, rewards)
    for task, reward in zip(tasks, rewards, strict=True):
        out[task] = decay * out[task] + (1.0 - decay) * float(reward)
    return out
