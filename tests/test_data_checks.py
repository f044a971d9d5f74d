"""Data are checked once, when they are loaded: non-finite inputs, bad labels, empty splits, non-numeric arrays."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from npsim.errors import DataError, DataFormatError
from npsim.io.data import formats, load_dataset, load_npz
from npsim.io.data.prepare import MAX_CLASSES


def _npz(path, x_train=None, y_train=None, x_test=None, y_test=None):
    rng = np.random.default_rng(0)
    arrs = {
        "x_train": rng.normal(size=(30, 2, 3)).astype(np.float32) if x_train is None else x_train,
        "y_train": np.arange(30) % 3 if y_train is None else y_train,
        "x_test": rng.normal(size=(10, 2, 3)).astype(np.float32) if x_test is None else x_test,
        "y_test": np.arange(10) % 3 if y_test is None else y_test,
    }
    np.savez(path, **arrs)
    return path


def _idx(path, a):
    a = np.asarray(a)
    codes = {"u1": 0x08, "i1": 0x09, ">f4": 0x0D, ">f8": 0x0E}
    be = a.dtype.newbyteorder(">") if a.dtype.itemsize > 1 else a.dtype
    header = bytes([0, 0, codes[be.str.lstrip("|")], a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    path.write_bytes(gzip.compress(header + a.astype(be).tobytes()))


def _idx_dir(d, x_train, y_train, x_test, y_test):
    d.mkdir(parents=True, exist_ok=True)
    _idx(d / "train-images-idx3-ubyte.gz", x_train)
    _idx(d / "train-labels-idx1-ubyte.gz", y_train)
    _idx(d / "t10k-images-idx3-ubyte.gz", x_test)
    _idx(d / "t10k-labels-idx1-ubyte.gz", y_test)
    return d


def _refused(path, match, **kw):
    with pytest.raises(DataFormatError, match=match) as e:
        load_dataset(str(path), **kw)
    msg = str(e.value)
    assert str(path) in msg and "\n" not in msg, msg
    return msg


# ---------------------------------------------------------------- inputs


@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_in_npz_are_refused_naming_split_and_sample(tmp_path, split, bad):
    x = np.random.default_rng(1).normal(size=(30 if split == "train" else 10, 2, 3)).astype(np.float32)
    x[7, 1, 2] = bad
    p = _npz(tmp_path / "d.npz", **{f"x_{split}": x})
    msg = _refused(p, f"x_{split}.*sample 7")
    assert "(7, 1, 2)" in msg
    with pytest.raises(DataFormatError, match=f"x_{split}"):
        load_npz(p)  # the reader refuses it too


def test_non_finite_check_is_chunked_and_finds_the_first_bad_sample(tmp_path, monkeypatch):
    monkeypatch.setattr(formats, "_CHECK_BLOCK", 12)  # two samples of 6 values per block
    x = np.zeros((30, 2, 3), np.float64)
    x[23, 0, 0] = np.nan
    x[25, 0, 0] = np.inf
    p = _npz(tmp_path / "d.npz", x_train=x)
    _refused(p, r"x_train holds a non-finite value \(nan\) at sample 23")


def test_float64_beyond_float32_range_is_refused(tmp_path):
    x = np.zeros((30, 6))
    x[4, 5] = 1e300  # finite here, infinite once cast to float32
    _refused(_npz(tmp_path / "d.npz", x_train=x), "x_train.*float32 range at sample 4")


def test_non_finite_idx_images_are_refused_naming_the_file(tmp_path):
    xtr = np.zeros((12, 2, 2), ">f4")
    xte = np.zeros((5, 2, 2), ">f4")
    xte[3, 1, 0] = np.nan
    d = _idx_dir(tmp_path / "mnist", xtr, np.arange(12, dtype=np.uint8) % 10, xte, np.arange(5, dtype=np.uint8))
    with pytest.raises(DataFormatError, match="t10k-images-idx3-ubyte.gz: x_test.*sample 3"):
        load_dataset("mnist", path=d)


@pytest.mark.parametrize("dtype", ["<U3", "complex64"])
def test_non_numeric_npz_inputs_are_refused(tmp_path, dtype):
    x = np.zeros((30, 6)).astype(dtype)
    _refused(_npz(tmp_path / "d.npz", x_train=x), f"x_train must hold numbers.*{dtype[-3:]}")


def test_object_npz_inputs_are_refused_naming_the_array(tmp_path):
    p = tmp_path / "d.npz"
    x = np.empty(30, dtype=object)
    x[:] = [[1.0]] * 30
    np.savez(p, x_train=x, y_train=np.arange(30) % 3, x_test=np.zeros((10, 1)), y_test=np.arange(10) % 3)
    _refused(p, "x_train cannot be read")


@pytest.mark.parametrize("split", ["train", "test"])
def test_empty_split_is_refused(tmp_path, split):
    p = _npz(tmp_path / "d.npz", **{f"x_{split}": np.zeros((0, 2, 3), np.float32),
                                    f"y_{split}": np.zeros(0, np.int64)})
    _refused(p, f"x_{split} holds no samples")


def test_empty_idx_split_is_refused(tmp_path):
    d = _idx_dir(tmp_path / "mnist", np.zeros((12, 2, 2), np.uint8), np.arange(12, dtype=np.uint8) % 10,
                 np.zeros((0, 2, 2), np.uint8), np.zeros(0, np.uint8))
    with pytest.raises(DataFormatError, match="t10k-images.*x_test holds no samples"):
        load_dataset("mnist", path=d)


# ---------------------------------------------------------------- labels


def test_fractional_float_labels_are_refused(tmp_path):
    y = (np.arange(30) % 3).astype(np.float64)
    y[5] = 1.5
    _refused(_npz(tmp_path / "d.npz", y_train=y), "y_train must hold integer class labels.*index 5")
    # integral floats are fine
    ds = load_dataset(str(_npz(tmp_path / "ok.npz", y_train=(np.arange(30) % 3).astype(np.float32))))
    assert ds.n_classes == 3 and ds.y_train.dtype == np.int64


def test_fractional_idx_labels_are_refused(tmp_path):
    ytr = (np.arange(12) % 10).astype(">f4")
    ytr[2] = 0.25
    d = _idx_dir(tmp_path / "mnist", np.zeros((12, 2, 2), np.uint8), ytr, np.zeros((5, 2, 2), np.uint8),
                 np.arange(5, dtype=np.uint8))
    with pytest.raises(DataFormatError, match="train-labels-idx1-ubyte.gz: y_train.*index 2"):
        load_dataset("mnist", path=d)


@pytest.mark.parametrize("split", ["train", "test"])
def test_negative_labels_are_refused(tmp_path, split):
    y = np.arange(30 if split == "train" else 10) % 3
    y[4] = -1
    _refused(_npz(tmp_path / "d.npz", **{f"y_{split}": y}), f"y_{split} holds the negative label -1 at index 4")


def test_negative_idx_labels_are_refused(tmp_path):
    yte = np.arange(5, dtype=np.int8)
    yte[1] = -3
    d = _idx_dir(tmp_path / "mnist", np.zeros((12, 2, 2), np.uint8), np.arange(12, dtype=np.uint8) % 10,
                 np.zeros((5, 2, 2), np.uint8), yte)
    with pytest.raises(DataFormatError, match="t10k-labels-idx1-ubyte.gz: y_test holds the negative label -3"):
        load_dataset("mnist", path=d)


def test_labels_beyond_a_declared_class_count_are_refused(tmp_path):
    p = _npz(tmp_path / "d.npz", y_test=np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 10]))
    with pytest.raises(DataFormatError, match=r"y_test holds the label 10 at index 9, but mnist has 10 classes"):
        load_dataset("mnist", path=p)


def test_test_class_missing_from_training_labels_is_refused(tmp_path):
    # before: n_classes came from train and test labels together, so the net got an output never trained
    p = _npz(tmp_path / "d.npz", y_test=np.array([0, 1, 2, 0, 1, 2, 3, 0, 1, 2]))
    msg = _refused(p, "y_test holds the label 3 at index 6")
    assert "training labels only go up to 2" in msg


def test_test_set_with_fewer_classes_is_fine(tmp_path):
    ds = load_dataset(str(_npz(tmp_path / "d.npz", y_test=np.zeros(10, np.int64))))
    assert ds.n_classes == 3


def test_n_classes_comes_from_the_whole_training_file(tmp_path):
    # the first 6 training samples hold only classes 0..1; the file has 3 classes
    y = np.array([0, 1] * 3 + [2] * 24)
    ds = load_dataset(str(_npz(tmp_path / "d.npz", y_train=y, y_test=np.zeros(10, np.int64))), n_train=6)
    assert ds.n_classes == 3 and ds.n_train == 6


@pytest.mark.parametrize("top", [10**9, float(10**9)])
def test_huge_labels_are_refused_at_load_time(tmp_path, top):
    y = np.arange(30) % 3
    y = y.astype(type(top) if isinstance(top, float) else np.int64)
    y[11] = top
    msg = _refused(_npz(tmp_path / "d.npz", y_train=y), "y_train labels go up to 1000000000")
    assert "1000000001 classes" in msg and str(MAX_CLASSES) in msg


def test_more_classes_than_training_samples_is_refused(tmp_path):
    y = np.arange(30) % 3
    y[0] = 500
    _refused(_npz(tmp_path / "d.npz", y_train=y), "501 classes.*30 training samples")


def test_errors_are_data_errors(tmp_path):
    x = np.zeros((30, 2, 3), np.float32)
    x[0, 0, 0] = np.nan
    with pytest.raises(DataError):
        load_dataset(str(_npz(tmp_path / "d.npz", x_train=x)))
