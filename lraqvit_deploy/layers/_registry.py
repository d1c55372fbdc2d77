"""Registry of the SDK's own module types, so artifacts can rebuild a compressed model's structure.

A module class registered here provides `artifact_entry() -> dict` (its constructor arguments,
JSON-serialisable) and a builder `(original_module, entry) -> new_module` that recreates it
(weights are loaded afterwards from the artifact's safetensors).
"""
from __future__ import annotations

from typing import Callable, Dict

import torch.nn as nn

Builder = Callable[[nn.Module, dict], nn.Module]
_BUILDERS: Dict[str, Builder] = {}


def register_module_type(name: str) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        if name in _BUILDERS and _BUILDERS[name] is not fn:
            raise ValueError(f"module type {name!r} is registered twice")
        _BUILDERS[name] = fn
        return fn

    return deco


def get_builder(name: str) -> Builder:
    from ..errors import DeployError

    try:
        return _BUILDERS[name]
    except KeyError:
        raise DeployError(
            f"this artifact uses module type {name!r}, which this version of lraqvit-deploy does not "
            f"know (known: {sorted(_BUILDERS)}); upgrade lraqvit-deploy."
        ) from None
