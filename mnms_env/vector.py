"""`MNMSVectorEnv`: K sub-envs in lockstep whose finished children train in one batched call.

`gym.make_vec("mnms_env:MNMS-v2", num_envs=K, vectorization_mode="vector_entry_point")` builds
it. Every sub-env of one episode reaches its last decision on the same step (episodes have a
fixed length), so the children of a step are handed to the evaluator together; with the default
`BatchedEvaluator` they train as stacked networks on one device. Requests already in the store
are answered from it and skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium.error import ClosedEnvironmentError, ResetNeeded
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from mnms_env.batched import BatchedEvaluator
from mnms_env.env import DEFAULT_STORE, MNMSEnv, open_store
from mnms_env.evaluate import Evaluator
from mnms_env.records import is_whole
from mnms_env.store import ResultStore
from mnms_env.tasks import TaskCard


class MNMSVectorEnv(VectorEnv):
    """`num_envs` copies of `MNMS-v2` sharing one evaluator and one store.

    Arguments are those of `MNMSEnv` (but `render_mode`: it renders nothing) plus `num_envs`
    and `workers`; the default evaluator is a `BatchedEvaluator` on `device` at `precision`
    with `workers` CPU processes (0: it trains in this process), ended by `close()`. Autoreset
    follows Gymnasium's default `NEXT_STEP` mode: the step after a sub-env terminates resets it
    (its action is ignored) and returns the reset observation with reward 0. `action_masks()`
    gives the `(num_envs, max_options)` masks.
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(
        self,
        num_envs: int = 1,
        task: str | None = None,
        tasks: Sequence[str] | None = None,
        *,
        evaluator: Evaluator | None = None,
        store: str | ResultStore | None = DEFAULT_STORE,
        device: str | None = None,
        precision: str = "fp32",
        workers: int = 0,
        **kwargs: Any,
    ) -> None:
        if not is_whole(num_envs) or num_envs < 1:
            raise ValueError(f"num_envs must be an int >= 1, got {num_envs!r}")
        num_envs = int(num_envs)
        if kwargs.get("render_mode") is not None:
            raise ValueError(
                f"render_mode={kwargs['render_mode']!r}: the batched vector env renders nothing; "
                "render single envs (gym.make), or a SyncVectorEnv of them (vectorization_mode="
                "'sync')"
            )
        if workers and (evaluator is not None or kwargs.get("backend", "train") != "train"):
            raise ValueError(
                f"workers={workers} sizes the default BatchedEvaluator; with evaluator= or "
                "backend='table' there is none (build the evaluator with its own workers)"
            )
        self._owned: BatchedEvaluator | None = None
        if kwargs.get("backend", "train") == "train":  # one evaluator and store for all
            if evaluator is None:
                evaluator = self._owned = BatchedEvaluator(
                    device=device, precision=precision, workers=workers
                )
                device, precision = None, "fp32"  # the evaluator's now, not the sub-envs'
            store = open_store(store)
        self.envs = [
            MNMSEnv(
                task,
                tasks,
                evaluator=evaluator,
                store=store,
                device=device,
                precision=precision,
                **kwargs,
            )
            for _ in range(num_envs)
        ]
        self.evaluator = self.envs[0].evaluator
        self.store = self.envs[0].store
        self.cache = self.envs[0].cache
        self.num_envs = num_envs
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._needs_reset = np.zeros(num_envs, dtype=bool)
        self._started = False  # whether reset() has been called

    @property
    def space(self):  # noqa: ANN201 - the sub-envs' SearchSpace
        return self.envs[0].space

    @property
    def task_names(self) -> tuple[str, ...]:
        return self.envs[0].task_names

    def masks_of(self, task: str) -> np.ndarray:
        """The sub-envs' masks of `task` (`MNMSEnv.masks_of`)."""
        return self.envs[0].masks_of(task)

    def card_of(self, task: str) -> TaskCard:
        """The sub-envs' card of `task` (`MNMSEnv.card_of`)."""
        return self.envs[0].card_of(task)

    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Reset every sub-env; an int seed gives sub-env i the seed `seed + i`."""
        self._check_open()
        if seed is None or is_whole(seed):
            seeds = [None if seed is None else int(seed) + i for i in range(self.num_envs)]
        elif (
            (isinstance(seed, Sequence) and not isinstance(seed, str | bytes))
            or (isinstance(seed, np.ndarray) and seed.ndim == 1)
        ) and all(s is None or is_whole(s) for s in seed):  # bools are not seeds
            seeds = [None if s is None else int(s) for s in seed]
            if len(seeds) != self.num_envs:
                raise ValueError(f"got {len(seeds)} seeds for {self.num_envs} sub-envs")
        else:
            raise TypeError(
                f"seed={seed!r}: accepted are None, an int, or one int (or None) per sub-env"
            )
        infos: dict[str, Any] = {}
        observations = []
        for i, (env, s) in enumerate(zip(self.envs, seeds, strict=True)):
            obs, info = env.reset(seed=s, options=options)
            observations.append(obs)
            infos = self._add_info(infos, info, i)
        self._needs_reset[:] = False
        self._started = True
        return self._stack(observations), infos

    def step(
        self, actions: Any
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        self._check_open()
        if not self._started:
            raise ResetNeeded("call reset() before step() on MNMSVectorEnv")
        actions = np.asarray(actions)
        if actions.size != self.num_envs:
            raise ValueError(
                f"step takes one action per sub-env ({self.num_envs}), got an array of shape "
                f"{actions.shape}"
            )
        actions = actions.reshape(self.num_envs)
        # Every action is checked before any sub-env moves: one invalid action raises with the
        # sub-envs still in lockstep, as they were. A sub-env that ended last step is reset
        # instead (NEXT_STEP autoreset: its action is ignored).
        options = [
            None if self._needs_reset[i] else env.check_action(actions[i])
            for i, env in enumerate(self.envs)
        ]
        finished = [
            i
            for i, (env, option) in enumerate(zip(self.envs, options, strict=True))
            if option is not None and env.decide(option)
        ]
        trained = self.cache.children([self.envs[i].pending_request() for i in finished])
        children = dict(zip(finished, trained, strict=True))
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        terminated = np.zeros(self.num_envs, dtype=bool)
        infos: dict[str, Any] = {}
        observations = []
        for i, (env, option) in enumerate(zip(self.envs, options, strict=True)):
            if option is None:
                obs, info = env.reset()
            else:
                obs, rewards[i], terminated[i], _, info = env.step_result(children.get(i))
            observations.append(obs)
            infos = self._add_info(infos, info, i)
        self._needs_reset = terminated.copy()
        return self._stack(observations), rewards, terminated, np.zeros_like(terminated), infos

    def close_extras(self, **kwargs: Any) -> None:
        """End the default evaluator's worker processes (an evaluator passed in is the
        caller's to close)."""
        if self._owned is not None:
            self._owned.close()

    def _check_open(self) -> None:
        if self.closed:
            raise ClosedEnvironmentError("this MNMSVectorEnv is closed; make a new one")

    def action_masks(self) -> np.ndarray:
        """`(num_envs, max_options)`: the valid actions of each sub-env now."""
        return np.stack([env.action_masks() for env in self.envs])

    def _stack(self, observations: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        return {
            key: np.stack([np.asarray(obs[key], dtype=np.int64) for obs in observations])
            for key in self.single_observation_space.spaces
        }
