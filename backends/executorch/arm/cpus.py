"""The emulated phone CPUs (qemu -cpu models) and the GEMM kernel families XNNPACK / KleidiAI run on each."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Sequence, Tuple

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
