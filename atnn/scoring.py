"""Scoring new arrivals with the exported ONNX model, and writing a ranked day to DuckDB."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from atnn.encoding import FeatureEncoder
from atnn.spec import DatasetSpec
from atnn.warehouse import ensure_schema, session


ARROW_STRING = pd.ArrowDtype(pa.string())


class SchemaMismatch(ValueError):
    """The model was trained on another feature schema than the one in use now."""


@dataclass
class Ranked:
    """One day's ranking: scored items in rank order, and the items skipped with their reason."""

    ds: date
    model_version: str
    ranked: pd.DataFrame
    skipped: pd.DataFrame
    # Per user segment (ds is added on write): segment, item_id, score, rank; None when the model has none.
    by_segment: pd.DataFrame | None = None


class OnnxScorer:
    """The exported generator + popularity head, with the vocabulary it was trained with."""

    def __init__(self, model_dir: Path, *, threads: int = 0):
        import onnxruntime as ort

        self.model_dir = Path(model_dir)
        metadata_path = self.model_dir / "metadata.json"
        if not metadata_path.is_file():
            raise FileNotFoundError(f"{metadata_path}: no exported model here; run `atnn train` first")
        self.metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
        self.encoder = FeatureEncoder.from_dict(self.metadata["vocab"])
        self.input_names = [i["name"] for i in self.metadata["inputs"]]
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(self.model_dir / "model.onnx"), options, providers=["CPUExecutionProvider"])

    @property
    def version(self) -> str:
        return self.metadata["version"]

    def check_compatible(self, spec: DatasetSpec) -> None:
        """Stop with both versions named when the model's feature schema is not the current one."""
        current = spec.schema_hash()
        trained = self.metadata["spec_hash"]
        if current != trained:
            raise SchemaMismatch(
                f"model {self.metadata['model_name']} {self.version} was trained on feature schema {trained}, "
                f"but spec {spec.name!r} now has schema {current} ({self.schema_difference(spec)}); "
                "retrain (atnn train) before ranking"
            )

    def schema_difference(self, spec: DatasetSpec) -> str:
        """Which model inputs the spec adds, drops or changes the kind of, in words."""
        trained = {f.name: f.kind for f in self.encoder.features}
        now = {f.name: f.kind for f in (*spec.item_inputs, *spec.user_inputs)}
        now |= {f.embedding_input: "text_embedding" for f in (*spec.item_inputs, *spec.user_inputs) if f.embedding}
        parts = []
        if added := sorted(set(now) - set(trained)):
            parts.append(f"new inputs {added}")
        if dropped := sorted(set(trained) - set(now)):
            parts.append(f"inputs no longer in the spec {dropped}")
        if changed := sorted(n for n in set(now) & set(trained) if now[n] != trained[n]):
            parts.append("changed kind: " + ", ".join(f"{n} {trained[n]} -> {now[n]}" for n in changed))
        return "; ".join(parts) or "the same inputs; an option of one of them, or the statistics, changed"

    def run(self, inputs: dict[str, np.ndarray], batch_size: int = 65536) -> tuple[np.ndarray, np.ndarray]:
        """Item vectors and popularity for encoded inputs, in batches."""
        n = len(next(iter(inputs.values()))) if inputs else 0
        vectors, scores = [], []
        for start in range(0, n, batch_size):
            feed = {name: inputs[name][start : start + batch_size] for name in self.input_names}
            vector, popularity = self.session.run(None, feed)
            vectors.append(vector)
            scores.append(popularity)
        if not scores:
            dim = self.metadata["outputs"][0]["shape"][1]
            return np.zeros((0, dim), np.float32), np.zeros(0, np.float32)
        return np.concatenate(vectors), np.concatenate(scores)

    def needs_vectors(self, neighbours: bool) -> bool:
        """Whether ranking needs the item vectors: for similar_items or segment rankings."""
        return neighbours or bool((self.metadata.get("segments") or {}).get("names"))

    def score(self, profiles: pd.DataFrame, batch_size: int = 65536, *, keep_vectors: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Popularity of each item with a usable profile; the others are returned as skipped with a reason.

        `keep_vectors`: add the generated vectors as column `item_vector` (for similar items and
        segment rankings); a million of them cost a Python object each, so callers that need
        neither say False.
        """
        usable = self.encoder.usable(profiles)
        skipped = profiles.loc[~usable, ["item_id"]].assign(reason="no usable profile: every item profile field is missing")
        good = profiles if usable.all() else profiles.loc[usable].reset_index(drop=True)
        inputs = self.encoder.encode(good, "item")
        vectors, scores = self.run(inputs, batch_size)
        scored = good.assign(score=scores.astype(np.float64))
        if keep_vectors:
            scored["item_vector"] = list(vectors)
        return scored, skipped.reset_index(drop=True)


def rank_by_segment(metadata: dict, scored: pd.DataFrame) -> pd.DataFrame | None:
    """Popularity of each scored item for each user segment of the model (None when it has none).

    sigmoid(item_vector @ matrix[s] + offset[s]), with the segment head stored in metadata.json
    (see artifacts.segment_head): O(segments) per item, on the exported item vectors.
    """
    head = metadata.get("segments") or {}
    if not head.get("names"):
        return None
    columns = ["segment", "item_id", "score", "rank"]
    if not len(scored):
        return pd.DataFrame(columns=columns)
    vectors = np.stack(scored["item_vector"].to_numpy()).astype(np.float64)
    logits = vectors @ np.asarray(head["matrix"], dtype=np.float64).T + np.asarray(head["offset"], dtype=np.float64)
    scores = 1.0 / (1.0 + np.exp(-logits))
    frame = pd.DataFrame(
        {
            "segment": np.repeat(np.asarray(head["names"], dtype=object)[None, :], len(scored), 0).ravel(),
            "item_id": np.repeat(scored["item_id"].to_numpy(), len(head["names"])),
            "score": scores.ravel(),
        }
    )
    frame = frame.sort_values(["segment", "score", "item_id"], ascending=[True, False, True], kind="stable")
    frame["rank"] = frame.groupby("segment").cumcount().astype(np.int32) + 1
    return frame[columns].reset_index(drop=True)


def day_bounds(ds: date) -> tuple[datetime, datetime]:
    """[start, end) of a UTC calendar day."""
    start = datetime.combine(ds, time.min)
    return start, start + timedelta(days=1)


def new_arrivals(db: Path, ds: date) -> pd.DataFrame:
    """Items whose arrival falls on `ds` (UTC): id and listed_at."""
    start, end = day_bounds(ds)
    with session(db, read_only=True) as con:
        return con.execute(
            "SELECT item_id, listed_at FROM items WHERE listed_at >= ? AND listed_at < ? ORDER BY item_id",
            [start, end],
        ).df()


def rank_frame(scored: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """Rank by score (ties by item id), with the fields a user wants to see."""
    def text(field: str | None) -> pd.Series | Any:
        # A day with no new arrivals has no profile columns at all. Text stays Arrow-backed (no Python
        # object per value), which DuckDB then reads without conversion.
        if field not in scored:
            return pd.NA
        column = scored[field]
        return column if column.dtype == ARROW_STRING else column.astype("string").astype(ARROW_STRING)

    # Best score first, ties by item id.
    order = np.lexsort((scored["item_id"].to_numpy(), -scored["score"].to_numpy(dtype=np.float64)))
    out = pd.DataFrame(
        {
            "item_id": scored["item_id"],
            "score": scored["score"],
            "title": text(spec.title_field),
            "category": text(spec.category_field),
            "listed_at": pd.to_datetime(scored["listed_at"]).dt.tz_localize(None) if "listed_at" in scored else pd.NaT,
        }
    )
    out = out.take(order).reset_index(drop=True)
    out["rank"] = np.arange(1, len(out) + 1, dtype=np.int32)
    return out


def write_rankings(db: Path, result: Ranked, spec: DatasetSpec) -> int:
    """Replace the day's rankings, segment rankings and skipped items in one transaction; other days are untouched."""
    duplicated = result.ranked["item_id"].duplicated()
    if duplicated.any():  # the table has no key index (speed): refuse here instead
        raise ValueError(f"ranking of {result.ds} lists items more than once: {result.ranked.loc[duplicated, 'item_id'].head(5).tolist()}")
    ranked_at = datetime.now(timezone.utc).replace(tzinfo=None)
    rows = result.ranked.assign(ds=result.ds, model_version=result.model_version, ranked_at=ranked_at)
    skipped = result.skipped.assign(ds=result.ds, model_version=result.model_version, skipped_at=ranked_at)
    by_segment = None
    if result.by_segment is not None:
        by_segment = result.by_segment.assign(ds=result.ds, model_version=result.model_version, ranked_at=ranked_at)
    with session(db) as con:
        ensure_schema(con, spec)
        # An Arrow table: DuckDB scans it directly (a pandas frame of a million rows costs seconds).
        con.register("new_rows", pa.Table.from_pandas(rows, preserve_index=False))
        con.register("new_skipped", skipped)
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute("DELETE FROM rankings WHERE ds = ?", [result.ds])
            con.execute(
                """INSERT INTO rankings (ds, item_id, score, rank, model_version, title, category, listed_at, ranked_at)
                   SELECT ds, item_id, score, rank, model_version, title, category, listed_at, ranked_at FROM new_rows"""
            )
            # A day ranked again by a model without segments leaves no stale segment rows behind.
            con.execute("DELETE FROM rankings_by_segment WHERE ds = ?", [result.ds])
            if by_segment is not None and len(by_segment):
                con.register("new_segment_rows", by_segment)
                con.execute(
                    """INSERT INTO rankings_by_segment (ds, segment, item_id, score, rank, model_version, ranked_at)
                       SELECT ds, segment, item_id, score, rank, model_version, ranked_at FROM new_segment_rows"""
                )
            con.execute("DELETE FROM skipped_items WHERE ds = ?", [result.ds])
            con.execute(
                """INSERT INTO skipped_items (ds, item_id, reason, model_version, skipped_at)
                   SELECT ds, item_id, reason, model_version, skipped_at FROM new_skipped"""
            )
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
    return len(rows)
