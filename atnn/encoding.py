"""Feature encoding: profile columns -> integer ids and scaled numbers, per the spec.

Vocabularies are fitted on training rows only (no leakage from new arrivals). Index 0 is padding and
index 1 the out-of-vocabulary bucket, so an unseen category at ranking time is encoded, not an error.
A numeric feature becomes two floats: the standardized value (0 when missing) and a missing flag.
A text feature with a spec `embedding` also becomes a second, fitted-only feature "<name>_embedding"
(kind `text_embedding`): the text's pretrained sentence embedding (atnn.text), read from the same column.
The fitted state is plain JSON, saved beside every model and embedded in ONNX metadata.
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from atnn.spec import DatasetSpec, FeatureSpec
from atnn.text import MODELS as TEXT_MODELS
from atnn.text import embed as embed_text

PAD, OOV = 0, 1
TOKEN = re.compile(r"[a-z0-9]+")
# Count-like statistics are log-scaled before standardization.
# Standardized numbers are clipped to +-Z_CLIP: an absurd value (a price of 1e39) must not become inf.
Z_CLIP = 10.0
LOG_STATS = {"pv", "uv", "positives", "n_click", "n_cart", "n_fav", "n_buy"}


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens of a title: the same rule at training and ranking time."""
    return TOKEN.findall(text.lower())


@dataclass
class FittedFeature:
    """The fitted state of one feature."""

    name: str
    side: str
    kind: str
    vocab: list[str] = field(default_factory=list)  # index i + 2 is vocab[i]
    hash_buckets: int = 0
    max_len: int = 1
    separator: str = "|"
    log: bool = False
    mean: float = 0.0
    std: float = 1.0
    buckets: list[float] = field(default_factory=list)
    source: str = ""  # the column read, when it is not `name` (text_embedding)
    embedding: str = ""  # text_embedding: the model (atnn.text.MODELS)
    dim: int = 0  # text_embedding: its width

    @property
    def column(self) -> str:
        return self.source or self.name

    @property
    def cardinality(self) -> int:
        """Rows of this feature's embedding table (padding and OOV included)."""
        if self.is_dense:
            return 0
        if self.kind == "numeric":
            return len(self.buckets) + 3
        if self.hash_buckets:
            return self.hash_buckets + 2
        return len(self.vocab) + 2

    @property
    def is_sequence(self) -> bool:
        return self.kind in ("multi_categorical", "text_tokens")

    @property
    def is_dense(self) -> bool:
        return (self.kind == "numeric" and not self.buckets) or self.kind == "text_embedding"

    @property
    def width(self) -> int:
        """Floats per row of a dense input: value and missing flag, or the embedding's size."""
        return self.dim if self.kind == "text_embedding" else 2

    def input_shape(self) -> tuple[str, ...]:
        """Shape of the model input for this feature, batch dimension first."""
        if self.is_dense:
            return ("batch", str(self.width))
        if self.is_sequence:
            return ("batch", str(self.max_len))
        return ("batch",)

    def input_dtype(self) -> str:
        return "float32" if self.is_dense else "int64"


def _values(series: pd.Series, feature: FittedFeature | FeatureSpec) -> pd.Series:
    """Each row's list of raw tokens for a sequence feature."""
    text = series.fillna("").astype(str)
    if feature.kind == "text_tokens":
        return text.str.lower().str.findall(TOKEN.pattern)
    return text.map(lambda v: [t.strip() for t in v.split(feature.separator) if t.strip()])


def _text_arrow(column: pd.Series) -> pa.Array | None:
    """The column as an Arrow string array (nulls kept), or None when it does not hold text only.

    The vectorized encoders below run on it; anything else (numbers, mixed types) takes the pandas
    path, whose string formatting of numbers Arrow's cast would not reproduce.
    """
    try:
        array = pa.array(column, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        return None
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_null(array.type):
        return pa.nulls(len(array), pa.string())
    if pa.types.is_large_string(array.type) or pa.types.is_string_view(array.type):
        array = array.cast(pa.string())
    return array if pa.types.is_string(array.type) else None


def _crc32_ids(values: pa.Array, buckets: int) -> np.ndarray:
    """zlib.crc32(value) % buckets + 2 per value, OOV for null or empty; crc32 runs once per distinct value."""
    encoded = pc.dictionary_encode(values).combine_chunks() if isinstance(values, pa.ChunkedArray) else pc.dictionary_encode(values)
    distinct = encoded.dictionary.to_pylist()
    table = np.array([zlib.crc32(v.encode()) % buckets + 2 if v else OOV for v in distinct] + [OOV], dtype=np.int64)
    index = encoded.indices.fill_null(len(distinct)).to_numpy(zero_copy_only=False)
    return table[index]


def _vocab_ids(values: pa.Array, vocab: pa.Array) -> np.ndarray:
    """vocab index + 2 per value, OOV for null or unknown values."""
    index = pc.index_in(values, value_set=vocab)
    return (pc.add(index, 2).fill_null(OOV)).to_numpy(zero_copy_only=False).astype(np.int64)


def _fit_feature(spec: FeatureSpec, column: pd.Series) -> FittedFeature:
    fitted = FittedFeature(
        name=spec.name, side=spec.side, kind=spec.kind, hash_buckets=spec.hash_buckets,
        max_len=spec.max_len if spec.is_sequence else 1, separator=spec.separator, log=spec.log,
        buckets=list(spec.buckets),
    )
    if spec.kind == "numeric":
        values = pd.to_numeric(column, errors="coerce").astype(float)
        if spec.log:
            values = np.log1p(values.clip(lower=0))
        finite = values[np.isfinite(values)]
        fitted.mean = float(finite.mean()) if len(finite) else 0.0
        fitted.std = float(finite.std()) if len(finite) > 1 and finite.std() > 1e-9 else 1.0
        return fitted
    if spec.hash_buckets:
        return fitted
    tokens = _values(column, spec).explode() if spec.is_sequence else column.dropna().astype(str).str.strip()
    counts = tokens[tokens.notna() & (tokens != "")].value_counts()
    counts = counts[counts >= spec.min_count]
    # Most frequent first, ties by name: deterministic for the same data.
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: spec.max_vocab]
    fitted.vocab = [k for k, _ in ordered]
    return fitted


class FeatureEncoder:
    """Encodes item and user profiles and item statistics into model inputs."""

    def __init__(self, features: list[FittedFeature], stats: list[str], stats_mean: list[float], stats_std: list[float]):
        self.features = features
        self.stats = stats
        self.stats_mean = np.asarray(stats_mean, dtype=np.float64)
        self.stats_std = np.asarray(stats_std, dtype=np.float64)
        self._index = {f.name: {t: i + 2 for i, t in enumerate(f.vocab)} for f in features}
        self._vocab_arrow = {f.name: pa.array(f.vocab, pa.string()) for f in features}

    # ---- construction
    @classmethod
    def fit(cls, spec: DatasetSpec, items: pd.DataFrame, users: pd.DataFrame, stats: pd.DataFrame | None = None) -> "FeatureEncoder":
        """Fit on training items (one row per item), users (one row per user) and their statistics."""
        features = [_fit_feature(f, items[f.name]) for f in spec.item_inputs]
        features += [_fit_feature(f, users[f.name]) for f in spec.user_inputs]
        features += [
            FittedFeature(name=f.embedding_input, side=f.side, kind="text_embedding", source=f.name,
                          embedding=f.embedding, dim=TEXT_MODELS[f.embedding].dim)
            for f in (*spec.item_inputs, *spec.user_inputs) if f.embedding
        ]
        names = list(spec.stats)
        if stats is not None and len(stats):
            matrix = cls._stats_raw(stats, names)
            mean = np.nanmean(matrix, axis=0)
            std = np.nanstd(matrix, axis=0)
            mean = np.where(np.isfinite(mean), mean, 0.0)
            std = np.where(np.isfinite(std) & (std > 1e-9), std, 1.0)
        else:
            mean, std = np.zeros(len(names)), np.ones(len(names))
        return cls(features, names, list(mean), list(std))

    @staticmethod
    def _stats_raw(stats: pd.DataFrame, names: list[str]) -> np.ndarray:
        matrix = np.column_stack([pd.to_numeric(stats[n], errors="coerce").to_numpy(dtype=np.float64) for n in names]) if names else np.zeros((len(stats), 0))
        for j, n in enumerate(names):
            if n in LOG_STATS:
                matrix[:, j] = np.log1p(np.clip(matrix[:, j], 0, None))
        return matrix

    # ---- serialization
    def to_dict(self) -> dict[str, Any]:
        return {
            "features": [asdict(f) for f in self.features],
            "stats": self.stats,
            "stats_mean": [float(x) for x in self.stats_mean],
            "stats_std": [float(x) for x in self.stats_std],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FeatureEncoder":
        return cls([FittedFeature(**f) for f in data["features"]], data["stats"], data["stats_mean"], data["stats_std"])

    def vocab_hash(self) -> str:
        """A short hash of the fitted state: two encoders with equal hashes encode identically."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    # ---- queries
    def side(self, side: str) -> list[FittedFeature]:
        return [f for f in self.features if f.side == side]

    # ---- encoding
    def _encode_scalar(self, f: FittedFeature, column: pd.Series) -> np.ndarray:
        if f.kind == "numeric":  # bucketized numeric
            values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
            out = np.digitize(values, f.buckets) + 2
            return np.where(np.isfinite(values), out, OOV).astype(np.int64)
        text = _text_arrow(column)
        if text is not None:  # vectorized (Arrow): the same ids as the pandas path below
            text = pc.utf8_trim_whitespace(text)
            return _crc32_ids(text, f.hash_buckets) if f.hash_buckets else _vocab_ids(text, self._vocab_arrow[f.name])
        text = column.astype("string").str.strip()
        if f.hash_buckets:
            ids = text.fillna("").map(lambda v: zlib.crc32(v.encode()) % f.hash_buckets + 2 if v else OOV)
            return ids.to_numpy(dtype=np.int64)
        return text.map(self._index[f.name]).fillna(OOV).to_numpy(dtype=np.int64)

    def _encode_sequence(self, f: FittedFeature, column: pd.Series) -> np.ndarray:
        n = len(column)
        out = np.zeros((n, f.max_len), dtype=np.int64)
        text = _text_arrow(column)
        if text is not None:
            return self._encode_sequence_arrow(f, text, out)
        exploded = _values(column.reset_index(drop=True), f).explode().dropna()
        if exploded.empty:
            return out
        position = exploded.groupby(level=0).cumcount().to_numpy()
        keep = position < f.max_len
        rows = exploded.index.to_numpy()[keep]
        tokens = exploded[keep]
        if f.hash_buckets:
            ids = tokens.map(lambda v: zlib.crc32(v.encode()) % f.hash_buckets + 2).to_numpy(dtype=np.int64)
        else:
            ids = tokens.map(self._index[f.name]).fillna(OOV).to_numpy(dtype=np.int64)
        out[rows, position[keep]] = ids
        return out

    def _encode_sequence_arrow(self, f: FittedFeature, text: pa.Array, out: np.ndarray) -> np.ndarray:
        """Vectorized `_encode_sequence` (Arrow): split, drop empty tokens, keep the first max_len."""
        text = text.fill_null("")
        if f.kind == "text_tokens":
            # Words are runs of [a-z0-9]: turn every other run into one space, then split on spaces
            # (the regex runs only on the rows that need it; most titles are words and spaces).
            lower = pc.utf8_lower(text)
            other = pc.invert(pc.match_substring_regex(lower, r"^[a-z0-9 ]*$"))
            if pc.any(other).as_py():
                fixed = pc.replace_substring_regex(lower.filter(other), r"[^a-z0-9]+", " ")
                lower = pc.replace_with_mask(lower, other, fixed)
            lists = pc.split_pattern(lower, " ")
        else:
            lists = pc.split_pattern(text, f.separator)
        parents = pc.list_parent_indices(lists).to_numpy()
        tokens = pc.list_flatten(lists)
        if f.kind != "text_tokens":
            tokens = pc.utf8_trim_whitespace(tokens)
        nonempty = pc.greater(pc.binary_length(tokens), 0).to_numpy(zero_copy_only=False)
        if not nonempty.all():
            parents = parents[nonempty]
            tokens = tokens.filter(pa.array(nonempty))
        # parents is sorted: a token's position is its offset from its row's first kept token.
        starts = np.flatnonzero(np.r_[True, parents[1:] != parents[:-1]]) if len(parents) else np.zeros(0, np.int64)
        position = np.arange(len(parents)) - np.repeat(starts, np.diff(np.r_[starts, len(parents)]))
        keep = position < f.max_len
        tokens = tokens.filter(pa.array(keep))
        ids = _crc32_ids(tokens, f.hash_buckets) if f.hash_buckets else _vocab_ids(tokens, self._vocab_arrow[f.name])
        out[parents[keep], position[keep]] = ids
        return out

    def _encode_dense(self, f: FittedFeature, column: pd.Series) -> np.ndarray:
        values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
        if f.log:
            values = np.log1p(np.clip(values, 0, None))
        missing = ~np.isfinite(values)
        scaled = np.where(missing, 0.0, np.clip((values - f.mean) / f.std, -Z_CLIP, Z_CLIP))
        return np.column_stack([scaled, missing.astype(np.float64)]).astype(np.float32)

    def encode(self, frame: pd.DataFrame, side: str) -> dict[str, np.ndarray]:
        """Model inputs for one side ('item' or 'user'), one row per row of `frame`."""
        out: dict[str, np.ndarray] = {}
        for f in self.side(side):
            if f.column not in frame.columns:
                raise KeyError(f"column {f.column!r} ({side} feature) is missing from the input frame")
            column = frame[f.column].reset_index(drop=True)
            if f.kind == "text_embedding":
                out[f.name] = embed_text(column, f.embedding)
            elif f.is_dense:
                out[f.name] = self._encode_dense(f, column)
            elif f.is_sequence:
                out[f.name] = self._encode_sequence(f, column)
            else:
                out[f.name] = self._encode_scalar(f, column)
        return out

    def encode_stats(self, stats: pd.DataFrame) -> np.ndarray:
        """Standardized statistics, missing values at the mean (0)."""
        matrix = (self._stats_raw(stats, self.stats) - self.stats_mean) / self.stats_std
        return np.clip(np.nan_to_num(matrix, nan=0.0), -Z_CLIP, Z_CLIP).astype(np.float32)

    def usable(self, frame: pd.DataFrame) -> pd.Series:
        """Rows with at least one known item profile value; the others are skipped at ranking time."""
        known = pd.Series(False, index=frame.index)
        for f in self.side("item"):
            if f.kind == "text_embedding":  # its column is also a token feature's
                continue
            column = frame[f.name]
            text = _text_arrow(column) if f.kind != "numeric" else None
            if f.kind == "numeric":
                known |= pd.to_numeric(column, errors="coerce").notna()
            elif text is not None:  # vectorized: a non-null value that is not blank
                blank = pc.equal(pc.utf8_trim_whitespace(text), "").fill_null(True)
                known |= ~blank.to_numpy(zero_copy_only=False)
            else:
                known |= column.notna() & (column.astype("string").str.strip() != "")
        return known
