"""The real test bed (DINOv2 ViT-S/14 + Fashion-MNIST probe) through the Jetson build, on 200 images."""
import json

import numpy as np
import pytest


@pytest.mark.slow
def test_testbed_qdq_bundle(tmp_path, testbed_model):
    from lraqvit_deploy.backends.tensorrt.backend import JetsonBuildOptions
    from lraqvit_deploy.backends.tensorrt.build import build_bundle
    from lraqvit_deploy.data_sources import calibration_images, eval_dataset

    ds, _ = eval_dataset(testbed_model, None, 200)
    calib = calibration_images(testbed_model, 32)
    man = build_bundle(testbed_model, tmp_path / "jetson", ds, calib,
                       JetsonBuildOptions(fp16=False, latency_iters=0, progress=False), log=lambda *a: None)
    saved = json.loads((tmp_path / "jetson" / "manifest.json").read_text())
    s8 = saved["structure"]["int8"]
    assert s8["ok"] and s8["qdq_matmuls"] == 48 and s8["int8_weights"] == 48  # 12 blocks x 4, weights stored int8
    assert saved["opset"] == 16 and "LayerNormalization" not in s8["ops"] and s8["layernorm_tagged"] == 25
    assert man["fp32_onnx_agreement"] >= 0.99  # FP32 ONNX vs torch: float noise only
    assert man["agreement"] >= 0.9 and man["top1"] >= 75.0  # FP32 82.7; naive per-tensor PTQ costs ~1 point
    c8 = man["closeness"]["int8"]
    assert c8["sqnr_db"] >= 15.0 and c8["cosine_mean"] >= 0.98  # the host INT8 gates (docs/jetson.md)
    assert man["closeness"]["fp32"]["sqnr_db"] >= 60.0
    assert man["engine_quantizer"]["mode"] == "requantize" and man["engine_quantizer"]["act_scheme"] == "per_tensor_static"
    # int8 weights: ~22M encoder weights at 1 byte, the rest (embeddings, head, norms) FP32
    assert man["size_mb"] < 0.3 * man["size_mb_fp32"], (man["size_mb"], man["size_mb_fp32"])
    v = saved["device_verification"]
    assert v["n_images"] == 32 and np.load(tmp_path / "jetson" / v["images"]).dtype == np.float32
    print({k: man[k] for k in ("size_mb", "size_mb_fp32", "int8_weights_mb", "agreement", "top1", "top1_simulator")},
          c8, man["closeness"]["fp32"])
