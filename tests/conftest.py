"""Test defaults: real data from ../shared/data, caches and stores in a per-session temp dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (ROOT / ".." / "shared" / "data").resolve()

os.environ.setdefault("MNMS_DATA_DIR", str(SHARED_DATA))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Features and the default results store go to a fresh directory, never to ~/.cache."""
    os.environ["MNMS_CACHE_DIR"] = str(tmp_path_factory.mktemp("mnms-cache"))
