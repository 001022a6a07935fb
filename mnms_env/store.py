"""The SQLite store of every trained child.

One row per (task data, config, seed, budget): a request already answered is never trained
again, in this process or any other sharing the file. SQLite's WAL journal and a busy timeout
let several processes read and write one store at once; `INSERT OR IGNORE` keeps the first
result when two processes happen to train the same child.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from mnms_env import features
from mnms_env.paths import cache_dir
from mnms_env.records import RESULT_FIELDS, ChildRequest, ChildResult

SCHEMA = """
CREATE TABLE IF NOT EXISTS children (
    key TEXT PRIMARY KEY,
    task TEXT NOT NULL,
    config TEXT NOT NULL,
    seed INTEGER NOT NULL,
    budget INTEGER NOT NULL,
    val_accuracy REAL NOT NULL,
    test_accuracy REAL NOT NULL,
    seconds REAL NOT NULL,
    parameters INTEGER NOT NULL,
    device TEXT NOT NULL,
    diverged INTEGER NOT NULL,
    best_epoch INTEGER NOT NULL,
    created REAL NOT NULL,
    version TEXT NOT NULL
)
"""


def package_version() -> str:
    try:
        return version("mnms-env")
    except PackageNotFoundError:
        return "unknown"


def default_store_path() -> Path:
    return cache_dir() / "results.sqlite"


class ResultStore:
    """A results store in the SQLite file at `path` (created on first use)."""

    def __init__(self, path: str | Path | None = None, *, timeout: float = 60.0) -> None:
        self.path = Path(path) if path is not None else default_store_path()
        self._timeout = timeout
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._use_wal()
            with self._connect() as db:
                db.execute(SCHEMA)
        except (
            FileExistsError,
            FileNotFoundError,  # a folder that cannot be made (`/proc/x`)
            NotADirectoryError,
            PermissionError,
            sqlite3.DatabaseError,
        ) as err:
            if isinstance(err, sqlite3.DatabaseError) and "readonly" in str(err):
                raise ValueError(  # SQLite writes beside even a store it only reads (WAL)
                    f"results store {self.path}: this process cannot write it ({err}); a "
                    "store needs a file and folder it may write: copy it to one, or pass "
                    "store=None"
                ) from err
            if isinstance(err, sqlite3.DatabaseError) and not any(
                words in str(err) for words in ("not a database", "unable to open")
            ):
                raise  # a locked or failing disk, not a wrong path
            default = (
                ""
                if path is not None
                else " (the default store, in $MNMS_CACHE_DIR)"
                if os.environ.get("MNMS_CACHE_DIR")
                else " (the default store; set MNMS_CACHE_DIR for another folder)"
            )
            raise ValueError(
                f"results store {self.path}{default}: cannot open it as an SQLite file ({err}); "
                "pass the path of a new or existing results store in a folder this process may "
                "write"
            ) from err

    def _use_wal(self) -> None:
        """Switch the file to WAL mode. SQLite answers "locked" at once, without its busy
        timeout, while another process is switching a new file too (several workers opening
        one store): retried until the timeout."""
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                with self._connect() as db:
                    db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection per call (cheap for SQLite, and safe across fork, threads and pickling),
        committed and closed on exit."""
        with closing(sqlite3.connect(self.path, timeout=self._timeout)) as db, db:
            yield db

    def __getstate__(self) -> dict:
        return {"path": self.path, "_timeout": self._timeout}

    @staticmethod
    def key(request: ChildRequest) -> str:
        """Identity of a request: the task's name and data, the config, seed and budget, and
        the featurizers' version (`features.FEATURES_VERSION`)."""
        text = (
            f"{request.task}|{request.fingerprint}|{request.config.to_json()}|{request.seed}|"
            f"{request.budget}"
        )
        if features.FEATURES_VERSION > 1:  # the featurizers' output changed: train anew (keys
            text += f"|features-v{features.FEATURES_VERSION}"  # of version 1 predate this)
        return hashlib.sha256(text.encode()).hexdigest()

    def get(self, request: ChildRequest) -> ChildResult | None:
        """The stored result of `request`, or None."""
        with self._connect() as db:
            return _read(db, self.key(request))

    def put(self, request: ChildRequest, result: ChildResult) -> ChildResult:
        """Record `result` for `request` unless a result is stored for it already (another
        process may have trained the same child meanwhile), and return the stored one: every
        process then reports the same reward for a request."""
        key = self.key(request)
        row = {
            "key": key,
            "task": request.task,
            "config": request.config.to_json(),
            "seed": request.seed,
            "budget": request.budget,
            **{name: getattr(result, name) for name in RESULT_FIELDS},
            "created": time.time(),
            "version": package_version(),
        }
        row["diverged"] = int(row["diverged"])
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")  # no other writer between the read and the insert
            if _read(db, key) is None:  # absent, or a row an older version stored unreadably
                db.execute("DELETE FROM children WHERE key = ?", (key,))
                db.execute(
                    f"INSERT INTO children ({columns}) VALUES ({marks})", tuple(row.values())
                )
            stored = _read(db, key)
        assert stored is not None  # just inserted, or inserted before
        return stored

    def __len__(self) -> int:
        with self._connect() as db:
            return db.execute("SELECT COUNT(*) FROM children").fetchone()[0]

    def rows(self, task: str | None = None) -> list[dict]:
        """Every stored child (optionally of one task) as a dict, oldest first."""
        query = "SELECT * FROM children" + (" WHERE task = ?" if task else "") + " ORDER BY created"
        with self._connect() as db:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute(query, (task,) if task else ())]


def _read(db: sqlite3.Connection, key: str) -> ChildResult | None:
    row = db.execute(
        f"SELECT {', '.join(RESULT_FIELDS)} FROM children WHERE key = ?", (key,)
    ).fetchone()
    if row is None:
        return None
    try:
        return ChildResult(**dict(zip(RESULT_FIELDS, row, strict=True)))
    except ValueError:  # numpy values an older version stored as bytes: trained again
        return None
