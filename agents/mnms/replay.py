"""`ReplayBank`: the children kept for off-policy training, shared by all tasks, and their
checkpoint form."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from agents.mnms.records import Episode


class ReplayBank:
    """A FIFO bank of (task, decisions, masks, behaviour log-probabilities, reward), shared by
    all tasks (MNMS's off-policy multitask replay)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.episodes: list[Episode] = []

    def __len__(self) -> int:
        return len(self.episodes)

    def add(self, episodes: Sequence[Episode]) -> None:
        self.episodes.extend(episodes)
        self._trim()

    def _trim(self) -> None:
        """Keep the newest `capacity` entries."""
        del self.episodes[: max(0, len(self.episodes) - self.capacity)]

    def sample(self, n: int, rng: np.random.Generator) -> list[Episode]:
        if n == 0 or not self.episodes:
            return []
        picks = rng.choice(len(self.episodes), size=min(n, len(self.episodes)), replace=False)
        return [self.episodes[i] for i in picks]

    def state_dict(self) -> dict[str, Any]:
        return episodes_state(self.episodes)

    def load_state_dict(self, state: dict[str, Any], keep: Callable[[str], bool]) -> None:
        """Restore the entries whose task `keep` accepts (a transferred agent drops the tasks
        its new env lacks), the newest `capacity` of them (a load may lower the capacity)."""
        self.episodes = episodes_from_state(state, keep)
        self._trim()


def episodes_state(episodes: Sequence[Episode]) -> dict[str, Any]:
    """`episodes` as tensors and plain values, the checkpoint form (`weights_only` loads it);
    their children are left out."""
    if not episodes:
        return {"tasks": []}
    return {
        "tasks": [e.task for e in episodes],
        "actions": torch.as_tensor(np.stack([e.actions for e in episodes])),
        "masks": torch.as_tensor(np.stack([e.masks for e in episodes])),
        "logp": torch.as_tensor(np.stack([e.logp for e in episodes])),
        "rewards": torch.as_tensor([e.reward for e in episodes], dtype=torch.float64),
    }


def episodes_from_state(
    state: dict[str, Any], keep: Callable[[str], bool] = lambda task: True
) -> list[Episode]:
    """The episodes of `episodes_state`'s form whose task `keep` accepts, in order."""
    out = []
    for i, task in enumerate(state["tasks"]):
        if keep(task):
            actions, masks, logp = (state[k][i].numpy() for k in ("actions", "masks", "logp"))
            out.append(Episode(task, actions, masks, logp, float(state["rewards"][i])))
    return out
