"""Where a named data set is read from.

:func:`find_dataset` decides where a data set named ``"fashion-mnist"``,
``"mnist"`` or ``"cifar10"`` is read from. The search order is

1. the explicit ``path`` argument, if given (a directory holding the data
   set's files, that directory's ``<name>`` subfolder, or an ``.npz`` file);
2. ``$NPSIM_DATA/<name>`` and ``$NPSIM_DATA`` itself, for every directory in
   ``NPSIM_DATA`` (several may be given, separated by ``os.pathsep``);
3. for Fashion-MNIST only, the Debian package ``dataset-fashion-mnist``
   (``/usr/share/datasets/fashion-mnist``);
4. the copy shipped with npsim, ``<package>/data/<name>`` (only a subset of
   Fashion-MNIST is shipped), then ``./data/<name>`` relative to the working
   directory.
"""

from __future__ import annotations

import importlib.resources
import os
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import DataError, DataNotFound
from .formats import cifar_dir, idx_missing

__all__ = ["ENV_VAR", "DEBIAN_FASHION_MNIST", "BUNDLED_ROOT", "DatasetInfo", "DATASETS", "canonical_name",
           "find_dataset", "search_places", "dataset_label"]

#: Environment variable naming the directories searched for data sets.
ENV_VAR = "NPSIM_DATA"

#: Where Debian's ``dataset-fashion-mnist`` package installs the gzipped IDX files.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

#: The data subset shipped inside the package (``npsim/data``; ``data/`` in a checkout).
BUNDLED_ROOT = Path(str(importlib.resources.files("npsim") / "data"))


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
    raise DataError(
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
        missing = idx_missing(place)
        return (not missing), ("ok" if not missing else "no " + ", ".join(missing))
    if kind == "cifar10":
        ok = cifar_dir(place) is not None
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
            raise DataError("data set 'npz' needs a path to an .npz file")
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


def dataset_label(name: str, path=None) -> str:
    """The name a data set is reported under (canonical name, or the .npz file's stem)."""
    return _candidates(name, path)[0]
