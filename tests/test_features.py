import warnings
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from mnms_env import ChildConfig, features, mpnet
from mnms_env.features import MissingExtraError, featurize
from mnms_env.space import SpaceError
from mnms_env.tasks import make_task
from mnms_env.tasks.base import Split, Task, task_from_arrays

TEXTS = np.array(
    [f"{w} movie was {w}" for w in ["good", "great", "fine", "nice", "superb"] * 4]
    + [f"{w} film, truly {w}" for w in ["bad", "awful", "poor", "dull", "boring"] * 4],
    dtype=object,
)
TINY = task_from_arrays("tiny-text", "text", TEXTS, [1] * 20 + [0] * 20, seed=0)


@pytest.mark.parametrize(
    "representation", ["word-hash", "char-hash", "embedding-bag", "word-ngrams"]
)
def test_bag_features_are_sparse_rows_of_the_right_width(representation: str) -> None:
    feats = featurize(TINY, representation, 64)
    assert feats.is_bag and feats.dim == 64
    for name in ("train", "validation", "test"):
        mat = feats.split(name)
        assert sp.issparse(mat) and mat.shape == (len(TINY.split(name)), 64)
        assert mat.dtype == np.float32 and np.isfinite(mat.data).all()


def test_hashed_ngrams_are_l2_normalised() -> None:
    mat = featurize(TINY, "char-hash", 256).train
    norms = np.sqrt(mat.multiply(mat).sum(axis=1)).A1
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)


def test_embedding_bag_is_the_mean_of_the_most_frequent_training_words() -> None:
    train = Split(
        np.array(["good good film", "bad film", "film"], dtype=object), np.array([1, 0, 1])
    )
    test = Split(np.array(["good plot"], dtype=object), np.array([1]))
    task = Task("bag", "text", ("a", "b"), train, test, test)
    feats = featurize(task, "embedding-bag", 2)  # film (3), good (2); columns sorted
    np.testing.assert_allclose(feats.train.toarray(), [[1 / 3, 2 / 3], [1, 0], [1, 0]])
    np.testing.assert_allclose(feats.test.toarray(), [[0, 1]])


def test_word_ngrams_are_the_most_frequent_training_ngrams_counted_whole() -> None:
    """The vocabulary is the `size` most frequent 1-2-grams of the training split; each has a
    column of its own (hashing would fold them together), weighed 1 + log(count), L2-normed."""

    def split(*texts: str) -> Split:
        return Split(np.array(texts, dtype=object), np.arange(len(texts)) % 2)

    train = split("good film", "good film", "bad film", "good good film")
    test = split("good film unseen", "unseen words")
    task = Task("ngrams", "text", ("a", "b"), train, test, test)
    top = featurize(task, "word-ngrams", 3)  # good (4), film (4), good film (3); columns sorted
    log2 = 1.0 + np.log(2.0)
    expected = np.array([[1, 1, 1], [1, 1, 1], [1, 0, 0], [1, log2, 1]], dtype=np.float32)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(top.train.toarray(), expected, rtol=1e-5)
    np.testing.assert_allclose(top.test.toarray(), [expected[0], [0, 0, 0]], rtol=1e-5)
    wide = featurize(task, "word-ngrams", 64).train.toarray()  # 6 distinct training n-grams
    assert (wide[:, 6:] == 0).all() and (wide > 0).sum(axis=1).tolist() == [3, 3, 3, 4]


def test_raw_features_are_standardised_on_train() -> None:
    feats = featurize(make_task("wine"), "raw")
    assert not feats.is_bag and feats.dim == 13
    np.testing.assert_allclose(feats.train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(feats.train.std(axis=0), 1.0, atol=1e-4)


def test_second_use_loads_from_the_disk_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    task = make_task("word-sentiment-da")
    first = featurize(task, "char-hash", 512)
    path = features._cache_path(task, "char-hash", 512)
    assert path.exists()

    def refuse(*args, **kwargs):
        raise AssertionError("features were recomputed instead of loaded")

    monkeypatch.setattr(features, "_compute", refuse)
    second = featurize(task, "char-hash", 512)
    assert (first.train != second.train).nnz == 0 and first.dim == second.dim


def test_an_unreadable_cache_entry_is_computed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A truncated or garbage file failed every later run, naming no file."""
    monkeypatch.setenv("MNMS_CACHE_DIR", str(tmp_path))
    task = make_task("wine")
    expected = featurize(task, "raw", 0).train
    path = features._cache_path(task, "raw", 0)
    for garbage in (b"", b"x", path.read_bytes()[:100]):
        path.write_bytes(garbage)
        with pytest.warns(UserWarning, match="unreadable cached features"):
            np.testing.assert_array_equal(featurize(task, "raw", 0).train, expected)
        with warnings.catch_warnings():  # repaired on disk: read without a warning
            warnings.simplefilter("error")
            np.testing.assert_array_equal(featurize(task, "raw", 0).train, expected)


@pytest.mark.parametrize("representation", ["word-ngrams", "embedding-bag", "tokens"])
def test_texts_without_a_word_give_empty_features(representation: str) -> None:
    """sklearn's "empty vocabulary" failed the step of such a child."""
    texts = np.array(["😀😀", "!!", "😡", "..."] * 10, dtype=object)
    task = task_from_arrays("emoji", "text", texts, np.arange(40) % 2, seed=0)
    found = featurize(task, representation, 256)
    train = found.train.toarray() if sp.issparse(found.train) else found.train
    assert train.shape[0] == len(task.train.y) and not train.any()


def test_text_featurizer_on_a_tabular_task_is_refused() -> None:
    with pytest.raises(ValueError, match="applies to text tasks; task 'digits' is tabular"):
        featurize(make_task("digits"), "word-hash", 64)


def test_missing_encoder_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = replace(features.FEATURIZERS["minilm"], package="a_package_not_installed")
    monkeypatch.setitem(features.FEATURIZERS, "minilm", missing)
    with pytest.raises(MissingExtraError, match=r"mnms-env\[encoder\]"):
        featurize(TINY, "minilm")


@pytest.mark.skipif(not features.FEATURIZERS["minilm"].available(), reason="needs the encoder")
def test_pretrained_encoder_gives_384_dim_unit_vectors() -> None:
    feats = featurize(TINY, "minilm")
    assert feats.train.shape == (len(TINY.train), 384)
    np.testing.assert_allclose(np.linalg.norm(feats.train, axis=1), 1.0, rtol=1e-4)


@pytest.mark.skipif(not features.FEATURIZERS["minilm"].available(), reason="needs the encoder")
def test_an_interrupted_encoding_resumes_from_its_last_chunk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A long encoding (imdb: an hour on CPU) killed midway keeps its finished chunks."""
    task = task_from_arrays("resumed-text", "text", TEXTS, [1] * 20 + [0] * 20, seed=1)
    monkeypatch.setattr(features, "ENCODE_CHUNK", 4)
    model = features.load_minilm()
    real, encoded = model.encode, []

    def encode(texts: list[str], **kwargs: object) -> np.ndarray:
        if len(encoded) == 2 and not resumed:
            raise KeyboardInterrupt
        encoded.append(len(texts))
        return real(texts, **kwargs)

    monkeypatch.setattr(model, "encode", encode)
    resumed = False
    with pytest.raises(KeyboardInterrupt):
        featurize(task, "minilm")
    resumed, encoded = True, []
    feats = featurize(task, "minilm")
    assert sum(encoded) == len(TEXTS) - 8  # the first two chunks of train were kept
    whole = real(list(task.train.x), normalize_embeddings=True)
    np.testing.assert_allclose(feats.train, whole, atol=1e-5)
    assert not features._parts_dir(features._cache_path(task, "minilm", 0)).exists()


@pytest.mark.skipif(not features.FEATURIZERS["mpnet"].available(), reason="needs mpnet's parts")
def test_mpnet_assembles_from_its_packages_into_a_sentence_encoder() -> None:
    feats = featurize(TINY, "mpnet")
    assert feats.train.shape == (len(TINY.train), 768)
    np.testing.assert_allclose(np.linalg.norm(feats.train, axis=1), 1.0, rtol=1e-4)
    texts = ["the film was wonderful", "a truly great movie", "how do I bake bread"]
    film, movie, bread = features.load_mpnet().encode(texts, normalize_embeddings=True)
    assert film @ movie > film @ bread + 0.3  # a paraphrase is nearer than another topic
    assert (mpnet.model_dir() / "modules.json").is_file()


def test_mpnet_names_every_missing_part_and_refuses_an_archive_that_is_not_upstream(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MNMS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(mpnet, "PARTS", ("part_a_not_installed", "part_b_not_installed"))
    with pytest.raises(MissingExtraError, match="part_a.*part_b.*--no-deps.*==0.0.1"):
        mpnet.model_dir()
    needs_both = replace(features.FEATURIZERS["mpnet"], package=("numpy", "part_a_not_installed"))
    assert not needs_both.available()  # masked while any one module is missing
    error = str(needs_both.missing("mpnet"))
    assert "'part_a_not_installed'" in error and "numpy" not in error  # names what is missing
    if not features.FEATURIZERS["mpnet"].available():
        pytest.skip("the archive check needs mpnet's parts")
    monkeypatch.undo()
    monkeypatch.setenv("MNMS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(mpnet, "ARCHIVE_SHA256", "0" * 64)
    monkeypatch.setattr(mpnet.zipfile, "ZipFile", None)  # unpacking before the check would fail
    (tmp_path / "models" / f"{mpnet.SCRATCH}killed").mkdir(parents=True)  # a killed assembly's
    with pytest.raises(ValueError, match="SHA-256"):
        mpnet.model_dir()
    assert [p.name for p in (tmp_path / "models").iterdir()] == [".all-mpnet-base-v2.lock"]


def test_tokens_are_word_ids_of_the_training_vocabulary_and_cached() -> None:
    """Lowercase words in order, ids 2.. for the `size - 2` most frequent training words, 1 for
    any other, 0 after the text's end; the vocabulary names every id and survives the cache."""
    task = task_from_arrays(
        "tokens-tiny",
        "text",
        np.array(["Good movie, GOOD!", "bad movie", "good plot", "bad acting"] * 5, dtype=object),
        [1, 0, 1, 0] * 5,
        seed=0,
    )
    feats = featurize(task, "tokens", 5)  # ids 2, 3, 4: the three most frequent words
    assert feats.is_sequence and not feats.is_bag and feats.dim == 5
    assert feats.train.dtype == np.int32 and feats.train.shape == (len(task.train), 64)
    vocabulary = feats.vocabulary.tolist()
    assert vocabulary[:2] == ["", ""] and sorted(vocabulary[2:]) == ["bad", "good", "movie"]
    row = feats.train[list(task.train.x).index("Good movie, GOOD!")]
    good, movie = vocabulary.index("good"), vocabulary.index("movie")
    assert row[:3].tolist() == [good, movie, good] and not row[3:].any()
    plot = feats.train[list(task.train.x).index("good plot")]
    assert plot[:2].tolist() == [good, features.UNKNOWN]
    again = featurize(task, "tokens", 5)  # from the disk cache
    assert (again.train == feats.train).all() and again.vocabulary.tolist() == vocabulary


def _ids(
    task, size: int, high: int = 3, kind=np.int32, vocabulary: bool = True, front: int = 0
) -> dict:
    """Token ids `high` everywhere but `front` leading pads, of dtype `kind`, with or without a
    vocabulary of 4 words."""
    mats = {s: np.full((len(task.split(s)), 4), high, dtype=kind) for s in features.SPLITS}
    for mat in mats.values():
        mat[:, :front] = features.PAD
    return mats | ({"vocabulary": np.array(["", "", "a", "b"])} if vocabulary else {})


@pytest.mark.parametrize(
    ("name", "settings", "message"),
    [
        ("ids-ok", {}, None),
        ("ids-high", {"high": 9}, r"token ids 9..9, outside \[0, 4\)"),
        ("ids-unnamed", {"vocabulary": False}, r"must give 'vocabulary'.*its 4 token ids"),
        ("ids-float", {"kind": np.float32}, r"'train' must be a 2-D numpy array of int32"),
        ("ids-front-padded", {"front": 2}, r"row 0 has padding \(0\) before a token"),
    ],
)
def test_a_sequence_featurizer_is_checked_before_a_cnn_reads_it(
    monkeypatch, name: str, settings: dict, message: str | None
) -> None:
    compute = partial(_ids, **settings)
    featurizer = features.Featurizer("text", bag=False, sized=True, compute=compute, sequence=True)
    monkeypatch.setitem(features.FEATURIZERS, name, featurizer)
    if message is None:
        assert featurize(TINY, name, 4).is_sequence
        return
    with pytest.raises(ValueError, match=message):
        featurize(TINY, name, 4)


def _object_vocabulary(task, size: int) -> dict:
    mats = _ids(task, size)
    return mats | {"vocabulary": mats["vocabulary"].astype(object)}


def test_an_object_array_vocabulary_is_kept_as_strings_and_read_from_the_cache(
    monkeypatch,
) -> None:
    """(An object array cannot be loaded without pickle: every process computed it again.)"""
    featurizer = features.Featurizer(
        "text", bag=False, sized=True, compute=_object_vocabulary, sequence=True
    )
    monkeypatch.setitem(features.FEATURIZERS, "ids-object", featurizer)
    first = featurize(TINY, "ids-object", 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = featurize(TINY, "ids-object", 4)  # from the disk cache
    assert first.vocabulary.dtype.kind == again.vocabulary.dtype.kind == "U"
    assert again.vocabulary.tolist() == ["", "", "a", "b"]


def test_a_featurizer_size_below_its_minimum_is_refused_before_training() -> None:
    with pytest.raises(SpaceError, match="'tokens' needs representation_size >= 3, got 2"):
        ChildConfig(representation="tokens", representation_size=2)
    with pytest.raises(ValueError, match="'tokens' needs a size >= 3, got 2"):
        featurize(TINY, "tokens", 2)
    with pytest.raises(ValueError, match="min_size is a whole number >= 2, got 1"):
        features.Featurizer("text", bag=True, sized=True, compute=_ids, min_size=1)


def test_a_sequence_featurizer_has_a_size_and_no_bag() -> None:
    with pytest.raises(ValueError, match="a sequence Featurizer has bag=False and sized=True"):
        features.Featurizer("text", bag=True, sized=True, compute=_ids, sequence=True)
