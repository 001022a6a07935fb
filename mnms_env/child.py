"""Child networks: building a torch model from a `ChildConfig`, and the reference trainer.

The reference trainer is a plain PyTorch loop, one child at a time. It is the definition of what
a child's accuracy means; faster evaluators are checked against it.
"""

from __future__ import annotations

import contextlib
import math
import platform
import time
import warnings
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from mnms_env.activations import ACTIVATIONS
from mnms_env.cnn import TextCNN
from mnms_env.features import FeatureMatrix, Features
from mnms_env.records import ChildResult
from mnms_env.space import ChildConfig
from mnms_env.stacked_optim import OPTIMIZERS

EVAL_BATCH = 4096
PRECISION_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
"""The dtype matrix products take their inputs in, per `precision`."""
PRECISIONS = tuple(PRECISION_DTYPES)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`None` picks CUDA when present, else the CPU. A device this machine lacks is refused here,
    not at the first child's training."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device={device!r} is not a torch device ({err})") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r}, but CUDA is not available here; use 'cpu' or None")
    if resolved.type not in ("cpu", "cuda") and not _available(resolved):
        raise ValueError(
            f"device={device!r}: this machine has no {resolved.type} device; use 'cpu'"
        )
    return resolved


def _available(device: torch.device) -> bool:
    """Whether torch can train on `device` here (a backend torch has, with a device present)."""
    backend = getattr(torch, device.type, None)
    available = getattr(backend, "is_available", None)
    if device.type == "mps":
        available = torch.backends.mps.is_available
    return bool(available()) if callable(available) else False


def device_name(device: torch.device) -> str:
    """What benchmark reports call the machine: the GPU's name, or the CPU's model name (from
    /proc/cpuinfo on Linux, where `platform.processor()` only says "x86_64")."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def _cpuinfo(*keys: str) -> str | None:
    """The value of the first /proc/cpuinfo line that starts with one of `keys`; None where
    there is no such line or file (not Linux)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(keys):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
"""CPU flags of native bfloat16 arithmetic: AVX512-BF16 and AMX on x86, FEAT_BF16 on Arm."""


class SlowPrecisionWarning(UserWarning):
    """`precision="bf16"` on a CPU that emulates bfloat16 (far slower than float32)."""


def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags (`flags` on x86, `Features` on Arm, from /proc/cpuinfo); None
    where they cannot be read (not Linux)."""
    line = _cpuinfo("flags", "Features")
    return None if line is None else frozenset(line.split())


def check_precision(precision: object, device: torch.device | None = None) -> str:
    """`precision`, refused unless it is one of `PRECISIONS`. With a CPU `device`, bf16 on a CPU
    without bf16 instructions gets a `SlowPrecisionWarning`: oneDNN then emulates the bf16
    matrix products, and batched training ran 17 times slower than in float32 (0.19 against
    3.20 children/s, dense workload at K=32, on an AMD EPYC without AVX-512). A CPU whose flags
    cannot be read is not warned about."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "bf16" and device is not None and device.type == "cpu":
        flags = cpu_flags()
        if flags is not None and not flags & set(BF16_CPU_FLAGS):
            warnings.warn(
                f"precision='bf16' on {device_name(device)}, which has no bf16 instructions "
                f"(none of the CPU flags {list(BF16_CPU_FLAGS)}): its bf16 matrix products are "
                "emulated, and batched training measured 17x slower than float32 on such a CPU "
                "(an AMD EPYC without AVX-512: 0.19 against 3.20 children/s); use "
                "precision='fp32'",
                SlowPrecisionWarning,
                stacklevel=3,
            )
    return precision  # type: ignore[return-value]


def compute_precision(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The context a forward pass runs in. `"fp32"` computes in float32 throughout. `"bf16"` is
    mixed precision as `torch.autocast` defines it: matrix products take bfloat16 inputs (8-bit
    mantissa) and accumulate in float32, while weights, optimizer state, losses and
    reductions stay float32. On CPUs with AVX512-BF16 or AMX it roughly doubles the rate of
    the matrix products; accuracies then agree with float32 training about as closely as the
    batched evaluator agrees with the sequential one (`tests/test_batched.py`).
    """
    if precision == "fp32":
        return contextlib.nullcontext()
    # No weight-cast cache: weights change every step, and a cache breaks CUDA graph capture.
    return torch.autocast(device.type, dtype=PRECISION_DTYPES[precision], cache_enabled=False)


def result_device(device: torch.device, precision: str) -> str:
    """`ChildResult.device`: the device, and the precision when it is not float32."""
    return str(device) if precision == "fp32" else f"{device} {precision}"


class Activation(nn.Module):
    """A registered activation (`activations.ACTIVATIONS`) as a module of `ChildNet`."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name, self.fn = name, ACTIVATIONS[name]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.name


class ChildNet(nn.Module):
    """An MLP over features; with bag features its first layer is a sparse `EmbeddingBag`. Over
    token sequences (`vocabulary`: the word of each id) it is the text CNN of `mnms_env.cnn`,
    whose pooled features go through dropout and then the same layers as an MLP's input."""

    def __init__(
        self,
        config: ChildConfig,
        in_dim: int,
        num_classes: int,
        bag: bool,
        vocabulary: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        dims = [in_dim] + [config.width] * config.hidden_layers + [num_classes]
        if vocabulary is not None:
            cnn = TextCNN(config, vocabulary)
            self.first = nn.Sequential(
                cnn, nn.Dropout(config.dropout), nn.Linear(cnn.out_dim, dims[1])
            )
        elif bag:
            self.first = nn.EmbeddingBag(in_dim, dims[1], mode="sum")
        else:
            self.first = nn.Linear(in_dim, dims[1])
        if bag:  # EmbeddingBag initialises N(0, 1); use the Linear layer's scale instead
            bound = 1.0 / math.sqrt(in_dim)
            nn.init.uniform_(self.first.weight, -bound, bound)
            self.first_bias = nn.Parameter(torch.empty(dims[1]).uniform_(-bound, bound))
        else:
            self.register_parameter("first_bias", None)
        rest: list[nn.Module] = []
        for i in range(1, len(dims) - 1):
            rest += [Activation(config.activation), nn.Dropout(config.dropout)]
            rest.append(nn.Linear(dims[i], dims[i + 1]))
        self.rest = nn.Sequential(*rest)

    def forward(self, x: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
        if isinstance(x, tuple):
            indices, offsets, weights = x
            h = self.first(indices, offsets, per_sample_weights=weights) + self.first_bias
        else:
            h = self.first(x)
        return self.rest(h)


def make_optimizer(config: ChildConfig, params) -> torch.optim.Optimizer:  # noqa: ANN001
    """The reference form of the config's optimizer (`stacked_optim.OPTIMIZERS`)."""
    return OPTIMIZERS[config.optimizer].reference(params, config.learning_rate, config.l2)


def batch_input(
    mat: FeatureMatrix, rows: np.ndarray, device: torch.device
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """Rows of a feature matrix as model input: a dense tensor, or EmbeddingBag's
    (indices, offsets, per-sample weights) for a sparse bag."""
    if sp.issparse(mat):
        sub = mat[rows]
        return (
            torch.from_numpy(sub.indices.astype(np.int64)).to(device),
            torch.from_numpy(sub.indptr[:-1].astype(np.int64)).to(device),
            torch.from_numpy(sub.data).to(device),
        )
    return torch.from_numpy(mat[rows]).to(device)


def _signed(value: int) -> int:
    """A 64-bit constant as the int64 torch stores (two's complement)."""
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN, _MIX1, _MIX2 = (
    _signed(0x9E3779B97F4A7C15),
    _signed(0xBF58476D1CE4E5B9),
    _signed(0x94D049BB133111EB),
)


def _logical_shift(z: torch.Tensor, bits: int) -> torch.Tensor:
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def data_order(seeds: Sequence[int], epoch: int, n: int, device: torch.device) -> torch.Tensor:
    """`(len(seeds), n)`: each child's shuffled row order for one epoch.

    Row i of child s gets the key splitmix64(s * golden + epoch * c + i); sorting the keys gives a
    permutation that depends only on (seed, epoch), is computed for many children at once on any
    device, and is identical on CPU and GPU. Both trainers use it, so a child sees the same
    batches whether it is trained alone or in a batch.
    """
    z = torch.as_tensor(list(seeds), dtype=torch.int64, device=device)[:, None] * _GOLDEN
    rows = torch.arange(n, dtype=torch.int64, device=device)
    z = z + (rows + torch.tensor(epoch, dtype=torch.int64, device=device) * _MIX1)[None, :]
    z = (z ^ _logical_shift(z, 30)) * _MIX1
    z = (z ^ _logical_shift(z, 27)) * _MIX2
    z = z ^ _logical_shift(z, 31)
    return torch.argsort(z, dim=1, stable=True)


@torch.no_grad()
def accuracy(
    model: nn.Module, mat: FeatureMatrix, y: np.ndarray, device: torch.device, precision: str
) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(y), EVAL_BATCH):
        rows = np.arange(start, min(start + EVAL_BATCH, len(y)))
        with compute_precision(device, precision):
            logits = model(batch_input(mat, rows, device))
        pred = logits.argmax(dim=1).cpu().numpy()
        correct += int((pred == y[rows]).sum())
    return correct / len(y)


def train_child(
    config: ChildConfig,
    features: Features,
    labels: tuple[np.ndarray, np.ndarray, np.ndarray],
    num_classes: int,
    *,
    budget: int,
    seed: int,
    device: str | torch.device | None = None,
    precision: str = "fp32",
) -> ChildResult:
    """Train one child for `budget` epochs and keep the epoch with the best validation accuracy.

    `labels` are the train, validation and test labels. The seed fixes the initial weights, the
    data order and dropout, so a CPU run is repeatable. A non-finite loss stops training; the
    child is reported with its best measured accuracy so far and `diverged=True`. `precision`
    is `"fp32"` or `"bf16"` (see `compute_precision`). Token features train a text CNN
    (`ChildNet`); embeddings that do not train (`glove-static`) count among its `parameters`.
    """
    dev = resolve_device(device)
    check_precision(precision)
    y_train, y_val, y_test = labels
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        model = ChildNet(
            config, features.dim, num_classes, features.is_bag, features.vocabulary
        ).to(dev)
        optimizer = make_optimizer(config, [p for p in model.parameters() if p.requires_grad])
        targets = torch.from_numpy(y_train).to(dev)
        best = (-1.0, 0.0, 0)  # (val, test, epoch)
        diverged = False
        for epoch in range(1, budget + 1):
            model.train()
            order = data_order([seed], epoch, len(y_train), torch.device("cpu"))[0].numpy()
            for begin in range(0, len(order), config.batch_size):
                rows = order[begin : begin + config.batch_size]
                with compute_precision(dev, precision):
                    logits = model(batch_input(features.train, rows, dev))
                loss = nn.functional.cross_entropy(logits.float(), targets[rows])
                if not torch.isfinite(loss):
                    diverged = True
                    break
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            if diverged:
                break
            val = accuracy(model, features.validation, y_val, dev, precision)
            if val > best[0]:
                best = (val, accuracy(model, features.test, y_test, dev, precision), epoch)
        if best[2] == 0:  # diverged before any epoch ended: report the model as it stands
            best = (
                accuracy(model, features.validation, y_val, dev, precision),
                accuracy(model, features.test, y_test, dev, precision),
                0,
            )
    return ChildResult(
        val_accuracy=best[0],
        test_accuracy=best[1],
        seconds=time.perf_counter() - start,
        parameters=sum(p.numel() for p in model.parameters()),
        device=result_device(dev, precision),
        diverged=diverged,
        best_epoch=best[2],
    )
