"""Where mnms-env keeps per-user files: feature caches and the default results store."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """`$MNMS_CACHE_DIR`, else `$XDG_CACHE_HOME/mnms_env`, else `~/.cache/mnms_env`."""
    if explicit := os.environ.get("MNMS_CACHE_DIR"):
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "mnms_env"
