"""Children per second on each trainer, Ray's included, side by side on the same requests.

    python benchmarks/ray_throughput.py                        # CPU: two local Ray workers
    python benchmarks/ray_throughput.py --children-per-task 32 --repeats 3 --out runs/ray-throughput

The requests are the main job's kind: `--children-per-task` configs drawn uniformly from the
default space for each of `--tasks` (default `langid-es` and `word-sentiment-en`; seeded), one
epoch each. Every path trains the same requests, interleaved, `--repeats` times; the fastest
repeat is kept (noise on a shared machine only slows a run down) and the JSON keeps every sample:
- `sequential`: `SequentialEvaluator`, one child after another (torch's default threads);
- `batched`: `BatchedEvaluator` in this process;
- `batched, N workers`: the same in N CPU processes (what `mnms search` does on N cores);
- `ray, N workers`: `RayEvaluator` on a local cluster of N CPUs, one child per worker at a time
  (always a new one: a running cluster, `$RAY_ADDRESS` or the address file a `ray start` left
  in /tmp/ray would not have the N CPUs this measures).
On a GPU the batched path trains there, and Ray runs one GPU worker (`num_gpus=1`).

Ray's overhead per child is what a child costs beyond its own training: (wall time x workers -
the children's training seconds, as each worker measured them) / children. Before the timed
repeats each path trains one child of each (task, featurizer) with another seed, untimed, so
that imports, featurizing (into the disk cache the workers read) and Ray's worker start are
not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from agents.arguments import distinct, positive_int, seed_int
from agents.cli import PAPER_PAIR
from agents.plots import png_figure
from agents.random_search import masked_uniform
from mnms_env import (
    BatchedEvaluator,
    ChildRequest,
    Evaluator,
    RayEvaluator,
    SequentialEvaluator,
    default_space,
    make_task,
)
from mnms_env.child import device_name, resolve_device


@dataclass(frozen=True)
class Sample:
    """One timed pass of one path over every request."""

    path: str
    seconds: float
    children: int
    training_seconds: float
    """The sum of the children's own training times, as each trainer measured them."""


def requests_for(tasks: tuple[str, ...], children: int, seed: int) -> list[ChildRequest]:
    """`children` uniformly drawn configs of the default space per task."""
    space, rng, requests = default_space(), np.random.default_rng(seed), []
    for name in tasks:
        task = make_task(name)
        masks = space.masks(task.modality)
        for _ in range(children):
            indices = [masked_uniform(masks[i, :n], rng) for i, n in enumerate(space.sizes)]
            config = space.decode(indices, task.modality, masks)
            requests.append(ChildRequest.for_task(task, config, seed=0, budget=1))
    return requests


def timed(path: str, evaluator: Evaluator, requests: list[ChildRequest]) -> Sample:
    start = time.perf_counter()
    results = evaluator.evaluate(requests)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return Sample(path, seconds, len(requests), float(sum(r.seconds for r in results)))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(PAPER_PAIR))
    parser.add_argument("--children-per-task", type=positive_int, default=16)
    parser.add_argument("--workers", type=positive_int, default=2, help="processes, Ray CPUs")
    parser.add_argument("--repeats", type=positive_int, default=2)
    parser.add_argument("--seed", type=seed_int, default=0, help="seed of the configs drawn")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks"))
    args = parser.parse_args(argv)
    distinct(parser, "--tasks", args.tasks)

    import ray

    device = resolve_device(None)
    gpu = device.type == "cuda"
    requests = requests_for(tuple(args.tasks), args.children_per_task, args.seed)
    groups = {(r.task, r.config.representation, r.config.representation_size): r for r in requests}
    warm_up = [replace(r, seed=r.seed + 1) for r in groups.values()]
    ray.init(
        address="local", num_cpus=args.workers, num_gpus=1 if gpu else 0, include_dashboard=False
    )
    ray_path = "ray, 1 GPU worker" if gpu else f"ray, {args.workers} workers"
    paths: dict[str, Evaluator] = {
        "sequential": SequentialEvaluator(device=device),
        "batched": BatchedEvaluator(device=device),
        ray_path: RayEvaluator(num_gpus=1 if gpu else 0),
    }
    if not gpu:
        paths[f"batched, {args.workers} workers"] = BatchedEvaluator(workers=args.workers)
    try:
        for evaluator in paths.values():
            evaluator.evaluate(warm_up)
        samples = [
            timed(path, evaluator, requests)
            for _ in range(args.repeats)
            for path, evaluator in paths.items()
        ]
    finally:
        for evaluator in paths.values():
            if isinstance(evaluator, BatchedEvaluator | RayEvaluator):  # worker processes
                evaluator.close()
        ray.shutdown()

    best = {p: min((s for s in samples if s.path == p), key=lambda s: s.seconds) for p in paths}
    parallel = 1 if gpu else args.workers
    ray_best = best[ray_path]
    overhead = (ray_best.seconds * parallel - ray_best.training_seconds) / ray_best.children
    base = best["sequential"].seconds
    rows = [
        {
            "path": p,
            "seconds": s.seconds,
            "children_per_s": s.children / s.seconds,
            "vs_sequential": base / s.seconds,
        }
        for p, s in best.items()
    ]
    result = {
        "device": device_name(device),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "tasks": args.tasks,
        "children": len(requests),
        "repeats": args.repeats,
        "rows": rows,
        "ray_overhead_s_per_child": overhead,
        "samples": [asdict(s) for s in samples],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"ray-throughput-{'cuda' if gpu else 'cpu'}"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1))
    with png_figure(args.out / f"{stem}.png", figsize=(7, 3.5)) as (_, ax):
        ax.barh([r["path"] for r in rows], [r["children_per_s"] for r in rows])
        ax.set_xlabel("children per second")
        ax.set_title(f"{len(requests)} children, {result['device']}")
    for r in rows:
        print(
            f"{r['path']:<22} {r['seconds']:7.1f} s  {r['children_per_s']:6.2f} children/s  "
            f"{r['vs_sequential']:5.2f}x"
        )
    print(f"Ray overhead per child: {overhead * 1000:.0f} ms")
    return result


if __name__ == "__main__":
    main()
