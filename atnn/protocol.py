"""The evaluation protocol of ../shared/PROTOCOL.md: splits, leakage-free frames, ground truth.

Frames here are built with DuckDB SQL straight from the canonical tables; the flows build the same
rows through Feast (a test checks both agree).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from atnn.canonical import item_stats_sql
from atnn.spec import DatasetSpec
from atnn.warehouse import session


@dataclass
class Tables:
    """The canonical tables of one dataset, in memory."""

    items: pd.DataFrame
    users: pd.DataFrame
    events: pd.DataFrame

    @classmethod
    def load(cls, db: Path) -> "Tables":
        with session(db, read_only=True) as con:
            return cls(
                items=con.execute("SELECT * FROM items ORDER BY item_id").df(),
                users=con.execute("SELECT * FROM users ORDER BY user_id").df(),
                events=con.execute("SELECT * FROM events ORDER BY ts, user_id, item_id").df(),
            )


@dataclass
class Split:
    """Item ids of the warm (train), validation and test (new-arrival) sets, and the cut-off."""

    name: str
    seed: int
    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    # Temporal split: nothing at or after this time is used for training, vocabularies or statistics.
    cutoff: pd.Timestamp | None = None


def random_item_split(items: pd.DataFrame, seed: int, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> Split:
    """Items split 80/10/10 at random with a fixed seed (the usual cold-start protocol)."""
    ids = np.sort(items["item_id"].to_numpy())
    order = np.random.default_rng(seed).permutation(len(ids))
    n_train = int(round(fractions[0] * len(ids)))
    n_val = int(round(fractions[1] * len(ids)))
    return Split(
        name="random-item",
        seed=seed,
        train=np.sort(ids[order[:n_train]]),
        validation=np.sort(ids[order[n_train : n_train + n_val]]),
        test=np.sort(ids[order[n_train + n_val :]]),
    )


def temporal_split(items: pd.DataFrame, seed: int = 0) -> Split:
    """Order by listed_at: the newest 20% are new arrivals, the 10% before them validation.

    The split itself does not depend on the seed (only model training does).
    """
    ordered = items.sort_values(["listed_at", "item_id"], kind="stable")
    n = len(ordered)
    n_test = int(round(0.2 * n))
    n_val = int(round(0.1 * n))
    ids = ordered["item_id"].to_numpy()
    test = ids[n - n_test :]
    cutoff = pd.Timestamp(ordered["listed_at"].iloc[n - n_test])
    # Items listed at exactly the cut-off belong to the test side.
    listed = ordered["listed_at"].to_numpy()
    test_mask = listed >= cutoff.to_datetime64()
    test = ids[test_mask]
    before = ids[~test_mask]
    return Split(
        name="temporal",
        seed=seed,
        train=np.sort(before[: len(before) - n_val]),
        validation=np.sort(before[len(before) - n_val :]),
        test=np.sort(test),
        cutoff=cutoff,
    )


def make_split(name: str, items: pd.DataFrame, seed: int) -> Split:
    if name == "random-item":
        return random_item_split(items, seed)
    if name == "temporal":
        return temporal_split(items, seed)
    raise ValueError(f"unknown split {name!r}; use 'random-item' or 'temporal'")


def smoothed_rate(positives, events, warm_rate: float, prior_events: float):
    """Positive rate smoothed toward `warm_rate` with `prior_events` pseudo-events (the protocol's truth)."""
    return (positives + prior_events * warm_rate) / (events + prior_events)


def item_stats(tables: Tables, spec: DatasetSpec, prior_events: float, cutoff: pd.Timestamp | None = None) -> pd.DataFrame:
    """First-window statistics per item, from events before `cutoff` only (when given)."""
    con = duckdb.connect()
    try:
        events = tables.events if cutoff is None else tables.events[tables.events["ts"] < cutoff]
        con.register("items", tables.items)
        con.register("events", events)
        return con.execute(item_stats_sql(spec, prior_events)).df()
    finally:
        con.close()


def event_frame(
    tables: Tables,
    spec: DatasetSpec,
    item_ids: np.ndarray,
    stats: pd.DataFrame,
    before: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Event rows of these items (before `before` when given) with item profile, stats and user profile."""
    events = tables.events[tables.events["item_id"].isin(item_ids)]
    if before is not None:
        events = events[events["ts"] < before]
    item_cols = ["item_id", *[f.name for f in spec.item_features]]
    user_cols = list(dict.fromkeys(["user_id", *[f.name for f in spec.user_features]]))
    frame = (
        events[["user_id", "item_id", "ts", "label"]]
        .merge(tables.items[item_cols], on="item_id", how="left")
        .merge(stats[["item_id", *spec.stats]], on="item_id", how="left")
        .merge(tables.users[user_cols], on="user_id", how="left")
    )
    return frame.reset_index(drop=True)


def popularity_truth(
    tables: Tables, item_ids: np.ndarray, warm_rate: float, prior_events: float = 10.0, min_events: int = 5,
    before: pd.Timestamp | None = None, after: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Realized popularity of items with at least `min_events` events: smoothed positive rate and volume.

    The positive rate is smoothed toward `warm_rate` (the warm items' mean) with `prior_events`.
    """
    events = tables.events[tables.events["item_id"].isin(item_ids)]
    if before is not None:
        events = events[events["ts"] < before]
    if after is not None:
        events = events[events["ts"] >= after]
    grouped = events.groupby("item_id")["label"].agg(["count", "sum"]).reset_index()
    grouped = grouped[grouped["count"] >= min_events]
    grouped["ctr"] = smoothed_rate(grouped["sum"], grouped["count"], warm_rate, prior_events)
    return grouped.rename(columns={"count": "volume", "sum": "positives"})[["item_id", "volume", "positives", "ctr"]]
