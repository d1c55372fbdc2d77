"""The on-device bundle: the few standalone files a Jetson needs beside the ONNX files."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Dict, Optional

from lraqvit_deploy.artifacts import atomic_write, write_json

# (source module file, name in the bundle): everything run.py imports when it runs standalone.
_ROOT = Path(__file__).resolve().parents[2]
FILES = {
    "jetson/run.py": "run.py",
    "jetson/clocks.py": "clocks.py",
    "jetson/trtexec.py": "trtexec.py",
    "jetson/cuda_bench.py": "cuda_bench.py",
    "jetson/engine.py": "engine.py",
    "lraqvit_deploy/benchmark.py": "benchmark.py",
    "lraqvit_deploy/measure/closeness.py": "closeness.py",
}
RUN_COMMAND = "python3 jetson/run.py"


def _source(rel: str) -> Path:
    """The file in the checkout, or in an installed package (lraqvit_deploy/... names)."""
    import importlib

    p = _ROOT / rel
    if p.is_file():
        return p
    mod = {"jetson": "lraqvit_deploy.jetson", "backends/tensorrt": "lraqvit_deploy.backends.tensorrt",
           "lraqvit_deploy": "lraqvit_deploy", "lraqvit_deploy/measure": "lraqvit_deploy.measure"}[rel.rsplit("/", 1)[0]]
    return Path(importlib.import_module(mod).__file__).parent / rel.rsplit("/", 1)[1]


def copy_standalone(files: Dict[str, str], dest_dir: Path) -> None:
    """Copy each `files` module (checkout-relative name -> name in the bundle) into `dest_dir`, from the
    checkout or the installed package: the scripts a bundle runs standalone on the device."""
    Path(dest_dir).mkdir(parents=True, exist_ok=True)
    for rel, dest in files.items():
        shutil.copyfile(_source(rel), Path(dest_dir) / dest)


README = """# Jetson bundle: {name}

Built by `deploy build --target jetson` on another machine. TensorRT engines are tied to the
device and TensorRT version, so they are built here, on the Jetson.

## The one command

    {run}

(in this folder; needs JetPack's python3 + tensorrt + pycuda + numpy, nothing else). It builds
`engines/{name}_int8.engine` from `{qdq}` and `engines/{name}_fp16.engine`, runs the
{n_verify} verification images of `verify/` through each engine and compares the logits with the
host's references (INT8: the PyTorch simulator of the model the engine runs; FP16: the FP32
model): agreement, SQNR and cosine against the gates in `jetson/bundle.json`; it exits with
status 2 when an engine fails them. Then it times each engine with CUDA events (warm-up,
iterations, median/p90/p99) and with trtexec when found, and writes `results/int8.json` and
`results/fp16.json` (the output check under `extra.verification`). Copy `results/` back next to
`manifest.json` and run `deploy bench --target jetson <this folder>` to collect them.

## Before timing (AGX Xavier, JetPack 5, TensorRT 8.5)

    sudo nvpmodel -m 0     # MAXN
    sudo jetson_clocks     # pin CPU/GPU/EMC clocks
    tegrastats             # in another terminal: watch clocks and temperature

`run.py` warns when the power mode is not MAXN or the clocks are not pinned.

## Files

| file | what |
|---|---|
| `{qdq}` | explicit Q/DQ INT8 (int8 per-channel weights -> DequantizeLinear, per-tensor activations), opset {opset} |
{fp_rows}
| `verify/` | verification images (float32 NCHW `.npy`), labels, host reference logits |
| `jetson/run.py` | build + time + write results (entry point) |
| `jetson/engine.py` | version-adaptive engine builder (TensorRT 8.5 / 10 / 11) |
| `jetson/cuda_bench.py`, `jetson/trtexec.py`, `jetson/clocks.py` | timing, trtexec runner/parser, nvpmodel/clock checks |

Options: `python3 jetson/run.py --help` (`--precisions int8,fp16,fp32`, `--iterations`, `--no-trtexec`,
`--no-verify`, `--strongly-typed` for TensorRT 10).
"""

VERIFY_DIR = "verify"
REFERENCE_IS = {
    "int8": "the PyTorch per-tensor INT8 simulator of the model this engine runs",
    "fp32": "the FP32 PyTorch model",
    "fp16": "the FP32 PyTorch model",
}


def write_verification(out_dir: Path, images, references: Dict[str, Any], labels, gates: Dict[str, Dict[str, Any]],
                       host: Optional[Dict[str, Dict[str, Any]]] = None) -> Dict[str, Any]:
    """Write the on-device output check's data under `out_dir/verify/`; returns its `bundle.json` entry.

    `images` (N, 3, H, W) float32; `references[precision]` (N, classes) logits the engine of that
    precision is compared with (fp16 and fp32 share one file when they are the same array);
    `labels` (N,) or None (synthetic images); `gates[precision]` (`measure.closeness.gate_problems`);
    `host`: the same comparison for the ONNX through onnxruntime here, for reference.
    """
    import numpy as np

    vdir = Path(out_dir) / VERIFY_DIR
    vdir.mkdir(parents=True, exist_ok=True)
    np.save(vdir / "images.npy", np.ascontiguousarray(images, dtype=np.float32))
    entry: Dict[str, Any] = {"images": f"{VERIFY_DIR}/images.npy", "n_images": int(len(images)),
                             "labels": None, "reference": {}, "reference_is": {}, "gates": gates,
                             "host_onnxruntime": host}
    if labels is not None:
        np.save(vdir / "labels.npy", np.asarray(labels, dtype=np.int64))
        entry["labels"] = f"{VERIFY_DIR}/labels.npy"
    written: Dict[int, str] = {}
    for precision, ref in references.items():
        key = id(ref)
        if key not in written:
            kind = "int8" if precision == "int8" else "float"
            written[key] = f"{VERIFY_DIR}/logits_{kind}.npy"
            np.save(Path(out_dir) / written[key], np.ascontiguousarray(ref, dtype=np.float32))
        entry["reference"][precision] = written[key]
        entry["reference_is"][precision] = REFERENCE_IS[precision]
    return entry


def write_bundle(out_dir: Path, name: str, onnx: Dict[str, str], input_shape, opset: int,
                 verify: Optional[Dict[str, Any]] = None,
                 layernorm_nodes: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Copy the standalone scripts into `out_dir/jetson/` and write its README and bundle.json.

    `verify`: the entry `write_verification` returned (the bundle's output-check data), if any.
    `layernorm_nodes`: per ONNX, the tagged LayerNorm node names (= TensorRT layer names), for
    `trtexec.build_command(fp32_layers=...)` on the device.
    """
    from lraqvit_deploy.jetson.engine import LN_TAG

    jdir = Path(out_dir) / "jetson"
    copy_standalone(FILES, jdir)
    write_json(jdir / "bundle.json", {"name": name, "onnx": onnx,
                                      "input": {"name": "input", "shape": list(input_shape)}, "opset": opset,
                                      "layernorm_tag": LN_TAG, "layernorm_nodes": layernorm_nodes or {},
                                      "verify": verify})
    fp_rows = "\n".join(f"| `{f}` | {p.upper()} baseline |" for p, f in onnx.items() if p != "int8")
    text = README.format(name=name, run=RUN_COMMAND, qdq=onnx["int8"], opset=opset, fp_rows=fp_rows,
                         n_verify=verify["n_images"] if verify else "no")
    with atomic_write(Path(out_dir) / "README.md", "w") as f:
        f.write(text)
    return {"dir": "jetson", "files": sorted(FILES.values()) + ["bundle.json"], "run": RUN_COMMAND,
            "verify_dir": VERIFY_DIR if verify else None}
