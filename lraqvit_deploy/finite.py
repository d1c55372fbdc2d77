"""Non-finite values (NaN, +-inf) are failures, everywhere (docs/compress.md, "Non-finite values").

A NaN compares false with everything, so a gate written `value < threshold` lets it through:
every gate of the SDK is written `below(value, threshold)` (= `not value >= threshold`), which a
NaN, an inf where a finite number is due, or a missing value fails. Weights and scales are
checked before they are saved (`deploy compress`) or lowered (`deploy build`), model outputs
before they are scored (`deploy eval`); each refusal is one line naming the first tensors.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, List, Mapping, Optional, Tuple

from .errors import DeployError
# the one NaN-safe comparison and non-finite row count (numpy only, shared with the Jetson bundle)
from .measure.closeness import below, nonfinite_rows  # noqa: F401


def is_finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def nonfinite_tensors(tensors: Iterable[Tuple[str, Any]]) -> List[Tuple[str, int, int, int]]:
    """(name, NaNs, infs, numel) of every floating tensor that holds a NaN or an inf."""
    import torch

    found = []
    for name, t in tensors:
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.numel() == 0:
            continue
        t = t.detach()
        finite = torch.isfinite(t)
        if bool(finite.all()):
            continue
        nan = int(torch.isnan(t).sum())
        found.append((name, nan, int((~finite).sum()) - nan, t.numel()))
    return found


def describe(found: List[Tuple[str, int, int, int]], limit: int = 3) -> str:
    """'blocks.0.attn.qkv.weight (1 NaN of 12288), ... and 4 more tensors'."""
    parts = []
    for name, nan, inf, n in found[:limit]:
        what = " and ".join(s for s in (f"{nan} NaN" if nan else "", f"{inf} inf" if inf else "") if s)
        parts.append(f"{name} ({what} of {n})")
    more = f", and {len(found) - limit} more tensor{'s' if len(found) - limit > 1 else ''}" if len(found) > limit else ""
    return ", ".join(parts) + more


def model_nonfinite(model) -> List[Tuple[str, int, int, int]]:
    """The model's parameters and buffers (weights, QuantLinear scales) that hold NaN or inf."""
    return nonfinite_tensors(model.state_dict().items())


def check_finite_weights(model_or_state, what: str, fix: str) -> None:
    """Raise one DeployError line when a weight or scale is NaN/inf: `WHAT: its weights hold non-finite values (...); FIX`."""
    found = (nonfinite_tensors(model_or_state.items()) if isinstance(model_or_state, Mapping)
             else model_nonfinite(model_or_state))
    if found:
        raise DeployError(f"{what}: its weights hold non-finite values (NaN/inf): {describe(found)}; {fix}")


def check_finite_outputs(logits, what: str, model=None, n_seen: Optional[int] = None) -> None:
    """Raise one DeployError line when `logits` hold NaN/inf, naming non-finite weights of `model` if any."""
    bad = nonfinite_rows(logits)
    if not bad:
        return
    why = ""
    if model is not None:
        found = model_nonfinite(model)
        why = (f"; its weights hold non-finite values: {describe(found)}" if found else
               "; its weights are finite, so an activation overflowed")
    at = f" (images {n_seen - len(logits) + 1}-{n_seen})" if n_seen is not None else ""
    raise DeployError(f"{what}: the model's outputs are not finite: NaN/inf logits on {bad} of {len(logits)} "
                      f"images of a batch{at}{why}. A model with non-finite outputs has no accuracy; rebuild it "
                      "(a diverged distillation: lower --kd-lr) or check --weights.")
