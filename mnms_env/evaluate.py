"""The `Evaluator` protocol: child requests in, measured results out, as children finish.

Everything above this module (environments, agents, benchmarks) sees children only through an
`Evaluator`, so how children are trained (one by one, batched on a GPU, looked up in a table)
can change without touching the search. An evaluator implements one method, `stream`; `evaluate`
is a helper on top of it. Caching is a wrapper: `CachedEvaluator(evaluator, store)` answers what
a `ResultStore` holds and records each newly trained child the moment it finishes, as Optuna's
`_CachedStorage` wraps a storage.

An evaluator that trains gets its task lookup when it is built (`tasks=`, `make_task` by
default) and reads a request's task through `task_of`, which refuses data whose fingerprint is
not the request's.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from typing import TypeVar

import torch

from mnms_env.child import check_precision, resolve_device, train_child
from mnms_env.features import Features, featurize
from mnms_env.records import Child, ChildRequest, ChildResult, is_whole
from mnms_env.store import ResultStore
from mnms_env.tasks import Task, TaskError, make_task

TaskLookup = Callable[[str], Task]
"""How an evaluator finds a request's task by name (`make_task`, or a user's own mapping's
`__getitem__`)."""


class Evaluator(ABC):
    """Trains (or otherwise answers) child requests."""

    @abstractmethod
    def stream(self, requests: Sequence[ChildRequest]) -> Iterator[tuple[int, ChildResult]]:
        """`(index into requests, result)` once for every request, each as soon as its child
        is done, in any order. Never raises for a child that diverges (its result says so)."""

    def evaluate(self, requests: Sequence[ChildRequest]) -> list[ChildResult]:
        """One result per request, in request order: `stream`, collected."""
        return in_order(self.stream(requests), len(requests), f"{type(self).__name__}.stream")


Answer = TypeVar("Answer")


def in_order(pairs: Iterable[tuple[int, Answer]], n: int, source: str) -> list[Answer]:
    """The answers of `(index, answer)` pairs in index order, one for each of `n` requests;
    an index out of range, answered twice or never is refused, naming `source`."""
    answers: dict[int, Answer] = {}
    for i, answer in pairs:
        answers[check_index(i, n, answers, source)] = answer
    if len(answers) != n:
        missing = sorted(set(range(n)) - set(answers))
        raise RuntimeError(
            f"{source} answered {len(answers)} of {n} requests (none for indices {missing[:5]})"
        )
    return [answers[i] for i in range(n)]


def check_index(i: object, n: int, answered: Container[int], source: str) -> int:
    """Request index `i` as an int (a numpy one is taken); refused if out of range or a
    repeat."""
    if not is_whole(i) or not 0 <= i < n or int(i) in answered:
        problem = "twice" if is_whole(i) and int(i) in answered else f"outside 0..{n - 1}"
        raise RuntimeError(f"{source} answered request index {i!r} {problem}")
    return int(i)


def check_lookup(tasks: object) -> TaskLookup:
    """An evaluator's `tasks=`, refused at once if it is not callable (a mapping failed only at
    its first child)."""
    if not callable(tasks):
        hint = ": pass its __getitem__" if isinstance(tasks, Mapping) else ""
        raise TypeError(
            f"tasks= looks a task up by name (make_task, or a mapping's __getitem__), got "
            f"{type(tasks).__name__}{hint}"
        )
    return tasks


def task_of(lookup: TaskLookup, request: ChildRequest) -> Task:
    """The task `request` is for, from `lookup`, refused if its data is not the request's."""
    task = lookup(request.task)
    if task.fingerprint != request.fingerprint:
        raise TaskError(
            f"task {request.task!r}: the request was made for data with fingerprint "
            f"{request.fingerprint}, but the evaluator's task has {task.fingerprint} (the data "
            "changed since, or the evaluator looks tasks up elsewhere); make the request again "
            "from the task as it is now"
        )
    return task


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


def train_request(
    request: ChildRequest, task: Task, device: torch.device, precision: str
) -> ChildResult:
    """`train_child` on what `request` asks of `task`: the reference training of one child."""
    config = request.config
    return train_child(
        config,
        task_features(task, config.representation, config.representation_size),
        (task.train.y, task.validation.y, task.test.y),
        task.num_classes,
        budget=request.budget,
        seed=request.seed,
        device=device,
        precision=precision,
    )


class SequentialEvaluator(Evaluator):
    """The reference: trains each child alone with `train_child`, one after another.
    `precision="bf16"` runs matrix products in bfloat16 (see `child.compute_precision`)."""

    def __init__(
        self,
        *,
        device: str | torch.device | None = None,
        precision: str = "fp32",
        tasks: TaskLookup = make_task,
    ) -> None:
        self.device = resolve_device(device)
        self.precision = check_precision(precision, self.device)
        self.tasks = check_lookup(tasks)

    def stream(self, requests: Sequence[ChildRequest]) -> Iterator[tuple[int, ChildResult]]:
        for i, request in enumerate(requests):
            task = task_of(self.tasks, request)
            yield i, train_request(request, task, self.device, self.precision)


class CachedEvaluator(Evaluator):
    """`evaluator` behind the results store `store`.

    A request the store holds is answered from it; the others go to `evaluator` in one `stream`
    call, each distinct request once, and each result is stored the moment it arrives, so an
    interrupted call loses only the children still training. A request repeated within one call
    is trained once. The store keeps the first result of a request, so when two processes train
    the same child both report the one stored first. With `store=None` nothing outlives the
    call (repeats within it are still trained once).
    """

    def __init__(self, evaluator: Evaluator, store: ResultStore | None) -> None:
        if store is not None and not isinstance(store, ResultStore):
            raise TypeError(
                f"store must be a ResultStore or None, got {store!r}; open a file as "
                "ResultStore(path)"
            )
        self.evaluator = evaluator
        self.store = store

    def stream(self, requests: Sequence[ChildRequest]) -> Iterator[tuple[int, ChildResult]]:
        for i, child in self.stream_children(requests):
            yield i, child.result

    def children(self, requests: Sequence[ChildRequest]) -> list[Child]:
        """A `Child` per request, in request order."""
        return in_order(self.stream_children(requests), len(requests), type(self).__name__)

    def stream_children(self, requests: Sequence[ChildRequest]) -> Iterator[tuple[int, Child]]:
        """`(index, Child)` for every request: the stored ones first, then each trained one as
        it finishes. `cached` is False only for the first copy of a request trained here."""
        positions: dict[ChildRequest, list[int]] = defaultdict(list)
        for i, request in enumerate(requests):
            positions[request].append(i)
        misses = []
        for request, where in positions.items():
            stored = self.store.get(request) if self.store is not None else None
            if stored is None:
                misses.append(request)
                continue
            for i in where:
                yield i, Child(request, stored, cached=True)
        source = f"{type(self.evaluator).__name__}.stream"
        answered: set[int] = set()
        for k, result in self.evaluator.stream(misses) if misses else ():
            k = check_index(k, len(misses), answered, source)
            answered.add(k)
            request = misses[k]
            if self.store is not None:  # the stored result: another process may have been first
                result = self.store.put(request, result)
            first, *repeats = positions[request]
            yield first, Child(request, result, cached=False)
            for i in repeats:
                yield i, Child(request, result, cached=True)
        if len(answered) != len(misses):
            raise RuntimeError(f"{source} answered {len(answered)} of {len(misses)} requests")
