"""`ModelInfo`: what the SDK records on a model it created, loaded or changed, as one object.

    info = model_info(model)            # ModelInfo(spec=ModelSpec(...), manifest=None, quant=None, ...)
    record(model, compression={...})    # set some of its fields

`create_model` records the `spec` (how to rebuild the architecture, where the weights came from),
`load_artifact` the `manifest` and `path` it was loaded from, `quantize` / `compress` what they did
(`quant`, `compression`). The object lives at `model.lraqvit_info`.

It replaces the five attributes of earlier releases (`model.lraqvit_spec`, `lraqvit_manifest`,
`lraqvit_quant`, `lraqvit_compression`, `lraqvit_path`), which are no longer set or read.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Dict, Optional

INFO_ATTR = "lraqvit_info"


@dataclass
class ModelInfo:
    """The SDK's record on a model (every field None until a step sets it)."""

    spec: Any = None  # lraqvit_deploy.models.ModelSpec
    manifest: Optional[Dict[str, Any]] = None  # the artifact manifest the model was loaded from
    quant: Optional[Dict[str, Any]] = None  # the INT8 config and calibration summary (quantize, compress)
    compression: Optional[Dict[str, Any]] = None  # what compress did: method, ranks, distillation, ...
    path: Optional[str] = None  # the artifact folder the model was loaded from


FIELDS = tuple(f.name for f in fields(ModelInfo))


def model_info(model: Any) -> ModelInfo:
    """The model's record (an empty one is attached on first use)."""
    info = vars(model).get(INFO_ATTR)
    if not isinstance(info, ModelInfo):
        info = ModelInfo()
        object.__setattr__(model, INFO_ATTR, info)
    return info


def record(model: Any, **values: Any) -> ModelInfo:
    """Set fields of the model's record (`record(model, quant={...})`); returns the record."""
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise TypeError(f"ModelInfo has no field(s) {unknown}; fields: {list(FIELDS)}")
    info = model_info(model)
    for name, value in values.items():
        setattr(info, name, value)
    return info
