"""The search space: decisions, their options, per-task masks and decoding into a `ChildConfig`.

A child is described by a `ChildConfig`; a `SearchSpace` is an ordered tuple of `Decision`s, each
naming one `ChildConfig` field and the values it may take. Decisions a custom space leaves out keep
the `ChildConfig` default. Which options are valid depends on the task's modality (text
featurizers never apply to `digits`) and, for some decisions, on earlier ones: some
representations take no size (`minilm`, `raw`), and a child without hidden layers has no width,
activation or dropout. `SearchSpace.masks` encodes the first, `canonical_config` the second
(irrelevant values are reset to their defaults, so children that train identically share one
cache key and one row of a benchmark table).

The featurizers, activations and optimizers a config may name are those of their registries
(`features.FEATURIZERS`, `activations.ACTIVATIONS`, `stacked_optim.OPTIMIZERS`). `default_space`
lists its options itself, so a newly registered one is searched only by a space that names it.
"""

from __future__ import annotations

import difflib
import json
import numbers
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from functools import lru_cache
from typing import Any

import numpy as np

from mnms_env import registries
from mnms_env.activations import ACTIVATIONS
from mnms_env.features import FEATURIZERS, Featurizer
from mnms_env.stacked_optim import OPTIMIZERS
from mnms_env.tasks.base import Modality


class SpaceError(ValueError):
    """A decision, option or config outside what the child trainer understands."""


@dataclass(frozen=True)
class ChildConfig:
    """Everything that defines one child network and how it is trained.

    The model reads the featurized input, applies `hidden_layers` fully connected layers of
    `width` units (each followed by `activation` and `dropout`) and a linear output layer.
    """

    representation: str = "word-hash"
    """A featurizer of `features.FEATURIZERS`: hashed word 1-2-grams, hashed char 2-4-grams, a
    trainable word embedding bag, the pretrained MiniLM sentence encoder, standardised raw
    features (tabular tasks), or one registered with `register_featurizer`."""
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

    def __post_init__(self) -> None:
        for name, kind in _NUMBER_FIELDS.items():  # numpy scalars become Python numbers
            number = _plain_number(getattr(self, name), kind)
            if number is None:
                wanted = "a whole number" if kind is int else "a number"
                raise SpaceError(f"ChildConfig.{name}={getattr(self, name)!r} is not {wanted}")
            object.__setattr__(self, name, number)
        featurizer = _featurizer(self.representation)
        registries.known(ACTIVATIONS, "activation", self.activation, SpaceError)
        registries.known(OPTIMIZERS, "optimizer", self.optimizer, SpaceError)
        checks = {
            "hidden_layers": self.hidden_layers >= 0,
            "width": self.width >= 1,
            "dropout": 0.0 <= self.dropout < 1.0,
            "learning_rate": self.learning_rate > 0,
            "batch_size": self.batch_size >= 1,
            "l2": self.l2 >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise SpaceError(f"ChildConfig.{name}={getattr(self, name)!r} is out of range")
        if not featurizer.sized:
            if self.representation_size != 0:
                raise SpaceError(
                    f"representation {self.representation!r} has no size; "
                    f"got representation_size={self.representation_size!r} (use 0)"
                )
        elif self.representation_size < 2:
            raise SpaceError(
                f"representation {self.representation!r} needs representation_size >= 2, "
                f"got {self.representation_size!r}"
            )

    @property
    def is_dense(self) -> bool:
        return not FEATURIZERS[self.representation].bag

    def describe(self) -> str:
        """One line for tables and logs, e.g. `char-hash 1024, 2x128 relu, adam lr 0.01`."""
        size = f" {self.representation_size}" if self.representation_size else ""
        layers = "linear"
        if self.hidden_layers:
            layers = f"{self.hidden_layers}x{self.width} {self.activation}"
            layers += f" dropout {self.dropout:g}" if self.dropout else ""
        l2 = f" l2 {self.l2:g}" if self.l2 else ""
        return (
            f"{self.representation}{size}, {layers}, {self.optimizer} lr {self.learning_rate:g}"
            f"{l2}, batch {self.batch_size}"
        )

    def to_json(self) -> str:
        """Canonical JSON (sorted keys): the config's identity in caches and the store."""
        return json.dumps(asdict(self), sort_keys=True)

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
}


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
        if len(set(self.options)) != len(self.options):
            raise SpaceError(f"decision {self.name!r} repeats an option: {self.options}")
        # Each option validated in isolation, and stored as the config holds it (plain numbers).
        options = tuple(_validate_option(self.name, option) for option in self.options)
        object.__setattr__(self, "options", options)

    def __len__(self) -> int:
        return len(self.options)


def _validate_option(name: str, option: Any) -> Any:
    base = ChildConfig(representation="raw", representation_size=0)
    if name == "representation":
        featurizer = FEATURIZERS.get(option) if isinstance(option, str) else None
        size = 0 if featurizer is not None and not featurizer.sized else 4096
        values = {"representation": option, "representation_size": size}
    elif name == "representation_size":
        values = {"representation": "word-hash", "representation_size": option}
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
        task of this modality. Padding columns past a decision's options are False, and so is a
        featurizer whose optional package is not installed (`minilm` without the encoder)."""
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
                )
            values[decision.name] = decision.options[index]
        return canonical_config(values, modality)

    def encode(self, config: ChildConfig) -> list[int]:
        """Option indices that decode to `config` (the inverse of `decode`)."""
        values = asdict(config)
        irrelevant = irrelevant_fields(config.representation, config.hidden_layers)
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
    """`_valid_options`, keyed also by the registry entries of the space's featurizers: a name
    removed and registered again with other settings never gets the old entry's masks."""
    options = next((d.options for d in space.decisions if d.name == "representation"), ())
    return _valid_options(space, modality, tuple(_featurizer(option) for option in options))


@lru_cache(maxsize=64)
def _valid_options(
    space: SearchSpace, modality: Modality, featurizers: tuple[Featurizer, ...]
) -> np.ndarray:
    """`SearchSpace.masks`, computed once per space, modality and featurizers (`decode` runs on
    every episode's last step); read-only, since every caller shares it."""
    mask = np.zeros((len(space), space.max_options), dtype=bool)
    for i, decision in enumerate(space.decisions):
        if decision.name == "representation":
            usable = [f.modality == modality and f.available() for f in featurizers]
            mask[i, : len(decision)] = usable
        else:
            mask[i, : len(decision)] = True
        if not mask[i].any():
            raise SpaceError(
                f"decision {decision.name!r} has no option valid for {modality} tasks; "
                f"options: {list(decision.options)}"
            )
    mask.flags.writeable = False
    return mask


LAYER_FIELDS = ("width", "activation", "dropout")
"""Settings of the hidden layers; they mean nothing to a child with `hidden_layers=0`."""


def irrelevant_fields(representation: str, hidden_layers: int) -> tuple[str, ...]:
    """The fields whose value cannot change how a child with this representation and depth
    trains."""
    unsized = () if _featurizer(representation).sized else ("representation_size",)
    return unsized + (LAYER_FIELDS if hidden_layers == 0 else ())


def canonical_config(values: dict[str, Any], modality: Modality) -> ChildConfig:
    """A `ChildConfig` from chosen values, with inapplicable ones dropped or defaulted.

    Irrelevant fields (`irrelevant_fields`) get one canonical value: size 0 for a representation
    without a size, the default width, activation and dropout for a child without hidden
    layers. A tabular task defaults to `raw` features when the space leaves the representation
    out.
    """
    values = dict(values)
    if "representation" not in values and modality == "tabular":
        values["representation"] = "raw"
    rep = values.get("representation", ChildConfig.representation)
    irrelevant = irrelevant_fields(rep, values.get("hidden_layers", ChildConfig.hidden_layers))
    for name in irrelevant:
        values.pop(name, None)
    if "representation_size" in irrelevant:
        values["representation_size"] = 0
    elif not values.get("representation_size"):
        values["representation_size"] = ChildConfig.representation_size
    return ChildConfig(**values)


def default_space() -> SearchSpace:
    """Ten decisions in the spirit of the paper's space, masked per task modality."""
    return SearchSpace(
        (
            Decision(
                "representation", ("word-hash", "char-hash", "embedding-bag", "minilm", "raw")
            ),
            Decision("representation_size", (256, 1024, 4096, 16384)),
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
