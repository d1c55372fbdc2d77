"""Measuring a cost table (`deploy profile`): every cell a small program in the target's own runtime.

The table (`lraqvit_deploy.measure.costs`) says what a cell is; this is how the ExecuTorch backend
measures one:

  * each cell is one small program built exactly as an Android program is built (the library's
    `QuantLinear` / `LowRankLinear`, lowered by `backends.executorch.export.lower_to_xnnpack`) and
    timed in-process with the host ExecuTorch runtime that `deploy bench --target host` uses
    (`HostTimer`), or on a phone by its executor_runner over adb (`AndroidTimer`, the protocol of
    `deploy bench --target android`);
  * the cells of one shape are timed in interleaved rounds (`measure.rounds.interleaved`): warm-up, then
    per round each cell's median over `iterations` calls; the table keeps the median and min-max over
    rounds;
  * `profile_costs` also times the whole dense model, FP32 and w8 (every encoder Linear int8 per
    channel), with the same runtime (`CostTable.whole`, `rest_ms`).

Each program computes `layer(x + 1)`: a graph input that feeds a dynamically quantized XNNPACK Linear
directly does not load in the runtime (ExecuTorch 1.5: "Failed parsing tensor at index 0: 0x23"),
and in a real model a LayerNorm, GELU or the attention product always feeds it. The add runs in the
same XNNPACK delegate, in every cell alike (dense and pairs, every form).
"""
from __future__ import annotations

import hashlib
import math
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

import torch.nn as nn

from lraqvit_deploy.errors import DeployError
from lraqvit_deploy.measure.costs import (ALIGN, ALIGNED_FRACTIONS, FORMS, RANK_FRACTIONS, RUNTIME,
                                          WHOLE_FORMS, CostTable, LinearShape, ShapeLike, as_shape, cache_path,
                                          cell_name, form_fits, model_shapes, rank_grid, versions_key, weight_form)

EXECUTORCH_TARGETS = ("host", "android")  # the targets this backend's runtime times (a Jetson's: tensorrt.cost_bundle)

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

    from lraqvit_deploy.layers.low_rank_linear import LowRankLinear
    from lraqvit_deploy.layers.quant_linear import QuantLinear

    s = as_shape(shape)
    wf = weight_form(form)
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

    from .export import lower_to_xnnpack
    from lraqvit_deploy.io import atomic_write

    s = as_shape(shape)
    module = cell_module(s, form, rank)
    lowered = lower_to_xnnpack(module, "fp32" if form == "fp32" else "q8", example=torch.randn(1, s.tokens, s.in_f))
    with atomic_write(path, "wb") as f:
        f.write(lowered.buffer)
    return path


# ---- profiling ---------------------------------------------------------------------------------------------------
def _load_avg() -> Optional[List[float]]:
    """The 1/5/15-minute load averages (None where the OS has none): a busy machine inflates medians."""
    import os

    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
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
    if target not in EXECUTORCH_TARGETS:
        raise DeployError(f"--target {target!r}: the ExecuTorch runtime profiles {', '.join(EXECUTORCH_TARGETS)} "
                          "(a Jetson's table: `deploy profile --target jetson --out DIR`, timed on the device).")
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
        if f not in FORMS and not f.startswith("w4g"):
            raise DeployError(f"form {f!r}: the ExecuTorch runtime times {', '.join(FORMS)} (fp16 is a Jetson form).")
        wf = weight_form(f)
        if wf is not None and not any(form_fits(f, n) for n in (32, 64, 128, 256, 512, 1024)):
            raise DeployError(f"form {f!r}: XNNPACK does not run it (forms: {', '.join(FORMS)}, w4g64, w4g128).")


class HostTimer:
    """Cells timed in this process by the host ExecuTorch runtime (`deploy bench --target host`'s)."""

    runtime = RUNTIME

    def __init__(self, threads: int):
        from .runtime import set_threads
        from lraqvit_deploy.files import native_stderr, pass_on_native_log
        from lraqvit_deploy.measure.host import lscpu, versions

        logged: List[str] = []  # the runtime's C++ log lines (fd 2) on its first use: shown only with --debug
        with native_stderr(logged):
            self.threads = set_threads(threads)
        pass_on_native_log(logged)
        self.cpu, self.versions, self.methods, self.best, self.inputs = lscpu(), versions(), {}, {}, {}

    def set_threads(self, threads: int) -> None:
        """Resize the runtime's thread pool for the programs loaded from now on (its log line: --debug only)."""
        from lraqvit_deploy.files import native_stderr, pass_on_native_log

        from .runtime import set_threads

        logged: List[str] = []
        with native_stderr(logged):
            self.threads = set_threads(threads)
        pass_on_native_log(logged)

    def load(self, name: str, path: Path, shape: Optional[LinearShape], warmup: int) -> None:
        """Load a program and warm it up; `shape` None: a whole model, its input read from the program."""
        import torch

        from .runtime import load_forward

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
        from lraqvit_deploy.android_runner.adb import Adb
        from lraqvit_deploy.android_runner.device import check_abi, read_device
        from lraqvit_deploy.android_runner.runner_binary import find_runner
        from lraqvit_deploy.measure.host import versions

        self.adb = Adb(adb)  # the files first (adb, runner), then the device: each a one-line error
        self.runner = find_runner(runner)
        self.adb.select(serial)
        self.info = read_device(self.adb)
        check_abi(self.info)
        self.threads, self.paths, self.best = int(threads), {}, {}
        self.cpu = {"model_name": self.info.description, "soc": self.info.soc, "android": self.info.android,
                    "max_khz": self.info.max_khz}
        self.versions = {**versions(("executorch",)), "runner": self.runner.name}

    def set_threads(self, threads: int) -> None:
        """The thread count of the runs from now on (each run on the phone passes its own)."""
        self.threads = int(threads)

    def load(self, name: str, path: Path, shape: LinearShape, warmup: int) -> None:
        self.paths[name], self.warmup = path, warmup

    def time(self, name: str, iterations: int) -> float:
        from lraqvit_deploy.android_runner.protocol import RunPlan, run_on_device

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
            folder = Path(tmp) if cell_dir is None else Path(cell_dir) / versions_key(timer.versions)
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
    from lraqvit_deploy.measure.rounds import interleaved, summarize_rounds

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


PAIRS = "pairs-"  # profile_whole's name prefix of a whole model whose encoder Linears are all rank pairs


def whole_module(model, form: str) -> nn.Module:
    """A copy of the dense `model` in `form`: fp32 as it is, or every encoder Linear (Swin's reductions
    too) quantized to `form` with dynamic per-token int8 activations, as an Android plan builds them.
    `pairs-fp32` / `pairs-w8`: every encoder Linear a rank pair at half its break-even rank instead (even),
    its factors in that form (what `profile_costs` scales pair cells by at more than one thread)."""
    import copy

    from lraqvit_deploy.layers.low_rank_linear import break_even_rank
    from lraqvit_deploy.rank_alloc.plan import LayerChoice, apply_plan_
    from lraqvit_deploy.vit_layout import encoder_linears

    m = copy.deepcopy(model).eval()
    pairs = form.startswith(PAIRS)
    wf = weight_form(form[len(PAIRS):] if pairs else form)
    if wf is None and not pairs:
        return m
    plan = {}
    for n, lin in encoder_linears(m, include_downsample=True).items():
        if not pairs:
            plan[n] = LayerChoice(w_bits=wf.bits, group=wf.group)
            continue
        r = max(2, 2 * round(break_even_rank(lin.in_features, lin.out_features) / 4))
        plan[n] = LayerChoice(rank=r, factor_bits=None if wf is None else (wf.bits, wf.bits),
                              factor_groups=None if wf is None or wf.group is None else (wf.group, wf.group))
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
    """`{form: {median_ms, min_ms, max_ms, best_ms}}` of the whole dense model in each of `forms` (and of its
    all-pairs form for `pairs-fp32` / `pairs-w8`: `whole_module`), each lowered as the Android build lowers it
    and timed by `timer` in interleaved rounds (as the cells).
    `cell_dir`: keep the programs there, under the model's content hash, and reuse them."""
    from tqdm import tqdm

    from .export import lower_to_xnnpack
    from lraqvit_deploy.io import atomic_write

    forms = [f for f in forms if f.removeprefix(PAIRS) in WHOLE_FORMS]
    if not forms:
        return {}
    bar = tqdm(total=len(forms) * (1 + rounds), desc="profile whole model", unit="step", disable=not progress,
               leave=False)
    try:
        with tempfile.TemporaryDirectory(prefix="lraqvit-whole-") as tmp:
            folder = Path(tmp) if cell_dir is None else Path(cell_dir) / versions_key(timer.versions)
            key = "" if cell_dir is None else "-" + _model_key(model)
            names = []
            for form in forms:
                name = f"whole/{form}"
                path = folder / f"whole-{form}{key}.pte"
                if not path.is_file():
                    lowered = lower_to_xnnpack(whole_module(model, form),
                                               "fp32" if form.removeprefix(PAIRS) == "fp32" else "q8")
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


THREAD_SCALING = ("cells timed at 1 thread, each scaled by a whole model's measured speedup at this thread count in "
                  "its form: dense cells by the dense model's (FP32, or w8 for int8 and int4 cells), pair cells by the "
                  "all-pairs model's (every encoder Linear a pair at half its break-even rank); one small program "
                  "alone does not keep a thread pool busy (on a 2-vCPU KVM host, DeiT-B cells at 2 threads ran at their "
                  "1-thread median, the whole model 1.9x faster), and skinny pairs parallelise worse than dense "
                  "Linears (docs/latency_budget.md)")


def profile_costs(model, target: str = "host", threads: int = 1, rounds: int = 3, iterations: int = 10,
                  warmup: int = 3, forms: Sequence[str] = FORMS, fractions: Sequence[float] = RANK_FRACTIONS,
                  out=None, cache: bool = True, progress: bool = True, model_name: Optional[str] = None,
                  serial: Optional[str] = None, adb: Optional[str] = None, runner: Optional[str] = None,
                  timer=None, whole: bool = True, cell_dir: Optional[Path] = None) -> CostTable:
    """The cost table of every encoder-Linear shape of `model` on `target` (`profile_shapes`), written
    to `out` (JSON, atomically) if given and to the cache (`cached_table` finds it). `whole`: also time
    the whole dense model in fp32 and w8 (those of `forms`; `CostTable.whole`, `rest_ms`). `cell_dir`:
    reuse the cells' programs across profiles (`profile_shapes`).

    At `threads` > 1 (with `whole`), the cells are timed at 1 thread and scaled by the whole model's
    measured speedup at `threads` in their form (`THREAD_SCALING`; the table's `meta.thread_scaling`):
    a cell alone leaves the pool's other threads asleep and reads as slow as at 1 thread.

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
    from lraqvit_deploy.data import input_size
    from lraqvit_deploy.model_info import model_info

    name = model_name or getattr(model_info(model).spec, "name", None) or type(model).__name__
    whole_forms = [f for f in WHOLE_FORMS if f in tuple(forms)] if whole else []
    scaled = threads > 1 and set(whole_forms) == set(WHOLE_FORMS)
    if scaled:
        timer.set_threads(1)
    table = profile_shapes(shapes, target, timer.threads, rounds, iterations, warmup, forms, fractions, layers=shapes,
                           progress=progress, meta={"model": name, "input_size": list(input_size(model))},
                           timer=timer, cell_dir=cell_dir)
    if whole_forms:
        t0 = time.perf_counter()
        programs = whole_forms + ([PAIRS + f for f in whole_forms] if scaled else [])
        one = profile_whole(model, timer, programs, rounds, iterations, warmup, progress, cell_dir) if scaled else {}
        if scaled:
            timer.set_threads(threads)
        timed = profile_whole(model, timer, programs, rounds, iterations, warmup, progress, cell_dir)
        table.whole = {f: timed[f] for f in whole_forms}
        table.protocol["whole"] = ("the whole dense model in " + ", ".join(table.whole) + " (w8: every encoder "
                                   "Linear int8 per channel), lowered as the Android build does, timed as the "
                                   "cells; rest_ms = whole - the sum of the model's dense cells")
        if scaled:
            _scale_cells(table, one, timed, threads)
    if threads > 1 and not scaled:  # without both whole models there is nothing to scale by: say so
        table.protocol["threads"] = (f"cells timed alone at {threads} threads, not scaled (the profile lacked the fp32 "
                                     "and w8 whole models): they may read their 1-thread times")
        table.meta["profile_s"] = round(table.meta.get("profile_s", 0) + time.perf_counter() - t0, 1)
    if out is not None:
        table.save(out)
    if cache:
        table.save(cache_path(target, table.threads, shapes, forms, table.cpu, table.versions))
    return table


def _scale_cells(table: CostTable, one: Mapping[str, Mapping[str, Any]], many: Mapping[str, Mapping[str, Any]],
                 threads: int) -> None:
    """Cells timed at 1 thread -> at `threads`: each times a whole model's speedup in its form (`THREAD_SCALING`);
    `one` / `many`: `profile_whole` of the dense and all-pairs models at 1 thread and at `threads`."""
    scale = {k: float(many[k]["median_ms"]) / float(one[k]["median_ms"]) for k in one}

    def factor(form: str, pair: bool) -> float:
        return scale[(PAIRS if pair else "") + ("fp32" if form == "fp32" else "w8")]

    for entry in table.shapes.values():
        for form, cell in entry["forms"].items():
            for stat, pair in [(cell["dense"], False), *((v, True) for v in cell["pairs"].values())]:
                k = factor(form, pair)
                for key in ("median_ms", "min_ms", "max_ms", "best_ms"):
                    if stat.get(key) is not None:
                        stat[key] = float(stat[key]) * k
                if stat.get("fp32_ratio") is not None:
                    stat["fp32_ratio"] = float(stat["fp32_ratio"]) * k / scale["fp32"]
    table.threads = int(threads)
    table.meta["thread_scaling"] = {"cells_timed_at_threads": 1, "whole_ms_at_1_thread": dict(one),
                                    "whole_ms": dict(many), "speedup": {k: round(1 / v, 4) for k, v in scale.items()}}
    table.protocol["threads"] = THREAD_SCALING


__all__ = ["THREAD_SCALING", "CellProgram", "cell_module", "build_cell", "check_profile_args", "HostTimer", "AndroidTimer",
           "make_timer",
           "profile_shapes", "profile_costs", "profile_whole", "whole_module"]
