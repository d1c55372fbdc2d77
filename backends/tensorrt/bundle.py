"""The on-device bundle: the few standalone files a Jetson needs beside the ONNX files."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Dict

from lraqvit_deploy.artifacts import atomic_write, write_json

# (source module file, name in the bundle): everything run.py imports when it runs standalone.
_ROOT = Path(__file__).resolve().parents[2]
FILES = {
    "jetson/run.py": "run.py",
    "jetson/clocks.py": "clocks.py",
    "jetson/trtexec.py": "trtexec.py",
    "jetson/cuda_bench.py": "cuda_bench.py",
    "backends/tensorrt/engine.py": "engine.py",
    "lraqvit_deploy/benchmark.py": "benchmark.py",
}
RUN_COMMAND = "python3 jetson/run.py"


def _source(rel: str) -> Path:
    """The file in the checkout, or in an installed package (lraqvit_deploy/... names)."""
    import importlib

    p = _ROOT / rel
    if p.is_file():
        return p
    mod = {"jetson": "lraqvit_deploy.jetson", "backends/tensorrt": "lraqvit_deploy.backends.tensorrt",
           "lraqvit_deploy": "lraqvit_deploy"}[rel.rsplit("/", 1)[0]]
    return Path(importlib.import_module(mod).__file__).parent / rel.rsplit("/", 1)[1]


README = """# Jetson bundle: {name}

Built by `deploy build --target jetson` on another machine. TensorRT engines are tied to the
device and TensorRT version, so they are built here, on the Jetson.

## The one command

    {run}

(in this folder; needs JetPack's python3 + tensorrt + pycuda + numpy, nothing else). It builds
`engines/{name}_int8.engine` from `{qdq}` and `engines/{name}_fp16.engine`, times each with CUDA
events (warm-up, iterations, median/p90/p99) and with trtexec when found, and writes
`results/int8.json` and `results/fp16.json`. Copy `results/` back next to `manifest.json` and run
`deploy bench --target jetson <this folder>` to collect them.

## Before timing (AGX Xavier, JetPack 5, TensorRT 8.5)

    sudo nvpmodel -m 0     # MAXN
    sudo jetson_clocks     # pin CPU/GPU/EMC clocks
    tegrastats             # in another terminal: watch clocks and temperature

`run.py` warns when the power mode is not MAXN or the clocks are not pinned.

## Files

| file | what |
|---|---|
| `{qdq}` | explicit Q/DQ INT8 (per-channel weights, per-tensor activations), opset {opset} |
{fp_rows}
| `jetson/run.py` | build + time + write results (entry point) |
| `jetson/engine.py` | version-adaptive engine builder (TensorRT 8.5 / 10 / 11) |
| `jetson/cuda_bench.py`, `jetson/trtexec.py`, `jetson/clocks.py` | timing, trtexec runner/parser, nvpmodel/clock checks |

Options: `python3 jetson/run.py --help` (`--precisions int8,fp16,fp32`, `--iterations`, `--no-trtexec`).
"""


def write_bundle(out_dir: Path, name: str, onnx: Dict[str, str], input_shape, opset: int) -> Dict[str, Any]:
    """Copy the standalone scripts into `out_dir/jetson/` and write its README and bundle.json."""
    jdir = Path(out_dir) / "jetson"
    jdir.mkdir(parents=True, exist_ok=True)
    for rel, dest in FILES.items():
        shutil.copyfile(_source(rel), jdir / dest)
    write_json(jdir / "bundle.json", {"name": name, "onnx": onnx,
                                      "input": {"name": "input", "shape": list(input_shape)}, "opset": opset})
    fp_rows = "\n".join(f"| `{f}` | {p.upper()} baseline |" for p, f in onnx.items() if p != "int8")
    text = README.format(name=name, run=RUN_COMMAND, qdq=onnx["int8"], opset=opset, fp_rows=fp_rows)
    with atomic_write(Path(out_dir) / "README.md", "w") as f:
        f.write(text)
    return {"dir": "jetson", "files": sorted(FILES.values()) + ["bundle.json"], "run": RUN_COMMAND}
