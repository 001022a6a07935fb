"""One runner for every controller, with exactly the same child budget for each.

`run_controller(name, tasks=..., children=N, seed=S)` builds the env, wraps it in `TaskBudget`
and lets the controller search through the Gymnasium API only. `TaskBudget` fixes each
episode's task round-robin over `tasks` (on `reset`) and raises `BudgetSpent` if an episode is
started after every task has had its `children`, so no controller can train an extra child; the
runner then checks that every task got exactly `children`. Every child is recorded as the env
reports it, in order, in a frozen `History`:

```python
history = run_controller("tpe", tasks=["wine", "digits"], children=20, seed=0)
history.trained, history.cached    # newly trained children, answered from the store
history.best("wine").val_accuracy
```
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym

from mnms_env import ChildConfig

CONTROLLERS = (
    "mnms",
    "random",
    "tpe",
    "ppo",
    "a2c",
    "dqn",
    "maskable-ppo",
    "recurrent-ppo",
    "ppo-oneshot",
)
MASKED = ("mnms", "random", "tpe", "maskable-ppo")
"""Controllers that only take valid actions; the others run with `invalid_action="wrap"`."""


@dataclass(frozen=True)
class Child:
    """One trained (or store-answered) child, as the env reported it in `info["child"]`."""

    task: str
    config: ChildConfig
    val_accuracy: float
    test_accuracy: float
    seconds: float
    """Training time; for a cached child, the time its original training took."""
    cached: bool
    """Answered from the results store without training."""

    @classmethod
    def from_info(cls, child: dict[str, Any]) -> Child:
        return cls(
            task=child["task"],
            config=ChildConfig(**child["config"]),
            val_accuracy=float(child["val_accuracy"]),
            test_accuracy=float(child["test_accuracy"]),
            seconds=float(child["seconds"]),
            cached=bool(child["cached"]),
        )


@dataclass(frozen=True)
class History:
    """Every child of one controller run, in the order the env produced them."""

    controller: str
    tasks: tuple[str, ...]
    children_per_task: int
    seed: int
    budget: int
    children: tuple[Child, ...]
    wall_seconds: float

    @property
    def trained(self) -> int:
        """Children newly trained (`cached=False`)."""
        return sum(not c.cached for c in self.children)

    @property
    def cached(self) -> int:
        """Children answered from the results store."""
        return sum(c.cached for c in self.children)

    def per_task(self) -> dict[str, int]:
        """Children per task (each equals `children_per_task`)."""
        counts = Counter(c.task for c in self.children)
        return {task: counts[task] for task in self.tasks}

    def best(self, task: str) -> Child:
        """The child of `task` with the highest validation accuracy."""
        found = [c for c in self.children if c.task == task]
        if not found:
            raise ValueError(f"no child for task {task!r}; tasks: {list(self.tasks)}")
        return max(found, key=lambda c: c.val_accuracy)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "trained": self.trained, "cached": self.cached}


class BudgetSpent(RuntimeError):
    """A controller started an episode after every task had its children."""


class TaskBudget(gym.Wrapper):
    """Round-robin tasks and an exact per-task child budget over an MNMS env.

    `reset` sets the task of the next child: `tasks[k % len(tasks)]` after `k` finished children
    (a reset that asks for another task raises). The first step of an episode raises
    `BudgetSpent` once `children * len(tasks)` children have finished, so a controller that
    resets again after the last child (SB3 does) is fine as long as it does not step. Each
    finished episode's `info["child"]` is kept in `records`.
    """

    def __init__(self, env: gym.Env, children: int, tasks: Sequence[str] | None = None) -> None:
        super().__init__(env)
        if not isinstance(children, int) or children < 1:
            raise ValueError(f"children per task must be an int >= 1, got {children!r}")
        self.schedule = tuple(tasks) if tasks is not None else tuple(env.unwrapped.task_names)
        self.children = children
        self.records: list[Child] = []
        self._fresh = False

    @property
    def total(self) -> int:
        return self.children * len(self.schedule)

    @property
    def next_task(self) -> str:
        return self.schedule[len(self.records) % len(self.schedule)]

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        task = self.next_task
        asked = (options or {}).get("task")
        if asked is not None and asked != task:
            raise ValueError(
                f"tasks go round-robin over {list(self.schedule)}; the next child is for "
                f"{task!r}, but reset asked for {asked!r}"
            )
        self._fresh = True
        return self.env.reset(seed=seed, options={**(options or {}), "task": task})

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if self._fresh and len(self.records) >= self.total:
            raise BudgetSpent(
                f"every task has had its {self.children} children ({self.total} in all); "
                "the controller started one more episode"
            )
        self._fresh = False
        obs, reward, terminated, truncated, info = self.env.step(action)
        if terminated or truncated:
            if "child" not in info:
                raise RuntimeError("an MNMS episode ended without info['child']")
            self.records.append(Child.from_info(info["child"]))
        return obs, reward, terminated, truncated, info


def run_controller(
    name: str,
    *,
    tasks: Sequence[str],
    children: int,
    seed: int = 0,
    budget: int = 1,
    env_kwargs: dict[str, Any] | None = None,
    controller_kwargs: dict[str, Any] | None = None,
    pretrained: str | Path | None = None,
) -> History:
    """Run controller `name` (one of `CONTROLLERS`) for exactly `children` children per task.

    `env_kwargs` go to `gym.make` (e.g. `space`, `store`, `evaluator`, `device`, `backend`);
    controllers that sample unmasked actions get `invalid_action="wrap"` unless it is given.
    `controller_kwargs` go to the controller (`MNMSConfig` fields for `mnms`, the algorithm's
    constructor for the SB3 ones). `pretrained` (mnms only) is a checkpoint to transfer from:
    `MNMS.load(pretrained, env, seed=seed, new_run=True, **controller_kwargs)`, its config kept.
    """
    if name not in CONTROLLERS:
        raise ValueError(f"unknown controller {name!r}; accepted: {list(CONTROLLERS)}")
    if pretrained is not None and name != "mnms":
        raise ValueError(f"pretrained= is a checkpoint of the mnms controller; got {name!r}")
    tasks = tuple(tasks)
    kwargs = dict(env_kwargs or {})
    if "task" in kwargs or "tasks" in kwargs or "budget" in kwargs:
        raise ValueError("pass tasks= and budget= to run_controller, not in env_kwargs")
    if name not in MASKED:
        kwargs.setdefault("invalid_action", "wrap")
    env_id = "mnms_env:MNMS-OneShot-v0" if name == "ppo-oneshot" else "mnms_env:MNMS-v0"
    env = TaskBudget(gym.make(env_id, tasks=list(tasks), budget=budget, **kwargs), children, tasks)
    extra = dict(controller_kwargs or {})
    started = time.perf_counter()
    if name == "mnms":
        from agents.mnms import MNMS, MNMSConfig

        if pretrained is not None:
            agent = MNMS.load(pretrained, env, seed=seed, tasks=tasks, new_run=True, **extra)
        else:
            agent = MNMS(env, MNMSConfig(**extra), seed=seed, tasks=tasks)
        agent.learn(env.total)
    elif name == "random":
        from agents.random_search import random_search

        random_search(env, env.total, seed=seed)
    elif name == "tpe":
        from agents.tpe import tpe_search

        tpe_search(env, children, seed=seed, tasks=tasks)
    else:
        from agents.sb3 import sb3_learn

        sb3_learn(name.removesuffix("-oneshot"), env, env.total, seed=seed, **extra)
    history = History(
        controller=name,
        tasks=tasks,
        children_per_task=children,
        seed=seed,
        budget=budget,
        children=tuple(env.records),
        wall_seconds=time.perf_counter() - started,
    )
    if history.per_task() != dict.fromkeys(tasks, children):
        raise RuntimeError(
            f"every task must get exactly {children} children; {name} gave {history.per_task()}"
        )
    env.close()
    return history
