"""A ranking process killed mid-write (SIGKILL) leaves a complete old day or a complete new day."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from atnn.concurrency import DAY, _ranked
from atnn.scoring import Ranked, write_rankings
from atnn.spec import load_spec
from atnn.warehouse import read_sql

pytestmark = pytest.mark.slow
ROWS = 30_000
WRITER = Path(__file__).with_name("crash_writer.py")


def _day_state(db: Path) -> tuple[int, int, int, int]:
    row = read_sql(
        db,
        "SELECT count(*), count(DISTINCT model_version), count(DISTINCT item_id), coalesce(max(rank), 0) FROM rankings WHERE ds = ?",
        [DAY],
    ).iloc[0]
    return tuple(int(x) for x in row)


def test_sigkill_mid_write_never_leaves_a_partial_day(tmp_path):
    rng = random.Random(7)
    db = tmp_path / "crash.duckdb"
    seen_versions = set()
    for attempt in range(20):
        proc = subprocess.Popen(
            [sys.executable, str(WRITER), str(db), str(ROWS)], stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        )
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.6))  # lands anywhere in a write: delete, insert or commit
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        n, versions, items, max_rank = _day_state(db)
        assert (n, versions, items, max_rank) == (ROWS, 1, ROWS, ROWS), f"attempt {attempt}: partial day {n, versions}"
        seen_versions.add(read_sql(db, "SELECT any_value(model_version) AS v FROM rankings")["v"].iloc[0])
    # The kills landed at different points (different last committed versions).
    assert len(seen_versions) > 1
    # A rerun completes after the crashes.
    write_rankings(db, Ranked(DAY, "rerun", _ranked(ROWS, 1), pd.DataFrame(columns=["item_id", "reason"])), load_spec("ml-100k"))
    assert _day_state(db) == (ROWS, 1, ROWS, ROWS)
    assert read_sql(db, "SELECT DISTINCT model_version FROM rankings")["model_version"].tolist() == ["rerun"]
