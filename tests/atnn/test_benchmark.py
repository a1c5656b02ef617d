"""The quality benchmark on tiny seeded data: layout, repeatability, and the pieces by hand."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from atnn import benchmark
from atnn.model import Interaction


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory, tiny_data_dir):
    out = tmp_path_factory.mktemp("bench") / "quality.json"
    report = benchmark.run(benchmark.PROFILES["test"], output=out, data_dir=str(tiny_data_dir), cache_dir=None, jobs=1)
    return out, report


def test_layout_has_every_model_and_metric(tiny_report):
    out, report = tiny_report
    on_disk = json.loads(out.read_text())
    models = on_disk["ml-100k"]["random-item"]
    assert set(models) == set(benchmark.MODELS)
    for entry in models.values():
        for key in ("auc_mean", "auc_std", "gauc_mean", "gauc_std", "item_auc_mean", "spearman_ctr_mean", "ndcg10_ctr_mean", "ndcg50_ctr_mean",
                    "precision10_ctr_mean", "spearman_volume_mean", "ndcg10_volume_mean", "train_seconds_mean"):
            assert key in entry
        assert len(entry["auc_seeds"]) == 2
    atnn = models["atnn"]
    assert 0.0 <= atnn["auc_mean"] <= 1.0
    assert models["atnn_encoder_oracle"]["uses_post_arrival_information"] and not atnn["uses_post_arrival_information"]
    assert set(atnn["lambda_sensitivity"]["by_lambda"]) == {"0.0", "1.0"}
    assert atnn["segments"]["fields"] == ["gender", "age_band"]
    assert atnn["mean_vector"]["by_k"].keys() >= {"5", "all"}
    # ML-100K's spec has no title embedding: the comparison trains atnn and the trees with it.
    titles = atnn["title_embedding"]
    assert titles["spec_has_embedding"] is False and titles["model"] == "all-MiniLM-L6-v2"
    assert titles["without"]["atnn"]["test_auc_seeds"] == atnn["auc_seeds"]
    assert titles["without"]["gbdt_profile"]["test_auc_seeds"] == models["gbdt_profile"]["auc_seeds"]
    assert titles["with"]["atnn"]["test_auc_seeds"] != atnn["auc_seeds"]
    assert all(0.0 <= v <= 1.0 for side in ("with", "without") for m in ("atnn", "gbdt_profile")
               for v in titles[side][m]["val_auc_seeds"])
    # ... and without the title's words.
    words = atnn["title_tokens"]
    assert words["feature"] == "title"
    assert words["with"]["atnn"]["test_auc_seeds"] == atnn["auc_seeds"]
    assert words["with"]["gbdt_profile"]["test_auc_seeds"] == models["gbdt_profile"]["auc_seeds"]
    assert words["without"]["atnn"]["test_auc_seeds"] != atnn["auc_seeds"]
    md = out.with_suffix(".md").read_text()
    assert "## ml-100k (random-item)" in md and "| atnn_encoder_oracle* |" in md
    assert "Title sentence embedding (all-MiniLM-L6-v2; the spec does not use it)" in md
    assert "- Title words (`title`), mean val / test AUC" in md and "| model | AUC | GAUC | item AUC |" in md
    # The planted signal (gender x genre, Thriller liked by all) is found by the trees from the profile,
    # and the oracle's true statistics add to it.
    assert models["gbdt_profile"]["auc_mean"] > models["random"]["auc_mean"] + 0.03
    assert models["atnn_encoder_oracle"]["auc_mean"] > models["random"]["auc_mean"] + 0.05


@pytest.mark.slow
def test_same_seeds_same_table(tiny_report, tmp_path, tiny_data_dir):
    _, first = tiny_report
    config = benchmark.PROFILES["test"]
    again = benchmark.run(config, output=tmp_path / "q.json", data_dir=str(tiny_data_dir), cache_dir=None, jobs=1)
    for model, entry in first["ml-100k"]["random-item"].items():
        for key in ("auc_mean", "spearman_ctr_mean", "ndcg10_ctr_mean"):
            a, b = entry[key], again["ml-100k"]["random-item"][model][key]
            assert (np.isnan(a) and np.isnan(b)) or round(a, 3) == round(b, 3), (model, key, a, b)


def test_title_embedding_toggle():
    from atnn.spec import load_spec

    on, has = benchmark.toggle_title_embedding(load_spec("ml-100k"))
    assert has and on.feature("title").embedding == "all-MiniLM-L6-v2"
    off, has = benchmark.toggle_title_embedding(on)
    assert not has and off.schema_hash() == load_spec("ml-100k").schema_hash()
    assert benchmark.toggle_title_embedding(load_spec("taobao")) is None  # no text title
    words_off = benchmark.drop_title(on)
    assert [f.name for f in words_off.item_features] == ["genres", "year", "decade"]
    assert benchmark.drop_title(load_spec("taobao")) is None


def test_exact_average_and_mean_vector_by_hand():
    torch.manual_seed(0)
    h = Interaction(3)
    items, users = torch.randn(4, 3), torch.randn(5, 3)
    exact = benchmark.exact_average(h, items, users)
    by_loop = [np.mean([torch.sigmoid(h(items[i : i + 1], users[u : u + 1])).item() for u in range(5)]) for i in range(4)]
    np.testing.assert_allclose(exact, by_loop, atol=1e-6)
    one = benchmark.h_scores(h, items, users[2])
    np.testing.assert_allclose(one, torch.sigmoid(h(items, users[2:3].expand(4, -1))).detach().numpy(), atol=1e-7)


def test_segment_labels_join_fields():
    users = pd.DataFrame({"user_id": [1, 2], "gender": ["F", "M"], "age_band": ["25-34", None]})
    assert benchmark.segment_labels(users, ["gender", "age_band"]).to_dict() == {1: "F|25-34", 2: "M|?"}


def test_aggregate_gap_and_best_rival():
    def seed(values, swapped):
        models = {m: {"auc": v, "gauc": v, "item_auc": v, "train_seconds": 1.0, "ctr": {"spearman": v}, "volume": {"spearman": v}}
                  for m, v in values.items()}
        models["gbdt_profile"]["item_headroom"] = {"item_rate_auc": 0.6, "swapped_auc": swapped}
        return {"models": models,
                "extras": {"test_items": 3, "truth_items": 2, "mean_vector": {
                    "k": 1, "users": 2, "items": 2, "spearman_vs_exact": 1.0, "speed_ratio": 10.0, "seconds_mean_vector": 1.0,
                    "seconds_exact": 10.0, "spearman_ctr_exact": 0.5, "by_k": {"all": {"spearman_vs_exact": 1.0, "spearman_ctr": 0.5}}}}}

    base = {m: 0.5 for m in benchmark.MODELS}
    per_seed = {0: seed(base | {"two_tower_profile": 0.6, "atnn_encoder_oracle": 0.8, "atnn": 0.7, "gbdt_profile": 0.65}, 0.70),
                1: seed(base | {"two_tower_profile": 0.6, "atnn_encoder_oracle": 0.8, "atnn": 0.72, "gbdt_profile": 0.66}, 0.72)}
    out = benchmark.aggregate(per_seed)
    assert out["atnn"]["auc_mean"] == pytest.approx(0.71)
    assert out["atnn"]["auc_std"] == pytest.approx(np.std([0.7, 0.72], ddof=1))
    assert out["atnn"]["gap_closed"] == pytest.approx(0.55)
    # The oracle uses post-arrival information and ablations are atnn itself: the rival is gbdt_profile.
    assert out["atnn"]["best_rival"] == "gbdt_profile"
    assert out["atnn"]["margin_over_best_rival"] == pytest.approx(0.71 - 0.655)
    # The target (rival + larger std) is a share of what swapping in the realized item rates adds to the trees.
    target = 0.655 + np.std([0.7, 0.72], ddof=1)
    headroom = out["atnn"]["item_headroom"]
    assert headroom["target_auc"] == pytest.approx(target) and headroom["swapped_auc_mean"] == pytest.approx(0.71)
    assert headroom["target_share_of_swap"] == pytest.approx((target - 0.655) / (0.71 - 0.655))


def test_item_headroom_swaps_the_item_means_for_the_realized_rates():
    from types import SimpleNamespace

    items = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    labels = np.array([1, 1, 1, 0, 1, 0, 0, 0], dtype=float)
    # Each item's users are ordered perfectly, but item 1 is scored above item 0: the reverse of the outcome.
    scores = np.array([0.3, 0.3, 0.3, 0.2, 0.8, 0.7, 0.7, 0.7])
    prepared = SimpleNamespace(test=SimpleNamespace(label=labels, item_index=items), warm_rate=0.5)
    config = benchmark.PROFILES["test"]
    out = benchmark.item_headroom(prepared, config, scores)
    rate = np.where(items == 0, (3 + 10 * 0.5) / 14, (1 + 10 * 0.5) / 14)  # smoothed with 10 prior events
    assert out["item_rate_auc"] == pytest.approx(roc_auc_score(labels, rate))
    # With the items in the right order the users' order counts on top: above the rates alone.
    assert out["swapped_auc"] > out["item_rate_auc"] > roc_auc_score(labels, scores)
