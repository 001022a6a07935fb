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
    shape to a new one of the same shape and dtype, element by element: the batched trainer
    applies it to many children's zero-padded layers at once and keeps its input for the
    children that stop at a shallower depth. It is tried on a small tensor, and refused if it
    breaks any of that."""
    if not callable(fn):
        raise ValueError(f"activation {name!r}: {fn!r} is not callable")
    probe = torch.linspace(-3.0, 3.0, 12).view(2, 2, 3)
    given = probe.clone()
    out = fn(given)
    if not isinstance(out, torch.Tensor) or out.shape != probe.shape or out.dtype != probe.dtype:
        got = (out.dtype, tuple(out.shape)) if isinstance(out, torch.Tensor) else type(out)
        raise ValueError(
            f"activation {name!r} must map a float32 tensor of shape (2, 2, 3) to one of the "
            f"same dtype and shape; got {got}"
        )
    if not torch.equal(given, probe):
        raise ValueError(f"activation {name!r} changed its input: it must not work in place")
    one_by_one = torch.stack([fn(x.reshape(1)).reshape(()) for x in probe.flatten()])
    if not torch.allclose(out.flatten(), one_by_one, atol=1e-6, equal_nan=True):
        raise ValueError(
            f"activation {name!r} is not element by element: its output for an element "
            "depends on the others"
        )
    registries.add(ACTIVATIONS, "activation", name, fn)


register_activation("relu", torch.relu)
register_activation("tanh", torch.tanh)
register_activation("gelu", F.gelu)
register_activation("elu", F.elu)
register_activation("sigmoid", torch.sigmoid)
