"""Tasks from data outside this package: named datasets, user files and folders, `datasets`
objects.

A named dataset is read from `$MNMS_DATA_DIR/<folder>/` when that folder exists (JSON Lines,
one file per split, the layout of `shared/data`), else from the Hugging Face hub. A user's
folder is read by the same `read_folder`, its split files being `.jsonl` or `.csv`. Local files
are parsed with the `json` and `csv` modules, not `datasets.load_dataset("json")`: measured
0.02 s against 0.22 s for sst2 and 0.24 s against 0.8-1.1 s for imdb, and no Arrow cache is
written.

A folder holds `train.<suffix>`, optionally with `validation.<suffix>` and `test.<suffix>`, or
one `all.<suffix>` pool (`split_files`). Refused, by name: a folder with none of these, a split
given in two kinds (`train.jsonl` and `train.csv`), a pool beside split files, and split files
without train. A `dev` file is not read, and a warning says so.

Split rules, the same for every source:

- the source's own train/validation/test splits are used as given;
- a source with train and test but no validation (trec; several hub copies) gets a stratified
  10% of train, drawn with the task seed, as validation (likewise a missing test split);
- a single split (`all.jsonl`, a user file, a `Dataset`) gets the stratified 80/10/10 split of
  `stratified_split`, exactly as `task_from_arrays` cuts it.

Integer labels keep the source's order (`encode_labels` sorts ints numerically); class names
come from the registry for local copies and from the hub's `ClassLabel` or `label_text`.
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import numpy as np

from mnms_env.tasks.base import (
    SPLITS,
    Modality,
    Split,
    Task,
    TaskError,
    encode_labels,
    stratified_split,
)

if TYPE_CHECKING:  # `datasets` takes ~0.5 s to import; only the hub and Dataset paths need it
    import datasets

Columns = tuple[list[object], list[object]]
"""One split as read: inputs and raw labels."""

CARVED_FRACTION = 0.1
"""Share of train that becomes a missing validation or test split."""


@dataclass(frozen=True)
class NamedDataset:
    """Where a named dataset lives and what its reference copy (`shared/data`) holds."""

    folder: str
    hub_id: str
    classes: tuple[str, ...]
    counts: Mapping[str, tuple[int, ...]]
    """Rows per class in each split of the local copy, from its SOURCE.md."""
    config: str | None = None
    revision: str | None = None
    """`refs/convert/parquet` for hub datasets still defined by a loading script, which
    `datasets>=4` no longer runs."""
    text_column: str = "text"
    label_column: str = "label"

    @property
    def hub_source(self) -> str:
        return f"{self.hub_id} ({self.config})" if self.config else self.hub_id


_BINARY = ("negative", "positive")
_TRI = ("negative", "neutral", "positive")
_UMSAB = {"train": (613,) * 3, "validation": (108,) * 3, "test": (290,) * 3}
_SCRIPT = "refs/convert/parquet"

NAMED: dict[str, NamedDataset] = {
    "sst2": NamedDataset(
        "sst2",
        "SetFit/sst2",
        _BINARY,
        {"train": (3310, 3610), "validation": (428, 444), "test": (912, 909)},
    ),
    "sst5": NamedDataset(
        "sst5",
        "SetFit/sst5",
        ("very negative", "negative", "neutral", "positive", "very positive"),
        {
            "train": (1092, 2218, 1624, 2322, 1288),
            "validation": (139, 289, 229, 279, 165),
            "test": (279, 633, 389, 510, 399),
        },
    ),
    "mr": NamedDataset(
        "mr", "cornell-movie-review-data/rotten_tomatoes", _BINARY, {"all": (5331, 5331)}
    ),
    "subj": NamedDataset("subj", "SetFit/subj", ("subjective", "objective"), {"all": (5000, 5000)}),
    "trec": NamedDataset(
        "trec",
        "CogComp/trec",
        ("DESC", "ENTY", "ABBR", "HUM", "LOC", "NUM"),
        {"train": (1162, 1250, 86, 1223, 835, 896), "test": (138, 94, 9, 65, 81, 113)},
        revision=_SCRIPT,
        label_column="coarse_label",
    ),
    "cr": NamedDataset("cr", "SetFit/CR", _BINARY, {"all": (1368, 2407)}),
    "mpqa": NamedDataset("mpqa", "SetFit/mpqa", _BINARY, {"all": (7294, 3312)}),
    "imdb": NamedDataset(
        "imdb",
        "stanfordnlp/imdb",
        _BINARY,
        {"train": (10000, 10000), "validation": (2500, 2500), "test": (12500, 12500)},
    ),
    **{
        f"sentiment-{lang}": NamedDataset(
            f"umsab_sentiment_{lang}",
            "cardiffnlp/tweet_sentiment_multilingual",
            _TRI,
            _UMSAB,
            config=config,
            revision=_SCRIPT,
        )
        for lang, config in (("es", "spanish"), ("de", "german"), ("fr", "french"))
    },
    "tweet-emotion": NamedDataset(
        "tweeteval_emotion",
        "cardiffnlp/tweet_eval",
        ("anger", "joy", "optimism", "sadness"),
        {
            "train": (1400, 708, 294, 855),
            "validation": (160, 97, 28, 89),
            "test": (558, 358, 123, 382),
        },
        config="emotion",
    ),
    "tweet-irony": NamedDataset(
        "tweeteval_irony",
        "cardiffnlp/tweet_eval",
        ("non_irony", "irony"),
        {"train": (1417, 1445), "validation": (499, 456), "test": (473, 311)},
        config="irony",
    ),
}
"""Named dataset tasks, mapped explicitly to their `MNMS_DATA_DIR` folders and hub ids."""


def local_folder(spec: NamedDataset) -> Path | None:
    """The local copy `$MNMS_DATA_DIR/<folder>` if it exists."""
    root = os.environ.get("MNMS_DATA_DIR")
    folder = Path(root) / spec.folder if root else None
    return folder if folder is not None and folder.is_dir() else None


def declared_sizes(spec: NamedDataset) -> dict[str, int]:
    """Split sizes the reference copy yields, by running the split rules on its class counts
    (no data is read, so `list_tasks` stays cheap)."""
    labels = {part: np.repeat(np.arange(len(c)), c) for part, c in spec.counts.items()}
    return {split: len(idx) for split, (_, idx) in _layout(labels, seed=0).items()}


def load_named(name: str, spec: NamedDataset, seed: int) -> Task:
    """A named dataset from its local copy when there is one, else from the hub."""
    folder = local_folder(spec)
    if folder is not None:
        parts = read_folder(folder)
        names = dict(enumerate(spec.classes))
        return assemble(name, "text", parts, seed=seed, source=str(folder), names=names)
    root = os.environ.get("MNMS_DATA_DIR")
    if root:  # a local copy was meant: the hub would retry for half a minute, offline
        raise TaskError(
            f"task {name!r}: MNMS_DATA_DIR={root!r} has no {spec.folder!r} folder; point it "
            f"at the folder holding {spec.folder}/*.jsonl, or unset it to load "
            f"{spec.hub_source!r} from the Hugging Face hub"
        )
    dataset = _load_hub(name, spec)
    return from_dataset(
        name,
        dataset,
        seed=seed,
        text_column=spec.text_column,
        label_column=spec.label_column,
        source=spec.hub_source,
    )


def _load_hub(name: str, spec: NamedDataset) -> datasets.DatasetDict:
    import datasets

    try:
        return datasets.load_dataset(spec.hub_id, spec.config, revision=spec.revision)
    except Exception as error:  # network, offline mode, missing dataset: all end here
        raise TaskError(
            f"task {name!r}: no local copy (MNMS_DATA_DIR is unset) and the hub dataset "
            f"{spec.hub_source!r} could not be loaded ({type(error).__name__}: {error}). "
            f"Point MNMS_DATA_DIR at a folder holding {spec.folder}/*.jsonl, or go online."
        ) from error


LOCAL_SUFFIXES = (".jsonl",)
"""The kind of split file a named dataset's local folder holds (the layout of `shared/data`)."""

_PARTS = (*SPLITS, "all")
DEV = "dev"
"""A validation split's other common name: not read (that would change the splits of folders
that hold one), but said, so that a user renames it rather than wonders."""
_LISTED = 10
"""Files a refused folder's error names, at most."""


def folder_candidates(folder: Path, suffixes: Sequence[str] = LOCAL_SUFFIXES) -> list[Path]:
    """Every split file a folder may hold, present or not: what its version must cover, so
    that adding, editing or removing one refreshes the task."""
    return [folder / f"{part}{suffix}" for part in _PARTS for suffix in suffixes]


def split_files(folder: Path, suffixes: Sequence[str] = LOCAL_SUFFIXES) -> dict[str, Path]:
    """The file of each part a folder holds (`train`/`validation`/`test`, or `all` alone),
    by the layout rules of the module docstring."""
    if not folder.is_dir():
        raise TaskError(f"{folder}: no such folder")
    accepted = (
        f"accepted: train, optionally with validation and test, or all alone, "
        f"each a {' or '.join(suffixes)} file"
    )
    files: dict[str, list[Path]] = {}
    for path in folder_candidates(folder, suffixes):
        if path.is_file():
            files.setdefault(path.stem, []).append(path)
    if not files:
        names = sorted(p.name for p in folder.iterdir())
        more = f" and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
        raise TaskError(
            f"{folder}: no split files; files found: {names[:_LISTED]}{more}; {accepted}"
        )
    for part, paths in files.items():
        if len(paths) > 1:
            raise TaskError(
                f"{folder}: {part} is given twice, as {' and '.join(p.name for p in paths)}; "
                f"keep one; {accepted}"
            )
    found = [paths[0].name for paths in files.values()]
    if "all" in files and len(files) > 1:
        raise TaskError(
            f"{folder}: holds both a single pool and split files ({found}); keep one; {accepted}"
        )
    if "all" not in files and "train" not in files:
        raise TaskError(f"{folder}: split files {found} but no train; {accepted}")
    dev = next((p for p in (folder / f"{DEV}{s}" for s in suffixes) if p.is_file()), None)
    if dev is not None:
        _warn_dev(f"{folder}: {dev.name} is not read")
    return {part: paths[0] for part, paths in files.items()}


def _warn_dev(what: str) -> None:
    warnings.warn(
        f"{what}; a validation split is named 'validation' (rename it to use it; without one, "
        "validation is carved from train)",
        stacklevel=3,
    )


def read_folder(
    folder: Path,
    suffixes: Sequence[str] = LOCAL_SUFFIXES,
    text_column: str = "text",
    label_column: str = "label",
) -> dict[str, Columns]:
    """Inputs and labels of each part a folder holds (`split_files`), each file read by its
    suffix."""
    files = split_files(folder, suffixes)
    return {part: read_file(path, text_column, label_column) for part, path in files.items()}


def read_jsonl(path: Path, text_column: str = "text", label_column: str = "label") -> Columns:
    """Inputs and labels of a JSON Lines file, one object a line; blank lines are skipped."""
    inputs: list[object] = []
    labels: list[object] = []
    with _open(path) as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise TaskError(f"{path}, line {number}: invalid JSON ({error.msg})") from error
            if not isinstance(row, dict):
                raise TaskError(
                    f"{path}, line {number}: expected a JSON object, got {type(row).__name__}"
                )
            _require_columns(row, (text_column, label_column), where=f"{path}, line {number}")
            inputs.append(row[text_column])
            labels.append(row[label_column])
    if not inputs:
        raise TaskError(f"{path}: the file holds no examples")
    return inputs, labels


def read_csv(path: Path, text_column: str = "text", label_column: str = "label") -> Columns:
    """Inputs and labels of a CSV file with a header row. Labels that all parse as integers
    become ints, so "10" sorts after "2"."""
    with _open(path) as lines:
        reader = csv.DictReader(lines)
        if reader.fieldnames is None:
            raise TaskError(f"{path}: the file is empty; expected a header row and examples")
        _require_columns(reader.fieldnames, (text_column, label_column), where=str(path))
        names = reader.fieldnames
        repeated = [c for c in (text_column, label_column) if names.count(c) > 1]
        if repeated:
            raise TaskError(f"{path}: the header names columns {repeated} more than once")
        rows = list(reader)
    if not rows:
        raise TaskError(f"{path}: the file holds a header but no examples")
    for number, row in enumerate(rows, start=2):
        if row[text_column] is None or row[label_column] is None:
            raise TaskError(f"{path}, row {number}: fewer fields than the header")
        if any(field.strip() for field in row.get(None, ())):  # DictReader's key for the rest
            raise TaskError(
                f"{path}, row {number}: more fields than the header (quote a text that holds "
                "a comma)"
            )
        if not row[label_column].strip():
            raise TaskError(f"{path}, row {number}: the {label_column!r} field is empty")
    labels: list[object] = [row[label_column] for row in rows]
    if all(_is_int(v) for v in labels):
        labels = [int(v) for v in labels]  # type: ignore[call-overload]
    return [row[text_column] for row in rows], labels


def read_file(path: Path, text_column: str = "text", label_column: str = "label") -> Columns:
    """A user file, read by its suffix."""
    if path.suffix not in READERS:
        raise TaskError(f"{path}: unsupported file type {path.suffix!r}; accepted: {list(READERS)}")
    return READERS[path.suffix](path, text_column, label_column)


READERS: dict[str, Callable[[Path, str, str], Columns]] = {".jsonl": read_jsonl, ".csv": read_csv}
"""The file kinds a user's file or folder may hold, by suffix."""


def from_dataset(
    name: str,
    dataset: datasets.Dataset | datasets.DatasetDict,
    *,
    seed: int,
    modality: Modality = "text",
    text_column: str = "text",
    label_column: str = "label",
    source: str = "datasets",
) -> Task:
    """A task from a `datasets.Dataset` (one pool, cut 80/10/10) or `DatasetDict` (its
    train/validation/test splits; other splits such as imdb's `unsupervised` are ignored)."""
    import datasets

    pieces = {"all": dataset} if isinstance(dataset, datasets.Dataset) else dict(dataset)
    if DEV in pieces:
        _warn_dev(f"task {name!r}: the DatasetDict's {DEV!r} split is not read")
    if not set(pieces) & set(SPLITS):
        if len(pieces) != 1:
            raise TaskError(
                f"task {name!r}: the DatasetDict has splits {list(pieces)}; "
                f"expected some of {list(SPLITS)}, or exactly one split"
            )
    else:
        pieces = {s: d for s, d in pieces.items() if s in SPLITS}
    parts: dict[str, Columns] = {}
    for split, ds in pieces.items():
        _require_columns(ds.column_names, (text_column, label_column), where=f"task {name!r}")
        parts[split] = list(ds[text_column]), list(ds[label_column])
    first = next(iter(pieces.values()))
    names = _dataset_label_names(first, label_column)
    return assemble(name, modality, parts, seed=seed, source=source, names=names)


def _dataset_label_names(ds: datasets.Dataset, label_column: str) -> dict[object, str]:
    import datasets

    feature = ds.features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        return dict(enumerate(feature.names))
    if "label_text" in ds.column_names:  # SetFit's convention
        return dict(zip(ds[label_column], ds["label_text"], strict=True))
    return {}


def assemble(
    name: str,
    modality: Modality,
    parts: Mapping[str, Columns],
    *,
    seed: int,
    source: str,
    names: Mapping[object, str] | None = None,
) -> Task:
    """A `Task` from the splits a source has, cut by the split rules (module docstring).
    `names` maps raw label values to class names; unnamed classes keep `str(value)`."""
    labels = [v for _, ys in parts.values() for v in ys]
    for part, (_, ys) in parts.items():
        bad = next((i for i, v in enumerate(ys) if not isinstance(v, str | int)), None)
        if bad is not None:
            raise TaskError(
                f"task {name!r}, {part}: example {bad} (counting from 0) has label {ys[bad]!r} "
                f"({type(ys[bad]).__name__}); labels must be str or int"
            )
    if any(isinstance(v, bool) for v in labels) and any(type(v) is int for v in labels):
        raise TaskError(  # True == 1: they would be counted as one class
            f"task {name!r}: the labels mix bools and ints ({sorted(set(map(repr, labels)))[:6]}); "
            "give every label one type"
        )
    y_all, classes = encode_labels(labels, task=name)
    value_of = {str(v): v for v in labels}
    classes = tuple((names or {}).get(value_of[c], c) for c in classes)
    offsets = np.cumsum([0, *(len(ys) for _, ys in parts.values())])
    y = {part: y_all[a:b] for part, a, b in zip(parts, offsets[:-1], offsets[1:], strict=True)}
    x = {
        part: _inputs(xs, modality, where=f"task {name!r}, {part}")
        for part, (xs, _) in parts.items()
    }
    splits = {s: Split(x[part][idx], y[part][idx]) for s, (part, idx) in _layout(y, seed).items()}
    trained = set(splits["train"].y.tolist())
    for split in ("validation", "test"):
        unseen = sorted(set(splits[split].y.tolist()) - trained)
        if unseen:
            raise TaskError(
                f"task {name!r}: the {split} split holds classes the train split lacks "
                f"({[classes[c] for c in unseen]}); no child could learn them"
            )
    return Task(name, modality, classes, **splits, seed=seed, source=source)


def _layout(y: Mapping[str, np.ndarray], seed: int) -> dict[str, tuple[str, np.ndarray]]:
    """For each of train/validation/test: the source part it comes from and its row indices."""
    if len(y) == 1:
        ((part, labels),) = y.items()
        return dict(
            zip(SPLITS, ((part, idx) for idx in stratified_split(labels, seed=seed)), strict=True)
        )
    if "train" not in y:
        raise TaskError(f"splits {list(y)} have no 'train'; a multi-split source needs one")
    layout = {s: (s, np.arange(len(y[s]))) for s in SPLITS if s in y}
    missing = [s for s in SPLITS if s not in y]
    if missing:
        fractions = tuple(CARVED_FRACTION if s in missing else 0.0 for s in ("validation", "test"))
        cut = stratified_split(y["train"], seed=seed, fractions=(1 - sum(fractions), *fractions))
        for i, s in enumerate(SPLITS):
            if s == "train" or s in missing:
                layout[s] = ("train", cut[i])
    return {s: layout[s] for s in SPLITS}


def _inputs(values: Sequence[object], modality: Modality, *, where: str) -> np.ndarray:
    """Text as an object array of str; tabular as a float32 `(n, d)` array."""
    if modality == "text":
        bad = next((i for i, v in enumerate(values) if not isinstance(v, str)), None)
        if bad is not None:
            raise TaskError(
                f"{where}: example {bad} has input {values[bad]!r} "
                f"({type(values[bad]).__name__}); text inputs must be strings"
            )
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out
    try:
        with np.errstate(over="ignore"):  # a value past float32's range is refused below
            x = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise TaskError(f"{where}: tabular inputs must be numeric vectors ({error})") from error
    if x.ndim != 2:
        raise TaskError(
            f"{where}: tabular inputs must be equal-length vectors, got shape {x.shape}"
        )
    if not np.isfinite(x).all():
        row, column = np.argwhere(~np.isfinite(x))[0]
        raise TaskError(
            f"{where}: example {row} (counting from 0) has {values[row][column]!r} in "
            f"column {column}; tabular inputs must be float32 numbers (finite, |x| < 3.4e38: "
            "fill or drop missing values)"
        )
    return x


def _require_columns(present: Iterable[str], needed: Sequence[str], *, where: str) -> None:
    present = list(present)
    for column in needed:
        if column not in present:
            raise TaskError(
                f"{where}: no column {column!r}; columns present: {present}. "
                "Pass text_column=/label_column= to register_task to use others."
            )


@contextmanager
def _open(path: Path) -> Iterator[TextIO]:
    """The file as UTF-8 text, with or without a byte-order mark; a missing file and bytes that
    are not UTF-8 are refused by name, the latter by line (found by reading the bytes again: a
    reader's buffer decodes ahead of the line it parses)."""
    if not path.is_file():
        raise TaskError(f"{path}: no such file")
    try:
        with path.open(encoding="utf-8-sig", newline="") as file:
            yield file
    except UnicodeDecodeError as error:
        data = path.read_bytes()
        try:
            data.decode("utf-8-sig")
        except UnicodeDecodeError as found:
            before = data[: found.start]
            line = max(before.count(b"\n"), before.count(b"\r")) + 1
            raise TaskError(
                f"{path}, line {line}: not UTF-8 ({found.reason}); save the file as UTF-8"
            ) from error
        raise  # pragma: no cover - the bytes decode whole: not the file's fault


def _is_int(value: object) -> bool:
    return isinstance(value, str) and value.strip().lstrip("+-").isdigit()
