"""Test defaults: real data from ../shared/data, caches and stores in a per-session temp dir."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from mnms_env.tasks import Task
from mnms_env.tasks.base import task_from_arrays

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (ROOT / ".." / "shared" / "data").resolve()

os.environ.setdefault("MNMS_DATA_DIR", str(SHARED_DATA))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Features and the default results store go to a fresh directory, never to ~/.cache."""
    os.environ["MNMS_CACHE_DIR"] = str(tmp_path_factory.mktemp("mnms-cache"))


@pytest.fixture(scope="session")
def phrases() -> Task:
    """Short reviews whose words recur across splits, so a text CNN can learn them (the
    built-in text tasks are single words, each in one split only: all unknown to a vocabulary
    of the training words)."""
    rng = np.random.default_rng(0)
    good, bad = ["good", "great", "fine", "superb"], ["bad", "awful", "dull", "poor"]
    filler = ["the", "movie", "was", "plot", "truly", "a", "film"]
    texts, labels = [], []
    for i in range(240):
        label = i % 2
        words = list(rng.choice(filler, size=4)) + [str(rng.choice(good if label else bad))]
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(label)
    return task_from_arrays("phrases", "text", np.array(texts, dtype=object), labels, seed=0)
