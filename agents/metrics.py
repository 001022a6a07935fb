"""Search metrics on a run's `History`: best-so-far curves, their area, children to a target,
regret against a table and average ranks across problems.

Curves are indexed by the children of one task in the order they were designed, so runs that
interleave tasks compare per task on the same number of children (the runner gives every task
the same).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy.stats import rankdata

from agents.runner import History
from mnms_env import Table


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


def incumbent_regret(history: History, task: str, table: Table) -> np.ndarray:
    """Normalised regret after each child of `task`: how far the incumbent (the child with the
    best validation accuracy so far, the first of equals) is from the table's best config, over
    the table's range, both in seed-mean validation accuracy. 0 is the best config; a lucky seed
    of a worse config does not count as finding the best."""
    quality = table.mean_val()
    best, worst = float(quality.max()), float(quality.min())
    children = history.of_task(task)
    rows = [table.row(c.request.config) for c in children]
    found, best_reward, incumbent = [], -np.inf, 0
    for i, child in enumerate(children):
        if child.result.val_accuracy > best_reward:  # strictly: the first of equals stays
            best_reward, incumbent = child.result.val_accuracy, i
        found.append(quality[rows[incumbent]])
    found = np.asarray(found)
    if best == worst:  # every config is the best: nothing to regret
        return np.zeros(len(found))
    return (best - found) / (best - worst)


def average_ranks(regrets: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """HPO-B's average rank: per problem (a row: one task and seed) and number of children, the
    controllers ranked by regret (1 the lowest, ties sharing their mean rank), then averaged
    over the problems. `regrets[controller]` is `(problems, children)`, rows aligned."""
    names = list(regrets)
    stacked = np.stack([regrets[n] for n in names])  # (controllers, problems, children)
    ranks = rankdata(stacked, axis=0)
    return {name: ranks[i].mean(axis=0) for i, name in enumerate(names)}
