"""Allocation under a latency budget (issue 26, item 2): MLoRQ's integer program with a latency row.

The candidates are MLoRQ's (`mlorq.layer_candidates` for a deployment target: every layer's dense
weight forms and rank-r pairs, each with its reconstruction error and its program bytes). Each
candidate is priced from a cost table (`measure.costs`, written by `deploy profile`):

  * a dense candidate in form F (fp32, w8, w4, w4g32): `table.cost_ms(in, out, tokens, F)`;
  * a rank-r pair whose two factors share form F: `table.cost_ms(in, out, tokens, F, rank=r)`
    (interpolated over the table's rank grid);
  * a pair with mixed factor forms (e.g. up w8, down w4g32), and a dense form the table did not time
    (w4g64, w4g128), has no measured cost: it is left out of the search while a latency budget is
    active (the size-only planner keeps them).

`tokens` is each layer's row count for one image (`measure.costs.model_shapes`). The predicted
whole-program latency of a plan is the sum of its layers' costs, plus what the table measured
outside the encoder Linears (`CostTable.rest_ms`: the whole dense model's time less the sum of its
dense cells: attention products, LayerNorm, GELU, the head, the glue), plus the dense FP32 cost of
any table layer the plan leaves alone (Swin's patch-merging reductions). A table without whole-model
timings (older profiles) predicts the Linears only: `rest_known` is False and the report says so.

The integer program (`mlorq.solve_ilp`) minimises the summed error with one latency row (Σ layer
ms ≤ budget − rest) and, with `size_budget_mb`, the size row as well. A budget no plan meets is one
line naming the fastest reachable predicted latency (every layer in its fastest candidate).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch.nn as nn

from ..errors import DeployError
from ..measure.costs import FORMS, CostTable, LinearShape
from .plan import LayerChoice

STAT = "median_ms"  # which cell statistic prices a candidate (the table's medians over rounds)


class InfeasibleLatency(DeployError):
    """The latency budget is below the fastest plan; `fastest_ms` is that plan's predicted latency."""

    def __init__(self, message: str, fastest_ms: float):
        super().__init__(message)
        self.fastest_ms = fastest_ms


# ---- one candidate's cost ----------------------------------------------------------------------------------
def table_form(choice: LayerChoice) -> Optional[str]:
    """The cost table's form of a choice: `fp32`, `w8`, `w4`, `w4g32`... for a dense layer or a pair whose
    two factors share that form; None for a pair of mixed forms (the table times none)."""
    from ..quant.forms import WeightForm

    if choice.rank is None:
        return "fp32" if choice.w_bits is None else WeightForm(choice.w_bits, choice.group).name
    if choice.factor_bits is None:
        return "fp32"
    gu, gd = choice.factor_groups or (None, None)
    up, down = WeightForm(choice.factor_bits[0], gu).name, WeightForm(choice.factor_bits[1], gd).name
    return up if up == down else None


def choice_ms(table: CostTable, choice: LayerChoice, shape: LinearShape, stat: str = STAT) -> Optional[float]:
    """The predicted ms of one image through this layer as `choice` (None: the table has no timing for it:
    a mixed-form pair, or a form or shape it did not profile)."""
    form = table_form(choice)
    entry = table.shapes.get(shape.key)
    if form is None or entry is None or form not in entry.get("forms", {}):
        return None
    if choice.rank is not None and not entry["forms"][form].get("ranks"):
        return None
    if choice.rank is not None and not 1 <= choice.rank <= min(shape.in_f, shape.out_f):
        return None
    return table.cost_ms(shape.in_f, shape.out_f, shape.tokens, form, rank=choice.rank, stat=stat)


def choice_of(module: nn.Module) -> LayerChoice:
    """The `LayerChoice` a built layer is (so any compressed model can be priced, not only a plan the
    planner made): `nn.Linear` fp32, `QuantLinear` its bits and group, `LowRankLinear` its rank and the
    forms of `up` and `down`. Anything else (an unmerged RB-LRA branch, a pair of one float and one
    integer factor) is a DeployError."""
    from ..layers.low_rank_linear import LowRankLinear
    from ..layers.quant_linear import QuantLinear

    def form(m: nn.Module):
        if isinstance(m, QuantLinear):
            return int(m.w_bits), m.w_group_size
        if isinstance(m, nn.Linear):
            return None
        raise DeployError(f"a {type(m).__name__} layer has no cost-table form (merge or build the model first).")

    if isinstance(module, LowRankLinear):
        fu, fd = form(module.up), form(module.down)
        if fu is None and fd is None:
            return LayerChoice(rank=int(module.rank))
        if fu is None or fd is None:
            raise DeployError("a rank pair with one float and one integer factor has no cost-table form.")
        groups = None if fu[1] is None and fd[1] is None else (fu[1], fd[1])
        return LayerChoice(rank=int(module.rank), factor_bits=(fu[0], fd[0]), factor_groups=groups)
    f = form(module)
    return LayerChoice() if f is None else LayerChoice(w_bits=f[0], group=f[1])


# ---- the model's latency on one table ------------------------------------------------------------------------
@dataclass
class LatencyModel:
    """A cost table read for one model: each encoder layer's shape at its token count, and where the
    table came from (`source`: its path, or the cache file `cached_table` found)."""

    table: CostTable
    shapes: Dict[str, LinearShape]  # every encoder layer the table prices (model_shapes), by name
    source: str
    stat: str = STAT

    @classmethod
    def for_model(cls, table: CostTable, model: nn.Module, source: str, stat: str = STAT) -> "LatencyModel":
        from ..measure.costs import model_shapes

        return cls(table, {n: s for s, names in model_shapes(model).items() for n in names}, source, stat)

    def layer_ms(self, name: str, choice: LayerChoice) -> Optional[float]:
        shape = self.shapes.get(name)
        return None if shape is None else choice_ms(self.table, choice, shape, self.stat)

    def rest_ms(self, quantized: bool = True) -> Optional[float]:
        """What the table measured outside the encoder Linears (None: it has no whole-model timing). A
        quantized plan reads the remainder of the dense w8 model (its attention, norms and glue), else
        the FP32 model's."""
        rest = getattr(self.table, "rest_ms", None)
        if rest is None:
            return None
        for form in (("w8", "fp32") if quantized else ("fp32",)):
            v = rest(form, self.stat)
            if v is not None:
                return v
        return None

    def dense_fp32_ms(self) -> float:
        """The dense FP32 model's predicted latency on this table: Σ its dense FP32 cells, plus the
        remainder when the table has it (= its measured whole-model time)."""
        total = 0.0
        for name, shape in self.shapes.items():
            total += self.table.cost_ms(shape.in_f, shape.out_f, shape.tokens, "fp32", stat=self.stat)
        return total + (self.rest_ms(quantized=False) or 0.0)

    def unplanned_ms(self, planned: Sequence[str]) -> float:
        """Layers the table prices but the plan leaves alone (dense FP32, e.g. Swin's reductions)."""
        return sum(self.layer_ms(n, LayerChoice()) or 0.0 for n in self.shapes if n not in set(planned))

    def predict(self, plan: Mapping[str, LayerChoice]) -> Dict[str, Any]:
        """The predicted whole-program latency of `plan`: `predicted_latency_ms`, per-layer ms, the remainder."""
        layers: Dict[str, float] = {}
        for n, c in plan.items():
            ms = self.layer_ms(n, c)
            if ms is None:
                raise DeployError(f"{n}: the cost table has no timing for {c.label} (its forms are "
                                  f"{', '.join(self.table_forms())}; pairs only with both factors in one form).")
            layers[n] = ms
        quantized = any(c.w_bits is not None or c.factor_bits is not None for c in plan.values())
        rest = self.rest_ms(quantized)
        other = self.unplanned_ms(list(plan))
        total = sum(layers.values()) + other + (rest or 0.0)
        return {"predicted_latency_ms": round(total, 4), "linears_ms": round(sum(layers.values()) + other, 4),
                "rest_ms": None if rest is None else round(rest, 4), "rest_known": rest is not None,
                "layers_ms": {n: round(v, 4) for n, v in layers.items()}}

    def plan_of(self, model: nn.Module) -> Dict[str, LayerChoice]:
        """`{layer: choice_of(its module)}` of a (compressed, quantized) model of the same architecture."""
        return {n: choice_of(model.get_submodule(n)) for n in self.shapes}

    def predict_model(self, model: nn.Module) -> Dict[str, Any]:
        """`predict` of whatever `model` is: uniform RB-LRA, an MLoRQ plan, a dense INT8 model..."""
        return self.predict(self.plan_of(model))

    def table_forms(self) -> List[str]:
        return sorted({f for e in self.table.shapes.values() for f in e.get("forms", {})})

    def provenance(self) -> Dict[str, Any]:
        """Where the prediction comes from: the table (path or cache file), its target, threads and CPU."""
        from ..measure.host import cpu_line

        return {"cost_table": self.source, "table_target": self.table.target, "threads": self.table.threads,
                "cpu": cpu_line(self.table.cpu), "model": self.table.meta.get("model"), "stat": self.stat}


# ---- finding the table -------------------------------------------------------------------------------------------
def profile_hint(model_name: str, threads: int, img_size: Optional[int] = None, out: Optional[str] = None) -> str:
    size = f" --img-size {img_size}" if img_size else ""
    dest = f" --out {out}" if out else ""
    return f"deploy profile --target host --model {model_name}{size} --threads {threads}{dest}"


def check_cost_table(cost_table: str, model_name: str = "M", threads: int = 1,
                     img_size: Optional[int] = None) -> CostTable:
    """The table at `cost_table` (a `deploy profile --out` JSON), read and checked; a missing file or one
    that is no cost table is one line (what `deploy compress/build --cost-table` checks before any model)."""
    path = Path(cost_table).expanduser()
    if path.is_dir():
        raise DeployError(f"--cost-table {path}: is a folder; pass the JSON table `deploy profile --out` wrote.")
    if not path.is_file():
        raise DeployError(f"--cost-table {path}: no such file; write it with "
                          f"`{profile_hint(model_name, threads, img_size, str(path))}`.")
    return CostTable.load(path)


def resolve_table(cost_table: Optional[str], threads: int, shapes: Sequence[LinearShape], model_name: str,
                  img_size: Optional[int] = None, target: Optional[str] = None) -> Tuple[CostTable, str]:
    """(the table, where it came from): `cost_table` (a `deploy profile` JSON) if given, else the cached
    table of this host at `threads` threads that covers every one of `shapes`. A missing table is one
    line that says how to profile one. `target` jetson takes only a Jetson's table (timed by
    `jetson/profile.py` on the device), and the CPU targets never take one."""
    from ..measure.costs import cached_table

    shapes = list(shapes)
    if target == "jetson" and cost_table is None:
        raise DeployError("--target jetson is priced by the Jetson's own cost table: pass --cost-table "
                          "results/cost_table.json (written on the device by `python3 jetson/profile.py` in the folder "
                          f"`deploy profile --target jetson --model {model_name} --out DIR` writes).")
    if cost_table is not None:
        path = Path(cost_table).expanduser()
        table = check_cost_table(cost_table, model_name, threads, img_size)
        if (table.target == "jetson") != (target == "jetson") and target is not None:
            want = "a Jetson's (jetson/profile.py)" if target == "jetson" else "a CPU's (deploy profile --target host|android)"
            raise DeployError(f"--cost-table {path}: a {table.target} table (it times {table.meta.get('runtime') or 'its runtime'}); "
                              f"--target {target} plans with {want}.")
        missing = [s.key for s in shapes if s.key not in table.shapes]
        if missing:
            have = ", ".join(sorted(table.shapes)) or "none"
            raise DeployError(f"--cost-table {path}: it has no timings for {', '.join(missing)} (in x out @ tokens) "
                              f"of this model (it has {have}, profiled for {table.meta.get('model')!r}); profile this "
                              f"model: `{profile_hint(model_name, table.threads, img_size, str(path))}`.")
        return table, str(path)
    for forms in (FORMS, ("fp32",)):  # a full profile first, then any covering the shapes (e.g. --forms fp32 w8)
        table = cached_table("host", threads, shapes, forms)
        if table is not None:
            from ..measure.costs import cache_path

            exact = cache_path("host", threads, shapes, forms, table.cpu, table.versions)
            return table, f"cache: {exact.parent}"
    raise DeployError(f"no cost table of this host at {threads} thread(s) for this model's shapes; run "
                      f"`{profile_hint(model_name, threads, img_size)}` first (or pass --cost-table TABLE.json).")


def latency_model(model: nn.Module, cost_table: Optional[str] = None, threads: int = 1,
                  stat: str = STAT, target: Optional[str] = None) -> LatencyModel:
    """The `LatencyModel` of `model` on `cost_table` (default: this host's cached table at `threads`);
    `target` (android, jetson) checks that the table is of that kind of device (`resolve_table`)."""
    from ..data import input_size
    from ..measure.costs import model_shapes
    from ..model_info import model_info

    by_shape = model_shapes(model)
    spec = model_info(model).spec
    name = getattr(spec, "name", None) or type(model).__name__
    img = input_size(model)[-1] if "img_size" in (getattr(spec, "kwargs", None) or {}) else None
    table, source = resolve_table(cost_table, threads, list(by_shape), name, img, target)
    return LatencyModel(table, {n: s for s, names in by_shape.items() for n in names}, source, stat)


def budget_ms(model_lat: LatencyModel, latency_budget_ms: Optional[float], speedup: Optional[float]) -> float:
    """The whole-program budget in ms: `latency_budget_ms`, or the dense FP32 model's predicted latency / `speedup`."""
    if latency_budget_ms is not None:
        return float(latency_budget_ms)
    if speedup is None:
        raise DeployError("a latency budget needs --latency-budget-ms MS or --speedup F.")
    return model_lat.dense_fp32_ms() / float(speedup)


# ---- the planner -------------------------------------------------------------------------------------------------
def price(candidates: Mapping[str, Sequence[Any]], model_lat: LatencyModel) -> Dict[str, List[Any]]:
    """Every candidate with its `ms`; those the table cannot price (mixed-form pairs, forms or shapes it
    lacks) are left out. A layer left with none is a DeployError."""
    out: Dict[str, List[Any]] = {}
    for n, cands in candidates.items():
        priced = []
        for c in cands:
            ms = model_lat.layer_ms(n, c.choice)
            if ms is not None and math.isfinite(ms):
                priced.append(dataclasses.replace(c, ms=float(ms)))
        if not priced:
            shape = model_lat.shapes.get(n)
            raise DeployError(f"{n}: the cost table prices none of its candidates ("
                              + (f"no shape {shape.key}" if shape is None or shape.key not in model_lat.table.shapes
                                 else f"its forms: {', '.join(sorted(model_lat.table.shapes[shape.key]['forms']))}")
                              + "); profile this model with `deploy profile`.")
        out[n] = priced
    return out


def pareto_multi(cands: Sequence[Any], size: bool) -> List[Any]:
    """Candidates not dominated in (ms, loss), or (bits, ms, loss) with `size`: no other is at most as
    costly in every resource and at most as lossy, and strictly better in one."""
    def key(c):
        return (c.ms, c.bits, c.loss) if size else (c.ms, c.loss, c.bits)

    def dominates(a, b) -> bool:
        le = a.ms <= b.ms and a.loss <= b.loss and (not size or a.bits <= b.bits)
        lt = a.ms < b.ms or a.loss < b.loss or (size and a.bits < b.bits)
        return le and lt

    ordered = sorted(cands, key=key)
    front: List[Any] = []
    for c in ordered:
        if any(dominates(f, c) or key(f) == key(c) for f in front):
            continue
        front.append(c)
    return front


def latency_plan(model: nn.Module, linears: Mapping[str, nn.Linear], stats, target: str, model_lat: LatencyModel,
                 latency_budget_ms: Optional[float] = None, speedup: Optional[float] = None,
                 size_budget_mb: Optional[float] = None, progress: bool = True,
                 candidates: Optional[Mapping[str, Sequence[Any]]] = None, **cand_kw):
    """The MLoRQ plan of `linears` whose predicted latency on `model_lat`'s table fits the budget
    (`latency_budget_ms`, or the dense FP32 prediction / `speedup`), and with `size_budget_mb` whose built
    `target` program fits that too. Returns (plan, summary); the summary carries `predicted_latency_ms`,
    `planned_size_mb` and the table's provenance."""
    from ..quant.forms import program_bytes
    from .mlorq import SIZE_MARGIN, InfeasibleBudget, ResourceRow, _check_feasible, _smallest_bytes, \
        mlorq_candidates, solve_ilp

    budget = budget_ms(model_lat, latency_budget_ms, speedup)
    fixed = program_bytes(model) - sum(4 * m.weight.numel() for m in linears.values())
    if size_budget_mb is not None:
        _check_feasible(sum(_smallest_bytes(m, target, cand_kw) for m in linears.values()), size_budget_mb, target,
                        fixed)
    if candidates is None:
        candidates = mlorq_candidates(linears, stats, progress, target=target, **cand_kw)
    priced = price({n: candidates[n] for n in linears}, model_lat)
    fronts = {n: pareto_multi(priced[n], size_budget_mb is not None) for n in linears}
    quantized = target is not None
    rest = model_lat.rest_ms(quantized)
    other = model_lat.unplanned_ms(list(linears)) + (rest or 0.0)
    fastest = other + sum(min(c.ms for c in fronts[n]) for n in linears)
    try:
        dense: Optional[float] = model_lat.dense_fp32_ms()
    except DeployError:  # a table without fp32 cells prices an absolute budget, not a speedup
        if speedup is not None:
            raise
        dense = None
    _check_latency(fastest, budget, latency_budget_ms, speedup, dense, rest is not None)
    rows = [ResourceRow("latency", lambda c: c.ms, budget - other, "ms")]
    budget_bits = None
    if size_budget_mb is not None:
        _check_feasible(sum(min(c.bits for c in fronts[n]) for n in linears) / 8, size_budget_mb, target, fixed)
        budget_bits = size_budget_mb * (1 - SIZE_MARGIN) * 8e6 - 8 * fixed
    try:
        chosen = solve_ilp(fronts, budget_bits, rows=rows)
    except InfeasibleBudget:
        if budget_bits is None:
            raise
        quickest = solve_ilp(fronts, budget_bits, objective=lambda c: c.ms)
        at = other + sum(c.ms for c in quickest.values())
        raise InfeasibleLatency(f"{_what(latency_budget_ms, speedup, budget)} with --size-budget-mb "
                                f"{size_budget_mb:g}: the fastest plan within {size_budget_mb:g} MB is predicted at "
                                f"{at:.3f} ms; raise one of the budgets.", at) from None
    plan = {n: c.choice for n, c in chosen.items()}
    predicted = model_lat.predict(plan)
    summary = {"latency_budget_ms": round(budget, 4), "speedup": speedup,
               "planned_loss": round(sum(c.loss for c in chosen.values()), 8),
               "dense_fp32_ms": None if dense is None else round(dense, 4), "fastest_ms": round(fastest, 4),
               **predicted, **model_lat.provenance(),
               "planned_size_mb": round((fixed + sum(c.bits for c in chosen.values()) / 8) / 1e6, 6)}
    if size_budget_mb is not None:
        summary["size_budget_mb"] = size_budget_mb
    if not predicted["rest_known"]:
        summary["note"] = ("the cost table has no whole-model timing: the prediction sums the encoder Linears only "
                           "(attention, LayerNorm, GELU, head and glue counted as 0 ms); profile again for it")
    return plan, summary


def _what(latency_budget_ms: Optional[float], speedup: Optional[float], budget: float) -> str:
    if latency_budget_ms is not None:
        return f"--latency-budget-ms {latency_budget_ms:g}"
    return f"--speedup {speedup:g} (a budget of {budget:.3f} ms)"


def _check_latency(fastest: float, budget: float, latency_budget_ms: Optional[float], speedup: Optional[float],
                   dense: Optional[float], rest_known: bool) -> None:
    """One line naming the fastest reachable latency when the budget is below it."""
    if fastest <= budget:
        return
    part = "" if rest_known else " (encoder Linears only: the table has no whole-model timing)"
    if speedup is not None and dense is not None:
        give = (f"give at most --speedup {math.floor(dense / fastest * 1000) / 1000:.3f} (the dense FP32 model is "
                f"predicted at {dense:.3f} ms)")
    else:
        give = f"give at least {math.ceil(fastest * 1000) / 1000:.3f}"
    raise InfeasibleLatency(f"{_what(latency_budget_ms, speedup, budget)}: the fastest plan of this model is predicted "
                            f"at {fastest:.3f} ms{part} on this cost table (every layer in its fastest candidate); "
                            f"{give}.", fastest)


__all__ = ["STAT", "InfeasibleLatency", "LatencyModel", "choice_of", "table_form", "choice_ms", "check_cost_table", "resolve_table",
           "latency_model", "budget_ms", "price", "pareto_multi", "latency_plan", "profile_hint"]
