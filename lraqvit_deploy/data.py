"""Datasets: Fashion-MNIST (the offline test bed), ImageFolder (ImageNet val layout), calibration subsets.

Preprocessing always comes from the model's timm data config (input size, mean, std,
interpolation, crop), so the same images reach every backend the same way.
"""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

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


def image_folder(root: str | Path, data_config: Dict[str, Any]) -> Dataset:
    """An ImageNet-val style folder (one sub-folder per class) with timm's eval transform."""
    from timm.data import create_transform
    from torchvision.datasets import ImageFolder

    root = Path(root)
    if not root.is_dir():
        raise DeployError(f"--data {root}: not a directory (expected one sub-folder per class).")
    try:
        return ImageFolder(str(root), transform=create_transform(**data_config, is_training=False))
    except (FileNotFoundError, RuntimeError) as e:
        raise DeployError(f"--data {root}: {e}") from None


def load_dataset(spec: str, data_config: Dict[str, Any]) -> Dataset:
    """`fashion-mnist[:train|:test]` or the path of an ImageFolder."""
    if spec.startswith("fashion-mnist"):
        split = spec.partition(":")[2] or "test"
        return FashionMNIST(split, data_config)
    return image_folder(spec, data_config)


def seeded_subset(ds: Dataset, n: Optional[int], seed: int = 0) -> Dataset:
    """`n` items drawn without replacement by a seeded permutation (all of them when n is None)."""
    if n is None or n >= len(ds):
        return ds
    if n <= 0:
        raise DeployError(f"subset size must be positive, got {n}.")
    g = torch.Generator().manual_seed(seed)
    return Subset(ds, torch.randperm(len(ds), generator=g)[:n].tolist())


def calibration_batch(ds: Dataset, n: int = 32, seed: int = 0) -> torch.Tensor:
    """The seeded calibration images as one tensor (N, 3, H, W)."""
    sub = seeded_subset(ds, n, seed)
    return torch.stack([sub[i][0] for i in range(len(sub))])


def make_loader(ds: Dataset, batch_size: int = 64, workers: int = 0) -> DataLoader:
    return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers)


def stack_images(ds: Dataset, indices: Sequence[int]) -> torch.Tensor:
    return torch.stack([ds[i][0] for i in indices])


def input_size(model) -> Tuple[int, ...]:
    """(C, H, W) the model takes, from its timm config (224 px when it names none)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return tuple(cfg.get("input_size", (3, 224, 224)))


def synthetic_images(model, n: int, seed: int = 0) -> torch.Tensor:
    """`n` seeded N(0, 1) images of the model's input size (for models without data; no labels)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *input_size(model), generator=g)
