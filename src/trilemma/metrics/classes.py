"""Class balance of generated samples, read through a classifier: histogram, entropy and KL to uniform.

A model that drops classes (mode collapse at the class level) shows a lower entropy of the predicted-class
histogram; KL(p || uniform) = log C - H(p) is 0 for perfectly balanced samples and log C for a single class.
"""

from __future__ import annotations

import numpy as np

from ._array import as_numpy_f64


def class_histogram(labels_or_logits, num_classes: int) -> np.ndarray:
    """Counts (C,) int64 of integer labels (N,), or of the argmax of logits/probabilities (N, C)."""
    arr = as_numpy_f64(labels_or_logits)  # float64 holds any label or logit exactly enough for argmax
    if arr.ndim == 2:
        if arr.shape[1] != num_classes:
            raise ValueError(f"class_histogram: logits have {arr.shape[1]} columns but num_classes={num_classes}")
        labels = arr.argmax(1)
    elif arr.ndim == 1:
        if arr.size and (np.any(arr != np.round(arr)) or arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(
                f"class_histogram: labels must be integers in [0, {num_classes}), "
                f"got values in [{arr.min()}, {arr.max()}]"
            )
        labels = arr.astype(np.int64)
    else:
        raise ValueError(f"class_histogram needs labels (N,) or logits (N, C), got shape {arr.shape}")
    return np.bincount(labels, minlength=num_classes)


def class_entropy(hist) -> float:
    """Shannon entropy in nats of the normalised histogram (C,), with 0 log 0 = 0."""
    h = as_numpy_f64(hist)
    if h.ndim != 1 or h.size == 0 or np.any(h < 0) or h.sum() <= 0:
        raise ValueError(f"class_entropy needs a non-empty, non-negative histogram with a positive total, got {h}")
    p = h / h.sum()
    nz = p[p > 0]  # empty classes contribute 0 log 0 = 0
    return float(-(nz * np.log(nz)).sum())


def kl_to_uniform(hist) -> float:
    """KL(p || uniform over C classes) = log C - H(p) in nats, for a histogram (C,)."""
    return float(np.log(len(as_numpy_f64(hist))) - class_entropy(hist))
