"""`deploy build --target jetson` for timm models and INT8 artifacts, with no data flags at all."""
import json

import pytest

from lraqvit_deploy.cli.main import main

TINY = ["--model", "deit_tiny_patch16_224", "--weights", "random", "--img-size", "32", "--num-classes", "10"]
pytestmark = pytest.mark.usefixtures("one_thread")


def test_jetson_build_of_a_timm_model_needs_no_flags(tmp_path):
    assert main(["build", "--target", "jetson", *TINY, "--out", str(tmp_path / "j"), "--quiet",
                 "--json", str(tmp_path / "j.json")]) == 0
    man = json.loads((tmp_path / "j" / "manifest.json").read_text())
    assert man["format"] == "lraqvit-deploy/jetson/1" and man["n_images"] == 64  # seeded synthetic images
    assert "synthetic" in json.loads((tmp_path / "j.json").read_text())["calibration_note"]


def test_jetson_build_of_an_int8_artifact_needs_no_flags(tmp_path):
    art = tmp_path / "q8"
    assert main(["compress", *TINY, "--quant", "per-token", "--calib-data", "fashion-mnist:train", "--calib-images",
                 "8", "--out", str(art), "--quiet"]) == 0
    assert main(["build", "--target", "jetson", str(art), "--out", str(tmp_path / "j"), "--quiet"]) == 0
    man = json.loads((tmp_path / "j" / "manifest.json").read_text())
    assert "recorded at its quantization" in man["quantization"]["how"]
    assert main(["build", "--target", "android", str(art), "--out", str(tmp_path / "a"), "--quiet",
                 "--no-arm-verify"]) == 0
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["precision"] == "q8"


def test_backend_option_flags_reach_the_backend(tmp_path):
    assert main(["build", "--target", "android", *TINY, "--out", str(tmp_path / "a"), "--quiet", "--skip-verify",
                 "--delegate-layernorm"]) == 0
    man = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert man["verification"] is None and man["layernorm"].startswith("xnnpack")
