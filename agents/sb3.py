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

venv = gym.make_vec("mnms_env:MNMS-v0", num_envs=16, vectorization_mode="vector_entry_point",
                    task="langid-es")
model = MaskablePPO("MultiInputPolicy", SB3VecEnv(venv), n_steps=10).learn(16 * 10 * 20)
```
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv

from agents.mnms import unbatch_info


class SB3VecEnv(VecEnv):
    """An SB3 `VecEnv` over a Gymnasium vector env with the MNMS-v0 contract.

    MNMS episodes have a fixed length and sub-envs start together, so all sub-envs finish on
    the same step; the adapter then resets the whole vector env. Sub-env methods and attributes
    (`action_masks` for MaskablePPO) are reached through `env_method` and `get_attr`.
    """

    def __init__(self, venv: gym.vector.VectorEnv) -> None:
        self.venv = venv
        self._actions: np.ndarray | None = None
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)

    def _sub_envs(self, indices: None | int | Sequence[int]) -> list[gym.Env]:
        envs = getattr(self.venv.unwrapped, "envs", None)
        if envs is None:
            raise AttributeError(
                f"{type(self.venv.unwrapped).__name__} does not expose its sub-envs (.envs); "
                "use MNMSVectorEnv or SyncVectorEnv"
            )
        return [envs[i].unwrapped for i in self._get_indices(indices)]

    def reset(self) -> dict[str, np.ndarray]:
        seeds = self._seeds if any(s is not None for s in self._seeds) else None
        obs, _ = self.venv.reset(seed=seeds)
        self._reset_seeds()
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
        return [getattr(env, attr_name) for env in self._sub_envs(indices)]

    def set_attr(
        self, attr_name: str, value: Any, indices: None | int | Sequence[int] = None
    ) -> None:
        for env in self._sub_envs(indices):
            setattr(env, attr_name, value)

    def env_method(
        self,
        method_name: str,
        *method_args: Any,
        indices: None | int | Sequence[int] = None,
        **method_kwargs: Any,
    ) -> list[Any]:
        return [
            getattr(env, method_name)(*method_args, **method_kwargs)
            for env in self._sub_envs(indices)
        ]

    def env_is_wrapped(self, wrapper_class: type, indices: None | int | Sequence[int] = None):  # noqa: ANN201
        return [False for _ in self._get_indices(indices)]
