import multiprocessing as mp
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from mnms_env import features
from mnms_env.records import ChildRequest, ChildResult
from mnms_env.space import ChildConfig
from mnms_env.store import ResultStore

RESULT = ChildResult(0.75, 0.7, 1.5, 1234, "cpu", False, 2)


def _request(width: int, seed: int = 0) -> ChildRequest:
    return ChildRequest("t", ChildConfig(width=width), seed, 1, fingerprint="fp")


def test_round_trip_and_identity(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "r.sqlite")
    request = _request(8)
    assert store.get(request) is None
    store.put(request, RESULT)
    assert store.get(request) == RESULT
    assert ResultStore(tmp_path / "r.sqlite").get(request) == RESULT  # a new handle sees it
    assert store.get(_request(8, seed=1)) is None and store.get(_request(16)) is None
    other_data = ChildRequest("t", ChildConfig(width=8), 0, 1, fingerprint="changed")
    assert store.get(other_data) is None
    (row,) = store.rows("t")
    assert row["val_accuracy"] == 0.75 and row["version"] and row["created"] > 0
    assert ChildConfig.from_json(row["config"]) == ChildConfig(width=8)


def test_first_result_wins(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "r.sqlite")
    request = _request(8)
    assert store.put(request, RESULT) == RESULT
    later = RESULT.__class__(0.1, 0.1, 1, 1, "cpu", True, 0)  # another process's training
    assert store.put(request, later) == RESULT  # told the first
    assert store.get(request) == RESULT and len(store) == 1


def _writer(path: str, offset: int, n: int) -> None:
    store = ResultStore(path)
    for width in range(offset, offset + n):
        store.put(_request(width), RESULT)


def test_two_processes_write_one_store(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.sqlite")
    ResultStore(path)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, 1 + i * 100, 100)) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(ResultStore(path)) == 200


def _opener(path: str, barrier) -> None:
    barrier.wait()
    ResultStore(path).put(_request(1), RESULT)


def test_processes_opening_a_new_store_at_once_all_open_it(tmp_path: Path) -> None:
    """Switching a new file to WAL answered "database is locked" at once, without the busy
    timeout, to a process racing another one's switch (a few trials in ten failed so)."""
    ctx = mp.get_context("fork")  # the processes start together: the race is at creation
    for trial in range(10):
        path, barrier = str(tmp_path / f"new-{trial}.sqlite"), ctx.Barrier(16)
        procs = [ctx.Process(target=_opener, args=(path, barrier)) for _ in range(16)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=60)
        assert [p.exitcode for p in procs] == [0] * 16
        assert len(ResultStore(path)) == 1


def test_a_result_trained_on_other_features_is_not_answered(tmp_path: Path, monkeypatch) -> None:
    """Bumping `FEATURES_VERSION` recomputed the features but the store kept answering with
    results trained on the old ones."""
    store = ResultStore(tmp_path / "s.sqlite")
    store.put(_request(1), RESULT)
    monkeypatch.setattr(features, "FEATURES_VERSION", features.FEATURES_VERSION + 1)
    assert store.get(_request(1)) is None
    monkeypatch.undo()
    assert store.get(_request(1)) == RESULT


def test_a_store_this_process_cannot_write_is_named_as_such(tmp_path: Path, monkeypatch) -> None:
    def readonly(self) -> None:  # what SQLite says of a store in a folder one may only read
        raise sqlite3.OperationalError("attempt to write a readonly database")

    monkeypatch.setattr(ResultStore, "_use_wal", readonly)
    with pytest.raises(ValueError, match="s.sqlite: this process cannot write it"):
        ResultStore(tmp_path / "s.sqlite")


def test_numpy_results_are_stored_as_plain_values_and_nan_is_refused(tmp_path: Path) -> None:
    """An evaluator's np.float32 accuracy once reached SQLite as raw bytes (and came back as
    the reward); a NaN one failed with a bare AssertionError."""
    result = ChildResult(np.float32(0.5), np.float64(0.25), 0.0, np.int64(10), "toy", False, 1)
    store = ResultStore(tmp_path / "r.sqlite")
    stored = store.put(_request(8), result)
    assert stored == result and type(stored.val_accuracy) is float
    assert type(stored.parameters) is int
    with pytest.raises(ValueError, match=r"val_accuracy is a fraction in \[0, 1\], got nan"):
        ChildResult(float("nan"), 0.5, 0.0, 1, "toy", True, 0)
    with pytest.raises(ValueError, match="parameters must be int, got float 1.5"):
        ChildResult(0.5, 0.5, 0.0, 1.5, "toy", False, 1)


def test_a_path_that_is_not_a_store_is_named(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a database " * 100)
    for path in (tmp_path, tmp_path / "notes.txt"):
        with pytest.raises(ValueError, match=f"results store {path}: cannot open"):
            ResultStore(path)
    with pytest.raises(ValueError, match=r"nope/results.sqlite \(the default store, in \$MNMS_"):
        with pytest.MonkeyPatch.context() as patch:  # a folder that cannot be made
            patch.setenv("MNMS_CACHE_DIR", str(tmp_path / "notes.txt" / "nope"))
            ResultStore()


def test_a_row_an_older_version_stored_as_bytes_is_trained_again(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "r.sqlite")
    request = _request(8)
    store.put(request, RESULT)
    with sqlite3.connect(store.path) as db:  # as np.float32 reached the store before
        db.execute("UPDATE children SET val_accuracy = ?", (np.float32(0.5).tobytes(),))
    assert store.get(request) is None  # a miss, not a crash on every later search
    assert store.put(request, RESULT) == RESULT and store.get(request) == RESULT and len(store) == 1
