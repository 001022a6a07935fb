"""Controller comparison: every controller, the same tasks, children per task and seeds.

    python benchmarks/controllers.py --out runs/controllers               # tables, minutes
    python benchmarks/controllers.py --backend train --tasks wine digits \
        --children-per-task 20 --out runs/controllers-train             # real training

Each (controller, seed) run goes through `agents.runner.run_controller` (exactly
`--children-per-task` trainings of each task) and is saved as JSON under `OUT/runs/` with its
settings; a run whose file exists is not run again (one saved with other settings is refused),
and all runs share one results store, so an interrupted comparison resumes where it stopped.
Per controller and task it reports the best-so-far validation curve (median and quartiles over
seeds), the test accuracy of the best-validation child, the area under the best-so-far curve,
and the children needed to reach 95% and 99% of the target: on the table backend (the default)
the best seed-averaged validation accuracy in the task's table, with real training the best
validation accuracy any run found. Writes `summary.json`, `summary.csv`, `summary.md` and one
PNG per task.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agents.arguments import distinct, positive_int, seed_int
from agents.metrics import area_under_curve, best_so_far, children_to_reach
from agents.plots import png_figure
from agents.runner import CONTROLLERS, TRANSFER, History, run_controller
from mnms_env import load_table, make_task
from mnms_env.env import BACKENDS


def run_or_load(path: Path, controller: str, seed: int, **run: Any) -> History:
    """The run saved at `path`, or a fresh `run_controller(controller, seed=seed, **run)` saved
    there: an interrupted comparison resumes run by run. A saved run made with other settings is
    refused rather than reported under these."""
    settings = run_settings(controller, seed, run)
    if path.exists():
        saved = json.loads(path.read_text())
        refuse_other_settings(path, "a run", saved.get("settings"), settings)
        return History.from_dict(saved)
    history = run_controller(controller, seed=seed, **run)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**history.to_dict(), "settings": settings}))
    print(
        f"{path.stem}: {history.trained} trained, {history.cached} from the store "
        f"in {history.wall_seconds:.0f} s",
        flush=True,
    )
    return history


def env_kwargs(args: argparse.Namespace) -> dict:
    """The env's backend keywords: the tables, or real training into one shared store."""
    if args.backend == "table":
        return {"backend": "table", "table_dir": args.table_dir}
    return {"store": args.out / "results.sqlite"}


def targets(args: argparse.Namespace, runs: dict[str, list[History]]) -> dict[str, float]:
    """Per task, the value the 95% / 99% thresholds are fractions of."""
    if args.backend == "table":
        return {t: float(load_table(t, args.table_dir).mean_val().max()) for t in args.tasks}
    return {
        t: max(float(best_so_far(h, t)[-1]) for hs in runs.values() for h in hs) for t in args.tasks
    }


def refuse_other_settings(path: Path, what: str, saved: Any, settings: Any) -> None:
    """A saved artefact is reused only under the settings it was made with."""
    if saved != settings:
        raise ValueError(
            f"{path} holds {what} made with other settings ({saved}; now {settings}); delete "
            "it, or pass another --out, to run these"
        )


def run_settings(controller: str, seed: int, run: dict[str, Any]) -> dict[str, Any]:
    """What a saved run must have been made with to be reused, as plain JSON values: the
    arguments of `run_controller` but the store's location (which changes no result), and the
    content hashes of a pre-trained checkpoint (named by its file name only, so that a moved
    benchmark directory is reused) and of source scores (which a longer pre-training changes),
    and what the tasks answered with: each task's table digest, or its data's fingerprint."""
    env = {k: v for k, v in run.get("env_kwargs", {}).items() if k != "store"}
    settings = {"controller": controller, "seed": seed, **run, "env_kwargs": env}
    settings["answers"] = task_answers(run["tasks"], env)
    if run.get("pretrained") is not None:
        digest = hashlib.sha256(Path(run["pretrained"]).read_bytes()).hexdigest()[:16]
        settings["pretrained"] = f"{Path(run['pretrained']).name} (sha256 {digest})"
    if run.get("sources") is not None:
        sources = run["sources"]
        settings["sources"] = f"{list(sources.tasks)} (sha256 {sources.digest})"
    return json.loads(json.dumps(settings, default=str))


def task_answers(tasks: Iterable[str], env_kwargs: dict[str, Any]) -> dict[str, str]:
    """Per task, what identifies the rewards it gives: on the table backend its table's digest
    (a table in `MNMS_TABLE_DIR` or a rebuilt one answers otherwise), with real training its
    data's fingerprint."""
    if env_kwargs.get("backend") == "table":
        return {t: f"table {load_table(t, env_kwargs.get('table_dir')).digest}" for t in tasks}
    return {t: f"data {make_task(t).fingerprint}" for t in tasks}


def summarise(runs: dict[str, list[History]], targets: dict[str, float]) -> list[dict]:
    rows = []
    for task, target in targets.items():
        for controller, histories in runs.items():
            curves = [best_so_far(h, task) for h in histories]
            reach = {
                f"children_to_{int(q * 100)}pct": median_children(
                    [children_to_reach(c, q * target) for c in curves]
                )
                for q in (0.95, 0.99)
            }
            rows.append({**curve_stats(controller, histories, task), **reach, "target": target})
    return rows


def curve_stats(controller: str, histories: list[History], task: str) -> dict:
    """Means over seeds of the final best, the test accuracy of the best-validation child and
    the area under the best-so-far curve."""
    curves = [best_so_far(h, task) for h in histories]
    return {
        "controller": controller,
        "task": task,
        "best_val": float(np.mean([c[-1] for c in curves])),
        "test_of_best_val": float(np.mean([h.best(task).result.test_accuracy for h in histories])),
        "auc": float(np.mean([area_under_curve(c) for c in curves])),
        "seeds": len(histories),
    }


def median_children(values: list[int | None]) -> float | None:
    """Median over seeds, counting a seed that never reached the target as never (None if
    half or more never did)."""
    median = float(np.median([np.inf if v is None else v for v in values]))
    return None if np.isinf(median) else median


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    searchers = [c for c in CONTROLLERS if c not in TRANSFER]  # no source tasks here
    parser.add_argument("--controllers", nargs="+", default=searchers, choices=searchers)
    parser.add_argument("--tasks", nargs="+", default=["langid-es", "word-sentiment-en", "digits"])
    parser.add_argument(
        "--children-per-task", type=positive_int, default=100, help="children of each task"
    )
    parser.add_argument("--seeds", type=seed_int, nargs="+", default=list(range(10)))
    parser.add_argument("--budget", type=positive_int, default=1)
    parser.add_argument("--backend", choices=BACKENDS, default="table")
    parser.add_argument("--table-dir", type=Path, default=None, help="extra tables")
    parser.add_argument("--out", type=Path, default=Path("runs/controllers"))
    args = parser.parse_args(argv)
    distinct(parser, "--controllers", args.controllers)
    distinct(parser, "--seeds", args.seeds)
    distinct(parser, "--tasks", args.tasks)
    run = {
        "tasks": args.tasks,
        "children_per_task": args.children_per_task,
        "budget": args.budget,
        "env_kwargs": env_kwargs(args),
    }
    runs = {
        c: [run_or_load(args.out / "runs" / f"{c}-seed{s}.json", c, s, **run) for s in args.seeds]
        for c in args.controllers
    }
    rows = summarise(runs, targets(args, runs))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps({"args": _jsonable(args), "rows": rows}))
    with open(args.out / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (args.out / "summary.md").write_text(_markdown(rows))
    for task in args.tasks:
        target = next(r["target"] for r in rows if r["task"] == task)
        plot_curves(runs, task, args.out / f"curves-{task}.png", target)
    print(_markdown(rows))
    return rows


def _jsonable(args: argparse.Namespace) -> dict:
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub markdown table; the benchmark scripts write their summaries with it."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def never_or(value: float | None) -> str:
    """A child count, or "never" for a target not reached."""
    return "never" if value is None else f"{value:g}"


def _markdown(rows: list[dict]) -> str:
    header = ["task", "controller", "best val", "test of best val", "AUC", "to 95%", "to 99%"]
    return markdown_table(
        header,
        (
            [r["task"], r["controller"], f"{r['best_val']:.4f}", f"{r['test_of_best_val']:.4f}"]
            + [f"{r['auc']:.4f}", never_or(r["children_to_95pct"])]
            + [never_or(r["children_to_99pct"])]
            for r in rows
        ),
    )


def plot_curves(
    runs: dict[str, list[History]], task: str, path: Path, target: float | None = None
) -> None:
    """Median and quartiles over seeds of each controller's best-so-far curve (log x: the
    early children are where controllers differ), with `target` as a dashed line."""
    with png_figure(path, figsize=(6, 4)) as (fig, ax):
        lows = []
        for controller, histories in runs.items():
            curves = np.stack([best_so_far(h, task) for h in histories])
            x = np.arange(1, curves.shape[1] + 1)
            q1, median, q3 = np.percentile(curves, [25, 50, 75], axis=0)
            line = ax.plot(x, median, label=controller)[0]
            ax.fill_between(x, q1, q3, alpha=0.15, color=line.get_color())
            lows.append(median[min(4, len(median) - 1)])
        if target is not None:
            ax.axhline(target, color="black", linestyle="--", linewidth=0.8, label="target")
        top = max(ax.get_ylim()[1], target or 0)
        ax.set_ylim(min(lows) - 0.1 * (top - min(lows)), top)
        ax.set_xscale("log")
        ax.set(title=task, xlabel="children of this task", ylabel="best validation accuracy")
        ax.legend(fontsize=7)


if __name__ == "__main__":
    main()
