"""Datasets with deterministic train/validation/test splits, and their data loaders.

Split rules, shared by every dataset:

- the test split is the dataset's official test set, or, where there is none (``digits``, MNIST
  given only its t10k files), a held-out :data:`TEST_FRACTION` drawn with the fixed
  :data:`TEST_SPLIT_SEED`: it never depends on the run's ``seed``, so runs with different seeds are
  scored on the same samples;
- the validation split is ``val_fraction`` of the remaining training data, drawn with ``seed``;
- ``limit`` keeps at most that many samples of each split (a fixed random subset, not the first
  samples, so class balance survives sorted layouts such as ImageFolder's).

``fashion_mnist`` and ``imagefolder`` decode their images once per process into uint8 (N, C, H, W)
tensors (cached; with a ``limit``, only the selected samples of an image folder are decoded) and
normalise / augment those tensors batch by batch (:class:`ImageTensorDataset`), so an epoch never
decodes an image file.
"""

from __future__ import annotations

import gzip
import inspect
import os
import pickle
import tempfile
import zlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torchvision import datasets, transforms
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.datasets.mnist import read_image_file, read_label_file
try:  # torchvision deprecated its image codecs in 0.29 (superseded by TorchCodec); PIL is the fallback
    from torchvision.io import ImageReadMode, decode_image
except ImportError:  # pragma: no cover - a torchvision without them
    ImageReadMode = decode_image = None  # type: ignore[assignment,misc]
from torchvision.transforms.functional import center_crop, resize

from .errors import RunFailure, UsageError

DEFAULT_DATA_ROOT = Path.home() / ".cache" / "odimo-moo" / "data"
TEST_SPLIT_SEED = 0
TEST_FRACTION = 0.15

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class DataBundle:
    """The three splits of a dataset and the input/output shape facts a model needs."""

    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    in_channels: int
    input_size: tuple[int, int]
    name: str
    description: str = ""


class TransformSubset(Dataset):
    """The samples ``indices`` of ``dataset``, with ``transform`` applied to each input."""

    def __init__(self, dataset: Dataset, indices: Sequence[int],
                 transform: Callable[[Any], Any] | None = None) -> None:
        self.dataset = dataset
        self.indices = [int(i) for i in indices]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        x, y = self.dataset[self.indices[index]]
        if self.transform is not None:
            x = self.transform(x)
        return x, y


def _permutation(n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def _hold_out(indices: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffle ``indices`` with ``seed``; return (rest, held out ``fraction`` of them)."""
    shuffled = indices[_permutation(len(indices), seed)]
    held = int(round(len(indices) * fraction))
    return shuffled[held:], shuffled[:held]


def _cap(indices: torch.Tensor, limit: int | None) -> torch.Tensor:
    return indices if limit is None else indices[:limit]


def _train_val_test(n_train: int, n_test: int | None, seed: int, val_fraction: float,
                    limit: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Index splits of a training pool of ``n_train`` samples and an official test set of ``n_test``.

    With ``n_test`` None there is no official test set: the test split is held out of the pool.
    """
    pool = torch.arange(n_train)
    if n_test is None:
        pool, test = _hold_out(pool, TEST_FRACTION, TEST_SPLIT_SEED)
    else:
        test = _permutation(n_test, TEST_SPLIT_SEED)
    train, val = _hold_out(pool, val_fraction, seed)
    return _cap(train, limit), _cap(val, limit), _cap(test, limit)


# -- digits (embedded) -------------------------------------------------------------------------

def _load_digits(data_root: Path, seed: int, val_fraction: float, download: bool,
                 limit: int | None, *, image_size: int = 8) -> DataBundle:
    from sklearn.datasets import load_digits

    if image_size < 8:
        raise UsageError(f"digits image_size must be >= 8 (the native size), got {image_size}")
    digits = load_digits()
    images = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    if image_size != 8:
        # Bilinear upsampling gives SoC cost models realistic feature-map sizes on the embedded data.
        images = torch.nn.functional.interpolate(images, size=(image_size, image_size), mode="bilinear",
                                                 align_corners=False)
    labels = torch.tensor(digits.target, dtype=torch.long)
    train, val, test = _train_val_test(len(labels), None, seed, val_fraction, None)
    mean, std = images[train].mean(), images[train].std()
    base = TensorDataset((images - mean) / std, labels)
    train_set, val_set, test_set = (TransformSubset(base, _cap(split, limit)) for split in (train, val, test))
    return DataBundle(train_set, val_set, test_set, num_classes=10, in_channels=1,
                      input_size=(image_size, image_size), name="digits",
                      description=f"scikit-learn's bundled 8x8 handwritten digits (1,797 images) at "
                                  f"{image_size}x{image_size}")


# -- MNIST ---------------------------------------------------------------------------------------

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


def _load_mnist(data_root: Path, seed: int, val_fraction: float, download: bool,
                limit: int | None) -> DataBundle:
    folder = _mnist_folder(data_root, download)
    test_pair = _read_mnist_pair(folder, "t10k")
    train_pair = _read_mnist_pair(folder, "train")
    assert test_pair is not None  # _mnist_folder found the t10k images
    test_base = TensorDataset(_normalize_mnist(test_pair[0]), test_pair[1].long())
    if train_pair is None:
        train_base = test_base
        train, val, test = _train_val_test(len(test_base), None, seed, val_fraction, limit)
        description = (f"MNIST from {folder}: only the t10k files are there, so train/val/test are all "
                       f"drawn from its {len(test_base)} images")
    else:
        train_base = TensorDataset(_normalize_mnist(train_pair[0]), train_pair[1].long())
        train, val, test = _train_val_test(len(train_base), len(test_base), seed, val_fraction, limit)
        description = f"MNIST from {folder}: train/val from the train files, test from t10k"
    train_set, val_set = TransformSubset(train_base, train), TransformSubset(train_base, val)
    test_set = TransformSubset(test_base, test)
    height, width = test_pair[0].shape[1:]
    return DataBundle(train_set, val_set, test_set, num_classes=10, in_channels=1,
                      input_size=(int(height), int(width)), name="mnist", description=description)


# -- images decoded once, kept in memory as uint8 ------------------------------------------------

class ImageTensorDataset(Dataset):
    """The samples ``indices`` of in-memory uint8 ``images`` (N, C, H, W), normalised on the fly.

    ``images`` is decoded once per process (see :func:`clear_image_cache`) and shared by the splits
    that index it; each read turns the selected uint8 images into ``(x - mean) / std`` float32 (x in
    [0, 1]). With ``augment`` every read first takes a random ``H x W`` crop of the image zero-padded by
    ``padding`` pixels and mirrors it with probability 1/2 (torchvision's ``RandomCrop(padding=4)`` +
    ``RandomHorizontalFlip``, done on uint8 tensors). The random numbers come from ``generator``, or
    with None from torch's global generator: the trainer seeds that one, saves it in every checkpoint
    and DataLoader worker processes get their own seed of it, so a resumed run and a run with workers
    draw the same augmentations as an uninterrupted one.

    ``__getitems__`` serves a whole DataLoader batch with one gather, one crop/flip and one
    normalisation over the batch instead of one per sample.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, indices: Sequence[int] | torch.Tensor,
                 mean: Sequence[float], std: Sequence[float], augment: bool = False, padding: int = 4,
                 generator: torch.Generator | None = None) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be a uint8 (N, C, H, W) tensor, got {images.dtype} "
                             f"{tuple(images.shape)}")
        self.images = images
        self.labels = labels
        self.indices = [int(i) for i in indices]
        self.augment = augment
        self.padding = padding
        self.generator = generator
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(-1, 1, 1)
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(-1, 1, 1)
        self.mean, self.std = mean_t, std_t
        # x / 255 then (x - mean) / std, as one multiply-add per element.
        self._scale = 1.0 / (255.0 * std_t)
        self._shift = -mean_t / std_t

    def __len__(self) -> int:
        return len(self.indices)

    def batch(self, positions: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples ``positions`` (indices into this split) as one (B, C, H, W) float32 batch and labels."""
        rows = torch.tensor([self.indices[p] for p in positions], dtype=torch.long)
        pixels = self.images[rows]
        if self.augment:
            pixels = _crop_and_flip(pixels, self.padding, self.generator)
        return pixels.float().mul_(self._scale).add_(self._shift), self.labels[rows]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a split of {len(self)} samples")
        x, y = self.batch([index])
        return x[0], int(y[0])

    def __getitems__(self, positions: Sequence[int]) -> list[tuple[torch.Tensor, int]]:
        x, y = self.batch(positions)
        return list(zip(x.unbind(0), y.tolist()))


def _crop_and_flip(pixels: torch.Tensor, padding: int, generator: torch.Generator | None) -> torch.Tensor:
    """A random ``H x W`` crop of each zero-padded image of ``pixels`` (B, C, H, W), each mirrored with p=1/2.

    One advanced-indexing gather: row offsets pick the crop, and a mirrored image just reads its crop's
    columns in reverse order.
    """
    batch, channels, height, width = pixels.shape
    padded = torch.nn.functional.pad(pixels, (padding, padding, padding, padding))
    top = torch.randint(0, 2 * padding + 1, (batch, 1), generator=generator)
    left = torch.randint(0, 2 * padding + 1, (batch, 1), generator=generator)
    flip = torch.rand(batch, 1, generator=generator) < 0.5
    rows = top + torch.arange(height)
    cols = left + torch.arange(width)
    cols = torch.where(flip, cols.flip(1), cols)
    return padded[torch.arange(batch).view(-1, 1, 1, 1), torch.arange(channels).view(1, -1, 1, 1),
                  rows.view(batch, 1, height, 1), cols.view(batch, 1, 1, width)]


# Decoded images, per process: IDX sets keyed by their files (path, size, mtime) and the requested
# image_size; image folders keyed by the resolved folder, channels and image size (see _FolderImages).
_IMAGE_CACHE: dict[tuple, Any] = {}


def clear_image_cache() -> None:
    """Forget every image decoded so far (the next load decodes again from disk)."""
    _IMAGE_CACHE.clear()


def _check_image_size(image_size: int | None, name: str) -> None:
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                   or image_size < 1):
        raise UsageError(f"{name} image_size must be a positive whole number of pixels, got {image_size!r}")


def _resize_square(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """Resize uint8 (N, C, H, W) square images to ``size x size`` (bilinear, antialiased), chunk by chunk."""
    if images.shape[-2:] == (size, size):
        return images
    return torch.cat([resize(part, [size, size], antialias=True) for part in images.split(chunk)])


# -- Fashion-MNIST -------------------------------------------------------------------------------

FASHION_MNIST_MEAN, FASHION_MNIST_STD = 0.2860, 0.3530
FASHION_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                       "t10k-labels-idx1-ubyte")


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
    if key not in _IMAGE_CACHE:
        pair = _read_mnist_pair(folder, prefix, what="Fashion-MNIST")
        assert pair is not None  # both files exist
        images, labels = pair
        _IMAGE_CACHE[key] = (_resize_square(images.unsqueeze(1), image_size), labels.long())
    return _IMAGE_CACHE[key]


def _load_fashion_mnist(data_root: Path, seed: int, val_fraction: float, download: bool,
                        limit: int | None, *, image_size: int = 28, augment: bool = False) -> DataBundle:
    _check_image_size(image_size, "fashion_mnist")
    folder = _fashion_mnist_folder(data_root, download)
    train_images, train_labels = _idx_images(folder, "train", image_size)
    test_images, test_labels = _idx_images(folder, "t10k", image_size)
    train, val, test = _train_val_test(len(train_labels), len(test_labels), seed, val_fraction, limit)
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


# -- CIFAR ---------------------------------------------------------------------------------------

class LocalCIFAR10(datasets.CIFAR10):
    """torchvision's CIFAR10, checking that its files exist instead of their md5.

    Loading still goes through torchvision's own pickle reader; a download still checks the
    archive's md5.
    """

    train_list = [[name, None] for name, _ in datasets.CIFAR10.train_list]
    test_list = [[name, None] for name, _ in datasets.CIFAR10.test_list]
    meta = {**datasets.CIFAR10.meta, "md5": None}


class LocalCIFAR100(datasets.CIFAR100):
    """torchvision's CIFAR100, checking that its files exist instead of their md5 (see LocalCIFAR10)."""

    train_list = [[name, None] for name, _ in datasets.CIFAR100.train_list]
    test_list = [[name, None] for name, _ in datasets.CIFAR100.test_list]
    meta = {**datasets.CIFAR100.meta, "md5": None}


_CORRUPT_PICKLE = (pickle.UnpicklingError, EOFError, KeyError, IndexError, ValueError, TypeError,
                   AttributeError)


def _open_cifar(cls: type[datasets.CIFAR10], name: str, root: Path, train: bool,
                download: bool) -> datasets.CIFAR10:
    folder = root / cls.base_folder
    files = [file_name for file_name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    try:
        dataset = cls(str(root), train=train, download=download)
    except RuntimeError as exc:
        missing = [file_name for file_name in files if not (folder / file_name).is_file()]
        raise UsageError(f"{name} not found in {folder}: missing "
                         f"{', '.join(missing)}; pass --download to fetch it or --data-root to point at "
                         f"the folder holding {cls.base_folder}/") from exc
    except _CORRUPT_PICKLE as exc:
        raise UsageError(f"{folder} does not hold valid CIFAR pickles (expected {', '.join(files)}, each a "
                         f"pickled dict with 'data' uint8 [N, 3072] and labels): "
                         f"{type(exc).__name__}: {exc}") from exc
    except OSError as exc:
        raise RunFailure(f"could not {'download' if download else 'read'} {name} in {folder}: {exc}") from exc
    labels = np.asarray(dataset.targets)
    if len(labels) != len(dataset.data) or labels.size == 0 or labels.min() < 0 or \
            labels.max() >= len(dataset.classes):
        raise UsageError(f"{folder}: the {'training' if train else 'test'} files hold {len(dataset.data)} "
                         f"images and {len(labels)} labels, which must match and lie in "
                         f"0..{len(dataset.classes) - 1} (the classes listed in {cls.meta['filename']})")
    return dataset


def _cifar_bundle(cls: type[datasets.CIFAR10], name: str, mean: Sequence[float], std: Sequence[float],
                  data_root: Path, seed: int, val_fraction: float, download: bool,
                  limit: int | None) -> DataBundle:
    train_set = _open_cifar(cls, name, data_root, True, download)
    test_set = _open_cifar(cls, name, data_root, False, download)
    normalize = [transforms.ToTensor(), transforms.Normalize(mean, std)]
    augment = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                  *normalize])
    evaluate = transforms.Compose(normalize)
    train, val, test = _train_val_test(len(train_set), len(test_set), seed, val_fraction, limit)
    return DataBundle(TransformSubset(train_set, train, augment), TransformSubset(train_set, val, evaluate),
                      TransformSubset(test_set, test, evaluate), num_classes=len(train_set.classes),
                      in_channels=3, input_size=(32, 32), name=name,
                      description=f"{name} from {data_root / cls.base_folder}")


def _load_cifar10(data_root: Path, seed: int, val_fraction: float, download: bool,
                  limit: int | None) -> DataBundle:
    return _cifar_bundle(LocalCIFAR10, "cifar10", CIFAR10_MEAN, CIFAR10_STD, data_root, seed,
                         val_fraction, download, limit)


def _load_cifar100(data_root: Path, seed: int, val_fraction: float, download: bool,
                   limit: int | None) -> DataBundle:
    return _cifar_bundle(LocalCIFAR100, "cifar100", CIFAR100_MEAN, CIFAR100_STD, data_root, seed,
                         val_fraction, download, limit)


# -- ImageNet ------------------------------------------------------------------------------------

def _image_folder(folder: Path) -> datasets.ImageFolder:
    try:
        return datasets.ImageFolder(str(folder))
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise UsageError(f"{folder} is not an image-folder tree: expected one sub-folder per class holding "
                         f"image files (e.g. {folder}/n01440764/image.JPEG) ({exc})") from exc


def _load_imagenet(data_root: Path, seed: int, val_fraction: float, download: bool,
                   limit: int | None, *, image_size: int = 224) -> DataBundle:
    if download:
        raise UsageError("ImageNet cannot be downloaded automatically; get it from image-net.org and pass "
                         "--data-root pointing at the folder holding train/ and val/")
    train_set, test_set = _image_folder(data_root / "train"), _image_folder(data_root / "val")
    if train_set.classes != test_set.classes:
        raise UsageError(f"{data_root}: train/ and val/ must hold the same class folders "
                         f"({len(train_set.classes)} vs {len(test_set.classes)} classes)")
    normalize = [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    augment = transforms.Compose([transforms.RandomResizedCrop(image_size), transforms.RandomHorizontalFlip(),
                                  *normalize])
    evaluate = transforms.Compose([transforms.Resize(round(image_size * 256 / 224)),
                                   transforms.CenterCrop(image_size), *normalize])
    train, val, test = _train_val_test(len(train_set), len(test_set), seed, val_fraction, limit)
    return DataBundle(TransformSubset(train_set, train, augment), TransformSubset(train_set, val, evaluate),
                      TransformSubset(test_set, test, evaluate), num_classes=len(train_set.classes),
                      in_channels=3, input_size=(image_size, image_size), name="imagenet",
                      description=f"image-folder dataset from {data_root} (test = val/)")


# -- any image-folder tree (train/ + test/ [+ val/]) --------------------------------------------

#: Stored images no larger than this on either side, in colour, get CIFAR's training augmentation.
SMALL_IMAGE_SIDE = 64
_GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")
# Formats torchvision.io decodes (libjpeg-turbo, libpng, libwebp, giflib): about 3x faster than PIL on
# small JPEGs. Anything else (BMP, TIFF, PPM/PGM, or a file torchvision rejects) goes through PIL.
_TORCHVISION_FORMATS = (".jpg", ".jpeg", ".png", ".webp", ".gif")


def _list_split(folder: Path) -> tuple[list[str], list[str], list[int]]:
    """(classes, image file paths, labels) of one split ``folder/<class>/<image>``, sorted like ImageFolder.

    Paths are strings: building 60,000 Path objects would cost more than the listing itself.
    """
    if not folder.is_dir():
        raise UsageError(f"{folder} is missing: an image-folder dataset holds {folder.parent}/train/"
                         f"<class>/<image> and {folder.parent}/test/<class>/<image> (and optionally "
                         f"val/<class>/...); pass --data-root pointing at the folder that holds train/ and "
                         f"test/")
    classes = sorted(entry.name for entry in os.scandir(folder)
                     if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        raise UsageError(f"{folder} holds no class folders: put each class's images in a sub-folder named "
                         f"after the class, e.g. {folder}/cat/0001.jpg")
    files: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        class_folder = os.path.join(folder, name)
        names = sorted(entry.name for entry in os.scandir(class_folder)
                       if entry.is_file() and not entry.name.startswith(".")
                       and entry.name.lower().endswith(IMG_EXTENSIONS))
        if not names:
            raise UsageError(f"class folder {class_folder} holds no images ({', '.join(IMG_EXTENSIONS)}): "
                             f"add images to it or remove it from every split")
        files.extend(os.path.join(class_folder, file_name) for file_name in names)
        labels.extend([label] * len(names))
    return classes, files, labels


def _check_same_classes(root: Path, reference: list[str], split: str, classes: list[str]) -> None:
    if classes == reference:
        return
    lacking = sorted(set(reference) - set(classes))
    extra = sorted(set(classes) - set(reference))
    parts = ([f"lacks {', '.join(lacking)}"] if lacking else []) + \
            ([f"has extra {', '.join(extra)}"] if extra else [])
    raise UsageError(f"{root}: {split}/ {' and '.join(parts)} compared with train/; every split must hold "
                     f"the same class folders (the class index is the folder's rank), so add or remove "
                     f"class folders until they match")


def _probe(path: str) -> tuple[str, tuple[int, int]]:
    """(PIL mode, (height, width)) of an image, read from its header only."""
    try:
        with Image.open(path) as image:
            return image.mode, (image.height, image.width)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise UsageError(f"{path} is not a readable image ({type(exc).__name__}: {exc}); replace or remove "
                         f"it") from exc


def _decode(path: str, gray: bool) -> torch.Tensor:
    """The image at ``path`` as uint8 (1 or 3, H, W): grayscale if ``gray``, else RGB.

    torchvision.io (deprecated since torchvision 0.29 in favour of TorchCodec, still ~3x faster than
    PIL here) decodes JPEG/PNG/WebP/GIF; PIL decodes the rest, and everything once torchvision drops it.
    """
    if decode_image is not None and path.lower().endswith(_TORCHVISION_FORMATS):
        try:
            with open(path, "rb") as file:
                encoded = torch.frombuffer(bytearray(file.read()), dtype=torch.uint8)
            image = decode_image(encoded, mode=ImageReadMode.GRAY if gray else ImageReadMode.RGB)
            return image[0] if image.dim() == 4 else image  # an animated GIF: its first frame
        except (RuntimeError, ValueError):
            pass  # e.g. an empty, misnamed or unusual file: PIL may still read it, else it says why not
    try:
        with Image.open(path) as image:
            array = np.array(image.convert("L" if gray else "RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise UsageError(f"{path} is not a readable image ({type(exc).__name__}: {exc}); replace or remove "
                         f"it") from exc
    tensor = torch.from_numpy(array)
    return tensor.unsqueeze(0) if gray else tensor.permute(2, 0, 1).contiguous()


class _FolderImages:
    """One split folder's images, decoded on demand into a uint8 (N, C, H, W) tensor and kept.

    Only the images a load asks for are decoded (so a ``limit`` decodes only its subset), each at most
    once per process. With ``image_size`` every image is resized (shorter side to ``image_size``, then
    centre-cropped square); without, every image must already be ``size``.
    """

    def __init__(self, files: list[str], labels: list[int], gray: bool, size: tuple[int, int],
                 image_size: int | None) -> None:
        self.files = files
        self.labels = torch.tensor(labels, dtype=torch.long)
        self.gray = gray
        self.size = size
        self.image_size = image_size
        # torch.empty commits no memory until written: an unused part of a large split costs nothing.
        self.images = torch.empty((len(files), 1 if gray else 3, *size), dtype=torch.uint8)
        self.decoded = torch.zeros(len(files), dtype=torch.bool)
        self._stats: dict[bytes, tuple[list[float], list[float]]] = {}

    def ensure(self, indices: torch.Tensor, reference: str, chunk: int = 1024) -> None:
        """Decode the images ``indices`` not decoded yet (``reference``: the image that fixed the size)."""
        todo = indices[~self.decoded[indices]].unique().tolist()
        for start in range(0, len(todo), chunk):
            part = todo[start:start + chunk]
            # Written one chunk at a time: one indexed copy per chunk instead of one per image, and an
            # unreadable file leaves the images before its chunk decoded. torchvision warns of its codecs'
            # deprecation on every call: once is in the docstring of _decode, not 60,000 times in a log.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torchvision\.io")
                images = [self._decode_one(index, reference) for index in part]
            self.images[part] = torch.stack(images)
            self.decoded[part] = True

    def _decode_one(self, index: int, reference: str) -> torch.Tensor:
        path = self.files[index]
        image = _decode(path, self.gray)
        if tuple(image.shape[1:]) == self.size:
            return image
        if self.image_size is not None:
            return center_crop(resize(image, self.image_size, antialias=True), list(self.size))
        raise UsageError(f"{path} is {image.shape[2]}x{image.shape[1]} pixels but {reference} is "
                         f"{self.size[1]}x{self.size[0]}: images of different sizes need the image_size "
                         f"option (--image-size N) to resize them all to N x N")

    def stats(self, indices: torch.Tensor) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of ``images[indices]`` in [0, 1] (cached per set of indices)."""
        indices = indices.sort().values  # the statistics do not depend on the order: nor does the key
        key = indices.numpy().tobytes()
        if key not in self._stats:
            self._stats[key] = _channel_stats(self.images, indices)
        return self._stats[key]


def _folder_images(folder: Path, files: list[str], labels: list[int], gray: bool, size: tuple[int, int],
                   image_size: int | None) -> _FolderImages:
    key = ("folder", str(folder.resolve()), gray, size, image_size)
    cached = _IMAGE_CACHE.get(key)
    if cached is None or cached.files != files or cached.labels.tolist() != labels:
        cached = _IMAGE_CACHE[key] = _FolderImages(files, labels, gray, size, image_size)
    return cached


def _channel_stats(images: torch.Tensor, indices: torch.Tensor,
                   chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (of pixels scaled to [0, 1]) of ``images[indices]``.

    Exact, from per-channel histograms of the uint8 values (bincount is ~4x faster than float sums).
    """
    channels = images.shape[1]
    histogram = torch.zeros(channels, 256, dtype=torch.int64)
    for part in indices.split(chunk):
        pixels = images[part].transpose(0, 1).reshape(channels, -1)
        for channel in range(channels):
            histogram[channel] += torch.bincount(pixels[channel], minlength=256)
    values = torch.arange(256, dtype=torch.float64) / 255.0
    count = histogram.sum(1).clamp_min(1).to(torch.float64)
    mean = (histogram * values).sum(1) / count
    std = ((histogram * values.square()).sum(1) / count - mean.square()).clamp_min(0).sqrt()
    std[std < 1e-6] = 1.0  # constant channel (e.g. an all-black test set): centre it, do not divide by 0
    return mean.tolist(), std.tolist()


def _load_imagefolder(data_root: Path, seed: int, val_fraction: float, download: bool,
                      limit: int | None, *, image_size: int | None = None,
                      augment: bool | None = None) -> DataBundle:
    """Any ``train/`` + ``test/`` (+ optional ``val/``) tree of ``<class>/<image>`` folders.

    Validation is ``val/`` when there is one (then ``val_fraction`` is unused), else ``val_fraction``
    of ``train/`` drawn with ``seed``. Classes (folder names, indexed in sorted order) must be the same
    in every split; channels (1 for grayscale, else 3) follow the first training image. Images keep
    their own size, which must then be uniform, unless ``image_size`` resizes them. ``augment`` (default:
    for colour images of at most :data:`SMALL_IMAGE_SIDE` pixels a side) applies CIFAR's random crop
    with 4-pixel padding and horizontal flip to the training split only.
    """
    _check_image_size(image_size, "imagefolder")
    if not data_root.is_dir():
        raise UsageError(f"image-folder dataset root {data_root} does not exist"
                         f"{' (an image folder cannot be downloaded)' if download else ''}; pass --data-root "
                         f"pointing at the folder that holds train/<class>/<image> and test/<class>/<image>")
    classes, train_files, train_labels = _list_split(data_root / "train")
    test_classes, test_files, test_labels = _list_split(data_root / "test")
    _check_same_classes(data_root, classes, "test", test_classes)
    has_val = (data_root / "val").is_dir()
    if has_val:
        val_classes, val_files, val_labels = _list_split(data_root / "val")
        _check_same_classes(data_root, classes, "val", val_classes)

    reference = train_files[0]
    mode, native_size = _probe(reference)
    gray = mode in _GRAY_MODES
    size = (image_size, image_size) if image_size is not None else native_size
    train_store = _folder_images(data_root / "train", train_files, train_labels, gray, size, image_size)
    test_store = _folder_images(data_root / "test", test_files, test_labels, gray, size, image_size)
    if has_val:
        val_store = _folder_images(data_root / "val", val_files, val_labels, gray, size, image_size)
        train = _cap(_permutation(len(train_files), seed), limit)
        val = _cap(_permutation(len(val_files), TEST_SPLIT_SEED), limit)
        test = _cap(_permutation(len(test_files), TEST_SPLIT_SEED), limit)
        val_source = "val/"
    else:
        val_store = train_store
        train, val, test = _train_val_test(len(train_files), len(test_files), seed, val_fraction, limit)
        val_source = f"{val_fraction:.3g} of train/ (seed {seed})"
    # Decode only what the splits use: with a limit, only the limited subsets.
    train_store.ensure(torch.cat([train, val]) if val_store is train_store else train, reference)
    if val_store is not train_store:
        val_store.ensure(val, reference)
    test_store.ensure(test, reference)

    # Normalisation from the training images' own pixels rather than CIFAR-10's published constants even
    # when the classes are CIFAR-10's: a re-encoded copy (such as the JPEG one) has slightly different
    # statistics (std ~0.245, not 0.247), other data sets share CIFAR-10's class names (CINIC-10) with
    # other statistics, and a name test would silently misnormalise any other data set. Like CIFAR-10's
    # constants (computed over all 50,000 training images) they cover the whole of train/ - the
    # training split and the validation samples held out of it - so without a limit they do not depend
    # on the seed; with a limit they come from the decoded subset (decoding more would defeat the limit).
    mean, std = train_store.stats(torch.cat([train, val]) if val_store is train_store else train)
    channels = 1 if gray else 3
    if augment is None:
        augment = channels == 3 and max(size) <= SMALL_IMAGE_SIDE
    splits = (ImageTensorDataset(train_store.images, train_store.labels, train, mean, std, augment=augment),
              ImageTensorDataset(val_store.images, val_store.labels, val, mean, std),
              ImageTensorDataset(test_store.images, test_store.labels, test, mean, std))
    resized = f", resized to {image_size}x{image_size}" if image_size is not None else ""
    augmented = "; training augmentation: crop (4-pixel padding) + flip" if augment else ""
    return DataBundle(*splits, num_classes=len(classes), in_channels=channels, input_size=size,
                      name="imagefolder",
                      description=f"image folder {data_root}: {len(classes)} classes, {channels}x{size[0]}x"
                                  f"{size[1]}{resized}; train from train/, validation {val_source}, test "
                                  f"from test/{augmented}")


DATASETS: dict[str, Callable[..., DataBundle]] = {
    "digits": _load_digits,
    "mnist": _load_mnist,
    "cifar10": _load_cifar10,
    "cifar100": _load_cifar100,
    "imagenet": _load_imagenet,
    "fashion_mnist": _load_fashion_mnist,
    "imagefolder": _load_imagefolder,
}


def load_dataset(name: str, data_root: str | Path | None = None, seed: int = 0, val_fraction: float = 0.1,
                 download: bool = False, limit: int | None = None, **options: Any) -> DataBundle:
    """Load dataset ``name`` (one of :data:`DATASETS`) with deterministic splits (see module docstring).

    ``data_root`` defaults to :data:`DEFAULT_DATA_ROOT` (``digits`` needs none). ``options`` are
    dataset-specific: ``digits`` takes ``image_size`` (default 8), ``imagenet`` ``image_size`` (default
    224), ``fashion_mnist`` ``image_size`` (default 28) and ``augment`` (default False), ``imagefolder``
    ``image_size`` (default: the images' own, uniform size) and ``augment`` (default: for small colour
    images). Any unknown name, bad argument or folder in the wrong format raises
    :class:`~odimo_moo.errors.UsageError`.
    """
    if name not in DATASETS:
        raise UsageError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    if not 0.0 <= val_fraction < 1.0:
        raise UsageError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if limit is not None and limit < 1:
        raise UsageError(f"limit must be a positive number of samples per split, got {limit}")
    loader = DATASETS[name]
    accepted = [param.name for param in inspect.signature(loader).parameters.values()
                if param.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise UsageError(f"dataset {name!r} takes no option(s) {', '.join(unknown)}; "
                         f"its options: {', '.join(accepted) or 'none'}")
    root = Path(data_root).expanduser() if data_root is not None else DEFAULT_DATA_ROOT
    return loader(root, seed, val_fraction, download, limit, **options)


def make_loaders(bundle: DataBundle, batch_size: int, num_workers: int = 0,
                 seed: int = 0) -> tuple[DataLoader, DataLoader, DataLoader]:
    """(train, val, test) loaders; only the training loader shuffles, with a generator seeded by ``seed``."""
    if batch_size < 1:
        raise UsageError(f"batch_size must be a positive integer, got {batch_size}")
    generator = torch.Generator().manual_seed(seed)
    train = DataLoader(bundle.train, batch_size, shuffle=True, num_workers=num_workers, generator=generator)
    val = DataLoader(bundle.val, batch_size, shuffle=False, num_workers=num_workers)
    test = DataLoader(bundle.test, batch_size, shuffle=False, num_workers=num_workers)
    return train, val, test
