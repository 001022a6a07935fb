"""Optimizers over stacked weights: one `torch.optim` rule applied to K children at once.

The batched evaluator keeps K children's weights as stacked tensors `(K, ...)`. These optimizers
update them with a learning rate and L2 per child, each following its `torch.optim` counterpart
with the defaults `train_child` uses, and leave a child that has stopped training untouched.
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
    """Adam on the CPU goes through torch's fused kernel; everything else, and every rule on a
    GPU (where the step may be captured in a CUDA graph), through the vectorised rules."""
    if configs[0].optimizer == "adam" and dev.type == "cpu":
        return FusedAdam(params, configs)
    return VectorOptimizer(configs[0].optimizer, params, configs, dev)


class VectorOptimizer:
    """One `torch.optim` rule (Adam, SGD with momentum 0.9, Adagrad, RMSprop; the defaults
    `train_child` uses) applied to stacked weights with a learning rate and L2 per child.

    With g = grad + l2 * p (torch's coupled weight decay), t the step and lr per child:
      adam:    m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
               p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + 1e-8)
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
        l2 = [c.l2 for c in configs]
        self.l2 = torch.tensor(l2, device=dev) if any(l2) else None
        self.m = [torch.zeros_like(p) for p in params] if kind in ("adam", "sgd") else None
        self.v = [torch.zeros_like(p) for p in params] if kind != "sgd" else None
        self.t = torch.zeros((), device=dev)  # a tensor, so a captured step can advance it

    @torch.no_grad()
    def step(self, training: torch.Tensor) -> None:
        """Update the children marked in `training`; the others keep their weights."""
        self.t.add_(1)
        lr = torch.where(training, self.lr, 0.0)
        for i, p in enumerate(self.params):
            shape = (-1,) + (1,) * (p.dim() - 1)
            # A stopped child has lr 0, but its gradient may be NaN (its loss was masked, yet
            # 0 * NaN upstream is NaN): zero non-finite gradients so 0 * g stays 0.
            g = p.grad.nan_to_num_(0.0, 0.0, 0.0)
            if self.l2 is not None:
                g = g.add_(self.l2.view(shape) * p)
            step_lr = lr.view(shape)
            if self.kind == "adam":
                m, v = self.m[i], self.v[i]
                m.lerp_(g, 1 - ADAM_BETAS[0])
                v.mul_(ADAM_BETAS[1]).addcmul_(g, g, value=1 - ADAM_BETAS[1])
                bc1, bc2 = 1 - ADAM_BETAS[0] ** self.t, 1 - ADAM_BETAS[1] ** self.t
                denom = v.sqrt().div_(bc2.sqrt()).add_(EPS["adam"])
                p.addcdiv_(m * (step_lr / bc1), denom, value=-1.0)
            elif self.kind == "sgd":
                self.m[i].mul_(SGD_MOMENTUM).add_(g)
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
    """Adam on the CPU through torch's fused kernel: one pass over each child's weights instead
    of the vectorised rule's ~9, which dominate a CPU step.

    Children sharing a learning rate and L2 are updated by one `torch._fused_adam_` call (the
    kernel `torch.optim.Adam(..., fused=True)` runs), over slices of the stacked weights: each
    run of consecutive training children is one contiguous slice, so K children that share
    their rates (the evaluator puts equal rates next to each other) cost one slice per weight,
    not K small views. Only children marked as training are passed in, so a stopped child's
    weights and state are left untouched. A child trains from the first step until it stops
    and never resumes, so every training child has taken the same number of steps: one shared
    step counter serves all bias corrections.
    """

    def __init__(self, params: list[torch.Tensor], configs: Sequence[ChildConfig]) -> None:
        self.params = params
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = torch.zeros(())
        self.groups: dict[tuple[float, float], list[int]] = defaultdict(list)
        for k, c in enumerate(configs):
            self.groups[(c.learning_rate, c.l2)].append(k)
        self._active: tuple[bool, ...] = ()
        self._calls: list[tuple[float, float, list[slice], list[list[torch.Tensor]]]] = []

    @torch.no_grad()
    def step(self, training: torch.Tensor) -> None:
        active = tuple(training.tolist())
        if active != self._active:  # the slices change only when a child stops
            self._active, self._calls = active, []
            for (lr, l2), members in self.groups.items():
                runs = _runs([k for k in members if active[k]])
                lists = [[x[run] for run in runs for x in s] for s in (self.params, self.m, self.v)]
                if runs:
                    self._calls.append((lr, l2, runs, lists))
        self.t.add_(1)
        for lr, l2, runs, (params, m, v) in self._calls:
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
                weight_decay=l2,
                eps=EPS["adam"],
                amsgrad=False,
                maximize=False,
            )
        for p in self.params:
            p.grad = None


def _runs(indices: list[int]) -> list[slice]:
    """Sorted indices as slices of consecutive runs: [0, 1, 2, 5, 6] -> [0:3, 5:7]."""
    runs: list[slice] = []
    for i in indices:
        if runs and runs[-1].stop == i:
            runs[-1] = slice(runs[-1].start, i + 1)
        else:
            runs.append(slice(i, i + 1))
    return runs
