"""One runner for every controller, with exactly the same number of children for each.

`run_controller(name, tasks=..., children_per_task=N, seed=S)` builds the env, wraps it in
`ChildQuota` and lets the controller search through the Gymnasium API only. `ChildQuota` fixes
each episode's task round-robin over `tasks` (on `reset`) and raises `QuotaSpent` if an episode
is started after every task has had its `children_per_task`, so no controller can train an extra
child; the runner then checks that every task got exactly that many. Every child is recorded as
the env reports it, in order, in a frozen `History`:

```python
history = run_controller("tpe", tasks=["wine", "digits"], children_per_task=20, seed=0)
history.trained, history.cached    # newly trained children, answered from the store
history.best("wine").result.val_accuracy
```

The transfer baselines (`TRANSFER`, `agents.portfolio`) also take `sources=`: configs ranked on
source tasks, which must not include a target.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import gymnasium as gym

from agents.portfolio import SEARCHES, SourceScores
from agents.random_search import episode_tasks
from mnms_env import Child
from mnms_env.records import check_budget, is_whole
from mnms_env.tasks import task_list

TRANSFER = tuple(SEARCHES)
"""Transfer baselines: they try configs ranked on source tasks first, so `run_controller` needs
their `sources=` (and refuses it for every other controller)."""
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
    *TRANSFER,
)
MASKED = ("mnms", "random", "tpe", "maskable-ppo", *TRANSFER)
"""Controllers that only take valid actions; the others run with `invalid_action="wrap"`."""


@dataclass(frozen=True)
class History:
    """Every child of one controller run, in the order the env produced them."""

    controller: str
    tasks: tuple[str, ...]
    children_per_task: int
    seed: int
    budget: int
    """Training epochs per child."""
    children: tuple[Child, ...]
    wall_seconds: float

    @property
    def trained(self) -> int:
        """Children newly trained, or looked up in a benchmark table (`cached=False`)."""
        return sum(not c.cached for c in self.children)

    @property
    def cached(self) -> int:
        """Children answered from the results store."""
        return sum(c.cached for c in self.children)

    def per_task(self) -> dict[str, int]:
        """Children per task (each equals `children_per_task`)."""
        counts = Counter(c.request.task for c in self.children)
        return {task: counts[task] for task in self.tasks}

    def of_task(self, task: str) -> list[Child]:
        """The children of `task`, in order."""
        found = [c for c in self.children if c.request.task == task]
        if not found:
            raise ValueError(f"no child for task {task!r}; tasks: {list(self.tasks)}")
        return found

    def best(self, task: str) -> Child:
        """The child of `task` with the highest validation accuracy."""
        return max(self.of_task(task), key=lambda c: c.result.val_accuracy)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values: the fields (each child as `Child.to_info()`), `trained` and
        `cached`. `History.from_dict` reads it back."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["children"] = [c.to_info() for c in self.children]
        return {**values, "tasks": list(self.tasks), "trained": self.trained, "cached": self.cached}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        values = {f.name: data[f.name] for f in fields(cls)}
        values["children"] = tuple(Child.from_info(c) for c in data["children"])
        return cls(**{**values, "tasks": tuple(data["tasks"])})


def check_children_per_task(children_per_task: object) -> int:
    if not is_whole(children_per_task) or children_per_task < 1:
        raise ValueError(f"children_per_task must be an int >= 1, got {children_per_task!r}")
    return int(children_per_task)


class QuotaSpent(RuntimeError):
    """A controller started an episode after every task had its children."""


class ChildQuota(gym.Wrapper):
    """Round-robin tasks and exactly `children_per_task` children of each over an MNMS env.

    `reset` sets the task of the next child: `tasks[k % len(tasks)]` after `k` finished children
    (a reset that asks for another task raises). The first step of an episode raises
    `QuotaSpent` once `children_per_task * len(tasks)` children have finished, so a controller
    that resets again after the last child (SB3 does) is fine as long as it does not step. Each
    finished episode's child is kept in `records`.
    """

    def __init__(
        self, env: gym.Env, children_per_task: int, tasks: Sequence[str] | None = None
    ) -> None:
        super().__init__(env)
        self.schedule = episode_tasks(env, tasks)
        self.children_per_task = check_children_per_task(children_per_task)
        self.records: list[Child] = []

    @property
    def total(self) -> int:
        return self.children_per_task * len(self.schedule)

    @property
    def next_task(self) -> str:
        return self.schedule[len(self.records) % len(self.schedule)]

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        task = self.next_task
        if options is not None and not isinstance(options, dict):
            return self.env.reset(seed=seed, options=options)  # the env names what it takes
        asked = (options or {}).get("task")
        if asked is not None and asked != task:
            raise ValueError(
                f"tasks go round-robin over {list(self.schedule)}; the next child is for "
                f"{task!r}, but reset asked for {asked!r}"
            )
        return self.env.reset(seed=seed, options={**(options or {}), "task": task})

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if len(self.records) >= self.total:  # only the next episode's first step gets here
            raise QuotaSpent(
                f"every task has had its {self.children_per_task} children ({self.total} in "
                "all); the controller started one more episode"
            )
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
    children_per_task: int,
    seed: int = 0,
    budget: int = 1,
    env_kwargs: dict[str, Any] | None = None,
    controller_kwargs: dict[str, Any] | None = None,
    pretrained: str | Path | None = None,
    sources: SourceScores | None = None,
) -> History:
    """Run controller `name` (one of `CONTROLLERS`) for exactly `children_per_task` children of
    each task.

    `env_kwargs` go to `gym.make` (e.g. `space`, `store`, `evaluator`, `device`, `backend`);
    controllers that sample unmasked actions get `invalid_action="wrap"` unless it is given.
    `controller_kwargs` go to the controller (`MNMSConfig` fields for `mnms`, the algorithm's
    constructor for the SB3 ones). `pretrained` (mnms only) is a checkpoint to transfer from:
    `MNMS.load(pretrained, env, seed=seed, new_run=True, **controller_kwargs)`, its config kept.
    `sources` (the `TRANSFER` controllers only, and required by them) ranks configs on source
    tasks, none of which may be among `tasks`.
    """
    if name not in CONTROLLERS:
        raise ValueError(f"unknown controller {name!r}; accepted: {list(CONTROLLERS)}")
    children_per_task = check_children_per_task(children_per_task)
    if not is_whole(seed) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an int in [0, 2**32), got {seed!r}")
    seed, budget = int(seed), check_budget(budget)  # numpy ints: the controllers take ints
    if pretrained is not None and name != "mnms":
        raise ValueError(f"pretrained= is a checkpoint of the mnms controller; got {name!r}")
    tasks = task_list(tasks)
    check_sources(name, sources, tasks)
    kwargs = dict(env_kwargs or {})
    if "task" in kwargs or "tasks" in kwargs or "budget" in kwargs:
        raise ValueError("pass tasks= and budget= to run_controller, not in env_kwargs")
    if name not in MASKED:
        kwargs.setdefault("invalid_action", "wrap")
    extra = dict(controller_kwargs or {})
    if extra and name in ("random", "tpe"):
        raise ValueError(
            f"controller_kwargs={extra!r}: {name!r} takes none (its only setting is seed=)"
        )
    started = time.perf_counter()
    kwargs |= {"tasks": list(tasks), "budget": budget}
    if name == "mnms":
        children = _search_mnms(tasks, children_per_task, seed, kwargs, extra, pretrained)
    else:
        env_id = "mnms_env:MNMS-OneShot-v2" if name == "ppo-oneshot" else "mnms_env:MNMS-v2"
        env = ChildQuota(gym.make(env_id, **kwargs), children_per_task, tasks)
        if name == "random":
            from agents.random_search import random_search

            random_search(env, env.total, seed=seed)
        elif name == "tpe":
            from agents.tpe import tpe_search

            tpe_search(env, children_per_task, seed=seed, tasks=tasks)
        elif name in TRANSFER:
            SEARCHES[name](env, children_per_task, sources, seed=seed, tasks=tasks, **extra)
        else:
            from agents.sb3 import sb3_learn

            sb3_learn(name.removesuffix("-oneshot"), env, env.total, seed=seed, **extra)
        env.close()
        children = tuple(env.records)
    history = History(
        controller=name,
        tasks=tasks,
        children_per_task=children_per_task,
        seed=seed,
        budget=budget,
        children=children,
        wall_seconds=time.perf_counter() - started,
    )
    if history.per_task() != dict.fromkeys(tasks, children_per_task):
        raise RuntimeError(
            f"every task must get exactly {children_per_task} children; {name} gave "
            f"{history.per_task()}"
        )
    return history


def check_sources(name: str, sources: object, tasks: Sequence[str]) -> None:
    """Sources go to the transfer baselines only, and hold nothing of their target tasks."""
    if name not in TRANSFER:
        if sources is not None:
            raise ValueError(
                f"sources= is the source data of the transfer baselines {list(TRANSFER)}; "
                f"{name!r} takes none"
            )
        return
    if not isinstance(sources, SourceScores):
        raise ValueError(
            f"{name} tries configs ranked on source tasks first: pass sources="
            f"SourceScores.from_tables(...) or SourceScores.from_children(...), got {sources!r}"
        )
    shared = [task for task in tasks if task in sources.tasks]
    if shared:
        raise ValueError(
            f"target task(s) {shared} are among the source tasks {list(sources.tasks)}; a "
            "transfer baseline may draw on nothing of its targets"
        )


class RoundRobin:
    """The tasks in turn, `children_per_task` episodes of each: the `next_task` of an MNMS
    vector env's sub-envs, so that every reset, autoresets included, takes the next task. One
    episode more raises `QuotaSpent`."""

    def __init__(self, tasks: Sequence[str], children_per_task: int) -> None:
        self.tasks, self.total, self.started = task_list(tasks), children_per_task * len(tasks), 0

    def __call__(self) -> str:
        if self.started >= self.total:
            raise QuotaSpent(
                f"every task of {list(self.tasks)} has had its {self.total // len(self.tasks)} "
                "children; the controller started one more episode"
            )
        self.started += 1
        return self.tasks[(self.started - 1) % len(self.tasks)]


def _search_mnms(
    tasks: tuple[str, ...],
    children_per_task: int,
    seed: int,
    env_kwargs: dict[str, Any],
    controller_kwargs: dict[str, Any],
    pretrained: str | Path | None,
) -> tuple[Child, ...]:
    """MNMS on the MNMS vector env, so each update's children train in one batched call (as in
    `mnms search`). Its sub-envs are as many as the largest number that divides both the batch
    size and the total: every update is then whole rounds, and the last round ends exactly at
    the quota. The shared `RoundRobin` sets every episode's task."""
    from agents.mnms import MNMS, MNMSConfig
    from agents.mnms.checkpoint import read_checkpoint

    total = children_per_task * len(tasks)
    if pretrained is not None:
        saved = read_checkpoint(pretrained)["config"]
        config = MNMSConfig(**{**saved, **controller_kwargs.get("overrides", {})})
    else:
        config = MNMSConfig(**controller_kwargs)
    envs = gym.make_vec(
        "mnms_env:MNMS-v2",
        num_envs=math.gcd(config.batch_size, total),
        vectorization_mode="vector_entry_point",
        next_task=RoundRobin(tasks, children_per_task),
        **env_kwargs,
    )
    if pretrained is not None:
        kwargs = {"seed": seed, "tasks": tasks, "new_run": True, **controller_kwargs}
        agent = MNMS.load(pretrained, envs, **kwargs)
    else:
        agent = MNMS(envs, config, seed=seed, tasks=tasks)
    agent.learn(total)
    envs.close()
    return tuple(record.child for record in agent.history)
