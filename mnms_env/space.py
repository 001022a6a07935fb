"""The search space: decisions, their options, per-task masks and decoding into a `ChildConfig`.

A child is described by a `ChildConfig`; a `SearchSpace` is an ordered tuple of `Decision`s, each
naming one `ChildConfig` field and the values it may take. Decisions a custom space leaves out keep
the `ChildConfig` default. Which options are valid depends on the task's modality (text
featurizers never apply to `digits`, GloVe embeddings need the `glove` extra) and, for some
decisions, on earlier ones: some representations take no size (`minilm`, `raw`), a child
without hidden layers has no width (nor, for an MLP, activation or dropout), the CNN's settings
mean nothing to an MLP, and GloVe embeddings fix the embedding width. `SearchSpace.masks` encodes
the first, `canonical_config` the second (irrelevant values are reset to their defaults, so
children that train identically share one cache key and one row of a benchmark table).

The architecture follows from the representation: `tokens` (token id sequences) makes a text
CNN (`mnms_env.cnn`), every other featurizer an MLP, so the space needs no architecture decision
whose combinations with the representation would mostly be meaningless.

The featurizers, activations, optimizers and embedding initialisations a config may name are
those of their registries (`features.FEATURIZERS`, `activations.ACTIVATIONS`,
`stacked_optim.OPTIMIZERS`, `cnn.EMBEDDING_INITS`). `default_space` lists its options itself, so
a newly registered one is searched only by a space that names it.
"""

from __future__ import annotations

import difflib
import json
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from functools import lru_cache
from typing import Any

import numpy as np

from mnms_env import registries
from mnms_env.activations import ACTIVATIONS
from mnms_env.cnn import EMBEDDING_INITS, EmbeddingInit
from mnms_env.features import FEATURIZERS, Featurizer
from mnms_env.stacked_optim import OPTIMIZERS
from mnms_env.tasks.base import Modality


class SpaceError(ValueError):
    """A decision, option or config outside what the child trainer understands."""


@dataclass(frozen=True)
class ChildConfig:
    """Everything that defines one child network and how it is trained.

    The model reads the featurized input, applies `hidden_layers` fully connected layers of
    `width` units (each followed by `activation` and `dropout`) and a linear output layer. Over
    `tokens` it is a text CNN instead (`mnms_env.cnn`): the last four fields, then the same
    layers, with `activation` and `dropout` also applied to the pooled convolutions.
    """

    representation: str = "word-hash"
    """A featurizer of `features.FEATURIZERS`: hashed word 1-2-grams, hashed char 2-4-grams, a
    trainable word embedding bag, the pretrained MiniLM sentence encoder, standardised raw
    features (tabular tasks), word ids for a text CNN (`tokens`), or one registered with
    `register_featurizer`."""
    representation_size: int = 4096
    """Hash buckets or vocabulary size of a sized representation; 0 for one without a size (an
    int either way, so configs batch into arrays and JSON without a special case)."""
    hidden_layers: int = 1
    width: int = 128
    activation: str = "relu"
    """An activation of `activations.ACTIVATIONS`."""
    dropout: float = 0.0
    optimizer: str = "adam"
    """An optimizer of `stacked_optim.OPTIMIZERS`."""
    learning_rate: float = 1e-3
    batch_size: int = 64
    l2: float = 0.0
    embedding_init: str = "random"
    """CNN: how its word embeddings start and whether they train, one of
    `cnn.EMBEDDING_INITS` (random, or GloVe vectors static or fine-tuned)."""
    embedding_dim: int = 128
    """CNN: the embedding width; GloVe's vectors fix it at 50."""
    filter_widths: tuple[int, ...] = (3, 4, 5)
    """CNN: the width in words of each convolution, increasing (a list is read as a tuple)."""
    filters: int = 100
    """CNN: filters per width."""

    def __post_init__(self) -> None:
        for name, kind in _NUMBER_FIELDS.items():  # numpy scalars become Python numbers
            number = _plain_number(getattr(self, name), kind)
            if number is None:
                wanted = "a whole number" if kind is int else "a number"
                raise SpaceError(f"ChildConfig.{name}={getattr(self, name)!r} is not {wanted}")
            object.__setattr__(self, name, number)
        object.__setattr__(self, "filter_widths", _filter_widths(self.filter_widths))
        featurizer = _featurizer(self.representation)
        registries.known(ACTIVATIONS, "activation", self.activation, SpaceError)
        registries.known(OPTIMIZERS, "optimizer", self.optimizer, SpaceError)
        init = _embedding_init(self.embedding_init)
        checks = {  # name: (whether its value is accepted, what is)
            "hidden_layers": (self.hidden_layers >= 0, ">= 0"),
            "width": (self.width >= 1, ">= 1"),
            "dropout": (0.0 <= self.dropout < 1.0, "in [0, 1)"),
            "learning_rate": (0 < self.learning_rate < math.inf, "finite and > 0"),
            "batch_size": (self.batch_size >= 1, ">= 1"),
            "l2": (0 <= self.l2 < math.inf, "finite and >= 0"),
            "embedding_dim": (self.embedding_dim >= 1, ">= 1"),
            "filters": (self.filters >= 1, ">= 1"),
        }
        for name, (ok, accepted) in checks.items():
            if not ok:
                raise SpaceError(
                    f"ChildConfig.{name}={getattr(self, name)!r} is out of range; "
                    f"accepted: {accepted}"
                )
        if not featurizer.sized:
            if self.representation_size != 0:
                raise SpaceError(
                    f"representation {self.representation!r} has no size; "
                    f"got representation_size={self.representation_size!r} (use 0)"
                )
        elif self.representation_size < featurizer.min_size:
            raise SpaceError(
                f"representation {self.representation!r} needs representation_size >= "
                f"{featurizer.min_size}, got {self.representation_size!r}"
            )
        if init.dim is not None and self.embedding_dim != init.dim:
            raise SpaceError(
                f"embedding_init {self.embedding_init!r} has {init.dim}-d vectors, so "
                f"embedding_dim={init.dim}; got embedding_dim={self.embedding_dim!r}"
            )

    @property
    def is_dense(self) -> bool:
        featurizer = FEATURIZERS[self.representation]
        return not (featurizer.bag or featurizer.sequence)

    @property
    def is_cnn(self) -> bool:
        """Whether the child is a text CNN (its representation gives token sequences)."""
        return FEATURIZERS[self.representation].sequence

    def describe(self) -> str:
        """One line for tables and logs, e.g. `char-hash 1024, 2x128 relu, adam lr 0.01`, or
        `tokens 4096, cnn 100x3-4-5 relu on random 128d dropout 0.5, linear, adam lr 0.001`."""
        size = f" {self.representation_size}" if self.representation_size else ""
        dropout = f" dropout {self.dropout:g}" if self.dropout else ""
        cnn = ""
        if self.is_cnn:
            widths = "-".join(str(w) for w in self.filter_widths)
            cnn = (
                f", cnn {self.filters}x{widths} {self.activation} on {self.embedding_init} "
                f"{self.embedding_dim}d{dropout}"
            )
        layers = "linear"
        if self.hidden_layers:
            layers = f"{self.hidden_layers}x{self.width} {self.activation}"
            layers += dropout if not self.is_cnn else ""
        l2 = f" l2 {self.l2:g}" if self.l2 else ""
        return (
            f"{self.representation}{size}{cnn}, {layers}, {self.optimizer} lr "
            f"{self.learning_rate:g}{l2}, batch {self.batch_size}"
        )

    def to_json(self) -> str:
        """Canonical JSON (sorted keys): the config's identity in caches and the store. The
        CNN's settings are left out at their defaults (`CNN_FIELDS`)."""
        values = asdict(self)
        for name in CNN_FIELDS:
            if values[name] == getattr(ChildConfig, name):
                del values[name]
        return json.dumps(values, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ChildConfig:
        return cls(**json.loads(text))


_NUMBER_FIELDS = {
    "representation_size": int,
    "hidden_layers": int,
    "width": int,
    "dropout": float,
    "learning_rate": float,
    "batch_size": int,
    "l2": float,
    "embedding_dim": int,
    "filters": int,
}
CNN_FIELDS = ("embedding_init", "embedding_dim", "filter_widths", "filters")
"""Settings of the text CNN. They mean nothing to an MLP (and are canonicalised away), and
`to_json` leaves them out at their defaults: the configs of MLP children keep the JSON, store
keys and table rows they had before the CNN existed, and JSON without them reads as defaults."""


def _plain_number(value: Any, kind: type[int] | type[float]) -> int | float | None:
    """`value` as a Python `kind`, or None when it is not one: a whole number for int (no bools
    or fractions), any real number for float; numpy scalars included. Plain Python numbers keep
    configs hashable, comparable and JSON-serialisable whatever array they were read from."""
    if isinstance(value, bool | np.bool_):
        return None
    if kind is int and isinstance(value, numbers.Integral):
        return int(value)
    if kind is float and isinstance(value, numbers.Real):
        return float(value)
    return None


def _featurizer(representation: Any) -> Featurizer:
    return registries.known(FEATURIZERS, "representation", representation, SpaceError)


def _embedding_init(name: Any) -> EmbeddingInit:
    return registries.known(EMBEDDING_INITS, "embedding_init", name, SpaceError)


def _filter_widths(widths: Any) -> tuple[int, ...]:
    """`widths` as a tuple of plain ints, refused unless they increase from 1 or more: one
    order per set of widths, so equal CNNs have equal configs."""
    ints = [_plain_number(w, int) for w in widths] if isinstance(widths, tuple | list) else []
    if not ints or None in ints or min(ints) < 1 or sorted(set(ints)) != ints:
        raise SpaceError(
            f"ChildConfig.filter_widths={widths!r} is not an increasing tuple of whole numbers "
            ">= 1, e.g. (3, 4, 5)"
        )
    return tuple(ints)


CONFIG_FIELDS = tuple(f.name for f in fields(ChildConfig))


@dataclass(frozen=True)
class Decision:
    """One step of an episode: choose one of `options` for the `ChildConfig` field `name`."""

    name: str
    options: tuple[Any, ...]

    def __post_init__(self) -> None:
        if self.name not in CONFIG_FIELDS:
            close = difflib.get_close_matches(self.name, CONFIG_FIELDS, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise SpaceError(
                f"unknown decision {self.name!r}; accepted: {list(CONFIG_FIELDS)}.{hint}"
            )
        if len(self.options) == 0:
            raise SpaceError(f"decision {self.name!r} has no options")
        # Each option validated in isolation, and stored as the config holds it (plain numbers,
        # filter widths as tuples even when read from JSON lists).
        options = tuple(_validate_option(self.name, option) for option in self.options)
        object.__setattr__(self, "options", options)
        if len(set(self.options)) != len(self.options):
            raise SpaceError(f"decision {self.name!r} repeats an option: {self.options}")

    def __len__(self) -> int:
        return len(self.options)


def _validate_option(name: str, option: Any) -> Any:
    base = ChildConfig(representation="raw", representation_size=0)
    if name == "representation":
        values = {"representation": option, "representation_size": _default_size(option)}
    elif name == "representation_size":
        values = {"representation": "word-hash", "representation_size": option}
    elif name == "embedding_init":
        init = EMBEDDING_INITS.get(option) if isinstance(option, str) else None
        dim = init.dim if init is not None and init.dim else ChildConfig.embedding_dim
        values = {"embedding_init": option, "embedding_dim": dim}
    else:
        values = {name: option}
    try:
        return getattr(replace(base, **values), name)
    except (SpaceError, TypeError) as err:
        raise SpaceError(f"decision {name!r}: option {option!r} is invalid: {err}") from err


@dataclass(frozen=True)
class SearchSpace:
    """An ordered tuple of decisions; one environment step chooses one of them."""

    decisions: tuple[Decision, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "decisions", tuple(self.decisions))
        if not self.decisions:
            raise SpaceError("a search space needs at least one decision")
        names = [d.name for d in self.decisions]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise SpaceError(f"decisions appear more than once: {duplicates}")

    def __len__(self) -> int:
        return len(self.decisions)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.decisions)

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(len(d) for d in self.decisions)

    @property
    def max_options(self) -> int:
        return max(self.sizes)

    def with_options(self, name: str, options: Sequence[Any]) -> SearchSpace:
        """This space with decision `name` offering `options` instead of its own."""
        if name not in self.names:
            raise SpaceError(f"no decision {name!r} in this space; it has {list(self.names)}")
        return SearchSpace(
            tuple(Decision(name, tuple(options)) if d.name == name else d for d in self.decisions)
        )

    def masks(self, modality: Modality) -> np.ndarray:
        """Boolean `(len(self), max_options)`: row i marks the options of decision i valid for a
        task of this modality. Padding columns past a decision's options are False, and so is an
        option whose optional package is not installed (`minilm` without the encoder, GloVe
        embeddings without the `glove` extra)."""
        return _masks(self, modality).copy()

    def decode(
        self, indices: Sequence[int], modality: Modality, mask: np.ndarray | None = None
    ) -> ChildConfig:
        """The `ChildConfig` chosen by one option index per decision, each valid in `mask`
        (default `masks(modality)`; a table's coverage, where nothing trains)."""
        if len(indices) != len(self):
            raise SpaceError(f"expected {len(self)} option indices, got {len(indices)}")
        mask = _masks(self, modality) if mask is None else mask
        values: dict[str, Any] = {}
        for i, (decision, index) in enumerate(zip(self.decisions, indices, strict=True)):
            index = int(index)
            if not (0 <= index < len(decision) and mask[i, index]):
                valid = np.flatnonzero(mask[i]).tolist()
                raise SpaceError(
                    f"decision {decision.name!r}: option index {index} is not valid for a "
                    f"{modality} task; valid indices: {valid} of {list(decision.options)}"
                    + missing_package(decision, index)
                )
            values[decision.name] = decision.options[index]
        return canonical_config(values, modality)

    def encode(self, config: ChildConfig) -> list[int]:
        """Option indices that decode to `config` (the inverse of `decode`)."""
        values = asdict(config)
        irrelevant = irrelevant_fields(values)
        out = []
        for decision in self.decisions:
            value = values[decision.name]
            if value not in decision.options:
                if decision.name in irrelevant:  # any option decodes to this config
                    out.append(0)
                    continue
                raise SpaceError(
                    f"{decision.name}={value!r} is not an option of this space: "
                    f"{list(decision.options)}"
                )
            out.append(decision.options.index(value))
        # A field the space has no decision for decodes to its default: refuse any other value
        # (irrelevant fields aside: they decode to their canonical value whatever they hold).
        modality = FEATURIZERS[config.representation].modality
        chosen = {d.name: d.options[i] for d, i in zip(self.decisions, out, strict=True)}
        decoded, wanted = canonical_config(chosen, modality), canonical_config(values, modality)
        if decoded != wanted:
            differ = {k: v for k, v in asdict(wanted).items() if getattr(decoded, k) != v}
            raise SpaceError(
                f"{differ} cannot be chosen in this space (it has no decision for them); its "
                f"nearest config is {decoded.to_json()}"
            )
        return out


def _masks(space: SearchSpace, modality: Modality) -> np.ndarray:
    """`_valid_options`, keyed also by the registry entries of the space's featurizers and
    embedding initialisations: a name removed and registered again with other settings never
    gets the old entry's masks."""
    options = {d.name: d.options for d in space.decisions}
    featurizers = tuple(_featurizer(o) for o in options.get("representation", ()))
    inits = tuple(_embedding_init(o) for o in options.get("embedding_init", ()))
    return _valid_options(space, modality, featurizers, inits)


@lru_cache(maxsize=64)
def _valid_options(
    space: SearchSpace,
    modality: Modality,
    featurizers: tuple[Featurizer, ...],
    inits: tuple[EmbeddingInit, ...],
) -> np.ndarray:
    """`SearchSpace.masks`, computed once per space, modality and registry entries (`decode`
    runs on every episode's last step); read-only, since every caller shares it."""
    mask = np.zeros((len(space), space.max_options), dtype=bool)
    for i, decision in enumerate(space.decisions):
        if decision.name == "representation":
            usable = [f.modality == modality and f.available() for f in featurizers]
            mask[i, : len(decision)] = usable
        elif decision.name == "embedding_init":
            mask[i, : len(decision)] = [init.available() for init in inits]
        else:
            mask[i, : len(decision)] = True
        if not mask[i].any():
            raise SpaceError(
                f"decision {decision.name!r} has no option valid for {modality} tasks; "
                f"options: {list(decision.options)}"
            )
    mask.flags.writeable = False
    return mask


def missing_package(decision: Decision, index: int) -> str:
    """Why option `index` of `decision` is masked when its optional package is missing (what
    training it would raise, naming the install), to add to an error; else `""`."""
    registry = {"representation": FEATURIZERS, "embedding_init": EMBEDDING_INITS}
    option = decision.options[index] if 0 <= index < len(decision) else None
    entry = registry.get(decision.name, {}).get(option) if isinstance(option, str) else None
    return "" if entry is None or entry.available() else f"; {entry.missing(option)}"


LAYER_FIELDS = ("width", "activation", "dropout")
"""Settings of the hidden layers; they mean nothing to an MLP with `hidden_layers=0` (a CNN
applies `activation` and `dropout` to its pooled convolutions, so only `width` goes)."""


def irrelevant_fields(values: Mapping[str, Any]) -> tuple[str, ...]:
    """The fields whose value cannot change how a child with these `values` (a config's fields,
    defaults for those missing) trains."""

    def value(name: str) -> Any:
        return values.get(name, getattr(ChildConfig, name))

    featurizer = _featurizer(value("representation"))
    shallow = value("hidden_layers") == 0
    if not featurizer.sequence:
        unsized = () if featurizer.sized else ("representation_size",)
        return unsized + CNN_FIELDS + (LAYER_FIELDS if shallow else ())
    fixed = ("embedding_dim",) if _embedding_init(value("embedding_init")).dim else ()
    return fixed + (("width",) if shallow else ())


def _default_size(representation: Any) -> int:
    """The size of a representation the space gives none: 0 without a size, else the default
    raised to the featurizer's minimum (an unknown name keeps the default, refused by name)."""
    featurizer = FEATURIZERS.get(representation) if isinstance(representation, str) else None
    if featurizer is None:
        return ChildConfig.representation_size
    return max(ChildConfig.representation_size, featurizer.min_size) if featurizer.sized else 0


def canonical_config(values: dict[str, Any], modality: Modality) -> ChildConfig:
    """A `ChildConfig` from chosen values, with inapplicable ones dropped or defaulted.

    Irrelevant fields (`irrelevant_fields`) get one canonical value: size 0 for a representation
    without a size, the default width (and for an MLP activation and dropout) for a child
    without hidden layers, the default CNN settings for an MLP, and the vectors' width as the
    `embedding_dim` of pretrained embeddings. A tabular task defaults to `raw` features when the
    space leaves the representation out.
    """
    values = dict(values)
    if "representation" not in values and modality == "tabular":
        values["representation"] = "raw"
    irrelevant = irrelevant_fields(values)
    for name in irrelevant:
        values.pop(name, None)
    if "representation_size" in irrelevant:
        values["representation_size"] = 0
    elif not values.get("representation_size"):
        values["representation_size"] = _default_size(
            values.get("representation", ChildConfig.representation)
        )
    init = _embedding_init(values.get("embedding_init", ChildConfig.embedding_init))
    if init.dim is not None:
        values["embedding_dim"] = init.dim
    return ChildConfig(**values)


def default_space() -> SearchSpace:
    """Fourteen decisions in the spirit of the paper's space, masked per task modality: the
    input (`tokens` makes a text CNN, whose four settings follow), the layers, the training."""
    return SearchSpace(
        (
            Decision(
                "representation",
                (
                    "word-hash",
                    "char-hash",
                    "embedding-bag",
                    "minilm",
                    "raw",
                    "tokens",
                    "word-ngrams",
                ),
            ),
            Decision("representation_size", (256, 1024, 4096, 16384)),
            Decision("embedding_init", ("random", "glove-static", "glove-tuned")),
            Decision("embedding_dim", (50, 128, 300)),
            Decision("filter_widths", ((3,), (3, 4, 5))),
            Decision("filters", (50, 100, 200)),
            Decision("hidden_layers", (0, 1, 2, 3)),
            Decision("width", (32, 64, 128, 256)),
            Decision("activation", ("relu", "tanh", "gelu", "elu")),
            Decision("dropout", (0.0, 0.1, 0.3, 0.5)),
            Decision("optimizer", ("adam", "sgd", "adagrad", "rmsprop")),
            Decision("learning_rate", (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)),
            Decision("batch_size", (16, 32, 64, 128, 256)),
            Decision("l2", (0.0, 1e-5, 1e-4, 1e-3)),
        )
    )
