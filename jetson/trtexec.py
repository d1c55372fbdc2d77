"""trtexec command lines (build, timing) and a parser for its performance summary.

The timing flags follow NVIDIA's benchmarking advice for 8.5+ (CUDA graph, no host transfers,
spin-wait, long warm-up, percentiles 50/90/99). The parser reads both the 8.x/10.x summary
("Latency: min = ... ms, ..., percentile(90%) = ... ms") and older ones that print only 99%.
Standard library only: runs on a bare JetPack.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Any, Dict, List, Optional, Sequence

TRTEXEC_PATHS = ("/usr/src/tensorrt/bin/trtexec", "/usr/local/tensorrt/bin/trtexec")
_STAT = re.compile(r"(min|max|mean|median|percentile\(([0-9.]+)%\))\s*=\s*([-+0-9.eE]+)\s*(ms|s)\b")
_SECTIONS = {"Latency": "latency", "GPU Compute Time": "gpu_compute", "End-to-End Host Latency": "host_latency",
             "Enqueue Time": "enqueue", "H2D Latency": "h2d", "D2H Latency": "d2h"}


def find_trtexec() -> Optional[str]:
    return shutil.which("trtexec") or next((p for p in TRTEXEC_PATHS if os.path.isfile(p)), None)


def shapes_arg(input_name: str, shape: Sequence[int]) -> str:
    return f"{input_name}:{'x'.join(str(int(d)) for d in shape)}"


def build_command(trtexec: str, onnx: str, engine: str, precision: str, shapes: str,
                  timing_cache: Optional[str] = None, version_major: int = 8, strongly_typed: bool = False,
                  fp32_layers: Sequence[str] = ()) -> List[str]:
    """trtexec that builds `engine`, with the choices of `engine.precision_plan`.

    Weak typing (8.5, 10.x default): `--int8 --fp16` / `--fp16`, and `fp32_layers` (the LayerNorm
    node names the bundle lists; TensorRT names layers after them) pinned with `--layerPrecisions`,
    `--layerOutputTypes` and `--precisionConstraints=obey` (all in trtexec 8.5). Strong typing
    (`--stronglyTyped` on 10.x, always on 11): no precision flags, the ONNX's dtypes decide.
    """
    cmd = [trtexec, f"--onnx={onnx}", f"--saveEngine={engine}", f"--shapes={shapes}", "--skipInference"]
    weak = version_major < 11 and not strongly_typed
    if weak:
        cmd += {"int8": ["--int8", "--fp16"], "fp16": ["--fp16"], "fp32": []}[precision]
        if fp32_layers and precision != "fp32":
            spec = ",".join(f"{name}:fp32" for name in fp32_layers)
            cmd += [f"--layerPrecisions={spec}", f"--layerOutputTypes={spec}", "--precisionConstraints=obey"]
    elif version_major == 10:
        cmd.append("--stronglyTyped")
    if timing_cache:
        cmd.append(f"--timingCacheFile={timing_cache}")
    return cmd


def time_command(trtexec: str, engine: str, shapes: str, warmup_ms: int = 2000, iterations: int = 1000,
                 avg_runs: int = 100, export_prefix: Optional[str] = None) -> List[str]:
    cmd = [trtexec, f"--loadEngine={engine}", f"--shapes={shapes}", "--useCudaGraph", "--noDataTransfers",
           "--useSpinWait", f"--warmUp={warmup_ms}", f"--iterations={iterations}", "--duration=0",
           f"--avgRuns={avg_runs}", "--percentile=50,90,99"]
    if export_prefix:
        cmd += [f"--exportTimes={export_prefix}.times.json", "--separateProfileRun", "--dumpProfile",
                f"--exportProfile={export_prefix}.profile.json"]
    return cmd


def decode_version(code: int) -> str:
    """trtexec's `[TensorRT v8502]` / `[TensorRT v100200]` integers -> '8.5.2' / '10.2.0'."""
    if code >= 100000:  # 10.x changed the encoding to MMmmpp
        return f"{code // 10000}.{code // 100 % 100}.{code % 100}"
    return f"{code // 1000}.{code // 100 % 10}.{code % 100}"


def parse_output(text: str) -> Dict[str, Any]:
    """The numbers of a trtexec log: version, throughput, and min/max/mean/median/pXX per section (ms)."""
    out: Dict[str, Any] = {"tensorrt": None, "passed": None, "throughput_qps": None}
    m = re.search(r"TensorRT version:\s*([0-9.]+)", text)
    v = re.search(r"\[TensorRT v(\d+)\]", text)
    out["tensorrt"] = m.group(1) if m else (decode_version(int(v.group(1))) if v else None)
    if "&&&& PASSED" in text:
        out["passed"] = True
    elif "&&&& FAILED" in text:
        out["passed"] = False
    summary = text.split("=== Performance summary ===", 1)
    body = summary[1] if len(summary) == 2 else ""
    t = re.search(r"Throughput:\s*([0-9.eE+-]+)\s*qps", body)
    if t:
        out["throughput_qps"] = float(t.group(1))
    for line in body.splitlines():
        label = re.match(r"([A-Za-z0-9 -]+?):\s*min\s*=", re.sub(r"^\s*(\[[^\]]*\]\s*)+", "", line))
        if not label or label.group(1) not in _SECTIONS:
            continue
        stats: Dict[str, float] = {}
        for name, pct, value, unit in _STAT.findall(line):
            key = f"p{pct.rstrip('0').rstrip('.') if '.' in pct else pct}" if pct else name
            stats[key] = float(value) * (1e3 if unit == "s" else 1.0)
        out[_SECTIONS[label.group(1)]] = stats
    w = re.search(r"Total Host Walltime:\s*([0-9.eE+-]+)\s*s", body)
    if w:
        out["host_walltime_s"] = float(w.group(1))
    return out


def run(cmd: List[str], log_path: Optional[str] = None, timeout: int = 3600) -> str:
    """Run trtexec, keep its log, raise with the tail of the log when it fails."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    text = proc.stdout + proc.stderr
    if log_path:
        with open(log_path, "w") as f:
            f.write(" ".join(cmd) + "\n" + text)
    if proc.returncode != 0:
        raise RuntimeError(f"trtexec failed ({proc.returncode}): {' '.join(cmd)}\n" + "\n".join(text.splitlines()[-20:]))
    return text
