"""Readers during writes: measure SQL reads in one process while another re-ranks a day.

DuckDB lets one process write or many read, never both. atnn keeps every write one short transaction
(open, write, commit, close) and readers use `atnn.warehouse.read_sql`, which retries a locked file
with backoff. This module measures that arrangement: reads that fail, torn reads (a day seen half
old, half new), and the worst wait a reader and the writer saw.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

DAY = date(2000, 1, 1)


@dataclass
class ReaderReport:
    reads: int
    writes: int
    rows_per_write: int
    reads_during_writes: int
    reader_failures: int
    torn_reads: int
    reader_worst_wait_s: float
    reader_median_wait_s: float
    writer_worst_wait_s: float
    wall_s: float


def _ranked(rows: int, version: int) -> pd.DataFrame:
    rng = np.random.default_rng(version)
    scores = np.sort(rng.random(rows))[::-1]
    return pd.DataFrame(
        {
            "item_id": rng.permutation(rows).astype(np.int64),
            "score": scores,
            "title": [f"item {i}" for i in range(rows)],
            "category": "c",
            "listed_at": pd.Timestamp(DAY),
            "rank": np.arange(1, rows + 1, dtype=np.int32),
        }
    )


def _writer(db: str, writes: int, rows: int, spec_name: str, interval_s: float, out: "mp.Queue", done) -> None:
    from atnn.scoring import Ranked, write_rankings
    from atnn.spec import load_spec

    spec = load_spec(spec_name)
    frames = [_ranked(rows, k) for k in range(2)]
    empty = pd.DataFrame(columns=["item_id", "reason"])
    waits, spans = [], []
    for k in range(writes):
        started = time.perf_counter()
        write_rankings(Path(db), Ranked(DAY, f"v{k}", frames[k % 2], empty), spec)
        waits.append(time.perf_counter() - started)
        spans.append((started, time.perf_counter()))
        time.sleep(interval_s)  # the daily job's other work (feature read, scoring) holds no lock
    done.set()
    out.put({"waits": waits, "spans": spans})


def _reader(db: str, reads: int, rows: int, out: "mp.Queue", done) -> None:
    from atnn.warehouse import read_sql

    sql = """SELECT count(*) AS n, count(DISTINCT model_version) AS versions, min(rank) AS lo, max(rank) AS hi,
                    count(DISTINCT item_id) AS items FROM rankings WHERE ds = ?"""
    records = []
    # At least `reads` reads, and on until the writer is done, so reads cover the whole write period.
    while len(records) < reads or not done.is_set():
        started = time.perf_counter()
        try:
            row = read_sql(Path(db), sql, [DAY]).iloc[0]
            ok = True
            torn = not (row["n"] == rows and row["versions"] == 1 and row["lo"] == 1 and row["hi"] == rows and row["items"] == rows)
        except Exception:  # counted as a failure seen by the reader
            ok, torn = False, False
        records.append((started, time.perf_counter(), ok, bool(torn)))
    out.put({"records": records})


def measure(
    db: Path, *, reads: int = 200, writes: int = 20, rows: int = 20_000, interval_s: float = 0.2, spec_name: str = "ml-100k"
) -> ReaderReport:
    """Run `writes` re-ranks of one day in a writer process while a reader process runs `reads` reads.

    Between writes the writer pauses `interval_s`, standing for the lock-free work of a ranking run.
    """
    from atnn.scoring import Ranked, write_rankings
    from atnn.spec import load_spec

    empty = pd.DataFrame(columns=["item_id", "reason"])
    write_rankings(db, Ranked(DAY, "initial", _ranked(rows, 1), empty), load_spec(spec_name))
    ctx = mp.get_context("spawn")
    writer_q, reader_q, done = ctx.Queue(), ctx.Queue(), ctx.Event()
    started = time.perf_counter()
    writer = ctx.Process(target=_writer, args=(str(db), writes, rows, spec_name, interval_s, writer_q, done))
    reader = ctx.Process(target=_reader, args=(str(db), reads, rows, reader_q, done))
    writer.start()
    reader.start()
    w, r = writer_q.get(timeout=900), reader_q.get(timeout=900)
    writer.join()
    reader.join()
    wall = time.perf_counter() - started
    if writer.exitcode or reader.exitcode:
        raise RuntimeError(f"writer exit {writer.exitcode}, reader exit {reader.exitcode}")
    spans = w["spans"]
    first, last = spans[0][0], spans[-1][1]
    records = r["records"]
    waits = [end - start for start, end, ok, _ in records if ok]
    return ReaderReport(
        reads=len(records),
        writes=len(spans),
        rows_per_write=rows,
        reads_during_writes=sum(1 for start, end, _, _ in records if end >= first and start <= last),
        reader_failures=sum(1 for *_, ok, _ in records if not ok),
        torn_reads=sum(1 for *_, torn in records if torn),
        reader_worst_wait_s=max(waits) if waits else float("nan"),
        reader_median_wait_s=float(np.median(waits)) if waits else float("nan"),
        writer_worst_wait_s=max(w["waits"]),
        wall_s=wall,
    )


def write_report(report: ReaderReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(report), indent=2) + "\n", encoding="utf-8")
