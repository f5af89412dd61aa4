"""MNIST and Fashion-MNIST from their IDX files (plain or gzip), downloaded on request."""

from __future__ import annotations

import gzip
import tempfile
import zlib
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.utils.data import TensorDataset
from torchvision import datasets
from torchvision.datasets.mnist import read_image_file, read_label_file

from ..errors import RunFailure, UsageError
from .memory_images import IMAGE_CACHE, ImageTensorDataset, check_image_size, resize_square
from .splits import DataBundle, TransformSubset, train_val_test

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
FASHION_MNIST_MEAN, FASHION_MNIST_STD = 0.2860, 0.3530
FASHION_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                       "t10k-labels-idx1-ubyte")


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_idx(path: Path, reader: Callable[[str], torch.Tensor], what: str = "MNIST") -> torch.Tensor:
    """Read an IDX file (plain or gzip) with torchvision's reader (``what``: the dataset, for errors)."""
    fix = "replace it with the original release file"
    try:
        if path.suffix != ".gz":
            data = reader(str(path))
        else:
            with tempfile.TemporaryDirectory() as tmp:
                plain = Path(tmp) / path.stem
                with gzip.open(path, "rb") as source:
                    plain.write_bytes(source.read())
                data = reader(str(plain))
    except AssertionError as exc:  # torchvision asserts the magic number and the dimension count
        reason = str(exc) or "its header is not an IDX header"
        raise UsageError(f"{path} is not a valid {what} IDX file ({reason}); {fix}") from exc
    except (zlib.error, EOFError, gzip.BadGzipFile) as exc:
        raise UsageError(f"{path} is not a valid {what} IDX file (its gzip data is damaged: {exc}); {fix}") from exc
    except (OSError, KeyError, ValueError, RuntimeError, TypeError) as exc:
        # TypeError: torchvision's readers refuse an IDX type byte other than unsigned bytes (0x08)
        raise UsageError(f"{path} is not a valid {what} IDX file ({type(exc).__name__}: {exc}); {fix}") from exc
    return data


def _read_mnist_pair(folder: Path, prefix: str,
                     what: str = "MNIST") -> tuple[torch.Tensor, torch.Tensor] | None:
    """The ``prefix`` (train / t10k) images (N, H, W) uint8 and labels of an MNIST-layout folder.

    None when neither file of the pair is there. ``what`` names the dataset in error messages.
    """
    image_path = _find_idx(folder, f"{prefix}-images-idx3-ubyte")
    label_path = _find_idx(folder, f"{prefix}-labels-idx1-ubyte")
    if image_path is None and label_path is None:
        return None
    if image_path is None or label_path is None:
        missing = f"{prefix}-{'images-idx3' if image_path is None else 'labels-idx1'}-ubyte[.gz]"
        raise UsageError(f"{what} folder {folder} has only half of the {prefix} split: {missing} is missing")
    images = _read_idx(image_path, read_image_file, what)
    labels = _read_idx(label_path, read_label_file, what)
    if len(images) != len(labels):
        raise UsageError(f"{what} folder {folder}: {image_path.name} holds {len(images)} images but "
                         f"{label_path.name} holds {len(labels)} labels")
    if len(labels) == 0 or int(labels.min()) < 0 or int(labels.max()) > 9:
        raise UsageError(f"{what} folder {folder}: {label_path.name} must hold class labels 0..9")
    return images, labels


def _idx_folder(data_root: Path, download: bool, source: type[datasets.MNIST], what: str,
                markers: Sequence[str], expected: str) -> Path:
    """The folder holding a data set's IDX files: ``data_root`` itself or torchvision's
    ``data_root/<source class>/raw`` (found by any of ``markers``), downloaded there on request."""
    candidates = (data_root, data_root / source.__name__ / "raw")
    for folder in candidates:
        if any(_find_idx(folder, stem) is not None for stem in markers):
            return folder
    if download:
        try:
            source(str(data_root), download=True)
        except (RuntimeError, OSError) as exc:
            raise RunFailure(f"could not download {what} into {candidates[1]}: {exc}") from exc
        return candidates[1]
    raise UsageError(f"no {what} IDX files found in {' or '.join(str(c) for c in candidates)}; expected "
                     f"{expected}; pass --data-root to point at the folder holding them or --download to fetch "
                     f"{what}")


def _mnist_folder(data_root: Path, download: bool) -> Path:
    """MNIST's IDX folder; the t10k pair is enough (the shared copy is the test split alone)."""
    return _idx_folder(data_root, download, datasets.MNIST, "MNIST", ("t10k-images-idx3-ubyte",),
                       "t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz] (and optionally the "
                       "train-* pair)")


def _normalize_mnist(images: torch.Tensor) -> torch.Tensor:
    return ((images.float() / 255.0 - MNIST_MEAN) / MNIST_STD).unsqueeze(1)


def load_mnist(data_root: Path, seed: int, val_fraction: float, download: bool,
               limit: int | None) -> DataBundle:
    """MNIST from its IDX files; with only the t10k pair, every split is drawn from those 10,000 images."""
    folder = _mnist_folder(data_root, download)
    test_pair = _read_mnist_pair(folder, "t10k")
    train_pair = _read_mnist_pair(folder, "train")
    assert test_pair is not None  # _mnist_folder found the t10k images
    test_base = TensorDataset(_normalize_mnist(test_pair[0]), test_pair[1].long())
    if train_pair is None:
        train_base = test_base
        train, val, test = train_val_test(len(test_base), None, seed, val_fraction, limit)
        description = (f"MNIST from {folder}: only the t10k files are there, so train/val/test are all "
                       f"drawn from its {len(test_base)} images")
    else:
        train_base = TensorDataset(_normalize_mnist(train_pair[0]), train_pair[1].long())
        train, val, test = train_val_test(len(train_base), len(test_base), seed, val_fraction, limit)
        description = f"MNIST from {folder}: train/val from the train files, test from t10k"
    train_set, val_set = TransformSubset(train_base, train), TransformSubset(train_base, val)
    test_set = TransformSubset(test_base, test)
    height, width = test_pair[0].shape[1:]
    return DataBundle(train_set, val_set, test_set, num_classes=10, in_channels=1,
                      input_size=(int(height), int(width)), name="mnist", description=description)


def _fashion_mnist_folder(data_root: Path, download: bool) -> Path:
    """Fashion-MNIST's IDX folder (the four release files)."""
    return _idx_folder(data_root, download, datasets.FashionMNIST, "Fashion-MNIST", FASHION_MNIST_FILES,
                       ", ".join(stem + "[.gz]" for stem in FASHION_MNIST_FILES))


def _idx_images(folder: Path, prefix: str, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``prefix`` split of a Fashion-MNIST folder as uint8 (N, 1, S, S) images and labels, cached."""
    stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    paths = [_find_idx(folder, stem) for stem in stems]
    if None in paths:
        missing = [stem + "[.gz]" for stem, path in zip(stems, paths) if path is None]
        raise UsageError(f"Fashion-MNIST folder {folder} lacks {' and '.join(missing)}; it must hold all of "
                         f"{', '.join(stem + '[.gz]' for stem in FASHION_MNIST_FILES)} (the official "
                         f"60,000-image train and 10,000-image test sets)")
    key = ("idx",) + tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in paths) + \
        (image_size,)
    if key not in IMAGE_CACHE:
        pair = _read_mnist_pair(folder, prefix, what="Fashion-MNIST")
        assert pair is not None  # both files exist
        images, labels = pair
        IMAGE_CACHE[key] = (resize_square(images.unsqueeze(1), image_size), labels.long())
    return IMAGE_CACHE[key]


def load_fashion_mnist(data_root: Path, seed: int, val_fraction: float, download: bool,
                       limit: int | None, *, image_size: int = 28, augment: bool = False) -> DataBundle:
    """Fashion-MNIST from its four IDX files, decoded once and resized to ``image_size`` if asked."""
    check_image_size(image_size, "fashion_mnist")
    folder = _fashion_mnist_folder(data_root, download)
    train_images, train_labels = _idx_images(folder, "train", image_size)
    test_images, test_labels = _idx_images(folder, "t10k", image_size)
    train, val, test = train_val_test(len(train_labels), len(test_labels), seed, val_fraction, limit)
    mean, std = (FASHION_MNIST_MEAN,), (FASHION_MNIST_STD,)
    size = f" resized to {image_size}x{image_size}" if image_size != 28 else ""
    return DataBundle(ImageTensorDataset(train_images, train_labels, train, mean, std, augment=augment),
                      ImageTensorDataset(train_images, train_labels, val, mean, std),
                      ImageTensorDataset(test_images, test_labels, test, mean, std),
                      num_classes=10, in_channels=1, input_size=(image_size, image_size),
                      name="fashion_mnist",
                      description=f"Fashion-MNIST from {folder}{size}: train/val from the "
                                  f"{len(train_labels)} train images, test = the {len(test_labels)} t10k "
                                  f"images")
