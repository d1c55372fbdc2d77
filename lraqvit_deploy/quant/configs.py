"""INT8 post-training quantization configs: one dataclass per method, the type says which (torchao style).

Methods (LRA-QViT §3.3 and the baselines of its Table 2), by CLI name:
  * naive        `NaiveConfig`        per-channel weights, per-tensor static activations (NaivePTQ)
  * smoothquant  `SmoothQuantConfig`  alpha = max|X|^m / max|W|^(1-m), folded, then per-tensor
  * qads         `QADSConfig`         alpha searched on the output error alone (Eq. 12), folded; per-token
  * repq         `RepQConfig`         RepQ-ViT's LayerNorm reparameterisation (per-channel -> per-tensor)
  * per-token    `PerTokenConfig`     per-channel weights, per-token activations
  * wads         `WADSConfig`         per-token + weight-aware distribution scaling (Eq. 14)

`quant_config(name, **fields)` builds one from its CLI name. Every config has `.method` (that name)
and `to_dict()` (the artifact manifest's `quantization.config`, keyed as since version 1).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, Optional, Type

from ..errors import DeployError
from ..layers.quant_linear import ACT_SCHEMES

FC2_MODES = ("skip", "explicit")
MAX_SEARCH_ITERS = 1_000_000  # alpha search steps per layer


@dataclass
class BaseQuantConfig:
    """Settings every method shares (mutable: `__post_init__` resolves the defaults).

    Args:
        act_scheme: 'per_tensor_static', 'per_token_static' or 'per_token_dynamic'; None picks the
            method's own (`default_act_scheme`). per_token_dynamic is what XNNPACK runs on Android.
        act_symmetric: None means asymmetric (scale + zero point per row, XNNPACK's qd8) for
            per_token_dynamic and symmetric for the static schemes (what TensorRT can run).
        w_bits / a_bits: weight / activation bits, 2..8 (XNNPACK runs w_bits 8 and 4, TensorRT 8).
        w_group_size: None: one weight scale per output channel; 32, 64, 128...: one per block of that
            many input columns (blockwise, 4-bit on XNNPACK); it must divide every layer's in_features.
        w_mse_clip: choose each weight row's (block's) clip ratio to minimise the rounding error
            instead of max |w| (round-to-nearest, the default).
        batch_size: calibration batch; progress: show progress bars (the alpha searches count layers,
            with a rate); seed: the alpha searches' row sampling.
    """

    method: ClassVar[str] = ""  # the CLI name
    default_act_scheme: ClassVar[str] = "per_tensor_static"
    _manifest_keys: ClassVar[Dict[str, str]] = {}  # field -> its key in to_dict() (kept from version 1)

    act_scheme: Optional[str] = None
    act_symmetric: Optional[bool] = None
    w_bits: int = 8
    a_bits: int = 8
    w_group_size: Optional[int] = None
    w_mse_clip: bool = False
    batch_size: int = 32
    progress: bool = True
    seed: int = 0
    version: int = 1

    def __post_init__(self):
        if self.act_scheme is None:
            self.act_scheme = self.default_act_scheme
        if self.act_scheme not in ACT_SCHEMES or self.act_scheme == "none":
            raise DeployError(f"act_scheme must be one of {ACT_SCHEMES[1:]}, got {self.act_scheme!r}.")
        if self.act_symmetric is None:
            self.act_symmetric = self.act_scheme != "per_token_dynamic"
        if not self.act_symmetric and self.act_scheme != "per_token_dynamic":
            raise DeployError("asymmetric activations are only supported with act_scheme='per_token_dynamic' "
                              "(static scales must be symmetric for TensorRT).")
        if not (2 <= self.w_bits <= 8 and 2 <= self.a_bits <= 8):
            raise DeployError(f"w_bits/a_bits must be in 2..8, got {self.w_bits}/{self.a_bits}.")
        if self.batch_size < 1:
            raise DeployError(f"batch_size must be >= 1, got {self.batch_size}.")
        if self.w_group_size is not None and (isinstance(self.w_group_size, bool) or not isinstance(
                self.w_group_size, int) or not 1 <= self.w_group_size <= 65_536):
            raise DeployError(f"w_group_size must be a whole number of input columns per weight scale (e.g. 32), "
                              f"or None for one scale per output channel; got {self.w_group_size!r}.")
        if not isinstance(self.w_mse_clip, bool):
            raise DeployError(f"w_mse_clip must be true or false, got {self.w_mse_clip!r}.")

    def to_dict(self) -> Dict[str, Any]:
        d = {"method": self.method}
        for f in dataclasses.fields(self):
            if f.name in ("w_group_size", "w_mse_clip") and not getattr(self, f.name):
                continue  # absent unless set: manifests of per-channel INT8 keep their version-1 keys
            if f.name != "progress":
                d[self._manifest_keys.get(f.name, f.name)] = getattr(self, f.name)
        return d


def _check_fc2(fc2: str) -> None:
    if fc2 not in FC2_MODES:
        raise DeployError(f"fc2 must be one of {FC2_MODES}, got {fc2!r}: 'skip' leaves fc2 unscaled, 'explicit' "
                          "gives it an input_scale multiply.")


@dataclass
class NaiveConfig(BaseQuantConfig):
    """NaivePTQ: per-channel weights, per-tensor static activations, no channel scales."""

    method: ClassVar[str] = "naive"


@dataclass
class PerTokenConfig(BaseQuantConfig):
    """Per-channel weights, per-token activations (LRA-QViT's first step), no channel scales."""

    method: ClassVar[str] = "per-token"
    default_act_scheme: ClassVar[str] = "per_token_dynamic"


@dataclass
class RepQConfig(BaseQuantConfig):
    """RepQ-ViT: the post-LayerNorm per-channel ranges reparameterised into the LayerNorm (qkv, fc1)."""

    method: ClassVar[str] = "repq"


@dataclass
class SmoothQuantConfig(BaseQuantConfig):
    """SmoothQuant channel scales, folded.

    Args:
        migration: m in alpha = max|X|^m / max|W|^(1-m) (0.5 in METHODS §1.5); manifest key `smooth_migration`.
        fc2: 'skip' leaves fc2 (after GELU, nothing to fold into) unscaled; 'explicit' gives it an
            `input_scale` divisor that the backend executes as one extra multiply.
    """

    method: ClassVar[str] = "smoothquant"
    _manifest_keys: ClassVar[Dict[str, str]] = {"migration": "smooth_migration"}

    migration: float = 0.5
    fc2: str = "skip"

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.migration <= 1.0:
            raise DeployError(f"migration must be in [0, 1] (0.5 splits the range evenly), got {self.migration}.")
        _check_fc2(self.fc2)


@dataclass
class AlphaSearchConfig(BaseQuantConfig):
    """A per-channel alpha searched by Adam on log alpha with straight-through rounding (QADS, WADS).

    Args:
        wads_iters / wads_lr: search steps per layer and learning rate.
        wads_max_rows: calibration rows (tokens) per search step (all rows when there are fewer);
            only those rows are quantized, which gives the same numbers as quantizing all of them
            (per-token scales are per row, static ones come from the whole tensor's max, computed
            once).
        wads_sampling: "fixed" (default): one seeded subset of `wads_max_rows` rows per layer, the
            same at every step, so the objective is deterministic and the best step can be kept;
            "fresh": a new subset every step (an unbiased but noisy gradient; the average of the
            second half of the steps is a candidate). Either way the final alpha is chosen on ALL
            rows among the candidates and alpha = 1.
        wads_weight_term: WADS' second term: "literal" (Eq. 14 as printed, ||Q(aW) - W||^2, which is
            about ||(a - 1) W||^2 and pulls alpha back to 1) or "scaled" (||Q(aW)/a - W||^2, the
            quantization error of the weight the folded layer runs). QADS has no weight term.
        wads_normalize: both terms as relative errors (output / ||X W^T||^2, weight / ||W||^2), so
            the balance does not shift with token count and calibration size.
        wads_patience: stop a layer's search after this many steps without a better objective
            (fixed rows only; 0: always `wads_iters` steps).
        fc2: as `SmoothQuantConfig.fc2`.

    Defaults (100 steps x 1024 fixed rows, lr 0.01) were chosen beside the former 300-step search
    (4096 fresh rows, lr 0.01) on the test bed by the Eq. 14 objective over all calibration rows
    and top-1 on held-out TRAINING images (`benchmarks/results/wads_fast_vs_slow.md`: fresh rows
    and lr 0.03 searched worse); the search of DeiT-S at 224 px takes under 2 minutes on 2 cores
    (`benchmarks/wads_speed.py`).
    """

    default_act_scheme: ClassVar[str] = "per_token_dynamic"

    wads_iters: int = 100
    wads_lr: float = 1e-2
    wads_max_rows: int = 1024
    wads_sampling: str = "fixed"
    wads_weight_term: str = "literal"
    wads_normalize: bool = False
    wads_patience: int = 20
    fc2: str = "skip"

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.wads_iters, bool) or not isinstance(self.wads_iters, int) \
                or not 0 <= self.wads_iters <= MAX_SEARCH_ITERS:
            raise DeployError(f"wads_iters must be >= 0 and <= {MAX_SEARCH_ITERS:,} (--wads-iters; 0 keeps "
                              f"alpha = 1), got {self.wads_iters!r}.")
        if not math.isfinite(self.wads_lr) or self.wads_lr <= 0 or self.wads_max_rows <= 0:
            raise DeployError(f"wads_lr and wads_max_rows must be > 0, got {self.wads_lr} and {self.wads_max_rows}.")
        if self.wads_weight_term not in ("literal", "scaled"):
            raise DeployError(f"wads_weight_term must be 'literal' (Eq. 14 as printed) or 'scaled' (the error of "
                              f"Q(aW)/a), got {self.wads_weight_term!r}.")
        if isinstance(self.wads_patience, bool) or not isinstance(self.wads_patience, int) or \
                not 0 <= self.wads_patience <= 1_000_000:
            raise DeployError(f"wads_patience must be a whole number >= 0 (0: always run wads_iters steps), "
                              f"got {self.wads_patience!r}.")
        if not isinstance(self.wads_normalize, bool):
            raise DeployError(f"wads_normalize must be true or false, got {self.wads_normalize!r}.")
        if self.wads_sampling not in ("fixed", "fresh"):
            raise DeployError(f"wads_sampling must be 'fixed' or 'fresh', got {self.wads_sampling!r}.")
        _check_fc2(self.fc2)


@dataclass
class QADSConfig(AlphaSearchConfig):
    """QADS: alpha minimising the output error alone (Eq. 12), folded; per-token activations."""

    method: ClassVar[str] = "qads"


@dataclass
class WADSConfig(AlphaSearchConfig):
    """WADS: alpha minimising Eq. 14, only for layers whose weight error is below the mean; per-token activations."""

    method: ClassVar[str] = "wads"


QUANT_METHODS: Dict[str, Type[BaseQuantConfig]] = {
    c.method: c for c in (NaiveConfig, SmoothQuantConfig, QADSConfig, RepQConfig, PerTokenConfig, WADSConfig)}
METHODS = tuple(QUANT_METHODS)
DEFAULT_ACT_SCHEME: Dict[str, str] = {name: c.default_act_scheme for name, c in QUANT_METHODS.items()}


def _config_class(name: str) -> Type[BaseQuantConfig]:
    try:
        return QUANT_METHODS[name]
    except (KeyError, TypeError):
        raise DeployError(f"unknown quantization method {name!r}; choose one of {', '.join(METHODS)}.") from None


def _field_names(cls: Type[BaseQuantConfig]) -> Dict[str, str]:
    """{accepted keyword: field}: the fields, and their manifest keys as aliases."""
    names = {f.name: f.name for f in dataclasses.fields(cls)}
    names.update({key: f for f, key in cls._manifest_keys.items()})
    return names


def quant_config(name: str, **fields: Any) -> BaseQuantConfig:
    """The config of CLI method `name` ('naive', 'smoothquant', 'qads', 'repq', 'per-token', 'wads').

    Accepts the method's own fields and the shared ones (and manifest keys such as `smooth_migration`,
    so `quant_config(**d)` rebuilds a `to_dict()`); a field of another method is a DeployError.

    Example:
        >>> cfg = quant_config("wads", wads_iters=100, progress=False)
        >>> summary = quantize_(model, cfg, calibration_batch(train_set, 32))
    """
    cls = _config_class(name)
    accepted = _field_names(cls)
    wrong = [k for k in fields if k not in accepted]
    if wrong:
        owners = sorted(m for m, c in QUANT_METHODS.items() if wrong[0] in _field_names(c))
        where = f"it is an option of {', '.join(owners)}" if owners else "no method has it"
        raise DeployError(f"{wrong[0]!r} does not apply to quantization method {name!r} ({where}); "
                          f"{name} takes {', '.join(f.name for f in dataclasses.fields(cls))}.")
    return cls(**{accepted[k]: v for k, v in fields.items()})


def QuantConfig(method: str = "wads", **fields: Any) -> BaseQuantConfig:  # noqa: N802 - the pre-registry class name
    """The former single config class, kept as a constructor: `QuantConfig(method="naive", ...)`.

    Like before, it takes any of the former fields for any method and ignores those that do not
    apply (e.g. `wads_iters` for naive); `quant_config` refuses them instead.
    """
    cls = _config_class(method)
    accepted = _field_names(cls)
    legacy = _field_names(WADSConfig).keys() | _field_names(SmoothQuantConfig).keys()
    unknown = sorted(set(fields) - legacy)
    if unknown:
        raise DeployError(f"unknown quantization option(s) {unknown}; see quant_config({method!r}, ...).")
    return cls(**{accepted[k]: v for k, v in fields.items() if k in accepted})


__all__ = ["BaseQuantConfig", "AlphaSearchConfig", "NaiveConfig", "PerTokenConfig", "RepQConfig", "SmoothQuantConfig", "QADSConfig",
           "WADSConfig", "QUANT_METHODS", "METHODS", "DEFAULT_ACT_SCHEME", "FC2_MODES", "quant_config",
           "QuantConfig"]
