"""Which images a model is scored, calibrated and trained on: the ones given, or the model's own.

Data is passed explicitly everywhere (a Dataset, an ImageFolder path or `fashion-mnist[:train|:test]`);
only the test bed brings defaults (Fashion-MNIST's splits, its profile's seeded test subset). A
timm model without data gets a clear error naming the flag, or (`required=False`) nothing, so
that callers can fall back to synthetic images and say so.
"""
from __future__ import annotations

import os
from typing import Any, Optional, Tuple

import torch
from torch.utils.data import Dataset

from .data import calibration_batch, load_dataset, seeded_subset
from .errors import DeployError
from .models import TESTBED


def _as_dataset(model, data: Any) -> Tuple[Dataset, str]:
    """A Dataset given as is, or a spec string preprocessed for `model`; with a description."""
    from timm.data import resolve_data_config

    if isinstance(data, Dataset):
        return data, f"{type(data).__name__} ({len(data)} images)"
    if isinstance(data, (str, os.PathLike)):
        return load_dataset(str(data), resolve_data_config(model=model)), str(data)
    raise DeployError(f"data must be a Dataset, an ImageFolder path or 'fashion-mnist[:train|:test]', "
                      f"got {type(data).__name__}.")


def is_testbed(model) -> bool:
    spec = getattr(model, "lraqvit_spec", None)
    return spec is not None and spec.name == TESTBED


def eval_dataset(model, data: Any = None, limit: Optional[int] = None, required: bool = True,
                 ) -> Tuple[Optional[Dataset], str]:
    """(labelled evaluation images, description): `data` if given, else the test bed's test subset.

    A timm model without `data` has none: (None, reason) when not `required`, else a DeployError.
    `limit` takes a seeded subset.
    """
    if limit is not None and limit <= 0:
        raise DeployError(f"the evaluation limit must be a positive number of images, got {limit}.")
    if data is not None:
        ds, desc = _as_dataset(model, data)
        return (seeded_subset(ds, limit, 0) if limit else ds), desc
    if is_testbed(model):
        from .models import testbed as tb

        cfg = tb.get_profile(model.lraqvit_spec.testbed_profile or "quick")
        ds, _ = _as_dataset(model, "fashion-mnist:test")
        return seeded_subset(ds, limit or cfg.n_test, cfg.seed), "the test bed's test subset"
    if required:
        raise DeployError("no evaluation data: pass --data DIR (ImageNet-val layout: one folder per class) "
                          "or --data fashion-mnist:test, or use --model testbed.")
    return None, "no evaluation data for this model"


def train_dataset(model, data: Any = None, limit: Optional[int] = None, seed: int = 0,
                  why: str = "distillation") -> Dataset:
    """Training images for `why` (distillation, calibration): `data`, or the test bed's training split."""
    if data is None and not is_testbed(model):
        raise DeployError(f"{why} needs training images: pass them (--train-data / --calib-data DIR, an ImageFolder "
                          "of training images, or fashion-mnist:train), or use --model testbed.")
    ds, _ = _as_dataset(model, "fashion-mnist:train" if data is None else data)
    if len(ds) == 0:
        raise DeployError(f"{why}: the training images given are empty.")
    return seeded_subset(ds, limit, seed) if limit else ds


def calibration_images(model, n: int, data: Any = None, seed: int = 0, why: str = "calibration") -> torch.Tensor:
    """`n` seeded training images as one (N, 3, H, W) tensor; `data` may also be such a tensor already."""
    if isinstance(data, torch.Tensor):
        if data.ndim != 4 or len(data) == 0:
            raise DeployError(f"{why} images must be a non-empty (N, 3, H, W) tensor, got {tuple(data.shape)}.")
        return data[:n]
    if n <= 0:
        raise DeployError(f"{why} needs a positive number of images, got {n}.")
    return calibration_batch(train_dataset(model, data, why=why), n, seed)
