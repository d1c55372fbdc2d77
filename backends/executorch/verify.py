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
    # output closeness over all logits (`lraqvit_deploy.measure.closeness.compare_logits`): SQNR and the
    # worst per-image cosine
    sqnr_db: Optional[float] = None  # None: bit-exact; NaN: non-finite logits
    min_cosine: Optional[float] = None
    # argmax flips where the reference's own logits for the two classes are closer than twice the
    # typical (median over images) largest logit error (`lraqvit_deploy.measure.closeness`,
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

    def metrics(self) -> Dict[str, Any]:
        """The fields under `measure.closeness`'s names, for its `gate_problems`."""
        return {"n_images": self.n_images, "agreement": self.agreement, "gated_agreement": self.gated_agreement,
                "near_tie_flips": self.near_tie_flips, "sqnr_db": self.sqnr_db, "bit_exact": self.sqnr_db is None,
                "cosine_min": self.min_cosine, "nonfinite": self.nonfinite_outputs,
                "nonfinite_reference": self.nonfinite_reference, "top1": self.top1}


@torch.no_grad()
def verify_program(path, reference: nn.Module, images, labels: Optional[torch.Tensor] = None,
                   reference_name: str = "pytorch", data_name: str = "", progress: bool = True,
                   batch_size: int = 50, self_check: bool = False) -> Verification:
    """Execute the program on each image (batch 1, as exported) and score it against `reference`."""
    from tqdm import tqdm

    from lraqvit_deploy.measure.closeness import compare_logits

    from .runtime import execute, load_forward

    method, _ = load_forward(path)
    reference = reference.eval()
    outs, refs, pert_preds = [], [], []
    for start in tqdm(range(0, len(images), batch_size), desc="verify .pte", disable=not progress, leave=False):
        chunk = images[start : start + batch_size]
        refs.append(reference(chunk))
        outs.append(torch.cat([execute(method, [chunk[i : i + 1].contiguous()], path)[0] for i in range(len(chunk))]))
        if self_check:
            pert_preds += reference(chunk * (1 + 1e-6)).argmax(-1).tolist()
    out, ref = torch.cat(outs), torch.cat(refs)
    m = compare_logits(out, ref, None if labels is None else torch.as_tensor(labels)[: len(out)])
    self_agree = (torch.tensor(pert_preds) == ref.argmax(-1)).float().mean().item() if self_check else None
    sqnr = m["sqnr_db"]
    return Verification(m["n_images"], m["agreement"], m["top1"], m["top1_reference"], m["max_abs_diff"],
                        reference_name, data_name, self_agree, sqnr if sqnr is None or math.isnan(sqnr) else
                        round(sqnr, 2), round(m["cosine_min"], 6), m["near_tie_flips"], m["nonfinite"],
                        m["nonfinite_reference"])
