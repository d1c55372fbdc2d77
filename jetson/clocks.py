"""Jetson power-mode and clock state: latency numbers mean little unless clocks are pinned.

`nvpmodel -q` prints the power mode (name on one line, id on the next); `sudo jetson_clocks`
pins each CPU's and the GPU's minimum frequency to its maximum, which is what we check in sysfs
(`jetson_clocks --show` needs root). Standard library only: runs on a bare JetPack.
"""
from __future__ import annotations

import glob
import os
import re
import subprocess
from typing import Any, Dict, List, Optional

GPU_DEVFREQ_GLOBS = ("sys/devices/gpu.0/devfreq/*", "sys/devices/platform/gpu.0/devfreq/*",
                     "sys/devices/platform/*.gpu/devfreq/*", "sys/class/devfreq/*.gv11b", "sys/class/devfreq/*.ga10b")


def parse_nvpmodel(text: str) -> Dict[str, Any]:
    """`nvpmodel -q` output -> {"power_mode": "MAXN", "power_mode_id": 0}."""
    out: Dict[str, Any] = {"power_mode": None, "power_mode_id": None}
    m = re.search(r"NV Power Mode:\s*(\S+)", text)
    if m:
        out["power_mode"] = m.group(1)
        rest = text[m.end():].split()
        if rest and rest[0].isdigit():
            out["power_mode_id"] = int(rest[0])
    return out


def _read_int(path: str) -> Optional[int]:
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def read_clocks(root: str = "/") -> Dict[str, Any]:
    """CPU and GPU min/cur/max frequencies from sysfs under `root`; `pinned` when min == max everywhere."""
    cpus: List[Dict[str, Any]] = []
    for d in sorted(glob.glob(os.path.join(root, "sys/devices/system/cpu/cpu[0-9]*/cpufreq"))):
        cpus.append({"cpu": os.path.basename(os.path.dirname(d)),
                     "min_khz": _read_int(os.path.join(d, "scaling_min_freq")),
                     "cur_khz": _read_int(os.path.join(d, "scaling_cur_freq")),
                     "max_khz": _read_int(os.path.join(d, "scaling_max_freq"))})
    gpu = None
    for pattern in GPU_DEVFREQ_GLOBS:
        hits = sorted(glob.glob(os.path.join(root, pattern)))
        if hits:
            d = hits[0]
            gpu = {"devfreq": os.path.basename(d), "min_hz": _read_int(os.path.join(d, "min_freq")),
                   "cur_hz": _read_int(os.path.join(d, "cur_freq")), "max_hz": _read_int(os.path.join(d, "max_freq"))}
            break
    cpu_pinned = bool(cpus) and all(c["min_khz"] is not None and c["min_khz"] == c["max_khz"] for c in cpus)
    gpu_pinned = gpu is not None and gpu["min_hz"] is not None and gpu["min_hz"] == gpu["max_hz"]
    return {"cpus": cpus, "gpu": gpu, "cpu_pinned": cpu_pinned, "gpu_pinned": gpu_pinned,
            "pinned": cpu_pinned and gpu_pinned}


def _run(cmd: List[str]) -> Optional[str]:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None


def check_power_state(root: str = "/") -> Dict[str, Any]:
    """Power mode + clock state + human warnings (empty when the device is set up for benchmarking)."""
    text = _run(["nvpmodel", "-q"])
    state = {**(parse_nvpmodel(text) if text else {"power_mode": None, "power_mode_id": None}), **read_clocks(root)}
    warnings = []
    if text is None:
        warnings.append("nvpmodel not found: not a Jetson, or JetPack's tools are not on PATH")
    elif state["power_mode_id"] not in (0, None):
        warnings.append(f"power mode {state['power_mode']} (id {state['power_mode_id']}); the paper's Xavier "
                        "numbers use MAXN: sudo nvpmodel -m 0")
    if not state["pinned"]:
        what = [n for n, ok in (("CPU", state["cpu_pinned"]), ("GPU", state["gpu_pinned"])) if not ok]
        warnings.append(f"{'/'.join(what)} clocks are not pinned (min != max): run `sudo jetson_clocks`; "
                        "latencies will vary with DVFS")
    state["warnings"] = warnings
    return state


def describe_device(root: str = "/") -> str:
    """'NVIDIA Jetson AGX Xavier ...' from the device tree, else the hostname."""
    for p in ("proc/device-tree/model", "sys/firmware/devicetree/base/model"):
        try:
            with open(os.path.join(root, p)) as f:
                return f.read().strip("\x00\n ")
        except OSError:
            continue
    return os.uname().nodename
