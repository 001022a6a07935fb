"""Optimizers: every optimizer a child may use, by name, in the form each trainer runs.

`OPTIMIZERS` maps a name to an `Optimizer`. Its `reference` form is the `torch.optim` optimizer
`train_child` steps, with the defaults written here, through torch's fused kernel where there is
one (`fastest`; RMSprop has none and runs `foreach`): on the CPU torch otherwise steps each
tensor in a loop of its own, about 12 times slower than the fused kernel for Adam over a text
CNN's 16384 x 300 embedding (2 cores of an AMD EPYC, torch 2.13). Its `stacked` form is what the
batched evaluator steps over K children's stacked weights `(K, ...)`, with a learning rate and L2
per child, leaving the weights of a child that has stopped untouched: usually a `VectorRule`, the
update of one stacked weight as tensor operations (run by `VectorOptimizer`; on the CPU by
`FusedOptimizer` through the rule's `fused` kernel when it has one), or an implementation of its
own (Adam's: `FusedOptimizer` everywhere). Each stacked form follows its `torch.optim`
counterpart step by step (`tests/test_batched.py`).

Adding an optimizer is one `register_optimizer` call: a block at the end of this module, or the
same call in your own code at run time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any, Protocol

import torch
from torch import Tensor

from mnms_env import registries


class OptimizerSettings(Protocol):
    """What optimizers read of a child's config (a `ChildConfig` is one)."""

    optimizer: str
    learning_rate: float
    l2: float


class StackedOptimizer(Protocol):
    def step(self, training: torch.Tensor) -> None:
        """Update the children marked in `training` (a `(K,)` bool tensor) from the stacked
        weights' gradients, and clear the gradients; the other children keep their weights."""


Reference = Callable[[Iterable[torch.Tensor], float, float], torch.optim.Optimizer]
StackedFactory = Callable[
    [list[torch.Tensor], Sequence[OptimizerSettings], torch.device], StackedOptimizer
]
Update = Callable[[Tensor, Tensor, Tensor, Tensor, list[Tensor], Tensor], None]
Kernel = Callable[[list[Tensor], list[Tensor], list[list[Tensor]], Tensor, float, float], None]


@dataclass(frozen=True)
class FusedKernel:
    """An optimizer's update as one of torch's fused kernels, `call(params, grads, states, step,
    lr, l2)`: one pass over each weight, where the same update as tensor operations takes one
    pass per operation (5-20), which dominates a step on the CPU.

    `params` and `grads` are lists of weights and their gradients (slices of the stacked ones,
    every child in them sharing `lr` and `l2`, the float learning rate and L2 to apply);
    `states` holds `state` lists, each of one state tensor per weight, zero at the first step;
    `step` is the 0-d step count (1 at the first), as in `VectorRule`.
    """

    call: Kernel
    state: int

    def __post_init__(self) -> None:
        if not callable(self.call):
            raise ValueError(f"FusedKernel.call must be callable, got {self.call!r}")
        if not isinstance(self.state, int) or isinstance(self.state, bool) or self.state < 0:
            raise ValueError(f"FusedKernel.state is a number of tensors >= 0, got {self.state!r}")


@dataclass(frozen=True)
class VectorRule:
    """An optimizer's update of one stacked weight, `update(p, g, lr, training, state, step)`,
    in place.

    `p` is the weight `(K, ...)`; `g` its gradient with each child's L2 added (torch's coupled
    weight decay) and zeroed for stopped children; `lr` and `training` the per-child learning
    rates and training mask, viewed to broadcast over `p`; `state` this weight's `state` tensors,
    shaped like `p` and zero at the first step; `step` a 0-d tensor on the device, the number of
    steps taken with this one (1 at the first; the same for every training child, since a child
    trains from the first step until it stops). Everything stays on the device: the step may be
    replayed as a CUDA graph. A stopped child's update must be exactly zero: a step proportional
    to `g` is; state carried across steps (momentum) must be masked with `training`.
    """

    update: Update
    state: int = 0
    fused: FusedKernel | None = None
    """The same update as a fused kernel, which the CPU runs instead (`FusedOptimizer`); the
    GPU keeps the rule, whose step a CUDA graph can capture."""

    def __post_init__(self) -> None:
        if not callable(self.update):
            raise ValueError(f"VectorRule.update must be callable, got {self.update!r}")
        if not isinstance(self.state, int) or isinstance(self.state, bool) or self.state < 0:
            raise ValueError(f"VectorRule.state is a number of tensors >= 0, got {self.state!r}")
        if self.fused is not None and not isinstance(self.fused, FusedKernel):
            raise ValueError(f"VectorRule.fused must be a FusedKernel or None, got {self.fused!r}")


@dataclass(frozen=True)
class Optimizer:
    """One optimizer in the two forms the trainers run."""

    reference: Reference
    """`(params, lr, l2) -> torch.optim.Optimizer`: what `train_child` steps (L2 as its
    `weight_decay`)."""
    stacked: VectorRule | StackedFactory
    """What the batched evaluator steps: a `VectorRule`, or a factory `(stacked params, configs,
    device) -> StackedOptimizer` for an implementation of its own."""

    def __post_init__(self) -> None:
        if not callable(self.reference):
            raise ValueError(f"Optimizer.reference must be callable, got {self.reference!r}")
        if not (isinstance(self.stacked, VectorRule) or callable(self.stacked)):
            raise ValueError(
                f"Optimizer.stacked must be a VectorRule or a callable (params, configs, device) "
                f"-> StackedOptimizer, got {self.stacked!r}"
            )


OPTIMIZERS: dict[str, Optimizer] = {}
"""Every registered optimizer, in registration order."""


FUSED_DEVICES = ("cpu", "cuda")
"""Where torch has fused kernels for Adam, SGD and Adagrad."""


def fastest(
    optimizer: type[torch.optim.Optimizer],
    params: Iterable[Tensor],
    *,
    fused: bool = True,
    **settings: Any,
) -> torch.optim.Optimizer:
    """`optimizer(params, **settings)` through torch's fused kernel (`fused`: it has one) where
    every param is on a device of `FUSED_DEVICES`, else through its `foreach` loop: torch's CPU
    default is a loop of its own per tensor."""
    params = list(params)
    fast = fused and all(p.device.type in FUSED_DEVICES for p in params)
    return optimizer(params, **settings, **({"fused": True} if fast else {"foreach": True}))


def register_optimizer(name: str, optimizer: Optimizer) -> None:
    """Make `optimizer` available as `ChildConfig(optimizer=name)` to both trainers."""
    if not isinstance(optimizer, Optimizer):
        raise ValueError(f"optimizer {name!r}: expected an Optimizer, got {optimizer!r}")
    registries.add(OPTIMIZERS, "optimizer", name, optimizer)


def stacked_optimizer(
    params: list[torch.Tensor], configs: Sequence[OptimizerSettings], dev: torch.device
) -> StackedOptimizer:
    """The stacked form of the children's optimizer. Children of several optimizers share one
    stack: each run of consecutive children with one optimizer gets its own form over its slice
    of the stacked weights (`SlicedOptimizers`)."""
    runs = _optimizer_runs(configs)
    if len(runs) > 1:
        return SlicedOptimizers(params, configs, runs, dev)
    kind = configs[0].optimizer
    form = OPTIMIZERS[kind].stacked
    if isinstance(form, VectorRule):
        if form.fused is not None and dev.type == "cpu":
            return FusedOptimizer(form.fused, params, configs)
        return VectorOptimizer(kind, params, configs, dev)
    return form(params, configs, dev)


def _optimizer_runs(configs: Sequence[OptimizerSettings]) -> list[slice]:
    """Consecutive children with one optimizer, as slices: [adam, adam, sgd] -> [0:2, 2:3]."""
    runs: list[slice] = []
    for _, run in groupby(c.optimizer for c in configs):
        start = runs[-1].stop if runs else 0
        runs.append(slice(start, start + len(list(run))))
    return runs


class SlicedOptimizers:
    """One stacked form per run of children sharing an optimizer, each over its run's slice of
    the stacked weights. The slices are views, so each form updates the shared stack in place,
    and a child follows its own optimizer exactly as in a stack of its own: one stack then
    serves children of every optimizer (one forward and backward pass per step instead of one
    per optimizer)."""

    def __init__(
        self,
        params: list[torch.Tensor],
        configs: Sequence[OptimizerSettings],
        runs: list[slice],
        dev: torch.device,
    ) -> None:
        self.params = params
        self.parts = []
        for run in runs:
            views = [p.detach()[run] for p in params]
            self.parts.append((run, views, stacked_optimizer(views, configs[run], dev)))

    @torch.no_grad()
    def step(self, training: torch.Tensor) -> None:
        for run, views, optimizer in self.parts:
            for view, p in zip(views, self.params, strict=True):
                view.grad = p.grad[run]
            optimizer.step(training[run])
        for p in self.params:
            p.grad = None


class VectorOptimizer:
    """The `VectorRule` of optimizer `kind` applied to stacked weights, with a learning rate and
    L2 per child."""

    def __init__(
        self,
        kind: str,
        params: list[torch.Tensor],
        configs: Sequence[OptimizerSettings],
        dev: torch.device,
    ) -> None:
        rule = registries.known(OPTIMIZERS, "optimizer", kind).stacked
        if not isinstance(rule, VectorRule):
            raise ValueError(f"optimizer {kind!r} has no VectorRule; its stacked form is {rule!r}")
        self.rule, self.params = rule, params
        self.lr = torch.tensor([c.learning_rate for c in configs], device=dev)
        self.l2 = _per_child_l2(configs, dev)
        self.state = [[torch.zeros_like(p) for _ in range(rule.state)] for p in params]
        self.t = torch.zeros((), device=dev)

    @torch.no_grad()
    def step(self, training: torch.Tensor) -> None:
        """Update the children marked in `training`; the others keep their weights: their
        gradient is zero, and the rule masks any state it carries."""
        self.t.add_(1)
        for p, state in zip(self.params, self.state, strict=True):
            g = _masked_grad(p, self.l2, training)
            self.rule.update(p, g, _per_child(self.lr, p), _per_child(training, p), state, self.t)
            p.grad = None


def _per_child(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A `(K,)` tensor viewed to broadcast over stacked weights `(K, ...)`."""
    return values.view(-1, *[1] * (like.dim() - 1))


def _per_child_l2(configs: Sequence[OptimizerSettings], dev: torch.device) -> torch.Tensor | None:
    l2 = [c.l2 for c in configs]
    return torch.tensor(l2, device=dev) if any(l2) else None


def _masked_grad(p: torch.Tensor, l2: torch.Tensor | None, training: torch.Tensor) -> torch.Tensor:
    """`p.grad` plus each child's L2 (torch's coupled weight decay), zeroed in place for
    stopped children: their gradient may be NaN (a masked loss still gives 0 * NaN upstream, as
    does L2 on non-finite weights). A training child's gradient is left as it is, inf
    included, so it diverges exactly when it would alone."""
    g = p.grad
    if l2 is not None:
        g.addcmul_(p, _per_child(l2, p))
    return g.masked_fill_(~_per_child(training, p), 0.0)


def _runs(indices: list[int]) -> list[slice]:
    """Sorted indices as slices of consecutive runs: [0, 1, 2, 5, 6] -> [0:3, 5:7]."""
    runs: list[slice] = []
    for i in indices:
        if runs and runs[-1].stop == i:
            runs[-1] = slice(runs[-1].start, i + 1)
        else:
            runs.append(slice(i, i + 1))
    return runs


# The built-in optimizers, one block each.

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


class FusedOptimizer:
    """A `FusedKernel` over stacked weights (Adam's is `torch._fused_adam_`, what
    `torch.optim.Adam(..., fused=True)` runs).

    Children sharing a learning rate and L2 are updated by one kernel call, over slices of the
    stacked weights: each run of consecutive children is one contiguous slice, so K children
    that share their rates (the evaluator puts equal rates next to each other) cost one slice
    per weight, not K small views. A child trains from the first step until it stops and never
    resumes, so every training child has taken the same number of steps: one shared step
    counter serves all of them.

    A child that has stopped keeps its weights, in one of two ways:
    - by default (the CPU), only training children are passed to the kernel; the slices are
      rebuilt when a child stops, which reads the training mask on the host;
    - with `masks_on_device` (Adam on a GPU, where the step may be captured in a CUDA graph and
      must not read the mask on the host), every child is passed, and a stopped child's gradient
      and first state (Adam's first moment) are zeroed first: a kernel whose update is
      proportional to that state, as Adam's m / (sqrt(v) + eps) is, then leaves it exactly where
      it is. L2 is added to the gradient here, per child, rather than by the kernel, so that it
      cannot give a stopped child a gradient again.
    """

    def __init__(
        self,
        kernel: FusedKernel,
        params: list[torch.Tensor],
        configs: Sequence[OptimizerSettings],
        *,
        masks_on_device: bool = False,
    ) -> None:
        self.kernel, self.params = kernel, params
        self.states = [[torch.zeros_like(p) for p in params] for _ in range(kernel.state)]
        self.t = torch.zeros((), device=params[0].device)  # the kernel reads it on the device
        self.groups: dict[tuple[float, float], list[int]] = defaultdict(list)
        for k, c in enumerate(configs):
            self.groups[(c.learning_rate, c.l2)].append(k)
        self.masks_on_device = masks_on_device
        self.l2 = _per_child_l2(configs, params[0].device) if masks_on_device else None
        self._active: tuple[bool, ...] = ()
        self._calls: list[tuple[float, float, list[slice], list[list[torch.Tensor]]]] = []
        if masks_on_device:  # every child, always: the slices are fixed
            self._slice((True,) * len(configs))

    @torch.no_grad()
    def step(self, training: torch.Tensor) -> None:
        if self.masks_on_device:
            self._zero_stopped(training)
        else:
            self._slice(tuple(training.tolist()))
        self.t.add_(1)
        for lr, weight_decay, runs, (params, *states) in self._calls:
            grads = [p.grad[run] for run in runs for p in self.params]
            self.kernel.call(params, grads, states, self.t, lr, weight_decay)
        for p in self.params:
            p.grad = None

    def _slice(self, active: tuple[bool, ...]) -> None:
        """One kernel call per rate group, over the runs of its `active` children; rebuilt
        only when `active` changes (when a child stops)."""
        if active == self._active:
            return
        self._active, self._calls = active, []
        for (lr, l2), members in self.groups.items():
            runs = _runs([k for k in members if active[k]])
            lists = [[x[run] for run in runs for x in s] for s in (self.params, *self.states)]
            if runs:  # with masks on the device, L2 is already in the gradient
                self._calls.append((lr, 0.0 if self.masks_on_device else l2, runs, lists))

    def _zero_stopped(self, training: torch.Tensor) -> None:
        """Add L2 to each gradient, then zero stopped children's gradients and first states."""
        for p, first in zip(self.params, self.states[0], strict=True):
            _masked_grad(p, self.l2, training)
            first.masked_fill_(~_per_child(training, p), 0.0)


def _fused_adam(
    params: list[Tensor],
    grads: list[Tensor],
    states: list[list[Tensor]],
    step: Tensor,
    lr: float,
    l2: float,
    betas: tuple[float, float] = ADAM_BETAS,
    eps: float = ADAM_EPS,
) -> None:
    m, v = states
    torch._fused_adam_(
        params,
        grads,
        m,
        v,
        [],
        [step] * len(params),
        lr=lr,
        beta1=betas[0],
        beta2=betas[1],
        weight_decay=l2,
        eps=eps,
        amsgrad=False,
        maximize=False,
    )


ADAM_KERNEL = FusedKernel(_fused_adam, state=2)


register_optimizer(
    "adam",
    Optimizer(
        reference=lambda params, lr, l2: fastest(
            torch.optim.Adam, params, lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=l2
        ),
        stacked=lambda params, configs, dev: FusedOptimizer(
            ADAM_KERNEL, params, configs, masks_on_device=dev.type != "cpu"
        ),
    ),
)

SGD_MOMENTUM = 0.9


def _sgd(
    p: Tensor, g: Tensor, lr: Tensor, training: Tensor, state: list[Tensor], step: Tensor
) -> None:
    """m <- 0.9 m + g;  p <- p - lr * m. A stopped child's momentum is zeroed: it would move the
    child on, and 0 * inf is NaN."""
    (m,) = state
    m.mul_(SGD_MOMENTUM).add_(g).masked_fill_(~training, 0.0)
    p.sub_(lr * m)


def _fused_sgd(
    params: list[Tensor],
    grads: list[Tensor],
    states: list[list[Tensor]],
    step: Tensor,
    lr: float,
    l2: float,
) -> None:
    """torch's own SGD kernel; the momentum starts at zero, so the first step's 0.9 * 0 + g is
    torch's first momentum g."""
    torch._fused_sgd_(
        params,
        grads,
        states[0],
        weight_decay=l2,
        momentum=SGD_MOMENTUM,
        lr=lr,
        dampening=0.0,
        nesterov=False,
        maximize=False,
        is_first_step=False,
    )


register_optimizer(
    "sgd",
    Optimizer(
        reference=lambda params, lr, l2: fastest(
            torch.optim.SGD, params, lr=lr, momentum=SGD_MOMENTUM, weight_decay=l2
        ),
        stacked=VectorRule(_sgd, state=1, fused=FusedKernel(_fused_sgd, state=1)),
    ),
)

ADAGRAD_EPS = 1e-10


def _adagrad(
    p: Tensor, g: Tensor, lr: Tensor, training: Tensor, state: list[Tensor], step: Tensor
) -> None:
    """v <- v + g^2;  p <- p - lr * g / (sqrt(v) + 1e-10)"""
    (v,) = state
    v.addcmul_(g, g)
    p.addcdiv_(g * lr, v.sqrt().add_(ADAGRAD_EPS), value=-1.0)


def _fused_adagrad(
    params: list[Tensor],
    grads: list[Tensor],
    states: list[list[Tensor]],
    step: Tensor,
    lr: float,
    l2: float,
) -> None:
    torch._fused_adagrad_(
        params,
        grads,
        states[0],
        [step] * len(params),
        lr=lr,
        lr_decay=0.0,
        weight_decay=l2,
        eps=ADAGRAD_EPS,
        maximize=False,
    )


register_optimizer(
    "adagrad",
    Optimizer(
        reference=lambda params, lr, l2: fastest(
            torch.optim.Adagrad, params, lr=lr, eps=ADAGRAD_EPS, weight_decay=l2
        ),
        stacked=VectorRule(_adagrad, state=1, fused=FusedKernel(_fused_adagrad, state=1)),
    ),
)

RMSPROP_ALPHA = 0.99
RMSPROP_EPS = 1e-8


def _rmsprop(
    p: Tensor, g: Tensor, lr: Tensor, training: Tensor, state: list[Tensor], step: Tensor
) -> None:
    """v <- 0.99 v + 0.01 g^2;  p <- p - lr * g / (sqrt(v) + 1e-8)"""
    (v,) = state
    v.mul_(RMSPROP_ALPHA).addcmul_(g, g, value=1 - RMSPROP_ALPHA)
    p.addcdiv_(g * lr, v.sqrt().add_(RMSPROP_EPS), value=-1.0)


RMSPROP_STEP = 2.0**40
"""A step count at which 0.99 ** t (and 0 ** t) is exactly 0.0 in floating point."""


def _fused_rmsprop(
    params: list[Tensor],
    grads: list[Tensor],
    states: list[list[Tensor]],
    step: Tensor,
    lr: float,
    l2: float,
) -> None:
    """RMSprop has no fused kernel; it is Adam's with beta1 = 0 (the first moment is then the
    gradient itself), beta2 = 0.99 and a step count at which both bias corrections are exactly
    1: p <- p - lr * g / (sqrt(v) + 1e-8) with v <- 0.99 v + 0.01 g^2."""
    forever = torch.full_like(step, RMSPROP_STEP)
    _fused_adam(params, grads, states, forever, lr, l2, (0.0, RMSPROP_ALPHA), RMSPROP_EPS)


register_optimizer(
    "rmsprop",
    Optimizer(
        reference=lambda params, lr, l2: fastest(
            torch.optim.RMSprop,
            params,
            fused=False,
            lr=lr,
            alpha=RMSPROP_ALPHA,
            eps=RMSPROP_EPS,
            weight_decay=l2,
        ),
        stacked=VectorRule(_rmsprop, state=1, fused=FusedKernel(_fused_rmsprop, state=2)),
    ),
)
