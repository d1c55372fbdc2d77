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
from .options import MAX_IMAGES, MAX_SEED, Options, option  # noqa: F401 - MAX_SEED: the recipe's one seed bound

ALLOC_METHODS = ("uniform", "energy", "mlorq")
MLORQ_TARGETS = ("sim", "executorch", "xnnpack", "tensorrt", "onnx")
TARGETS = ("android", "jetson")


@dataclass(frozen=True)
class AllocationConfig(Options):
    """How ranks (and for MLoRQ weight bits) are spread over the encoder Linears (METHODS.md §2-§3)."""

    method: str = option("uniform", "uniform: one rank ratio everywhere (LRA-QViT); energy: greedy mixed rank on "
                                     "the (activation-weighted) SVD energy (Azizi et al. Alg. 1); mlorq: rank and "
                                     "bit-width per layer by an ILP under memory_budget_mb", choices=ALLOC_METHODS,
                         flag="--rank-alloc")
    activation_aware: bool = option(True, "whiten W by the calibration activations before ranking it (energy "
                                          "allocation; otherwise its plain SVD)")
    calib_images: int = option(128, "images whose activations calibrate the allocation and the activation-aware "
                                    "SVD", min=1, max=MAX_IMAGES, flag="--alloc-calib-images", metavar="N")
    size_budget_mb: Optional[float] = option(
        None, "the built program's size for `target` in MB (1e6 bytes), e.g. 10.8 (12.5% of the test bed's FP32 .pte): "
              "MLoRQ picks every layer's rank and weight form (android: int8/int4, per channel or blockwise "
              "32/64/128; jetson: int8) to fit it; implies `method` mlorq",
        min=0, min_exclusive=True, max=1e9, metavar="MB")
    target: Optional[str] = option(None, "the deployment target the plan is for (its weight forms and program "
                                         "size): android or jetson", choices=TARGETS, flag=("--target", "-t"))
    memory_budget_mb: Optional[float] = option(
        None, "mlorq in simulation: weight memory of the whole model in MB (1e6 bytes) at any of mlorq_bits (2-8); "
              "the result may not build for any target (use size_budget_mb for that)",
        min=0, min_exclusive=True, max=1e9, metavar="MB")
    mlorq_bits: Tuple[int, ...] = option((2, 3, 4, 6, 8), "mlorq: dense weight bit-widths it may pick")
    mlorq_factor_bits: Tuple[int, ...] = option((3, 4, 6, 8), "mlorq: bit-widths of low-rank factors it may pick")
    mlorq_target: str = option("sim", "mlorq: refuse an allocation this target cannot run (sim: any bits)",
                               choices=MLORQ_TARGETS)
    latency_budget_ms: Optional[float] = option(
        None, "the predicted latency of the built `target` program in ms (one image, batch 1), priced by a cost table "
              "of `deploy profile` (cost_table): MLoRQ picks every layer's rank and weight form to fit it, alone or "
              "with size_budget_mb; implies `method` mlorq", min=0, min_exclusive=True, max=1e9, metavar="MS")
    speedup: Optional[float] = option(
        None, "a latency budget as a speedup F over the dense FP32 model predicted on the same cost table (budget = "
              "its latency / F), instead of latency_budget_ms", min=0, min_exclusive=True, max=1e6, metavar="F")
    cost_table: Optional[str] = option(
        None, "the cost table (a `deploy profile --out` JSON, or a Jetson's results/cost_table.json) that prices a "
              "latency budget; default: the table cached by `deploy profile` for this host at latency_threads threads "
              "(target jetson: required)", metavar="TABLE.json")
    latency_threads: int = option(1, "the thread count whose cached cost table prices a latency budget (a given "
                                     "cost_table has its own)", min=1, max=4096, metavar="N")

    def validate(self) -> None:
        for name in ("mlorq_bits", "mlorq_factor_bits"):
            value = getattr(self, name)
            try:
                bits = tuple(sorted({int(b) for b in value}))
            except (TypeError, ValueError):
                raise self.error(name, f"{name} = {value!r}: expected bit-widths, e.g. (4, 8).") from None
            if not bits or any(b < 2 or b > 8 for b in bits):
                raise self.error(name, f"{name} = {value!r}: bit-widths must lie within 2..8, e.g. (4, 8).")
            object.__setattr__(self, name, bits)
        if self.size_budget_mb is not None:
            if self.method == "energy":
                raise self.error("size_budget_mb", "size_budget_mb is planned by MLoRQ (rank and weight form per "
                                                   "layer); method = 'energy' takes a parameter reduction instead. "
                                                   "Drop one of them.", "method")
            object.__setattr__(self, "method", "mlorq")
            if self.target is None:
                raise self.error("size_budget_mb", "size_budget_mb is the size of a built program: give target = "
                                                   "android or jetson.", "target")
            if self.memory_budget_mb is not None:
                raise self.error("size_budget_mb", "give either size_budget_mb (the built program, for its target) or "
                                                   "memory_budget_mb (simulated weight memory), not both.",
                                 "memory_budget_mb")
        if self.latency_budget_ms is not None and self.speedup is not None:
            raise self.error("latency_budget_ms", "give either latency_budget_ms (ms) or speedup (over the dense FP32 "
                                                  "model on the cost table), not both.", "speedup")
        knob = "latency_budget_ms" if self.latency_budget_ms is not None else "speedup"
        if self.has_latency_budget:
            if self.method == "energy":
                raise self.error(knob, f"{knob} is planned by MLoRQ (rank and weight form per layer); method = "
                                       "'energy' takes a parameter reduction instead. Drop one of them.", "method")
            object.__setattr__(self, "method", "mlorq")
            if self.target is None:
                raise self.error(knob, f"{knob} is the latency of a built program: give target = android or jetson.",
                                 "target")
            if self.target == "jetson" and self.cost_table is None:
                raise self.error(knob, f"{knob} with target = 'jetson' is priced by the Jetson's own cost table: give "
                                       "cost_table, the JSON `python3 jetson/profile.py` writes into results/ on the "
                                       "device (in the folder `deploy profile --target jetson` writes).",
                                 "cost_table", "target")
            if self.memory_budget_mb is not None:
                raise self.error(knob, f"{knob} plans a built program; memory_budget_mb is a simulation at any bits: "
                                       "drop memory_budget_mb (size_budget_mb may join a latency budget).",
                                 "memory_budget_mb")
        elif self.cost_table is not None:
            raise self.error("cost_table", "cost_table prices a latency budget: add latency_budget_ms or speedup.",
                             "latency_budget_ms", "speedup")
        if self.method == "mlorq" and self.memory_budget_mb is None and self.size_budget_mb is None \
                and not self.has_latency_budget:
            raise self.error("method", "method = 'mlorq' needs a budget: size_budget_mb and target (size_budget_mb "
                                       "= MB, target = android), or memory_budget_mb for a simulation at any bits.",
                             "size_budget_mb", "target", "memory_budget_mb")

    @property
    def has_latency_budget(self) -> bool:
        """Whether the plan is under a latency budget (latency_budget_ms or speedup)."""
        return self.latency_budget_ms is not None or self.speedup is not None

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
class Recipe(Options):
    """The compression recipe: allocation -> low rank -> distillation -> merge -> quantization.

    Args:
        low_rank: `LowRankConfig` (LRA or RB-LRA, ranks or a parameter reduction); None: stay dense.
        allocation: how ranks are chosen (`AllocationConfig`; uniform by default).
        distill: `DistillConfig` for block-level KD after the low-rank step; None: no distillation.
        quant: an INT8 config from `quant_config(name)`; None: FP32.
        quant_calib_images: training images that calibrate the INT8 scales.
    """

    low_rank: Any = option(None, "low-rank config (LowRankConfig)", cli=False)
    allocation: AllocationConfig = option(AllocationConfig(), "rank allocation (AllocationConfig)", cli=False)
    distill: Any = option(None, "distillation config (DistillConfig)", cli=False)
    quant: Any = option(None, "quantization config (quant_config(name))", flag="--quant",
                        cli=False)  # the CLI's --quant names the method: quant_config(name)
    quant_calib_images: int = option(32, "calibration images (seeded subset of the training split)", min=1,
                                     max=MAX_IMAGES, flag="--calib-images", metavar="N")
    version: int = option(1, "recipe format version", cli=False)

    @classmethod
    def parts(cls) -> Dict[str, type]:
        from .lowrank import DistillConfig, LowRankConfig
        from .quant import BaseQuantConfig

        return {"low_rank": LowRankConfig, "allocation": AllocationConfig, "distill": DistillConfig,
                "quant": BaseQuantConfig}

    def validate(self) -> None:
        for name, cls in self.parts().items():
            value = getattr(self, name)
            if not (isinstance(value, cls) or (value is None and name != "allocation")):
                example = "quant_config('wads')" if name == "quant" else cls.__name__ + "(...)"
                raise self.error(name, f"Recipe.{name} must be a {cls.__name__}, e.g. {example}; got "
                                       f"{type(value).__name__}.")
        lr, alloc, kd = self.low_rank, self.allocation, self.distill
        if lr is None and kd is not None and alloc.method != "mlorq":
            raise self.error("low_rank.method", "distillation trains the low-rank factors: give a low-rank config "
                                                "(low_rank.method lra|rb-lra) or drop the distillation settings.")
        if kd is not None and kd.branch_lr is not None and lr is not None and lr.method != "rb-lra":
            raise self.error("distill.branch_lr", f"distill.branch_lr sets the lr of RB-LRA's branch; "
                                                  f"low_rank.method {lr.method} has no branch. Use low_rank.method "
                                                  "rb-lra, or drop distill.branch_lr.", "low_rank.method")
        if lr is None and alloc.method == "energy":
            raise self.error("allocation.method", "rank allocation energy needs a low-rank method and a parameter "
                                                  "reduction (low_rank.method lra|rb-lra, low_rank.param_reduction "
                                                  "F).", "low_rank.method", "low_rank.param_reduction")
        if alloc.method == "energy" and lr is not None and lr.param_reduction is None:
            raise self.error("allocation.method", "rank allocation energy chooses the ranks itself: give a parameter "
                                                  "reduction (low_rank.param_reduction), not per-layer ranks.",
                             "low_rank.param_reduction")
        if alloc.method == "mlorq" and lr is not None:
            raise self.error("allocation.method", "rank allocation mlorq chooses every layer's rank and weight bits "
                                                  "itself under its budget; drop low_rank.param_reduction / ranks "
                                                  "(with allocation.size_budget_mb, low_rank.method lra alone asks "
                                                  "for distillation of the planned ranks).",
                             "low_rank.param_reduction", "allocation.size_budget_mb", "low_rank.method")
        if alloc.method == "mlorq" and self.quant is not None:
            raise self.error("allocation.method", "rank allocation mlorq already chooses weight bits; drop quant.",
                             "quant")

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
                   **{k: data[k] for k in ("quant_calib_images", "version") if k in data})
