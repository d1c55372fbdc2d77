"""`deploy bench --target jetson`: time the engine here when TensorRT imports, else collect the
result JSON that `python3 jetson/run.py` wrote on the Jetson."""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from ..benchmark import SCHEMA, BenchResult
from ..errors import DeployError

PRECISIONS = ("int8", "fp16", "fp32")


def add_bench_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--jetson-precision", choices=PRECISIONS, default="int8",
                       help="jetson: which engine to time or collect (default int8; fp16 is the baseline row)")
    group.add_argument("--jetson-trtexec", action="store_true", help="jetson: also time with trtexec (on device)")
    group.add_argument("--jetson-workspace-mb", type=int, default=1024, help="jetson: builder workspace (MiB)")


def _collect(path: Path, precision: str) -> BenchResult:
    candidates = [path] if path.suffix == ".json" else [path / "results" / f"{precision}.json"]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise DeployError(
            f"no TensorRT here (the `tensorrt` module does not import) and no result file at {candidates[0]}.\n"
            f"On the Jetson, in the folder `deploy build --target jetson` wrote, run:\n"
            f"    python3 jetson/run.py --precisions {precision}\n"
            f"then copy its results/ folder back next to this manifest (or pass the .json directly).")
    from ..artifacts import read_json

    data = read_json(found)
    if data.get("schema") != SCHEMA or data.get("target") != "jetson":
        raise DeployError(f"{found}: not a jetson bench result (schema {data.get('schema')!r}, want {SCHEMA}).")
    return BenchResult.from_dict(data)


def bench(path, args: argparse.Namespace) -> BenchResult:
    path = Path(path)
    precision = getattr(args, "jetson_precision", "int8")
    if importlib.util.find_spec("tensorrt") is None or path.suffix == ".json":
        return _collect(path, precision)
    from . import run

    if not (path / "jetson" / run.BUNDLE_FILE).is_file():
        raise DeployError(f"{path}: not a folder written by `deploy build --target jetson` (no jetson/{run.BUNDLE_FILE}).")
    result = run.bench_precision(str(path), precision, args.iterations, args.warmup,
                                 getattr(args, "jetson_trtexec", False), getattr(args, "jetson_workspace_mb", 1024))
    for w in result.extra.get("power", {}).get("warnings", []):
        print(f"warning: {w}")
    return result
