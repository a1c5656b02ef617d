"""Flows of the service under prefect_test_harness: backfill = daily-rank day by day, evaluate, materialize;
and prefect.yaml (deployment names, schedules, timezone) checked against the flows."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml

from atnn import pipeline, store
from atnn.config import PROJECT_ROOT
from atnn.spec import load_spec
from atnn.warehouse import read_sql


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def trained(tiny_settings):
    spec = load_spec("ml-100k")
    pipeline.ingest(tiny_settings, spec)
    store.apply(tiny_settings, spec)
    ds = pipeline.busiest_arrival_day(tiny_settings.paths.db)
    as_of = datetime.combine(ds, datetime.min.time())
    entities = pipeline.training_entities(tiny_settings.paths.db, spec, as_of)
    model = pipeline.train_and_export(tiny_settings, spec, store.historical_features(tiny_settings, spec, entities, "atnn_training"), as_of=as_of)
    return tiny_settings, ds, model


@pytest.mark.slow
def test_backfill_ranks_each_day_as_daily_rank_does_then_evaluate(harness, trained, tmp_path):
    from flows.backfill import backfill
    from flows.daily_rank import daily_rank
    from flows.evaluate import evaluate
    from flows.materialize import materialize

    settings, ds, model = trained
    kwargs = dict(dataset="ml-100k", profile="test", home=str(settings.paths.home))
    db = settings.paths.db
    daily = daily_rank(date=ds.isoformat(), **kwargs)
    one_day = read_sql(db, "SELECT * EXCLUDE (ranked_at) FROM rankings ORDER BY rank")
    one_day_similar = read_sql(db, "SELECT * EXCLUDE (computed_at) FROM similar_items ORDER BY item_id, neighbor_rank")
    assert daily["ranked"] == len(one_day) > 0 and set(one_day_similar["item_id"]) == set(one_day["item_id"])

    start = ds - timedelta(days=6)
    report = backfill(start=start.isoformat(), end=ds.isoformat(), **kwargs)
    expected_days = read_sql(
        db, "SELECT count(DISTINCT listed_at::DATE) AS n, count(*) AS items FROM items WHERE listed_at::DATE BETWEEN ? AND ?",
        [start, ds],
    ).iloc[0]
    assert report["days"] == 7 and report["days_with_arrivals"] == expected_days["n"]
    assert report["ranked"] == expected_days["items"] and report["model_version"] == model.version
    # The bulk point-in-time read gives exactly the ranking of a day ranked on its own.
    again = read_sql(db, "SELECT * EXCLUDE (ranked_at) FROM rankings WHERE ds = ? ORDER BY rank", [ds])
    assert again.reset_index(drop=True).equals(one_day.reset_index(drop=True))
    assert read_sql(db, "SELECT * EXCLUDE (computed_at) FROM similar_items WHERE ds = ? ORDER BY item_id, neighbor_rank",
                    [ds]).equals(one_day_similar)

    chart = tmp_path / "quality.png"
    result = evaluate(**kwargs, min_events=1, min_items=2, chart=str(chart))
    quality = read_sql(db, "SELECT * FROM ranking_quality")
    assert result["day_rows"] + result["month_rows"] == len(quality) > 0
    assert set(quality["model_version"]) == {model.version}
    assert quality["spearman"].between(-1, 1).all() and chart.read_bytes()[:4] == b"\x89PNG"

    window = materialize(date=ds.isoformat(), lookback_days=10, **kwargs)
    assert window["end"] == (datetime.combine(ds, datetime.min.time()) + timedelta(days=1)).isoformat()


def test_date_defaults_to_the_scheduled_day_in_the_timezone(monkeypatch):
    from flows.daily_rank import resolve_date

    import prefect.runtime.flow_run

    monkeypatch.setattr(prefect.runtime.flow_run, "scheduled_start_time", datetime.fromisoformat("2026-01-01T23:30:00+00:00"),
                        raising=False)
    assert resolve_date(None, "UTC").isoformat() == "2026-01-01"
    assert resolve_date(None, "Asia/Tokyo").isoformat() == "2026-01-02"
    assert resolve_date("2025-05-05", "Asia/Tokyo").isoformat() == "2025-05-05"


def test_prefect_yaml_deploys_every_flow_with_explicit_timezones():
    config = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())
    deployments = {}
    for deployment in config["deployments"]:
        module, name = deployment["entrypoint"].split(":")
        source = (PROJECT_ROOT / module).read_text()
        flow_name = source.split('@flow(name="', 1)[1].split('"', 1)[0]
        assert f"def {name}(" in source
        deployments[f"{flow_name}/{deployment['name']}"] = deployment
        assert deployment["work_pool"]["name"] == "atnn-local"
    assert {"daily-rank/daily", "materialize/daily", "train/weekly", "backfill/range", "evaluate/daily"} <= set(deployments)
    rank = deployments["daily-rank/daily"]
    (schedule,) = rank["schedules"]
    assert schedule["timezone"] == rank["parameters"]["timezone"] == deployments["materialize/daily"]["parameters"]["timezone"]
    for deployment in deployments.values():
        for schedule in deployment.get("schedules", []):
            assert schedule["timezone"] and schedule["cron"]
    # materialize runs before daily-rank on the same day
    assert int(deployments["materialize/daily"]["schedules"][0]["cron"].split()[1]) < int(schedule_hour(rank))


def schedule_hour(deployment) -> str:
    return deployment["schedules"][0]["cron"].split()[1]
