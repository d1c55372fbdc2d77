"""backends/executorch/arm/: a tiny INT8 ViT under qemu-aarch64 on several phone-core models.

The emulated tests need Debian trixie's qemu-aarch64 10.x, g++-aarch64-linux-gnu (its sysroot)
and PyPI's aarch64 executorch wheel, all installed by `bash scripts/install.sh`; without them they
skip with `find_toolchain().reason`. Emulated runs of the 32-px model take about a second each.
"""
from __future__ import annotations

import stat
from pathlib import Path

import pytest
import torch

from conftest import make_tiny
from lraqvit_deploy.backends.executorch import arm


@pytest.fixture(scope="module")
def toolchain():
    tc = arm.find_toolchain()
    if not tc:
        pytest.skip(f"Arm emulation toolchain unavailable: {tc.reason}")
    return tc


@pytest.fixture(scope="module")
def tiny_q8(tmp_path_factory):
    """(program, images, host executorch.runtime logits) of a tiny PT2E dynamic-INT8 ViT."""
    from executorch.runtime import Runtime

    from lraqvit_deploy.backends.executorch.export import lower_to_xnnpack

    path = tmp_path_factory.mktemp("arm") / "tiny_q8.pte"
    path.write_bytes(lower_to_xnnpack(make_tiny("vit"), "q8").buffer)
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    method = Runtime.get().load_program(str(path)).load_method("forward")
    ref = torch.cat([method.execute([x[i : i + 1].contiguous()])[0] for i in range(len(x))])
    return path, x, ref


def test_cpu_matrix_and_kernel_table():
    assert set(arm.DEFAULT_CPUS) <= set(arm.CPU_MATRIX)
    e = arm.expected_int8_gemm
    assert "16x4c4__aarch64_neondot_mstep4" in e(["asimd", "asimddp"])["xnnpack"][0]
    assert "neoni8mm" in " ".join(e(["asimddp", "i8mm", "sve2"])["xnnpack"])
    assert all("neonsme" in k and "sme2" not in k for k in e(["asimddp", "i8mm", "sme"])["xnnpack"])
    assert all("neonsme2" in k for k in e(["i8mm", "sme", "sme2"])["xnnpack"])
    assert e(["asimd"], "0xd03")["xnnpack"] == ["xnn_qd8_f32_qc8w_gemm_minmax_ukernel_4x16__neon_mlal_lane_prfm"]
    assert e(["asimd"], "0xd08")["xnnpack"] == ["xnn_qd8_f32_qc8w_gemm_minmax_ukernel_2x8c2s4__neon_mlal"]
    assert set(arm.KAI_INT8_GEMMS) >= {k for f in (["asimddp"], ["i8mm"], ["sme"], ["sme2"]) for k in e(f)["kai"]}


def _fake_qemu(tmp_path: Path, version_line: str) -> Path:
    p = tmp_path / f"qemu-aarch64-{abs(hash(version_line))}"
    p.write_text(f"#!/bin/sh\necho '{version_line}'\n")
    p.chmod(p.stat().st_mode | stat.S_IEXEC)
    return p


def test_known_bad_qemu_is_refused(tmp_path, monkeypatch):
    bad = _fake_qemu(tmp_path, "qemu-aarch64 version 7.2.0 (Debian 1:7.2+dfsg-7+deb12u7)")
    version, why = arm.check_qemu(bad)
    assert version == "7.2.0" and "emulates SME wrongly" in why and "\n" not in why
    assert arm.check_qemu(_fake_qemu(tmp_path, "qemu-aarch64 version 10.0.13 (Debian 1:10.0.13+ds-0+deb13u1)")) \
        == ("10.0.13", None)
    assert "older than the tested 10.x" in arm.check_qemu(_fake_qemu(tmp_path, "qemu-aarch64 version 8.2.2"))[1]

    monkeypatch.setenv("LRAQVIT_QEMU_AARCH64", str(bad))
    tc = arm.find_toolchain(build=False, refresh=True)
    try:
        assert not tc and "emulates SME wrongly" in tc.reason
        res = arm.arm_verification("x.pte", torch.zeros(2, 3, 32, 32), torch.zeros(2, 10), cpus=["cortex-a55"],
                                   toolchain=tc)
        assert res["skipped"] == tc.reason
        assert res["cpus"]["cortex-a55"]["status"] == "skipped"
    finally:
        monkeypatch.delenv("LRAQVIT_QEMU_AARCH64")
        arm.find_toolchain(build=False, refresh=True)


def test_elf_functions_reads_the_dynamic_symbols():
    import executorch

    lib = Path(list(executorch.__path__)[0]) / "lib" / arm.XNNPACK_LIB
    if not lib.is_file():
        pytest.skip(f"no {lib}")
    names = {n for _, _, n in arm.elf_functions(lib)}
    assert "xnn_create_fully_connected_nc_qd8_f32_qc8w" in names


def test_arm_verification_on_phone_cores(toolchain, tiny_q8):
    pte, x, ref = tiny_q8
    cpus = ["cortex-a53", "cortex-a55", "cortex-a710", "max", "no-such-cpu"]
    res = arm.arm_verification(pte, x, ref, cpus=cpus, min_agreement=1.0, timeout_per_cpu=300)
    print("\n" + arm.format_table(res))
    assert res["schema"] == arm.SCHEMA and res["skipped"] is None and res["n_images"] == 6
    assert list(res["cpus"]) == cpus
    bad = res["cpus"]["no-such-cpu"]
    assert bad["status"] == "failed" and "no-such-cpu" in bad["reason"]
    for cpu in cpus[:-1]:
        e = res["cpus"][cpu]
        assert e["status"] == "ok", (cpu, e["reason"])
        assert e["agreement"] == 1.0 and e["min_cosine"] > 0.99999 and e["max_abs_diff"] < 1e-4
        assert e["sqnr_db"] is None or e["sqnr_db"] > 80
    k = {cpu: res["cpus"][cpu]["kernels"] for cpu in cpus[:-1]}
    for cpu, family in (("cortex-a55", "neondot"), ("cortex-a710", "neoni8mm"), ("max", "neonsme")):
        assert k[cpu]["method"] == "observed" and k[cpu]["matches_expected"], (cpu, k[cpu])
        assert any(family in u for u in k[cpu]["xnnpack_ukernels"])
    assert "asimddp" in k["cortex-a55"]["features"] and "i8mm" not in k["cortex-a55"]["features"]
    assert k["cortex-a710"]["int8_instructions"].get("smmla", 0) > 0
    assert k["max"]["int8_instructions"].get("smopa", 0) > 0
    # no dotprod: XNNPACK's own qd8 kernels (hidden symbols) -> inferred, backed by the smlal seen
    assert k["cortex-a53"]["method"] == "inferred" and k["cortex-a53"]["int8_gemm"] == []
    assert k["cortex-a53"]["int8_instructions"].get("smlal", 0) > 0


def test_run_native_under_qemu_matches_host(toolchain, tiny_q8):
    pte, x, ref = tiny_q8
    host, _ = arm.run_native(pte, x[:2], cpu=None)
    emu, info = arm.run_native(pte, x[:2], cpu="cortex-a76", iterations=1)
    assert (host - ref[:2]).abs().max().item() <= 1e-5
    assert (emu - host).abs().max().item() < 1e-4
    assert info["cpu"] == "cortex-a76" and info["cpu_features"]["cpu_part"] == "0xd0b"
    assert len(info["times_ms"]) == 1 and "kernels" not in info


def test_host_bench_with_the_native_runner(tiny_q8, tmp_path):
    """`deploy bench --target host --runtime native`: the C++ pte_runner times the program (x86-64 build)."""
    from lraqvit_deploy import HostBenchOptions, bench
    from lraqvit_deploy.cli.main import main

    runner, why = arm.build_runner("host")
    if runner is None:
        pytest.skip(f"host pte_runner unavailable: {why}")
    path, x, ref = tiny_q8
    r = bench(path, HostBenchOptions(iterations=4, warmup=1, threads=1, runtime="native"))
    assert r.iterations == 4 and len(r.extra["times_ms"]) == 4 and 0 < r.min_ms <= r.median_ms <= r.max_ms
    assert r.extra["runtime"].startswith("pte_runner") and r.threads == 1 and r.load_ms > 0
    out, _ = arm.run_native(path, x, cpu=None)  # and what it times computes what the Python runtime does
    assert torch.allclose(out, ref, atol=1e-5)
    js = tmp_path / "bench.json"
    assert main(["bench", "--target", "host", str(path), "--runtime", "native", "-n", "3", "--json", str(js)]) == 0
    assert "pte_runner" in __import__("json").loads(js.read_text())["extra"]["runtime"]
    with pytest.raises(SystemExit) as e:  # a bad choice: one line, exit 1
        main(["bench", "--target", "host", str(path), "--runtime", "cpp"])
    assert e.value.code == 1


def test_default_image_count_follows_the_model_compute():
    """The Arm check's default size fits ARM_GFLOP_BUDGET per emulated CPU: all 32 images for a small
    model, the minimum for DeiT-S at 224 px (whose 32 images took minutes per CPU under qemu)."""
    import timm

    from lraqvit_deploy.backends.executorch import backend

    assert backend.AndroidBuildOptions().arm_images is None  # the default is the compute-sized count
    assert backend.arm_image_count(make_tiny("vit")) == backend.ARM_IMAGES_MAX
    deit_s = timm.create_model("deit_small_patch16_224", pretrained=False, num_classes=10)
    assert backend.arm_image_count(deit_s) == backend.ARM_IMAGES_MIN
    # in between: the budget divided by the model's GFLOPs
    budget_model = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=10, img_size=112)
    from lraqvit_deploy.evaluate import count_gflops

    expected = int(backend.ARM_GFLOP_BUDGET // count_gflops(budget_model))
    assert backend.ARM_IMAGES_MIN < expected < backend.ARM_IMAGES_MAX
    assert backend.arm_image_count(budget_model) == expected
