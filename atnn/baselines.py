"""Baselines for the quality benchmark, built from the same modules and features as ATNN.

- `ProfileTwoTower`: item tower on the profile alone, user tower, the same H; click loss only.
- `ConcatDNN`: one network on the concatenated user and item-profile features (the paper's Figure 2).
- `DropoutNet`: one item tower reads profile + statistics; in training the statistics of a row are
  dropped (zeroed, with a "present" flag at 0) with probability `drop_rate`, so the same tower
  serves warm items (with statistics) and new arrivals (without).
- `MetaEmb`: the item tower reads profile + an item ID embedding; warm items use their trained ID
  embedding, and a meta-generator maps the profile to an ID embedding for new arrivals. Trained
  like Algorithm 1: one step on the warm loss (base model), one on the cold loss (meta-generator).
- `GBDTProfile`: LightGBM on the same user + item-profile inputs (categorical codes, numbers,
  multi-hot multi-valued categories and title tokens as a sparse matrix).

All neural baselines are trained by `fit_click_model` with early stopping on validation AUC.
No Prefect or Feast here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from atnn.config import ModelConfig, TrainConfig
from atnn.encoding import FeatureEncoder, FittedFeature
from atnn.metrics import auc
from atnn.model import MLP, Inputs, Interaction, SparseArch, Tower
from atnn.train import EarlyStopping, TrainingData, seed_everything


@dataclass
class EventBatch:
    """A batch with the row index of each event's item (for ID embeddings)."""

    item: Inputs
    stats: torch.Tensor
    user: Inputs
    label: torch.Tensor
    item_row: torch.Tensor


def event_batch(data: TrainingData, rows: np.ndarray) -> EventBatch:
    b = data.batch(rows)
    return EventBatch(b.item, b.stats, b.user, b.label, torch.from_numpy(data.item_index[rows]))


class ClickModel(nn.Module):
    """A model scoring (item, user) events; `cold_logits` is the new-arrival path (profile only)."""

    def warm_logits(self, batch: EventBatch) -> torch.Tensor:  # pragma: no cover - interface
        return self.cold_logits(batch)

    def cold_logits(self, batch: EventBatch) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def train_step(self, batch: EventBatch, optimizers: list[torch.optim.Optimizer]) -> float:
        """One step on the click loss of the warm path (the default for single-loss models)."""
        optimizers[0].zero_grad(set_to_none=True)
        loss = F.binary_cross_entropy_with_logits(self.warm_logits(batch), batch.label)
        loss.backward()
        optimizers[0].step()
        return float(loss.item())

    def optimizers(self, config: TrainConfig) -> list[torch.optim.Optimizer]:
        return [torch.optim.Adam(self.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)]


class TwoTowerBase(ClickModel):
    """Shared parts of the two-tower baselines: a user tower and H."""

    user_sparse: SparseArch
    user_tower: Tower
    interaction: Interaction

    def user_vectors(self, user: Inputs) -> torch.Tensor:
        return self.user_tower(self.user_sparse(user))

    def cold_item_vectors(self, item: Inputs) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def cold_logits(self, batch: EventBatch) -> torch.Tensor:
        return self.interaction(self.cold_item_vectors(batch.item), self.user_vectors(batch.user))


class ProfileTwoTower(TwoTowerBase):
    def __init__(self, item_features: list[FittedFeature], user_features: list[FittedFeature], config: ModelConfig):
        super().__init__()
        self.item_sparse = SparseArch(item_features, config.embedding_dim, config.token_dropout)
        self.item_tower = Tower(self.item_sparse.output_dim, config)
        self.user_sparse = SparseArch(user_features, config.embedding_dim)
        self.user_tower = Tower(self.user_sparse.output_dim, config)
        self.interaction = Interaction(config.vector_dim)

    def cold_item_vectors(self, item: Inputs) -> torch.Tensor:
        return self.item_tower(self.item_sparse(item))

    def warm_logits(self, batch: EventBatch) -> torch.Tensor:
        return self.cold_logits(batch)


class ConcatDNN(ClickModel):
    def __init__(self, item_features: list[FittedFeature], user_features: list[FittedFeature], config: ModelConfig):
        super().__init__()
        self.item_sparse = SparseArch(item_features, config.embedding_dim, config.token_dropout)
        self.user_sparse = SparseArch(user_features, config.embedding_dim)
        self.deep = MLP(self.item_sparse.output_dim + self.user_sparse.output_dim, config.deep_layers, config.dropout)
        self.head = nn.Linear(self.deep.output_dim, 1)

    def cold_logits(self, batch: EventBatch) -> torch.Tensor:
        x = torch.cat([self.item_sparse(batch.item), self.user_sparse(batch.user)], dim=-1)
        return self.head(self.deep(x)).squeeze(-1)

    def warm_logits(self, batch: EventBatch) -> torch.Tensor:
        return self.cold_logits(batch)


class DropoutNet(TwoTowerBase):
    def __init__(self, item_features: list[FittedFeature], user_features: list[FittedFeature], num_stats: int,
                 config: ModelConfig, drop_rate: float = 0.5):
        super().__init__()
        self.drop_rate = drop_rate
        self.item_sparse = SparseArch(item_features, config.embedding_dim, config.token_dropout)
        self.item_tower = Tower(self.item_sparse.output_dim + num_stats + 1, config)
        self.user_sparse = SparseArch(user_features, config.embedding_dim)
        self.user_tower = Tower(self.user_sparse.output_dim, config)
        self.interaction = Interaction(config.vector_dim)
        self.num_stats = num_stats

    def item_vectors(self, item: Inputs, stats: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.item_sparse(item), stats * present, present], dim=-1)
        return self.item_tower(x)

    def cold_item_vectors(self, item: Inputs) -> torch.Tensor:
        n = next(iter(item.values())).shape[0]
        return self.item_vectors(item, torch.zeros(n, self.num_stats), torch.zeros(n, 1))

    def warm_logits(self, batch: EventBatch) -> torch.Tensor:
        n = batch.label.shape[0]
        present = (torch.rand(n, 1) >= self.drop_rate).to(torch.float32) if self.training else torch.ones(n, 1)
        return self.interaction(self.item_vectors(batch.item, batch.stats, present), self.user_vectors(batch.user))


class MetaEmb(TwoTowerBase):
    def __init__(self, item_features: list[FittedFeature], user_features: list[FittedFeature], num_items: int, config: ModelConfig):
        super().__init__()
        dim = config.embedding_dim
        self.item_sparse = SparseArch(item_features, dim, config.token_dropout)
        self.item_ids = nn.Embedding(num_items, dim)
        nn.init.normal_(self.item_ids.weight, std=0.05)
        self.item_tower = Tower(self.item_sparse.output_dim + dim, config)
        self.meta = nn.Sequential(nn.Linear(self.item_sparse.output_dim, 4 * dim), nn.ReLU(), nn.Linear(4 * dim, dim))
        self.user_sparse = SparseArch(user_features, dim)
        self.user_tower = Tower(self.user_sparse.output_dim, config)
        self.interaction = Interaction(config.vector_dim)

    def cold_item_vectors(self, item: Inputs) -> torch.Tensor:
        profile = self.item_sparse(item)
        # The generated ID embedding is trained to work inside the base model, not to change it.
        return self.item_tower(torch.cat([profile.detach(), self.meta(profile.detach())], dim=-1))

    def warm_logits(self, batch: EventBatch) -> torch.Tensor:
        profile = self.item_sparse(batch.item)
        vectors = self.item_tower(torch.cat([profile, self.item_ids(batch.item_row)], dim=-1))
        return self.interaction(vectors, self.user_vectors(batch.user))

    def optimizers(self, config: TrainConfig) -> list[torch.optim.Optimizer]:
        meta = set(id(p) for p in self.meta.parameters())
        base = [p for p in self.parameters() if id(p) not in meta]
        return [
            torch.optim.Adam(base, lr=config.learning_rate, weight_decay=config.weight_decay),
            torch.optim.Adam(self.meta.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay),
        ]

    def train_step(self, batch: EventBatch, optimizers: list[torch.optim.Optimizer]) -> float:
        warm = super().train_step(batch, optimizers[:1])
        # Cold-start loss on the meta-generator only: the base model is a fixed function here.
        self.zero_grad(set_to_none=True)
        loss = F.binary_cross_entropy_with_logits(self.cold_logits(batch), batch.label)
        loss.backward()
        optimizers[1].step()
        self.zero_grad(set_to_none=True)
        return warm


@torch.no_grad()
def predict_cold(model: ClickModel, data: TrainingData, batch_size: int = 8192) -> np.ndarray:
    """New-arrival click probabilities (profile only) for every event row of `data`."""
    model.eval()
    out = np.empty(len(data), dtype=np.float32)
    for start in range(0, len(data), batch_size):
        rows = np.arange(start, min(start + batch_size, len(data)))
        out[rows] = torch.sigmoid(model.cold_logits(event_batch(data, rows))).numpy()
    return out


@dataclass
class ClickFit:
    model: ClickModel
    best_epoch: int
    best_val_auc: float
    train_seconds: float


def fit_click_model(model: ClickModel, train: TrainingData, validation: TrainingData, config: TrainConfig) -> ClickFit:
    """Minibatch training with early stopping on the new-arrival (cold) AUC of validation items."""
    seed_everything(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    optimizers = model.optimizers(config)
    rng = np.random.default_rng(config.seed)
    stopper = EarlyStopping(config.patience)
    started = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = rng.permutation(len(train))
        for start in range(0, len(order), config.batch_size):
            model.train_step(event_batch(train, order[start : start + config.batch_size]), optimizers)
        if stopper.update(model, epoch, auc(validation.label, predict_cold(model, validation))):
            break
    stopper.restore(model)
    return ClickFit(model, stopper.best_epoch, stopper.best_auc, time.perf_counter() - started)


# ---------------------------------------------------------------- gradient-boosted trees


def profile_matrix(encoder: FeatureEncoder, item_inputs: dict[str, np.ndarray], user_inputs: dict[str, np.ndarray],
                   item_rows: np.ndarray, user_rows: np.ndarray) -> tuple[sp.csr_matrix, list[int]]:
    """Event rows as a sparse matrix: categorical codes (as LightGBM categoricals), numbers, multi-hots,
    text embeddings."""
    blocks: list[sp.csr_matrix] = []
    categorical: list[int] = []
    column = 0
    for side, inputs, rows in (("item", item_inputs, item_rows), ("user", user_inputs, user_rows)):
        for f in encoder.side(side):
            x = inputs[f.name][rows]
            if f.kind == "text_embedding":  # every number of the embedding is a column
                blocks.append(sp.csr_matrix(x.astype(np.float32)))
                column += x.shape[1]
            elif f.is_dense:
                values = np.where(x[:, 1:] > 0, np.nan, x[:, :1])  # missing stays missing for the trees
                blocks.append(sp.csr_matrix(values.astype(np.float32)))
                column += 1
            elif f.is_sequence:
                n = len(rows)
                nz = x != 0
                r = np.repeat(np.arange(n), nz.sum(1))
                m = sp.csr_matrix((np.ones(len(r), np.float32), (r, x[nz])), shape=(n, f.cardinality))
                m.data[:] = 1.0  # repeated tokens count once
                blocks.append(m)
                column += f.cardinality
            else:
                blocks.append(sp.csr_matrix(x.reshape(-1, 1).astype(np.float32)))
                categorical.append(column)
                column += 1
    return sp.hstack(blocks, format="csr"), categorical


class GBDTProfile:
    """LightGBM on user + item-profile features, early stopping on validation log-loss."""

    def __init__(self, encoder: FeatureEncoder, seed: int, *, learning_rate: float = 0.05, num_leaves: int = 31,
                 max_rounds: int = 2000):
        self.encoder = encoder
        self.params = {
            "objective": "binary", "learning_rate": learning_rate, "num_leaves": num_leaves, "min_data_in_leaf": 50,
            "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1, "lambda_l2": 1.0,
            "cat_smooth": 10.0, "max_cat_to_onehot": 8, "seed": seed, "deterministic": True,
            "num_threads": 1, "verbose": -1, "force_col_wise": True,
        }
        self.max_rounds = max_rounds
        self.booster = None
        self.train_seconds = 0.0

    def matrix(self, data: TrainingData, item_rows: np.ndarray | None = None, user_rows: np.ndarray | None = None):
        item_rows = data.item_index if item_rows is None else item_rows
        user_rows = data.user_index if user_rows is None else user_rows
        return profile_matrix(self.encoder, data.item_inputs, data.user_inputs, item_rows, user_rows)

    def fit(self, train: TrainingData, validation: TrainingData) -> "GBDTProfile":
        import lightgbm as lgb

        started = time.perf_counter()
        x_train, categorical = self.matrix(train)
        x_val, _ = self.matrix(validation)
        train_set = lgb.Dataset(x_train, train.label, categorical_feature=categorical, free_raw_data=False)
        val_set = lgb.Dataset(x_val, validation.label, reference=train_set, categorical_feature=categorical)
        self.booster = lgb.train(
            self.params, train_set, num_boost_round=self.max_rounds, valid_sets=[val_set],
            callbacks=[lgb.early_stopping(50, verbose=False)],
        )
        self.train_seconds = time.perf_counter() - started
        return self

    def predict_matrix(self, x: sp.csr_matrix) -> np.ndarray:
        return self.booster.predict(x, num_iteration=self.booster.best_iteration)

    def predict(self, data: TrainingData) -> np.ndarray:
        return self.predict_matrix(self.matrix(data)[0])
