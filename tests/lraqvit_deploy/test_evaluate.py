"""Evaluation figures on models whose parameter and FLOP counts are known in closed form."""
import torch
import torch.nn as nn
from torch.utils.data import TensorDataset

from conftest import make_tiny
from lraqvit_deploy.evaluate import count_gflops, count_params, evaluate, size_mb


def test_tiny_vit_counts_match_closed_form():
    model = make_tiny("vit")  # img 32, patch 8, width 64, depth 2, 2 heads, 10 classes, mlp ratio 4
    d, depth, p, classes, mlp = 64, 2, 8, 10, 256
    n = (32 // p) ** 2 + 1  # 16 patches + class token
    block = (2 * 2 * d) + (3 * d * d + 3 * d) + (d * d + d) + (d * mlp + mlp) + (mlp * d + d)
    params = (3 * p * p * d + d) + d + n * d + depth * block + 2 * d + (d * classes + classes)
    assert count_params(model) == params
    macs_block = n * d * 3 * d + 2 * n * n * d + n * d * d + 2 * n * d * mlp
    macs = (n - 1) * 3 * p * p * d + depth * macs_block + d * classes
    assert abs(count_gflops(model) * 1e9 - 2 * macs) / (2 * macs) < 1e-9
    assert size_mb(model) == params * 4 / 1e6


def test_top1_and_agreement_on_a_known_classifier():
    torch.manual_seed(0)
    x = torch.randn(40, 3, 4, 4)
    labels = torch.arange(40) % 4
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 4))
    model.pretrained_cfg = {"input_size": (3, 4, 4)}
    with torch.no_grad():
        preds = model(x).argmax(1)
    labels[:10] = (preds[:10] + 1) % 4  # exactly 10 wrong
    labels[10:] = preds[10:]
    result = evaluate(model, TensorDataset(x, labels), reference=model, batch_size=7, progress=False)
    assert result.top1 == 75.0 and result.n_images == 40
    assert result.agreement == 1.0
    assert result.params == 48 * 4 + 4
    assert abs(result.gflops - 2 * 48 * 4 / 1e9) < 1e-15
