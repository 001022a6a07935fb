"""The task registry: names to `Task`s, memoised, plus user files, folders and `datasets` objects.

`make_task(name, seed=...)` accepts a registered name (`list_tasks()` shows them), or
`"jsonl:PATH"` / `"csv:PATH"` for a file with columns `text` and `label` (one pool, cut 80/10/10)
or a folder of such split files (`train`, `validation`, `test`, or `all`; the split rules of
`external`). The env calls it often, so results are memoised per (name, seed); the memo is
refreshed when the data behind a name changes (another `MNMS_DATA_DIR`, an edited, added or
removed file, a re-registration).
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from mnms_env.tasks import external
from mnms_env.tasks.base import (
    MODALITIES,
    SPLITS,
    Modality,
    Split,
    Task,
    TaskCard,
    TaskError,
    encode_labels,
    nearest_task,
    stratified_split,
    task_from_arrays,
)
from mnms_env.tasks.builtin import BUILTIN

__all__ = [
    "MODALITIES",
    "SPLITS",
    "Modality",
    "Split",
    "Task",
    "TaskCard",
    "TaskError",
    "TaskInfo",
    "check_task",
    "task_list",
    "data_at_hand",
    "encode_labels",
    "list_tasks",
    "make_task",
    "nearest_task",
    "register_task",
    "stratified_split",
    "task_from_arrays",
]

FILE_PREFIXES = ("jsonl:", "csv:")


@dataclass(frozen=True)
class TaskInfo:
    """What `list_tasks` reports about one task (for seed 0)."""

    name: str
    modality: Modality
    num_classes: int
    sizes: dict[str, int]
    """Rows in train/validation/test. For named datasets: as their reference copy
    (`shared/data`, read through `MNMS_DATA_DIR`) yields them; a hub copy may differ."""
    source: str
    """Where the data comes from: a package ("wordfreq", "scikit-learn"), a hub id or a path."""


@dataclass(frozen=True)
class _Entry:
    build: Callable[[int], Task]
    info: Callable[[], TaskInfo]
    version: Callable[[], object]
    """Identifies the data behind the name now; a change invalidates memoised tasks."""
    at_hand: Callable[[], bool] = lambda: True
    """Whether the data is on this machine (a named dataset without a local copy is not)."""


def _no_version() -> None:
    return None


def _loaded_info(name: str) -> TaskInfo:
    try:
        task = make_task(name, seed=0)
    except TaskError as err:  # a registered file edited or misdescribed since: say which task
        raise TaskError(f"task {name!r} cannot be listed: {err}") from err
    return TaskInfo(name, task.modality, task.num_classes, task.sizes(), task.source)


def _named_info(name: str, spec: external.NamedDataset) -> TaskInfo:
    return TaskInfo(name, "text", len(spec.classes), external.declared_sizes(spec), spec.hub_source)


def _files_version(paths: Sequence[Path]) -> tuple[tuple[int, int] | None, ...]:
    """Each file's (mtime, size), or None where it is absent."""
    stats = [path.stat() if path.is_file() else None for path in paths]
    return tuple((stat.st_mtime_ns, stat.st_size) if stat else None for stat in stats)


def _named_version(spec: external.NamedDataset) -> object:
    folder = external.local_folder(spec)
    if folder is None:
        return None
    return folder, _files_version(external.folder_candidates(folder))


_REGISTRY: dict[str, _Entry] = {}
_MEMO: dict[tuple[str, int], tuple[object, Task]] = {}


def make_task(name: str, *, seed: int = 0) -> Task:
    """The task called `name`, split with `seed`; equal (name, seed) give identical splits.

    `name` is a registered name, or `"jsonl:PATH"` / `"csv:PATH"` for a file (one pool, cut
    80/10/10) or a folder whose split files of that kind are used as given (module docstring of
    `mnms_env.tasks.external`).

    Raises `TaskError` for an unknown name (with the nearest registered names) and for data
    that cannot become a task.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise TaskError(f"seed must be a non-negative int, got {seed!r}")
    entry = _entry(name)
    version = entry.version()
    hit = _MEMO.get((name, seed))
    if hit is not None and hit[0] == version:
        return hit[1]
    task = entry.build(seed)
    _MEMO[(name, seed)] = (version, task)
    return task


def register_task(
    name: str,
    source: Callable[[int], Task] | str | os.PathLike[str] | Any,
    *,
    modality: Modality = "text",
    text_column: str = "text",
    label_column: str = "label",
    overwrite: bool = False,
) -> None:
    """Make `source` available as `make_task(name)`.

    `source` is a callable `(seed) -> Task`; a path to a `.jsonl` or `.csv` file (one pool, cut
    80/10/10); a path to a folder holding `train`, optionally `validation` and `test`, or one
    `all` pool, each a `.jsonl` or `.csv` file (a missing validation or test split is carved
    from train with the task seed; a folder without train, with none of these files or with one
    split in both kinds is refused here); or a `datasets.Dataset` / `datasets.DatasetDict` (a
    DatasetDict's train/validation/test splits are used as given; a single split is cut
    80/10/10). `text_column` and `label_column` name the columns of files and datasets.
    """
    if not isinstance(name, str) or not name or name.startswith(FILE_PREFIXES):
        raise TaskError(f"task name {name!r} is empty or starts with a reserved {FILE_PREFIXES}")
    if name in _REGISTRY and not overwrite:
        raise TaskError(f"task {name!r} is already registered; pass overwrite=True to replace it")
    if modality not in MODALITIES:
        raise TaskError(f"task {name!r}: modality {modality!r} is not one of {MODALITIES}")
    columns = {"text_column": text_column, "label_column": label_column}
    if isinstance(source, (str, os.PathLike)):
        path, suffixes = Path(source).absolute(), tuple(external.READERS)  # not a later cwd's
        if path.is_dir():
            external.split_files(path, suffixes)  # a bad layout is refused now, not at first use
        elif path.suffix not in suffixes or not path.is_file():
            raise TaskError(
                f"task {name!r}: {path} is neither an existing .jsonl or .csv file nor a folder"
            )
        entry = _path_entry(name, path, suffixes, modality, columns)
    elif _is_dataset(source):
        entry = _Entry(
            lambda seed: external.from_dataset(
                name, source, seed=seed, modality=modality, **columns
            ),
            partial(_loaded_info, name),
            _no_version,
        )
    elif callable(source):
        build = partial(_checked, name, modality, source)
        entry = _Entry(build, partial(_loaded_info, name), _no_version)
    else:
        raise TaskError(
            f"task {name!r}: cannot register a {type(source).__name__}; accepted: a callable "
            "(seed) -> Task, a .jsonl/.csv path, a folder of them, or a datasets.Dataset / "
            "DatasetDict"
        )
    for key in [k for k in _MEMO if k[0] == name]:
        del _MEMO[key]
    _REGISTRY[name] = entry


def list_tasks() -> list[TaskInfo]:
    """Every registered task, in registration order. Built-in and user tasks are loaded
    (memoised, about 2 s in all); named datasets report their declared sizes without loading."""
    return [entry.info() for entry in _REGISTRY.values()]


def data_at_hand(name: str) -> bool:
    """Whether `make_task(name)` can build the task from this machine alone: a registered or
    file task, or a named dataset with its `MNMS_DATA_DIR` copy (else it would go to the hub)."""
    try:
        return _entry(name).at_hand()
    except TaskError:
        return False


def shipped_task(name: str) -> bool:
    """Whether `name` is one of the package's own tasks (not replaced by `register_task`), which
    any process with the package (and `MNMS_DATA_DIR`, for a named dataset) builds alike. A
    task registered at run time, or a file path, is this process's alone."""
    return name in _SHIPPED and _REGISTRY.get(name) is _SHIPPED[name]


def task_list(tasks: object, what: str = "tasks") -> tuple[str, ...]:
    """`tasks` as a tuple of names. A single string is refused (`tuple("wine")` would be the
    tasks "w", "i", "n", "e"), and so is a name that is not a str."""
    if isinstance(tasks, str):
        raise TypeError(
            f"{what} takes a list of task names, got the string {tasks!r}: say [{tasks!r}]"
        )
    names = tuple(tasks)  # type: ignore[call-overload]
    not_names = [name for name in names if not isinstance(name, str)]
    if not_names:
        raise TypeError(
            f"a task name is a str, got {type(not_names[0]).__name__} {not_names[0]!r} "
            f"({what} {list(names)!r})"
        )
    return names


def check_task(name: str) -> None:
    """Raise `TaskError` as `make_task(name)` would for a name it does not know (with the
    nearest registered names), without loading anything."""
    _entry(name)


def _entry(name: str) -> _Entry:
    if not isinstance(name, str):
        raise TaskError(f"a task name is a str, got {type(name).__name__} {name!r}")
    if name in _REGISTRY:
        return _REGISTRY[name]
    for prefix in FILE_PREFIXES:
        if name.startswith(prefix):
            suffix, path = "." + prefix.removesuffix(":"), Path(name[len(prefix) :])
            if not path.exists():
                raise TaskError(f"task {name!r}: {path} is no such file or folder")
            return _path_entry(name, path, (suffix,), "text", {})
    close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
    hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
    raise TaskError(
        f"unknown task {name!r}.{hint} See mnms_env.list_tasks() for the registered names; "
        "load a file or folder as 'jsonl:PATH' or 'csv:PATH'."
    )


def _path_entry(
    name: str, path: Path, suffixes: tuple[str, ...], modality: Modality, columns: dict[str, str]
) -> _Entry:
    """A user's folder (its split files with `suffixes`, as given) or file (one pool)."""
    folder = path.is_dir()
    files = external.folder_candidates(path, suffixes) if folder else [path]

    def build(seed: int) -> Task:
        if folder:
            parts = external.read_folder(path, suffixes, **columns)
        else:
            parts = {"all": external.read_file(path, **columns)}
        return external.assemble(name, modality, parts, seed=seed, source=str(path))

    return _Entry(build, partial(_loaded_info, name), partial(_files_version, files))


def _checked(name: str, modality: Modality, build: Callable[[int], Task], seed: int) -> Task:
    """A registered callable's task, checked against what it was registered as."""
    task = build(seed)
    if not isinstance(task, Task):
        raise TaskError(
            f"task {name!r}: the registered callable returned {type(task).__name__}, not a Task"
        )
    if (task.name, task.modality) != (name, modality):
        raise TaskError(
            f"task {name!r} (modality {modality!r}): the registered callable returned task "
            f"{task.name!r} with modality {task.modality!r}"
        )
    return task


def _is_dataset(source: object) -> bool:
    """Whether `source` is a `datasets` object, without importing `datasets` (slow) when the
    caller has not."""
    module = sys.modules.get("datasets")
    return module is not None and isinstance(source, (module.Dataset, module.DatasetDict))


for _name, _build in BUILTIN.items():
    _REGISTRY[_name] = _Entry(_build, partial(_loaded_info, _name), _no_version)
for _name, _spec in external.NAMED.items():
    _REGISTRY[_name] = _Entry(
        partial(external.load_named, _name, _spec),
        partial(_named_info, _name, _spec),
        partial(_named_version, _spec),
        lambda spec=_spec: external.local_folder(spec) is not None,
    )
_SHIPPED = dict(_REGISTRY)
