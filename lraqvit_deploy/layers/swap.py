"""`replace_module(model, name, new)`: the one module swap every transform uses (torchao's `setattr(parent, ...)`)."""
from __future__ import annotations

import torch.nn as nn


def replace_module(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Put `new` at the qualified `name` inside `model` (e.g. "blocks.0.attn.qkv"); returns the module it replaced."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, child)
    setattr(parent, child, new)
    return old
