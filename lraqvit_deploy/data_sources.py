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

from .data import calibration_batch, check_images, load_dataset, seeded_subset, skipped_images
from .errors import DeployError
from .model_info import model_info
from .models import TESTBED


def _as_dataset(model, data: Any, skip_bad_images: bool = False) -> Tuple[Dataset, str]:
    """A Dataset given as is, or a spec string preprocessed for `model`; with a description."""
    from timm.data import resolve_data_config

    if isinstance(data, Dataset):
        return data, f"{type(data).__name__} ({len(data)} images)"
    if isinstance(data, (str, os.PathLike)):
        return load_dataset(os.fspath(data), resolve_data_config(model=model), skip_bad_images), os.fspath(data)
    raise DeployError(f"data must be a Dataset, an ImageFolder path or 'fashion-mnist[:train|:test]', "
                      f"got {type(data).__name__}.")


def is_testbed(model) -> bool:
    spec = model_info(model).spec
    return spec is not None and spec.name == TESTBED


def eval_dataset(model, data: Any = None, limit: Optional[int] = None, required: bool = True,
                 skip_bad_images: bool = False) -> Tuple[Optional[Dataset], str]:
    """(labelled evaluation images, description): `data` if given, else the test bed's test subset.

    A timm model without `data` has none: (None, reason) when not `required`, else a DeployError.
    `limit` takes a seeded subset. The images of an ImageFolder are identified now, before any
    work: the first unreadable one is a DeployError naming it, or, with `skip_bad_images`, it is
    left out (`data.skipped_images(ds)` lists those).
    """
    check_count(limit, "the evaluation limit (--limit)")
    if data is not None:
        ds, desc = _as_dataset(model, data, skip_bad_images)
        return check_images(seeded_subset(ds, limit, 0) if limit else ds), desc
    if is_testbed(model):
        from .models import testbed as tb

        cfg = tb.get_profile(model_info(model).spec.testbed_profile or "quick")
        ds, _ = _as_dataset(model, "fashion-mnist:test")
        return seeded_subset(ds, limit or cfg.n_test, cfg.seed), "the test bed's test subset"
    if required:
        raise DeployError("no evaluation data: pass --data DIR (ImageNet-val layout: one folder per class) "
                          "or --data fashion-mnist:test, or use --model testbed.")
    return None, "no evaluation data for this model"


def train_dataset(model, data: Any = None, limit: Optional[int] = None, seed: int = 0,
                  why: str = "distillation", skip_bad_images: bool = False) -> Dataset:
    """Training images for `why` (distillation, calibration): `data`, or the test bed's training split.

    With `skip_bad_images`, every image of an ImageFolder is identified now and unreadable ones are
    left out; without it, the first unreadable image read is a DeployError naming it.
    """
    check_count(limit, "the training-image limit (--train-limit)")
    if data is None and not is_testbed(model):
        raise DeployError(f"{why} needs training images: pass them (--train-data / --calib-data DIR, an ImageFolder "
                          "of training images, or fashion-mnist:train), or use --model testbed.")
    ds, _ = _as_dataset(model, "fashion-mnist:train" if data is None else data, skip_bad_images)
    if len(ds) == 0:
        raise DeployError(f"{why}: the training images given are empty.")
    ds = seeded_subset(ds, limit, seed) if limit else ds
    return check_images(ds) if skip_bad_images else ds


def calibration_images(model, n: int, data: Any = None, seed: int = 0, why: str = "calibration",
                       skip_bad_images: bool = False, skipped: Optional[set] = None) -> torch.Tensor:
    """`n` seeded training images as one (N, 3, H, W) tensor; `data` may also be such a tensor already.

    With `skip_bad_images`, unreadable ImageFolder images are left out (fewer images then) and their
    paths added to `skipped`.
    """
    if isinstance(data, torch.Tensor):
        if data.ndim != 4 or len(data) == 0:
            raise DeployError(f"{why} images must be a non-empty (N, 3, H, W) tensor, got {tuple(data.shape)}.")
        return data[:n]
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise DeployError(f"{why} needs a positive number of images, got {n!r}.")
    ds = train_dataset(model, data, why=why, skip_bad_images=skip_bad_images)
    images = calibration_batch(ds, n, seed)
    if skipped is not None:
        skipped.update(skipped_images(ds))
    return images


def check_count(value: Any, what: str, lo: int = 1, hi: int = 10 ** 9) -> None:
    """A number of images (or steps) given by the user: a whole number in lo..hi, or None."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi):
        raise DeployError(f"{what} must be a {'positive' if lo == 1 else 'whole'} number in {lo}..{hi:,}, "
                          f"got {value!r}.")
