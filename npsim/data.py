"""Data sets on disk -> arrays.

Reads the formats image-classification data sets are distributed in and
turns them into a :class:`Dataset` of float32 feature matrices and int64
labels:

* IDX files (MNIST, Fashion-MNIST), raw or gzipped: :func:`read_idx`,
  :func:`load_idx_dir`;
* the CIFAR-10 "python version" pickled batches: :func:`load_cifar10_dir`;
* a ``.npz`` archive with keys ``x_train, y_train, x_test, y_test``:
  :func:`load_npz`.

:func:`find_dataset` decides where a data set named ``"fashion-mnist"``,
``"mnist"`` or ``"cifar10"`` is read from. The search order is

1. the explicit ``path`` argument, if given (a directory holding the data
   set's files, that directory's ``<name>`` subfolder, or an ``.npz`` file);
2. ``$NPSIM_DATA/<name>`` and ``$NPSIM_DATA`` itself, for every directory in
   ``NPSIM_DATA`` (several may be given, separated by ``os.pathsep``);
3. for Fashion-MNIST only, the Debian package ``dataset-fashion-mnist``
   (``/usr/share/datasets/fashion-mnist``);
4. the bundled copy, ``<repository>/data/<name>``, then ``./data/<name>``
   relative to the working directory.

:func:`epoch_order` gives the shuffled sample order of one training epoch as
a pure function of ``(n, seed, epoch)``, so a resumed run needs no saved
random state to continue the same sequence of mini-batches.
"""

from __future__ import annotations

import gzip
import os
import pickle
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = [
    "DataNotFound",
    "DataFormatError",
    "Dataset",
    "DatasetInfo",
    "RawSplits",
    "DATASETS",
    "read_idx",
    "load_idx_dir",
    "load_cifar10_dir",
    "load_npz",
    "find_dataset",
    "search_places",
    "load_dataset",
    "canonical_name",
    "epoch_order",
    "NORMALIZATIONS",
]

#: Environment variable naming the directories searched for data sets.
ENV_VAR = "NPSIM_DATA"

#: Where Debian's ``dataset-fashion-mnist`` package installs the gzipped IDX files.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

#: The bundled data folder of a source checkout (``<repository>/data``).
BUNDLED_ROOT = Path(__file__).resolve().parents[1] / "data"

#: Accepted values of ``load_dataset(normalize=...)``.
NORMALIZATIONS = ("standard", "unit", "none")


# --------------------------------------------------------------------------
# errors and containers
# --------------------------------------------------------------------------


class DataNotFound(FileNotFoundError):
    """No usable copy of a data set was found.

    The message names every place searched, with the reason it was not
    usable, on one line. ``places`` holds the same as a list of
    ``(place, reason)`` pairs for printing one per line.
    """

    def __init__(self, name: str, places: list[tuple[str, str]], hint: str | None = None):
        self.name = name
        self.places = list(places)
        self._hint = hint
        looked = ", ".join(f"{p} ({why})" for p, why in self.places) or "nowhere"
        if hint is None:
            hint = f"Set {ENV_VAR} to a directory holding it, or pass a path."
        super().__init__(f"data set {name!r} not found; looked in: {looked}. {hint}")

    def __str__(self) -> str:  # FileNotFoundError would format errno/filename otherwise
        return self.args[0]

    def __reduce__(self):  # picklable, e.g. across worker processes
        return (type(self), (self.name, self.places, self._hint))


class DataFormatError(ValueError):
    """A data file is corrupt, truncated, or does not match what was expected.

    The message names the file and what is wrong with it.
    """


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


@dataclass(frozen=True)
class DatasetInfo:
    """What npsim knows about a named data set.

    Attributes
    ----------
    name : canonical name (the directory name searched for).
    kind : on-disk format: ``"idx"``, ``"cifar10"`` or ``"npz"``.
    n_classes : number of classes (None: taken from the labels).
    shape : shape of one input sample as stored, e.g. (28, 28).
    description : one line for listings.
    aliases : other accepted spellings (matched case-insensitively).
    """

    name: str
    kind: str
    n_classes: int | None
    shape: tuple[int, ...] | None
    description: str
    aliases: tuple[str, ...] = field(default=())


DATASETS: dict[str, DatasetInfo] = {
    "fashion-mnist": DatasetInfo(
        "fashion-mnist", "idx", 10, (28, 28),
        "Fashion-MNIST (Zalando), 28x28 grey clothing images; IDX files, raw or .gz",
        aliases=("fashion_mnist", "fashionmnist", "fmnist"),
    ),
    "mnist": DatasetInfo(
        "mnist", "idx", 10, (28, 28),
        "MNIST handwritten digits, 28x28 grey images; IDX files, raw or .gz",
    ),
    "cifar10": DatasetInfo(
        "cifar10", "cifar10", 10, (3, 32, 32),
        "CIFAR-10, 32x32 colour images; the 'python version' pickled batches",
        aliases=("cifar-10", "cifar_10"),
    ),
    "npz": DatasetInfo(
        "npz", "npz", None, None,
        "any .npz file with arrays x_train, y_train, x_test, y_test; pass its path",
    ),
}

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


def _idx_missing(directory: Path) -> list[str]:
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
        A file is unreadable, labels are not 1-D, image and label counts
        disagree, or train and test images differ in shape.
    """
    directory = Path(directory)
    missing = _idx_missing(directory)
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
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise DataFormatError(
            f"{directory}: train images have shape {arrays['train_images'].shape[1:]} "
            f"but test images {arrays['test_images'].shape[1:]}"
        )
    return RawSplits(arrays["train_images"], arrays["train_labels"], arrays["test_images"], arrays["test_labels"])


def _cifar_dir(directory: Path) -> Path | None:
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
    d = _cifar_dir(directory)
    if d is None:
        raise DataNotFound("cifar10", [(str(directory), "no data_batch_1..5 + test_batch")])
    parts = [_read_cifar_batch(d / b) for b in _CIFAR_BATCHES]
    x_train = np.concatenate([p[0] for p in parts[:5]])
    y_train = np.concatenate([p[1] for p in parts[:5]])
    x_test, y_test = parts[5]
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
        Not a readable npz, a key is missing, or shapes disagree.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in RawSplits._fields if k not in z.files]
            if missing:
                raise DataFormatError(f"{path}: missing array(s) {', '.join(missing)} (has: {', '.join(z.files)})")
            arrs = {k: z[k] for k in RawSplits._fields}
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
        if x.shape[0] != y.shape[0]:
            raise DataFormatError(f"{path}: x_{split} has {x.shape[0]} samples but y_{split} has {y.shape[0]} labels")
        if not np.issubdtype(y.dtype, np.integer):
            if not (np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y))):
                raise DataFormatError(f"{path}: y_{split} must hold integer class labels, got dtype {y.dtype}")
        arrs[f"y_{split}"] = y.astype(np.int64)
    if arrs["x_train"].shape[1:] != arrs["x_test"].shape[1:]:
        raise DataFormatError(
            f"{path}: x_train samples have shape {arrs['x_train'].shape[1:]} but x_test {arrs['x_test'].shape[1:]}"
        )
    return RawSplits(**arrs)


# --------------------------------------------------------------------------
# search
# --------------------------------------------------------------------------


def canonical_name(name: str) -> str:
    """The canonical spelling of a known data set name.

    Matching is case-insensitive and treats ``_`` like ``-``; aliases such
    as ``"fmnist"`` are accepted.

    Raises
    ------
    ValueError
        Unknown name; the message lists the known ones.
    """
    key = str(name).strip().lower().replace("_", "-")
    for info in DATASETS.values():
        if key == info.name or key in {a.replace("_", "-") for a in info.aliases}:
            return info.name
    known = ", ".join(n for n in DATASETS if n != "npz")
    raise ValueError(
        f"unknown data set {name!r}; known: {known} (or a path to an .npz file with "
        "x_train, y_train, x_test, y_test)"
    )


def _is_npz_name(name) -> bool:
    return str(name).lower().endswith(".npz")


def _env_dirs() -> list[Path]:
    value = os.environ.get(ENV_VAR, "")
    return [Path(p).expanduser() for p in value.split(os.pathsep) if p.strip()]


def _check(kind: str, place: Path) -> tuple[bool, str]:
    """Whether ``place`` holds a usable copy of a ``kind`` data set, and why not."""
    if kind == "npz":
        if place.is_file():
            return True, "ok"
        return False, "is a directory" if place.is_dir() else "missing"
    if not place.exists():
        return False, "missing"
    if not place.is_dir():
        if place.suffix.lower() == ".npz":
            return True, "ok"
        return False, "not a directory"
    if kind == "idx":
        missing = _idx_missing(place)
        return (not missing), ("ok" if not missing else "no " + ", ".join(missing))
    if kind == "cifar10":
        ok = _cifar_dir(place) is not None
        return ok, "ok" if ok else "no data_batch_1..5 + test_batch"
    raise ValueError(f"unknown data set kind {kind!r}")


def _candidates(name: str, path=None) -> tuple[str, str, list[tuple[Path, bool]]]:
    """(label, kind, [(place, explicit)]) in search order."""
    if path is not None:
        p = Path(path).expanduser()
        if _is_npz_name(p):
            label = canonical_name(name) if not _is_npz_name(name) and _known(name) else str(name)
            return label, "npz", [(p, True)]
    if _is_npz_name(name) and path is None:
        p = Path(name).expanduser()
        places = [(p, True)]
        if not p.is_absolute():
            places += [(d / p, False) for d in _env_dirs()]
        return p.stem, "npz", places
    cname = canonical_name(name)
    info = DATASETS[cname]
    if info.kind == "npz":
        if path is None:
            raise ValueError("data set 'npz' needs a path to an .npz file")
        return cname, "npz", [(Path(path).expanduser(), True)]
    places: list[tuple[Path, bool]] = []
    if path is not None:
        p = Path(path).expanduser()
        places += [(p, True), (p / cname, True)]
    else:
        for d in _env_dirs():
            places += [(d / cname, False), (d, False)]
        if cname == "fashion-mnist":
            places.append((DEBIAN_FASHION_MNIST, False))
        places.append((BUNDLED_ROOT / cname, False))
        places.append((Path.cwd() / "data" / cname, False))
    # drop duplicates (same resolved directory), keeping the first
    seen, unique = set(), []
    for p, explicit in places:
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            unique.append((p, explicit))
    return cname, info.kind, unique


def _known(name) -> bool:
    try:
        canonical_name(name)
        return True
    except ValueError:
        return False


def _kind_at(kind: str, place: Path) -> str:
    """The reader for ``place``: an .npz file given for a directory data set is read as npz."""
    return "npz" if place.is_file() and place.suffix.lower() == ".npz" else kind


def search_places(name: str, path=None) -> list[tuple[str, bool]]:
    """Every place searched for ``name``, in order, and whether a usable copy is there.

    Parameters
    ----------
    name : data set name (see :data:`DATASETS`) or an ``.npz`` file name.
    path : explicit location, searched first (and, when given, alone).

    Returns
    -------
    list of (place, usable) pairs; the first usable one is what
    :func:`load_dataset` reads.
    """
    _, kind, places = _candidates(name, path)
    return [(str(p), _check(kind, p)[0]) for p, _ in places]


def find_dataset(name: str, path=None) -> tuple[str, Path]:
    """Locate a data set on disk.

    Parameters
    ----------
    name : ``"fashion-mnist"``, ``"mnist"``, ``"cifar10"`` (case-insensitive,
        aliases such as ``"fmnist"`` accepted), or an ``.npz`` file name.
    path : explicit directory or ``.npz`` file. When given, only it (and for
        a directory its ``<name>`` subfolder) is tried.

    Returns
    -------
    (kind, location): kind is ``"idx"``, ``"cifar10"`` or ``"npz"``;
    location the directory or file to read.

    Raises
    ------
    ValueError
        Unknown data set name.
    DataNotFound
        No usable copy; the message lists every place searched.
    """
    label, kind, places = _candidates(name, path)
    tried = []
    for p, explicit in places:
        ok, why = _check(kind, p)
        if ok:
            return _kind_at(kind, p), p
        tried.append((str(p), why))
    if path is not None:
        raise DataNotFound(label, tried, hint="Check the path given.")
    raise DataNotFound(label, tried)


# --------------------------------------------------------------------------
# preprocessing
# --------------------------------------------------------------------------


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


def load_dataset(name: str, path=None, *, n_train: int | None = None, normalize: str = "standard",
                 validation: int | None = None) -> Dataset:
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

    Returns
    -------
    Dataset with x (N, D) float32 and y (N,) int64.

    Raises
    ------
    ValueError
        Unknown name, bad ``normalize``, or ``n_train`` out of range.
    DataNotFound, DataFormatError
        No usable copy, or a corrupt file.
    """
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    kind, location = find_dataset(name, path)
    label = _candidates(name, path)[0]
    if kind == "idx":
        raw = load_idx_dir(location, name=label)
    elif kind == "cifar10":
        raw = load_cifar10_dir(location)
    else:
        raw = load_npz(location)
    x_train, y_train, x_test, y_test = raw

    n_avail = x_train.shape[0]
    if n_train is not None:
        if isinstance(n_train, bool) or int(n_train) != n_train or not 1 <= n_train <= n_avail:
            raise ValueError(f"n_train must be an integer in [1, {n_avail}] for {label!r} at {location}, got {n_train!r}")
        x_train, y_train = x_train[: int(n_train)], y_train[: int(n_train)]
    source = str(location)
    if validation is not None:
        n_kept = x_train.shape[0]
        if isinstance(validation, bool) or int(validation) != validation or not 1 <= validation < n_kept:
            raise ValueError(f"validation must be an integer in [1, {n_kept - 1}] (training samples kept: "
                             f"{n_kept}), got {validation!r}")
        v = int(validation)
        x_test, y_test = x_train[-v:], y_train[-v:]
        x_train, y_train = x_train[:-v], y_train[:-v]
        source += f" (validation: the last {v} training samples stand in for the test set)"

    y_train = np.ascontiguousarray(y_train, dtype=np.int64)
    y_test = np.ascontiguousarray(y_test, dtype=np.int64)
    info = DATASETS.get(label)
    n_classes = info.n_classes if info is not None and info.n_classes is not None else None
    if n_classes is None:
        n_classes = int(max(y_train.max(initial=-1), y_test.max(initial=-1))) + 1
    for split, y in (("train", y_train), ("test", y_test)):
        if y.size and (y.min() < 0 or y.max() >= n_classes):
            raise DataFormatError(
                f"{location}: y_{split} labels span [{y.min()}, {y.max()}], expected [0, {n_classes})"
            )

    is_uint8 = x_train.dtype == np.uint8
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


# --------------------------------------------------------------------------
# shuffling
# --------------------------------------------------------------------------


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled sample order of one training epoch.

    A pure function of its arguments: the permutation comes from
    ``Generator(PCG64(SeedSequence([seed, epoch, 0x5EED])))``, so a resumed
    run reproduces the order of any epoch without saved random state.

    Parameters
    ----------
    n : number of training samples (>= 0).
    seed : the run's seed (>= 0).
    epoch : epoch index (>= 0).

    Returns
    -------
    (n,) int64 permutation of ``range(n)``.
    """
    for label, v in (("n", n), ("seed", seed), ("epoch", epoch)):
        if isinstance(v, bool) or int(v) != v or v < 0:
            raise ValueError(f"{label} must be a non-negative integer, got {v!r}")
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(epoch), 0x5EED])))
    return rng.permutation(int(n)).astype(np.int64, copy=False)
