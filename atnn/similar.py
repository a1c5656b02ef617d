"""Nearest warm items of each ranked new arrival, in the generator's vector space (table `similar_items`).

A merchandiser reads why a new item is expected to be popular from the known items it resembles:
both vectors come from the same exported generator, applied to profiles only, and the warm items'
first-window statistics (in `item_stats`) say how those neighbours actually did.
"""

from __future__ import annotations

import weakref
from datetime import date, datetime, timezone

import numpy as np
import pandas as pd
from sklearn.neighbors import NearestNeighbors

from atnn.scoring import OnnxScorer, day_bounds
from atnn.spec import DatasetSpec
from atnn.warehouse import ensure_schema, session

NEIGHBOURS = 5

# Generated vectors of every item, per scorer and warehouse: a backfill that keeps one scorer pays once.
_VECTORS: "weakref.WeakKeyDictionary[OnnxScorer, dict[str, tuple[pd.DataFrame, np.ndarray]]]" = weakref.WeakKeyDictionary()


def item_vectors(db, spec: DatasetSpec, scorer: OnnxScorer) -> tuple[pd.DataFrame, np.ndarray]:
    """(item_id, listed_at, title) of every usable item profile, and its generated vector (unit length)."""
    cache = _VECTORS.setdefault(scorer, {})
    key = str(db)
    with session(db, read_only=True) as con:
        count = con.execute("SELECT count(*), max(listed_at) FROM items").fetchall()[0]
        if key in cache and cache[key][0].attrs.get("count") == count:
            return cache[key]
        items = con.execute("SELECT * FROM items ORDER BY item_id").df()
    scored, _ = scorer.score(items)
    vectors = np.stack(scored["item_vector"].to_numpy()) if len(scored) else np.zeros((0, 1), np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = vectors / np.where(norms > 0, norms, 1.0)
    title = scored[spec.title_field].astype("string") if spec.title_field in scored else pd.Series(pd.NA, index=scored.index)
    meta = pd.DataFrame({"item_id": scored["item_id"], "listed_at": pd.to_datetime(scored["listed_at"], utc=True).dt.tz_localize(None), "title": title})
    meta.attrs["count"] = count
    cache[key] = (meta, vectors)
    return meta, vectors


def nearest_warm_items(
    db, spec: DatasetSpec, scorer: OnnxScorer, ds: date, scored: pd.DataFrame, k: int = NEIGHBOURS
) -> pd.DataFrame:
    """For each scored item of `ds`, its `k` nearest warm items by cosine similarity of generated vectors.

    Warm: the item's statistics window had closed when `ds` began, so its early popularity is known.
    """
    columns = ["item_id", "neighbor_rank", "similar_item_id", "similar_title", "similarity"]
    if not len(scored):
        return pd.DataFrame(columns=columns)
    meta, vectors = item_vectors(db, spec, scorer)
    start, _ = day_bounds(ds)
    warm = (meta["listed_at"] + pd.Timedelta(days=spec.stats_window_days) <= start).to_numpy()
    if not warm.any():
        return pd.DataFrame(columns=columns)
    queries = np.stack(scored["item_vector"].to_numpy())
    queries = queries / np.where((n := np.linalg.norm(queries, axis=1, keepdims=True)) > 0, n, 1.0)
    neighbours = NearestNeighbors(n_neighbors=min(k, int(warm.sum())), metric="cosine", algorithm="brute")
    neighbours.fit(vectors[warm])
    distance, index = neighbours.kneighbors(queries)
    warm_meta = meta[warm].reset_index(drop=True)
    n_items, n_found = index.shape
    picked = warm_meta.iloc[index.ravel()]
    return pd.DataFrame(
        {
            "item_id": np.repeat(scored["item_id"].to_numpy(), n_found),
            "neighbor_rank": np.tile(np.arange(1, n_found + 1, dtype=np.int32), n_items),
            "similar_item_id": picked["item_id"].to_numpy(),
            "similar_title": picked["title"].to_numpy(),
            "similarity": 1.0 - distance.ravel(),
        }
    )


def write_similar_items(db, spec: DatasetSpec, scorer: OnnxScorer, ds: date, scored: pd.DataFrame) -> int:
    """Replace the day's rows of `similar_items` in one short transaction (after its rankings are written)."""
    rows = nearest_warm_items(db, spec, scorer, ds, scored).assign(
        ds=ds, model_version=scorer.version, computed_at=datetime.now(timezone.utc).replace(tzinfo=None)
    )
    with session(db) as con:
        ensure_schema(con, spec)
        con.register("new_similar", rows)
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute("DELETE FROM similar_items WHERE ds = ?", [ds])
            con.execute(
                """INSERT INTO similar_items (ds, item_id, neighbor_rank, similar_item_id, similar_title, similarity,
                                              model_version, computed_at)
                   SELECT ds, item_id, neighbor_rank, similar_item_id, similar_title, similarity, model_version, computed_at
                   FROM new_similar"""
            )
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
    return len(rows)
