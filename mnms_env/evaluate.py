"""The `Evaluator` interface: child requests in, measured results out.

Everything above this module (environments, agents, benchmarks) sees children only through
`Evaluator.evaluate`, so how children are trained (one by one, batched on a GPU, or looked up) can
change without touching the search. `evaluate_cached` puts a `ResultStore` in front of any
evaluator.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from mnms_env.child import ChildResult, check_precision, resolve_device, train_child
from mnms_env.features import Features, featurize
from mnms_env.space import ChildConfig
from mnms_env.store import ResultStore
from mnms_env.tasks import Task, make_task


@dataclass(frozen=True)
class ChildRequest:
    """Train `config` on `task` (a registered name) with `seed`, for `budget` epochs."""

    task: str
    config: ChildConfig
    seed: int = 0
    budget: int = 1

    def __post_init__(self) -> None:
        check_budget(self.budget)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}")


def check_budget(budget: object) -> int:
    """A budget is a whole number of training epochs, at least 1."""
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
        raise ValueError(f"budget is a number of epochs, an int >= 1; got {budget!r}")
    return budget


class Evaluator(ABC):
    """Trains (or otherwise answers) child requests.

    `evaluate` answers a list at once. `stream` yields `(index, result)` pairs as children
    finish; `evaluate_cached` (so every environment) uses it to store each child as it
    finishes, so an interrupted call keeps the children it had trained. By default `stream`
    yields everything once `evaluate` returns; the built-in trainers, which finish children one
    or one group at a time, derive from `TrainingEvaluator` instead. A subclass that overrides
    `evaluate` but not `stream` (a wrapper that counts or logs calls, say) is called through
    its `evaluate`.
    """

    @abstractmethod
    def evaluate(self, requests: Sequence[ChildRequest]) -> list[ChildResult]:
        """One result per request, in order. Never raises for a child that diverges."""

    def stream(self, requests: Sequence[ChildRequest]) -> Iterator[tuple[int, ChildResult]]:
        """`(index into requests, result)` for every request, each as soon as it is known."""
        yield from enumerate(self.evaluate(requests))


class TrainingEvaluator(Evaluator):
    """An evaluator that finishes children one at a time or a group at a time: subclasses
    implement `_stream`, which both `evaluate` and `stream` call (neither calls the other, so
    a subclass may override either in terms of the other)."""

    def evaluate(self, requests: Sequence[ChildRequest]) -> list[ChildResult]:
        results: list[ChildResult | None] = [None] * len(requests)
        for i, result in self._stream(requests):
            results[i] = result
        return results  # type: ignore[return-value]

    def stream(self, requests: Sequence[ChildRequest]) -> Iterator[tuple[int, ChildResult]]:
        return self._stream(requests)

    @abstractmethod
    def _stream(self, requests: Sequence[ChildRequest]) -> Iterator[tuple[int, ChildResult]]:
        """`(index into requests, result)` pairs, each as its child is trained."""


def _pairs(evaluator: Evaluator, requests: list[ChildRequest]) -> Iterator[tuple[int, ChildResult]]:
    """`evaluator.stream(requests)`, unless `evaluate` is overridden in a subclass of the class
    that defines the `stream` it inherits: then through `evaluate`, which that override must
    see (and which may itself call `stream`)."""
    mro = type(evaluator).__mro__
    evaluate_owner = next(c for c in mro if "evaluate" in vars(c))
    stream_owner = next(c for c in mro if "stream" in vars(c))
    if evaluate_owner is not stream_owner and issubclass(evaluate_owner, stream_owner):
        return enumerate(evaluator.evaluate(requests))
    return evaluator.stream(requests)


_FEATURES: dict[tuple[str, str, int], Features] = {}  # the last few, in insertion order


def task_features(task: Task, representation: str, size: int) -> Features:
    """Features of `task`, memoised in-process on top of the disk cache. Keyed by the task's
    fingerprint, not its name: a task whose data changed (an edited file, a re-registered
    source, another `MNMS_DATA_DIR`) gets new features rather than the old ones."""
    key = (task.fingerprint, representation, size)
    if key not in _FEATURES:
        if len(_FEATURES) >= 16:
            del _FEATURES[next(iter(_FEATURES))]
        _FEATURES[key] = featurize(task, representation, size)
    return _FEATURES[key]


class SequentialEvaluator(TrainingEvaluator):
    """The reference: trains each child alone with `train_child`, one after another.
    `precision="bf16"` runs matrix products in bfloat16 (see `child.compute_precision`)."""

    def __init__(
        self, *, device: str | torch.device | None = None, precision: str = "fp32"
    ) -> None:
        self.device = resolve_device(device)
        self.precision = check_precision(precision, self.device)

    def _stream(self, requests: Sequence[ChildRequest]) -> Iterator[tuple[int, ChildResult]]:
        for i, request in enumerate(requests):
            task = make_task(request.task)
            config = request.config
            features = task_features(task, config.representation, config.representation_size)
            labels = (task.train.y, task.validation.y, task.test.y)
            yield (
                i,
                train_child(
                    config,
                    features,
                    labels,
                    task.num_classes,
                    budget=request.budget,
                    seed=request.seed,
                    device=self.device,
                    precision=self.precision,
                ),
            )


def evaluate_cached(
    evaluator: Evaluator, store: ResultStore | None, requests: Sequence[ChildRequest]
) -> list[tuple[ChildResult, bool]]:
    """Answer each request from `store` when it holds it, else train it and record it.

    Returns `(result, cached)` pairs in request order. All misses go to the evaluator in one
    `stream` call, each distinct request once, and each is recorded as soon as it is trained: an
    interrupted call loses only the children still training. A request repeated within the
    list is trained once and its later copies are reported as cached.
    """
    keys = [
        ResultStore.key(r.task, make_task(r.task).fingerprint, r.config, r.seed, r.budget)
        for r in requests
    ]
    stored = {key: store.get(key) for key in set(keys)} if store is not None else {}
    todo = {key: r for key, r in zip(keys, requests, strict=True) if stored.get(key) is None}
    fresh: dict[str, ChildResult] = {}
    misses = list(todo.items())
    for i, result in _pairs(evaluator, [r for _, r in misses]) if misses else ():
        key, request = misses[i]
        if store is not None:  # the stored result: another process may have stored it first
            result = store.put(
                key, request.task, request.config, request.seed, request.budget, result
            )
        fresh[key] = result
    if len(fresh) != len(misses):
        raise RuntimeError(
            f"{type(evaluator).__name__} answered {len(fresh)} of {len(misses)} requests"
        )
    results = {**stored, **fresh}
    answers: list[tuple[ChildResult, bool]] = []
    for key in keys:
        answers.append((results[key], key not in fresh))  # type: ignore[arg-type]
        fresh.pop(key, None)  # a repeat of a just-trained request is answered as cached
    return answers
