"""Optimizers over stacked weights: one `torch.optim` rule applied to K children at once.

The batched evaluator keeps K children's weights as stacked tensors `(K, ...)`. These optimizers
update them with a learning rate and L2 per child, each following its `torch.optim` counterpart
with the defaults `train_child` uses, and leave the weights of a child that has stopped untouched.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch

from mnms_env.space import ChildConfig

ADAM_BETAS = (0.9, 0.999)
SGD_MOMENTUM = 0.9
RMSPROP_ALPHA = 0.99
EPS = {"adam": 1e-8, "sgd": 0.0, "adagrad": 1e-10, "rmsprop": 1e-8}


def stacked_optimizer(
    params: list[torch.Tensor], configs: Sequence[ChildConfig], dev: torch.device
) -> VectorOptimizer | FusedAdam:
    """Adam goes through torch's fused kernel; SGD, Adagrad and RMSprop through the vectorised
    rules."""
    if configs[0].optimizer == "adam":
        return FusedAdam(params, configs, masks_on_device=dev.type != "cpu")
    return VectorOptimizer(configs[0].optimizer, params, configs, dev)


class VectorOptimizer:
    """One `torch.optim` rule (SGD with momentum 0.9, Adagrad, RMSprop; the defaults
    `train_child` uses) applied to stacked weights with a learning rate and L2 per child.

    With g = grad + l2 * p (torch's coupled weight decay) and lr per child:
      sgd:     m <- 0.9 m + g;  p <- p - lr * m
      adagrad: v <- v + g^2;  p <- p - lr * g / (sqrt(v) + 1e-10)
      rmsprop: v <- 0.99 v + 0.01 g^2;  p <- p - lr * g / (sqrt(v) + 1e-8)
    """

    def __init__(
        self,
        kind: str,
        params: list[torch.Tensor],
        configs: Sequence[ChildConfig],
        dev: torch.device,
    ) -> None:
        self.kind, self.params = kind, params
        self.lr = torch.tensor([c.learning_rate for c in configs], device=dev)
        self.l2 = _per_child_l2(configs, dev)
        self.m = [torch.zeros_like(p) for p in params] if kind == "sgd" else None
        self.v = [torch.zeros_like(p) for p in params] if kind != "sgd" else None

    @torch.no_grad()
    def step(self, training: torch.Tensor) -> None:
        """Update the children marked in `training`; the others keep their weights: their
        gradient (and SGD's momentum) is zero, so every rule's update is exactly zero."""
        for i, p in enumerate(self.params):
            g = _masked_grad(p, self.l2, training)
            step_lr = _per_child(self.lr, p)
            if self.kind == "sgd":  # a stopped child's momentum is zeroed: 0 * inf is NaN
                self.m[i].mul_(SGD_MOMENTUM).add_(g).masked_fill_(~_per_child(training, p), 0.0)
                p.sub_(step_lr * self.m[i])
            else:
                v = self.v[i]
                if self.kind == "adagrad":
                    v.addcmul_(g, g)
                else:
                    v.mul_(RMSPROP_ALPHA).addcmul_(g, g, value=1 - RMSPROP_ALPHA)
                p.addcdiv_(g * step_lr, v.sqrt().add_(EPS[self.kind]), value=-1.0)
            p.grad = None


class FusedAdam:
    """Adam through torch's fused kernel (`torch._fused_adam_`, what `torch.optim.Adam(...,
    fused=True)` runs): one pass over each weight instead of the ~20 that Adam written as
    tensor operations takes, which dominate a step on the CPU and a large-K step on a GPU.

    Children sharing a learning rate and L2 are updated by one kernel call, over slices of the
    stacked weights: each run of consecutive children is one contiguous slice, so K children
    that share their rates (the evaluator puts equal rates next to each other) cost one slice
    per weight, not K small views. A child trains from the first step until it stops and never
    resumes, so every training child has taken the same number of steps: one shared step
    counter serves all bias corrections.

    A child that has stopped keeps its weights, in one of two ways:
    - by default (the CPU), only training children are passed to the kernel; the slices are
      rebuilt when a child stops, which reads the training mask on the host;
    - with `masks_on_device` (a GPU, where the step may be captured in a CUDA graph and must not
      read the mask on the host), every child is passed, and a stopped child's gradient and
      first moment are zeroed first: Adam's update m / (sqrt(v) + eps) is then exactly zero.
      L2 is added to the gradient here, per child, rather than by the kernel, so that it
      cannot give a stopped child a gradient again.
    """

    def __init__(
        self,
        params: list[torch.Tensor],
        configs: Sequence[ChildConfig],
        *,
        masks_on_device: bool = False,
    ) -> None:
        self.params = params
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
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
        for lr, weight_decay, runs, (params, m, v) in self._calls:
            torch._fused_adam_(
                params,
                [p.grad[run] for run in runs for p in self.params],
                m,
                v,
                [],
                [self.t] * len(params),
                lr=lr,
                beta1=ADAM_BETAS[0],
                beta2=ADAM_BETAS[1],
                weight_decay=weight_decay,
                eps=EPS["adam"],
                amsgrad=False,
                maximize=False,
            )
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
            lists = [[x[run] for run in runs for x in s] for s in (self.params, self.m, self.v)]
            if runs:  # with masks on the device, L2 is already in the gradient
                self._calls.append((lr, 0.0 if self.masks_on_device else l2, runs, lists))

    def _zero_stopped(self, training: torch.Tensor) -> None:
        """Add L2 to each gradient, then zero stopped children's gradients and first moments."""
        for p, m in zip(self.params, self.m, strict=True):
            _masked_grad(p, self.l2, training)
            m.masked_fill_(~_per_child(training, p), 0.0)


def _per_child(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A `(K,)` tensor viewed to broadcast over stacked weights `(K, ...)`."""
    return values.view(-1, *[1] * (like.dim() - 1))


def _per_child_l2(configs: Sequence[ChildConfig], dev: torch.device) -> torch.Tensor | None:
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
