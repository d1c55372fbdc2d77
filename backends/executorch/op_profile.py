"""Per-operator time on this host from an ETDump: how much the ops outside XNNPACK cost.

LayerNorm has no XNNPACK visitor in ExecuTorch 1.5.1, so every block runs two portable
`native_layer_norm` kernels between delegate segments; this puts a number on it.
"""
from __future__ import annotations

import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict


def op_profile(path, runs: int = 10) -> Dict[str, Any]:
    """Average ms per execution: inside delegates, in portable operators (by op), and their share."""
    import torch
    from executorch.devtools import Inspector
    from executorch.runtime import Runtime

    from lraqvit_deploy.files import resolve_program

    program = Runtime.get().load_program(str(resolve_program(path)), enable_etdump=True, debug_buffer_size=0)
    method = program.load_method("forward")
    x = torch.randn(*method.metadata.input_tensor_meta(0).sizes())
    for _ in range(runs):
        method.execute([x])
    with tempfile.TemporaryDirectory() as tmp:
        etdump = Path(tmp) / "run.etdp"
        program.write_etdump_result_to_file(str(etdump), str(Path(tmp) / "debug.bin"))
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            df = Inspector(etdump_path=str(etdump)).to_dataframe()
    df = df[df["event_block_name"] == "Execute"]
    delegate_ms = float(df.loc[df["event_name"] == "DELEGATE_CALL", "avg (ms)"].sum())
    operator_ms = float(df.loc[df["event_name"] == "OPERATOR_CALL", "avg (ms)"].sum())
    by_op: Dict[str, float] = defaultdict(float)
    for name, ms in zip(df["event_name"], df["avg (ms)"]):
        if str(name).startswith("native_call_"):
            by_op[str(name)[len("native_call_"):]] += float(ms)
    total = delegate_ms + operator_ms
    return {"runs": runs, "delegate_ms": round(delegate_ms, 4), "non_delegated_ms": round(operator_ms, 4),
            "non_delegated_share": round(operator_ms / total, 4) if total else None,
            "non_delegated_by_op_ms": {k: round(v, 4) for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])}}
