"""Optuna TPE: the MNMS search space through Optuna's ask/tell, one study per task.

Each trial is one episode of an MNMS-v2 env: the study suggests one option index per decision
(categorical over the indices valid for the task, from the env's masks), the env trains the
child and stores it, and the child's validation accuracy is told back to the study. Tasks take
turns (round-robin), each episode's task fixed with `reset(options={"task": name})`.

```python
env = gym.make("mnms_env:MNMS-v2", tasks=["langid-es", "word-sentiment-en"])
history, studies = tpe_search(env, 50, seed=0)  # 50 children of each task
```
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from agents.random_search import episode_tasks, play_episode
from mnms_env import SearchSpace


def tpe_search(
    env: gym.Env,
    children_per_task: int,
    *,
    seed: int = 0,
    tasks: Sequence[str] | None = None,
    first_trials: Mapping[str, Sequence[Sequence[int]]] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Design and train `children_per_task` children of each task with one seeded TPE study per
    task.

    `tasks` defaults to the env's `task_names`; episodes go round-robin over them.
    `first_trials` gives a task's first trials (`study.enqueue_trial`), each as one valid option
    index per decision: a warm start. Returns each episode's `info["child"]` in order and the
    `optuna.Study` of each task.
    """
    try:
        import optuna
    except ImportError as err:  # pragma: no cover - part of the baselines extra
        raise ImportError("tpe_search needs optuna: pip install 'mnms-env[baselines]'") from err
    if children_per_task < 0:
        raise ValueError(f"children_per_task must be >= 0, got {children_per_task}")
    base = env.unwrapped
    names = episode_tasks(env, tasks)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seeds = np.random.SeedSequence(seed).generate_state(len(names))
    studies = {
        name: optuna.create_study(
            study_name=f"tpe-{name}-seed{seed}",
            direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=int(s)),
        )
        for name, s in zip(names, seeds, strict=True)
    }
    for name, trials in (first_trials or {}).items():
        if name not in studies:
            raise ValueError(f"first_trials names task {name!r}, not one of {list(names)}")
        masks = base.masks_of(name)
        for k, indices in enumerate(trials):
            indices = [int(i) for i in indices]
            if len(indices) != len(base.space) or not all(
                0 <= i < masks.shape[1] and masks[step, i] for step, i in enumerate(indices)
            ):
                valid = [np.flatnonzero(row).tolist() for row in masks]
                raise ValueError(
                    f"first_trials[{name!r}][{k}] = {indices}: a trial is one valid option index "
                    f"per decision of {list(base.space.names)}; valid for {name!r}: {valid}"
                )
            studies[name].enqueue_trial(dict(zip(base.space.names, indices, strict=True)))
    history = []
    for episode in range(children_per_task * len(names)):
        name = names[episode % len(names)]
        trial = studies[name].ask()
        choose = _suggesting(trial, base.space)
        child, reward = play_episode(env, choose, seed=seed + episode, task=name)
        studies[name].tell(trial, reward)
        history.append(child)
    return history, studies


def _suggesting(trial: Any, space: SearchSpace) -> Callable[[int, np.ndarray], int]:
    """An episode's choices asked of `trial`: each decision categorical over its valid options."""
    return lambda step, mask: trial.suggest_categorical(
        space.decisions[step].name, np.flatnonzero(mask).tolist()
    )
