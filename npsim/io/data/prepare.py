"""Data sets in memory: read a named data set and preprocess it into float32 features and int64 labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import DataError, DataFormatError
from .formats import RawSplits, data_files, load_cifar10_dir, load_idx_dir, load_npz
from .locate import DATASETS, dataset_label, find_dataset

__all__ = ["Dataset", "load_dataset", "NORMALIZATIONS", "MAX_CLASSES"]

#: Accepted values of ``load_dataset(normalize=...)``.
NORMALIZATIONS = ("standard", "unit", "none")

#: Most classes a data set without a declared class count may have (one network output per class).
MAX_CLASSES = 100_000


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A preprocessed classification data set held in memory.

    Attributes
    ----------
    name : data set name, e.g. ``"fashion-mnist"``.
    x_train : (N, D) float32 training inputs, preprocessed (see :func:`load_dataset`).
    y_train : (N,) int64 class labels in ``[0, n_classes)``.
    x_test : (M, D) float32 test inputs, preprocessed with the training statistics.
    y_test : (M,) int64 class labels.
    n_classes : number of classes.
    source : where the data were read from (a path, as a string).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    source: str

    @property
    def n_features(self) -> int:
        """Input dimension D (number of columns of ``x_train``)."""
        return int(self.x_train.shape[1])

    @property
    def n_train(self) -> int:
        """Number of training samples N."""
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        """Number of test samples M."""
        return int(self.x_test.shape[0])

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, n_train={self.n_train}, n_test={self.n_test}, "
            f"n_features={self.n_features}, n_classes={self.n_classes}, source={self.source!r})"
        )


def _pooled(x: np.ndarray, k, label: str) -> np.ndarray:
    """Images (N, H, W[, C]) averaged over k x k blocks, float32 (uint8 scaled into [0, 1] first)."""
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise DataError(f"pool must be a positive integer, got {k!r}")
    k = int(k)
    if x.ndim not in (3, 4):
        raise DataError(f"pool averages images, but {label!r} holds inputs of shape {tuple(x.shape[1:])}, "
                        f"not (H, W) or (H, W, C)")
    n, h, w = x.shape[:3]
    if h % k or w % k:
        raise DataError(f"pool {k} must divide the images' height and width ({h}x{w} in {label!r})")
    f = x.astype(np.float32) * np.float32(1 / 255 if x.dtype == np.uint8 else 1)
    return f.reshape(n, h // k, k, w // k, k, *x.shape[3:]).mean(axis=(2, 4), dtype=np.float32)


def _to_float(x: np.ndarray) -> np.ndarray:
    """(N, ...) -> (N, D) float32; uint8 scaled by 1/255 into [0, 1]."""
    x2 = np.asarray(x).reshape(x.shape[0], -1)
    out = x2.astype(np.float32)  # always a fresh C-contiguous copy
    if x2.dtype == np.uint8:
        out *= np.float32(1.0 / 255.0)
    return out


def _sum_squares(x: np.ndarray, block: int = 8192) -> float:
    """Sum of squares of a float32 matrix, accumulated in float64 without a full float64 copy."""
    s = 0.0
    for i in range(0, x.shape[0], block):
        s += float(np.sum(np.square(x[i:i + block], dtype=np.float64)))
    return s


def _class_count(raw: RawSplits, files: dict, label: str, declared: int | None) -> int:
    """The number of classes, after checking every label of the file against it (DataFormatError naming the file).

    ``declared`` is the data set's known class count; without one it is one
    more than the largest training label, and the test labels must lie
    within it (the network has no output for a class the training set lacks).
    """
    for split in ("train", "test"):
        y = getattr(raw, f"y_{split}")
        if y.size and y.min() < 0:
            i = int(np.argmax(y < 0))
            raise DataFormatError(f"{files[f'y_{split}']}: y_{split} holds the negative label {int(y[i])} at index "
                                  f"{i}; labels must be class indices 0..K-1")
    y_train, y_test = raw.y_train, raw.y_test
    if declared is not None:
        for split, y in (("train", y_train), ("test", y_test)):
            if y.size and y.max() >= declared:
                i = int(np.argmax(y >= declared))
                raise DataFormatError(f"{files[f'y_{split}']}: y_{split} holds the label {int(y[i])} at index {i}, "
                                      f"but {label} has {declared} classes (labels 0..{declared - 1})")
        return int(declared)
    top = int(y_train.max())
    n = top + 1
    if n > MAX_CLASSES or n > y_train.size:
        why = (f"more than the {MAX_CLASSES} npsim allows" if n > MAX_CLASSES
               else f"more than the {y_train.size} training samples, so some classes have none")
        raise DataFormatError(f"{files['y_train']}: y_train labels go up to {top}, which would make {n} classes "
                              f"(network outputs), {why}; labels must be class indices 0..K-1")
    if y_test.size and y_test.max() >= n:
        i = int(np.argmax(y_test >= n))
        raise DataFormatError(f"{files['y_test']}: y_test holds the label {int(y_test[i])} at index {i}, but the "
                              f"training labels only go up to {top} (classes 0..{top}); the network would have no "
                              f"output for it")
    return n


def load_dataset(name: str, path=None, *, n_train: int | None = None, normalize: str = "standard",
                 validation: int | None = None, pool: int | None = None) -> Dataset:
    """Find, read and preprocess a data set.

    Preprocessing: inputs are flattened to (N, D) float32; uint8 data are
    scaled by 1/255 into [0, 1]. Then, by ``normalize``:

    * ``"standard"``: subtract the per-feature mean of the training set and
      divide by one global scalar, the standard deviation of the centred
      training set (all entries pooled). Test data get the training
      statistics. A zero std is replaced by 1.
    * ``"unit"``: values in [0, 1]: uint8 data as scaled above; other data
      mapped by the training set's global min and max (a constant training
      set maps to 0).
    * ``"none"``: nothing further (uint8 still scaled by 1/255).

    The statistics come from the training samples kept (after ``n_train``).

    The whole file is checked once, here, before any training: both splits
    must hold samples, inputs must be finite (and within float32's range),
    labels must be whole numbers in ``[0, n_classes)``. ``n_classes`` is the
    data set's known class count, or, for a data set without one (an
    ``.npz``), one more than the largest *training* label (at most
    :data:`MAX_CLASSES`, and no more than the training samples); a test label
    beyond it is refused, since the network would have no output for it.

    Parameters
    ----------
    name : data set name or ``.npz`` file name (see :func:`find_dataset`).
    path : explicit directory or ``.npz`` file.
    n_train : keep only the first ``n_train`` training samples (all when
        None). Must not exceed the number available.
    normalize : ``"standard"``, ``"unit"`` or ``"none"``.
    validation : hold out the last ``validation`` of the kept training samples
        and return them as the test set (for tuning without touching the test
        set); the normalisation statistics come from the rest.
    pool : average each image over blocks of ``pool`` x ``pool`` pixels first
        (28x28 Fashion-MNIST with pool 2: 14x14); images only, and their
        height and width must be multiples of ``pool``.

    Returns
    -------
    Dataset with x (N, D) float32 and y (N,) int64.

    Raises
    ------
    ValueError
        Unknown name, bad ``normalize``, or ``n_train`` out of range.
    DataNotFound, DataFormatError
        No usable copy, or a corrupt file or one whose content cannot be
        trained on (see above); the message names the file.
    """
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    kind, location = find_dataset(name, path)
    label = dataset_label(name, path)
    if kind == "idx":
        raw = load_idx_dir(location, name=label)
    elif kind == "cifar10":
        raw = load_cifar10_dir(location)
    else:
        raw = load_npz(location)
    # the readers refused empty splits and non-finite inputs; the labels are checked against the class count
    # of the whole file here, before n_train or validation take a part of it
    info = DATASETS.get(label)
    n_classes = _class_count(raw, data_files(kind, location), label,
                             info.n_classes if info is not None else None)
    x_train, y_train, x_test, y_test = raw

    n_avail = x_train.shape[0]
    if n_train is not None:
        if isinstance(n_train, bool) or int(n_train) != n_train or not 1 <= n_train <= n_avail:
            raise DataError(f"n_train must be an integer in [1, {n_avail}] for {label!r} at {location}, got {n_train!r}")
        x_train, y_train = x_train[: int(n_train)], y_train[: int(n_train)]
    source = str(location)
    if validation is not None:
        n_kept = x_train.shape[0]
        if isinstance(validation, bool) or int(validation) != validation or not 1 <= validation < n_kept:
            raise DataError(f"validation must be an integer in [1, {n_kept - 1}] (training samples kept: "
                             f"{n_kept}), got {validation!r}")
        v = int(validation)
        x_test, y_test = x_train[-v:], y_train[-v:]
        x_train, y_train = x_train[:-v], y_train[:-v]
        source += f" (validation: the last {v} training samples stand in for the test set)"

    y_train = np.ascontiguousarray(y_train, dtype=np.int64)
    y_test = np.ascontiguousarray(y_test, dtype=np.int64)

    is_uint8 = x_train.dtype == np.uint8
    if pool is not None:
        x_train, x_test = (_pooled(a, pool, label) for a in (x_train, x_test))
    xtr = _to_float(x_train)
    xte = _to_float(x_test)
    if normalize == "standard":
        mean = xtr.mean(axis=0, dtype=np.float64).astype(np.float32)
        xtr -= mean
        std = float(np.sqrt(_sum_squares(xtr) / max(xtr.size, 1)))
        std = std if std > 0 else 1.0
        xtr /= np.float32(std)
        xte -= mean
        xte /= np.float32(std)
    elif normalize == "unit" and not is_uint8:
        lo, hi = float(xtr.min()), float(xtr.max())
        scale = hi - lo if hi > lo else 1.0
        for a in (xtr, xte):
            a -= np.float32(lo)
            a /= np.float32(scale)

    return Dataset(
        name=label, x_train=xtr, y_train=y_train, x_test=xte, y_test=y_test,
        n_classes=int(n_classes), source=source,
    )
