"""The simulator's per_token_dynamic (asymmetric) matches what ExecuTorch's XNNPACK runtime executes.

XNNPACK lowers a dynamically quantized Linear to qd8 kernels: the activation is quantized per row
(per token) with its own scale and zero point, the weight per output channel, symmetric. This runs
the real ExecuTorch runtime on a one-Linear program and compares it with `QuantLinear`.
"""
from __future__ import annotations

import pytest
import torch

from lraqvit_deploy.layers import QuantLinear


def _xnnpack_dynamic_int8(linear: torch.nn.Linear, x: torch.Tensor, tmp_path) -> torch.Tensor:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True))
    m = prepare_pt2e(torch.export.export(linear, (x,)).module(), quantizer)
    m(x)
    m = convert_pt2e(m)
    prog = to_edge_transform_and_lower(torch.export.export(m, (x,)), partitioner=[XnnpackPartitioner()]).to_executorch()
    path = tmp_path / "linear.pte"
    path.write_bytes(prog.buffer)
    return Runtime.get().load_program(str(path)).load_method("forward").execute([x])[0]


def test_per_token_dynamic_asymmetric_matches_xnnpack(tmp_path):
    pytest.importorskip("executorch")
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 32)
    x = torch.randn(1, 17, 64)
    x[0, 3] *= 30  # an outlier token
    x[..., 5] += 4  # and a shifted channel, so rows are far from symmetric
    got = _xnnpack_dynamic_int8(linear, x, tmp_path)
    asym = QuantLinear.from_linear(linear, "per_token_dynamic", act_symmetric=False)(x)
    sym = QuantLinear.from_linear(linear, "per_token_dynamic", act_symmetric=True)(x)
    with torch.no_grad():
        quant_error = (linear(x) - got).abs().max()
        assert quant_error > 1e-3  # the runtime really quantized
        torch.testing.assert_close(asym, got, rtol=1e-4, atol=1e-4)
        assert (sym - got).abs().max() > 10 * (asym - got).abs().max()
