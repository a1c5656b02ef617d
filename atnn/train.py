"""Training ATNN: data arrays, the losses, Algorithm 1, early stopping, and the mean user vector.

Algorithm 1 (per batch):
  step 1: minimize L_i = BCE(H(f_i(X_i), f_u(X_u)), y) over the item encoder, user encoder and H;
  step 2: minimize L_g + lambda * L_s over the generator, where
          L_g = BCE(H(g(X_ip), f_u(X_u)), y) with f_u and H held fixed, and
          L_s = mean((1 - cos(g(X_ip), f_i(X_i)))^2) with f_i(X_i) as a fixed target.
The generator and item encoder share their embedding tables, so both steps train them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from atnn.config import ModelConfig, TrainConfig
from atnn.encoding import FeatureEncoder
from atnn.metrics import auc
from atnn.model import ATNN, Batch, Inputs
from atnn.spec import DatasetSpec

log = logging.getLogger(__name__)


@dataclass
class TrainingData:
    """Encoded inputs stored once per item and once per user, and events as index pairs."""

    item_ids: np.ndarray
    item_inputs: dict[str, np.ndarray]
    stats: np.ndarray
    user_ids: np.ndarray
    user_inputs: dict[str, np.ndarray]
    item_index: np.ndarray
    user_index: np.ndarray
    label: np.ndarray

    def __len__(self) -> int:
        return len(self.label)

    def batch(self, rows: np.ndarray) -> Batch:
        items = self.item_index[rows]
        users = self.user_index[rows]
        return Batch(
            item={k: torch.from_numpy(v[items]) for k, v in self.item_inputs.items()},
            stats=torch.from_numpy(self.stats[items]),
            user={k: torch.from_numpy(v[users]) for k, v in self.user_inputs.items()},
            label=torch.from_numpy(self.label[rows]),
        )


def split_frame(frame: pd.DataFrame, spec: DatasetSpec) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Event rows with joined features -> (items, users, events): one row per item and per user."""
    item_cols = ["item_id", *[f.name for f in spec.item_features], *[s for s in spec.stats if s in frame.columns]]
    user_cols = list(dict.fromkeys(["user_id", *[f.name for f in spec.user_features]]))
    items = frame[item_cols].drop_duplicates("item_id").reset_index(drop=True)
    users = frame[user_cols].drop_duplicates("user_id").reset_index(drop=True)
    events = frame[["item_id", "user_id", "label"]]
    return items, users, events


def build_training_data(frame: pd.DataFrame, encoder: FeatureEncoder, spec: DatasetSpec) -> TrainingData:
    """Encode a frame of event rows (item_id, user_id, label + item, stats and user columns)."""
    items, users, events = split_frame(frame, spec)
    item_pos = pd.Index(items["item_id"])
    user_pos = pd.Index(users["user_id"])
    stats = encoder.encode_stats(items) if all(s in items.columns for s in encoder.stats) else np.zeros((len(items), len(encoder.stats)), np.float32)
    return TrainingData(
        item_ids=items["item_id"].to_numpy(),
        item_inputs=encoder.encode(items, "item"),
        stats=stats,
        user_ids=users["user_id"].to_numpy(),
        user_inputs=encoder.encode(users, "user"),
        item_index=item_pos.get_indexer(events["item_id"]).astype(np.int64),
        user_index=user_pos.get_indexer(events["user_id"]).astype(np.int64),
        label=events["label"].to_numpy(dtype=np.float32),
    )


# ---------------------------------------------------------------- losses


def ctr_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L_i and L_g: binary cross-entropy on click labels (from logits, numerically stable)."""
    return F.binary_cross_entropy_with_logits(logits, labels)


def similarity_loss(generated: torch.Tensor, encoded: torch.Tensor) -> torch.Tensor:
    """L_s = mean((1 - cos(generated, encoded))^2), the paper's discriminator loss."""
    return ((1.0 - F.cosine_similarity(generated, encoded, dim=-1)) ** 2).mean()


@dataclass
class StepLosses:
    l_i: float
    l_g: float
    l_s: float


class Algorithm1:
    """The two optimizers of Algorithm 1 and one iteration over a batch."""

    def __init__(self, model: ATNN, config: TrainConfig):
        self.model = model
        self.lambda_s = config.lambda_s
        encoder_params = [
            *model.item_encoder.parameters(),
            *model.user_encoder.parameters(),
            *model.interaction.parameters(),
        ]
        self.opt_encoder = torch.optim.Adam(encoder_params, lr=config.learning_rate, weight_decay=config.weight_decay)
        self.opt_generator = torch.optim.Adam(
            model.generator.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )

    def step(self, batch: Batch) -> StepLosses:
        model = self.model
        # Step 1: L_i on the item encoder, user encoder and H.
        model.zero_grad(set_to_none=True)
        l_i = ctr_loss(model.encoded_logits(batch.item, batch.stats, batch.user), batch.label)
        l_i.backward()
        self.opt_encoder.step()
        # Step 2: L_g + lambda * L_s on the generator; the user vector and the encoder's item vector
        # are fixed targets, and only the generator's optimizer steps (H is not updated here).
        model.zero_grad(set_to_none=True)
        with torch.no_grad():
            user_vector = model.user_encoder(batch.user)
            encoded_vector = model.item_encoder(batch.item, batch.stats)
        generated = model.generator(batch.item)
        l_g = ctr_loss(model.interaction(generated, user_vector), batch.label)
        l_s = similarity_loss(generated, encoded_vector)
        (l_g + self.lambda_s * l_s).backward()
        self.opt_generator.step()
        model.zero_grad(set_to_none=True)
        return StepLosses(l_i.item(), l_g.item(), l_s.item())


# ---------------------------------------------------------------- prediction


@torch.no_grad()
def predict(model: ATNN, data: TrainingData, *, generated: bool = True, batch_size: int = 8192) -> np.ndarray:
    """Click probabilities for every event row: from the generator (new-arrival path) or the encoder."""
    model.eval()
    out = np.empty(len(data), dtype=np.float32)
    for start in range(0, len(data), batch_size):
        rows = np.arange(start, min(start + batch_size, len(data)))
        b = data.batch(rows)
        logits = model.generated_logits(b.item, b.user) if generated else model.encoded_logits(b.item, b.stats, b.user)
        out[rows] = torch.sigmoid(logits).numpy()
    return out


@torch.no_grad()
def user_vectors(model: ATNN, user_inputs: dict[str, np.ndarray]) -> torch.Tensor:
    model.eval()
    return model.user_encoder({k: torch.from_numpy(v) for k, v in user_inputs.items()})


def top_active_users(data: TrainingData, k: int) -> np.ndarray:
    """Indices (into data.user_ids) of the k users with the most events, ties by id."""
    counts = np.bincount(data.user_index, minlength=len(data.user_ids))
    order = np.lexsort((data.user_ids, -counts))
    return order[: min(k, len(order))]


def mean_user_vector(model: ATNN, data: TrainingData, k: int) -> tuple[torch.Tensor, np.ndarray]:
    """The mean user vector of the top-k most active users, and which users those are."""
    chosen = top_active_users(data, k)
    vectors = user_vectors(model, {name: v[chosen] for name, v in data.user_inputs.items()})
    return vectors.mean(0), data.user_ids[chosen]


def segment_user_vectors(model: ATNN, data: TrainingData, users: pd.DataFrame, fields: list[str]) -> tuple[list[str], torch.Tensor]:
    """One mean user vector per segment ("popular for whom"): the users of `data` grouped by the
    values of `fields` (e.g. the user's sex x age band), named like 'F|25-34'; sorted by name."""
    profile = users.drop_duplicates("user_id").set_index("user_id").reindex(data.user_ids)
    labels = profile[list(fields)].astype("string").fillna("?").agg("|".join, axis=1).to_numpy()
    vectors = user_vectors(model, data.user_inputs)
    names = sorted(set(labels))
    return names, torch.stack([vectors[torch.from_numpy(labels == name)].mean(0) for name in names])


# ---------------------------------------------------------------- fitting


@dataclass
class EpochRecord:
    epoch: int
    l_i: float
    l_g: float
    l_s: float
    train_seconds: float
    val_auc_generated: float = float("nan")
    val_auc_encoded: float = float("nan")


@dataclass
class FitResult:
    model: ATNN
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    best_val_auc: float = float("nan")
    train_seconds: float = 0.0


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def _start_training(encoder: FeatureEncoder, model_config: ModelConfig, train_config: TrainConfig) -> tuple[ATNN, "Algorithm1", np.random.Generator]:
    """Seeded model, its Algorithm 1 optimizers and the shuffling generator (fit and fit_stream)."""
    seed_everything(train_config.seed)
    if train_config.threads:
        torch.set_num_threads(train_config.threads)
    model = ATNN.build(encoder.side("item"), encoder.side("user"), len(encoder.stats), model_config)
    return model, Algorithm1(model, train_config), np.random.default_rng(train_config.seed)


def _close_epoch(model: ATNN, validation: "TrainingData | None", record: EpochRecord, result, stopper: "EarlyStopping",
                 on_epoch: Callable[[EpochRecord], None] | None, what: str) -> bool:
    """End of an epoch in fit and fit_stream: validation AUCs, history, log, callback, early stopping.
    True when training should stop."""
    if validation is not None and len(validation):
        record.val_auc_generated = auc(validation.label, predict(model, validation, generated=True))
        record.val_auc_encoded = auc(validation.label, predict(model, validation, generated=False))
    result.history.append(record)
    log.info("epoch %d%s: L_i %.4f L_g %.4f L_s %.4f, validation AUC generator %.4f encoder %.4f",
             record.epoch, what, record.l_i, record.l_g, record.l_s, record.val_auc_generated, record.val_auc_encoded)
    if on_epoch:
        on_epoch(record)
    stop = stopper.update(model, record.epoch, record.val_auc_generated if validation is not None else float("nan"))
    result.best_val_auc, result.best_epoch = stopper.best_auc, stopper.best_epoch
    return stop


class EarlyStopping:
    """Keeps the model state of the best validation AUC and says when `patience` epochs in a row
    brought no improvement. An epoch without a score (no validation set) keeps no state."""

    def __init__(self, patience: int):
        self.patience = patience
        self.best_auc = float("nan")
        self.best_epoch = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.since_best = 0

    def update(self, model: torch.nn.Module, epoch: int, score: float) -> bool:
        """Record this epoch's score; True when training should stop."""
        if np.isnan(score):
            self.best_state, self.best_epoch = None, epoch
            return False
        if np.isnan(self.best_auc) or score > self.best_auc:
            self.best_auc, self.best_epoch, self.since_best = score, epoch, 0
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        self.since_best += 1
        return self.since_best >= self.patience

    def restore(self, model: torch.nn.Module) -> None:
        """Load the best state (if any) and leave the model in eval mode."""
        if self.best_state is not None:
            model.load_state_dict(self.best_state)
        model.eval()


def fit(
    train: TrainingData,
    validation: TrainingData | None,
    encoder: FeatureEncoder,
    model_config: ModelConfig,
    train_config: TrainConfig,
    *,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> FitResult:
    """Train with Algorithm 1; keep the epoch with the best generator AUC on validation."""
    model, algorithm, rng = _start_training(encoder, model_config, train_config)
    result = FitResult(model=model)
    stopper = EarlyStopping(train_config.patience)
    started = time.perf_counter()
    for epoch in range(1, train_config.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        order = rng.permutation(len(train))
        sums = np.zeros(3)
        steps = 0
        for start in range(0, len(order), train_config.batch_size):
            losses = algorithm.step(train.batch(order[start : start + train_config.batch_size]))
            sums += (losses.l_i, losses.l_g, losses.l_s)
            steps += 1
        record = EpochRecord(epoch, *(sums / max(steps, 1)), train_seconds=time.perf_counter() - t0)
        if _close_epoch(model, validation, record, result, stopper, on_epoch, ""):
            break
    stopper.restore(model)
    result.train_seconds = time.perf_counter() - started
    return result


# ---------------------------------------------------------------- streaming (event logs larger than memory)

# (item_id, user_id, label) arrays of consecutive events; a fresh pass over the log per call.
EventChunks = Callable[[], Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]]]


def profile_arrays(items: pd.DataFrame, users: pd.DataFrame, encoder: FeatureEncoder) -> TrainingData:
    """The fixed part of a streamed training set: inputs encoded once per item and per user, no events.

    `items` has one row per item (profile + statistics), `users` one row per user. Events are joined
    chunk by chunk with `with_events`, so only one chunk of the event log is in memory at a time.
    """
    have_stats = all(s in items.columns for s in encoder.stats)
    return TrainingData(
        item_ids=items["item_id"].to_numpy(),
        item_inputs=encoder.encode(items, "item"),
        stats=encoder.encode_stats(items) if have_stats else np.zeros((len(items), len(encoder.stats)), np.float32),
        user_ids=users["user_id"].to_numpy(),
        user_inputs=encoder.encode(users, "user"),
        item_index=np.zeros(0, np.int64),
        user_index=np.zeros(0, np.int64),
        label=np.zeros(0, np.float32),
    )


def with_events(base: TrainingData, item_ids: np.ndarray, user_ids: np.ndarray, labels: np.ndarray) -> TrainingData:
    """`base` with these events; events of items or users that `base` does not hold are dropped
    (that is how held-out validation items stay out of the training stream)."""
    items = pd.Index(base.item_ids).get_indexer(item_ids)
    users = pd.Index(base.user_ids).get_indexer(user_ids)
    keep = (items >= 0) & (users >= 0)
    return replace(
        base,
        item_index=items[keep].astype(np.int64),
        user_index=users[keep].astype(np.int64),
        label=np.asarray(labels)[keep].astype(np.float32),
    )


def parquet_event_chunks(path: str | Path, chunk_events: int = 1_000_000) -> EventChunks:
    """Stream (item_id, user_id, label) from a Parquet event log, `chunk_events` rows at a time."""
    import pyarrow.parquet as pq

    def chunks() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        with pq.ParquetFile(path) as log_file:
            for batch in log_file.iter_batches(batch_size=chunk_events, columns=["item_id", "user_id", "label"]):
                yield (batch.column("item_id").to_numpy(), batch.column("user_id").to_numpy(),
                       batch.column("label").to_numpy(zero_copy_only=False))

    return chunks


@dataclass
class StreamFitResult(FitResult):
    events_seen: int = 0          # training events consumed, all epochs
    events_per_s: float = 0.0     # of the training steps alone (validation excluded)
    user_events: np.ndarray | None = None  # events per user of `base` in one pass (for top-K users)
    chunk_events_per_s: list[float] = field(default_factory=list)  # throughput of each chunk's steps


def fit_stream(
    base: TrainingData,
    chunks: EventChunks,
    validation: TrainingData | None,
    encoder: FeatureEncoder,
    model_config: ModelConfig,
    train_config: TrainConfig,
    *,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    max_events: int | None = None,
) -> StreamFitResult:
    """Algorithm 1 over an event stream: each chunk is shuffled and cut into batches.

    The in-memory `fit` shuffles the whole log each epoch; here the shuffle is within a chunk, so
    the log should not be sorted by item (an event log in time order is fine). `max_events` stops
    each pass after that many events. Early stopping on the generator's validation AUC as in `fit`.
    """
    model, algorithm, rng = _start_training(encoder, model_config, train_config)
    result = StreamFitResult(model=model)
    stopper, step_seconds = EarlyStopping(train_config.patience), 0.0
    started = time.perf_counter()
    for epoch in range(1, train_config.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        sums, steps, seen = np.zeros(3), 0, 0
        user_events = np.zeros(len(base.user_ids), np.int64)
        for item_ids, user_ids, labels in chunks():
            if max_events is not None:
                if seen >= max_events:
                    break
                item_ids, user_ids, labels = item_ids[: max_events - seen], user_ids[: max_events - seen], labels[: max_events - seen]
            seen += len(labels)
            data = with_events(base, item_ids, user_ids, labels)
            user_events += np.bincount(data.user_index, minlength=len(user_events))
            order = rng.permutation(len(data))
            chunk_started = time.perf_counter()
            for start in range(0, len(order), train_config.batch_size):
                losses = algorithm.step(data.batch(order[start : start + train_config.batch_size]))
                sums += (losses.l_i, losses.l_g, losses.l_s)
                steps += 1
            if len(data):
                result.chunk_events_per_s.append(len(data) / max(time.perf_counter() - chunk_started, 1e-9))
            result.events_seen += len(data)
        record = EpochRecord(epoch, *(sums / max(steps, 1)), train_seconds=time.perf_counter() - t0)
        step_seconds += record.train_seconds
        result.user_events = user_events
        if _close_epoch(model, validation, record, result, stopper, on_epoch, f" (streamed, {seen} events)"):
            break
    stopper.restore(model)
    result.train_seconds = time.perf_counter() - started
    result.events_per_s = result.events_seen / step_seconds if step_seconds > 0 else float("nan")
    return result


def mean_user_vector_of(model: ATNN, base: TrainingData, user_events: np.ndarray, k: int) -> tuple[torch.Tensor, np.ndarray]:
    """`mean_user_vector` for a streamed training set: top-k users by their streamed event counts."""
    order = np.lexsort((base.user_ids, -user_events))[: min(k, len(user_events))]
    vectors = user_vectors(model, {name: v[order] for name, v in base.user_inputs.items()})
    return vectors.mean(0), base.user_ids[order]
