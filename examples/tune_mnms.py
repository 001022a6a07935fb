"""Search your own trainable with the MNMS controller as a Ray Tune search algorithm.

The trainable is a toy stand-in for a training run: four `tune.choice` parameters (two inside a
nested dict) and a constant, scored by a loss that is lowest (0.1) at a hidden best config. Up
to two trials run at once (`ConcurrencyLimiter`); each finished trial's loss is fed back to the
controller. Runs in under a minute on a CPU, on a local Ray cluster:
`python examples/tune_mnms.py`.
"""

from __future__ import annotations

import tempfile
from typing import Any

import ray
from ray import tune
from ray.tune.search import ConcurrencyLimiter

from agents import MNMSConfig
from agents.integrations import MNMSSearcher

BEST = {"c": 1, "d": 2, "net/a": 2, "net/b": 0}


def trainable(config: dict[str, Any]) -> dict[str, float]:
    flat = {"c": config["c"], "d": config["d"], "net/a": config["net"]["a"]}
    flat["net/b"] = config["net"]["b"]
    return {"loss": 0.7 - 0.6 * sum(flat[k] == v for k, v in BEST.items()) / len(BEST)}


ray.init(num_cpus=2, include_dashboard=False)
choice = tune.choice([0, 1, 2])
searcher = MNMSSearcher(metric="loss", mode="min", config=MNMSConfig(batch_size=4), seed=0)
tuner = tune.Tuner(
    trainable,
    param_space={"net": {"a": choice, "b": choice}, "c": choice, "d": choice, "epochs": 3},
    tune_config=tune.TuneConfig(
        search_alg=ConcurrencyLimiter(searcher, max_concurrent=2),
        num_samples=48,
        reuse_actors=True,
    ),
    run_config=tune.RunConfig(storage_path=tempfile.mkdtemp(), verbose=0),
)
best = tuner.fit().get_best_result("loss", "min")
print(f"best loss {best.metrics['loss']:.2f} with {best.config}")
print("the controller's greedy config now:", searcher.controller.greedy())
ray.shutdown()
