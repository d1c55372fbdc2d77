"""`build` / `bench` from Python: typed options, explicit data, synthetic verification, missing backends."""
import json

import pytest
import torch

from lraqvit_deploy.errors import BackendNotInstalled, DeployError
from lraqvit_deploy.targets import bench, build

from conftest import make_tiny

pytestmark = pytest.mark.usefixtures("one_thread")


def test_android_build_of_a_model_without_data_uses_synthetic_images(tmp_path):
    from lraqvit_deploy import AndroidBuildOptions, HostBenchOptions

    res = build(make_tiny("deit"), tmp_path / "a", AndroidBuildOptions(verify_images=8, progress=False))
    ver = res.manifest["verification"]
    assert ver["synthetic"] and "synthetic" in ver["data"] and res.manifest["top1"] is None
    assert res.manifest["agreement"] >= 0.995 and res.target == "android"
    st = res.stage_seconds  # the build's own stage timings (lraqvit_deploy.measure.stages)
    assert {"total", "lower", "verify", "arm_verify"} <= set(st) and st["lower"]["calls"] == 1
    assert st["lower"]["seconds"] + st["verify"]["seconds"] <= st["total"]["seconds"]
    r = bench(tmp_path / "a", HostBenchOptions(iterations=3, warmup=1))
    assert r.iterations == 3 and r.target == "host" and r.median_ms > 0


def test_jetson_build_of_an_int8_artifact_needs_no_calibration_data(tmp_path):
    """A timm INT8 artifact: no --calib-data, no --data; the recorded per-tensor scales are used."""
    from lraqvit_deploy import JetsonBuildOptions
    from lraqvit_deploy.pipeline import compress
    from lraqvit_deploy.quant import quant_config
    from lraqvit_deploy.recipe import Recipe

    model = make_tiny("vit")
    images = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    rep = compress(model, Recipe(quant=quant_config("per-token")), calib_data=images, out=tmp_path / "q",
                   progress=False)
    assert set(rep.stage_seconds) == {"total", "quantize"} and rep.to_dict()["stage_seconds"] == rep.stage_seconds
    res = build(tmp_path / "q", tmp_path / "j", JetsonBuildOptions(latency_iters=0, fp16=False, progress=False,
                                                                   verify_images=16, min_agreement=0.5))
    man = json.loads((tmp_path / "j" / "manifest.json").read_text())
    assert "recorded at its quantization" in man["quantization"]["how"] and man["quantization"]["calib_images"] == 0
    assert res.manifest["n_images"] == 16
    assert {"total", "onnx_export", "engine_model", "verify"} <= set(res.stage_seconds)


def test_jetson_build_of_an_fp32_timm_model_without_any_data_still_builds(tmp_path):
    """No images at all: calibrated and verified on seeded synthetic images, and the manifest says so."""
    from lraqvit_deploy import JetsonBuildOptions

    res = build(make_tiny("vit"), tmp_path / "j", JetsonBuildOptions(latency_iters=0, fp16=False, progress=False))
    assert "synthetic" in res.manifest["calibration_note"] and "--calib-data" in res.manifest["calibration_note"]
    on_disk = json.loads((tmp_path / "j" / "manifest.json").read_text())  # the bundle itself carries the warning
    assert on_disk["calibration_note"] == res.manifest["calibration_note"]


def test_option_and_target_errors(tmp_path):
    from lraqvit_deploy import AndroidBuildOptions, HostBenchOptions

    with pytest.raises(DeployError, match="unknown target 'ios'"):
        build(make_tiny("vit"), tmp_path / "x", "ios")
    with pytest.raises(DeployError, match="cannot build"):
        build(make_tiny("vit"), tmp_path / "x", "host")
    with pytest.raises(DeployError, match="are not bench options"):
        bench(tmp_path, AndroidBuildOptions())
    with pytest.raises(DeployError, match="does not exist"):
        bench(tmp_path / "none", HostBenchOptions())
    with pytest.raises(DeployError, match="not an artifact folder"):
        build(str(tmp_path), tmp_path / "x", "android")
    (tmp_path / "file").write_text("keep me")
    with pytest.raises(DeployError, match="is not a folder"):
        build(make_tiny("vit"), tmp_path / "file", "android")
    assert (tmp_path / "file").read_text() == "keep me"


def test_missing_runtime_is_a_backend_not_installed_error(monkeypatch):
    from lraqvit_deploy.backends import _registry, get_backend
    from lraqvit_deploy.backends.executorch.backend import HostBackend

    class NeedsNothingHere(HostBackend):
        bench_requires = ("surely_not_an_installed_module",)
        install_hint = "surely-not (pip install surely-not)"

    import types

    mod = types.ModuleType("fake_backend_mod")
    mod.NeedsNothingHere = NeedsNothingHere
    monkeypatch.setitem(__import__("sys").modules, "fake_backend_mod", mod)
    monkeypatch.setitem(_registry._BACKENDS, "fake", ("fake_backend_mod", "NeedsNothingHere"))
    with pytest.raises(BackendNotInstalled) as e:
        get_backend("fake", "bench")
    assert str(e.value) == ("backend not installed: 'fake' needs surely-not (pip install surely-not) "
                            "(no module named 'surely_not_an_installed_module').")
    assert e.value.target == "fake"
