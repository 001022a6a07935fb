"""What flows through an evaluator: a `ChildRequest` in, a `ChildResult` out, and the `Child`
that joins them.

A `Child` is the one record of a trained (or store-answered) child everywhere above the
evaluator: the env's `info["child"]`, the agents' histories and the benchmarks' saved runs are
its `to_info()` form, read back with `Child.from_info`. The results store keeps the
`ChildResult` of each request (`mnms_env.store`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, get_type_hints

import numpy as np

from mnms_env.space import ChildConfig
from mnms_env.tasks import Task, TaskCard, make_task

SEED_LIMIT = 2**32
"""Child seeds are below this: the trainers derive generator seeds from them (the batched
one's dropout stream as `seed * 1_000_003 + k`), which must fit in 64 bits."""


def is_whole(value: object) -> bool:
    """Whether `value` is a whole number: a Python or numpy integer, and not a bool (which
    Python counts as one)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_budget(budget: object) -> int:
    """A budget is a whole number of training epochs, at least 1."""
    if not is_whole(budget) or budget < 1:
        raise ValueError(f"budget is a number of epochs, an int >= 1; got {budget!r}")
    return int(budget)


@dataclass(frozen=True)
class ChildRequest:
    """Train `config` on `task` with `seed`, for `budget` epochs.

    `fingerprint` is the task's data fingerprint (`Task.fingerprint`): an evaluator looks the
    task up by name and refuses data that has changed since the request was made, and the
    results store keys the result by it. `ChildRequest.for_task` fills it in.
    """

    task: str
    config: ChildConfig
    seed: int = 0
    budget: int = 1
    fingerprint: str = field(kw_only=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "budget", check_budget(self.budget))
        seed = self.seed
        if not is_whole(seed) or not 0 <= seed < SEED_LIMIT:
            raise ValueError(f"seed must be an int in [0, 2**32), got {seed!r}")
        object.__setattr__(self, "seed", int(seed))
        if not isinstance(self.config, ChildConfig):
            raise TypeError(
                f"config must be a ChildConfig, got {type(self.config).__name__} {self.config!r}"
            )
        if not isinstance(self.fingerprint, str) or not self.fingerprint:
            raise ValueError(
                f"fingerprint must be the task's Task.fingerprint, got {self.fingerprint!r}; "
                "ChildRequest.for_task(task, config, ...) fills it in"
            )

    @classmethod
    def for_task(
        cls, task: Task | TaskCard | str, config: ChildConfig, *, seed: int = 0, budget: int = 1
    ) -> ChildRequest:
        """The request to train `config` on `task`: a `Task` or its card, or a name for
        `make_task`."""
        task = make_task(task) if isinstance(task, str) else task
        return cls(task.name, config, seed, budget, fingerprint=task.fingerprint)


@dataclass(frozen=True)
class ChildResult:
    """What training one child measured. Accuracies are fractions in [0, 1]."""

    val_accuracy: float
    test_accuracy: float
    seconds: float
    parameters: int
    device: str
    """Where it trained: `"cpu"`, `"cuda:0"`, ...; `"cpu bf16"` when matrix products ran in
    bfloat16 (`precision="bf16"`); `"table"` when looked up."""
    diverged: bool
    best_epoch: int
    """Epoch (1-based) whose weights gave `val_accuracy`; 0 if no epoch finished."""

    def __post_init__(self) -> None:
        # numpy numbers (an evaluator's np.float32 accuracy, say) become plain ones: the store
        # and JSON would otherwise keep them as bytes or refuse them
        for name, kind in _RESULT_TYPES.items():
            value = getattr(self, name)
            if type(value) is not kind:  # the usual case costs one comparison
                object.__setattr__(self, name, _plain(name, kind, value))
        for name in ("val_accuracy", "test_accuracy"):
            if not 0.0 <= getattr(self, name) <= 1.0:  # NaN fails too
                raise ValueError(
                    f"ChildResult.{name} is a fraction in [0, 1], got {getattr(self, name)!r}"
                )
        if not (math.isfinite(self.seconds) and self.seconds >= 0):
            raise ValueError(f"ChildResult.seconds must be finite and >= 0, got {self.seconds!r}")
        if self.parameters < 0 or self.best_epoch < 0:
            raise ValueError(
                "ChildResult.parameters and best_epoch must be >= 0, got "
                f"{self.parameters!r} and {self.best_epoch!r}"
            )


RESULT_FIELDS = tuple(f.name for f in fields(ChildResult))
_RESULT_TYPES: dict[str, type] = get_type_hints(ChildResult)
"""Each `ChildResult` field's type, to store numpy values as plain ones."""
_ACCEPTED = {float: numbers.Real, int: numbers.Integral, bool: (bool, np.bool_), str: str}


def _plain(name: str, kind: type, value: object) -> object:
    is_bool = isinstance(value, bool | np.bool_)
    if kind is bool and value in (0, 1) and isinstance(value, numbers.Integral):
        return bool(value)  # SQLite's 0/1 (`ResultStore.rows()`)
    if not isinstance(value, _ACCEPTED[kind]) or (is_bool and kind is not bool):
        raise ValueError(
            f"ChildResult.{name} must be {kind.__name__}, got {type(value).__name__} {value!r}"
        )
    return kind(value)


INFO_KEYS = ("task", "fingerprint", "config", "seed", "budget", *RESULT_FIELDS, "cached")
"""The keys of `Child.to_info()`."""


@dataclass(frozen=True)
class Child:
    """One answered request: what was asked, what training measured, and whether the answer
    came without training in this call (from the results store, or a repeat of a request
    earlier in the same call)."""

    request: ChildRequest
    result: ChildResult
    cached: bool = False

    def to_info(self) -> dict[str, Any]:
        """The env's `info["child"]`: the request, the result and `cached` as one flat dict of
        plain (JSON-serialisable) values."""
        request = self.request
        return {
            "task": request.task,
            "fingerprint": request.fingerprint,
            "config": asdict(request.config),
            "seed": request.seed,
            "budget": request.budget,
            **asdict(self.result),
            "cached": self.cached,
        }

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> Child:
        """The inverse of `to_info` (also of a vector env's unbatched `info["child"]`)."""
        missing = [key for key in INFO_KEYS if key not in info]
        if missing:
            raise ValueError(
                f"info['child'] lacks {missing}; a Child reads what Child.to_info() writes: "
                f"{list(INFO_KEYS)}"
            )
        request = ChildRequest(
            info["task"],
            ChildConfig(**info["config"]),
            int(info["seed"]),
            int(info["budget"]),
            fingerprint=info["fingerprint"],
        )
        result = ChildResult(**{k: info[k] for k in RESULT_FIELDS})
        return cls(request, result, bool(info["cached"]))
