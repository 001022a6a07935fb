"""Batched vs sequential: how far the batched evaluator's accuracies are from the reference.

    python benchmarks/agreement.py --out docs/benchmarks            # 200 configs on the CPU
    python benchmarks/agreement.py --device cuda --per-task 20

Draws random default-space MLP configs (MiniLM left out, to keep it fast; CNN children are not
stacked but trained alone with `train_child`, so they agree exactly, which the tests check) on
two tasks, trains each once with the float32 `SequentialEvaluator` (the reference) and once
with the `BatchedEvaluator` at each of `--precisions`, with the same seeds, and reports per
precision the mean |difference| in validation accuracy, the signed mean difference with its
standard error, and the largest single difference with its config. The test suite requires a
mean |difference| of at most 1.5 points and a signed mean within +-0.5 points on 60 configs; a
few chaotic children (dropout masks come from a different generator in the batched evaluator)
can move the signed mean of a small sample on their own, which is why this script measures
hundreds. Writes JSON and markdown.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from controllers import markdown_table

from agents.arguments import distinct, positive_int, seed_int
from agents.random_search import masked_uniform
from mnms_env import (
    BatchedEvaluator,
    ChildRequest,
    SearchSpace,
    SequentialEvaluator,
    default_space,
)
from mnms_env.child import PRECISIONS, device_name, resolve_device
from mnms_env.features import FEATURIZERS
from mnms_env.records import ChildResult
from mnms_env.space import CNN_FIELDS
from mnms_env.tasks import Task, make_task

TASKS = ("digits", "word-sentiment-da")


@dataclass(frozen=True)
class Agreement:
    """Batched at `precision` against the float32 reference; differences in points."""

    precision: str
    configs: int
    mean_abs_diff: float
    signed_mean_diff: float
    signed_mean_sem: float
    max_abs_diff: float
    worst_config: str


def stacked_space() -> SearchSpace:
    """The default space's MLP children, the ones the batched evaluator stacks: no `tokens`,
    and none of the CNN's decisions (which mean nothing to an MLP)."""
    space = default_space()
    mlp = SearchSpace(tuple(d for d in space.decisions if d.name not in CNN_FIELDS))
    options = mlp.decisions[mlp.names.index("representation")].options
    return mlp.with_options("representation", [o for o in options if not FEATURIZERS[o].sequence])


def random_requests(
    tasks: list[str | Task],
    per_task: int,
    seed: int,
    budget: int = 2,
    space: SearchSpace | None = None,
) -> list[ChildRequest]:
    """`per_task` uniformly drawn configs of `space` (default `stacked_space()`) per task (a
    name or a `Task`), without MiniLM; child i of a task gets seed i."""
    space, rng = space or stacked_space(), np.random.default_rng(seed)
    representation = space.names.index("representation")
    options = space.decisions[representation].options
    requests = []
    for task in tasks:
        data = make_task(task) if isinstance(task, str) else task
        modality = data.modality
        masks = space.masks(modality)
        if "minilm" in options:
            masks[representation, options.index("minilm")] = False
        for i in range(per_task):
            idx = [masked_uniform(row, rng) for row in masks]
            config = space.decode(idx, modality)
            requests.append(ChildRequest.for_task(data, config, seed=i, budget=budget))
    return requests


def agreement(
    precision: str,
    requests: list[ChildRequest],
    reference: list[ChildResult],
    batched: list[ChildResult],
) -> Agreement:
    diff = 100 * np.array(
        [b.val_accuracy - s.val_accuracy for s, b in zip(reference, batched, strict=True)]
    )
    worst = int(np.argmax(np.abs(diff)))
    return Agreement(
        precision=precision,
        configs=len(diff),
        mean_abs_diff=float(np.abs(diff).mean()),
        signed_mean_diff=float(diff.mean()),
        signed_mean_sem=float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0,
        max_abs_diff=float(np.abs(diff[worst])),
        worst_config=f"{requests[worst].task}: {requests[worst].config.describe()}",
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument(
        "--per-task", type=positive_int, default=100, help="random configs per task"
    )
    parser.add_argument("--seed", type=seed_int, default=0, help="seed of the config draw")
    parser.add_argument("--budget", type=positive_int, default=2, help="epochs per child")
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks"))
    args = parser.parse_args(argv)
    distinct(parser, "--precisions", args.precisions)
    distinct(parser, "--tasks", args.tasks)
    device = resolve_device(args.device)
    requests = random_requests(args.tasks, args.per_task, args.seed, args.budget)
    start = time.perf_counter()
    reference = SequentialEvaluator(device=device).evaluate(requests)
    rows = []
    for precision in args.precisions:
        batched = BatchedEvaluator(device=device, precision=precision).evaluate(requests)
        rows.append(agreement(precision, requests, reference, batched))
        r = rows[-1]
        print(
            f"{precision}: {r.configs} configs, mean |diff| {r.mean_abs_diff:.2f} points, "
            f"signed {r.signed_mean_diff:+.2f} +- {r.signed_mean_sem:.2f}, "
            f"largest {r.max_abs_diff:.1f} ({r.worst_config})"
        )
    report = {
        "device": str(device),
        "device_name": device_name(device),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "tasks": args.tasks,
        "per_task": args.per_task,
        "seed": args.seed,
        "budget": args.budget,
        "seconds": time.perf_counter() - start,
        "rows": [asdict(r) for r in rows],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"agreement-{device.type}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2))
    header = ["precision", "configs", "mean abs diff", "signed mean diff", "largest diff"]
    table = [
        [
            r.precision,
            r.configs,
            f"{r.mean_abs_diff:.2f}",
            f"{r.signed_mean_diff:+.2f} +- {r.signed_mean_sem:.2f}",
            f"{r.max_abs_diff:.1f} ({r.worst_config})",
        ]
        for r in rows
    ]
    stem.with_suffix(".md").write_text(
        f"Batched vs float32 sequential, validation accuracy in points, {report['device_name']}, "
        f"{report['date']}: {', '.join(args.tasks)}, {args.per_task} random configs per task "
        f"(draw {args.seed}), {args.budget} epochs.\n\n" + markdown_table(header, table)
    )
    print(f"wrote {stem}.json and {stem}.md")
    return report


if __name__ == "__main__":
    main()
