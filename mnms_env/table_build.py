"""Building tables: every config of a space trained for a task with several seeds.

`mnms tables build TASK... --out DIR` runs `build_tables`. Children train with the
`BatchedEvaluator` in chunks of compatible children, each chunk recorded in a results store
(`DIR/build.sqlite` unless `store=`) before the next starts, so an interrupted build resumes
where it stopped and a table rebuilt in a later format trains nothing. A table covers the
options this machine can train (`space.masks`): MiniLM children only with the `encoder` extra.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

import mnms_env
from mnms_env.batched import BatchedEvaluator, batch_group
from mnms_env.child import device_name
from mnms_env.evaluate import CachedEvaluator
from mnms_env.records import ChildRequest, check_budget
from mnms_env.space import SearchSpace
from mnms_env.store import ResultStore
from mnms_env.table import Table, benchmark_space, enumerate_configs, table_file
from mnms_env.tasks import check_task, make_task, task_list

BUILTIN_TABLE_TASKS = (
    "wine",
    "breast-cancer",
    "digits",
    "word-sentiment-en",
    "word-sentiment-da",
    "langid-es",
    "langid-de",
    "langid-fr",
    "langid-pt",
    "langid-it",
    "langid-nl",
    "langid-sv",
    "langid-pl",
)
DATASET_TABLE_TASKS = (
    "sst2",
    "sst5",
    "mr",
    "subj",
    "trec",
    "cr",
    "mpqa",
    "imdb",
    "sentiment-es",
    "sentiment-de",
    "sentiment-fr",
    "tweet-emotion",
    "tweet-irony",
)
"""The tasks whose tables ship: the built-in ones, and the named datasets (built from
`MNMS_DATA_DIR`; `mnms tables list` shows which are built so far)."""

Progress = Callable[[str, int, int, int, float], None]
"""`(task, children done, of all, trained so far, seconds)` after each chunk."""


def build_table(
    task: str,
    *,
    space: SearchSpace,
    seeds: Sequence[int],
    budget: int,
    evaluator: BatchedEvaluator,
    store: ResultStore,
    chunk: int = 64,
    progress: Progress | None = None,
) -> Table:
    """Train (or read from `store`) every config of `space` for `task` with every seed."""
    data = make_task(task)
    covers = space.masks(data.modality)
    configs = enumerate_configs(space, data.modality, covers)
    requests = [
        ChildRequest.for_task(data, c, seed=s, budget=budget) for c in configs for s in seeds
    ]
    cache = CachedEvaluator(evaluator, store)
    order = sorted(range(len(requests)), key=lambda i: batch_group(requests[i]))
    results = [None] * len(requests)
    started, trained = time.perf_counter(), 0
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        for i, child in zip(part, cache.children([requests[i] for i in part]), strict=True):
            results[i] = child.result
            trained += not child.cached
        if progress is not None:
            done = min(start + chunk, len(order))
            progress(task, done, len(order), trained, time.perf_counter() - started)
    shape = (len(configs), len(seeds))

    def column(name: str) -> np.ndarray:
        return np.array([getattr(r, name) for r in results]).reshape(shape)

    return Table(
        card=data.card,
        budget=budget,
        seeds=tuple(seeds),
        space=space,
        configs=tuple(configs),
        val=column("val_accuracy"),
        test=column("test_accuracy"),
        seconds=column("seconds"),
        diverged=column("diverged"),
        best_epoch=column("best_epoch"),
        parameters=column("parameters")[:, 0],
        covers=covers,
        meta={
            "device": results[0].device,
            "device_name": _device_name(evaluator),
            "package_version": mnms_env.__version__,
            "torch": torch.__version__,
            "built": datetime.date.today().isoformat(),
        },
    )


def build_tables(
    tasks: Sequence[str],
    out: str | Path,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    budget: int = 1,
    device: str | None = None,
    store: str | Path | None = None,
    chunk: int = 64,
    progress: Progress | None = None,
) -> dict[str, Path]:
    """Build the table of each task over `benchmark_space()` into `out` (`table_file`)."""
    if not seeds or sorted(seeds) != list(range(len(seeds))):
        raise ValueError(
            f"seeds must be 0 .. n-1 (each once; the table backend draws a child's seed from "
            f"them, so another one would never be read), got {list(seeds)}"
        )
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1 children per batched call, got {chunk}")
    check_budget(budget)  # before the store is made: a refused build leaves nothing behind
    tasks = task_list(tasks)
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"tasks repeats a task (its table would be built twice): {list(tasks)}")
    for task in tasks:  # a misspelt last task is named before hours of training the first
        check_task(task)
    evaluator = BatchedEvaluator(device=device)
    results = ResultStore(store or Path(out) / "build.sqlite")
    written = {}
    for task in tasks:
        table = build_table(
            task,
            space=benchmark_space(),
            seeds=seeds,
            budget=budget,
            evaluator=evaluator,
            store=results,
            chunk=chunk,
            progress=progress,
        )
        written[task] = table_file(out, task)
        table.save(written[task])
    return written


def _device_name(evaluator: BatchedEvaluator) -> str:
    name = device_name(evaluator.device)
    return name if evaluator.device.type == "cuda" else f"{name}, {torch.get_num_threads()} threads"
