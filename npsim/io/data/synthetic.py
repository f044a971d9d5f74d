"""Synthetic tasks for tests and examples (host NumPy arrays, seeded).

Each returns ``(x, y)``: inputs (N, D) float64 and targets — int labels (N,)
for classification, floats (N, C) for regression. Cast with the backend.
"""

from __future__ import annotations

import itertools

import numpy as np

__all__ = ["teacher_student", "parity", "separable"]


def teacher_student(n_samples: int, sizes=(20, 30, 5), *, seed: int = 0, noise: float = 0.0,
                    teacher_gain: float = 2.0, input_correlation: float = 0.0):
    """Regression on the outputs of a random tanh teacher network.

    sizes : (n_in, hidden..., n_out) of the teacher; inputs x ~ N(0, I).
    teacher_gain : weight scale gain/√n_in, large enough that the teacher is
        clearly non-linear. ``noise`` adds N(0, noise²) label noise.
    input_correlation : ρ in [0, 1): inputs have unit variance and pairwise
        correlation ρ (the setting where decorrelation pays off).
    The teacher is drawn from ``seed``; the inputs from ``seed`` + 1.
    Returns x (N, n_in), y (N, n_out).
    """
    if not 0 <= input_correlation < 1:
        raise ValueError(f"teacher_student: input_correlation must be in [0, 1), got {input_correlation}")
    rng = np.random.default_rng(seed)
    n = sizes[0]
    x = np.random.default_rng(seed + 1).standard_normal((n_samples, n))
    if input_correlation:
        cov = (1 - input_correlation) * np.eye(n) + input_correlation * np.ones((n, n))
        x = x @ np.linalg.cholesky(cov).T
    h = x
    for i in range(1, len(sizes)):
        W = rng.standard_normal((sizes[i], sizes[i - 1])) * teacher_gain / np.sqrt(sizes[i - 1])
        h = h @ W.T
        if i < len(sizes) - 1:
            h = np.tanh(h)
    if noise:
        h = h + noise * rng.standard_normal(h.shape)
    return x, h


def parity(n_bits: int = 4, *, repeats: int = 1):
    """n-bit parity: every ±1 pattern of n bits, label 1 when the number of +1 bits is odd.

    Returns x (2^n · repeats, n) in {−1, +1} and y (·,) in {0, 1}.
    """
    if n_bits < 1:
        raise ValueError(f"parity: n_bits must be >= 1, got {n_bits}")
    bits = np.array(list(itertools.product([0, 1], repeat=n_bits)), dtype=np.int64)
    y = bits.sum(axis=1) % 2
    x = 2.0 * bits - 1.0
    return np.tile(x, (repeats, 1)), np.tile(y, repeats)


def separable(n_samples: int = 512, n_features: int = 10, n_classes: int = 2, *, margin: float = 0.5,
              seed: int = 0):
    """Linearly separable classes: Gaussian inputs labelled by a random linear teacher, with a margin.

    Points closer than ``margin`` to a decision boundary are redrawn, so a
    linear classifier exists that is 100% correct with that margin.
    Returns x (N, n_features), y (N,) int labels.
    """
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((n_classes, n_features))
    W /= np.linalg.norm(W, axis=1, keepdims=True)
    xs, ys, have = [], [], 0
    while have < n_samples:
        x = rng.standard_normal((2 * n_samples, n_features))
        s = x @ W.T
        top2 = np.sort(s, axis=1)[:, -2:]
        gap = top2[:, 1] - top2[:, 0] if n_classes > 1 else np.abs(s[:, 0])
        keep = gap > margin
        xs.append(x[keep])
        ys.append(s[keep].argmax(axis=1))
        have += int(keep.sum())
    return np.concatenate(xs)[:n_samples], np.concatenate(ys)[:n_samples]
