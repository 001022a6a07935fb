"""Uniform random search: every decision drawn uniformly from the options valid at that step.

The simplest baseline a controller must beat. It uses only the Gymnasium API (the env's
`info["action_mask"]`), so it runs on any env with the MNMS-v2 contract.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


def masked_uniform(mask: np.ndarray, rng: np.random.Generator) -> int:
    """An index drawn uniformly among the True entries of `mask`."""
    valid = np.flatnonzero(mask)
    if len(valid) == 0:
        raise ValueError("the action mask marks no action valid")
    return int(rng.choice(valid))


def random_search(
    env: gym.Env, children: int, *, seed: int = 0, task: str | None = None
) -> list[dict[str, Any]]:
    """Design and train `children` random children; returns each episode's `info["child"]`.

    `task` fixes the task of every episode; otherwise the env draws one per episode.
    """
    if children < 0:
        raise ValueError(f"children must be >= 0, got {children}")
    rng = np.random.default_rng(seed)
    options = {"task": task} if task is not None else None
    history = []
    for episode in range(children):
        _, info = env.reset(seed=seed + episode, options=options)
        terminated = False
        while not terminated:
            _, _, terminated, truncated, info = env.step(masked_uniform(info["action_mask"], rng))
            if truncated:
                raise RuntimeError("MNMS episodes never truncate; is this an MNMS-v2 env?")
        history.append(info["child"])
    return history
