"""Partial fine-tune after low-rank compression (Azizi et al., §2): only LayerNorms, biases, head and
patch embedding train; every weight matrix of the encoder stays as compressed.

Loss = CE(label) + KL(teacher ∥ student) on the logits. The distillation term matters on small
calibration sets: the labels alone would let the few trainable parameters overfit them.
"""
from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


def partial_parameters(model: nn.Module) -> List[nn.Parameter]:
    """Parameters of LayerNorms, every bias, the head, and the patch embedding (marked trainable)."""
    chosen = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.LayerNorm) or name == "head" or name.startswith("head.") or name.startswith("patch_embed"):
            chosen.update({id(p): p for p in m.parameters(recurse=False)})
    for name, p in model.named_parameters():
        if name.endswith(".bias"):
            chosen[id(p)] = p
    return list(chosen.values())


def partial_finetune_(model: nn.Module, teacher: Optional[nn.Module], train_ds, epochs: float = 1.0,
                      lr: float = 1e-4, batch_size: int = 32, kd_weight: float = 1.0, seed: int = 0,
                      progress: bool = True) -> List[float]:
    """AdamW on `partial_parameters(model)` with cosine decay; returns the per-step losses."""
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    params = partial_parameters(model)
    trainable = {id(p) for p in params}
    saved = {n: p.requires_grad for n, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(train_ds, batch_size=batch_size, shuffle=True, generator=gen, drop_last=True)
    steps = max(1, int(epochs * len(loader)))
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    if teacher is not None:
        teacher.eval()
    model.train()
    losses: List[float] = []
    bar = tqdm(total=steps, desc="partial fine-tune", disable=not progress, leave=False)
    try:
        while len(losses) < steps:
            for x, y in loader:
                logits = model(x)
                loss = F.cross_entropy(logits, torch.as_tensor(y))
                if teacher is not None and kd_weight:
                    with torch.no_grad():
                        t = teacher(x)
                    loss = loss + kd_weight * F.kl_div(F.log_softmax(logits, -1), F.log_softmax(t, -1),
                                                       log_target=True, reduction="batchmean")
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                losses.append(float(loss.detach()))
                bar.update(1)
                if len(losses) >= steps:
                    break
    finally:
        bar.close()
        model.eval()
        for n, p in model.named_parameters():
            p.requires_grad_(saved.get(n, True))
    return losses
