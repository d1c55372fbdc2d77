"""Run a .pte on emulated phone CPUs: the native pte_runner under qemu-aarch64, per CPU model.

No phone is needed to check that an ExecuTorch program computes the same thing on Arm as on this
host. `android_runner/native/pte_runner.cpp`, cross-built against PyPI's linux-aarch64 executorch
wheel (the same ExecuTorch and XNNPACK as the host wheel), runs under qemu-aarch64 user-mode with
`-cpu MODEL`. XNNPACK picks its GEMM micro-kernels from the CPU features the emulated CPU reports
(getauxval HWCAP/HWCAP2 through cpuinfo), so each model of `CPU_MATRIX` runs the kernel family a
real phone core with that ISA would run. Emulated time is not latency: the numbers here are for
correctness only.

Which kernels ran is **observed**, not assumed: with `-d in_asm` qemu logs the guest address of
every translated block; those addresses, minus the load address the runner prints, fall inside
the exported symbols of libexecutorch_backend_xnnpack.so, which include all KleidiAI `kai_run_*`
kernels. XNNPACK's own `qd8_f32_qc8w` kernels (used when the CPU has no dotprod) are hidden
symbols; for those the family is **inferred** from the CPU features by XNNPACK's
`src/configs/gemm-config.c`, and the report says so.

Toolchain (installed by `scripts/install.sh`, each part optional): Debian's g++-aarch64-linux-gnu
(also the sysroot /usr/aarch64-linux-gnu), Debian trixie's static qemu-aarch64 10.x, the runner
built by `android_runner/native/build.sh`.
"""
from __future__ import annotations

import bisect
import collections
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from lraqvit_deploy.errors import DeployError
from lraqvit_deploy.measure import closeness

SCHEMA = "lraqvit-deploy/arm-verification/1"
QEMU_MAJOR = 10  # the tested major; trixie's qemu-user 1:10.0.x (install.sh)
# qemu versions that run our programs wrongly: refused with this one-line reason.
QEMU_KNOWN_BAD = {
    (7, 2): "qemu 7.2 (Debian bookworm) emulates SME wrongly: an INT8 program under -cpu max returned "
            "garbage (agreement 0.08); install qemu 10 with `bash scripts/install.sh`",
}
_ROOT = Path(__file__).resolve().parents[2]  # the checkout (backends/executorch/arm.py) or site-packages/lraqvit_deploy


class ArmTimeout(DeployError):
    """An emulated run that went past its time bound (killed): the check is incomplete, not failed."""
# the native runner's sources ship in the package (pyproject package-data): a wheel install builds them too
BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "android_runner" / "native" / "build.sh"
XNNPACK_LIB = "libexecutorch_backend_xnnpack.so"


@dataclass(frozen=True)
class CpuModel:
    """One qemu `-cpu` model and the phone cores whose ISA it stands for."""

    qemu_cpu: str  # the -cpu argument
    isa: str
    phone_cores: str
    int8_gemm: str  # what XNNPACK selects for qd8 x qc8w (gemm-config.c); checked by the trace


# ISA -> phone cores. XNNPACK's INT8 choice depends only on dotprod / i8mm / SME / SME2 (and the
# core part for the no-dotprod fallback), so one model per row of that decision covers a phone.
CPU_MATRIX: Dict[str, CpuModel] = {
    "cortex-a53": CpuModel(
        "cortex-a53", "Armv8.0-A, NEON, no dotprod",
        "little cores of 2015-2018 SoCs and today's low-end phones (Cortex-A53: Snapdragon 625/450, Helio P/G)",
        "XNNPACK qd8_f32_qc8w 4x16 / 1x16 neon_mlal_lane_prfm (no KleidiAI: needs dotprod)"),
    "cortex-a55": CpuModel(
        "cortex-a55", "Armv8.2-A + dotprod (asimddp), fp16; no i8mm",
        "little cores of 2018-2022 SoCs (Cortex-A55: Snapdragon 845-888, Tensor G1/G2, Exynos 2100)",
        "KleidiAI qp8_f32_qc8w 16x4c4 neondot mstep4 + 1x4c4 neondot "
        "(kai_..._qai8dxp4x4_qsi8cxp4x4_16x4_neon_dotprod)"),
    "cortex-a76": CpuModel(
        "cortex-a76", "Armv8.2-A + dotprod, fp16; no i8mm",
        "big cores of 2019-2021 SoCs (Cortex-A76/A77/A78, X1: Snapdragon 855/865/888, Tensor G1)",
        "KleidiAI qp8_f32_qc8w 16x4c4 neondot mstep4 + 1x4c4 neondot "
        "(same kernel as cortex-a55; only the core's speed differs)"),
    "cortex-a710": CpuModel(
        "cortex-a710", "Armv9.0-A: SVE2, i8mm, bf16, dotprod",
        "Armv9 big/prime cores without SME (Cortex-A710/A715/A720, X2/X3/X4: Snapdragon 8 Gen 1-3, "
        "Tensor G2-G4, Dimensity 9000-9300)",
        "KleidiAI qp8_f32_qc8w 16x4c8 neoni8mm mstep4 + 1x4c8 neondot "
        "(kai_..._qai8dxp4x8_qsi8cxp4x8_16x4_neon_i8mm)"),
    "max": CpuModel(
        "max", "everything qemu 10.0 implements: Armv9 + SVE2, i8mm, bf16, SME (qemu 10.0 reports no SME2)",
        "SME-class cores (Arm C1 / Lumex CSS, Cortex-X925 successors with SME2; Apple M4). qemu 10.0 has SME "
        "but not SME2, so this runs XNNPACK's SME (v1) kernels, not the SME2 ones those phones run",
        "KleidiAI qp8_f32_qc8w 16x64c4 neonsme + 1x64c4 neonsme "
        "(kai_..._qai8dxp1vlx4_qsi8cxp4vlx4_1vlx4vl_sme_mopa)"),
    "max,sme=off": CpuModel(
        "max,sme=off", "Armv9 + SVE2, i8mm, bf16 without SME",
        "the same kernel family as cortex-a710 (newer Armv9.2 big cores without SME)",
        "KleidiAI qp8_f32_qc8w 16x4c8 neoni8mm mstep4 + 1x4c8 neondot"),
}
DEFAULT_CPUS: Tuple[str, ...] = ("cortex-a55", "cortex-a76", "cortex-a710", "max")

# KleidiAI INT8 GEMMs (dynamically quantized activations x int8 per-channel weights) and the
# XNNPACK ukernel that wraps each (XNNPACK src/qp8-f32-qc8w-gemm/*.c).
KAI_INT8_GEMMS = {
    "kai_run_matmul_clamp_f32_qai8dxp4x4_qsi8cxp4x4_16x4_neon_dotprod":
        "xnn_qp8_f32_qc8w_gemm_minmax_ukernel_16x4c4__aarch64_neondot_mstep4",
    "kai_run_matmul_clamp_f32_qai8dxp1x4_qsi8cxp4x4_1x4_neon_dotprod":
        "xnn_qp8_f32_qc8w_gemm_minmax_ukernel_1x4c4__aarch64_neondot",
    "kai_run_matmul_clamp_f32_qai8dxp4x8_qsi8cxp4x8_16x4_neon_i8mm":
        "xnn_qp8_f32_qc8w_gemm_minmax_ukernel_16x4c8__neoni8mm_mstep4",
    "kai_run_matmul_clamp_f32_qai8dxp1x8_qsi8cxp4x8_1x4_neon_dotprod":
        "xnn_qp8_f32_qc8w_gemm_minmax_ukernel_1x4c8__aarch64_neondot",
    "kai_run_matmul_clamp_f32_qai8dxp1vlx4_qsi8cxp4vlx4_1vlx4vl_sme_mopa":
        "xnn_qp8_f32_qc8w_gemm_minmax_ukernel_16x64c4__neonsme",
    "kai_run_matmul_clamp_f32_qai8dxp1x4_qsi8cxp4vlx4_1x4vl_sme_dot":
        "xnn_qp8_f32_qc8w_gemm_minmax_ukernel_1x64c4__neonsme",
    "kai_run_matmul_clamp_f32_qai8dxp1vlx4_qsi8cxp4vlx4_1vlx4vl_sme2_mopa":
        "xnn_qp8_f32_qc8w_gemm_minmax_ukernel_16x64c4__neonsme2",
    "kai_run_matmul_clamp_f32_qai8dxp1x4_qsi8cxp4vlx4_1x4vl_sme2_dot":
        "xnn_qp8_f32_qc8w_gemm_minmax_ukernel_1x64c4__neonsme2",
}
# KleidiAI 4-bit-weight GEMMs (int8 dynamic activations x int4 weights) exported by the 1.5.1 aarch64 wheel's
# XNNPACK library: qsi4cx = per output channel (XNNPACK qc4w), qsi4c32 = blocks of 32 inputs (qb4w; larger
# groups are multiples of 32 and run the same kernels).
KAI_INT4_GEMMS = {
    "kai_run_matmul_clamp_f32_qai8dxp1x4_qsi4cxp4x4_1x4_neon_dotprod": "qc4w dotprod (1 row)",
    "kai_run_matmul_clamp_f32_qai8dxp4x8_qsi4cxp4x4_16x4x32_neon_dotprod": "qc4w dotprod (16 rows)",
    "kai_run_matmul_clamp_f32_qai8dxp1x8_qsi4cxp8x8_1x8x32_neon_dotprod": "qc4w dotprod (1 row, 8x8 packing)",
    "kai_run_matmul_clamp_f32_qai8dxp4x8_qsi4cxp8x8_8x8x32_neon_i8mm": "qc4w i8mm",
    "kai_run_matmul_clamp_f32_qai8dxp1x4_qsi4cxp4vlx4_1x4vl_sme_dot": "qc4w SME (1 row)",
    "kai_run_matmul_clamp_f32_qai8dxp1vlx4_qsi4cxp4vlx4_1vlx4vl_sme_mopa": "qc4w SME",
    "kai_run_matmul_clamp_f32_qai8dxp1x4_qsi4cxp4vlx4_1x4vl_sme2_sdot": "qc4w SME2 (1 row)",
    "kai_run_matmul_clamp_f32_qai8dxp1vlx8_qsi4cxp4vlx8_1vlx4vl_sme2_mopa": "qc4w SME2",
    "kai_run_matmul_clamp_f32_qai8dxp1x4_qsi4c32p4x4_1x4_neon_dotprod": "qb4w dotprod (1 row)",
    "kai_run_matmul_clamp_f32_qai8dxp4x4_qsi4c32p4x4_16x4_neon_dotprod": "qb4w dotprod (16 rows)",
    "kai_run_matmul_clamp_f32_qai8dxp1x8_qsi4c32p4x8_1x4x32_neon_dotprod": "qb4w dotprod (1 row, 4x8 packing)",
    "kai_run_matmul_clamp_f32_qai8dxp4x8_qsi4c32p4x8_16x4x32_neon_i8mm": "qb4w i8mm",
}
# int8 multiply-accumulate instructions, counted in the translated blocks of the XNNPACK library
_INT8_MNEMONICS = re.compile(r"^(sdot|udot|usdot|sudot|smmla|ummla|usmmla|smopa|sumopa|usmopa|umopa|smlal2?|"
                             r"fmopa|bfmopa|smstart|smstop)$")
_TB_LINE = re.compile(r"^0x([0-9a-f]+):\s+[0-9a-f]{8}\s+([a-z0-9.]+)")


def expected_int8_gemm(features: Sequence[str], cpu_part: str = "") -> Dict[str, Any]:
    """XNNPACK's qd8 x qc8w GEMM choice on Linux/Android arm64 for these HWCAP features.

    From `init_qp8_f32_qc8w_gemm_config` / `init_qd8_f32_qc8w_gemm_config` in XNNPACK
    src/configs/gemm-config.c (commit 92a7ad50, the submodule of ExecuTorch main; KleidiAI is on in
    the 1.5.1 wheel, whose library exports the kai_* kernels). A subgraph's dynamically quantized
    fully-connected takes the KleidiAI `qp8` path whenever that config has a kernel.
    """
    f = set(features)
    if "sme2" in f:
        fam, kai = "qp8_f32_qc8w neonsme2 (KleidiAI SME2)", ["kai_run_matmul_clamp_f32_qai8dxp1vlx4_qsi8cxp4vlx4_1vlx4vl_sme2_mopa",
                                                              "kai_run_matmul_clamp_f32_qai8dxp1x4_qsi8cxp4vlx4_1x4vl_sme2_dot"]
    elif "sme" in f:
        fam, kai = "qp8_f32_qc8w neonsme (KleidiAI SME)", ["kai_run_matmul_clamp_f32_qai8dxp1vlx4_qsi8cxp4vlx4_1vlx4vl_sme_mopa",
                                                            "kai_run_matmul_clamp_f32_qai8dxp1x4_qsi8cxp4vlx4_1x4vl_sme_dot"]
    elif "i8mm" in f:
        fam, kai = "qp8_f32_qc8w neoni8mm (KleidiAI i8mm)", ["kai_run_matmul_clamp_f32_qai8dxp4x8_qsi8cxp4x8_16x4_neon_i8mm",
                                                              "kai_run_matmul_clamp_f32_qai8dxp1x8_qsi8cxp4x8_1x4_neon_dotprod"]
    elif "asimddp" in f:
        fam, kai = "qp8_f32_qc8w neondot (KleidiAI dotprod)", ["kai_run_matmul_clamp_f32_qai8dxp4x4_qsi8cxp4x4_16x4_neon_dotprod",
                                                                "kai_run_matmul_clamp_f32_qai8dxp1x4_qsi8cxp4x4_1x4_neon_dotprod"]
    else:
        little = cpu_part.lower() in ("0xd03", "0xd05")  # Cortex-A53 / A55: XNNPACK's uarch switch
        k = ("xnn_qd8_f32_qc8w_gemm_minmax_ukernel_4x16__neon_mlal_lane_prfm" if little
             else "xnn_qd8_f32_qc8w_gemm_minmax_ukernel_2x8c2s4__neon_mlal")
        return {"family": f"qd8_f32_qc8w neon mlal (XNNPACK, no KleidiAI): {k}", "kai": [], "xnnpack": [k]}
    return {"family": fam, "kai": kai, "xnnpack": [KAI_INT8_GEMMS[k] for k in kai]}


# ---------------------------------------------------------------------------------------- toolchain


@dataclass(frozen=True)
class ArmToolchain:
    """What `run_native` needs. Falsy when the Arm part is missing: then `reason` says why.

    `host_runner` (x86-64 pte_runner) may exist without the Arm part and vice versa.
    """

    host_runner: Optional[Path] = None
    aarch64_runner: Optional[Path] = None
    qemu: Optional[Path] = None
    qemu_version: Optional[str] = None
    sysroot: Optional[Path] = None
    lib_dirs: Tuple[Path, ...] = ()
    reason: Optional[str] = None  # None: everything for emulated runs is here

    def __bool__(self) -> bool:
        return self.reason is None

    def describe(self) -> Dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else [str(p) for p in v] if isinstance(v, tuple) else v)
                for k, v in asdict(self).items()}


def _cache() -> Path:
    return Path(os.environ.get("LRAQVIT_CACHE") or Path.home() / ".cache" / "lraqvit_deploy")


def native_dir() -> Path:
    """Where pte_runner builds go: $LRAQVIT_NATIVE_DIR, else build/native in a source checkout, else the cache
    (an installed package's folder may not be writable)."""
    if os.environ.get("LRAQVIT_NATIVE_DIR"):
        return Path(os.environ["LRAQVIT_NATIVE_DIR"])
    return _ROOT / "build" / "native" if (_ROOT / "pyproject.toml").is_file() else _cache() / "native"


def qemu_version(qemu: Path) -> Tuple[Optional[Tuple[int, int, int]], str]:
    """((major, minor, patch) or None, first line of --version)."""
    try:
        out = subprocess.run([str(qemu), "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"{qemu}: {e}"
    line = out.strip().splitlines()[0] if out.strip() else ""
    m = re.search(r"version (\d+)\.(\d+)(?:\.(\d+))?", line)
    return (tuple(int(g or 0) for g in m.groups()) if m else None), line  # type: ignore[return-value]


def check_qemu(qemu: Path) -> Tuple[Optional[str], Optional[str]]:
    """(version string, refusal reason or None)."""
    ver, line = qemu_version(qemu)
    if ver is None:
        return None, f"cannot tell the version of {qemu} ({line or 'no output'})"
    text = ".".join(map(str, ver))
    if ver[:2] in QEMU_KNOWN_BAD:
        return text, QEMU_KNOWN_BAD[ver[:2]]
    if ver[0] < QEMU_MAJOR:
        return text, f"qemu {text} at {qemu} is older than the tested {QEMU_MAJOR}.x; install qemu {QEMU_MAJOR} " \
                     "with `bash scripts/install.sh` (or set LRAQVIT_QEMU_AARCH64)"
    return text, None


def _find_qemu() -> Optional[Path]:
    env = os.environ.get("LRAQVIT_QEMU_AARCH64")
    if env:
        return Path(env)
    cached = _cache() / "arm" / "qemu" / "qemu-aarch64"
    if cached.is_file():
        return cached
    for name in ("qemu-aarch64-static", "qemu-aarch64"):
        if p := shutil.which(name):
            return Path(p)
    return None


def _find_sysroot() -> Optional[Path]:
    cands = [os.environ.get("LRAQVIT_ARM_SYSROOT"), "/usr/aarch64-linux-gnu", str(_cache() / "arm" / "sysroot")]
    for c in cands:
        if c and (Path(c) / "lib" / "ld-linux-aarch64.so.1").exists():
            return Path(c)
    return None


def build_runner(target: str, timeout: float = 600) -> Tuple[Optional[Path], Optional[str]]:
    """Build (or find up to date) pte_runner for `target` ("host" | "aarch64"): (path, reason)."""
    out = native_dir() / target / "pte_runner"
    if not BUILD_SCRIPT.is_file():
        return (out if out.is_file() else None), f"no {BUILD_SCRIPT} (the package was installed without its data)"
    env = {**os.environ, "LRAQVIT_NATIVE_DIR": str(native_dir()), "PYTHON": os.environ.get("PYTHON", sys.executable)}
    try:
        proc = subprocess.run(["bash", str(BUILD_SCRIPT), target], capture_output=True, text=True, timeout=timeout,
                              env=env)
    except subprocess.TimeoutExpired:
        return None, f"building the {target} runner took over {timeout:.0f} s"
    if proc.returncode == 0 and out.is_file():
        return out, None
    tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or [f"exit status {proc.returncode}"]
    return None, f"{target} pte_runner not built: {tail[0]}"


_TOOLCHAIN: Dict[bool, ArmToolchain] = {}


def find_toolchain(build: bool = True, refresh: bool = False) -> ArmToolchain:
    """Locate (and with `build`, build) the runners, qemu-aarch64 and the arm64 sysroot.

    The result is falsy when emulated runs are impossible; `reason` then names the missing piece
    and its fix. Cached per process (`refresh=True` looks again).
    """
    if build in _TOOLCHAIN and not refresh:
        return _TOOLCHAIN[build]
    reasons: List[str] = []
    if build:
        host, why = build_runner("host")
    else:
        p = native_dir() / "host" / "pte_runner"
        host, why = (p if p.is_file() else None), f"no {p}; run bash {BUILD_SCRIPT} host"
    host_runner = host
    qemu = _find_qemu()
    version = None
    if qemu is None:
        reasons.append("no qemu-aarch64 (bash scripts/install.sh installs Debian trixie's qemu-user 10)")
    else:
        version, bad = check_qemu(qemu)
        if bad:
            reasons.append(bad)
    sysroot = _find_sysroot()
    if sysroot is None:
        reasons.append("no arm64 sysroot (apt install g++-aarch64-linux-gnu provides /usr/aarch64-linux-gnu)")
    arm = None
    if build:
        arm, why = build_runner("aarch64")
        if arm is None:
            reasons.append(why or "aarch64 pte_runner not built")
    else:
        p = native_dir() / "aarch64" / "pte_runner"
        if p.is_file():
            arm = p
        else:
            reasons.append(f"no {p}; run bash {BUILD_SCRIPT} aarch64")
    lib_dirs = tuple(d for d in ((arm.parent / "lib") if arm else None, sysroot / "lib" if sysroot else None) if d)
    tc = ArmToolchain(host_runner, arm, qemu, version, sysroot, lib_dirs, "; ".join(reasons) or None)
    _TOOLCHAIN[build] = tc
    return tc


# ---------------------------------------------------------------------------------------- running


def _runner_command(tc: ArmToolchain, cpu: Optional[str], trace_log: Optional[Path]) -> List[str]:
    if cpu is None:
        if tc.host_runner is None:
            raise DeployError(f"no host pte_runner; build it with: bash {BUILD_SCRIPT} host")
        return [str(tc.host_runner)]
    if not tc:
        raise DeployError(f"cannot run on an emulated Arm CPU: {tc.reason}")
    cmd = [str(tc.qemu), "-cpu", cpu, "-L", str(tc.sysroot)]
    if trace_log is not None:
        cmd += ["-d", "in_asm", "-D", str(trace_log)]
    return cmd + [str(tc.aarch64_runner)]


def run_native(pte, images: torch.Tensor, cpu: Optional[str] = None, threads: int = 1, iterations: int = 1,
               warmup: int = 0, toolchain: Optional[ArmToolchain] = None, trace_kernels: bool = False,
               timeout: Optional[float] = None) -> Tuple[torch.Tensor, Dict[str, Any]]:
    """Execute `pte` on each image with pte_runner: natively (`cpu=None`) or under qemu `-cpu cpu`.

    images: (N, C, H, W) float32 (or one image (C, H, W)); each row is fed as a batch-1 input.
    Returns (outputs (N, ...) of output 0, info) with info = the runner's JSON report
    (`load_ms`, `times_ms` of `iterations` timed runs of image 0 after `warmup`, `threads`, ...)
    plus `wall_s`, `cpu` and, for emulated runs, `cpu_features` and, with `trace_kernels`,
    `kernels` (see `kernel_report`). Raises DeployError when the runner fails.
    """
    from lraqvit_deploy.android_runner.runner_output import parse_pte_runner_json

    tc = toolchain if toolchain is not None else find_toolchain()
    x = images.detach().to(torch.float32).contiguous()
    if x.dim() == 3:
        x = x.unsqueeze(0)
    n = x.shape[0]
    with tempfile.TemporaryDirectory(prefix="pte_runner_") as tmp:
        tmp_p = Path(tmp)
        (tmp_p / "in").mkdir()
        (tmp_p / "out").mkdir()
        x.numpy().tofile(tmp_p / "in" / "input_0.bin")
        trace = tmp_p / "trace.log" if (trace_kernels and cpu is not None) else None
        cmd = _runner_command(tc, cpu, trace) + [
            "--model", str(Path(pte).resolve()), "--inputs", str(tmp_p / "in"), "--outputs", str(tmp_p / "out"),
            "--iterations", str(iterations), "--warmup", str(warmup), "--threads", str(threads), "--quiet"]
        if cpu is not None:
            cmd.append("--print-cpu-features")
        if trace is not None:
            cmd.append("--print-libs")
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ArmTimeout(f"pte_runner on {cpu or 'host'} ran past {timeout:g} s and was stopped") from None
        wall = time.perf_counter() - t0
        report = parse_pte_runner_json(proc.stdout)
        if proc.returncode != 0 or report is None or not report.get("ok"):
            why = (report or {}).get("error") or _tail(proc.stderr) or f"exit status {proc.returncode}"
            if proc.returncode < 0 or proc.returncode >= 128:
                why = f"crashed (signal {-proc.returncode if proc.returncode < 0 else proc.returncode - 128}): {why}"
            raise DeployError(f"pte_runner failed on {cpu or 'host'}: {why}")
        outs = report.get("outputs") or []
        if not outs:
            raise DeployError(f"pte_runner on {cpu or 'host'} wrote no tensor output")
        shape = list(outs[0]["shape"])
        if outs[0].get("dtype") != "Float":
            raise DeployError(f"output 0 is {outs[0].get('dtype')}, not float32")
        data = torch.from_numpy(_read_f32(tmp_p / "out" / "output_0.bin").copy())
        per = math.prod(shape)
        if data.numel() != per * n:
            raise DeployError(f"pte_runner wrote {data.numel()} floats for {n} images of output shape {shape}")
        logits = data.reshape(n, *shape[1:]) if shape and shape[0] == 1 else data.reshape(n, *shape)
        info = dict(report, wall_s=wall, cpu=cpu or "host")
        if cpu is not None:
            info["cpu_features"] = report.get("cpu", {})
        if trace is not None:
            info["kernels"] = kernel_report(trace, report, tc, info.get("cpu_features", {}))
    return logits, info


def _read_f32(path: Path):
    import numpy as np

    return np.fromfile(path, dtype="<f4")


def _tail(text: str, n: int = 3) -> str:
    lines = [ln for ln in text.strip().splitlines() if not ln.startswith("I ")]
    return " | ".join(lines[-n:])


# ---------------------------------------------------------------------------------------- kernels


def elf_functions(path: Path) -> List[Tuple[int, int, str]]:
    """(offset, size, name) of every defined function in an ELF64 LE .so's dynamic symbol table."""
    data = Path(path).read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise DeployError(f"{path} is not a 64-bit little-endian ELF")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    secs = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    out = []
    for sh in secs:
        if sh[1] != 11:  # SHT_DYNSYM
            continue
        strtab = secs[sh[6]]
        off, size, ent = sh[4], sh[5], sh[9] or 24
        for i in range(size // ent):
            name_off, info, _other, shndx, value, sz = struct.unpack_from("<IBBHQQ", data, off + i * ent)
            if (info & 0xF) == 2 and shndx != 0 and sz > 0:
                s = strtab[4] + name_off
                out.append((value, sz, data[s:data.index(b"\0", s)].decode()))
    out.sort()
    return out


def trace_functions(trace: Path, lib: Path, base: int) -> Tuple[collections.Counter, collections.Counter]:
    """(blocks per exported function, int8-MAC mnemonics) of `lib` in a qemu -d in_asm log."""
    funcs = elf_functions(lib)
    starts = [f[0] for f in funcs]
    span = max((f[0] + f[1] for f in funcs), default=0) + (1 << 24)
    hits: collections.Counter = collections.Counter()
    mnem: collections.Counter = collections.Counter()
    with open(trace, errors="replace") as fh:
        for line in fh:
            m = _TB_LINE.match(line)
            if not m:
                continue
            off = int(m.group(1), 16) - base
            if not 0 <= off < span:
                continue
            if _INT8_MNEMONICS.match(m.group(2)):
                mnem[m.group(2)] += 1
            i = bisect.bisect_right(starts, off) - 1
            if i >= 0 and off < funcs[i][0] + funcs[i][1]:
                hits[funcs[i][2]] += 1
    return hits, mnem


def kernel_report(trace: Path, report: Dict[str, Any], tc: ArmToolchain, cpu: Dict[str, Any]) -> Dict[str, Any]:
    """Which INT8 GEMM kernels XNNPACK ran, from the qemu trace, with the feature-based expectation."""
    features = cpu.get("features", [])
    expected = expected_int8_gemm(features, cpu.get("cpu_part", ""))
    libs = {Path(lib["name"]).name: lib for lib in report.get("libs", [])}
    lib = libs.get(XNNPACK_LIB)
    out: Dict[str, Any] = {"features": features, "cpu_part": cpu.get("cpu_part"), "expected": expected}
    if lib is None or not trace.is_file():
        return dict(out, method="inferred", int8_gemm=[], xnnpack_ukernels=expected["xnnpack"],
                    family=expected["family"], matches_expected=None,
                    how="no trace (runner printed no library map); family inferred from CPU features "
                        "by XNNPACK gemm-config.c")
    lib_path = Path(lib["name"])
    if not lib_path.is_absolute() or not lib_path.exists():
        lib_path = (tc.aarch64_runner.parent / "lib" / XNNPACK_LIB) if tc.aarch64_runner else lib_path
    hits, mnem = trace_functions(trace, lib_path, int(lib["base"], 16))
    ran = sorted(k for k in hits if k in KAI_INT8_GEMMS)
    ran4 = sorted(k for k in hits if k.startswith("kai_run_matmul_") and "_qsi4" in k)  # not the packing routines
    other_kai = sorted(k for k in hits if k.startswith("kai_run_") and k not in KAI_INT8_GEMMS and k not in ran4)
    # 4-bit weights: the KleidiAI kernels that ran, each with its family (qc4w / qb4w and the ISA path)
    out["int4_gemm"] = ran4
    out["int4_families"] = sorted({KAI_INT4_GEMMS.get(k, "qsi4 (unlisted)") for k in ran4})
    how = ("observed: qemu -d in_asm guest PCs mapped onto the exported symbols of "
           f"{XNNPACK_LIB} (KleidiAI kai_run_* kernels are exported)")
    if ran or ran4:
        return dict(out, method="observed", int8_gemm=ran, xnnpack_ukernels=[KAI_INT8_GEMMS[k] for k in ran],
                    family=(expected["family"] if set(ran) <= set(expected["kai"]) else "unexpected: " + ", ".join(ran))
                    if ran else "int4 only: " + ", ".join(out["int4_families"]),
                    matches_expected=set(ran) <= set(expected["kai"]) if ran else None, other_kleidiai=other_kai,
                    int8_instructions=dict(mnem), how=how)
    # No KleidiAI INT8 GEMM ran: XNNPACK's own (hidden-symbol) qd8 kernels, or no INT8 GEMM at all.
    return dict(out, method="inferred", int8_gemm=[], xnnpack_ukernels=expected["xnnpack"],
                family=expected["family"], matches_expected=None if expected["kai"] == [] else False,
                other_kleidiai=other_kai, int8_instructions=dict(mnem),
                how="no KleidiAI INT8 GEMM ran (observed); XNNPACK's own qd8 ukernels have hidden symbols, so "
                    "the family is inferred from the CPU features by XNNPACK gemm-config.c; int8_instructions "
                    "counts the int8 multiply-accumulate instructions seen in the library's executed code")


# ---------------------------------------------------------------------------------------- verification


TRACE_SHARE = 0.5  # of a CPU's time budget, at most, for the one traced image (instruction tracing is slow)


def _bounded_run(pte, images: torch.Tensor, cpu: str, threads: int, tc: ArmToolchain, trace_kernels: bool,
                 budget: Optional[float], progress: bool) -> Tuple[torch.Tensor, Dict[str, Any]]:
    """Run `images` on emulated `cpu` within `budget` seconds (None: unbounded), in three stages:

    1. one image under instruction tracing (the kernel report), given at most TRACE_SHARE of the budget;
       past that it is stopped and the kernels are reported as not traced, the check goes on untraced;
    2. one image untraced: the measured emulation speed of THIS program (precision) on THIS CPU model;
    3. as many of the remaining images as that speed fits in what is left of the budget.
    Returns (logits of the images that ran, info: `wall_s`, `seconds_per_image`, `kernels`, `budget_note`
    when fewer images ran than asked). Raises ArmTimeout when not even one image finished in time.
    """
    t0 = time.perf_counter()
    n = len(images)
    left = (lambda: None) if budget is None else (lambda: budget - (time.perf_counter() - t0))
    say = (lambda msg: print(f"arm check {cpu}: {msg}", flush=True)) if progress else (lambda msg: None)
    outs: List[torch.Tensor] = []
    kernels, features = None, None
    if trace_kernels:
        share = None if budget is None else budget * TRACE_SHARE
        try:
            o, info = run_native(pte, images[:1], cpu=cpu, threads=threads, iterations=0, toolchain=tc,
                                 trace_kernels=True, timeout=share)
            outs.append(o)
            kernels, features = info.get("kernels"), info.get("cpu_features")
            say(f"1 image traced in {info['wall_s']:.1f} s (kernels named)")
        except ArmTimeout:
            kernels = {"method": "not traced", "how": f"the traced image ran past {share:g} s "
                                                      f"({TRACE_SHARE:.0%} of the CPU's budget) and was stopped"}
            say(f"tracing stopped after {share:g} s; going on untraced")
    done = len(outs)
    per_image = None
    if done < n:  # the speed probe: one image, untraced
        remaining = left()
        if remaining is not None and remaining <= 0 and not done:
            raise ArmTimeout(f"pte_runner on {cpu} ran past {budget:g} s and was stopped")
        remaining = None if remaining is None else max(remaining, 1e-3)
        try:
            o, info = run_native(pte, images[done: done + 1], cpu=cpu, threads=threads, iterations=0, toolchain=tc,
                                 timeout=remaining)
        except ArmTimeout:
            if done:  # the traced image stands: a partial result
                return torch.cat(outs), {"wall_s": time.perf_counter() - t0, "seconds_per_image": None,
                                         "cpu_features": features or {}, "kernels": kernels,
                                         "budget_note": f"1 of {n} images ran within the {budget:g} s budget"}
            raise ArmTimeout(f"pte_runner on {cpu} ran past {budget:g} s and was stopped") from None
        outs.append(o)
        features = features or info.get("cpu_features")
        per_image = info["wall_s"]
        done += 1
    note = None
    if done < n:
        remaining = left()
        fit = n - done if remaining is None else min(n - done, int(0.8 * remaining / max(per_image, 1e-3)))
        say(f"{per_image:.1f} s per image ({1 / max(per_image, 1e-9):.2f} images/s): "
            f"{fit} more of {n - done}" + ("" if remaining is None else f" in the {remaining:.0f} s left"))
        if fit > 0:
            try:
                o, info = run_native(pte, images[done: done + fit], cpu=cpu, threads=threads, iterations=0,
                                     toolchain=tc, timeout=left())
                outs.append(o)
                done += fit
                per_image = info["wall_s"] / fit
            except ArmTimeout:
                pass  # the images already run stand: a partial result, recorded as such
        if done < n:
            note = (f"{done} of {n} images ran within the {budget:g} s budget of this CPU "
                    f"(measured {per_image:.1f} s per image); raise --arm-timeout-s to check more")
    wall = time.perf_counter() - t0
    say(f"{done} image{'s' if done != 1 else ''} in {wall:.1f} s")
    info = {"wall_s": wall, "seconds_per_image": None if per_image is None else round(per_image, 3),
            "cpu_features": features or {}, "budget_note": note}
    if kernels is not None:
        info["kernels"] = kernels
    return torch.cat(outs), info


def arm_verification(pte, images: torch.Tensor, reference_logits: torch.Tensor,
                     labels: Optional[torch.Tensor] = None, cpus: Sequence[str] = DEFAULT_CPUS,
                     threads: int = 1, min_agreement: Optional[float] = None, trace_kernels: bool = True,
                     timeout_per_cpu: Optional[float] = None, toolchain: Optional[ArmToolchain] = None,
                     progress: bool = False, min_sqnr_db: Optional[float] = None) -> Dict[str, Any]:
    """Run `pte` on `images` under qemu-aarch64 for each CPU model and score it against the reference.

    Never raises for a CPU model that fails: its entry gets status "failed" and the reason. When
    the toolchain is missing, every CPU entry is "skipped" with the toolchain's reason. Each CPU model
    has `timeout_per_cpu` seconds (`_bounded_run`: one traced image for the kernel report, one untraced
    image to measure this program's emulation speed on this CPU, then as many images as that speed fits
    in the rest); the images that ran are scored (`images_planned`, `budget_note` say how many did not),
    and a CPU that finished no image is "timeout". The check is bounded by len(cpus) x timeout_per_cpu.
    Returns::

        {"schema": "lraqvit-deploy/arm-verification/1", "program": str, "n_images": int,
         "toolchain": {...paths, qemu_version...}, "skipped": None | reason,
         "cpus": {"<qemu cpu>": {
             "status": "ok" | "failed" | "skipped" | "timeout", "reason": None | str,
             "qemu_cpu", "isa", "phone_cores",             # from CPU_MATRIX (None for other models)
             "agreement": 0..1 argmax vs reference, "top1": % or None, "min_cosine",
             "sqnr_db": dB or None when bit-exact, "bit_exact", "max_abs_diff",
             "seconds": emulated wall time (not latency),
             "features": HWCAP names the emulated CPU reports,
             "kernels": {"method": "observed" | "inferred", "int8_gemm": [kai_run_* that ran],
                         "xnnpack_ukernels": [...], "family", "expected", "matches_expected",
                         "int8_instructions": {mnemonic: blocks}, "other_kleidiai", "how"}}}}

    `min_agreement`: a CPU below it is "failed" (default None: only execution failures and NaN/inf
    logits fail; a CPU whose logits hold a NaN or an inf always fails). With `min_sqnr_db` also
    given, a CPU below that SQNR fails, and the agreement compared is `gated_agreement` (near-tie
    flips counted as agreeing, as the host gate does: such flips are noise of the logits' size,
    and an error that is large everywhere fails the SQNR gate instead); without it, the raw
    agreement.
    """
    tc = toolchain if toolchain is not None else find_toolchain()
    ref = torch.as_tensor(reference_logits)
    result: Dict[str, Any] = {"schema": SCHEMA, "program": str(pte), "n_images": int(len(images)),
                              "toolchain": tc.describe(), "skipped": None if tc else tc.reason,
                              "min_agreement": min_agreement, "min_sqnr_db": min_sqnr_db, "cpus": {}}
    for cpu in cpus:
        model = CPU_MATRIX.get(cpu)
        entry: Dict[str, Any] = {"qemu_cpu": cpu, "isa": model.isa if model else None,
                                 "phone_cores": model.phone_cores if model else None,
                                 "status": "skipped", "reason": tc.reason}
        result["cpus"][cpu] = entry
        if not tc:
            continue
        t0 = time.perf_counter()
        try:
            out, info = _bounded_run(pte, images, cpu, threads, tc, trace_kernels, timeout_per_cpu, progress)
        except ArmTimeout as e:  # bounded: recorded as incomplete, the other models still run
            entry.update(status="timeout", reason=str(e), seconds=time.perf_counter() - t0)
            continue
        except DeployError as e:
            entry.update(status="failed", reason=str(e), seconds=time.perf_counter() - t0)
            continue
        except Exception as e:  # a bug or an OS error on one model must not lose the others
            entry.update(status="failed", reason=f"{type(e).__name__}: {e}", seconds=time.perf_counter() - t0)
            continue
        metrics = closeness.compare_logits(out, ref[: len(out)], None if labels is None else labels[: len(out)])
        entry.update(metrics, min_cosine=metrics["cosine_min"], status="ok", reason=None, seconds=info["wall_s"],
                     features=info.get("cpu_features", {}).get("features"), images_planned=int(len(images)),
                     seconds_per_image=info.get("seconds_per_image"), budget_note=info.get("budget_note"))
        if "kernels" in info:
            entry["kernels"] = info["kernels"]
        # NaN/inf logits always fail; with min_sqnr_db the agreement compared counts near-tie flips as
        # agreeing (the host gate's rule), without it the raw agreement
        failed = closeness.gate_problems(metrics, {"min_agreement": min_agreement, "min_sqnr_db": min_sqnr_db},
                                         gated=min_sqnr_db is not None)
        if failed:
            entry.update(status="failed", reason="; ".join(failed))
    return result


def format_table(result: Dict[str, Any]) -> str:
    """A plain-text table of an `arm_verification` result."""
    rows = [f"{'cpu':<14} {'status':<8} {'agree':>6} {'min cos':>9} {'SQNR dB':>8} {'max|d|':>9} {'s':>6}  int8 GEMM"]
    for cpu, e in result["cpus"].items():
        if e["status"] != "ok":
            rows.append(f"{cpu:<14} {e['status']:<8} {e.get('reason') or ''}")
            continue
        k = e.get("kernels") or {}
        kern = ", ".join(k.get("xnnpack_ukernels") or []) \
            + ("; int4: " + ", ".join(k["int4_families"]) if k.get("int4_families") else "") \
            + (f" [{k.get('method')}]" if k else "")
        sq = "exact" if e["sqnr_db"] is None else f"{e['sqnr_db']:.1f}"
        rows.append(f"{cpu:<14} {e['status']:<8} {e['agreement']:>6.3f} {e['min_cosine']:>9.6f} {sq:>8} "
                    f"{e['max_abs_diff']:>9.2e} {e['seconds']:>6.1f}  {kern}")
    return "\n".join(rows)
