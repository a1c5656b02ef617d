"""The DuckDB warehouse: canonical tables, quarantine, rankings, and their Parquet exports for Feast.

DuckDB lets one process hold a read-write connection and blocks every other process meanwhile, so
every write here opens the file, does one short transaction and closes it; `connect` retries a
locked file with backoff.
"""

from __future__ import annotations

import json
import os
import random
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import duckdb
import pandas as pd

from atnn.canonical import Canonical, item_stats_sql
from atnn.spec import DatasetSpec

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS quarantine (
    run_id VARCHAR, table_name VARCHAR, source_file VARCHAR, line BIGINT, raw VARCHAR, reason VARCHAR,
    quarantined_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS ingest_runs (
    run_id VARCHAR, dataset VARCHAR, source VARCHAR, started_at TIMESTAMP, counts JSON
);
CREATE TABLE IF NOT EXISTS rankings (
    ds DATE NOT NULL,
    item_id {id_sql} NOT NULL,
    score DOUBLE NOT NULL,
    rank INTEGER NOT NULL,
    model_version VARCHAR NOT NULL,
    title VARCHAR,
    category VARCHAR,
    listed_at TIMESTAMP,
    ranked_at TIMESTAMP NOT NULL
    -- No PRIMARY KEY (ds, item_id): its index tripled the cost of replacing a day of 1M items.
    -- write_rankings checks that a day's item ids are unique before its one transaction.
);
CREATE TABLE IF NOT EXISTS models (
    version VARCHAR PRIMARY KEY,
    model_name VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    data_as_of TIMESTAMP NOT NULL,
    validation_auc DOUBLE,
    metrics JSON,
    artifact_path VARCHAR NOT NULL,
    checkpoint_path VARCHAR NOT NULL,
    feature_schema_hash VARCHAR NOT NULL,
    vocab_hash VARCHAR,
    champion BOOLEAN NOT NULL DEFAULT false
);
CREATE TABLE IF NOT EXISTS skipped_items (
    ds DATE NOT NULL, item_id {id_sql} NOT NULL, reason VARCHAR NOT NULL, model_version VARCHAR,
    skipped_at TIMESTAMP NOT NULL
);
-- "Popular for whom": one ranking per user segment (e.g. 'F|25-34'), written with `rankings`.
CREATE TABLE IF NOT EXISTS rankings_by_segment (
    ds DATE NOT NULL,
    segment VARCHAR NOT NULL,
    item_id {id_sql} NOT NULL,
    score DOUBLE NOT NULL,
    rank INTEGER NOT NULL,
    model_version VARCHAR NOT NULL,
    ranked_at TIMESTAMP NOT NULL  -- unique (ds, segment, item_id): checked like rankings
);
""" + """
-- The registry records the training data window [data_from, data_as_of) of each model.
ALTER TABLE models ADD COLUMN IF NOT EXISTS data_from TIMESTAMP;
-- The SQL surface (README, "Run it as a service"): atnn/similar.py and atnn/evaluate.py write these.
CREATE TABLE IF NOT EXISTS similar_items (
    ds DATE NOT NULL, item_id {id_sql} NOT NULL, neighbor_rank INTEGER NOT NULL, similar_item_id {id_sql} NOT NULL,
    similar_title VARCHAR, similarity DOUBLE NOT NULL, model_version VARCHAR NOT NULL, computed_at TIMESTAMP NOT NULL,
    PRIMARY KEY (ds, item_id, neighbor_rank)
);
CREATE TABLE IF NOT EXISTS ranking_quality (
    ds DATE NOT NULL, model_version VARCHAR NOT NULL, n_items INTEGER NOT NULL, spearman DOUBLE,
    ndcg_at_10 DOUBLE, precision_at_10pct DOUBLE, evaluated_at TIMESTAMP NOT NULL,
    grain VARCHAR NOT NULL,  -- 'day', or 'month' (ds = the month's first day, its ranked items pooled)
    PRIMARY KEY (grain, ds, model_version)
);
CREATE VIEW IF NOT EXISTS latest_rankings AS
    SELECT * FROM rankings WHERE ds = (SELECT max(ds) FROM rankings);
CREATE MACRO IF NOT EXISTS top_new_arrivals(ds, k) AS TABLE
    SELECT r.rank, r.item_id, r.title, r.category, r.score, r.model_version
    FROM rankings r WHERE r.ds = CAST(ds AS DATE) AND r.rank <= k ORDER BY r.rank;
"""


# New files are written in a storage format that the DuckDB CLI on PyPI (duckdb-cli 1.5) can read too,
# so `duckdb var/atnn.duckdb "SELECT ..."` works from the project's virtual environment.
STORAGE_COMPATIBILITY = "v1.4.0"


class WarehouseBusy(RuntimeError):
    """The DuckDB file stayed locked by another process through every retry."""


class DatasetMismatch(ValueError):
    """The warehouse holds another dataset than the one asked for."""


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc).lower()
    return "lock" in text or "conflicting" in text or "being used" in text


def is_transient(exc: BaseException | None) -> bool:
    """Failures worth retrying: a locked or busy file or store, a timeout, a dropped connection."""
    import sqlite3

    if isinstance(exc, (WarehouseBusy, TimeoutError, ConnectionError)):
        return True
    if isinstance(exc, (duckdb.IOException, sqlite3.OperationalError)):
        return _is_lock_error(exc) or "busy" in str(exc).lower()
    return False


def _retry_locked(open_fn, db: Path, timeout_s: float = 60.0, max_delay_s: float = 0.2):
    """Call `open_fn` until it stops failing on another process's file lock (jittered backoff).

    The backoff is capped low: write transactions are short, so the file frees up soon.
    """
    deadline = time.monotonic() + timeout_s
    delay = 0.01
    while True:
        try:
            return open_fn()
        except duckdb.IOException as exc:
            if not _is_lock_error(exc):
                raise
            if time.monotonic() > deadline:
                raise WarehouseBusy(f"{db} stayed locked by another process for {timeout_s:.0f}s: {exc}") from exc
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, max_delay_s)


def connect(db: Path, *, read_only: bool = False, timeout_s: float = 60.0) -> duckdb.DuckDBPyConnection:
    """Open the warehouse, retrying with jittered backoff while another process holds it."""
    if read_only and not db.exists():
        raise FileNotFoundError(f"{db}: no warehouse yet; run `atnn ingest` (or `make demo`) first")
    db.parent.mkdir(parents=True, exist_ok=True)
    config = {} if read_only else {"storage_compatibility_version": STORAGE_COMPATIBILITY}
    return _retry_locked(lambda: duckdb.connect(str(db), read_only=read_only, config=config), db, timeout_s)


@contextmanager
def session(db: Path, *, read_only: bool = False, timeout_s: float = 60.0) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection that is closed on exit, so the file lock is held as briefly as possible."""
    con = connect(db, read_only=read_only, timeout_s=timeout_s)
    try:
        con.execute("SET TimeZone = 'UTC'")
        yield con
    finally:
        con.close()


def ensure_schema(con: duckdb.DuckDBPyConnection, spec: DatasetSpec) -> None:
    """Create the fixed tables, and check the warehouse holds this dataset (one dataset per home)."""
    id_sql = "BIGINT" if spec.id_type == "int64" else "VARCHAR"
    con.execute(SCHEMA_SQL.format(id_sql=id_sql))
    # fetchall, not fetchone: DuckDB 2 keeps a partly fetched result open and refuses other work.
    rows = con.execute("SELECT value FROM meta WHERE key = 'dataset'").fetchall()
    row = rows[0] if rows else None
    if row is None:
        con.execute("INSERT INTO meta VALUES ('dataset', ?)", [spec.name])
    elif row[0] != spec.name:
        raise DatasetMismatch(
            f"this warehouse holds dataset {row[0]!r}, not {spec.name!r}; use another ATNN_HOME for it"
        )


def write_canonical(db: Path, canonical: Canonical, spec: DatasetSpec, *, prior_events: float, source: str) -> None:
    """Replace the canonical tables and their statistics in one transaction; record quarantine and counts."""
    with session(db) as con:
        ensure_schema(con, spec)
        con.register("canon_items", canonical.items)
        con.register("canon_users", canonical.users)
        con.register("canon_events", canonical.events)
        con.register("canon_quarantine", canonical.quarantine)
        if canonical.behaviors is not None:
            con.register("canon_behaviors", canonical.behaviors)
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute("CREATE OR REPLACE TABLE items AS SELECT * FROM canon_items")
            con.execute("CREATE OR REPLACE TABLE users AS SELECT * FROM canon_users")
            con.execute("CREATE OR REPLACE TABLE events AS SELECT * FROM canon_events")
            if canonical.behaviors is not None:  # events with no item key (see DatasetSpec.behavior_keys)
                con.execute("CREATE OR REPLACE TABLE behaviors AS SELECT * FROM canon_behaviors")
            con.execute(f"CREATE OR REPLACE TABLE item_stats AS {item_stats_sql(spec, prior_events)}")
            # Rows quarantined by an earlier ingest of the same files are superseded by this one.
            con.execute(
                "DELETE FROM quarantine WHERE source_file IN (SELECT DISTINCT source_file FROM canon_quarantine)"
            )
            con.execute(
                "INSERT INTO quarantine SELECT run_id, table_name, source_file, line, raw, reason, quarantined_at FROM canon_quarantine"
            )
            con.execute(
                "INSERT INTO ingest_runs VALUES (?, ?, ?, now()::TIMESTAMP, ?)",
                [canonical.run_id, spec.name, source, json.dumps(canonical.counts)],
            )
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise


def export_parquet(db: Path, out_dir: Path, spec: DatasetSpec) -> dict[str, Path]:
    """Write the Feast sources (items, users, item_stats) as Parquet, each swapped in atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    queries = {
        "items": "SELECT * REPLACE (listed_at::TIMESTAMPTZ AS listed_at) FROM items",
        "users": "SELECT * REPLACE (registered_at::TIMESTAMPTZ AS registered_at) FROM users",
        "item_stats": f"SELECT item_id, stats_ts::TIMESTAMPTZ AS stats_ts, {', '.join(spec.stats)} FROM item_stats",
    }
    paths = {}
    with session(db, read_only=True) as con:
        for name, sql in queries.items():
            final = out_dir / f"{name}.parquet"
            tmp = out_dir / f".{name}.{os.getpid()}.parquet"
            con.execute(f"COPY ({sql} ORDER BY 1) TO '{tmp}' (FORMAT parquet)")
            os.replace(tmp, final)
            paths[name] = final
    return paths


def read_sql(db: Path, sql: str, params: list | None = None, *, timeout_s: float = 60.0) -> pd.DataFrame:
    """Run one read query on the warehouse and return a DataFrame.

    This is the way to query while the daily job runs: the connection is read-only, retried with
    backoff while a writer holds the file, and closed right after, so writers are not held up.
    Every write is one transaction, so a read sees a day either before or after a re-rank, never half.
    """
    with session(db, read_only=True, timeout_s=timeout_s) as con:
        return con.execute(sql, params or []).df()


def publish_snapshot(db: Path, target: Path | None = None) -> Path:
    """Copy the warehouse to a read-only snapshot file, swapped in atomically.

    For long interactive sessions (the DuckDB CLI holds its file open): analysts open the snapshot,
    which no job ever writes, so they never block the daily job. The copy is taken under a read-only
    connection (no writer can change the file meanwhile) with DuckDB's COPY FROM DATABASE.
    """
    target = target or db.with_name(db.stem + "-snapshot.duckdb")
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    con = duckdb.connect()  # in memory: attaches the warehouse read-only and the snapshot read-write
    try:
        _retry_locked(lambda: con.execute(f"ATTACH '{db}' AS source (READ_ONLY)"), db)
        con.execute(f"ATTACH '{tmp}' AS snapshot (STORAGE_VERSION '{STORAGE_COMPATIBILITY}')")
        con.execute("COPY FROM DATABASE source TO snapshot")
        con.execute("DETACH snapshot")
        con.execute("DETACH source")
    finally:
        con.close()
    os.replace(tmp, target)
    return target


