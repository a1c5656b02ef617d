"""What every flow needs: settings and spec from flow parameters, and Feast as the feature reader."""

from __future__ import annotations

from typing import Any

import pandas as pd

from atnn import store
from atnn.config import Settings, load_settings
from atnn.spec import DatasetSpec, load_spec
from atnn.warehouse import is_transient


def settings_for(
    dataset: str | None = None,
    profile: str | None = None,
    home: str | None = None,
    data_dir: str | None = None,
    onnx_dir: str | None = None,
    spec: str | None = None,
) -> tuple[Settings, DatasetSpec]:
    settings = load_settings(profile=profile, dataset=dataset, home=home, data_dir=data_dir, onnx_dir=onnx_dir)
    return settings, load_spec(spec or settings.dataset)


def feast_reader(settings: Settings, spec: DatasetSpec):
    """Point-in-time retrieval from the Feast offline store (DuckDB), as the pipeline expects."""

    def read(entities: pd.DataFrame, service: str) -> pd.DataFrame:
        return store.historical_features(settings, spec, entities, service)

    return read


def ranking_reader(settings: Settings, spec: DatasetSpec):
    """The ranking's bulk profile read: Feast's point-in-time join run by DuckDB on the feature
    views' sources (store.point_in_time_features; benchmarks/speed.md has the measured options)."""

    def read(entities: pd.DataFrame, service: str) -> pd.DataFrame:
        return store.point_in_time_features(settings, spec, entities, service)

    return read


def retry_if_transient(task, task_run, state) -> bool:
    """Prefect retry condition: retry a locked file or busy store; fail at once on anything else."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception as error:  # the result itself could not be read
        exc = error
    return is_transient(exc if isinstance(exc, BaseException) else None)


# Retries with backoff for transient failures only; permanent ones fail the flow at once.
RETRY = {"retries": 3, "retry_delay_seconds": [1, 5, 15], "retry_condition_fn": retry_if_transient}


def as_dict(obj: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(obj)
