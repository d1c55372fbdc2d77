"""Weight forms per target and the program-size model, checked against built .pte files."""
from __future__ import annotations

import pytest
import torch

from conftest import images, low_rank, make_tiny
from lraqvit_deploy.errors import DeployError
from lraqvit_deploy.layers import QuantLinear
from lraqvit_deploy.quant import quant_config, quantize_
from lraqvit_deploy.quant.forms import WeightForm, form_problem, layer_forms, program_bytes, target_forms


def test_forms_per_target():
    assert {f.name for f in target_forms("android")} == {"w8", "w4", "w4g32", "w4g64", "w4g128"}
    assert [f.name for f in target_forms("jetson")] == ["w8"]
    assert [f.name for f in layer_forms("android", 96)] == ["w4g32", "w4", "w8"]  # 64, 128 do not divide 96
    assert form_problem("android", WeightForm(4, 16), 64) and "multiple of 32" in form_problem("android", WeightForm(4, 16), 64)
    assert "odd" in form_problem("android", WeightForm(4), 63)
    assert "4-bit only" in form_problem("android", WeightForm(8, 32), 64)
    assert "per-token" in form_problem("android", WeightForm(8), 64, act_scheme="none")
    assert "INT8" in form_problem("jetson", WeightForm(4), 64)
    assert form_problem("jetson", WeightForm(8), 63) is None
    assert WeightForm.parse("w4g32") == WeightForm(4, 32) and WeightForm.parse("8") == WeightForm(8)
    with pytest.raises(ValueError):
        WeightForm.parse("w4gx")


def test_matrix_bytes_pack_two_4bit_weights_per_byte():
    assert WeightForm(8).matrix_bytes(10, 64) == 640 + 40
    assert WeightForm(4).matrix_bytes(10, 64) == 320 + 40
    assert WeightForm(4, 32).matrix_bytes(10, 64) == 320 + 10 * 2 * 2  # bfloat16 scale per block


def test_group_scales_are_bfloat16_and_blocks_quantize_separately():
    torch.manual_seed(0)
    m = make_tiny("vit")
    quantize_(m, quant_config("per-token", w_bits=4, w_group_size=32, progress=False), images(m, 4))
    q = m.blocks[0].attn.qkv
    assert isinstance(q, QuantLinear) and q.w_scale.shape == (q.out_features, q.in_features // 32)
    assert torch.equal(q.w_scale, q.w_scale.to(torch.bfloat16).float())
    w = q.quantized_weight()
    ints = w / q.w_scale.repeat_interleave(32, dim=1)
    assert torch.allclose(ints, ints.round(), atol=1e-4) and ints.abs().max() <= 8
    # a planted outlier only coarsens its own block
    lin = torch.nn.Linear(64, 4)
    with torch.no_grad():
        lin.weight.normal_()
        lin.weight[0, 0] = 100.0
    qb = QuantLinear.from_linear(lin, w_bits=4, w_group_size=32)
    qc = QuantLinear.from_linear(lin, w_bits=4)
    err_b = (qb.quantized_weight() - lin.weight)[0, 32:].abs().max()
    err_c = (qc.quantized_weight() - lin.weight)[0, 32:].abs().max()
    assert err_b < err_c / 5


def test_group_size_that_does_not_divide_is_refused_before_calibration():
    m = low_rank(make_tiny("vit"), 0.25)  # factors with 16 inputs
    with pytest.raises(DeployError, match="does not divide its 16 input columns"):
        quantize_(m, quant_config("per-token", w_bits=4, w_group_size=32, progress=False), images(m, 2))


@pytest.mark.parametrize("family,lr,bits,group", [("vit", False, None, None), ("vit", False, 4, 32),
                                                  ("deit", True, 4, None), ("swin", False, 8, None),
                                                  ("swin", True, 4, None)])
def test_program_bytes_match_the_built_pte_within_5_percent(family, lr, bits, group):
    pytest.importorskip("executorch")
    from lraqvit_deploy.backends.executorch.export import lower_to_xnnpack

    m = make_tiny(family)
    if lr:
        low_rank(m, 0.5)
    if bits:
        quantize_(m, quant_config("per-token", w_bits=bits, w_group_size=group, act_symmetric=False, progress=False),
                  images(m, 4))
    built = len(lower_to_xnnpack(m, "q8" if bits else "fp32").buffer)
    planned = program_bytes(m)
    assert abs(planned / built - 1) < 0.05, (planned, built)
