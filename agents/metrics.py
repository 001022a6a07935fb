"""Search metrics on a run's `History`: best-so-far curves, their area, children to a target.

Curves are indexed by the children of one task in the order they were designed, so runs that
interleave tasks compare per task on the same number of children (the runner gives every task
the same).
"""

from __future__ import annotations

import numpy as np

from agents.runner import History


def best_so_far(history: History, task: str) -> np.ndarray:
    """Best validation accuracy of `task` after each of its children."""
    values = [c.result.val_accuracy for c in history.of_task(task)]
    return np.maximum.accumulate(np.asarray(values, dtype=float))


def area_under_curve(curve: np.ndarray) -> float:
    """Mean of a best-so-far curve: the final best when the first child already found it, lower
    the later the best values came."""
    return float(np.mean(curve))


def children_to_reach(curve: np.ndarray, target: float) -> int | None:
    """Children (1-based) until the curve first reaches `target`; None if it never does."""
    hits = np.flatnonzero(curve >= target)
    return int(hits[0]) + 1 if len(hits) else None


def speedup(reference: np.ndarray, curve: np.ndarray) -> float | None:
    """How many times fewer children `curve` needs to reach `reference`'s final best (the
    transfer paper's headline metric); None if it never reaches it."""
    needed = children_to_reach(curve, float(reference[-1]))
    reference_needed = children_to_reach(reference, float(reference[-1]))
    return None if needed is None else reference_needed / needed
