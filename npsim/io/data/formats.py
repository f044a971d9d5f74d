"""The on-disk formats of image-classification data sets, read into arrays as stored.

* IDX files (MNIST, Fashion-MNIST), raw or gzipped: :func:`read_idx`, :func:`load_idx_dir`;
* the CIFAR-10 "python version" pickled batches: :func:`load_cifar10_dir`;
* a ``.npz`` archive with keys ``x_train, y_train, x_test, y_test``: :func:`load_npz`.

Each loader returns :class:`RawSplits` and raises
:class:`~npsim.errors.DataFormatError` naming the file for anything it cannot read.
"""

from __future__ import annotations

import gzip
import pickle
import zipfile
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ...errors import DataFormatError, DataNotFound

__all__ = ["RawSplits", "read_idx", "load_idx_dir", "load_cifar10_dir", "load_npz", "idx_missing", "cifar_dir",
           "check_inputs", "check_integer_labels", "data_files"]


class RawSplits(NamedTuple):
    """Arrays as read from disk, before any preprocessing.

    Attributes
    ----------
    x_train : (N, ...) array, any dtype (uint8 for image files).
    y_train : (N,) integer labels.
    x_test : (M, ...) array with the same trailing shape as ``x_train``.
    y_test : (M,) integer labels.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


# IDX file stems: (split, part) -> accepted stems, first match wins.
_IDX_STEMS = {
    "train_images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}

_CIFAR_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
_CIFAR_SUBDIR = "cifar-10-batches-py"

# IDX type code -> dtype of the (big-endian) payload.
_IDX_TYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


# --------------------------------------------------------------------------
# content checks (the readers call them; docs/design.md §8)
# --------------------------------------------------------------------------

#: Elements examined at a time by :func:`check_inputs` (bounds its temporary arrays).
_CHECK_BLOCK = 1 << 22

_FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_inputs(x: np.ndarray, path, key: str) -> None:
    """Refuse an input array ``x`` (N, ...) that is empty or holds values that are not finite float32 numbers.

    Integer and boolean arrays are always finite; float arrays are scanned a
    block of samples at a time (no float64 copy). Values of a wider float type
    beyond the float32 range, which become infinite when the data are cast to
    float32, are refused too.

    Raises
    ------
    DataFormatError
        Naming ``path``, ``key`` and the first bad sample.
    """
    if x.ndim < 1 or x.shape[0] == 0:
        raise DataFormatError(f"{path}: {key} holds no samples (shape {x.shape})")
    if x.size == 0:
        raise DataFormatError(f"{path}: {key} samples hold no values (shape {x.shape})")
    if x.dtype.kind != "f":
        return
    n = x.shape[0]
    per = max(1, int(np.prod(x.shape[1:], dtype=np.int64)))
    rows = max(1, _CHECK_BLOCK // per)
    wide = x.dtype.itemsize > 4
    for i in range(0, n, rows):
        blk = x[i:i + rows]
        bad = ~np.isfinite(blk)
        if wide:
            with np.errstate(invalid="ignore"):
                bad |= np.abs(blk) > _FLOAT32_MAX
        if bad.any():
            where = np.unravel_index(int(np.argmax(bad)), blk.shape)
            sample = i + int(where[0])
            value = blk[where]
            what = (f"a non-finite value ({value})" if not np.isfinite(value)
                    else f"the value {value:g}, beyond the float32 range")
            at = f" (index {(sample, *map(int, where[1:]))})" if x.ndim > 1 else ""
            raise DataFormatError(f"{path}: {key} holds {what} at sample {sample}{at}; inputs must be finite numbers")


def check_integer_labels(y: np.ndarray, path, key: str) -> np.ndarray:
    """``y`` as int64 class labels; refuse labels that are not whole numbers (DataFormatError naming ``path``).

    Integer labels pass (unsigned ones must fit int64); float labels must be
    finite and integral. Range checks against the number of classes are
    :func:`~npsim.io.data.load_dataset`'s.
    """
    if y.dtype.kind in "iu":
        if y.dtype.kind == "u" and y.size and int(y.max()) > np.iinfo(np.int64).max:
            i = int(np.argmax(y > np.iinfo(np.int64).max))
            raise DataFormatError(f"{path}: {key} holds the label {int(y[i])} at index {i}; labels must be class "
                                  f"indices 0..K-1")
        return y.astype(np.int64)
    if y.dtype.kind != "f":
        raise DataFormatError(f"{path}: {key} must hold integer class labels, got dtype {y.dtype}")
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(y) | (y != np.round(y)) | (np.abs(y) >= 2.0 ** 62)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataFormatError(f"{path}: {key} must hold integer class labels, but index {i} holds {y[i]!r}")
    return y.astype(np.int64)


def data_files(kind: str, location) -> dict[str, Path]:
    """The file each array of a data set at ``location`` comes from, for error messages.

    kind : ``"idx"``, ``"cifar10"`` or ``"npz"`` (as :func:`~npsim.io.data.find_dataset` returns).
    Returns ``{"x_train": path, "y_train": ..., "x_test": ..., "y_test": ...}``
    (a CIFAR-10 training array names the folder of its five batches).
    """
    location = Path(location)
    if kind == "idx":
        parts = {"x_train": "train_images", "y_train": "train_labels", "x_test": "test_images",
                 "y_test": "test_labels"}
        return {k: _find_idx_file(location, part) or location for k, part in parts.items()}
    if kind == "cifar10":
        d = cifar_dir(location) or location
        return {"x_train": d, "y_train": d, "x_test": d / "test_batch", "y_test": d / "test_batch"}
    return dict.fromkeys(RawSplits._fields, location)


# --------------------------------------------------------------------------
# readers
# --------------------------------------------------------------------------


def _read_bytes(path: Path) -> bytes:
    """Whole content of ``path``, gunzipped if it starts with the gzip magic 1f 8b."""
    try:
        with open(path, "rb") as f:
            magic = f.read(2)
            f.seek(0)
            if magic == b"\x1f\x8b":
                with gzip.GzipFile(fileobj=f, mode="rb") as g:
                    return g.read()
            return f.read()
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DataFormatError(f"{path}: truncated or corrupt gzip data ({e})") from e
    except FileNotFoundError:
        raise
    except OSError as e:
        raise DataFormatError(f"{path}: cannot read ({e})") from e


def read_idx(path) -> np.ndarray:
    """Read one IDX file (the MNIST format), gzipped or raw.

    Gzip is recognised by the magic bytes ``1f 8b``, not by the extension.

    Parameters
    ----------
    path : str or Path of the file.

    Returns
    -------
    ndarray of the shape in the header, in native byte order, with the
    header's element type (uint8 for MNIST images and labels).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    DataFormatError
        Bad magic number, unknown type code, a header shorter than its
        dimensions, a payload whose length differs from the product of the
        dimensions, or truncated/corrupt gzip data.
    """
    path = Path(path)
    buf = _read_bytes(path)
    if len(buf) < 4:
        raise DataFormatError(f"{path}: not an IDX file (only {len(buf)} bytes)")
    if buf[0] != 0 or buf[1] != 0:
        raise DataFormatError(
            f"{path}: not an IDX file (magic number starts {buf[0]:#04x} {buf[1]:#04x}, expected 0x00 0x00)"
        )
    code, ndim = buf[2], buf[3]
    if code not in _IDX_TYPES:
        raise DataFormatError(f"{path}: unknown IDX type code {code:#04x}")
    if ndim == 0:
        raise DataFormatError(f"{path}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise DataFormatError(
            f"{path}: truncated IDX header ({len(buf)} bytes, {ndim} dimensions need {header})"
        )
    dims = tuple(int.from_bytes(buf[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_TYPES[code]
    count = 1
    for d in dims:
        count *= d
    expected = count * dtype.itemsize
    actual = len(buf) - header
    if actual != expected:
        raise DataFormatError(
            f"{path}: IDX header declares shape {dims} of {dtype.name} ({expected} bytes of data) "
            f"but the file holds {actual} bytes"
            + (" (truncated)" if actual < expected else " (trailing data)")
        )
    arr = np.frombuffer(buf, dtype=dtype, count=count, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))  # copy: writable, native byte order


def _find_idx_file(directory: Path, part: str) -> Path | None:
    for stem in _IDX_STEMS[part]:
        for suffix in ("", ".gz"):
            p = directory / (stem + suffix)
            if p.is_file():
                return p
    return None


def idx_missing(directory: Path) -> list[str]:
    return [_IDX_STEMS[part][0] + "[.gz]" for part in _IDX_STEMS if _find_idx_file(directory, part) is None]


def load_idx_dir(directory, *, name: str = "idx") -> RawSplits:
    """Read an MNIST-style directory of four IDX files.

    Accepted file names are ``train-images-idx3-ubyte``,
    ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
    ``t10k-labels-idx1-ubyte``, each optionally with ``.gz``, and the dotted
    variants (``train-images.idx3-ubyte``, ...).

    Parameters
    ----------
    directory : str or Path.
    name : data set name, used in error messages.

    Returns
    -------
    RawSplits with images (N, H, W) uint8 and labels (N,) uint8 as stored.

    Raises
    ------
    DataNotFound
        A file is missing.
    DataFormatError
        A file is unreadable, labels are not 1-D or not whole numbers, image
        and label counts disagree, a split holds no images, images hold NaN
        or infinite values, or train and test images differ in shape.
    """
    directory = Path(directory)
    missing = idx_missing(directory)
    if missing:
        raise DataNotFound(name, [(str(directory), "missing " + ", ".join(missing))])
    arrays = {part: read_idx(_find_idx_file(directory, part)) for part in _IDX_STEMS}
    for split in ("train", "test"):
        xi, yi = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        xf, yf = _find_idx_file(directory, f"{split}_images"), _find_idx_file(directory, f"{split}_labels")
        if xi.ndim < 2:
            raise DataFormatError(f"{xf}: images must have at least 2 dimensions, got shape {xi.shape}")
        if yi.ndim != 1:
            raise DataFormatError(f"{yf}: labels must be 1-D, got shape {yi.shape}")
        if xi.shape[0] != yi.shape[0]:
            raise DataFormatError(
                f"{xf} holds {xi.shape[0]} images but {yf} holds {yi.shape[0]} labels"
            )
        check_inputs(xi, xf, f"x_{split}")
        if yi.dtype.kind not in "iu":
            arrays[f"{split}_labels"] = check_integer_labels(yi, yf, f"y_{split}")
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise DataFormatError(
            f"{directory}: train images have shape {arrays['train_images'].shape[1:]} "
            f"but test images {arrays['test_images'].shape[1:]}"
        )
    return RawSplits(arrays["train_images"], arrays["train_labels"], arrays["test_images"], arrays["test_labels"])


def cifar_dir(directory: Path) -> Path | None:
    """``directory`` or its ``cifar-10-batches-py`` subfolder, whichever holds every batch."""
    for d in (directory, directory / _CIFAR_SUBDIR):
        if all((d / b).is_file() for b in _CIFAR_BATCHES):
            return d
    return None


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
    except FileNotFoundError:
        raise
    except Exception as e:  # any unpickling failure means a broken file
        raise DataFormatError(f"{path}: not a readable CIFAR-10 pickle batch ({type(e).__name__}: {e})") from e
    if not isinstance(d, dict):
        raise DataFormatError(f"{path}: expected a pickled dict, got {type(d).__name__}")
    data = d.get(b"data", d.get("data"))
    labels = d.get(b"labels", d.get("labels"))
    if data is None or labels is None:
        raise DataFormatError(f"{path}: batch dict lacks 'data' or 'labels' (keys: {sorted(map(str, d))})")
    data = np.asarray(data)
    labels = np.asarray(labels)
    if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
        raise DataFormatError(f"{path}: 'data' must be (N, 3072) uint8, got {data.shape} {data.dtype}")
    if labels.ndim != 1 or labels.shape[0] != data.shape[0] or not np.issubdtype(labels.dtype, np.integer):
        raise DataFormatError(
            f"{path}: 'labels' must be {data.shape[0]} integers, got shape {labels.shape} {labels.dtype}"
        )
    return data, labels.astype(np.int64)


def load_cifar10_dir(directory) -> RawSplits:
    """Read the CIFAR-10 "python version" batches.

    Only load files you trust: the batches are Python pickles.

    Parameters
    ----------
    directory : str or Path holding ``data_batch_1`` .. ``data_batch_5`` and
        ``test_batch``, or holding a ``cifar-10-batches-py`` folder with them.

    Returns
    -------
    RawSplits with x (N, 3072) uint8 -- each row the 1024 red, then green,
    then blue pixels of a 32x32 image, row-major -- and y (N,) int64.
    N = 50000 and M = 10000 for the full data set.

    Raises
    ------
    DataNotFound
        A batch file is missing.
    DataFormatError
        A batch is unreadable or has the wrong shapes.
    """
    directory = Path(directory)
    d = cifar_dir(directory)
    if d is None:
        raise DataNotFound("cifar10", [(str(directory), "no data_batch_1..5 + test_batch")])
    parts = [_read_cifar_batch(d / b) for b in _CIFAR_BATCHES]
    x_train = np.concatenate([p[0] for p in parts[:5]])
    y_train = np.concatenate([p[1] for p in parts[:5]])
    x_test, y_test = parts[5]
    check_inputs(x_train, d, "x_train")
    check_inputs(x_test, d / "test_batch", "x_test")
    return RawSplits(x_train, y_train, x_test, y_test)


def load_npz(path) -> RawSplits:
    """Read a ``.npz`` archive with arrays ``x_train, y_train, x_test, y_test``.

    Parameters
    ----------
    path : str or Path. ``x_*`` may have any shape (N, ...) (flattened by
        :func:`load_dataset`); ``y_*`` must be 1-D integer (or integer-valued)
        labels. Object arrays are refused (no pickles are loaded).

    Returns
    -------
    RawSplits with the arrays as stored, labels as int64.

    Raises
    ------
    DataFormatError
        Not a readable npz, a key is missing, shapes disagree, an ``x_*``
        array is not numeric (strings, objects, complex numbers) or holds
        NaN or infinite values, a split holds no samples, or labels are not
        whole numbers.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in RawSplits._fields if k not in z.files]
            if missing:
                raise DataFormatError(f"{path}: missing array(s) {', '.join(missing)} (has: {', '.join(z.files)})")
            arrs = {}
            for k in RawSplits._fields:
                try:
                    arrs[k] = z[k]
                except ValueError as e:  # e.g. an object array, which would need pickle
                    raise DataFormatError(f"{path}: {k} cannot be read without pickle, or is corrupt ({e}); "
                                          f"save numeric arrays") from e
    except DataFormatError:
        raise
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, zlib.error) as e:
        raise DataFormatError(f"{path}: not a readable .npz archive ({e})") from e
    for split in ("train", "test"):
        x, y = arrs[f"x_{split}"], arrs[f"y_{split}"]
        if x.ndim < 1 or y.ndim != 1:
            raise DataFormatError(f"{path}: x_{split} must be (N, ...) and y_{split} (N,), got {x.shape} and {y.shape}")
        if x.dtype.kind not in "biuf":
            raise DataFormatError(f"{path}: x_{split} must hold numbers (bool, integer or float), got dtype {x.dtype}")
        if x.shape[0] != y.shape[0]:
            raise DataFormatError(f"{path}: x_{split} has {x.shape[0]} samples but y_{split} has {y.shape[0]} labels")
        check_inputs(x, path, f"x_{split}")
        arrs[f"y_{split}"] = check_integer_labels(y, path, f"y_{split}")
    if arrs["x_train"].shape[1:] != arrs["x_test"].shape[1:]:
        raise DataFormatError(
            f"{path}: x_train samples have shape {arrs['x_train'].shape[1:]} but x_test {arrs['x_test'].shape[1:]}"
        )
    return RawSplits(**arrs)
