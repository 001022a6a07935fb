"""Activations: the elementwise functions a child's hidden layers may apply, by name.

Both trainers read `ACTIVATIONS`: `ChildNet` wraps the function in a module, the batched trainer
applies it to the stacked pre-activations `(K, batch, width)` of many children at once. Adding one
is one `register_activation` call: below, or in your own code at run time.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from mnms_env import registries

Activation = Callable[[torch.Tensor], torch.Tensor]

ACTIVATIONS: dict[str, Activation] = {}
"""Every registered activation, in registration order (the batched trainer's order too)."""


def register_activation(name: str, fn: Activation) -> None:
    """Make `fn` available as `ChildConfig(activation=name)`. It must map a float tensor of any
    shape to one of the same shape, element by element; it is tried once on a small tensor."""
    if not callable(fn):
        raise ValueError(f"activation {name!r}: {fn!r} is not callable")
    probe = torch.linspace(-3.0, 3.0, 12).view(2, 2, 3)
    out = fn(probe)
    if not isinstance(out, torch.Tensor) or out.shape != probe.shape or not out.is_floating_point():
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"activation {name!r} must map a float tensor to a float tensor of the same shape "
            f"(2, 2, 3); got {got}"
        )
    registries.add(ACTIVATIONS, "activation", name, fn)


register_activation("relu", torch.relu)
register_activation("tanh", torch.tanh)
register_activation("gelu", F.gelu)
register_activation("elu", F.elu)
register_activation("sigmoid", torch.sigmoid)
