"""A cheap, deterministic `Evaluator` for controller tests: a per-task score table, no training.

Each task has a known best config (`optima`); a child's validation accuracy grows with the number
of decisions it shares with its task's optimum, so the optimum is the unique maximum and tasks
with different optima want different children. It returns real `ChildResult`s, so it runs behind
the real env and results store.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mnms_env import ChildRequest, ChildResult, Decision, Evaluator, SearchSpace

SMALL_SPACE = SearchSpace(
    (
        Decision("representation", ("word-hash", "char-hash", "embedding-bag", "raw")),
        Decision("representation_size", (1024, 4096, 16384)),
        Decision("hidden_layers", (0, 1, 2)),
        Decision("width", (16, 32, 64, 128)),
        Decision("learning_rate", (1e-3, 1e-2)),
    )
)
"""162 distinct text children (`raw` is masked out for text tasks; without hidden layers the
width does not matter), 5 decisions: fast to search."""

FLOOR = 0.3
"""Validation accuracy of a child that shares nothing with its task's optimum."""


def score(config: Mapping[str, Any], optimum: Mapping[str, Any]) -> float:
    """FLOOR plus up to 0.6, linear in the fraction of `optimum`'s fields that `config` matches."""
    matches = sum(config[name] == value for name, value in optimum.items())
    return FLOOR + 0.6 * matches / len(optimum)


class OptimumEvaluator(Evaluator):
    """Scores each request against its task's optimum (`optima[task]`: field -> value).

    `log` appends every request it answers (task, config, seed, budget) as a JSON line, for tests
    that check no child is trained twice. `hang_at=k` blocks forever before answering the k-th
    request (1-based), after touching `log.with_suffix(".hang")`, so a test can kill the
    process at a known point in the middle of an update.
    """

    def __init__(
        self,
        optima: Mapping[str, Mapping[str, Any]],
        *,
        log: str | Path | None = None,
        hang_at: int | None = None,
    ) -> None:
        self.optima = {task: dict(optimum) for task, optimum in optima.items()}
        self.log = Path(log) if log is not None else None
        self.hang_at = hang_at
        self.answered = 0

    def stream(self, requests: Sequence[ChildRequest]) -> Iterator[tuple[int, ChildResult]]:
        for i, request in enumerate(requests):
            self.answered += 1
            if self.hang_at is not None and self.answered == self.hang_at and self.log:
                self.log.with_suffix(".hang").touch()
                while True:
                    time.sleep(1)
            val = score(asdict(request.config), self.optima[request.task])
            result = ChildResult(val, val - 0.05, 0.0, 1, "table", False, request.budget)
            if self.log is not None:
                line = {
                    "task": request.task,
                    "config": request.config.to_json(),
                    "seed": request.seed,
                    "budget": request.budget,
                }
                with self.log.open("a") as f:
                    f.write(json.dumps(line) + "\n")
            yield i, result
