"""Datasets: deterministic disjoint splits, real on-disk formats written by the tests, bad folders."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from odimo_moo.data import TEST_FRACTION, DataBundle, load_dataset, make_loaders
from odimo_moo.errors import UsageError

MNIST_T10K = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-t10k"


def _indices(bundle: DataBundle) -> tuple[set[int], set[int], set[int]]:
    return set(bundle.train.indices), set(bundle.val.indices), set(bundle.test.indices)


# -- digits -------------------------------------------------------------------------------------

def test_digits_shapes_and_disjoint_splits() -> None:
    bundle = load_dataset("digits", seed=0)
    assert (bundle.num_classes, bundle.in_channels, bundle.input_size) == (10, 1, (8, 8))
    train, val, test = _indices(bundle)
    assert len(train) + len(val) + len(test) == 1797
    assert not (train & val or train & test or val & test)
    assert len(test) == round(1797 * TEST_FRACTION)
    assert len(val) == round((1797 - len(test)) * 0.1)
    x, y = bundle.train[0]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32 and 0 <= int(y) < 10
    train_x = torch.stack([bundle.train[i][0] for i in range(len(bundle.train))])
    assert abs(float(train_x.mean())) < 1e-4 and abs(float(train_x.std()) - 1) < 1e-3


def test_digits_splits_depend_on_seed_only() -> None:
    first, again, other = (load_dataset("digits", seed=s) for s in (3, 3, 4))
    assert first.train.indices == again.train.indices and first.val.indices == again.val.indices
    assert torch.equal(first.train[5][0], again.train[5][0])
    assert first.train.indices != other.train.indices
    assert first.test.indices == other.test.indices  # the test split never depends on the seed


def test_limit_caps_every_split() -> None:
    bundle = load_dataset("digits", limit=50)
    assert [len(bundle.train), len(bundle.val), len(bundle.test)] == [50, 50, 50]
    assert bundle.train.indices == load_dataset("digits").train.indices[:50]


def test_loaders_shuffle_reproducibly() -> None:
    bundle = load_dataset("digits", limit=64)
    first = [y for _, y in make_loaders(bundle, 16, seed=1)[0]]
    again = [y for _, y in make_loaders(bundle, 16, seed=1)[0]]
    other = [y for _, y in make_loaders(bundle, 16, seed=2)[0]]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
    x, y = next(iter(make_loaders(bundle, 16)[2]))
    assert x.shape == (16, 1, 8, 8) and y.shape == (16,)


@pytest.mark.parametrize("kwargs,match", [
    ({"name": "svhn"}, "digits, mnist, cifar10, cifar100, imagenet, fashion_mnist, imagefolder"),
    ({"name": "digits", "val_fraction": 1.0}, "val_fraction"),
    ({"name": "digits", "limit": 0}, "limit"),
    ({"name": "cifar10", "image_size": 32}, "image_size"),
    ({"name": "digits", "image_size": 4}, "image_size"),
])
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        load_dataset(**kwargs)


def test_bad_batch_size() -> None:
    with pytest.raises(UsageError, match="batch_size"):
        make_loaders(load_dataset("digits", limit=8), 0)


# -- MNIST --------------------------------------------------------------------------------------

@pytest.mark.skipif(not MNIST_T10K.is_dir(), reason=f"shared MNIST t10k files not found at {MNIST_T10K}")
def test_mnist_from_t10k_only() -> None:
    bundle = load_dataset("mnist", MNIST_T10K, seed=0)
    assert (bundle.num_classes, bundle.in_channels, bundle.input_size) == (10, 1, (28, 28))
    train, val, test = _indices(bundle)
    assert (len(train), len(val), len(test)) == (7650, 850, 1500)
    assert not (train & val or train & test or val & test)
    assert "only the t10k files" in bundle.description
    x, y = bundle.test[0]
    assert x.shape == (1, 28, 28) and 0 <= int(y) <= 9
    assert float(x.min()) == pytest.approx(-0.1307 / 0.3081)


def write_idx(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray, compress: bool) -> None:
    """The ``prefix`` (train / t10k) images and labels as IDX files, gzipped or not (MNIST's layout)."""
    folder.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if compress else open
    suffix = ".gz" if compress else ""
    with opener(folder / f"{prefix}-images-idx3-ubyte{suffix}", "wb") as f:
        f.write(struct.pack(">IIII", 0x0803, *images.shape) + images.astype(np.uint8).tobytes())
    with opener(folder / f"{prefix}-labels-idx1-ubyte{suffix}", "wb") as f:
        f.write(struct.pack(">II", 0x0801, len(labels)) + labels.astype(np.uint8).tobytes())


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_with_train_files(tmp_path: Path, compress: bool) -> None:
    rng = np.random.default_rng(0)
    write_idx(tmp_path, "train", rng.integers(0, 256, (40, 28, 28)), np.arange(40) % 10, compress)
    write_idx(tmp_path, "t10k", rng.integers(0, 256, (10, 28, 28)), np.arange(10), compress)
    bundle = load_dataset("mnist", tmp_path, val_fraction=0.25)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (30, 10, 10)
    assert bundle.train.dataset is bundle.val.dataset is not bundle.test.dataset
    assert sorted(int(bundle.test[i][1]) for i in range(10)) == list(range(10))


def test_mnist_bad_folders(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=f"no MNIST IDX files found in {tmp_path}.*--download"):
        load_dataset("mnist", tmp_path)
    rng = np.random.default_rng(0)
    write_idx(tmp_path, "t10k", rng.integers(0, 256, (10, 28, 28)), np.arange(10), compress=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UsageError, match="t10k-labels-idx1-ubyte.*missing"):
        load_dataset("mnist", tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(UsageError, match="not a valid MNIST IDX file"):
        load_dataset("mnist", tmp_path)
    write_idx(tmp_path, "t10k", rng.integers(0, 256, (10, 28, 28)), np.arange(12) % 10, compress=True)
    with pytest.raises(UsageError, match="10 images but.*12 labels"):
        load_dataset("mnist", tmp_path)


# -- CIFAR --------------------------------------------------------------------------------------

CIFAR_LAYOUTS = {
    # name: (folder, training files, test file, meta file, label key, class-names key, classes)
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch",
                "batches.meta", "labels", "label_names", 10),
    "cifar100": ("cifar-100-python", ["train"], "test", "meta", "fine_labels", "fine_label_names", 100),
}


def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _write_cifar(root: Path, name: str, per_file: int = 4, test_size: int = 6) -> Path:
    folder_name, train_files, test_file, meta_file, label_key, names_key, classes = CIFAR_LAYOUTS[name]
    folder = root / folder_name
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for file_name, size in [(f, per_file) for f in train_files] + [(test_file, test_size)]:
        _pickle(folder / file_name, {"data": rng.integers(0, 256, (size, 3072), dtype=np.uint8),
                                     label_key: [int(v) for v in rng.integers(0, classes, size)]})
    _pickle(folder / meta_file, {names_key: [f"class{i}" for i in range(classes)]})
    return folder


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_from_files_on_disk(tmp_path: Path, name: str) -> None:
    _write_cifar(tmp_path, name, per_file=20 if name == "cifar100" else 4)
    bundle = load_dataset(name, tmp_path, val_fraction=0.25, seed=1)
    assert (bundle.num_classes, bundle.in_channels, bundle.input_size) == (CIFAR_LAYOUTS[name][6], 3, (32, 32))
    train, val, test = _indices(bundle)
    assert (len(train), len(val), len(test)) == (15, 5, 6)
    assert not train & val
    x, y = bundle.train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= y < bundle.num_classes
    # Validation and test samples are not augmented: reading one twice gives the same tensor.
    assert torch.equal(bundle.val[0][0], bundle.val[0][0]) and torch.equal(bundle.test[1][0], bundle.test[1][0])
    assert load_dataset(name, tmp_path, val_fraction=0.25, seed=1).val.indices == bundle.val.indices


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_missing_files(tmp_path: Path, name: str) -> None:
    with pytest.raises(UsageError, match=f"not found in {tmp_path / CIFAR_LAYOUTS[name][0]}.*--download"):
        load_dataset(name, tmp_path)
    folder = _write_cifar(tmp_path, name)
    (folder / CIFAR_LAYOUTS[name][3]).unlink()
    with pytest.raises(UsageError, match=f"missing {CIFAR_LAYOUTS[name][3]}"):
        load_dataset(name, tmp_path)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_corrupt_files(tmp_path: Path, name: str) -> None:
    folder = _write_cifar(tmp_path, name)
    (folder / CIFAR_LAYOUTS[name][1][0]).write_bytes(b"\x80\x04garbage")
    with pytest.raises(UsageError, match=f"{folder} does not hold valid CIFAR pickles"):
        load_dataset(name, tmp_path)
    _pickle(folder / CIFAR_LAYOUTS[name][1][0], {"pixels": np.zeros((4, 3072), np.uint8)})
    with pytest.raises(UsageError, match="valid CIFAR pickles"):
        load_dataset(name, tmp_path)
    _pickle(folder / CIFAR_LAYOUTS[name][1][0], {"data": np.zeros((4, 3072), np.uint8),
                                                  CIFAR_LAYOUTS[name][4]: [0, 1, 2]})
    with pytest.raises(UsageError, match="must match"):
        load_dataset(name, tmp_path)


# -- ImageNet (image-folder layout) ---------------------------------------------------------------

def _write_image_folder(root: Path, split: str, classes: list[str], per_class: int) -> None:
    rng = np.random.default_rng(0)
    for name in classes:
        (root / split / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / split / name / f"{i}.png")


def test_imagenet_folder(tmp_path: Path) -> None:
    _write_image_folder(tmp_path, "train", ["cat", "dog", "eel"], 4)
    _write_image_folder(tmp_path, "val", ["cat", "dog", "eel"], 2)
    bundle = load_dataset("imagenet", tmp_path, val_fraction=0.25, image_size=32, limit=5)
    assert (bundle.num_classes, bundle.in_channels, bundle.input_size) == (3, 3, (32, 32))
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (5, 3, 5)
    assert not set(bundle.train.indices) & set(bundle.val.indices)
    for split in (bundle.train, bundle.val, bundle.test):
        x, y = split[0]
        assert x.shape == (3, 32, 32) and 0 <= y < 3
    # The limited test split is a random subset, not the first (all-"cat") samples.
    assert len({bundle.test[i][1] for i in range(5)}) > 1


def test_imagenet_bad_folders(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=f"{tmp_path / 'train'} is not an image-folder tree"):
        load_dataset("imagenet", tmp_path)
    _write_image_folder(tmp_path, "train", ["cat", "dog"], 1)
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "loose.png").write_bytes(b"")
    with pytest.raises(UsageError, match=f"{tmp_path / 'val'} is not an image-folder tree"):
        load_dataset("imagenet", tmp_path)
    _write_image_folder(tmp_path, "val", ["cat"], 1)
    with pytest.raises(UsageError, match="same class folders"):
        load_dataset("imagenet", tmp_path)
    with pytest.raises(UsageError, match="cannot be downloaded"):
        load_dataset("imagenet", tmp_path, download=True)

