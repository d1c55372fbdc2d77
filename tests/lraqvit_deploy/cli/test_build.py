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


def test_the_cli_targets_come_from_the_backend_registry(monkeypatch, capsys):
    """A backend registered with `register_backend` is a `deploy build` / `bench` target with its own options."""
    import sys
    import types
    from dataclasses import dataclass

    import pytest

    from lraqvit_deploy.backends import _registry, register_backend
    from lraqvit_deploy.backends.base import Backend, BuildOptions
    from lraqvit_deploy.cli.main import main as cli_main
    from lraqvit_deploy.options import option

    @dataclass(frozen=True)
    class ToyBuildOptions(BuildOptions):
        """toy target: a test backend"""
        toy_level: int = option(3, "how toy", min=1)

    class ToyBackend(Backend):
        name = "toy"
        build_options = ToyBuildOptions

    mod = types.ModuleType("toy_backend_for_test")
    mod.ToyBackend = ToyBackend
    monkeypatch.setitem(sys.modules, "toy_backend_for_test", mod)
    monkeypatch.setattr(_registry, "_BACKENDS", dict(_registry._BACKENDS))
    register_backend("toy", "toy_backend_for_test", "ToyBackend")
    with pytest.raises(SystemExit):
        cli_main(["build", "--help"])
    out = capsys.readouterr().out
    assert "toy" in out.split("--target")[1].split("\n")[0] and "--toy-level" in out and "toy options" in out
    with pytest.raises(SystemExit):
        cli_main(["bench", "--help"])
    assert "toy" not in capsys.readouterr().out.split("--target")[1].split("\n")[0]  # it cannot bench
