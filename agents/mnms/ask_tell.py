"""`MNMSAskTell`: the MNMS controller as an ask/tell search over anyone's objective, the core the
Ray Tune searcher and the Optuna sampler (`agents.integrations`) share.

```python
controller = MNMSAskTell({"lr": [1e-3, 1e-2, 1e-1], "layers": [1, 2, 3]}, tasks="my-net")
ticket, config = controller.ask()                 # {"lr": 0.01, "layers": 2}
controller.tell(ticket, train_and_validate(**config))   # None for a failed or pruned trial
controller.save("mnms.pt")
```

A space is categorical: each parameter one of its listed options, chosen one per LSTM step in
the order given. Float and integer ranges are not searched as such: list a grid of values.

The controller is a real `MNMS` agent, built on an env (`_SpaceEnv`) that only declares the
space's MNMS-v2 spaces, since the children are sampled outside any env (`MNMS.sample_episodes`)
and rewarded by the caller. So the learning rule (`MNMS.update`), checkpoints and transfer are
MNMS's own: a checkpoint of `mnms search` or `MNMS` on a space of the same option counts starts a
controller here, and one saved here starts `MNMS.load` on an env.

Several asks may be outstanding (concurrent trials) and told in any order: each keeps the
log-probabilities the policy gave it when asked, and an update runs whenever `batch_size`
rewards are in. A child asked before an earlier update is then off-policy, which the update's
clipped importance ratio corrects.
"""

from __future__ import annotations

import difflib
import math
import numbers
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from agents.mnms.agent import MNMS
from agents.mnms.checkpoint import (
    NewTaskInit,
    first_changed,
    option_texts,
    read_checkpoint,
    write_checkpoint,
)
from agents.mnms.config import NETWORK_SIZES, MNMSConfig
from agents.mnms.records import Episode, UpdateStats
from agents.mnms.replay import episodes_from_state, episodes_state
from mnms_env import SearchSpace

Space = Mapping[str, Iterable[Any]] | SearchSpace
"""`{name: [options, ...]}`, or a `SearchSpace` (its decisions' names and options)."""


def choices(space: Space) -> dict[str, tuple[Any, ...]]:
    """`space` as `{name: options}`, checked: at least one parameter, each named by a string
    and offering at least one option."""
    if isinstance(space, SearchSpace):
        return {d.name: d.options for d in space.decisions}
    example = "e.g. {'lr': [0.001, 0.01], 'layers': [1, 2, 3]}"
    if not isinstance(space, Mapping):
        raise TypeError(f"a search space is a dict of option lists ({example}), got {space!r}")
    if not space:
        raise ValueError(f"the search space is empty: give each parameter its options, {example}")
    out = {}
    for name, options in space.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"a parameter name must be a non-empty string, got {name!r}")
        if isinstance(options, str | bytes | Mapping) or not isinstance(options, Iterable):
            raise ValueError(f"parameter {name!r}: options must be a list, got {options!r}")
        out[name] = tuple(options)
        if not out[name]:
            raise ValueError(f"parameter {name!r} has no options")
    return out


def _set_fields(config: MNMSConfig) -> dict[str, Any]:
    """`config` as a checkpoint's overrides: every field, but the network's sizes only where they
    are not the defaults (a checkpoint's network keeps its own sizes; one set otherwise is
    checked against them)."""
    default = MNMSConfig()
    return {
        name: value
        for name, value in asdict(config).items()
        if name not in NETWORK_SIZES or value != getattr(default, name)
    }


def _every_option(space: Mapping[str, tuple[Any, ...]]) -> np.ndarray:
    """`(decisions, max_options)` masks marking every option of `space` valid."""
    sizes = np.array([len(options) for options in space.values()])
    return np.arange(sizes.max()) < sizes[:, None]


class _SpaceEnv(gym.Env):
    """The MNMS-v2 spaces of a search space, its task names and their masks (every option
    valid): all `MNMS` reads of an env to build its controller, since ask/tell never resets or
    steps it."""

    def __init__(self, space: Mapping[str, tuple[Any, ...]], tasks: Sequence[str]) -> None:
        sizes = np.array([len(options) for options in space.values()], dtype=np.int64)
        self.task_names = tuple(tasks)
        self.masks = _every_option(space)
        self.action_space = spaces.Discrete(int(sizes.max()))
        self.observation_space = spaces.Dict(
            {
                "task": spaces.Discrete(len(self.task_names)),
                "step": spaces.Discrete(len(sizes) + 1),
                "decisions": spaces.MultiDiscrete(sizes + 1),
            }
        )

    def masks_of(self, task: str) -> np.ndarray:
        return self.masks


class MNMSAskTell:
    """An MNMS controller over `space`, asked for configs and told their rewards (higher is
    better).

    `tasks` names the task embeddings it learns (one per objective; `ask(task)` picks one).
    Without `checkpoint` the controller starts from scratch (`config`, `seed`); with one, from
    that checkpoint's policy (its space must have the same option counts): each task it knows
    keeps its embedding, each new one starts as `new_task_init` says (`NEW_TASK_INITS`),
    the optimizer starts anew, `config` (if given) replaces the checkpoint's hyperparameters
    (its network's sizes stay the checkpoint's), and `seed` the sampling RNG; a task the
    checkpoint knows is warned about, as that continues its search rather than transferring.
    Every option of the space is valid for every task.
    """

    def __init__(
        self,
        space: Space,
        *,
        tasks: str | Sequence[str] = "default",
        config: MNMSConfig | None = None,
        seed: int = 0,
        checkpoint: str | Path | None = None,
        new_task_init: NewTaskInit = "random",
    ) -> None:
        names = (tasks,) if isinstance(tasks, str) else tuple(tasks)
        if not names or not all(isinstance(name, str) and name for name in names):
            raise ValueError(f"tasks must be one or more non-empty names, got {tasks!r}")
        checked = choices(space)
        env = _SpaceEnv(checked, names)
        if checkpoint is None:
            agent = MNMS(env, config, seed=seed)
        else:
            known = [n for n in names if n in read_checkpoint(checkpoint)["task_embeddings"]]
            if known:
                warnings.warn(
                    f"tasks {known} are the checkpoint's own: each keeps its learned embedding, "
                    "so this continues those searches; name a new objective's task (tasks=...) "
                    "to transfer to it",
                    stacklevel=2,
                )
            agent = MNMS.load(
                checkpoint,
                env,
                seed=seed,
                new_task_init=new_task_init,
                new_run=True,
                overrides=None if config is None else _set_fields(config),
            )
        self._attach(checked, agent, {})

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.agent.task_names

    def ask(self, task: str | None = None) -> tuple[int, dict[str, Any]]:
        """A config sampled from the policy for `task` (may be left out when there is one) and
        the ticket to tell its reward with."""
        (episode,) = self.agent.sample_episodes(self._task(task))
        ticket = self.next_ticket
        self.next_ticket += 1
        self.pending[ticket] = episode
        return ticket, self.config_of(episode.actions)

    def tell(self, ticket: int, reward: float | None) -> UpdateStats | None:
        """The reward of the config asked with `ticket`; None (a failed or pruned trial) drops
        it. Returns what the update did when this reward completed a batch, else None."""
        if reward is not None and not is_finite_reward(reward):
            raise ValueError(
                f"tell(ticket={ticket!r}): a reward is a finite number, or None for a failed "
                f"or pruned trial; got {reward!r}"
            )
        if ticket not in self.pending:
            outstanding = sorted(self.pending)
            raise ValueError(
                f"unknown ticket {ticket!r}: it was never asked or is already told; "
                f"outstanding tickets: {outstanding[:20]}{' ...' if len(outstanding) > 20 else ''}"
            )
        episode = self.pending.pop(ticket)
        if reward is None:
            return None
        self.told.append(replace(episode, reward=float(reward)))
        if len(self.told) < self.agent.config.batch_size:
            return None
        batch, self.told = self.told, []
        return self.agent.update(batch)

    def greedy(self, task: str | None = None) -> dict[str, Any]:
        """The config the policy finds most likely for `task`, option by option."""
        name = self._task(task)
        return self.config_of(self.agent.sample_decisions(name, deterministic=True)[0])

    def config_of(self, indices: Sequence[int]) -> dict[str, Any]:
        """The config of one option index per parameter."""
        return {
            name: options[int(i)]
            for (name, options), i in zip(self.space.items(), indices, strict=True)
        }

    def save(self, path: str | Path) -> None:
        """Write the controller to `path` in `MNMS`'s checkpoint format (the history file beside
        it), with the outstanding asks and the told children not yet learned from."""
        extra = {
            "space": list(self.space),
            "options": option_texts(self.space.items()),
            "next_ticket": self.next_ticket,
            "tickets": list(self.pending),
            "pending": episodes_state(list(self.pending.values())),
            "told": episodes_state(self.told),
        }
        write_checkpoint(self.agent, path, extra=extra)

    @classmethod
    def load(cls, path: str | Path, space: Space) -> MNMSAskTell:
        """The controller saved at `path` (or an `MNMS` checkpoint, on its own tasks), resumed
        exactly: weights, optimizer, baselines, replay, RNG, history and outstanding asks.
        `space` must be the one it was saved with, names and options (a transfer, `checkpoint=`
        when constructing, needs only the same option counts)."""
        state = read_checkpoint(path)
        asks = state.get("extra", {})
        checked = choices(space)
        # An `MNMS` checkpoint keeps its env's options (absent from ones written before them).
        options = asks.get("options", state.get("options"))
        named = [name for name, _ in options] if options is not None else list(checked)
        saved = asks.get("space", named)
        if saved != list(checked):
            raise ValueError(f"{path} was saved over parameters {saved}; got {list(checked)}")
        given = option_texts(checked.items())
        if options is not None and options != given:
            (name, was), (_, now) = first_changed(options, given)
            raise ValueError(
                f"{path} was saved with parameter {name!r} options {was}; got {now}: each "
                "learned preference would point at another option"
            )
        controller = cls.__new__(cls)
        controller._attach(checked, MNMS.load(path, _SpaceEnv(checked, state["task_names"])), asks)
        return controller

    def _attach(self, space: dict[str, tuple[Any, ...]], agent: MNMS, asks: dict) -> None:
        """Take `agent` over `space`, with the asks of a checkpoint's `extra` (`save`), if any."""
        self.space = space
        """`{name: options}`, decided in this order."""
        self.agent = agent
        none = episodes_state([])
        pending = episodes_from_state(asks.get("pending", none))
        self.pending: dict[int, Episode] = dict(zip(asks.get("tickets", []), pending, strict=True))
        """The children asked and not yet told, by ticket (their reward is NaN)."""
        self.told: list[Episode] = episodes_from_state(asks.get("told", none))
        """Children told since the last update: the next update's fresh batch."""
        self.next_ticket: int = asks.get("next_ticket", 0)
        agent.task_masks = dict.fromkeys(agent.task_names, _every_option(space))

    def _task(self, task: str | None) -> str:
        if task is None:
            if len(self.tasks) > 1:
                raise ValueError(f"name the task: this controller has {list(self.tasks)}")
            return self.tasks[0]
        if task not in self.tasks:
            close = difflib.get_close_matches(str(task), self.tasks, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"unknown task {task!r}; this controller's tasks: {list(self.tasks)}{hint}"
            )
        return task


def as_reward(value: object) -> float | None:
    """`value` as a float reward where it is one finite number: a Python or numpy number, or a
    0-d array or tensor (what a training loop often reports); else None."""
    if getattr(value, "shape", None) == () and hasattr(value, "item"):
        value = value.item()
    return float(value) if is_finite_reward(value) else None


def is_finite_reward(value: object) -> bool:
    """Whether `value` can be a reward: a finite real number, and not a bool (which Python
    counts as one)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
