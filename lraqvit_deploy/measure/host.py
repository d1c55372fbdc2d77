"""What machine measured it: the CPU (model, family, flags of interest) and the package versions.

Every result file records these (benchmarks, bench results, reports): ratios measured on one CPU
do not carry to another, and the same session can land on AMD Zen 1..5 or Intel Sapphire Rapids.
"""
from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path
from typing import Any, Dict, Sequence

# the flags that decide which GEMM kernels run (XNNPACK / oneDNN / torch's int8 paths)
FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16")
PACKAGES = ("torch", "executorch", "timm", "onnxruntime", "lraqvit-deploy")


def parse_lscpu(text: str) -> Dict[str, Any]:
    """Model name, family/model/stepping, CPU count, hypervisor and the flags of interest from `lscpu`."""
    fields: Dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    flags = set(fields.get("Flags", "").split())
    return {"model_name": fields.get("Model name", platform.processor() or platform.machine()),
            "family": fields.get("CPU family"), "model": fields.get("Model"), "stepping": fields.get("Stepping"),
            "cpus": fields.get("CPU(s)"), "hypervisor": fields.get("Hypervisor vendor"),
            "flags": {f: f in flags for f in FLAGS_OF_INTEREST}}


def lscpu() -> Dict[str, Any]:
    """This CPU (`parse_lscpu` of `lscpu`, else of /proc/cpuinfo's first entry)."""
    return parse_lscpu(_cpu_text())


@functools.lru_cache(maxsize=1)
def _cpu_text() -> str:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        text = ""
    if not text:
        try:
            text = "\n".join(l.replace("model name", "Model name").replace("flags", "Flags")
                             for l in Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines())
        except OSError:
            text = ""
    return text


def cpu_line(cpu: Dict[str, Any]) -> str:
    """One line for a report: model name (family/model/stepping, CPUs, guest); flags."""
    bits = [cpu.get("model_name") or "unknown CPU"]
    detail = [f"family {cpu['family']} model {cpu['model']} stepping {cpu['stepping']}" if cpu.get("family") else "",
              f"{cpu['cpus']} CPUs" if cpu.get("cpus") else "",
              f"{cpu['hypervisor']} guest" if cpu.get("hypervisor") else ""]
    detail = [d for d in detail if d]
    if detail:
        bits.append(f"({', '.join(detail)})")
    flags = cpu.get("flags") or {}
    if flags:
        bits.append("; flags: " + ", ".join(f"{f} {'yes' if v else 'no'}" for f, v in flags.items()))
    return " ".join(bits).replace(" ;", ";")


def cpu_description() -> str:
    """Short: the model name and the OS/architecture (what a bench result records)."""
    model = lscpu().get("model_name") or platform.processor() or platform.machine()
    return f"{model} ({platform.system()} {platform.machine()})"


def versions(packages: Sequence[str] = PACKAGES) -> Dict[str, str]:
    """Installed versions of `packages` (missing ones left out)."""
    import importlib.metadata as md

    out = {}
    for pkg in packages:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out
