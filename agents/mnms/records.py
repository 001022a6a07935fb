"""What the agent records: `ChildRecord` (a finished child, kept in the history and checkpoint),
`UpdateStats` (what one update did, for logging) and `Episode` (a child with what training on it
needs, kept in the replay bank)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mnms_env import Child


@dataclass(frozen=True)
class ChildRecord:
    """One finished episode: the child the controller designed and the reward it got."""

    update: int
    """Index of the update whose batch sampled it."""
    task: str
    decisions: tuple[int, ...]
    """Option index chosen at each decision."""
    reward: float
    child: Child | None
    """The child the env reported in `info["child"]` (request, result, `cached`), if it gave one."""

    def to_dict(self) -> dict[str, Any]:
        """Plain values (the child as `Child.to_info()`), as checkpoints store it."""
        child = None if self.child is None else self.child.to_info()
        return {**asdict(self), "decisions": list(self.decisions), "child": child}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChildRecord:
        child = None if data["child"] is None else Child.from_info(data["child"])
        return cls(**{**data, "decisions": tuple(data["decisions"]), "child": child})


@dataclass(frozen=True)
class UpdateStats:
    """What one update did, for logging (`losses/...`, `charts/...`)."""

    update: int
    num_children: int
    """Children sampled so far, this update's included."""
    children: tuple[ChildRecord, ...]
    """This update's fresh children."""
    policy_loss: float
    entropy: float
    """Mean entropy per decision of the trained batch (before the last gradient step)."""
    approx_kl: float
    clip_fraction: float
    """Fraction of decisions whose importance ratio was outside the clip range."""
    grad_norm: float
    """Gradient norm before clipping, at the last gradient step."""
    replayed: int
    baselines: dict[str, float]


@dataclass
class Episode:
    """A child with what training needs: behaviour log-probabilities and the masks it saw."""

    task: str
    actions: np.ndarray
    """`(decisions,)` int64."""
    masks: np.ndarray
    """`(decisions, num_actions)` bool."""
    logp: np.ndarray
    """`(decisions,)` float32: log mu(a_i | ...) under the policy that sampled it."""
    reward: float
    child: Child | None = field(default=None, repr=False)
