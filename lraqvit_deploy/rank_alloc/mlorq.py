"""MLoRQ-style joint rank / bit-width allocation under a weight-memory or program-size budget (METHODS.md §3).

With a deployment `target` ("android", "jetson") the candidates are the weight forms that target
runs (`quant.forms`: int8 and int4 per channel or blockwise on XNNPACK; int8 on TensorRT), and each
candidate costs the bytes it adds to the built program (packed weights, scales, the matrix's
records), so the budget is the program's size (`size_budget_mb`). Without one (`sim`) candidates
span 2..8 bits and cost stored weight bits (`memory_budget_mb`), a simulation only.
Candidates are cached on disk per layer (keyed by the weight, the activation statistics and the
settings), so planning several budgets, or again, skips the search.

Per layer, candidates are: the dense weight at b ∈ `dense_bits` (symmetric per-channel, MSE-clipped),
float32 dense, and rank-r factors (activation-aware SVD, `down` quantized, `up` refitted to it,
then quantized) at (b_up, b_down) ∈ `factor_bits`². Each is scored by the normalised activation-
weighted error E‖X(W − Ŵ)ᵀ‖² / E‖XWᵀ‖² (normalised so layers with large outputs do not dominate the
sum) and costs its stored bits (int weights + one fp32 scale per row). Each layer keeps only its
Pareto front; an integer linear program (scipy `milp`) then picks one candidate per layer
minimising the summed error with the total bits ≤ budget.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import torch
import torch.nn as nn

from ..lowrank.activation_svd import ActivationSVD
from ..lowrank.activations import LayerStats
from ..errors import DeployError
from ..evaluate import count_params
from ..layers.fake_quant import quantize_weight
from ..layers.low_rank_linear import break_even_rank
from .plan import CLIP_GRID, LayerChoice, Plan

DENSE_BITS = (2, 3, 4, 6, 8)
FACTOR_BITS = (3, 4, 6, 8)
RANK_FRACTIONS = (1 / 16, 1 / 8, 3 / 16, 1 / 4, 3 / 8, 1 / 2, 5 / 8, 3 / 4)  # of the break-even rank


@dataclass(frozen=True)
class Candidate:
    choice: LayerChoice
    loss: float  # normalised activation-weighted error
    bits: int  # stored weight memory
    ms: Optional[float] = None  # predicted latency from a cost table (`rank_alloc.latency`); None: not priced


def _target_forms(target: Optional[str], in_f: int, dense_bits, factor_bits):
    """(dense forms, factor form function of the input width): the target's forms, or plain bits for sim."""
    from ..quant.forms import WeightForm, layer_forms

    if target in (None, "sim"):
        return ([WeightForm(b) for b in dense_bits], lambda i: [WeightForm(b) for b in factor_bits])

    def factor_forms(i: int):
        # per channel 8 / 4 bit and the finest block (32) keep the factor search small; dense layers take all
        return [f for f in layer_forms(target, i) if f.group in (None, 32)
                and (f.bits in factor_bits or not factor_bits)]
    return [f for f in layer_forms(target, in_f) if f.bits in dense_bits or not dense_bits], factor_forms


class LayerLoss:
    """The planner's error of one layer: E‖X(W − Ŵ)ᵀ‖² / E‖XWᵀ‖² from XᵀX alone, for any choice.

    `dense(form)`: the dense weight in `form` (None: float, error 0); `pairs(r, fd, fus)`: rank-r factors
    (activation-aware SVD, `down` in form `fd`, `up` refitted to it, then in each of `fus`); `of(choice)`:
    either, for a `LayerChoice` (what `plan_loss` scores for plans the search did not make, e.g. uniform).
    """

    @torch.no_grad()
    def __init__(self, linear: nn.Linear, stats: LayerStats):
        self.w = linear.weight.detach().double()
        self.c = stats.second_moment.double()
        self.ref = max(float(((self.w @ self.c) * self.w).sum()), 1e-30)  # tr(W C Wᵀ)
        self.c32 = self.c.float()
        self._asvd: Optional[ActivationSVD] = None

    @property
    def asvd(self) -> ActivationSVD:
        if self._asvd is None:
            self._asvd = ActivationSVD(self.w.float(), self.c)
        return self._asvd

    @staticmethod
    def q(x: torch.Tensor, form) -> torch.Tensor:
        return x.float() if form is None else quantize_weight(x.float(), form.bits, form.group, grid=CLIP_GRID)[0]

    @torch.no_grad()
    def dense(self, form) -> float:
        if form is None:
            return 0.0
        e = (self.w.float() - self.q(self.w, form))
        return float(((e @ self.c32).double() * e.double()).sum()) / self.ref

    @torch.no_grad()
    def pairs(self, r: int, fd, fus: Sequence) -> List[float]:
        up0, down0 = self.asvd.factors(r)
        dq = self.q(down0, fd).double()
        dc = (dq.float() @ self.c32).double()  # (r, in); float32 for the one large product
        gram = dc @ dq.T  # D C Dᵀ
        rhs = dc @ self.w.T  # D C Wᵀ, (r, out)
        eye = torch.eye(r, dtype=gram.dtype)
        up = torch.linalg.solve(gram + 1e-10 * gram.diagonal().mean().clamp_min(1e-30) * eye, rhs).T
        out = []
        for fu in fus:
            uq = self.q(up, fu).double()
            # tr(E C Eᵀ) with Ŵ = U D: tr(WCWᵀ) − 2 tr(U · DCWᵀ) + tr(U · DCDᵀ · Uᵀ)
            err = self.ref - 2 * float((uq * rhs.T).sum()) + float(((uq @ gram) * uq).sum())
            out.append(max(err, 0.0) / self.ref)
        return out

    def of(self, choice: LayerChoice) -> float:
        out_f, in_f = self.w.shape
        forms = choice.forms(in_f, out_f)
        if choice.rank is None:
            return self.dense(forms[0][0])
        return self.pairs(int(choice.rank), forms[1][0], [forms[0][0]])[0]


def plan_loss(linears: Mapping[str, nn.Linear], stats: Mapping[str, LayerStats],
              plan: Mapping[str, LayerChoice]) -> Dict[str, float]:
    """`{layer: the planner's error}` of any plan on these layers and statistics (the metric MLoRQ
    minimises; summed over layers it is the plan's `planned_loss`): compare a uniform plan with a searched one."""
    return {n: LayerLoss(linears[n], stats[n]).of(c) for n, c in plan.items()}


@torch.no_grad()
def layer_candidates(linear: nn.Linear, stats: LayerStats, dense_bits: Sequence[int] = DENSE_BITS,
                     factor_bits: Sequence[int] = FACTOR_BITS,
                     rank_fractions: Sequence[float] = RANK_FRACTIONS, include_float: bool = True,
                     target: Optional[str] = None) -> List[Candidate]:
    """Every candidate of one layer with its loss and cost (losses from XᵀX only: no activations kept).

    `target` None / "sim": weight bits at `dense_bits` / `factor_bits`, cost = stored weight bits.
    "android" / "jetson": the forms the target runs (restricted to those bit-widths), cost = 8 x the
    bytes they add to the built program; no float candidate (every layer runs quantized).
    """
    deploy = target not in (None, "sim")
    out_f, in_f = linear.weight.shape
    loss = LayerLoss(linear, stats)

    def cost(ch: LayerChoice) -> int:
        return int(round(8 * ch.program_bytes(in_f, out_f))) if deploy else ch.weight_bits(in_f, out_f)

    dense_forms, factor_forms = _target_forms(target, in_f, dense_bits, factor_bits)
    cands = []
    if include_float and not deploy:
        cands.append(Candidate(LayerChoice(), 0.0, cost(LayerChoice())))
    for f in dense_forms:
        ch = LayerChoice(w_bits=f.bits, group=f.group)
        cands.append(Candidate(ch, loss.dense(f), cost(ch)))
    r_star = break_even_rank(in_f, out_f)
    ranks = sorted({max(1, int(f * r_star)) for f in rank_fractions})
    if deploy:  # even ranks: a 4-bit `up` packs two weights per byte along r
        ranks = sorted({r + (r % 2) for r in ranks})
    for r in ranks:
        for fd in factor_forms(in_f):
            fus = factor_forms(r)
            for fu, err in zip(fus, loss.pairs(r, fd, fus)):
                groups = None if fu.group is None and fd.group is None else (fu.group, fd.group)
                ch = LayerChoice(rank=r, factor_bits=(fu.bits, fd.bits), factor_groups=groups)
                cands.append(Candidate(ch, err, cost(ch)))
    return cands


def pareto_front(cands: Sequence[Candidate]) -> List[Candidate]:
    """Candidates not dominated in (bits, loss): sorted by bits, each strictly better in loss than all cheaper."""
    front: List[Candidate] = []
    for cand in sorted(cands, key=lambda c: (c.bits, c.loss)):
        if not front or cand.loss < front[-1].loss:
            front.append(cand)
    return front


class InfeasibleBudget(DeployError):
    """The budget is below the smallest plan; `smallest_bits` is what the cheapest candidate of every layer needs."""

    def __init__(self, message: str, smallest_bits: float):
        super().__init__(message)
        self.smallest_bits = smallest_bits


@dataclass(frozen=True)
class ResourceRow:
    """One resource row of the ILP: Σ over layers of `cost(chosen candidate)` ≤ `budget` (e.g. latency ms)."""

    name: str
    cost: Callable[[Candidate], float]
    budget: float
    unit: str = ""


def solve_ilp(candidates: Mapping[str, Sequence[Candidate]], budget_bits: Optional[float] = None,
              rows: Sequence[ResourceRow] = (),
              objective: Optional[Callable[[Candidate], float]] = None) -> Dict[str, Candidate]:
    """One candidate per layer, min Σ loss s.t. Σ bits ≤ `budget_bits` and each of `rows` (Σ cost ≤ its
    budget), by scipy.optimize.milp (exact). `budget_bits` None: no memory row. `objective`: what is
    minimised instead of the loss (e.g. `lambda c: c.ms`, the fastest plan). A row even the cheapest
    candidate of every layer exceeds is an `InfeasibleBudget`; so is a set of rows no plan meets at once.
    """
    import numpy as np
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import lil_matrix

    names = list(candidates)
    flat = [(n, c) for n in names for c in candidates[n]]
    cost = np.array([(c.loss if objective is None else objective(c)) for _, c in flat], dtype=float)
    resource = list(rows)
    if budget_bits is not None:
        smallest = sum(min(c.bits for c in candidates[n]) for n in names)
        if smallest > budget_bits:
            raise InfeasibleBudget(f"even the smallest candidate of every layer needs more than the "
                                   f"{budget_bits / 8e6:.3f} MB budget; raise --memory-budget-mb.", smallest)
        resource.insert(0, ResourceRow("memory", lambda c: c.bits, budget_bits, "bits"))
    for r in resource[1 if budget_bits is not None else 0:]:
        smallest = sum(min(r.cost(c) for c in candidates[n]) for n in names)
        if smallest > r.budget:
            raise InfeasibleBudget(f"even the cheapest candidate of every layer needs {smallest:g} {r.unit} of "
                                   f"{r.name}, above its budget of {r.budget:g} {r.unit}.".replace("  ", " "), smallest)
    onehot = lil_matrix((len(names), len(flat)))
    col = 0
    for row, n in enumerate(names):
        for _ in candidates[n]:
            onehot[row, col] = 1
            col += 1
    constraints = [LinearConstraint(onehot.tocsr(), 1, 1)]
    for r in resource:
        vec = np.array([r.cost(c) for _, c in flat], dtype=float)
        constraints.append(LinearConstraint(vec[None, :], -np.inf, r.budget))
    from ..files import native_stdout, pass_on_native_log

    logged: List[str] = []  # HiGHS's stray printf lines: shown only with --debug
    with native_stdout(logged):
        res = milp(cost, integrality=np.ones(len(flat)), bounds=Bounds(0, 1), constraints=constraints,
                   options={"time_limit": 120})
    pass_on_native_log(logged)
    if res.x is None:
        if len(resource) > 1:
            raise InfeasibleBudget(f"no allocation meets the {' and the '.join(r.name for r in resource)} budgets "
                                   f"at once ({res.message}).", math.nan)
        what = resource[0].name if resource else "allocation"
        raise DeployError(f"the {what} ILP found no solution ({res.message}).")
    chosen = {}
    for (n, c), v in zip(flat, res.x):
        if v > 0.5:
            chosen[n] = c
    return chosen


def memory_mb(model: nn.Module, plan: Mapping[str, LayerChoice], linears: Mapping[str, nn.Linear]) -> float:
    """Weight memory (MB = 1e6 bytes) of the model under `plan`: planned Linears at their bits, the rest FP32."""
    planned = sum(m.weight.numel() for n, m in linears.items() if n in plan)
    rest_bits = 32 * (count_params(model) - planned)
    bits = rest_bits + sum(plan[n].weight_bits(m.in_features, m.out_features) for n, m in linears.items() if n in plan)
    return bits / 8e6


CACHE_VERSION = 3  # bump when candidates are scored differently (grid, forms, costs)


def _cache_key(linear: nn.Linear, stats: LayerStats, cand_kw: Mapping) -> str:
    import hashlib
    import json

    h = hashlib.sha256()
    for t in (linear.weight, stats.second_moment):
        h.update(t.detach().float().contiguous().cpu().numpy().tobytes())
    settings = {k: (list(v) if isinstance(v, (tuple, list)) else v) for k, v in sorted(cand_kw.items())}
    h.update(json.dumps({"v": CACHE_VERSION, **settings}, sort_keys=True, default=str).encode())
    return h.hexdigest()[:32]


def _load_cached(path) -> Optional[List[Candidate]]:
    import json

    try:
        rows = json.loads(path.read_text())
        return [Candidate(LayerChoice(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in r["choice"].items()}),
                          float(r["loss"]), int(r["bits"])) for r in rows]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable or from another version: searched again


def mlorq_candidates(linears: Mapping[str, nn.Linear], stats: Mapping[str, LayerStats], progress: bool = True,
                     cache: bool = True, **cand_kw) -> Dict[str, List[Candidate]]:
    """All candidates of every layer (the expensive part; reuse it to solve several budgets).

    `cache`: each layer's candidates are kept under `$LRAQVIT_CACHE/mlorq/` keyed by its weight, its
    activation statistics and the settings, so the same model and calibration plan in seconds later.
    """
    from tqdm import tqdm

    from ..io import atomic_write
    from ..paths import cache_dir

    out: Dict[str, List[Candidate]] = {}
    folder = cache_dir("mlorq") if cache else None
    hits = 0
    bar = tqdm(linears.items(), desc="MLoRQ candidates", unit="layer", disable=not progress, leave=False)
    for n, m in bar:
        path = folder / f"{_cache_key(m, stats[n], cand_kw)}.json" if folder is not None else None
        found = _load_cached(path) if path is not None and path.is_file() else None
        if found is not None:
            out[n] = found
            hits += 1
            bar.set_postfix_str(f"{hits} cached", refresh=False)
            continue
        out[n] = layer_candidates(m, stats[n], **cand_kw)
        if path is not None:
            import json

            rows = [{"choice": c.choice.to_dict(), "loss": c.loss, "bits": c.bits} for c in out[n]]
            try:
                with atomic_write(path, "w") as f:
                    json.dump(rows, f)
            except OSError:
                pass  # a read-only or full cache only costs the search next time
    return out


def _allowed(c: Candidate, dense_bits: Sequence[int], factor_bits: Sequence[int]) -> bool:
    """Whether a candidate uses only the allowed bit-widths (float candidates always)."""
    ch = c.choice
    if ch.rank is None:
        return ch.w_bits is None or ch.w_bits in dense_bits
    return ch.factor_bits is None or all(b in factor_bits for b in ch.factor_bits)


def mlorq_plan(model: nn.Module, linears: Mapping[str, nn.Linear], stats: Mapping[str, LayerStats],
               memory_budget_mb: float, progress: bool = True,
               candidates: Optional[Mapping[str, List[Candidate]]] = None, **cand_kw) -> Plan:
    """The MLoRQ allocation of `linears` so the whole model's weights fit `memory_budget_mb`.

    `candidates` (from `mlorq_candidates`) skips the candidate search; they are filtered to
    `dense_bits` / `factor_bits` when those are given.
    """
    fixed_bits = 32 * (count_params(model) - sum(m.weight.numel() for m in linears.values()))
    budget = memory_budget_mb * 8e6 - fixed_bits
    if budget <= 0 or not math.isfinite(budget):
        raise DeployError(f"--memory-budget-mb {memory_budget_mb} does not even hold the uncompressed parts "
                          f"({fixed_bits / 8e6:.2f} MB); raise it.")
    if candidates is None:
        candidates = mlorq_candidates(linears, stats, progress, **cand_kw)
    dense_bits = cand_kw.get("dense_bits", DENSE_BITS)
    factor_bits = cand_kw.get("factor_bits", FACTOR_BITS)
    fronts = {n: pareto_front([c for c in candidates[n] if _allowed(c, dense_bits, factor_bits)]) for n in linears}
    return {n: c.choice for n, c in solve_ilp(fronts, budget).items()}


SIZE_MARGIN = 0.01  # plan this fraction below a size budget (the size model's measured error, with room)


def _smallest_bytes(linear: nn.Linear, target: str, cand_kw: Mapping) -> float:
    """The cheapest choice of one layer (from shapes alone: the same ranks and forms the search tries)."""
    out_f, in_f = linear.weight.shape
    dense_forms, factor_forms = _target_forms(target, in_f, cand_kw.get("dense_bits", DENSE_BITS),
                                              cand_kw.get("factor_bits", FACTOR_BITS))
    costs = [LayerChoice(w_bits=f.bits, group=f.group).program_bytes(in_f, out_f) for f in dense_forms]
    r_star = break_even_rank(in_f, out_f)
    for frac in cand_kw.get("rank_fractions", RANK_FRACTIONS):
        r = max(1, int(frac * r_star))
        r += r % 2
        for fd in factor_forms(in_f):
            for fu in factor_forms(r):
                ch = LayerChoice(rank=r, factor_bits=(fu.bits, fd.bits), factor_groups=(fu.group, fd.group))
                costs.append(ch.program_bytes(in_f, out_f))
    return min(costs)


def _check_feasible(layer_bytes: float, size_budget_mb: float, target: str, fixed: float) -> None:
    """One line naming the smallest feasible budget when `fixed` + the layers' smallest `layer_bytes` exceed it."""
    smallest = (fixed + layer_bytes) / (1 - SIZE_MARGIN)
    if not math.isfinite(size_budget_mb) or smallest > size_budget_mb * 1e6:
        least = math.ceil(smallest / 1e3) / 1e3  # MB, rounded up: that budget plans
        raise InfeasibleBudget(f"--size-budget-mb {size_budget_mb:g}: the smallest {target} program of this model is "
                               f"{least:.3f} MB (every layer in its smallest form, {fixed / 1e6:.3f} MB "
                               f"fixed: embeddings, norms, biases, head); give at least {least:.3f}.", 8 * smallest)


def size_plan(model: nn.Module, linears: Mapping[str, nn.Linear], stats: Mapping[str, LayerStats],
              size_budget_mb: float, target: str, progress: bool = True,
              candidates: Optional[Mapping[str, List[Candidate]]] = None, **cand_kw):
    """The MLoRQ plan of `linears` whose built `target` program fits `size_budget_mb` (MB = 1e6 bytes).

    Returns (plan, planned program bytes). The fixed part is everything the plan does not choose
    (embeddings, LayerNorms, biases, the head, the program's records: `quant.forms.program_bytes` of
    the float model less the planned weights); each layer adds its candidate's bytes. A budget below
    the smallest plan is one line that names the smallest feasible size.
    """
    from ..quant.forms import program_bytes

    fixed = program_bytes(model) - sum(4 * m.weight.numel() for m in linears.values())
    # from the shapes alone, in a second, before the search
    _check_feasible(sum(_smallest_bytes(m, target, cand_kw) for m in linears.values()), size_budget_mb, target, fixed)
    # planned to SIZE_MARGIN below the budget: the size model is within ~0.3 % of built test-bed programs
    # (1.6 % on tiny Swins, whose structure is a larger share), so the built program stays under the budget
    budget_bits = size_budget_mb * (1 - SIZE_MARGIN) * 8e6 - 8 * fixed
    if candidates is None:
        candidates = mlorq_candidates(linears, stats, progress, target=target, **cand_kw)
    fronts = {n: pareto_front(candidates[n]) for n in linears}
    _check_feasible(sum(min(c.bits for c in fronts[n]) for n in linears) / 8, size_budget_mb, target, fixed)
    chosen = solve_ilp(fronts, budget_bits)
    plan = {n: c.choice for n, c in chosen.items()}
    return plan, fixed + sum(c.bits for c in chosen.values()) / 8


# What each deployment target executes (see RESEARCH.md and quant/forms.py): int8 weights everywhere;
# XNNPACK also 4-bit. The names of earlier releases (executorch, xnnpack, tensorrt, onnx) are kept.
TARGET_WEIGHT_BITS = {"sim": None, "android": {4, 8}, "jetson": {8}, "executorch": {4, 8}, "xnnpack": {4, 8},
                      "tensorrt": {8}, "onnx": {8}}


def unsupported_layers(plan: Mapping[str, LayerChoice], target: str) -> Dict[str, str]:
    """`{layer: why}` for every layer `target` cannot run as planned (empty = all runnable)."""
    if target not in TARGET_WEIGHT_BITS:
        raise DeployError(f"unknown target {target!r}; choose one of {sorted(TARGET_WEIGHT_BITS)}.")
    ok = TARGET_WEIGHT_BITS[target]
    bad = {}
    if ok is None:
        return bad
    for n, c in plan.items():
        bits = [c.w_bits] if c.rank is None else list(c.factor_bits or ())
        wrong = sorted({b for b in bits if b is not None and b not in ok})
        if wrong:
            bad[n] = f"{wrong}-bit weights (target runs {sorted(ok)}-bit)"
    return bad


def check_target(plan: Mapping[str, LayerChoice], target: str) -> None:
    """Raise a DeployError naming the layers `target` can't run (e.g. 3-bit weights on TensorRT)."""
    bad = unsupported_layers(plan, target)
    if bad:
        lines = "; ".join(f"{n}: {why}" for n, why in list(bad.items())[:3])
        more = f"; and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise DeployError(f"{len(bad)} layer(s) of this allocation cannot run on {target} ({lines}{more}); "
                          f"restrict the search to bits the target runs (e.g. --mlorq-bits 4,8 for XNNPACK, 8 for "
                          "TensorRT), or evaluate it in the simulator (target 'sim').")
