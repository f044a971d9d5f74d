#!/usr/bin/env python3
"""Build the bundled Fashion-MNIST subset in ``data/fashion-mnist/``.

Reads the full Fashion-MNIST IDX files (by default from Debian's
``dataset-fashion-mnist`` package, ``/usr/share/datasets/fashion-mnist``) and
writes

* ``train-images-idx3-ubyte.gz`` / ``train-labels-idx1-ubyte.gz``: a
  stratified subset of the training set, ``--per-class`` images of every
  class (2,000 -> 20,000 images), drawn with ``--seed`` (0) and stored in a
  shuffled order, so that any prefix is roughly class-balanced;
* ``t10k-images-idx3-ubyte.gz`` / ``t10k-labels-idx1-ubyte.gz``: the full
  10,000-image test set, unchanged.

The output is byte-reproducible: gzip level 9, mtime 0, no file name in the
gzip header (given the same zlib).

Usage::

    python scripts/make_bundled_data.py [--source DIR] [--out DIR] [--per-class 2000] [--seed 0]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from npsim.io.data import load_idx_dir  # noqa: E402

DEFAULT_SOURCE = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_OUT = REPO / "data" / "fashion-mnist"
N_CLASSES = 10


def idx_bytes(a: np.ndarray) -> bytes:
    """Serialise a uint8 array as an IDX file (magic 0x00 0x00 0x08 ndim, big-endian dims)."""
    if a.dtype != np.uint8:
        raise TypeError(f"only uint8 arrays are written, got {a.dtype}")
    header = bytes([0, 0, 0x08, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    return header + np.ascontiguousarray(a).tobytes()


def write_idx_gz(path: Path, a: np.ndarray) -> str:
    """Write ``a`` gzipped to ``path`` reproducibly; return the file's SHA-256."""
    with open(path, "wb") as f:
        with gzip.GzipFile(filename="", mode="wb", fileobj=f, compresslevel=9, mtime=0) as g:
            g.write(idx_bytes(a))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stratified_subset(y: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Indices of ``per_class`` samples of every class, drawn without replacement, shuffled."""
    rng = np.random.default_rng(seed)
    picks = []
    for c in range(N_CLASSES):
        idx = np.flatnonzero(y == c)
        if idx.size < per_class:
            raise SystemExit(f"class {c} has only {idx.size} training samples, need {per_class}")
        picks.append(np.sort(rng.choice(idx, size=per_class, replace=False)))
    return rng.permutation(np.concatenate(picks))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="directory of the full Fashion-MNIST IDX files")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    ap.add_argument("--per-class", type=int, default=2000, help="training images kept per class")
    ap.add_argument("--seed", type=int, default=0, help="seed of the subset draw and its order")
    args = ap.parse_args(argv)

    x_train, y_train, x_test, y_test = load_idx_dir(args.source, name="fashion-mnist")
    if x_train.shape != (60000, 28, 28) or x_test.shape != (10000, 28, 28):
        raise SystemExit(f"{args.source}: expected the full Fashion-MNIST (60000 + 10000 images of 28x28), "
                         f"got {x_train.shape} and {x_test.shape}")
    order = stratified_subset(y_train, args.per_class, args.seed)

    args.out.mkdir(parents=True, exist_ok=True)
    outputs = {
        "train-images-idx3-ubyte.gz": x_train[order],
        "train-labels-idx1-ubyte.gz": y_train[order],
        "t10k-images-idx3-ubyte.gz": x_test,
        "t10k-labels-idx1-ubyte.gz": y_test,
    }
    for fname, arr in outputs.items():
        digest = write_idx_gz(args.out / fname, arr)
        size = (args.out / fname).stat().st_size
        print(f"{digest}  {fname}  ({arr.shape[0]} samples, {size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
