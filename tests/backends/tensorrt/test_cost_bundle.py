"""The Jetson cost-table cells (backends/tensorrt/cost_bundle.py): each ONNX is checked against its PyTorch cell."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("onnxruntime")

from lraqvit_deploy.backends.tensorrt import cost_bundle  # noqa: E402
from lraqvit_deploy.backends.tensorrt.onnx_export import export_onnx  # noqa: E402
from lraqvit_deploy.errors import DeployError  # noqa: E402
from lraqvit_deploy.measure.costs import LinearShape  # noqa: E402

SHAPE = LinearShape(64, 128, 5)


@pytest.mark.parametrize("kind, rank", [("float", None), ("float", 16), ("int8", None), ("int8", 16)])
def test_a_cell_passes_its_own_check_and_fails_another_modules(tmp_path, kind, rank):
    cell = cost_bundle.cell_module(SHAPE, kind, rank)
    path = export_onnx(cell, tmp_path / "cell.onnx", (SHAPE.tokens, SHAPE.in_f), prepared=True)
    x = torch.randn(1, SHAPE.tokens, SHAPE.in_f)
    assert cost_bundle._check_onnx(path, cell, x, "cell", kind) <= cost_bundle.MAX_REL_ERR[kind]
    other = cost_bundle.cell_module(SHAPE, kind, rank, seed=1)  # other weights: the ONNX no longer matches
    with pytest.raises(DeployError, match="disagrees with its PyTorch module"):
        cost_bundle._check_onnx(path, other, x, "cell", kind)
    nan = cost_bundle.cell_module(SHAPE, kind, rank)
    with torch.no_grad():  # a NaN reference (here its bias) fails the check: NaN never compares as "close"
        next(p for n, p in nan.named_parameters() if n.endswith("bias")).fill_(float("nan"))
    with pytest.raises(DeployError, match="disagrees"):
        cost_bundle._check_onnx(path, nan, x, "cell", kind)


def test_library_export_and_form_check():
    import lraqvit_deploy

    assert lraqvit_deploy.write_profile_bundle is cost_bundle.write_profile_bundle
    with pytest.raises(DeployError, match="the Jetson's forms are fp32, fp16, w8"):
        cost_bundle.check_forms(["w4"])
    assert cost_bundle.check_forms(["w8", "fp32", "w8"]) == ("w8", "fp32")
