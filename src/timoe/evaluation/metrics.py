"""Classification metrics computed from predictions (macro-F1 is scikit-learn's)."""

from __future__ import annotations

import numpy as np


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y_true = np.asarray(y_true)
    if y_true.size == 0:
        return float("nan")
    return float(np.mean(y_true == np.asarray(y_pred)))


def per_class_recall(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    cm = confusion(y_true, y_pred, n_classes)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Mean F1 over the classes present in y_true or y_pred (scikit-learn's macro average); nan if empty.

    Labels are left to scikit-learn (the classes present), not range(n_classes): a class absent
    from both would add an F1 of 0 and lower the mean for a class the split never held.
    n_classes still bounds the labels, as the confusion matrix did.
    """
    from sklearn.metrics import f1_score

    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if y_true.size == 0:
        return float("nan")
    labels = np.concatenate([y_true, y_pred])
    if labels.min() < 0 or labels.max() >= n_classes:
        raise IndexError(f"labels outside 0..{n_classes - 1}")
    return float(f1_score(y_true, y_pred, average="macro", zero_division=0))


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, float]:
    return {"accuracy": accuracy(y_true, y_pred), "macro_f1": macro_f1(y_true, y_pred, n_classes)}
