"""`MNMSSampler`: the MNMS controller as an Optuna sampler, for any objective.

```python
def objective(trial: optuna.Trial) -> float:
    lr = trial.suggest_categorical("lr", [1e-3, 1e-2, 1e-1])
    layers = trial.suggest_categorical("layers", [1, 2, 3])
    return train_and_validate(lr, layers)

study = optuna.create_study(direction="maximize", sampler=MNMSSampler(task="my-net", seed=0))
study.optimize(objective, n_trials=64)
```

MNMS searches categorical parameters (`trial.suggest_categorical`): given as `space=`, or else
those of the study's first finished trial, which the independent sampler chose (as Optuna's
CMA-ES sampler learns its space). A `space=` must list each parameter's choices exactly as the
objective suggests them: Optuna refuses any other ("CategoricalDistribution does not support
dynamic value space"). Each trial's config is asked once from `MNMSAskTell`, in
`sample_relative`, and told in `after_trial`: the value (negated when the study minimises), or
None for a pruned or failed trial, or one whose parameters were fixed to other values
(`enqueue_trial`). Float and integer parameters, and any the space lacks, are left to the
independent sampler (random by default); to search a range with MNMS, list a grid of its values.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from agents.mnms.ask_tell import MNMSAskTell, Space
from agents.mnms.checkpoint import NewTaskInit
from agents.mnms.config import MNMSConfig

try:
    from optuna import Study
    from optuna.distributions import BaseDistribution, CategoricalDistribution
    from optuna.samplers import BaseSampler, RandomSampler
    from optuna.study import StudyDirection
    from optuna.trial import FrozenTrial, TrialState
except ImportError as err:  # pragma: no cover - the baselines extra
    raise ImportError("MNMSSampler needs optuna: pip install 'mnms-env[baselines]'") from err


class MNMSSampler(BaseSampler):
    """An Optuna sampler that asks each trial's categorical parameters from an MNMS controller
    and learns from the trial's value (single-objective studies).

    `task` names the task embedding the controller learns for this objective. `checkpoint`
    (a file of `mnms search`, `MNMS.save` or `MNMSAskTell.save`, on a space of the same option
    counts) starts the controller from a pre-trained policy: a transfer, the new task's
    embedding starting as `new_task_init` says. `config` and `seed` as for `MNMSAskTell`;
    `independent_sampler` (default `RandomSampler(seed)`) samples every other parameter.
    Thread-safe, for `study.optimize(..., n_jobs=k)`.
    """

    def __init__(
        self,
        space: Space | None = None,
        *,
        task: str = "default",
        config: MNMSConfig | None = None,
        seed: int = 0,
        checkpoint: str | Path | None = None,
        new_task_init: NewTaskInit = "random",
        independent_sampler: BaseSampler | None = None,
    ) -> None:
        self._start = partial(  # the controller, once the space is known
            MNMSAskTell,
            tasks=task,
            config=config,
            seed=seed,
            checkpoint=checkpoint,
            new_task_init=new_task_init,
        )
        self.controller = None if space is None else self._start(space)
        self._independent = independent_sampler or RandomSampler(seed=seed)
        self._asked: dict[int, tuple[int, dict[str, Any]]] = {}
        """Ticket and config of each running trial the controller sampled, by trial id."""
        self._warned: set[str] = set()
        self._told_other = False
        """Whether a trial that ran other values than sampled has been warned about."""
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        """A study pickled to resume elsewhere takes the sampler along; a lock does not pickle."""
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        if len(study.directions) != 1:
            raise ValueError(
                f"MNMSSampler handles single-objective studies; this one has "
                f"{len(study.directions)} directions"
            )
        with self._lock:
            if self.controller is None:
                declared = _declared(study)
                if declared is None:
                    return {}
                self.controller = self._start(declared)
            space = self.controller.space
        return {name: CategoricalDistribution(options) for name, options in space.items()}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        with self._lock:
            ticket, config = self.controller.ask()
            self._asked[trial._trial_id] = (ticket, config)
        return {name: value for name, value in config.items() if name in search_space}

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        space = {} if self.controller is None else self.controller.space
        if space and param_name not in space and param_name not in self._warned:
            self._warned.add(param_name)
            warnings.warn(
                f"MNMSSampler: parameter {param_name!r} ({type(param_distribution).__name__}) "
                f"is not in its categorical space {list(space)}; "
                f"{type(self._independent).__name__} samples it",
                stacklevel=2,
            )
        return self._independent.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._independent.before_trial(study, trial)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._independent.after_trial(study, trial, state, values)
        with self._lock:
            if trial._trial_id not in self._asked:
                return
            ticket, config = self._asked.pop(trial._trial_id)
            ran = all(trial.params[k] == v for k, v in config.items() if k in trial.params)
            if not ran and not self._told_other:
                self._told_other = True
                warnings.warn(
                    f"MNMSSampler: trial {trial.number} ran other values than it sampled (a "
                    "fixed or enqueued parameter); such trials are not learned from",
                    stacklevel=2,
                )
            reward = None
            if state == TrialState.COMPLETE and ran and math.isfinite(values[0]):
                maximise = study.direction == StudyDirection.MAXIMIZE
                reward = values[0] if maximise else -values[0]
            self.controller.tell(ticket, reward)

    def reseed_rng(self) -> None:
        self._independent.reseed_rng()


def _declared(study: Study) -> dict[str, tuple[Any, ...]] | None:
    """The categorical parameters of the study's first finished trial, in the order it
    suggested them; None before one has finished."""
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not finished:
        return None
    first = finished[0]
    found = {
        name: distribution.choices
        for name, distribution in first.distributions.items()
        if isinstance(distribution, CategoricalDistribution)
    }
    if not found:
        raise ValueError(
            f"MNMSSampler searches categorical parameters (trial.suggest_categorical); trial "
            f"{first.number}, the study's first finished one, has none: {first.distributions}"
        )
    return found
