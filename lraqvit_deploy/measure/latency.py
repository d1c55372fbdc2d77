"""The latency protocol every target follows (host runtime, phone over adb, Jetson): its options.

Warm-up, then N timed iterations on `threads` threads; each target's bench options extend this
(`HostBenchOptions`, `AndroidBenchOptions`, `JetsonBenchOptions`). It lives here, below the backends
and their device halves, so both import it and neither imports the other's side.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Dict, Optional

from lraqvit_deploy.options import Options, option


@dataclass(frozen=True)
class BenchOptions(Options):
    """The latency protocol every target follows: warm-up, then N timed iterations on `threads` threads."""

    target: ClassVar[str] = ""
    iterations: int = option(50, "timed iterations", min=1, max=1_000_000, flag=("--iterations", "-n"))
    warmup: int = option(5, "untimed warm-up iterations", min=0, max=1_000_000)
    threads: int = option(1, "CPU threads of the runtime", min=1, max=1024, cli=False)  # the CLI's --threads
    progress: bool = option(True, "progress output", cli=False)


# ---- a latency-budget plan's prediction, from the model into the build manifest, and back for `deploy bench`
def prediction_entries(model) -> Dict[str, Any]:
    """The build-manifest entries of a latency-budget plan (`deploy compress --latency-budget-ms/--speedup`):
    `latency_budget_ms`, `predicted_latency_ms` and `latency_prediction` (its cost table, threads, CPU);
    {} for any other model. Every backend's build writes them, so `deploy bench` shows measured beside it."""
    from ..model_info import model_info

    info = model_info(model)
    compression = info.compression or (info.manifest or {}).get("compression") or {}
    if compression.get("predicted_latency_ms") is None:
        return {}
    lat = compression.get("latency") or {}
    return {"latency_budget_ms": lat.get("latency_budget_ms"), "predicted_latency_ms": compression["predicted_latency_ms"],
            "latency_prediction": {k: lat.get(k) for k in ("cost_table", "threads", "cpu", "table_target", "rest_known",
                                                           "stat")}}


def planned_latency(manifest_path, program: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """The prediction a build manifest carries (`prediction_entries`), for `deploy bench` to print beside the
    measured latency: None when there is none (no manifest, a broken one, no latency plan, or a manifest of
    another program than `program`)."""
    from ..errors import DeployError
    from ..files import read_json_object

    path = Path(manifest_path)
    if not path.is_file():
        return None
    try:
        manifest = read_json_object(path, "a build manifest written by `deploy build`")
    except DeployError:
        return None  # the program ran; a broken manifest only loses the comparison
    if (program is not None and manifest.get("program") not in (None, program)) \
            or manifest.get("predicted_latency_ms") is None:
        return None
    return {"predicted_latency_ms": manifest["predicted_latency_ms"],
            "latency_budget_ms": manifest.get("latency_budget_ms"), **(manifest.get("latency_prediction") or {})}
