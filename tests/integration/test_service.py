"""The real service on loopback: Prefect server + process worker in a temporary PREFECT_HOME, the
deployments of prefect.yaml, and `daily-rank/daily` run twice for a real day of tiny data."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest

from atnn import pipeline, store
from atnn.config import PROJECT_ROOT, load_settings
from atnn.service import Service, service_profile, start, stop
from atnn.spec import load_spec
from atnn.warehouse import read_sql

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_using(prefect_home: Path) -> list[str]:
    """Command lines of live processes whose environment names this PREFECT_HOME (ours only: readable)."""
    found = []
    needle = f"PREFECT_HOME={prefect_home}".encode()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if needle in (proc / "environ").read_bytes().split(b"\0") and (proc / "stat").read_text().rsplit(") ", 1)[1][0] != "Z":
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return found


def post(api_url: str, path: str, body: dict) -> list[dict]:
    request = urllib.request.Request(
        f"{api_url}/{path}", method="POST", headers={"Content-Type": "application/json"}, data=json.dumps(body).encode()
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def artifacts(api_url: str, key: str) -> list[dict]:
    return post(api_url, "artifacts/filter", {"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC"})


@pytest.fixture(scope="module")
def trained_home(tmp_path_factory, tiny_data_dir):
    """Tiny ML-100K ingested, applied to Feast and trained (library calls, no Prefect)."""
    root = tmp_path_factory.mktemp("service")
    settings = load_settings(profile="test", dataset="ml-100k", home=root / "home", data_dir=tiny_data_dir,
                             onnx_dir=root / "onnx")
    spec = load_spec("ml-100k")
    pipeline.ingest(settings, spec)
    store.apply(settings, spec)
    ds = pipeline.busiest_arrival_day(settings.paths.db)
    as_of = datetime.combine(ds, datetime.min.time())
    frame = store.historical_features(settings, spec, pipeline.training_entities(settings.paths.db, spec, as_of), "atnn_training")
    report = pipeline.train_and_export(settings, spec, frame, as_of=as_of)
    return root, settings, ds, report


def test_daily_rank_deployment_on_a_real_server(trained_home):
    root, settings, ds, model = trained_home
    service = Service(prefect_home=root / "prefect", port=free_port(), project_dir=PROJECT_ROOT)
    extra = {"ATNN_HOME": str(settings.paths.home), "ATNN_ONNX_DIR": str(settings.paths.onnx_dir),
             "ATNN_DATA_DIR": str(settings.paths.data_dir), "ATNN_PROFILE": "test", "OMP_NUM_THREADS": "1"}
    env = service.env(extra)
    prefect = str(Path(sys.executable).with_name("prefect"))
    try:
        pids = start(service, extra_env=extra)
        assert set(pids) == {"server", "worker"}
        assert service_profile(service.prefect_home) == service.api_url
        flows = {f["id"]: f["name"] for f in post(service.api_url, "flows/filter", {})}
        names = {f"{flows[d['flow_id']]}/{d['name']}" for d in post(service.api_url, "deployments/filter", {})}
        assert {"daily-rank/daily", "materialize/daily", "train/weekly", "backfill/range", "evaluate/daily"} <= names

        runs = []
        for attempt in range(2):  # the second run must change nothing but ranked_at (idempotent)
            result = subprocess.run(
                [prefect, "deployment", "run", "daily-rank/daily", "--param", f"date={ds.isoformat()}",
                 "--watch", "--watch-interval", "1", "--watch-timeout", "90"],
                env=env, capture_output=True, text=True, timeout=120,
            )
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:] + service.log_file("worker").read_text()[-3000:]
            runs.append(read_sql(settings.paths.db, "SELECT * FROM rankings ORDER BY ds, rank"))
        first, second = runs
        arrivals = read_sql(settings.paths.db, "SELECT count(*) AS n FROM items WHERE listed_at::DATE = ?", [ds])["n"].iloc[0]
        assert len(first) == arrivals > 0
        assert set(first["ds"].astype(str)) == {ds.isoformat()}
        assert set(first["model_version"]) == {model.version}
        assert first.drop(columns="ranked_at").equals(second.drop(columns="ranked_at"))
        assert (second["ranked_at"] > first["ranked_at"]).all()

        neighbours = read_sql(settings.paths.db, "SELECT item_id, count(*) AS n FROM similar_items GROUP BY item_id")
        assert set(neighbours["item_id"]) == set(first["item_id"]) and set(neighbours["n"]) == {5}

        tables = artifacts(service.api_url, "daily-rank-top")
        assert len(tables) == 2
        top = json.loads(tables[0]["data"]) if isinstance(tables[0]["data"], str) else tables[0]["data"]
        assert [row["item_id"] for row in top] == first["item_id"].head(20).tolist()
        summary = artifacts(service.api_url, "daily-rank-summary")[0]["data"]
        assert f"new arrivals: {arrivals}" in summary and model.version in summary
    finally:
        stopped = stop(service)
    assert stopped == {"worker": True, "server": True}
    assert processes_using(service.prefect_home) == []
    assert not service.pid_file("server").exists() and not service.pid_file("worker").exists()
    assert service_profile(service.prefect_home) is None  # later CLI runs go in-process again
