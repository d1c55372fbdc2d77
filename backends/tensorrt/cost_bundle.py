"""A Jetson cost table (`deploy profile --target jetson`): the cells as ONNX here, timed by trtexec there.

No TensorRT runs on this machine, and a TensorRT engine is tied to the device and TensorRT version
that built it, so the Jetson's cost table is measured in two halves:

  * here, `write_profile_bundle` writes every cell of the model's cost table as a small ONNX file,
    exported exactly as `deploy build --target jetson` exports the model (`onnx_export.export_onnx`,
    opset 16; INT8 cells as `qdq.QDQLinear`, int8 per-channel weights feeding DequantizeLinear and
    a per-tensor static activation Q/DQ), checks each one in onnxruntime against the PyTorch cell,
    plus the whole dense model (FP32 ONNX, and the Q/DQ ONNX of its per-tensor INT8 model, LayerNorm
    nodes tagged as in the build), and copies the standalone device script beside them;
  * on the Jetson, `python3 jetson/profile.py` (`lraqvit_deploy.jetson.profile`, standard library +
    trtexec) builds an engine per cell with trtexec (the precision flags of `engine.precision_plan`),
    times every engine with trtexec in interleaved rounds and writes `results/cost_table.json`: a
    `measure.costs.CostTable` with target "jetson", which `deploy compress --target jetson
    --cost-table` plans with.

Forms (`measure.costs.TARGET_FORMS["jetson"]`): fp32 (TensorRT FP32), fp16 (the FP32 ONNX built with
FP16, weak typing) and w8 (the Q/DQ ONNX built with INT8 + FP16, as the bundle's INT8 engine).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from lraqvit_deploy.errors import DeployError
from lraqvit_deploy.measure.costs import (RANK_FRACTIONS, TABLE_FORMAT, TARGET_FORMS, LinearShape, cell_name,
                                          model_shapes, rank_grid)

PROFILE_FILE = "profile.json"  # the cell list jetson/profile.py reads (in the bundle's jetson/ folder)
RUN_COMMAND = "python3 jetson/profile.py"
# (source in the checkout, name in the bundle): what jetson/profile.py imports when it runs standalone
FILES = {"jetson/profile.py": "profile.py", "jetson/trtexec.py": "trtexec.py", "jetson/engine.py": "engine.py",
         "jetson/clocks.py": "clocks.py", "lraqvit_deploy/measure/rounds.py": "rounds.py"}
ONNX_OF_FORM = {"fp32": "float", "fp16": "float", "w8": "int8"}  # which of a cell's two ONNX files a form builds
PRECISION_OF_FORM = {"fp32": "fp32", "fp16": "fp16", "w8": "int8"}  # the engine precision (engine.precision_plan)
MAX_REL_ERR = {"float": 1e-3, "int8": 2e-2}  # onnxruntime vs the PyTorch cell, per output element (relative)


class _Cell(nn.Module):
    """One cell: `layer(x)` on a (1, tokens, in) input (the dense Linear, or a rank pair down -> up)."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer(x)


def cell_module(shape: LinearShape, kind: str, rank: Optional[int], seed: int = 0) -> nn.Module:
    """The PyTorch module of one cell ONNX: float (`kind` "float") or the Q/DQ export form ("int8":
    each matrix a per-tensor static INT8 `QuantLinear`, swapped for `QDQLinear`)."""
    from lraqvit_deploy.layers.quant_linear import QuantLinear

    from .qdq import QDQLinear

    torch.manual_seed(seed)

    def q(lin: nn.Linear) -> nn.Module:
        if kind == "float":
            return lin
        ql = QuantLinear.from_linear(lin, "per_tensor_static", w_bits=8)
        ql.act_scale.fill_(4.0 / 127)  # timings do not depend on the scale; a plausible one keeps values finite
        return QDQLinear(ql)

    if rank is None:
        layer: nn.Module = q(nn.Linear(shape.in_f, shape.out_f))
    else:
        layer = nn.Sequential(q(nn.Linear(shape.in_f, int(rank), bias=False)), q(nn.Linear(int(rank), shape.out_f)))
    return _Cell(layer).eval()


def _file_stem(shape: LinearShape, kind: str, rank: Optional[int]) -> str:
    return f"{shape.in_f}x{shape.out_f}_t{shape.tokens}_{kind}" + ("" if rank is None else f"_r{rank}")


def _check_onnx(path: Path, module: nn.Module, x: torch.Tensor, what: str, kind: str) -> float:
    """The largest |onnxruntime - PyTorch| / max|PyTorch| of one ONNX file; a DeployError (internal) past the gate."""
    import numpy as np

    from .verify import ort_session

    sess = ort_session(path)
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        ref = module(x).float().numpy()
    err = float(np.abs(got - ref).max() / max(float(np.abs(ref).max()), 1e-12))
    if not (np.isfinite(got).all() and np.isfinite(err) and err <= MAX_REL_ERR[kind]):  # NaN anywhere fails
        raise DeployError(f"internal error: the {what} ONNX disagrees with its PyTorch module in onnxruntime "
                          f"(relative error {err:.3g}); please report it.")
    return err


def plan_cells(shapes: Sequence[LinearShape], forms: Sequence[str],
               fractions: Sequence[float] = RANK_FRACTIONS) -> List[Dict[str, Any]]:
    """Every cell of the table: per shape and form, the dense Linear and the pairs of `rank_grid`
    (w8's grid for w8, fp32's for the float forms)."""
    cells = []
    for s in shapes:
        for form in forms:
            grid = rank_grid(s, "w8" if form == "w8" else "fp32", fractions)
            for rank in [None, *grid]:
                cells.append({"name": f"{s.key}/{cell_name(form, rank)}", "shape": s.key, "form": form, "rank": rank,
                              "precision": PRECISION_OF_FORM[form],
                              "onnx": f"cells/{_file_stem(s, ONNX_OF_FORM[form], rank)}.onnx",
                              "input": [1, s.tokens, s.in_f]})
    return cells


def check_forms(forms: Sequence[str]) -> Tuple[str, ...]:
    allowed = TARGET_FORMS["jetson"]
    bad = [f for f in forms if f not in allowed]
    if bad or not forms:
        raise DeployError(f"--forms {' '.join(bad) or '(none)'}: the Jetson's forms are {', '.join(allowed)}.")
    return tuple(dict.fromkeys(forms))


def write_profile_bundle(model: nn.Module, out_dir, model_name: str, forms: Sequence[str] = TARGET_FORMS["jetson"],
                         fractions: Sequence[float] = RANK_FRACTIONS, opset: Optional[int] = None,
                         progress: bool = True, rounds: int = 3, iterations: int = 200) -> Dict[str, Any]:
    """Write the Jetson cost-table bundle of `model` to `out_dir` (atomically; an existing folder is
    replaced only when the whole bundle is written). Returns the `profile.json` it wrote. `rounds` and
    `iterations` (trtexec's) become the device script's defaults."""
    import onnx

    from lraqvit_deploy.data import input_size
    from lraqvit_deploy.io import atomic_dir, write_json
    from lraqvit_deploy.jetson.engine import LN_TAG
    from tqdm import tqdm

    from . import qdq
    from .bundle import copy_standalone
    from .onnx_export import DEFAULT_OPSET, export_onnx

    forms = check_forms(forms)
    opset = DEFAULT_OPSET if opset is None else int(opset)
    by_shape = model_shapes(model)
    shapes = list(by_shape)
    cells = plan_cells(shapes, forms, fractions)
    files = {c["onnx"]: c for c in cells}  # fp32 and fp16 cells share their float ONNX
    img = tuple(input_size(model))
    whole_forms = [f for f in forms if f in ("fp32", "fp16", "w8")]
    kinds = sorted({ONNX_OF_FORM[f] for f in whole_forms})
    bar = tqdm(total=len(files) + len(kinds), desc="export cells", unit="onnx", disable=not progress, leave=False)
    errors: Dict[str, float] = {}
    with atomic_dir(out_dir) as tmp:
        (tmp / "cells").mkdir()
        (tmp / "whole").mkdir()
        for rel, c in files.items():
            s = LinearShape.parse(c["shape"])
            kind = ONNX_OF_FORM[c["form"]]
            module = cell_module(s, kind, c["rank"])
            export_onnx(module, tmp / rel, (s.tokens, s.in_f), opset=opset, prepared=True)
            errors[rel] = _check_onnx(tmp / rel, module, torch.randn(1, s.tokens, s.in_f), rel, kind)
            bar.update(1)
        whole: Dict[str, Dict[str, Any]] = {}
        for kind in kinds:  # the whole dense model: FP32 ONNX and the Q/DQ ONNX of its per-tensor INT8 model
            rel = f"whole/model_{'fp32' if kind == 'float' else 'qdq'}.onnx"
            if kind == "float":
                export_onnx(model, tmp / rel, img, opset=opset)
            else:
                sim, _ = qdq.engine_model(model, torch.randn(8, *img), method="naive", mode="requantize")
                export_onnx(qdq.to_qdq_export(sim), tmp / rel, img, opset=opset)
            ln = [n.name for n in onnx.load(str(tmp / rel)).graph.node if LN_TAG in n.name]
            for form in whole_forms:
                if ONNX_OF_FORM[form] == kind:
                    whole[form] = {"name": f"whole/{form}", "form": form, "precision": PRECISION_OF_FORM[form],
                                   "onnx": rel, "input": [1, *img], "layernorm_nodes": ln}
            bar.update(1)
        bar.close()
        jdir = tmp / "jetson"
        copy_standalone(FILES, jdir)
        profile = {"format": TABLE_FORMAT, "target": "jetson", "model": model_name, "input": [1, *img],
                   "opset": opset, "forms": list(forms), "rank_fractions": list(fractions),
                   "shapes": {s.key: {"in": s.in_f, "out": s.out_f, "tokens": s.tokens,
                                      "break_even_rank": s.break_even_rank, "layers": list(by_shape[s])}
                              for s in shapes},
                   "cells": cells, "whole": whole, "onnxruntime_max_rel_err": max(errors.values(), default=0.0),
                   "layernorm_tag": LN_TAG, "defaults": {"rounds": int(rounds), "iterations": int(iterations)}}
        write_json(jdir / PROFILE_FILE, profile)
        (tmp / "README.md").write_text(README.format(model=model_name, n=len(cells), files=len(files),
                                                     forms=", ".join(forms), run=RUN_COMMAND))
    return profile


README = """# Jetson cost-table bundle: {model}

Written by `deploy profile --target jetson` on another machine: {n} cells ({files} ONNX files, forms
{forms}) of this model's encoder-Linear shapes, and the whole dense model, for a cost table measured
on the Jetson itself (a TensorRT engine is tied to the device and TensorRT version that built it).

## The one command (on the Jetson, in this folder)

    sudo nvpmodel -m 0 && sudo jetson_clocks     # MAXN, clocks pinned (the script warns otherwise)
    {run}

It needs only python3 and trtexec (JetPack: /usr/src/tensorrt/bin/trtexec). It builds one engine per
cell with trtexec (engines/, a timing cache shared; a second run reuses them), times every engine with
trtexec in interleaved rounds (default 3; order rotated each round) and writes
`results/cost_table.json`. Expect a few seconds per engine and per timing.

## Then, back on the host

    deploy compress --model {model} --target jetson --cost-table results/cost_table.json \\
        --latency-budget-ms MS ...        # or --speedup F (against the dense FP32 engine)

`python3 jetson/profile.py --help` lists the options (`--rounds`, `--iterations`, `--forms`, `--rebuild`,
`--trtexec PATH`).
"""

__all__ = ["write_profile_bundle", "plan_cells", "cell_module", "check_forms", "PROFILE_FILE", "RUN_COMMAND"]
