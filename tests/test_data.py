"""Tests of npsim.io.data (file formats, search order, preprocessing) and of the epoch order."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from npsim.errors import DataError
from npsim.experiment.loop import epoch_order
from npsim.io.data import (
    DataFormatError,
    DataNotFound,
    Dataset,
    find_dataset,
    load_cifar10_dir,
    load_dataset,
    load_idx_dir,
    load_npz,
    read_idx,
    search_places,
)
from npsim.io.data import locate as data

IDX_CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype(">i2"): 0x0B,
             np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


# ---------------------------------------------------------------- helpers


def idx_bytes(a: np.ndarray) -> bytes:
    a = np.asarray(a)
    be = a.dtype.newbyteorder(">") if a.dtype.itemsize > 1 else a.dtype
    header = bytes([0, 0, IDX_CODES[be], a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    return header + a.astype(be).tobytes()


def write_idx(path: Path, a: np.ndarray, gz: bool = False) -> Path:
    raw = idx_bytes(a)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def make_idx_dir(d: Path, n_train=12, n_test=5, gz=True, dotted=False, seed=0) -> tuple:
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    xtr = rng.integers(0, 256, size=(n_train, 4, 3), dtype=np.uint8)
    ytr = (np.arange(n_train) % 10).astype(np.uint8)
    xte = rng.integers(0, 256, size=(n_test, 4, 3), dtype=np.uint8)
    yte = (np.arange(n_test) % 10).astype(np.uint8)
    sep = "." if dotted else "-"
    sfx = ".gz" if gz else ""
    write_idx(d / f"train-images{sep}idx3-ubyte{sfx}", xtr, gz)
    write_idx(d / f"train-labels{sep}idx1-ubyte{sfx}", ytr, gz)
    write_idx(d / f"t10k-images{sep}idx3-ubyte{sfx}", xte, gz)
    write_idx(d / f"t10k-labels{sep}idx1-ubyte{sfx}", yte, gz)
    return xtr, ytr, xte, yte


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No NPSIM_DATA, no Debian copy, an empty bundled folder, cwd in tmp."""
    monkeypatch.delenv("NPSIM_DATA", raising=False)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "debian" / "fashion-mnist")
    monkeypatch.setattr(data, "BUNDLED_ROOT", tmp_path / "bundled")
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return tmp_path


# ---------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", ["u1", "i1", ">i2", ">i4", ">f4", ">f8"])
def test_idx_round_trip(tmp_path, gz, dtype):
    a = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5).astype(dtype)
    if dtype == "u1":
        a = np.arange(30, dtype=np.uint8).reshape(2, 3, 5)
    # a name without .gz: gzip is detected by content
    p = write_idx(tmp_path / "f.bin", a, gz)
    b = read_idx(p)
    assert b.shape == a.shape
    assert b.dtype == a.dtype.newbyteorder("=")
    assert b.dtype.isnative
    np.testing.assert_array_equal(b, a)
    b[0, 0, 0] = 1  # writable


def test_idx_truncated_raw(tmp_path):
    p = tmp_path / "short-idx3-ubyte"
    p.write_bytes(idx_bytes(np.zeros((4, 2, 2), np.uint8))[:-3])
    with pytest.raises(DataFormatError, match="short-idx3-ubyte") as e:
        read_idx(p)
    assert "truncated" in str(e.value)


def test_idx_trailing_data(tmp_path):
    p = tmp_path / "long"
    p.write_bytes(idx_bytes(np.zeros((4,), np.uint8)) + b"\x00")
    with pytest.raises(DataFormatError, match="long"):
        read_idx(p)


def test_idx_truncated_gzip(tmp_path):
    p = tmp_path / "cut.gz"
    blob = gzip.compress(idx_bytes(np.arange(2000, dtype=np.uint8).reshape(20, 100)))
    p.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataFormatError, match="cut.gz"):
        read_idx(p)


def test_idx_bad_magic(tmp_path):
    p = tmp_path / "bad"
    raw = bytearray(idx_bytes(np.zeros((2, 2), np.uint8)))
    raw[0] = 0x12
    p.write_bytes(bytes(raw))
    with pytest.raises(DataFormatError, match="bad"):
        read_idx(p)
    raw[0] = 0
    raw[2] = 0x07  # unknown type code
    p.write_bytes(bytes(raw))
    with pytest.raises(DataFormatError, match="type code"):
        read_idx(p)
    p.write_bytes(b"\x00\x00")
    with pytest.raises(DataFormatError):
        read_idx(p)


@pytest.mark.parametrize("gz,dotted", [(False, False), (True, False), (False, True), (True, True)])
def test_load_idx_dir(tmp_path, gz, dotted):
    xtr, ytr, xte, yte = make_idx_dir(tmp_path / "d", gz=gz, dotted=dotted)
    raw = load_idx_dir(tmp_path / "d", name="mnist")
    for got, want in zip(raw, (xtr, ytr, xte, yte)):
        np.testing.assert_array_equal(got, want)


def test_idx_count_mismatch(tmp_path):
    d = tmp_path / "d"
    make_idx_dir(d)
    write_idx(d / "train-labels-idx1-ubyte.gz", np.zeros(11, np.uint8), gz=True)
    with pytest.raises(DataFormatError, match="12 images.*11 labels"):
        load_idx_dir(d, name="mnist")


def test_idx_dir_missing_file(tmp_path):
    d = tmp_path / "d"
    make_idx_dir(d)
    (d / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataNotFound, match="t10k-labels"):
        load_idx_dir(d, name="mnist")


# ---------------------------------------------------------------- CIFAR-10


def make_cifar(d: Path, n=4, n_test=3, subdir=False, str_keys=False) -> tuple:
    if subdir:
        d = d / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    xs, ys = [], []
    key = (lambda k: k) if str_keys else (lambda k: k.encode())
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        m = n_test if name == "test_batch" else n
        x = rng.integers(0, 256, size=(m, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, size=m)]
        with open(d / name, "wb") as f:
            pickle.dump({key("batch_label"): b"x", key("data"): x, key("labels"): y}, f)
        xs.append(x)
        ys.append(np.array(y))
    return np.concatenate(xs[:5]), np.concatenate(ys[:5]), xs[5], ys[5]


@pytest.mark.parametrize("subdir", [False, True])
def test_cifar10(tmp_path, subdir):
    want = make_cifar(tmp_path / "c", subdir=subdir)
    raw = load_cifar10_dir(tmp_path / "c")
    assert raw.x_train.shape == (20, 3072) and raw.x_test.shape == (3, 3072)
    for got, w in zip(raw, want):
        np.testing.assert_array_equal(got, w)
    assert raw.y_train.dtype == np.int64


def test_cifar10_bad_batch(tmp_path):
    make_cifar(tmp_path / "c")
    with open(tmp_path / "c" / "data_batch_3", "wb") as f:
        pickle.dump({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}, f)
    with pytest.raises(DataFormatError, match="data_batch_3"):
        load_cifar10_dir(tmp_path / "c")
    (tmp_path / "c" / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(DataFormatError, match="data_batch_3"):
        load_cifar10_dir(tmp_path / "c")


def test_cifar10_via_load_dataset(isolated, monkeypatch):
    make_cifar(isolated / "env" / "cifar10", subdir=True)
    monkeypatch.setenv("NPSIM_DATA", str(isolated / "env"))
    ds = load_dataset("CIFAR-10", normalize="unit")
    assert ds.name == "cifar10" and ds.n_classes == 10
    assert ds.x_train.shape == (20, 3072) and ds.n_features == 3072
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0


# ---------------------------------------------------------------- npz


def test_npz(tmp_path):
    rng = np.random.default_rng(2)
    p = tmp_path / "toy.npz"
    xtr = rng.normal(size=(8, 2, 3)).astype(np.float64)
    np.savez(p, x_train=xtr, y_train=np.arange(8) % 3, x_test=rng.normal(size=(4, 2, 3)), y_test=np.arange(4) % 3)
    raw = load_npz(p)
    np.testing.assert_array_equal(raw.x_train, xtr)
    ds = load_dataset(str(p), normalize="none")
    assert ds.name == "toy" and ds.n_classes == 3 and ds.source == str(p)
    assert ds.x_train.shape == (8, 6) and ds.x_train.dtype == np.float32
    np.testing.assert_allclose(ds.x_train, xtr.reshape(8, 6).astype(np.float32))
    assert ds.y_train.dtype == np.int64
    # a known name with an npz path keeps the name and its class count
    ds = load_dataset("mnist", path=p)
    assert ds.name == "mnist" and ds.n_classes == 10


def test_npz_errors(tmp_path):
    p = tmp_path / "bad.npz"
    np.savez(p, x_train=np.zeros((3, 2)), y_train=np.zeros(3, int), x_test=np.zeros((2, 2)))
    with pytest.raises(DataFormatError, match="y_test"):
        load_npz(p)
    np.savez(p, x_train=np.zeros((3, 2)), y_train=np.zeros(2, int), x_test=np.zeros((2, 2)), y_test=np.zeros(2, int))
    with pytest.raises(DataFormatError, match="bad.npz"):
        load_npz(p)
    p.write_bytes(b"not a zip")
    with pytest.raises(DataFormatError, match="bad.npz"):
        load_npz(p)


# ---------------------------------------------------------------- search order


def test_env_beats_bundled(isolated, monkeypatch):
    make_idx_dir(isolated / "bundled" / "mnist", n_train=7)
    make_idx_dir(isolated / "env" / "mnist", n_train=9)
    assert load_dataset("mnist").n_train == 7
    monkeypatch.setenv("NPSIM_DATA", str(isolated / "env"))
    kind, loc = find_dataset("mnist")
    assert kind == "idx" and loc == isolated / "env" / "mnist"
    assert load_dataset("MNIST").n_train == 9
    places = search_places("mnist")
    assert [p for p, _ in places][:2] == [str(isolated / "env" / "mnist"), str(isolated / "env")]
    assert [ok for _, ok in places] == [True, False, True, False]


def test_env_several_dirs_and_root(isolated, monkeypatch):
    make_idx_dir(isolated / "b", n_train=6)  # files directly in the directory
    monkeypatch.setenv("NPSIM_DATA", os.pathsep.join([str(isolated / "a"), str(isolated / "b")]))
    assert find_dataset("mnist") == ("idx", isolated / "b")


def test_explicit_path_beats_env(isolated, monkeypatch):
    make_idx_dir(isolated / "env" / "fashion-mnist", n_train=9)
    make_idx_dir(isolated / "mine", n_train=5)
    monkeypatch.setenv("NPSIM_DATA", str(isolated / "env"))
    ds = load_dataset("fashion_mnist", path=isolated / "mine")
    assert ds.n_train == 5 and ds.name == "fashion-mnist" and ds.source == str(isolated / "mine")


def test_missing_explicit_path(isolated, monkeypatch):
    make_idx_dir(isolated / "env" / "mnist")
    monkeypatch.setenv("NPSIM_DATA", str(isolated / "env"))
    missing = isolated / "nowhere"
    with pytest.raises(DataNotFound) as e:
        load_dataset("mnist", path=missing)
    assert str(missing) in str(e.value)
    assert str(isolated / "env") not in str(e.value)  # no fallback to other places
    assert isinstance(e.value, FileNotFoundError)


def test_nothing_found_lists_all_places(isolated, monkeypatch):
    monkeypatch.setenv("NPSIM_DATA", str(isolated / "env"))
    with pytest.raises(DataNotFound) as e:
        load_dataset("fmnist")
    msg = str(e.value)
    for place in (isolated / "env" / "fashion-mnist", isolated / "env", data.DEBIAN_FASHION_MNIST,
                  isolated / "bundled" / "fashion-mnist", isolated / "cwd" / "data" / "fashion-mnist"):
        assert str(place) in msg
    assert "NPSIM_DATA" in msg and "\n" not in msg
    assert [p for p, _ in e.value.places] == [p for p, _ in search_places("fashion-mnist")]
    assert not any(ok for _, ok in search_places("fashion-mnist"))


def test_cwd_data_folder(isolated):
    make_idx_dir(isolated / "cwd" / "data" / "mnist", n_train=4)
    assert load_dataset("mnist").n_train == 4


def test_unknown_name():
    with pytest.raises(ValueError, match="fashion-mnist.*mnist.*cifar10"):
        load_dataset("imagenet")


def test_bad_arguments(isolated):
    make_idx_dir(isolated / "bundled" / "mnist", n_train=10)
    with pytest.raises(ValueError, match="normalize"):
        load_dataset("mnist", normalize="zscore")
    with pytest.raises(ValueError, match="n_train"):
        load_dataset("mnist", n_train=11)
    with pytest.raises(ValueError, match="n_train"):
        load_dataset("mnist", n_train=0)


# ---------------------------------------------------------------- preprocessing


def test_standard_normalization(isolated):
    xtr, ytr, xte, yte = make_idx_dir(isolated / "bundled" / "mnist", n_train=50, n_test=7)
    ds = load_dataset("mnist", n_train=30)
    assert isinstance(ds, Dataset)
    assert ds.x_train.shape == (30, 12) and ds.x_test.shape == (7, 12) and ds.n_features == 12
    assert ds.x_train.dtype == np.float32 and ds.x_test.dtype == np.float32
    assert ds.y_train.dtype == np.int64 and ds.y_test.dtype == np.int64
    np.testing.assert_array_equal(ds.y_train, ytr[:30])
    np.testing.assert_allclose(ds.x_train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(ds.x_train.std(), 1.0, rtol=1e-5)  # one global scale
    # reference computed from the first 30 training samples only, applied to test
    u = xtr[:30].reshape(30, -1).astype(np.float64) / 255
    mean = u.mean(axis=0)
    std = (u - mean).std()
    np.testing.assert_allclose(ds.x_train, (u - mean) / std, atol=1e-5)
    np.testing.assert_allclose(ds.x_test, (xte.reshape(7, -1) / 255 - mean) / std, atol=1e-5)


def test_unit_and_none(isolated):
    xtr, *_ = make_idx_dir(isolated / "bundled" / "mnist")
    for norm in ("unit", "none"):
        ds = load_dataset("mnist", normalize=norm)
        np.testing.assert_allclose(ds.x_train, xtr.reshape(len(xtr), -1) / 255, atol=1e-7)


# ---------------------------------------------------------------- epoch order


def test_epoch_order():
    a = epoch_order(100, seed=3, epoch=0)
    assert a.dtype == np.int64 and a.shape == (100,)
    np.testing.assert_array_equal(np.sort(a), np.arange(100))
    np.testing.assert_array_equal(a, epoch_order(100, 3, 0))
    assert not np.array_equal(a, epoch_order(100, 3, 1))
    assert not np.array_equal(a, epoch_order(100, 4, 0))
    ref = np.random.Generator(np.random.PCG64(np.random.SeedSequence([3, 0, 0x5EED]))).permutation(100)
    np.testing.assert_array_equal(a, ref)
    assert epoch_order(0, 1, 2).shape == (0,)
    with pytest.raises(ValueError):
        epoch_order(10, -1, 0)


# ---------------------------------------------------------------- bundled subset


def test_bundled_fashion_mnist():
    root = data.BUNDLED_ROOT / "fashion-mnist"
    assert root.is_dir(), "bundled data/fashion-mnist missing"
    ds = load_dataset("fashion-mnist", path=root)
    assert ds.n_train == 20000 and ds.n_test == 10000
    assert ds.n_features == 784 and ds.n_classes == 10
    np.testing.assert_array_equal(np.bincount(ds.y_train, minlength=10), np.full(10, 2000))
    np.testing.assert_array_equal(np.bincount(ds.y_test, minlength=10), np.full(10, 1000))
    # shuffled order: a prefix holds every class
    assert set(np.unique(ds.y_train[:200])) == set(range(10))


def test_validation_split_replaces_the_test_set(tmp_path):
    from npsim.io.data import load_dataset

    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 4)).astype(np.float32)
    y = np.arange(50) % 3
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[:5] + 100, y_test=y[:5])
    ds = load_dataset("d", tmp_path / "d.npz", n_train=40, validation=10, normalize="none")
    assert ds.n_train == 30 and ds.n_test == 10
    np.testing.assert_array_equal(ds.x_test, x[30:40])
    np.testing.assert_array_equal(ds.y_test, y[30:40])
    assert "validation" in ds.source
    with pytest.raises(ValueError, match="validation must be an integer in \\[1, 39\\]"):
        load_dataset("d", tmp_path / "d.npz", n_train=40, validation=40)


def test_pool_averages_image_blocks_and_refuses_what_it_cannot_pool(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (6, 4, 6), dtype=np.uint8)
    path = tmp_path / "imgs.npz"
    np.savez(path, x_train=imgs, y_train=np.arange(6) % 2, x_test=imgs[:2], y_test=np.array([0, 1]))
    ds = load_dataset(str(path), normalize="none", pool=2)
    expect = imgs.astype(np.float64).reshape(6, 2, 2, 3, 2).mean(axis=(2, 4)).reshape(6, -1) / 255
    assert ds.x_train.shape == (6, 6) and np.allclose(ds.x_train, expect, atol=1e-6)
    assert load_dataset(str(path), normalize="unit", pool=2).x_train.max() <= 1.0
    with pytest.raises(DataError, match="pool 4 must divide the images' height and width"):
        load_dataset(str(path), pool=4)
    flat = tmp_path / "flat.npz"
    np.savez(flat, x_train=imgs.reshape(6, -1), y_train=np.arange(6) % 2, x_test=imgs[:2].reshape(2, -1),
             y_test=np.array([0, 1]))
    with pytest.raises(DataError, match=r"pool averages images, but .* holds inputs of shape \(24,\)"):
        load_dataset(str(flat), pool=2)
