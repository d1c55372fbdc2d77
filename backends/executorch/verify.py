"""Run a .pte on this host and compare its predictions with the PyTorch model it was lowered from.

The reference is the model handed to `deploy build`: the FP32 model, or for a model holding
`QuantLinear` layers the quantization simulator (`model(x)`), so agreement measures the
lowering, not the quantization. For PT2E INT8 of an FP32 model, the reference is the FP32 model.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional

import torch
import torch.nn as nn


@dataclass
class Verification:
    n_images: int
    agreement: float  # 0..1, argmax of the .pte == argmax of the reference
    top1: Optional[float]  # percent, when labels exist
    reference_top1: Optional[float]
    max_abs_logit_diff: float
    reference: str
    data: str
    # the reference against itself with the input scaled by (1 + 1e-6): the agreement any
    # implementation that is not bit-exact with PyTorch's fp32 arithmetic can expect
    reference_self_agreement: Optional[float] = None
    # output closeness over all logits: 10 log10(sum ref^2 / sum (out - ref)^2) and the worst per-image cosine
    sqnr_db: Optional[float] = None  # None: bit-exact
    min_cosine: Optional[float] = None
    # argmax flips where the reference's own logits for the two classes are closer than twice the
    # typical (median over images) largest logit error (`lraqvit_deploy.jetson.run.near_tie_flips`,
    # shared with the Jetson gate): the gate (`gated_agreement`) counts them as agreeing; they stay
    # visible here and in `agreement`
    near_tie_flips: int = 0
    # images whose logits hold a NaN or an inf: any is a failure (a NaN's argmax is an arbitrary class and
    # NaN compares false with every threshold); the reference's own, too
    nonfinite_outputs: int = 0
    nonfinite_reference: int = 0

    @property
    def gated_agreement(self) -> float:
        return self.agreement + self.near_tie_flips / max(self.n_images, 1)

    def to_dict(self) -> Dict[str, Any]:
        return {**asdict(self), "gated_agreement": round(self.gated_agreement, 6)}


@torch.no_grad()
def verify_program(path, reference: nn.Module, images, labels: Optional[torch.Tensor] = None,
                   reference_name: str = "pytorch", data_name: str = "", progress: bool = True,
                   batch_size: int = 50, self_check: bool = False) -> Verification:
    """Execute the program on each image (batch 1, as exported) and score it against `reference`."""
    from tqdm import tqdm

    from .runtime import execute, load_forward

    method, _ = load_forward(path)
    reference = reference.eval()
    from lraqvit_deploy.finite import nonfinite_rows

    preds, ref_preds, pert_preds, diff, outs, refs = [], [], [], 0.0, [], []
    signal = noise = 0.0
    min_cos = 1.0
    bad_out = bad_ref = 0
    for start in tqdm(range(0, len(images), batch_size), desc="verify .pte", disable=not progress, leave=False):
        chunk = images[start : start + batch_size]
        ref = reference(chunk)
        out = torch.cat([execute(method, [chunk[i : i + 1].contiguous()], path)[0] for i in range(len(chunk))])
        bad_out += nonfinite_rows(out)
        bad_ref += nonfinite_rows(ref)
        d = (out - ref).abs().max().item()
        diff = d if math.isnan(d) else max(diff, d)  # Python's max drops a NaN that comes second
        signal += ref.double().pow(2).sum().item()
        noise += (out - ref).double().pow(2).sum().item()
        c = torch.nn.functional.cosine_similarity(out.double(), ref.double(), dim=-1).min().item()
        min_cos = c if math.isnan(c) else min(min_cos, c)
        p, r = out.argmax(-1), ref.argmax(-1)
        outs.append(out)
        refs.append(ref)
        preds += p.tolist()
        ref_preds += r.tolist()
        if self_check:
            pert_preds += reference(chunk * (1 + 1e-6)).argmax(-1).tolist()
    from lraqvit_deploy.jetson.run import near_tie_flips

    near_ties = near_tie_flips(torch.cat(outs).numpy(), torch.cat(refs).numpy()) if outs else 0
    preds_t, ref_t = torch.tensor(preds), torch.tensor(ref_preds)
    top1 = ref_top1 = None
    if labels is not None:
        labels = torch.as_tensor(labels)[: len(preds)]
        top1 = 100.0 * (preds_t == labels).float().mean().item()
        ref_top1 = 100.0 * (ref_t == labels).float().mean().item()
    self_agree = (torch.tensor(pert_preds) == ref_t).float().mean().item() if self_check else None
    if math.isfinite(noise) and math.isfinite(signal):
        sqnr = None if noise == 0 else 10 * math.log10(max(signal, 1e-300) / noise)
    else:
        sqnr = float("nan")  # non-finite logits: no SQNR, and a NaN fails every gate
    return Verification(len(preds), (preds_t == ref_t).float().mean().item(), top1, ref_top1, diff,
                        reference_name, data_name, self_agree, None if sqnr is None else round(sqnr, 2),
                        round(min_cos, 6), near_ties, bad_out, bad_ref)
