"""Readers in another process during rank writes: no failure, no torn read; snapshots for long sessions."""

import subprocess
import sys
from pathlib import Path

import pytest

from atnn.concurrency import measure
from atnn.warehouse import publish_snapshot, read_sql, session

pytestmark = pytest.mark.slow


def test_reads_during_writes_never_fail_or_tear(tmp_path):
    report = measure(tmp_path / "w.duckdb", reads=60, writes=8, rows=5_000, interval_s=0.1)
    assert report.writes == 8 and report.reads >= 60
    assert report.reads_during_writes > 0
    assert report.reader_failures == 0
    assert report.torn_reads == 0


def test_snapshot_is_readable_while_the_warehouse_is_locked(tmp_path):
    db = tmp_path / "w.duckdb"
    with session(db) as con:
        con.execute("CREATE TABLE rankings AS SELECT range AS item_id FROM range(10)")
    snapshot = publish_snapshot(db)
    with session(db) as writer:  # the daily job holds the warehouse...
        writer.execute("INSERT INTO rankings SELECT 99")
        # ...while another process reads the snapshot with the DuckDB CLI.
        cli = Path(sys.executable).parent / "duckdb"
        out = subprocess.run([str(cli), "-readonly", str(snapshot), "SELECT count(*) FROM rankings"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "10" in out.stdout
    assert read_sql(db, "SELECT count(*) AS n FROM rankings")["n"].iloc[0] == 11
