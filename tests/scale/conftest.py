"""A tiny SYNTHETIC shop (atnn synth), ingested through the canonical reader, with Feast applied and a
model trained by the streaming path: shared by the scale tests."""

from datetime import datetime
from pathlib import Path

import pytest

from atnn.config import load_settings
from atnn.spec import load_spec

TINY = {"users": 400, "items": 1500, "days": 12, "seed": 3, "events": 40000, "arrivals": 700}


@pytest.fixture(scope="session")
def synth_folder(tmp_path_factory) -> Path:
    from atnn.synth import generate

    folder = tmp_path_factory.mktemp("synth") / "shop"
    generate(folder, **TINY)
    return folder


@pytest.fixture(scope="session")
def synth_home(tmp_path_factory, synth_folder):
    """(settings, spec, arrival day) of an ingested tiny synthetic shop with a champion model."""
    from atnn import drops, pipeline, scale, store

    root = tmp_path_factory.mktemp("synth-home")
    settings = load_settings(profile="test", home=root / "home", onnx_dir=root / "onnx", dataset=str(synth_folder / "spec.yaml"))
    spec = load_spec(settings.dataset)
    report = pipeline.ingest(settings, spec, raw_dir=synth_folder)
    assert report.reconciles() and not report.quarantine_reasons
    (arrival_drop,) = sorted((synth_folder / "drops").iterdir())
    drop = drops.ingest_drop(settings, spec, arrival_drop)  # the new arrivals: a daily drop, as in production
    store.apply(settings, spec)
    as_of = datetime(2024, 1, 1 + TINY["days"])
    scale.train_streaming(settings.with_overrides(**{"train.epochs": 6, "train.patience": 2}), spec, as_of, chunk_events=5000)
    return settings, spec, as_of.date()
