"""The real ML-100K files corrupted in each way: the stated outcome, and counts that reconcile.

Row-level faults go to quarantine with a reason while good rows go on; a file in the wrong format
stops the ingest with one error naming the file and leaves every table as it was.
"""

import shutil
from pathlib import Path

import pandas as pd
import pytest

from atnn import pipeline
from atnn.canonical import IngestError
from atnn.config import load_settings
from atnn.readers import FormatError
from atnn.spec import load_spec
from atnn.warehouse import read_sql

pytestmark = pytest.mark.slow
SPEC = load_spec("ml-100k")
TABLES = ("items", "users", "events", "item_stats")


@pytest.fixture
def loaded(tmp_path, real_data_dir):
    """A warehouse with the real ML-100K ingested, and a private copy of the raw files to corrupt."""
    raw = tmp_path / "raw"
    shutil.copytree(real_data_dir / "ml-100k", raw)
    settings = load_settings(profile="test", home=tmp_path / "home", data_dir=real_data_dir)
    report = pipeline.ingest(settings, SPEC)
    assert report.counts["events"]["accepted"] == 100_000
    return settings, raw


def _fingerprint(db: Path) -> dict[str, tuple]:
    out = {}
    for table in TABLES:
        row = read_sql(db, f"SELECT count(*) AS n, sum(hash(t)) AS h FROM {table} t").iloc[0]
        out[table] = (int(row["n"]), int(row["h"]))
    return out


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="latin-1").splitlines()


def _write(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n", encoding="latin-1")


def _reconciles(report) -> None:
    for table, c in report.counts.items():
        assert c["read"] == c["accepted"] + c["quarantined"], table


def _quarantined(settings, reason: str) -> pd.DataFrame:
    return read_sql(settings.paths.db, "SELECT * FROM quarantine WHERE reason = ? ORDER BY line", [reason])


def test_truncated_file_quarantines_the_cut_line(loaded):
    settings, raw = loaded
    data = (raw / "u.data").read_bytes()
    cut = data.index(b"\n", len(data) - 300) + 7  # a few bytes into a line near the end
    (raw / "u.data").write_bytes(data[:cut])
    kept = data[:cut].count(b"\n")
    report = pipeline.ingest(settings, SPEC, raw_dir=raw)
    _reconciles(report)
    assert report.counts["events"] == {"read": kept + 1, "accepted": kept, "quarantined": 1}
    bad = read_sql(settings.paths.db, "SELECT line, reason FROM quarantine WHERE table_name = 'events'")
    assert bad["line"].tolist() == [kept + 1]
    assert bad["reason"].iloc[0] in ("expected 4 fields separated by '\\t', got 1", "expected 4 fields separated by '\\t', got 2",
                                     "expected 4 fields separated by '\\t', got 3", "timestamp out of range")


def test_unknown_ids_duplicates_and_negative_timestamps_are_quarantined(loaded):
    settings, raw = loaded
    lines = _lines(raw / "u.data")
    extra = [f"5000\t{i}\t4\t881250949" for i in range(1, 11)]  # unknown user
    extra += [f"1\t9999\t4\t881250949"] * 1  # unknown item
    extra += lines[:10]  # exact duplicates of the first ten ratings
    extra += [f"2\t{i}\t3\t-{881250949 + i}" for i in range(1, 6)]  # negative Unix times
    _write(raw / "u.data", lines + extra)
    report = pipeline.ingest(settings, SPEC, raw_dir=raw)
    _reconciles(report)
    assert report.counts["events"] == {"read": 100_026, "accepted": 100_000, "quarantined": 26}
    assert report.quarantine_reasons == {
        "unknown user_id": 10, "duplicate event (user_id, item_id, ts, kind)": 10,
        "timestamp out of range": 5, "unknown item_id": 1,
    }
    dup = _quarantined(settings, "duplicate event (user_id, item_id, ts, kind)")
    assert dup["line"].tolist() == list(range(100_012, 100_022))  # the later copies, by line number
    assert dup["raw"].tolist() == lines[:10]
    assert read_sql(settings.paths.db, "SELECT count(*) AS n FROM events")["n"].iloc[0] == 100_000


def test_missing_required_profile_field(loaded):
    settings, raw = loaded
    lines = _lines(raw / "u.user")
    lines[4] = "5|NaN|F|other|15213"  # age is not a number: no age band
    _write(raw / "u.user", lines)
    report = pipeline.ingest(settings, SPEC, raw_dir=raw)
    _reconciles(report)
    assert report.counts["users"]["quarantined"] == 1
    assert _quarantined(settings, "missing required field age_band")["line"].tolist() == [5]
    # The user's ratings now name an unknown user: quarantined too, and still under the allowed share.
    assert report.quarantine_reasons["unknown user_id"] == int((pd.Series(_lines(raw / "u.data")).str.split("\t").str[0] == "5").sum())


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda raw: (raw / "u.data").write_text(""), r"u\.data: file is empty"),
        (lambda raw: _write(raw / "u.data", [l.replace("\t", ",") for l in _lines(raw / "u.data")]),
         r"u\.data: only 0 of 100000 lines have the expected 4 fields"),
        (lambda raw: _write(raw / "u.user", ["|".join(l.split("|")[:4]) for l in _lines(raw / "u.user")]),
         r"u\.user: only 0 of 943 lines have the expected 5 fields"),
        (lambda raw: (raw / "u.user").write_bytes((raw / "u.user").read_text(encoding="latin-1").encode("utf-16")),
         r"u\.user: not valid utf-8"),
        (lambda raw: (raw / "u.item").unlink(), r"u\.item: file not found"),
    ],
    ids=["empty", "wrong-separator", "missing-column", "wrong-encoding", "missing-file"],
)
def test_wrong_format_stops_with_one_error_and_changes_nothing(loaded, corrupt, message):
    settings, raw = loaded
    before = _fingerprint(settings.paths.db)
    parquet = {p.name: p.stat().st_mtime_ns for p in settings.paths.canonical_dir.glob("*.parquet")}
    corrupt(raw)
    with pytest.raises(FormatError, match=message):
        pipeline.ingest(settings, SPEC, raw_dir=raw)
    assert _fingerprint(settings.paths.db) == before
    assert {p.name: p.stat().st_mtime_ns for p in settings.paths.canonical_dir.glob("*.parquet")} == parquet


def test_swapped_columns_exceed_the_bad_share_and_change_nothing(loaded):
    settings, raw = loaded
    before = _fingerprint(settings.paths.db)
    swapped = []
    for line in _lines(raw / "u.data"):
        user, item, rating, ts = line.split("\t")
        swapped.append("\t".join([user, item, ts, rating]))  # rating and timestamp columns swapped
    _write(raw / "u.data", swapped)
    with pytest.raises(IngestError, match=r"events: 100000 of 100000 rows \(100\.0%\) failed validation"):
        pipeline.ingest(settings, SPEC, raw_dir=raw)
    assert _fingerprint(settings.paths.db) == before


def test_ingest_twice_gives_the_same_tables(loaded, real_data_dir):
    settings, _ = loaded
    before = _fingerprint(settings.paths.db)
    quarantine = read_sql(settings.paths.db, "SELECT count(*) AS n FROM quarantine")["n"].iloc[0]
    pipeline.ingest(settings, SPEC)
    assert _fingerprint(settings.paths.db) == before
    assert read_sql(settings.paths.db, "SELECT count(*) AS n FROM quarantine")["n"].iloc[0] == quarantine
