"""Flows under prefect_test_harness on tiny data: ingest -> train -> daily-rank, idempotent reruns."""

import json
from pathlib import Path

import pytest
from prefect.testing.utilities import prefect_test_harness

from atnn.warehouse import read_sql

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_demo_flow_ranks_a_day_and_rerun_is_idempotent(tiny_settings):
    from flows.daily_rank import daily_rank
    from flows.demo import demo

    home = str(tiny_settings.paths.home)
    kwargs = dict(dataset="ml-100k", profile="test", home=home)
    result = demo(**kwargs, data_dir=str(tiny_settings.paths.data_dir), onnx_dir=str(tiny_settings.paths.onnx_dir))
    ingest, train, rank = result["ingest"], result["train"], result["rank"]
    assert all(c["read"] == c["accepted"] + c["quarantined"] for c in ingest["counts"].values())
    assert train["promoted"] is True
    assert Path(train["onnx_path"]).is_file() and train["onnx_max_abs_diff"] <= 1e-5
    metadata = json.loads((Path(train["onnx_path"]).parent / "metadata.json").read_text())
    assert [i["name"] for i in metadata["inputs"]] == ["genres", "year", "decade", "title"]
    assert rank["ranked"] == rank["new_arrivals"] > 0

    db = tiny_settings.paths.db
    first = read_sql(db, "SELECT * FROM rankings ORDER BY ds, rank")
    again = daily_rank(date=rank["ds"], **kwargs)
    second = read_sql(db, "SELECT * FROM rankings ORDER BY ds, rank")
    assert again["ranked"] == rank["ranked"]
    assert first.drop(columns="ranked_at").equals(second.drop(columns="ranked_at"))
    assert set(second["model_version"]) == {train["version"]}


def test_daily_rank_date_defaults_to_scheduled_day():
    from flows.daily_rank import resolve_date

    assert str(resolve_date("1998-01-23")) == "1998-01-23"
    assert str(resolve_date("1998-01-23T06:00:00+00:00")) == "1998-01-23"
