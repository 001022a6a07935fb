"""MNMS for your own objective: the controller (`MNMSAskTell`) as a Ray Tune search algorithm
(`MNMSSearcher`) and as an Optuna sampler (`MNMSSampler`), from scratch or transferred from a
checkpoint. Each is imported when first named, so one works without the other's package."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["MNMSSampler", "MNMSSearcher"]

_MODULES = {
    "MNMSSampler": "agents.integrations.optuna_sampler",
    "MNMSSearcher": "agents.integrations.tune",
}


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_MODULES[name]), name)
