"""Datasets: Fashion-MNIST (the offline test bed), ImageFolder (ImageNet val layout), calibration subsets.

Preprocessing always comes from the model's timm data config (input size, mean, std,
interpolation, crop), so the same images reach every backend the same way.
"""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset

from .errors import DeployError

FASHION_MNIST_DIR = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _read_idx(path: Path) -> np.ndarray:
    """Read an idx file (optionally gzipped): magic, dims, then big-endian uint8 data."""
    candidates = [path, path.with_name(path.name + ".gz")]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise DeployError(
            f"Fashion-MNIST file {path.name}(.gz) not found in {path.parent}. Install the Debian "
            "package with `sudo apt-get install -y dataset-fashion-mnist`, or point "
            "FASHION_MNIST_DIR at a folder holding the idx files."
        )
    opener = gzip.open if found.suffix == ".gz" else open
    with opener(found, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise DeployError(f"{found} is not a uint8 idx file.")
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


class FashionMNIST(Dataset):
    """Fashion-MNIST as RGB tensors sized and normalised for a model's data config."""

    classes = FASHION_MNIST_CLASSES

    def __init__(self, split: str, data_config: Dict[str, Any], root: Optional[Path] = None):
        if split not in _FILES:
            raise DeployError(f"Fashion-MNIST split must be 'train' or 'test', got {split!r}.")
        root = Path(root) if root else FASHION_MNIST_DIR
        images, labels = (_read_idx(root / name) for name in _FILES[split])
        self.images = torch.from_numpy(images.copy())  # (N, 28, 28) uint8
        self.labels = torch.from_numpy(labels.astype(np.int64))
        _, h, w = data_config["input_size"]
        self.size = (h, w)
        self.mean = torch.tensor(data_config["mean"]).view(3, 1, 1)
        self.std = torch.tensor(data_config["std"]).view(3, 1, 1)
        mode = data_config.get("interpolation", "bilinear")
        self.mode = mode if mode in ("bilinear", "bicubic", "nearest") else "bilinear"

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, int]:
        x = self.images[i].float().div_(255.0)[None, None]
        x = F.interpolate(x, size=self.size, mode=self.mode, align_corners=False).clamp_(0, 1)
        x = (x[0].expand(3, -1, -1) - self.mean) / self.std
        return x, int(self.labels[i])


class ImageFolderDataset(Dataset):
    """torchvision's ImageFolder (one sub-folder per class), with images read through `files.open_image`.

    An unreadable image is a `BadImageError` naming it (one line, with the hint of --skip-bad-images)
    instead of PIL's exception from inside a DataLoader. With `skip_bad_images=True`, `check()`
    drops such images (PIL cannot identify them from their header) before they are used; `skipped`
    lists the files dropped.
    """

    def __init__(self, root: str | Path, transform=None, skip_bad_images: bool = False):
        from torchvision.datasets import ImageFolder

        from .files import open_image

        self.root, self.transform, self.skip_bad_images = Path(root), transform, skip_bad_images
        self.skipped: List[str] = []
        self._folder = ImageFolder(str(root), transform=transform, loader=open_image)
        self.classes, self.class_to_idx = self._folder.classes, self._folder.class_to_idx
        self.samples: List[Tuple[str, int]] = list(self._folder.samples)

    @property
    def targets(self) -> List[int]:
        return [t for _, t in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        from .files import open_image

        path, target = self.samples[i]
        img = open_image(path, skip_hint=not self.skip_bad_images)
        x = self.transform(img) if self.transform is not None else img
        return x, target

    def check(self, indices: Optional[Sequence[int]] = None) -> List[int]:
        """Identify the images `indices` (all by default) from their headers; the readable indices.

        Without `skip_bad_images` the first unreadable image is a BadImageError naming it; with it,
        unreadable ones are left out (and listed in `skipped`).
        """
        from .files import _image_error, check_image

        good = []
        for i in (range(len(self.samples)) if indices is None else indices):
            path = self.samples[i][0]
            why = check_image(path)
            if why is None:
                good.append(i)
            elif self.skip_bad_images:
                self.skipped.append(path)
            else:
                raise _image_error(path, why, skip=False)
        return good


def image_folder(root: str | Path, data_config: Dict[str, Any], skip_bad_images: bool = False) -> Dataset:
    """An ImageNet-val style folder (one sub-folder per class) with timm's eval transform.

    The first unreadable image read is one DeployError naming it; with `skip_bad_images=True`,
    `check_images` (called on the images a step will use, before it starts) leaves such images out
    and `dataset.skipped` lists them.
    """
    from timm.data import create_transform

    from .files import check_dir

    root = check_dir(root, "an image folder (one sub-folder of images per class)")
    try:
        ds = ImageFolderDataset(root, create_transform(**data_config, is_training=False), skip_bad_images)
    except (FileNotFoundError, RuntimeError) as e:  # no class folders / no images with a known extension
        raise DeployError(f"{root}: expected an image folder with one sub-folder of images per class "
                          f"({' '.join(str(e).split())[:200]})") from None
    return ds


def load_dataset(spec: str, data_config: Dict[str, Any], skip_bad_images: bool = False) -> Dataset:
    """`fashion-mnist[:train|:test]` or the path of an ImageFolder."""
    if spec.startswith("fashion-mnist"):
        split = spec.partition(":")[2] or "test"
        return FashionMNIST(split, data_config)
    return image_folder(spec, data_config, skip_bad_images)


def check_data_spec(spec: Any, flag: str = "--data") -> None:
    """Fail now (before any model is built) on a data argument that cannot name a dataset."""
    from .files import check_dir

    if spec is None or isinstance(spec, (Dataset, torch.Tensor)):
        return
    if not isinstance(spec, (str, os.PathLike)):
        raise DeployError(f"{flag}: expected a Dataset, an ImageFolder path or 'fashion-mnist[:train|:test]', "
                          f"got {type(spec).__name__}.")
    text = os.fspath(spec)
    if text.startswith("fashion-mnist"):
        split = text.partition(":")[2]
        if text not in ("fashion-mnist", "fashion-mnist:train", "fashion-mnist:test"):
            raise DeployError(f"{flag} {text!r}: the Fashion-MNIST split must be train or test "
                              f"(fashion-mnist:train, fashion-mnist:test), got {split!r}.")
        return
    what = "an image folder (one sub-folder of images per class) or fashion-mnist[:train|:test]"
    root = check_dir(text, what, hint=f"check {flag}")
    if not _has_an_image(root):
        raise DeployError(f"{root}: expected {what} (no sub-folder holds a file with an image extension); "
                          f"check {flag}")


def _has_an_image(root: Path) -> bool:
    """Whether some class sub-folder of `root` holds an image file (stops at the first: cheap on big folders)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    try:
        for cls in os.scandir(root):
            if cls.is_dir():
                for dirpath, _, names in os.walk(cls.path, followlinks=True):
                    if any(n.lower().endswith(IMG_EXTENSIONS) for n in names):
                        return True
    except OSError:
        return False
    return False


def base_dataset(ds: Dataset) -> Tuple[Dataset, Optional[List[int]]]:
    """(the dataset under any Subsets, the indices into it that `ds` covers; None: all of it)."""
    indices = None
    while isinstance(ds, Subset):
        idx = list(ds.indices)
        indices = idx if indices is None else [idx[i] for i in indices]
        ds = ds.dataset
    return ds, indices


def check_images(ds: Dataset) -> Dataset:
    """`ds` with its ImageFolder images identified now (before any heavy work): the first unreadable one
    is a DeployError naming it, or, with `skip_bad_images`, it is left out (a smaller Subset)."""
    base, indices = base_dataset(ds)
    if not isinstance(base, ImageFolderDataset):
        return ds
    good = base.check(indices)
    if indices is None:
        if len(good) == len(base):
            return ds
        if not good:
            raise DeployError(f"{base.root}: none of its {len(base)} images can be read.")
        return Subset(base, good)
    if len(good) == len(indices):
        return ds
    if not good:
        raise DeployError(f"{base.root}: none of the {len(indices)} images drawn can be read.")
    return Subset(base, good)


def skipped_images(*datasets: Any) -> List[str]:
    """The unreadable image files the ImageFolders under `datasets` left out (sorted, each once)."""
    out = set()
    for ds in datasets:
        if ds is None or not isinstance(ds, Dataset):
            continue
        base, _ = base_dataset(ds)
        out.update(getattr(base, "skipped", ()))
    return sorted(out)


def seeded_subset(ds: Dataset, n: Optional[int], seed: int = 0) -> Dataset:
    """`n` items drawn without replacement by a seeded permutation (all of them when n is None)."""
    if n is None or n >= len(ds):
        return ds
    if n <= 0:
        raise DeployError(f"subset size must be positive, got {n}.")
    g = torch.Generator().manual_seed(seed)
    return Subset(ds, torch.randperm(len(ds), generator=g)[:n].tolist())


def calibration_batch(ds: Dataset, n: int = 32, seed: int = 0) -> torch.Tensor:
    """The seeded calibration images as one tensor (N, 3, H, W).

    An unreadable ImageFolder image is a DeployError naming it, or, when the folder was opened with
    `skip_bad_images`, left out (listed in its `skipped`; fewer than `n` images then).
    """
    from .files import BadImageError

    sub = seeded_subset(ds, n, seed)
    base, _ = base_dataset(sub)
    skip = getattr(base, "skip_bad_images", False)
    images = []
    for i in range(len(sub)):
        try:
            images.append(sub[i][0])
        except BadImageError as e:
            if not skip:
                raise
            base.skipped.append(e.path)
    if not images:
        raise DeployError(f"none of the {len(sub)} calibration images drawn can be read.")
    return torch.stack(images)


def make_loader(ds: Dataset, batch_size: int = 64, workers: int = 0) -> DataLoader:
    return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers)


def stack_images(ds: Dataset, indices: Sequence[int]) -> torch.Tensor:
    return torch.stack([ds[i][0] for i in indices])


def input_size(model) -> Tuple[int, ...]:
    """(C, H, W) the model takes: its timm config (224 px when it names none), with the patch embedding's
    own image size when that differs (`timm.create_model(..., img_size=112)` keeps the checkpoint's 224)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    c, h, w = tuple(cfg.get("input_size", (3, 224, 224)))
    pe = getattr(model, "patch_embed", None)
    size = getattr(pe, "img_size", None)
    if isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size) \
            and not getattr(pe, "dynamic_img_size", False):
        h, w = size
    return (c, h, w)


def synthetic_images(model, n: int, seed: int = 0) -> torch.Tensor:
    """`n` seeded N(0, 1) images of the model's input size (for models without data; no labels)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *input_size(model), generator=g)
