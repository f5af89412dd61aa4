"""Images decoded once per process into uint8 tensors, normalised and augmented batch by batch."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch.utils.data import Dataset
from torchvision.transforms.functional import resize

from ..errors import UsageError


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
# image_size; image folders keyed by the resolved folder, channels and image size (see FolderImages).
IMAGE_CACHE: dict[tuple, Any] = {}


def clear_image_cache() -> None:
    """Forget every image decoded so far (the next load decodes again from disk)."""
    IMAGE_CACHE.clear()


def check_image_size(image_size: int | None, name: str) -> None:
    """A UsageError naming dataset ``name`` unless ``image_size`` is None or a positive integer."""
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                   or image_size < 1):
        raise UsageError(f"{name} image_size must be a positive whole number of pixels, got {image_size!r}")


def resize_square(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """Resize uint8 (N, C, H, W) square images to ``size x size`` (bilinear, antialiased), chunk by chunk."""
    if images.shape[-2:] == (size, size):
        return images
    return torch.cat([resize(part, [size, size], antialias=True) for part in images.split(chunk)])


def channel_stats(images: torch.Tensor, indices: torch.Tensor,
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
