"""What a checkpoint costs per update as a run grows: the history inside it, or in a file beside it.

    python benchmarks/checkpoint_cost.py --children 200 3000 20000 --out docs/benchmarks

One MNMS run on the benchmark tables (rewards in microseconds, so the bookkeeping is what is
measured), sampled as `mnms search` does (one sub-env per child of an update) and checkpointed
after every update in the current layout. At each of `--children` it times `--window` more
updates, each saved in both layouts:

- `history inside` (format 1, the layout before): one file holding the whole history, rewritten
  at every update, so its size grows with the run;
- `history file` (format 2, `MNMS.save`): the checkpoint without the history, plus the update's
  own children appended to `checkpoint.pt.history.jsonl` (both fsync'd, which the layout before
  did not do).

Per layout and length, the median over the window: bytes written per update, seconds per save
and per update (update plus save); and what the checkpoint holds (bytes of each part, each
pickled alone). Writes `checkpoint_cost.json`.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

from agents.arguments import distinct, positive_int, seed_int
from agents.cli import PAPER_PAIR
from agents.mnms import MNMS, MNMSConfig
from agents.mnms.checkpoint import HISTORY_INSIDE, checkpoint_state
from agents.mnms.history import history_path

LAYOUTS = ("history inside", "history file")
PARTS = ("controller", "optimizer", "replay")
"""The checkpoint's parts reported apart; the rest (embeddings, baselines, RNG, ...) together."""


def write_history_inside(agent: MNMS, path: Path) -> None:
    """The layout before (format 1), written as it was: the whole history inside the checkpoint,
    through a `.partial` file renamed into place."""
    history = [r.to_dict() for r in agent.history]
    state = {**checkpoint_state(agent), "format": HISTORY_INSIDE, "history": history}
    partial = path.with_name(path.name + ".partial")
    torch.save(state, partial)
    os.replace(partial, path)


def timed_update(agent: MNMS, folder: Path) -> dict[str, dict[str, float]]:
    """One update, then a save in each layout under `folder`: per layout, what the save wrote
    and how long the update and the save took."""
    start = time.perf_counter()
    agent.learn(agent.config.batch_size)
    update = time.perf_counter() - start
    inside, path = folder / "inside.pt", folder / "checkpoint.pt"
    history = history_path(path)
    before = history.stat().st_size
    start = time.perf_counter()
    write_history_inside(agent, inside)
    middle = time.perf_counter()
    agent.save(path)
    end = time.perf_counter()
    appended = history.stat().st_size - before
    saves = {
        "history inside": (inside.stat().st_size, 0, middle - start),
        "history file": (path.stat().st_size, appended, end - middle),
    }
    return {
        layout: {
            "bytes_written_per_update": checkpoint + appended,
            "checkpoint_bytes": checkpoint,
            "history_bytes_appended": appended,
            "save_seconds": seconds,
            "update_seconds": update,
            "seconds_per_update": update + seconds,
        }
        for layout, (checkpoint, appended, seconds) in saves.items()
    }


def parts(agent: MNMS) -> dict[str, int]:
    """Bytes of each part of the checkpoint (without the history), each pickled alone."""
    sizes = {}
    state = checkpoint_state(agent)
    for name in PARTS:
        buffer = io.BytesIO()
        torch.save(state.pop(name), buffer)
        sizes[name] = buffer.tell()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return {**sizes, "rest": buffer.tell()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--tasks", nargs="+", default=list(PAPER_PAIR))
    add("--children", nargs="+", type=positive_int, default=[200, 3000, 20000])
    add("--window", type=positive_int, default=11, help="updates timed at each length")
    add("--seed", type=seed_int, default=0)
    add("--out", type=Path, default=Path("runs/benchmarks"))
    args = parser.parse_args(argv)
    distinct(parser, "--children", args.children)
    args.out.mkdir(parents=True, exist_ok=True)
    env = gym.make_vec(  # one sub-env per child of an update, as `mnms search` samples them
        "mnms_env:MNMS-v2",
        num_envs=math.gcd(MNMSConfig.batch_size, *args.children),
        vectorization_mode="vector_entry_point",
        backend="table",
        tasks=args.tasks,
    )
    agent = MNMS(env, seed=args.seed)
    rows, started = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for children in sorted(args.children):
            agent.learn(max(0, children - agent.num_children), checkpoint=folder / "checkpoint.pt")
            at, entries, sizes = agent.num_children, len(agent.replay), parts(agent)
            timed = [timed_update(agent, folder) for _ in range(args.window)]
            for layout in LAYOUTS:
                samples = [t[layout] for t in timed]
                medians = {k: statistics.median_low(t[k] for t in samples) for k in samples[0]}
                row = {"children": at, "layout": layout, **medians}
                rows.append({**row, "replay_entries": entries, "parts_bytes": sizes})
                print(_line(row), flush=True)
    env.close()
    report = {
        "tasks": args.tasks,
        "backend": "table",
        "batch_size": agent.config.batch_size,
        "replay_capacity": agent.config.replay_capacity,
        "window": args.window,
        "seed": args.seed,
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"),
        "wall_seconds": time.perf_counter() - started,
        "rows": rows,
    }
    (args.out / "checkpoint_cost.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}/checkpoint_cost.json")
    return report


def _line(row: dict[str, Any]) -> str:
    return (
        f"{row['children']:>7d} children  {row['layout']:15s}"
        f"{row['bytes_written_per_update'] / 1e3:9.1f} KB written/update  "
        f"save {row['save_seconds'] * 1e3:6.1f} ms  "
        f"update+save {row['seconds_per_update'] * 1e3:6.1f} ms"
    )


if __name__ == "__main__":
    main()
