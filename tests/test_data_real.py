"""fashion_mnist and imagefolder: files the tests write (IDX, PNG/JPEG trees), and the shared real copies.

The shared copies (``../shared/data`` from the repository root) are optional: their tests skip when
the folders are absent.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from odimo_moo.data import image_files
from odimo_moo.data import (DataBundle, ImageTensorDataset, clear_image_cache, load_dataset, make_loaders)
from odimo_moo.errors import UsageError
from test_data import write_idx

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FASHION = SHARED / "fashion-mnist"
CIFAR_JPEG = SHARED / "cifar10-jpeg"
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_image_cache()
    yield
    clear_image_cache()


@pytest.fixture
def decode_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every image file the image-folder loader decodes, in order."""
    calls: list[str] = []
    original = image_files._decode

    def counting(path: str, gray: bool) -> torch.Tensor:
        calls.append(path)
        return original(path, gray)

    monkeypatch.setattr(image_files, "_decode", counting)
    return calls


def _indices(bundle: DataBundle) -> tuple[set[int], set[int], set[int]]:
    return set(bundle.train.indices), set(bundle.val.indices), set(bundle.test.indices)


def _stack(split, count: int | None = None) -> torch.Tensor:
    return torch.stack([split[i][0] for i in range(len(split) if count is None else count)])


# -- Fashion-MNIST from IDX files the test writes -----------------------------------------------

def _write_fashion(folder: Path, compress: bool = True, train: int = 40, test: int = 10) -> np.ndarray:
    rng = np.random.default_rng(0)
    test_images = rng.integers(0, 256, (test, 28, 28))
    write_idx(folder, "train", rng.integers(0, 256, (train, 28, 28)), np.arange(train) % 10, compress)
    write_idx(folder, "t10k", test_images, np.arange(test) % 10, compress)
    return test_images


@pytest.mark.parametrize("compress", [False, True])
def test_fashion_mnist_official_split_and_normalisation(tmp_path: Path, compress: bool) -> None:
    test_images = _write_fashion(tmp_path, compress)
    bundle = load_dataset("fashion_mnist", tmp_path, val_fraction=0.25)
    assert (bundle.num_classes, bundle.in_channels, bundle.input_size) == (10, 1, (28, 28))
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (30, 10, 10)
    train, val, test = _indices(bundle)
    assert not train & val and train | val == set(range(40))
    assert bundle.train.images is bundle.val.images is not bundle.test.images
    x, y = bundle.test[0]
    raw = torch.tensor(test_images[bundle.test.indices[0]], dtype=torch.float32) / 255
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and y == bundle.test.indices[0] % 10
    assert torch.allclose(x[0], (raw - FASHION_MEAN) / FASHION_STD, atol=1e-5)
    assert sorted(bundle.test[i][1] for i in range(10)) == list(range(10))
    assert "test = the 10 t10k images" in bundle.description


def test_fashion_mnist_torchvision_layout_and_image_size(tmp_path: Path) -> None:
    _write_fashion(tmp_path / "FashionMNIST" / "raw", compress=False)
    bundle = load_dataset("fashion_mnist", tmp_path, image_size=32, limit=5)
    assert bundle.input_size == (32, 32) and bundle.train[0][0].shape == (1, 32, 32)
    assert [len(bundle.train), len(bundle.val), len(bundle.test)] == [5, 4, 5]
    assert str(tmp_path / "FashionMNIST" / "raw") in bundle.description
    x, _ = next(iter(make_loaders(bundle, 4)[2]))
    assert x.shape == (4, 1, 32, 32)


def test_fashion_mnist_seed_rules_and_decoded_once(tmp_path: Path) -> None:
    _write_fashion(tmp_path, train=100)
    first, again, other = (load_dataset("fashion_mnist", tmp_path, seed=s, val_fraction=0.2)
                           for s in (3, 3, 4))
    assert first.train.indices == again.train.indices and first.val.indices == again.val.indices
    assert set(first.val.indices) != set(other.val.indices)
    assert first.test.indices == other.test.indices  # the official test set never depends on the seed
    assert first.train.images is other.train.images  # read from disk once per process
    # Unaugmented by default: reading a training sample twice gives the same tensor.
    assert torch.equal(first.train[0][0], first.train[0][0])


def test_fashion_mnist_missing_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=rf"no Fashion-MNIST IDX files found in {tmp_path}.*"
                                         r"train-images-idx3-ubyte\[\.gz\].*t10k-labels-idx1-ubyte.*"
                                         r"--download"):
        load_dataset("fashion_mnist", tmp_path)
    rng = np.random.default_rng(0)
    write_idx(tmp_path, "t10k", rng.integers(0, 256, (10, 28, 28)), np.arange(10), compress=True)
    with pytest.raises(UsageError, match=rf"{tmp_path} lacks train-images-idx3-ubyte\[\.gz\] and "
                                         r"train-labels-idx1-ubyte\[\.gz\]"):
        load_dataset("fashion_mnist", tmp_path)
    write_idx(tmp_path, "train", rng.integers(0, 256, (20, 28, 28)), np.arange(20) % 10, compress=True)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(UsageError, match="not a valid Fashion-MNIST IDX file"):
        load_dataset("fashion_mnist", tmp_path)
    with pytest.raises(UsageError, match="image_size must be a positive"):
        load_dataset("fashion_mnist", tmp_path, image_size=0)


def _damage_gzip_body(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    for i in range(20, min(len(raw) - 8, 60)):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


def _rewrite_header(path: Path, offset: int, value: bytes) -> None:
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[offset:offset + len(value)] = value
    path.write_bytes(gzip.compress(bytes(raw)))


@pytest.mark.parametrize("damage, reason", [
    (_damage_gzip_body, "its gzip data is damaged"),
    (lambda path: _rewrite_header(path, 2, b"\x09"), "TypeError: x should be of dtype torch.uint8"),  # type byte
    (lambda path: _rewrite_header(path, 0, b"\x12\x34"), "its header is not an IDX header"),  # magic
])
def test_damaged_idx_files_are_one_line_usage_errors(tmp_path: Path, damage, reason: str) -> None:
    _write_fashion(tmp_path, compress=True)
    damage(tmp_path / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(UsageError) as error:
        load_dataset("fashion_mnist", tmp_path)
    message = str(error.value)
    assert "t10k-labels-idx1-ubyte.gz is not a valid Fashion-MNIST IDX file" in message and reason in message
    assert message.endswith("replace it with the original release file") and "\n" not in message


# -- imagefolder trees the test writes ---------------------------------------------------------

CLASSES = ["cat", "dog", "eel"]


def _write_tree(root: Path, split: str, classes: list[str] = CLASSES, per_class: int = 4,
                size: tuple[int, int] = (32, 32), suffix: str = "png", mode: str = "RGB",
                seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for name in classes:
        (root / split / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(
                root / split / name / f"{i:03d}.{suffix}")


def test_imagefolder_holds_out_validation_from_train(tmp_path: Path) -> None:
    _write_tree(tmp_path, "train", per_class=6)
    _write_tree(tmp_path, "test", per_class=2, suffix="jpg", seed=1)
    bundle = load_dataset("imagefolder", tmp_path, val_fraction=1 / 3)
    assert (bundle.num_classes, bundle.in_channels, bundle.input_size) == (3, 3, (32, 32))
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (12, 6, 6)
    train, val, test = _indices(bundle)
    assert not train & val and train | val == set(range(18)) and test == set(range(6))
    assert bundle.train.images is bundle.val.images is not bundle.test.images
    # Labels are the class folders' rank in sorted order, as in torchvision's ImageFolder.
    assert {bundle.test[i][1] for i in range(6)} == {0, 1, 2}
    assert all(bundle.test[i][1] == bundle.test.indices[i] // 2 for i in range(6))
    assert "validation 0.333 of train/" in bundle.description
    # Without a limit the normalisation covers all of train/, so a test sample reads the same at any seed.
    assert torch.equal(load_dataset("imagefolder", tmp_path, seed=5, val_fraction=1 / 3).test[0][0],
                       bundle.test[0][0])


def test_imagefolder_uses_val_folder_when_present(tmp_path: Path) -> None:
    _write_tree(tmp_path, "train", per_class=4)
    _write_tree(tmp_path, "val", per_class=1, seed=2)
    _write_tree(tmp_path, "test", per_class=2, seed=1)
    first, other = (load_dataset("imagefolder", tmp_path, seed=s, val_fraction=0.5) for s in (0, 1))
    assert (len(first.train), len(first.val), len(first.test)) == (12, 3, 6)  # val_fraction unused
    assert first.val.images is not first.train.images and "validation val/" in first.description
    assert set(first.val.indices) == {0, 1, 2} and first.val.indices == other.val.indices
    assert first.test.indices == other.test.indices and first.train.indices != other.train.indices


def test_imagefolder_seed_rules_and_limit(tmp_path: Path) -> None:
    _write_tree(tmp_path, "train", per_class=10)
    _write_tree(tmp_path, "test", per_class=4, seed=1)
    first, again, other = (load_dataset("imagefolder", tmp_path, seed=s, limit=5) for s in (7, 7, 8))
    assert [len(first.train), len(first.val), len(first.test)] == [5, 3, 5]
    assert first.train.indices == again.train.indices and first.val.indices == again.val.indices
    assert set(first.val.indices) != set(other.val.indices)
    assert first.test.indices == other.test.indices  # the test split never depends on the seed
    assert torch.equal(first.test.images[first.test.indices], other.test.images[other.test.indices])
    # The limited test split is a random subset, not the first (all-"cat") images.
    assert len({first.test[i][1] for i in range(5)}) > 1


def test_imagefolder_limit_decodes_only_the_selected_images_once(tmp_path: Path,
                                                                 decode_calls: list[str]) -> None:
    _write_tree(tmp_path, "train", per_class=20)
    _write_tree(tmp_path, "test", per_class=10, seed=1)
    bundle = load_dataset("imagefolder", tmp_path, limit=4)
    assert len(decode_calls) == 12 == len(set(decode_calls))  # 4 train + 4 val + 4 test, of 90 files
    load_dataset("imagefolder", tmp_path, limit=4)
    assert len(decode_calls) == 12  # cached: nothing decoded again
    load_dataset("imagefolder", tmp_path)
    assert len(decode_calls) == 90 == len(set(decode_calls))  # the rest, each image once
    assert bundle.train.images is load_dataset("imagefolder", tmp_path).train.images


def test_imagefolder_augments_train_only(tmp_path: Path) -> None:
    _write_tree(tmp_path, "train", per_class=6)
    _write_tree(tmp_path, "test", per_class=2, seed=1)
    bundle = load_dataset("imagefolder", tmp_path, val_fraction=0.5)
    plain = load_dataset("imagefolder", tmp_path, val_fraction=0.5, augment=False)
    assert bundle.train.augment and not plain.train.augment
    assert not bundle.val.augment and not bundle.test.augment
    # Validation and test reads are the plain normalised image, every time.
    for split in (bundle.val, bundle.test):
        image = split.images[split.indices[0]].float() / 255
        expected = (image - split.mean) / split.std
        assert torch.allclose(split[0][0], expected, atol=1e-5) and torch.equal(split[0][0], split[0][0])
    # A training read is a crop of the 4-pixel zero-padded image, possibly mirrored.
    padded = torch.nn.functional.pad(bundle.train.images[bundle.train.indices[0]], (4, 4, 4, 4))
    candidates = [padded[:, top:top + 32, left:left + 32] for top in range(9) for left in range(9)]
    candidates += [c.flip(-1) for c in candidates]
    torch.manual_seed(0)
    reads = [bundle.train[0][0] for _ in range(12)]
    for x in reads:
        raw = torch.round((x * bundle.train.std + bundle.train.mean) * 255).to(torch.uint8)
        assert any(torch.equal(raw, c) for c in candidates)
    assert any(not torch.equal(reads[0], x) for x in reads[1:])
    torch.manual_seed(0)
    assert torch.equal(bundle.train[0][0], reads[0])  # torch's global seed reproduces the augmentation
    # Normalisation: per-channel statistics of the images of train/ (training split + held-out validation).
    stacked = torch.cat([_stack(plain.train), _stack(plain.val)])
    assert torch.allclose(stacked.mean((0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(stacked.std((0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)


def test_imagefolder_batched_reads_match_single_reads(tmp_path: Path) -> None:
    _write_tree(tmp_path, "train", per_class=6)
    _write_tree(tmp_path, "test", per_class=3, seed=1)
    bundle = load_dataset("imagefolder", tmp_path)
    x, y = next(iter(make_loaders(bundle, 5)[2]))
    assert x.shape == (5, 3, 32, 32) and y.dtype == torch.long
    assert torch.equal(x, _stack(bundle.test, 5))
    assert y.tolist() == [bundle.test[i][1] for i in range(5)]
    torch.manual_seed(1)
    first = [y for _, y in make_loaders(bundle, 4, seed=1)[0]]
    torch.manual_seed(1)
    again = [(x, y) for x, y in make_loaders(bundle, 4, seed=1)[0]]
    assert all(torch.equal(a, b) for a, (_, b) in zip(first, again)) and again[0][0].shape == (4, 3, 32, 32)


def test_imagefolder_grayscale_jpeg_has_one_channel_and_no_augmentation(tmp_path: Path) -> None:
    _write_tree(tmp_path, "train", ["a", "b"], per_class=3, size=(20, 20), suffix="jpg", mode="L")
    _write_tree(tmp_path, "test", ["a", "b"], per_class=1, size=(20, 20), suffix="bmp", mode="L")  # via PIL
    bundle = load_dataset("imagefolder", tmp_path, val_fraction=0.0)
    assert (bundle.num_classes, bundle.in_channels, bundle.input_size) == (2, 1, (20, 20))
    assert not bundle.train.augment and len(bundle.val) == 0
    assert bundle.train[0][0].shape == (1, 20, 20)


def test_imagefolder_sizes_must_be_uniform_unless_resized(tmp_path: Path) -> None:
    _write_tree(tmp_path, "train", per_class=2, size=(32, 32))
    _write_tree(tmp_path, "test", per_class=1, size=(48, 40), seed=1)
    with pytest.raises(UsageError, match=r"is 48x40 pixels but .*train.* is 32x32.*image_size option"):
        load_dataset("imagefolder", tmp_path)
    bundle = load_dataset("imagefolder", tmp_path, image_size=24)
    assert bundle.input_size == (24, 24) and bundle.test[0][0].shape == (3, 24, 24)
    assert bundle.train[0][0].shape == (3, 24, 24) and "resized to 24x24" in bundle.description
    with pytest.raises(UsageError, match="image_size must be a positive"):
        load_dataset("imagefolder", tmp_path, image_size=-1)


def test_imagefolder_bad_folders(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=f"root {tmp_path / 'nowhere'} does not exist.*--data-root"):
        load_dataset("imagefolder", tmp_path / "nowhere")
    with pytest.raises(UsageError, match=rf"{tmp_path / 'train'} is missing.*train/<class>/<image>.*"
                                         r"--data-root"):
        load_dataset("imagefolder", tmp_path)
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "loose.png").write_bytes(b"")
    with pytest.raises(UsageError, match=rf"{tmp_path / 'train'} holds no class folders.*sub-folder"):
        load_dataset("imagefolder", tmp_path)
    _write_tree(tmp_path, "train", per_class=2)
    with pytest.raises(UsageError, match=rf"{tmp_path / 'test'} is missing"):
        load_dataset("imagefolder", tmp_path)
    _write_tree(tmp_path, "test", ["cat", "dog", "fox"], per_class=1)
    with pytest.raises(UsageError, match=r"test/ lacks eel and has extra fox compared with train/.*"
                                         r"same class folders"):
        load_dataset("imagefolder", tmp_path)
    (tmp_path / "test" / "fox" / "000.png").unlink()
    (tmp_path / "test" / "fox").rmdir()
    _write_tree(tmp_path, "test", ["eel"], per_class=1)
    (tmp_path / "val" / "cat").mkdir(parents=True)
    with pytest.raises(UsageError, match=rf"class folder {tmp_path / 'val' / 'cat'} holds no images.*"
                                         r"add images"):
        load_dataset("imagefolder", tmp_path)
    _write_tree(tmp_path, "val", ["cat"], per_class=1)
    with pytest.raises(UsageError, match="val/ lacks dog, eel compared with train/"):
        load_dataset("imagefolder", tmp_path)
    _write_tree(tmp_path, "val", ["dog", "eel"], per_class=1)
    (tmp_path / "test" / "dog" / "000.png").write_bytes(b"not an image")
    with pytest.raises(UsageError, match=rf"{tmp_path / 'test' / 'dog' / '000.png'} is not a readable image"):
        load_dataset("imagefolder", tmp_path)


# -- the shared real copies (optional) ------------------------------------------------------------

@pytest.mark.skipif(not FASHION.is_dir(), reason=f"shared Fashion-MNIST files not found at {FASHION}")
def test_shared_fashion_mnist() -> None:
    bundle = load_dataset("fashion_mnist", FASHION, seed=0)
    assert (bundle.num_classes, bundle.in_channels, bundle.input_size) == (10, 1, (28, 28))
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (54000, 6000, 10000)
    assert torch.bincount(bundle.test.labels).tolist() == [1000] * 10
    train_pixels = bundle.train.images.float() / 255
    assert float(train_pixels.mean()) == pytest.approx(FASHION_MEAN, abs=5e-4)
    assert float(train_pixels.std()) == pytest.approx(FASHION_STD, abs=5e-4)
    limited, same, other = (load_dataset("fashion_mnist", FASHION, seed=s, limit=2000) for s in (0, 0, 1))
    assert [len(limited.train), len(limited.val), len(limited.test)] == [2000, 2000, 2000]
    assert limited.val.indices == same.val.indices and set(limited.val.indices) != set(other.val.indices)
    assert limited.test.indices == other.test.indices
    x, y = next(iter(make_loaders(limited, 64)[0]))
    assert x.shape == (64, 1, 28, 28) and 0 <= int(y.min()) and int(y.max()) <= 9


@pytest.mark.skipif(not CIFAR_JPEG.is_dir(), reason=f"shared CIFAR-10 JPEG folder not found at {CIFAR_JPEG}")
def test_shared_cifar10_jpeg_with_limit(decode_calls: list[str]) -> None:
    bundle = load_dataset("imagefolder", CIFAR_JPEG, seed=0, limit=2000)
    assert len(decode_calls) == 6000  # only the limited subsets of the 60,000 files are decoded
    assert (bundle.num_classes, bundle.in_channels, bundle.input_size) == (10, 3, (32, 32))
    assert [len(bundle.train), len(bundle.val), len(bundle.test)] == [2000, 2000, 2000]
    assert len(bundle.train.images) == 50000 and len(bundle.test.images) == 10000
    assert bundle.train.augment and not bundle.val.augment and not bundle.test.augment
    # Per-channel statistics of this JPEG copy (its README: 0.4913/0.4821/0.4465, std about 0.245).
    assert bundle.train.mean.flatten().tolist() == pytest.approx([0.4913, 0.4821, 0.4465], abs=0.01)
    assert bundle.train.std.flatten().tolist() == pytest.approx([0.245, 0.243, 0.261], abs=0.01)
    assert torch.equal(bundle.test[0][0], bundle.test[0][0])
    same, other = (load_dataset("imagefolder", CIFAR_JPEG, seed=s, limit=2000) for s in (0, 1))
    assert same.val.indices == bundle.val.indices and set(other.val.indices) != set(bundle.val.indices)
    assert other.test.indices == bundle.test.indices
    # Class i is the i-th folder in sorted order (airplane ... truck = CIFAR-10's label order).
    assert image_files.list_split(CIFAR_JPEG / "test")[0] == [
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    labels = [bundle.test[i][1] for i in range(200)]
    assert len(set(labels)) == 10
    x, y = next(iter(make_loaders(bundle, 128)[0]))
    assert x.shape == (128, 3, 32, 32) and x.dtype == torch.float32 and y.shape == (128,)


def test_image_tensor_dataset_rejects_float_images() -> None:
    with pytest.raises(ValueError, match="uint8"):
        ImageTensorDataset(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.long), [0, 1], [0.5], [0.5])
