"""Datasets with deterministic train/validation/test splits, and their data loaders.

Split rules, shared by every dataset:

- the test split is the dataset's official test set, or, where there is none (``digits``, MNIST
  given only its t10k files), a held-out :data:`TEST_FRACTION` drawn with the fixed
  :data:`TEST_SPLIT_SEED`: it never depends on the run's ``seed``, so runs with different seeds are
  scored on the same samples;
- the validation split is ``val_fraction`` of the remaining training data, drawn with ``seed``;
- ``limit`` keeps at most that many samples of each split (a fixed random subset, not the first
  samples, so class balance survives sorted layouts such as ImageFolder's).
"""

from __future__ import annotations

import gzip
import inspect
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torchvision import datasets, transforms
from torchvision.datasets.mnist import read_image_file, read_label_file

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


def _read_idx(path: Path, reader: Callable[[str], torch.Tensor]) -> torch.Tensor:
    """Read an IDX file (plain or gzip) with torchvision's reader."""
    try:
        if path.suffix != ".gz":
            return reader(str(path))
        with tempfile.TemporaryDirectory() as tmp:
            plain = Path(tmp) / path.stem
            with gzip.open(path, "rb") as source:
                plain.write_bytes(source.read())
            return reader(str(plain))
    except (OSError, EOFError, AssertionError, KeyError, ValueError, RuntimeError) as exc:
        raise UsageError(f"{path} is not a valid MNIST IDX file ({type(exc).__name__}: {exc})") from exc


def _read_mnist_pair(folder: Path, prefix: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    image_path = _find_idx(folder, f"{prefix}-images-idx3-ubyte")
    label_path = _find_idx(folder, f"{prefix}-labels-idx1-ubyte")
    if image_path is None and label_path is None:
        return None
    if image_path is None or label_path is None:
        missing = f"{prefix}-{'images-idx3' if image_path is None else 'labels-idx1'}-ubyte[.gz]"
        raise UsageError(f"MNIST folder {folder} has only half of the {prefix} split: {missing} is missing")
    images, labels = _read_idx(image_path, read_image_file), _read_idx(label_path, read_label_file)
    if len(images) != len(labels):
        raise UsageError(f"MNIST folder {folder}: {image_path.name} holds {len(images)} images but "
                         f"{label_path.name} holds {len(labels)} labels")
    if len(labels) == 0 or int(labels.min()) < 0 or int(labels.max()) > 9:
        raise UsageError(f"MNIST folder {folder}: {label_path.name} must hold digit labels 0..9")
    return images, labels


def _mnist_folder(data_root: Path, download: bool) -> Path:
    """The folder holding the IDX files: ``data_root`` itself or torchvision's ``data_root/MNIST/raw``."""
    candidates = (data_root, data_root / "MNIST" / "raw")
    for folder in candidates:
        if _find_idx(folder, "t10k-images-idx3-ubyte") is not None:
            return folder
    if download:
        try:
            datasets.MNIST(str(data_root), download=True)
        except (RuntimeError, OSError) as exc:
            raise RunFailure(f"could not download MNIST into {candidates[1]}: {exc}") from exc
        return candidates[1]
    raise UsageError(f"no MNIST IDX files found in {' or '.join(str(c) for c in candidates)}; expected "
                     f"t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz] (and optionally the "
                     f"train-* pair); pass --data-root to point at them or --download to fetch MNIST")


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


DATASETS: dict[str, Callable[..., DataBundle]] = {
    "digits": _load_digits,
    "mnist": _load_mnist,
    "cifar10": _load_cifar10,
    "cifar100": _load_cifar100,
    "imagenet": _load_imagenet,
}


def load_dataset(name: str, data_root: str | Path | None = None, seed: int = 0, val_fraction: float = 0.1,
                 download: bool = False, limit: int | None = None, **options: Any) -> DataBundle:
    """Load dataset ``name`` (one of :data:`DATASETS`) with deterministic splits (see module docstring).

    ``data_root`` defaults to :data:`DEFAULT_DATA_ROOT` (``digits`` needs none). ``options`` are
    dataset-specific: ``imagenet`` takes ``image_size`` (default 224). Any unknown name, bad
    argument or folder in the wrong format raises :class:`~odimo_moo.errors.UsageError`.
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
