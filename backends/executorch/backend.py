"""The `android` and `host` targets: an XNNPACK .pte plus manifest.json, verified and timed on this host.

* `AndroidBackend.build`: lower to ExecuTorch/XNNPACK (FP32, the artifact's own INT8 scales, or
  PT2E INT8), write `{model}_xnnpack_{precision}.pte` + manifest atomically, run it on this host
  against the PyTorch model; `AndroidBackend.bench` times it on an adb-attached phone
  (`lraqvit_deploy.android_runner`).
* `HostBackend.bench`: time a .pte in-process with the ExecuTorch runtime.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Dict, Optional

from lraqvit_deploy.errors import DeployError, ToleranceError
from lraqvit_deploy.measure.latency import prediction_entries
from lraqvit_deploy.measure.stages import stage
from lraqvit_deploy.model_info import model_info
from lraqvit_deploy.options import option

from ..base import Backend, BenchOptions, BuildData, BuildOptions, BuildResult

FORMAT = "lraqvit-deploy/android/1"
DEFAULT_MIN_AGREEMENT = 0.995
NOISE_MARGIN = 0.01  # INT8: allowed shortfall below the simulator's own agreement with itself
# ... but never below this: a simulator that flips more than 5 % of its predictions under a 1e-6
# input change is itself broken (the test bed's measures 98.4 %), and a floor that followed it down
# would let a broken lowering through (docs/android.md, "Gates")
MIN_INT8_AGREEMENT_FLOOR = 0.95
# PT2E dynamic INT8 of an FP32 model, gated against the FP32 model (real images): measured on this
# repo's AMD EPYC (AVX-512) host: test bed 0.997 (1.000 with its 3 near-tie flips counted), 33.4 dB,
# min cosine 0.998; tiny random ViT/DeiT/DINOv2/Swin 30.4-42.7 dB; scale bugs 7-15 dB
# (benchmarks/results/gates_issue24.json). The gates keep ~10 dB and 2 % of margin.
DEFAULT_PT2E_MIN_AGREEMENT = 0.98
# the Arm check's default size: images per emulated CPU within this compute (torch's count, a multiply-add = 2)
ARM_GFLOP_BUDGET = 24.0
ARM_IMAGES_MIN, ARM_IMAGES_MAX = 2, 32
# Each emulated CPU's run is stopped after this long: the test bed's INT8 program at its default 32
# images took 10-23 s per CPU model (benchmarks/results/arm_verification/testbed_rb_lra_wads.json),
# so 300 s is >10x the slowest, and the whole check is bounded by 300 s x the CPU models.
ARM_TIMEOUT_S = 300.0
# Minimum logit SQNR vs the reference, per lowering: FP32 differs only in float order (~100 dB
# seen); the artifact's INT8 in XNNPACK's rounding of the same scales (55-130 dB seen on tiny
# models); PT2E-from-FP32 quantizes here, against the FP32 model (30.4-42.7 dB seen, above).
DEFAULT_MIN_SQNR_DB = {"none": 60.0, "quant_linear": 20.0, "pt2e_dynamic": 20.0}
PRECISIONS = ("auto", "fp32", "q8")


@dataclass(frozen=True)
class AndroidBuildOptions(BuildOptions):
    """How `build(..., target="android")` lowers and checks the .pte."""

    target: ClassVar[str] = "android"
    precision: str = option("auto", "auto: q8 when the model holds QuantLinear layers (their scales are kept), else "
                                    "fp32; q8 on an FP32 model applies PT2E dynamic INT8 (per-channel weights, "
                                    "per-token activations)", choices=PRECISIONS)
    verify: bool = option(True, "run the .pte on this host after building and gate on agreement", flag="--skip-verify")
    verify_images: Optional[int] = option(None, "images for host verification (default: the whole eval set; 64 "
                                                "seeded synthetic images for models without data)", min=1,
                                          max=1_000_000, metavar="N")
    min_agreement: Optional[float] = option(None, f"fail unless the .pte agrees with the reference on >= F of the "
                                                  f"labelled images (synthetic ones: reported, gated by SQNR) "
                                                  f"(default {DEFAULT_MIN_AGREEMENT} for FP32; for QuantLinear "
                                                  f"INT8 min({DEFAULT_MIN_AGREEMENT}, the simulator's self-agreement "
                                                  f"under a 1e-6 input change - {NOISE_MARGIN}), never below "
                                                  f"{MIN_INT8_AGREEMENT_FLOOR}; {DEFAULT_PT2E_MIN_AGREEMENT} for PT2E "
                                                  "INT8 of an FP32 model, against the FP32 model)", min=0, max=1,
                                          metavar="F")
    min_sqnr_db: Optional[float] = option(None, "fail unless the .pte's logits are within this SQNR (dB) of the "
                                                "reference's (default 60 for FP32, 20 for the artifact's INT8 and for "
                                                "PT2E INT8 against the FP32 model); checked on every model, synthetic "
                                                "inputs included; NaN/inf logits always fail",
                                          min=0, max=400, metavar="DB")
    delegate_layernorm: bool = option(False, "express LayerNorm in XNNPACK ops (one delegate segment instead of ~2 "
                                             "per block)")
    shape_passes: bool = option(True, "move expand/squeeze/select into the delegate", flag="--no-shape-passes")
    arm_verify: bool = option(True, "run the .pte under qemu-aarch64 on emulated phone cores when the Arm "
                                    "toolchain is installed (scripts/install.sh); absent: a recorded skip",
                              flag="--no-arm-verify")
    arm_cpus: str = option("cortex-a55,cortex-a76,cortex-a710,max", "qemu CPU models for the Arm check "
                           "(a55: little cores; a76: dotprod big cores; a710: Armv9 i8mm ~ Cortex-X3; max: SME)",
                           metavar="CPU,CPU")
    arm_images: Optional[int] = option(None, f"verification images run on each emulated CPU (emulation is ~100x "
                                             f"slower; default: as many as fit {ARM_GFLOP_BUDGET:g} GFLOPs per CPU, "
                                             f"{ARM_IMAGES_MIN}..{ARM_IMAGES_MAX}: 32 at 56 px, 2 for DeiT-S at 224)",
                                       min=1, max=100_000, metavar="N")
    arm_min_agreement: float = option(0.99, "an emulated CPU below this agreement with the reference (near-tie "
                                            "flips counted; on real images of a trained model, like the host gate, "
                                            "and never above the host gate's threshold), below the host's SQNR gate, "
                                            "or that fails to run the .pte or gives NaN/inf logits, fails the build: "
                                            "exit 1, the .pte and manifest kept in OUT.failed/ for inspection",
                                      min=0, max=1, metavar="F")
    arm_timeout_s: float = option(ARM_TIMEOUT_S, "seconds each emulated CPU may run before it is stopped and "
                                                 "recorded as timed out (a warning, not a failure): the Arm check "
                                                 "takes at most this x the CPU models", min=0.1, max=86_400,
                                  metavar="S")
    accept_arm_failure: bool = option(False, "write OUT even when an emulated Arm CPU fails the check (the manifest "
                                             "records the failure as accepted); for inspecting a known qemu problem, "
                                             "never for a release")

    def validate(self) -> None:
        if not [c for c in self.arm_cpus.split(",") if c.strip()]:
            raise DeployError(f"arm_cpus = {self.arm_cpus!r}: name at least one qemu CPU model, e.g. cortex-a710.")


@dataclass(frozen=True)
class HostBenchOptions(BenchOptions):
    """Timing a .pte in this process (ExecuTorch runtime, XNNPACK)."""

    target: ClassVar[str] = "host"
    op_profile: bool = option(False, "also profile per-operator time with ETDump (non-delegated ops show here)")
    runtime: str = option("python", "what runs the .pte: python = the ExecuTorch runtime in this process; native = "
                         "android_runner/native's pte_runner (C++, the same Module API an app uses), built on "
                         "first use with `bash android_runner/native/build.sh host`", choices=("python", "native"),
                         flag="--runtime")


def _labels(model) -> Optional[list]:
    from lraqvit_deploy.data import FASHION_MNIST_CLASSES
    from lraqvit_deploy.data_sources import is_testbed

    return list(FASHION_MNIST_CLASSES) if is_testbed(model) else None


def _precision(model, requested: str) -> str:
    from .quant_lowering import has_quant_linear

    if requested == "auto":
        return "q8" if has_quant_linear(model) else "fp32"
    return requested


class AndroidBackend(Backend):
    name = "android"
    description = "ExecuTorch .pte with the XNNPACK delegate (Android phones; verified and timed on this host)"
    build_options = AndroidBuildOptions
    build_requires = ("executorch",)
    install_hint = "executorch==1.5.1 (pip install executorch==1.5.1)"

    @property
    def bench_options(self):  # the phone half lives in android_runner (adb); imported on use
        from lraqvit_deploy.android_runner.bench import AndroidBenchOptions

        return AndroidBenchOptions

    def build(self, model, out: Path, options: AndroidBuildOptions, data: BuildData) -> BuildResult:
        """Lower, write `{model}_xnnpack_{precision}.pte` + manifest.json atomically, verify on this host."""
        from lraqvit_deploy.artifacts import MANIFEST, atomic_dir, sha256_file, versions, write_json

        from .export import lower_to_xnnpack
        from .quant_lowering import act_symmetric_flags

        precision = _precision(model, options.precision)
        spec = model_info(model).spec
        name = (spec.name if spec else type(model).__name__).replace("/", "_")
        if options.progress:
            print(f"lowering {name} to ExecuTorch/XNNPACK ({precision}) ...", flush=True)
        if options.verify:
            data.verification(options.verify_images)  # load (and check) the images before lowering
        with stage("lower"):
            lowered = lower_to_xnnpack(model, precision, shape_passes=options.shape_passes,
                                       delegate_layernorm=options.delegate_layernorm)
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        filename = f"{name}_xnnpack_{precision}.pte"
        manifest: Dict[str, Any] = {
            "format": FORMAT,
            "program": filename,
            "method": "forward",
            "precision": precision,
            "quantization": {
                "none": "none",
                "quant_linear": "artifact QuantLinear integers and scales kept: int8 / int4 per-channel weights "
                                "(float32 scales; XNNPACK qc8w / qc4w) or blockwise int4 (bfloat16 scales; qb4w), "
                                "XNNPACK qd8 dynamic per-token asymmetric activations",
                "pt2e_dynamic": "PT2E XNNPACKQuantizer: int8 per-channel symmetric weights, dynamic per-token "
                                "activations",
            }[lowered.quantization],
            "input": {"shape": list(lowered.input_shape), "dtype": "float32", "layout": "NCHW"},
            "preprocessing": {k: cfg.get(k) for k in ("mean", "std", "interpolation", "crop_pct", "crop_mode")},
            "labels": _labels(model),
            # the model's own head: timm's pretrained_cfg keeps the checkpoint's 1000 when num_classes is overridden
            "num_classes": getattr(model, "num_classes", None) or cfg.get("num_classes"),
            "delegation": lowered.delegation.to_dict(),
            "delegated_fraction": round(lowered.delegation.delegated_fraction, 4),
            "layernorm": "xnnpack (4-D mean formulation)" if options.delegate_layernorm else "portable",
            "source": spec.to_dict() if spec else None,
        }
        if lowered.quantization == "quant_linear":
            from lraqvit_deploy.quant.forms import forms_summary

            manifest["simulator_act_symmetric"] = sorted(act_symmetric_flags(model))
            manifest["weight_forms"] = forms_summary(model)  # e.g. {"w4g32": 11, "w8": 31}: matrices per form
        info = model_info(model)
        compression = info.compression or (info.manifest or {}).get("compression") or {}
        if compression.get("planned_size_mb") is not None:  # a --size-budget-mb plan: planned beside built
            manifest["size_budget_mb"] = (compression.get("config") or {}).get("size_budget_mb")
            manifest["planned_size_mb"] = compression["planned_size_mb"]
        manifest.update(prediction_entries(model))  # a latency-budget plan: `deploy bench` shows both
        with atomic_dir(out) as tmp:
            pte = tmp / filename
            pte.write_bytes(lowered.buffer)
            manifest["sha256"] = sha256_file(pte)
            manifest["size_mb"] = round(pte.stat().st_size / 1e6, 4)
            manifest.update(agreement=None, top1=None, verification=None)
            arm_failed = {}
            if options.verify:
                with stage("verify"):
                    manifest.update(_verify(model, pte, lowered.quantization, options, data))
                with stage("arm_verify"):
                    manifest["arm_verification"] = _arm_verify(model, pte, options, data, manifest["verification"])
                arm_failed = arm_failures(manifest["arm_verification"])
                if arm_failed:
                    manifest["arm_verification"]["gate"] = {
                        "failed": arm_failed, "accepted": options.accept_arm_failure,
                        "min_agreement": manifest["arm_verification"].get("min_agreement"),
                        "min_sqnr_db": manifest["arm_verification"].get("min_sqnr_db")}
            manifest["versions"] = versions()
            write_json(tmp / MANIFEST, manifest)
            if arm_failed and not options.accept_arm_failure:
                kept = _set_aside(tmp, failed_dir(out))
                cpu, why = next(iter(arm_failed.items()))
                more = f" (and {len(arm_failed) - 1} more CPU model{'s' if len(arm_failed) > 2 else ''})" \
                    if len(arm_failed) > 1 else ""
                raise ToleranceError(
                    f"the Arm check failed on emulated {cpu}{more}: {why}; {out} was not written, the .pte and its "
                    f"manifest are in {kept} for inspection. Pass --accept-arm-failure to write {out} anyway "
                    "(recorded in its manifest), or --no-arm-verify to skip the check.")
            if arm_failed and options.progress:
                print(f"warning: Arm check failed on {', '.join(arm_failed)} (accepted by --accept-arm-failure, "
                      "recorded in the manifest)")
        return BuildResult(self.name, Path(out), manifest)

    def bench(self, program: Path, options):
        from lraqvit_deploy.android_runner.bench import bench

        return bench(program, options)


def _verify(model, pte: Path, scheme: str, options: AndroidBuildOptions, data: BuildData) -> Dict[str, Any]:
    from .verify import verify_program

    v_data = data.verification(options.verify_images)
    ref = {"none": "pytorch fp32", "quant_linear": "quantization simulator model(x)",
           "pt2e_dynamic": "pytorch fp32 (before PT2E)"}[scheme]
    v = verify_program(pte, model, v_data.images, v_data.labels, ref, v_data.description, options.progress,
                       self_check=scheme == "quant_linear")
    # Gates (docs/android.md): output closeness for every model; top-1 agreement only on real images
    # (on synthetic inputs a random model's logits are nearly tied, so one flipped argmax is noise).
    min_sqnr = options.min_sqnr_db if options.min_sqnr_db is not None else DEFAULT_MIN_SQNR_DB.get(scheme)
    threshold = options.min_agreement
    from lraqvit_deploy.models import has_random_weights

    # a random-weight model's logits are near-tied on real images too: agreement is reported, not gated
    real = not v_data.synthetic and not has_random_weights(model)
    threshold = default_min_agreement(scheme, v.reference_self_agreement) if threshold is None and real else threshold
    # One gate implementation (lraqvit_deploy.measure.closeness): NaN/inf logits always fail; the agreement
    # gate counts near-tie flips (the reference's two logits closer than twice the typical logit error) as
    # agreeing: top-1 agreement is ill-conditioned there, whatever the kernel (docs/android.md). NaN fails.
    from lraqvit_deploy.measure.closeness import gate_problems

    problems = gate_problems(v.metrics(), {"min_agreement": threshold, "min_sqnr_db": min_sqnr})
    if problems:
        fix = ("Check the QuantLinear settings (XNNPACK runs act_scheme='per_token_dynamic'; act_symmetric=False is "
               "its arithmetic) or pass --min-agreement / --min-sqnr-db." if not (v.nonfinite_outputs or
                                                                                  v.nonfinite_reference)
               else "Non-finite logits are never accepted; check the model's inputs and weights.")
        raise ToleranceError(f"the .pte against the {ref} on {v.n_images} images: {'; '.join(problems)} (reference "
                             f"self-agreement under a 1e-6 input change: {v.reference_self_agreement}). Nothing was "
                             f"written. {fix}")
    return {"agreement": round(v.agreement, 6), "top1": None if v.top1 is None else round(v.top1, 3),
            "verification": {**v.to_dict(), "min_agreement": threshold, "min_sqnr_db": min_sqnr,
                             "synthetic": v_data.synthetic}}


def default_min_agreement(scheme: str, self_agreement: Optional[float]) -> float:
    """The agreement gate on real images when --min-agreement is not given (docs/android.md, "Gates")."""
    if scheme == "quant_linear":
        # Per-token INT8 is discontinuous: the simulator flips predictions under a 1e-6 input change
        # (test bed: 98.4% self-agreement), so no kernel that is not bit-exact with PyTorch can beat that;
        # but a simulator that unstable is broken itself, hence the floor.
        own = 1.0 if self_agreement is None or not math.isfinite(self_agreement) else self_agreement
        return max(MIN_INT8_AGREEMENT_FLOOR, min(DEFAULT_MIN_AGREEMENT, own - NOISE_MARGIN))
    if scheme == "pt2e_dynamic":
        return DEFAULT_PT2E_MIN_AGREEMENT
    return DEFAULT_MIN_AGREEMENT


def arm_image_count(model) -> int:
    """The Arm check's default image count: as many as fit `ARM_GFLOP_BUDGET` GFLOPs on each emulated CPU
    (qemu runs ~100x slower than the host; a Cortex-A55 without dotprod slower still)."""
    from lraqvit_deploy.evaluate import count_gflops

    try:
        gflops = count_gflops(model)
    except Exception:  # a model torch's counter cannot trace: the smallest check
        return ARM_IMAGES_MIN
    return int(min(ARM_IMAGES_MAX, max(ARM_IMAGES_MIN, ARM_GFLOP_BUDGET // max(gflops, 1e-9))))


def _arm_verify(model, pte: Path, options: AndroidBuildOptions, data: BuildData,
                host: Dict[str, Any]) -> Dict[str, Any]:
    """The program on emulated phone cores (qemu-aarch64) against the simulator; per-CPU results, never raises.

    The gates are the host verification's (`host`: its `min_sqnr_db`, and its `min_agreement` when it
    gates agreement at all, capped at `arm_min_agreement`), with near-tie flips counted the same way.
    """
    import torch

    from .arm import arm_verification, find_toolchain

    if not options.arm_verify:
        return {"skipped": "disabled (--no-arm-verify)", "cpus": {}}
    toolchain = find_toolchain()
    if not toolchain:
        if options.progress:
            print(f"note: Arm check skipped: {toolchain.reason}")
        return {"skipped": toolchain.reason, "cpus": {}}
    n = options.arm_images if options.arm_images is not None else arm_image_count(model)
    v = data.verification(n)
    images = v.images[:n]
    with torch.no_grad():
        reference = model.eval()(images)
    if options.progress:
        print(f"running the .pte under qemu-aarch64 on {options.arm_cpus} ({len(images)} images each) ...", flush=True)
    host_agreement = host.get("min_agreement")
    result = arm_verification(pte, images, reference, None if v.labels is None else v.labels[: len(images)],
                              cpus=[c.strip() for c in options.arm_cpus.split(",") if c.strip()],
                              min_agreement=None if host_agreement is None else min(options.arm_min_agreement,
                                                                                    host_agreement),
                              min_sqnr_db=host.get("min_sqnr_db"), toolchain=toolchain, progress=options.progress,
                              timeout_per_cpu=options.arm_timeout_s)
    slow = [c for c, r in result["cpus"].items() if r.get("status") == "timeout"]
    if slow and options.progress:
        print(f"warning: Arm check incomplete: {', '.join(slow)} ran past --arm-timeout-s {options.arm_timeout_s:g} "
              "and were stopped (recorded in the manifest; pass fewer --arm-images or a longer --arm-timeout-s)")
    result["reference"] = "the PyTorch model the .pte was lowered from (the quantization simulator for INT8)"
    result["data"] = v.description
    return result


def arm_failures(result: Dict[str, Any]) -> Dict[str, str]:
    """{qemu cpu: reason} of the emulated CPUs that failed the Arm check (skipped ones are not failures)."""
    return {c: str(r.get("reason")) for c, r in (result or {}).get("cpus", {}).items() if r.get("status") == "failed"}


def failed_dir(out) -> Path:
    """Where a build that failed its Arm gate keeps the .pte and manifest: OUT.failed (next to OUT)."""
    out = Path(out)
    return out.with_name(out.name + ".failed")


def _set_aside(tmp: Path, dest: Path) -> Path:
    """Move the finished build in `tmp` to `dest` (replacing an earlier failed build there, atomically)."""
    import os

    from lraqvit_deploy.artifacts import atomic_dir

    with atomic_dir(dest) as aside:
        for f in list(tmp.iterdir()):
            os.replace(f, aside / f.name)
    return dest


class HostBackend(Backend):
    name = "host"
    description = "this machine's CPU through the ExecuTorch runtime (runs android .pte files; no build of its own)"
    bench_options = HostBenchOptions
    bench_requires = ("executorch",)
    install_hint = "executorch==1.5.1 (pip install executorch==1.5.1)"

    def bench(self, program: Path, options: HostBenchOptions):
        from .host_bench import bench

        return bench(program, options)
