"""Configs of the low-rank compression and its distillation: frozen, validated, JSON-serialisable."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

from ..errors import DeployError

METHODS = ("lra", "rb-lra")
SVD_KINDS = ("auto", "plain", "activation")  # auto: activation-aware when calibration images are given
INITS = ("wr", "zero", "random")
DEFAULT_TARGETS = ("qkv", "proj", "fc1", "fc2")


@dataclass(frozen=True)
class LowRankConfig:
    """Which Linears become rank-r pairs and how (LRA-QViT §3.1-3.3).

    Give either `param_reduction` (fraction of the WHOLE model's parameters to remove; every
    target layer loses the same fraction of its own parameters) or `ranks` ({module name: r},
    e.g. from `lraqvit_deploy.rank_alloc`); layers missing from `ranks` stay dense.
    """

    method: str = "rb-lra"  # "lra": plain truncated SVD; "rb-lra": SVD base + trainable branch
    param_reduction: Optional[float] = None
    ranks: Optional[Mapping[str, int]] = None
    rank_multiple: int = 1  # round ranks to a multiple of this (8/16 suits GEMM kernels)
    targets: Tuple[str, ...] = DEFAULT_TARGETS  # Linear attribute names inside encoder blocks
    include_patch_merging: bool = False  # Swin's downsample.reduction
    init: str = "wr"  # RB-LRA branch init: "wr" | "zero" | "random"
    init_std: Optional[float] = None  # random init std; None = RMS of the WR branch of that layer
    train_base: bool = False  # RB-LRA: also train the SVD base factors (paper: frozen)
    seed: int = 0  # random init
    svd: str = "plain"  # "activation": SVD of W whitened by calibration activations (needs calib images)
    version: int = 1

    def __post_init__(self):
        if self.svd not in SVD_KINDS:
            raise DeployError(f"svd must be one of {', '.join(SVD_KINDS)}, got {self.svd!r}.")
        if self.method not in METHODS:
            raise DeployError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}.")
        if (self.param_reduction is None) == (self.ranks is None):
            raise DeployError("give exactly one of param_reduction (e.g. 0.45) or ranks ({layer: rank}).")
        if self.param_reduction is not None and not 0.0 < self.param_reduction < 1.0:
            raise DeployError(f"--param-reduction is a fraction of the model's parameters in (0, 1), "
                              f"e.g. 0.45 for -45%; got {self.param_reduction}.")
        if self.ranks is not None:
            object.__setattr__(self, "ranks", {str(k): int(v) for k, v in dict(self.ranks).items()})
            if not self.ranks:
                raise DeployError("ranks is empty; name at least one layer.")
        import math

        for name, flag, lo, hi in (("rank_multiple", "--rank-multiple", 1, 1 << 16), ("seed", "--seed", 0, 2 ** 63 - 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise DeployError(f"{flag} {v!r}: expected a whole number in [{lo}, {hi}].")
        if self.ranks is not None and any(r < 1 for r in self.ranks.values()):
            bad = next(k for k, r in self.ranks.items() if r < 1)
            raise DeployError(f"ranks[{bad!r}] = {self.ranks[bad]}: a rank must be >= 1.")
        if self.init not in INITS:
            raise DeployError(f"--init must be one of {', '.join(INITS)}, got {self.init!r}.")
        if self.init_std is not None and (isinstance(self.init_std, bool) or not isinstance(self.init_std, (int, float))
                                          or not math.isfinite(self.init_std) or self.init_std <= 0):
            raise DeployError(f"init_std must be a finite positive number, got {self.init_std!r}.")
        object.__setattr__(self, "targets", tuple(self.targets))

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["targets"] = list(self.targets)
        return d


# Defaults chosen for the test bed on 2 CPU cores (a few minutes); scale steps/batch up on a GPU.
DEFAULT_KD_STEPS = 240
DEFAULT_KD_BATCH = 16
DEFAULT_KD_LR = 1e-3  # chosen on 10,000 held-out training images against the converged reference (kd_objective.md)
DEFAULT_KD_ALPHA = 0.0  # no CE term: hard labels pull a converged student away from its teacher (kd_objective.md)
DEFAULT_KD_WARMUP = 0.05  # fraction of the steps, when warmup_steps is not given
DEFAULT_KD_FEATURE_LOSS = "nmse"
DEFAULT_KD_TRAINABLE = "low_rank"
TRAINABLE = ("low_rank", "low_rank+norm", "all")
FEATURE_LOSSES = ("mse", "nmse")
AMP_MODES = ("auto", "bf16", "fp16", "off")  # auto: bf16 on CUDA GPUs that have it, else fp16 on CUDA, off on CPU


@dataclass(frozen=True)
class DistillConfig:
    """Block-level knowledge distillation (LRA-QViT §3.4): L = α CE + β Σ_l MSE(f_t^l(x_l), f_s^l(x_l)).

    The paper weights both terms (α = β = 1); the default here is α = 0, feature KD only: against a
    converged teacher the hard-label CE term cost accuracy at every lr tried, and without it a ~30x
    higher lr helps (benchmarks/results/kd_objective.md, chosen on held-out training images).

    `block_inputs="teacher"` feeds the teacher's block input x_l to both blocks (the paper's
    Eq. 10, one extra student pass); "student" compares the outputs of each model's own chain.
    `trainable="low_rank"` trains only the low-rank factors (RB-LRA: the branch, plus the base if
    `train_base`; LRA: up/down); "low_rank+norm" also the LayerNorm affines and every bias;
    "all" trains every parameter. `feature_loss="nmse"` divides each block's MSE by the mean
    square of that block's teacher output (a constant per block and batch, so each term keeps the
    paper's form): without it the deep blocks of DINOv2, whose features are ~10x larger, dominate.
    `branch_lr` gives RB-LRA's branch (`branch_up`, `branch_down`) its own peak lr, on the same
    warm-up + cosine schedule; every other trained parameter (the base with `train_base`) keeps
    `lr`. With a frozen base only the branch trains, so it equals setting `lr`.
    `amp` runs the teacher and student forwards under `torch.autocast` ("auto": bf16 on CUDA GPUs
    that support it, fp16 with a gradient scaler on older ones, off on the CPU); the loss stays FP32.
    `num_workers=None` picks the data-loading processes: 0 on the CPU, min(8, CPUs - 1) per GPU.
    A run stops on a NaN/inf loss and when its loss stays above 4x its running minimum for 10
    steps (`distill.loop.DIVERGENCE_FACTOR`, `DIVERGENCE_STEPS`); its last good checkpoint resumes
    with a lower `lr` / `branch_lr` (docs/compress.md, "Non-finite values and divergence").
    """

    steps: Optional[int] = None  # optimizer steps; default DEFAULT_KD_STEPS unless epochs is set
    epochs: Optional[float] = None
    batch_size: int = DEFAULT_KD_BATCH  # per process
    lr: float = DEFAULT_KD_LR
    branch_lr: Optional[float] = None  # RB-LRA branch factors' lr; None = lr (see the class docstring)
    weight_decay: float = 0.01
    alpha: float = DEFAULT_KD_ALPHA  # CE weight (the paper: 1; 0 here, see kd_objective.md)
    beta: float = 1.0  # block-MSE weight
    max_grad_norm: Optional[float] = 1.0
    warmup_steps: Optional[int] = None  # linear lr warm-up before the cosine decay; None: 5% of the steps
    feature_loss: str = DEFAULT_KD_FEATURE_LOSS  # "mse": the paper's; "nmse": each block's MSE / mean square of its teacher output
    block_inputs: str = "teacher"
    trainable: str = DEFAULT_KD_TRAINABLE
    checkpoint_every: int = 20  # steps between resumable checkpoints
    num_workers: Optional[int] = None  # None = auto: 0 on the CPU, min(8, CPUs - 1) on CUDA
    amp: str = "auto"  # mixed precision: "auto" | "bf16" | "fp16" | "off" (see the class docstring)
    seed: int = 0
    device: str = "auto"  # "auto" = the local CUDA device when present, else CPU
    version: int = 1

    def __post_init__(self):
        import math

        limits = {"epochs": (0, 1e6), "lr": (0, 10), "branch_lr": (0, 10), "weight_decay": (0, 10),
                  "alpha": (0, 1e6), "beta": (0, 1e6), "max_grad_norm": (0, 1e9)}  # finite, and within [lo, hi]
        flags = {"epochs": "--kd-epochs", "lr": "--kd-lr", "branch_lr": "--kd-branch-lr",
                 "weight_decay": "--kd-weight-decay", "alpha": "--kd-alpha", "beta": "--kd-beta",
                 "max_grad_norm": "max_grad_norm"}
        for name, (lo, hi) in limits.items():
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                                  or not lo <= v <= hi):
                raise DeployError(f"{flags[name]} {v!r}: expected a finite number in [{lo:g}, {hi:g}].")
        for name, flag in (("num_workers", "--kd-workers"), ("seed", "--seed"), ("batch_size", "--kd-batch-size")):
            v = getattr(self, name)
            if v is None and name == "num_workers":
                continue  # auto
            if isinstance(v, bool) or not isinstance(v, int) or v < (1 if name == "batch_size" else 0) or v > 1 << 31:
                raise DeployError(f"{flag} {v!r}: expected a whole number >= {1 if name == 'batch_size' else 0}"
                                  + (" (or none for auto)." if name == "num_workers" else "."))
        if self.amp not in AMP_MODES:
            raise DeployError(f"--kd-amp {self.amp!r}: expected one of {', '.join(AMP_MODES)}.")
        if self.amp == "fp16" and self.device == "cpu":
            raise DeployError("--kd-amp fp16 needs a CUDA device; on the CPU use --kd-amp bf16 or off.")
        if self.steps is not None and self.epochs is not None:
            raise DeployError("give --kd-steps or --kd-epochs, not both.")
        if self.steps is not None and self.steps < 0:
            raise DeployError(f"--kd-steps must be >= 0, got {self.steps}.")
        if self.epochs is not None and self.epochs <= 0:
            raise DeployError(f"--kd-epochs must be > 0, got {self.epochs}.")
        if self.batch_size < 1:
            raise DeployError(f"--kd-batch-size must be >= 1, got {self.batch_size}.")
        if self.lr <= 0:
            raise DeployError(f"--kd-lr must be > 0, got {self.lr}.")
        if self.alpha == 0 and self.beta == 0:
            raise DeployError("--kd-alpha and --kd-beta are both 0: the loss has no term to train (the CE weight "
                              f"defaults to {DEFAULT_KD_ALPHA:g}); for a CE-only fine-tune give --kd-alpha 1 --kd-beta 0.")
        if self.branch_lr is not None and self.branch_lr <= 0:
            raise DeployError(f"--kd-branch-lr must be > 0, got {self.branch_lr}.")
        if self.block_inputs not in ("teacher", "student"):
            raise DeployError(f"block_inputs must be 'teacher' or 'student', got {self.block_inputs!r}.")
        if self.trainable not in TRAINABLE:
            raise DeployError(f"trainable must be one of {', '.join(TRAINABLE)}, got {self.trainable!r}.")
        if self.feature_loss not in FEATURE_LOSSES:
            raise DeployError(f"feature_loss must be one of {', '.join(FEATURE_LOSSES)}, got {self.feature_loss!r}.")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise DeployError(f"--kd-warmup-steps must be >= 0, got {self.warmup_steps}.")
        if self.checkpoint_every < 1:
            raise DeployError(f"checkpoint_every must be >= 1, got {self.checkpoint_every}.")

    def total_steps(self, steps_per_epoch: int) -> int:
        if self.epochs is not None:
            return max(1, round(self.epochs * steps_per_epoch))
        return DEFAULT_KD_STEPS if self.steps is None else self.steps

    def warmup(self, total: int) -> int:
        """Warm-up steps of a run of `total` steps."""
        return round(DEFAULT_KD_WARMUP * total) if self.warmup_steps is None else self.warmup_steps

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["branch_lr"] is None:  # unset: the dict (manifests, checkpoint fingerprints) stays as before
            del d["branch_lr"]
        return d
