"""Transfer at the follow-up paper's scale: every table task held out once, K folds.

    python benchmarks/transfer_bench.py --out runs/transfer-bench          # all 26 tables
    python benchmarks/transfer_bench.py --folds 2 --seeds 0 1 --children-per-task 25 \\
        --pretrain-children-per-task 50 --tasks wine digits langid-es langid-de --out runs/tb

The tasks (default: every task of `BUILTIN_TABLE_TASKS` and `DATASET_TABLE_TASKS` with a table
in the table directories: the 13 built-in ones and the dataset tasks built so far) are
dealt into K folds by a seeded shuffle, text and tabular tasks dealt separately so every fold
holds text tasks (`folds`). For each fold, `transfer.run_suite` pre-trains one MNMS controller
on the other folds' tasks together (`OUT/fold-<k>/pretrained.pt`) and then searches every
held-out task with every controller of `transfer.CONTROLLERS` (transferred MNMS with a random
task embedding, the mean one, or the mean of the sources with its options, MNMS from scratch,
random, TPE, and the transfer baselines ranked on the source tasks' tables), each with exactly
`--children-per-task` children per task and every seed; every run is saved and reused, so an
interrupted benchmark resumes.

Per held-out task and aggregated over all of them (`summary.{json,csv,md}`, `regret.png`,
`rank.png`):
- speed-up to scratch's final best (`transfer.summarise`: median over seeds, and how many seeds
  reach it at all);
- normalised regret of the incumbent (`agents.metrics.incumbent_regret`: the seed-mean quality
  of the best child so far, against the table's best, over its range) after 5, 10, 25 and 100
  children;
- HPO-B's average rank across tasks and seeds over the children (`agents.metrics.average_ranks`);
- "no harm": the share of (task, seed) pairs where a controller's best after all its children
  is at least scratch's;
- a bound, not a controller (`hindsight_source`): the speed-up of following the best single
  source task's table for each pair, chosen in hindsight.
Differentiation at scale (`differentiation.{json,md}`): per fold, how many distinct configs the
pre-trained policy prefers (its most sampled config) across the source tasks, and per source
task the share of each option of every decision.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
from controllers import markdown_table
from transfer import CONTROLLERS, Suite, differentiation, run_suite, summarise, table_tasks

from agents.arguments import distinct, positive_int, seed_int
from agents.metrics import average_ranks, best_so_far, children_to_reach, incumbent_regret
from agents.mnms import MNMS
from agents.plots import png_figure
from agents.runner import History
from mnms_env import SearchSpace, Table, load_table
from mnms_env.table import TableError

REPORTED_AT = (5, 10, 25, 100)
"""Children after which regret and rank are reported."""


def folds(tasks: list[str], k: int, seed: int, table_dir: Path | None = None) -> list[list[str]]:
    """`tasks` in `k` folds: text and tabular tasks shuffled by `seed` and dealt round-robin
    separately, so each fold holds `len(text) // k` or one more text tasks."""
    if not 2 <= k <= len(tasks):
        raise ValueError(f"--folds must be between 2 and the {len(tasks)} tasks, got {k}")
    rng = np.random.default_rng(seed)
    by_modality: dict[str, list[str]] = {"text": [], "tabular": []}
    for task in tasks:
        by_modality[load_table(task, table_dir).card.modality].append(task)
    if len(by_modality["text"]) < k:
        raise ValueError(f"{k} folds need at least {k} text tasks; got {by_modality['text']}")
    dealt: list[list[str]] = [[] for _ in range(k)]
    start = 0
    for modality in ("text", "tabular"):
        group = sorted(by_modality[modality])
        for i, j in enumerate(rng.permutation(len(group))):
            dealt[(start + i) % k].append(group[j])
        start += len(group)
    return dealt


def preferred_configs(
    agent: MNMS, space: SearchSpace, tasks: tuple[str, ...], samples: int, table_dir: Path | None
) -> dict[str, dict]:
    """Per source task, the policy's most sampled config (decisions that mean nothing to a
    child, such as the width of one without hidden layers, collapsed), its share of `samples`
    sampled children, and the share of each option of every decision
    (`transfer.differentiation`)."""
    histograms = differentiation(agent, space, tasks, samples)["histograms"]
    result = {}
    for task in histograms:  # the tasks the pre-training sampled
        table = load_table(task, table_dir)
        chosen = agent.sample_decisions(task, samples)
        configs = Counter(space.decode(row, table.card.modality, table.covers) for row in chosen)
        preferred, count = configs.most_common(1)[0]
        result[task] = {
            "preferred": preferred.describe(),
            "preferred_share": count / samples,
            "options": histograms[task],
        }
    return result


def hindsight_source(
    runs: dict[str, dict[str, list[History]]],
    tables: dict[str, Table],
    sources: dict[str, tuple[str, ...]],
    draws: int = 20,
    seed: int = 0,
) -> dict[str, float | int]:
    """What knowing which source task a target resembles is worth: a bound that looks at the
    targets' tables, not a controller. Per held-out (task, seed of scratch MNMS), the speed-up
    to scratch's final best of trying the target's configs in the order of one source task's
    table (seed-mean validation accuracy, best first; as many children as scratch had), for
    the source of `sources[task]` that does best on that pair; a tried config scores one of
    the target's seed columns drawn at random, as a child's seed picks one (median over
    `draws`)."""
    rng = np.random.default_rng(seed)
    ranked = {  # each table's configs, best seed-mean validation accuracy first
        name: [table.configs[i] for i in np.argsort(-table.mean_val(), kind="stable")]
        for name, table in tables.items()
    }
    best = []
    for task, by_controller in runs.items():
        target = tables[task]
        rows = {config: i for i, config in enumerate(target.configs)}
        orders = []
        for source in sources[task]:
            order = [rows[c] for c in ranked[source] if c in rows]
            if order:  # a source of another modality ranks nothing the target holds
                orders.append(np.array(order, dtype=int))
        for scratch in by_controller["mnms"]:
            curve = best_so_far(scratch, task)
            needed = children_to_reach(curve, float(curve[-1]))
            pair = 0.0
            for order in orders:
                order = order[: len(curve)]  # as many children as scratch had
                columns = rng.integers(0, target.val.shape[1], size=(draws, len(order)))
                hits = target.val[order[None, :], columns] >= curve[-1]
                first = hits.argmax(axis=1) + 1  # the child of the first hit, where there is one
                gains = np.where(hits.any(axis=1), needed / first, 0.0)
                pair = max(pair, float(np.median(gains)))
            best.append(pair)
    return {
        "speedup_median": float(np.median(best)),
        "pairs_at_10x": int(np.sum(np.array(best) >= 10)),
        "pairs": len(best),
    }


def aggregate(
    runs: dict[str, dict[str, list[History]]], tables: dict, children: int
) -> dict[str, dict]:
    """Per controller over every held-out (task, seed): regret curves, average ranks, no harm.
    `runs[task][controller]` is the controller's histories on that task, seeds aligned."""
    controllers = list(next(iter(runs.values())))
    regrets = {
        c: np.stack([incumbent_regret(h, t, tables[t]) for t in runs for h in runs[t][c]])
        for c in controllers
    }
    finals = {
        c: np.array([best_so_far(h, t)[-1] for t in runs for h in runs[t][c]]) for c in controllers
    }
    ranks = average_ranks(regrets)
    points = [n for n in REPORTED_AT if n <= children]
    return {
        c: {
            "regret_mean": {n: float(regrets[c][:, n - 1].mean()) for n in points},
            "regret_median": {n: float(np.median(regrets[c][:, n - 1])) for n in points},
            "rank": {n: float(ranks[c][n - 1]) for n in points},
            "no_harm": float(np.mean(finals[c] >= finals["mnms"])),
            "regret_curve": regrets[c].mean(axis=0).tolist(),
            "rank_curve": ranks[c].tolist(),
        }
        for c in controllers
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--tasks", nargs="+", help="default: every shipped task's table there is")
    add("--folds", type=int, default=5, help="K: each task is held out in one of K folds")
    add("--fold-seed", type=seed_int, default=0, help="seed of the fold split")
    add("--pretrain-children-per-task", type=positive_int, default=500)
    add("--children-per-task", type=positive_int, default=100)
    add("--seeds", type=seed_int, nargs="+", default=list(range(10)))
    add("--controllers", nargs="+", choices=CONTROLLERS, default=list(CONTROLLERS))
    add("--table-dir", type=Path, default=None, help="tables beyond the shipped ones")
    add("--out", type=Path, default=Path("runs/transfer-bench"))
    args = parser.parse_args(argv)
    distinct(parser, "--seeds", args.seeds)
    if args.tasks is None:
        args.tasks = list(table_tasks((), args.table_dir))
    distinct(parser, "--tasks", args.tasks)
    if "mnms" not in args.controllers:
        parser.error("--controllers must include mnms: speed-ups and no harm are relative to it")
    try:
        split = folds(args.tasks, args.folds, args.fold_seed, args.table_dir)
    except (ValueError, TableError) as err:
        parser.error(str(err))
    args.out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, dict[str, list[History]]] = {}
    sources: dict[str, tuple[str, ...]] = {}  # each held-out task's source tasks
    rows, differentiation = [], {}
    for k, held_out in enumerate(split):
        suite = Suite(
            sources=tuple(t for t in args.tasks if t not in held_out),
            targets=tuple(held_out),
            backend="table",
            pretrain_children_per_task=args.pretrain_children_per_task,
            children_per_task=args.children_per_task,
            seeds=tuple(args.seeds),
        )
        out = args.out / f"fold-{k}"
        out.mkdir(exist_ok=True)
        agent, space, fold_runs = run_suite(suite, out, args.controllers, 1, args.table_dir)
        rows += [{**row, "fold": k} for row in summarise(fold_runs, suite.targets)]
        for task in held_out:
            runs[task] = {c: fold_runs[c] for c in args.controllers}
            sources[task] = suite.sources
        preferred = preferred_configs(agent, space, suite.sources, 2000, args.table_dir)
        distinct_configs = len({p["preferred"] for p in preferred.values()})
        differentiation[k] = {"distinct_preferred": distinct_configs, "tasks": preferred}
    tables = {t: load_table(t, args.table_dir) for t in runs}
    overall = aggregate(runs, tables, args.children_per_task)
    alone = {t: aggregate({t: runs[t]}, tables, args.children_per_task) for t in runs}
    for row in rows:  # the same measures on each task alone (ranks over its seeds)
        measures = alone[row["task"]][row["controller"]]
        row |= {k: measures[k] for k in ("regret_mean", "rank", "no_harm")}
    for c in args.controllers:
        speedups = [s for r in rows if r["controller"] == c for s in r["speedup_per_seed"]]
        overall[c]["speedup_median"] = float(np.median(speedups))
        overall[c]["seeds_reaching"] = int(np.sum(np.array(speedups) > 0))
        overall[c]["runs"] = len(speedups)
    summary = {
        "folds": split,
        "fold_seed": args.fold_seed,
        "settings": {
            "pretrain_children_per_task": args.pretrain_children_per_task,
            "children_per_task": args.children_per_task,
            "seeds": args.seeds,
        },
        "overall": overall,
        "rows": rows,
        "hindsight_source": hindsight_source(runs, tables, sources),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    (args.out / "differentiation.json").write_text(json.dumps(differentiation, indent=1))
    (args.out / "differentiation.md").write_text(_differentiation_markdown(differentiation))
    with open(args.out / "summary.csv", "w", newline="") as f:
        flat = [_flat(r) for r in rows]
        writer = csv.DictWriter(f, fieldnames=list(flat[0]))
        writer.writeheader()
        writer.writerows(flat)
    text = _markdown(summary)
    (args.out / "summary.md").write_text(text)
    _plot(overall, "regret_curve", "mean normalised regret", args.out / "regret.png")
    _plot(overall, "rank_curve", "average rank (1 best)", args.out / "rank.png")
    print(text)
    return summary


def _flat(row: dict) -> dict:
    """A per-task row as CSV columns: `regret_mean` becomes `regret@5`, ...; no per-seed lists."""
    out = {k: v for k, v in row.items() if not isinstance(v, dict | list)}
    for n, value in row["regret_mean"].items():
        out[f"regret@{n}"] = value
    for n, value in row["rank"].items():
        out[f"rank@{n}"] = value
    return out


def _markdown(summary: dict) -> str:
    overall = summary["overall"]
    points = list(next(iter(overall.values()))["rank"])
    header = ["controller", "speed-up (median)", "runs reaching scratch's best"]
    header += [f"regret @{n}" for n in points] + [f"rank @{n}" for n in points] + ["no harm"]
    aggregate_table = markdown_table(
        header,
        (
            [c, f"{o['speedup_median']:.2f}x", f"{o['seeds_reaching']}/{o['runs']}"]
            + [f"{o['regret_mean'][n]:.3f}" for n in points]
            + [f"{o['rank'][n]:.2f}" for n in points]
            + [f"{o['no_harm']:.0%}"]
            for c, o in overall.items()
        ),
    )
    per_task = markdown_table(
        ["fold", "task", "controller", "best val", "speed-up (median)", "seeds reaching it"]
        + [f"regret @{n}" for n in points]
        + [f"rank @{n}" for n in points],
        (
            [str(r["fold"]), r["task"], r["controller"], f"{r['best_val']:.4f}"]
            + [f"{r['speedup']:.2f}x", f"{r['reached_scratch_best']}/{r['seeds']}"]
            + [f"{r['regret_mean'][n]:.3f}" for n in points]
            + [f"{r['rank'][n]:.2f}" for n in points]
            for r in summary["rows"]
        ),
    )
    folds_text = "; ".join(f"fold {k}: {', '.join(f)}" for k, f in enumerate(summary["folds"]))
    bound = summary["hindsight_source"]
    return (
        f"Folds (seed {summary['fold_seed']}): {folds_text}\n\n"
        f"All held-out tasks:\n\n{aggregate_table}\n"
        f"Following the best single source task's table in hindsight (`hindsight_source`, a bound,"
        f" not a controller): median speed-up {bound['speedup_median']:.2f}x, "
        f"{bound['pairs_at_10x']}/{bound['pairs']} pairs at 10x or more.\n\n"
        f"Per task (rank over its seeds):\n\n{per_task}"
    )


def _differentiation_markdown(differentiation: dict) -> str:
    rows = [
        [str(k), str(d["distinct_preferred"]), str(len(d["tasks"]))]
        + [", ".join(f"{t} ({p['preferred_share']:.0%})" for t, p in d["tasks"].items())]
        for k, d in differentiation.items()
    ]
    header = ["fold", "distinct preferred configs", "source tasks", "share of the preferred config"]
    return markdown_table(header, rows)


def _plot(overall: dict, key: str, ylabel: str, path: Path) -> None:
    with png_figure(path, figsize=(6, 4)) as (fig, ax):
        for controller, o in overall.items():
            ax.plot(np.arange(1, len(o[key]) + 1), o[key], label=controller)
        ax.set_xscale("log")
        ax.set(xlabel="children of each held-out task", ylabel=ylabel)
        ax.set_title("all held-out tasks and seeds")
        ax.legend(fontsize=7)


if __name__ == "__main__":
    main()
