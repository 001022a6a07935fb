"""The main job's speed: `mnms search` on the sequential and the batched path, side by side.

    python benchmarks/main_job.py                    # the default run, both paths, CPU or CUDA
    python benchmarks/main_job.py --children 40 --repeats 2 --out runs/main-job

Each repeat runs `agents.cli.search` with the default settings (`langid-es` with
`word-sentiment-en`, 200 children of 1 epoch, default space, seed 0) on each path, interleaved:
`sequential` (`envs=0`: one env, each child trained alone by `SequentialEvaluator`), `batched`
(the default vector env, each update's children in one `BatchedEvaluator` call in this process)
and `workers` (the same, its chunks trained in `default_workers` CPU processes: what `mnms
search` does by default; left out where that is none, on one core or a GPU), each into a fresh
run directory with its own empty results store. Features are computed before the first run,
as the README's timings assume, and each path first runs one update untimed (imports, first
calls). It reports children per second of the whole search (controller,
store and all) and each path's ratio to `sequential` (`speedup`: the default path's); the fastest
repeat of each path is kept, and the JSON keeps every sample.

The two paths sample different children (sub-envs draw their tasks and child seeds from their
own seeds), so the search rate mixes trainer speed with what each search happened to design.
The `same requests` rows remove that: the last batched run's children, update by update (minus
the ones its store answered), trained again through each path's evaluator directly.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from agents.arguments import positive_int, seed_int
from agents.cli import PAPER_PAIR, SearchSettings, search
from agents.mnms import read_history
from agents.plots import png_figure
from mnms_env import (
    BatchedEvaluator,
    ChildRequest,
    SequentialEvaluator,
    default_space,
    featurize,
    make_task,
)
from mnms_env.batched import default_workers
from mnms_env.child import device_name, resolve_device
from mnms_env.features import FEATURIZERS


@dataclass(frozen=True)
class Sample:
    """One timed run of one path."""

    path: str
    seconds: float
    children: int
    trained: int
    """Distinct children the run trained (its store's size)."""
    best_val: dict[str, float]

    @property
    def children_per_s(self) -> float:
        return self.children / self.seconds


def warm_features(tasks: tuple[str, ...]) -> None:
    """Compute (or load) every feature matrix the default space can ask of `tasks`."""
    space = default_space()
    sizes = space.decisions[space.names.index("representation_size")].options
    for name in tasks:
        task = make_task(name)
        for rep in space.decisions[space.names.index("representation")].options:
            featurizer = FEATURIZERS[rep]
            if featurizer.modality != task.modality or not featurizer.available():
                continue
            for size in sizes if featurizer.sized else (0,):
                featurize(task, rep, size)


def paths(device: torch.device, children: int) -> dict[str, tuple[int | None, int]]:
    """`(SearchSettings.envs, workers)` of each path: one env; the default vector env training in
    this process; and in `default_workers` processes, where there are any (as `mnms search`
    sizes them for `children`)."""
    workers = default_workers(device, most=math.gcd(SearchSettings.batch_size, children))
    return {"sequential": (0, 0), "batched": (None, 0)} | (
        {"workers": (None, workers)} if workers else {}
    )


def run_search(
    path: str, settings: SearchSettings, out: Path, device: str | None, workers: int
) -> Sample:
    start = time.perf_counter()
    summary = search(settings, out, device=device, workers=workers)
    seconds = time.perf_counter() - start
    best = {t: info["best"]["val_accuracy"] for t, info in summary["per_task"].items()}
    return Sample(path, seconds, summary["children"], summary["trained"], best)


def update_requests(checkpoint: Path) -> list[list[ChildRequest]]:
    """Per update of a finished run, the requests it trained (first sightings only, as its
    store saw them)."""
    updates: dict[int, list[ChildRequest]] = defaultdict(list)
    seen: set[ChildRequest] = set()
    for record in read_history(checkpoint):
        request = record.child.request
        if request not in seen:
            seen.add(request)
            updates[record.update].append(request)
    return [updates[u] for u in sorted(updates)]


def same_requests(
    updates: list[list[ChildRequest]], device: torch.device, workers: dict[str, int]
) -> dict[str, float]:
    """Children per second of each path's evaluator on the same per-update request lists (a
    worker pool's start counts, as in a search)."""
    rates = {}
    for name, count in workers.items():
        if name == "sequential":
            evaluator = SequentialEvaluator(device=device)
        else:
            evaluator = BatchedEvaluator(device=device, workers=count)
        start = time.perf_counter()
        for requests in updates:
            evaluator.evaluate(requests)
        rates[name] = sum(map(len, updates)) / (time.perf_counter() - start)
        if isinstance(evaluator, BatchedEvaluator):
            evaluator.close()
    return rates


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(PAPER_PAIR))
    parser.add_argument("--children", type=positive_int, default=SearchSettings.children)
    parser.add_argument("--seed", type=seed_int, default=0)
    parser.add_argument("--repeats", type=positive_int, default=1, help="runs of each path")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks"))
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    runs = paths(device, args.children)
    settings = {"tasks": tuple(args.tasks), "children": args.children, "seed": args.seed}
    warm_features(settings["tasks"])
    args.out.mkdir(parents=True, exist_ok=True)
    samples: list[Sample] = []
    with tempfile.TemporaryDirectory(prefix="main-job-") as tmp:
        root = Path(tmp)
        for path, (envs, workers) in runs.items():  # imports, first calls: one update, untimed
            warm = SearchSettings(**{**settings, "children": SearchSettings.batch_size}, envs=envs)
            run_search(path, warm, root / f"warm-{path}", args.device, workers)
        for repeat in range(args.repeats):  # interleaved, so a slow spell hits every path alike
            for path, (envs, workers) in runs.items():
                run = SearchSettings(**settings, envs=envs)
                out = root / f"{path}-{repeat}"
                samples.append(run_search(path, run, out, args.device, workers))
        last_batched = root / f"batched-{args.repeats - 1}" / "checkpoint.pt"
        workers = {path: count for path, (_, count) in runs.items()}
        replay = same_requests(update_requests(last_batched), device, workers)
    rates = {
        p: max(s.children_per_s for s in samples if s.path == p) for p in runs
    }  # the fastest repeat of each path
    default = list(runs)[-1]  # what `mnms search` does here
    report = {
        "machine": device_name(device),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "workers": workers,
        "default_path": default,
        "settings": asdict(SearchSettings(**settings)),
        "children_per_s": rates,
        "speedups": {p: rates[p] / rates["sequential"] for p in runs},
        "speedup": rates[default] / rates["sequential"],
        "same_requests_children_per_s": replay,
        "same_requests_speedups": {p: replay[p] / replay["sequential"] for p in runs},
        "samples": [{**asdict(s), "children_per_s": s.children_per_s} for s in samples],
    }
    stem = f"main-job-{device.type}"
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=1))
    _plot(report, args.out / f"{stem}.png")
    print(f"{report['machine']}, {report['threads']} threads; children per second of the main job:")
    for p in runs:
        print(
            f"  {p:10} {rates[p]:6.3f} ({report['speedups'][p]:.2f}x); the same requests "
            f"{replay[p]:6.3f} ({report['same_requests_speedups'][p]:.2f}x)"
        )
    return report


def _plot(report: dict, path: Path) -> None:
    with png_figure(path, figsize=(6, 3.5)) as (fig, ax):
        groups = {
            "main job": report["children_per_s"],
            "same requests": report["same_requests_children_per_s"],
        }
        width = 0.8 / len(report["workers"])
        for i, rates in enumerate(groups.values()):
            for j, name in enumerate(report["workers"]):
                x = i + width * j
                bar = ax.bar(x, rates[name], width, color=f"C{j}")
                bar.set_label(name if i == 0 else None)
                ax.text(x, rates[name], f"{rates[name]:.2f}", ha="center", va="bottom")
        ax.set_xticks([0.4 - width / 2, 1.4 - width / 2], list(groups))
        ax.set(ylabel="children per second", title=f"mnms search on {report['machine']}")
        ax.legend()


if __name__ == "__main__":
    main()
