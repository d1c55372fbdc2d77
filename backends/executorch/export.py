"""torch.export -> to_edge_transform_and_lower(XnnpackPartitioner) -> .pte bytes.

Precisions:
  * fp32: the model as is.
  * q8:   a model holding `QuantLinear` modules is lowered with its own scales
          (`quant_lowering`); an FP32 model is quantized with PT2E dynamic INT8 (`quantizer`).
timm's fused attention (`F.scaled_dot_product_attention`) is switched off for the export: its
decomposition leaves `where`/`any` ops outside XNNPACK, while the explicit `q @ k.T` / softmax /
`@ v` is delegated entirely.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn as nn

from lraqvit_deploy.errors import DeployError
from lraqvit_deploy.vit_layout import unfused_attention  # noqa: F401  (re-exported: callers import it from here)

from .delegation import DelegationReport, delegation_report

PRECISIONS = ("fp32", "q8")


@dataclass
class LoweredProgram:
    buffer: bytes
    precision: str
    quantization: str  # "none" | "quant_linear" (artifact scales) | "pt2e_dynamic"
    delegation: DelegationReport
    input_shape: Tuple[int, ...]


def example_input(model: nn.Module, batch: int = 1) -> torch.Tensor:
    from lraqvit_deploy.data import input_size

    return torch.randn(batch, *input_size(model))


def lower_to_xnnpack(model: nn.Module, precision: str = "fp32",
                     example: Optional[torch.Tensor] = None, shape_passes: bool = True,
                     delegate_layernorm: bool = False) -> LoweredProgram:
    """Lower `model` (left untouched) to an XNNPACK-delegated ExecuTorch program with method `forward`."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from .shape_passes import pre_partition_passes
    from .quant_lowering import check_xnnpack_forms, has_quant_linear, lower_quant_linears_

    if precision not in PRECISIONS:
        raise DeployError(f"precision must be one of {PRECISIONS}, got {precision!r}.")
    check_xnnpack_forms(model)  # a layer XNNPACK cannot run is refused before any copying or tracing
    model = copy.deepcopy(model).eval()
    x = example if example is not None else example_input(model)
    quantized = has_quant_linear(model)
    if quantized and precision == "fp32":
        raise DeployError("this model holds QuantLinear (INT8) layers; build it with --precision q8 (or auto).")
    with torch.no_grad(), unfused_attention(model):
        if delegate_layernorm:
            from .layer_norm import delegate_layernorm_

            delegate_layernorm_(model)
        if quantized:
            lower_quant_linears_(model)
            scheme, graph = "quant_linear", model
        elif precision == "q8":
            from .quantizer import quantize_dynamic_int8

            scheme, graph = "pt2e_dynamic", quantize_dynamic_int8(model, (x,))
        else:
            scheme, graph = "none", model
        try:
            ep = torch.export.export(graph, (x,), strict=False)
        except Exception as e:  # export failures are model problems the user must see in full
            raise DeployError(f"torch.export failed for this model: {type(e).__name__}: {e}") from e
    edge = to_edge_transform_and_lower(
        ep, transform_passes=pre_partition_passes() if shape_passes else None, partitioner=[XnnpackPartitioner()])
    report = delegation_report(edge.exported_program().graph_module)
    buffer = edge.to_executorch().buffer
    return LoweredProgram(bytes(buffer), precision, scheme, report, tuple(x.shape))
