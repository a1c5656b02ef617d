"""Metrics against scikit-learn, computed the slow way."""

import numpy as np
from sklearn.metrics import roc_auc_score

from atnn.metrics import grouped_auc, item_auc


def test_grouped_auc_is_the_event_weighted_mean_of_per_group_aucs():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 30, 2000)
    labels = rng.random(2000) < 0.4
    scores = np.round(rng.random(2000) + 0.3 * labels, 1)  # rounded: many ties
    groups[:5], labels[:5] = 99, True  # a group with one class only is left out
    values, weights = [], []
    for g in np.unique(groups):
        m = groups == g
        if labels[m].min() != labels[m].max():
            values.append(roc_auc_score(labels[m], scores[m]))
            weights.append(m.sum())
    assert np.isclose(grouped_auc(groups, labels, scores), np.average(values, weights=weights), atol=1e-12)


def test_grouped_auc_ignores_between_group_offsets_and_is_nan_without_both_classes():
    groups = np.array([0, 0, 0, 1, 1, 1])
    labels = np.array([1, 0, 0, 1, 0, 1])
    scores = np.array([0.3, 0.2, 0.1, 0.9, 0.8, 0.95])  # group 1 scored far above group 0
    assert grouped_auc(groups, labels, scores) == 1.0
    assert roc_auc_score(labels, scores) < 1.0
    assert np.isnan(grouped_auc(np.zeros(3), np.ones(3), np.arange(3.0)))


def test_item_auc_sees_only_the_order_of_items():
    items = np.array([0, 0, 0, 1, 1, 1])
    labels = np.array([1, 1, 0, 0, 0, 1])
    # Within item 0 the negative is scored highest; only the item means (0.5 vs 0.2) count.
    scores = np.array([0.4, 0.4, 0.7, 0.1, 0.3, 0.2])
    per_event_mean = np.array([0.5, 0.5, 0.5, 0.2, 0.2, 0.2])
    assert item_auc(items, labels, scores) == roc_auc_score(labels, per_event_mean)
    assert item_auc(items, labels, scores[[1, 0, 2, 5, 4, 3]]) == item_auc(items, labels, scores)
