"""`BatchedEvaluator`: many children trained at once on one device.

A plain PyTorch loop over one small MLP is bound by kernel launches, not arithmetic. Here K
children become one set of stacked weights `(K, fan_in, fan_out)`, and every layer of every child
runs as one batched matrix product, so a step costs about as many launches for K children as for
one.

What is shared and what stays per child:

| group key (must be equal)   | per child (stacked, padded or masked)                    |
|-----------------------------|----------------------------------------------------------|
| task, representation, size  | initial weights (built from the child's own seed, exactly |
| batch size                  |   as `train_child` builds them), data order, dropout rate |
| depth 0 vs. depth >= 1      | width (zero-padded, masked), depth (layers past a child's |
|                             |   depth are skipped), activation, optimizer (each over    |
|                             |   its children's slice of the stack) and its state,       |
|                             |   learning rate, L2, best epoch, divergence               |

Each optimizer's stacked form (`mnms_env.stacked_optim.OPTIMIZERS`) updates stacked weights with
a learning rate and L2 per child, following its `torch.optim` counterpart. A group larger than the
memory limit is split into chunks, so an oversized request list is trained in several passes
rather than running out of memory. With `workers`, a call's chunks train in parallel in that many
CPU processes. Text CNN children (`tokens`) are not stacked: each trains alone with `train_child`
(see `BatchedEvaluator`).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from itertools import pairwise
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from mnms_env.activations import ACTIVATIONS
from mnms_env.child import (
    PRECISION_DTYPES,
    ChildNet,
    check_precision,
    compute_precision,
    data_order,
    resolve_device,
    result_device,
)
from mnms_env.evaluate import (
    Evaluator,
    TaskLookup,
    check_lookup,
    task_features,
    task_of,
    train_request,
)
from mnms_env.features import FEATURIZERS, PAD, Features
from mnms_env.records import ChildRequest, ChildResult, is_whole
from mnms_env.space import ChildConfig
from mnms_env.stacked_optim import OPTIMIZERS, stacked_optimizer
from mnms_env.tasks import Task, make_task


@dataclass(frozen=True, order=True)
class _Group:
    """Requests that can share one stacked model (ordered, so a sort puts them together)."""

    task: str
    fingerprint: str
    representation: str
    size: int
    batch_size: int
    deep: bool


def batch_group(request: ChildRequest) -> _Group:
    """The stacked model `request` trains in."""
    c = request.config
    return _Group(
        request.task,
        request.fingerprint,
        c.representation,
        c.representation_size,
        c.batch_size,
        c.hidden_layers > 0,
    )


def default_memory_limit(device: torch.device) -> int:
    """Bytes one chunk may use: half the free GPU memory, or a quarter of the free RAM."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):  # pragma: no cover - non-POSIX
        free = 8 << 30
    return free // 4


def default_workers(device: torch.device, most: int) -> int:
    """Worker processes for `BatchedEvaluator` on `device` when a caller has at most `most`
    chunks at once: one per usable CPU core up to `most`, none on one core or off the CPU."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(cores or 1, most) if device.type == "cpu" and (cores or 1) > 1 else 0


class BatchedEvaluator(Evaluator):
    """Trains compatible children together; results match `SequentialEvaluator` up to
    floating-point order and dropout noise (the initial weights and data order are identical).
    `precision="bf16"` runs the matrix products in bfloat16 (see `child.compute_precision`).
    `memory_limit` caps the bytes one stacked chunk may use (default: `default_memory_limit`).

    `workers=N` (CPU only) trains a call's chunks in N worker processes at once, each on one
    intra-op thread, largest first. Small children are bound by the Python and dispatch cost of
    each operation, so threads of one process barely overlap (they take turns holding the GIL)
    while processes do; and several intra-op threads per child are slower still on a busy CPU
    (their barriers wait for threads the OS has descheduled). The workers are spawned on the
    first call and live as long as the evaluator (`close()` ends them sooner); options registered
    at run time reach them as they reach any spawned worker (see the README).

    Text CNN children (`tokens`, `mnms_env.cnn`) are trained one by one with `train_child`, so
    each result is the sequential evaluator's exactly; with `workers`, each is a chunk of its
    own, several training at once. A CNN step is bound by its convolutions' arithmetic rather
    than by launches, so stacking saves little on the CPU, and measured it lost more often than
    it won: a hand-written probe of 8 CNNs stacked (embeddings gathered per child, grouped
    convolutions, one batched head) against the same 8 trained in turn, one thread on a busy
    2-core CPU, took 1.3-1.4x longer per child and step at batch 64 over 24 words (128-d
    embeddings, 100 filters of widths 3, 4, 5), 1.2x longer over 4 words (50-d, 50 filters), and
    1.1-1.4x less at batch 16 over 20 words. On a GPU, where one small CNN is launch-bound,
    stacking is likely to pay; that is not measured yet.
    """

    def __init__(
        self,
        *,
        device: str | torch.device | None = None,
        memory_limit: int | None = None,
        precision: str = "fp32",
        tasks: TaskLookup = make_task,
        workers: int = 0,
    ) -> None:
        self.device = resolve_device(device)
        if memory_limit is not None and (not is_whole(memory_limit) or memory_limit < 1):
            raise ValueError(
                f"memory_limit is bytes, an int >= 1 (or None: default_memory_limit), got "
                f"{memory_limit!r}"
            )
        self.memory_limit = None if memory_limit is None else int(memory_limit)
        self.precision = check_precision(precision, self.device)
        self.tasks = check_lookup(tasks)
        if not is_whole(workers) or workers < 0:
            raise ValueError(
                f"workers must be an int >= 0 (0: train in this process), got {workers!r}"
            )
        workers = int(workers)
        if workers and self.device.type != "cpu":
            raise ValueError(
                f"workers={workers} trains in CPU processes, but device={str(self.device)!r}; "
                "pass workers=0 to train on it in this process"
            )
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def stream(self, requests: Sequence[ChildRequest]) -> Iterator[tuple[int, ChildResult]]:
        """Results one trained group (or chunk of one) at a time."""
        if self.workers:
            yield from self._stream_in_workers(requests)
            return
        for part, task, features, _ in self._chunks(requests, self.memory_limit):
            trained = _train_chunk(
                [requests[i] for i in part], features, task, self.device, self.precision
            )
            yield from zip(part, trained, strict=True)

    def _chunks(
        self, requests: Sequence[ChildRequest], limit: int | None
    ) -> Iterator[tuple[list[int], Task, Features, int]]:
        """`(request indices, task, features, cost)` of each stacked chunk, group by group:
        `cost` estimates its training time as bytes swept (`STEP_COST_BYTES`)."""
        groups: dict[_Group, list[int]] = defaultdict(list)
        for i, request in enumerate(requests):
            groups[batch_group(request)].append(i)
        limit = limit or default_memory_limit(self.device)
        for group, members in groups.items():
            # One optimizer's children side by side, and within them equal learning rates and
            # L2: each optimizer then updates one slice of the stack, and a fused kernel each
            # run of equal rates as one slice of that.
            members.sort(key=lambda i: _rule_order(requests[i].config))
            task = task_of(self.tasks, requests[members[0]])
            features = task_features(task, group.representation, group.size)
            steps = math.ceil(len(task.train.y) / group.batch_size)
            if features.is_sequence:  # CNN children train alone: a chunk each
                words = float((features.train != PAD).sum(axis=1).mean())  # once per group
                for i in members:
                    cost = _cnn_step_cost(requests[i].config, words)
                    yield [i], task, features, steps * (cost + STEP_COST_BYTES)
                continue
            per_child = _bytes_per_child([requests[i] for i in members], features, task.num_classes)
            chunk = max(1, limit // per_child)
            for start in range(0, len(members), chunk):
                part = members[start : start + chunk]
                yield part, task, features, steps * (len(part) * per_child + STEP_COST_BYTES)

    def _stream_in_workers(
        self, requests: Sequence[ChildRequest]
    ) -> Iterator[tuple[int, ChildResult]]:
        limit = (self.memory_limit or default_memory_limit(self.device)) // self.workers
        chunks = sorted(self._chunks(requests, limit), key=lambda chunk: -chunk[3])
        if not chunks:
            return
        futures: dict[Future, list[int]] = {}
        try:
            futures = self._submit(chunks, requests)
            for future in as_completed(futures):
                yield from zip(futures[future], future.result(), strict=True)
        except BrokenProcessPool as err:
            self._pool = None  # the next call starts anew
            raise BrokenProcessPool(
                "a training worker died: killed, out of memory, or it could not start because "
                "the script that made this evaluator searches when imported (spawned workers "
                "import it: keep that code under `if __name__ == '__main__':`), or pass "
                "workers=0 to train in this process"
            ) from err
        finally:
            for future in futures:
                future.cancel()

    def _submit(self, chunks: list, requests: Sequence[ChildRequest]) -> dict[Future, list[int]]:
        """Each chunk's training, submitted to the worker pool. A pool whose worker died while
        idle (the OOM killer, a kill) is replaced once: no result of this call had come back,
        so resubmitting every chunk loses and repeats none."""
        try:
            return self._submit_once(chunks, requests)
        except BrokenProcessPool:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
            return self._submit_once(chunks, requests)

    def _submit_once(
        self, chunks: list, requests: Sequence[ChildRequest]
    ) -> dict[Future, list[int]]:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=torch.set_num_threads,
                initargs=(1,),
            )
        return {
            self._pool.submit(
                _train_in_worker, [requests[i] for i in part], task, self.precision
            ): part
            for part, task, _, _ in chunks
        }

    def close(self) -> None:
        """End the worker processes at once (a later call starts new ones): training that an
        interrupted call left running is abandoned, not waited for (a SIGTERM's grace period
        would run out first)."""
        if self._pool is None:
            return
        pool, self._pool = self._pool, None
        workers = list((pool._processes or {}).values())  # Python 3.14: terminate_workers()
        pool.shutdown(wait=False, cancel_futures=True)
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.join()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_pool": None}  # a copy starts workers of its own


STEP_COST_BYTES = 10_000_000
"""A training step's fixed cost (launching its operations), as the bytes of stacked weights a
step sweeps in the same time on the CPU: what orders a call's chunks for the workers."""


def _rule_order(config: ChildConfig) -> tuple[str, float, float]:
    return config.optimizer, config.learning_rate, config.l2


def _train_in_worker(requests: list[ChildRequest], task: Task, precision: str) -> list[ChildResult]:
    """A chunk in a worker process: its features come from the disk cache, which the parent
    filled when it sized the chunk."""
    for config in {request.config for request in requests}:
        for kind, name, registry in [
            ("activation", config.activation, ACTIVATIONS),
            ("optimizer", config.optimizer, OPTIMIZERS),
            ("representation", config.representation, FEATURIZERS),
        ]:
            if name not in registry:  # a spawned worker imports the script afresh
                raise ValueError(
                    f"{kind}={name!r} is not registered in the worker process (registered: "
                    f"{list(registry)}): register it at the top level of your script or of a "
                    "module it imports, not under `if __name__ == '__main__':`, or train with "
                    "workers=0"
                )
    c = requests[0].config
    features = task_features(task, c.representation, c.representation_size)
    return _train_chunk(requests, features, task, torch.device("cpu"), precision)


def _train_chunk(
    requests: Sequence[ChildRequest],
    features: Features,
    task: Task,
    dev: torch.device,
    precision: str,
) -> list[ChildResult]:
    """One chunk of `_chunks`: a stacked group, or CNN children each alone."""
    if features.is_sequence:
        return [train_request(request, task, dev, precision) for request in requests]
    return _train_group(requests, features, task, dev, precision)


def _cnn_step_cost(config: ChildConfig, words: float) -> int:
    """A CNN child's training step over texts of `words` tokens on average, as its convolutions'
    multiply-adds (forward and the two products of backward), which take about as long on one
    CPU core as sweeping as many bytes: comparable with the stacked chunks' `STEP_COST_BYTES`."""
    words += max(config.filter_widths)
    per_word = config.embedding_dim * config.filters * sum(config.filter_widths)
    return int(3 * config.batch_size * words * per_word)


def _bytes_per_child(requests: Sequence[ChildRequest], features: Features, classes: int) -> int:
    """A generous estimate of one child's memory in a group: weights with gradient, two
    optimizer states and a copy of its best epoch's weights, plus activations of a training
    step and an evaluation chunk."""
    width = max(r.config.width for r in requests)
    depth = max(r.config.hidden_layers for r in requests)
    out = width if depth else classes
    params = features.dim * out + max(depth - 1, 0) * width * width + width * classes
    batch = requests[0].config.batch_size
    activations = (depth + 2) * (batch + EVAL_ROWS) * max(width, classes) * 6
    first = batch * features.dim if not features.is_bag else 0
    return 4 * (5 * params + activations + first) + 4096


EVAL_ROWS = 1024


class _StackedNet:
    """K children's weights as stacked tensors, initialised from each child's own `ChildNet`."""

    def __init__(
        self, requests: Sequence[ChildRequest], features: Features, classes: int, dev: torch.device
    ) -> None:
        configs = [r.config for r in requests]
        self.k = len(configs)
        self.depth = max(c.hidden_layers for c in configs)
        width = max(c.width for c in configs) if self.depth else classes
        self.is_bag = features.is_bag
        dims = [features.dim] + [width] * self.depth + [classes]
        self.weights = [torch.zeros(self.k, dims[i], dims[i + 1]) for i in range(len(dims) - 1)]
        self.biases = [torch.zeros(self.k, dims[i + 1]) for i in range(len(dims) - 1)]
        self.parameters: list[int] = []
        for j, (request, config) in enumerate(zip(requests, configs, strict=True)):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(request.seed)
                net = ChildNet(config, features.dim, classes, features.is_bag)
            self.parameters.append(sum(p.numel() for p in net.parameters()))
            first_w = net.first.weight if self.is_bag else net.first.weight.T
            first_b = net.first_bias if self.is_bag else net.first.bias
            layers = [(first_w, first_b)] + [
                (m.weight.T, m.bias) for m in net.rest if isinstance(m, torch.nn.Linear)
            ]
            # Hidden layers: 0..d-1 are the child's own; d..depth-1 stay zero and are skipped.
            # The output layer is the last stacked layer for every child.
            slots = list(range(len(layers) - 1)) + [len(self.weights) - 1]
            for slot, (w, b) in zip(slots, layers, strict=True):
                self.weights[slot][j, : w.shape[0], : w.shape[1]] = w.detach()
                self.biases[slot][j, : b.shape[0]] = b.detach()
        self._width_masks([c.width for c in configs], width, dev)
        self.weights = [w.to(dev).requires_grad_() for w in self.weights]
        self.biases = [b.to(dev).requires_grad_() for b in self.biases]
        self.active = torch.tensor(
            [[c.hidden_layers > layer for layer in range(1, max(self.depth, 1))] for c in configs],
            dtype=torch.bool,
            device=dev,
        ).reshape(self.k, -1)
        self.partial_layers = (~self.active).any(dim=0).tolist()  # some child skips layer i+1
        self.dropout = torch.tensor([c.dropout for c in configs], device=dev).view(-1, 1, 1)
        self.kept = 1 - self.dropout  # the scale of kept units, computed once
        self.uses_dropout = any(c.dropout > 0 for c in configs)
        used = {c.activation for c in configs}
        self.activations = [name for name in ACTIVATIONS if name in used]  # a fixed order
        self.activation_index = torch.tensor(
            [self.activations.index(c.activation) for c in configs], device=dev
        )

    def _width_masks(self, widths: list[int], width: int, dev: torch.device) -> None:
        """0/1 masks that keep the padded units of narrower children at exactly zero. Weights
        after the first layer and all hidden biases are multiplied by them in the forward pass,
        so their padded entries get zero gradients. The first layer's weight gradient is computed
        outside autograd, and `bias_masks[0]` masks that gradient instead: its padded columns
        start at zero and never move, without a `(K, dim, width)` product on every step."""
        n = len(self.weights)
        self.masks: list[torch.Tensor | None] = [None] * n
        self.bias_masks: list[torch.Tensor | None] = [None] * n
        if self.depth == 0 or len(set(widths)) == 1:
            return
        alive = (torch.arange(width)[None, :] < torch.tensor(widths)[:, None]).float().to(dev)
        for i in range(1, n):
            fan_out = alive[:, None, :] if i < n - 1 else 1.0
            self.masks[i] = (alive[:, :, None] * fan_out).expand(self.k, *self.weights[i].shape[1:])
        self.bias_masks[: n - 1] = [alive] * (n - 1)

    def params(self) -> list[torch.Tensor]:
        return self.weights + self.biases

    def _act(self, z: torch.Tensor) -> torch.Tensor:
        if len(self.activations) == 1:
            return ACTIVATIONS[self.activations[0]](z)
        out = torch.zeros_like(z)
        for a, name in enumerate(self.activations):
            chosen = (self.activation_index == a).view(-1, 1, 1)
            # Selected, not multiplied by 0 or 1, and fed 0 where not chosen: one child's NaN,
            # or an activation's infinite gradient at another child's inputs, stays its own.
            out = torch.where(chosen, ACTIVATIONS[name](torch.where(chosen, z, 0.0)), out)
        return out

    def _drop(self, h: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if generator is None or not self.uses_dropout:
            return h
        keep = torch.rand(h.shape, device=h.device, generator=generator) >= self.dropout
        return h * keep / self.kept

    def _bias(self, i: int) -> torch.Tensor:
        b = self.biases[i]
        return b if self.bias_masks[i] is None else b * self.bias_masks[i]

    def _weight(self, i: int) -> torch.Tensor:
        w = self.weights[i]
        return w if self.masks[i] is None else w * self.masks[i]

    def forward(self, first: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Logits `(K, B, classes)` from the first layer's pre-activation `(K, B, fan_out)`."""
        z = first + self._bias(0)[:, None, :].to(first.dtype)  # bf16 stays bf16, as in autocast
        n = len(self.weights)
        for i in range(1, n):
            h = self._drop(self._act(z), generator)
            nxt = torch.baddbmm(self._bias(i)[:, None, :], h, self._weight(i))
            if i < n - 1 and self.partial_layers[i - 1]:  # shallower children pass z through
                keep = self.active[:, i - 1].view(-1, 1, 1)
                nxt = torch.where(keep, nxt, z)
            z = nxt
        return z


class _Bags(NamedTuple):
    """K x B bags of one step as entries of the stacked first-layer table `(K * dim, fan_out)`:
    entry i adds `weight[i]` times table row `index[i]` to bag `bag[i]`."""

    shape: tuple[int, int]
    index: torch.Tensor
    weight: torch.Tensor
    offsets: torch.Tensor
    bag: torch.Tensor


class _Inputs:
    """Feature rows and labels `y` of one split on the device, gathered per child. Dense rows
    are stored in `dtype`: bfloat16 under `precision="bf16"`, the cast autocast would apply on
    every step.

    The first layer's weight gradient is computed here rather than by autograd, into a buffer
    the caller keeps: autograd would allocate a fresh `(K, dim, fan_out)` gradient every step,
    and on the CPU an allocation that large is fresh pages from the kernel each time (glibc
    maps anything over 32 MiB), which made the page faults cost more than the arithmetic for
    hashed text at K=32.
    """

    BAG_CHUNK = 1 << 14  # entries per index_add_, to bound the gathered gradient rows
    BAG_RUN = 1 << 20  # entries gathered at once for a run of training steps

    def __init__(
        self,
        mat,  # noqa: ANN001 - a dense array or a CSR matrix
        y: np.ndarray,
        dev: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.is_bag = sp.issparse(mat)
        self.y = torch.from_numpy(y).to(dev)
        self.scratch: torch.Tensor | None = None  # a product or gathered rows, kept across steps
        if self.is_bag:
            self.indptr = torch.from_numpy(mat.indptr.astype(np.int64)).to(dev)
            self.indices = torch.from_numpy(mat.indices.astype(np.int64)).to(dev)
            self.data = torch.from_numpy(mat.data).to(dev)
            self.dim = mat.shape[1]
        else:
            self.x = torch.from_numpy(np.ascontiguousarray(mat)).to(dev, dtype)

    def gather(self, rows: torch.Tensor, k: int) -> torch.Tensor | _Bags:
        """Child k's rows `rows[k]`; a 1-D `rows` is shared by all `k` children (dense rows
        then stay `(B, dim)` and broadcast)."""
        if not self.is_bag:
            # index_select, not self.x[rows]: the advanced-indexing gather is several times
            # slower on the CPU and is a step's largest cost after the matrix products.
            return self.x.index_select(0, rows.reshape(-1)).view(*rows.shape, -1)
        rows = rows.expand(k, -1) if rows.dim() == 1 else rows
        (bags,) = self._bags(rows.reshape(-1), k, rows.shape[1])
        return bags

    def steps(
        self, order: torch.Tensor, b: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | _Bags | None]]:
        """Each training step of an epoch: its rows `(K, b)` of `order` `(K, n)`, and for bags
        their `gather`, computed for a run of steps at once (a dozen small operations per run
        instead of per step). Dense rows are left to the step (None), which a CUDA graph then
        captures."""
        k, n = order.shape
        if not self.is_bag:
            for begin in range(0, n, b):
                yield order[:, begin : begin + b], None
            return
        full = n // b
        entries = k * b * int(self.indptr[-1]) / (len(self.indptr) - 1)  # per step, on average
        run = max(1, int(self.BAG_RUN // max(entries, 1.0)))
        for first in range(0, full, run):
            steps = min(run, full - first)
            rows = order[:, first * b : (first + steps) * b].reshape(k, steps, b).transpose(0, 1)
            yield from zip(rows, self._bags(rows.reshape(-1), k, b), strict=True)
        if n % b:
            rows = order[:, full * b :]
            yield rows, self.gather(rows, k)

    def _bags(self, flat: torch.Tensor, k: int, b: int) -> list[_Bags]:
        """The bags of rows `flat`, step-major (`k * b` rows per step, child-major within)."""
        dev, n = flat.device, k * b
        starts = self.indptr[flat]
        lengths = self.indptr[flat + 1] - starts
        offsets = torch.cumsum(lengths, 0) - lengths
        total = int(lengths.sum())
        pos = torch.repeat_interleave(starts - offsets, lengths) + torch.arange(total, device=dev)
        bag = torch.repeat_interleave(torch.arange(len(flat), device=dev) % n, lengths)
        index, weight = self.indices[pos] + (bag // b) * self.dim, self.data[pos]
        firsts = offsets[::n]  # each step's first entry
        offsets = offsets - firsts.repeat_interleave(n)
        bounds = [*firsts.tolist(), total]
        return [
            _Bags((k, b), index[e0:e1], weight[e0:e1], offsets[j * n : (j + 1) * n], bag[e0:e1])
            for j, (e0, e1) in enumerate(pairwise(bounds))
        ]

    def first_layer(self, batch: torch.Tensor | _Bags, w: torch.Tensor) -> torch.Tensor:
        """`(K, B, fan_out)`: each gathered row through its child's first weight `w[k]`."""
        if not isinstance(batch, _Bags):
            return torch.matmul(batch, w) if batch.dim() == 2 else torch.bmm(batch, w)
        table = w.reshape(-1, w.shape[2])
        out = F.embedding_bag(
            batch.index, table, batch.offsets, mode="sum", per_sample_weights=batch.weight
        )
        return out.view(*batch.shape, -1)

    def weight_grad(
        self, batch: torch.Tensor | _Bags, grad: torch.Tensor, out: torch.Tensor
    ) -> None:
        """Write d(loss)/d(w) into `out`, given `grad` = d(loss)/d(`first_layer(batch, w)`)."""
        if not isinstance(batch, _Bags):
            if batch.dtype == out.dtype:
                torch.bmm(batch.mT, grad, out=out)
            else:  # bfloat16 rows and gradient: the product is cast into the float32 buffer
                if self.scratch is None:
                    self.scratch = batch.new_empty(out.shape)
                out.copy_(torch.bmm(batch.mT, grad, out=self.scratch))
            return
        table, rows = out.view(-1, out.shape[2]), grad.reshape(-1, grad.shape[2]).float()
        if self.scratch is None:
            self.scratch = rows.new_empty(self.BAG_CHUNK, rows.shape[1])
        table.zero_()
        for begin in range(0, len(batch.index), self.BAG_CHUNK):
            part = slice(begin, begin + self.BAG_CHUNK)
            gathered = self.scratch[: len(batch.bag[part])]
            torch.index_select(rows, 0, batch.bag[part], out=gathered)
            table.index_add_(0, batch.index[part], gathered.mul_(batch.weight[part, None]))


def _train_group(
    requests: Sequence[ChildRequest],
    features: Features,
    task: Task,
    dev: torch.device,
    precision: str,
) -> list[ChildResult]:
    start = time.perf_counter()
    configs = [r.config for r in requests]
    k, batch = len(requests), configs[0].batch_size
    budget = max(r.budget for r in requests)
    net = _StackedNet(requests, features, task.num_classes, dev)
    optimizer = stacked_optimizer(net.params(), configs, dev)
    dtype = PRECISION_DTYPES[precision]
    train, val, test = (
        _Inputs(features.split(s), getattr(task, s).y, dev, dtype)
        for s in ("train", "validation", "test")
    )
    seeds = [r.seed for r in requests]
    dropout_gen = torch.Generator(device=dev)
    dropout_gen.manual_seed(int(requests[0].seed) * 1_000_003 + k)
    epochs_left = torch.tensor([r.budget for r in requests], device=dev)
    alive = torch.ones(k, dtype=torch.bool, device=dev)
    training = torch.zeros(k, dtype=torch.bool, device=dev)  # updated in place (graph-safe)
    best_val = torch.full((k,), -1.0, device=dev)
    best_epoch = torch.zeros(k, dtype=torch.long, device=dev)
    best_params = [p.detach().clone() for p in net.params()]  # each child's best epoch

    first_grad = torch.zeros_like(net.weights[0])  # kept across steps (see `_Inputs`)

    def train_step(rows: torch.Tensor, batch: torch.Tensor | _Bags | None = None) -> None:
        batch = train.gather(rows, k) if batch is None else batch
        with torch.no_grad(), compute_precision(dev, precision):
            first = train.first_layer(batch, net.weights[0])
        first.requires_grad_()
        with compute_precision(dev, precision):
            logits = net.forward(first, dropout_gen)
        targets = train.y.index_select(0, rows.reshape(-1))
        losses = F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), targets, reduction="none"
        )
        losses = losses.view(k, -1).mean(dim=1)
        finite = torch.isfinite(losses)
        alive.logical_and_(finite | ~training)  # a non-finite loss ends that child
        training.logical_and_(finite)
        torch.where(training, losses, 0.0).sum().backward()
        grad = first.grad
        if net.bias_masks[0] is not None:  # no gradient for narrower children's padded units
            grad = grad * net.bias_masks[0][:, None, :].to(grad.dtype)
        train.weight_grad(batch, grad, first_grad)
        net.weights[0].grad = first_grad
        optimizer.step(training)

    graphed = (
        _GraphedStep(train_step, k, batch, dev)
        if dev.type == "cuda" and not features.is_bag and not net.uses_dropout
        else None
    )

    n = len(task.train.y)
    for epoch in range(1, budget + 1):
        training.copy_(alive & (epochs_left >= epoch))
        order = data_order(seeds, epoch, n, dev)
        for rows, gathered in train.steps(order, batch):
            if graphed is not None and rows.shape[1] == batch:
                graphed(rows)
            else:
                train_step(rows, gathered)
        val_acc = _accuracy(net, val, dev, precision)
        improved = training & (val_acc > best_val)
        best_val = torch.where(improved, val_acc, best_val)
        best_epoch = torch.where(improved, torch.full_like(best_epoch, epoch), best_epoch)
        _keep_where(improved, net.params(), best_params)
    # Test accuracy once, on each child's best weights: the same number as measuring it every
    # epoch and keeping the best epoch's, at a tenth of the cost for 10 epochs. A child that
    # diverged before any epoch ended is reported as it stands, as in `train_child`.
    never = best_epoch == 0
    _keep_where(~never, best_params, net.params())
    if never.any():
        best_val = torch.where(never, _accuracy(net, val, dev, precision), best_val)
    best_test = _accuracy(net, test, dev, precision)
    seconds = (time.perf_counter() - start) / k
    diverged = ~alive
    return [
        ChildResult(
            val_accuracy=float(best_val[j]),
            test_accuracy=float(best_test[j]),
            seconds=seconds,
            parameters=net.parameters[j],
            device=result_device(dev, precision),
            diverged=bool(diverged[j]),
            best_epoch=int(best_epoch[j]),
        )
        for j in range(k)
    ]


class _GraphedStep:
    """A training step captured once as a CUDA graph and replayed for every full batch.

    Small children leave the GPU idle between ~100 kernel launches per step; a replay issues the
    whole step at once. Used for dense features without dropout: the bag gather has
    data-dependent sizes and dropout draws from its own generator, so those steps run eagerly.
    The first `WARMUP` calls run eagerly on a side stream (as CUDA graph capture requires); they
    are real training steps, so the result does not depend on whether graphs are used.
    """

    WARMUP = 3

    def __init__(self, step, k: int, batch: int, dev: torch.device) -> None:  # noqa: ANN001
        self.step = step
        self.rows = torch.zeros(k, batch, dtype=torch.long, device=dev)
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None

    def __call__(self, rows: torch.Tensor) -> None:
        self.rows.copy_(rows)
        if self.graph is None and self.calls < self.WARMUP:
            self.calls += 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.step(self.rows)
            torch.cuda.current_stream().wait_stream(side)
            return
        if self.graph is None:
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.step(self.rows)
        self.graph.replay()


@torch.no_grad()
def _keep_where(
    chosen: torch.Tensor, sources: list[torch.Tensor], targets: list[torch.Tensor]
) -> None:
    """Copy the `chosen` children's slices `(K, ...)` of each source into its target with one
    in-place `where` per tensor: no temporary the size of a hashed first layer, and no per-child
    copies (thousands of launches per epoch on a GPU at K=1,024)."""
    for source, target in zip(sources, targets, strict=True):
        keep = chosen.view(-1, *[1] * (source.dim() - 1))
        torch.where(keep, source, target, out=target)


@torch.no_grad()
def _accuracy(net: _StackedNet, inputs: _Inputs, dev: torch.device, precision: str) -> torch.Tensor:
    """Per-child accuracy `(K,)` on a whole split, in row chunks to bound memory."""
    n = len(inputs.y)
    correct = torch.zeros(net.k, device=dev)
    w = net.weights[0]
    for begin in range(0, n, EVAL_ROWS):
        idx = torch.arange(begin, min(begin + EVAL_ROWS, n), device=dev)
        with compute_precision(dev, precision):
            first = inputs.first_layer(inputs.gather(idx, net.k), w)
            logits = net.forward(first, None)
        correct += (logits.argmax(dim=-1) == inputs.y[idx]).sum(dim=1)
    return correct / n
