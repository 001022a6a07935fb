"""MNMS vs uniform random search on the same tasks, number of children and seeds (real training).

    python benchmarks/mnms_vs_random.py --children 150 --seeds 0 1 2

Both controllers design children for all tasks at once through one `MNMS-v2` env per run (the
env draws each episode's task) and share one results store: a child both happen to design is
trained once, and since a child's result depends only on (task, config, seed, budget), sharing
changes no reward. Writes JSON (every child of every run), a PNG of best-so-far validation
accuracy per task against children spent (median and range over seeds), and prints a table.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np

from agents import MNMS
from agents.arguments import distinct, positive_int, seed_int
from agents.plots import png_figure
from agents.random_search import random_search

METHODS = ("mnms", "random")


def run(method: str, tasks: list[str], children: int, seed: int, budget: int, store: Path):
    """`[(task, val_accuracy, representation)]` of every child, in the order designed."""
    env = gym.make("mnms_env:MNMS-v2", tasks=tasks, budget=budget, store=store)
    if method == "mnms":
        history = [r.child.to_info() for r in MNMS(env, seed=seed).learn(children).history]
    else:
        history = random_search(env, children, seed=seed)
    return [(c["task"], c["val_accuracy"], c["config"]["representation"]) for c in history]


def best_so_far(history: list, task: str, children: int) -> np.ndarray:
    """Best validation accuracy of `task` after each child of the run (NaN before its first)."""
    curve, best = np.full(children, np.nan), np.nan
    for i, (t, acc, _) in enumerate(history[:children]):
        if t == task:
            best = acc if np.isnan(best) else max(best, acc)
        curve[i] = best
    return curve


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["langid-es", "word-sentiment-en"])
    parser.add_argument("--children", type=positive_int, default=150)
    parser.add_argument("--seeds", type=seed_int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget", type=positive_int, default=1)
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks"))
    args = parser.parse_args(argv)
    distinct(parser, "--seeds", args.seeds)
    distinct(parser, "--tasks", args.tasks)
    args.out.mkdir(parents=True, exist_ok=True)
    store = args.out / "mnms_vs_random.sqlite"
    runs: dict[str, dict[int, list]] = {m: {} for m in METHODS}
    for seed in args.seeds:
        for method in METHODS:
            start = time.perf_counter()
            runs[method][seed] = run(method, args.tasks, args.children, seed, args.budget, store)
            print(
                f"{method} seed {seed}: {args.children} children in "
                f"{time.perf_counter() - start:.0f} s",
                flush=True,
            )

    checkpoints = [c for c in (25, 50, 100, 150, 200, 300) if c <= args.children]
    table = {}
    for task in args.tasks:
        for method in METHODS:
            curves = np.stack([best_so_far(h, task, args.children) for h in runs[method].values()])
            table[f"{task}/{method}"] = {
                c: float(np.nanmean(curves[:, c - 1])) for c in checkpoints
            }
    print(f"\nmean best-so-far validation accuracy over seeds {args.seeds}")
    print(f"{'task/method':32s}" + "".join(f"{c:>9d}" for c in checkpoints))
    for key, row in table.items():
        print(f"{key:32s}" + "".join(f"{row[c]:9.4f}" for c in checkpoints))
    histograms = {
        method: {
            task: _counts(
                [r for h in runs[method].values() for t, _, r in h[len(h) // 2 :] if t == task]
            )
            for task in args.tasks
        }
        for method in METHODS
    }
    print("\nrepresentation chosen in the last half of each run (all seeds):")
    for method, per_task in histograms.items():
        for task, counts in per_task.items():
            print(f"  {method:7s} {task:20s} {counts}")

    report = {
        "tasks": args.tasks,
        "children": args.children,
        "seeds": args.seeds,
        "budget": args.budget,
        "date": time.strftime("%Y-%m-%d"),
        "best_so_far_mean": table,
        "representation_last_half": histograms,
        "runs": {m: {str(s): h for s, h in per_seed.items()} for m, per_seed in runs.items()},
    }
    (args.out / "mnms_vs_random.json").write_text(json.dumps(report, indent=1))
    _plot(runs, args.tasks, args.children, args.out / "mnms_vs_random.png")
    print(f"wrote {args.out}/mnms_vs_random.json and .png")
    return report


def _counts(values: list[str]) -> dict[str, int]:
    return dict(sorted({v: values.count(v) for v in set(values)}.items(), key=lambda kv: -kv[1]))


def _plot(runs: dict, tasks: list[str], children: int, path: Path) -> None:
    with png_figure(path, ncols=len(tasks), figsize=(5 * len(tasks), 3.6), squeeze=False) as (
        fig,
        axes,
    ):
        x = np.arange(1, children + 1)
        for ax, task in zip(axes[0], tasks, strict=True):
            for method in METHODS:
                curves = np.stack([best_so_far(h, task, children) for h in runs[method].values()])
                with warnings.catch_warnings():  # before a task's first child no run has a best
                    warnings.simplefilter("ignore", RuntimeWarning)
                    median, low, high = (
                        f(curves, axis=0) for f in (np.nanmedian, np.nanmin, np.nanmax)
                    )
                line = ax.plot(x, median, label=method)[0]
                ax.fill_between(x, low, high, alpha=0.2, color=line.get_color())
            ax.set(title=task, xlabel="children trained (all tasks)", ylabel="best val accuracy")
            ax.legend()


if __name__ == "__main__":
    main()
