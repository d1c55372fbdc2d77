"""`Recipe`: everything `lraqvit_deploy.compress` does to a model, as one frozen value.

A recipe composes the configs of the steps (each validated on construction):

    allocation (rank_alloc)  ->  low-rank (compress_)  ->  distillation (distill_)  ->  merge
        ->  INT8 quantization (quantize_)

Any part may be absent: `Recipe(quant=quant_config("wads"))` only quantizes (e.g. an artifact
that is already low-rank), `Recipe(low_rank=LowRankConfig("lra", param_reduction=0.3))` compresses
without distillation, `Recipe.paper()` is LRA-QViT's RB-LRA + block KD + WADS.

    >>> from lraqvit_deploy import Recipe, LowRankConfig, DistillConfig, quant_config
    >>> recipe = Recipe(low_rank=LowRankConfig("rb-lra", param_reduction=0.45, svd="auto"),
    ...                 distill=DistillConfig(), quant=quant_config("wads"))
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from .errors import DeployError
from .options import Options, option

ALLOC_METHODS = ("uniform", "energy", "mlorq")
MAX_IMAGES = 1_000_000  # calibration images
MAX_SEED = 2 ** 31 - 1
MAX_RANK_MULTIPLE = 65_536
MAX_STEPS = 10 ** 9  # distillation steps
MAX_WORKERS = 256  # data-loading processes
MLORQ_TARGETS = ("sim", "executorch", "xnnpack", "tensorrt", "onnx")
TARGETS = ("android", "jetson")


@dataclass(frozen=True)
class AllocationConfig(Options):
    """How ranks (and for MLoRQ weight bits) are spread over the encoder Linears (METHODS.md §2-§3)."""

    method: str = option("uniform", "uniform: one rank ratio everywhere (LRA-QViT); energy: greedy mixed rank on "
                                     "the (activation-weighted) SVD energy (Azizi et al. Alg. 1); mlorq: rank and "
                                     "bit-width per layer by an ILP under memory_budget_mb", choices=ALLOC_METHODS)
    activation_aware: bool = option(True, "energy: rank by W whitened by the calibration activations")
    calib_images: int = option(128, "training images whose activations calibrate the allocation and the "
                                    "activation-aware SVD", min=1, max=1_000_000)
    size_budget_mb: Optional[float] = option(None, "the size of the built program for `target` in MB (1e6 bytes): "
                                                   "MLoRQ chooses each layer's rank and weight form (android: int8 / "
                                                   "int4 per channel or blockwise; jetson: int8) to fit it",
                                             min=0, min_exclusive=True, max=1e9)
    target: Optional[str] = option(None, "the deployment target the plan is for (its weight forms and program "
                                         "size): android or jetson", choices=TARGETS)
    memory_budget_mb: Optional[float] = option(None, "mlorq in simulation: weight memory of the whole model in MB "
                                                     "(1e6 bytes) at any bits (mlorq_bits); not a built program",
                                               min=0, min_exclusive=True, max=1e9)
    mlorq_bits: Tuple[int, ...] = option((2, 3, 4, 6, 8), "mlorq: dense weight bit-widths it may pick")
    mlorq_factor_bits: Tuple[int, ...] = option((3, 4, 6, 8), "mlorq: bit-widths of low-rank factors it may pick")
    mlorq_target: str = option("sim", "mlorq: refuse an allocation this target cannot run (sim: any bits)",
                               choices=MLORQ_TARGETS)

    def validate(self) -> None:
        for name in ("mlorq_bits", "mlorq_factor_bits"):
            bits = tuple(sorted({int(b) for b in getattr(self, name)}))
            if not bits or any(b < 2 or b > 8 for b in bits):
                raise DeployError(f"{name} = {getattr(self, name)!r}: bit-widths must lie within 2..8, e.g. (4, 8).")
            object.__setattr__(self, name, bits)
        if self.size_budget_mb is not None:
            if self.method == "energy":
                raise DeployError("size_budget_mb is planned by MLoRQ (rank and weight form per layer); rank "
                                  "allocation energy takes a parameter reduction instead. Drop one of them.")
            object.__setattr__(self, "method", "mlorq")
            if self.target is None:
                raise DeployError("size_budget_mb is the size of a built program: name its target (--target android "
                                  "or jetson).")
            if self.memory_budget_mb is not None:
                raise DeployError("give either size_budget_mb (the built program, for a target) or memory_budget_mb "
                                  "(simulated weight memory), not both.")
        if self.method == "mlorq" and self.memory_budget_mb is None and self.size_budget_mb is None:
            raise DeployError("rank allocation mlorq needs a budget: size_budget_mb with a target (--size-budget-mb MB "
                              "--target android), or memory_budget_mb for a simulation at any bits.")

    def target_bits(self) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
        """(dense bits, factor bits) restricted to what the target (or `mlorq_target`) runs."""
        from .rank_alloc.mlorq import TARGET_WEIGHT_BITS

        ok = TARGET_WEIGHT_BITS[self.target or self.mlorq_target]
        if ok is None:
            return self.mlorq_bits, self.mlorq_factor_bits
        dense = tuple(b for b in self.mlorq_bits if b in ok)
        factor = tuple(b for b in self.mlorq_factor_bits if b in ok)
        if not dense and not factor:
            raise DeployError(f"none of the requested bit-widths runs on {self.target or self.mlorq_target} "
                              f"(it runs {sorted(ok)}-bit weights).")
        return dense, factor


@dataclass(frozen=True)
class Recipe:
    """The compression recipe: allocation -> low rank -> distillation -> merge -> quantization.

    Args:
        low_rank: `LowRankConfig` (LRA or RB-LRA, ranks or a parameter reduction); None: stay dense.
        allocation: how ranks are chosen (`AllocationConfig`; uniform by default).
        distill: `DistillConfig` for block-level KD after the low-rank step; None: no distillation.
        quant: an INT8 config from `quant_config(name)`; None: FP32.
        quant_calib_images: training images that calibrate the INT8 scales.
    """

    low_rank: Any = None  # LowRankConfig
    allocation: AllocationConfig = AllocationConfig()
    distill: Any = None  # DistillConfig
    quant: Any = None  # a quantization config (lraqvit_deploy.quant)
    quant_calib_images: int = 32
    version: int = 1

    def __post_init__(self):
        from .lowrank import DistillConfig, LowRankConfig

        if self.low_rank is not None and not isinstance(self.low_rank, LowRankConfig):
            raise DeployError(f"Recipe.low_rank must be a LowRankConfig, got {type(self.low_rank).__name__}.")
        if not isinstance(self.allocation, AllocationConfig):
            raise DeployError(f"Recipe.allocation must be an AllocationConfig, got {type(self.allocation).__name__}.")
        if self.distill is not None and not isinstance(self.distill, DistillConfig):
            raise DeployError(f"Recipe.distill must be a DistillConfig, got {type(self.distill).__name__}.")
        if self.quant is not None and not hasattr(self.quant, "method"):
            raise DeployError("Recipe.quant must be a quantization config, e.g. quant_config('wads').")
        if isinstance(self.quant_calib_images, bool) or not isinstance(self.quant_calib_images, int) \
                or not 1 <= self.quant_calib_images <= MAX_IMAGES:
            raise DeployError(f"quant_calib_images = {self.quant_calib_images!r}: give a positive number of "
                              f"calibration images (--calib-images), e.g. 32 (at most {MAX_IMAGES:,}).")
        self._check_limits()
        if self.low_rank is None and self.distill is not None and self.allocation.method != "mlorq":
            raise DeployError("distillation trains the low-rank factors: give a low-rank config (--method lra|rb-lra) "
                              "or drop the distillation settings.")
        if self.distill is not None and self.distill.branch_lr is not None and self.low_rank is not None \
                and self.low_rank.method != "rb-lra":
            raise DeployError(f"--kd-branch-lr sets the lr of RB-LRA's branch; --method {self.low_rank.method} has "
                              "no branch. Use --method rb-lra, or drop --kd-branch-lr.")
        if self.low_rank is None and self.allocation.method == "energy":
            raise DeployError("rank allocation energy needs a low-rank method and a parameter reduction "
                              "(--method lra|rb-lra --param-reduction F).")
        if self.allocation.method == "energy" and self.low_rank is not None and self.low_rank.param_reduction is None:
            raise DeployError("rank allocation energy chooses the ranks itself: give a parameter reduction "
                              "(--param-reduction), not per-layer ranks.")
        if self.allocation.method == "mlorq" and self.low_rank is not None:
            raise DeployError("rank allocation mlorq chooses every layer's rank and weight bits itself under its budget; "
                              "drop --param-reduction / --ranks (with --size-budget-mb, --method lra alone asks for "
                              "distillation of the planned ranks).")
        if self.allocation.method == "mlorq" and self.quant is not None:
            raise DeployError("rank allocation mlorq already chooses weight bits; drop --quant.")

    def _check_limits(self) -> None:
        """Bounds the step configs do not check themselves (a huge count would only fail after hours)."""
        checks = []
        if self.low_rank is not None:
            checks += [("--seed", "low_rank.seed", self.low_rank.seed, 0, MAX_SEED),
                       ("--rank-multiple", "low_rank.rank_multiple", self.low_rank.rank_multiple, 1, MAX_RANK_MULTIPLE)]
        if self.distill is not None:
            checks += [("--kd-batch-size", "distill.batch_size", self.distill.batch_size, 1, MAX_IMAGES),
                       ("--kd-steps", "distill.steps", self.distill.steps, 0, MAX_STEPS),
                       ("--kd-warmup-steps", "distill.warmup_steps", self.distill.warmup_steps, 0, MAX_STEPS),
                       ("--kd-workers", "distill.num_workers", self.distill.num_workers, 0, MAX_WORKERS)]
        for flag, name, v, lo, hi in checks:
            if v is None and name in ("distill.steps", "distill.warmup_steps", "distill.num_workers"):
                continue
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise DeployError(f"{flag} {v!r}: expected a whole number in {lo}..{hi:,} ({name}).")

    @property
    def compresses(self) -> bool:
        """Whether the recipe changes the model's layers (a low-rank method, or MLoRQ's own allocation)."""
        return self.low_rank is not None or self.allocation.method == "mlorq"

    @property
    def empty(self) -> bool:
        return not self.compresses and self.quant is None

    @property
    def needs_train_data(self) -> bool:
        return self.distill is not None

    def with_quant(self, quant) -> "Recipe":
        return dataclasses.replace(self, quant=quant)

    def to_dict(self) -> Dict[str, Any]:
        return {"version": self.version,
                "low_rank": None if self.low_rank is None else self.low_rank.to_dict(),
                "allocation": self.allocation.to_dict(),
                "distill": None if self.distill is None else self.distill.to_dict(),
                "quant": None if self.quant is None else self.quant.to_dict(),
                "quant_calib_images": self.quant_calib_images}

    @classmethod
    def from_dict(cls, data: Dict[str, Any], where: str = "recipe") -> "Recipe":
        """The inverse of `to_dict` (also what TOML tables give): unknown keys are a clear error."""
        from .lowrank import DistillConfig, LowRankConfig
        from .quant import quant_config

        known = {"version", "low_rank", "allocation", "distill", "quant", "quant_calib_images"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DeployError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}.")

        def make(cls_, d, name):
            if d is None:
                return None
            fields = {f.name for f in dataclasses.fields(cls_)}
            bad = sorted(set(d) - fields)
            if bad:
                raise DeployError(f"{where}.{name}: unknown key(s) {bad}; known: {sorted(fields)}.")
            try:
                return cls_(**d)
            except TypeError as e:
                raise DeployError(f"{where}.{name}: {e}.") from None

        quant = data.get("quant")
        if quant is not None:
            quant = dict(quant)
            name = quant.pop("method", None)
            if name is None:
                raise DeployError(f"{where}.quant: name the method, e.g. method = \"wads\".")
            quant.pop("version", None)
            quant = quant_config(name, **quant)
        low_rank = data.get("low_rank")
        if low_rank is not None:
            low_rank = {k: tuple(v) if k == "targets" else v for k, v in low_rank.items()}
        alloc = data.get("allocation") or {}
        alloc = {k: tuple(v) if k in ("mlorq_bits", "mlorq_factor_bits") else v for k, v in alloc.items()}
        return cls(low_rank=make(LowRankConfig, low_rank, "low_rank"),
                   allocation=AllocationConfig.from_dict(alloc, f"{where}.allocation"),
                   distill=make(DistillConfig, data.get("distill"), "distill"), quant=quant,
                   quant_calib_images=data.get("quant_calib_images", 32), version=data.get("version", 1))
