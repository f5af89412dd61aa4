"""Listing, probing and decoding the files of an image-folder split (``<class>/<image>``)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS
try:  # torchvision deprecated its image codecs in 0.29 (superseded by TorchCodec); PIL is the fallback
    from torchvision.io import ImageReadMode, decode_image
except ImportError:  # pragma: no cover - a torchvision without them
    ImageReadMode = decode_image = None  # type: ignore[assignment,misc]
from torchvision.transforms.functional import center_crop, resize

from ..errors import UsageError
from .memory_images import IMAGE_CACHE, channel_stats

GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")
# Formats torchvision.io decodes (libjpeg-turbo, libpng, libwebp, giflib): about 3x faster than PIL on
# small JPEGs. Anything else (BMP, TIFF, PPM/PGM, or a file torchvision rejects) goes through PIL.
_TORCHVISION_FORMATS = (".jpg", ".jpeg", ".png", ".webp", ".gif")


def list_split(folder: Path) -> tuple[list[str], list[str], list[int]]:
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


def check_same_classes(root: Path, reference: list[str], split: str, classes: list[str]) -> None:
    if classes == reference:
        return
    lacking = sorted(set(reference) - set(classes))
    extra = sorted(set(classes) - set(reference))
    parts = ([f"lacks {', '.join(lacking)}"] if lacking else []) + \
            ([f"has extra {', '.join(extra)}"] if extra else [])
    raise UsageError(f"{root}: {split}/ {' and '.join(parts)} compared with train/; every split must hold "
                     f"the same class folders (the class index is the folder's rank), so add or remove "
                     f"class folders until they match")


def probe(path: str) -> tuple[str, tuple[int, int]]:
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


class FolderImages:
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
            self._stats[key] = channel_stats(self.images, indices)
        return self._stats[key]


def folder_images(folder: Path, files: list[str], labels: list[int], gray: bool, size: tuple[int, int],
                  image_size: int | None) -> FolderImages:
    """The process's :class:`FolderImages` of ``folder`` for these files, channels and size (new if the
    folder's files changed since)."""
    key = ("folder", str(folder.resolve()), gray, size, image_size)
    cached = IMAGE_CACHE.get(key)
    if cached is None or cached.files != files or cached.labels.tolist() != labels:
        cached = IMAGE_CACHE[key] = FolderImages(files, labels, gray, size, image_size)
    return cached
