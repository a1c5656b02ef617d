"""atnn synth: the SYNTHETIC canonical folder, its planted popularity, and that atnn reads it as is."""

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from scipy.stats import spearmanr

from atnn.spec import load_spec
from atnn.synth import generate


def test_folder_is_canonical_and_deterministic(tmp_path, synth_folder):
    spec = load_spec(synth_folder / "spec.yaml")
    assert spec.name == "synth" and "SYNTHETIC" in (synth_folder / "spec.yaml").read_text()
    items = pq.read_table(synth_folder / "items.parquet").to_pandas()
    users = pq.read_table(synth_folder / "users.parquet").to_pandas()
    events = pq.read_table(synth_folder / "events.parquet").to_pandas()
    assert list(items.columns) == ["item_id", "listed_at", *[f.name for f in spec.item_features]]
    assert list(users.columns) == ["user_id", *[f.name for f in spec.user_features]]
    assert (len(items), len(users), len(events)) == (1500, 400, 40000)
    assert items["item_id"].is_unique and all(c.startswith(t + "/") for c, t in zip(items["category"], items["top_category"]))
    assert set(events["kind"]) == {"impression", "click", "cart", "fav", "buy"}
    assert ((events["kind"] != "impression") == (events["label"] == 1)).all()
    listed = events.merge(items[["item_id", "listed_at"]], on="item_id")
    assert (listed["ts"] >= listed["listed_at"]).all() and (listed["ts"] < pd.Timestamp("2024-01-13", tz="UTC")).all()
    arrivals = pq.read_table(synth_folder / "drops" / "2024-01-13" / "items.parquet").to_pandas()
    assert len(arrivals) == 700 and (arrivals["listed_at"].dt.date.astype(str) == "2024-01-13").all()
    again = tmp_path / "again"
    generate(again, users=400, items=1500, days=12, seed=3, events=40000, arrivals=700)
    assert pq.read_table(again / "events.parquet").equals(pq.read_table(synth_folder / "events.parquet"))


def test_planted_popularity_shows_in_the_events(synth_folder):
    truth = pq.read_table(synth_folder / "planted_popularity.parquet").to_pandas()
    events = pq.read_table(synth_folder / "events.parquet").to_pandas()
    assert len(truth) == 1500 + 700 and truth["popularity"].between(0, 1).all()
    rate = events.groupby("item_id").agg(n=("label", "size"), rate=("label", "mean")).query("n >= 40").join(truth.set_index("item_id"))
    assert len(rate) > 100
    assert spearmanr(rate["rate"], rate["popularity"]).statistic > 0.5
    # ...and it depends on the profile: category alone explains a good part of it.
    items = pq.read_table(synth_folder / "items.parquet").to_pandas().merge(truth, on="item_id")
    by_category = items.groupby("category")["popularity"].transform("mean")
    assert np.corrcoef(by_category, items["popularity"])[0, 1] > 0.4


def test_the_canonical_reader_ingests_it_without_quarantine(synth_home):
    from atnn.warehouse import read_sql

    settings, _, ds = synth_home
    counts = read_sql(settings.paths.db, "SELECT (SELECT count(*) FROM items) AS items, (SELECT count(*) FROM events) AS events, (SELECT count(*) FROM quarantine) AS bad")
    assert counts.iloc[0].tolist() == [2200, 40000, 0]
    assert read_sql(settings.paths.db, "SELECT count(*) AS n FROM items WHERE listed_at::DATE = ?", [ds])["n"].iloc[0] == 700
