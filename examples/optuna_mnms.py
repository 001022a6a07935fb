"""Search your own objective with the MNMS controller as an Optuna sampler, then transfer it.

The objective is a toy stand-in for a training run: five categorical choices, scored by how many
match a hidden best config (0.9 at the optimum). MNMS takes its space from the first trial's
`suggest_categorical` calls. A second study on a related objective starts from the first
study's controller (`checkpoint=`) instead of from scratch. Runs in seconds on a CPU:
`python examples/optuna_mnms.py`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import optuna

from agents.integrations import MNMSSampler

SPACE = {
    "optimizer": ["sgd", "adam", "rmsprop"],
    "lr": [1e-4, 1e-3, 1e-2, 1e-1],
    "layers": [1, 2, 3, 4],
    "width": [32, 64, 128, 256, 512],
    "activation": ["relu", "tanh", "gelu"],
}
BEST = {"optimizer": "adam", "lr": 1e-2, "layers": 3, "width": 128, "activation": "gelu"}


def objective(trial: optuna.Trial) -> float:
    config = {name: trial.suggest_categorical(name, options) for name, options in SPACE.items()}
    return 0.3 + 0.6 * sum(config[k] == v for k, v in BEST.items()) / len(BEST)


optuna.logging.set_verbosity(optuna.logging.WARNING)
sampler = MNMSSampler(task="toy-net", seed=0)
study = optuna.create_study(direction="maximize", sampler=sampler)
study.optimize(objective, n_trials=120)
first = next(t.number for t in study.trials if t.value >= 0.9 - 1e-9)
print(f"from scratch: best {study.best_value:.2f} at trial {first}: {study.best_params}")
print("the controller's greedy config now:", sampler.controller.greedy())

# Transfer: the controller pre-trained above starts a second objective with the same option
# counts; its new task embedding starts at the mean of the known ones.
checkpoint = Path(tempfile.mkdtemp()) / "toy-net.pt"
sampler.controller.save(checkpoint)
transferred = MNMSSampler(
    {name: list(options) for name, options in SPACE.items()},
    task="toy-net-2",
    checkpoint=checkpoint,
    new_task_init="mean",
)
study = optuna.create_study(direction="maximize", sampler=transferred)
study.optimize(objective, n_trials=10)
first = next((t.number for t in study.trials if t.value >= 0.9 - 1e-9), None)
print(f"transferred: best {study.best_value:.2f}, first at the optimum: trial {first}")
