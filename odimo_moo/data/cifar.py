"""CIFAR-10 and CIFAR-100 through torchvision's readers, with errors that say what is wrong."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Sequence

import numpy as np
from torchvision import datasets, transforms

from ..errors import RunFailure, UsageError
from .splits import DataBundle, TransformSubset, train_val_test

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


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
    train, val, test = train_val_test(len(train_set), len(test_set), seed, val_fraction, limit)
    return DataBundle(TransformSubset(train_set, train, augment), TransformSubset(train_set, val, evaluate),
                      TransformSubset(test_set, test, evaluate), num_classes=len(train_set.classes),
                      in_channels=3, input_size=(32, 32), name=name,
                      description=f"{name} from {data_root / cls.base_folder}")


def load_cifar10(data_root: Path, seed: int, val_fraction: float, download: bool,
                 limit: int | None) -> DataBundle:
    """CIFAR-10 from ``data_root/cifar-10-batches-py`` (official test set; training crop + flip)."""
    return _cifar_bundle(LocalCIFAR10, "cifar10", CIFAR10_MEAN, CIFAR10_STD, data_root, seed,
                         val_fraction, download, limit)


def load_cifar100(data_root: Path, seed: int, val_fraction: float, download: bool,
                  limit: int | None) -> DataBundle:
    """CIFAR-100 from ``data_root/cifar-100-python`` (official test set; training crop + flip)."""
    return _cifar_bundle(LocalCIFAR100, "cifar100", CIFAR100_MEAN, CIFAR100_STD, data_root, seed,
                         val_fraction, download, limit)
