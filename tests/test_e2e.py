"""End to end on the real ML-100K: `atnn demo` as a user runs it, then the outputs it promises."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from atnn import artifacts
from atnn.warehouse import read_sql

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, real_data_dir):
    root = tmp_path_factory.mktemp("e2e")
    env = {
        **os.environ,
        "ATNN_DATA_DIR": str(real_data_dir),
        "ATNN_HOME": str(root / "home"),
        "ATNN_ONNX_DIR": str(root / "onnx"),
        "ATNN_PROFILE": "test",  # a small training budget; the pipeline is the real one
        "PREFECT_HOME": str(root / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    done = subprocess.run([str(BIN / "atnn"), "demo"], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return root, done.stdout


def test_demo_ranks_the_busiest_arrival_day(demo_run):
    root, stdout = demo_run
    db = root / "home" / "atnn.duckdb"
    counts = read_sql(db, "SELECT ds, count(*) AS n, min(rank) AS lo, max(rank) AS hi FROM rankings GROUP BY ds")
    assert counts.values.tolist() == [[pd.Timestamp("1998-01-23"), 46, 1, 46]]
    assert "Top 10 new arrivals of 1998-01-23" in stdout
    scores = read_sql(db, "SELECT score, title FROM rankings ORDER BY rank")
    assert scores["score"].between(0, 1).all() and scores["score"].is_monotonic_decreasing
    assert scores["title"].notna().all()
    ingest = read_sql(db, "SELECT counts FROM ingest_runs")["counts"].iloc[0]
    assert '"read": 100000' in ingest


def test_generator_auc_is_above_chance_and_model_is_champion(demo_run):
    root, _ = demo_run
    models = read_sql(root / "home" / "atnn.duckdb", "SELECT * FROM models")
    assert len(models) == 1 and bool(models["champion"].iloc[0])
    assert models["validation_auc"].iloc[0] > 0.6


def test_onnx_matches_torch_on_real_rows(demo_run):
    root, _ = demo_run
    db = root / "home" / "atnn.duckdb"
    row = read_sql(db, "SELECT artifact_path, checkpoint_path FROM models WHERE champion").iloc[0]
    checkpoint = artifacts.load_checkpoint(Path(row["checkpoint_path"]))
    items = read_sql(db, "SELECT * FROM items")
    inputs = checkpoint.encoder.encode(items, "item")
    diff = artifacts.max_abs_difference(checkpoint, Path(row["artifact_path"]) / "model.onnx", inputs)
    assert diff <= 1e-5


def test_duckdb_cli_reads_the_warehouse(demo_run):
    root, _ = demo_run
    out = subprocess.run(
        [str(BIN / "duckdb"), str(root / "home" / "atnn.duckdb"), "SELECT ds, count(*) FROM rankings GROUP BY ds"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "1998-01-23" in out.stdout and "46" in out.stdout
