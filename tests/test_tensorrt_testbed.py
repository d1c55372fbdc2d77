"""The real test bed (DINOv2 ViT-S/14 + Fashion-MNIST probe) through the Jetson build, on 200 images."""
import argparse
import json

import pytest


@pytest.mark.slow
def test_testbed_qdq_bundle(tmp_path, testbed_model):
    from lraqvit_deploy.backends.tensorrt.cli import build_bundle
    from lraqvit_deploy.cli.args import eval_dataset
    from lraqvit_deploy.quant.cli_args import calibration_images

    ds = eval_dataset(argparse.Namespace(data=None, limit=200), testbed_model)
    calib = calibration_images(testbed_model, argparse.Namespace(calib_images=32, calib_data=None))
    man = build_bundle(testbed_model, tmp_path / "jetson", ds, calib, fp16=False, latency_iters=0, progress=False,
                       log=lambda *a: None)
    saved = json.loads((tmp_path / "jetson" / "manifest.json").read_text())
    assert saved["structure"]["int8"]["ok"] and saved["structure"]["int8"]["qdq_matmuls"] == 48  # 12 blocks x 4
    assert saved["opset"] == 16 and "LayerNormalization" not in saved["structure"]["int8"]["ops"]
    assert man["fp32_onnx_agreement"] >= 0.99  # FP32 ONNX vs torch: float noise only
    assert man["agreement"] >= 0.9 and man["top1"] >= 75.0  # FP32 82.7; naive per-tensor PTQ costs ~1 point
    assert man["size_mb"] > 80  # FP32 weights behind Q/DQ (TensorRT quantizes them at build time)
