"""Timing a Jetson engine: here when TensorRT imports, else collecting the result JSON that
`python3 jetson/run.py` wrote on the Jetson."""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..measure.latency import BenchOptions
from ..benchmark import SCHEMA, BenchResult
from ..errors import DeployError, ToleranceError
from ..options import option

PRECISIONS = ("int8", "fp16", "fp32")


@dataclass(frozen=True)
class JetsonBenchOptions(BenchOptions):
    """How `bench(..., target="jetson")` times (or collects) an engine."""

    target: ClassVar[str] = "jetson"
    precision: str = option("int8", "which engine to time or collect (fp16 is the baseline row)", choices=PRECISIONS,
                            flag="--jetson-precision")
    trtexec: bool = option(False, "also time with trtexec (on the device)", flag="--jetson-trtexec")
    workspace_mb: int = option(1024, "builder workspace (MiB)", min=1, max=1 << 20, flag="--jetson-workspace-mb")


def _collect(path: Path, precision: str) -> BenchResult:
    from ..files import check_file, read_json_object

    what = "a jetson bench result written by `python3 jetson/run.py` on the Jetson"
    candidates = [path] if path.suffix == ".json" else [path / "results" / f"{precision}.json"]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        if path.suffix == ".json":
            check_file(path, what)  # missing, or a folder: says which
        raise DeployError(
            f"no TensorRT here (the `tensorrt` module does not import) and no result file at {candidates[0]}; "
            f"on the Jetson, in the folder `deploy build --target jetson` wrote, run `python3 jetson/run.py "
            f"--precisions {precision}`, then copy its results/ folder back next to this manifest (or pass the "
            ".json directly).")
    data = read_json_object(found, what)
    if data.get("schema") != SCHEMA or data.get("target") != "jetson":
        raise DeployError(f"{found}: not a jetson bench result (schema {data.get('schema')!r}, want {SCHEMA}).")
    refuse_failed(data, found)
    try:
        return BenchResult.from_dict(data)
    except (TypeError, ValueError, KeyError) as e:
        raise DeployError(f"{found}: not a complete bench result ({e}).") from None


def refuse_failed(data, where) -> None:
    """A result whose engine failed its output gates on the device is no latency: one DeployError line."""
    from .run import gate_failure

    why = gate_failure(data)
    if why:
        raise ToleranceError(f"{where}: {why}; its timing is not a latency of the model and is refused. Rebuild the "
                          "bundle (deploy build --target jetson) and rerun jetson/run.py; the file stays as it is "
                          "for inspection.")


def bench(path, options: JetsonBenchOptions) -> BenchResult:
    result = _bench(Path(path), options)
    if options.precision == "int8":  # a latency-budget plan predicts the INT8 engine: shown beside its median
        from ..files import MANIFEST
        from ..measure.latency import planned_latency

        folder = Path(path) if Path(path).is_dir() else Path(path).parent.parent  # BUNDLE or BUNDLE/results/x.json
        predicted = planned_latency(folder / MANIFEST)
        if predicted:
            result.extra["predicted"] = predicted
    return result


def _bench(path: Path, options: JetsonBenchOptions) -> BenchResult:
    if importlib.util.find_spec("tensorrt") is None or path.suffix == ".json":
        return _collect(path, options.precision)
    from . import run

    if not (path / "jetson" / run.BUNDLE_FILE).is_file():
        raise DeployError(f"{path}: not a folder written by `deploy build --target jetson` (no jetson/{run.BUNDLE_FILE}).")
    result = run.bench_precision(str(path), options.precision, options.iterations, options.warmup,
                                 options.trtexec, options.workspace_mb)
    refuse_failed(result.to_dict(), result.artifact)
    for w in result.extra.get("power", {}).get("warnings", []):
        print(f"warning: {w}")
    return result
