"""Scale paths: bulk-loading a large trusted canonical folder, streamed training, partitioned ranking.

- `load_bulk`: a canonical folder you trust (the SYNTHETIC one of `atnn synth`) straight into the
  warehouse with DuckDB SQL on the Parquet files, out of core; `atnn ingest` stays the way for
  untrusted files (row-level checks, quarantine), which a 50M-event log does not need to pass through.
- `train_streaming`: Algorithm 1 on an event log that need not fit in memory. The training events
  (point-in-time: before `as_of`, warm items only) are written once by DuckDB to a Parquet file,
  then streamed in chunks (`atnn.train.fit_stream`); profiles are encoded once per item and user.
- `partition_arrivals` / `score_partition`: the pieces the daily-rank flow maps over a Dask cluster.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from atnn import artifacts, registry
from atnn.canonical import item_stats_sql
from atnn.config import Settings
from atnn.encoding import FeatureEncoder
from atnn.metrics import auc
from atnn.pipeline import FeatureReader, TrainReport, score_arrivals, split_items
from atnn.scoring import OnnxScorer
from atnn.spec import DatasetSpec
from atnn.train import fit_stream, mean_user_vector_of, parquet_event_chunks, predict, profile_arrays, with_events
from atnn.warehouse import ensure_schema, export_parquet, session


def _files(folder: Path, name: str) -> list[str]:
    """The base file and every drop's file of one table (Parquet only: the scale path)."""
    base = [folder / f"{name}.parquet"] if (folder / f"{name}.parquet").is_file() else []
    return [str(p) for p in base + sorted(folder.glob(f"drops/*/{name}.parquet"))]


def load_bulk(settings: Settings, spec: DatasetSpec, folder: Path) -> dict[str, int]:
    """Load a trusted canonical Parquet folder (and its drops) into the warehouse, compute the item
    statistics, and export the Feast sources. Returns the row counts."""
    folder = Path(folder)
    settings.paths.home.mkdir(parents=True, exist_ok=True)
    item_cols = ", ".join(f'"{f.name}"' for f in spec.item_features)
    user_cols = ", ".join(f'"{f.name}"' for f in spec.user_features)
    items, events, users = _files(folder, "items"), _files(folder, "events"), _files(folder, "users")
    with session(settings.paths.db) as con:
        ensure_schema(con, spec)
        con.execute(f"CREATE OR REPLACE TABLE items AS SELECT item_id, listed_at::TIMESTAMP AS listed_at, {item_cols} FROM read_parquet({items}) ORDER BY item_id")
        con.execute(
            f"""CREATE OR REPLACE TABLE events AS SELECT user_id, item_id, ts::TIMESTAMP AS ts, kind, label::TINYINT AS label,
                   NULL::DOUBLE AS value FROM read_parquet({events})"""
        )
        con.execute(
            f"""CREATE OR REPLACE TABLE users AS
                SELECT u.user_id, COALESCE(f.first_ts, TIMESTAMP '1970-01-01 00:00:01') AS registered_at, {user_cols}
                FROM read_parquet({users}) u
                LEFT JOIN (SELECT user_id, min(ts) AS first_ts FROM events GROUP BY user_id) f USING (user_id)
                ORDER BY u.user_id"""
        )
        con.execute(f"CREATE OR REPLACE TABLE item_stats AS {item_stats_sql(spec, settings.train.prior_events)}")
        counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in ("items", "users", "events", "item_stats")}
    export_parquet(settings.paths.db, settings.paths.canonical_dir, spec)
    return counts


def export_training_events(settings: Settings, spec: DatasetSpec, as_of: datetime, out: Path, *, limit: int | None = None) -> int:
    """Write the training events as of `as_of` (events before it, of items whose statistics window
    has closed by then) to Parquet, in time order: DuckDB streams this, whatever the log's size."""
    out.parent.mkdir(parents=True, exist_ok=True)
    window = int(spec.stats_window_days)
    limit_sql = f"LIMIT {int(limit)}" if limit else ""
    with session(settings.paths.db, read_only=True) as con:
        con.execute(
            f"""COPY (SELECT e.item_id, e.user_id, e.label::FLOAT AS label FROM events e JOIN items i USING (item_id)
                      WHERE e.ts < ? AND i.listed_at + INTERVAL {window} DAY <= ?
                      ORDER BY e.ts, e.user_id, e.item_id {limit_sql})
                TO '{out}' (FORMAT parquet, ROW_GROUP_SIZE 1000000)""",
            [as_of, as_of],
        )
        return con.execute(f"SELECT count(*) FROM read_parquet('{out}')").fetchall()[0][0]


def _warm_items(settings: Settings, spec: DatasetSpec, as_of: datetime) -> pd.DataFrame:
    window = int(spec.stats_window_days)
    stats = ", ".join(f's."{s}"' for s in spec.stats)
    with session(settings.paths.db, read_only=True) as con:
        return con.execute(
            f"""SELECT i.*, {stats} FROM items i JOIN item_stats s USING (item_id)
                WHERE i.listed_at + INTERVAL {window} DAY <= ? ORDER BY i.item_id""",
            [as_of],
        ).df()


def train_streaming(
    settings: Settings,
    spec: DatasetSpec,
    as_of: datetime,
    *,
    max_events: int | None = None,
    chunk_events: int = 1_000_000,
    validation_events: int = 200_000,
    register: bool = True,
) -> tuple[TrainReport, dict]:
    """Train ATNN with streamed batches (the event log stays on disk), export ONNX and register it.

    Returns the report and throughput figures (events_per_s of the training steps, events seen).
    """
    started = time.perf_counter()
    events_path = settings.paths.home / "training" / f"events-{as_of:%Y%m%dT%H%M%S}-{max_events or 'all'}.parquet"
    n_events = export_training_events(settings, spec, as_of, events_path, limit=max_events)
    if not n_events:
        raise ValueError(f"no training rows as of {as_of}: no item's statistics window has closed yet")
    items = _warm_items(settings, spec, as_of)
    with session(settings.paths.db, read_only=True) as con:
        users = con.execute("SELECT * FROM users ORDER BY user_id").df()
    train_ids, val_ids = split_items(items["item_id"].to_numpy(), settings.train.validation_fraction, settings.train.seed)
    train_items = items[items["item_id"].isin(train_ids)].reset_index(drop=True)
    val_items = items[items["item_id"].isin(val_ids)].reset_index(drop=True)
    encoder = FeatureEncoder.fit(spec, train_items, users, train_items)
    base = profile_arrays(train_items, users, encoder)
    validation = None
    if len(val_items):
        with session(settings.paths.db, read_only=True) as con:
            con.register("val_ids", pd.DataFrame({"item_id": val_ids}))
            val_events = con.execute(
                f"SELECT item_id, user_id, label FROM read_parquet('{events_path}') WHERE item_id IN (SELECT item_id FROM val_ids) LIMIT {int(validation_events)}"
            ).df()
        validation = with_events(profile_arrays(val_items, users, encoder), val_events["item_id"].to_numpy(),
                                 val_events["user_id"].to_numpy(), val_events["label"].to_numpy())
    result = fit_stream(base, parquet_event_chunks(events_path, chunk_events), validation, encoder, settings.model, settings.train)
    vector, chosen = mean_user_vector_of(result.model, base, result.user_events, settings.train.top_k_users)
    mean_user = artifacts.MeanUserVector(vector=[float(x) for x in vector], k=settings.train.top_k_users, num_users=len(chosen))
    version = artifacts.new_version()
    model_name = f"{settings.model_name}-{spec.name}"
    info = {"as_of": as_of.isoformat(), "dataset": spec.name, "profile": settings.profile, "streamed": True}
    checkpoint = artifacts.Checkpoint(result.model, encoder, settings.model, settings.train, spec.schema_hash(), mean_user, info)
    checkpoint_dir = artifacts.save_checkpoint(settings.paths.models_dir / model_name / version, checkpoint)
    enc_auc = auc(validation.label, predict(result.model, validation, generated=False)) if validation is not None and len(validation) else float("nan")
    report = TrainReport(
        model_name=model_name, version=version, as_of=as_of.isoformat(),
        train_events=int(result.events_seen / max(len(result.history), 1)),
        validation_events=len(validation) if validation is not None else 0,
        train_items=len(train_ids), validation_items=len(val_ids), users=len(users),
        best_epoch=result.best_epoch, validation_auc_generator=result.best_val_auc, validation_auc_encoder=enc_auc,
        onnx_max_abs_diff=float("nan"), train_seconds=result.train_seconds, checkpoint_dir=str(checkpoint_dir),
        onnx_path="", history=[asdict(r) for r in result.history],
    )
    onnx_dir = settings.paths.onnx_dir / model_name / version
    onnx_path = artifacts.export_onnx(checkpoint, onnx_dir, model_name=model_name, version=version, spec=spec, metrics=report.metrics())
    report.onnx_max_abs_diff = artifacts.max_abs_difference(checkpoint, onnx_path, encoder.encode(val_items.head(512) if len(val_items) else train_items.head(512), "item"))
    report.onnx_path = str(onnx_path)
    metadata = json.loads((onnx_dir / "metadata.json").read_text(encoding="utf-8"))
    metadata["metrics"] = report.metrics()
    artifacts._write_json(onnx_dir / "metadata.json", metadata)
    if register:
        report.promoted = registry.register(settings.paths.db, spec, report)
    throughput = {"events": int(n_events), "events_seen": int(result.events_seen), "events_per_s": result.events_per_s,
                  "chunk_events_per_s": [round(x, 1) for x in result.chunk_events_per_s],
                  "epochs": len(result.history), "total_s": time.perf_counter() - started}
    return report, throughput


# ---------------------------------------------------------------- partitioned ranking (scale-out)


def partition_arrivals(arrivals: pd.DataFrame, partitions: int, batch_size: int = 65536) -> list[pd.DataFrame]:
    """Split a day's arrivals into at most `partitions` contiguous parts whose sizes are whole
    numbers of scoring batches, so every item is scored in the same batch as in one process
    (onnxruntime's results are then bitwise the same, and so are the ranks)."""
    n = len(arrivals)
    if not n:
        return [arrivals]
    batches = -(-n // batch_size)
    # Spread the batches as evenly as possible: 4 batches in 3 parts are 2 + 1 + 1.
    parts = max(1, min(partitions, batches))
    per_part = np.full(parts, batches // parts) + (np.arange(parts) < batches % parts)
    bounds = np.minimum(np.r_[0, np.cumsum(per_part)] * batch_size, n)
    return [arrivals.iloc[start:end].reset_index(drop=True) for start, end in zip(bounds[:-1], bounds[1:])]


@functools.lru_cache(maxsize=4)
def cached_scorer(model_dir: str, threads: int = 0) -> OnnxScorer:
    """One loaded model per worker process and model (a Dask worker scores many partitions)."""
    return OnnxScorer(Path(model_dir), threads=threads)


def score_partition(
    scorer: OnnxScorer, arrivals: pd.DataFrame, as_of: datetime, read_features: FeatureReader, *, keep_vectors: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """Read and score one partition of the arrivals; drop the item vectors unless needed (they are
    the bulk of what a worker would send back)."""
    stages: dict[str, float] = {}
    scored, skipped = score_arrivals(scorer, arrivals, as_of, read_features, stages, keep_vectors=keep_vectors)
    return scored, skipped, stages


def concat_partitions(parts: list[tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]]) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """The day's scored and skipped items from its partitions, and the summed stage seconds."""
    scored = pd.concat([p[0] for p in parts], ignore_index=True)
    skipped = pd.concat([p[1] for p in parts], ignore_index=True)
    stages: dict[str, float] = {}
    for _, _, part in parts:
        for key, value in part.items():
            stages[key] = stages.get(key, 0.0) + value
    return scored, skipped, stages


def ranks_identical(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    """Two rankings of a day give every item the same rank and the same score."""
    left = a.sort_values("item_id").reset_index(drop=True)
    right = b.sort_values("item_id").reset_index(drop=True)
    return (len(left) == len(right) and np.array_equal(left["item_id"].to_numpy(), right["item_id"].to_numpy())
            and np.array_equal(left["rank"].to_numpy(), right["rank"].to_numpy())
            and np.array_equal(left["score"].to_numpy(), right["score"].to_numpy()))
