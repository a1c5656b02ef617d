"""Losses against hand-computed values, Algorithm 1's parameter updates, and learning on a planted signal."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from atnn.config import ModelConfig, TrainConfig
from atnn.encoding import FittedFeature
from atnn.model import ATNN, Batch
from atnn.train import Algorithm1, TrainingData, ctr_loss, fit, predict, similarity_loss, top_active_users
from atnn.metrics import auc

ITEM = [FittedFeature("genre", "item", "categorical", vocab=["a", "b", "c", "d"])]
USER = [FittedFeature("gender", "user", "categorical", vocab=["M", "F"])]
CONFIG = ModelConfig(embedding_dim=4, vector_dim=6, cross_layers=1, deep_layers=(8,), dropout=0.0)


def test_ctr_loss_by_hand():
    logits = torch.tensor([0.0, 2.0])
    labels = torch.tensor([1.0, 0.0])
    expected = -(math.log(0.5) + math.log(1 - 1 / (1 + math.exp(-2.0)))) / 2
    assert ctr_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_similarity_loss_on_known_vectors():
    generated = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    encoded = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, -1.0]])
    # cosines 1, 0, -1 -> (0^2 + 1^2 + 2^2) / 3
    assert similarity_loss(generated, encoded).item() == pytest.approx(5 / 3)


def _batch(n=16):
    torch.manual_seed(0)
    return Batch(
        item={"genre": torch.randint(2, 6, (n,))},
        stats=torch.randn(n, 2),
        user={"gender": torch.randint(2, 4, (n,))},
        label=torch.randint(0, 2, (n,)).float(),
    )


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def _changed(before, module):
    return {k for k, v in module.named_parameters() if not torch.equal(before[k], v.detach())}


def test_one_iteration_changes_exactly_the_right_parameters():
    torch.manual_seed(0)
    model = ATNN.build(ITEM, USER, 2, CONFIG)
    algorithm = Algorithm1(model, TrainConfig(learning_rate=0.01, weight_decay=0.0))
    batch = _batch()

    # Step 1 alone (lambda irrelevant): encoder, user tower and H move; the generator's own tower does not.
    before = _snapshot(model)
    model.zero_grad()
    ctr_loss(model.encoded_logits(batch.item, batch.stats, batch.user), batch.label).backward()
    algorithm.opt_encoder.step()
    changed = _changed(before, model)
    assert any(k.startswith("item_encoder.tower") for k in changed)
    assert any(k.startswith("user_encoder") for k in changed)
    assert any(k.startswith("interaction") for k in changed)
    assert "item_encoder.sparse.tables.genre.weight" in changed  # shared table, trained by L_i
    assert not any(k.startswith("generator.tower") for k in changed)

    # A full iteration moves every part: both towers of step 1, and the generator in step 2.
    model = ATNN.build(ITEM, USER, 2, CONFIG)
    algorithm = Algorithm1(model, TrainConfig(learning_rate=0.01, weight_decay=0.0))
    before = _snapshot(model)
    losses = algorithm.step(batch)
    changed = _changed(before, model)
    for prefix in ("item_encoder.tower", "user_encoder", "interaction", "generator.tower", "item_encoder.sparse"):
        assert any(k.startswith(prefix) for k in changed), prefix
    assert losses.l_s >= 0 and losses.l_i > 0 and losses.l_g > 0


def test_step_two_leaves_encoder_user_tower_and_h_unchanged():
    torch.manual_seed(0)
    model = ATNN.build(ITEM, USER, 2, CONFIG)
    algorithm = Algorithm1(model, TrainConfig(learning_rate=0.01, weight_decay=0.0, lambda_s=1.0))
    batch = _batch()
    # Replace step 1's optimizer with a no-op to isolate step 2.
    algorithm.opt_encoder.step = lambda: None
    before = _snapshot(model)
    algorithm.step(batch)
    changed = _changed(before, model)
    assert changed == {k for k in changed if k.startswith("generator.tower") or k == "item_encoder.sparse.tables.genre.weight"}
    assert any(k.startswith("generator.tower") for k in changed)
    assert "item_encoder.sparse.tables.genre.weight" in changed  # the shared table also serves the generator
    assert not any(k.startswith(("user_encoder", "interaction", "item_encoder.tower")) for k in changed)


def _planted(n_items=40, n_users=30, n_events=3000, seed=0) -> TrainingData:
    rng = np.random.default_rng(seed)
    genre = rng.integers(2, 6, n_items)
    gender = rng.integers(2, 4, n_users)
    item_index = rng.integers(0, n_items, n_events)
    user_index = rng.integers(0, n_users, n_events)
    # Genre 2 is liked by gender 2, genre 3 by gender 3, genre 4 by everyone, genre 5 by nobody.
    g, u = genre[item_index], gender[user_index]
    p = np.where(g == 4, 0.9, np.where(g == 5, 0.1, np.where(g == u, 0.8, 0.2)))
    label = (rng.random(n_events) < p).astype(np.float32)
    rate = np.array([label[item_index == i].mean() if (item_index == i).any() else 0.5 for i in range(n_items)])
    return TrainingData(
        item_ids=np.arange(n_items), item_inputs={"genre": genre.astype(np.int64)},
        stats=np.column_stack([rate, np.zeros(n_items)]).astype(np.float32),
        user_ids=np.arange(n_users), user_inputs={"gender": gender.astype(np.int64)},
        item_index=item_index, user_index=user_index, label=label,
    )


class _Enc:
    stats = ["a", "b"]

    def side(self, side):
        return ITEM if side == "item" else USER


@pytest.mark.slow
def test_fit_learns_planted_signal():
    train, val = _planted(seed=0), _planted(seed=1, n_events=1000)
    result = fit(train, val, _Enc(), CONFIG, TrainConfig(epochs=6, batch_size=128, learning_rate=0.01, patience=6))
    generated_auc = auc(val.label, predict(result.model, val))
    assert generated_auc > 0.75
    assert result.history[-1].l_s < result.history[0].l_s or result.history[0].l_s < 0.05


def test_top_active_users_ties_by_id():
    data = _planted()
    data.user_index = np.array([3, 3, 1, 1, 2, 0, 0, 0])
    data.item_index = np.zeros(8, dtype=np.int64)
    data.label = np.zeros(8, dtype=np.float32)
    assert top_active_users(data, 3).tolist() == [0, 1, 3]
