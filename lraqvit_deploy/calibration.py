"""Forward hooks on named modules, and calibration passes over a batch of images with them.

Every statistic the SDK calibrates (activation ranges for INT8, input second moments for the
activation-aware SVD, a layer's inputs and outputs for error compensation) is gathered the same
way: hooks on some named modules, the model run in eval mode over the images in batches, and the
hooks removed and the model's mode restored whatever happens.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Mapping, Optional

import torch
import torch.nn as nn

PreFn = Callable[[str, nn.Module, torch.Tensor], None]  # (name, module, input)
PostFn = Callable[[str, nn.Module, torch.Tensor, torch.Tensor], None]  # (name, module, input, output)


class StopForward(Exception):
    """Raise from a hook callback to end the current forward pass early (the batch counts as done)."""


@contextlib.contextmanager
def module_hooks(modules: Mapping[str, nn.Module], pre: Optional[PreFn] = None,
                 post: Optional[PostFn] = None) -> Iterator[None]:
    """Call `pre(name, module, x)` before / `post(name, module, x, y)` after each module's forward; removed on exit."""
    handles = []
    try:
        for name, mod in modules.items():
            if pre is not None:
                handles.append(mod.register_forward_pre_hook(lambda m, a, name=name: pre(name, m, a[0])))
            if post is not None:
                handles.append(mod.register_forward_hook(lambda m, a, y, name=name: post(name, m, a[0], y)))
        yield
    finally:
        for h in handles:
            h.remove()


def model_device(model: nn.Module) -> Optional[torch.device]:
    """The device of the model's first parameter (or buffer); None for a model without tensors."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return None


@torch.no_grad()
def calibrate(model: nn.Module, images: torch.Tensor, modules: Mapping[str, nn.Module],
              pre: Optional[PreFn] = None, post: Optional[PostFn] = None, batch_size: int = 32,
              progress: bool = False, desc: str = "calibrate") -> None:
    """Run `images` (N, 3, H, W) through `model` in eval mode, `batch_size` at a time, with `module_hooks`.

    A callback may raise `StopForward` to skip the rest of a batch's forward. The model's
    train/eval mode is restored afterwards. Each batch goes to the model's device (the images may
    stay on the CPU while the model runs on CUDA).
    """
    from tqdm import tqdm

    device = model_device(model)
    was_training = model.training
    model.eval()
    try:
        with module_hooks(modules, pre, post):
            for i in tqdm(range(0, len(images), batch_size), desc=desc, disable=not progress, leave=False,
                          unit="batch"):
                try:
                    batch = images[i:i + batch_size]
                    model(batch if device is None else batch.to(device))
                except StopForward:
                    pass
    finally:
        model.train(was_training)


def capture_io(model: nn.Module, name: str, images: torch.Tensor, batch_size: int = 32):
    """Inputs (N·T, in) and outputs (N·T, out) of module `name`; each forward stops right after it."""
    xs, ys = [], []

    def post(_name, _mod, x, y):
        xs.append(x.detach().reshape(-1, x.shape[-1]))
        ys.append(y.detach().reshape(-1, y.shape[-1]))
        raise StopForward

    calibrate(model, images, {name: model.get_submodule(name)}, post=post, batch_size=batch_size)
    return torch.cat(xs), torch.cat(ys)


__all__ = ["StopForward", "module_hooks", "model_device", "calibrate", "capture_io"]
