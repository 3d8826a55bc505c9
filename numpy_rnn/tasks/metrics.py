"""Ranking metrics for multi-label classification: average precision, micro and macro.

Average precision summarises a ranking of scores against binary labels as the mean of the
precision at each positive, weighted by the recall it adds:

    AP = Σ_n (R_n - R_{n-1}) P_n

over the distinct score thresholds in decreasing order, with ``P_n`` and ``R_n`` the precision
and recall of predicting positive every score >= the n-th threshold. Equal scores form one
threshold (a tie is neither ordered for nor against the positives), which is what makes a
constant predictor score the base rate; this is scikit-learn's ``average_precision_score``.

* micro AP: one ranking of every (example, label) pair together;
* macro AP: the mean of each label's own AP, over the labels with at least one positive.
"""

from __future__ import annotations

import numpy as np

__all__ = ["average_precision", "label_average_precisions", "macro_average_precision",
           "micro_average_precision"]


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """AP of the 1-D ``scores`` against the bool ``positives`` of the same shape; NaN when
    there is no positive (the recall is undefined)."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    positives = np.asarray(positives, dtype=bool).ravel()
    if scores.shape != positives.shape:
        raise ValueError(f"scores {scores.shape} and positives {positives.shape} differ")
    n_pos = int(positives.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], positives[order]
    # The last index of each run of equal scores: one threshold per distinct score.
    last = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
    tp = np.cumsum(y)[last]
    predicted = last + 1
    precision = tp / predicted
    recall = tp / n_pos
    gained = np.diff(recall, prepend=0.0)
    return float(np.sum(gained * precision))


def micro_average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """AP of every (example, label) pair of ``scores (N, R)`` against bool ``targets (N, R)``,
    ranked together."""
    return average_precision(np.asarray(scores).ravel(), np.asarray(targets).ravel())


def label_average_precisions(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Each label's AP, ``(R,)``; NaN for a label without positives."""
    scores, targets = np.asarray(scores), np.asarray(targets, dtype=bool)
    return np.array([average_precision(scores[:, j], targets[:, j])
                     for j in range(scores.shape[1])])


def macro_average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """The mean of the labels' APs, over the labels with at least one positive."""
    ap = label_average_precisions(scores, targets)
    return float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")
