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

import inspect
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader

from ..errors import UsageError
from .cifar import load_cifar10, load_cifar100
from .digits import load_digits
from .idx import load_fashion_mnist, load_mnist
from .image_folder import load_imagefolder, load_imagenet
from .memory_images import ImageTensorDataset, clear_image_cache
from .splits import DEFAULT_DATA_ROOT, TEST_FRACTION, TEST_SPLIT_SEED, DataBundle, TransformSubset

__all__ = ["DATASETS", "DEFAULT_DATA_ROOT", "TEST_FRACTION", "TEST_SPLIT_SEED", "DataBundle", "ImageTensorDataset",
           "TransformSubset", "clear_image_cache", "load_dataset", "make_loaders"]

DATASETS: dict[str, Callable[..., DataBundle]] = {
    "digits": load_digits,
    "mnist": load_mnist,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "imagenet": load_imagenet,
    "fashion_mnist": load_fashion_mnist,
    "imagefolder": load_imagefolder,
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
