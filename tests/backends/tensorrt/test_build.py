"""build_bundle: gates, the engine's quantizer in the manifest, the on-device verification data."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from lraqvit_deploy.backends.tensorrt.backend import JetsonBuildOptions
from lraqvit_deploy.backends.tensorrt.build import build_bundle
from lraqvit_deploy.errors import ToleranceError
from lraqvit_deploy.quant import quant_config, quantize_
from lraqvit_deploy.model_info import model_info, record


def _data(n, seed, labelled=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 32, 32, generator=g)
    return x, (torch.randint(0, 10, (n,), generator=g) if labelled else torch.full((n,), -1))


def _build(model, out, labelled=True, gates=None, **kw):
    opts = JetsonBuildOptions(progress=False, latency_iters=0, device_images=12, **kw)
    return build_bundle(model, out, TensorDataset(*_data(24, 1, labelled)), _data(16, 2)[0], opts, gates=gates,
                        log=lambda *a: None)


def test_wads_artifact_manifest_names_the_engine_quantizer(tmp_path, tiny_vit):
    cfg = quant_config("wads", wads_iters=10, progress=False)
    s = quantize_(tiny_vit, cfg, _data(16, 3)[0])
    record(tiny_vit, quant={"config": cfg.to_dict(), **s.__dict__})
    man = _build(tiny_vit, tmp_path / "out")
    q = man["engine_quantizer"]
    assert (q["mode"], q["method"], q["act_scheme"], q["act_symmetric"]) == ("requantize", "wads", "per_tensor_static", True)
    assert man["top1"] is not None and "onnxruntime" in man["top1_source"]
    # stated = enforced; a random-weight model's agreement is reported, not gated (near-tied logits)
    assert man["target_agreement"] == man["gates"]["int8"]["min_agreement"] is None
    assert not man["agreement_gated"] and "random weights" in man["agreement_gate_note"]
    model_info(tiny_vit).spec.weights = "file: real.safetensors"  # a trained model: the 0.9 gate applies
    real = _build(tiny_vit, tmp_path / "real")
    assert real["target_agreement"] == real["gates"]["int8"]["min_agreement"] == 0.9 and real["agreement_gated"]
    for p in ("int8", "fp32", "fp16"):
        assert man["closeness"][p]["passed"] and man["closeness"][p]["sqnr_db"] >= man["gates"][p]["min_sqnr_db"]
    assert man["structure"]["int8"]["int8_weights"] == 8 and man["int8_weights_mb"] > 0
    assert man["precision_plans"]["8.5"]["int8"]["builder_flags"] == ["INT8", "FP16", "OBEY_PRECISION_CONSTRAINTS"]


def test_gates_are_enforced(tmp_path, tiny_vit):
    with pytest.raises(ToleranceError, match="SQNR"):
        _build(tiny_vit, tmp_path / "a", min_sqnr_db=500.0)
    with pytest.raises(ToleranceError, match="cosine"):
        _build(tiny_vit, tmp_path / "b", gates={"fp16": {"min_cosine": 1.01}})
    assert not (tmp_path / "a").exists()  # nothing half-written


def test_synthetic_inputs_no_top1_closeness_still_gated(tmp_path, tiny_vit):
    man = _build(tiny_vit, tmp_path / "out", labelled=False)
    assert man["top1"] is None and man["agreement_gated"] is False and man["closeness"]["int8"]["passed"]
    v = json.loads((tmp_path / "out" / "jetson" / "bundle.json").read_text())["verify"]
    assert v["labels"] is None and v["host_onnxruntime"]["int8"]["top1"] is None


def test_bundle_carries_verification_data_and_run_py_checks_it_without_torch(tmp_path, tiny_vit):
    out = tmp_path / "out"
    _build(tiny_vit, out)
    v = json.loads((out / "jetson" / "bundle.json").read_text())["verify"]
    images = np.load(out / v["images"])
    assert images.dtype == np.float32 and images.shape == (12, 3, 32, 32) and (out / v["labels"]).is_file()
    assert v["reference"]["fp16"] == v["reference"]["fp32"] != v["reference"]["int8"]
    assert np.load(out / v["reference"]["int8"]).shape == (12, 10)
    assert sum(f.stat().st_size for f in (out / "verify").iterdir()) < 1e6  # small
    # jetson/run.py's check, numpy only (torch and lraqvit_deploy unimportable), with onnxruntime standing in
    # for the engine: the same comparison the device makes, against the same bundled references
    jdir = str(out / "jetson")
    code = f"""
import json, sys
sys.modules['torch'] = None; sys.modules['lraqvit_deploy'] = None
sys.path.insert(0, {jdir!r})
import numpy as np, onnxruntime as ort, run
bundle = run.read_bundle({str(out)!r})
res = {{}}
for p in ("int8", "fp16", "fp32"):
    sess = ort.InferenceSession({str(out)!r} + "/" + bundle["onnx"][p], providers=["CPUExecutionProvider"])
    dt = np.float16 if "float16" in sess.get_inputs()[0].type else np.float32
    infer = lambda x: sess.run(None, {{"input": x.astype(dt)}})[0].astype(np.float32)
    res[p] = run.verify_outputs({str(out)!r}, p, infer, "onnxruntime CPU (stand-in for the engine, not TensorRT)")
print(json.dumps(res))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    for p in ("int8", "fp16", "fp32"):
        r = res[p]
        assert r["passed"] and r["runner"].startswith("onnxruntime") and r["n_images"] == 12
        assert r["agreement"] == v["host_onnxruntime"][p]["agreement"]
        assert r["sqnr_db"] == pytest.approx(v["host_onnxruntime"][p]["sqnr_db"], abs=1.0)
