"""`QuantConfig`: which INT8 post-training method to run and with which activation scheme.

Methods (LRA-QViT §3.3 and the baselines of its Table 2):
  * naive        per-channel weights, per-tensor static activations (NaivePTQ)
  * smoothquant  SmoothQuant channel scales alpha = max|X|^m / max|W|^(1-m), folded, then per-tensor
  * qads         alpha searched on the output error alone (Eq. 12), folded; per-token activations
  * repq         RepQ-ViT's LayerNorm reparameterisation (per-channel -> per-tensor), per-tensor
  * per-token    per-channel weights, per-token activations
  * wads         per-token + weight-aware distribution scaling (Eq. 14, weight-error threshold)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional

from ..errors import DeployError
from ..layers.quant_linear import ACT_SCHEMES

METHODS = ("naive", "smoothquant", "qads", "repq", "per-token", "wads")

# The activation scheme each method uses unless the config names one.
DEFAULT_ACT_SCHEME: Dict[str, str] = {
    "naive": "per_tensor_static",
    "smoothquant": "per_tensor_static",
    "repq": "per_tensor_static",
    "qads": "per_token_dynamic",
    "per-token": "per_token_dynamic",
    "wads": "per_token_dynamic",
}
# Methods that multiply a channel scale into each layer's input (and fold it away).
SCALING_METHODS = ("smoothquant", "qads", "repq", "wads")
FC2_MODES = ("skip", "explicit")


@dataclass
class QuantConfig:
    """INT8 post-training quantization settings (mutable: `__post_init__` resolves defaults).

    Args:
        method: one of METHODS.
        act_scheme: 'per_tensor_static', 'per_token_static' or 'per_token_dynamic'; None picks the
            method's default (DEFAULT_ACT_SCHEME). per_token_dynamic is what XNNPACK runs on Android.
        act_symmetric: None means asymmetric (scale + zero point per row, XNNPACK's qd8) for
            per_token_dynamic and symmetric for the static schemes (what TensorRT can run).
        wads_iters / wads_lr: the alpha search (Adam on log alpha, straight-through rounding).
        wads_max_rows: calibration rows per search step (all rows when there are fewer).
        smooth_migration: SmoothQuant's migration strength (0.5 in METHODS §1.5).
        fc2: 'skip' leaves fc2 (after GELU, nothing to fold into) unscaled; 'explicit' gives it an
            `input_scale` divisor that the backend executes as one extra multiply.
    """

    method: str = "wads"
    act_scheme: Optional[str] = None
    act_symmetric: Optional[bool] = None
    w_bits: int = 8
    a_bits: int = 8
    wads_iters: int = 300
    wads_lr: float = 1e-2
    wads_max_rows: int = 4096
    smooth_migration: float = 0.5
    fc2: str = "skip"
    batch_size: int = 32
    progress: bool = True
    seed: int = 0
    version: int = 1

    def __post_init__(self):
        if self.method not in METHODS:
            raise DeployError(f"unknown quantization method {self.method!r}; choose one of {', '.join(METHODS)}.")
        if self.act_scheme is None:
            self.act_scheme = DEFAULT_ACT_SCHEME[self.method]
        if self.act_scheme not in ACT_SCHEMES or self.act_scheme == "none":
            raise DeployError(f"act_scheme must be one of {ACT_SCHEMES[1:]}, got {self.act_scheme!r}.")
        if self.act_symmetric is None:
            self.act_symmetric = self.act_scheme != "per_token_dynamic"
        if not self.act_symmetric and self.act_scheme != "per_token_dynamic":
            raise DeployError("asymmetric activations are only supported with act_scheme='per_token_dynamic' "
                              "(static scales must be symmetric for TensorRT).")
        if not (2 <= self.w_bits <= 8 and 2 <= self.a_bits <= 8):
            raise DeployError(f"w_bits/a_bits must be in 2..8, got {self.w_bits}/{self.a_bits}.")
        if self.fc2 not in FC2_MODES:
            raise DeployError(f"fc2 must be one of {FC2_MODES}, got {self.fc2!r}.")
        if self.wads_iters < 0 or self.wads_lr <= 0 or self.wads_max_rows <= 0:
            raise DeployError("wads_iters must be >= 0, wads_lr and wads_max_rows > 0.")
        if not 0.0 <= self.smooth_migration <= 1.0:
            raise DeployError(f"smooth_migration must be in [0, 1], got {self.smooth_migration}.")

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d.pop("progress")
        return d
