"""Cost tables: what each encoder-Linear shape of a model costs in the target's own runtime (issue 26, item 1).

A rank-r pair (down: in -> r, then up: r -> out) only beats the dense Linear above a break-even rank
that the kernels set (their tiles, packing, the per-token quantization of each input), not at the
parameter break-even in x out / (in + out). A cost table measures it instead of modelling it. This
module is the table itself: what it holds, how it is read, where it is cached. The profiler that
measures one (small programs lowered and timed in the target's runtime) is the ExecuTorch backend's
(`backends.executorch.cost_profile`, `deploy profile`).

  * every distinct encoder-Linear shape of a model: (in, out, tokens), where tokens is the number of
    rows one image feeds that Linear (patches + class/register tokens; `model_shapes`);
  * per shape and weight form (`FORMS`: fp32, w8, w4, w4g32), the dense Linear and rank-r pairs over
    a grid of ranks (`rank_grid`: fractions of the break-even rank, even; multiples of the group for
    blockwise forms; plus a few multiples of 32), each cell's median and min-max over rounds;
  * the whole dense model in FP32 and w8 (`CostTable.whole`, JSON `whole_ms`): `CostTable.rest_ms(form)`
    is that time less the sum of the model's dense cells, what the Linears' cells do not price
    (attention products, LayerNorm, GELU, the head, the glue), which the latency-budget planner adds to
    its predictions (`rank_alloc.latency`). Older tables have no `whole_ms`: `rest_ms` is then None.

`CostTable.cost_ms(in_f, out_f, tokens, form, rank)` reads a cell (linear interpolation over the rank
grid) and `CostTable.break_even_rank_measured(shape, form)` gives the smallest measured rank at
which the pair is slower than the dense Linear. Tables are cached per host, runtime and thread
count (`cached_table`), so a later allocation on the same machine finds them.
"""
from __future__ import annotations

import bisect
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from ..errors import DeployError

TABLE_FORMAT = "lraqvit-deploy/cost-table/1"
TARGETS = ("host", "android", "jetson")
FORMS = ("fp32", "w8", "w4", "w4g32")  # fp32, then the XNNPACK forms of `quant.forms` (qc8w, qc4w, qb4w g32)
EXTRA_FORMS = ("w4g64", "w4g128")  # XNNPACK's other blockwise forms: timed when asked (`--forms`), priced when timed
# what each target's table times by default: XNNPACK's forms on a CPU; TensorRT FP32, FP16 and INT8 Q/DQ on a Jetson
TARGET_FORMS = {"host": FORMS, "android": FORMS, "jetson": ("fp32", "fp16", "w8")}
RANK_FRACTIONS = (1 / 8, 1 / 4, 1 / 2, 3 / 4, 1.0)  # of the break-even rank in x out / (in + out)
ALIGNED_FRACTIONS = (1 / 2,)  # ... and the multiple of ALIGN nearest to these (a tile-aligned rank)
ALIGN = 32
RUNTIME = "executorch.runtime (pybindings, XNNPACK)"
STATS = ("median_ms", "best_ms")  # a cell's median over rounds of per-round medians; its fastest single call
WHOLE_FORMS = ("fp32", "w8")  # the whole dense model is timed in these forms (`CostTable.whole`, `rest_ms`)


# ---- shapes -------------------------------------------------------------------------------------------
@dataclass(frozen=True, order=True)
class LinearShape:
    """One encoder-Linear shape at its token count: `in_f` -> `out_f` on `tokens` rows per image."""

    in_f: int
    out_f: int
    tokens: int

    @property
    def key(self) -> str:
        """`384x1536@197` (in x out @ tokens): the table's key for this shape."""
        return f"{self.in_f}x{self.out_f}@{self.tokens}"

    @classmethod
    def parse(cls, key: str) -> "LinearShape":
        try:
            io_, tokens = key.split("@")
            in_f, out_f = io_.split("x")
            return cls(int(in_f), int(out_f), int(tokens))
        except ValueError:
            raise DeployError(f"{key!r}: expected a shape key like 384x1536@197 (in x out @ tokens).") from None

    @property
    def break_even_rank(self) -> float:
        from ..layers.low_rank_linear import break_even_rank

        return break_even_rank(self.in_f, self.out_f)


ShapeLike = Union[LinearShape, Tuple[int, int, int], str]


def as_shape(shape: ShapeLike) -> LinearShape:
    if isinstance(shape, LinearShape):
        return shape
    if isinstance(shape, str):
        return LinearShape.parse(shape)
    return LinearShape(*(int(v) for v in shape))


def model_shapes(model, example=None) -> Dict[LinearShape, List[str]]:
    """`{shape: [layer names]}` of every encoder Linear of `model` (`vit_layout.encoder_layers`, Swin's
    patch merging included), with the rows one image feeds it, seen in one batch-1 forward pass."""
    import torch

    from ..data import input_size
    from ..vit_layout import encoder_layers

    layers = encoder_layers(model, include_downsample=True)
    if not layers:
        raise DeployError("this model has no encoder Linears to profile (expected timm ViT-family blocks).")
    seen: Dict[str, Tuple[int, int, int]] = {}
    hooks = []
    for t in layers:
        def hook(mod, args, _out, name=t.name):
            x = args[0]
            seen[name] = (int(x.shape[-1]), int(_out.shape[-1]), int(x.numel() // x.shape[-1]))
        hooks.append(t.linear.register_forward_hook(hook))
    x = example if example is not None else torch.randn(1, *input_size(model))
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    out: Dict[LinearShape, List[str]] = {}
    for t in layers:
        if t.name in seen:
            out.setdefault(LinearShape(*seen[t.name]), []).append(t.name)
    return dict(sorted(out.items()))


# ---- forms and ranks ----------------------------------------------------------------------------------
def weight_form(form: str):
    from ..quant.forms import WeightForm

    if form in ("fp32", "fp16"):  # float weights (fp16: a Jetson table's TensorRT FP16 engines)
        return None
    try:
        return WeightForm.parse(form)
    except ValueError as e:
        raise DeployError(f"form {form!r}: expected fp32 or a weight form like w8, w4, w4g32 ({e}).") from None


def form_fits(form: str, in_f: int) -> bool:
    """Whether XNNPACK runs `form` on a matrix with `in_f` inputs (`quant.forms.form_problem`)."""
    from ..quant.forms import form_problem

    wf = weight_form(form)
    return wf is None or form_problem("android", wf, in_f) is None


def rank_grid(shape: ShapeLike, form: str, fractions: Sequence[float] = RANK_FRACTIONS,
              aligned: Sequence[float] = ALIGNED_FRACTIONS) -> List[int]:
    """The ranks a pair is timed at: `fractions` of the break-even rank rounded to even ranks (to the
    form's group for blockwise forms: `up` takes r inputs), plus the multiples of 32 nearest to
    `aligned` fractions; within 1..min(in, out), only ranks whose both halves the form fits."""
    s = as_shape(shape)
    wf = weight_form(form)
    step = wf.group if (wf is not None and wf.group) else 2
    r_star, top = s.break_even_rank, min(s.in_f, s.out_f)

    def near(r: float, m: int) -> int:
        return min(max(m, int(round(r / m)) * m), top - top % m if top >= m else top)
    ranks = {near(f * r_star, step) for f in fractions} | {near(f * r_star, max(step, ALIGN)) for f in aligned}
    return sorted(r for r in ranks if 1 <= r <= top and form_fits(form, r) and form_fits(form, s.in_f))


def cell_name(form: str, rank: Optional[int]) -> str:
    """`w8` (dense) or `w8/r64` (a rank-64 pair in w8)."""
    return form if rank is None else f"{form}/r{rank}"


# ---- the table --------------------------------------------------------------------------------------------
@dataclass
class CostTable:
    """A measured cost table (`to_dict` is its JSON): per shape and form, the dense and pair timings."""

    target: str
    threads: int
    cpu: Dict[str, Any]
    versions: Dict[str, str]
    shapes: Dict[str, Dict[str, Any]]  # shape key -> {"in", "out", "tokens", "layers", "forms": {form: cell}}
    protocol: Dict[str, Any] = field(default_factory=dict)
    meta: Dict[str, Any] = field(default_factory=dict)  # model, created, profile_s, clocks, runtime
    whole: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # form -> the whole dense model's timing

    # ---- reading ----
    def _form(self, shape: ShapeLike, form: str) -> Dict[str, Any]:
        s = as_shape(shape)
        entry = self.shapes.get(s.key)
        if entry is None:
            have = ", ".join(sorted(self.shapes)) or "none"
            raise DeployError(f"the cost table has no shape {s.key} (in x out @ tokens; it has {have}); "
                              f"profile this model with `deploy profile --model ...`.")
        cell = entry["forms"].get(form)
        if cell is None:
            raise DeployError(f"the cost table has no form {form!r} for {s.key} (it has {sorted(entry['forms'])}).")
        return cell

    def cost_ms(self, in_f: int, out_f: int, tokens: int, form: str, rank: Optional[int] = None,
                stat: str = "median_ms") -> float:
        """The median ms of one image through this Linear in `form`: dense (`rank` None) or a rank-`rank`
        pair, linearly interpolated between the grid's ranks (below the grid: the smallest rank's cost;
        above it: the last segment extended). A shape or form not in the table is a DeployError.
        `stat="best_ms"`: the fastest single call instead (what the kernels take on an idle machine)."""
        if stat not in STATS:
            raise DeployError(f"stat {stat!r}: choose one of {', '.join(STATS)}.")
        cell = self._form((in_f, out_f, tokens), form)
        if rank is None:
            return float(cell["dense"][stat])
        if not 1 <= rank <= min(in_f, out_f):
            raise DeployError(f"rank {rank}: a pair of a {in_f} -> {out_f} Linear takes 1..{min(in_f, out_f)}.")
        ranks = [int(r) for r in cell["ranks"]]
        ms = [float(cell["pairs"][str(r)][stat]) for r in ranks]
        if not ranks:
            raise DeployError(f"the cost table has no pair timings for {LinearShape(in_f, out_f, tokens).key} {form}.")
        if rank <= ranks[0] or len(ranks) == 1:
            return ms[0] if rank <= ranks[0] else ms[-1]
        i = min(bisect.bisect_left(ranks, rank), len(ranks) - 1)
        r0, r1, m0, m1 = ranks[i - 1], ranks[i], ms[i - 1], ms[i]
        return m0 + (m1 - m0) * (rank - r0) / (r1 - r0)

    def break_even_rank_measured(self, shape: ShapeLike, form: str, stat: str = "median_ms") -> Optional[int]:
        """The smallest grid rank at which the pair is slower than the dense Linear in `form` (None: the
        pair is faster at every rank of the grid). Compare `LinearShape.break_even_rank`, the parameter
        break-even."""
        if stat not in STATS:
            raise DeployError(f"stat {stat!r}: choose one of {', '.join(STATS)}.")
        cell = self._form(shape, form)
        dense = float(cell["dense"][stat])
        for r in cell["ranks"]:
            if float(cell["pairs"][str(r)][stat]) > dense:
                return int(r)
        return None

    def rest_ms(self, form: str = "fp32", stat: str = "median_ms") -> Optional[float]:
        """The whole dense model's time in `form` less the sum of its dense cells (each shape's cell times
        the number of layers of that shape): what runs outside the encoder Linears. None when the table
        has no whole-model timing in `form` (tables of earlier profiles) or does not list each shape's
        layers. It can be negative where the cells, timed alone, read slower than inside the model."""
        if stat not in STATS:
            raise DeployError(f"stat {stat!r}: choose one of {', '.join(STATS)}.")
        whole = (self.whole.get(form) or {}).get(stat)
        if whole is None:
            return None
        cells = 0.0
        for entry in self.shapes.values():
            n, cell = len(entry.get("layers") or ()), entry.get("forms", {}).get(form)
            if not n or cell is None:
                return None
            cells += n * float(cell["dense"][stat])
        return float(whole) - cells

    def shape_list(self) -> List[LinearShape]:
        return [LinearShape.parse(k) for k in self.shapes]

    def covers(self, shapes: Iterable[ShapeLike], forms: Sequence[str] = ()) -> bool:
        """Whether every shape (and each of `forms` it fits) is in the table."""
        for sh in shapes:
            s = as_shape(sh)
            entry = self.shapes.get(s.key)
            if entry is None or any(f not in entry["forms"] for f in forms if form_fits(f, s.in_f)):
                return False
        return True

    # ---- JSON ----
    def to_dict(self) -> Dict[str, Any]:
        from .host import cpu_line

        return {"format": TABLE_FORMAT, "target": self.target, "cpu_line": cpu_line(self.cpu), "cpu": self.cpu,
                "versions": self.versions, "threads": self.threads, "runtime": self.meta.get("runtime", RUNTIME),
                "host_key": host_key(self.target, self.threads, self.cpu, self.versions),
                "protocol": self.protocol, "meta": self.meta, "shapes": self.shapes,
                **({"whole_ms": self.whole} if self.whole else {})}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "the cost table") -> "CostTable":
        if not isinstance(d, Mapping) or d.get("format") != TABLE_FORMAT:
            got = d.get("format") if isinstance(d, Mapping) else type(d).__name__
            raise DeployError(f"{source}: not a cost table of this version (format {got!r}, expected {TABLE_FORMAT!r}).")
        try:
            return cls(target=str(d["target"]), threads=int(d["threads"]), cpu=dict(d["cpu"]),
                       versions=dict(d["versions"]), shapes=dict(d["shapes"]), protocol=dict(d.get("protocol", {})),
                       meta=dict(d.get("meta", {})), whole=dict(d.get("whole_ms") or {}))
        except (KeyError, TypeError, ValueError) as e:
            raise DeployError(f"{source}: a cost table missing {e} ({type(e).__name__}).") from None

    def save(self, path) -> Path:
        """Write the table as JSON, atomically."""
        from ..io import write_json

        write_json(path, self.to_dict())
        return Path(path)

    @classmethod
    def load(cls, path) -> "CostTable":
        from ..files import read_json_object

        return cls.from_dict(read_json_object(path, "a cost table written by `deploy profile`"), str(path))


def busy_note(table: "CostTable") -> Optional[str]:
    """A line when the host was busier than its cores during the profile (the medians then read the
    neighbours: docs/profile.md), else None."""
    import os

    loads = [v for v in ((table.meta.get("load_avg") or {}).get(k) for k in ("before", "after")) if v]
    cpus = os.cpu_count() or 1
    peak = max((v[0] for v in loads), default=0.0)
    if table.target == "host" and peak > cpus:
        return (f"note: load average {peak:.1f} on {cpus} CPUs during the profile; the medians may include "
                "waits for the CPU (best_ms is the fastest call), profile again on an idle machine")
    return None


def versions_key(versions: Mapping[str, Any]) -> str:
    """A folder name for cells built by these torch / executorch versions."""
    ident = {k: versions.get(k) for k in ("torch", "executorch")}
    return "cells-" + hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]


# ---- the cache ----------------------------------------------------------------------------------------------
def host_key(target: str, threads: int, cpu: Optional[Mapping[str, Any]] = None,
             versions: Optional[Mapping[str, str]] = None) -> str:
    """What a table is valid for: the target, this CPU (model and kernel-relevant flags), the runtime
    versions (torch, executorch) and the thread count, as a short hash."""
    from .host import lscpu, versions as installed

    cpu = lscpu() if cpu is None else cpu
    versions = installed(("torch", "executorch")) if versions is None else versions
    ident = {"target": target, "threads": int(threads),
             "cpu": {k: cpu.get(k) for k in ("model_name", "family", "model", "stepping", "flags")},
             "versions": {k: versions.get(k) for k in ("torch", "executorch")}}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def _shapes_key(shapes: Iterable[ShapeLike], forms: Sequence[str]) -> str:
    keys = sorted(as_shape(s).key for s in shapes)
    return hashlib.sha256(json.dumps([keys, list(forms)]).encode()).hexdigest()[:16]


def cache_path(target: str, threads: int, shapes: Iterable[ShapeLike], forms: Sequence[str] = FORMS,
               cpu: Optional[Mapping[str, Any]] = None, versions: Optional[Mapping[str, str]] = None) -> Path:
    """Where the table of these shapes on this host (or the device `cpu` describes), runtime and thread
    count is cached."""
    from ..paths import cache_dir

    return cache_dir("costs", host_key(target, threads, cpu, versions)) / f"{_shapes_key(shapes, forms)}.json"


def cached_table(target: str, threads: int, shapes: Iterable[ShapeLike], forms: Sequence[str] = FORMS,
                 cpu: Optional[Mapping[str, Any]] = None,
                 versions: Optional[Mapping[str, str]] = None) -> Optional[CostTable]:
    """The cached table of this host + runtime + `threads` that covers every one of `shapes` in `forms`
    (the exact one first, then any other of the same host that covers them), or None. For a phone,
    `cpu` and `versions` are the ones its table recorded (`CostTable.cpu`, `.versions`)."""
    from ..paths import cache_dir

    shapes = [as_shape(s) for s in shapes]
    exact = cache_path(target, threads, shapes, forms, cpu, versions)
    others = sorted(p for p in cache_dir("costs", exact.parent.name).glob("*.json") if p != exact)
    for p in ([exact] if exact.is_file() else []) + others:
        try:
            table = CostTable.load(p)
        except DeployError:
            continue  # a stale or broken cache file is skipped, never fatal
        if table.target == target and table.threads == int(threads) and table.covers(shapes, forms):
            return table
    return None


__all__ = ["TABLE_FORMAT", "TARGETS", "TARGET_FORMS", "FORMS", "EXTRA_FORMS", "RANK_FRACTIONS", "STATS", "WHOLE_FORMS", "RUNTIME", "LinearShape",
           "CostTable", "as_shape", "model_shapes", "rank_grid", "form_fits", "cell_name", "cached_table", "cache_path",
           "host_key", "versions_key"]
