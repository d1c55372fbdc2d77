"""Cost tables: what each encoder-Linear shape of a model costs in the target's own runtime (issue 26, item 1).

A rank-r pair (down: in -> r, then up: r -> out) only beats the dense Linear above a break-even rank
that the kernels set (their tiles, packing, the per-token quantization of each input), not at the
parameter break-even in x out / (in + out). A cost table measures it instead of modelling it:

  * every distinct encoder-Linear shape of a model: (in, out, tokens), where tokens is the number of
    rows one image feeds that Linear (patches + class/register tokens; `model_shapes`);
  * per shape and weight form (`FORMS`: fp32, w8, w4, w4g32), the dense Linear and rank-r pairs over
    a grid of ranks (`rank_grid`: fractions of the break-even rank, even; multiples of the group for
    blockwise forms; plus a few multiples of 32);
  * each cell one small program built exactly as an Android program is built (the library's
    `QuantLinear` / `LowRankLinear`, lowered by `backends.executorch.export.lower_to_xnnpack`) and
    timed in-process with the host ExecuTorch runtime that `deploy bench --target host` uses
    (`HostTimer`), or on a phone by its executor_runner over adb (`AndroidTimer`, the protocol of
    `deploy bench --target android`);
  * the cells of one shape timed in interleaved rounds (`measure.rounds.interleaved`): warm-up, then
    per round each cell's median over `iterations` calls; the table keeps the median and min-max over
    rounds.

Each program computes `layer(x + 1)`: a graph input that feeds a dynamically quantized XNNPACK Linear
directly does not load in the runtime (ExecuTorch 1.5: "Failed parsing tensor at index 0: 0x23"),
and in a real model a LayerNorm, GELU or the attention product always feeds it. The add runs in the
same XNNPACK delegate, in every cell alike (dense and pairs, every form).

`profile_costs` also times the whole dense model, FP32 and w8 (every encoder Linear int8 per channel),
with the same runtime (`CostTable.whole`, JSON `whole_ms`); `CostTable.rest_ms(form)` is that time
less the sum of the model's dense cells: what the Linears' cells do not price (attention products,
LayerNorm, GELU, the head, the glue), which the latency-budget planner adds to its predictions
(`rank_alloc.latency`). Older tables have no `whole_ms`: `rest_ms` is then None.

`CostTable.cost_ms(in_f, out_f, tokens, form, rank)` reads a cell (linear interpolation over the rank
grid) and `CostTable.break_even_rank_measured(shape, form)` gives the smallest measured rank at
which the pair is slower than the dense Linear. Tables are cached per host, runtime and thread
count (`cached_table`), so a later allocation on the same machine finds them.
"""
from __future__ import annotations

import bisect
import hashlib
import json
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch.nn as nn

from ..errors import DeployError

TABLE_FORMAT = "lraqvit-deploy/cost-table/1"
TARGETS = ("host", "android")
FORMS = ("fp32", "w8", "w4", "w4g32")  # fp32, then the XNNPACK forms of `quant.forms` (qc8w, qc4w, qb4w g32)
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
def _weight_form(form: str):
    from ..quant.forms import WeightForm

    if form == "fp32":
        return None
    try:
        return WeightForm.parse(form)
    except ValueError as e:
        raise DeployError(f"form {form!r}: expected fp32 or a weight form like w8, w4, w4g32 ({e}).") from None


def form_fits(form: str, in_f: int) -> bool:
    """Whether XNNPACK runs `form` on a matrix with `in_f` inputs (`quant.forms.form_problem`)."""
    from ..quant.forms import form_problem

    wf = _weight_form(form)
    return wf is None or form_problem("android", wf, in_f) is None


def rank_grid(shape: ShapeLike, form: str, fractions: Sequence[float] = RANK_FRACTIONS,
              aligned: Sequence[float] = ALIGNED_FRACTIONS) -> List[int]:
    """The ranks a pair is timed at: `fractions` of the break-even rank rounded to even ranks (to the
    form's group for blockwise forms: `up` takes r inputs), plus the multiples of 32 nearest to
    `aligned` fractions; within 1..min(in, out), only ranks whose both halves the form fits."""
    s = as_shape(shape)
    wf = _weight_form(form)
    step = wf.group if (wf is not None and wf.group) else 2
    r_star, top = s.break_even_rank, min(s.in_f, s.out_f)

    def near(r: float, m: int) -> int:
        return min(max(m, int(round(r / m)) * m), top - top % m if top >= m else top)
    ranks = {near(f * r_star, step) for f in fractions} | {near(f * r_star, max(step, ALIGN)) for f in aligned}
    return sorted(r for r in ranks if 1 <= r <= top and form_fits(form, r) and form_fits(form, s.in_f))


# ---- one cell: the small program ------------------------------------------------------------------------
class CellProgram(nn.Module):
    """`layer(x + 1)`: one Linear (or pair) fed by an op, as inside a model (see the module docstring)."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer(x + 1.0)


def cell_module(shape: ShapeLike, form: str, rank: Optional[int] = None, seed: int = 0):
    """The module one cell times: the dense Linear (`rank` None) or a rank-`rank` `LowRankLinear`, each
    matrix a `QuantLinear` in `form` with dynamic per-token int8 activations (what `rank_alloc` builds
    for Android), or float for fp32."""
    import torch

    from ..layers.low_rank_linear import LowRankLinear
    from ..layers.quant_linear import QuantLinear

    s = as_shape(shape)
    wf = _weight_form(form)
    torch.manual_seed(seed)

    def q(lin: nn.Linear) -> nn.Module:
        if wf is None:
            return lin
        # the Android activations of `rank_alloc.plan.TARGET_ACT`: dynamic per token, asymmetric (XNNPACK's qd8)
        return QuantLinear.from_linear(lin, "per_token_dynamic", w_bits=wf.bits, w_group_size=wf.group,
                                       act_symmetric=False)

    if rank is None:
        layer = q(nn.Linear(s.in_f, s.out_f))
    else:
        layer = LowRankLinear(s.in_f, s.out_f, int(rank))
        layer.down, layer.up = q(layer.down), q(layer.up)
    return CellProgram(layer)


def build_cell(shape: ShapeLike, form: str, rank: Optional[int], path: Path) -> Path:
    """Lower one cell to an XNNPACK .pte at `path` (written atomically) with the Android build's lowering."""
    import torch

    from ..backends.executorch.export import lower_to_xnnpack
    from ..io import atomic_write

    s = as_shape(shape)
    module = cell_module(s, form, rank)
    lowered = lower_to_xnnpack(module, "fp32" if form == "fp32" else "q8", example=torch.randn(1, s.tokens, s.in_f))
    with atomic_write(path, "wb") as f:
        f.write(lowered.buffer)
    return path


def _versions_key(versions: Mapping[str, Any]) -> str:
    """A folder name for cells built by these torch / executorch versions."""
    ident = {k: versions.get(k) for k in ("torch", "executorch")}
    return "cells-" + hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]


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


# ---- profiling ---------------------------------------------------------------------------------------------------
def _load_avg() -> Optional[List[float]]:
    """The 1/5/15-minute load averages (None where the OS has none): a busy machine inflates medians."""
    import os

    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


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


def _clocks_mhz() -> Optional[List[float]]:
    """Per-CPU `cpu MHz` of /proc/cpuinfo (None where not readable)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    mhz = [float(ln.split(":")[1]) for ln in text.splitlines() if ln.startswith("cpu MHz") and ":" in ln]
    return mhz or None


def check_profile_args(target: str, threads: int, rounds: int, iterations: int, warmup: int,
                       forms: Sequence[str], fractions: Sequence[float] = RANK_FRACTIONS) -> None:
    """The arguments of `profile_costs`, checked before any work (one DeployError line each)."""
    if target not in TARGETS:
        raise DeployError(f"--target {target!r}: choose one of {', '.join(TARGETS)}.")
    for flag, v, lo, hi in (("--threads", threads, 1, 4096), ("--rounds", rounds, 1, 1000),
                            ("--iterations", iterations, 1, 1_000_000), ("--warmup", warmup, 0, 1_000_000)):
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise DeployError(f"{flag} {v!r}: expected a whole number in {lo}..{hi:,}.")
    if not fractions or not all(isinstance(f, (int, float)) and 0 < f <= 2 for f in fractions):
        raise DeployError(f"--rank-fractions {' '.join(map(str, fractions)) or '(none)'}: expected fractions of the "
                          "break-even rank in (0, 2], e.g. 0.25 0.5 1.")
    if not forms:
        raise DeployError("forms: give at least one of " + ", ".join(FORMS) + ".")
    for f in forms:
        wf = _weight_form(f)
        if wf is not None and not any(form_fits(f, n) for n in (32, 64, 128, 256, 512, 1024)):
            raise DeployError(f"form {f!r}: XNNPACK does not run it (forms: {', '.join(FORMS)}, w4g64, w4g128).")


class HostTimer:
    """Cells timed in this process by the host ExecuTorch runtime (`deploy bench --target host`'s)."""

    runtime = RUNTIME

    def __init__(self, threads: int):
        from ..backends.executorch.runtime import set_threads
        from ..files import native_stderr, pass_on_native_log
        from .host import lscpu, versions

        logged: List[str] = []  # the runtime's C++ log lines (fd 2) on its first use: shown only with --debug
        with native_stderr(logged):
            self.threads = set_threads(threads)
        pass_on_native_log(logged)
        self.cpu, self.versions, self.methods, self.best, self.inputs = lscpu(), versions(), {}, {}, {}

    def load(self, name: str, path: Path, shape: Optional[LinearShape], warmup: int) -> None:
        """Load a program and warm it up; `shape` None: a whole model, its input read from the program."""
        import torch

        from ..backends.executorch.runtime import load_forward

        self.methods[name], _ = load_forward(path)
        if shape is None:
            self.x = torch.randn(*self.methods[name].metadata.input_tensor_meta(0).sizes())
        else:
            self.x = torch.randn(1, shape.tokens, shape.in_f)
        self.inputs[name] = self.x
        for _ in range(warmup):
            self.methods[name].execute([self.x])

    def time(self, name: str, iterations: int) -> float:
        """The median ms of `iterations` calls of cell `name`."""
        import statistics

        m, x, times = self.methods[name], self.inputs.get(name, getattr(self, "x", None)), []
        for _ in range(iterations):
            t0 = time.perf_counter()
            m.execute([x])
            times.append((time.perf_counter() - t0) * 1e3)
        self.best[name] = min(self.best.get(name, math.inf), min(times))
        return statistics.median(times)

    def clear(self) -> None:
        self.methods, self.best, self.inputs = {}, {}, {}


class AndroidTimer:
    """Cells timed on an adb-attached phone by the Android runner (`deploy bench --target android`'s protocol:
    `android_runner.protocol.run_on_device`, pinned to the fastest cores, no cool-down between cells)."""

    runtime = "executor_runner on the phone (XNNPACK), over adb"

    def __init__(self, threads: int, serial: Optional[str] = None, adb: Optional[str] = None,
                 runner: Optional[str] = None):
        from ..android_runner.adb import Adb
        from ..android_runner.device import check_abi, read_device
        from ..android_runner.runner_binary import find_runner
        from .host import versions

        self.adb = Adb(adb)  # the files first (adb, runner), then the device: each a one-line error
        self.runner = find_runner(runner)
        self.adb.select(serial)
        self.info = read_device(self.adb)
        check_abi(self.info)
        self.threads, self.paths, self.best = int(threads), {}, {}
        self.cpu = {"model_name": self.info.description, "soc": self.info.soc, "android": self.info.android,
                    "max_khz": self.info.max_khz}
        self.versions = {**versions(("executorch",)), "runner": self.runner.name}

    def load(self, name: str, path: Path, shape: LinearShape, warmup: int) -> None:
        self.paths[name], self.warmup = path, warmup

    def time(self, name: str, iterations: int) -> float:
        from ..android_runner.protocol import RunPlan, run_on_device

        plan = RunPlan(pte=self.paths[name], runner=self.runner, threads=self.threads, warmup=self.warmup,
                       iterations=iterations, cooldown_s=0.0)
        result = run_on_device(self.adb, plan, progress=False)
        self.best[name] = min(self.best.get(name, math.inf), float(result.min_ms))
        return float(result.median_ms)

    def clear(self) -> None:
        self.paths, self.best = {}, {}


def make_timer(target: str, threads: int, serial: Optional[str] = None, adb: Optional[str] = None,
               runner: Optional[str] = None):
    """The timer of `target` (host: this process; android: the phone over adb), its checks done."""
    if target == "android":
        return AndroidTimer(threads, serial, adb, runner)
    if serial or adb or runner:
        raise DeployError("--serial, --adb and --runner are for --target android.")
    return HostTimer(threads)


def profile_shapes(shapes: Iterable[ShapeLike], target: str = "host", threads: int = 1, rounds: int = 3,
                   iterations: int = 10, warmup: int = 3, forms: Sequence[str] = FORMS,
                   fractions: Sequence[float] = RANK_FRACTIONS, layers: Optional[Mapping[LinearShape, List[str]]] = None,
                   progress: bool = True, meta: Optional[Mapping[str, Any]] = None, timer=None,
                   cell_dir: Optional[Path] = None) -> CostTable:
    """Time every cell of every shape (see the module docstring) and return the table.

    Per shape: build each cell's program (dense and pairs, every form that fits), load them all, warm
    each up (`warmup` calls), then `rounds` interleaved rounds; in each, a cell's time is the median of
    `iterations` calls. `threads`: the runtime's XNNPACK thread pool. `timer`: `make_timer(target, ...)`
    (default: made here; android needs the phone's serial, adb and runner, see `make_timer`). `cell_dir`:
    keep each cell's program there and reuse one already built (a cell depends only on its shape, form,
    rank and the installed versions: profiling again at another thread count skips the lowering).
    """
    from tqdm import tqdm


    forms = tuple(forms)
    check_profile_args(target, threads, rounds, iterations, warmup, forms, fractions)
    shapes = sorted({as_shape(s) for s in shapes})
    if not shapes:
        raise DeployError("no shapes to profile.")
    plan = {s: [(f, None) for f in forms if form_fits(f, s.in_f)]
            + [(f, r) for f in forms if form_fits(f, s.in_f) for r in rank_grid(s, f, fractions)] for s in shapes}
    n_cells = sum(len(c) for c in plan.values())
    t_start = time.perf_counter()
    clocks_before, load_before = _clocks_mhz(), _load_avg()
    timer = timer if timer is not None else make_timer(target, threads)

    table_shapes: Dict[str, Dict[str, Any]] = {}
    bar = tqdm(total=n_cells * (1 + rounds), desc="profile", unit="step", disable=not progress, leave=False)
    try:
        with tempfile.TemporaryDirectory(prefix="lraqvit-costs-") as tmp:
            folder = Path(tmp) if cell_dir is None else Path(cell_dir) / _versions_key(timer.versions)
            folder.mkdir(parents=True, exist_ok=True)
            for s, cells in plan.items():
                names = []
                for form, rank in cells:
                    name = cell_name(form, rank)
                    bar.set_postfix_str(f"build {s.key} {name}")
                    path = folder / f"{s.key}-{name.replace('/', '-')}.pte"
                    if not path.is_file():
                        path = build_cell(s, form, rank, path)
                    timer.load(name, path, s, warmup)
                    names.append(name)
                    bar.update(1)
                bar.set_postfix_str(f"time {s.key}")
                summary = timed_rounds(timer, names, iterations, rounds, bar, baseline=cell_name(forms[0], None))
                table_shapes[s.key] = _shape_entry(s, cells, summary, (layers or {}).get(s, []), timer.best)
                timer.clear()
    finally:
        bar.close()
    meta = dict(meta or {})
    meta.update({"runtime": timer.runtime, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "profile_s": round(time.perf_counter() - t_start, 1), "cells": n_cells,
                 "clocks_mhz": {"before": clocks_before, "after": _clocks_mhz()} if target == "host" else None,
                 "load_avg": {"before": load_before, "after": _load_avg()} if target == "host" else None})
    protocol = {"rounds": rounds, "iterations": iterations, "warmup": warmup, "forms": list(forms),
                "rank_fractions": list(fractions), "aligned_fractions": list(ALIGNED_FRACTIONS), "align": ALIGN,
                "cell": "one .pte per cell: layer(x + 1) on a (1, tokens, in) input, lowered by lower_to_xnnpack",
                "time": "per round, the median of `iterations` calls of the cell's forward; "
                        "rounds interleaved, order rotated; median and min-max over rounds"}
    return CostTable(target=target, threads=timer.threads, cpu=timer.cpu, versions=timer.versions,
                     shapes=table_shapes, protocol=protocol, meta=meta)


def timed_rounds(timer, names: Sequence[str], iterations: int, rounds: int, bar, baseline: str
                 ) -> Dict[str, Dict[str, Any]]:
    """The programs `timer` has loaded as `names`, timed in interleaved rounds (one bar step per timing):
    `summarize_rounds` of them against `baseline`. Cells and whole models are timed alike."""
    from .rounds import interleaved, summarize_rounds

    def time_one(name: str) -> float:
        ms = timer.time(name, iterations)
        bar.update(1)
        return ms
    return summarize_rounds(interleaved(names, time_one, rounds)["rounds"], baseline=baseline)


def _shape_entry(s: LinearShape, cells, summary: Mapping[str, Mapping[str, Any]], layers: List[str],
                 best: Mapping[str, float]) -> Dict[str, Any]:
    def stat(name: str) -> Dict[str, Any]:
        v = summary[name]
        return {"median_ms": v["median_ms"], "min_ms": v["min_ms"], "max_ms": v["max_ms"],
                "best_ms": best.get(name), "fp32_ratio": v["ratio_median"]}

    forms: Dict[str, Dict[str, Any]] = {}
    for form, rank in cells:
        entry = forms.setdefault(form, {"dense": None, "ranks": [], "pairs": {}})
        if rank is None:
            entry["dense"] = stat(cell_name(form, None))
        else:
            entry["ranks"].append(rank)
            entry["pairs"][str(rank)] = stat(cell_name(form, rank))
    return {"in": s.in_f, "out": s.out_f, "tokens": s.tokens, "break_even_rank": s.break_even_rank,
            "layers": list(layers), "forms": forms}


def whole_module(model, form: str) -> nn.Module:
    """A copy of the dense `model` in `form`: fp32 as it is, or every encoder Linear (Swin's reductions
    too) quantized to `form` with dynamic per-token int8 activations, as an Android plan builds them."""
    import copy

    from ..rank_alloc.plan import LayerChoice, apply_plan_
    from ..vit_layout import encoder_linears

    m = copy.deepcopy(model).eval()
    wf = _weight_form(form)
    if wf is None:
        return m
    plan = {n: LayerChoice(w_bits=wf.bits, group=wf.group) for n in encoder_linears(m, include_downsample=True)}
    return apply_plan_(m, plan, target="android")


def _model_key(model) -> str:
    """A content hash of `model`'s class and state (its whole-model programs are kept under it)."""
    h = hashlib.sha256(type(model).__name__.encode())
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().float().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def profile_whole(model, timer, forms: Sequence[str] = WHOLE_FORMS, rounds: int = 3, iterations: int = 10,
                  warmup: int = 3, progress: bool = True, cell_dir: Optional[Path] = None) -> Dict[str, Dict[str, Any]]:
    """`{form: {median_ms, min_ms, max_ms, best_ms}}` of the whole dense model in each of `forms`, each
    lowered as the Android build lowers it and timed by `timer` in interleaved rounds (as the cells).
    `cell_dir`: keep the programs there, under the model's content hash, and reuse them."""
    from tqdm import tqdm

    from ..backends.executorch.export import lower_to_xnnpack
    from ..io import atomic_write

    forms = [f for f in forms if f in WHOLE_FORMS]
    if not forms:
        return {}
    bar = tqdm(total=len(forms) * (1 + rounds), desc="profile whole model", unit="step", disable=not progress,
               leave=False)
    try:
        with tempfile.TemporaryDirectory(prefix="lraqvit-whole-") as tmp:
            folder = Path(tmp) if cell_dir is None else Path(cell_dir) / _versions_key(timer.versions)
            key = "" if cell_dir is None else "-" + _model_key(model)
            names = []
            for form in forms:
                name = f"whole/{form}"
                path = folder / f"whole-{form}{key}.pte"
                if not path.is_file():
                    lowered = lower_to_xnnpack(whole_module(model, form), "fp32" if form == "fp32" else "q8")
                    with atomic_write(path, "wb") as f:
                        f.write(lowered.buffer)
                timer.load(name, path, None, warmup)
                names.append(name)
                bar.update(1)
            summary = timed_rounds(timer, names, iterations, rounds, bar, baseline=names[0])
            out = {name.split("/", 1)[1]: {"median_ms": summary[name]["median_ms"], "min_ms": summary[name]["min_ms"],
                                           "max_ms": summary[name]["max_ms"], "best_ms": timer.best.get(name)}
                   for name in names}
            timer.clear()
    finally:
        bar.close()
    return out


def profile_costs(model, target: str = "host", threads: int = 1, rounds: int = 3, iterations: int = 10,
                  warmup: int = 3, forms: Sequence[str] = FORMS, fractions: Sequence[float] = RANK_FRACTIONS,
                  out=None, cache: bool = True, progress: bool = True, model_name: Optional[str] = None,
                  serial: Optional[str] = None, adb: Optional[str] = None, runner: Optional[str] = None,
                  timer=None, whole: bool = True, cell_dir: Optional[Path] = None) -> CostTable:
    """The cost table of every encoder-Linear shape of `model` on `target` (`profile_shapes`), written
    to `out` (JSON, atomically) if given and to the cache (`cached_table` finds it). `whole`: also time
    the whole dense model in fp32 and w8 (those of `forms`; `CostTable.whole`, `rest_ms`). `cell_dir`:
    reuse the cells' programs across profiles (`profile_shapes`).

    Example:
        >>> from lraqvit_deploy import create_model
        >>> model = create_model("deit_small_patch16_224", weights="random")
        >>> table = profile_costs(model, threads=1, out="deit_s_host.json")
        >>> table.cost_ms(384, 1536, 197, "w8", rank=96)
    """
    check_profile_args(target, threads, rounds, iterations, warmup, tuple(forms), tuple(fractions))
    if timer is None:  # a missing phone fails here, before any build
        timer = make_timer(target, threads, serial, adb, runner)
    shapes = model_shapes(model)
    from ..data import input_size
    from ..model_info import model_info

    name = model_name or getattr(model_info(model).spec, "name", None) or type(model).__name__

    table = profile_shapes(shapes, target, threads, rounds, iterations, warmup, forms, fractions, layers=shapes,
                           progress=progress, meta={"model": name, "input_size": list(input_size(model))},
                           timer=timer, cell_dir=cell_dir)
    if whole:
        t0 = time.perf_counter()
        table.whole = profile_whole(model, timer, [f for f in WHOLE_FORMS if f in tuple(forms)], rounds, iterations,
                                    warmup, progress, cell_dir)
        if table.whole:
            table.protocol["whole"] = ("the whole dense model in " + ", ".join(table.whole) + " (w8: every encoder "
                                       "Linear int8 per channel), lowered as the Android build does, timed as the "
                                       "cells; rest_ms = whole - the sum of the model's dense cells")
            table.meta["profile_s"] = round(table.meta.get("profile_s", 0) + time.perf_counter() - t0, 1)
    if out is not None:
        table.save(out)
    if cache:
        table.save(cache_path(target, table.threads, shapes, forms, table.cpu, table.versions))
    return table


__all__ = ["TABLE_FORMAT", "TARGETS", "FORMS", "RANK_FRACTIONS", "LinearShape", "CostTable", "model_shapes",
           "rank_grid", "form_fits", "cell_module", "build_cell", "profile_shapes", "profile_costs", "profile_whole",
           "whole_module", "WHOLE_FORMS", "cached_table",
           "cache_path", "host_key", "check_profile_args", "make_timer", "HostTimer", "AndroidTimer"]
