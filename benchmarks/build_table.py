"""Build the shipped tables and summarise them: `mnms tables build` with the shipped defaults.

    python benchmarks/build_table.py --out mnms_env/data/tables     # the built-in tasks
    MNMS_DATA_DIR=../shared/data python benchmarks/build_table.py --datasets \
        --out mnms_env/data/tables --store runs/tables/build.sqlite   # the 13 named datasets
    python benchmarks/build_table.py --out mnms_env/data/tables --summary-only \
        --summary docs/benchmarks/tables.md                         # what the tables hold

The tables are built by `mnms_env.table_build.build_tables` (see there: batched real training,
resumable through its results store); this script adds the defaults and the markdown summary.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from controllers import markdown_table

from agents.arguments import distinct, positive_int
from agents.tables_cli import build
from mnms_env.table import Table, table_file
from mnms_env.table_build import BUILTIN_TABLE_TASKS, DATASET_TABLE_TASKS


def main(argv: list[str] | None = None) -> dict[str, Path]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=None, help="default: the built-in tasks")
    parser.add_argument("--datasets", action="store_true", help="the 13 named-dataset tasks")
    parser.add_argument("--out", type=Path, default=Path("runs/tables"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget", type=positive_int, default=1, help="epochs per child")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if present)")
    parser.add_argument("--store", type=Path, default=None, help="default: OUT/build.sqlite")
    parser.add_argument("--chunk", type=positive_int, default=64, help="children per batched call")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--summary", type=Path, default=None, help="also write a markdown summary of the tables"
    )
    parser.add_argument(
        "--summary-only",
        action="store_true",
        help="train nothing: summarise the tables already in OUT into --summary",
    )
    args = parser.parse_args(argv)
    distinct(parser, "--tasks", args.tasks)
    if args.tasks and args.datasets:
        parser.error("pass --tasks or --datasets, not both")
    tasks = args.tasks or list(DATASET_TABLE_TASKS if args.datasets else BUILTIN_TABLE_TASKS)
    if args.summary_only:
        if args.summary is None:
            parser.error("--summary-only needs --summary PATH")
        written = {task: table_file(args.out, task) for task in tasks}
        write_summary(written, args.summary)
        return written
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    options = {"seeds": args.seeds, "budget": args.budget, "device": args.device}
    try:
        written = build(tasks, args.out, store=args.store, chunk=args.chunk, **options)
    except ValueError as err:
        parser.error(str(err))
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
    header = ["task", "configs x seeds", "best (seed mean)", "best config", "median (seed mean)"]
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
