"""MLoRQ-style joint rank / bit-width allocation under a weight-memory budget (METHODS.md §3).

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
from typing import Dict, List, Mapping, Optional, Sequence

import torch
import torch.nn as nn

from ..lowrank.activation_svd import ActivationSVD
from ..lowrank.activations import LayerStats
from ..errors import DeployError
from ..evaluate import count_params
from ..layers.fake_quant import quantize_rows
from ..layers.low_rank_linear import break_even_rank
from .plan import LayerChoice, Plan

DENSE_BITS = (2, 3, 4, 6, 8)
FACTOR_BITS = (3, 4, 6, 8)
RANK_FRACTIONS = (1 / 16, 1 / 8, 3 / 16, 1 / 4, 3 / 8, 1 / 2, 5 / 8, 3 / 4)  # of the break-even rank


@dataclass(frozen=True)
class Candidate:
    choice: LayerChoice
    loss: float  # normalised activation-weighted error
    bits: int  # stored weight memory


@torch.no_grad()
def layer_candidates(linear: nn.Linear, stats: LayerStats, dense_bits: Sequence[int] = DENSE_BITS,
                     factor_bits: Sequence[int] = FACTOR_BITS,
                     rank_fractions: Sequence[float] = RANK_FRACTIONS, include_float: bool = True) -> List[Candidate]:
    """Every candidate of one layer with its loss and memory (losses from XᵀX only: no activations kept)."""
    w = linear.weight.detach().double()
    out_f, in_f = w.shape
    c = stats.second_moment.double()
    wc = w @ c  # (out, in)
    ref = max(float((wc * w).sum()), 1e-30)  # tr(W C Wᵀ)

    def loss_dense(wq: torch.Tensor) -> float:
        e = w - wq.double()
        return float(((e @ c) * e).sum()) / ref

    cands = []
    if include_float:
        cands.append(Candidate(LayerChoice(), 0.0, LayerChoice().weight_bits(in_f, out_f)))
    for b in dense_bits:
        ch = LayerChoice(w_bits=b)
        cands.append(Candidate(ch, loss_dense(quantize_rows(w.float(), b)[0]), ch.weight_bits(in_f, out_f)))
    asvd = ActivationSVD(w.float(), c)
    r_star = break_even_rank(in_f, out_f)
    ranks = sorted({max(1, int(f * r_star)) for f in rank_fractions})
    for r in ranks:
        up0, down0 = asvd.factors(r)
        for bd in factor_bits:
            dq = quantize_rows(down0, bd)[0].double()
            dc = dq @ c  # (r, in)
            gram = dc @ dq.T  # D C Dᵀ
            rhs = dc @ w.T  # D C Wᵀ, (r, out)
            eye = torch.eye(r, dtype=gram.dtype)
            up = torch.linalg.solve(gram + 1e-10 * gram.diagonal().mean().clamp_min(1e-30) * eye, rhs).T
            for bu in factor_bits:
                uq = quantize_rows(up.float(), bu)[0].double()
                # tr(E C Eᵀ) with Ŵ = U D: tr(WCWᵀ) − 2 tr(U · DCWᵀ) + tr(U · DCDᵀ · Uᵀ)
                err = ref - 2 * float((uq * rhs.T).sum()) + float(((uq @ gram) * uq).sum())
                ch = LayerChoice(rank=r, factor_bits=(bu, bd))
                cands.append(Candidate(ch, max(err, 0.0) / ref, ch.weight_bits(in_f, out_f)))
    return cands


def pareto_front(cands: Sequence[Candidate]) -> List[Candidate]:
    """Candidates not dominated in (bits, loss): sorted by bits, each strictly better in loss than all cheaper."""
    front: List[Candidate] = []
    for cand in sorted(cands, key=lambda c: (c.bits, c.loss)):
        if not front or cand.loss < front[-1].loss:
            front.append(cand)
    return front


def solve_ilp(candidates: Mapping[str, Sequence[Candidate]], budget_bits: float) -> Dict[str, Candidate]:
    """One candidate per layer, min Σ loss s.t. Σ bits ≤ budget (scipy.optimize.milp, exact)."""
    import numpy as np
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import lil_matrix

    names = list(candidates)
    flat = [(n, c) for n in names for c in candidates[n]]
    cost = np.array([c.loss for _, c in flat], dtype=float)
    mem = np.array([c.bits for _, c in flat], dtype=float)
    if sum(min(c.bits for c in candidates[n]) for n in names) > budget_bits:
        raise DeployError(f"even the smallest candidate of every layer needs more than the "
                          f"{budget_bits / 8e6:.3f} MB budget; raise --memory-budget-mb.")
    onehot = lil_matrix((len(names), len(flat)))
    col = 0
    for row, n in enumerate(names):
        for _ in candidates[n]:
            onehot[row, col] = 1
            col += 1
    res = milp(cost, integrality=np.ones(len(flat)), bounds=Bounds(0, 1),
               constraints=[LinearConstraint(onehot.tocsr(), 1, 1), LinearConstraint(mem[None, :], -np.inf, budget_bits)],
               options={"time_limit": 120})
    if res.x is None:
        raise DeployError(f"the memory ILP found no solution ({res.message}).")
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


def mlorq_candidates(linears: Mapping[str, nn.Linear], stats: Mapping[str, LayerStats], progress: bool = True,
                     **cand_kw) -> Dict[str, List[Candidate]]:
    """All candidates of every layer (the expensive part; reuse it to solve several budgets)."""
    from tqdm import tqdm

    return {n: layer_candidates(m, stats[n], **cand_kw)
            for n, m in tqdm(linears.items(), desc="MLoRQ candidates", disable=not progress, leave=False)}


def _allowed(c: Candidate, dense_bits: Sequence[int], factor_bits: Sequence[int]) -> bool:
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


# What each deployment target executes (see RESEARCH.md): int8 weights everywhere; XNNPACK also 4-bit.
TARGET_WEIGHT_BITS = {"sim": None, "executorch": {4, 8}, "xnnpack": {4, 8}, "tensorrt": {8}, "onnx": {8}}


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
