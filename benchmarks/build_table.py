"""Build benchmark tables: train every config of `benchmark_space()` on tasks, several seeds.

    python benchmarks/build_table.py --tasks wine digits --out runs/tables
    python benchmarks/build_table.py --out mnms_env/data/tables     # the shipped built-ins
    python benchmarks/build_table.py --out mnms_env/data/tables --summary-only \
        --summary docs/benchmarks/tables.md                         # what the tables hold
    MNMS_DATA_DIR=../shared/data python benchmarks/build_table.py --tasks sst2 --out runs/tables

Children are trained with the `BatchedEvaluator` (real training, `--budget` epochs) in chunks of
compatible children, each chunk recorded in a results store (`OUT/build.sqlite` unless
`--store`) before the next starts, so an interrupted build resumes where it stopped. When every
config has every seed, `OUT/<task>.npz` is written (see `mnms_env.table.Table`) and can be used
with `gym.make("mnms_env:MNMS-v0", task=..., backend="table", table_dir=OUT)`.
"""

from __future__ import annotations

import argparse
import datetime
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from controllers import markdown_table

import mnms_env
from mnms_env import BatchedEvaluator, ChildRequest, ResultStore, SearchSpace, make_task
from mnms_env.batched import batch_group
from mnms_env.child import device_name
from mnms_env.evaluate import CachedEvaluator
from mnms_env.table import Table, benchmark_space, enumerate_configs

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


def build_table(
    task: str,
    *,
    space: SearchSpace,
    seeds: Sequence[int],
    budget: int,
    evaluator: BatchedEvaluator,
    store: ResultStore,
    chunk: int = 64,
) -> Table:
    """Train (or read from `store`) every config of `space` for `task` with every seed."""
    data = make_task(task)
    configs = enumerate_configs(space, data.modality)
    requests = [
        ChildRequest.for_task(data, c, seed=s, budget=budget) for c in configs for s in seeds
    ]
    cache = CachedEvaluator(evaluator, store)
    order = sorted(range(len(requests)), key=lambda i: batch_group(requests[i]))
    results = [None] * len(requests)
    started, trained = time.perf_counter(), 0
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        children = cache.children([requests[i] for i in part])
        for i, child in zip(part, children, strict=True):
            results[i] = child.result
            trained += not child.cached
        done = min(start + chunk, len(order))
        print(
            f"\r{task}: {done}/{len(order)} children ({trained} trained, "
            f"{time.perf_counter() - started:.0f} s)",
            end="",
            flush=True,
        )
    print()
    shape = (len(configs), len(seeds))

    def column(name: str) -> np.ndarray:
        return np.array([getattr(r, name) for r in results]).reshape(shape)

    return Table(
        task=task,
        fingerprint=data.fingerprint,
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
        meta={
            "device": results[0].device,
            "device_name": _device_name(evaluator),
            "package_version": mnms_env.__version__,
            "torch": torch.__version__,
            "built": datetime.date.today().isoformat(),
        },
    )


def _device_name(evaluator: BatchedEvaluator) -> str:
    name = device_name(evaluator.device)
    return name if evaluator.device.type == "cuda" else f"{name}, {torch.get_num_threads()} threads"


def main(argv: list[str] | None = None) -> dict[str, Path]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(BUILTIN_TABLE_TASKS))
    parser.add_argument("--out", type=Path, default=Path("runs/tables"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget", type=int, default=1, help="epochs per child")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if present)")
    parser.add_argument("--store", type=Path, default=None, help="default: OUT/build.sqlite")
    parser.add_argument("--chunk", type=int, default=64, help="children per batched call")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--summary", type=Path, default=None, help="also write a markdown summary of the tables"
    )
    parser.add_argument(
        "--summary-only",
        action="store_true",
        help="train nothing: summarise the tables already in OUT into --summary",
    )
    args = parser.parse_args(argv)
    if args.summary_only:
        if args.summary is None:
            parser.error("--summary-only needs --summary PATH")
        written = {task: args.out / f"{task}.npz" for task in args.tasks}
        write_summary(written, args.summary)
        return written
    if len(args.seeds) < 1 or len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds must be distinct, got {args.seeds}")
    if args.threads:
        torch.set_num_threads(args.threads)
    evaluator = BatchedEvaluator(device=args.device)
    store = ResultStore(args.store or args.out / "build.sqlite")
    written = {}
    for task in args.tasks:
        table = build_table(
            task,
            space=benchmark_space(),
            seeds=args.seeds,
            budget=args.budget,
            evaluator=evaluator,
            store=store,
            chunk=args.chunk,
        )
        path = args.out / f"{task}.npz"
        table.save(path)
        best = table.mean_val().max()
        print(f"{path}: {len(table.configs)} configs x {len(table.seeds)} seeds, best {best:.4f}")
        written[task] = path
    if args.summary is not None:
        write_summary(written, args.summary)
    return written


def write_summary(tables: dict[str, Path], path: Path) -> None:
    missing = [str(p) for p in tables.values() if not p.exists()]
    if missing:
        raise SystemExit(f"no table at {missing}; build them first")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(summary_markdown([Table.load(p) for p in tables.values()]))


def summary_markdown(tables: Sequence[Table]) -> str:
    """One row per table: size, the best config and how hard it is to find, the seed noise."""
    header = ["task", "configs x seeds", "best (seed mean)", "best config", "median config"]
    header += ["configs within 1% of best", "seed std (mean)", "training seconds"]
    rows = []
    for t in tables:
        quality = t.mean_val()
        rows.append(
            [t.task, f"{len(t.configs)} x {len(t.seeds)}", f"{quality.max():.4f}"]
            + [t.configs[int(quality.argmax())].describe(), f"{np.median(quality):.4f}"]
            + [f"{np.mean(quality >= 0.99 * quality.max()):.1%}"]
            + [f"{t.val.std(axis=1).mean():.4f}", f"{t.seconds.sum():.0f}"]
        )
    return markdown_table(header, rows)


if __name__ == "__main__":
    main()
