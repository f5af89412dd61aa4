"""scikit-learn's embedded 8x8 handwritten digits (no download)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from ..errors import UsageError
from .splits import DataBundle, TransformSubset, cap, train_val_test


def load_digits(data_root: Path, seed: int, val_fraction: float, download: bool,
                limit: int | None, *, image_size: int = 8) -> DataBundle:
    """The digits at ``image_size`` pixels a side (bilinear upsampling above the native 8), normalised
    with the training split's mean and std; the test split is held out (there is no official one)."""
    from sklearn.datasets import load_digits as sklearn_digits

    if image_size < 8:
        raise UsageError(f"digits image_size must be >= 8 (the native size), got {image_size}")
    digits = sklearn_digits()
    images = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    if image_size != 8:
        # Bilinear upsampling gives SoC cost models realistic feature-map sizes on the embedded data.
        images = torch.nn.functional.interpolate(images, size=(image_size, image_size), mode="bilinear",
                                                 align_corners=False)
    labels = torch.tensor(digits.target, dtype=torch.long)
    train, val, test = train_val_test(len(labels), None, seed, val_fraction, None)
    mean, std = images[train].mean(), images[train].std()
    base = TensorDataset((images - mean) / std, labels)
    train_set, val_set, test_set = (TransformSubset(base, cap(split, limit)) for split in (train, val, test))
    return DataBundle(train_set, val_set, test_set, num_classes=10, in_channels=1,
                      input_size=(image_size, image_size), name="digits",
                      description=f"scikit-learn's bundled 8x8 handwritten digits (1,797 images) at "
                                  f"{image_size}x{image_size}")
