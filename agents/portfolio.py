"""Transfer baselines: configs ranked on source tasks, tried first on a new task.

The field's zero-shot transfer baseline (syne-tune's `ZeroShotTransfer`, HPO-B's portfolio)
ranks configs by how well they did on source tasks and tries them in that order on a new one.
`SourceScores` is that ranking, built from the source tasks' benchmark tables or from children
trained on them; it holds nothing of any other task. Four controllers use it, one child per
episode, round-robin over the tasks, through the env's space and masks only:

- `portfolio_search`: the ranked configs that the task's space can produce, best first and none
  twice; once they run out, the space's other configs in a seeded random order.
- `nearest_portfolio_search`: the same over the one source task whose `TaskCard.descriptor`
  (classes, training size, input length, majority share) is nearest the task's.
- `source_best_search`: the portfolio's first config, then masked uniform random search (as
  `random_search`) that never draws that first config again.
- `tpe_warm_search`: TPE (`tpe_search`, one study per task) whose first `top` trials are the
  portfolio's first configs (`study.enqueue_trial`).

```python
sources = SourceScores.from_tables(load_table(t) for t in ["langid-es", "langid-fr"])
history = run_controller("portfolio", tasks=["langid-de"], children_per_task=20,
                         sources=sources, env_kwargs={"backend": "table"})
```
"""

from __future__ import annotations

import hashlib
import itertools
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np

from agents.random_search import episode_tasks, masked_uniform, play_episode
from agents.tpe import tpe_search
from mnms_env import Child, ChildConfig, SearchSpace, Table
from mnms_env.space import SpaceError
from mnms_env.table import enumerate_configs
from mnms_env.tasks import task_list
from mnms_env.tasks.base import Modality, nearest_task

TOP = 10
"""Portfolio configs `tpe_warm_search` enqueues per task: as many as Optuna's TPE draws at random
before it models anything (`n_startup_trials`), so they replace exactly its random start."""
REDRAWS = 100
"""Random draws `source_best_search` makes for a config other than its first before it gives
up: enough unless the space offers that task (almost) nothing else."""


@dataclass(frozen=True)
class SourceScores:
    """Configs ranked by their mean normalised score over source tasks, best first.

    Per source task a config's score is its mean validation accuracy (over a table's seeds, or
    over the children trained with it), min-max normalised over that task's configs, so a task
    whose accuracies span 0.90-0.92 counts as much as one spanning 0.50-0.90. A config's score
    is the mean over the sources that hold it (tables covering different options, say one built
    without MiniLM, rank the others' MiniLM configs on those alone). Ties go to the config whose
    canonical JSON (`ChildConfig.to_json`) sorts first, so the same results always give the
    same order.
    """

    tasks: tuple[str, ...]
    configs: tuple[ChildConfig, ...] = field(repr=False)
    scores: tuple[float, ...] = field(repr=False)
    """Each config's mean normalised score, in [0, 1], non-increasing."""
    means: tuple[Mapping[ChildConfig, float], ...] = field(default=(), repr=False, compare=False)
    """Per source task (in `tasks` order), its mean validation accuracy per config: what
    `nearest` ranks one source task by."""
    descriptors: Mapping[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)
    """The `TaskCard.descriptor` of each source task whose table carries one (`from_tables`;
    `from_children` has no cards to read them from). The digest covers them; equality does not."""

    def __post_init__(self) -> None:
        if len(self.configs) != len(self.scores):
            raise ValueError(
                f"SourceScores needs one score per config: {len(self.configs)} configs, "
                f"{len(self.scores)} scores"
            )
        if self.means and len(self.means) != len(self.tasks):
            raise ValueError(
                f"SourceScores needs per-task means for each of its {len(self.tasks)} tasks or "
                f"none, got {len(self.means)}"
            )

    @classmethod
    def from_tables(cls, tables: Iterable[Table]) -> SourceScores:
        """The ranking of the tables' tasks: every config, its validation accuracy averaged over
        the table's seeds."""
        tables = list(tables)
        return _ranked(
            [(t.task, dict(zip(t.configs, t.mean_val().tolist(), strict=True))) for t in tables],
            {t.task: t.card.descriptor for t in tables if t.card.descriptor is not None},
        )

    @classmethod
    def from_children(cls, children: Iterable[Child], tasks: Sequence[str]) -> SourceScores:
        """The ranking of `tasks` from trained children (a run's history, a pre-training's): a
        config's validation accuracy averaged over its children of the task. Children of other
        tasks are left out, so the children of a run that also searched targets can be passed."""
        tasks = task_list(tasks)
        values: dict[str, dict[ChildConfig, list[float]]] = {}
        for child in children:
            if not isinstance(child, Child):
                raise TypeError(
                    f"children are Child records (History.children, or each record's .child "
                    f"of an MNMS history), got {type(child).__name__}"
                )
            if child.request.task in tasks:
                by_config = values.setdefault(child.request.task, {})
                by_config.setdefault(child.request.config, []).append(child.result.val_accuracy)
        missing = [task for task in tasks if task not in values]
        if missing:
            raise ValueError(f"no child of source task(s) {missing} among the children given")
        return _ranked([(t, {c: float(np.mean(v)) for c, v in values[t].items()}) for t in tasks])

    @property
    def digest(self) -> str:
        """A short content hash: saved runs record it, so a changed ranking is not reused."""
        pairs = zip(self.configs, self.scores, strict=True)
        described = (f"{t}~{self.descriptors[t].tolist()}" for t in sorted(self.descriptors))
        text = "|".join([*self.tasks, *(f"{c.to_json()}={s!r}" for c, s in pairs), *described])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def nearest(
        self, descriptor: np.ndarray | None, usable: Callable[[ChildConfig], bool]
    ) -> SourceScores:
        """The ranking of the one source task nearest a new task of `descriptor`
        (`mnms_env.tasks.nearest_task`), among those with a descriptor that rank a config the
        new task can use (`usable`: the same modality and options); the ranking of all of them
        when there is nothing to compare."""
        candidates = {  # not only by the best config: a table without MiniLM can use the rest
            task: self.descriptors[task]
            for task, means in zip(self.tasks, self.means, strict=False)  # means may be ()
            if task in self.descriptors and any(map(usable, means))
        }
        if descriptor is None or not candidates:
            warnings.warn(
                "the nearest-task portfolio has nothing to compare (a task without a "
                "descriptor, or no source task with one that ranks a config the task can use: "
                "sources from children carry none); it ranks by every source task",
                stacklevel=2,
            )
            return self
        task = nearest_task(descriptor, candidates)
        return _ranked([(task, self.means[self.tasks.index(task)])], self.descriptors)

    def producible(
        self, space: SearchSpace, modality: Modality, mask: np.ndarray
    ) -> list[ChildConfig]:
        """The ranked configs `space` can produce for a task of `modality` whose episodes choose
        within `mask` (the env's `masks_of(task)`), best first: the others (another modality's
        featurizer, an option the space lacks, a masked one) are left out; none at all is
        warned about, since a baseline would then transfer nothing."""
        ranked = [c for c in self.configs if _produces(space, modality, mask, c)]
        if not ranked:
            warnings.warn(
                f"the source tasks {list(self.tasks)} rank no config a {modality} task can use "
                "under its options: the transfer baseline starts as its plain search (random "
                "order, or TPE with no first trials)",
                stacklevel=2,
            )
        return ranked


def _ranked(
    means: Sequence[tuple[str, Mapping[ChildConfig, float]]],
    descriptors: Mapping[str, np.ndarray] | None = None,
) -> SourceScores:
    """`SourceScores` from each source task's mean validation accuracy per config (and the
    descriptors of those that have one)."""
    tasks = [task for task, _ in means]
    if not tasks:
        raise ValueError("SourceScores needs at least one source task")
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"each source task counts once; got {tasks}")
    normalised: dict[ChildConfig, list[float]] = {}
    for task, by_config in means:
        low, high = min(by_config.values()), max(by_config.values())
        if high == low:
            raise ValueError(
                f"every config of source task {task!r} scores {low}; min-max normalisation "
                "needs two different scores to rank anything"
            )
        for config, value in by_config.items():
            normalised.setdefault(config, []).append((value - low) / (high - low))
    ranked = sorted(
        ((float(np.mean(v)), c) for c, v in normalised.items()),
        key=lambda pair: (-pair[0], pair[1].to_json()),
    )
    return SourceScores(
        tasks=tuple(tasks),
        configs=tuple(c for _, c in ranked),
        scores=tuple(s for s, _ in ranked),
        means=tuple(by_config for _, by_config in means),
        descriptors={t: d for t, d in (descriptors or {}).items() if t in tasks},
    )


def _produces(
    space: SearchSpace, modality: Modality, mask: np.ndarray, config: ChildConfig
) -> bool:
    try:
        return space.decode(space.encode(config), modality, mask) == config
    except SpaceError:
        return False


def portfolio_order(
    sources: SourceScores,
    space: SearchSpace,
    modality: Modality,
    mask: np.ndarray,
    rng: np.random.Generator,
) -> Iterator[ChildConfig]:
    """The portfolio on a task of `modality` choosing within `mask`: `sources.producible`,
    then the task's other configs in a random order from `rng` (enumerated only if the ranked
    ones run out: the benchmark space's 2,100 text configs in 0.1 s, the default space's 2.3
    million text option tuples in about a minute)."""
    ranked = sources.producible(space, modality, mask)
    yield from ranked
    tried = set(ranked)
    rest = [c for c in enumerate_configs(space, modality, mask) if c not in tried]
    yield from (rest[i] for i in rng.permutation(len(rest)))


def _source_best_order(
    sources: SourceScores,
    space: SearchSpace,
    modality: Modality,
    mask: np.ndarray,
    rng: np.random.Generator,
) -> Iterator[ChildConfig]:
    """The portfolio's first config, then masked uniform draws, each other than the first."""
    first = next(portfolio_order(sources, space, modality, mask, rng))
    yield first
    while True:
        for _ in range(REDRAWS):
            config = space.decode([masked_uniform(row, rng) for row in mask], modality, mask)
            if config != first:
                break
        else:
            raise RuntimeError(
                f"{REDRAWS} random draws in a row gave the first config {first.describe()}; "
                "this space offers the task almost nothing else"
            )
        yield config


Order = Callable[
    [SourceScores, SearchSpace, Modality, np.ndarray, np.random.Generator], Iterator[ChildConfig]
]


def _search(
    order: Order,
    env: gym.Env,
    children_per_task: int,
    sources: SourceScores,
    seed: int,
    tasks: Sequence[str] | None,
    nearest: bool = False,
) -> list[dict[str, Any]]:
    """Episodes round-robin over `tasks` (default: the env's), each choosing the option indices
    (`space.encode`) of its task's next config from `order` (over the source task nearest
    each task, with `nearest`: `SourceScores.nearest`); each episode's `info["child"]`."""
    base = env.unwrapped
    names = episode_tasks(env, tasks)
    modality = {task.name: task.modality for task in base.tasks}
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(len(names))]
    plans = {}
    for name, rng in zip(names, rngs, strict=True):
        mask, ranking = base.masks_of(name), sources
        if nearest:
            usable = partial(_produces, base.space, modality[name], mask)
            ranking = sources.nearest(base.card_of(name).descriptor, usable)
        plans[name] = order(ranking, base.space, modality[name], mask, rng)
    history = []
    for episode in range(children_per_task * len(names)):
        name = names[episode % len(names)]
        config = next(plans[name], None)
        if config is None:
            raise ValueError(
                f"every config the space offers {name!r} has been tried after "
                f"{episode // len(names)} children; children_per_task={children_per_task} is "
                "more than it holds"
            )
        follow = _following(base.space.encode(config))
        history.append(play_episode(env, follow, seed=seed + episode, task=name)[0])
    return history


def _following(actions: Sequence[int]) -> Callable[[int, np.ndarray], int]:
    """An episode's choices that are `actions`, one per step."""
    return lambda step, _: actions[step]


def portfolio_search(
    env: gym.Env,
    children_per_task: int,
    sources: SourceScores,
    *,
    seed: int = 0,
    tasks: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """`children_per_task` children of each task in `portfolio_order`, none twice; returns each
    episode's `info["child"]`. `seed` orders only the configs the sources do not rank."""
    return _search(portfolio_order, env, children_per_task, sources, seed, tasks)


def nearest_portfolio_search(
    env: gym.Env,
    children_per_task: int,
    sources: SourceScores,
    *,
    seed: int = 0,
    tasks: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """`portfolio_search` over the one source task whose descriptor is nearest each task's
    (Feurer et al. 2015's nearest-dataset warm start by meta-features, here the four numbers
    of `TaskCard.descriptor`); returns each episode's `info["child"]`."""
    return _search(portfolio_order, env, children_per_task, sources, seed, tasks, nearest=True)


def source_best_search(
    env: gym.Env,
    children_per_task: int,
    sources: SourceScores,
    *,
    seed: int = 0,
    tasks: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Per task, the best source config the task can use, then masked uniform random search
    that never repeats it; returns each episode's `info["child"]`."""
    return _search(_source_best_order, env, children_per_task, sources, seed, tasks)


def tpe_warm_search(
    env: gym.Env,
    children_per_task: int,
    sources: SourceScores,
    *,
    top: int = TOP,
    seed: int = 0,
    tasks: Sequence[str] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """`tpe_search` with each task's study started on the portfolio's first `top` configs that
    the task can use (fewer if the sources rank fewer); returns what `tpe_search` does."""
    if not isinstance(top, int) or top < 1:
        raise ValueError(f"top must be an int >= 1 (top=0 is plain tpe), got {top!r}")
    base = env.unwrapped
    names = episode_tasks(env, tasks)
    modality = {task.name: task.modality for task in base.tasks}
    first = {
        name: [
            base.space.encode(config)
            for config in itertools.islice(
                sources.producible(base.space, modality[name], base.masks_of(name)),
                min(top, children_per_task),
            )
        ]
        for name in names
    }
    return tpe_search(env, children_per_task, seed=seed, tasks=names, first_trials=first)


SEARCHES = {
    "portfolio": portfolio_search,
    "portfolio-nearest": nearest_portfolio_search,
    "tpe-warm": tpe_warm_search,
    "source-best": source_best_search,
}
"""The transfer baselines by controller name, each `(env, children_per_task, sources, *, seed,
tasks, ...)`."""
