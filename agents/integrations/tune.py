"""`MNMSSearcher`: the MNMS controller as a Ray Tune search algorithm, for any trainable.

```python
from ray import tune
from ray.tune.search import ConcurrencyLimiter

searcher = MNMSSearcher(metric="accuracy", mode="max", task="my-net", seed=0)
tuner = tune.Tuner(
    train,
    param_space={"lr": tune.choice([1e-3, 1e-2, 1e-1]), "layers": tune.choice([1, 2, 3])},
    tune_config=tune.TuneConfig(
        search_alg=ConcurrencyLimiter(searcher, max_concurrent=4), num_samples=64
    ),
)
```

The space comes as `space=` (`{name: [options, ...]}`) or from the Tuner's `param_space`: its
`tune.choice` parameters are searched (inside nested dicts named by their path, `"a/b"`),
constants pass through, and any other kind (`tune.uniform`, `tune.randint`, `grid_search`) is
refused by name: MNMS chooses among listed options, so give a grid as `tune.choice([...])`.
Each suggestion is asked from `MNMSAskTell`, each finished trial's metric told back (negated
for `mode="min"`; a 0-d tensor or array counts as its number; an errored trial, or one
without a finite metric, is dropped, the latter with a warning).
"""

from __future__ import annotations

import copy
import logging
import tempfile
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal

from agents.mnms.ask_tell import MNMSAskTell, Space, as_reward
from agents.mnms.checkpoint import NewTaskInit
from agents.mnms.config import MNMSConfig

try:
    from ray import cloudpickle
    from ray.tune.search import Searcher
    from ray.tune.search.sample import Categorical
    from ray.tune.search.variant_generator import parse_spec_vars
    from ray.tune.utils.util import flatten_dict, unflatten_list_dict
except ImportError as err:  # pragma: no cover - the ray extra
    raise ImportError("MNMSSearcher needs Ray Tune: pip install 'mnms-env[ray]'") from err

MODES = ("max", "min")
_CHECKPOINT = "mnms.pt"
logger = logging.getLogger(__name__)


class MNMSSearcher(Searcher):
    """A Ray Tune `Searcher` that suggests configs from an MNMS controller and learns from each
    finished trial's `metric` (`mode` `"max"` or `"min"`).

    `task` names the task embedding the controller learns for this objective. `checkpoint`
    (a file of `mnms search`, `MNMS.save` or `MNMSAskTell.save`, on a space of the same option
    counts) starts the controller from a pre-trained policy: a transfer, the new task's
    embedding starting as `new_task_init` says. `config` and `seed` as for `MNMSAskTell`.
    """

    def __init__(
        self,
        space: Space | None = None,
        *,
        metric: str | None = None,
        mode: Literal["max", "min"] | None = None,
        task: str = "default",
        config: MNMSConfig | None = None,
        seed: int = 0,
        checkpoint: str | Path | None = None,
        new_task_init: NewTaskInit = "random",
    ) -> None:
        _check_mode(mode)
        super().__init__(metric=metric, mode=mode)
        self._start = partial(  # the controller, once the space is known
            MNMSAskTell,
            tasks=task,
            config=config,
            seed=seed,
            checkpoint=checkpoint,
            new_task_init=new_task_init,
        )
        self.controller = None if space is None else self._start(space)
        self._tickets: dict[str, int] = {}
        """The controller's ticket of each trial suggested and not yet complete."""
        self._spec: dict | None = None
        """The Tuner's `param_space`, when the space came from it: suggestions are placed in it."""

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict, **spec: Any
    ) -> bool:
        """Take Tune's metric and mode, and the space from its `param_space` unless one was
        given already (then a `param_space` with parameters to search is refused)."""
        _check_mode(mode)
        if self.controller is not None and any(parse_spec_vars(config)[1:]):
            return False
        self._metric = metric or self._metric
        self._mode = mode or self._mode
        if self.controller is None:
            self.controller = self._start(tune_choices(config))
            self._spec = copy.deepcopy(config)
        return True

    def suggest(self, trial_id: str) -> dict[str, Any]:
        if self.controller is None:
            raise RuntimeError(
                "MNMSSearcher has no search space: pass space= or a Tuner param_space with "
                "tune.choice parameters"
            )
        if self._metric is None or self._mode is None:
            raise RuntimeError(
                f"MNMSSearcher needs metric and mode (got {self._metric!r}, {self._mode!r}): "
                "pass them to it or to tune.TuneConfig (Tune passes TuneConfig's on only with a "
                "param_space: with space= and none, pass them to MNMSSearcher)"
            )
        ticket, config = self.controller.ask()
        self._tickets[trial_id] = ticket
        if self._spec is None:
            return unflatten_list_dict(config)
        return _placed(self._spec, config)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if trial_id not in self._tickets:  # e.g. finished before a restore's checkpoint
            logger.warning("MNMSSearcher: trial %s was not suggested by it; ignored", trial_id)
            return
        value = None if error or result is None else result.get(self._metric)
        reward = as_reward(value)
        if not error and result is not None and self._metric not in result:
            logger.warning(
                "MNMSSearcher: trial %s reported no %r (its result has %s); it is dropped as a "
                "failed trial",
                trial_id,
                self._metric,
                sorted(result),
            )
        elif reward is None and value is not None:
            logger.warning(
                "MNMSSearcher: trial %s reported %s=%r (%s), not one finite number; it is "
                "dropped as a failed trial",
                trial_id,
                self._metric,
                value,
                type(value).__name__,
            )
        self.controller.tell(
            self._tickets.pop(trial_id),
            None if reward is None else reward if self._mode == "max" else -reward,
        )

    def save(self, checkpoint_path: str) -> None:
        """Everything in one file (Tune renames it into place): the controller's checkpoint and
        history file, the space, metric, mode and the trials still running."""
        with tempfile.TemporaryDirectory() as folder:
            self.controller.save(Path(folder, _CHECKPOINT))
            files = {path.name: path.read_bytes() for path in Path(folder).iterdir()}
        state = {
            "space": self.controller.space,
            "metric": self._metric,
            "mode": self._mode,
            "tickets": self._tickets,
            "param_space": self._spec,
            "files": files,
        }
        with open(checkpoint_path, "wb") as file:
            cloudpickle.dump(state, file)  # a space may hold lambdas

    def restore(self, checkpoint_path: str) -> None:
        """Resume exactly what `save` wrote (the file is trusted: it is a pickle)."""
        with open(checkpoint_path, "rb") as file:
            state = cloudpickle.load(file)
        with tempfile.TemporaryDirectory() as folder:
            for name, data in state["files"].items():
                Path(folder, name).write_bytes(data)
            self.controller = MNMSAskTell.load(Path(folder, _CHECKPOINT), state["space"])
        self._metric, self._mode, self._tickets = state["metric"], state["mode"], state["tickets"]
        self._spec = state.get("param_space")  # absent from files written before it was kept


def _placed(spec: dict, config: Mapping[str, Any]) -> dict:
    """`spec` (a `param_space`) with each suggested value at its path (`widths/0`: item 0 of
    list `widths`), so a list keeps its constant items (Tune replaces a suggested list
    whole)."""
    tree = copy.deepcopy(spec)
    for name, value in config.items():
        *parents, last = name.split("/")
        node = tree
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[int(last) if isinstance(node, list) else last] = value
    return tree


def tune_choices(param_space: Mapping[str, Any]) -> dict[str, Sequence[Any]]:
    """The `tune.choice` parameters of a Tune `param_space`, `{path: options}`; any other kind
    of parameter raises, naming it."""
    _, _, grids = parse_spec_vars(dict(param_space))
    if grids:
        names = ["/".join(map(str, path)) for path, _ in grids]
        raise ValueError(
            f"MNMSSearcher cannot search grid_search parameters {names}: give them as "
            "tune.choice([...]) (MNMS picks one listed option per parameter)"
        )
    _, domains, _ = parse_spec_vars(flatten_dict(dict(param_space), prevent_delimiter=True))
    found = {}
    for path, domain in domains:
        name = "/".join(map(str, path))
        if not isinstance(domain, Categorical):
            raise ValueError(
                f"MNMSSearcher searches categorical parameters only; {name!r} is "
                f"{type(domain).__name__} {domain.domain_str}: list a grid of its values as "
                "tune.choice([...])"
            )
        found[name] = domain.categories
    return found


def _check_mode(mode: str | None) -> None:
    if mode is not None and mode not in MODES:
        raise ValueError(f"mode={mode!r}; accepted: {list(MODES)} (or None, set by Tune)")
