"""Segment popularity: one mean user vector per segment, stored at training, ranked into DuckDB."""

from datetime import date, datetime

import json

import numpy as np
import pandas as pd
import torch

from atnn import artifacts, protocol
from atnn.pipeline import ingest, train_and_export
from atnn.scoring import OnnxScorer, Ranked, rank_by_segment, rank_frame, write_rankings
from atnn.spec import load_spec
from atnn.warehouse import read_sql

SPEC = load_spec("ml-100k")


def _trained(tiny_settings):
    ingest(tiny_settings, SPEC)
    tables = protocol.Tables.load(tiny_settings.paths.db)
    stats = protocol.item_stats(tables, SPEC, tiny_settings.train.prior_events)
    frame = protocol.event_frame(tables, SPEC, tables.items["item_id"].to_numpy(), stats)
    report = train_and_export(tiny_settings, SPEC, frame, as_of=datetime(1999, 1, 1))
    return tables, frame, report


def test_segment_vectors_are_stored_and_scored_like_torch(tiny_settings):
    tables, frame, report = _trained(tiny_settings)
    checkpoint = artifacts.load_checkpoint(__import__("pathlib").Path(report.checkpoint_dir))
    segments = checkpoint.mean_user.segments
    # gender x age band of the tiny users: every name is '<gender>|<band>', all users covered.
    users = tables.users
    expected = set((users["gender"] + "|" + users["age_band"]).unique())
    assert set(segments) == expected and checkpoint.mean_user.segment_fields == ["gender", "age_band"]

    # Each segment vector is the mean of its users' vectors.
    from atnn.train import build_training_data, user_vectors

    data = build_training_data(frame, checkpoint.encoder, SPEC)
    vectors = user_vectors(checkpoint.model, data.user_inputs)
    profile = users.set_index("user_id").reindex(data.user_ids)
    name = sorted(segments)[0]
    mask = ((profile["gender"] + "|" + profile["age_band"]) == name).to_numpy()
    np.testing.assert_allclose(segments[name], vectors[torch.from_numpy(mask)].mean(0).numpy(), atol=1e-6)

    # The scorer's segment head (numpy on ONNX item vectors) equals sigmoid(H(g(x), segment vector)).
    scorer = OnnxScorer(__import__("pathlib").Path(report.onnx_path).parent)
    profiles = tables.items.head(12)
    scored, _ = scorer.score(profiles)
    by_segment = rank_by_segment(scorer.metadata, scored)
    assert len(by_segment) == len(scored) * len(segments)
    with torch.no_grad():
        item_vectors = checkpoint.model.generator({k: torch.from_numpy(v) for k, v in checkpoint.encoder.encode(profiles, "item").items()})
        seg = torch.tensor(segments[name]).reshape(1, -1).expand(len(item_vectors), -1)
        expected_scores = torch.sigmoid(checkpoint.model.interaction(item_vectors, seg)).numpy()
    got = by_segment[by_segment["segment"] == name].set_index("item_id")["score"].reindex(profiles["item_id"]).to_numpy()
    np.testing.assert_allclose(got, expected_scores, atol=1e-5)
    # Ranks within each segment follow the scores.
    one = by_segment[by_segment["segment"] == name]
    assert one["rank"].tolist() == list(range(1, len(one) + 1))
    assert (np.diff(one["score"].to_numpy()) <= 0).all()


def test_rankings_by_segment_written_with_rankings_and_replaced(tmp_path):
    db = tmp_path / "w.duckdb"
    scored = pd.DataFrame({"item_id": [1, 2], "score": [0.3, 0.6], "title": ["a", "b"], "genres": "Drama",
                           "listed_at": pd.Timestamp("1998-01-01")})
    scored["item_vector"] = [np.array([1.0, 0.0], np.float32), np.array([0.0, 1.0], np.float32)]
    metadata = {"segments": {"fields": ["gender"], "names": ["F", "M"], "matrix": [[2.0, -2.0], [-1.0, 1.0]], "offset": [0.0, 0.5]}}
    by_segment = rank_by_segment(metadata, scored)
    # F: logits 2 and -2 -> item 1 first; M: -0.5 and 1.5 -> item 2 first.
    assert by_segment[by_segment["segment"] == "F"]["item_id"].tolist() == [1, 2]
    assert by_segment[by_segment["segment"] == "M"]["item_id"].tolist() == [2, 1]
    np.testing.assert_allclose(by_segment["score"].iloc[0], 1 / (1 + np.exp(-2.0)))
    empty = pd.DataFrame(columns=["item_id", "reason"])
    day = date(1998, 1, 1)
    write_rankings(db, Ranked(day, "v1", rank_frame(scored, SPEC), empty, by_segment), SPEC)
    rows = read_sql(db, "SELECT segment, item_id, rank, model_version FROM rankings_by_segment ORDER BY segment, rank")
    assert rows.values.tolist() == [["F", 1, 1, "v1"], ["F", 2, 2, "v1"], ["M", 2, 1, "v1"], ["M", 1, 2, "v1"]]
    # Ranking the day again with a model without segments leaves no stale segment rows.
    write_rankings(db, Ranked(day, "v2", rank_frame(scored, SPEC), empty), SPEC)
    assert read_sql(db, "SELECT count(*) AS n FROM rankings_by_segment")["n"].iloc[0] == 0
    assert rank_by_segment({"segments": {"names": []}}, scored) is None
