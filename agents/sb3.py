"""Stable-Baselines3 on MNMS vector envs.

SB3 agents step their own `VecEnv` type, which resets a finished sub-env at once and hands the
final observation over in `info["terminal_observation"]`; Gymnasium vector envs (the batched
`MNMSVectorEnv`, `SyncVectorEnv`, `AsyncVectorEnv`) reset it on the next step instead.
`SB3VecEnv` adapts the second to the first, so the children of a step still train in one
batched call:

```python
import gymnasium as gym
from sb3_contrib import MaskablePPO
from agents.sb3 import SB3VecEnv

venv = gym.make_vec("mnms_env:MNMS-v2", num_envs=16, vectorization_mode="vector_entry_point",
                    task="langid-es")
model = MaskablePPO("MultiInputPolicy", SB3VecEnv(venv), n_steps=10).learn(16 * 10 * 20)
```
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env import VecEnv

from agents.mnms import unbatch_info
from mnms_env.records import is_whole


class SB3VecEnv(VecEnv):
    """An SB3 `VecEnv` over a Gymnasium vector env with the MNMS-v2 contract.

    MNMS episodes have a fixed length and sub-envs start together, so all sub-envs finish on
    the same step; the adapter then resets the whole vector env. Sub-env methods and attributes
    (`action_masks` for MaskablePPO) are reached through `env_method` and `get_attr`: directly
    where the vector env holds its sub-envs (`.envs`: MNMSVectorEnv, SyncVectorEnv), else
    through Gymnasium's `call`, `get_attr` and `set_attr` (AsyncVectorEnv, whose sub-envs live in
    worker processes; its `call` reaches every sub-env, so `env_method` there takes no subset).
    """

    def __init__(self, venv: gym.vector.VectorEnv) -> None:
        if not isinstance(venv, gym.vector.VectorEnv):
            raise TypeError(
                f"SB3VecEnv adapts a Gymnasium vector env, got {type(venv).__name__}; wrap one "
                "env as gym.vector.SyncVectorEnv([lambda: env]), or use gym.make_vec"
            )
        mode = venv.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        if mode != AutoresetMode.NEXT_STEP:
            raise ValueError(
                f"SB3VecEnv adapts Gymnasium's NEXT_STEP autoreset, got autoreset_mode={mode}; "
                "make the vector env with the default mode"
            )
        self.venv = venv
        self._actions: np.ndarray | None = None
        base = venv.unwrapped
        self._remote = getattr(base, "envs", None) is None and hasattr(base, "call")
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)

    def _sub_envs(self, indices: None | int | Sequence[int]) -> list[gym.Env]:
        envs = getattr(self.venv.unwrapped, "envs", None)
        if envs is None:
            raise AttributeError(
                f"{type(self.venv.unwrapped).__name__} exposes neither its sub-envs (.envs) nor "
                "call/get_attr/set_attr; use MNMSVectorEnv, SyncVectorEnv or AsyncVectorEnv"
            )
        return [envs[i].unwrapped for i in self._get_indices(indices)]

    def reset(self) -> dict[str, np.ndarray]:
        seeds = self._seeds if any(s is not None for s in self._seeds) else None
        if any(options != self._options[0] for options in self._options):
            raise ValueError(
                f"set_options gave the sub-envs different options ({self._options}); a "
                "Gymnasium vector env resets every sub-env with the same options"
            )
        obs, _ = self.venv.reset(seed=seeds, options=self._options[0] or None)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, list[dict]]:
        obs, rewards, terminated, truncated, infos = self.venv.step(self._actions)
        dones = terminated | truncated
        per_env = [unbatch_info(infos, i) for i in range(self.num_envs)]
        if dones.any():
            if not dones.all():
                raise RuntimeError(
                    "sub-envs finished on different steps; SB3VecEnv needs MNMS episodes "
                    f"that start together (done: {dones.tolist()})"
                )
            for i, info in enumerate(per_env):
                info["terminal_observation"] = {key: value[i] for key, value in obs.items()}
                info["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            obs, _ = self.venv.reset()
        return obs, rewards.astype(np.float32), dones, per_env

    def close(self) -> None:
        self.venv.close()

    def get_attr(self, attr_name: str, indices: None | int | Sequence[int] = None) -> list[Any]:
        if self._remote:
            values = self.venv.unwrapped.get_attr(attr_name)
            return [values[i] for i in self._get_indices(indices)]
        return [getattr(env, attr_name) for env in self._sub_envs(indices)]

    def set_attr(
        self, attr_name: str, value: Any, indices: None | int | Sequence[int] = None
    ) -> None:
        if self._remote:
            values = list(self.venv.unwrapped.get_attr(attr_name))
            for i in self._get_indices(indices):
                values[i] = value
            self.venv.unwrapped.set_attr(attr_name, values)
            return
        for env in self._sub_envs(indices):
            setattr(env, attr_name, value)

    def env_method(
        self,
        method_name: str,
        *method_args: Any,
        indices: None | int | Sequence[int] = None,
        **method_kwargs: Any,
    ) -> list[Any]:
        if self._remote:
            if list(self._get_indices(indices)) != list(range(self.num_envs)):
                raise ValueError(
                    f"env_method({method_name!r}, indices={indices!r}): "
                    f"{type(self.venv.unwrapped).__name__}.call runs a method in every sub-env, "
                    "not in some; call it without indices, or use SyncVectorEnv"
                )
            return list(self.venv.unwrapped.call(method_name, *method_args, **method_kwargs))
        return [
            getattr(env, method_name)(*method_args, **method_kwargs)
            for env in self._sub_envs(indices)
        ]

    def env_is_wrapped(self, wrapper_class: type, indices: None | int | Sequence[int] = None):  # noqa: ANN201
        return [False for _ in self._get_indices(indices)]


# --------------------------------------------------------------------------------------------
# Baselines: SB3 and sb3-contrib agents on a single MNMS env


SB3_ALGORITHMS = ("ppo", "a2c", "dqn", "maskable-ppo", "recurrent-ppo")
"""Names `sb3_learn` accepts. All but `maskable-ppo` sample unmasked actions, so their env needs
`invalid_action="wrap"`; `recurrent-ppo` sees the observation flattened (`FlattenObservation`),
as RecurrentPPO fails on the `Dict` observation with a `MultiDiscrete` key."""
MAX_ROLLOUT_EPISODES = 8
"""Most episodes per on-policy rollout (the MNMS controller's default batch of children)."""


def episode_steps(env: gym.Env) -> int:
    """Steps in one episode of an MNMS env: one per decision (MNMS-v2), or 1 (MNMS-OneShot-v2)."""
    base = env.unwrapped
    return 1 if isinstance(base.action_space, gym.spaces.MultiDiscrete) else len(base.space)


def rollout_episodes(episodes: int, steps: int) -> int:
    """Episodes per rollout: the largest divisor of `episodes` up to `MAX_ROLLOUT_EPISODES`
    that gives a rollout of at least 2 steps (PPO's minimum), so every rollout is whole and
    `learn` never collects a step past `episodes` episodes."""
    sizes = _rollout_sizes(episodes, steps)
    if not sizes:
        works = next(n for n in itertools.count(episodes + 1) if _rollout_sizes(n, steps))
        raise ValueError(
            f"an on-policy rollout needs at least 2 steps; {episodes} episode(s) of {steps} "
            f"step(s) cannot be split into equal rollouts of at most {MAX_ROLLOUT_EPISODES} "
            f"episodes and at least 2 steps (the children of every task together; {works} can)"
        )
    return sizes[0]


def _rollout_sizes(episodes: int, steps: int) -> list[int]:
    top = min(episodes, MAX_ROLLOUT_EPISODES)
    return [d for d in range(top, 0, -1) if episodes % d == 0 and d * steps >= 2]


def _raises_on_unmasked_actions(env: gym.Env) -> bool:
    """Whether an MNMS env refuses some action an unmasked policy may sample."""
    if getattr(env, "invalid_action", "wrap") != "raise":
        return False
    return not all(np.asarray(env.masks_of(task)).all() for task in env.task_names)


def sb3_learn(
    algo: str,
    env: gym.Env,
    episodes: int,
    *,
    seed: int = 0,
    policy_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Any:
    """Train SB3 agent `algo` (one of `SB3_ALGORITHMS`) for exactly `episodes` whole episodes of
    `env` and return the model. `env` is a single MNMS env (MNMS-v2, or MNMS-OneShot-v2 for
    `ppo`); it runs in a `DummyVecEnv`. On-policy rollouts are whole episodes
    (`rollout_episodes`) and DQN collects one episode per training round, so
    `total_timesteps = episodes * episode_steps(env)` is met exactly. `kwargs` go to the
    algorithm's constructor (over these defaults)."""
    from stable_baselines3 import A2C, DQN, PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    if algo not in SB3_ALGORITHMS:
        raise ValueError(f"unknown SB3 algorithm {algo!r}; accepted: {list(SB3_ALGORITHMS)}")
    if algo != "maskable-ppo" and _raises_on_unmasked_actions(env.unwrapped):
        raise ValueError(
            f"{algo} samples actions without the masks, and some are invalid, so its env needs "
            "invalid_action='wrap' (it has 'raise'); or use 'maskable-ppo'"
        )
    steps = episode_steps(env)
    rollout = rollout_episodes(episodes, steps) * steps
    policy = "MultiInputPolicy"
    if algo == "ppo":
        cls, defaults = PPO, {"n_steps": rollout, "batch_size": rollout}
    elif algo == "a2c":
        cls, defaults = A2C, {"n_steps": rollout}
    elif algo == "dqn":
        cls, defaults = DQN, {"train_freq": (1, "episode"), "learning_starts": steps}
    else:
        try:
            from sb3_contrib import MaskablePPO, RecurrentPPO
        except ImportError as err:  # pragma: no cover - part of the baselines extra
            raise ImportError(
                f"{algo} needs sb3-contrib: pip install 'mnms-env[baselines]'"
            ) from err
        defaults = {"n_steps": rollout, "batch_size": rollout}
        if algo == "maskable-ppo":
            cls = MaskablePPO
        else:
            cls, policy = RecurrentPPO, "MlpLstmPolicy"
            env = gym.wrappers.FlattenObservation(env)
    n_steps = kwargs.get("n_steps")
    if algo != "dqn" and is_whole(n_steps) and n_steps > 0 and (episodes * steps) % n_steps:
        raise ValueError(  # the last rollout would start a child past the quota, after the run
            f"n_steps={n_steps!r}: rollouts must end exactly at the run's {episodes * steps} "
            f"steps ({episodes} children of {steps} steps), so n_steps must divide it; the "
            f"default is {defaults['n_steps']}"
        )
    venv = DummyVecEnv([lambda: env])
    model = cls(policy, venv, seed=seed, policy_kwargs=policy_kwargs, **{**defaults, **kwargs})
    return model.learn(total_timesteps=episodes * steps)
