"""Image-folder datasets: ImageNet (``train/`` + ``val/``) and any ``train/`` + ``test/`` (+ ``val/``) tree."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision import datasets, transforms

from ..errors import UsageError
from .image_files import GRAY_MODES, check_same_classes, folder_images, list_split, probe
from .memory_images import ImageTensorDataset, check_image_size
from .splits import TEST_SPLIT_SEED, DataBundle, TransformSubset, cap, permutation, train_val_test

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
#: Stored images no larger than this on either side, in colour, get CIFAR's training augmentation.
SMALL_IMAGE_SIDE = 64


def _image_folder(folder: Path) -> datasets.ImageFolder:
    try:
        return datasets.ImageFolder(str(folder))
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise UsageError(f"{folder} is not an image-folder tree: expected one sub-folder per class holding "
                         f"image files (e.g. {folder}/n01440764/image.JPEG) ({exc})") from exc


def load_imagenet(data_root: Path, seed: int, val_fraction: float, download: bool,
                  limit: int | None, *, image_size: int = 224) -> DataBundle:
    """ImageNet as ``train/`` + ``val/`` class folders (``val/`` is the test split), random resized crops
    for training and a centre crop of ``image_size`` for evaluation."""
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
    train, val, test = train_val_test(len(train_set), len(test_set), seed, val_fraction, limit)
    return DataBundle(TransformSubset(train_set, train, augment), TransformSubset(train_set, val, evaluate),
                      TransformSubset(test_set, test, evaluate), num_classes=len(train_set.classes),
                      in_channels=3, input_size=(image_size, image_size), name="imagenet",
                      description=f"image-folder dataset from {data_root} (test = val/)")


def _list_tree(data_root: Path, download: bool) -> tuple[list[str], dict[str, tuple[list[str], list[int]]]]:
    """The classes and, per split folder present (train, test, val), its image files and labels."""
    if not data_root.is_dir():
        raise UsageError(f"image-folder dataset root {data_root} does not exist"
                         f"{' (an image folder cannot be downloaded)' if download else ''}; pass --data-root "
                         f"pointing at the folder that holds train/<class>/<image> and test/<class>/<image>")
    classes, files, labels = list_split(data_root / "train")
    listing = {"train": (files, labels)}
    for split in ("test", "val"):
        if split == "test" or (data_root / split).is_dir():
            split_classes, files, labels = list_split(data_root / split)
            check_same_classes(data_root, classes, split, split_classes)
            listing[split] = (files, labels)
    return classes, listing


def _indices(listing: dict[str, tuple[list[str], list[int]]], seed: int, val_fraction: float,
             limit: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]:
    """(train, val, test) indices into their folders, and where validation comes from."""
    sizes = {split: len(files) for split, (files, _) in listing.items()}
    if "val" in listing:
        return (cap(permutation(sizes["train"], seed), limit), cap(permutation(sizes["val"], TEST_SPLIT_SEED), limit),
                cap(permutation(sizes["test"], TEST_SPLIT_SEED), limit), "val/")
    train, val, test = train_val_test(sizes["train"], sizes["test"], seed, val_fraction, limit)
    return train, val, test, f"{val_fraction:.3g} of train/ (seed {seed})"


def load_imagefolder(data_root: Path, seed: int, val_fraction: float, download: bool,
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
    check_image_size(image_size, "imagefolder")
    classes, listing = _list_tree(data_root, download)
    reference = listing["train"][0][0]
    mode, native_size = probe(reference)
    gray = mode in GRAY_MODES
    size = (image_size, image_size) if image_size is not None else native_size
    stores = {split: folder_images(data_root / split, files, labels, gray, size, image_size)
              for split, (files, labels) in listing.items()}
    train, val, test, val_source = _indices(listing, seed, val_fraction, limit)
    # Decode only what the splits use: with a limit, only the limited subsets.
    pool = train if "val" in stores else torch.cat([train, val])
    stores["train"].ensure(pool, reference)
    if "val" in stores:
        stores["val"].ensure(val, reference)
    stores["test"].ensure(test, reference)
    # Normalisation from the training images' own pixels rather than CIFAR-10's published constants even
    # when the classes are CIFAR-10's: a re-encoded copy (such as the JPEG one) has slightly different
    # statistics (std ~0.245, not 0.247), other data sets share CIFAR-10's class names (CINIC-10) with
    # other statistics, and a name test would silently misnormalise any other data set. Like CIFAR-10's
    # constants (computed over all 50,000 training images) they cover the whole of train/ - the
    # training split and the validation samples held out of it - so without a limit they do not depend
    # on the seed; with a limit they come from the decoded subset (decoding more would defeat the limit).
    mean, std = stores["train"].stats(pool)
    channels = 1 if gray else 3
    if augment is None:
        augment = channels == 3 and max(size) <= SMALL_IMAGE_SIDE
    val_store = stores.get("val", stores["train"])
    splits = (ImageTensorDataset(stores["train"].images, stores["train"].labels, train, mean, std, augment=augment),
              ImageTensorDataset(val_store.images, val_store.labels, val, mean, std),
              ImageTensorDataset(stores["test"].images, stores["test"].labels, test, mean, std))
    resized = f", resized to {image_size}x{image_size}" if image_size is not None else ""
    augmented = "; training augmentation: crop (4-pixel padding) + flip" if augment else ""
    return DataBundle(*splits, num_classes=len(classes), in_channels=channels, input_size=size,
                      name="imagefolder",
                      description=f"image folder {data_root}: {len(classes)} classes, {channels}x{size[0]}x"
                                  f"{size[1]}{resized}; train from train/, validation {val_source}, test "
                                  f"from test/{augmented}")
