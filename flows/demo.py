"""Flow `demo`: ingest -> train -> rank one day, in order, as subflows of one run."""

from __future__ import annotations

from prefect import flow

from atnn import pipeline
from flows.common import settings_for
from flows.daily_rank import daily_rank
from flows.ingest import ingest
from flows.train import train


@flow(name="demo", log_prints=True)
def demo(
    dataset: str = "ml-100k",
    date: str | None = None,
    profile: str | None = None,
    home: str | None = None,
    data_dir: str | None = None,
    onnx_dir: str | None = None,
) -> dict:
    """The whole job on one dataset; the ranked day defaults to its busiest arrival day."""
    ingest_report = ingest(dataset=dataset, profile=profile, home=home, data_dir=data_dir)
    settings, _ = settings_for(dataset, profile, home, data_dir, onnx_dir)
    ds = date or pipeline.busiest_arrival_day(settings.paths.db).isoformat()
    # Train on what was known before the ranked day began.
    train_report = train(dataset=dataset, as_of=ds, profile=profile, home=home, onnx_dir=onnx_dir)
    rank_report = daily_rank(date=ds, dataset=dataset, profile=profile, home=home)
    return {"ingest": ingest_report, "train": train_report, "rank": rank_report}
