"""Data sets: their file formats, where they are found, preprocessing, and synthetic tasks."""

from ...errors import DataError, DataFormatError, DataNotFound
from .formats import RawSplits, load_cifar10_dir, load_idx_dir, load_npz, read_idx
from .locate import (
    DATASETS,
    ENV_VAR,
    DatasetInfo,
    canonical_name,
    find_dataset,
    search_places,
)
from .prepare import NORMALIZATIONS, Dataset, load_dataset
from .synthetic import parity, separable, teacher_student

__all__ = [
    "DataError", "DataFormatError", "DataNotFound", "RawSplits", "load_cifar10_dir", "load_idx_dir", "load_npz",
    "read_idx", "DATASETS", "ENV_VAR", "DatasetInfo", "canonical_name", "find_dataset", "search_places",
    "NORMALIZATIONS", "Dataset", "load_dataset", "parity", "separable", "teacher_student",
]
