"""Uniform random search: every decision drawn uniformly from the options valid at that step.

The simplest baseline a controller must beat. It uses only the Gymnasium API (the env's
`info["action_mask"]`), so it runs on any env with the MNMS-v2 contract.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from mnms_env.tasks import task_list


def masked_uniform(mask: np.ndarray, rng: np.random.Generator) -> int:
    """An index drawn uniformly among the True entries of `mask`."""
    valid = np.flatnonzero(mask)
    if len(valid) == 0:
        raise ValueError("the action mask marks no action valid")
    return int(rng.choice(valid))


def episode_tasks(env: gym.Env, tasks: Sequence[str] | None) -> tuple[str, ...]:
    """The tasks a search takes turns over: `tasks` (a list, not one string), else the env's."""
    return task_list(tasks) if tasks is not None else tuple(env.unwrapped.task_names)


def play_episode(
    env: gym.Env,
    choose: Callable[[int, np.ndarray], int],
    *,
    seed: int,
    task: str | None = None,
) -> tuple[dict[str, Any], float]:
    """One MNMS-v2 episode, reset with `seed` (and `task`, else the env draws one), each
    decision's option `choose(step, action_mask)`: the child it designed (`info["child"]`) and
    the reward of its last step (a reward wrapper's, if any). The one episode loop of the
    search baselines (random, TPE, the portfolios)."""
    _, info = env.reset(seed=seed, options=None if task is None else {"task": task})
    step, terminated, reward = 0, False, 0.0
    while not terminated:
        _, reward, terminated, truncated, info = env.step(choose(step, info["action_mask"]))
        if truncated:
            raise RuntimeError("MNMS episodes never truncate; is this an MNMS-v2 env?")
        step += 1
    if "child" not in info:
        raise RuntimeError("an MNMS-v2 episode ends after its last decision with info['child']")
    return info["child"], float(reward)


def random_search(
    env: gym.Env, children: int, *, seed: int = 0, task: str | None = None
) -> list[dict[str, Any]]:
    """Design and train `children` random children; returns each episode's `info["child"]`.

    `task` fixes the task of every episode; otherwise the env draws one per episode.
    """
    if children < 0:
        raise ValueError(f"children must be >= 0, got {children}")
    rng = np.random.default_rng(seed)
    return [
        play_episode(env, lambda _, mask: masked_uniform(mask, rng), seed=seed + e, task=task)[0]
        for e in range(children)
    ]
