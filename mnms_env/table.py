"""The tabular back-end: rewards looked up from a table of children trained in advance.

Real training makes each child cost seconds to minutes, so comparing controllers over many seeds
is slow. NAS-Bench-201 and HPOBench answered that with tables of pre-trained results; here the
same action space answers either from real training or from such a table:

```python
env = gym.make("mnms_env:MNMS-v2", tasks=["langid-es", "word-sentiment-en"], backend="table")
```

A table covers every config of `benchmark_space()` (2,400 distinct configs: 2,100 for text tasks,
300 for tabular ones) for one task, trained by `mnms tables build` (`mnms_env.table_build`) with
the batched evaluator for `budget` epochs and several seeds. It is self-contained: its header
carries its task's `TaskCard` (name, modality, classes, data fingerprint) and the options it
covers, so a table is searched by its task's name with no data and no `register_task`, and
the env offers exactly the options the table holds (a table built without the MiniLM encoder
covers no MiniLM child; one built with it is searchable on a machine without it). The env
draws one of the table's seeds per episode from its `np_random`, so a table reward is as noisy
as a real training run, and `info["child"]["seconds"]` is the training time the child took when
the table was built (its share of the batched call). Tables for the built-in tasks and (so far
some of) the named datasets ship with the package (`mnms_env/data/tables/`); `table_dir=` or
`$MNMS_TABLE_DIR` points at others.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import warnings
import zipfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np

from mnms_env.evaluate import Evaluator
from mnms_env.records import ChildRequest, ChildResult
from mnms_env.space import ChildConfig, Decision, SearchSpace
from mnms_env.tasks import TaskCard, data_at_hand, make_task
from mnms_env.tasks.base import Modality

SHIPPED_TABLES = Path(__file__).parent / "data" / "tables"
TABLE_VERSION = 2
"""2: the header carries the task's card and the options the table covers."""


class TableError(LookupError):
    """A table that is missing, does not match its task, or lacks a requested child."""


def benchmark_space() -> SearchSpace:
    """The enumerable subset of `default_space()` that tables cover.

    It leaves out L2 and the text CNN (the `tokens` representation and its four decisions, whose
    children cost seconds each). Every other decision keeps two or three of the default options,
    chosen so that each one matters and a one-epoch table stays cheap: the two smallest hash
    sizes, no to two hidden layers, narrow and wide, three activations, dropout on or off, Adam
    or SGD, three learning rates a decade apart, and small or large batches (a large batch takes
    a quarter of the steps).
    """
    return SearchSpace(
        (
            Decision(
                "representation", ("word-hash", "char-hash", "embedding-bag", "minilm", "raw")
            ),
            Decision("representation_size", (256, 1024)),
            Decision("hidden_layers", (0, 1, 2)),
            Decision("width", (32, 128)),
            Decision("activation", ("relu", "tanh", "gelu")),
            Decision("dropout", (0.0, 0.3)),
            Decision("optimizer", ("adam", "sgd")),
            Decision("learning_rate", (1e-3, 1e-2, 1e-1)),
            Decision("batch_size", (64, 256)),
        )
    )


def enumerate_configs(
    space: SearchSpace, modality: Modality, mask: np.ndarray | None = None
) -> list[ChildConfig]:
    """Every distinct config `space` can produce for a task of `modality` from the options of
    `mask` (default `space.masks(modality)`: what this machine can train), in a fixed order
    (the product of the valid options, first decision slowest; duplicates from canonicalisation
    kept once)."""
    mask = space.masks(modality) if mask is None else mask
    valid = [np.flatnonzero(row).tolist() for row in mask]
    seen: dict[ChildConfig, None] = {}
    for indices in itertools.product(*valid):
        seen.setdefault(space.decode(indices, modality, mask), None)
    return list(seen)


def table_file(directory: str | Path, task: str) -> Path:
    """Where the table of `task` lives in `directory`: one flat file whatever the name holds
    (`jsonl:/data/mine` becomes `jsonl%3A%2Fdata%2Fmine.npz`)."""
    return Path(directory) / f"{quote(task, safe='')}.npz"


@dataclass(frozen=True, eq=False)
class Table:
    """One task's results for every config of a space: `val`, `test`, `seconds`, `diverged` and
    `best_epoch` are `(len(configs), len(seeds))` arrays, row i for `configs[i]`, column j for
    `seeds[j]`; `parameters` has one entry per config. `covers` is the `(decisions,
    max_options)` mask of the options of `space` the configs were drawn from."""

    card: TaskCard
    budget: int
    seeds: tuple[int, ...]
    space: SearchSpace
    configs: tuple[ChildConfig, ...]
    val: np.ndarray
    test: np.ndarray
    seconds: np.ndarray
    diverged: np.ndarray
    best_epoch: np.ndarray
    parameters: np.ndarray
    covers: np.ndarray
    meta: dict = field(default_factory=dict)
    """How the table was built: device, package version, date."""

    def __post_init__(self) -> None:
        rows = {c: i for i, c in enumerate(self.configs)}
        if len(rows) != len(self.configs):  # a lookup would answer with one of the copies
            twice = next(c for i, c in enumerate(self.configs) if rows[c] != i)
            raise ValueError(f"config {twice.to_json()} is in the table twice")
        if len(set(self.seeds)) != len(self.seeds):  # a repeated seed's column is never read
            raise ValueError(f"seeds {list(self.seeds)} repeat a seed")
        shapes = {name: (len(self.configs), len(self.seeds)) for name in PER_SEED}
        shapes["parameters"] = (len(self.configs),)
        shapes["covers"] = (len(self.space.decisions), self.space.max_options)
        for name, shape in shapes.items():
            if np.shape(getattr(self, name)) != shape:
                raise ValueError(
                    f"{name} has shape {np.shape(getattr(self, name))}; {len(self.configs)} "
                    f"configs and {len(self.seeds)} seeds make it {shape}"
                )
        object.__setattr__(self, "_rows", rows)

    @property
    def task(self) -> str:
        return self.card.name

    def row(self, config: ChildConfig) -> int:
        try:
            return self._rows[config]  # type: ignore[attr-defined]
        except KeyError:
            raise TableError(
                f"config {config.to_json()} is not in the table of {self.task!r}; a table covers "
                "the configs of benchmark_space() (make the env with backend='table' and no "
                "space=)"
            ) from None

    def result(self, config: ChildConfig, seed: int) -> ChildResult:
        """The recorded result of `config` trained with `seed`."""
        if seed not in self.seeds:
            raise TableError(
                f"seed {seed} is not in the table of {self.task!r}; seeds: {list(self.seeds)}"
            )
        i, j = self.row(config), self.seeds.index(seed)
        return ChildResult(
            val_accuracy=float(self.val[i, j]),
            test_accuracy=float(self.test[i, j]),
            seconds=float(self.seconds[i, j]),
            parameters=int(self.parameters[i]),
            device="table",
            diverged=bool(self.diverged[i, j]),
            best_epoch=int(self.best_epoch[i, j]),
        )

    @cached_property
    def digest(self) -> str:
        """A short hash of what its lookups answer (task, configs, seeds and results): a saved
        benchmark run records it, so a run made on another table, or on this one before it was
        rebuilt, is not reused."""
        h = hashlib.sha256(json.dumps([self.task, list(self.seeds), self.budget]).encode())
        for config in self.configs:
            h.update(config.to_json().encode())
        for name in (*PER_SEED, "parameters"):
            h.update(np.ascontiguousarray(getattr(self, name)).tobytes())
        return h.hexdigest()[:16]

    def mean_val(self) -> np.ndarray:
        """Per-config validation accuracy averaged over seeds (the table's notion of quality)."""
        return self.val.mean(axis=1)

    def save(self, path: str | Path) -> None:
        """Write a compressed `.npz`: arrays, config option indices and a JSON header."""
        header = {
            "version": TABLE_VERSION,
            "task": asdict(self.card),
            "budget": self.budget,
            "seeds": list(self.seeds),
            "space": [[d.name, list(d.options)] for d in self.space.decisions],
            "meta": self.meta,
        }
        options = np.array([self.space.encode(c) for c in self.configs], dtype=np.int8)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")  # a killed write leaves no half table
        with open(partial, "wb") as f:
            np.savez_compressed(
                f,
                header=np.array(json.dumps(header)),
                options=options,
                val=self.val.astype(np.float32),
                test=self.test.astype(np.float32),
                seconds=self.seconds.astype(np.float32),
                diverged=self.diverged.astype(bool),
                best_epoch=self.best_epoch.astype(np.int16),
                parameters=self.parameters.astype(np.int64),
                covers=self.covers.astype(bool),
            )
        os.replace(partial, path)

    @classmethod
    def load(cls, path: str | Path) -> Table:
        """The table in `path`; a file that is not a table of this format raises `TableError`
        naming it."""
        try:
            with np.load(path) as data:
                header = json.loads(str(data["header"]))
                if not isinstance(header, dict):
                    raise TableError(f"{path}: its header is not a table's (a JSON object)")
                if header.get("version") != TABLE_VERSION:
                    raise TableError(
                        f"{path}: table format version {header.get('version')}, this package "
                        f"reads version {TABLE_VERSION}; rebuild it with `mnms tables build` "
                        "(with the build's results store, nothing is trained again)"
                    )
                arrays = {name: data[name] for name in ARRAYS}
        except TableError:
            raise
        except UNREADABLE as err:
            raise TableError(
                f"{path} is not a readable table ({type(err).__name__}: {err})"
            ) from err
        try:
            space = SearchSpace(tuple(Decision(n, tuple(o)) for n, o in header["space"]))
            card = TaskCard(**header["task"])
            # Decoded against the table's coverage, not this machine's featurizers: a table
            # only looks its rows up, so MiniLM rows need no encoder here.
            configs = tuple(
                space.decode(row, card.modality, arrays["covers"])
                for row in arrays.pop("options").tolist()
            )
            return cls(
                card=card,
                budget=header["budget"],
                seeds=tuple(header["seeds"]),
                space=space,
                configs=configs,
                meta=header["meta"],
                **arrays,
            )
        except (IndexError, KeyError, TypeError, ValueError) as err:
            raise TableError(f"{path}: the header or an option index does not fit ({err})") from err


ARRAYS = ("options", "val", "test", "seconds", "diverged", "best_epoch", "parameters", "covers")
"""The arrays of a table file beside its JSON header."""
UNREADABLE = (
    OSError,
    EOFError,
    ValueError,
    KeyError,
    TypeError,
    AttributeError,  # Python 3.10 on a .npy file: `with ndarray` (3.11: TypeError)
    zipfile.BadZipFile,
    zlib.error,
)
"""What numpy and json raise on a file that is not a table: empty, cut short, corrupted, another
kind of file."""
PER_SEED = ("val", "test", "seconds", "diverged", "best_epoch")
"""The `(configs, seeds)` arrays of a table."""


def table_dirs(table_dir: str | Path | None = None) -> list[Path]:
    """Where tables are looked for, in order: `table_dir`, `$MNMS_TABLE_DIR`, the shipped ones."""
    given = {"table_dir": table_dir, "MNMS_TABLE_DIR": os.environ.get("MNMS_TABLE_DIR")}
    for source, d in given.items():
        if d and not Path(d).is_dir():  # a misspelt folder would silently fall back to ours
            raise TableError(f"{source}={str(d)!r} is not a directory of tables")
    return [*(Path(d) for d in given.values() if d), SHIPPED_TABLES]


def available_tables(table_dir: str | Path | None = None) -> list[str]:
    """Task names that have a table in `table_dirs(table_dir)`."""
    return sorted({unquote(p.stem) for d in table_dirs(table_dir) for p in d.glob("*.npz")})


def load_table(task: str, table_dir: str | Path | None = None) -> Table:
    """The table of `task` (first found in `table_dirs`). Where the task's data is on this
    machine, a table built from other data warns; it is never needed."""
    if not isinstance(task, str):
        raise TypeError(f"a task name is a str, got {type(task).__name__} {task!r}")
    for directory in table_dirs(table_dir):
        path = table_file(directory, task)
        if path.exists():
            stat = path.stat()  # a table rewritten since it was loaded is read again
            table = _load_checked(path.resolve(), stat.st_mtime_ns, stat.st_size)
            if table.task != task:  # the env would ask for the header's name, and find none
                raise TableError(
                    f"{path} holds the table of task {table.task!r}, not {task!r}; a table's "
                    f"file is named after its task: {table_file(directory, table.task).name}"
                )
            return table
    raise TableError(
        f"no table for task {task!r} in {[str(d) for d in table_dirs(table_dir)]}; tables: "
        f"{available_tables(table_dir)}. Build one with `mnms tables build {task} --out DIR` "
        "and pass table_dir=DIR (or set MNMS_TABLE_DIR=DIR)."
    )


@lru_cache(maxsize=64)
def _load_checked(path: Path, mtime_ns: int, size: int) -> Table:
    """`Table.load(path)`, with a warning if the task's data here differs from the table's;
    memoised on the file's modification time and size too."""
    table = Table.load(path)
    if not data_at_hand(table.task):  # a table task needs no data (nor the hub's)
        return table
    fingerprint = make_task(table.task).fingerprint
    if fingerprint != table.card.fingerprint:
        warnings.warn(
            f"the table {path} was built from different data for {table.task!r} (fingerprint "
            f"{table.card.fingerprint}, the task now has {fingerprint}; e.g. another wordfreq "
            "version); its rewards may not match real training",
            stacklevel=3,
        )
    return table


class TableEvaluator(Evaluator):
    """Answers requests from tables instead of training: `request.seed` picks the column.
    Tables answer by task name; a table built from other data than the task's warns when it
    is loaded (`load_table`), so a request's fingerprint is not checked again here."""

    def __init__(self, tables: Mapping[str, Table]) -> None:
        self.tables = dict(tables)

    @classmethod
    def for_tasks(cls, tasks: Sequence[str], table_dir: str | Path | None = None) -> TableEvaluator:
        return cls({task: load_table(task, table_dir) for task in tasks})

    def stream(self, requests: Sequence[ChildRequest]) -> Iterator[tuple[int, ChildResult]]:
        for i, request in enumerate(requests):
            table = self.tables.get(request.task)
            if table is None:
                raise TableError(f"no table for {request.task!r}; tables: {list(self.tables)}")
            if request.budget != table.budget:
                raise TableError(
                    f"the table of {request.task!r} was built with budget={table.budget}; "
                    f"got a request with budget={request.budget}"
                )
            yield i, table.result(request.config, request.seed)
