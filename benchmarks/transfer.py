"""Transfer: pre-train MNMS on source tasks, then search unseen target tasks (the paper's protocol).

    python benchmarks/transfer.py --suite offline --out runs/transfer-offline     # tables
    MNMS_DATA_DIR=../shared/data python benchmarks/transfer.py --suite paper \\
        --out runs/transfer-paper                                                # real training

1. Pre-train one MNMS controller (seed 0) on the source tasks together, checkpointing after every
   update (`OUT/pretrained.pt` and its history `OUT/pretrained.pt.history.jsonl`; an interrupted
   pre-training resumes from them).
2. Differentiation (the paper's multitask claim): sample children from the pre-trained policy for
   each source task and write per-task histograms of every decision, with the total-variation
   distance between the tasks' distributions (`differentiation.{json,md,png}`).
3. On the target tasks, run the transferred controller (`MNMS.load(pretrained)`: new task
   embeddings, random, the mean of the source tasks' or of those with the target's options, every
   other weight kept), MNMS from
   scratch, random search, TPE and the field's transfer baselines (`agents.portfolio`: the
   portfolio of configs ranked on the source tasks, TPE warm-started on its top configs, and
   the best source config followed by random search), each with exactly `--children-per-task`
   children of each target task and the same seeds (`OUT/runs/`, resumable). The baselines'
   source data (`source_scores`) is the source tasks' tables on the table backend, and the
   pre-training's own children with real training; nothing of a target either way.
4. Per target task: best-so-far curves (median and quartiles over seeds), AUC, test accuracy of
   the best-validation child and the follow-up paper's headline metric, children needed to reach
   the from-scratch controller's final best value and the speed-up factor (scratch's children to
   its final best / this controller's), per seed and as a median (`summary.{json,csv,md}`).

Suites: `offline` reads the shipped tables of built-in tasks (minutes on a CPU); `paper`
pre-trains on `sst2` + `langid-es` and transfers to `imdb` + `sentiment-es` (the Spanish stand-in
for CorpusCine) with real training, on the benchmark space without the MiniLM encoder (encoding
imdb's 50,000 reviews on a CPU would take longer than the search); `paper-tables` pre-trains on
the tables of every other task instead, then searches the same targets with real training over
the tables' space.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
from controllers import (
    curve_stats,
    markdown_table,
    median_children,
    never_or,
    plot_curves,
    refuse_other_settings,
    run_or_load,
    task_answers,
)

from agents.arguments import distinct, positive_int, seed_int
from agents.metrics import best_so_far, children_to_reach, speedup
from agents.mnms import MNMS, MNMSConfig
from agents.mnms.checkpoint import read_checkpoint
from agents.plots import png_figure
from agents.portfolio import SourceScores
from agents.runner import TRANSFER, History
from mnms_env import SearchSpace, benchmark_space, load_table
from mnms_env.table import TableError, available_tables
from mnms_env.table_build import BUILTIN_TABLE_TASKS, DATASET_TABLE_TASKS
from mnms_env.tasks import TaskError

CONTROLLERS = (
    "mnms-transfer",
    "mnms-transfer-mean",
    "mnms-transfer-mean-cold",
    "mnms-transfer-similar",
    "mnms-transfer-similar-cold",
    "mnms-transfer-descriptor",
    "mnms-transfer-descriptor-cold",
    "mnms",
    "random",
    "tpe",
    *TRANSFER,
)
"""`mnms-transfer` starts each new task from a random embedding (the paper), `-mean` from the mean
of the pre-trained tasks' embeddings, `-similar` from the mean of those with the new task's
options, `-descriptor` from the one of those whose `TaskCard.descriptor` is nearest
(`MNMS.load(new_task_init=...)`), `-cold` samples at `COLD_TEMPERATURE` (exploit
first); the `TRANSFER` baselines draw on `source_scores`."""
COLD_TEMPERATURE = 0.25


def paper_space() -> SearchSpace:
    """`benchmark_space()` with the bag featurizers only (no MiniLM)."""
    bags = ("word-hash", "char-hash", "embedding-bag")
    return benchmark_space().with_options("representation", bags)


@dataclass(frozen=True)
class Suite:
    """A transfer experiment: pre-train on `sources`, then search `targets`."""

    sources: tuple[str, ...]
    targets: tuple[str, ...]
    backend: str
    pretrain_children_per_task: int
    """Children of each source task for pre-training."""
    children_per_task: int
    """Children of each target task for each controller and seed."""
    seeds: tuple[int, ...]
    pretrain_backend: str | None = None
    """Where the pre-training's rewards come from (None: `backend`): `"table"` pre-trains on the
    sources' tables, over their space, and the targets are then searched with `backend`."""

    @property
    def pretrain_on(self) -> str:
        return self.pretrain_backend or self.backend


SUITES = {
    "offline": Suite(
        sources=("langid-es", "langid-fr", "word-sentiment-en"),
        targets=("langid-de", "word-sentiment-da"),
        backend="table",
        pretrain_children_per_task=300,
        children_per_task=100,
        seeds=tuple(range(10)),
    ),
    "paper": Suite(
        sources=("sst2", "langid-es"),
        targets=("imdb", "sentiment-es"),
        backend="train",
        pretrain_children_per_task=200,
        children_per_task=50,
        seeds=(0, 1, 2, 3, 4),
    ),
    "paper-tables": Suite(
        sources=(),  # every task with a table but the targets
        targets=("imdb", "sentiment-es"),
        backend="train",
        pretrain_backend="table",
        pretrain_children_per_task=500,
        children_per_task=50,
        seeds=(0, 1, 2, 3, 4),
    ),
}
"""`paper-tables` is `paper` with the controller pre-trained on the tables of every other task
instead of on two tasks with real training; its targets are then trained for real, over the
tables' space (`benchmark_space()`, MiniLM included)."""


def table_tasks(leave_out: Sequence[str], table_dir: Path | None) -> tuple[str, ...]:
    """Every task with a shipped (or `table_dir`) table, in the shipped order, but `leave_out`."""
    found = set(available_tables(table_dir)) - set(leave_out)
    return tuple(t for t in (*BUILTIN_TABLE_TASKS, *DATASET_TABLE_TASKS) if t in found)


def env_kwargs(
    suite: Suite, out: Path, table_dir: Path | None, *, pretraining: bool = False
) -> dict:
    """The env's keywords for the pre-training or the target runs."""
    if (suite.pretrain_on if pretraining else suite.backend) == "table":
        return {"backend": "table", "table_dir": table_dir}
    space = benchmark_space() if suite.pretrain_on == "table" else paper_space()
    return {"space": space, "store": out / "results.sqlite"}


def pretrain(suite: Suite, out: Path, kwargs: dict, budget: int) -> tuple[MNMS, SearchSpace]:
    """The pre-trained controller (resumed from `OUT/pretrained.pt` when it exists) and the
    space it searched."""
    path, marker = out / "pretrained.pt", out / "pretrained.json"
    total = suite.pretrain_children_per_task * len(suite.sources)
    envs = math.gcd(MNMSConfig.batch_size, total)
    settings = {"sources": list(suite.sources), "backend": suite.pretrain_on, "budget": budget}
    settings["envs"] = envs  # sub-envs sample the children: another number, another controller
    settings["children"] = total  # a shorter one would reuse this one, a longer one extend it
    settings["answers"] = task_answers(suite.sources, kwargs)
    if path.exists():  # a checkpoint pre-trained otherwise would be resumed or transferred
        saved = json.loads(marker.read_text()) if marker.exists() else None
        if saved is not None and "children" not in saved:  # written before the count was kept
            done = read_checkpoint(path)["num_children"]
            saved["children"] = total if done <= total else done
        refuse_other_settings(path, "a pre-trained controller", saved, settings)
    else:
        marker.write_text(json.dumps(settings))
    env = gym.make_vec(  # the children of each update train in one batched call, as in the runner
        "mnms_env:MNMS-v2",
        num_envs=envs,
        vectorization_mode="vector_entry_point",
        tasks=list(suite.sources),
        budget=budget,
        **kwargs,
    )
    agent = MNMS.load(path, env) if path.exists() else MNMS(env, seed=0)
    agent.learn(max(0, total - agent.num_children), checkpoint=path)
    print(f"pre-trained on {list(suite.sources)}: {agent.num_children} children", flush=True)
    unseen = [task for task in suite.sources if task not in agent.task_masks]
    if unseen:  # each child's task is drawn at random: a short pre-training can miss one
        warnings.warn(
            f"source tasks {unseen} drew no pre-training child (each child's task is drawn at "
            f"random from the {len(suite.sources)} sources); the policy summaries leave them out",
            stacklevel=2,
        )
    return agent, env.unwrapped.space


def source_scores(suite: Suite, agent: MNMS, table_dir: Path | None) -> SourceScores:
    """What the transfer baselines know of the source tasks. On the table backend, the source
    tasks' tables: every config, averaged over the table's seeds, which is more than the
    pre-training's children saw (the field's portfolios are built from such full tables). With
    real training, the pre-training's own children: the same source data MNMS pre-trained on,
    on the suite's space and budget (a source's table covers another space: MiniLM's)."""
    if suite.pretrain_on == "table":
        return SourceScores.from_tables(load_table(task, table_dir) for task in suite.sources)
    return SourceScores.from_children((record.child for record in agent.history), suite.sources)


def run_suite(
    suite: Suite,
    out: Path,
    controllers: Sequence[str],
    budget: int = 1,
    table_dir: Path | None = None,
) -> tuple[MNMS, SearchSpace, dict[str, list[History]]]:
    """Pre-train on the suite's sources, then run every controller on its targets with every
    seed (each run saved in `OUT/runs/` and reused): the pre-trained agent, its space, and the
    runs by controller."""
    kwargs = env_kwargs(suite, out, table_dir)
    agent, space = pretrain(suite, out, env_kwargs(suite, out, table_dir, pretraining=True), budget)
    if any(c.startswith("mnms-transfer-descriptor") for c in controllers) and (
        "task_descriptors" not in read_checkpoint(out / "pretrained.pt")
    ):
        raise ValueError(
            f"{out / 'pretrained.pt'} was pre-trained before checkpoints kept task descriptors, "
            "so the -descriptor controllers would start as -similar; delete it and the runs made "
            "from it, or pass another --out"
        )
    run = {"tasks": suite.targets, "children_per_task": suite.children_per_task, "budget": budget}
    baselines = set(controllers) & set(TRANSFER)
    sources = source_scores(suite, agent, table_dir) if baselines else None
    runs = {}
    for controller in controllers:
        name, extra = controller, {}
        if controller in TRANSFER:
            extra = {"sources": sources}
        elif controller.startswith("mnms-transfer"):
            name, variant = "mnms", controller.removeprefix("mnms-transfer")
            init = variant.removesuffix("-cold").removeprefix("-") or "random"
            options: dict = {"new_task_init": init}
            if variant.endswith("-cold"):
                options["overrides"] = {"temperature": COLD_TEMPERATURE}
            extra = {"pretrained": out / "pretrained.pt", "controller_kwargs": options}
        runs[controller] = [
            run_or_load(
                out / "runs" / f"{controller}-seed{seed}.json",
                name,
                seed,
                env_kwargs=kwargs,
                **run,
                **extra,
            )
            for seed in suite.seeds
        ]
    return agent, space, runs


def differentiation(
    agent: MNMS, space: SearchSpace, tasks: tuple[str, ...], samples: int = 2000
) -> dict:
    """Per task and decision, the fraction of `samples` policy children choosing each option,
    and per decision the total-variation distance between the first two tasks."""
    histograms: dict[str, dict[str, dict[str, float]]] = {}
    tasks = tuple(task for task in tasks if task in agent.task_masks)  # one never sampled: none
    for task in tasks:
        chosen = agent.sample_decisions(task, samples)
        histograms[task] = {
            d.name: {
                str(option): float(np.mean(chosen[:, i] == j)) for j, option in enumerate(d.options)
            }
            for i, d in enumerate(space.decisions)
        }
    distance = {}
    if len(tasks) > 1:
        first, second = histograms[tasks[0]], histograms[tasks[1]]
        distance = {
            name: 0.5 * sum(abs(first[name][o] - second[name][o]) for o in first[name])
            for name in first
        }
    return {"tasks": list(tasks), "samples": samples, "histograms": histograms, "tv": distance}


def summarise(runs: dict[str, list[History]], targets: tuple[str, ...]) -> list[dict]:
    rows = []
    for task in targets:
        scratch = [best_so_far(h, task) for h in runs["mnms"]]
        for controller, histories in runs.items():
            curves = [best_so_far(h, task) for h in histories]
            to_best = [
                children_to_reach(c, float(s[-1])) for c, s in zip(curves, scratch, strict=True)
            ]
            # a seed that never reaches scratch's best gains nothing: speed-up 0
            speedups = [speedup(s, c) or 0.0 for s, c in zip(scratch, curves, strict=True)]
            rows.append(
                {
                    **curve_stats(controller, histories, task),
                    "children_to_scratch_best": median_children(to_best),
                    "speedup": float(np.median(speedups)),
                    "speedup_per_seed": speedups,
                    "reached_scratch_best": sum(n is not None for n in to_best),
                }
            )
    return rows


def _markdown(rows: list[dict]) -> str:
    header = ["task", "controller", "best val", "test of best val", "AUC"]
    header += ["children to scratch's best", "speed-up (median)", "seeds reaching it"]
    return markdown_table(
        header,
        (
            [r["task"], r["controller"], f"{r['best_val']:.4f}", f"{r['test_of_best_val']:.4f}"]
            + [f"{r['auc']:.4f}", never_or(r["children_to_scratch_best"])]
            + [f"{r['speedup']:.2f}x", f"{r['reached_scratch_best']}/{r['seeds']}"]
            for r in rows
        ),
    )


def _differentiation_markdown(result: dict) -> str:
    tasks, histograms = result["tasks"], result["histograms"]
    table = markdown_table(
        ["decision", "option", *tasks],
        (
            [name, option, *(f"{histograms[t][name][option]:.0%}" for t in tasks)]
            for name, options in histograms[tasks[0]].items()
            for option in options
        ),
    )
    if not result["tv"]:
        return table
    tv = ", ".join(f"{k} {v:.2f}" for k, v in result["tv"].items())
    return table + f"\nTotal-variation distance ({tasks[0]} vs {tasks[1]}): {tv}\n"


def _plot_differentiation(result: dict, path: Path) -> None:
    tasks, histograms = result["tasks"], result["histograms"]
    names = list(histograms[tasks[0]])
    rows = (len(names) + 2) // 3
    with png_figure(path, nrows=rows, ncols=3, figsize=(9.6, 2.4 * rows)) as (fig, axes):
        width = 0.8 / len(tasks)
        for ax, name in zip(axes.flat, names, strict=False):
            options = list(histograms[tasks[0]][name])
            x = np.arange(len(options))
            for i, task in enumerate(tasks):
                shares = [histograms[task][name][o] for o in options]
                ax.bar(x + i * width, shares, width, label=task)
            ax.set_xticks(x + width * (len(tasks) - 1) / 2, options, fontsize=6, rotation=30)
            tv = f" (TV {result['tv'][name]:.2f})" if result["tv"] else ""
            ax.set_title(name + tv, fontsize=8)
            ax.set_ylim(0, 1)
        for ax in axes.flat[len(names) :]:
            ax.set_visible(False)
        axes.flat[0].legend(fontsize=6)
        fig.suptitle("Pre-trained MNMS policy: share of children per option", fontsize=9)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--suite", choices=sorted(SUITES), default="offline")
    parser.add_argument("--sources", nargs="+", help="override the suite's source tasks")
    parser.add_argument("--targets", nargs="+", help="override the suite's target tasks")
    add = parser.add_argument
    add("--pretrain-children-per-task", type=positive_int, help="children of each source task")
    add("--children-per-task", type=positive_int, help="children of each target task")
    parser.add_argument("--seeds", type=seed_int, nargs="+")
    parser.add_argument("--controllers", nargs="+", choices=CONTROLLERS, default=list(CONTROLLERS))
    parser.add_argument("--budget", type=positive_int, default=1, help="epochs per child")
    parser.add_argument("--table-dir", type=Path, default=None, help="extra tables")
    parser.add_argument("--out", type=Path, default=None, help="default: runs/transfer-SUITE")
    args = parser.parse_args(argv)
    for flag in ("--seeds", "--sources", "--targets"):
        distinct(parser, flag, getattr(args, flag[2:]))
    base = SUITES[args.suite]
    targets = tuple(args.targets or base.targets)
    sources = tuple(args.sources or base.sources or table_tasks(targets, args.table_dir))
    if set(sources) & set(targets):
        parser.error(
            f"the targets {sorted(set(sources) & set(targets))} are among the sources; "
            "a controller must not pre-train on the tasks it is measured on"
        )
    suite = Suite(
        sources=sources,
        targets=targets,
        backend=base.backend,
        pretrain_children_per_task=(
            args.pretrain_children_per_task or base.pretrain_children_per_task
        ),
        children_per_task=args.children_per_task or base.children_per_task,
        seeds=tuple(args.seeds if args.seeds is not None else base.seeds),
        pretrain_backend=base.pretrain_backend,
    )
    if "mnms" not in args.controllers:
        parser.error("--controllers must include mnms: speed-ups are relative to it")
    out = args.out or Path(f"runs/transfer-{args.suite}")
    try:  # a misspelt task is named before the pre-training, not after it
        task_answers(suite.sources, env_kwargs(suite, out, args.table_dir, pretraining=True))
        task_answers(suite.targets, env_kwargs(suite, out, args.table_dir))
    except (TableError, TaskError) as error:
        parser.error(str(error))
    out.mkdir(parents=True, exist_ok=True)
    agent, space, runs = run_suite(suite, out, args.controllers, args.budget, args.table_dir)
    diff = differentiation(agent, space, suite.sources)
    (out / "differentiation.json").write_text(json.dumps(diff, indent=1))
    (out / "differentiation.md").write_text(_differentiation_markdown(diff))
    _plot_differentiation(diff, out / "differentiation.png")
    rows = summarise(runs, suite.targets)
    summary = {"suite": args.suite, "config": asdict(suite), "rows": rows}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    with open(out / "summary.csv", "w", newline="") as f:
        fields = [k for k in rows[0] if k != "speedup_per_seed"]
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    (out / "summary.md").write_text(_markdown(rows))
    for task in suite.targets:
        plot_curves(runs, task, out / f"curves-{task}.png")
    print(_differentiation_markdown(diff))
    print(_markdown(rows))
    return summary


if __name__ == "__main__":
    main()
