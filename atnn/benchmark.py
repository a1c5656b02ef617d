"""The ranking-quality benchmark of ../shared/PROTOCOL.md: every model, same splits, features, seeds.

`python -m atnn.benchmark` (or `make bench-quality`) ingests each dataset into a temporary
warehouse, builds leakage-free frames with `atnn.protocol`, trains every model for every seed and
writes `benchmarks/quality.json` and `benchmarks/quality.md`. Per (dataset, split, seed) results are
cached (keyed by the benchmark config) so an interrupted run resumes where it stopped.

JSON layout: {dataset: {split: {model: {"auc_mean", "auc_std", "spearman_ctr_mean", ...}}}};
the `atnn` entry also holds the mean-vector, segment and lambda-sensitivity analyses, and the
title comparisons (`title_tokens`, `title_embedding`: atnn and gbdt_profile trained with the title's
feature switched).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.special import logit

from atnn import baselines, protocol
from atnn.config import PROJECT_ROOT, ModelConfig, TrainConfig, load_settings
from atnn.encoding import FeatureEncoder
from atnn.metrics import auc, grouped_auc, item_auc, ranking_report, spearman
from atnn.model import ATNN
from atnn.spec import DatasetSpec, load_spec
from atnn.text import MODELS as TEXT_MODELS
from atnn.text import clear_cache as clear_text_cache
from atnn.train import TrainingData, build_training_data, fit, predict, segment_user_vectors, top_active_users, user_vectors

log = logging.getLogger(__name__)

MODELS = (
    "random", "prior", "dnn", "two_tower_profile", "gbdt_profile", "dropoutnet", "metaemb",
    "atnn", "atnn_lambda0", "atnn_no_shared_embeddings", "atnn_mlp_towers", "atnn_encoder_oracle",
)
# Models that use information a new arrival does not have.
POST_ARRIVAL = {"atnn_encoder_oracle"}
DATASETS = {"ml-100k": "random-item", "ml-latest-small": "temporal"}
# Bumped when a task's result gains or changes a figure, so cached per-seed results are not reused.
RESULTS_VERSION = 2
TEXT_EMBEDDING_MODEL = next(iter(TEXT_MODELS))


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark profile. Model sizes and lambda were chosen on the validation split only."""

    name: str
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    # Chosen on the validation split (seeds 0, 1 of ML-100K random-item; see README, "Ranking quality"):
    # more dropout, title-token dropout and weight decay; the size and depth of the defaults.
    model: ModelConfig = ModelConfig(dropout=0.3, token_dropout=0.6)
    train: TrainConfig = TrainConfig(epochs=12, batch_size=1024, patience=2, weight_decay=1e-4, threads=1)
    top_k_users: int = 500
    k_grid: tuple[int, ...] = (10, 50, 100, 200, 500)
    lambda_grid: tuple[float, ...] = (0.0, 0.1, 0.3, 1.0, 3.0, 10.0)
    lambda_seeds: tuple[int, ...] = (0,)
    prior_events: float = 10.0
    min_events: int = 5
    # Also train atnn and gbdt_profile with the title's pretrained embedding switched (atnn.text),
    # and without the title's words.
    title_embedding: bool = True
    title_tokens: bool = True
    datasets: tuple[tuple[str, str], ...] = tuple(DATASETS.items())

    def key(self) -> str:
        """Identifies cached per-seed results (the dataset list is not part of it: tasks are per dataset)."""
        fields = {k: v for k, v in asdict(self).items() if k != "datasets"}
        payload = json.dumps(fields | {"results_version": RESULTS_VERSION}, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


PROFILES: dict[str, BenchConfig] = {
    "full": BenchConfig(name="full"),
    "quick": BenchConfig(
        name="quick", seeds=(0,), train=TrainConfig(epochs=2, batch_size=2048, patience=1, weight_decay=1e-4, threads=1),
        lambda_grid=(0.0, 1.0), k_grid=(50, 500), title_embedding=False, title_tokens=False,  # the full profile compares them
    ),
    # Tiny sizes for the tests (tiny seeded data, seconds).
    "test": BenchConfig(
        name="test", seeds=(0, 1),
        model=ModelConfig(embedding_dim=4, vector_dim=8, cross_layers=1, deep_layers=(16,), dropout=0.0),
        train=TrainConfig(epochs=2, batch_size=256, patience=1, threads=1),
        top_k_users=20, k_grid=(5, 20), lambda_grid=(0.0, 1.0), min_events=3,
        datasets=(("ml-100k", "random-item"),),
    ),
}


# ---------------------------------------------------------------- data of one split


@dataclass
class Prepared:
    """Encoded train / validation / test events of one split, and the popularity ground truth."""

    spec: DatasetSpec
    split: protocol.Split
    encoder: FeatureEncoder
    train: TrainingData
    validation: TrainingData
    test: TrainingData  # with the true first-window statistics (only the oracle reads them)
    truth: pd.DataFrame  # test items with >= min_events events: item_id, volume, positives, ctr
    truth_rows: np.ndarray  # row of each truth item in test.item_ids
    warm_rate: float
    test_events: pd.DataFrame  # user_id, item_id, label of the test events (for segment truth)
    users: pd.DataFrame


def prepare(tables: protocol.Tables, spec: DatasetSpec, split_name: str, seed: int, config: BenchConfig) -> Prepared:
    split = protocol.make_split(split_name, tables.items, seed)
    known_stats = protocol.item_stats(tables, spec, config.prior_events, cutoff=split.cutoff)
    true_stats = protocol.item_stats(tables, spec, config.prior_events)
    train_frame = protocol.event_frame(tables, spec, split.train, known_stats, before=split.cutoff)
    val_frame = protocol.event_frame(tables, spec, split.validation, known_stats, before=split.cutoff)
    test_frame = protocol.event_frame(tables, spec, split.test, true_stats)
    train_items = train_frame.drop_duplicates("item_id")
    encoder = FeatureEncoder.fit(spec, train_items, train_frame.drop_duplicates("user_id"), train_items)
    train = build_training_data(train_frame, encoder, spec)
    validation = build_training_data(val_frame, encoder, spec)
    test = build_training_data(test_frame, encoder, spec)
    warm_rate = float(train_frame["label"].mean())
    truth = protocol.popularity_truth(tables, split.test, warm_rate, config.prior_events, config.min_events)
    truth_rows = pd.Index(test.item_ids).get_indexer(truth["item_id"])
    return Prepared(spec, split, encoder, train, validation, test, truth.reset_index(drop=True), truth_rows,
                    warm_rate, test_frame[["user_id", "item_id", "label"]], tables.users)


def subset_items(data: TrainingData, rows: np.ndarray) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v[rows]) for k, v in data.item_inputs.items()}


# ---------------------------------------------------------------- evaluation helpers


def evaluate(prepared: Prepared, event_scores: np.ndarray, popularity: np.ndarray, train_seconds: float) -> dict[str, Any]:
    """New-arrival AUC over test events (pooled; within each user: GAUC; between items: item AUC); the
    popularity ranking against smoothed rate and volume."""
    truth, test = prepared.truth, prepared.test
    return {
        "auc": auc(test.label, event_scores),
        "gauc": grouped_auc(test.user_index, test.label, event_scores),
        "item_auc": item_auc(test.item_index, test.label, event_scores),
        "ctr": ranking_report(truth["ctr"].to_numpy(), popularity),
        "volume": ranking_report(truth["volume"].to_numpy(dtype=float), popularity),
        "train_seconds": train_seconds,
    }


@torch.no_grad()
def h_scores(interaction, item_vectors: torch.Tensor, user_vector: torch.Tensor) -> np.ndarray:
    """sigmoid(H(item, u)) for one user vector u against many items."""
    return torch.sigmoid(interaction(item_vectors, user_vector.reshape(1, -1).expand(len(item_vectors), -1))).numpy()


@torch.no_grad()
def exact_average(interaction, item_vectors: torch.Tensor, users: torch.Tensor) -> np.ndarray:
    """Mean over all users of sigmoid(H(item, user)): O(users) per item, every (item, user) pair."""
    n_items, n_users = len(item_vectors), len(users)
    items = item_vectors.repeat_interleave(n_users, 0)
    logits = interaction(items, users.repeat(n_items, 1)).reshape(n_items, n_users)
    return torch.sigmoid(logits).mean(1).numpy()


def best_time(fn, repeats: int = 7) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


# ---------------------------------------------------------------- the models


def run_atnn(prepared: Prepared, config: BenchConfig, seed: int, *, model_config: ModelConfig | None = None,
             lambda_s: float | None = None) -> tuple[dict[str, Any], ATNN, Any]:
    train_config = replace(config.train, seed=seed, lambda_s=config.train.lambda_s if lambda_s is None else lambda_s)
    result = fit(prepared.train, prepared.validation, prepared.encoder, model_config or config.model, train_config)
    return {"best_epoch": result.best_epoch, "val_auc": result.best_val_auc}, result.model, result


def atnn_family(prepared: Prepared, config: BenchConfig, seed: int, out: dict[str, Any], extras: dict[str, Any]) -> None:
    """atnn, its oracle encoder, ablations, and the mean-vector / segment analyses of atnn."""
    test, rows = prepared.test, prepared.truth_rows
    top = top_active_users(prepared.train, config.top_k_users)
    for name, overrides in (
        ("atnn", {}),
        ("atnn_lambda0", {"lambda_s": 0.0}),
        ("atnn_no_shared_embeddings", {"model_config": replace(config.model, shared_embeddings=False)}),
        ("atnn_mlp_towers", {"model_config": replace(config.model, tower="mlp")}),
    ):
        info, model, result = run_atnn(prepared, config, seed, **overrides)
        all_users = user_vectors(model, prepared.train.user_inputs)
        mean_user = all_users[top].mean(0)
        with torch.no_grad():
            generated = model.generator(subset_items(test, rows))
        out[name] = evaluate(prepared, predict(model, test, generated=True),
                             h_scores(model.interaction, generated, mean_user), result.train_seconds) | info
        if name != "atnn":
            continue
        with torch.no_grad():
            encoded = model.item_encoder(subset_items(test, rows), torch.from_numpy(test.stats[rows]))
        out["atnn_encoder_oracle"] = evaluate(prepared, predict(model, test, generated=False),
                                              h_scores(model.interaction, encoded, mean_user), result.train_seconds) | info
        extras["mean_vector"] = mean_vector_analysis(prepared, config, model, generated, all_users)
        if prepared.spec.segment_fields:
            extras["segments"] = segment_analysis(prepared, config, model, generated, mean_user)


def mean_vector_analysis(prepared: Prepared, config: BenchConfig, model: ATNN, generated: torch.Tensor,
                         all_users: torch.Tensor) -> dict[str, Any]:
    """O(1) mean-vector popularity vs the exact O(users) average, and how K changes the agreement."""
    exact = exact_average(model.interaction, generated, all_users)
    truth = prepared.truth["ctr"].to_numpy()
    by_k = {}
    for k in (*config.k_grid, len(all_users)):
        chosen = top_active_users(prepared.train, k)
        approx = h_scores(model.interaction, generated, all_users[chosen].mean(0))
        by_k[str(k) if k < len(all_users) else "all"] = {
            "spearman_vs_exact": spearman(exact, approx), "spearman_ctr": spearman(truth, approx)}
    mean_user = all_users[top_active_users(prepared.train, config.top_k_users)].mean(0)
    approx_time = best_time(lambda: h_scores(model.interaction, generated, mean_user))
    exact_time = best_time(lambda: exact_average(model.interaction, generated, all_users))
    return {
        "k": config.top_k_users,
        "users": len(all_users),
        "items": len(generated),
        "spearman_vs_exact": spearman(exact, h_scores(model.interaction, generated, mean_user)),
        "spearman_ctr_exact": spearman(truth, exact),
        "seconds_mean_vector": approx_time,
        "seconds_exact": exact_time,
        "speed_ratio": exact_time / approx_time,
        "by_k": by_k,
    }


def segment_analysis(prepared: Prepared, config: BenchConfig, model: ATNN, generated: torch.Tensor,
                     mean_user: torch.Tensor) -> dict[str, Any]:
    """Per segment: its mean-vector scores against the segment's realized positive rate on test items."""
    fields = list(prepared.spec.segment_fields)
    names, vectors = segment_user_vectors(model, prepared.train, prepared.users, fields)
    segment_of = segment_labels(prepared.users, fields)
    events = prepared.test_events.assign(segment=prepared.test_events["user_id"].map(segment_of))
    global_scores = h_scores(model.interaction, generated, mean_user)
    item_pos = pd.Index(prepared.truth["item_id"])
    per_segment = {}
    for name, vector in zip(names, vectors):
        seg_events = events[events["segment"] == name]
        counts = seg_events.groupby("item_id")["label"].agg(["count", "sum"])
        counts = counts[counts["count"] >= config.min_events]
        counts = counts[counts.index.isin(item_pos)]
        if len(counts) < 10:
            continue
        rate = protocol.smoothed_rate(counts["sum"], counts["count"], prepared.warm_rate, config.prior_events)
        rows = item_pos.get_indexer(counts.index)
        scores = h_scores(model.interaction, generated[rows], vector)
        per_segment[name] = {
            "items": int(len(counts)),
            "spearman_segment_vector": spearman(rate.to_numpy(), scores),
            "spearman_global_vector": spearman(rate.to_numpy(), global_scores[rows]),
        }
    values = list(per_segment.values())
    return {
        "fields": fields,
        "segments_evaluated": len(values),
        "spearman_segment_vector_mean": float(np.nanmean([v["spearman_segment_vector"] for v in values])) if values else float("nan"),
        "spearman_global_vector_mean": float(np.nanmean([v["spearman_global_vector"] for v in values])) if values else float("nan"),
        "per_segment": per_segment,
    }


def segment_labels(users: pd.DataFrame, fields: list[str]) -> pd.Series:
    """user_id -> segment name, e.g. 'F|25-34' (the fields' values joined with '|')."""
    labels = users[fields].astype("string").fillna("?").agg("|".join, axis=1)
    return pd.Series(labels.to_numpy(), index=users["user_id"].to_numpy())


def run_neural_baseline(name: str, prepared: Prepared, config: BenchConfig, seed: int) -> dict[str, Any]:
    items, users = prepared.encoder.side("item"), prepared.encoder.side("user")
    torch.manual_seed(seed)
    model: baselines.ClickModel
    if name == "dnn":
        model = baselines.ConcatDNN(items, users, config.model)
    elif name == "two_tower_profile":
        model = baselines.ProfileTwoTower(items, users, config.model)
    elif name == "dropoutnet":
        model = baselines.DropoutNet(items, users, len(prepared.encoder.stats), config.model)
    elif name == "metaemb":
        model = baselines.MetaEmb(items, users, len(prepared.train.item_ids), config.model)
    else:
        raise ValueError(name)
    result = baselines.fit_click_model(model, prepared.train, prepared.validation, replace(config.train, seed=seed))
    test, rows = prepared.test, prepared.truth_rows
    top = top_active_users(prepared.train, config.top_k_users)
    with torch.no_grad():
        if isinstance(model, baselines.TwoTowerBase):
            mean_user = model.user_vectors({k: torch.from_numpy(v[top]) for k, v in prepared.train.user_inputs.items()}).mean(0)
            popularity = h_scores(model.interaction, model.cold_item_vectors(subset_items(test, rows)), mean_user)
        else:  # one network: average its predictions over the same top-K users
            popularity = pair_average(prepared, top, lambda b: torch.sigmoid(model.cold_logits(b)).numpy())
    return evaluate(prepared, baselines.predict_cold(model, test), popularity, result.train_seconds) | {
        "best_epoch": result.best_epoch, "val_auc": result.best_val_auc}


def pair_average(prepared: Prepared, users: np.ndarray, score) -> np.ndarray:
    """Mean score of each truth item over the given training users (every pair evaluated)."""
    rows = prepared.truth_rows
    item_rows = np.repeat(rows, len(users))
    user_rows = np.tile(users, len(rows))
    test, train = prepared.test, prepared.train
    batch = baselines.EventBatch(
        item={k: torch.from_numpy(v[item_rows]) for k, v in test.item_inputs.items()},
        stats=torch.zeros(len(item_rows), test.stats.shape[1]),
        user={k: torch.from_numpy(v[user_rows]) for k, v in train.user_inputs.items()},
        label=torch.zeros(len(item_rows)),
        item_row=torch.zeros(len(item_rows), dtype=torch.int64),
    )
    return np.asarray(score(batch)).reshape(len(rows), len(users)).mean(1)


def run_gbdt(prepared: Prepared, config: BenchConfig, seed: int) -> dict[str, Any]:
    model = baselines.GBDTProfile(prepared.encoder, seed).fit(prepared.train, prepared.validation)
    top = top_active_users(prepared.train, config.top_k_users)
    rows = prepared.truth_rows
    x, _ = baselines.profile_matrix(prepared.encoder, prepared.test.item_inputs, prepared.train.user_inputs,
                                    np.repeat(rows, len(top)), np.tile(top, len(rows)))
    popularity = model.predict_matrix(x).reshape(len(rows), len(top)).mean(1)
    scores = model.predict(prepared.test)
    return evaluate(prepared, scores, popularity, model.train_seconds) | {
        "best_iteration": int(model.booster.best_iteration),
        "val_auc": auc(prepared.validation.label, model.predict(prepared.validation)),
        "item_headroom": item_headroom(prepared, config, scores)}


def item_headroom(prepared: Prepared, config: BenchConfig, scores: np.ndarray) -> dict[str, float]:
    """How far knowing each new item's outcome would go (a diagnostic: it reads the test labels).

    `item_rate_auc`: every test event scored by its item's realized positive rate (smoothed toward the
    warm mean as the popularity truth is), nothing about the user. `swapped_auc`: `scores` with their
    per-item mean logit replaced by the logit of that realized rate, so the model keeps only its
    ordering of each item's users.
    """
    test = prepared.test
    per_item = pd.Series(test.label, dtype=float).groupby(test.item_index)
    realized = logit(protocol.smoothed_rate(per_item.transform("sum"), per_item.transform("size"), prepared.warm_rate,
                                            config.prior_events).to_numpy())
    logits = logit(np.clip(np.asarray(scores, dtype=float), 1e-7, 1 - 1e-7))
    item_mean = pd.Series(logits).groupby(test.item_index).transform("mean").to_numpy()
    return {"item_rate_auc": auc(test.label, realized), "swapped_auc": auc(test.label, logits - item_mean + realized)}


def run_prior(prepared: Prepared) -> dict[str, Any]:
    """Mean positive rate of warm events sharing the item's category (genres: the mean over them)."""
    spec = prepared.spec
    feature = next(f for f in prepared.encoder.side("item") if f.name == spec.category_field)
    train = prepared.train
    codes = train.item_inputs[feature.name]
    codes = codes if codes.ndim == 2 else codes.reshape(-1, 1)
    item_rate = pd.Series(train.label).groupby(train.item_index).agg(["sum", "count"])
    sums = np.zeros(feature.cardinality)
    counts = np.zeros(feature.cardinality)
    for j in range(codes.shape[1]):
        np.add.at(sums, codes[item_rate.index, j], item_rate["sum"].to_numpy())
        np.add.at(counts, codes[item_rate.index, j], item_rate["count"].to_numpy())
    rate = np.where(counts > 0, sums / np.maximum(counts, 1), prepared.warm_rate)
    test_codes = prepared.test.item_inputs[feature.name]
    test_codes = test_codes if test_codes.ndim == 2 else test_codes.reshape(-1, 1)
    known = test_codes > 0
    total = np.where(known, rate[test_codes], 0.0).sum(1)
    # An item with no known category value gets the warm mean.
    per_item = np.where(known.any(1), total / np.maximum(known.sum(1), 1), prepared.warm_rate)
    return evaluate(prepared, per_item[prepared.test.item_index], per_item[prepared.truth_rows], 0.0)


def run_random(prepared: Prepared, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return evaluate(prepared, rng.random(len(prepared.test)), rng.random(len(prepared.truth)), 0.0)


def lambda_sensitivity(prepared: Prepared, config: BenchConfig, seed: int, known: dict[str, Any]) -> dict[str, Any]:
    """Validation and test AUC by lambda; the values already trained (atnn, atnn_lambda0) are reused."""
    reuse = {config.train.lambda_s: known["atnn"], 0.0: known["atnn_lambda0"]}
    out = {}
    for value in config.lambda_grid:
        if value in reuse:
            out[str(value)] = {"val_auc": reuse[value]["val_auc"], "test_auc": reuse[value]["auc"]}
            continue
        info, model, result = run_atnn(prepared, config, seed, lambda_s=value)
        out[str(value)] = {"val_auc": info["val_auc"], "test_auc": auc(prepared.test.label, predict(model, prepared.test))}
    return out


def toggle_title_embedding(spec: DatasetSpec) -> tuple[DatasetSpec, bool] | None:
    """The spec with the title's pretrained embedding switched (on if off, off if on), and whether the
    switched spec has it; None when the dataset has no text title."""
    title = _text_title(spec)
    if title is None:
        return None
    switched = replace(title, embedding="" if title.embedding else TEXT_EMBEDDING_MODEL)
    features = tuple(switched if f.name == title.name else f for f in spec.item_features)
    return replace(spec, item_features=features), bool(switched.embedding)


def drop_title(spec: DatasetSpec) -> DatasetSpec | None:
    """The spec without the title's words (and its embedding, if any); None when there is no text title."""
    title = _text_title(spec)
    if title is None:
        return None
    return replace(spec, item_features=tuple(f for f in spec.item_features if f.name != title.name),
                   title_field=None)


def _text_title(spec: DatasetSpec):
    return next((f for f in spec.item_features if f.name == spec.title_field and f.kind == "text_tokens"), None)


def feature_comparison(tables: protocol.Tables, prepared: Prepared, config: BenchConfig, seed: int,
                       known: dict[str, Any], other_spec: DatasetSpec) -> dict[str, dict[str, dict[str, float]]]:
    """atnn and gbdt_profile, validation and test AUC, with the spec's own features (reused from the main
    run: `own`) and with `other_spec` (trained here on the same split and seed: `other`)."""
    clear_text_cache()  # the same numbers whichever task this worker process ran before
    other = prepare(tables, other_spec, prepared.split.name, seed, config)
    info, model, _ = run_atnn(other, config, seed)
    gbdt = baselines.GBDTProfile(other.encoder, seed).fit(other.train, other.validation)
    return {
        "own": {
            "atnn": {"val_auc": known["atnn"]["val_auc"], "test_auc": known["atnn"]["auc"]},
            "gbdt_profile": {"val_auc": known["gbdt_profile"]["val_auc"], "test_auc": known["gbdt_profile"]["auc"]},
        },
        "other": {
            "atnn": {"val_auc": info["val_auc"], "test_auc": auc(other.test.label, predict(model, other.test))},
            "gbdt_profile": {"val_auc": auc(other.validation.label, gbdt.predict(other.validation)),
                             "test_auc": auc(other.test.label, gbdt.predict(other.test))},
        },
    }


def title_embedding_comparison(tables: protocol.Tables, prepared: Prepared, config: BenchConfig, seed: int,
                               known: dict[str, Any]) -> dict[str, Any] | None:
    """atnn and gbdt_profile with and without the title's pretrained sentence embedding."""
    toggled = toggle_title_embedding(prepared.spec)
    if toggled is None:
        return None
    spec, has_embedding = toggled
    runs = feature_comparison(tables, prepared, config, seed, known, spec)
    return {"spec_has_embedding": not has_embedding, "model": TEXT_EMBEDDING_MODEL,
            "with": runs["other" if has_embedding else "own"], "without": runs["own" if has_embedding else "other"]}


def title_tokens_comparison(tables: protocol.Tables, prepared: Prepared, config: BenchConfig, seed: int,
                            known: dict[str, Any]) -> dict[str, Any] | None:
    """atnn and gbdt_profile with the title's words (the spec) and without them."""
    spec = drop_title(prepared.spec)
    if spec is None:
        return None
    runs = feature_comparison(tables, prepared, config, seed, known, spec)
    return {"feature": prepared.spec.title_field, "with": runs["own"], "without": runs["other"]}


def run_seed(dataset: str, split: str, seed: int, config: BenchConfig, data_dir: str | None) -> dict[str, Any]:
    """Every model on one dataset, split and seed (in a fresh temporary warehouse)."""
    torch.set_num_threads(config.train.threads or 1)
    spec = load_spec(dataset)
    with tempfile.TemporaryDirectory(prefix="atnn-bench-") as home:
        from atnn.pipeline import ingest

        settings = load_settings(profile="default", dataset=dataset, home=home, data_dir=data_dir)
        ingest(settings, spec)
        tables = protocol.Tables.load(settings.paths.db)
    clear_text_cache()  # text embeddings (if the spec has them) independent of earlier tasks
    prepared = prepare(tables, spec, split, seed, config)
    out: dict[str, Any] = {}
    extras: dict[str, Any] = {"test_items": len(prepared.test.item_ids), "test_events": len(prepared.test),
                              "truth_items": len(prepared.truth)}
    started = time.perf_counter()

    def step(what: str, fn) -> None:
        t0 = time.perf_counter()
        fn()
        print(f"  {dataset} seed {seed}: {what} {time.perf_counter() - t0:.1f}s", flush=True)

    step("random, prior", lambda: out.update(random=run_random(prepared, seed), prior=run_prior(prepared)))
    for name in ("dnn", "two_tower_profile", "dropoutnet", "metaemb"):
        step(name, lambda: out.update({name: run_neural_baseline(name, prepared, config, seed)}))
    step("gbdt_profile", lambda: out.update(gbdt_profile=run_gbdt(prepared, config, seed)))
    step("atnn family", lambda: atnn_family(prepared, config, seed, out, extras))
    if seed in config.lambda_seeds:
        step("lambda grid", lambda: extras.update(lambda_sensitivity=lambda_sensitivity(prepared, config, seed, out)))
    if config.title_embedding:
        step("title embedding on/off", lambda: extras.update(
            title_embedding=title_embedding_comparison(tables, prepared, config, seed, out)))
    if config.title_tokens:
        step("without title words", lambda: extras.update(
            title_tokens=title_tokens_comparison(tables, prepared, config, seed, out)))
    extras["seconds"] = time.perf_counter() - started
    return {"models": out, "extras": extras}


# ---------------------------------------------------------------- aggregation and reports


def _flatten(metrics: dict[str, Any]) -> dict[str, float]:
    flat = {"auc": metrics["auc"], "gauc": metrics["gauc"], "item_auc": metrics["item_auc"],
            "train_seconds": metrics["train_seconds"]}
    for truth in ("ctr", "volume"):
        for key, value in metrics[truth].items():
            short = "precision10" if key == "precision_at_10pct" else key
            flat[f"{short}_{truth}"] = value
    return flat


def aggregate(per_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Mean and std over seeds of every metric, per model; analyses kept under `atnn`."""
    seeds = sorted(per_seed)
    out: dict[str, Any] = {}
    for model in MODELS:
        rows = [_flatten(per_seed[s]["models"][model]) for s in seeds if model in per_seed[s]["models"]]
        if not rows:
            continue
        entry: dict[str, Any] = {}
        for key in rows[0]:
            values = np.array([r[key] for r in rows], dtype=float)
            entry[f"{key}_mean"] = float(np.nanmean(values))
            entry[f"{key}_std"] = float(np.nanstd(values, ddof=1)) if len(values) > 1 else 0.0
        entry["auc_seeds"] = [float(r["auc"]) for r in rows]
        entry["seeds"] = seeds
        entry["uses_post_arrival_information"] = model in POST_ARRIVAL
        out[model] = entry
    atnn = out["atnn"]
    first = per_seed[seeds[0]]["extras"]
    mean_vector = [per_seed[s]["extras"]["mean_vector"] for s in seeds]
    atnn["mean_vector"] = {
        "k": first["mean_vector"]["k"], "users": first["mean_vector"]["users"], "items": first["mean_vector"]["items"],
        "spearman_vs_exact_mean": float(np.mean([m["spearman_vs_exact"] for m in mean_vector])),
        "spearman_vs_exact_min": float(np.min([m["spearman_vs_exact"] for m in mean_vector])),
        "speed_ratio_mean": float(np.mean([m["speed_ratio"] for m in mean_vector])),
        "seconds_mean_vector": float(np.mean([m["seconds_mean_vector"] for m in mean_vector])),
        "seconds_exact": float(np.mean([m["seconds_exact"] for m in mean_vector])),
        "spearman_ctr_exact_mean": float(np.mean([m["spearman_ctr_exact"] for m in mean_vector])),
        "by_k": {k: {key: float(np.mean([m["by_k"][k][key] for m in mean_vector])) for key in v}
                 for k, v in first["mean_vector"]["by_k"].items()},
    }
    if "segments" in first:
        segments = [per_seed[s]["extras"]["segments"] for s in seeds]
        atnn["segments"] = {
            "fields": first["segments"]["fields"],
            "segments_evaluated_mean": float(np.mean([g["segments_evaluated"] for g in segments])),
            "spearman_segment_vector_mean": float(np.mean([g["spearman_segment_vector_mean"] for g in segments])),
            "spearman_global_vector_mean": float(np.mean([g["spearman_global_vector_mean"] for g in segments])),
            "per_segment_seed0": first["segments"]["per_segment"],
        }
    lambdas = {s: per_seed[s]["extras"]["lambda_sensitivity"] for s in seeds if "lambda_sensitivity" in per_seed[s]["extras"]}
    if lambdas:
        atnn["lambda_sensitivity"] = {"seeds": sorted(lambdas), "by_lambda": {
            lam: {key: float(np.mean([lambdas[s][lam][key] for s in lambdas])) for key in ("val_auc", "test_auc")}
            for lam in next(iter(lambdas.values()))}}
    for name, keys in (("title_embedding", ("model", "spec_has_embedding")), ("title_tokens", ("feature",))):
        runs = [per_seed[s]["extras"].get(name) for s in seeds]
        if runs and all(runs):
            atnn[name] = {**{k: runs[0][k] for k in keys}, "seeds": seeds, **{
                side: {m: {key: float(np.mean([r[side][m][key] for r in runs])) for key in ("val_auc", "test_auc")}
                       | {"val_auc_seeds": [float(r[side][m]["val_auc"]) for r in runs],
                          "test_auc_seeds": [float(r[side][m]["test_auc"]) for r in runs]}
                       for m in ("atnn", "gbdt_profile")}
                for side in ("with", "without")}}
    two_tower, oracle = out["two_tower_profile"]["auc_mean"], out["atnn_encoder_oracle"]["auc_mean"]
    atnn["gap_closed"] = (atnn["auc_mean"] - two_tower) / (oracle - two_tower) if oracle != two_tower else float("nan")
    rivals = {m: v for m, v in out.items() if m not in POST_ARRIVAL and m != "atnn" and not m.startswith("atnn_")}
    best = max(rivals, key=lambda m: rivals[m]["auc_mean"])
    atnn["best_rival"] = best
    atnn["margin_over_best_rival"] = atnn["auc_mean"] - rivals[best]["auc_mean"]
    atnn["larger_std_vs_best_rival"] = max(atnn["auc_std"], rivals[best]["auc_std"])
    headroom = [per_seed[s]["models"]["gbdt_profile"]["item_headroom"] for s in seeds]
    gbdt = out["gbdt_profile"]["auc_mean"]
    swapped = float(np.mean([h["swapped_auc"] for h in headroom]))
    target = rivals[best]["auc_mean"] + atnn["larger_std_vs_best_rival"]
    atnn["item_headroom"] = {
        "model": "gbdt_profile",
        "item_rate_auc_mean": float(np.mean([h["item_rate_auc"] for h in headroom])),
        "swapped_auc_mean": swapped,
        "target_auc": target,
        # The share of what the realized item rates add to gbdt_profile that the target asks for.
        "target_share_of_swap": (target - gbdt) / (swapped - gbdt) if swapped != gbdt else float("nan"),
    }
    atnn["test_items"] = first["test_items"]
    atnn["truth_items"] = first["truth_items"]
    return out


def _fmt(entry: dict[str, Any], key: str, std: bool = False) -> str:
    mean = entry.get(f"{key}_mean", float("nan"))
    if std:
        return f"{mean:.4f} ± {entry.get(f'{key}_std', float('nan')):.4f}"
    return f"{mean:.3f}"


def _comparison_line(what: str, runs: dict[str, Any]) -> str:
    """One line of a with / without feature comparison (mean validation and test AUC)."""
    return f"- {what}, mean val / test AUC over seeds: " + "; ".join(
        f"{m}: with {runs['with'][m]['val_auc']:.4f} / {runs['with'][m]['test_auc']:.4f}, "
        f"without {runs['without'][m]['val_auc']:.4f} / {runs['without'][m]['test_auc']:.4f}"
        for m in ("atnn", "gbdt_profile")) + "."


def _headroom_line(h: dict[str, Any]) -> str:
    return (
        f"- Headroom in item quality (reads the test labels): each test event scored by its item's realized positive rate "
        f"alone, AUC {h['item_rate_auc_mean']:.4f}; {h['model']} with its per-item mean replaced by those rates, "
        f"{h['swapped_auc_mean']:.4f}. The target (best rival + larger std, {h['target_auc']:.4f}) asks for "
        f"{h['target_share_of_swap']:.0%} of what that swap adds to {h['model']}."
    )


def markdown(results: dict[str, Any], config: BenchConfig, seconds: float, task_seconds: float = float("nan"),
             cached: int = 0) -> str:
    timing = f"{seconds / 60:.1f} min wall"
    if cached:
        timing += f", {cached} of the dataset/seed tasks read from the cache"
    if np.isfinite(task_seconds):
        timing += f"; the tasks' own run time {task_seconds / 60:.1f} min in all (2 at a time)"
    lines = [
        "# Ranking quality of new arrivals",
        "",
        f"Written by `make bench-quality` (profile `{config.name}`, seeds {list(config.seeds)}, {timing}); "
        "protocol: `../shared/PROTOCOL.md`. AUC: new-arrival CTR AUC (mean ± std over seeds); GAUC: the AUC within "
        "each user's own test events, weighted by their count (how well a model orders one user's new items); item AUC: "
        "every event scored by its item's mean score (how well a model orders the new items against each other). Popularity of test "
        f"items with >= {config.min_events} events against the smoothed positive rate (ctr) and volume: "
        "Spearman, NDCG@10/@50, precision@10%. `*`: uses post-arrival information (the ceiling).",
        "",
    ]
    for dataset, splits in results.items():
        for split, models in splits.items():
            atnn = models["atnn"]
            lines += [
                f"## {dataset} ({split})",
                "",
                "| model | AUC | GAUC | item AUC | Spearman ctr | NDCG@10 ctr | NDCG@50 ctr | P@10% ctr | Spearman vol | NDCG@10 vol | NDCG@50 vol | P@10% vol | train s |",
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            ]
            for model, e in models.items():
                star = "*" if e["uses_post_arrival_information"] else ""
                lines.append(
                    f"| {model}{star} | {_fmt(e, 'auc', True)} | {_fmt(e, 'gauc')} | {_fmt(e, 'item_auc')} | {_fmt(e, 'spearman_ctr')} | {_fmt(e, 'ndcg10_ctr')} | "
                    f"{_fmt(e, 'ndcg50_ctr')} | {_fmt(e, 'precision10_ctr')} | {_fmt(e, 'spearman_volume')} | "
                    f"{_fmt(e, 'ndcg10_volume')} | {_fmt(e, 'ndcg50_volume')} | {_fmt(e, 'precision10_volume')} | "
                    f"{e['train_seconds_mean']:.1f} |"
                )
            mv = atnn["mean_vector"]
            lines += [
                "",
                f"- atnn vs the best model without post-arrival information ({atnn['best_rival']}): "
                f"{atnn['margin_over_best_rival']:+.4f} AUC (larger seed std {atnn['larger_std_vs_best_rival']:.4f}); "
                f"share of the two_tower_profile -> oracle gap closed: {atnn['gap_closed']:.2f}.",
                _headroom_line(atnn["item_headroom"]),
                f"- Mean user vector (top {mv['k']} of {mv['users']} users) vs the exact average over all users, "
                f"{mv['items']} items: Spearman {mv['spearman_vs_exact_mean']:.4f} (min over seeds {mv['spearman_vs_exact_min']:.4f}), "
                f"{mv['speed_ratio_mean']:.0f}x faster ({mv['seconds_mean_vector'] * 1e3:.3f} ms vs {mv['seconds_exact'] * 1e3:.2f} ms).",
                "- By K: " + ", ".join(
                    f"K={k}: rho vs exact {v['spearman_vs_exact']:.3f}, vs ctr {v['spearman_ctr']:.3f}" for k, v in mv["by_k"].items()),
            ]
            if "segments" in atnn:
                sg = atnn["segments"]
                lines.append(
                    f"- Segments ({' x '.join(sg['fields'])}, {sg['segments_evaluated_mean']:.0f} with >= 10 items): Spearman against "
                    f"each segment's realized positive rate: segment vector {sg['spearman_segment_vector_mean']:.3f}, "
                    f"global mean vector {sg['spearman_global_vector_mean']:.3f}."
                )
            if "lambda_sensitivity" in atnn:
                ls = atnn["lambda_sensitivity"]
                lines.append("- lambda sensitivity (seeds " + str(ls["seeds"]) + "): " + ", ".join(
                    f"{lam}: val {v['val_auc']:.4f} / test {v['test_auc']:.4f}" for lam, v in ls["by_lambda"].items()))
            if "title_embedding" in atnn:
                te = atnn["title_embedding"]
                lines.append(_comparison_line(
                    f"Title sentence embedding ({te['model']}; the spec {'uses' if te['spec_has_embedding'] else 'does not use'} it)", te))
            if "title_tokens" in atnn:
                lines.append(_comparison_line(f"Title words (`{atnn['title_tokens']['feature']}`)", atnn["title_tokens"]))
            lines.append("")
    return "\n".join(lines)


def _clean(value: Any) -> Any:
    """JSON-safe: NaN -> None, numpy scalars -> Python."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def run(config: BenchConfig, *, output: Path, data_dir: str | None, cache_dir: Path | None, jobs: int = 1) -> dict[str, Any]:
    """Every (dataset, seed) task, cached per task; then the aggregated JSON and Markdown."""
    started = time.perf_counter()
    tasks = [(d, s, seed) for d, s in config.datasets for seed in config.seeds]
    results: dict[tuple[str, str, int], dict[str, Any]] = {}
    pending = []
    for task in tasks:
        # Keyed by the benchmark config and the dataset's spec: a changed feature is a new task.
        key = f"{config.key()}-{load_spec(task[0]).schema_hash()}"
        path = cache_dir / f"{key}-{task[0]}-{task[1]}-{task[2]}.json" if cache_dir else None
        if path is not None and path.is_file():
            results[task] = json.loads(path.read_text(encoding="utf-8"))
        else:
            pending.append((task, path))

    def done(task, path, value):
        results[task] = value
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(_clean(value)), encoding="utf-8")
        print(f"done {task} in {value['extras']['seconds']:.0f}s; atnn AUC {value['models']['atnn']['auc']:.4f}", flush=True)

    if jobs > 1 and len(pending) > 1:
        failed = []
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(run_seed, *task, config, data_dir): (task, path) for task, path in pending}
            for future in as_completed(futures):
                task, path = futures[future]
                try:
                    done(task, path, future.result())
                except Exception as exc:  # keep (and cache) the other tasks; fail at the end
                    log.exception("task %s failed", task)
                    failed.append((task, exc))
        if failed:
            raise RuntimeError(f"{len(failed)} benchmark task(s) failed, first {failed[0][0]}: {failed[0][1]}") from failed[0][1]
    else:
        for task, path in pending:
            done(task, path, run_seed(*task, config, data_dir))
    # Cached values went through JSON (None for NaN); restore NaN before aggregating.
    results = {k: json.loads(json.dumps(_clean(v)), parse_constant=float) for k, v in results.items()}
    report: dict[str, Any] = {}
    for dataset, split in config.datasets:
        per_seed = {seed: _nan(results[(dataset, split, seed)]) for seed in config.seeds}
        report.setdefault(dataset, {})[split] = aggregate(per_seed)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(_clean(report), indent=2) + "\n", encoding="utf-8")
    task_seconds = float(sum(v["extras"].get("seconds", 0.0) for v in results.values()))
    cached = len(tasks) - len(pending)
    output.with_suffix(".md").write_text(markdown(report, config, time.perf_counter() - started, task_seconds, cached),
                                         encoding="utf-8")
    return report


def _nan(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan(v) for v in value]
    return float("nan") if value is None else value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m atnn.benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, few epochs (< 5 min)")
    parser.add_argument("--profile", default=None, choices=sorted(PROFILES))
    parser.add_argument("--output", default=None, help="default benchmarks/quality.json (quick: var/bench-quality/quick.json)")
    parser.add_argument("--data-dir", default=os.environ.get("ATNN_DATA_DIR"))
    parser.add_argument("--cache-dir", default=str(PROJECT_ROOT / "var" / "bench-quality" / "cache"))
    parser.add_argument("--no-cache", action="store_true")
    parser.add_argument("--jobs", type=int, default=2, help="parallel processes (one torch thread each)")
    parser.add_argument("--dataset", action="append", default=None, help="only these datasets")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    profile = args.profile or ("quick" if args.quick else "full")
    config = PROFILES[profile]
    if args.dataset:
        config = replace(config, datasets=tuple((d, s) for d, s in config.datasets if d in args.dataset))
    default_out = PROJECT_ROOT / ("benchmarks/quality.json" if profile == "full" else f"var/bench-quality/{profile}.json")
    output = Path(args.output) if args.output else default_out
    run(config, output=output, data_dir=args.data_dir, cache_dir=None if args.no_cache else Path(args.cache_dir), jobs=args.jobs)
    print(output.with_suffix(".md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
