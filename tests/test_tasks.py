"""Tasks: built-ins, named datasets (local copy and hub), user files and the registry."""

from __future__ import annotations

import json
import os
from pathlib import Path

import datasets
import gymnasium as gym
import numpy as np
import pytest
import wordfreq
from small_space import SMALL

import mnms_env.tasks as tasks
from mnms_env import ChildConfig, ChildRequest, SequentialEvaluator
from mnms_env.evaluate import task_features
from mnms_env.tasks import (
    SPLITS,
    Split,
    Task,
    TaskError,
    list_tasks,
    make_task,
    register_task,
    task_from_arrays,
)
from mnms_env.tasks.builtin import BUILTIN
from mnms_env.tasks.external import NAMED, load_named


@pytest.fixture(autouse=True)
def _restore_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tasks a test registers do not leak into other tests."""
    monkeypatch.setattr(tasks, "_REGISTRY", dict(tasks._REGISTRY))


def _write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _rows(n: int = 40) -> list[dict[str, object]]:
    return [{"text": f"example {i}", "label": i % 2} for i in range(n)]


def _texts(task: Task) -> dict[str, set[str]]:
    return {s: set(task.split(s).x.tolist()) for s in SPLITS}


def _write_folder(folder: Path, sizes: dict[str, int], suffix: str = "jsonl") -> Path:
    """Split files `<part>.<suffix>` with `sizes[part]` rows, texts `"<part> <i>"`."""
    folder.mkdir(exist_ok=True)
    for part, n in sizes.items():
        rows = [{"text": f"{part} {i}", "label": i % 2} for i in range(n)]
        if suffix == "jsonl":
            _write_jsonl(folder / f"{part}.jsonl", rows)
        else:
            lines = [f"{row['text']},{row['label']}\n" for row in rows]
            (folder / f"{part}.csv").write_text("text,label\n" + "".join(lines), encoding="utf-8")
    return folder


# Built-in tasks


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_builtin_task_loads_with_usable_splits(name: str) -> None:
    task = make_task(name)
    assert task.name == name and task.num_classes >= 2
    for split in SPLITS:
        part = task.split(split)
        assert len(part) > 0 and set(np.unique(part.y)) <= set(range(task.num_classes))
        if task.modality == "text":
            assert part.x.dtype == object and all(isinstance(t, str) for t in part.x)
        else:
            assert part.x.dtype == np.float32 and part.x.ndim == 2


def test_langid_es_is_the_paper_construction() -> None:
    task = make_task("langid-es")
    pool = {lang: wordfreq.top_n_list(lang, 5000) for lang in ("en", "es", "de", "ja")}
    distinct = set().union(*pool.values())
    x = np.concatenate([task.split(s).x for s in SPLITS])
    y = np.concatenate([task.split(s).y for s in SPLITS])
    assert task.classes == ("other", "es")
    assert len(x) == len(set(x)) == len(distinct) and 15_000 < len(x) < 20_000
    assert set(x[y == 1]) == set(pool["es"])  # every Spanish token, shared ones included
    assert "の" in set(x[y == 0])


def test_word_sentiment_drops_neutral_words_and_keeps_non_ascii() -> None:
    en, da = make_task("word-sentiment-en"), make_task("word-sentiment-da")
    assert sum(en.sizes().values()) == 3382 - 2  # AFINN-en-165 has two zero-valence words
    assert sum(da.sizes().values()) == 3552
    assert en.classes == da.classes == ("negative", "positive")
    da_words = {w for s in SPLITS for w in da.split(s).x}
    assert "afgørende" in da_words  # read as UTF-8, not mojibake


def test_tabular_builtins_are_raw_float32() -> None:
    digits = make_task("digits")
    assert digits.train.x.shape[1] == 64 and digits.train.x.max() == 16.0  # not standardised
    assert make_task("breast-cancer").classes == ("malignant", "benign")


# Determinism


def test_same_seed_gives_identical_splits_and_another_seed_reshuffles() -> None:
    for build in (BUILTIN["langid-de"], lambda seed: load_named("cr", NAMED["cr"], seed)):
        assert build(0).fingerprint == build(0).fingerprint
        assert not np.array_equal(build(0).test.x, build(1).test.x)


def test_make_task_is_memoised_per_name_and_seed() -> None:
    assert make_task("cr", seed=3) is make_task("cr", seed=3)
    assert make_task("cr", seed=3) is not make_task("cr", seed=4)


def test_official_splits_do_not_depend_on_the_seed() -> None:
    assert make_task("sst2", seed=0).fingerprint == make_task("sst2", seed=7).fingerprint


# Named datasets from MNMS_DATA_DIR


def test_sst2_has_the_official_split_sizes() -> None:
    task = make_task("sst2")
    assert task.sizes() == {"train": 6920, "validation": 872, "test": 1821}
    assert task.classes == ("negative", "positive") and task.source.endswith("sst2")


def test_single_split_source_gets_stratified_80_10_10() -> None:
    task = make_task("cr")  # all.jsonl: 1368 negative, 2407 positive
    assert task.sizes() == {"train": 3019, "validation": 378, "test": 378}
    for split, share in zip(SPLITS, (0.8, 0.1, 0.1), strict=True):
        counts = np.bincount(task.split(split).y)
        assert np.all(np.abs(counts - share * np.array([1368, 2407])) <= 1)


def test_trec_carves_validation_from_train_and_keeps_the_official_test() -> None:
    task = make_task("trec")
    assert task.sizes() == {"train": 4906, "validation": 546, "test": 500}
    assert task.classes[:3] == ("DESC", "ENTY", "ABBR")  # the source's integer order
    test_file = Path(os.environ["MNMS_DATA_DIR"]) / "trec" / "test.jsonl"
    official = [json.loads(line)["text"] for line in test_file.read_text("utf-8").splitlines()]
    assert task.test.x.tolist() == official


@pytest.mark.parametrize("name", sorted(NAMED))
def test_declared_info_matches_the_loaded_data(name: str) -> None:
    info = next(i for i in list_tasks() if i.name == name)
    task = make_task(name)
    assert (info.sizes, info.num_classes) == (task.sizes(), task.num_classes)
    y = np.concatenate([task.split(s).y for s in SPLITS])
    declared = np.sum([counts for counts in NAMED[name].counts.values()], axis=0)
    assert np.bincount(y).tolist() == declared.tolist()


def test_offline_without_local_copy_names_task_hub_id_and_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_task("sst2")  # memoised from the local copy: must not mask the missing one
    monkeypatch.setenv("MNMS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    calls = []  # a local copy was meant: the hub is not tried (offline it retries for ~25 s)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append(a))
    with pytest.raises(TaskError, match="MNMS_DATA_DIR") as caught:
        make_task("sst2")
    assert "'sst2'" in str(caught.value) and "SetFit/sst2" in str(caught.value)
    assert str(tmp_path) in str(caught.value) and calls == []
    monkeypatch.undo()
    monkeypatch.delenv("MNMS_DATA_DIR")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(TaskError, match="MNMS_DATA_DIR is unset") as caught:
        make_task("sst2")
    assert "SetFit/sst2" in str(caught.value) and caught.value.__cause__ is not None


def test_hub_copy_uses_declared_columns_and_carves_validation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    questions = [f"question {i} ?" for i in range(60)]
    feature = datasets.ClassLabel(names=["ABBR", "ENTY", "DESC"])
    features = datasets.Features({"text": datasets.Value("string"), "coarse_label": feature})

    def fake_split(n: int) -> datasets.Dataset:
        rows = {"text": questions[:n], "coarse_label": [i % 3 for i in range(n)]}
        return datasets.Dataset.from_dict(rows, features=features)

    calls = []

    def fake_load(path: str, name: str | None = None, **kwargs: object) -> datasets.DatasetDict:
        calls.append((path, name, kwargs))
        return datasets.DatasetDict({"train": fake_split(60), "test": fake_split(30)})

    monkeypatch.delenv("MNMS_DATA_DIR")
    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    task = make_task("trec")
    assert calls == [("CogComp/trec", None, {"revision": "refs/convert/parquet"})]
    assert task.sizes() == {"train": 54, "validation": 6, "test": 30}
    assert task.classes == ("ABBR", "ENTY", "DESC") and task.source == "CogComp/trec"


# User data


def test_jsonl_path_task_keeps_test_examples_out_of_train_and_validation(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "data.jsonl", _rows(100))
    task = make_task(f"jsonl:{path}")
    texts = _texts(task)
    assert not texts["test"] & (texts["train"] | texts["validation"])
    assert set().union(*texts.values()) == {f"example {i}" for i in range(100)}
    assert task.sizes() == {"train": 80, "validation": 10, "test": 10}


def test_an_edited_file_is_reloaded_with_its_features(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "data.jsonl", _rows(40))
    name = f"jsonl:{path}"
    config = ChildConfig(representation="word-hash", representation_size=256, hidden_layers=0)
    for rows in (40, 60):  # the second child trains on the edited file's 48 training rows
        _write_jsonl(path, _rows(rows))
        task = make_task(name)
        assert sum(task.sizes().values()) == rows
        assert task_features(task, "word-hash", 256).split("train").shape[0] == len(task.train.y)
        (result,) = SequentialEvaluator().evaluate([ChildRequest.for_task(name, config)])
        assert 0 <= result.val_accuracy <= 1


def test_csv_with_custom_columns_and_numeric_labels(tmp_path: Path) -> None:
    lines = ["sentence,stars"] + [f'"review {i}, long",{(2, 10)[i % 2]}' for i in range(40)]
    path = tmp_path / "reviews.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    register_task("reviews", path, text_column="sentence", label_column="stars")
    task = make_task("reviews")
    assert task.classes == ("2", "10") and "review 0, long" in set().union(*_texts(task).values())


def test_register_a_dataset_uses_its_class_names() -> None:
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["ham", "spam"])}
    )
    rows = {"text": [f"mail {i}" for i in range(40)], "label": [i % 2 for i in range(40)]}
    register_task("spam", datasets.Dataset.from_dict(rows, features=features))
    task = make_task("spam")
    assert task.classes == ("ham", "spam") and task.sizes() == {
        "train": 32,
        "validation": 4,
        "test": 4,
    }


def test_register_a_dataset_dict_uses_its_splits() -> None:
    def split(n: int) -> datasets.Dataset:
        return datasets.Dataset.from_dict(
            {"text": [f"t{i}" for i in range(n)], "label": [i % 2 for i in range(n)]}
        )

    register_task(
        "dd", datasets.DatasetDict({"train": split(20), "validation": split(4), "test": split(6)})
    )
    assert make_task("dd").sizes() == {"train": 20, "validation": 4, "test": 6}


def test_register_a_callable_and_overwrite_replaces_the_memoised_task() -> None:
    def build(seed: int) -> Task:
        x = np.arange(40, dtype=np.float32).reshape(20, 2)
        return task_from_arrays("toy", "tabular", x, [i % 2 for i in range(20)], seed=seed)

    register_task("toy", build, modality="tabular")
    first = make_task("toy")
    with pytest.raises(TaskError, match="already registered.*overwrite=True"):
        register_task("toy", build, modality="tabular")
    register_task("toy", build, modality="tabular", overwrite=True)
    assert make_task("toy") is not first and make_task("toy").fingerprint == first.fingerprint


def test_list_tasks_covers_every_registered_name() -> None:
    names = [info.name for info in list_tasks()]
    assert names == list(tasks._REGISTRY) and set(BUILTIN) | set(NAMED) <= set(names)
    info = next(i for i in list_tasks() if i.name == "langid-es")
    assert info.source == "wordfreq" and info.sizes == make_task("langid-es").sizes()


# Errors a user can hit


def test_unknown_name_suggests_the_nearest_and_how_to_list() -> None:
    with pytest.raises(TaskError, match=r"'sst-2'.*Did you mean 'sst2'.*mnms_env\.list_tasks\(\)"):
        make_task("sst-2")


def test_malformed_json_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a", "label": 0}\n\n{"text": "b", "label": \n', encoding="utf-8")
    with pytest.raises(TaskError, match=r"bad\.jsonl, line 3: invalid JSON"):
        make_task(f"jsonl:{path}")


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
def test_empty_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"empty.{suffix}"
    path.write_text("", encoding="utf-8")
    with pytest.raises(TaskError, match="empty|no examples"):
        make_task(f"{suffix}:{path}")


def test_missing_column_names_it_and_the_columns_present(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "d.jsonl", [{"sentence": "a", "label": 0}])
    with pytest.raises(
        TaskError, match=r"line 1: no column 'text'; columns present: \['sentence', 'label'\]"
    ):
        make_task(f"jsonl:{path}")
    csv_path = tmp_path / "d.csv"
    csv_path.write_text("text,y\nhello,1\n", encoding="utf-8")
    with pytest.raises(TaskError, match=r"no column 'label'; columns present: \['text', 'y'\]"):
        make_task(f"csv:{csv_path}")


def test_listing_names_the_registered_task_whose_file_does_not_load(tmp_path: Path) -> None:
    register_task("mine", _write_jsonl(tmp_path / "d.jsonl", _rows()), text_column="sentence")
    with pytest.raises(TaskError, match=r"task 'mine' cannot be listed: .*no column 'sentence'"):
        list_tasks()


def test_labels_of_two_types_that_read_the_same_are_refused(tmp_path: Path) -> None:
    rows = [{"text": f"t{i}", "label": [1, "1", 0][i % 3]} for i in range(30)]
    with pytest.raises(TaskError, match=r"mixes types whose values read the same \(\[1, '1'\]\)"):
        make_task(f"jsonl:{_write_jsonl(tmp_path / 'd.jsonl', rows)}")


def test_a_single_label_class_is_refused(tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "one.jsonl", [{"text": f"t{i}", "label": "pos"} for i in range(20)]
    )
    with pytest.raises(TaskError, match="single class"):
        make_task(f"jsonl:{path}")


@pytest.mark.parametrize(
    ("bad_y", "match"),
    [
        (np.array([0, 1, 2, 5]), r"train labels \[2, 5\] are not indices of its 2 classes"),
        (np.array([0.0, 1.0, 0.0, 1.0]), "integer class indices, got dtype float64"),
    ],
)
def test_labels_outside_the_classes_are_refused(bad_y: np.ndarray, match: str) -> None:
    good = Split(np.zeros((4, 2)), np.array([0, 1, 0, 1]))
    with pytest.raises(TaskError, match=match):
        Task("bad", "tabular", ("a", "b"), Split(good.x, bad_y), good, good)


def test_missing_file_and_bad_sources_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match="no such file"):
        make_task(f"jsonl:{tmp_path / 'absent.jsonl'}")
    with pytest.raises(TaskError, match=r"\.jsonl or \.csv"):
        register_task("txt", tmp_path / "data.txt")
    with pytest.raises(TaskError, match="cannot register a int"):
        register_task("number", 3)


def test_a_dataset_without_the_label_column_is_refused() -> None:
    register_task("nolabel", datasets.Dataset.from_dict({"text": ["a", "b"], "y": [0, 1]}))
    with pytest.raises(TaskError, match=r"no column 'label'; columns present: \['text', 'y'\]"):
        make_task("nolabel")


# User folders


def test_a_folder_with_all_three_splits_uses_them_as_given(tmp_path: Path) -> None:
    folder = _write_folder(tmp_path / "mine", {"train": 20, "validation": 6, "test": 8})
    register_task("mine", folder)
    task = make_task("mine")
    assert task.sizes() == {"train": 20, "validation": 6, "test": 8}
    assert _texts(task) == {s: {f"{s} {i}" for i in range(n)} for s, n in task.sizes().items()}
    assert make_task("mine", seed=5).fingerprint == task.fingerprint and task.source == str(folder)


def test_a_dev_split_is_named_as_not_read(tmp_path: Path) -> None:
    """Reading it as validation would change the splits of every folder that holds one."""
    folder = _write_folder(tmp_path / "dev", {"train": 20, "dev": 6, "test": 8})
    with pytest.warns(UserWarning, match="dev.jsonl is not read; a validation split is named"):
        task = make_task(f"jsonl:{folder}")
    assert task.sizes() == {"train": 18, "validation": 2, "test": 8}  # carved from train


def test_a_relative_path_is_the_one_it_was_registered_at(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_jsonl(tmp_path / "rel.jsonl", _rows())
    monkeypatch.chdir(tmp_path)
    register_task("rel", "rel.jsonl")
    monkeypatch.chdir("/")
    assert make_task("rel").sizes()["train"] == 32


@pytest.mark.parametrize(
    ("write", "match"),
    [
        (  # a JSON null became a class "None"
            lambda p: _write_jsonl(p / "a.jsonl", [*_rows(), {"text": "t", "label": None}]),
            r"all: example 40 \(counting from 0\) has label None \(NoneType\)",
        ),
        (  # True == 1: one class
            lambda p: _write_jsonl(p / "a.jsonl", [*_rows(), {"text": "t", "label": True}]),
            "mix bools and ints",
        ),
        (  # an unquoted comma shifted the row: the label became " great"
            lambda p: (p / "a.csv").write_text("text,label\ngood, great,1\n" + "x,0\n" * 20),
            r"a.csv, row 2: more fields than the header \(quote a text",
        ),
        (
            lambda p: (p / "a.csv").write_text("text,label\nx,\n" + "x,0\ny,1\n" * 10),
            r"a.csv, row 2: the 'label' field is empty",
        ),
        (
            lambda p: (p / "a.csv").write_text("text,label,label,,\n" + "x,0,1,,\n" * 20),
            r"the header names columns \['label'\] more than once",
        ),
        (  # latin-1 bytes: a bare UnicodeDecodeError
            lambda p: (p / "a.jsonl").write_bytes(
                b'{"text": "b", "label": 1}\n{"text": "caf\xe9"}\n'
            ),
            r"a.jsonl, line 2: not UTF-8",
        ),
        (
            lambda p: (p / "a.csv").write_bytes(b"text,label\nb,1\ncaf\xe9,0\n"),
            r"a.csv, line 3: not UTF-8",
        ),
    ],
)
def test_labels_and_rows_that_would_corrupt_a_task_are_refused(
    tmp_path: Path, write, match: str
) -> None:
    write(tmp_path)
    (path,) = tmp_path.iterdir()
    with pytest.raises(TaskError, match=match):
        make_task(f"{path.suffix[1:]}:{path}")


def test_rows_with_empty_trailing_fields_load(tmp_path: Path) -> None:
    """Exporters end rows with a comma; only a non-empty extra field is a shifted row."""
    (tmp_path / "t.csv").write_text("text,label,,\n" + "x,0,\ny,1,,\n" * 10)
    assert make_task(f"csv:{tmp_path / 't.csv'}").classes == ("0", "1")


def test_classes_only_validation_or_test_hold_are_refused(tmp_path: Path) -> None:
    folder = _write_folder(tmp_path / "u", {"train": 20, "test": 8})
    _write_jsonl(folder / "validation.jsonl", [{"text": "v", "label": 2}, *_rows(6)])
    with pytest.raises(
        TaskError, match=r"validation split holds classes the train split lacks \(\['2'\]\)"
    ):
        make_task(f"jsonl:{folder}")


def test_missing_tabular_values_are_refused(tmp_path: Path) -> None:
    rows = [{"text": [i, None if i == 3 else i % 3], "label": i % 2} for i in range(40)]
    register_task("holes", _write_jsonl(tmp_path / "t.jsonl", rows), modality="tabular")
    with pytest.raises(
        TaskError, match=r"all: example 3 \(counting from 0\) has None in column 1; tabular inputs"
    ):
        make_task("holes")
    rows = [{"text": [i, 1e39 if i == 3 else i % 3], "label": i % 2} for i in range(40)]
    register_task("huge", _write_jsonl(tmp_path / "h.jsonl", rows), modality="tabular")
    with pytest.raises(TaskError, match=r"\|x\| < 3.4e38"):
        make_task("huge")


def test_a_folder_without_validation_gets_it_carved_from_train(tmp_path: Path) -> None:
    register_task("mine", _write_folder(tmp_path / "mine", {"train": 40, "test": 10}, "csv"))
    task = make_task("mine")
    assert task.sizes() == {"train": 36, "validation": 4, "test": 10}
    texts = _texts(task)
    assert texts["train"] | texts["validation"] == {f"train {i}" for i in range(40)}
    assert not texts["train"] & texts["validation"]
    assert texts["test"] == {f"test {i}" for i in range(10)}
    assert np.bincount(task.validation.y).tolist() == [2, 2]  # stratified
    assert _texts(make_task("mine", seed=1))["validation"] != texts["validation"]  # task seed


def test_jsonl_and_csv_folder_names_read_only_their_kind(tmp_path: Path) -> None:
    folder = _write_folder(tmp_path / "both", {"train": 20, "test": 10})
    _write_folder(folder, {"train": 30, "validation": 5, "test": 5}, "csv")
    jsonl, csv = make_task(f"jsonl:{folder}"), make_task(f"csv:{folder}")
    assert jsonl.sizes() == {"train": 18, "validation": 2, "test": 10}
    assert csv.sizes() == {"train": 30, "validation": 5, "test": 5}
    assert jsonl.source == csv.source == str(folder)
    with pytest.raises(
        TaskError, match=r"both: train is given twice, as train\.jsonl and train\.csv"
    ):
        register_task("both", folder)  # refused when registered, before any use


def test_a_registered_copy_of_a_named_folder_gives_its_splits() -> None:
    register_task("my-trec", Path(os.environ["MNMS_DATA_DIR"]) / "trec")
    for seed in (0, 3):
        mine, named = make_task("my-trec", seed=seed), make_task("trec", seed=seed)
        assert mine.sizes() == named.sizes() == {"train": 4906, "validation": 546, "test": 500}
        for split in SPLITS:
            assert mine.split(split).x.tolist() == named.split(split).x.tolist()
            assert mine.split(split).y.tolist() == named.split(split).y.tolist()
    assert mine.classes == ("0", "1", "2", "3", "4", "5") and named.classes[0] == "DESC"


_TWO = '{"text": "a", "label": 0}\n{"text": "b", "label": 1}\n'


def _bad_folder(tmp_path: Path, files: dict[str, str]) -> Path:
    """A folder `bad` holding `files` (name to text)."""
    folder = tmp_path / "bad"
    folder.mkdir()
    for file_name, text in files.items():
        (folder / file_name).write_text(text, encoding="utf-8")
    return folder


@pytest.mark.parametrize(
    ("files", "match"),
    [
        (
            {"validation.jsonl": _TWO, "test.jsonl": _TWO},
            r"split files \['validation\.jsonl', 'test\.jsonl'\] but no train; accepted: train",
        ),
        ({"train.jsonl": _TWO, "test.jsonl": _TWO + '{"text": "c",\n'}, r"test\.jsonl, line 3"),
        (
            {"train.jsonl": _TWO + '{"text": "c", "y": 0}\n'},
            r"train\.jsonl, line 3: no column 'label'; columns present: \['text', 'y'\]",
        ),
        ({"train.jsonl": _TWO, "train.csv": "text,label\na,0\n"}, "train is given twice"),
        ({}, r"no split files; files found: \[\]; accepted: .* a \.jsonl or \.csv file"),
        ({"notes.md": "", "data.jsonl": _TWO}, r"files found: \['data\.jsonl', 'notes\.md'\]"),
        ({"train.jsonl": _TWO, "test.jsonl": ""}, r"test\.jsonl: the file holds no examples"),
        ({"all.jsonl": _TWO, "test.jsonl": _TWO}, "both a single pool and split files"),
    ],
    ids=[
        "no-train",
        "malformed",
        "no-label",
        "both-kinds",
        "empty",
        "others",
        "empty-split",
        "mix",
    ],
)
def test_a_bad_folder_is_refused_naming_it(
    tmp_path: Path, files: dict[str, str], match: str
) -> None:
    folder = _bad_folder(tmp_path, files)
    with pytest.raises(TaskError, match=match) as caught:
        register_task("bad", folder)
        make_task("bad")
    assert str(folder) in str(caught.value)


@pytest.mark.parametrize(
    ("prefix", "files", "match"),
    [
        ("jsonl:", {"validation.jsonl": _TWO, "test.jsonl": _TWO}, "but no train"),
        ("jsonl:", {"train.jsonl": _TWO, "test.jsonl": _TWO + '{"text": "c",\n'}, "line 3"),
        ("csv:", {"train.csv": "text,label\na,0\nb,1\n", "test.csv": "text,y\na,0\n"}, "'label'"),
        ("csv:", {"train.jsonl": _TWO}, "no split files"),
    ],
    ids=["no-train", "malformed", "no-label", "other-kind"],
)
def test_a_bad_folder_named_by_prefix_gets_the_same_errors(
    tmp_path: Path, prefix: str, files: dict[str, str], match: str
) -> None:
    folder = _bad_folder(tmp_path, files)
    with pytest.raises(TaskError, match=match) as caught:
        make_task(prefix + str(folder))
    assert str(folder) in str(caught.value)


def test_a_missing_file_or_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match="no_such is no such file or folder"):
        make_task(f"jsonl:{tmp_path / 'no_such'}")


def test_the_memo_refreshes_when_a_split_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _write_folder(tmp_path / "mine", {"train": 20, "test": 10})
    register_task("mine", folder)
    first = make_task("mine")
    assert make_task("mine") is first
    _write_folder(folder, {"test": 14})  # edited
    assert make_task("mine").sizes() == {"train": 18, "validation": 2, "test": 14}
    _write_folder(folder, {"validation": 6})  # added
    assert make_task("mine").sizes() == {"train": 20, "validation": 6, "test": 14}
    (folder / "validation.jsonl").unlink()  # removed: carved again
    assert make_task("mine").sizes() == {"train": 18, "validation": 2, "test": 14}
    monkeypatch.setenv("MNMS_DATA_DIR", str(tmp_path))  # a named dataset's folder alike
    for rows in (40, 60):
        _write_folder(tmp_path / "cr", {"all": rows})
        assert sum(make_task("cr").sizes().values()) == rows


def test_an_env_episode_trains_a_child_on_a_registered_folder(tmp_path: Path) -> None:
    words = ("awful dull bad", "great fine good")
    folder = tmp_path / "reviews"
    folder.mkdir()
    for split in SPLITS:
        rows = [{"text": f"{words[i % 2]} {split} {i}", "label": i % 2} for i in range(60)]
        _write_jsonl(folder / f"{split}.jsonl", rows)
    register_task("folder-reviews", folder)
    env = gym.make("mnms_env:MNMS-v2", task="folder-reviews", space=SMALL, store=None)
    _, info = env.reset(seed=0)
    done = False
    while not done:
        _, reward, done, _, info = env.step(int(np.flatnonzero(info["action_mask"])[0]))
    assert env.unwrapped.task.sizes() == {"train": 60, "validation": 60, "test": 60}
    child = info["child"]
    assert 0 <= reward <= 1 and reward == child["val_accuracy"]
    assert child["task"] == "folder-reviews" and not child["cached"] and child["seconds"] > 0
