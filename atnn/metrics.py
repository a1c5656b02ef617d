"""Ranking metrics of ../shared/PROTOCOL.md, from scipy and scikit-learn."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.metrics import ndcg_score, roc_auc_score


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC; NaN when only one class is present."""
    labels = np.asarray(labels)
    return float(roc_auc_score(labels, scores)) if len(np.unique(labels)) == 2 else float("nan")


def grouped_auc(groups: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> float:
    """Within-group ROC AUC (GAUC): the AUC of each group (e.g. each user's own events), averaged with
    the group's event count as weight, over the groups that have both classes; NaN when none has.

    Per group, AUC = (sum of the positives' ranks - P(P+1)/2) / (P N), with ties at their mean rank:
    the Mann-Whitney form of what `roc_auc_score` computes, for all groups at once.
    """
    frame = pd.DataFrame({"g": np.asarray(groups), "y": np.asarray(labels, dtype=float), "s": np.asarray(scores, dtype=float)})
    frame["rank"] = frame.groupby("g")["s"].rank(method="average")
    per = frame.assign(pos_rank=frame["rank"] * frame["y"]).groupby("g").agg(
        n=("y", "size"), pos=("y", "sum"), pos_rank=("pos_rank", "sum"))
    per = per[(per["pos"] > 0) & (per["pos"] < per["n"])]
    if per.empty:
        return float("nan")
    neg = per["n"] - per["pos"]
    values = (per["pos_rank"] - per["pos"] * (per["pos"] + 1) / 2) / (per["pos"] * neg)
    return float(np.average(values, weights=per["n"]))


def item_auc(items: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> float:
    """Between-item ROC AUC: every event scored by the mean score of its item's events, so only how
    the items are ordered against each other counts (not which of an item's users respond)."""
    frame = pd.DataFrame({"i": np.asarray(items), "s": np.asarray(scores, dtype=float)})
    return auc(labels, frame.groupby("i")["s"].transform("mean").to_numpy())


def spearman(truth: np.ndarray, predicted: np.ndarray) -> float:
    if len(truth) < 2 or np.all(truth == truth[0]) or np.all(predicted == predicted[0]):
        return float("nan")
    return float(spearmanr(truth, predicted).statistic)


def ndcg_at(truth: np.ndarray, predicted: np.ndarray, k: int) -> float:
    """NDCG@k of the predicted order, with the (non-negative) true values as gains."""
    if len(truth) < 2:
        return float("nan")
    gains = np.asarray(truth, dtype=float)
    gains = gains - min(0.0, gains.min())
    return float(ndcg_score(gains.reshape(1, -1), np.asarray(predicted, dtype=float).reshape(1, -1), k=k))


def precision_at_fraction(truth: np.ndarray, predicted: np.ndarray, fraction: float = 0.1) -> float:
    """Share of the true top `fraction` found in the predicted top `fraction` (ties broken by position)."""
    n = len(truth)
    k = max(1, int(round(n * fraction)))
    if n < 2:
        return float("nan")
    true_top = set(np.argsort(-np.asarray(truth), kind="stable")[:k])
    predicted_top = set(np.argsort(-np.asarray(predicted), kind="stable")[:k])
    return len(true_top & predicted_top) / k


def ranking_report(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Spearman, NDCG@10, NDCG@50 and precision@10% of a predicted popularity against a truth."""
    return {
        "spearman": spearman(truth, predicted),
        "ndcg10": ndcg_at(truth, predicted, 10),
        "ndcg50": ndcg_at(truth, predicted, 50),
        "precision_at_10pct": precision_at_fraction(truth, predicted, 0.1),
    }
