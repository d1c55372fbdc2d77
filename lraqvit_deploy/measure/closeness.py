"""How close a program's logits are to its reference's, and the gates on that: the one implementation.

Every verifier uses it: the Android host check (`backends/executorch/verify.py`), the emulated Arm
CPUs (`backends/executorch/arm/`), the ONNX check in onnxruntime (`backends/tensorrt/verify.py`)
and the TensorRT engine on the Jetson (`jetson/run.py`). numpy and the standard library only: the
Jetson bundle ships this file beside `run.py` (`backends/tensorrt/bundle.py FILES`).

`compare_logits(got, ref, labels)` returns::

    n_images, agreement            fraction of rows whose argmax matches the reference's
    near_tie_flips                 flipped rows whose reference logits were a near tie (`near_tie_flips`)
    gated_agreement                agreement counting those flips as agreeing (what the gates compare)
    sqnr_db                        10 log10(sum ref^2 / sum (ref - got)^2) over all logits;
                                   None when bit-exact (infinite: JSON has no inf), NaN when any logit
                                   is NaN/inf (a NaN fails every gate)
    bit_exact                      got == ref everywhere
    cosine_mean, cosine_min        cosine similarity of each row's logits (NaN rows stay NaN)
    max_abs_diff, reference_max_abs
    nonfinite, nonfinite_reference rows of got / ref holding a NaN or an inf
    top1, top1_reference           percent, when `labels` (N,) are given and all >= 0 (real images)

Top-1 agreement alone is ill-conditioned when logits are nearly tied (random-weight models,
synthetic inputs); SQNR and cosine are not: gate on those for every model.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional

GATE_KEYS = ("min_agreement", "min_sqnr_db", "min_cosine")


def _array(x):
    import numpy as np

    if hasattr(x, "detach"):  # a torch tensor, without importing torch here
        x = x.detach().cpu().double().numpy()
    a = np.asarray(x, dtype=np.float64)
    return a.reshape(len(a), -1)


def below(value: Any, threshold: float) -> bool:
    """`not value >= threshold`: NaN, -inf and None fail (where `value < threshold` would pass a NaN); +inf
    passes (the SQNR of a bit-exact output is infinite)."""
    try:
        return not (float(value) >= threshold)
    except (TypeError, ValueError):
        return True


def nonfinite_rows(x) -> int:
    """How many rows (images) of logits `x` (torch or numpy, (N, ...); a scalar counts as one row) hold a NaN or
    an inf."""
    import numpy as np

    if np.ndim(x.detach().cpu() if hasattr(x, "detach") else x) == 0:
        return int(not np.isfinite(float(x)))
    a = _array(x)
    return int((~np.isfinite(a)).any(axis=1).sum()) if len(a) else 0


def near_tie_flips(got, ref) -> int:
    """Rows whose argmax differs from the reference's although the reference's own gap between its
    class and the one `got` picked is at most twice the TYPICAL logit error: the median over rows of
    each row's largest |got - ref|.

    Why the median and not the row's own error: any flip needs gap < e_picked - e_ref <= 2 x that
    row's max error, so a per-row rule would excuse every flip. With the set's typical error, a flip
    at a wider gap needs an atypically large error on that image, which is what a gate should catch
    (an error that is large everywhere fails the SQNR / cosine gates instead).
    """
    import numpy as np

    got, ref = _array(got), _array(ref)
    if not len(ref):
        return 0
    r_arg, g_arg = ref.argmax(1), got.argmax(1)
    flip = np.nonzero(r_arg != g_arg)[0]
    if not len(flip):
        return 0
    typical = float(np.median(np.abs(ref - got).max(axis=1)))
    gap = ref[flip, r_arg[flip]] - ref[flip, g_arg[flip]]
    return int((gap <= 2 * typical).sum())


def compare_logits(got, ref, labels=None) -> Dict[str, Any]:
    """How close logits `got` (N, C) are to `ref` (N, C) (numpy or torch): the keys in the module doc."""
    import numpy as np

    got, ref = _array(got), _array(ref)
    if got.shape != ref.shape:
        raise ValueError(f"logits shape {got.shape} != reference shape {ref.shape}")
    n = len(ref)
    bad_got, bad_ref = nonfinite_rows(got), nonfinite_rows(ref)
    with np.errstate(invalid="ignore", over="ignore"):
        err = float(((ref - got) ** 2).sum())
        sig = float((ref ** 2).sum())
        exact = bool(n) and not (bad_got or bad_ref) and bool((got == ref).all())
        if bad_got or bad_ref or not (math.isfinite(err) and math.isfinite(sig)):
            sqnr: Optional[float] = float("nan")
        else:
            sqnr = None if err == 0 else 10 * math.log10(max(sig, 1e-300) / err)
        norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
        cos = np.where(norms > 0, (ref * got).sum(1) / np.maximum(norms, 1e-300), 1.0)
        cos = np.where(np.isfinite(norms), cos, np.nan)  # a NaN norm is not "> 0": it must not read as cosine 1
    agreement = float((ref.argmax(1) == got.argmax(1)).mean()) if n else float("nan")
    near = near_tie_flips(got, ref)
    out: Dict[str, Any] = {
        "n_images": int(n), "agreement": agreement, "near_tie_flips": near,
        "gated_agreement": agreement + near / max(n, 1), "sqnr_db": sqnr, "bit_exact": exact,
        "cosine_mean": float(cos.mean()) if n else float("nan"), "cosine_min": float(cos.min()) if n else float("nan"),
        "max_abs_diff": float(np.abs(ref - got).max()) if n and not (bad_got or bad_ref) else float("nan"),
        "reference_max_abs": float(np.abs(ref).max()) if n else float("nan"),
        "nonfinite": bad_got, "nonfinite_reference": bad_ref, "top1": None, "top1_reference": None,
    }
    if labels is not None:
        lab = np.asarray(labels.detach().cpu().numpy() if hasattr(labels, "detach") else labels).reshape(-1)[:n]
        if n and len(lab) == n and (lab >= 0).all():
            out["top1"] = float(100 * (got.argmax(1) == lab).mean())
            out["top1_reference"] = float(100 * (ref.argmax(1) == lab).mean())
    return out


def format_sqnr(sqnr_db: Optional[float]) -> str:
    return "exact" if sqnr_db is None else f"{sqnr_db:.1f} dB"


def gate_problems(metrics: Mapping[str, Any], gates: Mapping[str, Optional[float]], *,
                  agreement_needs_labels: bool = False, gated: bool = True) -> List[str]:
    """The gates `metrics` (from `compare_logits`) fail, as sentences; empty when all pass.

    `gates`: `min_agreement` (on `gated_agreement`, or on the raw `agreement` with `gated=False`),
    `min_sqnr_db` (a bit-exact output, SQNR None, passes), `min_cosine` (mean row cosine); a gate
    that is None or absent is not applied. `agreement_needs_labels`: apply `min_agreement` only when
    the metrics have a top-1 (real labelled images; on synthetic inputs near-tied logits make one
    flip noise). NaN/inf logits always fail (alone: the other measures of a NaN say nothing more),
    whatever the gates say, and every comparison fails a NaN.
    """
    failed = []
    n = metrics.get("n_images", "?")
    if metrics.get("nonfinite"):
        failed.append(f"NaN/inf logits on {metrics['nonfinite']} of {n} images")
    if metrics.get("nonfinite_reference"):
        failed.append(f"the reference logits hold NaN/inf on {metrics['nonfinite_reference']} of {n} images")
    if failed:  # every other measure of a NaN is NaN: the reason is said
        return failed
    s = gates.get("min_sqnr_db")
    if s is not None and not (metrics.get("sqnr_db") is None and metrics.get("bit_exact")) \
            and below(metrics.get("sqnr_db"), s):
        failed.append(f"logit SQNR {_num(metrics.get('sqnr_db'), '.1f')} dB < {s:g} dB "
                      f"(min cosine {_num(metrics.get('cosine_min'), '.4f')})")
    c = gates.get("min_cosine")
    if c is not None and below(metrics.get("cosine_mean"), c):
        failed.append(f"mean logit cosine {_num(metrics.get('cosine_mean'), '.5f')} < {c}")
    a = gates.get("min_agreement")
    if a is not None and not (agreement_needs_labels and metrics.get("top1") is None):
        value = metrics.get("gated_agreement", metrics.get("agreement")) if gated else metrics.get("agreement")
        if below(value, a):
            near = f" (near-tie flips counted as agreeing: {metrics.get('near_tie_flips', 0)})" if gated else ""
            failed.append(f"top-1 agreement {_pct(value)} < {100 * a:.1f}%{near}")
    return failed


def _num(v: Any, fmt: str) -> str:
    try:
        return format(float(v), fmt)
    except (TypeError, ValueError):
        return str(v)


def _pct(v: Any) -> str:
    try:
        return f"{100 * float(v):.2f}%"
    except (TypeError, ValueError):
        return str(v)
