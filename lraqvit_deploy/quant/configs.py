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
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, Optional, Type

from ..errors import DeployError
from ..layers.quant_linear import ACT_SCHEMES
from ..options import MAX_IMAGES, MAX_SEED, OptionError, Options, option

FC2_MODES = ("skip", "explicit")
MAX_SEARCH_ITERS = 1_000_000  # alpha search steps per layer
CLI_ACT_SCHEMES = {"per-tensor": "per_tensor_static", "per-token-static": "per_token_static",
                   "per-token-dynamic": "per_token_dynamic"}  # --act-scheme's spellings


def _fc2_option() -> Any:
    return option("skip", "fc2 follows GELU, so its alpha cannot be folded: skip it, or keep an explicit multiply "
                          "(one extra multiply in the backend)", choices=FC2_MODES, flag="--wads-fc2")


@dataclass(frozen=True)
class BaseQuantConfig(Options):
    """Settings every method shares (frozen; `validate` resolves the defaults that depend on the method).

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

    act_scheme: Optional[str] = option(
        None, "activation quantization; default: the method's own (per-token-dynamic, as XNNPACK runs, for "
              "per-token/wads/qads; per-tensor for naive/smoothquant/repq)", choices=ACT_SCHEMES[1:],
        cli_choices=CLI_ACT_SCHEMES)
    act_symmetric: Optional[bool] = option(None, "symmetric activations (default: asymmetric for "
                                                 "per_token_dynamic, else symmetric)", cli=False)
    w_bits: int = option(8, "weight bits; 4 runs on Android (XNNPACK qc4w / qb4w) with per-token-dynamic "
                            "activations, not on the Jetson", min=2, max=8, cli_choices=(8, 4))
    a_bits: int = option(8, "activation bits", min=2, max=8, cli=False)
    w_group_size: Optional[int] = option(
        None, "4-bit blockwise weights: one scale per G input columns (default: one per output channel)", min=1,
        max=65_536, cli_choices=(32, 64, 128), metavar="G")
    w_mse_clip: bool = option(False, "clip each weight row (block) to minimise the rounding error", cli=False)
    batch_size: int = option(32, "calibration batch", min=1, max=MAX_IMAGES, cli=False)
    progress: bool = option(True, "progress bars", cli=False)
    seed: int = option(0, "the alpha searches' row sampling", min=0, max=MAX_SEED, cli=False)
    version: int = option(1, "config format version", cli=False)

    def validate(self) -> None:
        if self.act_scheme is None:
            object.__setattr__(self, "act_scheme", self.default_act_scheme)
        if self.act_symmetric is None:
            object.__setattr__(self, "act_symmetric", self.act_scheme != "per_token_dynamic")
        if not self.act_symmetric and self.act_scheme != "per_token_dynamic":
            raise self.error("act_symmetric", "act_symmetric = False: asymmetric activations are only supported with "
                                              "act_scheme = 'per_token_dynamic' (static scales must be symmetric for "
                                              "TensorRT).", "act_scheme")

    def to_dict(self) -> Dict[str, Any]:
        d = {"method": self.method}
        for f in dataclasses.fields(self):
            if f.name in ("w_group_size", "w_mse_clip") and not getattr(self, f.name):
                continue  # absent unless set: manifests of per-channel INT8 keep their version-1 keys
            if f.name != "progress":
                d[self._manifest_keys.get(f.name, f.name)] = getattr(self, f.name)
        return d


@dataclass(frozen=True)
class NaiveConfig(BaseQuantConfig):
    """NaivePTQ: per-channel weights, per-tensor static activations, no channel scales."""

    method: ClassVar[str] = "naive"


@dataclass(frozen=True)
class PerTokenConfig(BaseQuantConfig):
    """Per-channel weights, per-token activations (LRA-QViT's first step), no channel scales."""

    method: ClassVar[str] = "per-token"
    default_act_scheme: ClassVar[str] = "per_token_dynamic"


@dataclass(frozen=True)
class RepQConfig(BaseQuantConfig):
    """RepQ-ViT: the post-LayerNorm per-channel ranges reparameterised into the LayerNorm (qkv, fc1)."""

    method: ClassVar[str] = "repq"


@dataclass(frozen=True)
class SmoothQuantConfig(BaseQuantConfig):
    """SmoothQuant channel scales, folded.

    Args:
        migration: m in alpha = max|X|^m / max|W|^(1-m) (0.5 in METHODS §1.5); manifest key `smooth_migration`.
        fc2: 'skip' leaves fc2 (after GELU, nothing to fold into) unscaled; 'explicit' gives it an
            `input_scale` divisor that the backend executes as one extra multiply.
    """

    method: ClassVar[str] = "smoothquant"
    _manifest_keys: ClassVar[Dict[str, str]] = {"migration": "smooth_migration"}

    migration: float = option(0.5, "m in alpha = max|X|^m / max|W|^(1-m) (0.5 splits the range evenly)", min=0,
                              max=1, cli=False)
    fc2: str = _fc2_option()


@dataclass(frozen=True)
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

    wads_iters: int = option(100, "alpha search steps per layer (wads/qads; 0 keeps alpha = 1)", min=0,
                             max=MAX_SEARCH_ITERS, metavar="N")
    wads_lr: float = option(1e-2, "alpha search learning rate", min=0, min_exclusive=True, cli=False)
    wads_max_rows: int = option(1024, "calibration rows per search step", min=1, cli=False)
    wads_sampling: str = option("fixed", "rows per step: one fixed seeded subset, or a fresh one each step",
                                choices=("fixed", "fresh"), cli=False)
    wads_weight_term: str = option("literal", "WADS' weight term: literal (Eq. 14 as printed) or scaled (the error "
                                              "of Q(aW)/a)", choices=("literal", "scaled"), cli=False)
    wads_normalize: bool = option(False, "both terms as relative errors", cli=False)
    wads_patience: int = option(20, "steps without a better objective before a layer's search stops (0: always "
                                    "wads_iters steps)", min=0, max=1_000_000, cli=False)
    fc2: str = _fc2_option()


@dataclass(frozen=True)
class QADSConfig(AlphaSearchConfig):
    """QADS: alpha minimising the output error alone (Eq. 12), folded; per-token activations."""

    method: ClassVar[str] = "qads"


@dataclass(frozen=True)
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
        owner = QUANT_METHODS[owners[0]] if owners else cls  # where the field is declared: the CLI names its flag
        raise OptionError(owner, wrong[0], f"{wrong[0]!r} does not apply to quantization method {name!r} ({where}); "
                                           f"{name} takes {', '.join(f.name for f in dataclasses.fields(cls))}.",
                          prose=True)
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
