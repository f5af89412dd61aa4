"""The split rules every dataset shares, and the bundle of splits a loader returns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch.utils.data import Dataset

DEFAULT_DATA_ROOT = Path.home() / ".cache" / "odimo-moo" / "data"
TEST_SPLIT_SEED = 0
TEST_FRACTION = 0.15


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


def permutation(n: int, seed: int) -> torch.Tensor:
    """A random order of ``range(n)`` drawn with ``seed`` alone (independent of torch's global generator)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def _hold_out(indices: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffle ``indices`` with ``seed``; return (rest, held out ``fraction`` of them)."""
    shuffled = indices[permutation(len(indices), seed)]
    held = int(round(len(indices) * fraction))
    return shuffled[held:], shuffled[:held]


def cap(indices: torch.Tensor, limit: int | None) -> torch.Tensor:
    """The first ``limit`` of ``indices`` (all of them with None)."""
    return indices if limit is None else indices[:limit]


def train_val_test(n_train: int, n_test: int | None, seed: int, val_fraction: float,
                   limit: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Index splits of a training pool of ``n_train`` samples and an official test set of ``n_test``.

    With ``n_test`` None there is no official test set: the test split is held out of the pool.
    """
    pool = torch.arange(n_train)
    if n_test is None:
        pool, test = _hold_out(pool, TEST_FRACTION, TEST_SPLIT_SEED)
    else:
        test = permutation(n_test, TEST_SPLIT_SEED)
    train, val = _hold_out(pool, val_fraction, seed)
    return cap(train, limit), cap(val, limit), cap(test, limit)
