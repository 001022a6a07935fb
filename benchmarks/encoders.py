"""Frozen sentence encoders side by side: MiniLM against a sentence-transformers model on disk.

    MNMS_DATA_DIR=../shared/data python benchmarks/encoders.py --model-dir DIR --name mpnet \\
        --tasks trec sst2 --out docs/benchmarks/encoders

The candidate is any sentence-transformers model directory (`--model-dir`), registered for the
run as featurizer `--name` with `features.sentence_encoder`, so its encoding is cached and
resumable like MiniLM's. On each task both encoders get the same `--heads` MLP heads: configs
drawn from the default space with the representation fixed (seeded; the same draws for both),
trained with the reference trainer for `--budget` epochs into one results store. Per task and
encoder it reports the test accuracy of the best-validation head, the mean validation accuracy
over the heads, and the seconds its features took to compute (0 when they were cached before
the run). The encoding cost is also measured side by side: both encoders encode the first
`--time-texts` training texts of the first task, alternating, `--repeats` times each, and the
median texts/s of each and their ratio are reported. Writes `encoders.json` and `encoders.md`.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from controllers import markdown_table

from agents.arguments import distinct, seed_int
from agents.random_search import masked_uniform
from mnms_env import (
    CachedEvaluator,
    ChildConfig,
    ChildRequest,
    ResultStore,
    SequentialEvaluator,
    default_space,
    make_task,
    register_featurizer,
    sentence_encoder,
)
from mnms_env.evaluate import task_features
from mnms_env.features import FEATURIZERS, load_minilm, load_sentence_transformer

BASELINE = "minilm"


def register_model_dir(name: str, model_dir: Path) -> Callable[[], Any]:
    """Register the sentence-transformers model in `model_dir` as featurizer `name`, loaded on
    first use; returns its loader."""
    if not (model_dir / "modules.json").is_file():
        raise ValueError(f"{model_dir}: not a sentence-transformers model directory")

    @lru_cache(maxsize=1)
    def load():  # noqa: ANN202
        return load_sentence_transformer(model_dir)

    register_featurizer(name, sentence_encoder(name, load, "sentence_transformers"))
    return load


def heads(count: int, seed: int) -> list[ChildConfig]:
    """`count` MLP configs over MiniLM drawn from the default space (seeded)."""
    space = default_space().with_options("representation", (BASELINE,))
    rng = np.random.default_rng(seed)
    masks = space.masks("text")
    return [space.decode([masked_uniform(row, rng) for row in masks], "text") for _ in range(count)]


def compare(task: str, encoders: list[str], configs: list[ChildConfig], args) -> list[dict]:  # noqa: ANN001
    """One row per encoder of `task`: the same heads trained over each encoder's features."""
    evaluator = CachedEvaluator(SequentialEvaluator(), ResultStore(args.out / "results.sqlite"))
    rows = []
    for encoder in encoders:
        started = time.perf_counter()
        task_features(make_task(task), encoder, 0)  # kept in process for the evaluator
        seconds = time.perf_counter() - started
        requests = [
            ChildRequest.for_task(task, replace(c, representation=encoder), budget=args.budget)
            for c in configs
        ]
        children = evaluator.children(requests)
        best = max(children, key=lambda c: c.result.val_accuracy)
        rows.append(
            {
                "task": task,
                "encoder": encoder,
                "best_val_test_accuracy": 100 * best.result.test_accuracy,
                "best_val_accuracy": 100 * best.result.val_accuracy,
                "mean_val_accuracy": 100
                * float(np.mean([c.result.val_accuracy for c in children])),
                "best_head": best.request.config.describe(),
                "features_seconds": seconds,
            }
        )
        print(rows[-1], flush=True)
    return rows


def encoding_speed(loads: dict[str, Any], texts: list[str], repeats: int) -> dict[str, float]:
    """Median texts/s of each encoder on `texts`, the encoders alternating so that both meet the
    same machine load."""
    times: dict[str, list[float]] = {name: [] for name in loads}
    for _ in range(repeats):
        for name, load in loads.items():
            model = load()
            started = time.perf_counter()
            model.encode(texts, batch_size=128, normalize_embeddings=True)
            times[name].append(time.perf_counter() - started)
    return {name: len(texts) / float(np.median(t)) for name, t in times.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument(
        "--name",
        help="the candidate featurizer's name, its identity in the features cache and the results "
        "store (default: the model directory's name)",
    )
    parser.add_argument("--tasks", nargs="+", default=["trec", "sst2"])
    parser.add_argument("--heads", type=int, default=20, help="MLP heads per task and encoder")
    parser.add_argument("--budget", type=int, default=5, help="epochs per head")
    parser.add_argument("--seed", type=seed_int, default=0)
    parser.add_argument("--time-texts", type=int, default=512, help="texts timed per encoder")
    parser.add_argument("--repeats", type=int, default=3, help="timings per encoder")
    parser.add_argument("--out", type=Path, default=Path("runs/encoders"))
    args = parser.parse_args(argv)
    distinct(parser, "--tasks", args.tasks)
    args.name = args.name or args.model_dir.resolve().name
    if not FEATURIZERS[BASELINE].available():
        parser.error(f"the baseline {BASELINE!r} needs {FEATURIZERS[BASELINE].install}")
    try:
        load = register_model_dir(args.name, args.model_dir)
    except ValueError as error:
        parser.error(f"--model-dir: {error}")
    args.out.mkdir(parents=True, exist_ok=True)
    configs = heads(args.heads, args.seed)
    rows = [
        row for task in args.tasks for row in compare(task, [BASELINE, args.name], configs, args)
    ]
    texts = list(make_task(args.tasks[0]).train.x[: args.time_texts])
    speed = encoding_speed({BASELINE: load_minilm, args.name: load}, texts, args.repeats)
    result = {"model_dir": args.model_dir.name, "heads": args.heads, "budget": args.budget}
    result |= {"rows": rows, "texts_per_second": speed, "timed_on": f"{args.tasks[0]} train"}
    (args.out / "encoders.json").write_text(json.dumps(result, indent=1))
    markdown = markdown_table(
        [
            "task",
            "encoder",
            "test acc. of best-val head",
            "mean val acc.",
            "best head",
            "features s",
        ],
        (
            [r["task"], r["encoder"], f"{r['best_val_test_accuracy']:.1f}"]
            + [f"{r['mean_val_accuracy']:.1f}", r["best_head"], f"{r['features_seconds']:.0f}"]
            for r in rows
        ),
    )
    markdown += (
        f"\nEncoding {len(texts)} texts of {args.tasks[0]} (median of {args.repeats}): "
        + ", ".join(f"{name} {rate:.1f} texts/s" for name, rate in speed.items())
        + f"; {BASELINE} is {speed[BASELINE] / speed[args.name]:.2f}x {args.name}.\n"
    )
    (args.out / "encoders.md").write_text(markdown)
    print(markdown)
    return result


if __name__ == "__main__":
    main()
