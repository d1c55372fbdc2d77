"""Which kernels ran, observed: qemu's translated-block trace mapped onto the XNNPACK library's ELF symbols."""
from __future__ import annotations

import bisect
import collections
import re
import struct
from pathlib import Path
from typing import Any, Dict, List, Tuple

from lraqvit_deploy.errors import DeployError

from .cpus import KAI_INT4_GEMMS, KAI_INT8_GEMMS, expected_int8_gemm
from .toolchain import ArmToolchain

XNNPACK_LIB = "libexecutorch_backend_xnnpack.so"
# int8 multiply-accumulate instructions, counted in the translated blocks of the XNNPACK library
_INT8_MNEMONICS = re.compile(r"^(sdot|udot|usdot|sudot|smmla|ummla|usmmla|smopa|sumopa|usmopa|umopa|smlal2?|"
                             r"fmopa|bfmopa|smstart|smstop)$")
_TB_LINE = re.compile(r"^0x([0-9a-f]+):\s+[0-9a-f]{8}\s+([a-z0-9.]+)")


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
