"""Evaluation: top-1, agreement with a reference, parameters, GFLOPs and size."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Optional, Sequence

import torch
import torch.nn as nn
from torch.utils.data import Dataset

from .data import input_size, make_loader


MAX_BATCH = 65_536  # images per evaluation batch


@dataclass
class EvalResult:
    top1: float  # percent
    n_images: int
    params: int
    gflops: float  # per image, 2 x multiply-accumulates, counted by torch.utils.flop_counter
    size_mb: float  # 1e6 bytes
    agreement: Optional[float] = None  # 0..1, fraction of predictions equal to the reference's
    correct: Optional[torch.Tensor] = field(default=None, repr=False, compare=False)  # per image, for paired CIs

    def to_dict(self) -> Dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "correct"}

    def paired_with(self, reference: "EvalResult"):
        """This result's top-1 minus `reference`'s over the same images, with a 95 % interval (`stats`)."""
        from .stats import paired_difference

        if self.correct is None or reference.correct is None:
            return None
        return paired_difference(reference.correct, self.correct)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def size_mb(model: nn.Module) -> float:
    """Bytes of parameters and persistent buffers at their stored dtype, in MB (1e6)."""
    sd = model.state_dict()
    return sum(t.numel() * t.element_size() for t in sd.values()) / 1e6


@torch.no_grad()
def count_gflops(model: nn.Module, shape: Optional[Sequence[int]] = None) -> float:
    """GFLOPs of one forward pass on one image (torch's counter: a multiply-add counts 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, *(shape or input_size(model)))
    counter = FlopCounterMode(display=False)
    was_training = model.training
    # torch's counter has no formula for the CPU fused-attention kernel, so attention matmuls would be
    # silently missed: count through timm's explicit (unfused) attention path instead.
    fused = [(m, m.fused_attn) for m in model.modules() if getattr(m, "fused_attn", None) is True]
    for m, _ in fused:
        m.fused_attn = False
    # the counter's module tracker hooks every input that requires grad; under no_grad a view of a
    # parameter (SigLIP's `latent.expand(B, ...)` feeding attn_pool.q) requires grad but has no grad_fn,
    # which the tracker cannot hook ("Expected gradient function to be set"): count with grads off.
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        model.eval()
        with counter:
            model(x)
    finally:
        for m, flag in fused:
            m.fused_attn = flag
        for p in trainable:
            p.requires_grad_(True)
        model.train(was_training)
    return counter.get_total_flops() / 1e9


@torch.no_grad()
def predict(model: nn.Module, ds: Dataset, batch_size: int = 64, progress: bool = True, desc: str = "eval"):
    """Predicted classes and labels over the whole dataset.

    Non-finite logits (NaN/inf) are a `DeployError` naming the non-finite weights, if any: a NaN's
    argmax is an arbitrary class, so such a model has no accuracy to report (`finite.py`).
    """
    from tqdm import tqdm

    from .finite import check_finite_outputs

    model.eval()
    preds, labels, seen = [], [], 0
    for x, y in tqdm(make_loader(ds, batch_size), desc=desc, disable=not progress, leave=False):
        logits = model(x)
        seen += len(logits)
        check_finite_outputs(logits, "the reference" if desc == "reference" else "the model", model, seen)
        preds.append(logits.argmax(-1))
        labels.append(torch.as_tensor(y))
    return torch.cat(preds), torch.cat(labels)


def evaluate(
    model: nn.Module,
    ds: Dataset,
    reference: Optional[nn.Module] = None,
    batch_size: int = 64,
    progress: bool = True,
) -> EvalResult:
    """Top-1 of `model` on `ds`, and agreement with `reference` when one is given."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH:
        from .errors import DeployError

        raise DeployError(f"batch_size (--batch-size) = {batch_size!r}: expected a whole number in 1..{MAX_BATCH}.")
    if len(ds) == 0:
        from .errors import DeployError

        raise DeployError("no images to evaluate on (the dataset is empty).")
    preds, labels = predict(model, ds, batch_size, progress)
    agreement = None
    if reference is not None:
        ref_preds, _ = predict(reference, ds, batch_size, progress, desc="reference")
        agreement = (preds == ref_preds).float().mean().item()
    return EvalResult(
        top1=100.0 * (preds == labels).float().mean().item(),
        n_images=len(labels),
        params=count_params(model),
        gflops=count_gflops(model),
        size_mb=size_mb(model),
        agreement=agreement,
        correct=preds == labels,
    )
