"""Validation of raw tables into canonical tables, item statistics, and the warehouse write.

All row-level checks are DuckDB SQL over the raw string tables. Every raw row ends up either in a
canonical table or in `quarantine` with its source file, line, raw text and reason, so that
rows read = rows accepted + rows quarantined holds for every table.

Validating a daily drop (`existing` = the warehouse) also checks ids against what was ingested
before: a row identical to one already stored is accepted as `unchanged` (and not stored twice), a
row that contradicts one already stored is quarantined.
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
# Kinds of events counted into item statistics n_click, n_cart, n_fav, n_buy.
COUNTED_KINDS = ("click", "cart", "fav", "buy")


class IngestError(ValueError):
    """The ingest was refused as a whole (too many bad rows); no table was changed."""


@dataclass
class Canonical:
    """Validated canonical tables as Arrow tables, plus the quarantined rows and counts.

    The tables hold the rows to store: for a drop, only rows not stored before. `counts` has, per
    table, rows read = accepted + quarantined; `unchanged` how many accepted rows were already stored.
    """

    items: pa.Table
    users: pa.Table
    events: pa.Table
    quarantine: pd.DataFrame
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    run_id: str = ""
    behaviors: pa.Table | None = None
    unchanged: dict[str, int] = field(default_factory=dict)
    # Users created from events because they had no row in a users file (empty profile).
    derived_users: int = 0
    # Every accepted item of this batch, stored now or before (a drop's new arrivals).
    batch_item_ids: list = field(default_factory=list)


def _first_bad_lines(rows: pd.DataFrame, n: int = 5) -> str:
    """Where the first bad rows of a table are: 'first at /x/events.csv lines 4, 9, 31'."""
    rows = rows.assign(line=pd.to_numeric(rows["line"], errors="coerce")).sort_values(["source_file", "line"])
    parts = []
    for source, group in rows.groupby("source_file", dropna=False):
        lines = group["line"].dropna().astype(int).head(n).tolist()
        where = f"{source} line{'s' if len(lines) > 1 else ''} {', '.join(map(str, lines))}" if lines else str(source)
        parts.append(where + (", ..." if len(group) > len(lines) and lines else ""))
    return "first at " + "; ".join(parts[:3])


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _typed(name: str) -> str:
    """The column holding a feature's typed value during validation."""
    return _ident(f"__typed__{name}")


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _clean_text(col: str) -> str:
    return f"NULLIF(trim({col}), '')"


def _id_expr(col: str, id_type: str) -> str:
    return f"TRY_CAST(trim({col}) AS BIGINT)" if id_type == "int64" else _clean_text(col)


def _id_sql(id_type: str) -> str:
    return "BIGINT" if id_type == "int64" else "VARCHAR"


def _numeric_expr(col: str) -> str:
    # NaN and infinities are missing values, imputed later with an indicator.
    v = f"TRY_CAST(trim({col}) AS DOUBLE)"
    return f"CASE WHEN isfinite({v}) THEN {v} END"


def _ts_expr(col: str) -> str:
    """Unix seconds or an ISO timestamp (an offset is honoured) -> TIMESTAMP in UTC; NULL when unparseable.

    Needs the connection's TimeZone set to UTC: a timestamp without offset is read as UTC.
    """
    c = f"trim({col})"
    return (
        f"CASE WHEN regexp_full_match({c}, '-?[0-9]+(\\.[0-9]+)?') "
        f"THEN make_timestamp(CAST(TRY_CAST({c} AS DOUBLE) * 1e6 AS BIGINT)) "
        f"ELSE (TRY_CAST({c} AS TIMESTAMPTZ) AT TIME ZONE 'UTC') END"
    )


def _value_expr(f: FeatureSpec) -> str:
    col = _ident(f.name)
    if f.kind == "numeric":
        return _numeric_expr(col)
    if f.kind == "timestamp":
        return _ts_expr(col)
    return _clean_text(col)


def _typed_columns(features: tuple[FeatureSpec, ...] | list[FeatureSpec]) -> str:
    return "".join(f", {_value_expr(f)} AS {_typed(f.name)}" for f in features)


def _select_typed(features: tuple[FeatureSpec, ...] | list[FeatureSpec], alias: str = "c") -> str:
    return "".join(f", {alias}.{_typed(f.name)} AS {_ident(f.name)}" for f in features)


def _feature_checks(features: tuple[FeatureSpec, ...] | list[FeatureSpec]) -> list[str]:
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


def _same(features: tuple[FeatureSpec, ...] | list[FeatureSpec], stored: str, checked: str) -> str:
    """SQL: the checked row's typed values equal the stored row's (NULL equals NULL)."""
    parts = [f"{stored}.{_ident(f.name)} IS NOT DISTINCT FROM {checked}.{_typed(f.name)}" for f in features]
    return " AND ".join(parts) or "true"


def _mark_stored(con: duckdb.DuckDBPyConnection, table: str, stored: str, key: str, same: str, conflict: str) -> None:
    """Rows of `<table>_checked` already stored: unchanged when identical, else quarantined with `conflict`."""
    con.execute(
        f"""UPDATE {table}_checked SET unchanged = ({same}), reason = CASE WHEN {same} THEN NULL ELSE {_lit(conflict)} END
            FROM {stored} AS w WHERE {key} AND {table}_checked.reason IS NULL"""
    )


def validate(
    raw: RawTables,
    spec: DatasetSpec,
    *,
    run_id: str | None = None,
    max_bad_share: float = 0.05,
    now: datetime | None = None,
    min_ts: datetime = MIN_TIMESTAMP,
    existing: Path | None = None,
) -> Canonical:
    """Check raw rows against the canonical schema; bad rows go to quarantine with a reason.

    `existing`: a warehouse file whose canonical tables this batch is appended to (a daily drop);
    ids are then checked against it too. Raises IngestError when the share of quarantined rows in
    any table exceeds `max_bad_share`.
    """
    run_id = run_id or uuid.uuid4().hex[:12]
    now = now or datetime.now(timezone.utc).replace(tzinfo=None)
    value_range = raw.value_range if raw.value_range is not None else spec.event.value_range
    label_threshold = raw.label_threshold if raw.label_threshold is not None else spec.event.label_threshold
    derive_users = raw.users_derived or spec.unknown_users == "keep"
    id_sql = _id_sql(spec.id_type)
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("raw_items", raw.items)
        con.register("raw_users", raw.users)
        con.register("raw_events", raw.events)
        if existing is not None:
            con.execute(f"ATTACH {_lit(str(existing))} AS wh (READ_ONLY)")
            stored_items, stored_users, stored_events = "wh.items", "wh.users", "wh.events"
        else:
            stored_items = f"(SELECT NULL::{id_sql} AS item_id, NULL::TIMESTAMP AS listed_at WHERE false)"
            stored_users = f"(SELECT NULL::{id_sql} AS user_id WHERE false)"
            stored_events = None
        max_ts = f"TIMESTAMP '{now.isoformat(sep=' ')}' + INTERVAL 1 DAY"
        low_ts = f"TIMESTAMP '{min_ts.isoformat(sep=' ')}'"

        # ---- items
        item_id = _id_expr("item_id", spec.id_type)
        item_checks = _feature_checks(spec.item_features)
        has_listed_at = spec.listed_at == "column"
        if has_listed_at:
            item_checks = [
                "WHEN listed_at_c IS NULL THEN 'missing or unparseable listed_at'",
                f"WHEN listed_at_c < {low_ts} OR listed_at_c > {max_ts} THEN 'listed_at out of range'",
                *item_checks,
            ]
        listed_col = f", {_ts_expr('listed_at')} AS listed_at_c" if has_listed_at else ""
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE items_checked AS
            SELECT *, CASE
                WHEN item_id_c IS NULL THEN 'unparseable item_id'
                {' '.join(item_checks)}
                WHEN row_number() OVER (PARTITION BY item_id_c ORDER BY _line) > 1 THEN 'duplicate item_id'
            END AS reason, false AS unchanged
            FROM (SELECT *, {item_id} AS item_id_c {listed_col} {_typed_columns(spec.item_features)} FROM raw_items)"""
        )
        if existing is not None:
            same = _same(spec.item_features, "w", "items_checked")
            if has_listed_at:
                same += " AND w.listed_at IS NOT DISTINCT FROM items_checked.listed_at_c"
            _mark_stored(con, "items", stored_items, "w.item_id = items_checked.item_id_c", same,
                         "item_id already ingested with a different profile")

        # ---- users
        user_id = _id_expr("user_id", spec.id_type)
        user_features = [f for f in spec.user_features if f.name != "user_id"]
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE users_checked AS
            SELECT *, CASE
                WHEN user_id_c IS NULL THEN 'unparseable user_id'
                {' '.join(_feature_checks(user_features))}
                WHEN row_number() OVER (PARTITION BY user_id_c ORDER BY _line) > 1 THEN 'duplicate user_id'
            END AS reason, false AS unchanged
            FROM (SELECT *, {user_id} AS user_id_c {_typed_columns(user_features)} FROM raw_users)"""
        )
        if existing is not None:
            _mark_stored(con, "users", stored_users, "w.user_id = users_checked.user_id_c",
                         _same(user_features, "w", "users_checked"), "user_id already ingested with a different profile")

        # ---- events
        lo, hi = value_range if value_range else (None, None)
        value_check = (
            f"WHEN {_clean_text('value')} IS NOT NULL AND TRY_CAST(trim(value) AS DOUBLE) IS NULL THEN 'unparseable value' "
            + (f"WHEN value_c IS NOT NULL AND (value_c < {lo} OR value_c > {hi}) THEN 'value out of range [{lo:g}, {hi:g}]' " if lo is not None else "")
        )
        label_expr = (
            f"COALESCE(TRY_CAST(trim(label) AS INTEGER), CASE WHEN {_numeric_expr('value')} >= {label_threshold} "
            f"THEN 1 WHEN {_numeric_expr('value')} IS NOT NULL THEN 0 END)"
            if label_threshold is not None
            else "TRY_CAST(trim(label) AS INTEGER)"
        )
        kind_check = (
            f"WHEN kind_c NOT IN ({', '.join(_lit(k) for k in spec.event.kinds)}) "
            f"THEN 'unknown kind ' || kind_c || {_lit('; expected one of ' + ', '.join(spec.event.kinds))} "
            if spec.event.kinds
            else ""
        )
        accepted_users = f"SELECT user_id_c FROM users_checked WHERE reason IS NULL UNION ALL SELECT user_id FROM {stored_users}"
        unknown_user = "" if derive_users else f"WHEN user_id_c NOT IN ({accepted_users}) THEN 'unknown user_id'"
        accepted_items = f"SELECT item_id_c FROM items_checked WHERE reason IS NULL UNION ALL SELECT item_id FROM {stored_items}"
        late = (
            f"WHEN ts_c < (SELECT w.listed_at FROM {stored_items} w WHERE w.item_id = item_id_c) "
            "THEN 'event before the arrival of its item (its first event was ingested earlier)'"
            if existing is not None and not has_listed_at
            else ""
        )
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE events_checked AS
            SELECT *, CASE
                WHEN user_id_c IS NULL THEN 'unparseable user_id'
                WHEN item_id_c IS NULL THEN 'unparseable item_id'
                WHEN ts_c IS NULL THEN 'unparseable timestamp'
                WHEN ts_c < {low_ts} OR ts_c > {max_ts} THEN 'timestamp out of range'
                {value_check}
                {kind_check}
                WHEN label_c IS NULL OR label_c NOT IN (0, 1) THEN 'label must be 0 or 1'
                {' '.join(_feature_checks(spec.event.features))}
                {unknown_user}
                WHEN item_id_c NOT IN ({accepted_items}) THEN 'unknown item_id'
                {late}
                WHEN row_number() OVER (PARTITION BY user_id_c, item_id_c, ts_c, kind_c ORDER BY _line) > 1
                    THEN 'duplicate event (user_id, item_id, ts, kind)'
            END AS reason, false AS unchanged
            FROM (
                SELECT *, {user_id} AS user_id_c, {item_id} AS item_id_c, {_ts_expr('ts')} AS ts_c,
                       COALESCE({_clean_text('kind')}, 'event') AS kind_c, {label_expr} AS label_c,
                       {_numeric_expr('value')} AS value_c {_typed_columns(spec.event.features)}
                FROM raw_events
            )"""
        )
        if stored_events is not None:
            key = ("w.user_id = events_checked.user_id_c AND w.item_id = events_checked.item_id_c "
                   "AND w.ts = events_checked.ts_c AND w.kind = events_checked.kind_c")
            same = ("w.label = events_checked.label_c AND w.value IS NOT DISTINCT FROM events_checked.value_c AND "
                    + _same(spec.event.features, "w", "events_checked"))
            _mark_stored(con, "events", stored_events, key, same, "event already ingested with another label or value")
        events = con.sql(
            f"""SELECT user_id_c AS user_id, item_id_c AS item_id, ts_c AS ts, kind_c AS kind,
                       CAST(label_c AS TINYINT) AS label, value_c AS value {_select_typed(spec.event.features, 'events_checked')}
                FROM events_checked WHERE reason IS NULL AND NOT unchanged ORDER BY ts, user_id, item_id"""
        ).arrow().read_all()
        con.register("events_ok", events)

        # Items whose arrival is derived from the event log need at least one event.
        if not has_listed_at:
            con.execute(
                f"""UPDATE items_checked SET reason = 'no events: arrival time (first event) unknown'
                   WHERE reason IS NULL AND NOT unchanged AND item_id_c NOT IN (
                       SELECT DISTINCT item_id_c FROM events_checked WHERE reason IS NULL)"""
            )
            listed = "first.first_ts"
        else:
            listed = "c.listed_at_c"
        items = con.sql(
            f"""SELECT c.item_id_c AS item_id, {listed} AS listed_at {_select_typed(spec.item_features)}
                FROM items_checked c
                LEFT JOIN (SELECT item_id, min(ts) AS first_ts FROM events_ok GROUP BY item_id) first
                       ON first.item_id = c.item_id_c
                WHERE c.reason IS NULL AND NOT c.unchanged ORDER BY item_id"""
        ).arrow().read_all()
        batch_item_ids = [r[0] for r in con.execute(
            "SELECT item_id_c FROM items_checked WHERE reason IS NULL ORDER BY item_id_c"
        ).fetchall()]

        # Users with events but no row in a users file get an empty profile when the spec allows it.
        derived = (
            f"""SELECT DISTINCT user_id_c FROM events_checked WHERE reason IS NULL
                AND user_id_c NOT IN (SELECT user_id_c FROM users_checked WHERE reason IS NULL)
                AND user_id_c NOT IN (SELECT user_id FROM {stored_users})"""
            if derive_users
            else f"SELECT NULL::{id_sql} AS user_id_c WHERE false"
        )
        null_features = "".join(f", NULL::{'DOUBLE' if f.kind == 'numeric' else 'TIMESTAMP' if f.kind == 'timestamp' else 'VARCHAR'} AS {_ident(f.name)}" for f in user_features)
        users = con.sql(
            f"""WITH rows AS (
                    SELECT c.user_id_c AS user_id {_select_typed(user_features)} FROM users_checked c
                    WHERE c.reason IS NULL AND NOT c.unchanged
                    UNION ALL BY NAME
                    SELECT d.user_id_c AS user_id {null_features} FROM ({derived}) d
                )
                SELECT r.user_id, COALESCE(first.first_ts, TIMESTAMP '1970-01-01 00:00:01') AS registered_at
                       {''.join(f', r.{_ident(f.name)}' for f in user_features)}
                FROM rows r
                LEFT JOIN (SELECT user_id, min(ts) AS first_ts FROM events_ok GROUP BY user_id) first
                       ON first.user_id = r.user_id
                ORDER BY r.user_id"""
        ).arrow().read_all()
        derived_users = con.execute(f"SELECT count(*) FROM ({derived})").fetchall()[0][0]

        # ---- behaviors: events with no item key, attributed to items by the spec's behavior_keys
        behaviors = None
        behavior_select = ""
        if raw.behaviors is not None:
            con.register("raw_behaviors", raw.behaviors)
            con.execute(
                f"""CREATE OR REPLACE TEMP TABLE behaviors_checked AS
                SELECT *, CASE
                    WHEN user_id_c IS NULL THEN 'unparseable user_id'
                    WHEN ts_c IS NULL THEN 'unparseable timestamp'
                    WHEN ts_c <= TIMESTAMP '1970-01-01' OR ts_c > {max_ts} THEN 'timestamp out of range'
                    WHEN kind_c IS NULL THEN 'missing kind'
                END AS reason
                FROM (SELECT *, {user_id} AS user_id_c, {_ts_expr('ts')} AS ts_c, {_clean_text('kind')} AS kind_c FROM raw_behaviors)"""
            )
            key_columns = "".join(f", {_clean_text(_ident(k))} AS {_ident(k)}" for k in spec.behavior_keys)
            behaviors = con.sql(
                f"""SELECT user_id_c AS user_id, ts_c AS ts, kind_c AS kind {key_columns}
                    FROM behaviors_checked WHERE reason IS NULL ORDER BY ts, user_id"""
            ).arrow().read_all()
            behavior_select = "UNION ALL SELECT 'behaviors', _source, _line, _raw, reason FROM behaviors_checked WHERE reason IS NOT NULL"

        quarantine = con.sql(
            f"""
            SELECT {_lit(run_id)} AS run_id, table_name, _source AS source_file, CAST(_line AS BIGINT) AS line,
                   _raw AS raw, reason, {_lit(now.isoformat(sep=' '))}::TIMESTAMP AS quarantined_at
            FROM (
                SELECT 'items' AS table_name, _source, _line, _raw, reason FROM items_checked WHERE reason IS NOT NULL
                UNION ALL SELECT 'users', _source, _line, _raw, reason FROM users_checked WHERE reason IS NOT NULL
                UNION ALL SELECT 'events', _source, _line, _raw, reason FROM events_checked WHERE reason IS NOT NULL
                {behavior_select}
            ) ORDER BY table_name, source_file, line
            """
        ).df()
        summary = {
            table: con.execute(
                f"SELECT count(*) FILTER (WHERE reason IS NULL), count(*) FILTER (WHERE reason IS NULL AND unchanged) FROM {table}_checked"
            ).fetchall()[0]
            for table in ("items", "users", "events")
        }
        if raw.behaviors is not None:
            summary["behaviors"] = (behaviors.num_rows, 0)
    finally:
        con.close()
    if len(raw.rejected):
        rejected = raw.rejected.rename(columns={"_source": "source_file", "_line": "line", "_raw": "raw"})
        rejected = rejected.assign(run_id=run_id, quarantined_at=pd.Timestamp(now))
        quarantine = pd.concat([quarantine, rejected[QUARANTINE_COLUMNS]], ignore_index=True)

    counts: dict[str, dict[str, int]] = {}
    refused = []
    unchanged: dict[str, int] = {}
    # Events first: when they fail, items whose arrival comes from the events fail as a consequence.
    frames = {"events": raw.events, "users": raw.users, "items": raw.items}
    if raw.behaviors is not None:
        frames["behaviors"] = raw.behaviors
    for name, frame in frames.items():
        rejected_rows = int((raw.rejected["table_name"] == name).sum()) if len(raw.rejected) else 0
        read = len(frame) + rejected_rows
        accepted, same = (int(x) for x in summary[name])
        bad = int((quarantine["table_name"] == name).sum())
        if name == "users" and raw.users_derived:
            read = accepted = users.num_rows  # derived from the events, not read from a file
        counts[name] = {"read": read, "accepted": accepted, "quarantined": bad}
        unchanged[name] = same
        if read and bad / read > max_bad_share:
            reasons = quarantine.loc[quarantine["table_name"] == name, "reason"].value_counts()
            text = "; ".join(f"{r}: {n}" for r, n in reasons.head(5).items())
            if len(reasons) > 5:
                text += f"; {int(reasons.iloc[5:].sum())} more in {len(reasons) - 5} other reasons"
            refused.append(f"{name}: {bad} of {read} rows ({bad / read:.1%}) failed validation ({text}; "
                           f"{_first_bad_lines(quarantine[quarantine['table_name'] == name])})")
    if refused:
        raise IngestError(
            "; ".join(refused) + f". Above the allowed share of {max_bad_share:.1%}: nothing was written, not even to quarantine. "
            "Rerun with --max-bad-share 1 to load the good rows and quarantine every bad one with its line and reason."
        )
    order = ("items", "users", "events", "behaviors")
    counts = {name: counts[name] for name in order if name in counts}
    unchanged = {name: unchanged[name] for name in order if name in unchanged}
    return Canonical(
        items=items, users=users, events=events, quarantine=quarantine, counts=counts, run_id=run_id,
        behaviors=behaviors, unchanged=unchanged, derived_users=0 if raw.users_derived else int(derived_users),
        batch_item_ids=batch_item_ids,
    )


def _prior_sql(relation: str) -> str:
    """The mean positive rate over all first windows: the prior of the smoothed pos_rate."""
    return f"(SELECT COALESCE(sum(positives) / NULLIF(sum(pv), 0), 0.0) FROM {relation})"


def _pos_rate_sql(prior: str, prior_events: float) -> str:
    m = float(prior_events)
    return f"(positives + {m} * {prior}) / (pv + {m})"


def item_stats_sql(spec: DatasetSpec, prior_events: float, items: str = "items") -> str:
    """SQL computing first-window statistics of the items in `items` from tables `events` (and `behaviors`).

    `stats_ts` is when the window closes: only then are the statistics known (point-in-time).
    `pos_rate` is smoothed toward the mean positive rate over the windows of `items` with
    `prior_events`; `pos_rate_update_sql` recomputes it over a whole `item_stats` table.
    Behaviors (no item key) count for every item sharing the spec's `behavior_keys` values.
    """
    w = int(spec.stats_window_days)
    kinds = COUNTED_KINDS
    keyed_cte, keyed_join = "", ""
    keyed = {k: "0" for k in kinds}
    if spec.behavior_keys:
        on = " AND ".join(f"b.{_ident(k)} = i.{_ident(k)}" for k in spec.behavior_keys)
        counts = ", ".join(f"count(*) FILTER (WHERE b.kind = '{k}') AS k_{k}" for k in kinds)
        keyed_cte = f""", keyed AS (
        SELECT i.item_id, {counts}
        FROM {items} i JOIN behaviors b
          ON {on} AND b.ts >= i.listed_at AND b.ts < i.listed_at + INTERVAL {w} DAY
        GROUP BY i.item_id
    )"""
        keyed_join = "LEFT JOIN keyed k ON k.item_id = c.item_id"
        keyed = {k: f"COALESCE(k.k_{k}, 0)" for k in kinds}
    per_kind = ",\n               ".join(
        f"CAST(count(user_id) FILTER (WHERE kind = '{k}') AS DOUBLE) AS n_{k}" for k in kinds
    )
    kind_columns = ", ".join(f"c.n_{k} + {keyed[k]} AS n_{k}" for k in kinds)
    return f"""
    WITH windowed AS (
        SELECT i.item_id, i.listed_at, e.user_id, e.kind, e.label, e.value
        FROM {items} i LEFT JOIN events e
          ON e.item_id = i.item_id AND e.ts >= i.listed_at AND e.ts < i.listed_at + INTERVAL {w} DAY
    ), counts AS (
        SELECT item_id, listed_at,
               CAST(count(user_id) AS DOUBLE) AS pv,
               CAST(count(DISTINCT user_id) AS DOUBLE) AS uv,
               CAST(COALESCE(sum(label), 0) AS DOUBLE) AS positives,
               {per_kind},
               avg(value) AS value_mean
        FROM windowed GROUP BY item_id, listed_at
    ){keyed_cte}
    SELECT c.item_id,
           c.listed_at + INTERVAL {w} DAY AS stats_ts,
           c.pv, c.uv, c.positives,
           {_pos_rate_sql(_prior_sql('counts'), prior_events)} AS pos_rate,
           {kind_columns},
           c.value_mean
    FROM counts c {keyed_join} ORDER BY c.item_id
    """


def pos_rate_update_sql(prior_events: float, table: str = "item_stats") -> str:
    """Recompute `pos_rate` of every row of an item statistics table with the prior over all of them."""
    return f"UPDATE {table} SET pos_rate = {_pos_rate_sql(_prior_sql(table), prior_events)}"
