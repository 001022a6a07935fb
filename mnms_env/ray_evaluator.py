"""`RayEvaluator`: each child trained as a Ray task, on a cluster or on this machine.

One task trains one child with the reference trainer (a `SequentialEvaluator` in the worker), so
a result equals `SequentialEvaluator`'s on the same request and device, and Ray schedules,
retries and cancels children one by one: a worker that dies costs the training of its own child
only. (A batched group per task would be lost and retried whole, and its results would match
the reference only up to float rounding.)

A task carries the request, which names its task and fingerprint; the worker looks the task up
with the evaluator's task lookup (sent once per call through Ray's object store) and featurizes
it itself, refusing data whose fingerprint is not the request's. With the default lookup, the
package's own tasks are looked up by name and a task only the driver knows (registered at run
time, or a file path, relative to the driver's folder and perhaps on its disk alone) travels
as the driver's data. Features are not sent: they are
large (a sparse matrix per split, tens of MB for hashed text) and cheap to compute beside
training, and each worker process keeps them in memory (and its node in its disk cache,
`MNMS_CACHE_DIR`), so a worker featurizes each (task, representation, size) once.

The evaluator holds no results store and sends none: `CachedEvaluator(RayEvaluator(), store)`
records each child in the driver as its result arrives, so workers never open the SQLite file.
"""

from __future__ import annotations

import math
import numbers
import os
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mnms_env.child import check_precision
from mnms_env.evaluate import Evaluator, SequentialEvaluator, TaskLookup, check_lookup
from mnms_env.features import MissingExtraError
from mnms_env.records import ChildRequest, ChildResult, is_whole
from mnms_env.tasks import Task, make_task, shipped_task

INSTALL = "pip install 'mnms-env[ray]'"


REACH_SECONDS = 10.0
"""How long `check_reachable` waits for a cluster's head to accept a connection."""


def check_reachable(address: str) -> None:
    """Raise `ConnectionError` unless the head at `"HOST:PORT"` (or `"ray://HOST:PORT"`)
    accepts a TCP connection: `ray.init` retries an unreachable address for minutes, so a typo
    would look like a hang. `"auto"`, `"local"` and other schemes (a provider's
    `"anyscale://..."`) are left to Ray."""
    scheme, _, rest = address.rpartition("://")
    if address in ("auto", "local") or scheme not in ("", "ray"):
        return
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        raise ConnectionError(f"Ray address {address!r} is not HOST:PORT, 'auto' or 'local'")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=REACH_SECONDS).close()
    except OSError as err:
        raise ConnectionError(f"nothing accepts connections at {address!r}: {err}") from err


def import_ray() -> Any:
    """The `ray` module, or an error naming the extra that installs it."""
    try:
        import ray
    except ImportError as err:
        raise MissingExtraError(f"RayEvaluator needs the package 'ray': {INSTALL}") from err
    return ray


class RayEvaluator(Evaluator):
    """Trains each child request as a Ray task that reserves `num_cpus` CPUs and `num_gpus`
    GPUs (a fraction shares one GPU between children); it trains on the GPU when `num_gpus` > 0,
    else on the CPU with `num_cpus` intra-op threads. Results arrive as children finish.

    `address` is where the first call connects: `"HOST:PORT"`, `"auto"` (the cluster `ray
    start` started on this machine, as `ray.init` finds it), or None: `$RAY_ADDRESS`, else a
    new local cluster. (None does not look for a running cluster as `ray.init()` does: Ray
    finds it through a file that a cluster which died leaves behind, and then waits for it
    for minutes.) A process already connected to Ray (by its own `ray.init`) trains there,
    whatever `address` says. `close()` ends only a connection this evaluator made, and with it
    a local cluster it started.

    A child whose worker or node dies is run again up to `max_retries` times (Ray's task
    retries); an error of the child itself (a stale fingerprint, an unknown option) is raised at
    once. Each request is answered once. An exception in the consumer, closing the stream, or
    Ctrl-C cancels the children still outstanding. Options registered at run time
    (`register_featurizer`, ...) must be registered in the workers too, e.g. by Ray's
    `worker_process_setup_hook`; tasks need not be (they travel as the driver's data).
    """

    def __init__(
        self,
        *,
        address: str | None = None,
        num_cpus: float = 1,
        num_gpus: float = 0,
        max_retries: int = 3,
        precision: str = "fp32",
        tasks: TaskLookup = make_task,
    ) -> None:
        if address is not None and not isinstance(address, str):
            raise TypeError(
                f"address is a str (HOST:PORT, 'auto', 'local', ray://HOST:PORT) or None, got "
                f"{type(address).__name__} {address!r}"
            )
        if not _is_number(num_cpus) or not math.isfinite(num_cpus) or num_cpus <= 0:
            raise ValueError(f"num_cpus is the CPUs one child reserves, > 0; got {num_cpus!r}")
        if (
            not _is_number(num_gpus)
            or not math.isfinite(num_gpus)
            or num_gpus < 0
            or (num_gpus > 1 and num_gpus % 1)
        ):
            raise ValueError(
                "num_gpus is the GPUs one child reserves: 0 (train on the CPU), a fraction up "
                f"to 1 (children share a GPU) or a whole number; got {num_gpus!r}"
            )
        if not is_whole(max_retries) or max_retries < 0:
            raise ValueError(f"max_retries must be an int >= 0, got {max_retries!r}")
        self.address = address
        self.num_cpus = _plain(num_cpus)
        self.num_gpus = _plain(num_gpus)
        self.max_retries = int(max_retries)
        self.precision = check_precision(precision)
        self.tasks = check_lookup(tasks)
        self.recheck_s = 30.0
        """How long `stream` waits for the next child before checking that the cluster could
        still run one; a wait that could never end then raises instead of hanging."""
        self._connected = False  # whether `close()` should disconnect
        self._train: Any = None  # the remote function, made on the first call

    @property
    def device(self) -> str:
        """Where the workers train: `"cuda"` when children reserve a GPU, else `"cpu"`."""
        return "cuda" if self.num_gpus else "cpu"

    def stream(self, requests: Sequence[ChildRequest]) -> Iterator[tuple[int, ChildResult]]:
        if not requests:
            return
        ray = self.connect()
        lookup = ray.put(self._worker_tasks(requests))
        threads = max(1, int(self.num_cpus))
        pending = {}
        try:  # a Ctrl-C while submitting cancels the children submitted so far
            for i, request in enumerate(requests):
                ref = self._train.remote(lookup, request, self.device, self.precision, threads)
                pending[ref] = i
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1, timeout=self.recheck_s)
                if not done:  # nothing finished for a while: could the cluster still run one?
                    self._check_resources(ray)
                    continue
                (ref,) = done
                yield pending.pop(ref), ray.get(ref)
        finally:  # an error, a closed stream or Ctrl-C: stop what is still queued or training
            for ref in pending:
                ray.cancel(ref)

    def _worker_tasks(self, requests: Sequence[ChildRequest]) -> TaskLookup:
        """The workers' task lookup: the evaluator's, or with the default one, the driver's
        copy of each requested task that is not one of the package's own."""
        if self.tasks is not make_task:
            return self.tasks
        own = {request.task for request in requests if not shipped_task(request.task)}
        return _DriverTasks({name: make_task(name) for name in own}) if own else make_task

    def connect(self) -> Any:
        """Connect now (the first call does otherwise), so that a wrong address or a cluster
        that could run no child is refused before a search starts; returns the `ray` module."""
        ray = import_ray()
        if not ray.is_initialized():
            # ray.init reads RAY_ADDRESS for None and for "auto" alike
            from_env = self.address in (None, "", "auto") and os.environ.get("RAY_ADDRESS")
            address = from_env or self.address or "local"
            try:
                check_reachable(address)
                ray.init(address=address)
            except ConnectionError as err:
                where, fix = (
                    (f"RAY_ADDRESS={from_env!r}", "unset RAY_ADDRESS")
                    if from_env
                    else (f"RayEvaluator(address={self.address!r})", "pass address=None")
                )
                raise ConnectionError(
                    f"{where} names no running Ray cluster ({err}); start one with `ray start "
                    f"--head`, or {fix} for a new local one"
                ) from err
            self._connected = True
        try:
            self._check_resources(ray)
        except ValueError:  # a cluster this call started is not left running
            self.close()
            raise
        if self._train is None:
            self._train = ray.remote(
                num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=self.max_retries
            )(_train)
        return ray

    def _check_resources(self, ray: Any) -> None:
        """Refuse a cluster that has, in all, fewer CPUs or GPUs than one child reserves: no
        child could ever start there (a node that held the only GPUs may have gone)."""
        have = ray.cluster_resources()
        for name, need in (("CPU", self.num_cpus), ("GPU", self.num_gpus)):
            if need > have.get(name, 0):
                raise ValueError(
                    f"num_{name.lower()}s={need} per child, but the Ray cluster has "
                    f"{have.get(name, 0):g} {name}s in all, so no child could start; add "
                    f"workers (`ray start --address=HEAD:6379 --num-{name.lower()}s=N`) or "
                    f"reserve fewer"
                )

    def close(self) -> None:
        """Disconnect from Ray if this evaluator connected (a later call connects again)."""
        if self._connected:
            import_ray().shutdown()
            self._connected = False

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_connected": False, "_train": None}  # a copy connects anew


@dataclass(frozen=True)
class _DriverTasks:
    """A task lookup that answers with the driver's copy of the tasks it holds, and otherwise
    as `make_task` does."""

    tasks: dict[str, Task]

    def __call__(self, name: str) -> Task:
        return self.tasks[name] if name in self.tasks else make_task(name)


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def _plain(value: numbers.Real) -> int | float:
    """`value` as a plain int or float (numpy numbers are accepted, Ray wants plain ones)."""
    return int(value) if is_whole(value) else float(value)


def _train(
    lookup: TaskLookup, request: ChildRequest, device: str, precision: str, threads: int
) -> ChildResult:
    """One child in a Ray worker, on as many intra-op threads as its task reserved CPUs."""
    torch.set_num_threads(threads)
    evaluator = SequentialEvaluator(device=device, precision=precision, tasks=lookup)
    (result,) = evaluator.evaluate([request])
    return result
