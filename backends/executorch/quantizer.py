"""PT2E dynamic INT8 for FP32 models: XNNPACKQuantizer, int8 per-channel weights, per-token activations.

Used when `deploy build --precision q8` receives a model without `QuantLinear` modules. The graph
carries per-tensor `choose_qparams`; XNNPACK executes it per row (qd8), which is the paper's
per-token scheme. Dynamic activations need no calibration data.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn


def quantize_dynamic_int8(model: nn.Module, example: Tuple[torch.Tensor, ...]) -> torch.fx.GraphModule:
    """Export, annotate every Linear with the dynamic per-channel config, and convert."""
    from executorch.backends.transforms.duplicate_dynamic_quant_chain import DuplicateDynamicQuantChainPass
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True))
    graph = torch.export.export(model, example, strict=False).module()
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        prepared(*example)
    converted = convert_pt2e(prepared)
    DuplicateDynamicQuantChainPass()(converted)  # one activation feeding q, k, v-style siblings
    return converted
