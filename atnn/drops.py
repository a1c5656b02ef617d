"""Daily drops: one day's new items (and any new users, events, behaviors) appended to the warehouse.

A drop is a folder in the canonical format (README, "Use your own data") holding any of the files
items, users, events, behaviors (.csv or .parquet). Ingesting it:

- validates every row against the spec and against what is already stored (atnn.canonical.validate
  with `existing`): each row is accepted (new, or unchanged when already stored) or quarantined with
  a reason, and rows read = accepted + quarantined per table;
- appends the new rows and recomputes the statistics of the items whose first window the drop
  touches (plus pos_rate everywhere, whose prior is the mean over all windows), in one transaction;
- records the drop under a hash of its files, so ingesting the same drop again changes nothing;
- re-exports the Parquet sources of the Feast feature views.

The result equals loading everything at once (a test checks this on ML-100K). A drop's day is its
folder name when that is a date (YYYY-MM-DD), else the UTC day of its newest item's arrival; ranking
a drop ranks exactly the drop's new items.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import pandas as pd

from atnn.canonical import item_stats_sql, pos_rate_update_sql, validate
from atnn.config import Settings
from atnn.readers import FormatError, canonical_files, read_canonical
from atnn.spec import DatasetSpec
from atnn.warehouse import ensure_schema, export_parquet, session

# Users created before any of their events are known carry this placeholder registration time.
REGISTERED_PLACEHOLDER = "TIMESTAMP '1970-01-01 00:00:01'"

DROP_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS drops (
    drop_id VARCHAR PRIMARY KEY, ds DATE NOT NULL, source VARCHAR NOT NULL, run_id VARCHAR NOT NULL,
    base_run_id VARCHAR, first_ts TIMESTAMP, last_ts TIMESTAMP, ingested_at TIMESTAMP NOT NULL, counts JSON
);
CREATE TABLE IF NOT EXISTS drop_items (drop_id VARCHAR NOT NULL, item_id {id_sql} NOT NULL);
"""


class DropNotIngested(LookupError):
    """A drop folder to rank has not been ingested (or its files changed since)."""


@dataclass
class DropReport:
    """What ingesting one drop did."""

    drop_id: str
    source: str
    ds: str
    already_ingested: bool
    counts: dict[str, dict[str, int]]
    unchanged: dict[str, int] = field(default_factory=dict)
    new_items: int = 0
    touched_items: int = 0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    run_id: str = ""
    first_ts: str | None = None
    last_ts: str | None = None
    seconds: float = 0.0

    def reconciles(self) -> bool:
        return all(c["read"] == c["accepted"] + c["quarantined"] for c in self.counts.values())


@dataclass
class DropRecord:
    """An ingested drop, as ranking needs it."""

    drop_id: str
    ds: date
    source: str
    first_ts: datetime | None
    last_ts: datetime | None


# ---------------------------------------------------------------- folders


def is_drop_folder(path: Path) -> bool:
    return Path(path).is_dir() and bool(canonical_files(Path(path)))


def drop_folders(path: Path) -> list[Path]:
    """`path` itself when it is a drop, else its sub-folders that are drops, in name (= date) order."""
    path = Path(path)
    if not path.is_dir():
        raise FormatError(f"{path}: drop folder not found")
    if is_drop_folder(path):
        return [path.resolve()]
    found = sorted(p.resolve() for p in path.iterdir() if p.is_dir() and canonical_files(p))
    if not found:
        raise FormatError(
            f"{path}: neither a drop (items, users, events as .csv or .parquet) nor a folder of drops"
        )
    return found


def resolve_drop(path: Path, ds: date | None) -> Path:
    """The drop folder to rank: `path` itself, or its sub-folder named `ds` (YYYY-MM-DD)."""
    path = Path(path)
    if is_drop_folder(path):
        return path.resolve()
    if ds is None:
        raise ValueError(f"{path} is a folder of drops: give the date whose drop to rank")
    day = path / ds.isoformat()
    if not is_drop_folder(day):
        raise FormatError(f"{day}: no drop for {ds} under {path} (expected a folder named {ds.isoformat()})")
    return day.resolve()


def content_id(folder: Path) -> str:
    """A hash of a drop's canonical files (names and bytes): the drop's identity."""
    digest = hashlib.sha256()
    for table, path in sorted(canonical_files(folder).items()):
        digest.update(f"{table}:{path.name}:".encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:24]


def _folder_day(folder: Path) -> date | None:
    try:
        return date.fromisoformat(folder.name)
    except ValueError:
        return None


# ---------------------------------------------------------------- warehouse state


def _tables(con) -> set[str]:
    return {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}


def _base_run(con, tables: set[str]) -> str | None:
    """The latest full load's run id: drops recorded on another base are stale."""
    if "ingest_runs" not in tables:
        return None
    exclude = "WHERE run_id NOT IN (SELECT run_id FROM drops)" if "drops" in tables else ""
    rows = con.execute(f"SELECT run_id FROM ingest_runs {exclude} ORDER BY started_at DESC LIMIT 1").fetchall()
    return rows[0][0] if rows else None


def _stored_drop(con, tables: set[str], drop_id: str) -> tuple | None:
    if "drops" not in tables:
        return None
    rows = con.execute(
        "SELECT drop_id, ds, source, first_ts, last_ts, run_id, counts FROM drops WHERE drop_id = ? AND base_run_id IS NOT DISTINCT FROM ?",
        [drop_id, _base_run(con, tables)],
    ).fetchall()
    return rows[0] if rows else None


def _iso(value: object) -> str | None:
    return None if value is None or pd.isna(value) else pd.Timestamp(value).isoformat()


# ---------------------------------------------------------------- ingest


def ingest_drop(settings: Settings, spec: DatasetSpec, folder: Path, *, max_bad_share: float = 0.05) -> DropReport:
    """Append one drop to the warehouse (idempotent), update statistics, re-export the Feast sources."""
    started = time.perf_counter()
    folder = Path(folder).resolve()
    db = settings.paths.db
    drop_id = content_id(folder)
    has_tables = False
    if db.exists():
        with session(db, read_only=True) as con:
            tables = _tables(con)
            stored = _stored_drop(con, tables, drop_id)
            has_tables = "items" in tables
        if stored is not None:
            return DropReport(
                drop_id=drop_id, source=str(folder), ds=stored[1].isoformat(), already_ingested=True,
                counts=json.loads(stored[6])["counts"], run_id=stored[5],
                first_ts=_iso(stored[3]), last_ts=_iso(stored[4]), seconds=time.perf_counter() - started,
            )

    raw = read_canonical(folder, spec, partial=True)
    canonical = validate(raw, spec, max_bad_share=max_bad_share, existing=db if has_tables else None)
    w = int(spec.stats_window_days)
    id_sql = "BIGINT" if spec.id_type == "int64" else "VARCHAR"
    with session(db) as con:
        ensure_schema(con, spec)
        con.execute(DROP_SCHEMA_SQL.format(id_sql=id_sql))
        con.register("new_items", canonical.items)
        con.register("new_users", canonical.users)
        con.register("new_events", canonical.events)
        con.register("new_quarantine", canonical.quarantine)
        con.register("batch_items", pd.DataFrame({"item_id": pd.Series(canonical.batch_item_ids, dtype="int64" if spec.id_type == "int64" else "object")}))
        if canonical.behaviors is not None:
            con.register("new_behaviors", canonical.behaviors)
        con.execute("BEGIN TRANSACTION")
        try:
            tables = _tables(con)
            base_run_id = _base_run(con, tables)
            # A first drop into an empty warehouse creates the tables.
            for table in ("items", "users", "events", *(["behaviors"] if canonical.behaviors is not None else [])):
                con.execute(f"CREATE TABLE IF NOT EXISTS {table} AS SELECT * FROM new_{table} LIMIT 0")
            if "item_stats" not in tables:
                con.execute(f"CREATE TABLE item_stats AS SELECT * FROM ({item_stats_sql(spec, settings.train.prior_events)}) LIMIT 0")
            con.execute("INSERT INTO items BY NAME SELECT * FROM new_items")
            con.execute("INSERT INTO users BY NAME SELECT * FROM new_users")
            # A user registers at their first event: as in a full load, min(ts) over all their events.
            con.execute(
                f"""UPDATE users SET registered_at = CASE WHEN users.registered_at = {REGISTERED_PLACEHOLDER}
                                                      THEN f.first_ts ELSE least(users.registered_at, f.first_ts) END
                    FROM (SELECT user_id, min(ts) AS first_ts FROM new_events GROUP BY user_id) f
                    WHERE users.user_id = f.user_id"""
            )
            con.execute("INSERT INTO events BY NAME SELECT * FROM new_events")
            behavior_touch = ""
            if canonical.behaviors is not None:
                con.execute("INSERT INTO behaviors BY NAME SELECT * FROM new_behaviors")
                on = " AND ".join(f'b."{k}" = i."{k}"' for k in spec.behavior_keys)
                behavior_touch = f"""UNION SELECT i.item_id FROM items i JOIN new_behaviors b
                    ON {on} AND b.ts >= i.listed_at AND b.ts < i.listed_at + INTERVAL {w} DAY"""
            # Items whose first window the drop touches: its new items, and items with new events
            # (or behaviors) inside their window. Only their statistics change, except pos_rate.
            con.execute(
                f"""CREATE OR REPLACE TEMP TABLE touched AS
                    SELECT item_id FROM new_items
                    UNION SELECT e.item_id FROM new_events e JOIN items i USING (item_id)
                          WHERE e.ts >= i.listed_at AND e.ts < i.listed_at + INTERVAL {w} DAY
                    {behavior_touch}"""
            )
            touched = con.execute("SELECT count(*) FROM touched").fetchall()[0][0]
            con.execute("DELETE FROM item_stats WHERE item_id IN (SELECT item_id FROM touched)")
            subset = "(SELECT * FROM items WHERE item_id IN (SELECT item_id FROM touched))"
            con.execute(f"INSERT INTO item_stats BY NAME SELECT * FROM ({item_stats_sql(spec, settings.train.prior_events, items=subset)})")
            con.execute(pos_rate_update_sql(settings.train.prior_events))

            # The drop's day: its folder name if a date, else its newest item's (or event's) UTC day.
            span = con.execute(
                """SELECT min(t), max(t) FROM (
                       SELECT listed_at AS t FROM items WHERE item_id IN (SELECT item_id FROM batch_items)
                       UNION ALL SELECT ts FROM new_events)"""
            ).fetchall()[0]
            newest_item = con.execute(
                "SELECT max(listed_at) FROM items WHERE item_id IN (SELECT item_id FROM batch_items)"
            ).fetchall()[0][0]
            ds = _folder_day(folder) or (newest_item or span[1])
            if ds is None:
                raise FormatError(
                    f"{folder}: cannot tell which day this drop is (no items, no events); name the folder YYYY-MM-DD"
                )
            ds = ds.date() if isinstance(ds, datetime) else ds

            con.execute("DELETE FROM quarantine WHERE source_file IN (SELECT DISTINCT source_file FROM new_quarantine)")
            con.execute(
                "INSERT INTO quarantine SELECT run_id, table_name, source_file, line, raw, reason, quarantined_at FROM new_quarantine"
            )
            counts = {"counts": canonical.counts, "unchanged": canonical.unchanged}
            con.execute(
                "INSERT INTO ingest_runs VALUES (?, ?, ?, now()::TIMESTAMP, ?)",
                [canonical.run_id, spec.name, str(folder), json.dumps(canonical.counts)],
            )
            con.execute("DELETE FROM drop_items WHERE drop_id = ?", [drop_id])
            con.execute("DELETE FROM drops WHERE drop_id = ?", [drop_id])  # a stale record from an older base
            con.execute(
                "INSERT INTO drops VALUES (?, ?, ?, ?, ?, ?, ?, now()::TIMESTAMP, ?)",
                [drop_id, ds, str(folder), canonical.run_id, base_run_id, span[0], span[1], json.dumps(counts)],
            )
            con.execute("INSERT INTO drop_items SELECT ?, item_id FROM batch_items", [drop_id])
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
    export_parquet(db, settings.paths.canonical_dir, spec)
    reasons = canonical.quarantine["reason"].value_counts().to_dict() if len(canonical.quarantine) else {}
    return DropReport(
        drop_id=drop_id,
        source=str(folder),
        ds=ds.isoformat(),
        already_ingested=False,
        counts=canonical.counts,
        unchanged=canonical.unchanged,
        new_items=canonical.items.num_rows,
        touched_items=int(touched),
        quarantine_reasons={str(k): int(v) for k, v in reasons.items()},
        run_id=canonical.run_id,
        first_ts=_iso(span[0]),
        last_ts=_iso(span[1]),
        seconds=time.perf_counter() - started,
    )


def materialize_window(spec: DatasetSpec, reports: list[DropReport]) -> tuple[datetime, datetime]:
    """The time range to materialize after these drops: their new profiles and every statistics row
    whose window they touched (stats_ts = listed_at + window falls within a window of the drop)."""
    window = timedelta(days=int(spec.stats_window_days) + 1)
    starts = [pd.Timestamp(r.ds).to_pydatetime() for r in reports]
    ends = [pd.Timestamp(r.ds).to_pydatetime() + timedelta(days=1) for r in reports]
    starts += [pd.Timestamp(r.first_ts).to_pydatetime() for r in reports if r.first_ts]
    ends += [pd.Timestamp(r.last_ts).to_pydatetime() for r in reports if r.last_ts]
    return min(starts) - window, max(ends) + window


# ---------------------------------------------------------------- ranking a drop


def find_drop(db: Path, folder: Path) -> DropRecord:
    """The ingested drop stored under this folder's current files."""
    folder = Path(folder).resolve()
    drop_id = content_id(folder)
    with session(db, read_only=True) as con:
        tables = _tables(con)
        stored = _stored_drop(con, tables, drop_id)
    if stored is None:
        raise DropNotIngested(
            f"{folder}: this drop is not in {db} (not ingested yet, or its files changed since); "
            f"run `atnn ingest --drop {folder}` first"
        )
    return DropRecord(drop_id=stored[0], ds=stored[1], source=stored[2], first_ts=stored[3], last_ts=stored[4])


def drop_arrivals(db: Path, record: DropRecord) -> pd.DataFrame:
    """The drop's new items (id and listed_at): what ranking the drop ranks."""
    with session(db, read_only=True) as con:
        return con.execute(
            """SELECT i.item_id, i.listed_at FROM items i JOIN drop_items d USING (item_id)
               WHERE d.drop_id = ? ORDER BY i.item_id""",
            [record.drop_id],
        ).df()


def drop_to_rank(db: Path, path: Path, ds: date | None) -> tuple[DropRecord, pd.DataFrame]:
    """The drop to rank and its new items: `path` itself, or its sub-folder for `ds`.

    A given `ds` must be the drop's day.
    """
    record = find_drop(db, resolve_drop(path, ds))
    if ds is not None and ds != record.ds:
        raise ValueError(f"{record.source} is the drop of {record.ds}, not of {ds}")
    return record, drop_arrivals(db, record)
