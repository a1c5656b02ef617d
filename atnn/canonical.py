"""Validation of raw tables into canonical tables, item statistics, and the warehouse write.

All row-level checks are DuckDB SQL over the raw string tables. Every raw row ends up either in a
canonical table or in `quarantine` with its source file, line, raw text and reason, so that
rows read = rows accepted + rows quarantined holds for every table.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

from atnn.readers import RawTables
from atnn.spec import DatasetSpec, FeatureSpec

# Times before this are taken as corrupt (a truncated or negative Unix time), not as history.
MIN_TIMESTAMP = datetime(1990, 1, 1)

QUARANTINE_COLUMNS = ["run_id", "table_name", "source_file", "line", "raw", "reason", "quarantined_at"]


class IngestError(ValueError):
    """The ingest was refused as a whole (too many bad rows); no table was changed."""


@dataclass
class Canonical:
    """Validated canonical tables as Arrow tables, plus the quarantined rows and counts."""

    items: pa.Table
    users: pa.Table
    events: pa.Table
    quarantine: pd.DataFrame
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    run_id: str = ""


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _clean_text(col: str) -> str:
    return f"NULLIF(trim({col}), '')"


def _id_expr(col: str, id_type: str) -> str:
    return f"TRY_CAST(trim({col}) AS BIGINT)" if id_type == "int64" else _clean_text(col)


def _numeric_expr(col: str) -> str:
    # NaN and infinities are missing values, imputed later with an indicator.
    v = f"TRY_CAST(trim({col}) AS DOUBLE)"
    return f"CASE WHEN isfinite({v}) THEN {v} END"


def _ts_expr(col: str) -> str:
    """Unix seconds or an ISO timestamp -> TIMESTAMP (UTC, naive); NULL when unparseable."""
    c = f"trim({col})"
    return (
        f"CASE WHEN regexp_full_match({c}, '-?[0-9]+(\\.[0-9]+)?') "
        f"THEN make_timestamp(CAST(TRY_CAST({c} AS DOUBLE) * 1e6 AS BIGINT)) "
        f"ELSE TRY_CAST({c} AS TIMESTAMP) END"
    )


def _feature_expr(f: FeatureSpec) -> str:
    col = _ident(f.name)
    if f.kind == "numeric":
        return f"{_numeric_expr(col)} AS {col}"
    if f.kind == "timestamp":
        return f"{_ts_expr(col)} AS {col}"
    return f"{_clean_text(col)} AS {col}"


def _feature_checks(features: tuple[FeatureSpec, ...]) -> list[str]:
    checks = []
    for f in features:
        col = _ident(f.name)
        if f.required:
            checks.append(f"WHEN {_clean_text(col)} IS NULL THEN {_lit('missing required field ' + f.name)}")
        if f.kind == "numeric":
            checks.append(
                f"WHEN {_clean_text(col)} IS NOT NULL AND TRY_CAST(trim({col}) AS DOUBLE) IS NULL "
                f"THEN {_lit('unparseable number in ' + f.name)}"
            )
            if f.required:
                checks.append(f"WHEN {_numeric_expr(col)} IS NULL THEN {_lit('missing required number ' + f.name)}")
        if f.kind == "timestamp":
            checks.append(
                f"WHEN {_clean_text(col)} IS NOT NULL AND {_ts_expr(col)} IS NULL THEN {_lit('unparseable timestamp in ' + f.name)}"
            )
    return checks


def _split(con: duckdb.DuckDBPyConnection, table: str, select_sql: str) -> None:
    """Materialize `<table>_checked` (every raw row with `reason`, NULL when accepted)."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE {table}_checked AS {select_sql}")


def validate(
    raw: RawTables,
    spec: DatasetSpec,
    *,
    run_id: str | None = None,
    max_bad_share: float = 0.05,
    now: datetime | None = None,
    min_ts: datetime = MIN_TIMESTAMP,
) -> Canonical:
    """Check raw rows against the canonical schema; bad rows go to quarantine with a reason.

    Raises IngestError when the share of quarantined rows in any table exceeds `max_bad_share`.
    """
    run_id = run_id or uuid.uuid4().hex[:12]
    now = now or datetime.now(timezone.utc).replace(tzinfo=None)
    con = duckdb.connect()
    try:
        con.register("raw_items", raw.items)
        con.register("raw_users", raw.users)
        con.register("raw_events", raw.events)
        max_ts = f"TIMESTAMP '{now.isoformat(sep=' ')}' + INTERVAL 1 DAY"
        low_ts = f"TIMESTAMP '{min_ts.isoformat(sep=' ')}'"

        # ---- items
        item_id = _id_expr("item_id", spec.id_type)
        item_checks = _feature_checks(spec.item_features)
        has_listed_at = spec.listed_at == "column"
        if has_listed_at:
            item_checks = [
                f"WHEN {_ts_expr('listed_at')} IS NULL THEN 'missing or unparseable listed_at'",
                f"WHEN {_ts_expr('listed_at')} < {low_ts} OR {_ts_expr('listed_at')} > {max_ts} THEN 'listed_at out of range'",
                *item_checks,
            ]
        listed_col = f", {_ts_expr('listed_at')} AS listed_at_c" if has_listed_at else ""
        _split(
            con,
            "items",
            f"""
            SELECT *, CASE
                WHEN {item_id} IS NULL THEN 'unparseable item_id'
                {' '.join(item_checks)}
                WHEN row_number() OVER (PARTITION BY {item_id} ORDER BY _line) > 1 THEN 'duplicate item_id'
            END AS reason, {item_id} AS item_id_c {listed_col}
            FROM raw_items
            """,
        )

        # ---- users
        user_id = _id_expr("user_id", spec.id_type)
        user_features = [f for f in spec.user_features if f.name != "user_id"]
        user_checks = _feature_checks(tuple(user_features))
        _split(
            con,
            "users",
            f"""
            SELECT *, CASE
                WHEN {user_id} IS NULL THEN 'unparseable user_id'
                {' '.join(user_checks)}
                WHEN row_number() OVER (PARTITION BY {user_id} ORDER BY _line) > 1 THEN 'duplicate user_id'
            END AS reason, {user_id} AS user_id_c
            FROM raw_users
            """,
        )

        # ---- events
        lo, hi = raw.value_range if raw.value_range else (None, None)
        value = _numeric_expr("value")
        value_check = (
            f"WHEN {_clean_text('value')} IS NOT NULL AND TRY_CAST(trim(value) AS DOUBLE) IS NULL THEN 'unparseable value' "
            + (f"WHEN {value} IS NOT NULL AND ({value} < {lo} OR {value} > {hi}) THEN 'value out of range [{lo:g}, {hi:g}]' " if lo is not None else "")
        )
        label_expr = (
            f"COALESCE(TRY_CAST(trim(label) AS INTEGER), CASE WHEN {value} >= {raw.label_threshold} THEN 1 WHEN {value} IS NOT NULL THEN 0 END)"
            if raw.label_threshold is not None
            else "TRY_CAST(trim(label) AS INTEGER)"
        )
        ts = _ts_expr("ts")
        unknown_user = (
            ""
            if raw.users_derived
            else f"WHEN {user_id} NOT IN (SELECT user_id_c FROM users_checked WHERE reason IS NULL) THEN 'unknown user_id'"
        )
        _split(
            con,
            "events",
            f"""
            SELECT *, CASE
                WHEN {user_id} IS NULL THEN 'unparseable user_id'
                WHEN {item_id} IS NULL THEN 'unparseable item_id'
                WHEN {ts} IS NULL THEN 'unparseable timestamp'
                WHEN {ts} < {low_ts} OR {ts} > {max_ts} THEN 'timestamp out of range'
                {value_check}
                WHEN {label_expr} IS NULL OR {label_expr} NOT IN (0, 1) THEN 'label must be 0 or 1'
                {unknown_user}
                WHEN {item_id} NOT IN (SELECT item_id_c FROM items_checked WHERE reason IS NULL) THEN 'unknown item_id'
                WHEN row_number() OVER (PARTITION BY {user_id}, {item_id}, {ts}, COALESCE(trim(kind), '') ORDER BY _line) > 1
                    THEN 'duplicate event (user_id, item_id, ts, kind)'
            END AS reason,
            {user_id} AS user_id_c, {item_id} AS item_id_c, {ts} AS ts_c,
            COALESCE({_clean_text('kind')}, 'event') AS kind_c, {label_expr} AS label_c, {value} AS value_c
            FROM raw_events
            """,
        )
        events = con.sql(
            """SELECT user_id_c AS user_id, item_id_c AS item_id, ts_c AS ts, kind_c AS kind,
                      CAST(label_c AS TINYINT) AS label, value_c AS value
               FROM events_checked WHERE reason IS NULL ORDER BY ts, user_id, item_id"""
        ).arrow().read_all()
        con.register("events_ok", events)

        # Items whose arrival is derived from the event log need at least one event.
        if not has_listed_at:
            con.execute(
                """UPDATE items_checked SET reason = 'no events: arrival time (first event) unknown'
                   WHERE reason IS NULL AND item_id_c NOT IN (SELECT DISTINCT item_id FROM events_ok)"""
            )
            listed = "first.first_ts"
        else:
            listed = "c.listed_at_c"
        item_features = ", ".join(_feature_expr(f) for f in spec.item_features)
        items = con.sql(
            f"""SELECT c.item_id_c AS item_id, {listed} AS listed_at, {item_features}
                FROM items_checked c
                LEFT JOIN (SELECT item_id, min(ts) AS first_ts FROM events_ok GROUP BY item_id) first
                       ON first.item_id = c.item_id_c
                WHERE c.reason IS NULL ORDER BY item_id"""
        ).arrow().read_all()

        if raw.users_derived:
            con.execute(
                """CREATE OR REPLACE TEMP TABLE users_checked AS
                   SELECT DISTINCT user_id AS user_id_c, NULL::VARCHAR AS reason, '' AS _source, 0 AS _line, '' AS _raw
                   FROM events_ok"""
            )
        user_select = "".join(f", {_feature_expr(f)}" for f in user_features)
        users = con.sql(
            f"""SELECT c.user_id_c AS user_id,
                       COALESCE(first.first_ts, TIMESTAMP '1970-01-01 00:00:01') AS registered_at {user_select}
                FROM users_checked c
                LEFT JOIN (SELECT user_id, min(ts) AS first_ts FROM events_ok GROUP BY user_id) first
                       ON first.user_id = c.user_id_c
                WHERE c.reason IS NULL ORDER BY user_id"""
        ).arrow().read_all()

        quarantine = con.sql(
            f"""
            SELECT {_lit(run_id)} AS run_id, table_name, _source AS source_file, CAST(_line AS BIGINT) AS line,
                   _raw AS raw, reason, {_lit(now.isoformat(sep=' '))}::TIMESTAMP AS quarantined_at
            FROM (
                SELECT 'items' AS table_name, _source, _line, _raw, reason FROM items_checked WHERE reason IS NOT NULL
                UNION ALL SELECT 'users', _source, _line, _raw, reason FROM users_checked WHERE reason IS NOT NULL
                UNION ALL SELECT 'events', _source, _line, _raw, reason FROM events_checked WHERE reason IS NOT NULL
            ) ORDER BY table_name, source_file, line
            """
        ).df()
    finally:
        con.close()
    if len(raw.rejected):
        rejected = raw.rejected.rename(columns={"_source": "source_file", "_line": "line", "_raw": "raw"})
        rejected = rejected.assign(run_id=run_id, quarantined_at=pd.Timestamp(now))
        quarantine = pd.concat([quarantine, rejected[QUARANTINE_COLUMNS]], ignore_index=True)

    counts: dict[str, dict[str, int]] = {}
    refused = []
    # Events first: when they fail, items whose arrival comes from the events fail as a consequence.
    for name, frame, accepted in (("events", raw.events, events), ("users", raw.users, users), ("items", raw.items, items)):
        rejected_rows = int((raw.rejected["table_name"] == name).sum()) if len(raw.rejected) else 0
        read = len(frame) + rejected_rows
        bad = int((quarantine["table_name"] == name).sum())
        if name == "users" and raw.users_derived:
            read = accepted.num_rows  # derived from the events, not read from a file
        counts[name] = {"read": read, "accepted": accepted.num_rows, "quarantined": bad}
        if read and bad / read > max_bad_share:
            reasons = quarantine.loc[quarantine["table_name"] == name, "reason"].value_counts().head(3)
            summary = "; ".join(f"{r}: {n}" for r, n in reasons.items())
            refused.append(f"{name}: {bad} of {read} rows ({bad / read:.1%}) failed validation ({summary})")
    if refused:
        raise IngestError(
            "; ".join(refused) + f". Above the allowed share of {max_bad_share:.1%}: nothing was written."
        )
    counts = {name: counts[name] for name in ("items", "users", "events")}
    return Canonical(items=items, users=users, events=events, quarantine=quarantine, counts=counts, run_id=run_id)


def item_stats_sql(spec: DatasetSpec, prior_events: float) -> str:
    """SQL computing each item's first-window statistics from tables `items` and `events`.

    `stats_ts` is when the window closes: only then are the statistics known (point-in-time).
    `pos_rate` is smoothed toward the mean positive rate over all windows with `prior_events`.
    """
    w = int(spec.stats_window_days)
    m = float(prior_events)
    return f"""
    WITH windowed AS (
        SELECT i.item_id, i.listed_at, e.user_id, e.kind, e.label, e.value
        FROM items i LEFT JOIN events e
          ON e.item_id = i.item_id AND e.ts >= i.listed_at AND e.ts < i.listed_at + INTERVAL {w} DAY
    ), prior AS (SELECT COALESCE(avg(label), 0.0) AS rate FROM windowed WHERE label IS NOT NULL)
    SELECT item_id,
           listed_at + INTERVAL {w} DAY AS stats_ts,
           CAST(count(user_id) AS DOUBLE) AS pv,
           CAST(count(DISTINCT user_id) AS DOUBLE) AS uv,
           CAST(COALESCE(sum(label), 0) AS DOUBLE) AS positives,
           (COALESCE(sum(label), 0) + {m} * (SELECT rate FROM prior)) / (count(user_id) + {m}) AS pos_rate,
           CAST(count(user_id) FILTER (WHERE kind = 'click') AS DOUBLE) AS n_click,
           CAST(count(user_id) FILTER (WHERE kind = 'cart') AS DOUBLE) AS n_cart,
           CAST(count(user_id) FILTER (WHERE kind = 'fav') AS DOUBLE) AS n_fav,
           CAST(count(user_id) FILTER (WHERE kind = 'buy') AS DOUBLE) AS n_buy,
           avg(value) AS value_mean
    FROM windowed GROUP BY item_id, listed_at ORDER BY item_id
    """
