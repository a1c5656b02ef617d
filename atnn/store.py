"""The Feast feature store of atnn: apply, materialize, and point-in-time retrieval.

The repository itself (feature_store.yaml, definitions.py) lives in `features/`; this module points it
at a home directory through environment variables and calls Feast's own apply and retrieval.
Only flows and this module import Feast; the model code never does.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pandas as pd

from atnn.config import Settings
from atnn.spec import DatasetSpec


def _feast_env(settings: Settings, spec: DatasetSpec) -> dict[str, str]:
    return {
        "ATNN_FEAST_HOME": str(settings.paths.feast_home),
        "ATNN_FEAST_DATA": str(settings.paths.canonical_dir),
        "ATNN_SPEC": spec.source or spec.name,
    }


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def open_store(settings: Settings, spec: DatasetSpec):
    """A FeatureStore over `features/` with this home's registry, online store and Parquet sources."""
    from feast import FeatureStore

    settings.paths.feast_home.mkdir(parents=True, exist_ok=True)
    with _environment(_feast_env(settings, spec)):
        return FeatureStore(repo_path=str(settings.paths.feature_repo))


def apply(settings: Settings, spec: DatasetSpec) -> str:
    """`feast apply` of the repository (imports definitions.py as the CLI does); returns its log."""
    from feast.repo_config import load_repo_config
    from feast.repo_operations import apply_total

    settings.paths.feast_home.mkdir(parents=True, exist_ok=True)
    repo = settings.paths.feature_repo
    cwd = os.getcwd()
    out = io.StringIO()
    if str(repo) not in sys.path:
        sys.path.append(str(repo))  # as the feast CLI does: definitions are imported by module name
    # A definitions module cached by an earlier apply in this process would keep that apply's spec
    # and Parquet paths (another dataset or home): import it afresh.
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if path and Path(path).resolve().parent == Path(repo).resolve():
            del sys.modules[name]
    with _environment(_feast_env(settings, spec)), contextlib.redirect_stdout(out):
        try:
            config = load_repo_config(repo, repo / "feature_store.yaml")
            apply_total(config, repo, skip_source_validation=False)
        finally:
            os.chdir(cwd)  # apply_total changes directory into the repository
    return out.getvalue()


def materialize(settings: Settings, spec: DatasetSpec, start: datetime, end: datetime) -> None:
    """Load feature values with timestamps in [start, end) into the SQLite online store."""
    store = open_store(settings, spec)
    with contextlib.redirect_stdout(io.StringIO()):
        store.materialize(start_date=_utc(start), end_date=_utc(end))


def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)


def historical_features(
    settings: Settings, spec: DatasetSpec, entity_df: pd.DataFrame, service: str
) -> pd.DataFrame:
    """Point-in-time join of a feature service onto `entity_df` (needs `event_timestamp`).

    Rows come back in the order of `entity_df` (Feast does not keep it), with every entity row kept:
    a feature with no value at that time is null.
    """
    store = open_store(settings, spec)
    frame = entity_df.reset_index(drop=True).copy()
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    frame["_row"] = range(len(frame))
    result = store.get_historical_features(entity_df=frame, features=store.get_feature_service(service)).to_df()
    if len(result) != len(frame):
        raise RuntimeError(f"Feast returned {len(result)} rows for {len(frame)} entity rows")
    return result.sort_values("_row").drop(columns="_row").reset_index(drop=True)


def online_item_profiles(settings: Settings, spec: DatasetSpec, item_ids: list) -> pd.DataFrame:
    """Item profiles from the online store (after `materialize`)."""
    store = open_store(settings, spec)
    fields = [f"item_profile:{f.name}" for f in spec.item_features]
    rows = [{"item_id": i} for i in item_ids]
    return store.get_online_features(features=fields, entity_rows=rows).to_df()


def point_in_time_features(
    settings: Settings, spec: DatasetSpec, entity_df: pd.DataFrame, service: str, *, arrow_strings: bool = True
) -> pd.DataFrame:
    """The point-in-time join of `historical_features`, run by DuckDB straight on the Feast sources.

    Same answer as Feast's get_historical_features for atnn's views (ttl 0, no created timestamp:
    each entity row gets the latest source row at or before its event_timestamp, nulls when there is
    none), same row order, in one ASOF JOIN per feature view. The views, their sources, timestamp
    fields and feature names are read from the Feast registry, so the definitions stay the one truth.
    Measured on 1M new arrivals (benchmarks/speed.md) it is far faster and lighter than the Feast
    call, which builds the join through ibis and returns object columns; `arrow_strings` keeps text
    columns Arrow-backed (no Python object per value).
    """
    import duckdb
    import pyarrow as pa

    feature_store = open_store(settings, spec)
    feature_service = feature_store.get_feature_service(service)
    frame = entity_df.reset_index(drop=True)
    entities = pa.table(
        {
            **{c: frame[c].to_numpy() for c in frame.columns if c != "event_timestamp"},
            "event_timestamp": pd.to_datetime(frame["event_timestamp"], utc=True).to_numpy(dtype="datetime64[us]"),
            "_row": pa.array(range(len(frame)), pa.int64()),
        }
    )
    selects, joins = [], []
    for n, projection in enumerate(feature_service.feature_view_projections):
        view = feature_store.get_feature_view(projection.name)
        if view.ttl and view.ttl.total_seconds() > 0:
            raise NotImplementedError(f"feature view {view.name} has a ttl; use historical_features")
        source = view.batch_source
        keys = [column.name for column in view.entity_columns]
        names = [f.name for f in projection.features]
        alias = f"v{n}"
        ts = source.timestamp_field
        columns = ", ".join(f'"{c}"' for c in dict.fromkeys([*keys, ts, *names]))
        on = " AND ".join(f'e."{k}" = {alias}."{k}"' for k in keys)
        # Filters the Parquet reader can push down (row-group statistics): only keys in the entities'
        # range, only rows not newer than the latest entity time. They drop no row the join could use.
        where = [f"\"{ts}\"::TIMESTAMPTZ <= (SELECT max(event_timestamp) FROM entities)::TIMESTAMPTZ"]
        if len(keys) == 1 and len(frame):
            where.append(f'"{keys[0]}" BETWEEN (SELECT min("{keys[0]}") FROM entities) AND (SELECT max("{keys[0]}") FROM entities)')
        joins.append(
            f"""ASOF LEFT JOIN (SELECT {columns} FROM read_parquet('{source.path}') WHERE {' AND '.join(where)}) {alias}
                ON {on} AND e.event_timestamp::TIMESTAMP >= {alias}."{ts}"::TIMESTAMPTZ AT TIME ZONE 'UTC'"""
        )
        selects += [f'{alias}."{c}"' for c in names]
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("entities", entities)
        select = ", ".join(["e.* EXCLUDE (_row)", *selects])
        table = con.sql(f"SELECT {select} FROM entities e {' '.join(joins)} ORDER BY e._row").to_arrow_table()
    finally:
        con.close()
    if arrow_strings:
        strings = {i for i, field in enumerate(table.schema) if pa.types.is_string(field.type) or pa.types.is_large_string(field.type)}
        out = pd.DataFrame({
            field.name: (pd.Series(table.column(i).combine_chunks(), dtype=pd.ArrowDtype(pa.string())) if i in strings else table.column(i).to_pandas())
            for i, field in enumerate(table.schema)
        })
    else:
        out = table.to_pandas()
    out["event_timestamp"] = pd.to_datetime(out["event_timestamp"], utc=True)
    return out
