"""Env plumbing: any env with the MNMS-v2 contract as a checked vector env, the names of its
tasks, and a vector env's info dict split per sub-env."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, SyncVectorEnv, VectorEnv

from agents.mnms.checkpoint import option_texts


def as_vector_env(env: gym.Env | VectorEnv) -> VectorEnv:
    """A vector env (a single env becomes a one-env `SyncVectorEnv`), checked against MNMS-v2."""
    if not isinstance(env, gym.Env | VectorEnv):
        raise TypeError(
            f"MNMS needs a Gymnasium env or vector env with the MNMS-v2 contract, got "
            f"{type(env).__name__} {env!r}"
        )
    envs = env if isinstance(env, VectorEnv) else SyncVectorEnv([partial(_given, env)])
    mode = envs.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
    if mode != AutoresetMode.NEXT_STEP:
        raise ValueError(
            f"the vector env autoresets in mode {mode!r}; MNMS handles "
            f"{AutoresetMode.NEXT_STEP!r} (Gymnasium's default)"
        )
    observation, action = envs.single_observation_space, envs.single_action_space
    expected = {"task": spaces.Discrete, "step": spaces.Discrete, "decisions": spaces.MultiDiscrete}
    if not isinstance(observation, spaces.Dict) or any(
        not isinstance(observation.spaces.get(key), kind) for key, kind in expected.items()
    ):
        raise ValueError(
            "MNMS needs the MNMS-v2 observation: a Dict with task (Discrete), step (Discrete) "
            f"and decisions (MultiDiscrete); got {observation} (MNMS-OneShot-v2 and flattening "
            "wrappers do not fit)"
        )
    if not isinstance(action, spaces.Discrete):
        raise ValueError(f"MNMS needs a Discrete action space (MNMS-v2), got {action}")
    return envs


def env_task_names(envs: VectorEnv, given: Sequence[str] | None) -> tuple[tuple[str, ...], bool]:
    """The names of the env's task indices: `given`, else the `task_names` attribute of the
    (sub-)envs, else `task-<index>`; and whether they are real names (checked against
    `info["task"]` while sampling)."""
    count = int(envs.single_observation_space["task"].n)
    base = envs.unwrapped
    if given is not None:
        names, named = tuple(given), True
    else:
        try:  # Sync/AsyncVectorEnv ask their sub-envs; a native vector env answers itself
            found = base.get_attr("task_names")[0] if hasattr(base, "get_attr") else None
            found = found if found is not None else base.task_names
            names, named = tuple(found), True
        except AttributeError:
            names, named = tuple(f"task-{i}" for i in range(count)), False
    if len(names) != count or len(set(names)) != len(names):
        raise ValueError(
            f"tasks must be {count} distinct names (the observation's task space is "
            f"Discrete({count})); got {list(names)}"
        )
    return names, named


def env_masks(envs: VectorEnv, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Each named task's `(decisions, max_options)` masks, from an env that tells them without an
    episode (`masks_of(task)`, as the MNMS envs do)."""
    own, named = env_task_names(envs, None)
    unknown = [name for name in names if named and name not in own]
    wrong = f"the env does not know tasks {unknown or list(names)} by these names (its own: {own})"
    if unknown:  # not asked: an AsyncVectorEnv's worker would die of the error
        raise ValueError(f"{wrong}; name them as the env does")
    try:
        return {name: np.asarray(_ask(envs, "masks_of", name)) for name in names}
    except AttributeError as error:
        raise ValueError(
            f"the env cannot tell a task's masks before its first episode (no masks_of): {error}"
        ) from error
    except ValueError as error:  # an env without task_names that does not know a name
        raise ValueError(f"{wrong}; name them as the env does: {error}") from error


def _given(env: gym.Env) -> gym.Env:
    """`env` itself: the env function of a one-env `SyncVectorEnv` (a lambda would not pickle)."""
    return env


def env_descriptors(envs: VectorEnv, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Each named task's descriptor (`TaskCard.descriptor`), from an env that tells its tasks'
    cards (`card_of`, as the MNMS envs do); a task whose card has none is left out, and so is
    every task of an env that cannot tell."""
    if not _has(envs, "card_of"):
        return {}
    own, named = env_task_names(envs, None)
    found = {}
    for name in names:
        if named and name not in own:  # the env calls it otherwise (`tasks=`): nothing to ask
            continue  # (asking would kill an AsyncVectorEnv's worker with the error)
        try:
            descriptor = _ask(envs, "card_of", name).descriptor
        except ValueError:  # an env without task_names that does not know the name
            continue
        if descriptor is not None:
            found[name] = descriptor
    return found


def env_options(envs: VectorEnv) -> list[list[Any]] | None:
    """`option_texts` of the env's `space` (`SearchSpace`, as the MNMS envs have; None for an
    env without): what a checkpoint compares with the env it is loaded onto."""
    if not _has(envs, "space"):
        return None
    base = envs.unwrapped
    space = base.get_attr("space")[0] if hasattr(base, "get_attr") else base.space
    decisions = getattr(space, "decisions", None)  # another env's `space` may be anything
    if decisions is None:
        return None
    return option_texts((d.name, d.options) for d in decisions)


def _has(envs: VectorEnv, attribute: str) -> bool:
    """Whether the env (a Sync/AsyncVectorEnv's first sub-env) has `attribute`: asked, since
    getting a missing attribute ends an async worker."""
    base = envs.unwrapped
    if hasattr(base, "call"):
        return _ask(envs, "has_wrapper_attr", attribute)
    return hasattr(base, attribute)


def _ask(envs: VectorEnv, method: str, *args: Any) -> Any:
    """`method(*args)` of the env: of its first sub-env on a Sync/AsyncVectorEnv (`call`), of
    itself on a native vector env."""
    base = envs.unwrapped
    return base.call(method, *args)[0] if hasattr(base, "call") else getattr(base, method)(*args)


def unbatch_info(info: dict[str, Any], j: int) -> dict[str, Any]:
    """Sub-env `j`'s part of a vector env's info dict, as plain Python values."""
    out: dict[str, Any] = {}
    for key, value in info.items():
        present = info.get(f"_{key}")
        if key.startswith("_") or (present is not None and not present[j]):
            continue
        item = unbatch_info(value, j) if isinstance(value, dict) else value[j]
        out[key] = item.tolist() if isinstance(item, np.ndarray | np.generic) else item
    return out
