"""`MNMSConfig`: the hyperparameters of the controller and its learning rule, checked when made."""

from __future__ import annotations  # the field kind check reads annotations as strings

import math
import numbers
from dataclasses import dataclass, fields

import numpy as np

NETWORK_SIZES = ("decision_embedding", "task_embedding", "hidden_size")
"""The `MNMSConfig` fields that shape the controller's weights: a checkpoint's network keeps
them."""

_KINDS = {  # a config field's annotation: (accepted values, stored as, what an error says)
    "int": (numbers.Integral, int, "a whole number"),
    "float": (numbers.Real, float, "a number"),
    "bool": ((bool, np.bool_), bool, "True or False"),
}


@dataclass(frozen=True)
class MNMSConfig:
    """Hyperparameters of the controller and its learning rule."""

    decision_embedding: int = 16
    """Size of the embedding of the previous decision, the per-step part of the LSTM input."""
    task_embedding: int = 16
    """Size of each task's learned embedding, fed with every LSTM input."""
    hidden_size: int = 64
    """LSTM units."""
    learning_rate: float = 3e-3
    """Adam step size."""
    batch_size: int = 8
    """Children sampled per update (rounded up to whole rounds of a vector env's sub-envs)."""
    baseline_decay: float = 0.9
    """Decay of the per-task baseline b(t), an exponential moving average of task t's rewards."""
    baseline_floor: float = 0.01
    """Lower bound on |b(t)| in A' = (R - b(t)) / |b(t)|, so a task whose children all score ~0
    does not divide by ~0."""
    entropy_coef: float = 0.01
    """Weight of the entropy bonus (summed over decisions) that keeps the policy exploring."""
    max_grad_norm: float = 1.0
    """Gradients are clipped to this global norm."""
    update_epochs: int = 4
    """Gradient steps per update on the fresh batch plus replayed children. With 1 step and no
    replay the update is plain REINFORCE."""
    clip_ratio: float = 0.2
    """PPO clip range: importance ratios pi/mu outside [1 - clip, 1 + clip] give no gradient in
    the direction that would push them further."""
    replay: bool = True
    """Train on off-policy replayed children too (the paper's remedy for tasks collapsing into one
    policy). False: on-policy only."""
    replay_capacity: int = 2000
    """Children kept in the replay bank (all tasks together); the oldest are dropped first."""
    replay_batch: int = 32
    """Replayed children added to each update's batch, drawn uniformly from the bank."""
    task_init_std: float = 1.0
    """Standard deviation of a task embedding's random initialisation (also for tasks added at
    transfer time)."""
    temperature: float = 1.0
    """Softmax temperature of every decision. Below 1 the policy samples its preferred options
    more often: an exploit-first start for a transferred controller (`MNMS.load(...,
    overrides={"temperature": 0.5})`). Sampling and learning both use the tempered policy."""

    def __post_init__(self) -> None:
        for f in fields(self):  # numpy numbers are accepted and stored as Python ones
            value = getattr(self, f.name)
            accepted, cast, wanted = _KINDS[f.type]
            is_bool = isinstance(value, bool | np.bool_)
            if not isinstance(value, accepted) or is_bool != (f.type == "bool"):
                raise ValueError(f"MNMSConfig.{f.name} must be {wanted}, got {value!r}")
            object.__setattr__(self, f.name, cast(value))
            unbounded = f.name == "max_grad_norm" and value == math.inf  # inf: no clipping
            if f.type == "float" and not (math.isfinite(value) or unbounded):
                raise ValueError(f"MNMSConfig.{f.name} must be a finite number, got {value!r}")
        positive = (
            "decision_embedding",
            "task_embedding",
            "hidden_size",
            "batch_size",
            "update_epochs",
            "replay_capacity",
            "learning_rate",
            "baseline_floor",
            "max_grad_norm",
            "task_init_std",
            "temperature",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"MNMSConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.baseline_decay < 1.0:
            raise ValueError(
                f"MNMSConfig.baseline_decay must be in [0, 1), got {self.baseline_decay}"
            )
        if not 0.0 < self.clip_ratio < 1.0:
            raise ValueError(f"MNMSConfig.clip_ratio must be in (0, 1), got {self.clip_ratio}")
        if self.entropy_coef < 0 or self.replay_batch < 0:
            raise ValueError(
                "MNMSConfig.entropy_coef and replay_batch must be >= 0, got "
                f"{self.entropy_coef} and {self.replay_batch}"
            )
