"""Calibration statistics of the encoder Linears: input second moments XᵀX, gathered by forward hooks.

Every allocation method here scores a candidate weight Ŵ by the error it makes on the layer's real
inputs, E‖X(W − Ŵ)ᵀ‖², which only needs the (in, in) matrix XᵀX, not the activations themselves.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, Optional

import torch
import torch.nn as nn

from ..errors import DeployError


def encoder_linears(model: nn.Module, include_downsample: bool = False) -> Dict[str, nn.Linear]:
    """`{name: Linear}` of the Linears inside the encoder blocks (qkv, proj, fc1, fc2), in forward order.

    Patch embedding and head stay dense (LRA-QViT §3.1); Swin's patch-merging `reduction` is
    included only when asked.
    """
    out = {}
    for name, m in model.named_modules():
        if not isinstance(m, nn.Linear):
            continue
        in_block = ".blocks." in f".{name}" or name.startswith("blocks.")
        if in_block or (include_downsample and name.endswith("downsample.reduction")):
            out[name] = m
    if not out:
        raise DeployError(f"{type(model).__name__} has no Linear inside encoder blocks; is it a timm ViT/DeiT/Swin?")
    return out


@dataclass
class LayerStats:
    """Sum of xxᵀ over every token the layer saw (float64), and how many tokens that was."""

    xtx: torch.Tensor  # (in, in)
    n_tokens: int

    @property
    def second_moment(self) -> torch.Tensor:
        """E[x xᵀ] over tokens (in, in), float64."""
        return self.xtx / max(self.n_tokens, 1)


@torch.no_grad()
def collect_stats(model: nn.Module, images: torch.Tensor, names: Optional[Iterable[str]] = None,
                  batch_size: int = 32, progress: bool = True) -> Dict[str, LayerStats]:
    """Run `images` (N, 3, H, W) through `model` and accumulate XᵀX at the input of each named Linear."""
    from tqdm import tqdm

    linears = encoder_linears(model)
    names = list(names) if names is not None else list(linears)
    stats: Dict[str, LayerStats] = {}
    handles = []

    def make_hook(name: str):
        def hook(mod, inputs, _out):
            x = inputs[0].detach().reshape(-1, mod.in_features).double()
            st = stats.get(name)
            if st is None:
                stats[name] = LayerStats(x.T @ x, x.shape[0])
            else:
                st.xtx.addmm_(x.T, x)
                st.n_tokens += x.shape[0]
        return hook

    modules = dict(model.named_modules())
    for n in names:
        if n not in modules:
            raise DeployError(f"no module named {n!r} in the model.")
        handles.append(modules[n].register_forward_hook(make_hook(n)))
    was_training = model.training
    model.eval()
    try:
        for i in tqdm(range(0, len(images), batch_size), desc="calibration statistics", disable=not progress,
                      leave=False):
            model(images[i:i + batch_size])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return stats


class _Stop(Exception):
    pass


@torch.no_grad()
def capture_io(model: nn.Module, name: str, images: torch.Tensor, batch_size: int = 32):
    """Inputs (N·T, in) and outputs (N·T, out) of module `name`; the forward stops right after it."""
    mod = model.get_submodule(name)
    xs, ys = [], []

    def hook(m, inputs, out):
        xs.append(inputs[0].detach().reshape(-1, inputs[0].shape[-1]))
        ys.append(out.detach().reshape(-1, out.shape[-1]))
        raise _Stop

    h = mod.register_forward_hook(hook)
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(images), batch_size):
            try:
                model(images[i:i + batch_size])
            except _Stop:
                pass
    finally:
        h.remove()
        model.train(was_training)
    return torch.cat(xs), torch.cat(ys)
