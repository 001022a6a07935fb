"""`mnms tables`: build benchmark tables for any task, and list the tables a search can use.

mnms tables build sst2 jsonl:/data/mine --out tables     # then MNMS_TABLE_DIR=tables
mnms tables list                                         # shipped, $MNMS_TABLE_DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from agents.arguments import positive_int
from mnms_env.table import TableError, available_tables, load_table, table_dirs
from mnms_env.table_build import build_tables


def add_tables_parser(commands: Any) -> None:
    tables = commands.add_parser(
        "tables",
        help="build or list benchmark tables",
        description="Tables hold every config of benchmark_space() trained for one task with "
        "several seeds; `mnms search --backend table` looks rewards up in them.",
    )
    actions = tables.add_subparsers(dest="tables_command", required=True)
    build = actions.add_parser(
        "build",
        help="train every config of benchmark_space() for tasks (resumable)",
        description="Train every config of benchmark_space() for each task with every seed "
        "(batched real training) and write OUT/<task>.npz. Every child is recorded in a results "
        "store as it finishes, so an interrupted build resumes where it stopped.",
    )
    add = build.add_argument
    add("tasks", nargs="+", help="task names, jsonl:PATH or csv:PATH")
    add("--out", type=Path, required=True, help="table directory (use it as MNMS_TABLE_DIR)")
    add("--seeds", type=int, nargs="+", default=[0, 1, 2], help="child seeds (default 0 1 2)")
    add("--budget", type=positive_int, default=1, help="training epochs per child (default 1)")
    add("--device", help="torch device for the children (default: cuda if present, else cpu)")
    add("--store", type=Path, help="results store (default OUT/build.sqlite)")
    add("--chunk", type=positive_int, default=64, help="children per batched call (default 64)")
    listing = actions.add_parser("list", help="the tables a search finds, with their tasks")
    listing.add_argument("--table-dir", type=Path, help="a directory searched first")


def run_tables(args: argparse.Namespace) -> int:
    if args.tables_command == "build":
        options = ("seeds", "budget", "device", "store", "chunk")
        build(args.tasks, args.out, **{name: getattr(args, name) for name in options})
        return 0
    print("looked for in: " + ", ".join(str(d) for d in table_dirs(args.table_dir)))
    for task in available_tables(args.table_dir):
        try:
            table = load_table(task, args.table_dir)
        except TableError as err:  # one broken file hides none of the others
            print(f"{task:24} not searchable: {err}")
            continue
        card = table.card
        print(
            f"{task:24} {card.modality:8} {card.num_classes:>3} classes  "
            f"{len(table.configs):>5} configs x {len(table.seeds)} seeds  budget {table.budget}"
        )
    return 0


def build(tasks: list[str], out: Path, **options: Any) -> dict[str, Path]:
    """`build_tables` with a progress line per task and each table's best config reported."""
    written = build_tables(tasks, out, progress=print_progress, **options)
    for task, path in written.items():
        table = load_table(task, out)
        best = int(table.mean_val().argmax())
        print(f"{path}: {len(table.configs)} configs x {len(table.seeds)} seeds, best "
              f"{table.mean_val()[best]:.4f} ({table.configs[best].describe()})")  # fmt: skip
    return written


def print_progress(task: str, done: int, total: int, trained: int, seconds: float) -> None:
    """One line per task, rewritten after each batched call."""
    end = "\n" if done == total else ""
    print(f"\r{task}: {done}/{total} children ({trained} trained, {seconds:.0f} s)", end=end)
