"""The `Task` every other module consumes: fixed train/validation/test splits of one dataset."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import numpy as np

Modality = Literal["text", "tabular"]
MODALITIES: tuple[Modality, ...] = ("text", "tabular")
SPLITS = ("train", "validation", "test")


class TaskError(ValueError):
    """A task name, data file or dataset that cannot become a `Task`."""


@dataclass(frozen=True, eq=False)
class Split:
    """One split: inputs `x` (an object array of str for text, float32 `(n, d)` for tabular)
    and integer labels `y` in `[0, num_classes)`."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class TaskCard:
    """What the env and a results table need of a task without its data: a table carries its
    task's card, so a table task is searchable where the data is not."""

    name: str
    modality: Modality
    num_classes: int
    fingerprint: str
    train_size: int | None = None
    """Training examples. With `input_length` and `majority`, what `descriptor` describes the
    task by; None on a card written before cards carried them (an older table's)."""
    input_length: float | None = None
    """Mean words per training text (split at whitespace), or features of a tabular task."""
    majority: float | None = None
    """The most frequent class's share of the training labels."""

    @property
    def descriptor(self) -> np.ndarray | None:
        """The task as numbers that cost no training: `(log num_classes, log train_size, log
        input_length, majority)`, which a transferred controller compares with its source tasks'
        (`new_task_init="descriptor"`); None when the card lacks them."""
        if self.train_size is None or self.input_length is None or self.majority is None:
            return None
        logs = np.log(np.maximum([self.num_classes, self.train_size, self.input_length], 1.0))
        return np.append(logs, self.majority)


def nearest_task(descriptor: np.ndarray, candidates: Mapping[str, np.ndarray]) -> str:
    """The candidate task whose descriptor is nearest to `descriptor` (Euclidean, each component
    divided by its spread over the candidates, so that no unit dominates; the first of equals).
    What a transferred controller and the nearest-task portfolio both start a new task from."""
    if not candidates:
        raise ValueError("nearest_task needs at least one candidate task")
    names = list(candidates)
    points = np.stack([np.asarray(candidates[name], dtype=float) for name in names])
    spread = points.std(axis=0)
    spread[spread == 0] = 1.0
    distances = np.linalg.norm((points - np.asarray(descriptor, dtype=float)) / spread, axis=1)
    return names[int(np.argmin(distances))]


@dataclass(frozen=True, eq=False)
class Task:
    """A classification task with fixed splits.

    The test split is carried for reporting only; nothing that computes a reward reads it.
    `fingerprint` hashes the name, labels and every example, so cached features and stored
    results are invalidated whenever the data changes.
    """

    name: str
    modality: Modality
    classes: tuple[str, ...]
    train: Split
    validation: Split
    test: Split
    seed: int = 0
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise TaskError(
                f"task {self.name!r}: modality {self.modality!r} is not one of {MODALITIES}"
            )
        for split_name in SPLITS:
            split = self.split(split_name)
            if len(split) == 0:
                raise TaskError(
                    f"task {self.name!r}: the {split_name} split is empty (a split cut from one "
                    "pool takes 10% of each class: give every class 6 examples or more)"
                )
            if len(split.x) != len(split.y):
                raise TaskError(
                    f"task {self.name!r}: {split_name} has {len(split.x)} inputs "
                    f"but {len(split.y)} labels"
                )
            y = np.asarray(split.y)
            if not np.issubdtype(y.dtype, np.integer):
                raise TaskError(
                    f"task {self.name!r}: {split_name} labels must be integer class indices, "
                    f"got dtype {y.dtype}"
                )
            outside = np.unique(y[(y < 0) | (y >= len(self.classes))])
            if len(outside):
                raise TaskError(
                    f"task {self.name!r}: {split_name} labels {outside[:5].tolist()} are not "
                    f"indices of its {len(self.classes)} classes {list(self.classes)}"
                )
        seen = np.unique(self.train.y)
        if len(self.classes) < 2 or len(seen) < 2:
            raise TaskError(
                f"task {self.name!r}: a classification task needs at least 2 classes, "
                f"got labels {list(self.classes)} (train holds {len(seen)})"
            )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @cached_property
    def card(self) -> TaskCard:
        train = self.train
        if self.modality == "text":
            length = float(np.mean([len(text.split()) for text in train.x.tolist()]))
        else:
            length = float(train.x.shape[1])
        majority = float(np.bincount(train.y.astype(np.int64)).max() / len(train))
        return TaskCard(
            self.name,
            self.modality,
            self.num_classes,
            self.fingerprint,
            len(train),
            length,
            majority,
        )

    def split(self, name: str) -> Split:
        if name not in SPLITS:
            raise KeyError(f"unknown split {name!r}; accepted: {SPLITS}")
        return getattr(self, name)

    @cached_property
    def fingerprint(self) -> str:
        """A short content hash: equal for equal data on every machine."""
        digest = hashlib.sha256(f"{self.name}|{self.modality}|{self.classes}".encode())
        for split_name in SPLITS:
            split = self.split(split_name)
            digest.update(split_name.encode())
            if self.modality == "text":
                digest.update("\x1e".join(split.x.tolist()).encode())
            else:
                digest.update(np.ascontiguousarray(split.x, dtype=np.float32).tobytes())
            digest.update(np.ascontiguousarray(split.y, dtype=np.int64).tobytes())
        return digest.hexdigest()[:16]

    def sizes(self) -> dict[str, int]:
        return {name: len(self.split(name)) for name in SPLITS}


def encode_labels(raw: Sequence[object], *, task: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Map raw labels (ints or strings) to `0..C-1`, ordered by sorted value, and return the
    class names. Fails when fewer than two classes are present."""
    values = list(raw)
    if not values:
        raise TaskError(f"task {task!r}: no labels")
    classes = sorted(set(values), key=lambda v: (str(type(v)), v))
    if len(classes) < 2:
        raise TaskError(
            f"task {task!r}: the label column holds a single class {classes!r}; "
            "a classification task needs at least 2"
        )
    names = tuple(str(c) for c in classes)
    if len(set(names)) < len(names):
        raise TaskError(
            f"task {task!r}: the label column mixes types whose values read the same "
            f"({[c for c in classes if names.count(str(c)) > 1]!r}); give every label one type"
        )
    index = {value: i for i, value in enumerate(classes)}
    return np.array([index[v] for v in values], dtype=np.int64), names


def stratified_split(
    y: np.ndarray, *, seed: int, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of a stratified train/validation/test split, fixed by `seed`.

    Each class is shuffled with its own stream of one `np.random.Generator(PCG64(seed))` and cut
    by `fractions`, so the split is identical on every machine and numpy version that keeps
    PCG64 stable (numpy guarantees this).
    """
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        members = members[rng.permutation(len(members))]
        n_val = int(round(len(members) * fractions[1]))
        n_test = int(round(len(members) * fractions[2]))
        n_train = len(members) - n_val - n_test
        parts[0].append(members[:n_train])
        parts[1].append(members[n_train : n_train + n_val])
        parts[2].append(members[n_train + n_val :])
    return tuple(np.sort(np.concatenate(p)) for p in parts)  # type: ignore[return-value]


def task_from_arrays(
    name: str,
    modality: Modality,
    x: np.ndarray,
    labels: Sequence[object],
    *,
    seed: int,
    source: str = "",
) -> Task:
    """A task from one pool of examples, cut by `stratified_split` (80/10/10)."""
    y, classes = encode_labels(labels, task=name)
    parts = stratified_split(y, seed=seed)
    splits = [Split(x[idx], y[idx]) for idx in parts]
    return Task(name, modality, classes, *splits, seed=seed, source=source)
