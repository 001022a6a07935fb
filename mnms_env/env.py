"""`MNMS-v2` and `MNMS-OneShot-v2`: design a child network, get its validation accuracy."""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from mnms_env import render
from mnms_env.child import check_precision
from mnms_env.evaluate import CachedEvaluator, Evaluator, SequentialEvaluator
from mnms_env.records import Child, ChildRequest, check_budget, is_whole
from mnms_env.space import SearchSpace, default_space, missing_package
from mnms_env.store import ResultStore
from mnms_env.table import TableError, TableEvaluator
from mnms_env.tasks import Task, TaskCard, make_task, task_list

DEFAULT_TASK = "langid-es"
INVALID_ACTION_MODES = ("raise", "wrap")
BACKENDS = ("train", "table")
DEFAULT_STORE = "default"


class _MNMSBase(gym.Env):
    """What both variants share: tasks, space, masks, store and the terminal evaluation."""

    metadata: dict[str, Any] = {"render_modes": list(render.RENDER_MODES), "render_fps": 2}
    """`render_fps` is for video recorders: one frame per decision, two decisions a second."""

    def __init__(
        self,
        task: str | None = None,
        tasks: Sequence[str] | None = None,
        *,
        space: SearchSpace | None = None,
        budget: int = 1,
        child_seeds: int | None = None,
        next_task: Callable[[], str] | None = None,
        evaluator: Evaluator | None = None,
        store: str | Path | ResultStore | None = DEFAULT_STORE,
        invalid_action: Literal["raise", "wrap"] = "raise",
        device: str | None = None,
        precision: Literal["fp32", "bf16"] = "fp32",
        backend: Literal["train", "table"] = "train",
        table_dir: str | Path | None = None,
        render_mode: Literal["ansi", "rgb_array"] | None = None,
    ) -> None:
        if task is not None and tasks is not None:
            raise ValueError("pass either task= or tasks=, not both")
        given = [task] if task is not None else [DEFAULT_TASK] if tasks is None else tasks
        names = list(task_list(given, "tasks="))
        if not names or len(set(names)) != len(names):
            raise ValueError(f"tasks must be a non-empty list of distinct names, got {names!r}")
        if invalid_action not in INVALID_ACTION_MODES:
            raise ValueError(
                f"invalid_action={invalid_action!r}; accepted: {list(INVALID_ACTION_MODES)}"
            )
        if child_seeds is not None:
            if not is_whole(child_seeds) or child_seeds < 1:
                raise ValueError(f"child_seeds must be an int >= 1, got {child_seeds!r}")
            child_seeds = int(child_seeds)
        if next_task is not None and not callable(next_task):
            raise TypeError(f"next_task must be a callable () -> task name, got {next_task!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r}; accepted: {list(BACKENDS)}")
        check_precision(precision)
        trains_by_default = evaluator is None and backend == "train"
        if (device is not None or precision != "fp32") and not trains_by_default:
            raise ValueError(
                f"device={device!r} and precision={precision!r} configure the default "
                "evaluator; with evaluator= give them to that evaluator, and backend='table' "
                "trains nothing"
            )
        render.check_render_mode(render_mode)
        for keyword, value, kind in (
            ("space", space, SearchSpace),
            ("evaluator", evaluator, Evaluator),
        ):
            if value is not None and not isinstance(value, kind):
                raise TypeError(
                    f"{keyword}= must be None or an instance of {kind.__name__}, got "
                    f"{type(value).__name__} {value!r}"
                )
        self.task_names: tuple[str, ...] = tuple(names)
        self.budget = check_budget(budget)
        self.backend = backend
        if backend == "table":
            if space is not None or evaluator is not None or store not in (None, DEFAULT_STORE):
                raise ValueError(
                    "backend='table' answers from the tables' own space and records nothing; "
                    "do not pass space=, evaluator= or store= with it"
                )
            self.evaluator, self.space, self.child_seeds = table_backend(
                self.task_names, self.budget, child_seeds, table_dir
            )
            tables = [self.evaluator.tables[name] for name in names]
            self.tasks: tuple[Task | TaskCard, ...] = tuple(t.card for t in tables)
            self._masks = [_frozen(t.covers) for t in tables]  # the options each table holds
            self.store = None
        else:
            if table_dir is not None:
                raise ValueError(
                    f"table_dir={str(table_dir)!r} is read by backend='table' only; this env "
                    "trains its children (backend='train')"
                )
            self.tasks = tuple(make_task(name) for name in names)
            self.space = space if space is not None else default_space()
            self._masks = [_frozen(self.space.masks(t.modality)) for t in self.tasks]
            self.child_seeds = child_seeds or 1
            self.evaluator = (
                evaluator
                if evaluator is not None
                else SequentialEvaluator(device=device, precision=precision)
            )
            self.store = open_store(store)
        self.cache = CachedEvaluator(self.evaluator, self.store)
        self.invalid_action = invalid_action
        self.next_task = next_task
        self.render_mode = render_mode
        self._task_index = 0
        self._child_seed = 0
        self._child: Child | None = None
        """This episode's child once trained (what `render` shows), until the next reset."""

    @property
    def task(self) -> Task | TaskCard:
        """The task of the current episode (on the table backend, its table's card)."""
        return self.tasks[self._task_index]

    def task_masks(self) -> np.ndarray:
        """`(decisions, max_options)` boolean masks of the current task."""
        return self._masks[self._task_index]

    def masks_of(self, task: str) -> np.ndarray:
        """The masks of `task`'s episodes: what a controller that plans ahead may choose (on
        the table backend, the options its table covers)."""
        return self._masks[self._index_of(task)]

    def card_of(self, task: str) -> TaskCard:
        """`task`'s card: name, modality, classes, data fingerprint and descriptor (on the
        table backend, its table's)."""
        found = self.tasks[self._index_of(task)]
        return found if isinstance(found, TaskCard) else found.card

    def _index_of(self, task: str) -> int:
        if task not in self.task_names:
            raise ValueError(
                f"task {task!r} is not a task of this env; accepted: {list(self.task_names)}"
            )
        return self.task_names.index(task)

    def _start_episode(self, seed: int | None, options: dict[str, Any] | None) -> None:
        """Check `options`, then seed (if `seed`) and pick the episode's task and child seed."""
        if options is not None and (not isinstance(options, dict) or set(options) - {"task"}):
            raise ValueError(  # a misspelt key would quietly give a random task
                f"reset options are a dict whose only key is 'task', got {options!r}"
            )
        super().reset(seed=seed)
        self._pick_task(options)

    def _pick_task(self, options: dict[str, Any] | None) -> None:
        name = (options or {}).get("task")
        if name is None and self.next_task is not None:
            name = self.next_task()
        if name is None:
            self._task_index = int(self.np_random.integers(len(self.tasks)))
        elif name in self.task_names:
            self._task_index = self.task_names.index(name)
        else:
            source = "next_task()" if (options or {}).get("task") is None else "reset(options=...)"
            raise ValueError(
                f"{source} asked for task {name!r}, which is not a task of this env; "
                f"accepted: {list(self.task_names)}"
            )
        self._child_seed = int(self.np_random.integers(self.child_seeds))

    def check_option(self, step: int, action: int) -> int:
        """The option index `action` picks at decision `step`: `action` itself when it is valid
        for this episode's task, else wrapped (`invalid_action="wrap"`) or refused."""
        valid = np.flatnonzero(self.task_masks()[step])
        if action in valid:
            return action
        decision = self.space.decisions[step]
        if self.invalid_action == "wrap" and action >= 0:
            return int(valid[action % len(valid)])
        raise ValueError(
            f"action {action} is invalid for decision {decision.name!r} (step {step}) on task "
            f"{self.task.name!r}: valid actions are {valid.tolist()} "
            f"(options {[decision.options[i] for i in valid]})" + missing_package(decision, action)
        )

    def _request(self, indices: Sequence[int]) -> ChildRequest:
        """The training request for the child these option indices design. On the train
        backend the task is looked up again (`make_task` memoises it), so a child of a file task
        whose files were edited since the env was made trains on the data as it is now."""
        if self.backend == "train":
            i = self._task_index
            self.tasks = (*self.tasks[:i], make_task(self.task.name), *self.tasks[i + 1 :])
        config = self.space.decode(indices, self.task.modality, self.task_masks())
        return ChildRequest.for_task(self.task, config, seed=self._child_seed, budget=self.budget)

    def _decided(self) -> Sequence[int]:
        """The option indices chosen so far this episode (those of the trained child)."""
        return () if self._child is None else self.space.encode(self._child.request.config)

    def render(self) -> str | np.ndarray | None:
        """The child designed so far: text (`"ansi"`) or an `(H, W, 3)` uint8 picture
        (`"rgb_array"`), with its result once trained. Drawn only when called."""
        if self.render_mode is None:
            gym.logger.warn(
                "render() without a render mode draws nothing; make the env with "
                f"render_mode= one of {list(render.RENDER_MODES)}"
            )
            return None
        child = self._child
        result, cached = (None, False) if child is None else (child.result, child.cached)
        return render.draw(self.render_mode, self.task, self.space, self._decided(), result, cached)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self.backend == "train":
            state.pop("tasks")  # large arrays; reloaded (memoised) by name
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._masks = [_frozen(m) for m in self._masks]  # pickling drops the read-only flag
        if self.backend == "train":
            self.tasks = tuple(make_task(name) for name in self.task_names)


def _frozen(mask: np.ndarray) -> np.ndarray:
    """A read-only copy of `mask`: one caller's edit of the masks an env returns changed every
    env of the process (a table's masks are shared)."""
    out = np.array(mask, dtype=bool)
    out.setflags(write=False)
    return out


def table_backend(
    tasks: Sequence[str], budget: int, child_seeds: int | None, table_dir: str | Path | None
) -> tuple[TableEvaluator, SearchSpace, int]:
    """The evaluator, space and number of child seeds of `backend="table"`: every task's table
    must share one space and `budget`, and hold seeds `0 .. child_seeds - 1` (default: all the
    seeds every table has)."""
    evaluator = TableEvaluator.for_tasks(tasks, table_dir)
    tables = list(evaluator.tables.values())
    space = tables[0].space
    for table in tables:
        if table.space != space:
            raise TableError(
                f"the tables of {tasks[0]!r} and {table.task!r} cover different spaces; "
                "build them with the same benchmark space"
            )
        if table.budget != budget:
            raise TableError(
                f"the table of {table.task!r} holds children trained for budget="
                f"{table.budget} epochs; make the env with budget={table.budget}"
            )
    common = min(_leading_seeds(t.seeds) for t in tables)
    if common == 0:
        raise TableError(f"tables must hold seed 0; seeds: {[t.seeds for t in tables]}")
    if child_seeds is not None and child_seeds > common:
        raise TableError(
            f"child_seeds={child_seeds}, but the tables hold seeds 0..{common - 1} only"
        )
    return evaluator, space, child_seeds or common


def _leading_seeds(seeds: Sequence[int]) -> int:
    """n such that seeds 0 .. n-1 are all in `seeds`."""
    n = 0
    while n in seeds:
        n += 1
    return n


def as_action(action: Any) -> int:
    """`action` as an int: anything integer (`operator.index`: a Python or numpy integer, a 0-d
    integer array or tensor), what agents pass for a `Discrete` space; a float, a string or a
    bool is refused, not truncated."""
    if type(action) is int:
        return action
    try:
        if isinstance(action, bool | np.bool_):
            raise TypeError("a bool is not an option index")
        return operator.index(action)
    except TypeError:
        raise TypeError(
            f"an action is an integer option index (Discrete), got {type(action).__name__} "
            f"{action!r}"
        ) from None


def open_store(store: str | Path | ResultStore | None) -> ResultStore | None:
    """A `ResultStore` from the `store=` keyword: a path, a store, None, or the default."""
    if store is None or isinstance(store, ResultStore):
        return store
    if not isinstance(store, str | Path):
        raise TypeError(
            f"store= takes a path, a ResultStore or None, got {type(store).__name__} {store!r}"
        )
    return ResultStore(None if store == DEFAULT_STORE else store)


class MNMSEnv(_MNMSBase):
    """## Description

    Multitask Neural Model Search (Wong and Gesmundo, 2017) as an episodic environment. One
    episode designs one child network for one task, one decision per step (in the default space:
    representation, its size, the text CNN's embedding initialisation, embedding width, filter
    widths and filters, depth, width, activation, dropout, optimizer, learning rate, batch size,
    L2; the `tokens` representation makes a text CNN, every other an MLP). After the last
    decision the child is really trained on the task's training split and its validation
    accuracy is the reward. The observation says which task the child is for, so one agent can
    learn task-specific designs.

    ## Action Space

    `Discrete(max_options)`: the option index for the current decision. Not every index is valid
    at every step (decisions have fewer options than the largest one, and some options do not
    apply to a task, e.g. text featurizers on `digits`). `action_masks()` and
    `info["action_mask"]` give the valid ones. An invalid action raises `ValueError` naming the
    decision and its valid actions; with `invalid_action="wrap"` a non-negative one is mapped
    to `valid[action % len(valid)]` instead. An action that is not an integer (`4.9`, `"a"`) is
    refused with a `TypeError`, as `Discrete` does not contain it.

    ## Observation Space

    | key         | space                        | meaning                                   |
    |-------------|------------------------------|-------------------------------------------|
    | `task`      | `Discrete(len(tasks))`       | the episode's task in `env.task_names`    |
    | `step`      | `Discrete(len(space) + 1)`   | decisions made so far                     |
    | `decisions` | `MultiDiscrete(options + 1)` | each chosen option + 1; 0 = not yet made  |

    ## Rewards

    0 after every decision but the last; then the child's validation accuracy in [0, 1]. The test
    accuracy is reported in `info["child"]` and never enters the reward.

    ## Starting State

    No decision made; the task is chosen by `reset(options={"task": name})`, else by calling
    `next_task()` (a schedule or curriculum; shared by the sub-envs of `MNMSVectorEnv` or a
    `SyncVectorEnv`, it also sets the task of each autoreset; an `AsyncVectorEnv`'s workers each
    get a copy), else drawn uniformly from `tasks` with `np_random`.

    ## Episode End

    Termination: after the last decision (`len(env.unwrapped.space)` steps). Truncation: never.

    ## Info

    `task` (name), `action_mask` (valid actions for the next step; all True once the episode has
    ended), and on the last step `child` (`mnms_env.Child.to_info()`; `Child.from_info` reads it
    back): the task, its data `fingerprint`, the config, seed, budget, `val_accuracy`,
    `test_accuracy`, `seconds`, `parameters`, `device`, `diverged`, `best_epoch` and `cached`
    (answered from the results store without training).

    ## Arguments

    | argument         | default       | meaning                                                 |
    |------------------|---------------|---------------------------------------------------------|
    | `task`/`tasks`   | `"langid-es"` | one task name, or a list (one drawn per episode)         |
    | `space`          | default space | a `SearchSpace`                                          |
    | `budget`         | 1             | training epochs per child (best kept on validation)     |
    | `child_seeds`    | 1             | seed of each child: `np_random.integers(child_seeds)`   |
    | `next_task`      | None          | `() -> name`: each reset's task when `options` names none |
    | `evaluator`      | sequential    | an `Evaluator` that trains children                     |
    | `store`          | per-user file | SQLite path, a `ResultStore`, or None (no caching)      |
    | `invalid_action` | `"raise"`     | `"raise"` or `"wrap"`                                    |
    | `device`         | auto          | torch device for the default evaluator                  |
    | `precision`      | `"fp32"`      | the default evaluator's; `"bf16"`: bfloat16 matmuls      |
    | `backend`        | `"train"`     | `"table"`: look rewards up in benchmark tables          |
    | `table_dir`      | shipped       | extra directory of tables (`benchmarks/build_table.py`) |
    | `render_mode`    | None          | `"ansi"`: text; `"rgb_array"`: a picture of the child   |

    With `backend="table"` (see `mnms_env.table`) nothing is trained: the space is the tables'
    `benchmark_space()`, `child_seeds` defaults to every seed the tables hold (one drawn per
    episode, so rewards are as noisy as real training), `info["child"]["seconds"]` is the
    training time recorded when the table was built and `info["child"]["device"]` is `"table"`.

    `render()` shows the child designed so far, drawn only when called: with
    `render_mode="ansi"` a string (the task, each decision made with its value, `?` for those
    to come, and once the child is trained its config, val/test accuracy, seconds, parameters
    and whether the store answered it); with `"rgb_array"` an `(450, 800, 3)` uint8 picture of
    the same (the input representation and its size, one box per hidden layer with its width,
    activation and dropout, the optimizer, learning rate, batch size and L2, and the accuracy).

    ```python
    import gymnasium as gym
    env = gym.make("mnms_env:MNMS-v2", tasks=["langid-es", "word-sentiment-en"], budget=2)
    ```

    ## Version History

    * v2: the default space gained the `word-ngrams` representation (the most frequent word
      1-2-grams, for long documents); the table backend is unchanged.
    * v1: the default space gained text CNN children (the `tokens` representation and four CNN
      decisions: 14 decisions, so 14 steps per episode); the table backend is unchanged.
    * v0: initial version (10 decisions, MLP children only).
    """

    def __init__(self, task: str | None = None, tasks: Sequence[str] | None = None, **kwargs: Any):
        super().__init__(task, tasks, **kwargs)
        sizes = np.array(self.space.sizes, dtype=np.int64)
        self.action_space = spaces.Discrete(self.space.max_options)
        self.observation_space = spaces.Dict(
            {
                "task": spaces.Discrete(len(self.tasks)),
                "step": spaces.Discrete(len(self.space) + 1),
                "decisions": spaces.MultiDiscrete(sizes + 1),
            }
        )
        self._chosen = np.zeros(len(self.space), dtype=np.int64)
        self._step = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        self._start_episode(seed, options)
        self._chosen[:] = 0
        self._step = 0
        self._child = None
        return self._obs(), self._info()

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        if not self.decide(action):
            return self.step_result()
        [child] = self.cache.children([self.pending_request()])
        return self.step_result(child)

    # The vector env steps its sub-envs through these public hooks: `check_action` for every
    # sub-env first, then `decide`, one batched training of the finished ones, `step_result`.

    def check_action(self, action: Any) -> int:
        """The option index `action` picks at the current decision (see `check_option`)."""
        if self._step >= len(self.space):
            raise RuntimeError("the episode has ended; call reset() before step()")
        return self.check_option(self._step, as_action(action))

    def decide(self, action: Any) -> bool:
        """Record one decision; True when it was the last (the child is ready to train)."""
        option = self.check_action(action)
        self._chosen[self._step] = option + 1
        self._step += 1
        return self._step == len(self.space)

    def _decided(self) -> Sequence[int]:
        return (self._chosen[: self._step] - 1).tolist()

    def pending_request(self) -> ChildRequest:
        """The request of the child designed this episode (after the last decision)."""
        return self._request(self._chosen - 1)

    def step_result(
        self, child: Child | None = None
    ) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        """What `step` returns after `decide`: the next observation with reward 0, or, given
        the child the last decision designed, its validation accuracy as the reward, the end of
        the episode and `info["child"]`."""
        if child is None:
            return self._obs(), 0.0, False, False, self._info()
        self._child = child
        info = self._info(child=child.to_info())
        return self._obs(), child.result.val_accuracy, True, False, info

    def action_masks(self) -> np.ndarray:
        """Valid actions now (for sb3-contrib's MaskablePPO and masked samplers)."""
        if self._step >= len(self.space):
            return np.ones(self.space.max_options, dtype=bool)
        return self.task_masks()[self._step].copy()

    def _obs(self) -> dict[str, Any]:
        return {
            "task": self._task_index,
            "step": self._step,
            "decisions": self._chosen.copy(),
        }

    def _info(self, **extra: Any) -> dict[str, Any]:
        return {"task": self.task.name, "action_mask": self.action_masks(), **extra}


class MNMSOneShotEnv(_MNMSBase):
    """## Description

    The one-step variant of `MNMS-v2`: a single `MultiDiscrete` action chooses every decision of
    the child at once, suiting bandit-style and factorised agents. Same tasks, space, training,
    store and info as `MNMS-v2`.

    ## Action Space

    `MultiDiscrete(options per decision)`. Options invalid for the task raise `ValueError`
    (or wrap, with `invalid_action="wrap"`). `action_masks()` returns the concatenated
    per-decision masks, the layout MaskablePPO expects for `MultiDiscrete`.

    ## Observation Space

    `Dict(task=Discrete(len(tasks)))`: the episode's task index.

    ## Rewards

    The child's validation accuracy, on the only step.

    ## Starting State

    As `MNMS-v2`: the task given by `reset(options={"task": name})`, else by `next_task()`, else
    drawn with `np_random`.

    ## Episode End

    Termination after one step. Truncation: never.

    ## Arguments

    As `MNMS-v2`: `gym.make("mnms_env:MNMS-OneShot-v2", task="digits")`.

    ## Version History

    * v2: the default space gained the `word-ngrams` representation.
    * v1: the default space gained text CNN children (14 decisions in the action).
    * v0: initial version (10 decisions, MLP children only).
    """

    def __init__(self, task: str | None = None, tasks: Sequence[str] | None = None, **kwargs: Any):
        super().__init__(task, tasks, **kwargs)
        self.action_space = spaces.MultiDiscrete(np.array(self.space.sizes, dtype=np.int64))
        self.observation_space = spaces.Dict({"task": spaces.Discrete(len(self.tasks))})
        self._decisions: list[int] | None = []
        """The option indices of this episode's child once designed; None until then (`[]`
        before the first reset: a step needs one)."""

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        self._start_episode(seed, options)
        self._child = None
        self._decisions = None
        return self._obs(), {"task": self.task.name, "action_mask": self.action_masks()}

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        if self._decisions is not None:  # another child would skip the task schedule
            raise RuntimeError("the episode has ended (or none began); call reset() before step()")
        action = np.asarray(action)
        if action.dtype.kind not in "iu":  # floats would be truncated
            raise TypeError(
                "action must hold integer option indices (MultiDiscrete), got "
                f"{action.dtype} {action.tolist()!r}"
            )
        if action.shape != (len(self.space),):
            raise ValueError(
                f"action must hold {len(self.space)} option indices, got shape {action.shape}"
            )
        indices = [self.check_option(i, int(a)) for i, a in enumerate(action)]
        [child] = self.cache.children([self._request(indices)])
        self._child, self._decisions = child, indices
        info = {
            "task": self.task.name,
            "action_mask": self.action_masks(),
            "child": child.to_info(),
        }
        return self._obs(), child.result.val_accuracy, True, False, info

    def _decided(self) -> Sequence[int]:
        return self._decisions or ()

    def action_masks(self) -> np.ndarray:
        masks = self.task_masks()
        return np.concatenate([masks[i, :n] for i, n in enumerate(self.space.sizes)])

    def _obs(self) -> dict[str, Any]:
        return {"task": self._task_index}
