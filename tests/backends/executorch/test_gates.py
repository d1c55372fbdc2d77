"""The Android build's gates, each with the input that must fail it (NaN, a scale bug, a flipped sign) beside a
control that passes: host verification (FP32, PT2E INT8 vs the FP32 model), the INT8 agreement floor, and the
Arm check under qemu-aarch64 (a failure fails the build; the program is kept in OUT.failed/)."""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch

from conftest import make_tiny

pytest.importorskip("executorch.runtime")

from lraqvit_deploy.backends.base import BuildData  # noqa: E402
from lraqvit_deploy.backends.executorch import arm, backend  # noqa: E402
from lraqvit_deploy.backends.executorch.backend import AndroidBackend, AndroidBuildOptions  # noqa: E402
from lraqvit_deploy.errors import ToleranceError  # noqa: E402


def _build(model, out, **kw):
    opts = AndroidBuildOptions(**{"verify_images": 16, "progress": False, "arm_verify": False, **kw})
    return AndroidBackend().build(model, out, opts, BuildData(model)).manifest


def _keep(out):
    out.mkdir()
    (out / "keep.txt").write_text("an earlier build")


def test_nan_logits_fail_host_verification(tmp_path):
    """The backend's own gate (the build API refuses NaN weights earlier; this is the gate behind it)."""
    model = make_tiny("vit")
    with torch.no_grad():
        model.blocks[1].mlp.fc2.bias[0] = math.nan
    out = tmp_path / "android"
    _keep(out)
    with pytest.raises(ToleranceError, match=r"the .pte against the .* on 16 images: NaN/inf logits on 16 of 16 images.*Nothing was written"):
        _build(model, out, min_agreement=0.0, min_sqnr_db=0.0)  # even with every threshold at its weakest
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def _lowers_instead(monkeypatch, bug):
    """Make the build lower `bug(model copy)` while verifying against the model: an export bug."""
    import lraqvit_deploy.backends.executorch.export as export

    real = export.lower_to_xnnpack

    def lower(model, *a, **k):
        wrong = copy.deepcopy(model)
        with torch.no_grad():
            bug(wrong)
        return real(wrong, *a, **k)

    monkeypatch.setattr(export, "lower_to_xnnpack", lower)


def test_pt2e_int8_of_an_fp32_model_is_gated_against_the_fp32_model(tmp_path, monkeypatch):
    model = make_tiny("vit")
    man = _build(model, tmp_path / "ok", precision="q8")  # the control: PT2E INT8 here measures 30-43 dB
    ver = man["verification"]
    assert man["quantization"].startswith("PT2E") and ver["reference"] == "pytorch fp32 (before PT2E)"
    assert ver["min_sqnr_db"] == backend.DEFAULT_MIN_SQNR_DB["pt2e_dynamic"] == 20.0
    assert ver["sqnr_db"] >= 25.0
    # a scale bug: one layer's weights doubled in the program (7 dB measured)
    _lowers_instead(monkeypatch, lambda m: m.blocks[0].mlp.fc1.weight.mul_(2))
    out = tmp_path / "bad"
    _keep(out)
    with pytest.raises(ToleranceError, match=r"the .pte against the pytorch fp32 \(before PT2E\) on \d+ images: logit SQNR [\d.]+ dB < 20 dB"):
        _build(model, out, precision="q8")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_int8_agreement_floor_has_a_lower_bound():
    f = backend.default_min_agreement
    assert f("none", None) == backend.DEFAULT_MIN_AGREEMENT == 0.995
    assert f("pt2e_dynamic", None) == backend.DEFAULT_PT2E_MIN_AGREEMENT == 0.98
    assert f("quant_linear", 1.0) == 0.99 and f("quant_linear", 0.984) == pytest.approx(0.974)
    # an unstable simulator (80 % self-agreement) used to pull the floor to 79 %: a program agreeing on 85 %
    # passed. The floor stops at 95 %, so it fails now.
    assert f("quant_linear", 0.80) == backend.MIN_INT8_AGREEMENT_FLOOR == 0.95
    from lraqvit_deploy.finite import below

    assert below(0.85, f("quant_linear", 0.80)) and not below(0.96, f("quant_linear", 0.80))
    assert below(math.nan, f("quant_linear", math.nan))


# ---- the Arm check (qemu-aarch64) --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def toolchain():
    tc = arm.find_toolchain()
    if not tc:
        pytest.skip(f"Arm emulation toolchain unavailable: {tc.reason}")
    return tc


def test_arm_check_fails_on_a_flipped_sign_and_on_nan(toolchain, tmp_path):
    from lraqvit_deploy.backends.executorch.export import lower_to_xnnpack

    model = make_tiny("vit")
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    pte = tmp_path / "m.pte"
    pte.write_bytes(lower_to_xnnpack(model, "fp32").buffer)
    with torch.no_grad():
        ref = model(x)
    res = arm.arm_verification(pte, x, ref, cpus=["cortex-a76"], min_agreement=0.99, toolchain=toolchain)
    assert res["cpus"]["cortex-a76"]["status"] == "ok"  # the control
    res = arm.arm_verification(pte, x, -ref, cpus=["cortex-a76"], min_agreement=0.99, toolchain=toolchain)
    assert res["cpus"]["cortex-a76"]["status"] == "failed" and "top-1 agreement 0.00% < 99.0%" in res["cpus"]["cortex-a76"]["reason"]
    # with an SQNR gate (what the build passes) near-tie flips count as agreeing, and the SQNR catches the sign
    res = arm.arm_verification(pte, x, -ref, cpus=["cortex-a76"], min_agreement=0.99, min_sqnr_db=60.0,
                               toolchain=toolchain)
    e = res["cpus"]["cortex-a76"]
    assert e["status"] == "failed" and e["reason"].startswith("logit SQNR -6.0 dB < 60 dB"), e["reason"]
    ok = arm.arm_verification(pte, x, ref, cpus=["cortex-a76"], min_agreement=0.99, min_sqnr_db=60.0,
                              toolchain=toolchain)["cpus"]["cortex-a76"]
    assert ok["status"] == "ok" and (ok["sqnr_db"] is None or ok["sqnr_db"] >= 60.0)

    with torch.no_grad():
        model.blocks[0].mlp.fc1.bias[0] = math.nan
    pte.write_bytes(lower_to_xnnpack(model, "fp32").buffer)
    res = arm.arm_verification(pte, x, ref, cpus=["cortex-a76"], min_agreement=None, toolchain=toolchain)
    e = res["cpus"]["cortex-a76"]
    assert e["status"] == "failed" and e["reason"] == "NaN/inf logits on 4 of 4 images"  # even with no threshold


@pytest.fixture
def arm_flips_sign(monkeypatch, toolchain):
    """The emulated CPU computes the negated logits (the real program under real qemu, its output sign-flipped):
    what a wrong Arm kernel would give."""
    real = arm.run_native

    def flipped(*a, **k):
        out, info = real(*a, **k)
        return -out, info

    monkeypatch.setattr(arm.runner, "run_native", flipped)


def test_arm_failure_fails_the_build_and_keeps_the_program_aside(tmp_path, arm_flips_sign, capsys):
    """Exit 1 and one line; OUT untouched, the .pte + manifest in OUT.failed/; --accept-arm-failure writes OUT."""
    from lraqvit_deploy.artifacts import save_model_artifact
    from lraqvit_deploy.cli.main import main

    art = tmp_path / "art"
    save_model_artifact(art, make_tiny("deit"))
    args = ["build", "--target", "android", str(art), "--out", str(tmp_path / "a"), "--quiet", "--arm-cpus",
            "cortex-a55", "--arm-images", "2", "--verify-images", "8"]
    out = tmp_path / "a"
    _keep(out)
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("deploy build: error: the Arm check failed on emulated cortex-a55: logit SQNR -6.0 dB < "
                          "60 dB") and "--accept-arm-failure" in err and "\n" not in err, err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]  # OUT as it was
    aside = tmp_path / "a.failed"  # the program and its manifest, for inspection
    assert sorted(p.name for p in aside.iterdir()) == ["deit_tiny_patch16_224_xnnpack_fp32.pte", "manifest.json"]
    gate = json.loads((aside / "manifest.json").read_text())["arm_verification"]["gate"]
    assert gate["accepted"] is False and "cortex-a55" in gate["failed"] and gate["min_sqnr_db"] == 60.0
    # accepted explicitly: OUT is written and says so
    assert main(args + ["--accept-arm-failure"]) == 0
    assert json.loads((out / "manifest.json").read_text())["arm_verification"]["gate"]["accepted"] is True


def test_the_arm_check_is_bounded(toolchain, tmp_path):
    """A CPU model that runs past its time bound is stopped and recorded as "timeout" (the check incomplete, not
    failed); the whole check then takes about the bound x the CPU models, whatever the image count."""
    import time

    from lraqvit_deploy.options import OptionError

    with pytest.raises(OptionError, match="arm_timeout_s"):
        AndroidBuildOptions(arm_timeout_s=0)
    model = make_tiny("vit")
    t0 = time.perf_counter()
    man = _build(model, tmp_path / "a", arm_verify=True, arm_cpus="cortex-a55,max", arm_images=64,
                 arm_timeout_s=0.2)
    assert time.perf_counter() - t0 < 120
    cpus = man["arm_verification"]["cpus"]
    for cpu in ("cortex-a55", "max"):
        assert cpus[cpu]["status"] == "timeout" and "ran past 0.2 s and was stopped" in cpus[cpu]["reason"]
        assert cpus[cpu]["seconds"] < 10
    assert "gate" not in man["arm_verification"]  # not a failure: the build wrote OUT
    assert (tmp_path / "a" / "manifest.json").is_file()


def test_the_arm_budget_is_split_by_measured_speed(monkeypatch):
    """The staging logic of the bounded check (the runner's cost simulated; the real runner's bound is the test
    above): tracing past its share is dropped, one untraced image measures the speed, the rest of the budget runs
    as many images as fit, and a partial result is scored and said to be partial."""
    import time

    def fake_run(pte, images, cpu=None, threads=1, iterations=0, toolchain=None, trace_kernels=False, timeout=None,
                 **kw):
        cost = 1.0 if trace_kernels else 0.05 * len(images)  # tracing is slow
        if timeout is not None and cost > timeout:
            time.sleep(timeout)
            raise arm.ArmTimeout(f"pte_runner on {cpu} ran past {timeout:g} s and was stopped")
        time.sleep(cost)
        return images.flatten(1)[:, :3].clone(), {"wall_s": cost, "cpu_features": {"features": ["asimd"]}}

    monkeypatch.setattr(arm.runner, "run_native", fake_run)
    x = torch.randn(20, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    ref = x.flatten(1)[:, :3]
    res = arm.arm_verification("m.pte", x, ref, cpus=["cortex-a76"], timeout_per_cpu=1.0, min_sqnr_db=60.0,
                               toolchain=arm.ArmToolchain(None, Path("r"), Path("q"), "10.0.0", Path("/"), (), None))
    e = res["cpus"]["cortex-a76"]
    assert e["status"] == "ok" and e["kernels"]["method"] == "not traced"
    assert 2 <= e["n_images"] < 20 and e["images_planned"] == 20 and "images ran within the 1 s budget" in e["budget_note"]
    assert e["seconds_per_image"] == pytest.approx(0.05, rel=0.5) and e["seconds"] < 1.5
    # unbounded: every image runs, the traced one included, no note
    full = arm.arm_verification("m.pte", x, ref, cpus=["cortex-a76"], timeout_per_cpu=None, trace_kernels=False,
                                toolchain=arm.ArmToolchain(None, Path("r"), Path("q"), "10.0.0", Path("/"), (), None))
    assert full["cpus"]["cortex-a76"]["n_images"] == 20 and full["cpus"]["cortex-a76"]["budget_note"] is None
